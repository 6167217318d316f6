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
//!   emptied when translations it may rely on are flushed
//!   ([`crate::mmu::Mmu::flush_log`]): by a full flush, by an INVLPG of a
//!   page its code is on, by a CR3 write only if it holds code of a page
//!   that is not global (kernel code usually is: system calls and context
//!   switches then keep the supervisor cache), and by a code-cache flush.
//!   Emptying costs only the entries filled since the last time (up to a
//!   bound).

use std::collections::HashSet;

use super::frame::{empty_jump_key, jump_index, Frame, JumpEntry};
use super::Mode;
use crate::mmu::FlushLog;

/// Entries remembered individually before emptying means clearing all.
const TRACKED: usize = 256;

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
    /// (which keeps only global translations) must empty the cache.
    non_global: bool,
    /// The linear pages of the code the entries lead to (an INVLPG of
    /// another page keeps them).
    pages: HashSet<u64>,
    filled: Vec<u16>,
    overflow: bool,
}

impl JumpCache {
    /// Empties the cache of `mode`'s privilege in `frame` unless its
    /// entries are still valid: no code-cache flush, no change of the
    /// translation mode, no full TLB flush, no INVLPG of a page its code is
    /// on, and no CR3 write if it holds non-global code.
    pub(super) fn validate(
        &mut self,
        frame: &mut Frame,
        mode: Mode,
        log: &FlushLog,
        generation: u32,
    ) {
        let user = mode.user;
        let side = &mut self.sides[usize::from(user)];
        let now = (log.full, log.non_global, log.pages, generation, mode.bits());
        if side.valid_for == Some(now) {
            return;
        }
        let stale = match side.valid_for {
            None => true,
            Some((full, non_global, pages, g, m)) => {
                g != generation
                    || m != mode.bits()
                    || full != log.full
                    || (non_global != log.non_global && side.non_global)
                    || (pages != log.pages
                        && log
                            .pages_since(pages)
                            .is_none_or(|mut p| p.any(|page| side.pages.contains(&page))))
            }
        };
        if stale {
            side.clear(frame, user);
        }
        side.valid_for = Some(now);
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

    /// Maps guest `rip` (code on a `global` page or not) to the host
    /// address `host` in `user`'s cache.
    pub(super) fn insert(
        &mut self,
        frame: &mut Frame,
        user: bool,
        rip: u64,
        global: bool,
        host: u64,
    ) {
        let side = &mut self.sides[usize::from(user)];
        let i = jump_index(rip);
        frame.jump_cache[usize::from(user)][i] = JumpEntry { rip, host };
        side.non_global |= !global;
        side.pages.insert(rip & !0xfff);
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
