//! The host terminal as the guest's console: an unbuffered, no-echo input
//! mode, and a thread that forwards keystrokes to COM1 (or to the virtio
//! console, `hvc0`, with `--console virtio`) with Ctrl-A as the escape
//! key (Ctrl-A X quits, Ctrl-A Ctrl-A sends a literal Ctrl-A); and the
//! keyboard side of `alcazar console` (Ctrl-A D detaches).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use alcazar_control::api::ApiVm;
use alcazar_core::StopReason;

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

/// Forwards stdin to the console of the VM `vm` serves (after a reboot:
/// the new VM) on a background thread until EOF. With `escapes`, Ctrl-A X
/// stops the VM.
pub fn spawn_input(vm: Arc<ApiVm>, escapes: bool) {
    let spawned = std::thread::Builder::new()
        .name("console-in".into())
        .spawn(move || forward_input(&vm, escapes));
    if let Err(e) = spawned {
        tracing::warn!("no console input: {e}");
    }
}

fn forward_input(vm: &ApiVm, escapes: bool) {
    let quit = read_keys(b'x', escapes, |bytes| {
        vm.get().console_write(bytes);
        true
    });
    if quit {
        vm.get().stop(StopReason::UserQuit);
    }
}

/// `alcazar console`'s keyboard side: copies stdin to the console stream
/// until Ctrl-A D or the end of stdin, then sets `detached` and closes
/// the stream (which ends the output side too). Ctrl-A Ctrl-A sends a
/// literal Ctrl-A.
pub fn forward_keys(mut stream: UnixStream, detached: Arc<AtomicBool>) {
    read_keys(b'd', true, |bytes| stream.write_all(bytes).is_ok());
    detached.store(true, Ordering::SeqCst);
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

/// Reads stdin and hands the keystrokes to `deliver` (which returns
/// `false` when they can go nowhere any more). With `escapes`, Ctrl-A is
/// the escape key: Ctrl-A Ctrl-A is a literal Ctrl-A, Ctrl-A `key` (either
/// case) ends the loop and returns `true`, Ctrl-A anything else is
/// dropped. Returns `false` at the end of stdin or when `deliver` fails.
fn read_keys(key: u8, escapes: bool, mut deliver: impl FnMut(&[u8]) -> bool) -> bool {
    let mut stdin = std::io::stdin().lock();
    let mut buf = [0u8; 64];
    let mut after_escape = false;
    loop {
        let n = match stdin.read(&mut buf) {
            Ok(0) | Err(_) => return false,
            Ok(n) => n,
        };
        let mut out = Vec::with_capacity(n);
        for &b in &buf[..n] {
            if escapes && after_escape {
                after_escape = false;
                match b {
                    CTRL_A => out.push(CTRL_A),
                    _ if b.eq_ignore_ascii_case(&key) => {
                        deliver(&out);
                        return true;
                    }
                    _ => {}
                }
            } else if escapes && b == CTRL_A {
                after_escape = true;
            } else {
                out.push(b);
            }
        }
        if !deliver(&out) {
            return false;
        }
    }
}
