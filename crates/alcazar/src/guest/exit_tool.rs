//! `alcazar-exit STATUS`: a tiny static x86-64 Linux program, assembled
//! here, that ends the VM with a status by writing it to the debug-exit
//! port (0xf4; see `crates/devices/src/debug_exit.rs`). Without an
//! argument it only waits until its terminal has sent everything written
//! to it (what `/init` runs before a command's session ends).
//!
//! Why a program: a shell can reach I/O ports only through `/dev/port`,
//! and Debian's cloud kernel is built without it (`# CONFIG_DEVPORT is not
//! set`). User space may still use a port after `ioperm(2)` grants it (root
//! only: CAP_SYS_RAWIO); the CPU then checks the port against the I/O
//! permission bit map in the TSS (Intel SDM Vol. 1, 19.5.2), which the
//! kernel fills in for the process.
//!
//! Behaviour: parses STATUS (decimal, 0-255); on a bad argument exits 2;
//! waits until the terminals on stdout and stderr have sent their output
//! (`tcdrain`), so the command's last line is not lost with the VM; if
//! `ioperm` fails, or the `out` returns because nothing stopped the VM, it
//! exits 1, so the caller can fall back to `poweroff -f`.
//!
//! The file is an ELF64 executable (System V gABI) with one `PT_LOAD`
//! segment mapping the whole file read+execute; no sections, no libc.

use iced_x86::code_asm::*;

/// The debug-exit device's I/O port.
pub const DEBUG_EXIT_PORT: u16 = 0xf4;
/// Where the file is mapped (the traditional x86-64 executable base).
const LOAD_ADDRESS: u64 = 0x40_0000;
/// ELF header (64 bytes) plus one program header (56 bytes).
const HEADERS: u64 = 64 + 56;

/// Linux x86-64 system call numbers (`arch/x86/entry/syscalls/syscall_64.tbl`).
const SYS_IOCTL: u32 = 16;
const SYS_EXIT: u32 = 60;
const SYS_IOPERM: u32 = 173;
/// `TCSBRK` with a non-zero argument is `tcdrain(3)`: it returns once the
/// terminal has sent everything written to it (`ioctl_tty(2)`).
const TCSBRK: u32 = 0x5409;

/// The machine code, assembled for its load address.
fn code() -> Result<Vec<u8>, IcedError> {
    let mut a = CodeAssembler::new(64)?;
    let mut digits = a.create_label();
    let mut parsed = a.create_label();
    let mut usage = a.create_label();
    let mut leave = a.create_label();
    let mut with_status = a.create_label();

    // At entry RSP points at argc, then argv[0], argv[1], ... (System V
    // x86-64 ABI, 3.4.1: the initial process stack).
    drain(&mut a)?;
    a.cmp(qword_ptr(rsp), 1)?;
    a.jne(with_status)?;
    // No argument: only the drain, then exit 0.
    a.xor(edi, edi)?;
    a.jmp(leave)?;
    a.set_label(&mut with_status)?;
    a.cmp(qword_ptr(rsp), 2)?;
    a.jne(usage)?;
    a.mov(rsi, qword_ptr(rsp + 16))?; // argv[1]
    a.xor(ebx, ebx)?; // the status being parsed
    a.xor(ecx, ecx)?; // digits seen
    a.set_label(&mut digits)?;
    a.movzx(edx, byte_ptr(rsi))?;
    a.test(edx, edx)?;
    a.jz(parsed)?;
    a.sub(edx, b'0' as i32)?;
    a.cmp(edx, 9)?;
    a.ja(usage)?; // not a digit (the unsigned compare catches < '0' too)
    a.imul_3(ebx, ebx, 10)?;
    a.add(ebx, edx)?;
    a.cmp(ebx, 255)?;
    a.ja(usage)?;
    a.inc(ecx)?;
    a.inc(rsi)?;
    a.jmp(digits)?;

    a.set_label(&mut parsed)?;
    a.test(ecx, ecx)?;
    a.jz(usage)?; // an empty argument
                  // ioperm(DEBUG_EXIT_PORT, 1, 1)
    a.mov(eax, SYS_IOPERM)?;
    a.mov(edi, u32::from(DEBUG_EXIT_PORT))?;
    a.mov(esi, 1u32)?;
    a.mov(edx, 1u32)?;
    a.syscall()?;
    a.mov(edi, 1u32)?; // exit status if we are still here
    a.test(rax, rax)?;
    a.jnz(leave)?;
    a.mov(eax, ebx)?;
    a.mov(edx, u32::from(DEBUG_EXIT_PORT))?;
    a.out(dx, al)?;
    a.mov(edi, 1u32)?;
    a.jmp(leave)?;

    a.set_label(&mut usage)?;
    a.mov(edi, 2u32)?;
    a.set_label(&mut leave)?;
    a.mov(eax, SYS_EXIT)?;
    a.syscall()?;
    a.assemble(LOAD_ADDRESS + HEADERS)
}

/// `tcdrain(1)` and `tcdrain(2)`: the serial driver sends a line from its
/// buffer as the UART's FIFO empties, interrupt by interrupt, so output a
/// program wrote may still be in the guest when it exits — and a session
/// leader's exit hangs its terminal up, which throws that output away.
/// Waiting here keeps the last line. (Not a terminal: ENOTTY, ignored.)
fn drain(a: &mut CodeAssembler) -> Result<(), IcedError> {
    for fd in [1u32, 2] {
        a.mov(eax, SYS_IOCTL)?;
        a.mov(edi, fd)?;
        a.mov(esi, TCSBRK)?;
        a.mov(edx, 1u32)?;
        a.syscall()?;
    }
    Ok(())
}

