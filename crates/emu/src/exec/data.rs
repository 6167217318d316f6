//! Data movement: MOV and its zero/sign-extending forms, LEA, PUSH, POP,
//! NOP (SDM Vol. 1 §7.3.1). Atomic exchanges and conditional moves live
//! here too as they are added.

use iced_x86::{Instruction, Mnemonic, OpKind};

use super::operand::{effective_address, op_size, pop, push, read_op, stack_op_size, write_op};
use super::Handler;
use crate::fault::Fault;
use crate::flags::sign_extend;
use crate::Cpu;

/// The handler for `insn`, if this module implements it.
pub fn lookup(insn: &Instruction) -> Option<Handler> {
    Some(match insn.mnemonic() {
        // MOV to/from segment and control registers are system instructions.
        Mnemonic::Mov if is_plain_mov(insn) => mov,
        Mnemonic::Movzx => movzx,
        Mnemonic::Movsx | Mnemonic::Movsxd => movsx,
        Mnemonic::Lea => lea,
        Mnemonic::Push if !is_segment_push(insn) => push_op,
        Mnemonic::Pop if !is_segment_push(insn) => pop_op,
        Mnemonic::Nop | Mnemonic::Pause | Mnemonic::Endbr32 | Mnemonic::Endbr64 => nop,
        _ => return None,
    })
}

fn is_plain_mov(insn: &Instruction) -> bool {
    (0..insn.op_count())
        .all(|n| insn.op_kind(n) != OpKind::Register || insn.op_register(n).is_gpr())
}

fn is_segment_push(insn: &Instruction) -> bool {
    insn.op_kind(0) == OpKind::Register && insn.op_register(0).is_segment_register()
}

fn mov(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    let v = read_op(cpu, insn, 1)?;
    write_op(cpu, insn, 0, v)
}

fn movzx(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    let v = read_op(cpu, insn, 1)?;
    write_op(cpu, insn, 0, v)
}

fn movsx(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    let v = read_op(cpu, insn, 1)?;
    let v = sign_extend(v, op_size(insn, 1));
    write_op(cpu, insn, 0, v)
}

fn lea(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    let ea = effective_address(cpu, insn);
    write_op(cpu, insn, 0, ea)
}

fn push_op(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    let size = stack_op_size(insn);
    let v = read_op(cpu, insn, 0)?;
    push(cpu, size, v)
}

fn pop_op(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    let size = stack_op_size(insn);
    // POP with an RSP-relative memory destination computes the address
    // after RSP is incremented (SDM POP): pop first, then store; on a
    // fault restore RSP.
    let saved = cpu.s.gpr[crate::cpu::reg::RSP];
    let v = pop(cpu, size)?;
    write_op(cpu, insn, 0, v).inspect_err(|_| cpu.s.gpr[crate::cpu::reg::RSP] = saved)
}

fn nop(_: &mut Cpu, _: &Instruction) -> Result<(), Fault> {
    Ok(())
}
