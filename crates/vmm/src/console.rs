//! The guest console as the host sees it: where console devices' output
//! goes (a [`ConsoleTarget`] turned into a device's sink; `stdio` output
//! goes to the embedder's [`HostTerminal`]), where host keystrokes go in
//! ([`ConsoleInputTarget`]), and the [`ConsoleTail`] that remembers the
//! guest console's last lines.
//!
//! The tail serves two purposes: when a VM ends badly (a guest kernel
//! panic, a triple fault) the CLI shows what the guest said last, and a
//! Linux kernel panic is *recognized* in it. A panicked kernel only spins
//! (`panic=0`) or resets (`panic=N`), which look like a hung or rebooted
//! machine from outside; the line `---[ end Kernel panic - not syncing:
//! ... ]---` that ends every panic report says what really happened, so
//! the VM stops there with [`StopReason::GuestPanic`].

use std::collections::VecDeque;
use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use alcazar_core::{StopReason, VmControl};
use alcazar_devices::virtio::console::ConsoleInput;
use alcazar_devices::{ConsoleSink, Uart16550};

use crate::config::ConsoleTarget;

/// The host program's terminal, part of the host interface: where console
/// output for [`ConsoleTarget::Stdio`] goes. The `alcazar` command's
/// implementation also keeps the output for clients that attach later; an
/// embedder may send it anywhere. Called from vCPU threads, so it must not
/// block for long.
pub trait HostTerminal: Send + Sync {
    /// Guest console output bound for the terminal.
    fn write(&self, bytes: &[u8]);

    /// Flushes anything buffered.
    fn flush(&self) {}
}

/// The process's standard output as the [`HostTerminal`]: what a VM
/// created with [`crate::vm::Vm::create`] uses.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stdout;

impl HostTerminal for Stdout {
    fn write(&self, bytes: &[u8]) {
        // A closed stdout (a detached VM's) must not stop the guest.
        let _ = std::io::stdout().write_all(bytes);
    }

    fn flush(&self) {
        let _ = std::io::stdout().flush();
    }
}

/// A shared [`HostTerminal`].
pub type SharedTerminal = std::sync::Arc<dyn HostTerminal>;

/// A file that is created only when the first byte is written, so that a
/// VM that fails to start leaves no file behind. The first VM of the
/// process to write it creates (truncates) it; a VM built again in the
/// same process (a reboot) appends, so the file holds every boot.
struct LazyFile {
    path: PathBuf,
    file: Option<File>,
}

/// The console files this process has created.
fn created_files() -> &'static Mutex<std::collections::HashSet<PathBuf>> {
    static CREATED: std::sync::OnceLock<Mutex<std::collections::HashSet<PathBuf>>> =
        std::sync::OnceLock::new();
    CREATED.get_or_init(Default::default)
}

impl LazyFile {
    fn open(&self) -> std::io::Result<File> {
        let first = created_files()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(self.path.clone());
        if first {
            File::create(&self.path)
        } else {
            std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(&self.path)
        }
    }
}

impl Write for LazyFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.file.is_none() {
            self.file = Some(self.open()?);
        }
        match self.file.as_mut() {
            Some(f) => f.write(buf),
            None => Ok(buf.len()),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self.file.as_mut() {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

/// The sink for `target`; `stdio` output goes to `terminal`.
pub fn sink_for(target: &ConsoleTarget, terminal: &SharedTerminal) -> ConsoleSink {
    match writer_for(target, terminal) {
        Some(w) => ConsoleSink::new(w),
        None => ConsoleSink::none(),
    }
}

/// A [`HostTerminal`] as a [`Write`].
struct TerminalWriter {
    terminal: SharedTerminal,
}

impl Write for TerminalWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.terminal.write(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.terminal.flush();
        Ok(())
    }
}

fn writer_for(target: &ConsoleTarget, terminal: &SharedTerminal) -> Option<Box<dyn Write + Send>> {
    match target {
        ConsoleTarget::Stdio => Some(Box::new(TerminalWriter {
            terminal: terminal.clone(),
        })),
        ConsoleTarget::File(path) => Some(Box::new(LazyFile {
            path: path.clone(),
            file: None,
        })),
        ConsoleTarget::None => None,
    }
}

/// The sink for `target`, with everything written also fed to `tail`.
pub fn watched_sink_for(
    target: &ConsoleTarget,
    tail: &Arc<ConsoleTail>,
    terminal: &SharedTerminal,
) -> ConsoleSink {
    ConsoleSink::new(Box::new(Tee {
        out: writer_for(target, terminal),
        tail: tail.clone(),
    }))
}

/// How many bytes of console output the tail keeps.
const TAIL_BYTES: usize = 16 * 1024;
/// How the last line of a Linux panic report starts.
const PANIC_END: &str = "---[ end Kernel panic - not syncing: ";

/// The last [`TAIL_BYTES`] of a guest console, watched for kernel panics.
pub struct ConsoleTail {
    control: Arc<VmControl>,
    state: Mutex<TailState>,
}

#[derive(Default)]
struct TailState {
    bytes: VecDeque<u8>,
    line: Vec<u8>,
}

impl std::fmt::Debug for ConsoleTail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleTail").finish_non_exhaustive()
    }
}

