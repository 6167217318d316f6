//! VEX data movement (SDM Vol. 2, the VEX forms of each instruction):
//! whole-register moves, scalar and half moves, element extract and
//! insert, mask extraction, broadcasts, 128-bit insert/extract, masked
//! loads and stores, the widening moves, VZEROUPPER/VZEROALL and
//! VLDMXCSR/VSTMXCSR.

use iced_x86::{Instruction, Mnemonic, OpKind};

use super::check_avx;
use super::in_lane::{is_widening, legacy};
use super::operands::{is_256, read, write, Ymm};
use crate::exec::operand::memory_operand;
use crate::exec::HandlerEntry;
use crate::exec::LinkEffect::KeepsLinks;
use crate::fault::Fault;
use crate::fpu::lanes::{lane, ones, sx};
use crate::fpu::mxcsr;
use crate::state::CodeSize;
use crate::Cpu;

/// The handler for `insn`, if it is one of this file's.
pub fn lookup(insn: &Instruction) -> Option<HandlerEntry> {
    use Mnemonic as M;
    let h: fn(&mut Cpu, &Instruction) -> Result<(), Fault> = match insn.mnemonic() {
        M::Vmovaps
        | M::Vmovapd
        | M::Vmovups
        | M::Vmovupd
        | M::Vmovdqa
        | M::Vmovdqu
        | M::Vlddqu
        | M::Vmovntps
        | M::Vmovntpd
        | M::Vmovntdq
        | M::Vmovntdqa => move_full,
        M::Vmovss | M::Vmovsd => move_scalar,
        M::Vmovd | M::Vmovq => move_d_q,
        M::Vmovlps | M::Vmovlpd | M::Vmovhps | M::Vmovhpd | M::Vmovhlps | M::Vmovlhps => move_half,
        M::Vmovmskps | M::Vmovmskpd | M::Vpmovmskb => move_mask,
        M::Vpextrb | M::Vpextrw | M::Vpextrd | M::Vpextrq | M::Vextractps => extract,
        M::Vpinsrb | M::Vpinsrw | M::Vpinsrd | M::Vpinsrq | M::Vinsertps => insert,
        M::Vbroadcastss
        | M::Vbroadcastsd
        | M::Vbroadcastf128
        | M::Vbroadcasti128
        | M::Vpbroadcastb
        | M::Vpbroadcastw
        | M::Vpbroadcastd
        | M::Vpbroadcastq => broadcast,
        M::Vinsertf128 | M::Vinserti128 => insert128,
        M::Vextractf128 | M::Vextracti128 => extract128,
        M::Vmaskmovps | M::Vmaskmovpd | M::Vpmaskmovd | M::Vpmaskmovq => masked_move,
        M::Vzeroupper | M::Vzeroall => zero,
        M::Vldmxcsr | M::Vstmxcsr => mxcsr_move,
        m if legacy(m).is_some_and(is_widening) => widen,
        _ => return None,
    };
    Some((h, KeepsLinks))
}

/// VMOVAPS/APD/UPS/UPD/DQA/DQU, VLDDQU, VMOVNT*: the source as it is.
fn move_full(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    check_avx(cpu)?;
    let v = read(cpu, insn, 1)?;
    write(cpu, insn, 0, v)
}

/// VMOVSS/VMOVSD: the three-register form merges the low element of the
/// third operand into the second; a load zero-extends; a store writes
/// the element.
fn move_scalar(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    check_avx(cpu)?;
    let bits = if insn.mnemonic() == Mnemonic::Vmovss {
        32
    } else {
        64
    };
    let low = (1u128 << bits) - 1;
    let v = if insn.op_count() == 3 {
        let a = read(cpu, insn, 1)?[0];
        let b = read(cpu, insn, 2)?[0];
        (a & !low) | (b & low)
    } else {
        read(cpu, insn, 1)?[0] & low
    };
    write(cpu, insn, 0, [v, 0])
}

/// VMOVD/VMOVQ: an element to or from a general register or memory
/// (zero-extended into the vector register).
fn move_d_q(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    check_avx(cpu)?;
    let bits = if insn.mnemonic() == Mnemonic::Vmovd {
        32
    } else {
        64
    };
    let v = read(cpu, insn, 1)?[0] & ((1u128 << bits) - 1);
    write(cpu, insn, 0, [v, 0])
}

