//! SSE2 and MMX packed-integer instructions and the bitwise logical
//! instructions of SSE/SSE2 (SDM Vol. 1 §9.4, §11.4.3; Vol. 2 pages):
//! PADD*/PSUB* (wrapping and saturating), PMULLW/PMULHW/PMULHUW/PMULUDQ,
//! PMADDWD, PAVGB/W, PSADBW, PMINUB/PMAXUB/PMINSW/PMAXSW, PCMPEQ*/PCMPGT*,
//! PAND/PANDN/POR/PXOR and ANDPS/ANDNPS/ORPS/XORPS (+PD), the shifts
//! PSLL/PSRL/PSRA (immediate or register count), PSLLDQ/PSRLDQ,
//! PACKSSWB/PACKSSDW/PACKUSWB, PUNPCKL*/PUNPCKH*, PSHUFD/PSHUFHW/PSHUFLW/
//! PSHUFW, PEXTRW and PINSRW; and the lane moves SHUFPS/SHUFPD and
//! UNPCKLPS/UNPCKHPS/UNPCKLPD/UNPCKHPD. Every form works on XMM registers (128 bits)
//! and, where the SDM defines one, on MMX registers (64 bits).

use iced_x86::{Instruction, Mnemonic, OpKind};

use super::access::{mmx_enter, read_operand, write_operand};
use super::check_simd;
use super::lanes::{lane, ones, sx};
use crate::exec::operand::write_reg;
use crate::exec::HandlerEntry;
use crate::exec::LinkEffect::KeepsLinks;
use crate::fault::Fault;
use crate::Cpu;

/// The handler for `insn`, if this module implements it, with its effect
/// on block links.
pub fn lookup(insn: &Instruction) -> Option<HandlerEntry> {
    use Mnemonic as M;
    match insn.mnemonic() {
        // 66 0F 3A 15 (PEXTRW to memory) is SSE4.1's: `super::sse41`.
        M::Pextrw
            if insn.op_kind(0) == OpKind::Register && !super::sse41::is_sse41_pextrw(insn) =>
        {
            Some((pextrw, KeepsLinks))
        }
        M::Pinsrw => Some((pinsrw, KeepsLinks)),
        m if compute(m, 0, 0, 0, 128).is_some() => Some((packed, KeepsLinks)),
        _ => None,
    }
}

/// Applies `f` lane by lane to `a` and `b` over `width` bits.
#[inline]
fn map2(a: u128, b: u128, bits: u32, width: u32, f: impl Fn(u64, u64) -> u64) -> u128 {
    let mut r = 0u128;
    for i in 0..width / bits {
        let v = f(lane(a, bits, i), lane(b, bits, i)) & ones(bits);
        r |= u128::from(v) << (bits * i);
    }
    r
}

/// Signed saturation of `v` to `bits` bits.
fn sat_s(v: i64, bits: u32) -> u64 {
    let max = (1i64 << (bits - 1)) - 1;
    let min = -(1i64 << (bits - 1));
    v.clamp(min, max) as u64
}

/// Unsigned saturation of `v` to `bits` bits.
fn sat_u(v: i64, bits: u32) -> u64 {
    v.clamp(0, ones(bits) as i64) as u64
}

/// Shifts every lane; `count` is the full count (≥ lane width clears, or
/// fills with the sign for arithmetic shifts).
fn shift(a: u128, bits: u32, width: u32, count: u64, kind: u8) -> u128 {
    map2(a, 0, bits, width, |x, _| match kind {
        0 if count < u64::from(bits) => x << count,
        1 if count < u64::from(bits) => x >> count,
        2 => (sx(x, bits) >> count.min(u64::from(bits) - 1)) as u64,
        _ => 0,
    })
}

