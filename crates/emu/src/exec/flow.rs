//! Near control transfers: JMP, Jcc, CALL, RET (SDM Vol. 1 §6.3, §7.3.8).
//! Far transfers through descriptors are system instructions.

use iced_x86::{Instruction, Mnemonic, OpKind};

use super::operand::{pop, push, read_op, stack_op_size};
use super::Handler;
use crate::cpu::CodeSize;
use crate::fault::Fault;
use crate::Cpu;

/// The handler for `insn`, if this module implements it.
pub fn lookup(insn: &Instruction) -> Option<Handler> {
    let near = !matches!(insn.op_kind(0), OpKind::FarBranch16 | OpKind::FarBranch32)
        && insn.memory_size().size() <= 8;
    Some(match insn.mnemonic() {
        Mnemonic::Jmp if near && !is_far_memory(insn) => jmp,
        Mnemonic::Call if near && !is_far_memory(insn) => call,
        Mnemonic::Ret => ret,
        m if is_jcc(m) => jcc,
        _ => return None,
    })
}

fn is_far_memory(insn: &Instruction) -> bool {
    insn.op_kind(0) == OpKind::Memory
        && matches!(
            insn.memory_size(),
            iced_x86::MemorySize::SegPtr16
                | iced_x86::MemorySize::SegPtr32
                | iced_x86::MemorySize::SegPtr64
        )
}

fn is_jcc(m: Mnemonic) -> bool {
    use Mnemonic::*;
    matches!(
        m,
        Jo | Jno | Jb | Jae | Je | Jne | Jbe | Ja | Js | Jns | Jp | Jnp | Jl | Jge | Jle | Jg
    )
}

/// Checks a branch target against CS and sets RIP (SDM: #GP(0) if the
/// target is outside the CS limit or, in 64-bit mode, non-canonical).
#[inline]
pub fn branch_to(cpu: &mut Cpu, target: u64, op_size: u8) -> Result<(), Fault> {
    let target = match cpu.s.code_size() {
        CodeSize::Bits64 if op_size == 8 => target,
        _ => target & crate::flags::mask(op_size.min(4)),
    };
    let ok = match cpu.s.code_size() {
        CodeSize::Bits64 => crate::mem::canonical(target),
        _ => target <= u64::from(cpu.s.seg[crate::cpu::seg::CS].limit),
    };
    if !ok {
        return Err(Fault::GeneralProtection(0));
    }
    cpu.next_rip = target;
    Ok(())
}

/// Operand size of a near branch: from the branch kind or memory size.
fn branch_size(cpu: &Cpu, insn: &Instruction) -> u8 {
    match insn.op_kind(0) {
        OpKind::NearBranch16 => 2,
        OpKind::NearBranch32 => 4,
        OpKind::NearBranch64 => 8,
        OpKind::Register => insn.op_register(0).size() as u8,
        OpKind::Memory => insn.memory_size().size() as u8,
        _ => match cpu.s.code_size() {
            CodeSize::Bits64 => 8,
            CodeSize::Bits32 => 4,
            CodeSize::Bits16 => 2,
        },
    }
}

fn target_of(cpu: &mut Cpu, insn: &Instruction) -> Result<u64, Fault> {
    match insn.op_kind(0) {
        OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64 => {
            // Decoded at this RIP, so the target is absolute already.
            Ok(insn.near_branch_target())
        }
        _ => read_op(cpu, insn, 0),
    }
}

fn jmp(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    let size = branch_size(cpu, insn);
    let target = target_of(cpu, insn)?;
    branch_to(cpu, target, size)
}

fn jcc(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    if cpu.s.flags.cond(insn.condition_code()) {
        let size = branch_size(cpu, insn);
        branch_to(cpu, insn.near_branch_target(), size)
    } else {
        Ok(())
    }
}

fn call(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    let size = branch_size(cpu, insn);
    let target = target_of(cpu, insn)?;
    let ret = cpu.next_rip;
    let saved_rsp = cpu.s.gpr[crate::cpu::reg::RSP];
    push(cpu, stack_op_size(insn), ret)?;
    branch_to(cpu, target, size).inspect_err(|_| cpu.s.gpr[crate::cpu::reg::RSP] = saved_rsp)
}

fn ret(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    if insn.op_count() > 0 && insn.op_kind(0) != OpKind::Immediate16 {
        return Err(Fault::InvalidOpcode);
    }
    // stack_pointer_increment covers the return address plus imm16.
    let imm = if insn.op_count() > 0 {
        i32::from(insn.immediate16())
    } else {
        0
    };
    let size = (insn.stack_pointer_increment() - imm).clamp(2, 8) as u8;
    let saved_rsp = cpu.s.gpr[crate::cpu::reg::RSP];
    let target = pop(cpu, size)?;
    if insn.op_count() > 0 {
        let ss = cpu.s.stack_size();
        let rsp = cpu
            .s
            .read_gpr(crate::cpu::reg::RSP, ss, false)
            .wrapping_add(u64::from(insn.immediate16()));
        cpu.s.write_gpr(crate::cpu::reg::RSP, ss, false, rsp);
    }
    branch_to(cpu, target, size).inspect_err(|_| cpu.s.gpr[crate::cpu::reg::RSP] = saved_rsp)
}
