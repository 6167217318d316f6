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
/// The IA32_EFER MSR (SDM 2.2.1).
pub(crate) const MSR_EFER: u32 = 0xc000_0080;
/// IA32_EFER.LME (bit 8): long mode enable; IA-32e mode becomes active when
/// paging is turned on with this set (SDM 10.8.5, "Initializing IA-32e
/// Mode").
pub(crate) const EFER_LME: u32 = 1 << 8;

/// Paging-structure entry bit 0: present (SDM 4.5, tables 4-14 .. 4-20).
pub(crate) const PTE_PRESENT: u64 = 1 << 0;
/// Paging-structure entry bit 1: writable.
pub(crate) const PTE_WRITABLE: u64 = 1 << 1;
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
    fn gdtr_holds_limit_then_base() {
        assert_eq!(gdtr(0x0001_0c00, 3), [23, 0, 0x00, 0x0c, 0x01, 0x00]);
    }
}
