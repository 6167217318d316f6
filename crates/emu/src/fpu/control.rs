//! x87 and SSE control instructions: FNINIT, FLDCW/FNSTCW, FNSTSW,
//! FNCLEX, FWAIT, FFREE, FINCSTP/FDECSTP, FNOP, EMMS, LDMXCSR/STMXCSR
//! (SDM Vol. 2 instruction pages; Vol. 1 §8.1, §10.2.3).

use iced_x86::{Instruction, Mnemonic, OpKind};

use super::access::check_far_end;
use super::{check_mmx, check_sse, check_x87, check_x87_nowait, mxcsr, Tag};
use crate::exec::operand::{memory_operand, write_reg};
use crate::exec::HandlerEntry;
use crate::exec::LinkEffect::KeepsLinks;
use crate::fault::Fault;
use crate::state::cr0;
use crate::Cpu;

/// The handler for `insn`, if this module implements it, with its effect
/// on block links.
pub fn lookup(insn: &Instruction) -> Option<HandlerEntry> {
    use Mnemonic as M;
    Some(match insn.mnemonic() {
        M::Fninit => (fninit, KeepsLinks),
        M::Fldcw => (fldcw, KeepsLinks),
        M::Fnstcw => (fnstcw, KeepsLinks),
        M::Fnstsw => (fnstsw, KeepsLinks),
        M::Fnclex => (fnclex, KeepsLinks),
        M::Wait => (fwait, KeepsLinks),
        M::Ffree | M::Ffreep => (ffree, KeepsLinks),
        M::Fincstp => (fincstp, KeepsLinks),
        M::Fdecstp => (fdecstp, KeepsLinks),
        M::Fnop => (fnop, KeepsLinks),
        M::Emms => (emms, KeepsLinks),
        M::Ldmxcsr => (ldmxcsr, KeepsLinks),
        M::Stmxcsr => (stmxcsr, KeepsLinks),
        M::Fnstenv | M::Fldenv | M::Fnsave | M::Frstor => (super::fxsave::env_op, KeepsLinks),
        _ => return None,
    })
}

fn fninit(cpu: &mut Cpu, _: &Instruction) -> Result<(), Fault> {
    check_x87_nowait(cpu)?;
    cpu.s.fpu.finit();
    Ok(())
}

fn fldcw(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    check_x87(cpu)?;
    let (s, off) = memory_operand(cpu, insn);
    check_far_end(cpu, s, off, 2)?;
    let v = cpu.read(s, off, 2)? as u16;
    // Bits 6 and 13-15 are reserved; bit 6 reads as 1 on current CPUs.
    cpu.s.fpu.fcw = (v & 0x1f3f) | 0x40;
    cpu.s.fpu.update_summary();
    Ok(())
}

fn fnstcw(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    check_x87_nowait(cpu)?;
    let (s, off) = memory_operand(cpu, insn);
    check_far_end(cpu, s, off, 2)?;
    let v = cpu.s.fpu.fcw;
    cpu.write(s, off, 2, u64::from(v))
}

fn fnstsw(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    check_x87_nowait(cpu)?;
    let v = u64::from(cpu.s.fpu.fsw);
    if insn.op_kind(0) == OpKind::Register {
        write_reg(cpu, insn.op_register(0), v);
        return Ok(());
    }
    let (s, off) = memory_operand(cpu, insn);
    check_far_end(cpu, s, off, 2)?;
    cpu.write(s, off, 2, v)
}

fn fnclex(cpu: &mut Cpu, _: &Instruction) -> Result<(), Fault> {
    check_x87_nowait(cpu)?;
    // PE, UE, OE, ZE, DE, IE, SF, ES and B.
    cpu.s.fpu.fsw &= !0x80ff;
    Ok(())
}

/// WAIT/FWAIT: #NM only if CR0.MP and CR0.TS; then a pending unmasked x87
/// exception (CR0.NE = 1) is #MF.
fn fwait(cpu: &mut Cpu, _: &Instruction) -> Result<(), Fault> {
    if cpu.s.cr0 & (cr0::MP | cr0::TS) == cr0::MP | cr0::TS {
        return Err(Fault::DeviceNotAvailable);
    }
    super::pending_mf(cpu)
}

fn ffree(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    check_x87(cpu)?;
    let i = st_index(insn, 0);
    let p = cpu.s.fpu.phys(i);
    cpu.s.fpu.set_tag(p, Tag::Empty);
    if insn.mnemonic() == Mnemonic::Ffreep {
        let top = cpu.s.fpu.top();
        cpu.s.fpu.set_top(top + 1);
    }
    Ok(())
}

fn fincstp(cpu: &mut Cpu, _: &Instruction) -> Result<(), Fault> {
    check_x87(cpu)?;
    let top = cpu.s.fpu.top();
    cpu.s.fpu.set_top(top + 1);
    cpu.s.fpu.fsw &= !super::fsw::C1;
    Ok(())
}

fn fdecstp(cpu: &mut Cpu, _: &Instruction) -> Result<(), Fault> {
    check_x87(cpu)?;
    let top = cpu.s.fpu.top();
    cpu.s.fpu.set_top(top + 7);
    cpu.s.fpu.fsw &= !super::fsw::C1;
    Ok(())
}

fn fnop(cpu: &mut Cpu, _: &Instruction) -> Result<(), Fault> {
    check_x87(cpu)
}

/// EMMS: all x87 tags empty and, as for every MMX instruction, TOP = 0
/// (SDM Vol. 3A Table 12-1 / Vol. 1 §9.5.1; observed on hardware).
fn emms(cpu: &mut Cpu, _: &Instruction) -> Result<(), Fault> {
    check_mmx(cpu)?;
    cpu.s.fpu.ftw = 0xffff;
    cpu.s.fpu.set_top(0);
    Ok(())
}

/// LDMXCSR: #GP(0) if a reserved bit (outside MXCSR_MASK) is set.
fn ldmxcsr(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    check_sse(cpu)?;
    let (s, off) = memory_operand(cpu, insn);
    check_far_end(cpu, s, off, 4)?;
    let v = cpu.read(s, off, 4)? as u32;
    if v & !mxcsr::WRITABLE != 0 {
        return Err(Fault::GeneralProtection(0));
    }
    cpu.s.fpu.mxcsr = v;
    Ok(())
}

fn stmxcsr(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    check_sse(cpu)?;
    let (s, off) = memory_operand(cpu, insn);
    check_far_end(cpu, s, off, 4)?;
    let v = cpu.s.fpu.mxcsr;
    cpu.write(s, off, 4, u64::from(v))
}

/// The index i of an ST(i) operand `n` (0 when it is not a register).
pub fn st_index(insn: &Instruction, n: u32) -> usize {
    if n < insn.op_count() && insn.op_kind(n) == OpKind::Register {
        let r = insn.op_register(n);
        (r as usize).wrapping_sub(iced_x86::Register::ST0 as usize) & 7
    } else {
        0
    }
}
