//! Which parts of the final state are architecturally defined.
//!
//! Many instructions leave some arithmetic flags undefined (MUL leaves SF,
//! ZF, AF and PF; DIV all six; a shift by more than one leaves OF), and a
//! few leave a register undefined (BSF/BSR with a zero source). A flag is
//! compared only if the last instruction that wrote it defined it; a
//! register is compared unless an undefined value was last written to it.
//! If a later instruction *reads* an undefined flag or register, the rest
//! of the run depends on it and the case is indeterminate: it is discarded
//! (counted, never reported as a mismatch).
//!
//! Static facts come from iced-x86's instruction info
//! ([`Instruction::rflags_modified`], [`Instruction::rflags_undefined`],
//! used registers); count-dependent ones (shifts, rotates, REP with a
//! zero count) are refined with the register values before the
//! instruction runs.

use iced_x86::{
    Instruction, InstructionInfoFactory, Mnemonic, OpAccess, OpKind, Register, RflagsBits,
};

use crate::gen::regs;

/// RFLAGS bits (Intel SDM Vol. 1 §3.4.3): the emu engine's definitions.
pub use alcazar_emu::flags as fl;

/// Converts iced-x86 [`RflagsBits`] to RFLAGS bit positions.
pub fn from_iced(bits: u32) -> u64 {
    const MAP: [(u32, u64); 9] = [
        (RflagsBits::OF, fl::OF),
        (RflagsBits::SF, fl::SF),
        (RflagsBits::ZF, fl::ZF),
        (RflagsBits::AF, fl::AF),
        (RflagsBits::CF, fl::CF),
        (RflagsBits::PF, fl::PF),
        (RflagsBits::DF, fl::DF),
        (RflagsBits::IF, fl::IF),
        (RflagsBits::AC, fl::AC),
    ];
    MAP.iter()
        .filter(|(i, _)| bits & i != 0)
        .fold(0, |acc, (_, x)| acc | x)
}

/// What one instruction does to the flags.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Effect {
    /// Flags it reads.
    pub read: u64,
    /// Flags it (definitely) writes, defined or not.
    pub modified: u64,
    /// Flags it leaves undefined (or, with an unknown count, may).
    pub undefined: u64,
    /// Why its result is undefined, if it is (the case is discarded).
    pub indeterminate: Option<&'static str>,
}

impl Effect {
    /// The undefined-flags mask after this instruction, from the one before.
    pub fn apply(&self, undefined_before: u64) -> u64 {
        (undefined_before & !self.modified) | self.undefined
    }
}

/// The width in bits of operand 0 (register or memory).
pub fn width(insn: &Instruction) -> u32 {
    match insn.op0_kind() {
        OpKind::Register => insn.op0_register().size() as u32 * 8,
        _ => insn.memory_size().size() as u32 * 8,
    }
}

/// Reads a register from encoding-order GPR values, with its size.
pub fn reg_value(gpr: &[u64; 16], r: Register) -> Option<u64> {
    let i = regs::index_of(r)?;
    let v = gpr[i];
    Some(if regs::HIGH8.contains(&r) {
        (v >> 8) & 0xff
    } else {
        match r.size() {
            1 => v & 0xff,
            2 => v & 0xffff,
            4 => v & 0xffff_ffff,
            _ => v,
        }
    })
}

/// The raw shift count of a shift, rotate or double shift: its immediate
/// or CL (`None` for CL when the registers are unknown).
fn raw_count(insn: &Instruction, gpr: Option<&[u64; 16]>) -> Option<u64> {
    let n = insn.op_count() - 1;
    match insn.op_kind(n) {
        OpKind::Register => gpr.map(|g| g[regs::RCX] & 0xff),
        OpKind::Immediate8 => Some(u64::from(insn.immediate8())),
        _ => Some(insn.immediate(n)),
    }
}

/// Count-dependent flag effects of shifts and rotates (SDM Vol. 2 SAL/SAR/
/// SHL/SHR, RCL/RCR/ROL/ROR, SHLD, SHRD): a masked count of 0 changes
/// nothing; AF is undefined for any other count; OF is defined only for a
/// count of 1; CF is undefined for SHL/SHR/SAR counts >= the width; a
/// 16-bit double shift by more than 16 has an undefined result.
fn shift_effect(m: Mnemonic, width: u32, raw: u64) -> Effect {
    let count = raw & if width == 64 { 0x3f } else { 0x1f };
    if count == 0 {
        return Effect::default();
    }
    let of = if count == 1 { 0 } else { fl::OF };
    match m {
        Mnemonic::Rol | Mnemonic::Ror => Effect {
            read: 0,
            modified: fl::CF | fl::OF,
            undefined: of,
            indeterminate: None,
        },
        Mnemonic::Rcl | Mnemonic::Rcr => Effect {
            read: fl::CF,
            modified: fl::CF | fl::OF,
            undefined: of,
            indeterminate: None,
        },
        Mnemonic::Shld | Mnemonic::Shrd => Effect {
            read: 0,
            modified: fl::ARITH,
            undefined: fl::AF | of,
            indeterminate: (u64::from(width) < count).then_some("16-bit SHLD/SHRD by more than 16"),
        },
        _ => {
            let cf = if count >= u64::from(width) { fl::CF } else { 0 };
            Effect {
                read: 0,
                modified: fl::ARITH,
                undefined: fl::AF | of | cf,
                indeterminate: None,
            }
        }
    }
}

