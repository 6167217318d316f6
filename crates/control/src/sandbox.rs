//! The VMM's seccomp sandbox: once a VM is built, the process may make only
//! the system calls a running VMM needs.
//!
//! A guest is hostile, and the VMM parses everything it does: a bug in a
//! device model or in the emu engine is a way into the VMM process. The
//! filter bounds what such a bug can do. It is a seccomp-bpf program
//! (Linux `seccomp(2)`, `SECCOMP_SET_MODE_FILTER`) built with the rust-vmm
//! `seccompiler` crate from the allow-list below, and installed on every
//! thread of the process at once (`SECCOMP_FILTER_FLAG_TSYNC`), so threads
//! started later (vCPUs, timers, API connections) inherit it.
//!
//! ## When
//! `alcazar run` installs it after `Vm::create` and the API socket's bind,
//! before the vCPUs run: every file, device node and socket the machine
//! needs is open by then. `--no-seccomp` leaves it out, for debugging.
//!
//! ## What a refused call does
//! Any call not on the list kills the whole process
//! (`SECCOMP_RET_KILL_PROCESS`, the signal is SIGSYS). Returning `EPERM`
//! instead was considered and rejected: the VMM never makes such a call in
//! normal operation, so a refused call is either a VMM bug or an exploit at
//! work. An error return would let an exploit probe the filter call after
//! call, and would send a buggy VMM down error paths nobody tested (a
//! device half-reset, a vCPU thread gone); dying at once fails closed and
//! is impossible to miss. seccomp cannot print, so a user finds the call
//! one of three ways: the kernel's audit log (`dmesg` or `journalctl -k`
//! shows `audit: type=1326 ... sig=31 ... syscall=NR`; kills are logged by
//! default, see `/proc/sys/kernel/seccomp/actions_logged`), `strace -f`
//! (the last call before `+++ killed by SIGSYS +++`), or a run with
//! `--no-seccomp` to confirm the filter is the cause. The environment
//! variable `ALCAZAR_SECCOMP=log` swaps the kill for `SECCOMP_RET_LOG`
//! (allow, but log) to measure what a new feature calls.
//!
//! The one exception is `clone3`: its flags sit in memory, where a BPF
//! program cannot read them, so a second filter makes `clone3` fail with
//! `ENOSYS`; glibc then falls back to `clone`, whose flags are in a
//! register and are checked (threads only: `CLONE_THREAD` must be set, so
//! no new process can be forked).
//!
//! ## How the list was found
//! Measured, not guessed: `strace -f` with the filter in log mode over kit
//! programs on both engines (`demo`, `virtio-rng` through the kvm
//! engine's ioeventfd thread), a Linux boot with a virtio disk and
//! entropy device running a command, and API reboots and stops; every call
//! after the `seccomp()` that installs the filter is on the list, with
//! the thread that makes it, plus the few the code shows on paths those
//! runs did not reach (virtio-blk's `fdatasync` and `fallocate`, a Linux
//! reboot reading the kernel). Argument filters narrow `ioctl` (KVM's
//! ioctl type, the terminal's and TUN's, the socket ioctls only with a
//! network card), `socket` (none at all unless a network card or the API
//! socket needs one, and then only that family), `openat` (no `O_CREAT`,
//! `O_TRUNC` or `O_TMPFILE` unless a console writes to a file), `clone`,
//! `prctl` and `fcntl`.
//!
//! ## The API socket
//! When the API server stops it wakes its accept loop with `shutdown(2)` on
//! the listening socket (no connection to itself, so neither
//! `socket(AF_UNIX)` nor `connect` is allowed) and then removes the socket
//! file, so with an API socket `unlink` is allowed. `unlink` cannot be
//! narrowed to one path (the path is in memory); `--api-socket none` drops
//! it.
//!
//! ## The reboot
//! An API reboot builds the machine again inside the sandboxed process: it
//! opens the kernel, initrd, disk images and `/dev/kvm` again, creates a
//! KVM VM and vCPUs and maps guest memory. The list allows what that takes
//! (`openat` of existing files, the KVM ioctls, `mmap`), which is why
//! `openat` is on it at all; it still cannot create, remove or rename a
//! file, start a program, fork, trace, or open a network connection.
//!
//! ## Per thread kind
//! One filter covers every thread. A tighter filter for the vCPU threads
//! (no `openat`, no `accept4`) would have to be installed by each vCPU
//! thread at its start, inside `Vm::start`; the emu engine's vCPU threads
//! also run the devices (virtio-blk's `pwrite64` and `fdatasync`, the
//! TAP's `write`), so the gain is only `openat`, `socket` and `accept4`.
//! It is left for later; [`Needs`] is where it would plug in.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use alcazar_vmm::config::net::NetBackendConfig;
use alcazar_vmm::config::{ConsoleTarget, DeviceConfig, VmConfig};