/// VMOVLPS/LPD/HPS/HPD (loads merge a 64-bit half into the second
/// operand; stores write one half), VMOVHLPS and VMOVLHPS.
fn move_half(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    use Mnemonic as M;
    check_avx(cpu)?;
    let m = insn.mnemonic();
    let high = matches!(m, M::Vmovhps | M::Vmovhpd);
    if insn.op_count() == 2 {
        // The store forms.
        let v = read(cpu, insn, 1)?[0];
        let q = if high {
            v >> 64
        } else {
            v & u128::from(u64::MAX)
        };
        return write(cpu, insn, 0, [q, 0]);
    }
    let a = read(cpu, insn, 1)?[0];
    let b = read(cpu, insn, 2)?[0];
    let (lo, hi) = (a & u128::from(u64::MAX), a >> 64);
    let (b_lo, b_hi) = (b & u128::from(u64::MAX), b >> 64);
    let r = match m {
        M::Vmovhlps => b_hi | hi << 64,
        M::Vmovlhps => lo | b_lo << 64,
        _ if high => lo | b_lo << 64,
        _ => b_lo | hi << 64,
    };
    write(cpu, insn, 0, [r, 0])
}

/// VMOVMSKPS/PD and VPMOVMSKB: the sign bit of every element into a
/// general register, zero-extended.
fn move_mask(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    check_avx(cpu)?;
    let bits = match insn.mnemonic() {
        Mnemonic::Vmovmskps => 32,
        Mnemonic::Vmovmskpd => 64,
        _ => 8,
    };
    let v = read(cpu, insn, 1)?;
    let halves = if is_256(insn) { 2 } else { 1 };
    let per = 128 / bits;
    let mut r = 0u128;
    for (k, half) in v.iter().take(halves).enumerate() {
        for i in 0..per {
            let sign = lane(*half, bits, i) >> (bits - 1) & 1;
            r |= u128::from(sign) << (k as u32 * per + i);
        }
    }
    write(cpu, insn, 0, [r, 0])
}

/// The element bits and index mask of VPEXTR*/VPINSR*/VEXTRACTPS.
fn element(m: Mnemonic) -> u32 {
    use Mnemonic as M;
    match m {
        M::Vpextrb | M::Vpinsrb => 8,
        M::Vpextrw | M::Vpinsrw => 16,
        M::Vpextrq | M::Vpinsrq => 64,
        _ => 32,
    }
}

/// VPEXTRB/W/D/Q and VEXTRACTPS: the element picked by imm8 into a
/// general register (zero-extended) or memory.
fn extract(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    check_avx(cpu)?;
    let bits = element(insn.mnemonic());
    let v = read(cpu, insn, 1)?[0];
    let sel = u32::from(insn.immediate8()) & (128 / bits - 1);
    let e = lane(v, bits, sel);
    if insn.op_kind(0) == OpKind::Register {
        // A 32-bit destination zero-extends; PEXTRB/W into r64 as well.
        let r = insn.op_register(0);
        let g = crate::exec::operand::gpr(r);
        cpu.s.write_gpr(g.index, 8, false, e);
        Ok(())
    } else {
        write(cpu, insn, 0, [u128::from(e), 0])
    }
}

/// VPINSRB/W/D/Q (an element from a general register or memory) and
/// VINSERTPS (imm8: source element, destination element, zero mask).
fn insert(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    check_avx(cpu)?;
    let m = insn.mnemonic();
    let a = read(cpu, insn, 1)?[0];
    let b = read(cpu, insn, 2)?[0];
    let imm = insn.immediate8();
    let r = if m == Mnemonic::Vinsertps {
        let from_reg = insn.op_kind(2) == OpKind::Register;
        let src = if from_reg {
            lane(b, 32, u32::from(imm >> 6))
        } else {
            b as u32 as u64
        };
        let at = u32::from(imm >> 4 & 3);
        let mut r = (a & !(0xffff_ffffu128 << (32 * at))) | u128::from(src) << (32 * at);
        for i in 0..4 {
            if imm >> i & 1 != 0 {
                r &= !(0xffff_ffffu128 << (32 * i));
            }
        }
        r
    } else {
        let bits = element(m);
        let sel = u32::from(imm) & (128 / bits - 1);
        let mask = u128::from(ones(bits)) << (bits * sel);
        (a & !mask) | (u128::from(b as u64 & ones(bits)) << (bits * sel))
    };
    write(cpu, insn, 0, [r, 0])
}

/// VBROADCASTSS/SD/F128/I128 and VPBROADCASTB/W/D/Q: one element (or
/// 128-bit block) of the source in every element of the destination.
fn broadcast(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    use Mnemonic as M;
    check_avx(cpu)?;
    let src = read(cpu, insn, 1)?[0];
    let bits = match insn.mnemonic() {
        M::Vpbroadcastb => 8,
        M::Vpbroadcastw => 16,
        M::Vbroadcastss | M::Vpbroadcastd => 32,
        M::Vbroadcastsd | M::Vpbroadcastq => 64,
        _ => 128,
    };
    let chunk = if bits == 128 {
        src
    } else {
        let e = u128::from(lane(src, bits, 0));
        (0..128 / bits).fold(0u128, |r, i| r | e << (bits * i))
    };
    write(cpu, insn, 0, [chunk, chunk])
}

