//! VEX permutes, blends, per-element shifts and tests (SDM Vol. 2: the
//! AVX pages VPERMILPS/PD, VPERM2F128, VBLENDVPS/PD, VPBLENDVB, VTESTPS/PD
//! and VPTEST; the AVX2 pages VPERM2I128, VPERMD/PS/Q/PD, VPBLENDD and
//! VPSLLVD/Q, VPSRLVD/Q, VPSRAVD).
//!
//! These are the instructions whose 256-bit forms do not split into two
//! independent 128-bit operations (or that have no legacy twin).

use iced_x86::{Instruction, Mnemonic, OpKind};

use super::check_avx;
use super::operands::{element as get, is_256, read, set_element as set, write, Ymm};
use crate::exec::HandlerEntry;
use crate::exec::LinkEffect::KeepsLinks;
use crate::fault::Fault;
use crate::flags::{ARITH, CF, ZF};
use crate::fpu::lanes::sx;
use crate::Cpu;

/// The handler for `insn`, if it is one of this file's.
pub fn lookup(insn: &Instruction) -> Option<HandlerEntry> {
    use Mnemonic as M;
    let h: fn(&mut Cpu, &Instruction) -> Result<(), Fault> = match insn.mnemonic() {
        M::Vpermilps | M::Vpermilpd => permute_in_lane,
        M::Vperm2f128 | M::Vperm2i128 => permute_halves,
        M::Vpermd | M::Vpermps | M::Vpermq | M::Vpermpd => permute_across,
        M::Vpsllvd | M::Vpsllvq | M::Vpsrlvd | M::Vpsrlvq | M::Vpsravd => shift_variable,
        M::Vpblendd => blend_dwords,
        M::Vblendvps | M::Vblendvpd | M::Vpblendvb => blend_variable,
        M::Vptest | M::Vtestps | M::Vtestpd => test,
        _ => return None,
    };
    Some((h, KeepsLinks))
}

/// The number of elements of `bits` bits `insn` works on.
fn count(insn: &Instruction, bits: u32) -> u32 {
    if is_256(insn) {
        256 / bits
    } else {
        128 / bits
    }
}

/// VPERMILPS/VPERMILPD: elements picked within their own 128-bit half,
/// by an immediate or by a control vector.
fn permute_in_lane(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    check_avx(cpu)?;
    let single = insn.mnemonic() == Mnemonic::Vpermilps;
    let bits = if single { 32 } else { 64 };
    let per = 128 / bits;
    let by_imm = insn.op_kind(2) == OpKind::Immediate8;
    let src = read(cpu, insn, 1)?;
    let control = if by_imm { [0; 2] } else { read(cpu, insn, 2)? };
    let imm = u32::from(insn.immediate8());
    let mut r: Ymm = [0; 2];
    for i in 0..count(insn, bits) {
        let sel = match (single, by_imm) {
            (true, true) => imm >> (2 * (i % 4)) & 3,
            (false, true) => imm >> i & 1,
            (true, false) => get(&control, 32, i) as u32 & 3,
            (false, false) => get(&control, 64, i) as u32 >> 1 & 1,
        };
        let base = i / per * per;
        set(&mut r, bits, i, get(&src, bits, base + sel));
    }
    write(cpu, insn, 0, r)
}

/// VPERM2F128/VPERM2I128: each half of the destination is one of the four
/// source halves (imm8[1:0], imm8[5:4]) or zero (imm8[3], imm8[7]).
fn permute_halves(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    check_avx(cpu)?;
    let a = read(cpu, insn, 1)?;
    let b = read(cpu, insn, 2)?;
    let imm = insn.immediate8();
    let pick = |c: u8| -> u128 {
        if c & 8 != 0 {
            return 0;
        }
        match c & 3 {
            0 => a[0],
            1 => a[1],
            2 => b[0],
            _ => b[1],
        }
    };
    write(cpu, insn, 0, [pick(imm), pick(imm >> 4)])
}

