//! SSE/SSE2 and MMX data movement: MOVAPS/UPS/APD/UPD, MOVDQA/DQU,
//! MOVSS/MOVSD, MOVLPS/HPS/LPD/HPD, MOVHLPS/MOVLHPS, MOVD/MOVQ (XMM, MMX
//! and GPR forms), MOVQ2DQ/MOVDQ2Q, the non-temporal stores
//! MOVNTDQ/NTPS/NTPD/NTI/NTQ, MASKMOVDQU/MASKMOVQ, MOVMSKPS/PD and
//! PMOVMSKB (SDM Vol. 2 instruction pages). Non-temporal hints have no
//! effect: the emu engine has no caches.

use iced_x86::{Instruction, Mnemonic, OpKind, Register};

use super::access::{
    mm_index, mmx_enter, read_mm, read_operand, write_mm, write_operand, xmm_index,
};
use super::check_simd;
use crate::exec::operand::{read_reg, write_op};
use crate::exec::HandlerEntry;
use crate::exec::LinkEffect::KeepsLinks;
use crate::fault::Fault;
use crate::Cpu;

/// The handler for `insn`, if this module implements it, with its effect
/// on block links.
pub fn lookup(insn: &Instruction) -> Option<HandlerEntry> {
    use Mnemonic as M;
    let has_vec = (0..insn.op_count()).any(|n| {
        insn.op_kind(n) == OpKind::Register
            && (insn.op_register(n).is_xmm() || insn.op_register(n).is_mm())
    });
    Some(match insn.mnemonic() {
        M::Movaps | M::Movups | M::Movapd | M::Movupd | M::Movdqa | M::Movdqu => {
            (mov_full, KeepsLinks)
        }
        M::Movntdq | M::Movntps | M::Movntpd | M::Movntq => (mov_full, KeepsLinks),
        M::Movss if has_vec => (movss_sd, KeepsLinks),
        M::Movsd if has_vec => (movss_sd, KeepsLinks),
        M::Movlps | M::Movlpd | M::Movhps | M::Movhpd | M::Movhlps | M::Movlhps => {
            (mov_half, KeepsLinks)
        }
        M::Movd | M::Movq => (movd_q, KeepsLinks),
        M::Movq2dq | M::Movdq2q => (movq2dq, KeepsLinks),
        M::Movnti => (movnti, KeepsLinks),
        M::Maskmovdqu | M::Maskmovq => (maskmov, KeepsLinks),
        M::Movmskps | M::Movmskpd | M::Pmovmskb => (movmsk, KeepsLinks),
        _ => return None,
    })
}

fn is_mem(insn: &Instruction, n: u32) -> bool {
    insn.op_kind(n) == OpKind::Memory
}

/// A full-width move (16 bytes XMM, 8 bytes MMX).
fn mov_full(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    let mmx = check_simd(cpu, insn)?;
    let v = read_operand(cpu, insn, 1)?;
    write_operand(cpu, insn, 0, v)?;
    if mmx {
        mmx_enter(cpu);
    }
    Ok(())
}

/// MOVSS/MOVSD: register to register merges the low element; a load
/// zeroes the rest; a store writes the low element.
fn movss_sd(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    check_simd(cpu, insn)?;
    let mask: u128 = if insn.mnemonic() == Mnemonic::Movss {
        0xffff_ffff
    } else {
        u128::from(u64::MAX)
    };
    let v = read_operand(cpu, insn, 1)? & mask;
    if is_mem(insn, 0) {
        return write_operand(cpu, insn, 0, v);
    }
    let d = xmm_index(insn.op_register(0));
    if is_mem(insn, 1) {
        cpu.s.fpu.xmm[d] = v;
    } else {
        cpu.s.fpu.xmm[d] = (cpu.s.fpu.xmm[d] & !mask) | v;
    }
    Ok(())
}

/// MOVLPS/LPD/HPS/HPD, MOVHLPS, MOVLHPS.
fn mov_half(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    check_simd(cpu, insn)?;
    let lo = u128::from(u64::MAX);
    let high = matches!(insn.mnemonic(), Mnemonic::Movhps | Mnemonic::Movhpd);
    if is_mem(insn, 0) {
        let x = cpu.s.fpu.xmm[xmm_index(insn.op_register(1))];
        return write_operand(cpu, insn, 0, if high { x >> 64 } else { x & lo });
    }
    let d = xmm_index(insn.op_register(0));
    let src = read_operand(cpu, insn, 1)?;
    let old = cpu.s.fpu.xmm[d];
    cpu.s.fpu.xmm[d] = match insn.mnemonic() {
        Mnemonic::Movhlps => (old & !lo) | (src >> 64),
        Mnemonic::Movlhps => (old & lo) | (src << 64),
        _ if high => (old & lo) | ((src & lo) << 64),
        _ => (old & !lo) | (src & lo),
    };
    Ok(())
}

