//! Specialized stack and branch instructions of 64-bit code: PUSH r64,
//! PUSH imm, POP r64, CALL rel32, RET (near, no immediate), and the
//! indirect near CALL/JMP r/m64.
//!
//! In 64-bit mode the stack is flat (SS's base and limit are ignored) and
//! its operations are 8 bytes, so each of these is a canonical check, one
//! TLB-served access and an RSP update, done in that order so that a
//! fault leaves RSP as it was (SDM Vol. 1 §6.2.4; Vol. 2 PUSH/POP/CALL/
//! RET). Kernel code calls and returns constantly: as generic
//! instructions they would also cut the run loop's block links on every
//! call and return. They mirror [`crate::exec::data`] and
//! [`crate::exec::flow`]; a RET to a non-canonical address is left to the
//! generic handler, which raises the #GP.

use iced_x86::{Code, Instruction, OpKind};

use super::{generic, mem_operand, plain_gpr, Exec, Operands, MEM, REG};
use crate::code::Decoded;
use crate::fault::Fault;
use crate::mem::canonical;
use crate::state::{reg, seg};
use crate::Cpu;

/// The specialized handler for `insn`, if it is one of these forms in
/// 64-bit code.
pub(crate) fn select(insn: &Instruction, bitness: u32, ops: &mut Operands) -> Option<Exec> {
    if bitness != 64 {
        return None;
    }
    match insn.code() {
        Code::Push_r64 => {
            ops.r0 = plain_gpr(insn.op0_register())?;
            Some(push_r64)
        }
        Code::Pop_r64 => {
            ops.r0 = plain_gpr(insn.op0_register())?;
            Some(pop_r64)
        }
        Code::Pushq_imm32 | Code::Pushq_imm8 => {
            ops.imm = insn.immediate(0);
            Some(push_imm)
        }
        Code::Call_rel32_64 if canonical(insn.near_branch_target()) => {
            ops.imm = insn.near_branch_target();
            Some(call_rel)
        }
        Code::Retnq => Some(ret_near),
        Code::Call_rm64 | Code::Jmp_rm64 => {
            let call = insn.code() == Code::Call_rm64;
            match insn.op_kind(0) {
                OpKind::Register => {
                    ops.r0 = plain_gpr(insn.op0_register())?;
                    Some(if call {
                        call_indirect::<REG>
                    } else {
                        jmp_indirect::<REG>
                    })
                }
                OpKind::Memory => {
                    ops.mem = mem_operand(insn)?;
                    Some(if call {
                        call_indirect::<MEM>
                    } else {
                        jmp_indirect::<MEM>
                    })
                }
                _ => None,
            }
        }
        _ => None,
    }
}

/// The target of an indirect near branch: a register or a qword in memory.
#[inline(always)]
fn indirect_target<const SRC: u8>(cpu: &mut Cpu, d: &Decoded) -> Result<u64, Fault> {
    if SRC == REG {
        Ok(cpu.s.gpr[usize::from(d.ops.r0 & 15)])
    } else {
        cpu.read_mem(&d.ops.mem)
    }
}

/// CALL r/m64. The target is read before the push (it may be addressed
/// through RSP); a non-canonical one is the generic handler's #GP.
fn call_indirect<const SRC: u8>(cpu: &mut Cpu, d: &Decoded) -> Result<(), Fault> {
    let target = indirect_target::<SRC>(cpu, d)?;
    if !canonical(target) {
        return generic(cpu, d);
    }
    push(cpu, cpu.next_rip)?;
    cpu.next_rip = target;
    Ok(())
}

/// JMP r/m64.
fn jmp_indirect<const SRC: u8>(cpu: &mut Cpu, d: &Decoded) -> Result<(), Fault> {
    let target = indirect_target::<SRC>(cpu, d)?;
    if !canonical(target) {
        return generic(cpu, d);
    }
    cpu.next_rip = target;
    Ok(())
}

/// Pushes `value`: RSP changes only once the write succeeded.
#[inline(always)]
fn push(cpu: &mut Cpu, value: u64) -> Result<(), Fault> {
    let rsp = cpu.s.gpr[reg::RSP].wrapping_sub(8);
    let lin = cpu.check_linear64(seg::SS, rsp, 8)?;
    let user = cpu.user();
    cpu.write_lin(lin, 8, value, user)?;
    cpu.s.gpr[reg::RSP] = rsp;
    Ok(())
}

/// Reads the qword at the top of the stack (RSP unchanged).
#[inline(always)]
fn top(cpu: &mut Cpu) -> Result<u64, Fault> {
    let lin = cpu.check_linear64(seg::SS, cpu.s.gpr[reg::RSP], 8)?;
    let user = cpu.user();
    cpu.read_lin(lin, 8, user)
}

fn push_r64(cpu: &mut Cpu, d: &Decoded) -> Result<(), Fault> {
    // PUSH RSP pushes the value RSP had before the instruction.
    let value = cpu.s.gpr[usize::from(d.ops.r0 & 15)];
    push(cpu, value)
}

fn push_imm(cpu: &mut Cpu, d: &Decoded) -> Result<(), Fault> {
    push(cpu, d.ops.imm)
}

fn pop_r64(cpu: &mut Cpu, d: &Decoded) -> Result<(), Fault> {
    let value = top(cpu)?;
    cpu.s.gpr[reg::RSP] = cpu.s.gpr[reg::RSP].wrapping_add(8);
    // POP RSP: the popped value wins over the increment.
    cpu.s.gpr[usize::from(d.ops.r0 & 15)] = value;
    Ok(())
}

fn call_rel(cpu: &mut Cpu, d: &Decoded) -> Result<(), Fault> {
    push(cpu, cpu.next_rip)?;
    cpu.next_rip = d.ops.imm;
    Ok(())
}

fn ret_near(cpu: &mut Cpu, d: &Decoded) -> Result<(), Fault> {
    let target = top(cpu)?;
    if !canonical(target) {
        return generic(cpu, d);
    }
    cpu.s.gpr[reg::RSP] = cpu.s.gpr[reg::RSP].wrapping_add(8);
    cpu.next_rip = target;
    Ok(())
}
