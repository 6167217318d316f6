//! Direct Linux boot of an ELF `vmlinux` through its PVH entry point.
//!
//! The PVH boot ABI (Xen's `docs/misc/pvh.pandoc` and
//! `xen/include/public/arch-x86/hvm/start_info.h`; Linux implements it in
//! `arch/x86/platform/pvh/`): the kernel's ELF notes carry
//! `XEN_ELFNOTE_PHYS32_ENTRY`, a 32-bit entry point. The loader copies the
//! ELF segments to their physical addresses (`linux-loader`), writes an
//! `hvm_start_info` with the command line, the modules (the initrd) and a
//! memory map, and enters at that point in 32-bit protected mode with
//! paging off, flat CS/DS/ES/SS, and EBX = the start info.
//!
//! It skips the bzImage's self-decompression, so a kernel booted this way
//! starts sooner. Debian ships only the bzImage; the `vmlinux` inside it
//! comes out with the kernel's `scripts/extract-vmlinux`.

use std::io::Cursor;

use alcazar_core::memory::GuestMemory;
use alcazar_core::regs::{Regs, Segment, SpecialRegs, CR0_ET, CR0_PE, RFLAGS_FIXED};
use linux_loader::loader::elf::{Elf, PvhBootCapability};
use linux_loader::loader::KernelLoader;
use vm_memory::Address;

use super::flat::{boot_tr, gdtr, write_gdt_entries};
use super::linux::{
    e820_map, place_initrd, write, write_cmdline_bytes, LinuxBootError, LinuxImage,
    CMDLINE_ADDRESS, CMDLINE_MAX,
};

/// Where the `hvm_start_info` goes.
pub const START_INFO: u64 = 0x7000;
/// Where the module list (one entry: the initrd) goes.
const MODLIST: u64 = 0x7400;
/// Where the memory map goes.
const MEMMAP: u64 = 0x7800;
/// Most memory-map entries (fits below the next page).
const MEMMAP_MAX: usize = 0x800 / 24;
/// `hvm_start_info.magic`: "xEn3" with the top bit of byte 0 set.
const START_INFO_MAGIC: u32 = 0x336e_c578;
/// The highest address the initrd may occupy (what bzImages ask for).
const INITRD_LIMIT: u64 = 0x37ff_ffff;
const CODE_SELECTOR: u16 = 0x08;
const DATA_SELECTOR: u16 = 0x10;

/// Whether `kernel` is an ELF image (rather than a bzImage).
pub fn is_elf(kernel: &[u8]) -> bool {
    kernel.starts_with(b"\x7fELF")
}

/// Where the PVH boot put things.
#[derive(Clone, Copy, Debug)]
pub struct PvhBoot {
    /// The 32-bit entry point.
    pub entry: u64,
    /// The start info, passed in EBX.
    pub start_info: u64,
}

/// Loads the ELF `image.kernel` and writes the start info; `rsdp` is the
/// ACPI RSDP's address.
pub fn install(
    memory: &GuestMemory,
    image: &LinuxImage,
    rsdp: Option<u64>,
) -> Result<PvhBoot, LinuxBootError> {
    let loaded = Elf::load(memory.mmap(), None, &mut Cursor::new(&image.kernel), None)
        .map_err(|e| LinuxBootError::BadImage(format!("ELF: {e}")))?;
    let PvhBootCapability::PvhEntryPresent(entry) = loaded.pvh_boot_cap else {
        return Err(LinuxBootError::BadImage(
            "the ELF kernel has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY)".into(),
        ));
    };
    write_cmdline_bytes(memory, &image.cmdline, CMDLINE_MAX - 1)?;
    let mut modules = 0u32;
    if let Some(initrd) = &image.initrd {
        let at = place_initrd(memory, INITRD_LIMIT, initrd.len(), loaded.kernel_end)?;
        write(memory, at, initrd)?;
        let mut entry = Vec::with_capacity(32);
        entry.extend_from_slice(&at.to_le_bytes());
        entry.extend_from_slice(&(initrd.len() as u64).to_le_bytes());
        entry.extend_from_slice(&[0u8; 16]); // no module command line
        write(memory, MODLIST, &entry)?;
        modules = 1;
    }
    let map = e820_map(memory);
    let mut table = Vec::new();
    for e in map.iter().take(MEMMAP_MAX) {
        let (addr, size, kind) = (e.addr, e.size, e.r#type);
        table.extend_from_slice(&addr.to_le_bytes());
        table.extend_from_slice(&size.to_le_bytes());
        table.extend_from_slice(&kind.to_le_bytes());
        table.extend_from_slice(&0u32.to_le_bytes());
    }
    write(memory, MEMMAP, &table)?;
    let mut info = Vec::with_capacity(56);
    info.extend_from_slice(&START_INFO_MAGIC.to_le_bytes());
    info.extend_from_slice(&1u32.to_le_bytes()); // version
    info.extend_from_slice(&0u32.to_le_bytes()); // flags
    info.extend_from_slice(&modules.to_le_bytes());
    info.extend_from_slice(&(if modules > 0 { MODLIST } else { 0 }).to_le_bytes());
    info.extend_from_slice(&CMDLINE_ADDRESS.to_le_bytes());
    info.extend_from_slice(&rsdp.unwrap_or(0).to_le_bytes());
    info.extend_from_slice(&MEMMAP.to_le_bytes());
    info.extend_from_slice(&(map.len().min(MEMMAP_MAX) as u32).to_le_bytes());
    info.extend_from_slice(&0u32.to_le_bytes());
    write(memory, START_INFO, &info)?;
    write_gdt_entries(memory, &gdt()).map_err(|e| LinuxBootError::Memory(e.to_string()))?;
    Ok(PvhBoot {
        entry: entry.raw_value(),
        start_info: START_INFO,
    })
}

/// The GDT: null, flat 32-bit code (0x08), flat data (0x10).
fn gdt() -> [u64; 3] {
    [
        0,
        Segment::flat32(CODE_SELECTOR, true).to_descriptor(),
        Segment::flat32(DATA_SELECTOR, false).to_descriptor(),
    ]
}

/// The boot processor's state at the PVH entry, from the engine's reset
/// state `sregs`.
pub fn bsp_state(boot: &PvhBoot, mut sregs: SpecialRegs) -> (Regs, SpecialRegs) {
    let regs = Regs {
        rflags: RFLAGS_FIXED,
        rip: boot.entry,
        rbx: boot.start_info,
        ..Default::default()
    };
    sregs.cs = Segment::flat32(CODE_SELECTOR, true);
    let data = Segment::flat32(DATA_SELECTOR, false);
    (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss) = (data, data, data, data, data);
    sregs.gdt = gdtr(gdt().len());
    sregs.tr = boot_tr();
    sregs.cr0 = CR0_PE | CR0_ET;
    sregs.cr3 = 0;
    sregs.cr4 = 0;
    sregs.efer = 0;
    (regs, sregs)
}
