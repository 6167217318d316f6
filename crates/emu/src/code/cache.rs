//! Decoded blocks and a vCPU's cache of them: [`Decoded`] (one
//! instruction with its handler and pre-decoded operands), [`Block`] (a
//! run of them, with the code-page generations it depends on), the
//! [`Link`]s from a block to its successors, and the [`BlockCache`].
//!
//! This is emulator machinery, not architecture (no SDM section): what it
//! must preserve is that a guest never sees stale code (see
//! [`super::CodePages`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::sync::Arc;

use iced_x86::Instruction;

use super::CodePages;
use crate::exec::fast::{Exec, Operands};
use crate::exec::Handler;

/// One decoded instruction with its handlers and pre-decoded operands.
#[derive(Clone, Copy)]
pub struct Decoded {
    /// The function the run loop calls: a specialized handler reading
    /// `ops`, or [`crate::exec::fast::generic`], which calls `handler`.
    pub exec: Exec,
    /// Operands resolved at decode time (for specialized handlers).
    pub ops: Operands,
    /// The RIP of this instruction.
    pub rip: u64,
    /// A specialized direct JMP/Jcc: after it the block may run again
    /// without a lookup if it branched to the block's start.
    pub chains: bool,
    /// A CMP/TEST fused with the Jcc after it
    /// ([`crate::exec::fast::fused`]): `exec` runs both, `handler` and
    /// `insn` are the CMP/TEST's, `next_rip` is after the Jcc.
    pub fused: bool,
    /// The RIP of the next instruction (masked to the code size).
    pub next_rip: u64,
    /// The generic handler for `insn`.
    pub handler: Handler,
    /// The instruction, as iced-x86 decoded it.
    pub insn: Instruction,
}

/// A run of decoded instructions.
///
/// `#[repr(C)]` with what a lookup reads first (RIP, pages, translation),
/// so that finding a block touches as few cache lines as possible.
#[repr(C)]
pub struct Block {
    /// The RIP it was decoded at (branch targets and RIP-relative
    /// addresses are resolved against it).
    pub rip: u64,
    /// (physical page, generation) of every page the bytes came from.
    pub pages: [(u64, u32); 2],
    /// How many of `pages` are used (1 or 2).
    pub page_count: u8,
    /// Its translation by tier 1, if any ([`crate::jit`]).
    pub jit: crate::jit::BlockJit,
    /// The instruction-pointer mask of the code size it was decoded for.
    pub ip_mask: u64,
    /// The instructions, in order.
    pub insns: Vec<Decoded>,
    /// Successors seen after this block ran (see [`Link`]).
    pub links: [Link; LINKS],
}

/// Successor slots per block (a block with side exits has several).
pub const LINKS: usize = 8;

/// A remembered successor of a block: after the block ends at `rip`, the
/// run loop may run `block` next without a lookup if the link epoch
/// ([`crate::Cpu::link_epoch`]) still equals `epoch`. The epoch changes
/// whenever the way a RIP maps to a decoded block may have changed (TLB
/// flushes and fetch-TLB refills, any generic instruction, fault and
/// interrupt delivery, a new entry into the run loop), whenever a block
/// may have left the cache, and whenever any code page is invalidated
/// ([`CodePages::invalidations`]). So a current link points at a live,
/// still valid block decoded for the same RIP, mode and translation.
///
/// The fields are atomics only so that blocks stay `Sync`; they are used
/// by the owning vCPU alone, with relaxed (plain) loads and stores.
#[derive(Debug)]
pub struct Link {
    rip: AtomicU64,
    epoch: AtomicU64,
    block: AtomicPtr<Block>,
}

impl Default for Link {
    fn default() -> Self {
        Link {
            rip: AtomicU64::new(u64::MAX),
            epoch: AtomicU64::new(u64::MAX),
            block: AtomicPtr::new(std::ptr::null_mut()),
        }
    }
}

impl Link {
    /// The linked block for `rip` if the link is current at `epoch`
    /// (null otherwise).
    #[inline(always)]
    pub fn get(&self, rip: u64, epoch: u64) -> *const Block {
        if self.rip.load(Ordering::Relaxed) == rip && self.epoch.load(Ordering::Relaxed) == epoch {
            self.block.load(Ordering::Relaxed)
        } else {
            std::ptr::null()
        }
    }

    /// Links `rip` to `block` at `epoch`.
    #[inline]
    pub fn set(&self, rip: u64, epoch: u64, block: *const Block) {
        self.rip.store(rip, Ordering::Relaxed);
        self.epoch.store(epoch, Ordering::Relaxed);
        self.block.store(block.cast_mut(), Ordering::Relaxed);
    }
}

impl Block {
    /// Whether the code this block was decoded from is unchanged.
    #[inline]
    pub fn valid(&self, code: &CodePages) -> bool {
        self.pages[..self.page_count as usize]
            .iter()
            .all(|&(p, g)| code.is_current(p, g))
    }

    /// The link slot for the exit `exit` (distinct for each side exit and
    /// the end of a short block; the link still records the RIP).
    #[inline(always)]
    pub fn link(&self, exit: usize) -> &Link {
        &self.links[exit & (LINKS - 1)]
    }
}

