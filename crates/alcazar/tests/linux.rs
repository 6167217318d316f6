//! Linux guests end to end: the default Debian guest boots on the emu
//! engine, runs commands, keeps time, takes interrupts, brings up a second
//! CPU, powers off, and its failures are reported.
//!
//! These boots take tens of seconds each. The guest images come from
//! `alcazar guest fetch` (run by `.ci/run` first; a test fetches on first
//! use otherwise, which needs `apt-get` and a Debian mirror).

mod common;

use std::process::{Command, Stdio};

use common::{guest_kernel_release, interrupt_count, unix_seconds, Guest};

#[test]
fn exec_runs_commands_on_two_cpus_with_interrupts_and_host_time() {
    let release = guest_kernel_release("cloud");
    let script = "uname -r; nproc; cat /proc/interrupts; echo; sleep 1; cat /proc/interrupts; \
                  echo GUEST-DATE $(date +%s); exit 3";
    let mut g = Guest::start(&["run", "--engine", "emu", "--cpus", "2", "--exec", script]);
    g.expect_line("ALCAZAR-READY");
    g.expect_line(&release);
    let (cpus, _) = g.expect_line("2");
    assert_eq!(cpus.trim(), "2", "nproc");
    let (date_line, host_at) = g.expect_line("GUEST-DATE");
    let (status, lines, stderr) = g.finish();
    assert_eq!(
        status,
        Some(3),
        "exit 3 is the VMM's status; stderr: {stderr}"
    );

    // Interrupts count: two snapshots a second apart.
    let split = lines
        .iter()
        .position(|l| l.trim().is_empty())
        .expect("the blank line between the snapshots");
    let (first, second) = lines.split_at(split);
    for name in ["timer", "ttyS0"] {
        let (a, b) = (interrupt_count(first, name), interrupt_count(second, name));
        assert!(a > 0, "{name} interrupts have counted: {a}");
        assert!(b >= a, "{name}: {a} then {b}");
    }
    let loc = |l: &[String]| interrupt_count(l, "Local timer interrupts");
    assert!(
        loc(second) > loc(first),
        "local APIC timer ticks during `sleep 1`"
    );

    // The guest's clock is the host's.
    let guest: f64 = date_line
        .split_whitespace()
        .nth(1)
        .and_then(|w| w.parse().ok())
        .expect("a number after GUEST-DATE");
    let host = unix_seconds(host_at);
    assert!(
        (guest - host).abs() <= 2.0,
        "guest date {guest} vs host {host}"
    );
}

#[test]
fn poweroff_from_the_interactive_shell_ends_the_vmm_with_status_0() {
    guest_kernel_release("cloud");
    let mut g = Guest::start(&["run", "--engine", "emu"]);
    g.expect_line("ALCAZAR-READY");
    // The shell starts after the marker; anything typed before it is
    // buffered by the UART and the tty, so no prompt needs matching.
    g.type_line("echo SHELL-$((6*7))");
    g.expect_line("SHELL-42");
    g.type_line("poweroff");
    let (status, lines, stderr) = g.finish();
    assert_eq!(
        status,
        Some(0),
        "stderr: {stderr}\nstdout: {}",
        lines.join("\n")
    );
    assert!(
        stderr.contains("guest powered off"),
        "ACPI S5, not something else: {stderr}"
    );
}

/// `halt -f` halts every CPU with interrupts off: nothing can wake the
/// guest, so an `--exec` run ends with one clear line instead of waiting
/// for ever.
#[test]
fn an_exec_whose_guest_halts_every_cpu_ends_with_a_clear_line() {
    guest_kernel_release("cloud");
    let mut g = Guest::start(&[
        "run",
        "--engine",
        "emu",
        "--cpus",
        "2",
        "--exec",
        "echo HALTING; halt -f",
    ]);
    g.expect_line("HALTING");
    let (status, _, stderr) = g.finish();
    assert_eq!(status, Some(1), "stderr: {stderr}");
    assert!(
        stderr.contains("halted every vCPU with interrupts off"),
        "stderr: {stderr}"
    );
}

