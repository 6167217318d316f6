//! Booting: putting a payload in guest memory and each vCPU in the state
//! the payload's boot protocol asks for.
//!
//! * [`flat`] — flat binaries and the tiny-guest kit (real, protected or
//!   long mode; every vCPU starts at the entry).
//! * [`linux`] — a Linux bzImage through the 64-bit boot protocol, or
//!   the 32-bit one for protocols 2.02-2.11 and kernels without a 64-bit
//!   entry (the BSP starts at the kernel's entry; the APs wait for
//!   INIT/SIPI).
//! * [`pvh`] — an x86-64 ELF `vmlinux` through its PVH entry point (the
//!   same, in 32-bit protected mode, without the bzImage's decompression).
//! * [`elf`] — an ELF `vmlinux` without a PVH note (or an i386 one)
//!   through its own `startup_64`/`startup_32` entry, with a zero page.
//! * [`bios`] — a PC BIOS (SeaBIOS) at the reset vector, which boots
//!   the machine's disks and CD-ROMs itself.

pub mod bios;
pub mod elf;
pub mod flat;
pub mod linux;
pub mod pvh;

pub use flat::{install, load_image, vcpu_state, BootImage, DEFAULT_LOAD_ADDRESS};

use alcazar_core::engine::Vcpu;
use alcazar_core::memory::GuestMemory;

use crate::config::BootSource;
use crate::error::{ConfigError, VmmError};
use linux::{LinuxBoot, LinuxImage};

/// What a VM boots, read from disk (or assembled) but not yet in memory.
#[derive(Clone, Debug)]
pub enum Payload {
    /// A flat binary or kit program.
    Flat(BootImage),
    /// A Linux kernel.
    Linux(LinuxImage),
    /// A PC BIOS.
    Bios(bios::BiosImage),
}

/// A payload placed in guest memory: how to start the vCPUs.
#[derive(Clone, Debug)]
pub enum Start {
    /// Every vCPU enters the flat image.
    Flat(BootImage),
    /// The BSP enters Linux; the APs wait for SIPI.
    Linux(LinuxBoot),
    /// The BSP enters Linux's PVH entry; the APs wait for SIPI.
    Pvh(pvh::PvhBoot),
    /// The BSP starts at the reset vector; the APs wait for SIPI.
    Reset,
}

/// Reads the payload `source` names for a guest of `memory` bytes.
///
/// A kernel's header is checked before the rest is read (a file that is
/// not a kernel, or a truncated one, is one error line), and no file is
/// read beyond the guest's memory: what does not fit in the guest cannot
/// be booted, so `/dev/zero` or a 5 GB file costs nothing. (The files are
/// read, not mapped: a mapped file that another process truncates or
/// rewrites would change under the loader.)
pub fn load(source: &BootSource, memory: u64) -> Result<Payload, VmmError> {
    match source {
        BootSource::Linux {
            kernel,
            initrd,
            cmdline,
        } => {
            let kernel = read_bounded("boot.kernel", kernel, memory, linux::check_kernel_file)?;
            let initrd = initrd
                .as_deref()
                .map(|p| read_bounded("boot.initrd", p, memory, |_, _| Ok(())))
                .transpose()?;
            Ok(Payload::Linux(LinuxImage {
                kernel,
                initrd,
                cmdline: cmdline.clone(),
            }))
        }
        BootSource::Firmware {
            bios,
            vga_bios,
            order,
            menu,
        } => Ok(Payload::Bios(bios::load(
            bios,
            vga_bios.as_deref(),
            order,
            *menu,
        )?)),
        other => Ok(Payload::Flat(load_image(other)?)),
    }
}

