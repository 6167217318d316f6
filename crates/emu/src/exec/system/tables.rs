//! Control and debug registers, descriptor-table registers and the
//! selector-inspection instructions (SDM Vol. 2 for each; Vol. 3A §2.5
//! control registers, §2.4 and §3.5.1 descriptor-table registers, §4.10.4
//! TLB invalidation, §10.8.5 entering IA-32e mode, §18.2 debug registers).
//!
//! TLB rules: a CR3 write drops non-global translations; a change of
//! CR0.PG/WP/PE, CR4.PGE/PAE/PSE or EFER.NXE drops all; INVLPG drops the
//! translations of the 2 MiB (4 MiB with 32-bit paging) region around the
//! address, which covers large pages, since the software TLB holds them
//! as 4 KiB slices.

use iced_x86::{Code, Instruction, Mnemonic, OpKind};

use super::{in_64bit, require_cpl0};
use crate::exec::operand::{memory_operand, read_op, read_reg, write_op, write_reg};
use crate::fault::Fault;
use crate::flags;
use crate::segment::{
    descriptor_address, descriptor_to_segment, err_code, is_code, is_conforming, is_null,
    null_segment, probe_descriptor, read_descriptor, sys, ty,
};
use crate::state::{cr0, cr4, efer, seg};
use crate::Cpu;

fn gp(code: u16) -> Fault {
    Fault::GeneralProtection(code)
}

/// The CR0 bits that exist; writes to the others are ignored.
const CR0_BITS: u64 = cr0::PE
    | cr0::MP
    | cr0::EM
    | cr0::TS
    | cr0::ET
    | cr0::NE
    | cr0::WP
    | cr0::AM
    | cr0::NW
    | cr0::CD
    | cr0::PG;

/// Physical-address bits above the CPU's width.
const PHYS_RESERVED: u64 = !((1u64 << crate::mmu::PHYS_ADDR_BITS) - 1);

/// MOV to/from CR0, CR2, CR3, CR4, CR8 (CPL 0).
pub(super) fn mov_cr(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    require_cpl0(cpu)?;
    let to_cr = insn.op_register(0).is_cr();
    let (cr, gpr) = if to_cr {
        (insn.op_register(0), insn.op_register(1))
    } else {
        (insn.op_register(1), insn.op_register(0))
    };
    let n = cr.number();
    if to_cr {
        let v = read_reg(cpu, gpr);
        write_cr(cpu, n, v)
    } else {
        let v = match n {
            0 => cpu.s.cr0,
            2 => cpu.s.cr2,
            3 => cpu.s.cr3,
            4 => cpu.s.cr4,
            8 => match cpu.irq.source().and_then(|s| s.tpr()) {
                Some(tpr) => u64::from(tpr & 0xf),
                None => cpu.s.cr8,
            },
            _ => return Err(Fault::InvalidOpcode),
        };
        write_reg(cpu, gpr, v);
        Ok(())
    }
}

/// Writes control register `n` with the checks of SDM MOV CR.
pub(crate) fn write_cr(cpu: &mut Cpu, n: usize, v: u64) -> Result<(), Fault> {
    match n {
        0 => write_cr0(cpu, v)?,
        2 => cpu.s.cr2 = v,
        3 => {
            let v = if cpu.s.long_mode() {
                if v & PHYS_RESERVED != 0 {
                    return Err(gp(0));
                }
                v
            } else {
                v & 0xffff_ffff
            };
            cpu.s.cr3 = v;
            cpu.mmu.flush_non_global();
        }
        4 => write_cr4(cpu, v)?,
        8 => {
            if v >> 4 != 0 {
                return Err(gp(0));
            }
            cpu.s.cr8 = v;
            if let Some(src) = cpu.irq.source() {
                src.set_tpr(v as u8);
            }
            // A lower priority may unmask a pending interrupt.
            cpu.irq.notify();
        }
        _ => return Err(Fault::InvalidOpcode),
    }
    // Paging or the mode may have changed under the decoded block.
    cpu.end_block = true;
    Ok(())
}

/// CR0 (SDM Vol. 3A §2.5, §10.8.5): PG needs PE; NW needs CD; setting PG
/// with EFER.LME activates IA-32e mode (needs CR4.PAE and CS.L = 0);
/// clearing PG leaves it (not from 64-bit code).
pub(crate) fn write_cr0(cpu: &mut Cpu, v: u64) -> Result<(), Fault> {
    if v >> 32 != 0 {
        return Err(gp(0));
    }
    let v = (v & CR0_BITS) | cr0::ET;
    if (v & cr0::PG != 0 && v & cr0::PE == 0) || (v & cr0::NW != 0 && v & cr0::CD == 0) {
        return Err(gp(0));
    }
    let old = cpu.s.cr0;
    let mut efer = cpu.s.efer;
    if v & cr0::PG != 0 && old & cr0::PG == 0 && efer & efer::LME != 0 {
        if cpu.s.cr4 & cr4::PAE == 0 || cpu.s.seg[seg::CS].l {
            return Err(gp(0));
        }
        efer |= efer::LMA;
    }
    if v & cr0::PG == 0 && old & cr0::PG != 0 && cpu.s.long_mode() {
        if in_64bit(cpu) {
            return Err(gp(0));
        }
        efer &= !efer::LMA;
    }
    cpu.s.cr0 = v;
    cpu.s.efer = efer;
    if (old ^ v) & (cr0::PG | cr0::WP | cr0::PE) != 0 {
        cpu.mmu.flush_all();
    }
    if v & cr0::PE == 0 {
        cpu.s.cpl = 0;
    }
    Ok(())
}

