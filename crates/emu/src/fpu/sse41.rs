//! SSE4.1's and SSE4.2's integer and data-movement instructions (SDM Vol.
//! 1 §12.10-12.11; Vol. 2 for each instruction), all on XMM registers:
//!
//! | group | instructions |
//! |---|---|
//! | packed arithmetic | PMULLD, PMULDQ, PMIN/PMAX SB SD UW UD, PCMPEQQ, PCMPGTQ (4.2), PACKUSDW |
//! | widening moves | PMOVSX/PMOVZX BW BD BQ WD WQ DQ (the source is the low lanes of an XMM register or a narrower memory operand) |
//! | blends | PBLENDW, BLENDPS, BLENDPD (by imm8); PBLENDVB, BLENDVPS, BLENDVPD (by the sign bits of the implicit XMM0) |
//! | lanes to and from GPRs and memory | PEXTRB/W/D/Q, PINSRB/D/Q, EXTRACTPS, INSERTPS |
//! | others | PTEST (ZF, CF), PHMINPOSUW, MPSADBW, MOVNTDQA |
//! | SSE4.2, on GPRs | CRC32 (CRC-32C, bits in reflected order) |
//!
//! None depends on MXCSR or raises SIMD floating-point exceptions: a
//! blend or an insert moves bits, whatever they encode. ROUND* and DP*
//! are in [`super::sse41_float`].

use iced_x86::{Instruction, Mnemonic, OpKind};

use super::access::{read_operand, write_operand, xmm_index};
use super::check_sse;
use super::lanes::{lane, slane, xmm_lanes};
use crate::exec::operand::{read_reg, write_reg};
use crate::exec::HandlerEntry;
use crate::exec::LinkEffect::KeepsLinks;
use crate::fault::Fault;
use crate::flags::{ARITH, CF, ZF};
use crate::Cpu;

/// The handler for `insn`, if this module implements it.
pub fn lookup(insn: &Instruction) -> Option<HandlerEntry> {
    use Mnemonic as M;
    let m = insn.mnemonic();
    Some(match m {
        M::Pextrw if is_sse41_pextrw(insn) => (extract, KeepsLinks),
        M::Pextrb | M::Pextrd | M::Pextrq | M::Extractps => (extract, KeepsLinks),
        M::Pinsrb | M::Pinsrd | M::Pinsrq | M::Insertps => (insert, KeepsLinks),
        M::Ptest => (ptest, KeepsLinks),
        M::Pblendvb | M::Blendvps | M::Blendvpd => (blend_variable, KeepsLinks),
        M::Crc32 => (crc32, KeepsLinks),
        M::Movntdqa => (packed, KeepsLinks),
        _ if compute(m, 0, 0, 0).is_some() => (packed, KeepsLinks),
        _ => return None,
    })
}

/// Whether `insn` is SSE4.1's PEXTRW (66 0F 3A 15, which may store to
/// memory), not SSE2's.
pub fn is_sse41_pextrw(insn: &Instruction) -> bool {
    matches!(
        insn.code(),
        iced_x86::Code::Pextrw_r32m16_xmm_imm8 | iced_x86::Code::Pextrw_r64m16_xmm_imm8
    )
}

/// Each lane of `bits` bits from `b` where `pick(i)`, else from `a`.
fn blend(a: u128, b: u128, bits: u32, pick: impl Fn(u32) -> bool) -> u128 {
    xmm_lanes(bits, |i| {
        if pick(i) {
            lane(b, bits, i) as i64
        } else {
            lane(a, bits, i) as i64
        }
    })
}

