//! Direct Linux boot: a bzImage entered through the 64-bit boot protocol,
//! or, for kernels without a 64-bit entry, the 32-bit boot protocol.
//!
//! The kernel's `Documentation/arch/x86/boot.rst` ("32-bit boot protocol"
//! and "64-bit boot protocol") says what a boot loader must do, and this
//! module does exactly that:
//!
//! 1. Read the setup header at 0x1f1 ("the real-mode kernel header"),
//!    keeping only the fields the kernel's protocol version defines (in an
//!    older kernel the bytes after its header are setup code, not fields).
//!    Protocol 2.02 (`cmd_line_ptr`) is the oldest booted; a zImage
//!    (`loadflags` without LOADED_HIGH, loaded below 1 MiB) is refused.
//! 2. Load the protected-mode kernel (everything after the real-mode
//!    setup sectors) at `code32_start` (1 MiB in every bzImage).
//! 3. Fill a *zero page* (`struct boot_params`) with the image's setup
//!    header plus what the loader knows: the command line's address (at
//!    most `cmdline_size` bytes from 2.06, 255 before), the initrd's
//!    address and size (below `initrd_addr_max` from 2.03, 0x37ffffff
//!    before), the e820 memory map and the ACPI RSDP.
//! 4. Enter the kernel, with a GDT holding flat `__BOOT_CS` (0x10) and
//!    `__BOOT_DS` (0x18), ESI/RSI = the zero page, EBP = EDI = EBX = 0 and
//!    interrupts off:
//!    * protocol 2.12+ with XLF_KERNEL_64 in `xloadflags`: at `load
//!      address + 0x200` in 64-bit mode, with paging on and an identity
//!      map of 0..4 GiB;
//!    * otherwise (2.02-2.11, or a kernel without a 64-bit entry): at
//!      `code32_start` in flat 32-bit protected mode with paging off.
//!
//! An ELF `vmlinux` takes the same zero page and entries (see
//! [`super::elf`]); one with a PVH note goes through [`super::pvh`].
//!
//! Guest physical layout of a Linux boot:
//!
//! | range | what |
//! |---|---|
//! | 0x500 | GDT |
//! | 0x1000..0x7000 | identity page tables (0..4 GiB, 2 MiB pages; 64-bit entry) |
//! | 0x7000 | zero page |
//! | 0x20000 | command line |
//! | 0x9fc00..0x100000 | reserved in e820: firmware tables (ACPI, MP) |
//! | 0x100000 | the kernel |
//! | below 3 GiB, top of RAM | the initrd |
//! | 0xe0000000 + 1 MiB | reserved in e820: PCI ECAM |
//!
//! Application processors are not started by the loader: they wait for
//! the INIT/STARTUP IPIs the kernel sends them.

use alcazar_core::layout;
use alcazar_core::memory::{GuestMemory, RegionKind, MMIO_HOLE_START};
use alcazar_core::regs::{
    Regs, Segment, SpecialRegs, CR0_ET, CR0_NE, CR0_PE, CR0_PG, CR4_PAE, EFER_LMA, EFER_LME,
    RFLAGS_FIXED,
};
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
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

