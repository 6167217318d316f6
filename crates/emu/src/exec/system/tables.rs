//! Descriptor-table registers and the selector-inspection instructions
//! (SDM Vol. 2 for each; Vol. 3A §2.4 and §3.5.1 descriptor-table
//! registers, §3.5 the GDT and LDT, §7.2.4 the task register): LGDT, LIDT,
//! SGDT, SIDT, LLDT, SLDT, LTR, STR, LAR, LSL, VERR, VERW, ARPL.
//!
//! Descriptors themselves (their format, reading them from the GDT or LDT,
//! loading segment registers) are in [`crate::segment`].

use iced_x86::{Code, Instruction, Mnemonic, OpKind};

use crate::exec::operand::{memory_operand, read_op, read_reg, write_op, write_reg};
use crate::fault::Fault;
use crate::flags;
use crate::modes::in_64bit;
use crate::privilege::{check_umip, require_cpl0};
use crate::segment::{
    descriptor_address, descriptor_to_segment, err_code, is_code, is_conforming, is_null,
    null_segment, probe_descriptor, read_descriptor, sys, ty,
};
use crate::Cpu;

fn gp(code: u16) -> Fault {
    Fault::GeneralProtection(code)
}

/// LGDT/LIDT (CPL 0): limit then base; 24 bits of base with a 16-bit
/// operand size, 64 bits (canonical) in 64-bit mode.
pub(super) fn load_table(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    require_cpl0(cpu)?;
    let (s, off) = memory_operand(cpu, insn);
    let limit = cpu.read(s, off, 2)? as u16;
    let base = if in_64bit(cpu) {
        let b = cpu.read(s, off.wrapping_add(2), 8)?;
        if !crate::mem::canonical(b) {
            return Err(gp(0));
        }
        b
    } else {
        let b = cpu.read(s, off.wrapping_add(2), 4)?;
        if matches!(insn.code(), Code::Lgdt_m1632_16 | Code::Lidt_m1632_16) {
            b & 0xff_ffff
        } else {
            b
        }
    };
    let t = if insn.mnemonic() == Mnemonic::Lgdt {
        &mut cpu.s.gdtr
    } else {
        &mut cpu.s.idtr
    };
    t.base = base;
    t.limit = limit;
    Ok(())
}

/// SGDT/SIDT: limit then base (32 bits, or 64 in 64-bit mode); #GP(0) at
/// CPL > 0 with CR4.UMIP.
pub(super) fn store_table(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    check_umip(cpu)?;
    let t = if insn.mnemonic() == Mnemonic::Sgdt {
        cpu.s.gdtr
    } else {
        cpu.s.idtr
    };
    let (s, off) = memory_operand(cpu, insn);
    let base_size = if in_64bit(cpu) { 8 } else { 4 };
    // Check the whole operand first so a fault leaves memory untouched.
    let lin = cpu.linear(s, off, 2, crate::mmu::AccessKind::Write)?;
    let user = cpu.user();
    cpu.translate(lin, crate::mmu::AccessKind::Write, user)?;
    cpu.write(s, off.wrapping_add(2), base_size, t.base)?;
    cpu.write(s, off, 2, u64::from(t.limit))
}

fn require_protected(cpu: &Cpu) -> Result<(), Fault> {
    if cpu.s.protected_mode() && !cpu.s.v86_mode() {
        Ok(())
    } else {
        Err(Fault::InvalidOpcode)
    }
}

/// LLDT (CPL 0): a GDT selector of an LDT descriptor, or null.
pub(super) fn lldt(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    require_protected(cpu)?;
    require_cpl0(cpu)?;
    let sel = read_op(cpu, insn, 0)? as u16;
    if is_null(sel) {
        cpu.s.ldtr = null_segment(sel, 0);
        return Ok(());
    }
    let err = err_code(sel);
    if sel & 4 != 0 {
        return Err(gp(err));
    }
    let (lo, hi) = read_descriptor(cpu, sel)?;
    let d = descriptor_to_segment(sel, lo, hi);
    if d.s || d.type_ != sys::LDT {
        return Err(gp(err));
    }
    if !d.present {
        return Err(Fault::SegmentNotPresent(err));
    }
    if cpu.s.long_mode() && !crate::mem::canonical(d.base) {
        return Err(gp(err));
    }
    cpu.s.ldtr = d;
    Ok(())
}

