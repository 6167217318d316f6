//! Direct Linux boot: a bzImage entered through the 64-bit boot protocol.
//!
//! The kernel's `Documentation/arch/x86/boot.rst` ("64-bit boot protocol")
//! says what a boot loader must do, and this module does exactly that:
//!
//! 1. Load the protected-mode kernel (everything after the real-mode
//!    setup sectors) at `code32_start`, 1 MiB (`linux-loader` reads the
//!    setup header and copies it).
//! 2. Fill a *zero page* (`struct boot_params`) with the image's setup
//!    header plus what the loader knows: the command line's address, the
//!    initrd's address and size, the e820 memory map and the ACPI RSDP.
//! 3. Enter the kernel at `load address + 0x200` in 64-bit mode, with
//!    paging on and an identity map covering the kernel, the zero page,
//!    the command line and the initrd; a GDT with flat `__BOOT_CS` (0x10)
//!    and `__BOOT_DS` (0x18); RSI = the zero page; interrupts off.
//!
//! Guest physical layout of a Linux boot:
//!
//! | range | what |
//! |---|---|
//! | 0x500 | GDT |
//! | 0x1000..0x7000 | identity page tables (0..4 GiB, 2 MiB pages) |
//! | 0x7000 | zero page |
//! | 0x20000 | command line |
//! | 0x9fc00..0x100000 | reserved in e820: firmware tables (ACPI, MP) |
//! | 0x100000 | the kernel |
//! | below 3 GiB, top of RAM | the initrd |
//! | 0xe0000000 + 1 MiB | reserved in e820: PCI ECAM |
//!
//! Application processors are not started by the loader: they wait for
//! the INIT/STARTUP IPIs the kernel sends them.

use std::io::Cursor;

use alcazar_core::layout;
use alcazar_core::memory::{GuestMemory, RegionKind, MMIO_HOLE_START};
use alcazar_core::regs::{
    Regs, Segment, SpecialRegs, CR0_ET, CR0_NE, CR0_PE, CR0_PG, CR4_PAE, EFER_LMA, EFER_LME,
    RFLAGS_FIXED,
};
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use linux_loader::loader::{bzimage::BzImage, KernelLoader};
use vm_memory::{ByteValued, Bytes, GuestAddress};

use super::flat::{boot_tr, gdtr, write_gdt_entries, write_identity_page_tables, PML4_ADDRESS};

/// The command line when none is given: the console on COM1.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0";
/// Where the zero page (`struct boot_params`) goes.
pub const ZERO_PAGE: u64 = 0x7000;
/// Where the kernel command line goes.
pub const CMDLINE_ADDRESS: u64 = 0x2_0000;
/// Most command-line bytes the loader accepts (the kernel's own limit,
/// `cmdline_size` in the setup header, may be lower).
pub const CMDLINE_MAX: usize = 0x1_0000;
/// Where the protected-mode kernel is loaded.
pub const KERNEL_ADDRESS: u64 = 0x10_0000;
/// Start of the low-memory range reported as reserved (EBDA and BIOS
/// area, where the firmware tables live).
pub const EBDA_START: u64 = 0x9_fc00;
/// End of the reserved low-memory range.
pub const BIOS_END: u64 = 0x10_0000;

/// `__BOOT_CS` and `__BOOT_DS` of the 64-bit boot protocol.
const BOOT_CS: u16 = 0x10;
const BOOT_DS: u16 = 0x18;
/// Setup header magic "HdrS" and the oldest protocol with a 64-bit entry.
const HDRS_MAGIC: u32 = 0x5372_6448;
const MIN_PROTOCOL: u16 = 0x020c;
/// `xloadflags` XLF_KERNEL_64: the kernel has the 64-bit entry at +0x200.
const XLF_KERNEL_64: u16 = 1 << 0;
/// `loadflags` CAN_USE_HEAP.
const CAN_USE_HEAP: u8 = 1 << 7;
/// e820 entry types.
const E820_RAM: u32 = 1;
const E820_RESERVED: u32 = 2;
/// Where the initrd may go at most when the header says nothing.
const INITRD_ADDR_MAX_DEFAULT: u64 = 0x37ff_ffff;