/// Entries of the direct-mapped first-level block cache.
const L1_ENTRIES: usize = 4096;

/// A vCPU's decoded blocks, keyed by physical address and code size.
///
/// A direct-mapped first level holds the hot blocks; the run loop *takes*
/// a block out of it to run it and puts it back afterwards, so the hot
/// path moves a pointer instead of touching a reference count. A map
/// behind it holds every block decoded.
pub struct BlockCache {
    blocks: HashMap<u64, Arc<Block>, BuildKeyHasher>,
    l1_keys: Box<[u64]>,
    l1: Box<[Option<Arc<Block>>]>,
    /// Blocks decoded so far (telemetry).
    pub decoded: u64,
    /// About how many host bytes the cached blocks take (see
    /// [`BLOCK_CACHE_BYTES`]).
    pub bytes: usize,
    /// Times the cache was emptied because it reached its budget.
    pub flushes: u64,
    /// Bumped whenever a block may leave the map (part of the link
    /// epoch: a current [`Link`] points at a block the map keeps alive).
    pub epoch: u64,
}

impl Default for BlockCache {
    fn default() -> Self {
        BlockCache {
            blocks: HashMap::default(),
            l1_keys: vec![u64::MAX; L1_ENTRIES].into_boxed_slice(),
            l1: (0..L1_ENTRIES).map(|_| None).collect(),
            decoded: 0,
            bytes: 0,
            flushes: 0,
            epoch: 0,
        }
    }
}

impl BlockCache {
    /// The key of a block at `phys` decoded with `bitness`.
    #[inline]
    pub fn key(phys: u64, bitness: u32) -> u64 {
        phys | (u64::from(bitness) << 56)
    }

    #[inline]
    fn l1_index(key: u64) -> usize {
        (key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 52) as usize & (L1_ENTRIES - 1)
    }

    /// Blocks held (some may be stale: their code changed since; they are
    /// replaced when next looked up).
    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    /// Whether no block is held.
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// A valid block at `key`, if cached.
    #[inline]
    pub fn get(&self, key: u64, code: &CodePages) -> Option<Arc<Block>> {
        let b = self.blocks.get(&key)?;
        b.valid(code).then(|| b.clone())
    }

    /// Takes the valid block at `key` decoded at `rip` out of the first
    /// level (or clones it from the map); hand it back with
    /// [`BlockCache::put_back`] after running it.
    #[inline]
    pub fn take(&mut self, key: u64, rip: u64, code: &CodePages) -> Option<Arc<Block>> {
        let i = Self::l1_index(key);
        if self.l1_keys[i] == key {
            if let Some(b) = &self.l1[i] {
                if b.rip == rip && b.valid(code) {
                    return self.l1[i].take();
                }
            }
        }
        self.get(key, code).filter(|b| b.rip == rip)
    }

    /// Puts a block taken with [`BlockCache::take`] (or just decoded) into
    /// the first level.
    #[inline(always)]
    pub fn put_back(&mut self, key: u64, block: Arc<Block>) {
        let i = Self::l1_index(key);
        self.l1_keys[i] = key;
        self.l1[i] = Some(block);
    }

    /// Caches `block` at `key`. A cache over its budget
    /// ([`BLOCK_CACHE_BYTES`]) is emptied first: everything re-decodes,
    /// which a guest that churns through code (a fork bomb, page reuse)
    /// pays for instead of the host's memory.
    pub fn insert(&mut self, key: u64, block: Arc<Block>) {
        let cost = block_bytes(&block);
        if self.bytes + cost > BLOCK_CACHE_BYTES {
            self.blocks.clear();
            self.l1.iter_mut().for_each(|e| *e = None);
            self.bytes = 0;
            self.flushes += 1;
        }
        self.decoded += 1;
        self.epoch = self.epoch.wrapping_add(1);
        if let Some(old) = self.blocks.insert(key, block) {
            self.bytes = self.bytes.saturating_sub(block_bytes(&old));
        }
        self.bytes += cost;
    }
}

/// The most host memory one vCPU's decoded blocks may take, about. A
/// Linux boot keeps well under it; the VMM's memory bound in SECURITY.md
/// counts it per vCPU.
pub const BLOCK_CACHE_BYTES: usize = 32 << 20;

/// About how many host bytes `block` takes in the cache: the block, its
/// instructions, the `Arc` and the map entry.
fn block_bytes(block: &Block) -> usize {
    std::mem::size_of::<Block>() + block.insns.capacity() * std::mem::size_of::<Decoded>() + 48
}

/// A cheap hasher for block keys (physical addresses are well spread in
/// their low bits; multiply to mix the rest).
#[derive(Default, Clone, Copy)]
pub struct BuildKeyHasher;

/// The hasher [`BuildKeyHasher`] builds.
#[derive(Default)]
pub struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u64(&mut self, v: u64) {
        // One u64 (a block key) hashes to `v * K`; a pair mixes both.
        self.0 = (self.0.rotate_left(29) ^ v).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

impl std::hash::BuildHasher for BuildKeyHasher {
    type Hasher = KeyHasher;
    fn build_hasher(&self) -> KeyHasher {
        KeyHasher(0)
    }
}