/// Interleaves the low (`high` = false) or high halves of `a` and `b`.
fn unpack(a: u128, b: u128, bits: u32, width: u32, high: bool) -> u128 {
    let half = width / bits / 2;
    let base = if high { half } else { 0 };
    let mut r = 0u128;
    for i in 0..half {
        r |= u128::from(lane(a, bits, base + i)) << (bits * 2 * i);
        r |= u128::from(lane(b, bits, base + i)) << (bits * (2 * i + 1));
    }
    r
}

/// Packs the `bits`-wide lanes of `a` then `b` into lanes of `bits / 2`.
fn pack(a: u128, b: u128, bits: u32, width: u32, signed_sat: bool) -> u128 {
    let n = width / bits;
    let mut r = 0u128;
    for i in 0..2 * n {
        let src = if i < n { a } else { b };
        let v = sx(lane(src, bits, i % n), bits);
        let p = if signed_sat {
            sat_s(v, bits / 2)
        } else {
            sat_u(v, bits / 2)
        };
        r |= u128::from(p & ones(bits / 2)) << (bits / 2 * i);
    }
    r
}

/// The result of packed operation `m` on destination `a` and source `b`
/// (`imm` for shuffles and immediate shifts) over `width` bits, or `None`
/// if `m` is not a packed-integer/logical mnemonic of this module.
pub fn compute(m: Mnemonic, a: u128, b: u128, imm: u8, width: u32) -> Option<u128> {
    use Mnemonic as M;
    let cnt = b as u64;
    let s = |x: u64, y: u64, bits: u32| (sx(x, bits), sx(y, bits));
    Some(match m {
        M::Paddb => map2(a, b, 8, width, |x, y| x.wrapping_add(y)),
        M::Paddw => map2(a, b, 16, width, |x, y| x.wrapping_add(y)),
        M::Paddd => map2(a, b, 32, width, |x, y| x.wrapping_add(y)),
        M::Paddq => map2(a, b, 64, width, |x, y| x.wrapping_add(y)),
        M::Psubb => map2(a, b, 8, width, |x, y| x.wrapping_sub(y)),
        M::Psubw => map2(a, b, 16, width, |x, y| x.wrapping_sub(y)),
        M::Psubd => map2(a, b, 32, width, |x, y| x.wrapping_sub(y)),
        M::Psubq => map2(a, b, 64, width, |x, y| x.wrapping_sub(y)),
        M::Paddsb => map2(a, b, 8, width, |x, y| {
            let (x, y) = s(x, y, 8);
            sat_s(x + y, 8)
        }),
        M::Paddsw => map2(a, b, 16, width, |x, y| {
            let (x, y) = s(x, y, 16);
            sat_s(x + y, 16)
        }),
        M::Psubsb => map2(a, b, 8, width, |x, y| {
            let (x, y) = s(x, y, 8);
            sat_s(x - y, 8)
        }),
        M::Psubsw => map2(a, b, 16, width, |x, y| {
            let (x, y) = s(x, y, 16);
            sat_s(x - y, 16)
        }),
        M::Paddusb => map2(a, b, 8, width, |x, y| sat_u(x as i64 + y as i64, 8)),
        M::Paddusw => map2(a, b, 16, width, |x, y| sat_u(x as i64 + y as i64, 16)),
        M::Psubusb => map2(a, b, 8, width, |x, y| sat_u(x as i64 - y as i64, 8)),
        M::Psubusw => map2(a, b, 16, width, |x, y| sat_u(x as i64 - y as i64, 16)),
        M::Pmullw => map2(a, b, 16, width, |x, y| x.wrapping_mul(y)),
        M::Pmulhw => map2(a, b, 16, width, |x, y| {
            let (x, y) = s(x, y, 16);
            ((x * y) >> 16) as u64
        }),
        M::Pmulhuw => map2(a, b, 16, width, |x, y| (x * y) >> 16),
        M::Pmuludq => map2(a, b, 64, width, |x, y| {
            (x & 0xffff_ffff) * (y & 0xffff_ffff)
        }),
        M::Pmaddwd => map2(a, b, 32, width, |x, y| {
            let (x0, y0) = s(x & 0xffff, y & 0xffff, 16);
            let (x1, y1) = s(x >> 16, y >> 16, 16);
            (x0 * y0).wrapping_add(x1 * y1) as u64
        }),
        M::Pavgb => map2(a, b, 8, width, |x, y| (x + y + 1) >> 1),
        M::Pavgw => map2(a, b, 16, width, |x, y| (x + y + 1) >> 1),
        M::Psadbw => map2(a, b, 64, width, |x, y| {
            (0..8)
                .map(|i| ((x >> (8 * i)) & 0xff).abs_diff((y >> (8 * i)) & 0xff))
                .sum()
        }),
        M::Pminub => map2(a, b, 8, width, |x, y| x.min(y)),
        M::Pmaxub => map2(a, b, 8, width, |x, y| x.max(y)),
        M::Pminsw => map2(
            a,
            b,
            16,
            width,
            |x, y| if sx(x, 16) < sx(y, 16) { x } else { y },
        ),
        M::Pmaxsw => map2(
            a,
            b,
            16,
            width,
            |x, y| if sx(x, 16) > sx(y, 16) { x } else { y },
        ),
        M::Pcmpeqb => map2(a, b, 8, width, |x, y| if x == y { !0 } else { 0 }),
        M::Pcmpeqw => map2(a, b, 16, width, |x, y| if x == y { !0 } else { 0 }),
        M::Pcmpeqd => map2(a, b, 32, width, |x, y| if x == y { !0 } else { 0 }),
        M::Pcmpgtb => map2(
            a,
            b,
            8,
            width,
            |x, y| if sx(x, 8) > sx(y, 8) { !0 } else { 0 },
        ),
        M::Pcmpgtw => map2(
            a,
            b,
            16,
            width,
            |x, y| if sx(x, 16) > sx(y, 16) { !0 } else { 0 },
        ),
        M::Pcmpgtd => map2(
            a,
            b,
            32,
            width,
            |x, y| if sx(x, 32) > sx(y, 32) { !0 } else { 0 },
        ),
        M::Pand | M::Andps | M::Andpd => a & b,
        M::Pandn | M::Andnps | M::Andnpd => !a & b,
        M::Por | M::Orps | M::Orpd => a | b,
        M::Pxor | M::Xorps | M::Xorpd => a ^ b,
        M::Psllw => shift(a, 16, width, cnt, 0),
        M::Pslld => shift(a, 32, width, cnt, 0),
        M::Psllq => shift(a, 64, width, cnt, 0),
        M::Psrlw => shift(a, 16, width, cnt, 1),
        M::Psrld => shift(a, 32, width, cnt, 1),
        M::Psrlq => shift(a, 64, width, cnt, 1),
        M::Psraw => shift(a, 16, width, cnt, 2),
        M::Psrad => shift(a, 32, width, cnt, 2),
        M::Pslldq => {
            let n = u32::from(imm.min(16));
            if n >= 16 {
                0
            } else {
                a << (8 * n)
            }
        }
        M::Psrldq => {
            let n = u32::from(imm.min(16));
            if n >= 16 {
                0
            } else {
                a >> (8 * n)
            }
        }
        M::Packsswb => pack(a, b, 16, width, true),
        M::Packssdw => pack(a, b, 32, width, true),
        M::Packuswb => pack(a, b, 16, width, false),
        M::Punpcklbw => unpack(a, b, 8, width, false),
        M::Punpcklwd => unpack(a, b, 16, width, false),
        M::Punpckldq => unpack(a, b, 32, width, false),
        M::Punpcklqdq => unpack(a, b, 64, width, false),
        M::Punpckhbw => unpack(a, b, 8, width, true),
        M::Punpckhwd => unpack(a, b, 16, width, true),
        M::Punpckhdq => unpack(a, b, 32, width, true),
        M::Punpckhqdq => unpack(a, b, 64, width, true),
        M::Pshufd => shuffle(b, 32, 0, imm),
        M::Pshuflw => (b & !0xffff_ffff_ffff_ffffu128) | shuffle(b, 16, 0, imm),
        M::Pshufhw => (b & 0xffff_ffff_ffff_ffffu128) | shuffle(b, 16, 4, imm),
        M::Pshufw => shuffle(b, 16, 0, imm),
        M::Unpcklps => unpack(a, b, 32, width, false),
        M::Unpckhps => unpack(a, b, 32, width, true),
        M::Unpcklpd => unpack(a, b, 64, width, false),
        M::Unpckhpd => unpack(a, b, 64, width, true),
        M::Shufps => {
            let pick = |v: u128, i: u32| u128::from(lane(v, 32, u32::from(imm >> (2 * i)) & 3));
            pick(a, 0) | pick(a, 1) << 32 | pick(b, 2) << 64 | pick(b, 3) << 96
        }
        M::Shufpd => {
            u128::from(lane(a, 64, u32::from(imm & 1)))
                | u128::from(lane(b, 64, u32::from(imm >> 1) & 1)) << 64
        }
        _ => return None,
    })
}

