//! Fast system calls: SYSCALL/SYSRET and SYSENTER/SYSEXIT (SDM Vol. 3A
//! §5.8.7 "Performing fast calls to system procedures with the SYSENTER
//! and SYSEXIT instructions", §5.8.8 "Fast system calls in 64-bit mode";
//! Vol. 2 for each).
//!
//! They change CPL, CS and SS without reading the GDT: CS and SS get fixed
//! flat descriptors derived from IA32_STAR or IA32_SYSENTER_CS, as the CPU
//! does. SYSCALL follows Intel (#UD outside 64-bit mode). The MSRs are
//! written through WRMSR ([`crate::msr`]).

use alcazar_core::regs::Segment;
use iced_x86::{Code, Instruction};

use crate::fault::Fault;
use crate::flags::{self, Flags};
use crate::modes::in_64bit;
use crate::privilege::require_cpl0;
use crate::state::{efer, reg, seg};
use crate::Cpu;

/// Whether long mode is active and SYSCALL is enabled.
fn syscall_enabled(cpu: &Cpu) -> bool {
    cpu.s.long_mode() && cpu.s.efer & efer::SCE != 0
}

/// A flat 4 GiB code segment (64-bit if `long`) at DPL `dpl`.
fn flat_code(selector: u16, dpl: u8, long: bool) -> Segment {
    Segment {
        selector,
        dpl,
        l: long,
        db: !long,
        ..Segment::flat32(selector, true)
    }
}

/// A flat 4 GiB writable data segment at DPL `dpl`.
fn flat_data(selector: u16, dpl: u8) -> Segment {
    Segment {
        selector,
        dpl,
        ..Segment::flat32(selector, false)
    }
}

fn enter(cpu: &mut Cpu, cs: Segment, ss: Segment, rip: u64) {
    cpu.s.cpl = cs.dpl;
    cpu.s.seg[seg::CS] = cs;
    cpu.s.seg[seg::SS] = ss;
    cpu.next_rip = rip;
    cpu.end_block = true;
}

/// SYSCALL: RCX = return RIP, R11 = RFLAGS, RFLAGS &= ~IA32_FMASK,
/// CS = STAR[47:32], SS = CS + 8, RIP = IA32_LSTAR, CPL 0.
pub(super) fn syscall(cpu: &mut Cpu, _: &Instruction) -> Result<(), Fault> {
    if !syscall_enabled(cpu) || !in_64bit(cpu) {
        return Err(Fault::InvalidOpcode);
    }
    let rflags = cpu.s.flags.get() & !flags::RF;
    cpu.s.gpr[reg::RCX] = cpu.next_rip;
    cpu.s.gpr[11] = rflags;
    let sel = ((cpu.s.msr.star >> 32) as u16) & 0xfffc;
    let masked = rflags & !cpu.s.msr.sfmask & !flags::RF;
    cpu.s.flags = Flags::from_bits(masked);
    let rip = cpu.s.msr.lstar;
    enter(
        cpu,
        flat_code(sel, 0, true),
        flat_data(sel.wrapping_add(8), 0),
        rip,
    );
    Ok(())
}

/// SYSRET: to 64-bit mode (REX.W, CS = STAR[63:48] + 16) or compatibility
/// mode (CS = STAR[63:48]); SS = STAR[63:48] + 8; RFLAGS from R11; CPL 3.
pub(super) fn sysret(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    if !syscall_enabled(cpu) || !in_64bit(cpu) {
        return Err(Fault::InvalidOpcode);
    }
    require_cpl0(cpu)?;
    let to64 = insn.code() == Code::Sysretq;
    let rcx = cpu.s.gpr[reg::RCX];
    if to64 && !crate::mem::canonical(rcx) {
        return Err(Fault::GeneralProtection(0));
    }
    let base = (cpu.s.msr.star >> 48) as u16;
    let (cs_sel, rip) = if to64 {
        (base.wrapping_add(16) | 3, rcx)
    } else {
        (base | 3, rcx & 0xffff_ffff)
    };
    let r11 = cpu.s.gpr[11];
    cpu.s.flags = Flags::from_bits((r11 & 0x3c_7fd7) | flags::FIXED);
    enter(
        cpu,
        flat_code(cs_sel, 3, to64),
        flat_data(base.wrapping_add(8) | 3, 3),
        rip,
    );
    Ok(())
}

/// SYSENTER: CS = IA32_SYSENTER_CS (64-bit in IA-32e mode), SS = CS + 8,
/// RSP/RIP from IA32_SYSENTER_ESP/EIP; clears VM, IF, RF.
pub(super) fn sysenter(cpu: &mut Cpu, _: &Instruction) -> Result<(), Fault> {
    let sel = (cpu.s.msr.sysenter_cs as u16) & 0xfffc;
    if !cpu.s.protected_mode() || sel == 0 {
        return Err(Fault::GeneralProtection(0));
    }
    let long = cpu.s.long_mode();
    for bit in [flags::VM, flags::IF, flags::RF] {
        cpu.s.flags.set_flag(bit, false);
    }
    let m = if long { u64::MAX } else { 0xffff_ffff };
    cpu.s.gpr[reg::RSP] = cpu.s.msr.sysenter_esp & m;
    let rip = cpu.s.msr.sysenter_eip & m;
    enter(
        cpu,
        flat_code(sel, 0, long),
        flat_data(sel.wrapping_add(8), 0),
        rip,
    );
    Ok(())
}

/// SYSEXIT: to CPL 3 with RIP = RDX, RSP = RCX; CS = SYSENTER_CS + 16
/// (32-bit) or + 32 (REX.W, 64-bit), SS = CS + 8.
pub(super) fn sysexit(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    let base = cpu.s.msr.sysenter_cs as u16;
    if !cpu.s.protected_mode() || base & 0xfffc == 0 {
        return Err(Fault::GeneralProtection(0));
    }
    require_cpl0(cpu)?;
    let to64 = insn.code() == Code::Sysexitq;
    let (rip, rsp) = (cpu.s.gpr[reg::RDX], cpu.s.gpr[reg::RCX]);
    let (cs_sel, rip, rsp) = if to64 {
        if !crate::mem::canonical(rip) || !crate::mem::canonical(rsp) {
            return Err(Fault::GeneralProtection(0));
        }
        (base.wrapping_add(32), rip, rsp)
    } else {
        (base.wrapping_add(16), rip & 0xffff_ffff, rsp & 0xffff_ffff)
    };
    cpu.s.gpr[reg::RSP] = rsp;
    enter(
        cpu,
        flat_code(cs_sel | 3, 3, to64),
        flat_data(cs_sel.wrapping_add(8) | 3, 3),
        rip,
    );
    Ok(())
}