/// `struct boot_params` as a plain byte block (it is `repr(C, packed)`
/// and all integers, so any bytes are a valid value).
#[derive(Clone, Copy, Default)]
#[repr(transparent)]
struct ZeroPage(boot_params);

// SAFETY: `boot_params` is `repr(C, packed)`, made only of integers and
// arrays of integers (no padding, no pointers, no invalid bit patterns).
unsafe impl ByteValued for ZeroPage {}

/// A Linux kernel to boot, with its initrd and command line.
#[derive(Clone, Debug)]
pub struct LinuxImage {
    /// The bzImage file's bytes.
    pub kernel: Vec<u8>,
    /// The initrd's bytes, if any.
    pub initrd: Option<Vec<u8>>,
    /// The kernel command line.
    pub cmdline: String,
}

/// Where the loader put things, for setting up the vCPUs.
#[derive(Clone, Copy, Debug)]
pub struct LinuxBoot {
    /// The 64-bit entry point.
    pub entry: u64,
    /// The zero page, passed in RSI.
    pub zero_page: u64,
}

/// Errors in the kernel image or its placement.
#[derive(Debug, thiserror::Error)]
pub enum LinuxBootError {
    /// The image is not a bzImage this loader can boot.
    #[error(
        "kernel: not a bootable bzImage: {0}; give a 64-bit bzImage (boot protocol 2.12 or later)"
    )]
    BadImage(String),
    /// The command line is too long.
    #[error("cmdline: {len} bytes, but this kernel takes at most {max}; shorten the command line")]
    CmdlineTooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The kernel does not fit in guest RAM while it decompresses.
    #[error(
        "memory: {have_mib} MiB is too small for this kernel, which decompresses into RAM up to \
         {end:#x}; loading it takes --memory {need_mib}M or more (running it takes more still)"
    )]
    KernelTooBig {
        /// The end of what the kernel needs (its run address + `init_size`).
        end: u64,
        /// Guest RAM below the 32-bit MMIO hole, in MiB.
        have_mib: u64,
        /// The least memory that holds the kernel and the initrd, in MiB.
        need_mib: u64,
    },
    /// The initrd does not fit where the kernel can reach it.
    #[error(
        "the initrd ({size} bytes) does not fit in guest RAM below {limit:#x} above the kernel; \
         give more --memory or a smaller initrd"
    )]
    InitrdTooBig {
        /// Its size.
        size: usize,
        /// The highest address the kernel accepts.
        limit: u64,
    },
    /// Guest memory rejected a write.
    #[error("writing the boot image to guest memory failed: {0}")]
    Memory(String),
}

/// Loads `image` into `memory` and writes the zero page; `rsdp` is the
/// ACPI RSDP's address, if the machine has ACPI tables.
pub fn install(
    memory: &GuestMemory,
    image: &LinuxImage,
    rsdp: Option<u64>,
) -> Result<LinuxBoot, LinuxBootError> {
    let mmap = memory.mmap();
    let loaded = BzImage::load(
        mmap,
        Some(GuestAddress(KERNEL_ADDRESS)),
        &mut Cursor::new(&image.kernel),
        None,
    )
    .map_err(|e| LinuxBootError::BadImage(e.to_string()))?;
    let hdr = loaded
        .setup_header
        .ok_or_else(|| LinuxBootError::BadImage("no setup header".into()))?;
    check_header(&hdr)?;
    let mut params = ZeroPage::default();
    params.0.hdr = hdr;
    let p = &mut params.0;
    p.hdr.type_of_loader = 0xff;
    p.hdr.loadflags |= CAN_USE_HEAP;
    p.hdr.heap_end_ptr = 0xfe00;
    write_cmdline(memory, &mut p.hdr, &image.cmdline)?;
    let kernel_end = kernel_end(&hdr, image.kernel.len());
    let have = low_ram_end(memory);
    if kernel_end > have {
        let initrd = image.initrd.as_ref().map_or(0, |i| i.len() as u64);
        return Err(LinuxBootError::KernelTooBig {
            end: kernel_end,
            have_mib: have >> 20,
            need_mib: (kernel_end + initrd).div_ceil(1 << 20),
        });
    }
    if let Some(initrd) = &image.initrd {
        let at = place_initrd(memory, initrd_limit(&hdr), initrd.len(), kernel_end)?;
        write(memory, at, initrd)?;
        p.hdr.ramdisk_image = at as u32;
        p.hdr.ramdisk_size = initrd.len() as u32;
    }
    let e820 = e820_map(memory);
    for (slot, entry) in p.e820_table.iter_mut().zip(&e820) {
        *slot = *entry;
    }
    p.e820_entries = e820.len().min(p.e820_table.len()) as u8;
    p.acpi_rsdp_addr = rsdp.unwrap_or(0);
    mmap.write_obj(params, GuestAddress(ZERO_PAGE))
        .map_err(|e| LinuxBootError::Memory(e.to_string()))?;
    write_gdt_entries(memory, &gdt()).map_err(|e| LinuxBootError::Memory(e.to_string()))?;
    write_identity_page_tables(memory).map_err(|e| LinuxBootError::Memory(e.to_string()))?;
    Ok(LinuxBoot {
        entry: KERNEL_ADDRESS + 0x200,
        zero_page: ZERO_PAGE,
    })
}