/// `__BOOT_CS` and `__BOOT_DS` of the 32- and 64-bit boot protocols.
pub const BOOT_CS: u16 = 0x10;
/// See [`BOOT_CS`].
pub const BOOT_DS: u16 = 0x18;
/// Setup header magic "HdrS" (at 0x202).
pub(super) const HDRS_MAGIC: u32 = 0x5372_6448;
/// The oldest protocol booted: 2.02 added `cmd_line_ptr`.
const OLDEST_PROTOCOL: u16 = 0x0202;
/// The first protocol with `xloadflags` (and so a declared 64-bit entry).
const XLOADFLAGS_PROTOCOL: u16 = 0x020c;
/// `xloadflags` XLF_KERNEL_64: the kernel has the 64-bit entry at +0x200.
pub(super) const XLF_KERNEL_64: u16 = 1 << 0;
/// `loadflags` LOADED_HIGH: the protected-mode kernel loads at 1 MiB.
pub(super) const LOADED_HIGH: u8 = 1 << 0;
/// `loadflags` CAN_USE_HEAP.
const CAN_USE_HEAP: u8 = 1 << 7;
/// e820 entry types.
const E820_RAM: u32 = 1;
const E820_RESERVED: u32 = 2;
/// Where the initrd may go at most when the header says nothing (boot
/// protocol before 2.03, "initrd_addr_max").
pub(super) const INITRD_ADDR_MAX_DEFAULT: u64 = 0x37ff_ffff;
/// Bytes of a setup header in the file (0x1f1 up to the end of the 2.15
/// header).
const SETUP_HEADER_LEN: usize = std::mem::size_of::<setup_header>();

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
    /// The kernel file's bytes (a bzImage or an ELF `vmlinux`).
    pub kernel: Vec<u8>,
    /// The initrd's bytes, if any.
    pub initrd: Option<Vec<u8>>,
    /// The kernel command line.
    pub cmdline: String,
}

/// The CPU mode a kernel is entered in (boot protocol, "32-bit boot
/// protocol" and "64-bit boot protocol").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryMode {
    /// Flat 32-bit protected mode, paging off.
    Protected32,
    /// 64-bit long mode on identity page tables.
    Long64,
}

/// Where the loader put things, for setting up the vCPUs.
#[derive(Clone, Copy, Debug)]
pub struct LinuxBoot {
    /// The entry point (physical).
    pub entry: u64,
    /// The zero page, passed in ESI/RSI.
    pub zero_page: u64,
    /// The mode the entry is for.
    pub mode: EntryMode,
}

/// What is wrong with a kernel file's header: the problem (the `Display`)
/// and, in [`HeaderError::fix`], what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// No "HdrS" at 0x202: not a bzImage (nor a kernel from before
    /// protocol 2.00).
    #[error("no \"HdrS\" setup header at 0x202 and no ELF header")]
    NoSetupHeader,
    /// A protocol older than 2.02.
    #[error(
        "boot protocol {}.{:02} is older than 2.02, the oldest this loader boots (it has no cmd_line_ptr)",
        .version >> 8,
        .version & 0xff
    )]
    ProtocolTooOld {
        /// The header's `version`.
        version: u16,
    },
    /// A zImage: LOADED_HIGH clear, the kernel wants to be loaded at
    /// 0x10000.
    #[error(
        "a zImage (loadflags {loadflags:#04x}, LOADED_HIGH clear), which loads below 1 MiB where this loader puts its tables"
    )]
    ZImage {
        /// The header's `loadflags`.
        loadflags: u8,
    },
    /// The ELF is not a little-endian 32- or 64-bit executable.
    #[error("ELF {0}")]
    ElfFormat(String),
    /// The ELF is for another architecture.
    #[error("ELF machine {machine} ({}) is not x86", elf_machine_name(*.machine))]
    ElfMachine {
        /// `e_machine`.
        machine: u16,
    },
}

impl HeaderError {
    /// What to do about it.
    pub fn fix(&self) -> &'static str {
        match self {
            HeaderError::NoSetupHeader => {
                "give a bzImage (boot protocol 2.02 or later) or an x86 ELF vmlinux"
            }
            HeaderError::ProtocolTooOld { .. } => {
                "give a kernel with boot protocol 2.02 or later (Linux 2.4 onwards)"
            }
            HeaderError::ZImage { .. } => "build the kernel as a bzImage (make bzImage)",
            HeaderError::ElfFormat(_) => "give an unmodified x86 ELF vmlinux",
            HeaderError::ElfMachine { .. } => {
                "give an x86-64 (EM_X86_64, 62) or i386 (EM_386, 3) vmlinux"
            }
        }
    }
}