/// Whether `insn` is a string instruction with a REP/REPE/REPNE prefix.
fn is_rep_string(insn: &Instruction) -> bool {
    (insn.has_rep_prefix() || insn.has_repne_prefix()) && insn.is_string_instruction()
}

/// The flag effect of `insn`, given the GPRs before it runs (`None`: not
/// known; count-dependent effects are then the union of the
/// possibilities).
pub fn effect(insn: &Instruction, gpr: Option<&[u64; 16]>) -> Effect {
    let m = insn.mnemonic();
    let shift = matches!(
        m,
        Mnemonic::Shl
            | Mnemonic::Sal
            | Mnemonic::Shr
            | Mnemonic::Sar
            | Mnemonic::Rol
            | Mnemonic::Ror
            | Mnemonic::Rcl
            | Mnemonic::Rcr
            | Mnemonic::Shld
            | Mnemonic::Shrd
    );
    if shift {
        return match raw_count(insn, gpr) {
            Some(raw) => shift_effect(m, width(insn), raw),
            None => Effect {
                read: from_iced(insn.rflags_read()),
                modified: 0,
                undefined: from_iced(insn.rflags_modified()),
                indeterminate: None,
            },
        };
    }
    let base = Effect {
        read: from_iced(insn.rflags_read()),
        modified: from_iced(insn.rflags_modified()),
        undefined: from_iced(insn.rflags_undefined()),
        indeterminate: None,
    };
    if is_rep_string(insn) {
        let count_reg = if string_addr32(insn) {
            Register::ECX
        } else {
            Register::RCX
        };
        return match gpr.and_then(|g| reg_value(g, count_reg)) {
            Some(0) => Effect {
                read: fl::DF,
                ..Effect::default()
            },
            Some(_) => base,
            // Zero iterations change nothing; more define everything.
            None => Effect {
                modified: 0,
                undefined: 0,
                ..base
            },
        };
    }
    base
}

/// Whether a string instruction uses 32-bit addresses (ESI/EDI/ECX).
fn string_addr32(insn: &Instruction) -> bool {
    (0..insn.op_count()).any(|n| {
        matches!(
            insn.op_kind(n),
            OpKind::MemorySegESI | OpKind::MemorySegEDI | OpKind::MemoryESEDI
        )
    })
}

/// The bit in a register mask for GPR `r` (0 for non-GPRs).
fn reg_bit(r: Register) -> u16 {
    regs::index_of(r).map_or(0, |i| 1 << i)
}

/// What [`Tracker::before`] found: applied by [`Tracker::retire`] once
/// the instruction completes.
#[derive(Clone, Copy, Debug, Default)]
pub struct Pending {
    effect: Effect,
    taint: u16,
    untaint: u16,
}

/// Follows a run instruction by instruction and keeps the undefined flags
/// and registers.
pub struct Tracker {
    /// Flags whose current value is undefined.
    pub undefined_flags: u64,
    /// GPRs (bit per encoding index) whose current value is undefined.
    pub tainted: u16,
    /// Set when the run read an undefined value: the case is discarded.
    pub indeterminate: Option<String>,
    factory: InstructionInfoFactory,
}

impl std::fmt::Debug for Tracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracker")
            .field("undefined_flags", &self.undefined_flags)
            .field("tainted", &self.tainted)
            .field("indeterminate", &self.indeterminate)
            .finish()
    }
}

impl Default for Tracker {
    fn default() -> Self {
        Tracker {
            undefined_flags: 0,
            tainted: 0,
            indeterminate: None,
            factory: InstructionInfoFactory::new(),
        }
    }
}

