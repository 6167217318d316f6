//! Guest arithmetic flags in translated code: where they are at each
//! point of a block, and the liveness pass that decides where they must be
//! restored (SDM Vol. 1 §3.4.3 for the flags, Appendix A for who reads and
//! writes which).
//!
//! Guest instructions that compute flags run natively, so the guest's
//! CF/PF/AF/ZF/SF/OF are in the host RFLAGS right after them: no
//! lazy-flags record. Glue clobbers RFLAGS (a TLB probe compares, a block
//! entry checks its budget, a helper call runs Rust), so the translator
//! tracks two facts at each point ([`FlagState`]):
//!
//! * `host_valid`: the host RFLAGS hold the guest flags;
//! * `clean`: the frame's image ([`super::frame::Frame::flags`]) holds them.
//!
//! At block boundaries the image is the home (`clean`, not `host_valid`):
//! block entries, exits and the interpreter then agree without looking at
//! each other. Before glue that clobbers RFLAGS the flags are saved if
//! they are only in the host (`LAHF; SETO`, through RAX's high byte, with
//! RAX kept in [`T0`]); after it they are restored only when an
//! instruction needs them (`ADD AL, 7Fh; SAHF` rebuilds OF, then the
//! rest). Every memory access is glue: if it misses the TLB the
//! interpreter runs the instruction with the flags as of its start, and a
//! fault must report exactly those (precise exceptions), so the image is
//! always current at a probe.
//!
//! The liveness pass ([`live_after`]) says, after each instruction,
//! whether the flags it leaves can still be observed before something
//! overwrites all six: by an instruction reading them (or writing only
//! some), by glue that saves them, or by a block exit. A slow path that
//! ran the interpreter restores the host flags only where they are live.

use iced_x86::{Instruction, Mnemonic, RflagsBits};

use super::emit::{at, Alu, Asm, Cond, Reg};
use super::frame::off;
use super::regs::{CTX, T0};

/// Where the guest flags are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlagState {
    /// The host RFLAGS hold them.
    pub host_valid: bool,
    /// The frame's image holds them.
    pub clean: bool,
}

/// The arithmetic flags in iced's bit layout.
pub const ARITH: u32 = RflagsBits::OF
    | RflagsBits::SF
    | RflagsBits::ZF
    | RflagsBits::AF
    | RflagsBits::CF
    | RflagsBits::PF;

impl FlagState {
    /// At a block entry: in the image only.
    pub fn at_entry() -> Self {
        FlagState {
            host_valid: false,
            clean: true,
        }
    }

    /// Makes the image current (before glue that clobbers RFLAGS).
    /// Returns `false` if the flags were lost (a translator bug: the
    /// caller abandons the translation).
    #[must_use]
    pub fn save(&mut self, a: &mut Asm) -> bool {
        if self.clean {
            return true;
        }
        if !self.host_valid {
            return false;
        }
        emit_save(a);
        self.clean = true;
        true
    }

    /// Makes the host RFLAGS current (before an instruction that reads
    /// them). Returns `false` if the flags were lost.
    #[must_use]
    pub fn restore(&mut self, a: &mut Asm) -> bool {
        if self.host_valid {
            return true;
        }
        if !self.clean {
            return false;
        }
        emit_restore(a);
        self.host_valid = true;
        true
    }

    /// Glue ran that clobbered RFLAGS (the image must have been saved).
    pub fn clobbered(&mut self) {
        self.host_valid = false;
    }

    /// A native instruction wrote the flags.
    pub fn written(&mut self) {
        self.host_valid = true;
        self.clean = false;
    }

    /// The state where two paths join: only what both have.
    pub fn meet(self, other: FlagState) -> FlagState {
        FlagState {
            host_valid: self.host_valid && other.host_valid,
            clean: self.clean && other.clean,
        }
    }
}

/// `image = LAHF:SETO` (RAX preserved in [`T0`]).
pub fn emit_save(a: &mut Asm) {
    a.mov_rr(8, T0, Reg::RAX);
    a.lahf();
    a.setcc(Cond::O, Reg::RAX);
    a.store(2, at(CTX, off::FLAGS as i32), Reg::RAX);
    a.mov_rr(8, Reg::RAX, T0);
}

/// Host flags from the image: `ADD AL, 7Fh` sets OF exactly when AL = 1,
/// then `SAHF` sets the other five (RAX preserved in [`T0`]).
pub fn emit_restore(a: &mut Asm) {
    a.mov_rr(8, T0, Reg::RAX);
    a.load(2, Reg::RAX, at(CTX, off::FLAGS as i32));
    a.alu_ri(Alu::Add, 1, Reg::RAX, 0x7f);
    a.sahf();
    a.mov_rr(8, Reg::RAX, T0);
}

/// How one instruction, as translated, uses the flags (iced-x86's
/// `RflagsBits` of the six arithmetic flags).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlagUse {
    /// Flags it reads from the host RFLAGS. A shift or rotate whose count
    /// may be 0 (which changes no flag) counts as reading all of them.
    pub reads: u32,
    /// Flags it writes natively.
    pub writes: u32,
    /// Glue before it needs the image current (a probe, a helper call, an
    /// exit): an observation of every flag.
    pub glue: bool,
}