/// A readable name for ELF `e_machine` values a user may meet.
fn elf_machine_name(machine: u16) -> &'static str {
    match machine {
        3 => "EM_386",
        8 => "EM_MIPS",
        20 => "EM_PPC",
        21 => "EM_PPC64",
        22 => "EM_S390",
        40 => "EM_ARM",
        62 => "EM_X86_64",
        183 => "EM_AARCH64",
        243 => "EM_RISCV",
        258 => "EM_LOONGARCH",
        _ => "unknown",
    }
}

/// Errors in the kernel image or its placement.
#[derive(Debug, thiserror::Error)]
pub enum LinuxBootError {
    /// The kernel's header says it cannot be booted here.
    #[error("kernel: {problem}; {}", .problem.fix())]
    Header {
        /// What is wrong.
        #[from]
        problem: HeaderError,
    },
    /// The image is not a kernel this loader can boot.
    #[error(
        "kernel: not a bootable kernel: {0}; give a bzImage (boot protocol 2.02 or later) or an x86 ELF vmlinux"
    )]
    BadImage(String),
    /// An ELF segment lies outside the RAM a kernel may be loaded in.
    #[error(
        "kernel: ELF segment {start:#x}..{end:#x} is outside guest RAM between 1 MiB and {ram_end:#x}; \
         give more --memory (or a kernel linked for 1 MiB or above)"
    )]
    SegmentOutsideRam {
        /// The segment's physical start (`p_paddr`).
        start: u64,
        /// Its end (`p_paddr + p_memsz`).
        end: u64,
        /// The end of RAM below the 32-bit MMIO hole.
        ram_end: u64,
    },
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

/// Reads the setup header of the bzImage `kernel` (boot protocol, "the
/// real-mode kernel header"): the fields at 0x1f1, with those a kernel of
/// its protocol version does not define zeroed (in older kernels the bytes
/// there are setup code). Refuses a file without "HdrS", a protocol older
/// than 2.02 and a zImage.
pub fn parse_setup_header(kernel: &[u8]) -> Result<setup_header, HeaderError> {
    let mut hdr = setup_header::default();
    let bytes = kernel.get(0x1f1..).unwrap_or(&[]);
    let n = bytes.len().min(SETUP_HEADER_LEN);
    hdr.as_mut_slice()[..n].copy_from_slice(&bytes[..n]);
    let (magic, version, loadflags) = (hdr.header, hdr.version, hdr.loadflags);
    if magic != HDRS_MAGIC {
        return Err(HeaderError::NoSetupHeader);
    }
    if version < OLDEST_PROTOCOL {
        return Err(HeaderError::ProtocolTooOld { version });
    }
    if loadflags & LOADED_HIGH == 0 {
        return Err(HeaderError::ZImage { loadflags });
    }
    // The fields each protocol version added (boot protocol, "details of
    // header fields" and the protocol history).
    if version < 0x0203 {
        hdr.initrd_addr_max = 0;
    }
    if version < 0x0205 {
        hdr.kernel_alignment = 0;
        hdr.relocatable_kernel = 0;
    }
    if version < 0x0206 {
        hdr.cmdline_size = 0;
    }
    if version < 0x0207 {
        hdr.hardware_subarch = 0;
        hdr.hardware_subarch_data = 0;
    }
    if version < 0x0208 {
        hdr.payload_offset = 0;
        hdr.payload_length = 0;
    }
    if version < 0x0209 {
        hdr.setup_data = 0;
    }
    if version < 0x020a {
        hdr.min_alignment = 0;
        hdr.pref_address = 0;
        hdr.init_size = 0;
    }
    if version < 0x020b {
        hdr.handover_offset = 0;
    }
    if version < XLOADFLAGS_PROTOCOL {
        hdr.xloadflags = 0;
    }
    if version < 0x020f {
        hdr.kernel_info_offset = 0;
    }
    Ok(hdr)
}

