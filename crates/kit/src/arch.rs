//! x86 architectural constants and table encoders the programs share.
//!
//! Section references are to the Intel SDM, Volume 3A.

/// CR0.PE (bit 0): protection enable (SDM 2.5).
pub(crate) const CR0_PE: u32 = 1 << 0;
/// CR0.PG (bit 31): paging enable (SDM 2.5).
pub(crate) const CR0_PG: u32 = 1 << 31;
/// CR4.PAE (bit 5): physical address extension, required for 4-level
/// paging and therefore for IA-32e mode (SDM 2.5, 4.1.1).
pub(crate) const CR4_PAE: u32 = 1 << 5;
/// CR0.WP (bit 16): write protect; when set, supervisor-mode writes to
/// read-only pages fault too (SDM 2.5, 4.6.1).
pub(crate) const CR0_WP: u32 = 1 << 16;
/// RFLAGS.IF (bit 9): maskable interrupts enabled (SDM 2.3).
pub(crate) const RFLAGS_IF: u32 = 1 << 9;
/// The IA32_EFER MSR (SDM 2.2.1).
pub(crate) const MSR_EFER: u32 = 0xc000_0080;
/// IA32_EFER.LME (bit 8): long mode enable; IA-32e mode becomes active when
/// paging is turned on with this set (SDM 10.8.5, "Initializing IA-32e
/// FlatMode").
pub(crate) const EFER_LME: u32 = 1 << 8;
/// IA32_EFER.SCE (bit 0): enables SYSCALL/SYSRET in 64-bit mode (SDM 2.2.1).
pub(crate) const EFER_SCE: u32 = 1 << 0;
/// IA32_STAR: SYSCALL CS/SS in bits 47:32, SYSRET CS/SS base in bits 63:48
/// (SDM Vol. 2B, SYSCALL/SYSRET; SDM 5.8.8).
pub(crate) const MSR_STAR: u32 = 0xc000_0081;
/// IA32_LSTAR: the RIP SYSCALL jumps to in 64-bit mode.
pub(crate) const MSR_LSTAR: u32 = 0xc000_0082;
/// IA32_FMASK: RFLAGS bits SYSCALL clears.
pub(crate) const MSR_FMASK: u32 = 0xc000_0084;

/// Paging-structure entry bit 0: present (SDM 4.5, tables 4-14 .. 4-20).
pub(crate) const PTE_PRESENT: u64 = 1 << 0;
/// Paging-structure entry bit 1: writable.
pub(crate) const PTE_WRITABLE: u64 = 1 << 1;
/// Paging-structure entry bit 2: user/supervisor; CPL 3 may only access a
/// page whose entries at every level have it set (SDM 4.6.1).
pub(crate) const PTE_USER: u64 = 1 << 2;
/// Page-directory entry bit 7: this entry maps a 2 MiB page instead of
/// pointing at a page table (SDM 4.5, table 4-18).
pub(crate) const PDE_LARGE: u64 = 1 << 7;
/// Entry flags used for every table link and page the kit creates.
pub(crate) const PTE_RW: u64 = PTE_PRESENT | PTE_WRITABLE;

/// Size of one paging structure (512 entries of 8 bytes).
pub(crate) const PAGE_SIZE: u32 = 0x1000;

/// Segment-descriptor access byte for an executable, readable, present,
/// DPL 0 code segment (type 0xA, S=1, P=1; SDM 3.4.5, table 3-1).
const ACCESS_CODE: u8 = 0x9a;
/// Access byte for a writable, present, DPL 0 data segment (type 0x2).
const ACCESS_DATA: u8 = 0x92;
/// Access byte for an executable, readable, present, DPL 3 code segment.
const ACCESS_CODE_USER: u8 = 0xfa;
/// Access byte for a writable, present, DPL 3 data segment.
const ACCESS_DATA_USER: u8 = 0xf2;
/// Access byte for a present, DPL 0, available 64-bit TSS (system
/// descriptor type 9; SDM 3.5, table 3-2).
const ACCESS_TSS64: u8 = 0x89;
/// IDT gate type/attribute byte: present, DPL 0, 64-bit interrupt gate
/// (type 0xE; SDM 6.14.1).
const GATE_INTERRUPT: u8 = 0x8e;
/// Descriptor flags nibble G=1 (4 KiB granularity), D/B=1 (32-bit).
const FLAGS_32: u8 = 0xc;
/// Flags nibble G=1, L=1 (64-bit code), D=0 (D must be 0 when L=1).
const FLAGS_64: u8 = 0xa;

/// Encodes a segment descriptor (SDM 3.4.5, figure 3-8): the base and limit
/// are scattered over the 8 bytes for 80286 compatibility.
pub(crate) const fn descriptor(base: u32, limit: u32, access: u8, flags: u8) -> u64 {
    let base = base as u64;
    let limit = limit as u64;
    (limit & 0xffff)
        | ((base & 0xff_ffff) << 16)
        | ((access as u64) << 40)
        | (((limit >> 16) & 0xf) << 48)
        | (((flags & 0xf) as u64) << 52)
        | (((base >> 24) & 0xff) << 56)
}

