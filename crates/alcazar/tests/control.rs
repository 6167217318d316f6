//! The control plane end to end, through the CLI, on the default Linux
//! guest: `run --detach`, `ls`, `console` attach/detach cycles, `pause`
//! (the guest clock and console stop, `inspect` shows a stable RIP),
//! `resume`, `telemetry`, `stop` (a clean power-off through the ACPI
//! power button), and the socket gone afterwards.
//!
//! Each test has its own runtime directory (`XDG_RUNTIME_DIR`), so its
//! VM names and sockets never meet another test's.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{alcazar, unix_seconds, Guest};

/// A private runtime directory, removed at the end.
struct Runtime(PathBuf);

impl Runtime {
    fn new(test: &str) -> Runtime {
        let dir = std::env::temp_dir().join(format!("alcazar-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("runtime dir");
        Runtime(dir)
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = alcazar();
        c.env("XDG_RUNTIME_DIR", &self.0).args(args);
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("alcazar runs")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "alcazar {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn socket(&self, name: &str) -> PathBuf {
        self.0.join("alcazar").join(format!("{name}.sock"))
    }

    /// `alcazar console NAME ARGS` with piped stdio.
    fn attach(&self, name: &str, extra: &[&str]) -> Guest {
        let mut args = vec!["console", name];
        args.extend_from_slice(extra);
        Guest::start_with(self.cmd(&args))
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        // A failed test must not leave its VM running.
        for name in ["ctl", "ctl-2"] {
            if self.socket(name).exists() {
                let _ = self.run(&["stop", "--force", name]);
            }
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Types Ctrl-A D and checks that the client says it detached.
fn detach(mut console: Guest) {
    console.send(b"\x01d");
    let (status, _, stderr) = console.finish();
    assert_eq!(status, Some(0), "console: {stderr}");
    assert!(stderr.contains("detached from \"ctl\""), "{stderr}");
}

/// The guest's uptime (first field of /proc/uptime) in `line`.
fn uptime_of(line: &str) -> f64 {
    line.trim()
        .trim_start_matches("UP ")
        .split_whitespace()
        .next()
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("no uptime in {line:?}"))
}

fn rip(rt: &Runtime) -> String {
    rt.ok(&["inspect", "ctl", "cpu0/regs/rip"])
        .trim()
        .to_string()
}

fn instructions(rt: &Runtime) -> u64 {
    let json = rt.ok(&["telemetry", "ctl", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&json).expect("telemetry JSON");
    common::sum_instructions(&v)
}

fn wait_gone(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while path.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!path.exists(), "{} is still there", path.display());
}

#[test]
fn a_detached_linux_guest_is_driven_through_the_cli() {
    let rt = Runtime::new("control");
    let out = rt.ok(&["run", "--detach", "--name", "ctl"]);
    assert_eq!(out.trim(), "ctl");
    let socket = rt.socket("ctl");
    let mode = std::fs::metadata(&socket)
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the socket is owner-only");
    let ls = rt.ok(&["ls"]);
    assert!(
        ls.lines()
            .any(|l| l.starts_with("ctl ") && l.contains("running")),
        "{ls}"
    );
    // The name is taken: an explicit --name is refused with one line.
    let dup = rt.run(&["run", "--detach", "--name", "ctl"]);
    assert_eq!(dup.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&dup.stderr).contains("--name"));

    // Attach 1: the boot so far is replayed; type a command; start output
    // that arrives while nobody is attached; detach.
    let mut c = rt.attach("ctl", &[]);
    c.expect_line("ALCAZAR-READY");
    c.type_line("echo one-$((40+2))");
    c.expect_line("one-42");
    c.type_line("(sleep 2; echo late-$((1+1))) &");
    detach(c);

    // Attach 2: what the guest printed while detached is shown.
    let mut c = rt.attach("ctl", &[]);
    c.expect_line("late-2");
    c.type_line("echo two-$((6*7))");
    c.expect_line("two-42");
    // The clock before the pause, and a ticker that prints for a while.
    c.type_line("echo UP $(cat /proc/uptime)");
    let (line, t1) = c.expect_line_matching(|l| l.starts_with("UP "));
    let u1 = uptime_of(&line);
    c.type_line("for i in $(seq 1 100); do echo tick-$i; sleep 0.2; done &");
    c.expect_line("tick-2");
    detach(c);

    // Telemetry counts grow while the guest runs.
    let before = instructions(&rt);
    std::thread::sleep(Duration::from_millis(500));
    assert!(instructions(&rt) > before, "instructions did not grow");

    // Pause: RIP stable, no console output, then resume.
    assert_eq!(rt.ok(&["pause", "ctl"]).trim(), "ctl: paused");
    let ls = rt.ok(&["ls"]);
    assert!(
        ls.lines()
            .any(|l| l.starts_with("ctl ") && l.contains("paused")),
        "{ls}"
    );
    let paused = rt.run(&["pause", "ctl"]);
    assert_eq!(paused.status.code(), Some(1), "pausing twice is refused");
    assert!(String::from_utf8_lossy(&paused.stderr).contains("paused"));
    let rip1 = rip(&rt);
    let mut quiet = rt.attach("ctl", &["--from", "end"]);
    std::thread::sleep(Duration::from_millis(1500));
    let rip2 = rip(&rt);
    assert_eq!(rip1, rip2, "RIP moved while paused");
    assert!(rip1.starts_with("cpu0/regs/rip = 0x"), "{rip1}");
    std::thread::sleep(Duration::from_millis(1500));
    quiet.send(b"\x01d");
    let (_, printed, _) = quiet.finish();
    assert!(
        !printed.iter().any(|l| l.contains("tick-")),
        "the console printed while paused: {printed:?}"
    );
    assert_eq!(rt.ok(&["resume", "ctl"]).trim(), "ctl: resumed");
    let resumed = rt.run(&["resume", "ctl"]);
    assert_eq!(resumed.status.code(), Some(1), "resuming twice is refused");

    // Attach 3: the ticks go on, and the guest's clock lost the pause.
    let mut c = rt.attach("ctl", &["--from", "end"]);
    c.expect_line("tick-");
    c.type_line("echo UP $(cat /proc/uptime)");
    let (line, t2) = c.expect_line_matching(|l| l.starts_with("UP "));
    let u2 = uptime_of(&line);
    let host = unix_seconds(t2) - unix_seconds(t1);
    let guest = u2 - u1;
    assert!(
        host - guest > 2.5,
        "the guest clock ran while paused: host {host:.2} s, guest {guest:.2} s"
    );
    detach(c);

    // Stop: the power button, a clean power-off, the socket removed.
    let out = rt.ok(&["stop", "ctl"]);
    assert_eq!(out.trim(), "ctl: powered off cleanly");
    wait_gone(&socket);
    let ls = rt.ok(&["ls"]);
    assert!(!ls.contains("ctl"), "{ls}");
    let gone = rt.run(&["pause", "ctl"]);
    assert_eq!(gone.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&gone.stderr).contains("no VM named \"ctl\""),
        "{}",
        String::from_utf8_lossy(&gone.stderr)
    );
}

#[test]
fn a_reboot_builds_the_vm_again_and_the_console_stays_attached() {
    let rt = Runtime::new("reboot");
    let out = rt.ok(&[
        "run", "--detach", "--name", "ctl", "--kit", "spinner", "--engine", "emu",
    ]);
    assert_eq!(out.trim(), "ctl");
    let mut c = rt.attach("ctl", &["--from", "start"]);
    c.expect_line("kit: spinning until stopped");
    assert_eq!(rt.ok(&["reboot", "ctl"]).trim(), "ctl: rebooting");
    // The same console connection sees the new boot's first line.
    c.expect_line("kit: spinning until stopped");
    let ls = rt.ok(&["ls"]);
    assert!(
        ls.lines()
            .any(|l| l.starts_with("ctl ") && l.contains("running")),
        "{ls}"
    );
    detach(c);
    // A kit guest ignores the power button: the stop is forced.
    let out = rt.ok(&["stop", "ctl", "--timeout", "0.5"]);
    assert!(out.contains("stopped (forced)"), "{out}");
    wait_gone(&rt.socket("ctl"));
}

/// A console file holds every boot: an API reboot builds the VM again
/// and the new VM appends to the file the first one created.
#[test]
fn a_serial_file_keeps_the_first_boot_across_a_reboot() {
    let rt = Runtime::new("rebootfile");
    let log = rt.0.join("console.log");
    let serial = format!("file:{}", log.display());
    rt.ok(&[
        "run", "--detach", "--name", "rf", "--kit", "spinner", "--engine", "emu", "--serial",
        &serial,
    ]);
    let boots = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .matches("kit: spinning until stopped")
            .count()
    };
    let wait_for = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while boots() < n && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        boots()
    };
    assert_eq!(wait_for(1), 1, "the first boot's line");
    rt.ok(&["reboot", "rf"]);
    let n = wait_for(2);
    rt.ok(&["stop", "rf", "--force"]);
    wait_gone(&rt.socket("rf"));
    assert_eq!(n, 2, "both boots in {}", log.display());
}

#[test]
fn vms_started_at_once_get_distinct_names() {
    let rt = Runtime::new("names");
    let mut children: Vec<std::process::Child> = (0..4)
        .map(|_| {
            rt.cmd(&[
                "run", "--kit", "spinner", "--engine", "emu", "--serial", "none",
            ])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("alcazar starts")
        })
        .collect();
    let names = |rt: &Runtime| -> Vec<String> {
        rt.ok(&["ls"])
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while names(&rt).len() < 4 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let got = names(&rt);
    for name in &got {
        rt.ok(&["stop", "--force", name]);
    }
    for c in &mut children {
        let status = c.wait().expect("alcazar exits");
        assert!(status.success(), "a VMM failed: {status}");
    }
    assert_eq!(got, ["spinner", "spinner-2", "spinner-3", "spinner-4"]);
}