/// The complete executable file.
pub fn image() -> Result<Vec<u8>, IcedError> {
    let code = code()?;
    let size = HEADERS + code.len() as u64;
    let mut f = Vec::with_capacity(size as usize);
    // ELF header: ELFCLASS64, ELFDATA2LSB, EV_CURRENT, ELFOSABI_SYSV.
    f.extend_from_slice(b"\x7fELF\x02\x01\x01\x00");
    f.extend_from_slice(&[0; 8]);
    f.extend_from_slice(&2u16.to_le_bytes()); // e_type: ET_EXEC
    f.extend_from_slice(&0x3eu16.to_le_bytes()); // e_machine: EM_X86_64
    f.extend_from_slice(&1u32.to_le_bytes()); // e_version
    f.extend_from_slice(&(LOAD_ADDRESS + HEADERS).to_le_bytes()); // e_entry
    f.extend_from_slice(&64u64.to_le_bytes()); // e_phoff
    f.extend_from_slice(&0u64.to_le_bytes()); // e_shoff: no sections
    f.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    f.extend_from_slice(&64u16.to_le_bytes()); // e_ehsize
    f.extend_from_slice(&56u16.to_le_bytes()); // e_phentsize
    f.extend_from_slice(&1u16.to_le_bytes()); // e_phnum
    f.extend_from_slice(&[0; 6]); // e_shentsize, e_shnum, e_shstrndx
                                  // Program header: PT_LOAD, PF_R | PF_X, the whole file at LOAD_ADDRESS.
    f.extend_from_slice(&1u32.to_le_bytes());
    f.extend_from_slice(&5u32.to_le_bytes());
    f.extend_from_slice(&0u64.to_le_bytes()); // p_offset
    f.extend_from_slice(&LOAD_ADDRESS.to_le_bytes()); // p_vaddr
    f.extend_from_slice(&LOAD_ADDRESS.to_le_bytes()); // p_paddr
    f.extend_from_slice(&size.to_le_bytes()); // p_filesz
    f.extend_from_slice(&size.to_le_bytes()); // p_memsz
    f.extend_from_slice(&0x1000u64.to_le_bytes()); // p_align
    f.extend_from_slice(&code);
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;
    use std::process::Command;

    fn write_tool() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("alcazar-exit-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("alcazar-exit");
        std::fs::write(&path, image().unwrap()).unwrap();
        let mut perm = std::fs::metadata(&path).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
        std::fs::set_permissions(&path, perm).unwrap();
        path
    }

    /// Runs the tool on the host without CAP_SYS_RAWIO, so `ioperm` fails
    /// and no host port is ever touched.
    fn run(path: &std::path::Path, args: &[&str]) -> Option<i32> {
        let mut cmd = Command::new(path);
        cmd.args(args);
        // SAFETY: between fork and exec the closure calls only prctl(2),
        // which is async-signal-safe, and touches no memory of ours.
        unsafe {
            cmd.pre_exec(|| {
                // PR_CAPBSET_DROP of CAP_SYS_RAWIO: after exec even root
                // cannot get it. Unprivileged users never had it; if root
                // cannot drop it, do not run the tool at all.
                if libc::prctl(libc::PR_CAPBSET_DROP, CAP_SYS_RAWIO, 0, 0, 0) != 0
                    && libc::geteuid() == 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd.status().unwrap().code()
    }

    /// `capabilities(7)`: the capability that allows `ioperm`.
    const CAP_SYS_RAWIO: libc::c_ulong = 17;

    /// True if CAP_SYS_RAWIO is in this process's inheritable or ambient
    /// set, which would survive the bounding-set drop across exec.
    fn rawio_inherited() -> bool {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        status.lines().any(|l| {
            let (key, value) = l.split_once(':').unwrap_or_default();
            (key == "CapInh" || key == "CapAmb")
                && u64::from_str_radix(value.trim(), 16).unwrap_or(u64::MAX) & (1 << CAP_SYS_RAWIO)
                    != 0
        })
    }

    #[test]
    fn the_host_kernel_runs_it_and_it_checks_its_argument() {
        let path = write_tool();
        for bad in [&["256"][..], &["12x"], &[""], &["-1"], &["1", "2"]] {
            assert_eq!(run(&path, bad), Some(2), "{bad:?}");
        }
        // No argument: drain the terminal (not one here) and succeed.
        assert_eq!(run(&path, &[]), Some(0));
        // A valid status reaches ioperm, which fails without CAP_SYS_RAWIO.
        assert!(
            !rawio_inherited(),
            "CAP_SYS_RAWIO is inheritable here; not running the tool"
        );
        for good in ["0", "7", "255", "007"] {
            assert_eq!(run(&path, &[good]), Some(1), "{good}");
        }
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn the_image_is_one_loadable_segment() {
        let f = image().unwrap();
        assert_eq!(&f[..4], b"\x7fELF");
        let filesz = u64::from_le_bytes(f[64 + 32..64 + 40].try_into().unwrap());
        assert_eq!(filesz, f.len() as u64);
        assert!(f.len() < 512, "{} bytes", f.len());
    }
}