/// What could not be built or installed.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The filter could not be compiled (a bug in the allow-list).
    #[error("cannot build the seccomp filter: {0}")]
    Build(#[from] seccompiler::BackendError),
    /// The kernel refused the filter (no seccomp support, or a thread
    /// could not be synchronized).
    #[error("cannot install the seccomp filter (run with --no-seccomp to go without): {0}")]
    Install(#[from] seccompiler::Error),
}

/// What the filter does with a call that is not on the list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Violation {
    /// `SECCOMP_RET_KILL_PROCESS`: the process dies of SIGSYS.
    KillProcess,
    /// `SECCOMP_RET_LOG`: the call goes through and the kernel logs it
    /// (to measure what a new feature needs).
    Log,
}

impl Violation {
    /// [`Violation::Log`] if `ALCAZAR_SECCOMP=log` is set, else
    /// [`Violation::KillProcess`].
    pub fn from_env() -> Self {
        match std::env::var("ALCAZAR_SECCOMP").as_deref() {
            Ok("log") => Violation::Log,
            _ => Violation::KillProcess,
        }
    }

    fn action(self) -> SeccompAction {
        match self {
            Violation::KillProcess => SeccompAction::KillProcess,
            Violation::Log => SeccompAction::Log,
        }
    }
}

/// The calls a machine needs beyond the common list, from its config.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Needs {
    /// A console writes to a file, which it creates at its first byte
    /// (`openat` with `O_CREAT | O_TRUNC`).
    pub creates_files: bool,
    /// A virtio-net card: a reboot opens `/dev/net/tun` again and may give
    /// the host end an address (`socket(AF_INET)`, the `SIOC*` ioctls).
    pub network: bool,
    /// A network card backed by passt (`--net user` or `passt=`): a reboot
    /// connects to passt's socket again (`socket(AF_UNIX)`, `connect`), and
    /// at the end the VMM kills and reaps the passt it started
    /// (`kill` with SIGKILL only, `wait4`) and removes its socket and
    /// directory (`unlink`, `rmdir`).
    pub passt: bool,
    /// An API socket: at its shutdown the server removes the socket file
    /// (`unlink`). [`Needs::of`] leaves it false: the caller
    /// that starts the server sets it.
    pub api_socket: bool,
}

impl Needs {
    /// What the machine built from `config` needs.
    pub fn of(config: &VmConfig) -> Self {
        let file_output = config
            .devices
            .iter()
            .any(|d| d.config.output_file().is_some());
        Needs {
            creates_files: matches!(config.serial, ConsoleTarget::File(_)) || file_output,
            network: config
                .devices
                .iter()
                .any(|d| matches!(d.config, DeviceConfig::VirtioNet(_))),
            passt: config.devices.iter().any(|d| {
                matches!(&d.config, DeviceConfig::VirtioNet(c) if c.backend != NetBackendConfig::Tap)
            }),
            api_socket: false,
        }
    }
}

