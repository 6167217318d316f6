//! The guest CPU as a distribution's userland sees it: Debian's glibc
//! (`apt-get download libc6`, unpacked with `dpkg-deb`, no install) is
//! added to the default guest's initramfs, and its dynamic loader reports
//! which x86-64 micro-architecture levels the CPU supports — what
//! distributions that require x86-64-v2 or -v3 check — then runs
//! libc.so.6 itself (it prints its version), whose start-up picks string
//! functions by CPUID (glibc's IFUNCs: the AVX2 variants, which also use
//! BMI2, on this CPU).
//!
//! Needs `apt-get` and `dpkg-deb` (Debian); without them the test fails
//! saying so.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

/// Debian's libc6 unpacked into `dir/root`.
fn unpack_libc6(dir: &Path) -> PathBuf {
    let out = Command::new("apt-get")
        .args(["download", "libc6"])
        .current_dir(dir)
        .output()
        .expect("apt-get runs (a Debian host is needed to fetch libc6)");
    assert!(
        out.status.success(),
        "apt-get download libc6 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deb = std::fs::read_dir(dir)
        .expect("scratch")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .expect("the libc6 package");
    let root = dir.join("root");
    let status = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(&root)
        .status()
        .expect("dpkg-deb runs");
    assert!(status.success(), "dpkg-deb -x {}", deb.display());
    root
}

/// One newc cpio entry (see the kernel's
/// Documentation/driver-api/early-userspace/buffer-format.rst).
fn cpio_entry(out: &mut Vec<u8>, name: &str, mode: u32, data: &[u8]) {
    let fields = [
        0u32,
        mode,
        0,
        0,
        1,
        0,
        data.len() as u32,
        0,
        0,
        0,
        0,
        name.len() as u32 + 1,
        0,
    ];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
    out.extend_from_slice(data);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

/// The default guest's initramfs with glibc's loader and libc appended as a second (uncompressed) cpio archive, which the kernel
/// unpacks over the first.
fn initrd_with_glibc(dir: &Path, root: &Path, initrd: &Path) -> PathBuf {
    let mut archive = std::fs::read(initrd).expect("the default initrd");
    // The kernel looks for a following cpio header only at offsets that
    // are multiples of 4, skipping NUL bytes (init/initramfs.c).
    while !archive.len().is_multiple_of(4) {
        archive.push(0);
    }
    let mut extra = Vec::new();
    for d in ["lib", "lib/x86_64-linux-gnu"] {
        cpio_entry(&mut extra, d, 0o040755, &[]);
    }
    for (name, mode) in [
        ("lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", 0o100755),
        ("lib/x86_64-linux-gnu/libc.so.6", 0o100755),
    ] {
        let data = std::fs::read(root.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        cpio_entry(&mut extra, name, mode, &data);
    }
    cpio_entry(&mut extra, "TRAILER!!!", 0, &[]);
    archive.extend_from_slice(&extra);
    let path = dir.join("initrd-glibc.img");
    std::fs::write(&path, archive).expect("initrd written");
    path
}

/// What the guest prints for `command` with `--cpu cpu`.
fn run_in_guest(kernel: &Path, initrd: &Path, cpu: &str, command: &str) -> Vec<String> {
    let (k, i) = (kernel.display().to_string(), initrd.display().to_string());
    common::Guest::run_ok(&[
        "run",
        "--engine",
        "emu",
        "--cpu",
        cpu,
        "--kernel",
        &k,
        "--initrd",
        &i,
        "--cmdline",
        "console=ttyS0 quiet cryptomgr.notests",
        "--exec",
        command,
    ])
}

#[test]
fn glibc_sees_an_x86_64_v3_cpu_and_runs_with_it() {
    let scratch = common::Scratch::new("glibc");
    let root = unpack_libc6(&scratch.0);
    let (kernel, initrd) = common::default_guest_paths("cloud");
    let initrd = initrd_with_glibc(&scratch.0, &root, &initrd);
    let loader = "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2";
    let command = format!(
        "{loader} --help | grep 'x86-64-v'; \
         {loader} /lib/x86_64-linux-gnu/libc.so.6 | head -1"
    );

    let lines = run_in_guest(&kernel, &initrd, "max", &command);
    let has = |lines: &[String], text: &str| lines.iter().any(|l| l.trim() == text);
    assert!(
        has(&lines, "x86-64-v2 (supported, searched)"),
        "glibc should find x86-64-v2: {lines:#?}"
    );
    assert!(
        has(&lines, "x86-64-v3 (supported, searched)"),
        "glibc should find x86-64-v3 (AVX2, BMI1, BMI2...): {lines:#?}"
    );
    let ran = |lines: &[String]| lines.iter().any(|l| l.contains("GNU C Library"));
    assert!(ran(&lines), "libc.so.6 ran: {lines:#?}");

    let lines = run_in_guest(&kernel, &initrd, "v1", &command);
    assert!(
        has(&lines, "x86-64-v2"),
        "with --cpu v1 glibc finds no x86-64-v2: {lines:#?}"
    );
    assert!(ran(&lines), "libc.so.6 ran: {lines:#?}");
}
