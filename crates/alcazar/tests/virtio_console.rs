//! virtio-console end to end: with `--console virtio` the terminal is on
//! the guest's hvc0, where a getty offers a login; root logs in without a
//! password, runs commands, and powers the machine off; `--exec` commands
//! run on hvc0 too.

mod common;

use std::io::{Read, Write};
use std::process::Child;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{spawn_piped, BOOT_TIMEOUT};

/// A VMM whose stdout is read as raw bytes (a login prompt has no end of
/// line).
struct Terminal {
    child: Child,
    bytes: mpsc::Receiver<Vec<u8>>,
    seen: String,
    /// Where in `seen` the next search starts.
    cursor: usize,
}

impl Terminal {
    fn start(args: &[&str]) -> Terminal {
        let mut child = spawn_piped(args);
        let mut stdout = child.stdout.take().expect("stdout is piped");
        let (tx, bytes) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    return;
                }
            }
        });
        Terminal {
            child,
            bytes,
            seen: String::new(),
            cursor: 0,
        }
    }

    /// Waits until the output after the last match holds `needle`.
    fn expect(&mut self, needle: &str) {
        let deadline = Instant::now() + BOOT_TIMEOUT;
        loop {
            if let Some(at) = self.seen[self.cursor..].find(needle) {
                self.cursor += at + needle.len();
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.bytes.recv_timeout(left) {
                Ok(b) => self.seen.push_str(&String::from_utf8_lossy(&b)),
                Err(_) => {
                    let _ = self.child.kill();
                    let mut err = String::new();
                    if let Some(mut e) = self.child.stderr.take() {
                        let _ = e.read_to_string(&mut err);
                    }
                    panic!(
                        "no {needle:?} on the terminal; it shows:\n{}\nstderr:\n{err}",
                        self.seen
                    );
                }
            }
        }
    }

    fn type_text(&mut self, text: &str) {
        let stdin = self.child.stdin.as_mut().expect("stdin is piped");
        stdin.write_all(text.as_bytes()).expect("terminal input");
        stdin.flush().expect("terminal input");
    }
}

#[test]
fn root_logs_in_on_hvc0_runs_a_command_and_powers_off() {
    let mut t = Terminal::start(&["run", "--engine", "emu", "--console", "virtio"]);
    t.expect("ALCAZAR-READY");
    t.expect("login: ");
    t.type_text("root\n");
    t.expect("# ");
    t.type_text("echo HVC-$((6*7)) $(tty)\n");
    t.expect("HVC-42 /dev/hvc0");
    t.expect("# ");
    t.type_text("poweroff\n");
    let deadline = Instant::now() + BOOT_TIMEOUT;
    let status = loop {
        if let Some(s) = t.child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the VMM did not exit: {}",
            t.seen
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0), "a clean power-off: {}", t.seen);
}

#[test]
fn exec_runs_on_hvc0_with_the_console_on_virtio() {
    let mut g = common::Guest::start(&[
        "run",
        "--engine",
        "emu",
        "--console",
        "virtio",
        "--exec",
        "echo ON $(tty); exit 5",
    ]);
    g.expect_line("ALCAZAR-READY");
    let (line, _) = g.expect_line("ON ");
    assert_eq!(line.trim(), "ON /dev/hvc0", "the command's terminal");
    let (status, _, stderr) = g.finish();
    assert_eq!(status, Some(5), "the command's status; stderr: {stderr}");
}
