//! Reading and writing an instruction's operands (SDM Vol. 1 §3.7
//! "Operand addressing", Vol. 2 §2.1.5 "Addressing-mode encoding of ModR/M
//! and SIB bytes").
//!
//! iced-x86 describes each operand by an [`OpKind`]: a register, a memory
//! operand (base + index * scale + displacement, in a segment), or an
//! immediate. These helpers turn that into values, with x86 semantics for
//! partial registers and address-size wrap-around.

use iced_x86::{Instruction, OpKind, Register};

use crate::fault::Fault;
use crate::mmu::AccessKind;
use crate::state::seg;
use crate::Cpu;

/// Where a GPR operand lives: index, size in bytes, AH/CH/DH/BH.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GprRef {
    /// Index in [`crate::state::CpuState::gpr`].
    pub index: usize,
    /// Operand size in bytes.
    pub size: u8,
    /// One of AH, CH, DH, BH.
    pub high8: bool,
}

/// Maps a GPR to its slot. Panics are impossible: non-GPRs map to RAX with
/// their size (callers only pass GPRs).
#[inline]
pub fn gpr(r: Register) -> GprRef {
    let high8 = matches!(r, Register::AH | Register::CH | Register::DH | Register::BH);
    let index = if high8 {
        r.number() - 4
    } else {
        r.full_register().number()
    };
    GprRef {
        index: index & 15,
        size: r.size() as u8,
        high8,
    }
}

/// The segment index of a segment register.
#[inline]
pub fn seg_index(r: Register) -> usize {
    match r {
        Register::ES => seg::ES,
        Register::CS => seg::CS,
        Register::SS => seg::SS,
        Register::FS => seg::FS,
        Register::GS => seg::GS,
        _ => seg::DS,
    }
}

/// The address size of the instruction's memory operand, in bytes.
#[inline]
pub fn address_size(insn: &Instruction) -> u8 {
    let base = insn.memory_base();
    if base != Register::None {
        return base.size() as u8;
    }
    let index = insn.memory_index();
    if index != Register::None {
        return index.size() as u8;
    }
    match insn.memory_displ_size() {
        2 => 2,
        4 => 4,
        _ => 8,
    }
}

/// The effective address (offset in the segment) of the memory operand.
#[inline]
pub fn effective_address(cpu: &Cpu, insn: &Instruction) -> u64 {
    let base = insn.memory_base();
    let mut ea = insn.memory_displacement64();
    if base != Register::None && base != Register::RIP && base != Register::EIP {
        ea = ea.wrapping_add(read_reg(cpu, base));
    }
    let index = insn.memory_index();
    if index != Register::None {
        ea = ea
            .wrapping_add(read_reg(cpu, index).wrapping_mul(u64::from(insn.memory_index_scale())));
    }
    match address_size(insn) {
        2 => ea & 0xffff,
        4 => ea & 0xffff_ffff,
        _ => ea,
    }
}

/// The (segment, offset) of the memory operand.
#[inline]
pub fn memory_operand(cpu: &Cpu, insn: &Instruction) -> (usize, u64) {
    (
        seg_index(insn.memory_segment()),
        effective_address(cpu, insn),
    )
}

/// Reads a GPR operand.
#[inline]
pub fn read_reg(cpu: &Cpu, r: Register) -> u64 {
    let g = gpr(r);
    cpu.s.read_gpr(g.index, g.size, g.high8)
}

/// Writes a GPR operand (32-bit writes zero-extend).
#[inline]
pub fn write_reg(cpu: &mut Cpu, r: Register, value: u64) {
    let g = gpr(r);
    cpu.s.write_gpr(g.index, g.size, g.high8, value);
}

/// The size in bytes of operand `n`.
#[inline]
pub fn op_size(insn: &Instruction, n: u32) -> u8 {
    match insn.op_kind(n) {
        OpKind::Register => insn.op_register(n).size() as u8,
        OpKind::Memory => insn.memory_size().size() as u8,
        OpKind::Immediate8 | OpKind::Immediate8_2nd => 1,
        OpKind::Immediate16 | OpKind::Immediate8to16 => 2,
        OpKind::Immediate32 | OpKind::Immediate8to32 => 4,
        _ => 8,
    }
}

/// Reads operand `n` (register, memory or immediate; immediates are
/// already sign-extended by the decoder to the operand size).
#[inline]
pub fn read_op(cpu: &mut Cpu, insn: &Instruction, n: u32) -> Result<u64, Fault> {
    match insn.op_kind(n) {
        OpKind::Register => Ok(read_reg(cpu, insn.op_register(n))),
        OpKind::Memory => {
            let (s, off) = memory_operand(cpu, insn);
            cpu.read(s, off, insn.memory_size().size() as u8)
        }
        _ => Ok(insn.immediate(n)),
    }
}

/// Writes operand `n` (register or memory).
#[inline]
pub fn write_op(cpu: &mut Cpu, insn: &Instruction, n: u32, value: u64) -> Result<(), Fault> {
    match insn.op_kind(n) {
        OpKind::Register => {
            write_reg(cpu, insn.op_register(n), value);
            Ok(())
        }
        _ => {
            let (s, off) = memory_operand(cpu, insn);
            cpu.write(s, off, insn.memory_size().size() as u8, value)
        }
    }
}

/// Checks that the memory destination `n` is writable before a handler
/// computes anything (so a read-modify-write faults before its read has
/// side effects elsewhere). Registers always pass.
#[inline]
pub fn check_writable(cpu: &mut Cpu, insn: &Instruction, n: u32) -> Result<(), Fault> {
    if insn.op_kind(n) != OpKind::Memory {
        return Ok(());
    }
    let (s, off) = memory_operand(cpu, insn);
    let size = insn.memory_size().size() as u8;
    let lin = cpu.linear(s, off, size, AccessKind::Write)?;
    let user = cpu.user();
    cpu.translate(lin, AccessKind::Write, user)?;
    Ok(())
}