/// Reads the regular file at `path` (key `key` in errors), refusing one
/// larger than `limit` bytes; `check` sees the first 4 KiB and the file's
/// length before the rest is read, and says what is wrong and what to do
/// about it, if anything.
fn read_bounded(
    key: &str,
    path: &std::path::Path,
    limit: u64,
    check: impl Fn(&[u8], u64) -> Result<(), (String, &'static str)>,
) -> Result<Vec<u8>, VmmError> {
    use std::io::Read;
    let shown = format!("\"{}\"", path.display());
    let fail = |problem: String, fix: &str| -> VmmError {
        ConfigError::new(key, shown.clone(), problem, fix.to_string()).into()
    };
    let file = std::fs::File::open(path).map_err(|e| {
        fail(
            format!("cannot read it ({e})"),
            "give the path of a readable file",
        )
    })?;
    let meta = file.metadata().map_err(|e| {
        fail(
            format!("cannot read it ({e})"),
            "give the path of a readable file",
        )
    })?;
    if !meta.is_file() {
        return Err(fail(
            "not a regular file".into(),
            "give the path of a kernel or initrd file",
        ));
    }
    let len = meta.len();
    if len > limit {
        return Err(fail(
            format!(
                "{} MiB, larger than the guest's {} MiB of memory",
                len >> 20,
                limit >> 20
            ),
            "give the right file, or more --memory",
        ));
    }
    let mut bytes = Vec::new();
    let mut file = file.take(limit);
    (&mut file)
        .take(4096)
        .read_to_end(&mut bytes)
        .map_err(|e| {
            fail(
                format!("cannot read it ({e})"),
                "give the path of a readable file",
            )
        })?;
    check(&bytes, len).map_err(|(problem, fix)| fail(problem, fix))?;
    file.read_to_end(&mut bytes).map_err(|e| {
        fail(
            format!("cannot read it ({e})"),
            "give the path of a readable file",
        )
    })?;
    Ok(bytes)
}

impl Payload {
    /// Whether the payload is an OS that reads the firmware tables (ACPI
    /// and MP) describing the machine: the machine's builder installs them
    /// before [`Payload::install`]. A flat image gets none (it may use the
    /// BIOS area for itself).
    pub fn needs_firmware_tables(&self) -> bool {
        matches!(self, Payload::Linux(_))
    }

    /// Puts the payload in `memory` for `cpus` vCPUs; `rsdp` is where the
    /// ACPI tables are, if the machine has them (a Linux boot tells the
    /// kernel).
    pub fn install(
        &self,
        memory: &GuestMemory,
        cpus: u32,
        rsdp: Option<u64>,
    ) -> Result<Start, VmmError> {
        match self {
            Payload::Flat(image) => {
                install(memory, image, cpus)?;
                Ok(Start::Flat(image.clone()))
            }
            Payload::Bios(image) => {
                bios::install(memory, image)?;
                Ok(Start::Reset)
            }
            Payload::Linux(image) => {
                if pvh::is_elf(&image.kernel) {
                    let kernel = elf::parse(&image.kernel).map_err(linux::LinuxBootError::from)?;
                    if kernel.pvh_note && kernel.machine == elf::EM_X86_64 {
                        return Ok(Start::Pvh(pvh::install(memory, image, rsdp)?));
                    }
                    return Ok(Start::Linux(elf::install(memory, image, &kernel, rsdp)?));
                }
                Ok(Start::Linux(linux::install(memory, image, rsdp)?))
            }
        }
    }
}

impl Start {
    /// Puts `vcpu` (of `count`) in its start state.
    pub fn prepare(&self, vcpu: &mut dyn Vcpu, count: u32) -> Result<(), VmmError> {
        let id = vcpu.id();
        let (regs, sregs) = match self {
            Start::Flat(image) => vcpu_state(image, id, count, vcpu.sregs()?),
            Start::Linux(boot) if id == 0 => linux::bsp_state(boot, vcpu.sregs()?),
            Start::Pvh(boot) if id == 0 => pvh::bsp_state(boot, vcpu.sregs()?),
            Start::Reset if id == 0 => bios::reset_state(vcpu.sregs()?),
            Start::Linux(_) | Start::Pvh(_) | Start::Reset => {
                vcpu.set_wait_for_sipi()?;
                return Ok(());
            }
        };
        vcpu.set_sregs(&sregs)?;
        vcpu.set_regs(&regs)?;
        if let Start::Flat(image) = self {
            if id != 0 && image.aps_wait_for_sipi {
                vcpu.set_wait_for_sipi()?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alcazar_core::memory::MemoryMap;

    /// A 64-bit x86 ELF with one executable segment at 2 MiB and, if
    /// `note`, a PVH entry note.
    fn elf64(note: bool) -> Vec<u8> {
        let mut f = vec![0u8; 0x40 + 2 * 56];
        f[..4].copy_from_slice(b"\x7fELF");
        (f[4], f[5], f[6]) = (2, 1, 1);
        f[0x10] = 2; // ET_EXEC
        f[0x12] = 62; // EM_X86_64
        f[0x18..0x20].copy_from_slice(&0x20_0000u64.to_le_bytes());
        f[0x20] = 0x40;
        f[0x36] = 56;
        f[0x38] = 2;
        let code_at = f.len() as u64;
        let note_at = code_at + 16;
        let ph = |f: &mut Vec<u8>, i: usize, kind: u32, off: u64, addr: u64, size: u64| {
            let p = 0x40 + 56 * i;
            f[p..p + 4].copy_from_slice(&kind.to_le_bytes());
            f[p + 4..p + 8].copy_from_slice(&5u32.to_le_bytes()); // R+X
            for (j, v) in [off, addr, addr, size, size].iter().enumerate() {
                f[p + 8 + 8 * j..p + 16 + 8 * j].copy_from_slice(&v.to_le_bytes());
            }
        };
        ph(&mut f, 0, 1, code_at, 0x20_0000, 16);
        ph(&mut f, 1, 4, note_at, 0, 20);
        f.extend_from_slice(&[0xf4; 16]);
        for v in [4u32, 4, if note { 18 } else { 0x7fff }] {
            f.extend_from_slice(&v.to_le_bytes());
        }
        f.extend_from_slice(b"Xen\0");
        f.extend_from_slice(&0x20_0000u32.to_le_bytes());
        f
    }

    #[test]
    fn an_elf_boots_through_pvh_only_with_its_note() {
        let memory = GuestMemory::new(MemoryMap::pc(16 << 20).unwrap()).unwrap();
        let payload = |note| {
            Payload::Linux(LinuxImage {
                kernel: elf64(note),
                initrd: None,
                cmdline: String::new(),
            })
        };
        assert!(matches!(
            payload(true).install(&memory, 1, None),
            Ok(Start::Pvh(_))
        ));
        match payload(false).install(&memory, 1, None) {
            Ok(Start::Linux(boot)) => {
                assert_eq!(boot.mode, linux::EntryMode::Long64);
                assert_eq!(boot.entry, 0x20_0000);
            }
            other => panic!("{other:?}"),
        }
    }
}
