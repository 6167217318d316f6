//! The frame: the per-vCPU memory translated code reaches through its one
//! base register (`CTX` (`regs.rs`)), and how guest state moves
//! between it and [`crate::state::CpuState`] at tier transitions.
//!
//! The frame shares one allocation with the software TLB
//! ([`crate::mmu::TlbTable`]), right before the TLB's entries, so a
//! translated memory access reaches both the TLB and the frame from the
//! same base register with constant displacements.
//!
//! While translated code runs, the guest's GPRs live in host registers
//! (`regs.rs`) except the four without one, whose home is
//! [`Frame::gpr`]; the arithmetic flags live in host RFLAGS or, at block
//! boundaries and around glue that clobbers them, in [`Frame::flags`] as
//! the `LAHF`/`SETO` image: AH = SF:ZF:0:AF:0:PF:1:CF (SDM Vol. 2 "LAHF")
//! in bits 15:8 and OF in bit 0. Everything else architectural stays in
//! `CpuState` (translated code never changes it; instructions that do run
//! in the interpreter).

use std::mem::offset_of;

use crate::flags::{AF, ARITH, CF, OF, PF, SF, ZF};

/// Entries of the indirect-branch lookup cache (a power of two).
pub const JUMP_CACHE_ENTRIES: usize = 8192;

/// One entry of the indirect-branch lookup cache: a guest RIP and the
/// host address of its translation.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct JumpEntry {
    /// The guest RIP (an empty entry holds [`empty_jump_key`]).
    pub rip: u64,
    /// The translation's checked entry point.
    pub host: u64,
}

/// The lookup cache is 2-way set-associative: a set is two consecutive
/// entries (the most recently filled first), so two hot targets whose
/// hashes collide do not evict each other.
pub const JUMP_WAYS: usize = 2;
/// Sets of the lookup cache.
pub const JUMP_SETS: usize = JUMP_CACHE_ENTRIES / JUMP_WAYS;
/// log2 of [`JUMP_SETS`].
pub const JUMP_BITS: u32 = JUMP_SETS.trailing_zeros();
/// The multiplier of [`jump_set`]'s hash (Fibonacci hashing: 2^32 divided
/// by the golden ratio).
pub const JUMP_HASH: u32 = 0x9e37_79b9;

/// The set of guest `rip` in the lookup cache: the top bits of the low 32
/// bits of `rip` times [`JUMP_HASH`], which depend on all of them (branch
/// targets are often 16-byte aligned, a function's entry and the return
/// address of its first CALL share a granule, and hot code spans more than
/// the index's bits). Translated code computes the set's offset (times 32,
/// the set size): `imul t0d, t1d, JUMP_HASH; shr t0d, 27 - JUMP_BITS;
/// and t0d, (JUMP_SETS - 1) << 5`.
pub fn jump_set(rip: u64) -> usize {
    ((rip as u32).wrapping_mul(JUMP_HASH) >> (32 - JUMP_BITS)) as usize
}

/// The key of an empty jump-cache entry in set `set`: a non-canonical
/// value of another set, so no lookup can ever match it.
pub fn empty_jump_key(set: usize) -> u64 {
    let k = (0u64..).find(|&j| jump_set(j) != set).unwrap_or(0);
    (1 << 63) | k
}

/// Why translated code returned to the run loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Exit {
    /// An interrupt, NMI or other event may be pending (the
    /// [`crate::interrupts::InterruptLines`] attention flag).
    Attention = 1,
    /// The instruction budget of this entry ran out.
    Budget = 2,
    /// A block's code changed since it was translated.
    Stale = 3,
    /// A direct branch whose target is not linked yet
    /// ([`Frame::exit_patch`] is the jump to patch).
    Chain = 4,
    /// An indirect branch (or a direct one to another page) missed the
    /// lookup cache.
    Indirect = 5,
    /// An instruction run by the interpreter ended the translated run (a
    /// branch, a mode change, a store into code, a fault: see
    /// `helpers.rs`).
    Helper = 6,
}

/// The frame. `#[repr(C)]`: translated code uses the field offsets below.
#[repr(C)]
pub struct Frame {
    /// Guest GPR homes (RAX..R15).
    pub gpr: [u64; 16],
    /// The arithmetic flags as a `LAHF`/`SETO` image.
    pub flags: u64,
    /// Instructions the run may still retire; each block subtracts its
    /// length on entry and exits when the result is negative.
    pub budget: i64,
    /// The byte polled at every block entry: the vCPU's attention flag, or
    /// [`Frame::quiet`] while nothing could be delivered (RFLAGS.IF = 0).
    pub attention: *const u8,
    /// Always zero (see [`Frame::attention`]).
    pub quiet: u64,
    /// FS.base and GS.base.
    pub seg_base: [u64; 2],
    /// The guest RIP to continue at after an exit.
    pub exit_rip: u64,
    /// The [`Exit`] reason.
    pub exit_reason: u64,
    /// For [`Exit::Chain`]: the cache offset of the rel32 to patch.
    pub exit_patch: u64,
    /// The host stack pointer to return with (set by the trampoline).
    pub host_rsp: u64,
    /// The CPU, for the helpers.
    pub cpu: *mut crate::Cpu,
    /// The guest's XMM0-XMM15 while translated code runs (native SSE
    /// instructions load and store them here).
    pub xmm: [u128; 16],
    /// Bits 255:128 of the guest's YMM0-YMM15 while translated code runs
    /// (native VEX instructions load and store them here).
    pub ymm_hi: [u128; 16],
    /// A slot for translated code (an indirect call's target while the
    /// return address is pushed).
    pub scratch: u64,
    /// 1 while explicit supervisor accesses may use the TLB's
    /// [`crate::mmu::AC_SETS`] (CR4.SMAP, RFLAGS.AC and CPL < 3), else 0:
    /// what a supervisor translation's probe tests before its second look
    /// (`memory.rs`). Set when translated code is entered and after every
    /// instruction the interpreter runs for it (only those change AC, CR4
    /// or CPL).
    pub smap_ac: u64,
    /// The indirect-branch lookup caches, one per privilege (index 0 for
    /// supervisor code, 1 for user code), [`JUMP_WAYS`]-way.
    pub jump_cache: [[JumpEntry; JUMP_CACHE_ENTRIES]; 2],
    /// `counts[n] = (n, 0)`: the operands of the budget's `PSUBQ`/`PADDQ`
    /// (see [`BUDGET_XMM`]).
    pub counts: [Count; MAX_COUNT + 1],
}

