//! The guest CPU as a distribution's userland sees it. Debian's glibc
//! and OpenSSL (`apt-get download libc6 libssl3 openssl`, unpacked with
//! `dpkg-deb`, no install) are added to the default guest's initramfs.
//!
//! - glibc's dynamic loader reports the x86-64 micro-architecture levels
//!   the CPU supports (what distributions check: RHEL 9 needs v2, RHEL 10
//!   v3), and its IFUNC resolvers pick string functions by CPUID: a small
//!   C program (`data/ifunc_probe.c`, built with the host's compiler)
//!   prints the first bytes of the `strlen`, `memchr`, ... that glibc
//!   selected, and the host decodes them: the AVX2 variants start with
//!   VEX-encoded instructions.
//! - OpenSSL's AES-NI, PCLMULQDQ, SHA and AVX code paths (it picks them
//!   by CPUID too) give the published known answers.
//!
//! Needs `apt-get`, `dpkg-deb` and a C compiler (`cc`: Rust links with
//! it); without them the tests fail saying so.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

/// Debian's `packages` unpacked into `dir/root`.
fn unpack(dir: &Path, packages: &[&str]) -> PathBuf {
    let out = Command::new("apt-get")
        .arg("download")
        .args(packages)
        .current_dir(dir)
        .output()
        .expect("apt-get runs (a Debian host is needed to fetch the packages)");
    assert!(
        out.status.success(),
        "apt-get download {packages:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let root = dir.join("root");
    let debs = std::fs::read_dir(dir)
        .expect("scratch")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"));
    for deb in debs {
        let status = Command::new("dpkg-deb")
            .arg("-x")
            .arg(&deb)
            .arg(&root)
            .status()
            .expect("dpkg-deb runs");
        assert!(status.success(), "dpkg-deb -x {}", deb.display());
    }
    root
}

/// `data/ifunc_probe.c` built with the host's C compiler.
fn build_probe(dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/ifunc_probe.c");
    let out = dir.join("ifunc_probe");
    let status = Command::new("cc")
        .args(["-O2", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .expect("cc runs (install gcc)");
    assert!(status.success(), "cc {}", src.display());
    out
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

/// The files added to the guest: (path in the guest, path on the host).
fn guest_files(root: &Path, probe: &Path) -> Vec<(String, PathBuf)> {
    let mut files: Vec<(String, PathBuf)> = [
        "lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
        "lib/x86_64-linux-gnu/libc.so.6",
        "usr/lib/x86_64-linux-gnu/libssl.so.3",
        "usr/lib/x86_64-linux-gnu/libcrypto.so.3",
        "usr/bin/openssl",
    ]
    .iter()
    .map(|f| (f.to_string(), root.join(f)))
    .collect();
    files.push(("bin/ifunc_probe".to_string(), probe.to_path_buf()));
    files
}

/// The default guest's initramfs with `files` appended as a second
/// (uncompressed) cpio archive, which the kernel unpacks over the first.
fn initrd_with(dir: &Path, files: &[(String, PathBuf)], initrd: &Path) -> PathBuf {
    let mut archive = std::fs::read(initrd).expect("the default initrd");
    // The kernel looks for a following cpio header only at offsets that
    // are multiples of 4, skipping NUL bytes (init/initramfs.c).
    while !archive.len().is_multiple_of(4) {
        archive.push(0);
    }
    let mut extra = Vec::new();
    for d in [
        "lib",
        "lib/x86_64-linux-gnu",
        "usr",
        "usr/lib",
        "usr/lib/x86_64-linux-gnu",
        "usr/bin",
        "bin",
        "lib64",
    ] {
        cpio_entry(&mut extra, d, 0o040755, &[]);
    }
    for (name, host) in files {
        let data = std::fs::read(host).unwrap_or_else(|e| panic!("{}: {e}", host.display()));
        cpio_entry(&mut extra, name, 0o100755, &data);
    }
    // The loader's path in the ELF interpreter field of Debian binaries.
    cpio_entry(
        &mut extra,
        "lib64/ld-linux-x86-64.so.2",
        0o120777,
        b"/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
    );
    cpio_entry(&mut extra, "TRAILER!!!", 0, &[]);
    archive.extend_from_slice(&extra);
    let path = dir.join("initrd-userland.img");
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

/// A guest image with glibc, OpenSSL and the probe, built once per test.
struct Userland {
    _scratch: common::Scratch,
    kernel: PathBuf,
    initrd: PathBuf,
}

impl Userland {
    fn new(name: &str) -> Userland {
        let scratch = common::Scratch::new(name);
        let root = unpack(&scratch.0, &["libc6", "libssl3", "openssl"]);
        let probe = build_probe(&scratch.0);
        let (kernel, initrd) = common::default_guest_paths("cloud");
        let initrd = initrd_with(&scratch.0, &guest_files(&root, &probe), &initrd);
        Userland {
            _scratch: scratch,
            kernel,
            initrd,
        }
    }

    /// What the guest prints for `command` with `--cpu cpu`.
    fn run(&self, cpu: &str, command: &str) -> Vec<String> {
        run_in_guest(&self.kernel, &self.initrd, cpu, command)
    }
}

/// Whether a line is exactly `text` (after trimming).
fn has(lines: &[String], text: &str) -> bool {
    lines.iter().any(|l| l.trim() == text)
}

/// For each `IFUNC name bytes...` line of the probe: the function and
/// whether a VEX-encoded instruction is among its first eight.
fn vex_functions(lines: &[String]) -> Vec<(String, bool)> {
    lines
        .iter()
        .filter_map(|l| l.trim().strip_prefix("IFUNC "))
        .map(|l| {
            let mut words = l.split_whitespace();
            let name = words.next().unwrap_or("?").to_string();
            let bytes: Vec<u8> = words
                .filter_map(|w| u8::from_str_radix(w, 16).ok())
                .collect();
            let mut d = iced_x86::Decoder::new(64, &bytes, iced_x86::DecoderOptions::NONE);
            let vex = (0..8)
                .map_while(|_| d.can_decode().then(|| d.decode()))
                .any(|i| i.encoding() == iced_x86::EncodingKind::VEX);
            (name, vex)
        })
        .collect()
}

#[test]
fn glibc_sees_each_x86_64_level_and_picks_avx2_string_functions_on_v3() {
    let u = Userland::new("glibc");
    let loader = "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2";
    let command = format!(
        "{loader} --help | grep 'x86-64-v'; /bin/ifunc_probe; \
         {loader} /lib/x86_64-linux-gnu/libc.so.6 | head -1"
    );
    let ran = |lines: &[String]| lines.iter().any(|l| l.contains("GNU C Library"));

    let lines = u.run("max", &command);
    assert!(
        has(&lines, "x86-64-v3 (supported, searched)"),
        "glibc should find x86-64-v3: {lines:#?}"
    );
    assert!(has(&lines, "x86-64-v2 (supported, searched)"), "{lines:#?}");
    let picks = vex_functions(&lines);
    assert_eq!(picks.len(), 5, "the probe ran: {lines:#?}");
    assert!(
        picks.iter().all(|(_, vex)| *vex),
        "glibc should pick its AVX2 (VEX-encoded) string functions: {picks:?}"
    );
    assert!(ran(&lines), "libc.so.6 ran: {lines:#?}");

    let lines = u.run("v2", &command);
    assert!(has(&lines, "x86-64-v2 (supported, searched)"), "{lines:#?}");
    assert!(has(&lines, "x86-64-v3"), "v2 hides v3: {lines:#?}");
    let picks = vex_functions(&lines);
    assert!(
        picks.len() == 5 && picks.iter().all(|(_, vex)| !vex),
        "without AVX glibc picks SSE variants: {picks:?}"
    );

    let lines = u.run("v1", &command);
    assert!(has(&lines, "x86-64-v2"), "v1 has no v2: {lines:#?}");
    assert!(ran(&lines), "libc.so.6 ran: {lines:#?}");
}

/// `openssl` reading `input` (a shell expression) with `args`, its output
/// as lowercase hex (busybox `od`), one line.
fn openssl_hex(input: &str, args: &str) -> String {
    format!("{input} | openssl {args} | od -An -tx1 -v | tr -d ' \\n'; echo")
}

#[test]
fn openssl_gives_the_known_answers_with_aes_ni_pclmulqdq_and_sha() {
    let u = Userland::new("openssl");
    let key = "000102030405060708090a0b0c0d0e0f";
    let zero_key = "00000000000000000000000000000000";
    // Published answers: FIPS-197 Appendix C.1 (AES-128), FIPS 180-4
    // examples (SHA-1, SHA-256 of "abc"), and the GCM specification's test
    // cases 1 and 2 (McGrew and Viega): the tag of an empty message is
    // GMAC of nothing; the ciphertext of 16 zero bytes is AES-CTR from
    // counter block 2.
    let checks: Vec<(String, &str)> = vec![
        (
            openssl_hex(
                "printf '\\000\\021\\042\\063\\104\\125\\146\\167\\210\\231\\252\\273\\314\\335\\356\\377'",
                &format!("enc -aes-128-ecb -nopad -K {key}"),
            ),
            "69c4e0d86a7b0430d8cdb78070b4c55a",
        ),
        (
            "printf abc | openssl dgst -sha256 -r | cut -c1-64".to_string(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        ),
        (
            "printf abc | openssl dgst -sha1 -r | cut -c1-40".to_string(),
            "a9993e364706816aba3e25717850c26c9cd0d89d",
        ),
        (
            openssl_hex(
                "head -c 16 /dev/zero",
                &format!("enc -aes-128-ctr -K {zero_key} -iv 00000000000000000000000000000002"),
            ),
            "0388dace60b6a392f328c2b971b2fe78",
        ),
        (
            format!(
                "printf '' | openssl mac -cipher AES-128-GCM -macopt hexkey:{zero_key} \
                 -macopt hexiv:000000000000000000000000 GMAC"
            ),
            "58E2FCCEFA7E3061367F1D57A4E7455A",
        ),
        // GMAC over 4 KiB: GHASH's bulk (PCLMULQDQ, AVX) path. The answer
        // is what this project's host CPU computes with the same OpenSSL.
        (
            format!(
                "head -c 4096 /dev/zero | openssl mac -cipher AES-128-GCM \
                 -macopt hexkey:{key} -macopt hexiv:000000000000000000000000 GMAC"
            ),
            GMAC_4K_ZEROS,
        ),
    ];
    let script: String = checks
        .iter()
        .enumerate()
        .map(|(i, (c, _))| format!("echo CHECK{i}: $({c}); "))
        .collect();
    let command = format!("grep -m1 '^flags' /proc/cpuinfo | grep -o -w -E 'aes|pclmulqdq|sha_ni|avx2' | tr '\\n' ' '; echo; {script}");
    let lines = u.run("max", &command);
    let flags = lines
        .iter()
        .find(|l| l.contains("pclmulqdq"))
        .cloned()
        .unwrap_or_default();
    for f in ["aes", "pclmulqdq", "sha_ni", "avx2"] {
        assert!(
            flags.split_whitespace().any(|w| w == f),
            "{f} offered: {lines:#?}"
        );
    }
    for (i, (_, want)) in checks.iter().enumerate() {
        let got = lines
            .iter()
            .find_map(|l| l.trim().strip_prefix(&format!("CHECK{i}:")))
            .map(str::trim)
            .unwrap_or_else(|| panic!("check {i} printed nothing: {lines:#?}"));
        assert_eq!(got, *want, "check {i}");
    }
}

/// GMAC (AES-128 key 000102...0f, zero IV) of 4096 zero bytes, as
/// computed by `openssl mac` on this project's host (AES-NI, PCLMULQDQ).
const GMAC_4K_ZEROS: &str = "93CF8F88862B40BF724C3A6C3E764245";