/// Calls allowed whatever their arguments, each with who makes it.
const ALWAYS: &[(i64, &str)] = &[
    // Device emulation, consoles, API connections, eventfds.
    (
        libc::SYS_read,
        "every thread: stdin, API sockets, eventfds, TAP",
    ),
    (
        libc::SYS_write,
        "every thread: consoles, logs, API replies, eventfds, TAP",
    ),
    (
        libc::SYS_writev,
        "std's buffered writers (stderr, sockets); virtio-net-rx and vCPUs: a TAP frame (header + frame)",
    ),
    (
        libc::SYS_readv,
        "virtio-net-rx: a TAP frame, its header apart (NetBackend)",
    ),
    (
        libc::SYS_pread64,
        "virtio-blk reads; reboot reads the kernel",
    ),
    (libc::SYS_pwrite64, "virtio-blk writes"),
    (libc::SYS_lseek, "reboot: loading the kernel and initrd"),
    (
        libc::SYS_fdatasync,
        "virtio-blk FLUSH and write-through (File::sync_data)",
    ),
    (libc::SYS_fallocate, "virtio-blk DISCARD / WRITE_ZEROES"),
    (libc::SYS_close, "every thread: API connections, reboot"),
    (
        libc::SYS_fstat,
        "reboot: file sizes of the kernel, initrd, disks",
    ),
    (libc::SYS_newfstatat, "reboot: file sizes (std's metadata)"),
    (
        libc::SYS_getdents64,
        "reboot: a disk image lock conflict names its holder (/proc)",
    ),
    (libc::SYS_statx, "reboot: file sizes (std's metadata)"),
    // Memory: the allocator, thread stacks, guest RAM at a reboot.
    (libc::SYS_mmap, "the allocator, thread stacks, guest RAM"),
    (libc::SYS_munmap, "the allocator, thread stacks, guest RAM"),
    (libc::SYS_mprotect, "thread stack guard pages"),
    (libc::SYS_madvise, "the allocator returning memory"),
    (libc::SYS_mremap, "the allocator growing a buffer"),
    (libc::SYS_brk, "the allocator"),
    // Threads and their synchronization.
    (libc::SYS_futex, "every Mutex, Condvar and thread join"),
    (libc::SYS_set_robust_list, "glibc, at each new thread"),
    (libc::SYS_rseq, "glibc, at each new thread"),
    (
        libc::SYS_clone3,
        "new threads (answered ENOSYS by the second filter)",
    ),
    (libc::SYS_gettid, "logging, thread ids"),
    (libc::SYS_getpid, "logging, signals to self"),
    (
        libc::SYS_sched_getaffinity,
        "std::thread::available_parallelism",
    ),
    (libc::SYS_sched_yield, "spin loops, the emu engine's waits"),
    (libc::SYS_exit, "a thread ends"),
    (libc::SYS_exit_group, "the process ends"),
    // Signals: the kvm engine's vCPU kick, the signals thread, std.
    (libc::SYS_rt_sigaction, "the kvm kick handler; std"),
    (
        libc::SYS_rt_sigprocmask,
        "signals thread; new threads block signals",
    ),
    (libc::SYS_rt_sigreturn, "return from the kvm kick handler"),
    (libc::SYS_rt_sigtimedwait, "signals thread (sigwait)"),
    (
        libc::SYS_sigaltstack,
        "std's stack-overflow handler per thread",
    ),
    (
        libc::SYS_tgkill,
        "kicking a vCPU out of KVM_RUN (pthread_kill)",
    ),
    // Time.
    (
        libc::SYS_clock_gettime,
        "timers, telemetry (usually the vDSO)",
    ),
    (libc::SYS_clock_nanosleep, "timers thread, sleeps"),
    (libc::SYS_nanosleep, "sleeps"),
    // Waiting on file descriptors; eventfds.
    (
        libc::SYS_poll,
        "virtio-io (kvm ioeventfds), virtio-net-rx, console-in",
    ),
    (
        libc::SYS_eventfd2,
        "reboot: irqfds, ioeventfds, stop kickers",
    ),
    // The API server.
    (libc::SYS_accept4, "api: each new connection"),
    (libc::SYS_recvfrom, "api-conn: requests"),
    (libc::SYS_sendto, "api-conn: replies"),
    (libc::SYS_setsockopt, "api-conn: read timeouts"),
    (libc::SYS_shutdown, "api-conn: ending a console stream"),
    // Entropy.
    (libc::SYS_getrandom, "HashMap seeds"),
];

/// A condition on argument `arg` (`len` wide): `arg & mask == value`.
fn masked(arg: u8, len: SeccompCmpArgLen, mask: u64, value: u64) -> SeccompCondition {
    SeccompCondition::new(arg, len, SeccompCmpOp::MaskedEq(mask), value)
        .expect("argument index below 6")
}

