//! Specialized read-modify-write instructions with a memory destination
//! (no LOCK prefix): ADD, ADC, SUB, SBB, AND, OR, XOR with a register or
//! immediate source, and INC/DEC of memory.
//!
//! They go through [`modify_mem`], as the generic handlers do, so the
//! destination is translated for *writing* before it is read: a fault
//! reports a write access (error code W = 1), whatever the page (SDM Vol.
//! 3A §4.7).

use iced_x86::{Instruction, Mnemonic, OpKind};

use super::{ea, mem_operand, rd, sized, Exec, Form, Operands, IMM, REG};
use crate::code::Decoded;
use crate::exec::alu::{compute, flag_op, ADC, ADD, AND, OR, SBB, SUB, XOR};
use crate::exec::operand::modify_mem;
use crate::fault::Fault;
use crate::flags::FlagOp;
use crate::Cpu;

/// The specialized handler for a memory-destination `insn` in form `f`.
pub(crate) fn select(insn: &Instruction, f: Option<Form>, ops: &mut Operands) -> Option<Exec> {
    let m = insn.mnemonic();
    let size = super::op_size(insn, 0);
    if insn.op_count() == 1 && insn.op_kind(0) == OpKind::Memory {
        ops.mem = mem_operand(insn)?;
        return match m {
            Mnemonic::Inc => Some(sized!(size, step, true)),
            Mnemonic::Dec => Some(sized!(size, step, false)),
            _ => None,
        };
    }
    let src = match f? {
        Form::MR => REG,
        Form::MI => IMM,
        _ => return None,
    };
    macro_rules! by_op {
        ($op:expr) => {
            Some(match src {
                REG => sized!(size, binop_m, $op, REG),
                _ => sized!(size, binop_m, $op, IMM),
            })
        };
    }
    match m {
        Mnemonic::Add => by_op!(ADD),
        Mnemonic::Adc => by_op!(ADC),
        Mnemonic::Sub => by_op!(SUB),
        Mnemonic::Sbb => by_op!(SBB),
        Mnemonic::And => by_op!(AND),
        Mnemonic::Or => by_op!(OR),
        Mnemonic::Xor => by_op!(XOR),
        _ => None,
    }
}

fn binop_m<const OP: u8, const SRC: u8, const SIZE: u8>(
    cpu: &mut Cpu,
    d: &Decoded,
) -> Result<(), Fault> {
    let src = if SRC == REG {
        rd::<SIZE>(cpu, d.ops.r1)
    } else {
        d.ops.imm
    };
    let carry = (OP == ADC || OP == SBB) && cpu.s.flags.cf();
    let off = ea(cpu, &d.ops.mem);
    let mut res = 0;
    let old = modify_mem(cpu, usize::from(d.ops.mem.seg), off, SIZE, |old| {
        res = compute::<OP>(old, src, carry);
        res
    })?;
    cpu.s
        .flags
        .set_result(flag_op::<OP>(), SIZE, old, src, res, carry);
    Ok(())
}

/// INC (`UP`) or DEC of memory; CF is kept, as the lazy record of
/// [`FlagOp::Inc`]/[`FlagOp::Dec`] knows.
fn step<const UP: bool, const SIZE: u8>(cpu: &mut Cpu, d: &Decoded) -> Result<(), Fault> {
    let off = ea(cpu, &d.ops.mem);
    let f = |v: u64| {
        if UP {
            v.wrapping_add(1)
        } else {
            v.wrapping_sub(1)
        }
    };
    let old = modify_mem(cpu, usize::from(d.ops.mem.seg), off, SIZE, f)?;
    let op = if UP { FlagOp::Inc } else { FlagOp::Dec };
    cpu.s.flags.set_result(op, SIZE, old, 1, f(old), false);
    Ok(())
}