impl ConsoleTail {
    /// An empty tail that stops the VM through `control` on a panic.
    pub fn new(control: Arc<VmControl>) -> Self {
        ConsoleTail {
            control,
            state: Mutex::new(TailState::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TailState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records console output.
    pub fn feed(&self, bytes: &[u8]) {
        let mut panic = None;
        {
            let mut st = self.lock();
            for &b in bytes {
                if st.bytes.len() == TAIL_BYTES {
                    st.bytes.pop_front();
                }
                st.bytes.push_back(b);
                if b == b'\n' {
                    let line = String::from_utf8_lossy(&st.line).into_owned();
                    st.line.clear();
                    if let Some(at) = line.find(PANIC_END) {
                        let why = &line[at + PANIC_END.len()..];
                        panic = Some(why.trim_end().trim_end_matches("]---").trim().to_string());
                    }
                } else if st.line.len() < 4096 {
                    st.line.push(b);
                }
            }
        }
        if let Some(why) = panic {
            self.control.request_stop(StopReason::GuestPanic(why));
        }
    }

    /// The last `n` lines (fewer if the tail holds fewer), without
    /// terminal control characters.
    pub fn last_lines(&self, n: usize) -> Vec<String> {
        let st = self.lock();
        let bytes: Vec<u8> = st.bytes.iter().copied().collect();
        let text = String::from_utf8_lossy(&bytes);
        let lines: Vec<String> = text
            .lines()
            .map(|l| {
                l.chars()
                    .filter(|c| !c.is_control() || *c == '\t')
                    .collect()
            })
            .collect();
        let start = lines.len().saturating_sub(n);
        lines[start..].to_vec()
    }
}

/// Writes to a console output and a [`ConsoleTail`].
struct Tee {
    out: Option<Box<dyn Write + Send>>,
    tail: Arc<ConsoleTail>,
}

impl Write for Tee {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.tail.feed(buf);
        match self.out.as_mut() {
            Some(o) => o.write_all(buf).map(|_| buf.len()),
            None => Ok(buf.len()),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.as_mut().map_or(Ok(()), |o| o.flush())
    }
}

/// The console device host keystrokes go to.
#[derive(Clone)]
pub enum ConsoleInputTarget {
    /// A 16550 UART's receive FIFO (COM1).
    Uart(Arc<Mutex<Uart16550>>),
    /// A virtio console's receive queue (`hvc0`).
    Virtio(ConsoleInput),
    /// The PC keyboard behind the 8042: terminal bytes become key
    /// presses ([`alcazar_devices::i8042_keys`]).
    Keyboard(
        Arc<Mutex<alcazar_devices::I8042>>,
        Arc<Mutex<alcazar_devices::KeyTranslator>>,
    ),
}

impl std::fmt::Debug for ConsoleInputTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ConsoleInputTarget::Uart(_) => "Uart",
            ConsoleInputTarget::Virtio(_) => "Virtio",
            ConsoleInputTarget::Keyboard(..) => "Keyboard",
        })
    }
}

impl ConsoleInputTarget {
    /// Hands over what the device can take now; returns the count.
    pub fn offer(&self, bytes: &[u8]) -> usize {
        match self {
            ConsoleInputTarget::Uart(u) => alcazar_core::bus::lock(u).enqueue_input(bytes),
            ConsoleInputTarget::Virtio(c) => c.push_input(bytes),
            ConsoleInputTarget::Keyboard(k, t) => {
                // One read() chunk at a time: a chunk ending in a bare ESC
                // is the Esc key.
                let codes = alcazar_core::bus::lock(t).translate_to_vec(bytes);
                alcazar_core::bus::lock(k).key_input(&codes);
                bytes.len()
            }
        }
    }

    /// Hands all of `bytes` to the device as it takes them (the UART's
    /// FIFO drains, the virtio console's buffer empties); gives up when
    /// the VM stops.
    pub fn deliver(&self, control: &VmControl, mut bytes: &[u8]) {
        while !bytes.is_empty() && !control.should_stop() {
            let taken = self.offer(bytes);
            bytes = &bytes[taken..];
            if !bytes.is_empty() {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kernel_panic_report_stops_the_vm_with_its_reason() {
        let control = Arc::new(VmControl::new());
        let tail = ConsoleTail::new(control.clone());
        tail.feed(b"[    1.0] Kernel panic - not syncing: VFS: Unable to mount root fs\r\n");
        assert!(!control.should_stop());
        tail.feed(
            b"[    1.0] ---[ end Kernel panic - not syncing: VFS: Unable to mount root fs ]---\r\n",
        );
        assert_eq!(
            control.wait(),
            StopReason::GuestPanic("VFS: Unable to mount root fs".into())
        );
    }

    #[test]
    fn the_tail_keeps_the_last_lines_within_its_bound() {
        let tail = ConsoleTail::new(Arc::new(VmControl::new()));
        for i in 0..5000 {
            tail.feed(format!("line {i}\r\n").as_bytes());
        }
        assert_eq!(tail.last_lines(2), vec!["line 4998", "line 4999"]);
        assert!(tail.lock().bytes.len() <= TAIL_BYTES);
    }
}