/// CR4: only implemented features may be enabled (no VME/PVI, UMIP,
/// FSGSBASE, PCIDE, SMEP, SMAP; OSXSAVE only with XSAVE advertised);
/// PAE cannot be cleared in IA-32e mode.
fn write_cr4(cpu: &mut Cpu, v: u64) -> Result<(), Fault> {
    let mut allowed = cr4::TSD
        | cr4::DE
        | cr4::PSE
        | cr4::PAE
        | cr4::MCE
        | cr4::PGE
        | cr4::PCE
        | cr4::OSFXSR
        | cr4::OSXMMEXCPT;
    let leaf1 = alcazar_core::cpuid::CpuidPolicy::lookup(&cpu.cpuid, 1, 0);
    if leaf1.ecx & (1 << 26) != 0 {
        allowed |= cr4::OSXSAVE;
    }
    if v & !allowed != 0 || (cpu.s.long_mode() && v & cr4::PAE == 0) {
        return Err(gp(0));
    }
    let old = cpu.s.cr4;
    cpu.s.cr4 = v;
    if (old ^ v) & (cr4::PGE | cr4::PAE | cr4::PSE) != 0 {
        cpu.mmu.flush_all();
    }
    Ok(())
}

/// MOV to/from DR0-DR7 (CPL 0): DR4/DR5 alias DR6/DR7 unless CR4.DE
/// (then #UD); in 64-bit mode the upper halves of DR6/DR7 must be 0.
/// The values are kept; breakpoints do not fire.
pub(super) fn mov_dr(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    require_cpl0(cpu)?;
    let to_dr = insn.op_register(0).is_dr();
    let (dr, gpr) = if to_dr {
        (insn.op_register(0), insn.op_register(1))
    } else {
        (insn.op_register(1), insn.op_register(0))
    };
    let n = match dr.number() {
        n @ (4 | 5) if cpu.s.cr4 & cr4::DE == 0 => n + 2,
        n @ (0..=3 | 6 | 7) => n,
        _ => return Err(Fault::InvalidOpcode),
    };
    if !to_dr {
        write_reg(cpu, gpr, cpu.s.dr[n]);
        return Ok(());
    }
    let v = read_reg(cpu, gpr);
    if n >= 6 && v >> 32 != 0 {
        return Err(gp(0));
    }
    cpu.s.dr[n] = match n {
        6 => (v & 0xe00f) | 0xffff_0ff0,
        7 => (v & !0xd800) | 0x400,
        _ => v,
    };
    Ok(())
}

/// LMSW: loads CR0 bits 3:0 (PE can be set, not cleared).
pub(super) fn lmsw(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    require_cpl0(cpu)?;
    let v = read_op(cpu, insn, 0)? & 0xf;
    let old = cpu.s.cr0;
    let new = (old & !0xe) | v | (old & cr0::PE);
    write_cr0(cpu, new)?;
    cpu.end_block = true;
    Ok(())
}

/// SMSW: CR0 (16 bits to memory; the register form stores more).
pub(super) fn smsw(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    let v = cpu.s.cr0;
    write_op(cpu, insn, 0, v)
}

/// CLTS: clears CR0.TS.
pub(super) fn clts(cpu: &mut Cpu, _: &Instruction) -> Result<(), Fault> {
    require_cpl0(cpu)?;
    cpu.s.cr0 &= !cr0::TS;
    Ok(())
}

/// INVLPG m: drops the translations of the page (and of any large page)
/// holding the address.
pub(super) fn invlpg(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    require_cpl0(cpu)?;
    let (s, off) = memory_operand(cpu, insn);
    let lin = if in_64bit(cpu) {
        let base = if s >= seg::FS { cpu.s.seg[s].base } else { 0 };
        base.wrapping_add(off)
    } else {
        cpu.s.seg[s].base.wrapping_add(off) & 0xffff_ffff
    };
    let region: u64 = if cpu.s.cr4 & cr4::PAE == 0 {
        4 << 20
    } else {
        2 << 20
    };
    let start = lin & !(region - 1);
    for page in (0..region).step_by(0x1000) {
        cpu.mmu.flush_page(start.wrapping_add(page));
    }
    Ok(())
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

/// SGDT/SIDT: limit then base (32 bits, or 64 in 64-bit mode). UMIP is not
/// implemented, so any CPL may.
pub(super) fn store_table(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
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
    cpu.write_lin(addr.wrapping_add(5), 1, access, false)?;
    cpu.s.tr = alcazar_core::regs::Segment {
        type_: d.type_ | 2,
        ..d
    };
    Ok(())
}

/// SLDT/STR: the selector (zero-extended into a register, 16 bits to
/// memory).
pub(super) fn store_selector(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    require_protected(cpu)?;
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
