//! Booting flat binaries: loading the image and putting each vCPU in the
//! image's start mode.
//!
//! The contract (the tiny-guest kit relies on it; `alcazar_kit` documents
//! the same; the `alcazar` command hands the library its programs as
//! [`FlatImage::Bytes`]):
//!
//! | | real | protected | long |
//! |---|---|---|---|
//! | CS:IP | `load>>4`:0 | 0x08:`load` (flat 32-bit) | 0x08:`load` (64-bit) |
//! | data segments | DS=ES=`load>>4` | 0x10 flat | 0x10 flat |
//! | stack | SS=0x9000, SP=0xf000-id*0x1000 | ESP=0x9f000-id*0x1000 | same |
//! | paging | off | off | identity 0..4 GiB, 2 MiB pages |
//!
//! Every vCPU starts at the entry with interrupts off, EDI/RDI = its index
//! and ESI/RSI = the vCPU count. The VMM's GDT is at 0x500 and the long-mode
//! page tables at 0x1000..0x7000 (Intel SDM Vol. 3A §4.5, 4-level paging):
//! images may not overlap 0..0x8000 or the stacks.

use alcazar_core::memory::{GuestMemory, MemoryError};
use alcazar_core::regs::{
    DescriptorTable, Regs, Segment, SpecialRegs, CR0_ET, CR0_PE, CR0_PG, CR4_PAE, EFER_LMA,
    EFER_LME, RFLAGS_FIXED,
};

use crate::config::{BootSource, FlatImage, FlatMode};
use crate::error::{ConfigError, VmmError};

/// Where flat images go unless the config says otherwise.
pub const DEFAULT_LOAD_ADDRESS: u64 = 0x10000;
/// The VMM's GDT.
pub const GDT_ADDRESS: u64 = 0x500;
/// The long-mode PML4; the PDPT and four page directories follow it.
pub const PML4_ADDRESS: u64 = 0x1000;
/// End of the area the VMM reserves for its tables.
pub const SYSTEM_AREA_END: u64 = 0x8000;
/// Top of vCPU 0's stack; vCPU n's is `STACK_TOP - n * STACK_SIZE`.
pub const STACK_TOP: u64 = 0x9f000;
/// Stack bytes per vCPU.
pub const STACK_SIZE: u64 = 0x1000;

const CODE_SELECTOR: u16 = 0x08;
const DATA_SELECTOR: u16 = 0x10;

/// A loaded flat image.
#[derive(Clone, Debug)]
pub struct BootImage {
    /// The bytes.
    pub code: Vec<u8>,
    /// The start mode.
    pub mode: FlatMode,
    /// Load and entry address.
    pub load_address: u64,
    /// Application processors do not start at the entry: they wait for
    /// INIT and a STARTUP IPI from the BSP (MP initialization protocol).
    pub aps_wait_for_sipi: bool,
}

/// Reads the image `source` names (or takes the bytes it holds).
pub fn load_image(source: &BootSource) -> Result<BootImage, VmmError> {
    match source {
        BootSource::Flat {
            image,
            mode,
            load_address,
            aps_wait_for_sipi,
        } => {
            let code = match image {
                FlatImage::Bytes(b) => b.clone(),
                FlatImage::File(path) => std::fs::read(path).map_err(|e| {
                    ConfigError::new(
                        "boot.image",
                        format!("\"{}\"", path.display()),
                        format!("cannot read it ({e})"),
                        "give the path of a readable flat binary",
                    )
                })?,
            };
            Ok(BootImage {
                code,
                mode: *mode,
                load_address: *load_address,
                aps_wait_for_sipi: *aps_wait_for_sipi,
            })
        }
        BootSource::Linux { .. } => Err(ConfigError::new(
            "boot.kind",
            "\"linux\"",
            "a Linux kernel is not a flat image",
            "load it with boot::load",
        )
        .into()),
        BootSource::Firmware { .. } => Err(ConfigError::new(
            "boot.kind",
            "\"firmware\"",
            "a BIOS is not a flat image",
            "load it with boot::load",
        )
        .into()),
    }
}

fn placement_error(image: &BootImage, problem: String, fix: &str) -> VmmError {
    ConfigError::new(
        "boot.load_address",
        format!("{:#x}", image.load_address),
        problem,
        fix.to_string(),
    )
    .into()
}

/// Base of the stack segment of a real-mode start (SS = 0x9000).
const REAL_MODE_SS_BASE: u64 = (STACK_TOP >> 4 & 0xf000) << 4;

/// Most vCPUs a real-mode flat binary can start with: their stacks share
/// the one 64 KiB stack segment at [`REAL_MODE_SS_BASE`], and each needs
/// an SP above 0 in it (0x9f000 down to 0x91000: 15 stacks).
pub const MAX_REAL_MODE_CPUS: u32 = ((STACK_TOP - REAL_MODE_SS_BASE) / STACK_SIZE) as u32;

