//! Malicious guests, end to end through the CLI (`alcazar run --kit`):
//! kit programs that attack the VMM from inside the guest, on the emu
//! engine and, where the program is small enough for the kvm engine's
//! slow ring-0 emulation on this project's hosts, on kvm too.
//!
//! - `hostile-virtio`: descriptors outside RAM, straddling its end or on
//!   MMIO, descriptor loops, chains longer than the queue, bad indirect
//!   tables, an available `idx` far ahead, rings outside RAM; each must be
//!   refused visibly and the device must still work afterwards; the same
//!   against virtio-blk (`hostile-virtio-blk`, on a scratch image that
//!   must come out unchanged).
//! - `register-storm`: every port and MMIO register window written with
//!   0, ones, 0xaa.. and 0x55.. at every width (emu: all 65536 ports;
//!   kvm: `register-storm-quick`, ports below 0x1000 where every device
//!   of the machine lives — the full port sweep would cost about a minute
//!   of kvm port exits).
//! - `irq-storm`: self-IPI storms with interrupts on and off, the 8254 at
//!   ~597 kHz through the 8259A and the IOAPIC, a virtio MSI-X vector
//!   fired 200 times with interrupts off then on.
//!
//! Each test checks the kit's pass status and lines (the program checks
//! what the guest sees), and that the VMM's peak resident memory stayed
//! under the guest's RAM plus [`VMM_ALLOWANCE`]: the VMM must not queue
//! work or buffer data per guest action.
//!
//! kvm tests print `SKIPPED` and why when /dev/kvm does not open, and
//! fail instead under `ALCAZAR_REQUIRE_KVM=1` (as CI sets it).

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{hang_report, kvm_available};

/// The guest RAM every run gets (also the kit harness's default).
const GUEST_RAM: u64 = 32 << 20;

/// What the VMM may use beyond the guest's RAM. Measured peaks (VmHWM)
/// of these runs on the development host: 8.5-10.5 MiB in all (a kit
/// guest touches only a few hundred KiB of its RAM; the binary, its
/// libraries, the thread stacks and the emu engine's code cache make up
/// the rest). 64 MiB leaves room for a different allocator, build or
/// host while still catching growth per guest action: `register-storm`
/// makes about 1.5 million device accesses and `irq-storm` about 6000
/// interrupts and 400 MSI-X messages, so a leak of a few dozen bytes per
/// access or a queue entry per interrupt that is never drained breaks
/// the bound.
const VMM_ALLOWANCE: u64 = 64 << 20;

/// Most lines the VMM may write to stderr in one run: its start and exit
/// lines plus a few rate-limited warnings (`irq-storm` makes the virtio
/// transport refuse DRIVER_OK 400 times; only the first few are logged).
const MAX_LOG_LINES: usize = 32;

/// Longest one run may take (the slowest, `register-storm-quick` on kvm,
/// takes about 4 s here).
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// How one run ended.
struct Run {
    status: i32,
    stdout: String,
    stderr: String,
    /// Peak resident set of the VMM process, in bytes.
    peak_rss: u64,
}

/// The `VmHWM` (peak resident set) of process `pid` in bytes, from
/// `/proc/PID/status` (proc(5)); `None` once it has exited.
fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(kib * 1024)
}

