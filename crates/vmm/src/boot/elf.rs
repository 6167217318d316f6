//! Direct Linux boot of an ELF `vmlinux` without a PVH note, through the
//! kernel's own entry: `startup_64` (x86-64) or `startup_32` (i386).
//!
//! A `vmlinux` is what a bzImage decompresses to; its `e_entry` is the
//! physical address of the entry the decompressor jumps to, which the
//! boot protocol's "64-bit boot protocol" and "32-bit boot protocol"
//! describe. So the loader does what the decompressor would: it copies
//! every `PT_LOAD` segment to its physical address (`p_paddr`, checked to
//! lie in guest RAM above 1 MiB), zeroes the rest of each segment
//! (`p_memsz` beyond `p_filesz`), and enters at `e_entry` with the zero
//! page in ESI/RSI, in the state [`super::linux`] gives a bzImage's entry
//! of the same width.
//!
//! A bare ELF has no setup header, so the loader writes a minimal one
//! (protocol 2.15, "HdrS", LOADED_HIGH, `kernel_alignment`, the load and
//! preferred address, `init_size`): the kernel itself reads only the
//! command line, initrd, loader type and version fields from it. The ELF
//! formats are the System V ABI's ("ELF header", "program header") with
//! its x86-64 and i386 supplements.
//!
//! An x86-64 `vmlinux` with a PVH note still boots through its PVH entry
//! ([`super::pvh`]); this module takes the others and every i386 one.

use linux_loader::loader::bootparam::setup_header;

use alcazar_core::memory::GuestMemory;

use super::linux::{
    low_ram_end, write, write_entry_tables, write_zero_page, EntryMode, HeaderError, LinuxBoot,
    LinuxBootError, LinuxImage, BIOS_END, CMDLINE_MAX, HDRS_MAGIC, INITRD_ADDR_MAX_DEFAULT,
    LOADED_HIGH, XLF_KERNEL_64, ZERO_PAGE,
};

/// `e_machine` of i386 and x86-64.
pub const EM_386: u16 = 3;
/// See [`EM_386`].
pub const EM_X86_64: u16 = 62;
const ELFCLASS32: u8 = 1;
const ELFCLASS64: u8 = 2;
const ELFDATA2LSB: u8 = 1;
const ET_EXEC: u16 = 2;
const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;
const PF_X: u32 = 1;
/// The Xen note type carrying the PVH entry (`XEN_ELFNOTE_PHYS32_ENTRY`).
const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;
/// Most program headers read (a kernel has about five).
const MAX_PHDRS: usize = 64;
/// The zero page's `kernel_alignment` for an ELF kernel: 2 MiB, x86-64's
/// CONFIG_PHYSICAL_ALIGN default (the ELF is not relocated, so the value
/// only informs the kernel).
const KERNEL_ALIGNMENT: u32 = 0x20_0000;
/// The highest initrd address an x86-64 kernel takes (what its bzImage
/// header says).
const INITRD_ADDR_MAX_64: u32 = 0x7fff_ffff;
/// The setup-header version written for an ELF kernel.
const ELF_PROTOCOL: u16 = 0x020f;

/// One `PT_LOAD` segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadSegment {
    /// Its bytes in the file start here...
    pub offset: u64,
    /// ...and are this long.
    pub filesz: u64,
    /// Its physical address.
    pub paddr: u64,
    /// Its virtual address.
    pub vaddr: u64,
    /// Its size in memory (the part beyond `filesz` is zero).
    pub memsz: u64,
    /// Executable.
    pub exec: bool,
}

/// What the loader needs from an ELF kernel's headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElfKernel {
    /// `e_machine`: [`EM_X86_64`] or [`EM_386`].
    pub machine: u16,
    /// `e_entry` as the file gives it.
    pub entry: u64,
    /// The `PT_LOAD` segments.
    pub segments: Vec<LoadSegment>,
    /// The kernel has a PVH entry note (`XEN_ELFNOTE_PHYS32_ENTRY`).
    pub pvh_note: bool,
}