/// The widening move `m`: (source lane bits, destination lane bits,
/// signed), or `None`.
pub fn widening(m: Mnemonic) -> Option<(u32, u32, bool)> {
    use Mnemonic as M;
    Some(match m {
        M::Pmovsxbw => (8, 16, true),
        M::Pmovsxbd => (8, 32, true),
        M::Pmovsxbq => (8, 64, true),
        M::Pmovsxwd => (16, 32, true),
        M::Pmovsxwq => (16, 64, true),
        M::Pmovsxdq => (32, 64, true),
        M::Pmovzxbw => (8, 16, false),
        M::Pmovzxbd => (8, 32, false),
        M::Pmovzxbq => (8, 64, false),
        M::Pmovzxwd => (16, 32, false),
        M::Pmovzxwq => (16, 64, false),
        M::Pmovzxdq => (32, 64, false),
        _ => return None,
    })
}

/// The result of the packed instruction `m` on destination `a`, source
/// `b` and `imm`, or `None` if `m` is not one of this module's packed
/// forms.
pub fn compute(m: Mnemonic, a: u128, b: u128, imm: u8) -> Option<u128> {
    use Mnemonic as M;
    if let Some((from, to, signed)) = widening(m) {
        return Some(xmm_lanes(to, |i| {
            if signed {
                slane(b, from, i)
            } else {
                lane(b, from, i) as i64
            }
        }));
    }
    let min_max = |bits: u32, signed: bool, max: bool| {
        xmm_lanes(bits, |i| {
            let (x, y) = if signed {
                (slane(a, bits, i), slane(b, bits, i))
            } else {
                (lane(a, bits, i) as i64, lane(b, bits, i) as i64)
            };
            if max {
                x.max(y)
            } else {
                x.min(y)
            }
        })
    };
    Some(match m {
        M::Pmulld => xmm_lanes(32, |i| slane(a, 32, i).wrapping_mul(slane(b, 32, i))),
        M::Pmuldq => xmm_lanes(64, |i| slane(a, 32, 2 * i) * slane(b, 32, 2 * i)),
        M::Pminsb => min_max(8, true, false),
        M::Pmaxsb => min_max(8, true, true),
        M::Pminsd => min_max(32, true, false),
        M::Pmaxsd => min_max(32, true, true),
        M::Pminuw => min_max(16, false, false),
        M::Pmaxuw => min_max(16, false, true),
        M::Pminud => min_max(32, false, false),
        M::Pmaxud => min_max(32, false, true),
        M::Pcmpeqq => xmm_lanes(64, |i| -i64::from(lane(a, 64, i) == lane(b, 64, i))),
        M::Pcmpgtq => xmm_lanes(64, |i| -i64::from(slane(a, 64, i) > slane(b, 64, i))),
        M::Packusdw => xmm_lanes(16, |i| {
            let (v, j) = if i < 4 { (a, i) } else { (b, i - 4) };
            slane(v, 32, j).clamp(0, 0xffff)
        }),
        M::Pblendw => blend(a, b, 16, |i| imm >> i & 1 != 0),
        M::Blendps => blend(a, b, 32, |i| imm >> i & 1 != 0),
        M::Blendpd => blend(a, b, 64, |i| imm >> i & 1 != 0),
        M::Phminposuw => {
            let (index, value) = (0..8u32)
                .map(|i| (i, lane(b, 16, i)))
                .min_by_key(|&(i, v)| (v, i))
                .unwrap_or((0, 0));
            u128::from(value) | u128::from(index) << 16
        }
        M::Mpsadbw => {
            let src = u32::from(imm & 3) * 4;
            let dst = u32::from(imm >> 2 & 1) * 4;
            xmm_lanes(16, |i| {
                (0..4)
                    .map(|j| lane(a, 8, dst + i + j).abs_diff(lane(b, 8, src + j)) as i64)
                    .sum()
            })
        }
        _ => return None,
    })
}

/// The packed forms and MOVNTDQA (a load: the source as it is).
fn packed(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    check_sse(cpu)?;
    let m = insn.mnemonic();
    let b = read_operand(cpu, insn, 1)?;
    let r = if m == Mnemonic::Movntdqa {
        b
    } else {
        let a = cpu.s.fpu.xmm[xmm_index(insn.op_register(0))];
        let imm = if insn.op_count() == 3 {
            insn.immediate8()
        } else {
            0
        };
        compute(m, a, b, imm).unwrap_or(a)
    };
    cpu.s.fpu.xmm[xmm_index(insn.op_register(0))] = r;
    Ok(())
}