impl FlagUse {
    /// The flag use of `insn` run natively (`glue`: it also has a probe).
    pub fn native(insn: &Instruction, glue: bool) -> FlagUse {
        let count_may_be_zero = is_shift(insn.mnemonic()) && !has_nonzero_count(insn);
        FlagUse {
            reads: if count_may_be_zero {
                ARITH
            } else {
                insn.rflags_read() & ARITH
            },
            writes: insn.rflags_modified() & ARITH,
            glue,
        }
    }

    /// Glue that reads the image and leaves a new one (a helper call, a
    /// block exit).
    pub fn glue() -> FlagUse {
        FlagUse {
            glue: true,
            ..FlagUse::default()
        }
    }

    /// Whether the host RFLAGS must hold the guest flags before it runs,
    /// with `live_after` the flags still needed after it: it reads some,
    /// or writes some but not all of those needed (the host keeps the
    /// others, so they must be right).
    pub fn needs_host(&self, live_after: u32) -> bool {
        self.reads != 0 || (self.writes != 0 && live_after & !self.writes != 0)
    }
}

fn is_shift(m: Mnemonic) -> bool {
    use Mnemonic as M;
    matches!(
        m,
        M::Shl | M::Sal | M::Shr | M::Sar | M::Rol | M::Ror | M::Rcl | M::Rcr | M::Shld | M::Shrd
    )
}

/// A shift or rotate by an immediate whose masked count is not 0 (SDM
/// Vol. 2 "SAL/SAR/SHL/SHR": the count is masked to 5 bits, 6 with REX.W).
fn has_nonzero_count(insn: &Instruction) -> bool {
    use iced_x86::OpKind;
    let last = insn.op_count().saturating_sub(1);
    if insn.op_count() < 2 || insn.op_kind(last) != OpKind::Immediate8 {
        return false;
    }
    let size = if insn.op0_kind() == OpKind::Register {
        insn.op0_register().size()
    } else {
        insn.memory_size().size()
    };
    let mask = if size == 8 { 63 } else { 31 };
    insn.immediate8() & mask != 0
}

/// Liveness, per flag: for each instruction, the flags it leaves that
/// may still be observed (read, saved by glue, or leave the block) before
/// they are overwritten. The block's end observes all of them.
pub fn live_after(uses: &[FlagUse]) -> Vec<u32> {
    let mut live = vec![ARITH; uses.len()];
    let mut next = ARITH;
    for (i, u) in uses.iter().enumerate().rev() {
        live[i] = next;
        next = u.reads | if u.glue { ARITH } else { 0 } | (next & !u.writes);
    }
    live
}

#[cfg(test)]
mod tests {
    use iced_x86::{Decoder, DecoderOptions};

    use super::*;

    fn decode(bytes: &[u8]) -> Instruction {
        Decoder::with_ip(64, bytes, 0, DecoderOptions::NONE).decode()
    }

    #[test]
    fn partial_writers_need_the_host_flags_only_if_what_they_keep_is_live() {
        let add = FlagUse::native(&decode(&[0x48, 0x01, 0xd8]), false); // add rax, rbx
        assert!(!add.needs_host(ARITH) && add.writes == ARITH);
        let inc = FlagUse::native(&decode(&[0x48, 0xff, 0xc0]), false); // inc rax
        assert!(inc.needs_host(ARITH), "CF is kept");
        assert!(!inc.needs_host(ARITH & !RflagsBits::CF), "CF is dead");
        let adc = FlagUse::native(&decode(&[0x48, 0x11, 0xd8]), false); // adc rax, rbx
        assert!(adc.needs_host(0));
        let shl_cl = FlagUse::native(&decode(&[0x48, 0xd3, 0xe0]), false); // shl rax, cl
        assert!(shl_cl.needs_host(0));
        let shl_3 = FlagUse::native(&decode(&[0x48, 0xc1, 0xe0, 0x03]), false); // shl rax, 3
        assert!(!shl_3.needs_host(ARITH));
        let mov = FlagUse::native(&decode(&[0x48, 0x89, 0xd8]), false); // mov rax, rbx
        assert!(!mov.needs_host(ARITH) && mov.writes == 0);
    }

    #[test]
    fn flags_overwritten_before_any_observation_are_dead() {
        let write = FlagUse {
            writes: ARITH,
            ..FlagUse::default()
        };
        let inc = FlagUse {
            writes: ARITH & !RflagsBits::CF,
            ..FlagUse::default()
        };
        let read_zf = FlagUse {
            reads: RflagsBits::ZF,
            ..FlagUse::default()
        };
        let mov = FlagUse::default();
        // add; inc; mov; cmp; jz: only ZF of the cmp is needed by the jz,
        // and the end of the block needs them all.
        let live = live_after(&[write, inc, mov, write, read_zf]);
        assert_eq!(live, [0, 0, 0, ARITH, ARITH]);
        // add; inc; jc: the add's CF survives the inc.
        let read_cf = FlagUse {
            reads: RflagsBits::CF,
            ..FlagUse::default()
        };
        assert_eq!(live_after(&[write, inc, read_cf])[0], RflagsBits::CF);
        assert_eq!(
            live_after(&[write, FlagUse::glue(), write]),
            [ARITH, 0, ARITH]
        );
    }
}