/// Checks the start of a kernel file (`head`, up to 4 KiB) of `len` bytes
/// before the rest is read: an ELF `vmlinux` (booted through PVH), or a
/// bzImage whose setup header is there and whose size is what the header
/// says (a truncated download otherwise runs and triple-faults). Returns
/// what is wrong.
pub fn check_kernel_file(head: &[u8], len: u64) -> Result<(), String> {
    if super::pvh::is_elf(head) {
        return Ok(());
    }
    // The setup header: "HdrS" at 0x202, setup_sects at 0x1f1 and syssize
    // (16-byte units of the protected-mode part) at 0x1f4 (boot protocol,
    // "the real-mode kernel header").
    let u32_at = |at: usize| {
        head.get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    if u32_at(0x202) != Some(HDRS_MAGIC) {
        return Err(format!(
            "not a Linux kernel ({len} bytes, no bzImage setup header and no ELF header)"
        ));
    }
    let setup_sects = match head[0x1f1] {
        0 => 4,
        n => u64::from(n),
    };
    let syssize = u64::from(u32_at(0x1f4).unwrap_or(0));
    let expected = (setup_sects + 1) * 512 + syssize * 16;
    if len < expected {
        return Err(format!(
            "truncated: the bzImage header says {expected} bytes, the file has {len}"
        ));
    }
    Ok(())
}

fn check_header(hdr: &setup_header) -> Result<(), LinuxBootError> {
    let (magic, version, xloadflags) = (hdr.header, hdr.version, hdr.xloadflags);
    if magic != HDRS_MAGIC {
        return Err(LinuxBootError::BadImage("no HdrS signature".into()));
    }
    if version < MIN_PROTOCOL || xloadflags & XLF_KERNEL_64 == 0 {
        return Err(LinuxBootError::BadImage(format!(
            "boot protocol {}.{:02} without a 64-bit entry point (need 2.12 or later)",
            version >> 8,
            version & 0xff
        )));
    }
    Ok(())
}

pub(super) fn write(memory: &GuestMemory, at: u64, bytes: &[u8]) -> Result<(), LinuxBootError> {
    memory
        .write(at, bytes)
        .map_err(|e| LinuxBootError::Memory(e.to_string()))
}

fn write_cmdline(
    memory: &GuestMemory,
    hdr: &mut setup_header,
    cmdline: &str,
) -> Result<(), LinuxBootError> {
    let max = match hdr.cmdline_size {
        0 => 255,
        n => (n as usize).min(CMDLINE_MAX - 1),
    };
    write_cmdline_bytes(memory, cmdline, max)?;
    hdr.cmd_line_ptr = CMDLINE_ADDRESS as u32;
    Ok(())
}

/// Writes `cmdline`, NUL-terminated, at [`CMDLINE_ADDRESS`] if it has at
/// most `max` bytes.
pub(super) fn write_cmdline_bytes(
    memory: &GuestMemory,
    cmdline: &str,
    max: usize,
) -> Result<(), LinuxBootError> {
    if cmdline.len() > max {
        return Err(LinuxBootError::CmdlineTooLong {
            len: cmdline.len(),
            max,
        });
    }
    let mut bytes = cmdline.as_bytes().to_vec();
    bytes.push(0);
    write(memory, CMDLINE_ADDRESS, &bytes)
}

/// The highest address the kernel lets the initrd end at
/// (`initrd_addr_max`, inclusive).
fn initrd_limit(hdr: &setup_header) -> u64 {
    match hdr.initrd_addr_max {
        0 => INITRD_ADDR_MAX_DEFAULT,
        n => u64::from(n),
    }
}

/// The initrd goes as high as `limit` (inclusive) allows in RAM below the
/// MMIO hole, page aligned, above the kernel's footprint (`kernel_end`).
/// The end of the memory the kernel uses while it starts: its setup
/// decompresses it to the run address and needs `init_size` bytes there
/// (boot protocol, "init_size" field). A relocatable kernel loaded below
/// its `pref_address` (LOAD_PHYSICAL_ADDR, usually 16 MiB) runs at
/// `pref_address`; otherwise at the load address.
fn kernel_end(hdr: &setup_header, image_len: usize) -> u64 {
    let run_at = if hdr.relocatable_kernel != 0 {
        KERNEL_ADDRESS.max(hdr.pref_address)
    } else {
        KERNEL_ADDRESS
    };
    run_at + u64::from(hdr.init_size).max(image_len as u64)
}

/// The end of guest RAM below the 32-bit MMIO hole.
fn low_ram_end(memory: &GuestMemory) -> u64 {
    memory
        .map()
        .backed()
        .filter(|e| e.kind == RegionKind::Ram && e.start < MMIO_HOLE_START)
        .map(|e| e.end())
        .max()
        .unwrap_or(0)
}

pub(super) fn place_initrd(
    memory: &GuestMemory,
    limit: u64,
    size: usize,
    kernel_end: u64,
) -> Result<u64, LinuxBootError> {
    let top = low_ram_end(memory).min(limit.saturating_add(1));
    let too_big = LinuxBootError::InitrdTooBig { size, limit: top };
    let start = top.checked_sub(size as u64).ok_or(too_big)? & !0xfff;
    if start < kernel_end {
        return Err(LinuxBootError::InitrdTooBig { size, limit: top });
    }
    Ok(start)
}

/// The BIOS memory map (ACPI "E820"): RAM, with the EBDA/BIOS area below
/// 1 MiB reserved for the firmware tables, and the PCI ECAM window
/// reserved (Linux uses MCFG's area only when the firmware reserved it).
pub fn e820_map(memory: &GuestMemory) -> Vec<boot_e820_entry> {
    let entry = |addr: u64, size: u64, kind: u32| boot_e820_entry {
        addr,
        size,
        r#type: kind,
    };
    let mut map = Vec::new();
    for region in memory.map().backed() {
        if region.kind != RegionKind::Ram {
            continue;
        }
        let (start, end) = (region.start, region.end());
        if start < EBDA_START {
            map.push(entry(start, end.min(EBDA_START) - start, E820_RAM));
            map.push(entry(EBDA_START, BIOS_END - EBDA_START, E820_RESERVED));
            if end > BIOS_END {
                map.push(entry(BIOS_END, end - BIOS_END, E820_RAM));
            }
        } else {
            map.push(entry(start, end - start, E820_RAM));
        }
    }
    map.push(entry(layout::ECAM_BASE, layout::ECAM_SIZE, E820_RESERVED));
    map.sort_by_key(|e| e.addr);
    map
}

/// The boot GDT: null, null, `__BOOT_CS` (64-bit code), `__BOOT_DS`.
fn gdt() -> [u64; 4] {
    [
        0,
        0,
        Segment::code64(BOOT_CS).to_descriptor(),
        Segment::flat32(BOOT_DS, false).to_descriptor(),
    ]
}

/// The boot processor's state at the 64-bit entry, from the engine's
/// reset state `sregs`.
pub fn bsp_state(boot: &LinuxBoot, mut sregs: SpecialRegs) -> (Regs, SpecialRegs) {
    let regs = Regs {
        rflags: RFLAGS_FIXED,
        rip: boot.entry,
        rsi: boot.zero_page,
        // Not required by the protocol, but a stack that works is kinder
        // to a kernel that pushes before it sets up its own.
        rsp: ZERO_PAGE - 0x10,
        ..Default::default()
    };
    sregs.cs = Segment::code64(BOOT_CS);
    let data = Segment::flat32(BOOT_DS, false);
    (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss) = (data, data, data, data, data);
    sregs.gdt = gdtr(gdt().len());
    sregs.tr = boot_tr();
    sregs.cr0 = CR0_PE | CR0_ET | CR0_NE | CR0_PG;
    sregs.cr3 = PML4_ADDRESS;
    sregs.cr4 = CR4_PAE;
    sregs.efer = EFER_LME | EFER_LMA;
    (regs, sregs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alcazar_core::memory::MemoryMap;

    fn mem(bytes: u64) -> GuestMemory {
        GuestMemory::new(MemoryMap::pc(bytes).unwrap()).unwrap()
    }

    /// A minimal bzImage: one setup sector plus the boot sector, the
    /// header fields the loader reads, and a "kernel" of `body` bytes.
    fn fake_bzimage(version: u16, xloadflags: u16, body: usize) -> Vec<u8> {
        let mut img = vec![0u8; 2 * 512 + body];
        img[0x1f1] = 1; // setup_sects
        img[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
        img[0x202..0x206].copy_from_slice(&HDRS_MAGIC.to_le_bytes());
        img[0x206..0x208].copy_from_slice(&version.to_le_bytes());
        img[0x211] = 1; // loadflags: LOADED_HIGH
        img[0x214..0x218].copy_from_slice(&(KERNEL_ADDRESS as u32).to_le_bytes());
        img[0x22c..0x230].copy_from_slice(&0x37ff_ffffu32.to_le_bytes());
        img[0x236..0x238].copy_from_slice(&xloadflags.to_le_bytes());
        img[0x238..0x23c].copy_from_slice(&2048u32.to_le_bytes());
        img[0x260..0x264].copy_from_slice(&0x10_0000u32.to_le_bytes()); // init_size
        img[1024] = 0xf4;
        img
    }

    fn read_u32(m: &GuestMemory, at: u64) -> u32 {
        let mut b = [0u8; 4];
        m.read(at, &mut b).unwrap();
        u32::from_le_bytes(b)
    }

    #[test]
    fn loads_kernel_zero_page_cmdline_and_initrd() {
        let m = mem(64 << 20);
        let image = LinuxImage {
            kernel: fake_bzimage(0x020f, XLF_KERNEL_64, 4096),
            initrd: Some(vec![0xab; 10_000]),
            cmdline: "console=ttyS0".into(),
        };
        let boot = install(&m, &image, Some(0xe0000)).unwrap();
        assert_eq!(boot.entry, KERNEL_ADDRESS + 0x200);
        let mut b = [0u8; 1];
        m.read(KERNEL_ADDRESS, &mut b).unwrap();
        assert_eq!(b[0], 0xf4);
        assert_eq!(read_u32(&m, ZERO_PAGE + 0x228), CMDLINE_ADDRESS as u32);
        let mut cmd = [0u8; 14];
        m.read(CMDLINE_ADDRESS, &mut cmd).unwrap();
        assert_eq!(&cmd, b"console=ttyS0\0");
        let initrd_at = u64::from(read_u32(&m, ZERO_PAGE + 0x218));
        assert_eq!(read_u32(&m, ZERO_PAGE + 0x21c), 10_000);
        assert_eq!(initrd_at % 4096, 0);
        assert!(initrd_at + 10_000 <= 64 << 20);
        m.read(initrd_at, &mut b).unwrap();
        assert_eq!(b[0], 0xab);
        assert_eq!(m.read_u64(ZERO_PAGE + 0x70).unwrap(), 0xe0000);
        let mut t = [0u8; 1];
        m.read(ZERO_PAGE + 0x210, &mut t).unwrap();
        assert_eq!(t[0], 0xff, "type_of_loader");
    }

    #[test]
    fn e820_reserves_the_bios_area_and_keeps_ram_above_4g() {
        let m = mem(4 << 30);
        let map = e820_map(&m);
        let kinds: Vec<(u64, u64, u32)> = map.iter().map(|e| (e.addr, e.size, e.r#type)).collect();
        assert_eq!(kinds[0], (0, EBDA_START, E820_RAM));
        assert_eq!(kinds[1], (EBDA_START, BIOS_END - EBDA_START, E820_RESERVED));
        assert_eq!(kinds[2], (BIOS_END, MMIO_HOLE_START - BIOS_END, E820_RAM));
        let ecam = (layout::ECAM_BASE, layout::ECAM_SIZE, E820_RESERVED);
        assert_eq!(kinds[3], ecam);
        assert_eq!(kinds[4], (1 << 32, (4 << 30) - MMIO_HOLE_START, E820_RAM));
    }

    #[test]
    fn refuses_old_protocols_and_images_without_a_64_bit_entry() {
        let m = mem(64 << 20);
        for (version, xlf) in [(0x020b, XLF_KERNEL_64), (0x020f, 0)] {
            let image = LinuxImage {
                kernel: fake_bzimage(version, xlf, 512),
                initrd: None,
                cmdline: String::new(),
            };
            assert!(matches!(
                install(&m, &image, None),
                Err(LinuxBootError::BadImage(_))
            ));
        }
        let junk = LinuxImage {
            kernel: vec![0; 100],
            initrd: None,
            cmdline: String::new(),
        };
        assert!(install(&m, &junk, None).is_err());
    }

    #[test]
    fn long_cmdlines_and_huge_initrds_are_errors() {
        let m = mem(8 << 20);
        let long = LinuxImage {
            kernel: fake_bzimage(0x020f, XLF_KERNEL_64, 512),
            initrd: None,
            cmdline: "x".repeat(4000),
        };
        assert!(matches!(
            install(&m, &long, None),
            Err(LinuxBootError::CmdlineTooLong { .. })
        ));
        let big = LinuxImage {
            kernel: fake_bzimage(0x020f, XLF_KERNEL_64, 512),
            initrd: Some(vec![0; 7 << 20]),
            cmdline: String::new(),
        };
        assert!(matches!(
            install(&m, &big, None),
            Err(LinuxBootError::InitrdTooBig { .. })
        ));
    }

    /// Debian's cloud kernel in 64 MiB used to triple-fault in its
    /// decompressor: it runs at its pref_address (16 MiB) and needs
    /// init_size (51.5 MiB) there, up to 67.5 MiB.
    #[test]
    fn a_relocatable_kernel_needs_init_size_at_its_pref_address() {
        let mut kernel = fake_bzimage(0x020f, XLF_KERNEL_64, 512);
        kernel[0x234] = 1; // relocatable_kernel
        kernel[0x258..0x260].copy_from_slice(&0x100_0000u64.to_le_bytes()); // pref_address
        kernel[0x260..0x264].copy_from_slice(&0x337_8000u32.to_le_bytes()); // init_size
        let image = LinuxImage {
            kernel,
            initrd: Some(vec![0; 1 << 20]),
            cmdline: String::new(),
        };
        let err = install(&mem(64 << 20), &image, None).unwrap_err();
        assert!(
            matches!(
                err,
                LinuxBootError::KernelTooBig {
                    end: 0x437_8000,
                    have_mib: 64,
                    need_mib: 69,
                }
            ),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("takes --memory 69M or more"),
            "{err}"
        );
        // With that much it loads, and the initrd stays above the kernel.
        let m = mem(69 << 20);
        install(&m, &image, None).unwrap();
        assert!(u64::from(read_u32(&m, ZERO_PAGE + 0x218)) >= 0x437_8000);
    }
}