/// Pushes `value` of `size` bytes on the stack.
#[inline]
pub fn push(cpu: &mut Cpu, size: u8, value: u64) -> Result<(), Fault> {
    let ss = cpu.s.stack_size();
    let rsp = cpu
        .s
        .read_gpr(crate::state::reg::RSP, ss, false)
        .wrapping_sub(u64::from(size));
    let rsp = mask_to(rsp, ss);
    cpu.write(seg::SS, rsp, size, value)?;
    cpu.s.write_gpr(crate::state::reg::RSP, ss, false, rsp);
    Ok(())
}

/// Pops `size` bytes from the stack.
#[inline]
pub fn pop(cpu: &mut Cpu, size: u8) -> Result<u64, Fault> {
    let ss = cpu.s.stack_size();
    let rsp = cpu.s.read_gpr(crate::state::reg::RSP, ss, false);
    let value = cpu.read(seg::SS, rsp, size)?;
    cpu.s.write_gpr(
        crate::state::reg::RSP,
        ss,
        false,
        mask_to(rsp.wrapping_add(u64::from(size)), ss),
    );
    Ok(value)
}

/// Reads `size` bytes at `offset` from the top of the stack, without popping.
#[inline]
pub fn peek(cpu: &mut Cpu, offset: u64, size: u8) -> Result<u64, Fault> {
    let ss = cpu.s.stack_size();
    let rsp = cpu.s.read_gpr(crate::state::reg::RSP, ss, false);
    cpu.read(seg::SS, mask_to(rsp.wrapping_add(offset), ss), size)
}

/// Masks `v` to `size` bytes.
#[inline]
pub fn mask_to(v: u64, size: u8) -> u64 {
    v & crate::flags::mask(size)
}

/// The operand size of a stack operation (push/pop/call/ret): 8 in 64-bit
/// mode unless 0x66 makes it 2; else the operand size.
#[inline]
pub fn stack_op_size(insn: &Instruction) -> u8 {
    let inc = insn.stack_pointer_increment().unsigned_abs();
    match inc {
        2 | 4 | 8 => inc as u8,
        _ => 8,
    }
}

/// Reads operand `n`, maps it through `f` and writes the result back: the
/// read-modify-write of ALU, shift and bit instructions. Returns the old
/// value. A memory operand is translated for writing before it is read,
/// so a fault leaves everything unchanged; with a LOCK prefix the update
/// is atomic ([`Cpu::locked_rmw`]), and LOCK on a register is #UD.
/// `f` may run more than once (a locked update retries), so it must be
/// a pure function of its argument.
#[inline]
pub fn modify_op(
    cpu: &mut Cpu,
    insn: &Instruction,
    n: u32,
    mut f: impl FnMut(u64) -> u64,
) -> Result<u64, Fault> {
    if insn.op_kind(n) == OpKind::Register {
        if insn.has_lock_prefix() {
            return Err(Fault::InvalidOpcode);
        }
        let r = insn.op_register(n);
        let old = read_reg(cpu, r);
        write_reg(cpu, r, f(old));
        return Ok(old);
    }
    let (s, off) = memory_operand(cpu, insn);
    let size = insn.memory_size().size() as u8;
    if insn.has_lock_prefix() {
        return cpu.locked_rmw(s, off, size, &mut f);
    }
    modify_mem(cpu, s, off, size, f)
}

/// A (non-atomic) read-modify-write of `size` bytes at `seg:off`; returns
/// the old value. Both pages of a crossing access are translated for
/// writing before anything is read or written.
#[inline]
pub fn modify_mem(
    cpu: &mut Cpu,
    seg_index: usize,
    off: u64,
    size: u8,
    f: impl FnOnce(u64) -> u64,
) -> Result<u64, Fault> {
    let lin = cpu.linear(seg_index, off, size, AccessKind::Write)?;
    let user = cpu.user();
    if (lin & 0xfff) + u64::from(size) <= 0x1000 {
        let t = cpu.translate(lin, AccessKind::Write, user)?;
        let old = if t.host.is_some() {
            cpu.read_phys_at(t, size)
        } else {
            // MMIO, or ROM (which has no host pointer for writes).
            cpu.read_lin(lin, size, user)?
        };
        cpu.write_phys_at(t, size, f(old));
        return Ok(old);
    }
    cpu.translate(lin, AccessKind::Write, user)?;
    cpu.translate((lin | 0xfff).wrapping_add(1), AccessKind::Write, user)?;
    let old = cpu.read_lin(lin, size, user)?;
    cpu.write_lin(lin, size, f(old), user)?;
    Ok(old)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn high_byte_registers_map_to_their_full_register() {
        assert_eq!(
            gpr(Register::AH),
            GprRef {
                index: 0,
                size: 1,
                high8: true
            }
        );
        assert_eq!(
            gpr(Register::BH),
            GprRef {
                index: 3,
                size: 1,
                high8: true
            }
        );
        assert_eq!(
            gpr(Register::SIL),
            GprRef {
                index: 6,
                size: 1,
                high8: false
            }
        );
        assert_eq!(
            gpr(Register::R13D),
            GprRef {
                index: 13,
                size: 4,
                high8: false
            }
        );
        assert_eq!(
            gpr(Register::SP),
            GprRef {
                index: 4,
                size: 2,
                high8: false
            }
        );
    }
}