impl Tracker {
    /// A tracker for a run from a fully defined state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Examines `insn` before it runs with registers `gpr`; `read_mem`
    /// reads guest memory (linear address, bytes) for the source of
    /// BSF/BSR.
    pub fn before(
        &mut self,
        insn: &Instruction,
        gpr: &[u64; 16],
        read_mem: impl Fn(u64, usize) -> Option<u64>,
    ) -> Pending {
        let effect = effect(insn, Some(gpr));
        if self.indeterminate.is_none() {
            if effect.read & self.undefined_flags != 0 {
                self.indeterminate = Some(format!(
                    "{} reads undefined flags {:#x}",
                    format!("{:?}", insn.mnemonic()).to_lowercase(),
                    effect.read & self.undefined_flags
                ));
            } else if let Some(why) = effect.indeterminate {
                self.indeterminate = Some(why.to_string());
            }
        }
        let info = self.factory.info(insn);
        let mut read = 0u16;
        let mut written = 0u16;
        for u in info.used_registers() {
            match u.access() {
                OpAccess::Read
                | OpAccess::CondRead
                | OpAccess::ReadWrite
                | OpAccess::ReadCondWrite => {
                    read |= reg_bit(u.register());
                }
                OpAccess::Write if u.register().size() >= 4 => written |= reg_bit(u.register()),
                _ => {}
            }
        }
        if read & self.tainted != 0 && self.indeterminate.is_none() {
            self.indeterminate = Some(format!(
                "{} reads an undefined register",
                format!("{:?}", insn.mnemonic()).to_lowercase()
            ));
        }
        let mut pending = Pending {
            effect,
            taint: 0,
            untaint: written,
        };
        if matches!(insn.mnemonic(), Mnemonic::Bsf | Mnemonic::Bsr) {
            let src = match insn.op1_kind() {
                OpKind::Register => reg_value(gpr, insn.op1_register()),
                _ => insn
                    .virtual_address(1, 0, |r, _, _| {
                        if r.is_segment_register() {
                            Some(0)
                        } else {
                            reg_value(gpr, r)
                        }
                    })
                    .and_then(|a| read_mem(a, insn.memory_size().size())),
            };
            let dest = reg_bit(insn.op0_register());
            if src == Some(0) {
                pending.taint = dest;
                pending.untaint &= !dest;
            } else if insn.op0_register().size() >= 4 {
                pending.untaint |= dest;
            }
        }
        pending
    }

    /// Applies what `before` found, once the instruction has completed.
    pub fn retire(&mut self, p: Pending) {
        self.undefined_flags = p.effect.apply(self.undefined_flags);
        self.tainted = (self.tainted & !p.untaint) | p.taint;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iced_x86::Code;

    fn with_cl(code: Code, cl: u64) -> Effect {
        let i = Instruction::with2(code, Register::EAX, Register::CL).unwrap();
        let mut g = [0u64; 16];
        g[regs::RCX] = cl;
        effect(&i, Some(&g))
    }

    #[test]
    fn a_zero_count_shift_changes_no_flags() {
        assert_eq!(with_cl(Code::Shl_rm32_CL, 0), Effect::default());
        assert_eq!(with_cl(Code::Shl_rm32_CL, 32), Effect::default());
    }

    #[test]
    fn of_is_defined_only_for_a_count_of_one() {
        let e = with_cl(Code::Shr_rm32_CL, 1);
        assert_eq!(e.undefined, fl::AF);
        let e = with_cl(Code::Shr_rm32_CL, 2);
        assert_eq!(e.undefined, fl::AF | fl::OF);
        let e = with_cl(Code::Rol_rm32_CL, 3);
        assert_eq!(e.undefined, fl::OF);
        assert_eq!(e.modified, fl::CF | fl::OF);
    }

    #[test]
    fn mul_leaves_sf_zf_af_pf_undefined() {
        let i = Instruction::with1(Code::Mul_rm32, Register::EBX).unwrap();
        let e = effect(&i, None);
        assert_eq!(e.undefined, fl::SF | fl::ZF | fl::AF | fl::PF);
        assert_eq!(e.apply(0) & (fl::CF | fl::OF), 0);
    }

    #[test]
    fn reading_an_undefined_flag_is_indeterminate() {
        let mut t = Tracker::new();
        let g = [0u64; 16];
        let mul = Instruction::with1(Code::Mul_rm32, Register::EBX).unwrap();
        let p = t.before(&mul, &g, |_, _| None);
        t.retire(p);
        let setz = Instruction::with1(Code::Sete_rm8, Register::AL).unwrap();
        t.before(&setz, &g, |_, _| None);
        assert!(t.indeterminate.is_some());
    }

    #[test]
    fn bsf_of_zero_taints_its_destination_until_overwritten() {
        let mut t = Tracker::new();
        let g = [0u64; 16];
        let bsf = Instruction::with2(Code::Bsf_r32_rm32, Register::EAX, Register::EBX).unwrap();
        let p = t.before(&bsf, &g, |_, _| None);
        t.retire(p);
        assert_eq!(t.tainted, 1);
        // A 16-bit write leaves the upper bits undefined.
        let g1 = {
            let mut g = g;
            g[regs::RBX] = 1;
            g
        };
        let bsf16 = Instruction::with2(Code::Bsf_r16_rm16, Register::AX, Register::BX).unwrap();
        let p = t.before(&bsf16, &g1, |_, _| None);
        t.retire(p);
        assert_eq!(t.tainted, 1);
        let mov = Instruction::with2(Code::Mov_r32_imm32, Register::EAX, 5u32).unwrap();
        let p = t.before(&mov, &g, |_, _| None);
        t.retire(p);
        assert_eq!(t.tainted, 0);
        assert!(t.indeterminate.is_none());
    }
}
