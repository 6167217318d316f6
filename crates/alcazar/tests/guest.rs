//! `alcazar guest`: a real fetch from Debian's mirrors into a fresh cache,
//! then checks of what it made — the kernel is a bzImage, the initramfs
//! holds `/init`, busybox and the virtio modules in a loadable order, the
//! fetched busybox decodes `/init`'s command encoding — and, where QEMU is
//! installed, boots of the guest: a command's exit status through the
//! debug-exit port, and `poweroff` from the shell.
//!
//! Needs apt-get and dpkg-deb (else it checks the error that says what to
//! do instead). QEMU is optional unless `ALCAZAR_REQUIRE_QEMU=1`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn alcazar(cache: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_alcazar"))
        .args(args)
        .env("XDG_CACHE_HOME", cache)
        .stdin(Stdio::null())
        .output()
        .expect("alcazar runs")
}

fn on_path(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// One entry of a newc archive: name, mode, rdev, data.
struct Entry {
    name: String,
    mode: u32,
    rdev: (u32, u32),
    data: Vec<u8>,
}

/// Reads a newc cpio archive (a second implementation, independent of the
/// writer inside the binary).
fn read_newc(a: &[u8]) -> Vec<Entry> {
    let mut at = 0;
    let mut out = Vec::new();
    loop {
        assert_eq!(&a[at..at + 6], b"070701", "newc magic at {at}");
        let field = |i: usize| {
            let s = std::str::from_utf8(&a[at + 6 + 8 * i..at + 14 + 8 * i]).unwrap();
            u32::from_str_radix(s, 16).unwrap()
        };
        let (mode, size, namesize) = (field(1), field(6) as usize, field(11) as usize);
        let name = text(&a[at + 110..at + 110 + namesize - 1]);
        let data_at = (at + 110 + namesize).next_multiple_of(4);
        let data = a[data_at..data_at + size].to_vec();
        let rdev = (field(9), field(10));
        at = (data_at + size).next_multiple_of(4);
        if name == "TRAILER!!!" {
            return out;
        }
        out.push(Entry {
            name,
            mode,
            rdev,
            data,
        });
    }
}

/// base64url without padding, written again here from RFC 4648 section 5.
fn base64url(bytes: &[u8]) -> String {
    let abc = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = String::new();
    for &b in bytes {
        bits = bits << 8 | u32::from(b);
        n += 8;
        while n >= 6 {
            n -= 6;
            out.push(abc[(bits >> n & 63) as usize] as char);
        }
    }
    if n > 0 {
        out.push(abc[(bits << (6 - n) & 63) as usize] as char);
    }
    out
}

struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn without_apt_the_error_says_what_to_do_instead() {
    let dir =
        Scratch(std::env::temp_dir().join(format!("alcazar-guest-noapt-{}", std::process::id())));
    let out = Command::new(env!("CARGO_BIN_EXE_alcazar"))
        .args(["guest", "fetch"])
        .env("XDG_CACHE_HOME", &dir.0)
        .env("PATH", "/nonexistent")
        .output()
        .expect("alcazar runs");
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    for hint in [
        "apt-get",
        "--from-debs DIR",
        "--kernel PATH",
        "--initrd PATH",
    ] {
        assert!(err.contains(hint), "no {hint:?} in: {err}");
    }
    assert!(
        !dir.0.join("alcazar/guests/cloud").exists(),
        "a failed fetch left a guest"
    );
}

#[test]
fn fetch_builds_a_bootable_cloud_guest() {
    if !on_path("apt-get") || !on_path("dpkg-deb") {
        eprintln!("SKIPPED fetch_builds_a_bootable_cloud_guest: no apt-get/dpkg-deb on this host");
        return;
    }
    let dir =
        Scratch(std::env::temp_dir().join(format!("alcazar-guest-test-{}", std::process::id())));
    let cache = dir.0.join("cache");

    // 1. A real fetch; stdout is exactly the two paths.
    let out = alcazar(&cache, &["guest", "fetch"]);
    assert!(out.status.success(), "fetch failed: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let paths: Vec<&str> = stdout.lines().collect();
    let guests = cache.join("alcazar/guests/cloud");
    assert_eq!(
        paths,
        [
            guests.join("vmlinuz").to_str().unwrap(),
            guests.join("initrd.img").to_str().unwrap()
        ]
    );
    // No staging or work directories are left behind (only the lock file).
    let mut leftovers: Vec<_> = std::fs::read_dir(cache.join("alcazar/guests"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    leftovers.sort();
    assert_eq!(leftovers, [".lock", "cloud"]);

    // 2. The kernel is a bzImage: "HdrS" at 0x202, boot protocol >= 2.12
    // (the kernel's Documentation/arch/x86/boot.rst).
    let kernel = std::fs::read(paths[0]).unwrap();
    assert_eq!(&kernel[0x202..0x206], b"HdrS");
    let protocol = u16::from_le_bytes([kernel[0x206], kernel[0x207]]);
    assert!(protocol >= 0x020c, "boot protocol {protocol:#x}");

    // 3. The initramfs.
    let gz = std::fs::read(paths[1]).unwrap();
    let mut archive = Vec::new();
    flate2::read::GzDecoder::new(gz.as_slice())
        .read_to_end(&mut archive)
        .unwrap();
    let entries = read_newc(&archive);
    let find = |name: &str| entries.iter().find(|e| e.name == name);
    let init = find("init").expect("/init");
    assert!(init.data.starts_with(b"#!/bin/busybox sh\n"));
    assert_eq!(init.mode & 0o777, 0o755);
    let busybox = find("bin/busybox").expect("/bin/busybox");
    assert!(busybox.data.starts_with(b"\x7fELF"));
    assert_eq!(find("bin/sh").expect("/bin/sh").mode & 0o170000, 0o120000);
    let console = find("dev/console").expect("/dev/console");
    assert_eq!((console.mode & 0o170000, console.rdev), (0o020000, (5, 1)));
    assert!(find("etc/inittab").is_some());
    for d in ["proc", "sys", "dev", "tmp", "root"] {
        assert_eq!(find(d).expect(d).mode & 0o170000, 0o040000, "{d}");
    }
    let order = text(&find("etc/alcazar/modules").expect("module list").data);
    let order: Vec<&str> = order.lines().collect();
    let at = |file: &str| {
        order
            .iter()
            .position(|p| p.ends_with(&format!("/{file}")))
            .unwrap_or_else(|| panic!("{file} not in {order:?}"))
    };
    for m in [
        "virtio_ring.ko",
        "virtio.ko",
        "virtio_pci.ko",
        "virtio_blk.ko",
        "virtio_net.ko",
        "virtio_console.ko",
        "virtio-rng.ko",
    ] {
        let path = &order[at(m)][1..];
        let module = find(path).unwrap_or_else(|| panic!("{path} not in the archive"));
        assert!(
            module.data.starts_with(b"\x7fELF"),
            "{path} is not an ELF module"
        );
    }
    for (before, after) in [
        ("virtio_ring.ko", "virtio.ko"),
        ("virtio.ko", "virtio_pci.ko"),
        ("failover.ko", "net_failover.ko"),
        ("net_failover.ko", "virtio_net.ko"),
        ("virtio.ko", "virtio-rng.ko"),
    ] {
        assert!(at(before) < at(after), "{before} must load before {after}");
    }

    // 4. The fetched busybox agrees with our reader, and decodes what we
    // encode with /init's own function.
    let bb = dir.0.join("busybox");
    std::fs::write(&bb, &busybox.data).unwrap();
    std::fs::set_permissions(&bb, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let cpio = dir.0.join("initrd.cpio");
    std::fs::write(&cpio, &archive).unwrap();
    let listed = Command::new(&bb)
        .args(["cpio", "-t", "-F"])
        .arg(&cpio)
        .output()
        .unwrap();
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    let names: Vec<String> = entries.iter().map(|e| e.name.clone()).collect();
    assert_eq!(text(&listed.stdout).lines().collect::<Vec<_>>(), names);
    let script = text(&init.data);
    let start = script.find("decode_b64url() {").expect("decode function");
    let end = start + script[start..].find("\n}\n").expect("end of function") + 3;
    let decode = format!("{}\ndecode_b64url \"$1\"", &script[start..end]);
    let all_bytes: Vec<u8> = (1..=255).collect();
    for command in [&b"echo 'it works' && exit 3"[..], b"x\ny", b"a", &all_bytes] {
        let out = Command::new(&bb)
            .args(["sh", "-c", &decode, "sh", &base64url(command)])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(out.stdout, command);
    }

    // 5. A second fetch reuses the cache; `path` and `ls` report it.
    let again = alcazar(&cache, &["guest", "fetch"]);
    assert!(again.status.success());
    assert!(
        text(&again.stderr).contains("cached"),
        "{}",
        text(&again.stderr)
    );
    assert_eq!(text(&alcazar(&cache, &["guest", "path"]).stdout), stdout);
    let ls = text(&alcazar(&cache, &["guest", "ls"]).stdout);
    assert!(
        ls.starts_with("cloud ") && ls.contains("-cloud-amd64"),
        "{ls}"
    );
    let none = alcazar(&cache, &["guest", "path", "--flavor", "generic"]);
    assert_eq!(none.status.code(), Some(1));

    // 6. Boots, where QEMU is here.
    if !on_path("qemu-system-x86_64") {
        if std::env::var("ALCAZAR_REQUIRE_QEMU").as_deref() == Ok("1") {
            panic!("ALCAZAR_REQUIRE_QEMU=1 but qemu-system-x86_64 is not installed");
        }
        eprintln!("SKIPPED the QEMU boots: qemu-system-x86_64 is not installed");
        return;
    }
    boot_runs_a_command_and_exits_with_its_status(paths[0], paths[1]);
    boot_to_a_shell_and_power_off(paths[0], paths[1]);
}

/// QEMU TCG with the debug-exit device at 0xf4, the console on stdio.
fn qemu(kernel: &str, initrd: &str, append: &str) -> Command {
    let mut q = Command::new("qemu-system-x86_64");
    q.args([
        "-accel",
        "tcg",
        "-M",
        "pc",
        "-m",
        "256",
        "-nographic",
        "-no-reboot",
    ])
    .args(["-kernel", kernel, "-initrd", initrd])
    .args(["-append", &format!("console=ttyS0 panic=-1 quiet {append}")])
    .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=4"]);
    q
}

/// A running QEMU whose console output arrives through a channel.
struct Guest {
    child: std::process::Child,
    output: mpsc::Receiver<Vec<u8>>,
    seen: String,
}

impl Guest {
    fn start(mut cmd: Command) -> Guest {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("qemu starts");
        let mut stdout = child.stdout.take().unwrap();
        let (tx, output) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        Guest {
            child,
            output,
            seen: String::new(),
        }
    }

    /// Reads the console until `marker` appears, or the deadline passes.
    fn wait_for(&mut self, marker: &str, deadline: Instant) -> bool {
        while !self.seen.contains(marker) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.output.recv_timeout(left) {
                Ok(bytes) => self.seen.push_str(&text(&bytes)),
                Err(_) => return false,
            }
        }
        true
    }

    /// Waits for QEMU to exit (killing it at the deadline); its status.
    fn exit_code(&mut self, deadline: Instant) -> Option<i32> {
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                while let Ok(bytes) = self.output.recv_timeout(Duration::from_millis(200)) {
                    self.seen.push_str(&text(&bytes));
                }
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn boot_runs_a_command_and_exits_with_its_status(kernel: &str, initrd: &str) {
    let command = "for m in virtio_pci virtio_blk virtio_net virtio_console virtio_rng; do \
                   grep -q \"^$m \" /proc/modules || echo \"missing $m\"; done; \
                   echo \"hello from $(hostname)\"; exit 7";
    let append = format!("alcazar.exec={}", base64url(command.as_bytes()));
    let mut guest = Guest::start(qemu(kernel, initrd, &append));
    let deadline = Instant::now() + Duration::from_secs(180);
    let code = guest.exit_code(deadline);
    let seen = &guest.seen;
    assert!(seen.contains("ALCAZAR-READY"), "no ready marker: {seen}");
    assert!(seen.contains("hello from alcazar"), "{seen}");
    assert!(!seen.contains("missing"), "{seen}");
    assert!(!seen.contains("alcazar-init:"), "/init complained: {seen}");
    // isa-debug-exit: QEMU exits with (status << 1) | 1.
    assert_eq!(code, Some(7 << 1 | 1), "{seen}");
}

fn boot_to_a_shell_and_power_off(kernel: &str, initrd: &str) {
    let mut guest = Guest::start(qemu(kernel, initrd, ""));
    let deadline = Instant::now() + Duration::from_secs(180);
    assert!(guest.wait_for("ALCAZAR-READY", deadline), "{}", guest.seen);
    // Let busybox init start the shell, then use it.
    std::thread::sleep(Duration::from_secs(2));
    let mut stdin = guest.child.stdin.take().unwrap();
    stdin.write_all(b"echo shell-$((6*7))\n").unwrap();
    stdin.flush().unwrap();
    assert!(guest.wait_for("shell-42", deadline), "{}", guest.seen);
    stdin.write_all(b"poweroff\n").unwrap();
    stdin.flush().unwrap();
    // A clean ACPI power-off: QEMU exits 0.
    assert_eq!(guest.exit_code(deadline), Some(0), "{}", guest.seen);
    assert!(guest.seen.contains("Power down"), "{}", guest.seen);
}
