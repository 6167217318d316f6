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
//!   guest RIP in [`Frame::jump_cache`] (mask, compare, indirect jump). An
//!   entry maps a linear RIP for the current privilege and paging state,
//!   so the cache is emptied when the TLB is flushed
//!   ([`crate::mmu::Mmu::map_epoch`]), when the privilege changes and when
//!   the code cache is flushed. Emptying costs only the entries filled
//!   since the last time (up to a bound), as it happens at every CR3
//!   write.

use super::frame::{empty_jump_key, Frame, JumpEntry, JUMP_CACHE_ENTRIES};

/// Entries remembered individually before emptying means clearing all.
const TRACKED: usize = 256;

/// What the lookup cache's entries are valid for, and which are filled.
#[derive(Debug, Default)]
pub(super) struct JumpCache {
    /// (map epoch, user, code-cache generation) of the entries.
    valid_for: Option<(u64, bool, u32)>,
    filled: Vec<u16>,
    overflow: bool,
}

impl JumpCache {
    /// Empties `frame`'s cache unless its entries are valid for `now`.
    pub(super) fn validate(&mut self, frame: &mut Frame, now: (u64, bool, u32)) {
        if self.valid_for != Some(now) {
            self.clear(frame);
            self.valid_for = Some(now);
        }
    }

    /// Empties `frame`'s cache.
    pub(super) fn clear(&mut self, frame: &mut Frame) {
        if self.overflow {
            frame.clear_jump_cache();
        } else {
            for &i in &self.filled {
                let i = usize::from(i);
                frame.jump_cache[i] = JumpEntry {
                    rip: empty_jump_key(i),
                    host: 0,
                };
            }
        }
        self.filled.clear();
        self.overflow = false;
    }

    /// Maps guest `rip` to the host address `host`.
    pub(super) fn insert(&mut self, frame: &mut Frame, rip: u64, host: u64) {
        let i = (rip as usize) & (JUMP_CACHE_ENTRIES - 1);
        frame.jump_cache[i] = JumpEntry { rip, host };
        if self.filled.len() < TRACKED {
            self.filled.push(i as u16);
        } else {
            self.overflow = true;
        }
    }
}