/// A condition: argument `arg` equals `value`.
fn equals(arg: u8, len: SeccompCmpArgLen, value: u64) -> SeccompCondition {
    SeccompCondition::new(arg, len, SeccompCmpOp::Eq, value).expect("argument index below 6")
}

/// One rule of one condition.
fn rule(c: SeccompCondition) -> Result<SeccompRule, SandboxError> {
    Ok(SeccompRule::new(vec![c])?)
}

/// The ioctl type byte (bits 8-15 of the request, Linux
/// `include/uapi/asm-generic/ioctl.h`).
const IOC_TYPE_MASK: u64 = 0xff00;
/// KVM's ioctls (`KVMIO`, `include/uapi/linux/kvm.h`): KVM_RUN, the
/// register and memory-slot ioctls, and a reboot's KVM_CREATE_VM.
const KVMIO: u64 = 0xae << 8;
/// 'T': the terminal ioctls (TCGETS, TCSETS, TIOCGWINSZ, FIONBIO) and
/// TUN's (TUNSETIFF, TUNSETVNETHDRSZ, TUNSETOFFLOAD).
const TTY_AND_TUN: u64 = (b'T' as u64) << 8;
/// The socket ioctls (SIOCGIFFLAGS, SIOCSIFADDR, ...): 0x89xx.
const SOCKIOS: u64 = 0x89 << 8;

/// The calls with argument filters.
fn conditional(needs: Needs) -> Result<BTreeMap<i64, Vec<SeccompRule>>, SandboxError> {
    use SeccompCmpArgLen::{Dword, Qword};
    let mut m = BTreeMap::new();
    // ioctl(fd, request): KVM (every vCPU thread's KVM_RUN, interrupt
    // injection, a reboot's VM creation), the terminal (console-in's raw
    // mode, restored at exit) and TUN (a reboot reattaches the TAP).
    let mut ioctl = vec![
        rule(masked(1, Dword, IOC_TYPE_MASK, KVMIO))?,
        rule(masked(1, Dword, IOC_TYPE_MASK, TTY_AND_TUN))?,
    ];
    if needs.network {
        ioctl.push(rule(masked(1, Dword, IOC_TYPE_MASK, SOCKIOS))?);
    }
    m.insert(libc::SYS_ioctl, ioctl);
    // clone(flags, ...): threads only (glibc's pthread_create after the
    // clone3 filter said ENOSYS). Without CLONE_THREAD it would be a fork.
    let thread = libc::CLONE_THREAD as u64;
    m.insert(
        libc::SYS_clone,
        vec![rule(masked(0, Qword, thread, thread))?],
    );
    // openat(dirfd, path, flags): a reboot opens existing files again; a
    // new or truncated file only for a console that writes to a file.
    let creating = (libc::O_CREAT | libc::O_TRUNC | libc::O_TMPFILE) as u64;
    if needs.creates_files {
        m.insert(libc::SYS_openat, vec![]);
    } else {
        m.insert(libc::SYS_openat, vec![rule(masked(2, Dword, creating, 0))?]);
    }
    // socket(domain, ...): a network card's reboot addresses the host end
    // of its TAP (an AF_INET datagram socket for SIOCSIFADDR).
    let mut families = Vec::new();
    if needs.network {
        families.push(rule(equals(0, Dword, libc::AF_INET as u64))?);
    }
    if needs.passt {
        families.push(rule(equals(0, Dword, libc::AF_UNIX as u64))?);
        m.insert(libc::SYS_connect, Vec::new());
        m.insert(
            libc::SYS_kill,
            vec![rule(equals(1, Dword, libc::SIGKILL as u64))?],
        );
        m.insert(libc::SYS_wait4, Vec::new());
        m.insert(libc::SYS_rmdir, Vec::new());
    }
    if !families.is_empty() {
        m.insert(libc::SYS_socket, families);
    }
    if needs.api_socket || needs.passt {
        m.insert(libc::SYS_unlink, Vec::new());
    }
    // prctl: naming a new thread (PR_SET_NAME) only.
    m.insert(
        libc::SYS_prctl,
        vec![rule(equals(0, Dword, libc::PR_SET_NAME as u64))?],
    );
    // fcntl: std's CLOEXEC and non-blocking flags (F_GETFD/F_SETFD,
    // F_GETFL/F_SETFL, F_DUPFD_CLOEXEC) and a reboot's disk image locks
    // (F_OFD_SETLK); never leases, never a process-wide lock.
    m.insert(
        libc::SYS_fcntl,
        [
            libc::F_GETFD,
            libc::F_SETFD,
            libc::F_GETFL,
            libc::F_SETFL,
            libc::F_DUPFD_CLOEXEC,
            libc::F_OFD_SETLK,
        ]
        .into_iter()
        .map(|cmd| rule(equals(1, Dword, cmd as u64)))
        .collect::<Result<_, _>>()?,
    );
    Ok(m)
}

