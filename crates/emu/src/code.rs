//! Decode once: the code-page table, the decoded-block cache and the
//! block decoder.
//!
//! iced-x86 decodes an instruction once; the result, with the handler
//! chosen for it, is kept in a [`Block`] (straight-line code up to a branch
//! or a page end) keyed by the physical address and code size it was
//! decoded at. Each vCPU has its own cache.
//!
//! Memory that held decoded code can be rewritten (self-modifying code,
//! page reuse, DMA; SDM Vol. 3A "Self-Modifying Code" in the chapter on
//! memory cache control). [`CodePages`], shared by all vCPUs, keeps one
//! word per physical page: a "has code" bit and a generation number. A
//! block records the generations of the pages it came from and is valid
//! only while they are unchanged. A store to a page with the code bit
//! bumps the generation (and clears the bit); the MMU never caches write
//! translations for such pages, so every such store is seen.
//!
//! * this file: [`CodePages`];
//! * `code/cache.rs`: [`Decoded`], [`Block`], [`Link`], [`BlockCache`];
//! * `code/decode.rs`: fetching the bytes at CS:RIP and decoding a block
//!   (`Cpu::block_at_rip`).

mod cache;
mod decode;

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

pub use cache::{
    Block, BlockCache, BuildKeyHasher, Decoded, KeyHasher, Link, BLOCK_CACHE_BYTES, LINKS,
};
pub(crate) use decode::MAX_BLOCK_INSNS;

/// The "has code" bit of a page's word (the rest is its generation).
pub const CODE_BIT: u32 = 1 << 31;

/// Per-physical-page code state for one VM.
#[derive(Debug)]
pub struct CodePages {
    pages: Box<[AtomicU32]>,
    /// Invalidations so far (part of the link epoch).
    invalidations: AtomicU64,
}

impl CodePages {
    /// A table covering physical addresses below `phys_end`.
    pub fn new(phys_end: u64) -> Self {
        let n = (phys_end.div_ceil(4096)) as usize;
        CodePages {
            pages: (0..n).map(|_| AtomicU32::new(0)).collect(),
            invalidations: AtomicU64::new(0),
        }
    }

    fn slot(&self, phys: u64) -> Option<&AtomicU32> {
        self.pages.get((phys >> 12) as usize)
    }

    /// The word of the page holding `phys` (its code bit is bit 31), for
    /// translated stores to test directly; a word that never has the code
    /// bit for pages outside the table.
    pub fn word(&self, phys: u64) -> *const AtomicU32 {
        static NEVER_CODE: AtomicU32 = AtomicU32::new(0);
        self.slot(phys).unwrap_or(&NEVER_CODE)
    }

    /// Whether the page holding `phys` has decoded code.
    #[inline]
    pub fn has_code(&self, phys: u64) -> bool {
        self.slot(phys)
            .is_some_and(|s| s.load(Ordering::Relaxed) & CODE_BIT != 0)
    }

    /// Whether the page holding `phys` still has code at generation
    /// `generation` (one load: the code bit and the generation together).
    #[inline]
    pub fn is_current(&self, phys: u64, generation: u32) -> bool {
        self.slot(phys)
            .is_some_and(|s| s.load(Ordering::Acquire) == generation | CODE_BIT)
    }

    /// The generation of the page holding `phys`.
    #[inline]
    pub fn generation(&self, phys: u64) -> u32 {
        self.slot(phys)
            .map_or(0, |s| s.load(Ordering::Acquire) & !CODE_BIT)
    }

    /// Marks the page holding `phys` as containing code; returns its
    /// generation.
    pub fn mark_code(&self, phys: u64) -> u32 {
        match self.slot(phys) {
            Some(s) => s.fetch_or(CODE_BIT, Ordering::AcqRel) & !CODE_BIT,
            None => 0,
        }
    }

    /// Called for a store to `phys` (or DMA into it): if the page has code,
    /// invalidates it. Returns whether it did.
    #[inline]
    pub fn note_write(&self, phys: u64) -> bool {
        let Some(s) = self.slot(phys) else {
            return false;
        };
        if s.load(Ordering::Relaxed) & CODE_BIT == 0 {
            return false;
        }
        let _ = s.fetch_update(Ordering::AcqRel, Ordering::Relaxed, |v| {
            Some(((v & !CODE_BIT).wrapping_add(1)) & !CODE_BIT)
        });
        // After the generation: a link made before this count changed
        // may point at a block of this page.
        self.invalidations.fetch_add(1, Ordering::AcqRel);
        true
    }

    /// How many times a page with code has been invalidated (only grows).
    /// A block that was valid when this count was read stays valid while
    /// the count is unchanged.
    #[inline(always)]
    pub fn invalidations(&self) -> u64 {
        self.invalidations.load(Ordering::Acquire)
    }
}

/// Device writes into guest memory (virtio DMA) invalidate the decoded
/// code of every page they touch, like a CPU store would.
impl alcazar_core::memory::DmaObserver for CodePages {
    fn dma_written(&self, addr: u64, len: u64) {
        if len == 0 {
            return;
        }
        let first = addr >> 12;
        let last = addr.saturating_add(len - 1) >> 12;
        for page in first..=last.min(self.pages.len() as u64) {
            self.note_write(page << 12);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_to_a_code_page_invalidates_it_once() {
        let c = CodePages::new(1 << 20);
        assert!(!c.note_write(0x5000));
        let g = c.mark_code(0x5000);
        assert!(c.has_code(0x5123));
        assert!(c.note_write(0x5fff));
        assert!(!c.has_code(0x5000));
        assert_ne!(c.generation(0x5000), g);
        assert!(!c.note_write(0x5000), "no code left to invalidate");
        assert!(
            !c.note_write(u64::MAX),
            "out-of-range addresses are ignored"
        );
    }
}