/// MOVD/MOVQ in all their forms: to a vector register the value is
/// zero-extended; from one, the low 32 or 64 bits are written.
fn movd_q(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    let mmx = check_simd(cpu, insn)?;
    let width: u32 = if insn.mnemonic() == Mnemonic::Movd {
        32
    } else {
        64
    };
    let mask = (1u128 << width) - 1;
    let v = read_operand(cpu, insn, 1)? & mask;
    if insn.op_kind(0) == OpKind::Register {
        let r = insn.op_register(0);
        if r.is_xmm() {
            cpu.s.fpu.xmm[xmm_index(r)] = v;
        } else if r.is_mm() {
            write_mm(cpu, mm_index(r), v as u64);
        } else {
            write_op(cpu, insn, 0, v as u64)?;
        }
    } else {
        write_operand(cpu, insn, 0, v)?;
    }
    if mmx {
        mmx_enter(cpu);
    }
    Ok(())
}

/// MOVQ2DQ xmm, mm and MOVDQ2Q mm, xmm.
fn movq2dq(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    super::check_sse(cpu)?;
    super::pending_mf(cpu)?;
    let (d, s) = (insn.op_register(0), insn.op_register(1));
    if d.is_xmm() {
        cpu.s.fpu.xmm[xmm_index(d)] = u128::from(read_mm(cpu, mm_index(s)));
    } else {
        let v = cpu.s.fpu.xmm[xmm_index(s)] as u64;
        write_mm(cpu, mm_index(d), v);
    }
    mmx_enter(cpu);
    Ok(())
}

/// MOVNTI m32/m64, r: an ordinary store here.
fn movnti(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    let v = read_reg(cpu, insn.op_register(1));
    write_operand(cpu, insn, 0, u128::from(v))
}

/// MASKMOVDQU/MASKMOVQ: stores the bytes of the first register whose
/// mask byte (second register) has its top bit set, at DS:rDI (segment
/// overridable), one byte at a time.
fn maskmov(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    let mmx = check_simd(cpu, insn)?;
    let (n_data, n_mask) = if insn.op_kind(0) == OpKind::Register {
        (0, 1)
    } else {
        (1, 2)
    };
    let data = read_operand(cpu, insn, n_data)?;
    let mask = read_operand(cpu, insn, n_mask)?;
    let bytes = if mmx { 8 } else { 16 };
    let addr_size: u8 = match insn.op_kind(0) {
        OpKind::MemorySegDI => 2,
        OpKind::MemorySegEDI => 4,
        _ => match cpu.s.code_size() {
            crate::state::CodeSize::Bits64 => 8,
            crate::state::CodeSize::Bits32 => 4,
            crate::state::CodeSize::Bits16 => 2,
        },
    };
    let rdi = cpu.s.read_gpr(crate::state::reg::RDI, addr_size, false);
    let seg = crate::exec::operand::seg_index(match insn.memory_segment() {
        Register::None => Register::DS,
        r => r,
    });
    for i in 0..bytes {
        if (mask >> (8 * i + 7)) & 1 != 0 {
            let off = crate::exec::operand::mask_to(rdi.wrapping_add(i), addr_size);
            cpu.write(seg, off, 1, (data >> (8 * i)) as u64 & 0xff)?;
        }
    }
    if mmx {
        mmx_enter(cpu);
    }
    Ok(())
}

/// MOVMSKPS/PD (sign bits of 4 singles / 2 doubles) and PMOVMSKB (top bit
/// of each byte) into a GPR, zero-extended.
fn movmsk(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    let mmx = check_simd(cpu, insn)?;
    let v = read_operand(cpu, insn, 1)?;
    let (lanes, width) = match insn.mnemonic() {
        Mnemonic::Movmskps => (4, 32),
        Mnemonic::Movmskpd => (2, 64),
        _ if mmx => (8, 8),
        _ => (16, 8),
    };
    let mut m = 0u64;
    for i in 0..lanes {
        m |= (((v >> (width * i + width - 1)) & 1) as u64) << i;
    }
    let r = insn.op_register(0);
    // The destination is a 32- or 64-bit GPR; either way zero-extended.
    cpu.s
        .write_gpr(crate::exec::operand::gpr(r).index, 8, false, m);
    if mmx {
        mmx_enter(cpu);
    }
    Ok(())
}
