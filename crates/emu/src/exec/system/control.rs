//! Control and debug register instructions (SDM Vol. 2 for each; Vol. 3A
//! §2.5 control registers, §4.10.4 TLB invalidation, §18.2 debug
//! registers): MOV to/from CR0, CR2, CR3, CR4, CR8, MOV to/from DR0-DR7,
//! LMSW, SMSW, CLTS, INVLPG and INVPCID (§4.10.4.1).
//!
//! What a control-register write does to the operating mode, paging and
//! the TLB is in [`crate::modes`]. INVLPG drops the translations of the
//! 2 MiB (4 MiB with 32-bit paging) region around the address, which
//! covers large pages, since the software TLB holds them as 4 KiB slices.

use iced_x86::Instruction;

use crate::exec::operand::{memory_operand, read_op, read_reg, write_op, write_reg};
use crate::fault::Fault;
use crate::modes::{in_64bit, write_cr, write_cr0};
use crate::privilege::{check_umip, require_cpl0};
use crate::state::{cr0, cr4, seg};
use crate::Cpu;

fn gp(code: u16) -> Fault {
    Fault::GeneralProtection(code)
}

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

/// SMSW: CR0 (16 bits to memory; the register form stores more); #GP(0)
/// at CPL > 0 with CR4.UMIP.
pub(super) fn smsw(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    check_umip(cpu)?;
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
    flush_around(cpu, lin);
    Ok(())
}

/// Drops the translations of the 2 MiB (4 MiB with 32-bit paging) region
/// around `lin`: every slice of a large page that may hold it.
fn flush_around(cpu: &mut Cpu, lin: u64) {
    let region: u64 = if cpu.s.cr4 & cr4::PAE == 0 {
        4 << 20
    } else {
        2 << 20
    };
    let start = lin & !(region - 1);
    for page in (0..region).step_by(0x1000) {
        cpu.mmu.flush_page(start.wrapping_add(page));
    }
}

/// INVPCID r, m128 (SDM Vol. 2 INVPCID; Vol. 3A §4.10.4.1): invalidates by
/// the type in the register, with the descriptor in memory (PCID in bits
/// 11:0, bits 63:12 zero, the linear address in bits 127:64): 0, one
/// address in one PCID; 1, one PCID; 2, every PCID with global
/// translations; 3, every PCID but not global translations. #GP(0) at
/// CPL > 0, for a type above 3, a reserved descriptor bit, a PCID other
/// than 0 for types 0 and 1 without CR4.PCIDE, or a non-canonical address
/// for type 0; #UD in virtual-8086 mode.
///
/// The TLB holds translations of the current PCID and global ones only
/// (every CR3 load drops the rest: [`crate::modes`]), and it is not tagged,
/// so each type drops a superset of what it must: type 0 the address's
/// large-page region in every PCID, global translations too (as INVLPG);
/// types 1 and 3 every non-global translation; type 2 everything. The SDM
/// allows invalidating more than asked.
pub(super) fn invpcid(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    if cpu.s.v86_mode() {
        return Err(Fault::InvalidOpcode);
    }
    require_cpl0(cpu)?;
    let kind = read_reg(cpu, insn.op_register(0));
    if kind > 3 {
        return Err(gp(0));
    }
    let (s, off) = memory_operand(cpu, insn);
    let low = cpu.read(s, off, 8)?;
    let lin = cpu.read(s, off.wrapping_add(8), 8)?;
    let pcid = low & 0xfff;
    if low >> 12 != 0 || (kind <= 1 && pcid != 0 && cpu.s.cr4 & cr4::PCIDE == 0) {
        return Err(gp(0));
    }
    match kind {
        0 => {
            if !crate::mem::canonical(lin) {
                return Err(gp(0));
            }
            flush_around(cpu, lin);
        }
        2 => cpu.mmu.flush_all(),
        _ => cpu.mmu.flush_non_global(),
    }
    Ok(())
}
