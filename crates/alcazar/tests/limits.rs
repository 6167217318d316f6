//! Resource bounds at the command line: guest memory, vCPUs and disks
//! beyond what the VMM supports are refused before any guest runs, with
//! exit status 2, one error line that names the flag and the fix, and
//! nothing left behind (the COM1 output file a VM would create on its
//! first byte does not appear, a disk image is not changed).
//!
//! | limit | value | enforced in |
//! |---|---|---|
//! | guest memory | 1 MiB ..= min(1 TiB, the host's `MemTotal`), whole 4 KiB pages | `crates/vmm/src/config/value.rs` (`check_memory`, `host_ram`) |
//! | vCPUs | 1 ..= 64 (`config::MAX_CPUS`) | `crates/vmm/src/config/value.rs` (`check_cpus`) |
//! | vCPUs of a real-mode flat program | 15 (their stacks share one 64 KiB segment) | `crates/vmm/src/boot/flat.rs` (`MAX_REAL_MODE_CPUS`) |
//! | PCI devices (disks and other virtio devices) | 31 (32 slots, 00:00.0 is the host bridge) | `PciRoot::free_slot`, message from `crates/vmm/src/registry.rs` (`add_pci`) |

mod common;

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

/// `alcazar run --engine emu --kit real-hello ARGS`, COM1 to `serial`.
fn run_kit(kit: &str, serial: &Path, args: &[&str]) -> Output {
    common::alcazar()
        .args(["run", "--engine", "emu", "--kit", kit, "--serial"])
        .arg(format!("file:{}", serial.display()))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("alcazar runs")
}

/// Asserts exit status 2 and exactly one error line, naming `flag` and
/// containing `want`; and that the VM's serial file was never created.
fn assert_refused(out: &Output, serial: &Path, flag: &str, want: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{flag}: {stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(errors.len(), 1, "one error line for {flag}: {stderr}");
    assert!(errors[0].contains(flag), "names {flag}: {stderr}");
    assert!(
        errors[0].contains(want),
        "{flag}: want {want:?} in {stderr}"
    );
    assert!(
        !serial.exists(),
        "{flag}: a refused VM still created its serial output file"
    );
}

fn scratch(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("alcazar-limits-{}-{name}", std::process::id()))
}

/// `MemTotal` of /proc/meminfo, in MiB.
fn host_ram_mib() -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").expect("/proc/meminfo");
    text.lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|r| r.trim().strip_suffix("kB"))
        .and_then(|n| n.trim().parse::<u64>().ok())
        .expect("a MemTotal line")
        >> 10
}

#[test]
fn memory_beyond_the_maximum_or_the_hosts_ram_is_refused() {
    let serial = scratch("mem.log");
    let over_host = format!("{}M", host_ram_mib() + 1);
    for (value, want) in [
        ("2T", "out of range"),
        ("0", "a guest needs memory"),
        (over_host.as_str(), "more than the host's RAM"),
    ] {
        let out = run_kit("real-hello", &serial, &["--memory", value]);
        assert_refused(&out, &serial, "--memory", want);
    }
    // Within both bounds the same VM runs (and writes its serial file).
    let out = run_kit("real-hello", &serial, &["--memory", "64M"]);
    assert_eq!(out.status.code(), Some(33), "{out:?}");
    assert!(serial.exists());
    let _ = std::fs::remove_file(&serial);
}

#[test]
fn vcpus_beyond_the_maximum_are_refused() {
    let serial = scratch("cpus.log");
    for value in ["0", "65", "1000"] {
        let out = run_kit("long-hello", &serial, &["--cpus", value]);
        assert_refused(&out, &serial, "--cpus", "give a number from 1 to 64");
    }
    // A real-mode program's stacks share one segment: 15 vCPUs at most.
    let out = run_kit("real-hello", &serial, &["--cpus", "16"]);
    assert_refused(&out, &serial, "cpus", "at most 15 vCPUs");
    let out = run_kit("real-hello", &serial, &["--cpus", "15"]);
    assert_eq!(out.status.code(), Some(33), "{out:?}");
    let _ = std::fs::remove_file(&serial);
    // The maximum itself runs, every vCPU up.
    let out = run_kit("smp-hello", &serial, &["--cpus", "64"]);
    assert_eq!(out.status.code(), Some(33), "{out:?}");
    let text = std::fs::read_to_string(&serial).unwrap_or_default();
    assert!(text.contains("all 64 cpus up"), "{text}");
    let _ = std::fs::remove_file(&serial);
}

#[test]
fn more_disks_than_pci_slots_are_refused_and_no_image_changes() {
    let serial = scratch("disks.log");
    let image = scratch("disk.img");
    std::fs::write(&image, vec![0x5au8; 64 << 10]).expect("image");
    // The same image many times: read-only, so the disks may share it
    // (two writers of one image are refused by its lock).
    let disk = format!("{},readonly", image.display());
    let args = |n: usize| -> Vec<&str> { (0..n).flat_map(|_| ["--disk", disk.as_str()]).collect() };
    let out = run_kit("real-hello", &serial, &args(32));
    assert_refused(&out, &serial, "--disk", "the PCI bus is full");
    let errors = String::from_utf8_lossy(&out.stderr);
    assert!(errors.contains("remove some PCI devices"), "{errors}");
    assert_eq!(
        std::fs::read(&image).expect("image"),
        vec![0x5au8; 64 << 10],
        "a refused VM changed a disk image"
    );
    // 31 disks fill the bus exactly and run.
    let out = run_kit("real-hello", &serial, &args(31));
    assert_eq!(out.status.code(), Some(33), "{out:?}");
    let _ = std::fs::remove_file(&serial);
    let _ = std::fs::remove_file(&image);
}