/// The entry a bzImage with header `hdr` is started through: the 64-bit
/// one when the kernel declares it (2.12+ with XLF_KERNEL_64), else the
/// 32-bit one.
pub fn entry_mode(hdr: &setup_header) -> EntryMode {
    let (version, xloadflags) = (hdr.version, hdr.xloadflags);
    if version >= XLOADFLAGS_PROTOCOL && xloadflags & XLF_KERNEL_64 != 0 {
        EntryMode::Long64
    } else {
        EntryMode::Protected32
    }
}

/// Loads the bzImage `image` into `memory` and writes the zero page;
/// `rsdp` is the ACPI RSDP's address, if the machine has ACPI tables.
pub fn install(
    memory: &GuestMemory,
    image: &LinuxImage,
    rsdp: Option<u64>,
) -> Result<LinuxBoot, LinuxBootError> {
    let mut hdr = parse_setup_header(&image.kernel)?;
    let setup_sects = match hdr.setup_sects {
        0 => 4,
        n => usize::from(n),
    };
    let body = image
        .kernel
        .get((setup_sects + 1) * 512..)
        .ok_or_else(|| LinuxBootError::BadImage("shorter than its setup sectors".into()))?;
    let load = match hdr.code32_start {
        0 => KERNEL_ADDRESS,
        n => u64::from(n),
    };
    if load < KERNEL_ADDRESS {
        return Err(LinuxBootError::BadImage(format!(
            "code32_start {load:#x} is below 1 MiB"
        )));
    }
    let kernel_end = kernel_end(&hdr, load, body.len());
    let have = low_ram_end(memory);
    if kernel_end > have {
        let initrd = image.initrd.as_ref().map_or(0, |i| i.len() as u64);
        return Err(LinuxBootError::KernelTooBig {
            end: kernel_end,
            have_mib: have >> 20,
            need_mib: (kernel_end + initrd).div_ceil(1 << 20),
        });
    }
    write(memory, load, body)?;
    hdr.code32_start = load as u32;
    let mode = entry_mode(&hdr);
    write_zero_page(memory, hdr, image, rsdp, kernel_end)?;
    write_entry_tables(memory, mode)?;
    Ok(LinuxBoot {
        entry: match mode {
            EntryMode::Long64 => load + 0x200,
            EntryMode::Protected32 => load,
        },
        zero_page: ZERO_PAGE,
        mode,
    })
}

/// Fills the zero page from `hdr` and what the loader knows (boot
/// protocol, "the zero page" and "details of header fields"): the
/// loader type, the heap, the command line, the initrd (placed above
/// `kernel_end`), the e820 map and the RSDP, and writes it at
/// [`ZERO_PAGE`].
pub(super) fn write_zero_page(
    memory: &GuestMemory,
    hdr: setup_header,
    image: &LinuxImage,
    rsdp: Option<u64>,
    kernel_end: u64,
) -> Result<(), LinuxBootError> {
    let mut params = ZeroPage::default();
    let p = &mut params.0;
    p.hdr = hdr;
    p.hdr.type_of_loader = 0xff;
    p.hdr.loadflags |= CAN_USE_HEAP;
    p.hdr.heap_end_ptr = 0xfe00;
    write_cmdline(memory, &mut p.hdr, &image.cmdline)?;
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
    memory
        .mmap()
        .write_obj(params, GuestAddress(ZERO_PAGE))
        .map_err(|e| LinuxBootError::Memory(e.to_string()))
}

/// Writes the boot GDT for `mode` and, for the 64-bit entry, the identity
/// page tables.
pub(super) fn write_entry_tables(
    memory: &GuestMemory,
    mode: EntryMode,
) -> Result<(), LinuxBootError> {
    write_gdt_entries(memory, &gdt(mode)).map_err(|e| LinuxBootError::Memory(e.to_string()))?;
    if mode == EntryMode::Long64 {
        write_identity_page_tables(memory).map_err(|e| LinuxBootError::Memory(e.to_string()))?;
    }
    Ok(())
}

