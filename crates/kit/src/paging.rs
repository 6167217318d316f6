//! Static 4-level page tables (SDM Vol. 3A §4.5) for programs that need
//! per-page control: built at assembly time and placed in the image, so
//! the guest only has to load CR3.
//!
//! The tables identity-map linear 0..2 MiB with 4 KiB pages through one
//! PML4 entry, one PDPT entry, one page-directory entry and one page table;
//! everything above 2 MiB is not present. The caller picks each page's
//! flags (present, writable, user), which is how the fault programs get a
//! not-present or read-only page and `syscall-sysret` its user pages.

use crate::arch::{PAGE_SIZE, PTE_RW};

/// The four tables, in image order: PML4, PDPT, PD, PT.
pub(crate) const TABLES_SIZE: usize = 4 * PAGE_SIZE as usize;

/// Entries per paging structure.
const ENTRIES: u64 = 512;

/// Builds the four tables for an image that places them at linear `base`
/// (4 KiB aligned). Table links carry `PTE_RW | links`; page `n` (linear and
/// physical `n * 4 KiB`) gets the entry flags `page(n * 4 KiB)`, so 0 makes
/// it not present.
pub(crate) fn low_identity_tables(base: u64, links: u64, page: impl Fn(u64) -> u64) -> Vec<u8> {
    let table = u64::from(PAGE_SIZE);
    let mut entries = vec![0u64; 4 * ENTRIES as usize];
    // PML4[0] -> PDPT, PDPT[0] -> PD, PD[0] -> PT.
    for level in 0..3 {
        entries[level * ENTRIES as usize] = (base + (level as u64 + 1) * table) | PTE_RW | links;
    }
    for n in 0..ENTRIES {
        let address = n * table;
        entries[(3 * ENTRIES + n) as usize] = address | page(address);
    }
    entries
        .iter()
        .flat_map(|entry| entry.to_le_bytes())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(tables: &[u8], index: usize) -> u64 {
        let bytes = tables[index * 8..index * 8 + 8]
            .try_into()
            .expect("8 bytes");
        u64::from_le_bytes(bytes)
    }

    #[test]
    fn links_chain_down_to_one_page_table() {
        let tables = low_identity_tables(0x12000, 4, |_| PTE_RW);
        assert_eq!(tables.len(), TABLES_SIZE);
        assert_eq!(entry(&tables, 0), 0x13007);
        assert_eq!(entry(&tables, 512), 0x14007);
        assert_eq!(entry(&tables, 1024), 0x15007);
        assert_eq!(entry(&tables, 1536 + 3), 0x3003);
        assert_eq!(entry(&tables, 1536 + 511), 0x1f_f003);
    }

    #[test]
    fn zero_flags_leave_a_page_not_present() {
        let tables = low_identity_tables(0x12000, 0, |at| if at == 0x5000 { 0 } else { 1 });
        assert_eq!(entry(&tables, 1536 + 5), 0x5000);
        assert_eq!(entry(&tables, 1536 + 6), 0x6001);
    }
}
