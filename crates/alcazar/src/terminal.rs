//! The host terminal as the guest's console: an unbuffered, no-echo input
//! mode, and a thread that forwards keystrokes to COM1 (or to the virtio
//! console, `hvc0`, with `--console virtio`) with Ctrl-A as the escape
//! key (Ctrl-A X quits, Ctrl-A Ctrl-A sends a literal Ctrl-A).

use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alcazar_core::{Machine, StopReason};
use alcazar_vmm::{ConsoleInput, Uart16550};

const CTRL_A: u8 = 0x01;

/// The terminal in console mode; the old settings come back on drop.
pub struct RawMode {
    saved: libc::termios,
}

impl RawMode {
    /// Switches stdin's terminal to console mode: no line editing, no echo,
    /// no signals from Ctrl-C (they go to the guest). Output processing is
    /// kept, so a guest's bare "\n" still starts a new line. Returns `None`
    /// when stdin is not a terminal.
    pub fn enter() -> Option<RawMode> {
        // SAFETY: isatty only inspects the descriptor.
        if unsafe { libc::isatty(libc::STDIN_FILENO) } != 1 {
            return None;
        }
        // SAFETY: an all-zero termios is a valid value to be overwritten.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: fd 0 is a terminal and `saved` is a valid termios.
        if unsafe { libc::tcgetattr(libc::STDIN_FILENO, &mut saved) } != 0 {
            return None;
        }
        let mut raw = saved;
        raw.c_lflag &= !(libc::ICANON | libc::ECHO | libc::ISIG | libc::IEXTEN);
        raw.c_iflag &= !(libc::IXON | libc::ICRNL | libc::INLCR);
        raw.c_cc[libc::VMIN] = 1;
        raw.c_cc[libc::VTIME] = 0;
        // SAFETY: as above; `raw` is a modified copy of a valid termios.
        unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &raw) };
        Some(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: restores the settings read in `enter` on the same fd.
        unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &self.saved) };
    }
}

/// The device host keystrokes go to.
pub enum InputTarget {
    /// A 16550 UART's receive FIFO (COM1).
    Uart(Arc<Mutex<Uart16550>>),
    /// A virtio console's receive queue.
    Virtio(ConsoleInput),
}

impl InputTarget {
    /// Hands over what the device can take now; returns the count.
    fn offer(&self, bytes: &[u8]) -> usize {
        match self {
            InputTarget::Uart(u) => alcazar_core::bus::lock(u).enqueue_input(bytes),
            InputTarget::Virtio(c) => c.push_input(bytes),
        }
    }
}

/// Forwards stdin to `target` on a background thread until EOF. With
/// `escapes`, Ctrl-A X stops the VM.
pub fn spawn_input(target: InputTarget, machine: Arc<Machine>, escapes: bool) {
    let spawned = std::thread::Builder::new()
        .name("console-in".into())
        .spawn(move || forward_input(&target, &machine, escapes));
    if let Err(e) = spawned {
        tracing::warn!("no console input: {e}");
    }
}

fn forward_input(target: &InputTarget, machine: &Machine, escapes: bool) {
    let mut stdin = std::io::stdin().lock();
    let mut buf = [0u8; 64];
    let mut after_escape = false;
    loop {
        let n = match stdin.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let mut out = Vec::with_capacity(n);
        for &b in &buf[..n] {
            if escapes && after_escape {
                after_escape = false;
                match b {
                    b'x' | b'X' => {
                        machine.control.request_stop(StopReason::UserQuit);
                        return;
                    }
                    CTRL_A => out.push(CTRL_A),
                    _ => {}
                }
            } else if escapes && b == CTRL_A {
                after_escape = true;
            } else {
                out.push(b);
            }
        }
        deliver(target, machine, &out);
    }
}

/// Hands `bytes` to the device as it takes them (the UART's receive
/// FIFO drains, the virtio console's buffer empties).
fn deliver(target: &InputTarget, machine: &Machine, mut bytes: &[u8]) {
    while !bytes.is_empty() && !machine.control.should_stop() {
        let taken = target.offer(bytes);
        bytes = &bytes[taken..];
        if !bytes.is_empty() {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}