/// Checks where `image` would land for `cpus` vCPUs and copies it into
/// `memory`, with the GDT and (long mode) page tables.
pub fn install(memory: &GuestMemory, image: &BootImage, cpus: u32) -> Result<(), VmmError> {
    if image.mode == FlatMode::Real && cpus > MAX_REAL_MODE_CPUS {
        return Err(ConfigError::new(
            "cpus",
            cpus.to_string(),
            format!(
                "a real-mode program starts at most {MAX_REAL_MODE_CPUS} vCPUs (their stacks share one 64 KiB segment)"
            ),
            format!("give {MAX_REAL_MODE_CPUS} or fewer vCPUs, or boot a protected- or long-mode program"),
        )
        .into());
    }
    let start = image.load_address;
    let end = start.checked_add(image.code.len() as u64).ok_or_else(|| {
        placement_error(
            image,
            "image wraps around".into(),
            "choose a lower load address",
        )
    })?;
    let stacks_bottom = STACK_TOP - u64::from(cpus) * STACK_SIZE;
    if start < SYSTEM_AREA_END || (start < STACK_TOP && end > stacks_bottom) {
        return Err(placement_error(
            image,
            format!("image {start:#x}..{end:#x} overlaps the VMM's tables (0..{SYSTEM_AREA_END:#x}) or the vCPU stacks ({stacks_bottom:#x}..{STACK_TOP:#x})"),
            "load it at 0x10000 (small images) or at or above 0x100000",
        ));
    }
    if image.mode == FlatMode::Real && (end > 0x10_0000 || !start.is_multiple_of(16)) {
        return Err(placement_error(
            image,
            "a real-mode image must be 16-byte aligned and end below 1 MiB".into(),
            "use the default 0x10000",
        ));
    }
    if image.mode != FlatMode::Long && end > 0x1_0000_0000 {
        return Err(placement_error(
            image,
            "a 32-bit image must end below 4 GiB".into(),
            "choose a lower load address",
        ));
    }
    memory.write(start, &image.code).map_err(|_| {
        placement_error(
            image,
            format!("image {start:#x}..{end:#x} does not fit in guest RAM"),
            "give the VM more memory or load the image lower",
        )
    })?;
    write_gdt(memory, image.mode)?;
    if image.mode == FlatMode::Long {
        write_identity_page_tables(memory)?;
    }
    Ok(())
}

fn code_segment(mode: FlatMode) -> Segment {
    match mode {
        FlatMode::Long => Segment::code64(CODE_SELECTOR),
        _ => Segment::flat32(CODE_SELECTOR, true),
    }
}

fn write_gdt(memory: &GuestMemory, mode: FlatMode) -> Result<(), VmmError> {
    write_gdt_entries(
        memory,
        &[
            0,
            code_segment(mode).to_descriptor(),
            Segment::flat32(DATA_SELECTOR, false).to_descriptor(),
        ],
    )?;
    Ok(())
}

/// Writes the boot GDT (`entries`, descriptor 0 first) at [`GDT_ADDRESS`]
/// and returns the GDTR that loads it.
pub(crate) fn write_gdt_entries(
    memory: &GuestMemory,
    entries: &[u64],
) -> Result<DescriptorTable, MemoryError> {
    for (i, e) in entries.iter().enumerate() {
        memory.write_u64(GDT_ADDRESS + 8 * i as u64, *e)?;
    }
    Ok(gdtr(entries.len()))
}

/// The GDTR of a boot GDT of `entries` descriptors at [`GDT_ADDRESS`].
pub(crate) fn gdtr(entries: usize) -> DescriptorTable {
    DescriptorTable {
        base: GDT_ADDRESS,
        limit: (8 * entries - 1) as u16,
    }
}

/// The task register every boot protocol starts with: a busy 32-bit TSS
/// (type 11) of the minimum size, as VT-x requires even if unused.
pub(crate) fn boot_tr() -> Segment {
    Segment {
        type_: 11,
        present: true,
        limit: 0x67,
        ..Default::default()
    }
}

/// Identity-maps 0..4 GiB with 2 MiB pages: PML4[0] -> PDPT, PDPT[0..4] ->
/// four page directories of 512 large-page entries each.
pub(crate) fn write_identity_page_tables(memory: &GuestMemory) -> Result<(), VmmError> {
    const PRESENT_RW: u64 = 0x3;
    const LARGE_PAGE: u64 = 0x80;
    let pdpt = PML4_ADDRESS + 0x1000;
    memory.write_u64(PML4_ADDRESS, pdpt | PRESENT_RW)?;
    for i in 0..4u64 {
        let pd = pdpt + 0x1000 * (i + 1);
        memory.write_u64(pdpt + 8 * i, pd | PRESENT_RW)?;
        for j in 0..512u64 {
            let frame = ((i * 512 + j) << 21) | PRESENT_RW | LARGE_PAGE;
            memory.write_u64(pd + 8 * j, frame)?;
        }
    }
    Ok(())
}