/// Checks the ELF identification and machine of `head` (the file's first
/// bytes): a little-endian executable of a class that matches an x86
/// machine.
pub fn check_ident(head: &[u8]) -> Result<(), HeaderError> {
    let format = |what: &str| HeaderError::ElfFormat(what.to_string());
    let ident = head.get(..0x14).ok_or_else(|| format("header truncated"))?;
    if &ident[..4] != b"\x7fELF" {
        return Err(format("magic missing"));
    }
    let class = ident[4];
    if ident[5] != ELFDATA2LSB {
        return Err(format("is big-endian (EI_DATA 2)"));
    }
    let e_type = u16::from_le_bytes([ident[0x10], ident[0x11]]);
    let machine = u16::from_le_bytes([ident[0x12], ident[0x13]]);
    match (machine, class) {
        (EM_X86_64, ELFCLASS64) | (EM_386, ELFCLASS32) => {}
        (EM_X86_64 | EM_386, _) => {
            return Err(HeaderError::ElfFormat(format!(
                "class {class} does not match machine {machine}"
            )))
        }
        _ => return Err(HeaderError::ElfMachine { machine }),
    }
    if e_type != ET_EXEC {
        return Err(HeaderError::ElfFormat(format!(
            "type {e_type} is not an executable (ET_EXEC, 2)"
        )));
    }
    Ok(())
}

/// Little-endian reads at an offset of a byte slice, `None` past its end.
fn le(bytes: &[u8], at: u64, width: usize) -> Option<u64> {
    let at = usize::try_from(at).ok()?;
    let b = bytes.get(at..at.checked_add(width)?)?;
    Some(b.iter().rev().fold(0u64, |v, &x| v << 8 | u64::from(x)))
}

/// Parses the ELF header and program headers of `kernel` (the whole
/// file; every read is bounds-checked).
pub fn parse(kernel: &[u8]) -> Result<ElfKernel, HeaderError> {
    check_ident(kernel)?;
    let bad = |what: &str| HeaderError::ElfFormat(what.to_string());
    let wide = kernel[4] == ELFCLASS64;
    let machine = u16::from_le_bytes([kernel[0x12], kernel[0x13]]);
    // ELF header fields: (offset, width) for ELF32 and ELF64.
    let field = |narrow: (u64, usize), wide_at: (u64, usize)| {
        let (at, width) = if wide { wide_at } else { narrow };
        le(kernel, at, width).ok_or_else(|| bad("header truncated"))
    };
    let entry = field((0x18, 4), (0x18, 8))?;
    let phoff = field((0x1c, 4), (0x20, 8))?;
    let phentsize = field((0x2a, 2), (0x36, 2))?;
    let phnum = field((0x2c, 2), (0x38, 2))? as usize;
    let min_phent = if wide { 56 } else { 32 };
    if phentsize < min_phent {
        return Err(HeaderError::ElfFormat(format!(
            "program header size {phentsize} is below {min_phent}"
        )));
    }
    if phnum == 0 || phnum > MAX_PHDRS {
        return Err(HeaderError::ElfFormat(format!(
            "{phnum} program headers (expected 1..={MAX_PHDRS})"
        )));
    }
    let mut segments = Vec::new();
    let mut pvh_note = false;
    for i in 0..phnum as u64 {
        let ph = phoff
            .checked_add(i * phentsize)
            .ok_or_else(|| bad("program header offset overflows"))?;
        let get = |narrow: u64, wide_at: u64, width64: usize| {
            let (at, width) = if wide {
                (wide_at, width64)
            } else {
                (narrow, 4)
            };
            ph.checked_add(at)
                .and_then(|at| le(kernel, at, width))
                .ok_or_else(|| bad("program headers truncated"))
        };
        let p_type = get(0, 0, 4)? as u32;
        let flags = get(24, 4, 4)? as u32;
        let offset = get(4, 8, 8)?;
        let vaddr = get(8, 16, 8)?;
        let paddr = get(12, 24, 8)?;
        let filesz = get(16, 32, 8)?;
        let memsz = get(20, 40, 8)?;
        let in_file = offset
            .checked_add(filesz)
            .is_some_and(|end| end <= kernel.len() as u64);
        if !in_file {
            return Err(HeaderError::ElfFormat(format!(
                "segment {i} ({offset:#x} + {filesz:#x} bytes) runs past the end of the file"
            )));
        }
        match p_type {
            PT_LOAD => {
                if filesz > memsz {
                    return Err(HeaderError::ElfFormat(format!(
                        "segment {i} has more file bytes ({filesz:#x}) than memory ({memsz:#x})"
                    )));
                }
                segments.push(LoadSegment {
                    offset,
                    filesz,
                    paddr,
                    vaddr,
                    memsz,
                    exec: flags & PF_X != 0,
                });
            }
            PT_NOTE => pvh_note |= has_pvh_note(&kernel[offset as usize..][..filesz as usize]),
            _ => {}
        }
    }
    if segments.is_empty() {
        return Err(bad("has no loadable (PT_LOAD) segment"));
    }
    Ok(ElfKernel {
        machine,
        entry,
        segments,
        pvh_note,
    })
}