/// VPERMD/VPERMPS (indices in the first source's dwords) and
/// VPERMQ/VPERMPD (indices in imm8): elements from anywhere in the
/// 256-bit source.
fn permute_across(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    check_avx(cpu)?;
    let dwords = matches!(insn.mnemonic(), Mnemonic::Vpermd | Mnemonic::Vpermps);
    let mut r: Ymm = [0; 2];
    if dwords {
        let index = read(cpu, insn, 1)?;
        let src = read(cpu, insn, 2)?;
        for i in 0..8 {
            set(&mut r, 32, i, get(&src, 32, get(&index, 32, i) as u32 & 7));
        }
    } else {
        let src = read(cpu, insn, 1)?;
        let imm = u32::from(insn.immediate8());
        for i in 0..4 {
            set(&mut r, 64, i, get(&src, 64, imm >> (2 * i) & 3));
        }
    }
    write(cpu, insn, 0, r)
}

/// VPSLLV*/VPSRLV*/VPSRAVD: each element shifted by the count in the
/// same element of the second source; counts beyond the element width
/// give 0 (or the sign, for VPSRAVD).
fn shift_variable(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    use Mnemonic as M;
    check_avx(cpu)?;
    let m = insn.mnemonic();
    let bits = if matches!(m, M::Vpsllvq | M::Vpsrlvq) {
        64
    } else {
        32
    };
    let a = read(cpu, insn, 1)?;
    let c = read(cpu, insn, 2)?;
    let mut r: Ymm = [0; 2];
    for i in 0..count(insn, bits) {
        let (x, n) = (get(&a, bits, i), get(&c, bits, i));
        let v = match m {
            M::Vpsravd => (sx(x, bits) >> n.min(u64::from(bits) - 1)) as u64,
            _ if n >= u64::from(bits) => 0,
            M::Vpsllvd | M::Vpsllvq => x << n,
            _ => x >> n,
        };
        set(&mut r, bits, i, v);
    }
    write(cpu, insn, 0, r)
}

/// VPBLENDD: dword `i` from the second source where imm8 bit `i` is set.
fn blend_dwords(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    check_avx(cpu)?;
    let a = read(cpu, insn, 1)?;
    let b = read(cpu, insn, 2)?;
    let imm = insn.immediate8();
    let mut r = a;
    for i in 0..count(insn, 32) {
        if imm >> i & 1 != 0 {
            set(&mut r, 32, i, get(&b, 32, i));
        }
    }
    write(cpu, insn, 0, r)
}

/// VBLENDVPS/PD, VPBLENDVB: elements from the second source where the
/// sign bit of the same element of the mask register (imm8[7:4]) is set.
fn blend_variable(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    check_avx(cpu)?;
    let bits = match insn.mnemonic() {
        Mnemonic::Vpblendvb => 8,
        Mnemonic::Vblendvps => 32,
        _ => 64,
    };
    let a = read(cpu, insn, 1)?;
    let b = read(cpu, insn, 2)?;
    let mask = read(cpu, insn, 3)?;
    let mut r = a;
    for i in 0..count(insn, bits) {
        if get(&mask, bits, i) >> (bits - 1) != 0 {
            set(&mut r, bits, i, get(&b, bits, i));
        }
    }
    write(cpu, insn, 0, r)
}

/// VPTEST (all bits) and VTESTPS/PD (the sign bits of the elements): ZF
/// if first AND second is zero, CF if NOT first AND second is zero; OF,
/// SF, AF, PF cleared.
fn test(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    check_avx(cpu)?;
    let a = read(cpu, insn, 0)?;
    let b = read(cpu, insn, 1)?;
    let signs: u128 = match insn.mnemonic() {
        Mnemonic::Vtestps => (0..4).fold(0, |m, i| m | 1u128 << (32 * i + 31)),
        Mnemonic::Vtestpd => (1u128 << 63) | (1u128 << 127),
        _ => u128::MAX,
    };
    let halves = if is_256(insn) { 2 } else { 1 };
    let (mut and, mut andn) = (0u128, 0u128);
    for k in 0..halves {
        and |= a[k] & b[k] & signs;
        andn |= !a[k] & b[k] & signs;
    }
    let mut f = 0;
    if and == 0 {
        f |= ZF;
    }
    if andn == 0 {
        f |= CF;
    }
    cpu.s.flags.set_arith(ARITH, f);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elements_count_across_both_halves() {
        let mut v: Ymm = [0; 2];
        set(&mut v, 32, 5, 0xdead_beef);
        assert_eq!(v[1], 0xdead_beefu128 << 32);
        assert_eq!(get(&v, 32, 5), 0xdead_beef);
        assert_eq!(get(&v, 64, 2), 0xdead_beef_0000_0000);
    }
}