/// The allow-list for a machine with `needs`, as seccompiler rules: a
/// syscall number and the rules of which one must match (none: always).
pub fn rules(needs: Needs) -> Result<BTreeMap<i64, Vec<SeccompRule>>, SandboxError> {
    let mut m = conditional(needs)?;
    for (nr, _why) in ALWAYS {
        m.insert(*nr, Vec::new());
    }
    Ok(m)
}

fn arch() -> TargetArch {
    TargetArch::x86_64
}

/// The two BPF programs, in the order they are installed: `clone3` to
/// `ENOSYS` (so glibc falls back to `clone`), then the allow-list.
pub fn programs(needs: Needs, violation: Violation) -> Result<[BpfProgram; 2], SandboxError> {
    let clone3 = SeccompFilter::new(
        BTreeMap::from([(libc::SYS_clone3, Vec::new())]),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch(),
    )?;
    let allow = SeccompFilter::new(
        rules(needs)?,
        violation.action(),
        SeccompAction::Allow,
        arch(),
    )?;
    Ok([clone3.try_into()?, allow.try_into()?])
}

/// Installs the filters on every thread of the process (TSYNC); from now
/// on a call outside the list kills the process (or is logged, with
/// [`Violation::Log`]). Cannot be undone.
pub fn install(needs: Needs, violation: Violation) -> Result<(), SandboxError> {
    let [clone3, allow] = programs(needs, violation)?;
    seccompiler::apply_filter_all_threads(&clone3)?;
    seccompiler::apply_filter_all_threads(&allow)?;
    tracing::debug!(?needs, ?violation, "seccomp filter installed");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `body` in a forked child with the filter for `needs`
    /// installed; returns the child's wait status. The programs are built
    /// before the fork: the child only makes raw system calls (the test
    /// harness has other threads, whose locks a forked child must not
    /// touch).
    fn in_sandboxed_child(needs: Needs, body: impl FnOnce() -> i32) -> i32 {
        let [clone3, allow] = programs(needs, Violation::KillProcess).unwrap();
        // SAFETY: the child makes only async-signal-safe raw calls and
        // leaves with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            let ok = seccompiler::apply_filter_all_threads(&clone3).is_ok()
                && seccompiler::apply_filter_all_threads(&allow).is_ok();
            let code = if ok { body() } else { 99 };
            // SAFETY: ends the forked child without running the parent's
            // atexit handlers.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waits for our own child; `status` is a valid pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(r, pid);
        status
    }

    fn killed_by_sigsys(status: i32) -> bool {
        libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGSYS
    }

    fn exit_code(status: i32) -> Option<i32> {
        libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status))
    }

    #[test]
    fn allowed_calls_work_under_the_filter() {
        let status = in_sandboxed_child(Needs::default(), || {
            // SAFETY: raw calls on our own descriptors and buffers.
            unsafe {
                // An existing file, without O_CREAT: what a reboot does.
                let fd = libc::openat(libc::AT_FDCWD, c"/dev/null".as_ptr(), libc::O_WRONLY);
                if fd < 0 || libc::write(fd, b"ok".as_ptr().cast(), 2) != 2 {
                    return 1;
                }
                libc::close(fd);
                if libc::getpid() <= 0 {
                    return 2;
                }
                // clone3 is answered ENOSYS, for glibc to fall back to clone.
                let r = libc::syscall(libc::SYS_clone3, 0usize, 0usize);
                if r != -1 || *libc::__errno_location() != libc::ENOSYS {
                    return 3;
                }
            }
            0
        });
        assert_eq!(exit_code(status), Some(0), "wait status {status:#x}");
    }

    /// A forbidden call, in its own child: the child must die of SIGSYS at
    /// the call, never reach the `_exit(0)` after it.
    fn assert_refused(needs: Needs, what: &str, nr: i64, args: [usize; 4]) {
        let status = in_sandboxed_child(needs, || {
            // SAFETY: every call below takes null or valid C-string
            // pointers (static literals); the filter stops it anyway.
            unsafe { libc::syscall(nr, args[0], args[1], args[2], args[3]) };
            0
        });
        assert!(
            killed_by_sigsys(status),
            "{what}: not killed by SIGSYS (wait status {status:#x}, exit code {:?})",
            exit_code(status)
        );
    }

    #[test]
    fn forbidden_calls_kill_the_process() {
        let none = Needs::default();
        let new_file = c"/tmp/alcazar-sandbox-must-not-exist".as_ptr() as usize;
        let true_bin = c"/bin/true".as_ptr() as usize;
        let cases: [(&str, i64, [usize; 4]); 10] = [
            (
                "socket(AF_INET)",
                libc::SYS_socket,
                [libc::AF_INET as usize, libc::SOCK_STREAM as usize, 0, 0],
            ),
            (
                "socket(AF_UNIX)",
                libc::SYS_socket,
                [libc::AF_UNIX as usize, libc::SOCK_STREAM as usize, 0, 0],
            ),
            (
                "openat(O_CREAT)",
                libc::SYS_openat,
                [
                    libc::AT_FDCWD as usize,
                    new_file,
                    (libc::O_WRONLY | libc::O_CREAT) as usize,
                    0o600,
                ],
            ),
            (
                "openat(O_TRUNC)",
                libc::SYS_openat,
                [
                    libc::AT_FDCWD as usize,
                    new_file,
                    (libc::O_WRONLY | libc::O_TRUNC) as usize,
                    0,
                ],
            ),
            ("execve", libc::SYS_execve, [true_bin, 0, 0, 0]),
            (
                "ptrace",
                libc::SYS_ptrace,
                [libc::PTRACE_TRACEME as usize, 0, 0, 0],
            ),
            (
                "fork (clone without CLONE_THREAD)",
                libc::SYS_clone,
                [libc::SIGCHLD as usize, 0, 0, 0],
            ),
            (
                "unlinkat",
                libc::SYS_unlinkat,
                [libc::AT_FDCWD as usize, new_file, 0, 0],
            ),
            ("kill", libc::SYS_kill, [1, 0, 0, 0]),
            (
                "prctl(PR_SET_DUMPABLE)",
                libc::SYS_prctl,
                [libc::PR_SET_DUMPABLE as usize, 1, 0, 0],
            ),
        ];
        for (what, nr, args) in cases {
            assert_refused(none, what, nr, args);
        }
    }

    #[test]
    fn a_network_card_allows_inet_sockets_and_nothing_more() {
        let net = Needs {
            network: true,
            ..Needs::default()
        };
        let status = in_sandboxed_child(net, || {
            // SAFETY: socket(2) takes no pointers.
            let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
            i32::from(fd < 0)
        });
        assert_eq!(exit_code(status), Some(0), "wait status {status:#x}");
        let netlink = [libc::AF_NETLINK as usize, libc::SOCK_RAW as usize, 0, 0];
        assert_refused(net, "socket(AF_NETLINK)", libc::SYS_socket, netlink);
    }

    #[test]
    fn passt_allows_unix_sockets_and_killing_with_sigkill_only() {
        let passt = Needs {
            network: true,
            passt: true,
            ..Needs::default()
        };
        let status = in_sandboxed_child(passt, || {
            // SAFETY: socket(2) takes no pointers; wait4 with no child
            // fails with ECHILD.
            let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0) };
            // SAFETY: as above.
            unsafe {
                libc::wait4(
                    -1,
                    std::ptr::null_mut(),
                    libc::WNOHANG,
                    std::ptr::null_mut(),
                )
            };
            i32::from(fd < 0)
        });
        assert_eq!(exit_code(status), Some(0), "wait status {status:#x}");
        let sigterm = [1usize << 22, libc::SIGTERM as usize, 0, 0];
        assert_refused(passt, "kill(SIGTERM)", libc::SYS_kill, sigterm);
        let netlink = [libc::AF_NETLINK as usize, libc::SOCK_RAW as usize, 0, 0];
        assert_refused(passt, "socket(AF_NETLINK)", libc::SYS_socket, netlink);
    }

    #[test]
    fn an_api_socket_allows_unlink_but_no_unix_socket_or_connect() {
        let api = Needs {
            api_socket: true,
            ..Needs::default()
        };
        let missing = c"/tmp/alcazar-sandbox-no-such-socket".as_ptr() as usize;
        let status = in_sandboxed_child(api, || {
            // SAFETY: unlink(2) of a NUL-terminated path that does not
            // exist: allowed, it fails with ENOENT.
            unsafe { libc::unlink(missing as *const libc::c_char) };
            0
        });
        assert_eq!(exit_code(status), Some(0), "wait status {status:#x}");
        let unix = [libc::AF_UNIX as usize, libc::SOCK_STREAM as usize, 0, 0];
        assert_refused(api, "socket(AF_UNIX)", libc::SYS_socket, unix);
        assert_refused(api, "connect", libc::SYS_connect, [1023, missing, 110, 0]);
    }

    #[test]
    fn ioctls_are_limited_to_kvm_the_terminal_and_tun() {
        let none = Needs::default();
        let status = in_sandboxed_child(none, || {
            let mut t = std::mem::MaybeUninit::<libc::termios>::uninit();
            // SAFETY: TCGETS and KVM_GET_API_VERSION on fd 1023 (not open):
            // allowed, they fail with EBADF instead of killing.
            unsafe {
                libc::ioctl(1023, libc::TCGETS, t.as_mut_ptr());
                libc::ioctl(1023, 0xae00); // KVM_GET_API_VERSION
            }
            0
        });
        assert_eq!(exit_code(status), Some(0), "wait status {status:#x}");
        // BLKGETSIZE64 and SIOCSIFADDR (that one needs a network card), on
        // a closed fd: refused before the kernel looks at the fd.
        for (what, request) in [
            ("ioctl(BLKGETSIZE64)", 0x8008_1272),
            ("ioctl(SIOCSIFADDR)", libc::SIOCSIFADDR as usize),
        ] {
            assert_refused(none, what, libc::SYS_ioctl, [1023, request, 0, 0]);
        }
    }

    #[test]
    fn a_console_file_allows_creating_files() {
        let path = std::env::temp_dir().join(format!("alcazar-sandbox-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let files = Needs {
            creates_files: true,
            ..Needs::default()
        };
        // Built before the fork: the child must not allocate.
        let name = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        let status = in_sandboxed_child(files, || {
            // SAFETY: `name` is a NUL-terminated path.
            let fd = unsafe {
                libc::openat(
                    libc::AT_FDCWD,
                    name.as_ptr(),
                    libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC,
                    0o600,
                )
            };
            i32::from(fd < 0)
        });
        assert_eq!(exit_code(status), Some(0), "wait status {status:#x}");
        assert!(
            path.exists(),
            "the sandboxed child created {}",
            path.display()
        );
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn needs_follow_the_config() {
        // Tests run in the crate's directory: its manifest is a file.
        let plain =
            VmConfig::from_toml_str("memory = \"32M\"\n[boot]\nimage = \"Cargo.toml\"\n").unwrap();
        assert_eq!(Needs::of(&plain), Needs::default());
        let file = VmConfig::from_toml_str(
            "memory = \"32M\"\nserial = \"file:x.log\"\n[boot]\nimage = \"Cargo.toml\"\n",
        )
        .unwrap();
        assert!(Needs::of(&file).creates_files);
        let console_file = VmConfig::from_toml_str(
            "[boot]\nimage = \"Cargo.toml\"\n[[device]]\nclass = \"debugcon\"\noutput = \"file:d.log\"\n",
        )
        .unwrap();
        assert!(Needs::of(&console_file).creates_files);
    }

    #[test]
    fn every_allowed_call_says_who_needs_it() {
        for (nr, why) in ALWAYS {
            assert!(!why.is_empty(), "syscall {nr}");
        }
        let n = rules(Needs::default()).unwrap().len();
        assert_eq!(n, ALWAYS.len() + 5, "no call listed twice");
    }
}
