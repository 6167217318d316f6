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
//!   checked when translations it may rely on are flushed
//!   ([`crate::mmu::Mmu::flush_log`]): by a full flush, by an INVLPG of a
//!   page its code is on, by a CR3 write only if it holds code of a page
//!   that is not global (kernel code usually is: system calls and context
//!   switches then keep the supervisor cache). Checking walks the page
//!   tables for each code page of the cache (if there are few) and keeps
//!   the cache if each still maps where it did: with page-table isolation
//!   a guest writes CR3 twice per system call, and the user code it
//!   returns to has not moved. Otherwise, and after a code-cache flush,
//!   the cache is emptied, which costs only the entries filled since the
//!   last time (up to a bound).

use std::collections::HashMap;

use super::frame::{empty_jump_key, jump_index, Frame, JumpEntry};
use super::Mode;
use crate::mmu::FlushLog;

/// Entries remembered individually before emptying means clearing all.
const TRACKED: usize = 256;

/// Most code pages a cache may hold and still be checked page by page
/// after a flush (rather than emptied).
const RECHECK_PAGES: usize = 64;

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
    /// Some entry maps code on a page that is not global: a CR3 write
    /// (which keeps only global translations) may have changed it.
    non_global: bool,
    /// The linear pages of the code the entries lead to, and the physical
    /// pages they mapped to.
    pages: HashMap<u64, u64>,
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
    /// A flush may have changed the mappings of its code pages: they must
    /// be translated again ([`JumpCache::pages`]) and compared.
    Recheck,
}

impl JumpCache {
    /// What the cache of `mode`'s privilege needs: nothing if no
    /// translation it relies on was flushed since the last check; to be
    /// emptied after a code-cache flush or a change of the translation
    /// mode; its pages checked again after a TLB flush that may have
    /// dropped their mappings (a full flush, an INVLPG of one of them, a
    /// CR3 write if any is not global), or emptied if they are too many.
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
        let flushed = full != log.full
            || (non_global != log.non_global && side.non_global)
            || (pages != log.pages
                && log
                    .pages_since(pages)
                    .is_none_or(|mut p| p.any(|page| side.pages.contains_key(&page))));
        if !flushed || side.pages.is_empty() {
            Check::Valid
        } else if side.pages.len() <= RECHECK_PAGES {
            Check::Recheck
        } else {
            Check::Clear
        }
    }

    /// The (linear, physical) code pages of `user`'s cache.
    pub(super) fn pages(&self, user: bool) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.sides[usize::from(user)]
            .pages
            .iter()
            .map(|(&v, &p)| (v, p))
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
        let i = jump_index(rip);
        let e = &mut frame.jump_cache[usize::from(user)][i];
        if e.rip == rip {
            *e = JumpEntry {
                rip: empty_jump_key(i),
                host: 0,
            };
        }
    }

    /// Maps guest `rip` (code on a page that maps to physical `phys`,
    /// `global` or not) to the host address `host` in `user`'s cache.
    pub(super) fn insert(
        &mut self,
        frame: &mut Frame,
        user: bool,
        rip: u64,
        (phys, global): (u64, bool),
        host: u64,
    ) {
        let side = &mut self.sides[usize::from(user)];
        let i = jump_index(rip);
        frame.jump_cache[usize::from(user)][i] = JumpEntry { rip, host };
        side.non_global |= !global;
        side.pages.insert(rip & !0xfff, phys & !0xfff);
        if side.filled.len() < TRACKED {
            side.filled.push(i as u16);
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
            for &i in &self.filled {
                let i = usize::from(i);
                frame.jump_cache[usize::from(user)][i] = JumpEntry {
                    rip: empty_jump_key(i),
                    host: 0,
                };
            }
        }
        self.filled.clear();
        self.overflow = false;
        self.non_global = false;
        self.pages.clear();
    }
}