/// PBLENDVB, BLENDVPS, BLENDVPD: lanes from the source where the lane's
/// sign bit in XMM0 is set.
fn blend_variable(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    check_sse(cpu)?;
    let bits = match insn.mnemonic() {
        Mnemonic::Pblendvb => 8,
        Mnemonic::Blendvps => 32,
        _ => 64,
    };
    let d = xmm_index(insn.op_register(0));
    let a = cpu.s.fpu.xmm[d];
    let b = read_operand(cpu, insn, 1)?;
    let mask = cpu.s.fpu.xmm[0];
    cpu.s.fpu.xmm[d] = blend(a, b, bits, |i| lane(mask, bits, i) >> (bits - 1) != 0);
    Ok(())
}

/// PTEST: ZF = (dst AND src) is zero, CF = (NOT dst AND src) is zero; OF,
/// SF, AF and PF cleared.
fn ptest(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    check_sse(cpu)?;
    let a = cpu.s.fpu.xmm[xmm_index(insn.op_register(0))];
    let b = read_operand(cpu, insn, 1)?;
    let mut f = 0;
    if a & b == 0 {
        f |= ZF;
    }
    if !a & b == 0 {
        f |= CF;
    }
    cpu.s.flags.set_arith(ARITH, f);
    Ok(())
}

/// PEXTRB/W/D/Q and EXTRACTPS: the selected lane to a GPR (zero-extended)
/// or to memory of the lane's size.
fn extract(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    check_sse(cpu)?;
    let v = cpu.s.fpu.xmm[xmm_index(insn.op_register(1))];
    let bits = match insn.mnemonic() {
        Mnemonic::Pextrb => 8,
        Mnemonic::Pextrw => 16,
        Mnemonic::Pextrq => 64,
        _ => 32,
    };
    let sel = u32::from(insn.immediate8()) & (128 / bits - 1);
    let x = lane(v, bits, sel);
    // A 32-bit (or 64-bit) GPR gets the lane zero-extended.
    write_operand(cpu, insn, 0, u128::from(x))
}

/// PINSRB/D/Q and INSERTPS.
fn insert(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    check_sse(cpu)?;
    let d = xmm_index(insn.op_register(0));
    let a = cpu.s.fpu.xmm[d];
    let imm = insn.immediate8();
    let r = if insn.mnemonic() == Mnemonic::Insertps {
        // A register source gives lane imm[7:6]; memory gives its dword.
        let x = if insn.op_kind(1) == OpKind::Register {
            lane(
                cpu.s.fpu.xmm[xmm_index(insn.op_register(1))],
                32,
                u32::from(imm >> 6),
            )
        } else {
            read_operand(cpu, insn, 1)? as u32 as u64
        };
        let at = u32::from(imm >> 4 & 3);
        let put = (a & !(0xffff_ffffu128 << (32 * at))) | u128::from(x) << (32 * at);
        xmm_lanes(32, |i| {
            if imm >> i & 1 != 0 {
                0
            } else {
                lane(put, 32, i) as i64
            }
        })
    } else {
        let bits = match insn.mnemonic() {
            Mnemonic::Pinsrb => 8,
            Mnemonic::Pinsrd => 32,
            _ => 64,
        };
        let x = read_operand(cpu, insn, 1)? as u64;
        let sel = u32::from(imm) & (128 / bits - 1);
        let mask = if bits == 64 {
            u64::MAX
        } else {
            (1u64 << bits) - 1
        };
        (a & !(u128::from(mask) << (bits * sel))) | u128::from(x & mask) << (bits * sel)
    };
    cpu.s.fpu.xmm[d] = r;
    Ok(())
}

/// The CRC-32C polynomial (Castagnoli), bit-reflected.
const CRC32C_REFLECTED: u32 = 0x82f6_3b78;