/// VINSERTF128/VINSERTI128: the second source's 128 bits replace the
/// half of the first source that imm8[0] picks.
fn insert128(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    check_avx(cpu)?;
    let mut r = read(cpu, insn, 1)?;
    let b = read(cpu, insn, 2)?[0];
    r[usize::from(insn.immediate8() & 1)] = b;
    write(cpu, insn, 0, r)
}

/// VEXTRACTF128/VEXTRACTI128: the half imm8[0] picks, to an XMM register
/// (bits 255:128 zeroed) or memory.
fn extract128(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    check_avx(cpu)?;
    let v = read(cpu, insn, 1)?;
    write(cpu, insn, 0, [v[usize::from(insn.immediate8() & 1)], 0])
}

/// VMASKMOVPS/PD and VPMASKMOVD/Q: elements whose mask element has its
/// sign bit set are loaded (others zeroed) or stored (others left
/// alone). Only the selected elements are accessed, so only they can
/// fault (SDM Vol. 2C "VMASKMOV").
fn masked_move(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    use Mnemonic as M;
    check_avx(cpu)?;
    let bits: u32 = match insn.mnemonic() {
        M::Vmaskmovps | M::Vpmaskmovd => 32,
        _ => 64,
    };
    let halves = if is_256(insn) { 2 } else { 1 };
    let per = 128 / bits;
    let (s, off) = memory_operand(cpu, insn);
    let bytes = (bits / 8) as u8;
    let store = insn.op_kind(0) == OpKind::Memory;
    let mask = read(cpu, insn, 1)?;
    let data = if store { read(cpu, insn, 2)? } else { [0; 2] };
    // The selected elements: (half, element, offset).
    let selected: Vec<(usize, u32, u64)> = (0..halves)
        .flat_map(|k| (0..per).map(move |i| (k, i)))
        .filter(|&(k, i)| lane(mask[k], bits, i) >> (bits - 1) != 0)
        .map(|(k, i)| {
            (
                k,
                i,
                off.wrapping_add(u64::from((k as u32 * per + i) * bits / 8)),
            )
        })
        .collect();
    if store {
        // Every selected element is checked before any is written, so a
        // fault leaves memory as it was (as the CPU does).
        for &(_, _, at) in &selected {
            crate::fpu::access::probe_write(cpu, s, at, u64::from(bytes))?;
        }
        for &(k, i, at) in &selected {
            cpu.write(s, at, bytes, lane(data[k], bits, i))?;
        }
        return Ok(());
    }
    let mut r: Ymm = [0; 2];
    for &(k, i, at) in &selected {
        r[k] |= u128::from(cpu.read(s, at, bytes)?) << (bits * i);
    }
    write(cpu, insn, 0, r)
}

/// VPMOVSX*/VPMOVZX*: the low elements of the source widened, sign- or
/// zero-extended, across the whole destination.
fn widen(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    check_avx(cpu)?;
    let Some((from, to, signed)) = legacy(insn.mnemonic()).and_then(crate::fpu::sse41::widening)
    else {
        return Err(Fault::InvalidOpcode);
    };
    let src = read(cpu, insn, 1)?[0];
    let total = if is_256(insn) { 256 } else { 128 };
    let mut r: Ymm = [0; 2];
    for i in 0..total / to {
        let e = lane(src, from, i);
        let v = if signed { sx(e, from) as u64 } else { e } & ones(to);
        let bit = to * i;
        r[(bit / 128) as usize] |= u128::from(v) << (bit % 128);
    }
    write(cpu, insn, 0, r)
}

/// VZEROUPPER zeroes bits 255:128 of every YMM register, VZEROALL the
/// whole registers; outside 64-bit mode only YMM0-7 (SDM Vol. 2C).
fn zero(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    check_avx(cpu)?;
    let n = if cpu.s.code_size() == CodeSize::Bits64 {
        16
    } else {
        8
    };
    let all = insn.mnemonic() == Mnemonic::Vzeroall;
    for i in 0..n {
        cpu.s.fpu.ymm_hi[i] = 0;
        if all {
            cpu.s.fpu.xmm[i] = 0;
        }
    }
    Ok(())
}

/// VLDMXCSR (#GP(0) for reserved bits) and VSTMXCSR.
fn mxcsr_move(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    check_avx(cpu)?;
    if insn.mnemonic() == Mnemonic::Vstmxcsr {
        let v = cpu.s.fpu.mxcsr;
        return write(cpu, insn, 0, [u128::from(v), 0]);
    }
    let v = read(cpu, insn, 0)?[0] as u32;
    if v & !mxcsr::WRITABLE != 0 {
        return Err(Fault::GeneralProtection(0));
    }
    cpu.s.fpu.mxcsr = v;
    Ok(())
}
