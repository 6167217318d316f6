//! Specialized direct branches: JMP rel and Jcc rel (SDM Vol. 2 "JMP",
//! "Jcc"; Vol. 1 §6.3 near transfers). In 64-bit mode the
//! target is fixed at decode time, so a canonical target needs no check at
//! run time; in other modes the target is checked against CS as
//! [`crate::exec::flow::branch_to`] does. A taken Jcc ends the block
//! ([`Cpu::end_block`]): blocks continue past these Jcc's.

use iced_x86::{Instruction, Mnemonic, OpKind};

use super::{condition, Exec, Operands};
use crate::code::Decoded;
use crate::exec::flow::branch_to;
use crate::fault::Fault;
use crate::Cpu;

/// The operand size of a direct JMP or Jcc the fast path handles.
fn fast_branch_size(insn: &Instruction, bitness: u32) -> Option<u8> {
    let size = match insn.op_kind(0) {
        OpKind::NearBranch64 if bitness == 64 => 8,
        OpKind::NearBranch32 if bitness != 64 => 4,
        OpKind::NearBranch16 if bitness != 64 => 2,
        _ => return None,
    };
    (size != 8 || crate::mem::canonical(insn.near_branch_target())).then_some(size)
}

/// Whether `insn` is a Jcc with a specialized handler. Those end the
/// block when taken, so decoding may go on past them (a block is then a
/// straight line with side exits).
pub fn is_fast_jcc(insn: &Instruction, bitness: u32) -> bool {
    !insn.has_lock_prefix() && is_jcc(insn.mnemonic()) && fast_branch_size(insn, bitness).is_some()
}

/// The specialized handler for a direct JMP or Jcc, if `insn` is one.
pub(crate) fn select(insn: &Instruction, bitness: u32, ops: &mut Operands) -> Option<Exec> {
    let jcc = insn.condition_code() as u8;
    let jmp = insn.mnemonic() == Mnemonic::Jmp;
    if !jmp && !is_jcc(insn.mnemonic()) {
        return None;
    }
    let size = fast_branch_size(insn, bitness)?;
    ops.imm = insn.near_branch_target();
    ops.cc = jcc;
    ops.mem.size = size;
    Some(match (size, jmp) {
        (8, true) => jmp64,
        (8, false) => jcc64_for(jcc),
        (_, true) => jmp_checked,
        (_, false) => jcc_checked,
    })
}

fn is_jcc(m: Mnemonic) -> bool {
    use Mnemonic::*;
    matches!(
        m,
        Jo | Jno | Jb | Jae | Je | Jne | Jbe | Ja | Js | Jns | Jp | Jnp | Jl | Jge | Jle | Jg
    )
}

fn jcc64_for(cc: u8) -> Exec {
    match cc {
        1 => jcc64::<1>,
        2 => jcc64::<2>,
        3 => jcc64::<3>,
        4 => jcc64::<4>,
        5 => jcc64::<5>,
        6 => jcc64::<6>,
        7 => jcc64::<7>,
        8 => jcc64::<8>,
        9 => jcc64::<9>,
        10 => jcc64::<10>,
        11 => jcc64::<11>,
        12 => jcc64::<12>,
        13 => jcc64::<13>,
        14 => jcc64::<14>,
        15 => jcc64::<15>,
        _ => jcc64::<16>,
    }
}

fn jcc64<const CC: u8>(cpu: &mut Cpu, d: &Decoded) -> Result<(), Fault> {
    if cpu.s.flags.cond(condition(CC)) {
        cpu.next_rip = d.ops.imm;
        cpu.end_block = true;
    }
    Ok(())
}

fn jmp64(cpu: &mut Cpu, d: &Decoded) -> Result<(), Fault> {
    cpu.next_rip = d.ops.imm;
    Ok(())
}

fn jcc_checked(cpu: &mut Cpu, d: &Decoded) -> Result<(), Fault> {
    if cpu.s.flags.cond(condition(d.ops.cc)) {
        branch_to(cpu, d.ops.imm, d.ops.mem.size)?;
        cpu.end_block = true;
    }
    Ok(())
}

fn jmp_checked(cpu: &mut Cpu, d: &Decoded) -> Result<(), Fault> {
    branch_to(cpu, d.ops.imm, d.ops.mem.size)
}
