//! ACPI S3 (suspend to RAM) end to end on the default Linux guest (emu
//! engine): `echo mem > /sys/power/state` puts the machine to sleep, every
//! vCPU stops while the guest clock runs, and a wake event restarts it
//! through the FACS waking vector:
//!
//! - the RTC alarm (`/sys/class/rtc/rtc0/wakealarm`, which rtc-cmos arms
//!   with AIE and the PM block's RTC_EN);
//! - the power button, pressed through the API (`alcazar resume` of a
//!   suspended VM), with `alcazar ls` showing it `suspended` meanwhile;
//! - `alcazar stop` of a suspended VM, which wakes it and powers it off.
//!
//! Each checks that the `echo` returns after the wake, that the kernel log
//! says it resumed, and that the shell still works.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{alcazar, Guest};

/// What the kernel logs on the way back from S3 (dmesg; the console is
/// `quiet`).
const RESUMED: &str = "ACPI: PM: Waking up from system sleep state S3";
const SUSPEND_EXIT: &str = "PM: suspend exit";

#[test]
fn the_rtc_alarm_wakes_the_default_guest_from_s3() {
    let script = "cat /sys/power/state; \
        echo +8 > /sys/class/rtc/rtc0/wakealarm && echo ALARM-SET; \
        echo SUSPENDING; echo mem > /sys/power/state; echo SUSPEND-RETURNED rc=$?; \
        dmesg | grep -E 'PM: suspend (entry|exit)|Waking up from system sleep|Low-level resume'; \
        echo AFTER-$((6*7)); exit 0";
    let mut g = Guest::start(&["run", "--engine", "emu", "--cpus", "2", "--exec", script]);
    g.expect_line("ALCAZAR-READY");
    let (states, _) = g.expect_line_matching(|l| l.contains("freeze") || l.contains("mem"));
    assert!(
        states.split_whitespace().any(|w| w == "mem"),
        "/sys/power/state offers mem: {states}"
    );
    g.expect_line("ALARM-SET");
    let (_, asleep_at) = g.expect_line("SUSPENDING");
    let (returned, woke_at) = g.expect_line("SUSPEND-RETURNED");
    assert!(returned.contains("rc=0"), "{returned}");
    let took = woke_at
        .duration_since(asleep_at)
        .unwrap_or_default()
        .as_secs_f64();
    eprintln!("suspend + 8 s alarm + resume: {took:.2} s of host time");
    assert!(took >= 4.0, "the guest slept until the alarm: {took:.2} s");
    g.expect_line("AFTER-42");
    let (status, lines, stderr) = g.finish();
    assert_eq!(status, Some(0), "stderr: {stderr}");
    let log = lines.join("\n");
    assert!(log.contains(RESUMED), "no resume in dmesg:\n{log}");
    assert!(
        log.contains(SUSPEND_EXIT),
        "no suspend exit in dmesg:\n{log}"
    );
}

/// A private runtime directory (`XDG_RUNTIME_DIR`), removed at the end
/// with any VM a failed test left running.
struct Runtime(PathBuf, &'static str);

impl Runtime {
    fn new(test: &str, vm: &'static str) -> Runtime {
        let dir = std::env::temp_dir().join(format!("alcazar-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("runtime dir");
        Runtime(dir, vm)
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

    /// Waits until `alcazar ls` shows the VM in `state`.
    fn wait_state(&self, state: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let ls = self.ok(&["ls"]);
            let shown = ls
                .lines()
                .any(|l| l.starts_with(&format!("{} ", self.1)) && l.contains(state));
            if shown {
                return;
            }
            assert!(Instant::now() < deadline, "never {state}:\n{ls}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn socket(&self) -> PathBuf {
        self.0.join("alcazar").join(format!("{}.sock", self.1))
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if self.socket().exists() {
            let _ = self.run(&["stop", "--force", self.1]);
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn the_power_button_wakes_a_suspended_guest_and_stop_powers_it_off() {
    let rt = Runtime::new("s3-button", "s3b");
    rt.ok(&["run", "--detach", "--engine", "emu", "--name", "s3b"]);
    let mut c = Guest::start_with(rt.cmd(&["console", "s3b"]));
    c.expect_line("ALCAZAR-READY");
    c.type_line("echo mem > /sys/power/state; echo WOKE-$((40+2))");
    rt.wait_state("suspended", Duration::from_secs(120));
    // Nothing armed to wake it: it stays asleep.
    std::thread::sleep(Duration::from_secs(2));
    rt.wait_state("suspended", Duration::ZERO);
    let inspect = rt.ok(&["inspect", "s3b", "vm/acpi_s3"]);
    assert!(inspect.contains("suspends = 1"), "{inspect}");

    // The power button (through the API) wakes it; the shell goes on.
    let pressed = Instant::now();
    rt.ok(&["resume", "s3b"]);
    c.expect_line("WOKE-42");
    eprintln!(
        "power button to shell: {:.2} s",
        pressed.elapsed().as_secs_f64()
    );
    rt.wait_state("running", Duration::from_secs(10));
    c.type_line("dmesg | grep -c 'PM: suspend exit'; echo SHELL-$((7*6))");
    c.expect_line("SHELL-42");

    // Asleep again, `alcazar stop` wakes it and it powers off cleanly.
    c.type_line("echo mem > /sys/power/state");
    rt.wait_state("suspended", Duration::from_secs(120));
    let out = rt.run(&["stop", "s3b"]);
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stop: {said}");
    assert!(
        !said.contains("forced"),
        "the guest powered off itself: {said}"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while rt.socket().exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!rt.socket().exists(), "the VM ended");
    let _ = c.finish();
}

/// A GRUB CD image (`grub-mkrescue`, which `.ci/run` installs) that boots
/// the default guest at once, GRUB on the serial port.
fn grub_iso(dir: &std::path::Path) -> PathBuf {
    common::grub_cd(
        dir,
        "serial --unit=0 --speed=115200\nterminal_input serial\nterminal_output serial\n\
         set timeout=0\nmenuentry \"guest\" {\n  \
         linux /boot/vmlinuz console=ttyS0 quiet cryptomgr.notests\n  \
         initrd /boot/initrd.img\n}\n",
    )
}

#[test]
fn a_seabios_boot_wakes_from_s3_through_the_same_waking_vector() {
    let scratch = common::Scratch::new("s3-fw");
    let iso = grub_iso(&scratch.0).display().to_string();
    let mut g = Guest::start_screen(&[
        "run", "--engine", "emu", "--memory", "256M", "--cdrom", &iso,
    ]);
    g.expect_line("ALCAZAR-READY");
    g.type_line(
        "echo +3 > /sys/class/rtc/rtc0/wakealarm; echo mem > /sys/power/state; \
         echo WOKE-$((40+2)); dmesg | grep -c 'PM: suspend exit'",
    );
    g.expect_line("WOKE-42");
    let (count, _) = g.expect_line_matching(|l| l.trim() == "1");
    assert_eq!(count.trim(), "1", "one suspend exit in dmesg");
    g.type_line("echo SHELL-$((7*6)); poweroff -f");
    g.expect_line("SHELL-42");
    let (status, _, stderr) = g.finish();
    assert_eq!(status, Some(0), "stderr: {stderr}");
}