/// Whether the notes in `notes` (one `PT_NOTE` segment: namesz, descsz,
/// type, then the name and the descriptor, each padded to 4 bytes) hold
/// Xen's `XEN_ELFNOTE_PHYS32_ENTRY`.
fn has_pvh_note(notes: &[u8]) -> bool {
    let mut at = 0u64;
    while let (Some(namesz), Some(descsz), Some(kind)) =
        (le(notes, at, 4), le(notes, at + 4, 4), le(notes, at + 8, 4))
    {
        let name_at = at + 12;
        let name = usize::try_from(name_at)
            .ok()
            .and_then(|n| notes.get(n..n.checked_add(namesz as usize)?));
        if name == Some(b"Xen\0".as_slice()) && kind == u64::from(XEN_ELFNOTE_PHYS32_ENTRY) {
            return true;
        }
        at = name_at + namesz.next_multiple_of(4) + descsz.next_multiple_of(4);
    }
    false
}

impl ElfKernel {
    /// The mode the kernel's entry runs in.
    pub fn mode(&self) -> EntryMode {
        if self.machine == EM_X86_64 {
            EntryMode::Long64
        } else {
            EntryMode::Protected32
        }
    }

    /// The entry's physical address: `e_entry` if it lies in a segment's
    /// physical range (Linux links `e_entry` to the physical
    /// `startup_64`/`startup_32`), else translated from the segment whose
    /// virtual range holds it. It must be in an executable segment.
    pub fn physical_entry(&self) -> Result<u64, HeaderError> {
        let within = |at: u64, start: u64, size: u64| at >= start && at - start < size;
        let physical = self
            .segments
            .iter()
            .find(|s| within(self.entry, s.paddr, s.memsz))
            .map(|s| (s, self.entry))
            .or_else(|| {
                // A hostile header may put the physical address anywhere:
                // the translation must not overflow.
                self.segments
                    .iter()
                    .find(|s| within(self.entry, s.vaddr, s.memsz))
                    .and_then(|s| Some((s, (self.entry - s.vaddr).checked_add(s.paddr)?)))
            });
        match physical {
            Some((segment, at)) if segment.exec => Ok(at),
            Some(_) => Err(HeaderError::ElfFormat(format!(
                "entry {:#x} is in a segment that is not executable",
                self.entry
            ))),
            None => Err(HeaderError::ElfFormat(format!(
                "entry {:#x} is in no loadable segment",
                self.entry
            ))),
        }
    }
}

