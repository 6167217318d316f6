//! The `alcazar` command as a user meets it: exit statuses, the one-line
//! config errors, and that a failed start leaves nothing behind.

mod common;

use common::kvm_available;
use std::path::PathBuf;
use std::process::{Command, Output};

fn alcazar(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_alcazar"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("alcazar runs")
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("alcazar-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes `toml` to a config file in a fresh directory.
fn config(name: &str, toml: &str) -> (PathBuf, PathBuf) {
    let dir = scratch_dir(name);
    let path = dir.join("vm.toml");
    std::fs::write(&path, toml).unwrap();
    (dir, path)
}

/// Asserts a usage/config failure: status 2, exactly one line on stderr
/// containing every `needle`, nothing on stdout.
fn assert_config_error(out: &Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "one line expected, got: {stderr}"
    );
    for n in needles {
        assert!(stderr.contains(n), "{n:?} missing from: {stderr}");
    }
    assert!(out.stdout.is_empty());
}

#[test]
fn the_demo_kit_program_boots_and_exits_zero() {
    // `auto` picks kvm with VT-x/SVM, emu otherwise: this runs everywhere.
    let out = alcazar(&["run", "--kit", "demo"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("Alcazar demo guest: hello from real mode"),
        "stdout: {stdout}"
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn debug_exit_value_becomes_the_exit_status() {
    let out = alcazar(&["run", "--kit", "real-hello", "--serial", "none"]);
    assert_eq!(out.status.code(), Some(0x21));
    assert!(out.stdout.is_empty(), "serial none prints nothing");
}

#[test]
fn the_demo_runs_on_both_engines_with_the_same_output() {
    let emu = alcazar(&["run", "--kit", "demo", "--engine", "emu"]);
    assert_eq!(
        emu.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&emu.stderr)
    );
    if !kvm_available("demo_on_kvm") {
        return;
    }
    let kvm = alcazar(&["run", "--kit", "demo", "--engine", "kvm"]);
    assert_eq!(kvm.status.code(), Some(0));
    assert_eq!(emu.stdout, kvm.stdout, "same guest, same console output");
}

#[test]
fn unknown_device_class_is_one_line_and_status_2() {
    let (_dir, path) = config("class", "[[device]]\nclass = \"floppy\"\n");
    let out = alcazar(&["run", path.to_str().unwrap()]);
    assert_config_error(&out, &["device[0].class", "floppy", "serial"]);
}

#[test]
fn missing_config_file_is_one_line_and_status_2() {
    let out = alcazar(&["run", "/nonexistent/vm.toml"]);
    assert_config_error(&out, &["/nonexistent/vm.toml", "cannot read"]);
}

#[test]
fn missing_boot_image_is_one_line_and_status_2() {
    let (_dir, path) = config("image", "[boot]\nkind = \"flat\"\nimage = \"nope.bin\"\n");
    let out = alcazar(&["run", path.to_str().unwrap()]);
    assert_config_error(&out, &["boot.image", "nope.bin", "not found"]);
}

#[test]
fn overlapping_ports_are_one_line_status_2_and_leave_nothing_behind() {
    let toml = "serial = \"file:console.log\"\n[[device]]\nclass = \"serial\"\nid = \"com2\"\nport = 0x3f8\noutput = \"file:com2.log\"\n";
    let (dir, path) = config("overlap", toml);
    let out = alcazar(&["run", path.to_str().unwrap()]);
    assert_config_error(&out, &["device[0].port", "0x3f8", "com1"]);
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        left,
        vec![std::ffi::OsString::from("vm.toml")],
        "no console files were created"
    );
}

#[test]
fn zero_memory_is_one_line_and_status_2() {
    let (_dir, path) = config("memory", "memory = 0\n");
    let out = alcazar(&["run", path.to_str().unwrap()]);
    assert_config_error(&out, &["memory = 0", "256M"]);
    let out = alcazar(&["run", "--memory", "0"]);
    assert_config_error(&out, &["--memory", "\"0\""]);
}

#[test]
fn bad_flags_are_usage_errors() {
    assert_config_error(&alcazar(&["run", "--cpus", "0"]), &["--cpus"]);
    assert_config_error(&alcazar(&["run", "--engine", "xen"]), &["--engine", "xen"]);
    assert_config_error(&alcazar(&["run", "--serial", "tcp:1"]), &["--serial"]);
    assert_config_error(&alcazar(&["run", "--kit", "nope"]), &["--kit", "demo"]);
    assert_eq!(alcazar(&["frobnicate"]).status.code(), Some(2));
}

#[test]
fn telemetry_counts_port_io_by_port_and_accesses_by_device() {
    let out = alcazar(&[
        "run",
        "--kit",
        "virtio-rng",
        "--engine",
        "emu",
        "--serial",
        "none",
        "--telemetry",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0x21), "stderr: {stderr}");
    let count = |line: &str, key: &str| -> u64 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .and_then(|n| n.trim_end_matches(',').parse().ok())
            .unwrap_or_else(|| panic!("no {key} in {line:?}"))
    };
    let ports = stderr
        .lines()
        .find(|l| l.contains("busiest ports"))
        .unwrap_or_else(|| panic!("no port line: {stderr}"));
    // The success line (53 bytes with its newline) went out through THR,
    // each byte after an LSR poll; the driver used CONFIG_ADDRESS/DATA.
    assert!(count(ports, "0x3f8=") >= 53, "{ports}");
    assert!(count(ports, "0x3fd=") >= 53, "{ports}");
    assert!(count(ports, "0xcf8=") >= 3, "{ports}");
    let devices = stderr
        .lines()
        .find(|l| l.contains("accesses by device"))
        .unwrap_or_else(|| panic!("no device line: {stderr}"));
    // The driver's common-configuration accesses and the notify all went
    // through the BAR window.
    let window = devices
        .split(", ")
        .find(|d| d.contains("MMIO pci-window"))
        .unwrap_or_else(|| panic!("no pci-window in {devices}"));
    assert!(count(window, "w=") >= 10, "{window}");
    assert!(count(window, "r=") >= 2, "{window}");
}

#[test]
fn telemetry_counts_the_vectors_the_emu_engine_delivered() {
    // isa-irq takes PIT ticks on vector 0x20 (8259A) and 0x51 (IOAPIC),
    // three or more each.
    let out = alcazar(&["run", "--kit", "isa-irq", "--engine", "emu", "--telemetry"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0x21), "stderr: {stderr}");
    let line = stderr
        .lines()
        .find(|l| l.contains("vectors delivered"))
        .unwrap_or_else(|| panic!("no vector line: {stderr}"));
    let count = |key: &str| -> u64 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in {line:?}"))
    };
    assert!(count("0x20=") >= 3, "{line}");
    assert!(count("0x51=") >= 3, "{line}");
}