/// Checks the start of a kernel file (`head`, up to 4 KiB) of `len` bytes
/// before the rest is read: an x86 ELF `vmlinux`, or a bzImage whose
/// setup header is there, of a protocol this loader boots, and whose size
/// is what the header says (a truncated download otherwise runs and
/// triple-faults). Returns what is wrong and what to do about it.
pub fn check_kernel_file(head: &[u8], len: u64) -> Result<(), (String, &'static str)> {
    let refuse = |e: HeaderError| (e.to_string(), e.fix());
    if super::pvh::is_elf(head) {
        return super::elf::check_ident(head).map_err(refuse);
    }
    match parse_setup_header(head) {
        Err(HeaderError::NoSetupHeader) => {
            return Err((
                format!(
                    "not a Linux kernel ({len} bytes, no bzImage setup header and no ELF header)"
                ),
                HeaderError::NoSetupHeader.fix(),
            ))
        }
        Err(e) => return Err(refuse(e)),
        Ok(_) => {}
    }
    // setup_sects at 0x1f1 and syssize (16-byte units of the
    // protected-mode part) at 0x1f4 (boot protocol, "the real-mode kernel
    // header").
    let setup_sects = match head[0x1f1] {
        0 => 4,
        n => u64::from(n),
    };
    let syssize = head.get(0x1f4..0x1f8).map_or(0, |b| {
        u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    });
    let expected = (setup_sects + 1) * 512 + syssize * 16;
    if len < expected {
        return Err((
            format!("truncated: the bzImage header says {expected} bytes, the file has {len}"),
            "give the whole file (a download or copy was cut short)",
        ));
    }
    Ok(())
}

pub(super) fn write(memory: &GuestMemory, at: u64, bytes: &[u8]) -> Result<(), LinuxBootError> {
    memory
        .write(at, bytes)
        .map_err(|e| LinuxBootError::Memory(e.to_string()))
}

/// Writes the command line and points `cmd_line_ptr` at it; the limit is
/// `cmdline_size` (protocol 2.06+) or 255 bytes (before).
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

/// The end of the memory the kernel uses while it starts: its setup
/// decompresses it to the run address and needs `init_size` bytes there
/// (boot protocol, "init_size" field, 2.10+). A relocatable kernel loaded
/// below its `pref_address` (LOAD_PHYSICAL_ADDR, usually 16 MiB) runs at
/// `pref_address`; otherwise at the load address `load`.
fn kernel_end(hdr: &setup_header, load: u64, body_len: usize) -> u64 {
    let run_at = if hdr.relocatable_kernel != 0 {
        load.max(hdr.pref_address)
    } else {
        load
    };
    run_at + u64::from(hdr.init_size).max(body_len as u64)
}

/// The end of guest RAM below the 32-bit MMIO hole.
pub(super) fn low_ram_end(memory: &GuestMemory) -> u64 {
    memory
        .map()
        .backed()
        .filter(|e| e.kind == RegionKind::Ram && e.start < MMIO_HOLE_START)
        .map(|e| e.end())
        .max()
        .unwrap_or(0)
}

/// The initrd goes as high as `limit` (inclusive) allows in RAM below the
/// MMIO hole, page aligned, above the kernel's footprint (`kernel_end`).
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

/// The boot GDT: null, null, `__BOOT_CS` (64-bit code for the 64-bit
/// entry, flat 32-bit code for the 32-bit one), `__BOOT_DS` (flat data).
fn gdt(mode: EntryMode) -> [u64; 4] {
    [
        0,
        0,
        boot_cs(mode).to_descriptor(),
        Segment::flat32(BOOT_DS, false).to_descriptor(),
    ]
}

fn boot_cs(mode: EntryMode) -> Segment {
    match mode {
        EntryMode::Long64 => Segment::code64(BOOT_CS),
        EntryMode::Protected32 => Segment::flat32(BOOT_CS, true),
    }
}

