//! Integer division in translated code (SDM Vol. 2 "DIV", "IDIV").
//!
//! The host's DIV and IDIV raise #DE exactly when the guest's would (a zero
//! divisor, a quotient that does not fit), but a host #DE is a signal that
//! would kill the VMM. So the translator runs them natively only behind a
//! guard that rules #DE out, and sends everything else to the
//! interpreter, which raises the exception precisely:
//!
//! * DIV: divisor != 0 and RDX < divisor (then the quotient of RDX:RAX
//!   fits in 64 bits, and likewise for 32 bits);
//! * IDIV: divisor not 0 or -1, and RDX:RAX the sign extension of RAX (what
//!   CQO/CDQ leave): then |quotient| <= |RAX| fits.
//!
//! 8- and 16-bit divisions stay in the interpreter.

use iced_x86::{Instruction, Mnemonic, OpKind};

use super::emit::{Alu, Cond, Reg, Shift};
use super::memory::Access;
use super::regs::{guest_gpr, home, host, T0, T1};
use super::translate::Translator;
use crate::code::Decoded;

/// A division the translator runs natively.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Divide {
    /// IDIV rather than DIV.
    pub signed: bool,
    /// The operand size: 4 or 8.
    pub size: u8,
    /// The divisor's guest register, or `None` for a memory operand.
    pub reg: Option<usize>,
}

/// `insn` as a division the translator runs natively, if it is one.
pub fn divide(insn: &Instruction) -> Option<Divide> {
    let signed = match insn.mnemonic() {
        Mnemonic::Div => false,
        Mnemonic::Idiv => true,
        _ => return None,
    };
    if insn.has_lock_prefix() || insn.op_count() != 1 {
        return None;
    }
    let (size, reg) = match insn.op0_kind() {
        OpKind::Register => {
            let r = insn.op0_register();
            (r.size() as u8, Some(guest_gpr(r)?.0))
        }
        OpKind::Memory => (insn.memory_size().size() as u8, None),
        _ => return None,
    };
    matches!(size, 4 | 8).then_some(Divide { signed, size, reg })
}

impl Translator<'_> {
    /// DIV/IDIV behind its guard; the interpreter runs the rest.
    pub(super) fn divide(&mut self, d: &Decoded, div: Divide, live: u32) -> Option<()> {
        let size = div.size;
        let (slow, resume) = self.slow(d);
        match div.reg {
            Some(g) => {
                if !self.flags.save(&mut self.a) {
                    return None;
                }
                match host(g) {
                    Some(h) => self.a.mov_rr(8, T0, h),
                    None => self.a.load(8, T0, home(g)),
                }
            }
            None => {
                self.emit_access(&d.insn, Access::Read, size, 0, slow)?;
                self.a.load(size, T0, super::emit::at(T1, 0));
            }
        }
        self.flags.clobbered();
        self.a.test_rr(size, T0, T0);
        self.a.jcc(Cond::E, slow);
        if div.signed {
            self.a.alu_ri(Alu::Cmp, size, T0, -1);
            self.a.jcc(Cond::E, slow);
            self.a.mov_rr(size, T1, Reg::RAX);
            self.a
                .shift_ri(Shift::Sar, size, T1, if size == 8 { 63 } else { 31 });
            self.a.alu_rr(Alu::Cmp, size, T1, Reg::RDX);
            self.a.jcc(Cond::Ne, slow);
            self.a.idiv_r(size, T0);
        } else {
            self.a.alu_rr(Alu::Cmp, size, Reg::RDX, T0);
            self.a.jcc(Cond::Ae, slow);
            self.a.div_r(size, T0);
        }
        // Every arithmetic flag is undefined after a division.
        self.flags.written();
        self.resume(resume, live);
        Some(())
    }
}
