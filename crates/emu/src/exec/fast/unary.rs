//! Specialized NOP, CMOVcc, SETcc, NOT, NEG and BSWAP (SDM Vol. 2 pages of
//! each).
//!
//! Linux's hot paths are full of these: multi-byte NOPs (patched-out
//! tracing calls and alternatives padding), branch-free CMOVcc/SETcc and
//! byte swapping. Each mirrors its generic handler in
//! [`crate::exec::data`], [`crate::exec::alu`] or [`crate::exec::bits`]:
//!
//! - NOP (every form) does nothing; its memory operand is not accessed.
//! - CMOVcc reads its source whatever the condition (a memory source
//!   can fault) and zero-extends a 32-bit destination even when the
//!   condition is false.
//! - SETcc writes 0 or 1 to a byte register or memory.
//! - NOT changes no flags; NEG sets them as `0 - x`.
//! - BSWAP of a 16-bit register (undefined; the generic handler gives 0)
//!   stays generic.

use iced_x86::{Code, Instruction, Mnemonic, OpKind};

use super::{condition, mem_operand, plain_gpr, rd, sized, wr, Exec, Operands, MEM, REG};
use crate::code::Decoded;
use crate::exec::{bits, data};
use crate::fault::Fault;
use crate::flags::FlagOp;
use crate::Cpu;

/// The specialized handler for `insn`, if it is one of these forms.
pub(crate) fn select(insn: &Instruction, ops: &mut Operands) -> Option<Exec> {
    let m = insn.mnemonic();
    if m == Mnemonic::Nop {
        return Some(nop);
    }
    let size = super::op_size(insn, 0);
    let k0 = insn.op_kind(0);
    if insn.op_count() == 1 && k0 == OpKind::Register {
        ops.r0 = plain_gpr(insn.op0_register())?;
        return match m {
            Mnemonic::Not => Some(sized!(size, not)),
            Mnemonic::Neg => Some(sized!(size, neg)),
            Mnemonic::Bswap if insn.code() != Code::Bswap_r16 => Some(sized!(size, bswap)),
            _ if is_setcc(insn) => {
                ops.cc = insn.condition_code() as u8;
                Some(setcc::<REG>)
            }
            _ => None,
        };
    }
    if insn.op_count() == 1 && k0 == OpKind::Memory && is_setcc(insn) {
        ops.mem = mem_operand(insn)?;
        ops.cc = insn.condition_code() as u8;
        return Some(setcc::<MEM>);
    }
    if is_cmov(insn) && insn.op_count() == 2 && k0 == OpKind::Register {
        ops.r0 = plain_gpr(insn.op0_register())?;
        ops.cc = insn.condition_code() as u8;
        return match insn.op_kind(1) {
            OpKind::Register => {
                ops.r1 = plain_gpr(insn.op1_register())?;
                Some(sized!(size, cmov, REG))
            }
            OpKind::Memory => {
                ops.mem = mem_operand(insn)?;
                Some(sized!(size, cmov, MEM))
            }
            _ => None,
        };
    }
    None
}

fn is_setcc(insn: &Instruction) -> bool {
    data::is_setcc(insn.mnemonic())
}

fn is_cmov(insn: &Instruction) -> bool {
    data::is_cmov(insn.mnemonic())
}

fn nop(_: &mut Cpu, _: &Decoded) -> Result<(), Fault> {
    Ok(())
}

fn not<const SIZE: u8>(cpu: &mut Cpu, d: &Decoded) -> Result<(), Fault> {
    let v = rd::<SIZE>(cpu, d.ops.r0);
    wr::<SIZE>(cpu, d.ops.r0, !v);
    Ok(())
}

fn neg<const SIZE: u8>(cpu: &mut Cpu, d: &Decoded) -> Result<(), Fault> {
    let old = rd::<SIZE>(cpu, d.ops.r0);
    let res = old.wrapping_neg();
    wr::<SIZE>(cpu, d.ops.r0, res);
    cpu.s
        .flags
        .set_result(FlagOp::Neg, SIZE, 0, old, res, false);
    Ok(())
}

fn bswap<const SIZE: u8>(cpu: &mut Cpu, d: &Decoded) -> Result<(), Fault> {
    let v = rd::<SIZE>(cpu, d.ops.r0);
    wr::<SIZE>(cpu, d.ops.r0, bits::swap(v, SIZE));
    Ok(())
}

fn setcc<const DST: u8>(cpu: &mut Cpu, d: &Decoded) -> Result<(), Fault> {
    let v = u64::from(cpu.s.flags.cond(condition(d.ops.cc)));
    if DST == MEM {
        cpu.write_mem(&d.ops.mem, v)
    } else {
        wr::<1>(cpu, d.ops.r0, v);
        Ok(())
    }
}

fn cmov<const SRC: u8, const SIZE: u8>(cpu: &mut Cpu, d: &Decoded) -> Result<(), Fault> {
    let v = if SRC == MEM {
        cpu.read_mem(&d.ops.mem)?
    } else {
        rd::<SIZE>(cpu, d.ops.r1)
    };
    if cpu.s.flags.cond(condition(d.ops.cc)) {
        wr::<SIZE>(cpu, d.ops.r0, v);
    } else if SIZE == 4 {
        let old = rd::<SIZE>(cpu, d.ops.r0);
        wr::<SIZE>(cpu, d.ops.r0, old);
    }
    Ok(())
}