/// Four lanes of `bits` starting at lane `base` of `v`, picked by the
/// 2-bit fields of `imm`, placed at lanes `base..base + 4`.
fn shuffle(v: u128, bits: u32, base: u32, imm: u8) -> u128 {
    let mut r = 0u128;
    for i in 0..4 {
        let sel = u32::from(imm >> (2 * i)) & 3;
        r |= u128::from(lane(v, bits, base + sel)) << (bits * (base + i));
    }
    r
}

/// The generic handler of every mnemonic [`compute`] knows.
fn packed(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    let mmx = check_simd(cpu, insn)?;
    let width = if mmx { 64 } else { 128 };
    let m = insn.mnemonic();
    // Immediate-count shifts and PSLLDQ/PSRLDQ: (reg, imm8).
    let imm_only = insn.op_count() == 2 && insn.op_kind(1) == OpKind::Immediate8;
    let a = read_operand(cpu, insn, 0)?;
    let (b, imm) = if imm_only {
        (u128::from(insn.immediate8()), insn.immediate8())
    } else if insn.op_count() == 3 {
        (read_operand(cpu, insn, 1)?, insn.immediate8())
    } else {
        (read_operand(cpu, insn, 1)?, 0)
    };
    let r = compute(m, a, b, imm, width).unwrap_or(a);
    write_operand(cpu, insn, 0, r)?;
    if mmx {
        mmx_enter(cpu);
    }
    Ok(())
}

/// PEXTRW r32, xmm/mm, imm8: the selected word, zero-extended.
fn pextrw(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    let mmx = check_simd(cpu, insn)?;
    let v = read_operand(cpu, insn, 1)?;
    let sel = u32::from(insn.immediate8()) & if mmx { 3 } else { 7 };
    let r = insn.op_register(0);
    if r.is_gpr() {
        let g = crate::exec::operand::gpr(r);
        cpu.s.write_gpr(g.index, 8, false, lane(v, 16, sel));
    } else {
        write_reg(cpu, r, lane(v, 16, sel));
    }
    if mmx {
        mmx_enter(cpu);
    }
    Ok(())
}

/// PINSRW xmm/mm, r32/m16, imm8: replaces the selected word.
fn pinsrw(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    let mmx = check_simd(cpu, insn)?;
    let a = read_operand(cpu, insn, 0)?;
    let w = read_operand(cpu, insn, 1)? & 0xffff;
    let sel = u32::from(insn.immediate8()) & if mmx { 3 } else { 7 };
    let r = (a & !(0xffffu128 << (16 * sel))) | (w << (16 * sel));
    write_operand(cpu, insn, 0, r)?;
    if mmx {
        mmx_enter(cpu);
    }
    Ok(())
}