/// LTR (CPL 0): an available TSS in the GDT, which becomes busy.
pub(super) fn ltr(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    require_protected(cpu)?;
    require_cpl0(cpu)?;
    let sel = read_op(cpu, insn, 0)? as u16;
    if is_null(sel) {
        return Err(gp(0));
    }
    let err = err_code(sel);
    if sel & 4 != 0 {
        return Err(gp(err));
    }
    let (lo, hi) = read_descriptor(cpu, sel)?;
    let d = descriptor_to_segment(sel, lo, hi);
    let long = cpu.s.long_mode();
    let available = d.type_ == sys::TSS_AVAIL || (!long && d.type_ == sys::TSS16_AVAIL);
    if d.s || !available {
        return Err(gp(err));
    }
    if !d.present {
        return Err(Fault::SegmentNotPresent(err));
    }
    if long && !crate::mem::canonical(d.base) {
        return Err(gp(err));
    }
    let addr = descriptor_address(cpu, sel, 8)?;
    let access = ((lo >> 40) & 0xff) | 2;
    cpu.write_system(addr.wrapping_add(5), 1, access)?;
    cpu.s.tr = alcazar_core::regs::Segment {
        type_: d.type_ | 2,
        ..d
    };
    Ok(())
}

/// SLDT/STR: the selector (zero-extended into a register, 16 bits to
/// memory); #GP(0) at CPL > 0 with CR4.UMIP.
pub(super) fn store_selector(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    require_protected(cpu)?;
    check_umip(cpu)?;
    let sel = if insn.mnemonic() == Mnemonic::Sldt {
        cpu.s.ldtr.selector
    } else {
        cpu.s.tr.selector
    };
    write_op(cpu, insn, 0, u64::from(sel))
}

/// Whether a non-conforming descriptor's DPL admits CPL and the
/// selector's RPL (SDM LAR/LSL/VERR/VERW).
fn visible(cpu: &Cpu, sel: u16, d: &alcazar_core::regs::Segment) -> bool {
    is_conforming(d) || (d.dpl >= cpu.s.cpl && d.dpl >= (sel & 3) as u8)
}

/// LAR/LSL: access rights or the scaled limit if the selector is visible
/// and of a type the instruction accepts (ZF = 1), else ZF = 0.
pub(super) fn lar_lsl(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    require_protected(cpu)?;
    let lar = insn.mnemonic() == Mnemonic::Lar;
    let sel = read_op(cpu, insn, 1)? as u16;
    let found = probe_descriptor(cpu, sel)?;
    let long = cpu.s.long_mode();
    let result = found.and_then(|(lo, hi)| {
        let d = descriptor_to_segment(sel, lo, hi);
        let type_ok = d.s
            || match (lar, long) {
                (true, false) => matches!(d.type_, 1..=5 | 9 | 0xb | 0xc),
                (true, true) => matches!(d.type_, 2 | 9 | 0xb | 0xc),
                (false, false) => matches!(d.type_, 1..=3 | 9 | 0xb),
                (false, true) => matches!(d.type_, 2 | 9 | 0xb),
            };
        (type_ok && visible(cpu, sel, &d)).then(|| {
            if lar {
                (lo >> 32) & 0x00ff_ff00
            } else {
                u64::from(d.limit)
            }
        })
    });
    match result {
        Some(v) => {
            let dst = insn.op_register(0);
            let v = if dst.size() == 2 { v & 0xffff } else { v };
            write_reg(cpu, dst, v);
            cpu.s.flags.set_arith(flags::ZF, flags::ZF);
        }
        None => cpu.s.flags.set_arith(flags::ZF, 0),
    }
    Ok(())
}

/// VERR/VERW: ZF = 1 if the segment is readable (VERR) or writable data
/// (VERW) at the current privilege.
pub(super) fn verr_verw(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    require_protected(cpu)?;
    let write = insn.mnemonic() == Mnemonic::Verw;
    let sel = read_op(cpu, insn, 0)? as u16;
    let ok = probe_descriptor(cpu, sel)?.is_some_and(|(lo, hi)| {
        let d = descriptor_to_segment(sel, lo, hi);
        let kind_ok = if write {
            d.s && !is_code(&d) && d.type_ & ty::RW != 0
        } else {
            d.s && (!is_code(&d) || d.type_ & ty::RW != 0)
        };
        kind_ok && visible(cpu, sel, &d)
    });
    cpu.s
        .flags
        .set_arith(flags::ZF, if ok { flags::ZF } else { 0 });
    Ok(())
}

/// ARPL r/m16, r16: raises the destination's RPL to the source's.
pub(super) fn arpl(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    require_protected(cpu)?;
    let dst = read_op(cpu, insn, 0)? & 0xffff;
    let src = if insn.op_kind(1) == OpKind::Register {
        read_reg(cpu, insn.op_register(1)) & 0xffff
    } else {
        read_op(cpu, insn, 1)? & 0xffff
    };
    if dst & 3 < src & 3 {
        let v = (dst & !3) | (src & 3);
        if insn.op_kind(0) == OpKind::Register {
            // The r32 form (Arpl_r32m16_r32) still writes 16 bits.
            let r = insn.op_register(0);
            let full = read_reg(cpu, r);
            write_reg(cpu, r, (full & !0xffff) | v);
        } else {
            write_op(cpu, insn, 0, v)?;
        }
        cpu.s.flags.set_arith(flags::ZF, flags::ZF);
    } else {
        cpu.s.flags.set_arith(flags::ZF, 0);
    }
    Ok(())
}