/// The XMM register that holds [`Frame::budget`] while translated code
/// runs (in its low qword; the high one stays 0). A register, not the
/// frame: every block updates it, and a memory counter would chain every
/// block to the previous one's store. Translated code never runs guest
/// floating-point SSE instructions (they go to the interpreter; the
/// native ones use XMM0-XMM2), and the glue saves it
/// around calls into Rust (every XMM register is caller-saved).
pub const BUDGET_XMM: u8 = 15;

/// The largest count a block adds or subtracts (a block retires at most
/// twice `crate::code::MAX_BLOCK_INSNS` instructions: fused pairs).
pub const MAX_COUNT: usize = 2 * crate::code::MAX_BLOCK_INSNS;

/// One 16-byte operand of the budget arithmetic.
#[repr(C, align(16))]
#[derive(Clone, Copy, Debug, Default)]
pub struct Count(pub [u64; 2]);

/// Offsets of the frame's fields, for the emitter.
#[allow(missing_docs)]
pub mod off {
    use super::*;
    pub const GPR: usize = offset_of!(Frame, gpr);
    pub const FLAGS: usize = offset_of!(Frame, flags);
    pub const BUDGET: usize = offset_of!(Frame, budget);
    pub const ATTENTION: usize = offset_of!(Frame, attention);
    pub const SEG_BASE: usize = offset_of!(Frame, seg_base);
    pub const EXIT_RIP: usize = offset_of!(Frame, exit_rip);
    pub const EXIT_REASON: usize = offset_of!(Frame, exit_reason);
    pub const EXIT_PATCH: usize = offset_of!(Frame, exit_patch);
    pub const HOST_RSP: usize = offset_of!(Frame, host_rsp);
    pub const SCRATCH: usize = offset_of!(Frame, scratch);
    pub const SMAP_AC: usize = offset_of!(Frame, smap_ac);
    pub const XMM: usize = offset_of!(Frame, xmm);
    pub const YMM_HI: usize = offset_of!(Frame, ymm_hi);
    pub const JUMP_CACHE: usize = offset_of!(Frame, jump_cache);
    pub const COUNTS: usize = offset_of!(Frame, counts);
}

impl Frame {
    /// Empties the lookup cache for privilege `user`.
    pub fn clear_jump_cache(&mut self, user: bool) {
        for (i, e) in self.jump_cache[usize::from(user)].iter_mut().enumerate() {
            *e = JumpEntry {
                rip: empty_jump_key(i / JUMP_WAYS),
                host: 0,
            };
        }
    }

    /// Initializes a zeroed frame.
    pub fn init(&mut self) {
        self.clear_jump_cache(false);
        self.clear_jump_cache(true);
        for (n, c) in self.counts.iter_mut().enumerate() {
            *c = Count([n as u64, 0]);
        }
        self.attention = std::ptr::addr_of!(self.quiet).cast();
    }
}

/// The `LAHF`/`SETO` image of RFLAGS' arithmetic bits.
pub fn flags_to_image(rflags: u64) -> u64 {
    let ah = rflags & (SF | ZF | AF | PF | CF) | 2;
    (ah << 8) | u64::from(rflags & OF != 0)
}

/// RFLAGS' arithmetic bits from a `LAHF`/`SETO` image.
pub fn image_to_flags(image: u64) -> u64 {
    ((image >> 8) & (SF | ZF | AF | PF | CF)) | if image & 1 != 0 { OF } else { 0 }
}

const _: () = assert!(ARITH == SF | ZF | AF | PF | CF | OF);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_images_round_trip_every_arithmetic_flag() {
        for bits in 0..64u64 {
            let mut f = 0;
            for (i, flag) in [CF, PF, AF, ZF, SF, OF].into_iter().enumerate() {
                if bits >> i & 1 != 0 {
                    f |= flag;
                }
            }
            assert_eq!(image_to_flags(flags_to_image(f)), f);
        }
    }

    #[test]
    fn no_lookup_key_matches_an_empty_jump_cache_entry() {
        for i in 0..JUMP_CACHE_ENTRIES {
            let key = empty_jump_key(i / JUMP_WAYS);
            assert_ne!(jump_set(key), i / JUMP_WAYS);
        }
    }
}