/// Runs kit `program` on `engine` through the CLI, polling its peak
/// resident set every few milliseconds until it exits.
///
/// The peak is read from `/proc/PID/status` while the VMM runs, not
/// from `ru_maxrss` after it exits: Linux carries the peak of the
/// forked (vforked) test process into the exec'd child's `ru_maxrss`,
/// which then measures the test harness, not the VMM. `VmHWM` belongs to
/// the VMM's own address space and never decreases, so the last poll
/// before the exit sees all but the last few milliseconds of growth.
fn run(program: &str, engine: &str, extra: &[&str]) -> Run {
    let memory = format!("{}M", GUEST_RAM >> 20);
    let mut child = Command::new(env!("CARGO_BIN_EXE_alcazar"))
        .args(["run", "--kit", program, "--engine", engine])
        .args(["--memory", &memory, "--api-socket", "none"])
        .args(extra)
        .env_remove("ALCAZAR_LOG") // the default filter, as a user runs it
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("alcazar starts");
    // The storms write raw bytes to COM1: read bytes, not UTF-8.
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            String::from_utf8_lossy(&bytes).into_owned()
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("stdout is piped")));
    let stderr = drain(Box::new(child.stderr.take().expect("stderr is piped")));
    let deadline = Instant::now() + RUN_TIMEOUT;
    let mut peak = 0;
    let status = loop {
        if let Some(now) = peak_rss(child.id()) {
            peak = peak.max(now);
        }
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let threads = hang_report(child.id());
            let _ = child.kill();
            let _ = child.wait();
            panic!("{program} on {engine} did not finish in {RUN_TIMEOUT:?}\n{threads}");
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let status = status
        .code()
        .unwrap_or_else(|| panic!("{program} on {engine}: the VMM died ({status})"));
    assert!(peak > 0, "{program} on {engine}: no VmHWM was ever read");
    Run {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
        peak_rss: peak,
    }
}

/// Runs `program` on `engine` and checks its expected lines (in order),
/// its exit status and the memory bound.
fn check(program: &str, engine: &str) {
    check_with(program, engine, &[]);
}