/// CRC-32C of the low `bytes` bytes of `data`, continuing from `crc`, as
/// CRC32 computes it (bits reflected, no inversion).
pub fn crc32c(mut crc: u32, data: u64, bytes: u32) -> u32 {
    for i in 0..bytes {
        crc ^= u32::from((data >> (8 * i)) as u8);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ CRC32C_REFLECTED
            } else {
                crc >> 1
            };
        }
    }
    crc
}

/// CRC32 r32/r64, r/m8/16/32/64: the destination's low 32 bits are the
/// running CRC; the result is zero-extended into the register.
fn crc32(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    let bytes = if insn.op_kind(1) == OpKind::Register {
        insn.op_register(1).size() as u32
    } else {
        insn.memory_size().size() as u32
    };
    let data = read_operand(cpu, insn, 1)? as u64;
    let dst = insn.op_register(0);
    let crc = crc32c(read_reg(cpu, dst) as u32, data, bytes);
    write_reg(cpu, dst, u64::from(crc));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use Mnemonic as M;

    #[test]
    fn crc32c_matches_the_check_value() {
        // CRC-32C("123456789") = 0xE3069283 with the usual pre/post inversion.
        let crc = b"123456789"
            .iter()
            .fold(!0u32, |c, &b| crc32c(c, u64::from(b), 1));
        assert_eq!(!crc, 0xe306_9283);
        // Eight bytes at once give what eight single bytes give.
        let word = u64::from_le_bytes(*b"12345678");
        let bytewise = b"12345678"
            .iter()
            .fold(0x1234_5678, |c, &b| crc32c(c, u64::from(b), 1));
        assert_eq!(crc32c(0x1234_5678, word, 8), bytewise);
    }

    #[test]
    fn widening_moves_extend_the_low_lanes() {
        let b = 0x80_7f_01_ffu128;
        assert_eq!(
            compute(M::Pmovsxbw, 0, b, 0).unwrap(),
            0xff80_007f_0001_ffffu128
        );
        assert_eq!(
            compute(M::Pmovzxbd, 0, b, 0).unwrap(),
            0x80u128 << 96 | 0x7fu128 << 64 | 0x01u128 << 32 | 0xff
        );
    }

    #[test]
    fn phminposuw_takes_the_lowest_index_of_the_minimum() {
        let b = [5u16, 3, 9, 3, 7, 8, 8, 8]
            .iter()
            .enumerate()
            .fold(0u128, |r, (i, &w)| r | u128::from(w) << (16 * i));
        assert_eq!(compute(M::Phminposuw, 0, b, 0).unwrap(), 3 | 1 << 16);
    }

    #[test]
    fn mpsadbw_sums_absolute_differences_of_sliding_blocks() {
        let a = u128::from_le_bytes([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]);
        let b = u128::from_le_bytes([0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
        // imm 0: source bytes 0-3 (zeros), destination from byte 0: word i
        // is i + (i+1) + (i+2) + (i+3).
        let r = compute(M::Mpsadbw, a, b, 0).unwrap();
        assert_eq!(lane(r, 16, 0), 6);
        assert_eq!(lane(r, 16, 7), 7 + 8 + 9 + 10);
        // imm 1: source bytes 4-7 (ones).
        let r = compute(M::Mpsadbw, a, b, 1).unwrap();
        assert_eq!(lane(r, 16, 0), 4, "|0-1| + |1-1| + |2-1| + |3-1|");
    }

    #[test]
    fn packusdw_and_pmuldq() {
        let a = 0x0001_0000u128 | (0xffff_ffffu128 << 32) | (0x8000u128 << 64);
        assert_eq!(
            compute(M::Packusdw, a, 0, 0).unwrap(),
            0xffff | 0x8000 << 32
        );
        let a = 0xffff_fffeu128; // -2
        let b = 3u128;
        assert_eq!(compute(M::Pmuldq, a, b, 0).unwrap() as u64, (-6i64) as u64);
    }
}
