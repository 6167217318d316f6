//! The seccomp sandbox end to end: a running `alcazar run` is under a
//! seccomp filter (the kernel says so in `/proc/PID/status`), keeps
//! working under it to a clean stop through its API on both engines, and
//! `--no-seccomp` leaves it out. The refused calls themselves are proven
//! in `alcazar_vmm::sandbox`'s unit tests; every other integration test
//! runs with the filter on, which proves the allow-list is complete.

mod common;

use common::kvm_available;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A private runtime directory, removed at the end.
struct Runtime(PathBuf);

impl Runtime {
    fn new(test: &str) -> Runtime {
        let dir = std::env::temp_dir().join(format!("alcazar-sb-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("runtime dir");
        Runtime(dir)
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_alcazar"));
        c.env("XDG_RUNTIME_DIR", &self.0)
            .env("RUST_LOG", "warn")
            .env_remove("ALCAZAR_SECCOMP")
            .args(args)
            .stdin(Stdio::null());
        c
    }

    fn socket(&self, name: &str) -> PathBuf {
        self.0.join("alcazar").join(format!("{name}.sock"))
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Waits up to a minute for `path` to exist.
fn wait_for(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The `Seccomp:` mode of a process (proc(5)): 0 none, 2 filter.
fn seccomp_mode(child: &Child) -> String {
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Seccomp:"))
        .map(|v| v.trim().to_string())
        .expect("a Seccomp: line")
}

/// Runs the endless `spinner` kit program on `engine`, checks the seccomp
/// mode the running VMM is in, stops it through the API and checks that
/// it ended cleanly (its socket removed: the shutdown path works under
/// the filter too).
fn run_and_stop(test: &str, engine: &str, extra: &[&str], expect_mode: &str) {
    let rt = Runtime::new(test);
    let mut args = vec![
        "run", "--kit", "spinner", "--engine", engine, "--serial", "none",
    ];
    args.extend_from_slice(extra);
    let mut vmm = rt
        .cmd(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("alcazar starts");
    let socket = rt.socket("spinner");
    wait_for(&socket);
    // The filter goes on just after the socket's bind: give it a moment.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(seccomp_mode(&vmm), expect_mode, "{engine} {extra:?}");
    let stop = rt.cmd(&["stop", "--force", "spinner"]).output().unwrap();
    assert!(
        stop.status.success(),
        "stop: {}",
        String::from_utf8_lossy(&stop.stderr)
    );
    let status = vmm.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut vmm.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(
        status.code().is_some(),
        "the VMM died of a signal ({status}; SIGSYS is a call missing from the allow-list): {stderr}"
    );
    assert!(!socket.exists(), "the socket is removed at the end");
}

#[test]
fn a_running_vmm_is_sandboxed_on_the_emu_engine() {
    run_and_stop("emu", "emu", &[], "2");
}

#[test]
fn a_running_vmm_is_sandboxed_on_the_kvm_engine() {
    if !kvm_available("a_running_vmm_is_sandboxed_on_the_kvm_engine") {
        return;
    }
    run_and_stop("kvm", "kvm", &[], "2");
}

#[test]
fn no_seccomp_leaves_the_filter_out() {
    run_and_stop("off", "emu", &["--no-seccomp"], "0");
}