/// Loads the ELF kernel `image.kernel` (parsed as `elf`) into `memory`,
/// writes the zero page with a minimal setup header, and returns its
/// entry; `rsdp` is the ACPI RSDP's address.
pub fn install(
    memory: &GuestMemory,
    image: &LinuxImage,
    elf: &ElfKernel,
    rsdp: Option<u64>,
) -> Result<LinuxBoot, LinuxBootError> {
    let mode = elf.mode();
    let entry = elf.physical_entry()?;
    let ram_end = low_ram_end(memory);
    let mut start = u64::MAX;
    let mut end = 0u64;
    for s in &elf.segments {
        let seg_end = s.paddr.checked_add(s.memsz);
        let fits = seg_end.is_some_and(|e| s.paddr >= BIOS_END && e <= ram_end);
        let seg_end = seg_end.unwrap_or(u64::MAX);
        if !fits {
            return Err(LinuxBootError::SegmentOutsideRam {
                start: s.paddr,
                end: seg_end,
                ram_end,
            });
        }
        start = start.min(s.paddr);
        end = end.max(seg_end);
    }
    for s in &elf.segments {
        // In bounds: `parse` checked offset + filesz against the file.
        let bytes = &image.kernel[s.offset as usize..][..s.filesz as usize];
        write(memory, s.paddr, bytes)?;
        let zeros = vec![0u8; 1 << 16];
        let mut at = s.paddr + s.filesz;
        let seg_end = s.paddr + s.memsz;
        while at < seg_end {
            let n = (seg_end - at).min(zeros.len() as u64);
            write(memory, at, &zeros[..n as usize])?;
            at += n;
        }
    }
    let hdr = setup_header {
        boot_flag: 0xaa55,
        header: HDRS_MAGIC,
        version: ELF_PROTOCOL,
        loadflags: LOADED_HIGH,
        code32_start: start as u32,
        kernel_alignment: KERNEL_ALIGNMENT,
        cmdline_size: (CMDLINE_MAX - 1) as u32,
        initrd_addr_max: match mode {
            EntryMode::Long64 => INITRD_ADDR_MAX_64,
            EntryMode::Protected32 => INITRD_ADDR_MAX_DEFAULT as u32,
        },
        xloadflags: match mode {
            EntryMode::Long64 => XLF_KERNEL_64,
            EntryMode::Protected32 => 0,
        },
        pref_address: start,
        init_size: (end - start) as u32,
        ..Default::default()
    };
    write_zero_page(memory, hdr, image, rsdp, end)?;
    write_entry_tables(memory, mode)?;
    Ok(LinuxBoot {
        entry,
        zero_page: ZERO_PAGE,
        mode,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use alcazar_core::memory::MemoryMap;

    fn mem(bytes: u64) -> GuestMemory {
        GuestMemory::new(MemoryMap::pc(bytes).unwrap()).unwrap()
    }

    /// A minimal 64-bit ELF: one executable PT_LOAD of `code` at physical
    /// 2 MiB (virtual `vbase` + 2 MiB) with 0x1000 bytes of BSS, entry
    /// `entry`, and an optional Xen PVH note.
    fn fake_elf64(machine: u16, entry: u64, vbase: u64, pvh: bool) -> Vec<u8> {
        let code = [0xf4u8; 16];
        let phnum = 2u16;
        let code_at = 0x40 + 56 * u64::from(phnum);
        let note_at = code_at + code.len() as u64;
        let mut note = Vec::new();
        note.extend_from_slice(&4u32.to_le_bytes());
        note.extend_from_slice(&4u32.to_le_bytes());
        let kind = if pvh { XEN_ELFNOTE_PHYS32_ENTRY } else { 0x7f };
        note.extend_from_slice(&kind.to_le_bytes());
        note.extend_from_slice(b"Xen\0");
        note.extend_from_slice(&0x20_0000u32.to_le_bytes());
        let mut f = vec![0u8; 0x40];
        f[..4].copy_from_slice(b"\x7fELF");
        f[4] = ELFCLASS64;
        f[5] = ELFDATA2LSB;
        f[6] = 1;
        f[0x10..0x12].copy_from_slice(&ET_EXEC.to_le_bytes());
        f[0x12..0x14].copy_from_slice(&machine.to_le_bytes());
        f[0x18..0x20].copy_from_slice(&entry.to_le_bytes());
        f[0x20..0x28].copy_from_slice(&0x40u64.to_le_bytes());
        f[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        f[0x38..0x3a].copy_from_slice(&phnum.to_le_bytes());
        let phdr = |kind: u32, flags: u32, off: u64, addr: u64, filesz: u64, memsz: u64| {
            let mut p = Vec::new();
            p.extend_from_slice(&kind.to_le_bytes());
            p.extend_from_slice(&flags.to_le_bytes());
            for v in [off, vbase + addr, addr, filesz, memsz, 0x1000] {
                p.extend_from_slice(&v.to_le_bytes());
            }
            p
        };
        f.extend(phdr(PT_LOAD, PF_X | 4, code_at, 0x20_0000, 16, 0x1010));
        f.extend(phdr(
            PT_NOTE,
            4,
            note_at,
            0,
            note.len() as u64,
            note.len() as u64,
        ));
        f.extend_from_slice(&code);
        f.extend(note);
        f
    }

    #[test]
    fn parses_segments_entry_and_the_pvh_note() {
        let elf = parse(&fake_elf64(EM_X86_64, 0x20_0000, 0, true)).unwrap();
        assert!(elf.pvh_note);
        assert_eq!(elf.segments.len(), 1);
        assert_eq!(elf.physical_entry().unwrap(), 0x20_0000);
        assert_eq!(elf.mode(), EntryMode::Long64);
        let elf = parse(&fake_elf64(EM_X86_64, 0x20_0000, 0, false)).unwrap();
        assert!(!elf.pvh_note);
    }

    #[test]
    fn a_virtual_entry_is_translated_through_its_segment() {
        let vbase = 0xffff_ffff_8000_0000;
        let elf = parse(&fake_elf64(EM_X86_64, vbase + 0x20_0004, vbase, false)).unwrap();
        assert_eq!(elf.physical_entry().unwrap(), 0x20_0004);
        let elf = parse(&fake_elf64(EM_X86_64, 0x9999_0000, 0, false)).unwrap();
        assert!(elf.physical_entry().is_err());
    }

    #[test]
    fn loads_segments_zeroes_bss_and_writes_a_setup_header() {
        let m = mem(16 << 20);
        m.write(0x20_0010, &[0x55; 16]).unwrap();
        let kernel = fake_elf64(EM_X86_64, 0x20_0000, 0, false);
        let elf = parse(&kernel).unwrap();
        let image = LinuxImage {
            kernel,
            initrd: Some(vec![7; 100]),
            cmdline: "console=ttyS0".into(),
        };
        let boot = install(&m, &image, &elf, None).unwrap();
        assert_eq!((boot.entry, boot.mode), (0x20_0000, EntryMode::Long64));
        let mut b = [0u8; 2];
        m.read(0x20_000f, &mut b).unwrap();
        assert_eq!(b, [0xf4, 0], "code, then zeroed BSS");
        let mut hdr = [0u8; 0x70];
        m.read(ZERO_PAGE + 0x1f1, &mut hdr).unwrap();
        let u32_at = |at: usize| u32::from_le_bytes(hdr[at - 0x1f1..][..4].try_into().unwrap());
        assert_eq!(u32_at(0x202), HDRS_MAGIC);
        assert_eq!(u32_at(0x206) & 0xffff, u32::from(ELF_PROTOCOL));
        assert_eq!(u32_at(0x230), KERNEL_ALIGNMENT);
        assert_eq!(u32_at(0x228), super::super::linux::CMDLINE_ADDRESS as u32);
        assert_ne!(u32_at(0x218), 0, "ramdisk_image");
        assert_eq!(hdr[0x210 - 0x1f1], 0xff, "type_of_loader");
    }

    #[test]
    fn refuses_other_machines_and_segments_outside_ram() {
        let arm = fake_elf64(183, 0x20_0000, 0, false);
        let err = parse(&arm).unwrap_err();
        assert_eq!(err, HeaderError::ElfMachine { machine: 183 });
        let line = LinuxBootError::from(err).to_string();
        assert!(
            line.contains("ELF machine 183 (EM_AARCH64) is not x86"),
            "{line}"
        );
        assert!(line.contains("give an x86-64"), "{line}");
        assert!(!line.contains('\n'));
        // A 32-bit class with the x86-64 machine is malformed.
        let mut odd = fake_elf64(EM_X86_64, 0x20_0000, 0, false);
        odd[4] = ELFCLASS32;
        assert!(matches!(parse(&odd), Err(HeaderError::ElfFormat(_))));
        // 2 MiB + 4 KiB does not fit in 2 MiB of RAM.
        let kernel = fake_elf64(EM_X86_64, 0x20_0000, 0, false);
        let elf = parse(&kernel).unwrap();
        let image = LinuxImage {
            kernel,
            initrd: None,
            cmdline: String::new(),
        };
        assert!(matches!(
            install(&mem(2 << 20), &image, &elf, None),
            Err(LinuxBootError::SegmentOutsideRam { .. })
        ));
        // Truncated program headers are an error, not a panic.
        let mut cut = fake_elf64(EM_X86_64, 0x20_0000, 0, false);
        cut.truncate(0x60);
        assert!(parse(&cut).is_err());
    }
}