/// The register state vCPU `id` of `count` starts with, given the engine's
/// reset state `sregs` (whose TR/LDT and other defaults are kept).
pub fn vcpu_state(
    image: &BootImage,
    id: u32,
    count: u32,
    mut sregs: SpecialRegs,
) -> (Regs, SpecialRegs) {
    let mut regs = Regs {
        rflags: RFLAGS_FIXED,
        rdi: u64::from(id),
        rsi: u64::from(count),
        ..Default::default()
    };
    let stack = STACK_TOP - u64::from(id) * STACK_SIZE;
    match image.mode {
        FlatMode::Real => {
            let seg = (image.load_address >> 4) as u16;
            sregs.cs = Segment::real_mode(seg, true);
            sregs.ds = Segment::real_mode(seg, false);
            sregs.es = sregs.ds;
            sregs.fs = Segment::real_mode(0, false);
            sregs.gs = sregs.fs;
            sregs.ss = Segment::real_mode(((STACK_TOP >> 4) & 0xf000) as u16, false);
            regs.rsp = stack - sregs.ss.base;
            regs.rip = 0;
            sregs.cr0 = CR0_ET;
            sregs.cr4 = 0;
            sregs.efer = 0;
        }
        FlatMode::Protected | FlatMode::Long => {
            sregs.cs = code_segment(image.mode);
            let data = Segment::flat32(DATA_SELECTOR, false);
            (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss) = (data, data, data, data, data);
            sregs.gdt = gdtr(3);
            sregs.tr = boot_tr();
            regs.rsp = stack;
            regs.rip = image.load_address;
            sregs.cr0 = CR0_PE | CR0_ET;
            sregs.cr4 = 0;
            sregs.efer = 0;
            if image.mode == FlatMode::Long {
                sregs.cr0 |= CR0_PG;
                sregs.cr3 = PML4_ADDRESS;
                sregs.cr4 = CR4_PAE;
                sregs.efer = EFER_LME | EFER_LMA;
            }
        }
    }
    (regs, sregs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alcazar_core::memory::MemoryMap;

    fn mem() -> GuestMemory {
        GuestMemory::new(MemoryMap::pc(16 << 20).unwrap()).unwrap()
    }

    fn image(mode: FlatMode, load_address: u64, len: usize) -> BootImage {
        BootImage {
            code: vec![0x90; len],
            mode,
            load_address,
            aps_wait_for_sipi: false,
        }
    }

    #[test]
    fn long_mode_tables_identity_map_4g() {
        let m = mem();
        install(&m, &image(FlatMode::Long, 0x10000, 16), 1).unwrap();
        assert_eq!(m.read_u64(PML4_ADDRESS).unwrap(), 0x2003);
        // The last 2 MiB page of the fourth directory maps 4 GiB - 2 MiB.
        assert_eq!(m.read_u64(0x6000 + 511 * 8).unwrap(), 0xffe0_0083);
    }

    #[test]
    fn images_may_not_cover_the_vmm_tables_or_stacks() {
        let m = mem();
        assert!(install(&m, &image(FlatMode::Long, 0x1000, 16), 1).is_err());
        assert!(install(&m, &image(FlatMode::Long, 0x9e800, 16), 1).is_err());
        assert!(install(&m, &image(FlatMode::Real, 0xffff0, 0x100), 1).is_err());
        assert!(install(&m, &image(FlatMode::Protected, 0xff_f000, 0x2000), 1).is_err());
        assert!(install(&m, &image(FlatMode::Protected, 0x10_0000, 0x2000), 1).is_ok());
    }

    #[test]
    fn each_vcpu_gets_its_own_stack_and_index() {
        let img = image(FlatMode::Real, 0x10000, 1);
        let (r0, s0) = vcpu_state(&img, 0, 2, SpecialRegs::default());
        let (r1, _) = vcpu_state(&img, 1, 2, SpecialRegs::default());
        assert_eq!((s0.cs.selector, r0.rip), (0x1000, 0));
        assert_eq!(s0.ss.base + r0.rsp, STACK_TOP);
        assert_eq!(s0.ss.base + r1.rsp, STACK_TOP - STACK_SIZE);
        assert_eq!((r1.rdi, r1.rsi), (1, 2));
    }

    #[test]
    fn real_mode_starts_at_most_15_vcpus_each_with_a_stack_in_its_segment() {
        assert_eq!(MAX_REAL_MODE_CPUS, 15);
        let img = image(FlatMode::Real, 0x10000, 1);
        let m = mem();
        assert!(install(&m, &img, MAX_REAL_MODE_CPUS).is_ok());
        let e = install(&m, &img, MAX_REAL_MODE_CPUS + 1).unwrap_err();
        assert!(e.to_string().contains("at most 15 vCPUs"), "{e}");
        let last = MAX_REAL_MODE_CPUS - 1;
        let (r, s) = vcpu_state(&img, last, MAX_REAL_MODE_CPUS, SpecialRegs::default());
        assert!((1..=0xffff).contains(&r.rsp), "SP {:#x}", r.rsp);
        assert_eq!(s.ss.base, REAL_MODE_SS_BASE);
        // Long mode has no such bound.
        let long = image(FlatMode::Long, 0x10000, 1);
        assert!(install(&m, &long, 64).is_ok());
    }
}
