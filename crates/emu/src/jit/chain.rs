//! Linking translations: direct branches patched to jump straight to
//! their target's translation, and the lookup cache of indirect branches
//! and returns (emulator machinery, no SDM section).
//!
//! * A direct branch to the same guest page leaves through a patchable
//!   `jmp rel32` that first leads to a stub exiting with
//!   [`Exit::Chain`](super::frame::Exit::Chain). The run loop finds (or
//!   makes) the target's translation and rewrites the rel32 (through the
//!   cache's writable view: see [`super::cache`]), so the next time the
//!   branch goes straight there. Only same-page branches are patched: the
//!   page's mapping cannot change while code on it runs, so the link can
//!   never lead to code of another physical page. A link stays valid
//!   until the cache is flushed; a target whose code changed fails its
//!   own entry check ([`super::translate`]).
//! * Branches to other pages, indirect branches and returns look up their
//!   guest RIP in [`Frame::jump_cache`] (mask, compare, indirect jump).
//!   There is one cache per privilege (translations are made for one).
//!   An entry maps a linear RIP as the TLB mapped it, so a cache is
//!   checked when translations it relies on may have been flushed
//!   ([`crate::mmu::Mmu::flush_log`]): the code pages a flush concerns (all
//!   after a full flush, the non-global ones after a CR3 write, those an
//!   INVLPG names) are translated again by a page walk, and the cache stays
//!   if each still maps where it did: with page-table isolation a guest
//!   writes CR3 twice per system call, and neither the user code it
//!   returns to nor the (global) kernel code has moved. Otherwise, and
//!   after a code-cache flush, the cache is emptied, which costs only the
//!   entries filled since the last time (up to a bound).

use std::collections::HashMap;

use super::frame::{empty_jump_key, jump_set, Frame, JumpEntry, JUMP_WAYS};
use super::Mode;
use crate::mmu::FlushLog;

/// Entries remembered individually before emptying means clearing all.
const TRACKED: usize = 256;

/// Most code pages a check may walk (more: the cache is emptied).
const RECHECK_PAGES: usize = 512;

/// What the lookup caches' entries are valid for, and which are filled.
#[derive(Debug, Default)]
pub(super) struct JumpCache {
    sides: [Side; 2],
}

/// One privilege's lookup cache.
#[derive(Debug, Default)]
struct Side {
    /// The flush log's counts (full, non-global, pages), the code-cache
    /// generation and the translation mode at the last check.
    valid_for: Option<(u64, u64, u64, u32, u8)>,
    /// The linear pages of the code the entries lead to, the physical
    /// pages they mapped to, and whether the mapping is global.
    pages: HashMap<u64, (u64, bool)>,
    filled: Vec<u16>,
    overflow: bool,
}

/// What a lookup cache needs before translated code runs.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Check {
    /// Its entries are valid.
    Valid,
    /// It must be emptied.
    Clear,
    /// A flush may have changed the mappings of these code pages (linear,
    /// and the physical page each mapped to): translate them again, and
    /// keep the cache if none moved.
    Recheck(Vec<(u64, u64)>),
}

impl JumpCache {
    /// What the cache of `mode`'s privilege needs: nothing if no
    /// translation it relies on was flushed since the last check; to be
    /// emptied after a code-cache flush or a change of the translation
    /// mode; the pages whose mappings a TLB flush may have dropped checked
    /// again (all after a full flush, the non-global ones after a CR3
    /// write, the ones an INVLPG named), or emptied if they are too many.
    pub(super) fn check(&self, mode: Mode, log: &FlushLog, generation: u32) -> Check {
        let side = &self.sides[usize::from(mode.user)];
        let now = (log.full, log.non_global, log.pages, generation, mode.bits());
        let Some((full, non_global, pages, g, m)) = side.valid_for else {
            return Check::Clear;
        };
        if side.valid_for == Some(now) {
            return Check::Valid;
        }
        if g != generation || m != mode.bits() {
            return Check::Clear;
        }
        let mut recheck: Vec<(u64, u64)> = if full != log.full {
            side.pages.iter().map(|(&v, &(p, _))| (v, p)).collect()
        } else if non_global != log.non_global {
            side.pages
                .iter()
                .filter(|(_, &(_, global))| !global)
                .map(|(&v, &(p, _))| (v, p))
                .collect()
        } else {
            Vec::new()
        };
        if pages != log.pages && recheck.len() < side.pages.len() {
            match log.pages_since(pages) {
                Some(flushed) => {
                    for v in flushed {
                        if let Some(&(p, _)) = side.pages.get(&v) {
                            recheck.push((v, p));
                        }
                    }
                }
                None => return Check::Clear,
            }
        }
        if recheck.is_empty() {
            Check::Valid
        } else if recheck.len() <= RECHECK_PAGES {
            Check::Recheck(recheck)
        } else {
            Check::Clear
        }
    }

    /// Records the outcome of [`JumpCache::check`]: the cache of `mode`'s
    /// privilege is emptied unless `keep`, and is valid as of now.
    pub(super) fn settle(
        &mut self,
        frame: &mut Frame,
        mode: Mode,
        log: &FlushLog,
        generation: u32,
        keep: bool,
    ) {
        let side = &mut self.sides[usize::from(mode.user)];
        if !keep {
            side.clear(frame, mode.user);
        }
        side.valid_for = Some((log.full, log.non_global, log.pages, generation, mode.bits()));
    }

    /// Empties both caches.
    pub(super) fn clear(&mut self, frame: &mut Frame) {
        for (i, side) in self.sides.iter_mut().enumerate() {
            side.clear(frame, i == 1);
        }
    }

    /// Forgets guest `rip` (its translation went stale).
    pub(super) fn remove(&mut self, frame: &mut Frame, user: bool, rip: u64) {
        let set = jump_set(rip);
        for e in &mut frame.jump_cache[usize::from(user)][set * JUMP_WAYS..][..JUMP_WAYS] {
            if e.rip == rip {
                *e = JumpEntry {
                    rip: empty_jump_key(set),
                    host: 0,
                };
            }
        }
    }

    /// Maps guest `rip` (code on a page that maps to physical `phys`,
    /// `global` or not) to the host address `host` in `user`'s cache: it
    /// becomes the set's first way, the previous first becomes the second.
    pub(super) fn insert(
        &mut self,
        frame: &mut Frame,
        user: bool,
        rip: u64,
        (phys, global): (u64, bool),
        host: u64,
    ) {
        let side = &mut self.sides[usize::from(user)];
        let set = jump_set(rip);
        let ways = &mut frame.jump_cache[usize::from(user)][set * JUMP_WAYS..][..JUMP_WAYS];
        if ways[0].rip != rip {
            ways[1] = ways[0];
        }
        ways[0] = JumpEntry { rip, host };
        side.pages.insert(rip & !0xfff, (phys & !0xfff, global));
        if side.filled.len() < TRACKED {
            side.filled.push(set as u16);
        } else {
            side.overflow = true;
        }
    }
}

impl Side {
    fn clear(&mut self, frame: &mut Frame, user: bool) {
        if self.overflow {
            frame.clear_jump_cache(user);
        } else {
            for &set in &self.filled {
                let set = usize::from(set);
                for e in &mut frame.jump_cache[usize::from(user)][set * JUMP_WAYS..][..JUMP_WAYS] {
                    *e = JumpEntry {
                        rip: empty_jump_key(set),
                        host: 0,
                    };
                }
            }
        }
        self.filled.clear();
        self.overflow = false;
        self.pages.clear();
    }
}