/// The boot processor's state at the kernel's entry, from the engine's
/// reset state `sregs`: `__BOOT_CS`/`__BOOT_DS`, ESI/RSI = the zero page,
/// the other registers zero (EBP, EDI and EBX must be), interrupts off;
/// paging on identity tables for the 64-bit entry, off for the 32-bit one.
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
    sregs.cs = boot_cs(boot.mode);
    let data = Segment::flat32(BOOT_DS, false);
    (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss) = (data, data, data, data, data);
    sregs.gdt = gdtr(gdt(boot.mode).len());
    sregs.tr = boot_tr();
    sregs.cr0 = CR0_PE | CR0_ET | CR0_NE;
    match boot.mode {
        EntryMode::Long64 => {
            sregs.cr0 |= CR0_PG;
            sregs.cr3 = PML4_ADDRESS;
            sregs.cr4 = CR4_PAE;
            sregs.efer = EFER_LME | EFER_LMA;
        }
        EntryMode::Protected32 => {
            sregs.cr3 = 0;
            sregs.cr4 = 0;
            sregs.efer = 0;
        }
    }
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
        img[0x200..0x202].copy_from_slice(&[0xeb, 0x66]); // jmp past the header
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
    fn old_protocols_and_kernels_without_a_64_bit_entry_take_the_32_bit_entry() {
        // 2.11 with the XLF_KERNEL_64 bit at 0x236 (not a field before
        // 2.12), 2.15 without it, 2.06 and 2.02.
        for (version, xlf) in [
            (0x020b, XLF_KERNEL_64),
            (0x020f, 0),
            (0x0206, 0),
            (0x0202, 0),
        ] {
            let m = mem(64 << 20);
            let image = LinuxImage {
                kernel: fake_bzimage(version, xlf, 512),
                initrd: Some(vec![1; 4096]),
                cmdline: "console=ttyS0".into(),
            };
            let boot = install(&m, &image, None).unwrap();
            assert_eq!(boot.mode, EntryMode::Protected32, "{version:#x}");
            assert_eq!(boot.entry, KERNEL_ADDRESS, "{version:#x}");
            assert_eq!(read_u32(&m, ZERO_PAGE + 0x214), KERNEL_ADDRESS as u32);
            assert_eq!(read_u32(&m, ZERO_PAGE + 0x228), CMDLINE_ADDRESS as u32);
            // The GDT's __BOOT_CS is flat 32-bit code.
            assert_eq!(
                m.read_u64(super::super::flat::GDT_ADDRESS + 0x10).unwrap(),
                Segment::flat32(BOOT_CS, true).to_descriptor()
            );
            let (regs, sregs) = bsp_state(&boot, SpecialRegs::default());
            assert_eq!((regs.rip, regs.rsi), (KERNEL_ADDRESS, ZERO_PAGE));
            assert_eq!((regs.rbp, regs.rdi, regs.rbx), (0, 0, 0));
            assert_eq!(regs.rflags & alcazar_core::regs::RFLAGS_IF, 0);
            assert_eq!((sregs.cs.selector, sregs.ds.selector), (BOOT_CS, BOOT_DS));
            assert!(sregs.cs.db && !sregs.cs.l);
            assert_eq!(sregs.cr0 & (CR0_PE | CR0_PG), CR0_PE);
            assert_eq!(sregs.efer, 0);
        }
        // 2.12+ with XLF_KERNEL_64 keeps the 64-bit entry.
        let m = mem(64 << 20);
        let image = LinuxImage {
            kernel: fake_bzimage(0x020c, XLF_KERNEL_64, 512),
            initrd: None,
            cmdline: String::new(),
        };
        let boot = install(&m, &image, None).unwrap();
        assert_eq!(
            (boot.mode, boot.entry),
            (EntryMode::Long64, KERNEL_ADDRESS + 0x200)
        );
        let (_, sregs) = bsp_state(&boot, SpecialRegs::default());
        assert!(sregs.cs.l && sregs.cr0 & CR0_PG != 0);
    }

    #[test]
    fn fields_newer_than_the_protocol_are_ignored() {
        // A 2.05 kernel: the bytes at cmdline_size (2.06), init_size
        // (2.10) and xloadflags (2.12) are its setup code.
        let mut kernel = fake_bzimage(0x0205, 0, 512);
        kernel[0x238..0x23c].copy_from_slice(&0xffffu32.to_le_bytes());
        kernel[0x260..0x264].copy_from_slice(&0x7fff_0000u32.to_le_bytes());
        let hdr = parse_setup_header(&kernel).unwrap();
        let (cmdline_size, init_size, xlf) = (hdr.cmdline_size, hdr.init_size, hdr.xloadflags);
        assert_eq!((cmdline_size, init_size, xlf), (0, 0, 0));
        let image = LinuxImage {
            kernel: kernel.clone(),
            initrd: None,
            cmdline: "x".repeat(256),
        };
        // Before 2.06 the command line holds 255 bytes.
        let err = install(&mem(64 << 20), &image, None).unwrap_err();
        assert!(
            matches!(err, LinuxBootError::CmdlineTooLong { len: 256, max: 255 }),
            "{err}"
        );
        // Before 2.03 initrd_addr_max is 0x37ffffff whatever the bytes say.
        let mut kernel = fake_bzimage(0x0202, 0, 512);
        kernel[0x22c..0x230].copy_from_slice(&0xffff_ffffu32.to_le_bytes());
        assert_eq!(
            initrd_limit(&parse_setup_header(&kernel).unwrap()),
            INITRD_ADDR_MAX_DEFAULT
        );
    }

    #[test]
    fn refuses_protocol_2_01_zimages_and_files_without_hdrs() {
        let m = mem(64 << 20);
        let boot = |kernel: Vec<u8>| {
            install(
                &m,
                &LinuxImage {
                    kernel,
                    initrd: None,
                    cmdline: String::new(),
                },
                None,
            )
        };
        let err = boot(fake_bzimage(0x0201, 0, 512)).unwrap_err();
        assert!(
            matches!(
                err,
                LinuxBootError::Header {
                    problem: HeaderError::ProtocolTooOld { version: 0x0201 }
                }
            ),
            "{err:?}"
        );
        let line = err.to_string();
        assert!(
            line.contains("boot protocol 2.01 is older than 2.02"),
            "{line}"
        );
        assert!(
            line.contains("give a kernel with boot protocol 2.02"),
            "{line}"
        );
        let mut zimage = fake_bzimage(0x0204, 0, 512);
        zimage[0x211] = 0; // loadflags without LOADED_HIGH
        let err = boot(zimage.clone()).unwrap_err();
        assert!(
            matches!(
                err,
                LinuxBootError::Header {
                    problem: HeaderError::ZImage { loadflags: 0 }
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("make bzImage"), "{err}");
        let err = boot(vec![0; 100]).unwrap_err();
        assert!(
            matches!(
                err,
                LinuxBootError::Header {
                    problem: HeaderError::NoSetupHeader
                }
            ),
            "{err:?}"
        );
        // The same refusals before the file is read whole.
        let len = zimage.len() as u64;
        let (why, fix) = check_kernel_file(&zimage, len).unwrap_err();
        assert!(why.starts_with("a zImage (loadflags 0x00"), "{why}");
        assert!(fix.contains("make bzImage"), "{fix}");
        let old = fake_bzimage(0x0201, 0, 512);
        let (why, _) = check_kernel_file(&old, old.len() as u64).unwrap_err();
        assert!(why.starts_with("boot protocol 2.01"), "{why}");
        let (why, _) = check_kernel_file(&[0; 600], 600).unwrap_err();
        assert!(why.starts_with("not a Linux kernel"), "{why}");
        assert!(check_kernel_file(&old[..4096.min(old.len())], old.len() as u64).is_err());
        let good = fake_bzimage(0x0206, 0, 512);
        assert!(check_kernel_file(&good, good.len() as u64).is_ok());
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