/// The mandatory null descriptor in GDT slot 0 (SDM 3.5.1).
pub(crate) const NULL_DESCRIPTOR: u64 = 0;
/// Flat 4 GiB 32-bit code segment.
pub(crate) const CODE32_FLAT: u64 = descriptor(0, 0xfffff, ACCESS_CODE, FLAGS_32);
/// Flat 4 GiB data segment (also usable as the stack segment).
pub(crate) const DATA_FLAT: u64 = descriptor(0, 0xfffff, ACCESS_DATA, FLAGS_32);
/// 64-bit code segment: base and limit are ignored in 64-bit mode, only
/// L=1 matters (SDM 3.4.5, 5.2.1).
pub(crate) const CODE64: u64 = descriptor(0, 0xfffff, ACCESS_CODE, FLAGS_64);
/// 64-bit code segment with DPL 3, for user mode.
pub(crate) const CODE64_USER: u64 = descriptor(0, 0xfffff, ACCESS_CODE_USER, FLAGS_64);
/// Flat data segment with DPL 3, for user mode.
pub(crate) const DATA_USER: u64 = descriptor(0, 0xfffff, ACCESS_DATA_USER, FLAGS_32);
/// The size of a 64-bit TSS without an I/O permission bitmap (SDM 8.7).
pub(crate) const TSS64_SIZE: u32 = 104;

/// The two GDT slots of a 64-bit TSS descriptor (SDM 8.2.3, figure 8-4):
/// the usual 8-byte layout plus the upper 32 bits of the base.
pub(crate) const fn tss64_descriptor(base: u64) -> [u64; 2] {
    [
        descriptor(base as u32, TSS64_SIZE - 1, ACCESS_TSS64, 0),
        base >> 32,
    ]
}

/// A 16-byte 64-bit interrupt gate to `offset` in code segment `selector`
/// (SDM 6.14.1, figure 6-8): offset bits 15:0, selector, IST = 0, type and
/// attributes, offset bits 31:16, offset bits 63:32, reserved.
pub(crate) fn interrupt_gate(offset: u64, selector: u16) -> [u8; 16] {
    let mut gate = [0; 16];
    gate[0..2].copy_from_slice(&(offset as u16).to_le_bytes());
    gate[2..4].copy_from_slice(&selector.to_le_bytes());
    gate[5] = GATE_INTERRUPT;
    gate[6..8].copy_from_slice(&((offset >> 16) as u16).to_le_bytes());
    gate[8..12].copy_from_slice(&((offset >> 32) as u32).to_le_bytes());
    gate
}

/// The 10-byte pseudo-descriptor `lidt`/`lgdt` read in 64-bit mode: a
/// 16-bit limit and a 64-bit base (SDM 3.5.1, figure 3-11).
pub(crate) fn pseudo_descriptor64(base: u64, size: usize) -> [u8; 10] {
    let limit = size.saturating_sub(1) as u16;
    let mut bytes = [0; 10];
    bytes[..2].copy_from_slice(&limit.to_le_bytes());
    bytes[2..].copy_from_slice(&base.to_le_bytes());
    bytes
}

/// The 6-byte pseudo-descriptor `lgdt` reads: a 16-bit limit (table size
/// minus one) followed by the 32-bit linear base (SDM 3.5.1, figure 3-11).
pub(crate) fn gdtr(base: u32, entries: usize) -> [u8; 6] {
    let limit = (entries * 8).saturating_sub(1) as u16;
    let mut bytes = [0; 6];
    bytes[..2].copy_from_slice(&limit.to_le_bytes());
    bytes[2..].copy_from_slice(&base.to_le_bytes());
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_descriptors_match_the_well_known_encodings() {
        assert_eq!(CODE32_FLAT, 0x00cf_9a00_0000_ffff);
        assert_eq!(DATA_FLAT, 0x00cf_9200_0000_ffff);
        assert_eq!(CODE64, 0x00af_9a00_0000_ffff);
    }

    #[test]
    fn user_and_system_descriptors_match_the_well_known_encodings() {
        assert_eq!(CODE64_USER, 0x00af_fa00_0000_ffff);
        assert_eq!(DATA_USER, 0x00cf_f200_0000_ffff);
        assert_eq!(tss64_descriptor(0x1_2345_6789), [0x2300_8945_6789_0067, 1]);
    }

    #[test]
    fn interrupt_gates_scatter_the_offset() {
        let gate = interrupt_gate(0x1122_3344_5566_7788, 0x08);
        assert_eq!(
            gate,
            [0x88, 0x77, 0x08, 0, 0, 0x8e, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, 0, 0, 0, 0]
        );
        assert_eq!(
            pseudo_descriptor64(0x20000, 16),
            [15, 0, 0, 0, 2, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn gdtr_holds_limit_then_base() {
        assert_eq!(gdtr(0x0001_0c00, 3), [23, 0, 0x00, 0x0c, 0x01, 0x00]);
    }
}