/// [`check`] with extra `alcazar run` arguments.
fn check_with(program: &str, engine: &str, extra: &[&str]) {
    let expect = alcazar_kit::build(program)
        .expect("the program exists")
        .expect("the program assembles")
        .expect;
    let started = Instant::now();
    let run = run(program, engine, extra);
    let shown = format!(
        "{program} on {engine}\nstdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    let mut rest = run.stdout.as_str();
    for line in &expect.output {
        let at = rest
            .find(line)
            .unwrap_or_else(|| panic!("expected {line:?} (in order); {shown}"));
        rest = &rest[at + line.len()..];
    }
    assert_eq!(run.status, expect.status, "exit status; {shown}");
    // The log is bounded too: a detached VM's log is a file, and every
    // abuse above can be repeated by the guest at will.
    let log_lines = run.stderr.lines().count();
    assert!(
        log_lines <= MAX_LOG_LINES,
        "{log_lines} log lines: the guest can flood the VMM's log; {shown}"
    );
    let bound = GUEST_RAM + VMM_ALLOWANCE;
    assert!(
        run.peak_rss < bound,
        "peak RSS {} KiB is over the bound of {} KiB; {shown}",
        run.peak_rss >> 10,
        bound >> 10
    );
    eprintln!(
        "{program} on {engine}: status {}, peak RSS {} KiB (bound {} KiB), {:.2} s",
        run.status,
        run.peak_rss >> 10,
        bound >> 10,
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn a_hostile_virtio_driver_is_refused_and_the_device_recovers_on_emu() {
    check("hostile-virtio", "emu");
}

#[test]
fn a_hostile_virtio_driver_is_refused_and_the_device_recovers_on_kvm() {
    if kvm_available("a_hostile_virtio_driver_is_refused_and_the_device_recovers_on_kvm") {
        check("hostile-virtio", "kvm");
    }
}

/// A 1 MiB disk image whose first sector is a pattern (what the valid
/// read of `hostile-virtio-blk` must get), removed on drop.
struct Disk(std::path::PathBuf);

impl Disk {
    fn new(test: &str) -> Disk {
        let path = std::env::temp_dir().join(format!("alcazar-{test}-{}.img", std::process::id()));
        std::fs::write(&path, Disk::contents()).expect("disk image");
        Disk(path)
    }

    fn contents() -> Vec<u8> {
        let mut bytes: Vec<u8> = (0..512u32).map(|i| (i * 7 + 1) as u8).collect();
        bytes.resize(1 << 20, 0);
        bytes
    }

    /// Runs `hostile-virtio-blk` on `engine` with this disk, then checks
    /// that no abuse made the device write to the image.
    fn attack(&self, engine: &str) {
        let path = self.0.to_str().expect("a UTF-8 temp path");
        check_with("hostile-virtio-blk", engine, &["--disk", path]);
        let after = std::fs::read(&self.0).expect("disk image");
        assert!(after == Disk::contents(), "the disk image changed");
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn a_hostile_virtio_blk_driver_is_refused_and_the_disk_recovers_on_emu() {
    Disk::new("hostile-blk-emu").attack("emu");
}

#[test]
fn a_hostile_virtio_blk_driver_is_refused_and_the_disk_recovers_on_kvm() {
    if kvm_available("a_hostile_virtio_blk_driver_is_refused_and_the_disk_recovers_on_kvm") {
        Disk::new("hostile-blk-kvm").attack("kvm");
    }
}

#[test]
fn storming_every_register_at_every_width_leaves_the_machine_working_on_emu() {
    check("register-storm", "emu");
}

#[test]
fn storming_every_register_below_port_0x1000_leaves_the_machine_working_on_kvm() {
    if kvm_available("storming_every_register_below_port_0x1000_leaves_the_machine_working_on_kvm")
    {
        check("register-storm-quick", "kvm");
    }
}

#[test]
fn interrupt_storms_coalesce_and_stop_at_the_mask_on_emu() {
    check("irq-storm", "emu");
}

#[test]
fn interrupt_storms_coalesce_and_stop_at_the_mask_on_kvm() {
    if kvm_available("interrupt_storms_coalesce_and_stop_at_the_mask_on_kvm") {
        check("irq-storm", "kvm");
    }
}

/// A fork bomb in a Linux guest of 256 MiB on one vCPU: the VMM's peak
/// memory stays within the guest's RAM plus [`VMM_ALLOWANCE`] plus the
/// emu engine's two per-vCPU caches at their bounds. A guest that churns
/// through code (thousands of processes, pages freed and reused) makes
/// the emu engine decode and translate without end; the decoded-block
/// cache (`alcazar_emu::code::BLOCK_CACHE_BYTES`) and the translated-code
/// cache (`--emu-code-cache`) are bounded and start over when full, so
/// the host does not pay for it. (Before the bounds this levelled off at
/// 394 MB, 138 MB above the guest.)
///
/// Memory is the proportional set size (`Pss` in smaps_rollup), polled:
/// the code cache is one memory object mapped twice (writable, and
/// executable), which the resident set counts twice.
#[test]
fn a_fork_bomb_in_a_linux_guest_stays_within_the_memory_bound() {
    common::guest_kernel_release("cloud");
    let guest_ram: u64 = 256 << 20;
    let mut child = Command::new(env!("CARGO_BIN_EXE_alcazar"))
        .args([
            "run",
            "--engine",
            "emu",
            "--memory",
            "256M",
            "--api-socket",
            "none",
        ])
        .args([
            "--exec",
            "f(){ f|f & }; f 2>/dev/null; sleep 12; echo BOMB-DONE",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("alcazar starts");
    let mut out = child.stdout.take().expect("stdout is piped");
    let stdout = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + common::BOOT_TIMEOUT;
    let mut peak = 0;
    loop {
        if let Some(now) = pss(child.id()) {
            peak = peak.max(now);
        }
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        if Instant::now() > deadline {
            let threads = hang_report(child.id());
            let _ = child.kill();
            panic!("the fork bomb did not end\n{threads}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let stdout = stdout.join().unwrap_or_default();
    assert!(stdout.contains("BOMB-DONE"), "the guest survived: {stdout}");
    println!(
        "fork bomb: VMM peak {} MiB for a {} MiB guest",
        peak >> 20,
        guest_ram >> 20
    );
    let caches = alcazar_emu::code::BLOCK_CACHE_BYTES as u64
        + alcazar_vmm::config::EmuSettings::default().code_cache as u64;
    assert!(
        peak <= guest_ram + VMM_ALLOWANCE + caches,
        "peak {} MiB > guest {} MiB + {} MiB + the emu caches' {} MiB",
        peak >> 20,
        guest_ram >> 20,
        VMM_ALLOWANCE >> 20,
        caches >> 20
    );
}

/// The proportional set size of process `pid` in bytes (`Pss` of
/// `/proc/PID/smaps_rollup`, proc(5)); `None` once it has exited.
fn pss(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let kib = text
        .lines()
        .find_map(|l| l.strip_prefix("Pss:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(kib * 1024)
}