/// `--on-reboot restart`: a guest that reboots boots again (the disk
/// remembers the first boot), as a PC does.
#[test]
fn a_guest_reboot_restarts_the_vm_with_on_reboot_restart() {
    guest_kernel_release("cloud");
    let dir = std::env::temp_dir().join(format!("alcazar-reboot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let disk = dir.join("flag.img");
    std::fs::write(&disk, vec![0u8; 4096]).unwrap();
    let script = "if [ \"$(head -c 1 /dev/vda)\" = x ]; then echo SECOND-BOOT; exit 7; fi; \
                  printf x > /dev/vda; sync; echo FIRST-BOOT; reboot -f";
    let mut g = Guest::start(&[
        "run",
        "--engine",
        "emu",
        "--disk",
        &disk.display().to_string(),
        "--on-reboot",
        "restart",
        "--exec",
        script,
    ]);
    g.expect_line("FIRST-BOOT");
    g.expect_line("ALCAZAR-READY");
    g.expect_line("SECOND-BOOT");
    let (status, _, stderr) = g.finish();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(status, Some(7), "stderr: {stderr}");
}

#[test]
fn a_guest_kernel_panic_ends_the_vmm_with_status_1_and_its_last_lines() {
    guest_kernel_release("cloud");
    // SysRq 'c' crashes the kernel on purpose.
    let mut g = Guest::start(&[
        "run",
        "--engine",
        "emu",
        "--exec",
        "echo c > /proc/sysrq-trigger",
    ]);
    g.expect_line("ALCAZAR-READY");
    let (status, _, stderr) = g.finish();
    assert_eq!(status, Some(1), "stderr: {stderr}");
    assert!(stderr.contains("guest kernel panic"), "stderr: {stderr}");
    assert!(
        stderr.contains("the guest console's last lines") && stderr.contains("sysrq"),
        "the last console lines are shown: {stderr}"
    );
}

/// The engine counters in the `--telemetry` summary's first vCPU line
/// ("    engine: name=n ..."), by name.
fn engine_counters(stderr: &str) -> std::collections::BTreeMap<String, u64> {
    stderr
        .lines()
        .find_map(|l| l.trim().strip_prefix("engine: "))
        .unwrap_or("")
        .split_whitespace()
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// Both emu tiers boot the default guest and run the same user program
/// to the same answer: the translator (default) runs most instructions in
/// translated code, the interpreter (`--emu-tier interp`) translates
/// nothing. The program is `md5sum` over 4 MiB of `yes` (user code, loops
/// the translator compiles) whose answer the host computes too.
#[test]
fn both_emu_tiers_boot_and_compute_the_same_checksum() {
    guest_kernel_release("cloud");
    let script = "yes | head -c 4194304 | md5sum";
    let mut sums = Vec::new();
    for tier in ["jit", "interp"] {
        let mut g = Guest::start(&[
            "run",
            "--engine",
            "emu",
            "--emu-tier",
            tier,
            "--telemetry",
            "--exec",
            script,
        ]);
        g.expect_line("ALCAZAR-READY");
        let (line, _) = g.expect_line_matching(|l| l.len() == 35 && l.ends_with("  -"));
        let (status, _, stderr) = g.finish();
        assert_eq!(status, Some(0), "{tier}: stderr: {stderr}");
        let counters = engine_counters(&stderr);
        let translated = counters.get("jit_instructions").copied().unwrap_or(0);
        let all: u64 = stderr
            .lines()
            .find_map(|l| l.trim().strip_prefix("vcpu0: "))
            .and_then(|l| {
                l.split_whitespace()
                    .find_map(|kv| kv.strip_prefix("instructions="))
            })
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        if tier == "jit" {
            assert!(
                translated * 2 > all,
                "jit: {translated} of {all} instructions translated; stderr: {stderr}"
            );
        } else {
            assert_eq!(translated, 0, "interp translates nothing: {stderr}");
            assert!(all > 100_000_000, "interp: {all} instructions: {stderr}");
        }
        sums.push(line.split_whitespace().next().unwrap_or("").to_string());
    }
    assert_eq!(sums[0], sums[1], "the tiers agree");
    let host = {
        use std::io::Write;
        let mut child = Command::new("md5sum")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("md5sum runs");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(&b"y\n".repeat(2 << 20))
            .expect("writes");
        let out = child.wait_with_output().expect("md5sum ends");
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_string()
    };
    assert_eq!(sums[0], host, "the guest's md5sum is the host's");
}

#[test]
fn debians_generic_kernel_boots_to_the_marker() {
    guest_kernel_release("generic");
    let mut g = Guest::start(&[
        "run", "--engine", "emu", "--guest", "generic", "--exec", "uname -r",
    ]);
    g.expect_line("ALCAZAR-READY");
    let (release, _) = g.expect_line("-amd64");
    assert!(!release.contains("cloud"), "the generic kernel: {release}");
    let (status, _, stderr) = g.finish();
    assert_eq!(status, Some(0), "stderr: {stderr}");
}

/// The ELF `vmlinux` inside a bzImage: the payload the setup header points
/// at, decompressed with the host's `lz4` (Debian compresses with LZ4).
fn extract_vmlinux(bzimage: &std::path::Path, dir: &std::path::Path) -> std::path::PathBuf {
    let image = std::fs::read(bzimage).expect("read the bzImage");
    let u32_at = |at: usize| u32::from_le_bytes(image[at..at + 4].try_into().unwrap()) as usize;
    let setup_sects = match image[0x1f1] {
        0 => 4,
        n => usize::from(n),
    };
    let start = (setup_sects + 1) * 512 + u32_at(0x248);
    let payload = &image[start..start + u32_at(0x24c)];
    assert_eq!(
        &payload[..4],
        &[0x02, 0x21, 0x4c, 0x18],
        "an LZ4 (legacy) payload"
    );
    let compressed = dir.join("payload.lz4");
    std::fs::write(&compressed, payload).unwrap();
    let vmlinux = dir.join("vmlinux");
    // The kernel appends the uncompressed size after the LZ4 frames, which
    // lz4 reports as a bad trailing header: judge by the output instead.
    Command::new("lz4")
        .args(["-d", "-f", "-q"])
        .arg(&compressed)
        .arg(&vmlinux)
        .stderr(Stdio::null())
        .status()
        .expect("the lz4 tool is needed to extract vmlinux (apt-get install lz4; .ci/run does)");
    let elf = std::fs::read(&vmlinux).unwrap_or_default();
    assert!(
        elf.starts_with(b"\x7fELF") && elf.len() > 10 << 20,
        "lz4 gave no vmlinux"
    );
    vmlinux
}

#[test]
fn an_elf_vmlinux_boots_through_its_pvh_entry() {
    let (kernel, initrd) = common::default_guest_paths("cloud");
    let initrd = initrd.display().to_string();
    let initrd = initrd.as_str();
    let dir = std::env::temp_dir().join(format!("alcazar-pvh-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let vmlinux = extract_vmlinux(&kernel, &dir);
    let mut g = Guest::start(&[
        "run",
        "--engine",
        "emu",
        "--kernel",
        vmlinux.to_str().unwrap(),
        "--initrd",
        initrd,
        "--cmdline",
        "console=ttyS0 quiet cryptomgr.notests",
        "--exec",
        "uname -r",
    ]);
    g.expect_line("ALCAZAR-READY");
    let (status, _, stderr) = g.finish();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(status, Some(0), "stderr: {stderr}");
}

/// `vmlinux` with its PVH entry note made unrecognisable: the note's type
/// (XEN_ELFNOTE_PHYS32_ENTRY, 18) becomes 0x7fff, everything else stays.
fn strip_pvh_note(vmlinux: &[u8]) -> Vec<u8> {
    let mut elf = vmlinux.to_vec();
    let u16_at = |b: &[u8], at: usize| u16::from_le_bytes(b[at..at + 2].try_into().unwrap());
    let u32_at = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
    let u64_at = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
    assert_eq!(elf[4], 2, "a 64-bit ELF");
    let (phoff, phentsize, phnum) = (
        u64_at(&elf, 0x20) as usize,
        usize::from(u16_at(&elf, 0x36)),
        usize::from(u16_at(&elf, 0x38)),
    );
    let mut stripped = 0;
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        if u32_at(&elf, ph) != 4 {
            continue; // not PT_NOTE
        }
        let (offset, size) = (
            u64_at(&elf, ph + 8) as usize,
            u64_at(&elf, ph + 32) as usize,
        );
        let mut at = offset;
        while at + 12 <= offset + size {
            let (namesz, descsz) = (u32_at(&elf, at) as usize, u32_at(&elf, at + 4) as usize);
            if &elf[at + 12..at + 12 + namesz.min(4)] == b"Xen\0" && u32_at(&elf, at + 8) == 18 {
                elf[at + 8..at + 12].copy_from_slice(&0x7fffu32.to_le_bytes());
                stripped += 1;
            }
            at += 12 + namesz.next_multiple_of(4) + descsz.next_multiple_of(4);
        }
    }
    assert_eq!(stripped, 1, "the cloud vmlinux has one PVH entry note");
    elf
}

#[test]
fn an_elf_vmlinux_without_a_pvh_note_boots_through_startup_64() {
    let (kernel, initrd) = common::default_guest_paths("cloud");
    let initrd = initrd.display().to_string();
    let initrd = initrd.as_str();
    let dir = std::env::temp_dir().join(format!("alcazar-elf64-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let vmlinux = extract_vmlinux(&kernel, &dir);
    let bare = dir.join("vmlinux-no-pvh");
    std::fs::write(&bare, strip_pvh_note(&std::fs::read(&vmlinux).unwrap())).unwrap();
    let mut g = Guest::start(&[
        "run",
        "--engine",
        "emu",
        "--kernel",
        bare.to_str().unwrap(),
        "--initrd",
        initrd,
        "--cmdline",
        "console=ttyS0 quiet cryptomgr.notests",
        "--exec",
        "true",
    ]);
    g.expect_line("ALCAZAR-READY");
    let (status, _, stderr) = g.finish();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(status, Some(0), "stderr: {stderr}");
}
