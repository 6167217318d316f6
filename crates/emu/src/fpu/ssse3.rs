//! SSSE3, the Supplemental Streaming SIMD Extensions 3 (SDM Vol. 1
//! §12.9; Vol. 2 for each instruction): integer instructions on MMX
//! registers (64 bits) and XMM registers (128 bits), all encoded
//! `0F 38 xx` or `0F 3A 0F`:
//!
//! | instruction | what each lane gets |
//! |---|---|
//! | PSHUFB | the destination byte the source byte selects (its low 3/4 bits), or 0 if its bit 7 is set |
//! | PHADDW/PHADDD, PHSUBW/PHSUBD | sums/differences of adjacent pairs, the destination's pairs in the low half, the source's in the high half |
//! | PHADDSW/PHSUBSW | the same with signed saturation |
//! | PMADDUBSW | unsigned destination bytes times signed source bytes, adjacent products summed with signed saturation to words |
//! | PMULHRSW | signed words multiplied, rounded and scaled: `((a * b >> 14) + 1) >> 1` |
//! | PSIGNB/W/D | the destination lane negated, kept or zeroed as the source lane is negative, positive or zero |
//! | PABSB/W/D | the source lane's absolute value (0x80 stays 0x80) |
//! | PALIGNR | the destination:source pair shifted right by imm8 bytes |
//!
//! None of them touches MXCSR or raises SIMD floating-point exceptions;
//! their 128-bit memory operands must be aligned (the shared operand
//! access checks that), the MMX forms enter MMX state.

use iced_x86::{Instruction, Mnemonic};

use super::access::{mmx_enter, read_operand, write_operand};
use super::check_simd;
use super::lanes::{build, lane, slane};
use crate::exec::HandlerEntry;
use crate::exec::LinkEffect::KeepsLinks;
use crate::fault::Fault;
use crate::Cpu;

/// The handler for `insn`, if it is an SSSE3 instruction, with its effect
/// on block links.
pub fn lookup(insn: &Instruction) -> Option<HandlerEntry> {
    if compute(insn.mnemonic(), 0, 0, 0, 128).is_some() {
        Some((ssse3, KeepsLinks))
    } else {
        None
    }
}

/// Signed saturation of `v` to a 16-bit lane.
fn sat16(v: i64) -> i64 {
    v.clamp(i64::from(i16::MIN), i64::from(i16::MAX))
}

/// The horizontal operation of PHADD*/PHSUB*: `f` on adjacent pairs of
/// `bits`-wide lanes, the destination's pairs first, then the source's.
fn horizontal(a: u128, b: u128, bits: u32, width: u32, f: impl Fn(i64, i64) -> i64) -> u128 {
    let half = width / bits / 2;
    build(bits, 2 * half, |i| {
        let (v, j) = if i < half { (a, i) } else { (b, i - half) };
        f(slane(v, bits, 2 * j), slane(v, bits, 2 * j + 1))
    })
}

/// The result of SSSE3 mnemonic `m` on destination `a` and source `b`
/// (`imm` for PALIGNR) over `width` bits (64: MMX, 128: XMM), or `None`
/// if `m` is not SSSE3.
pub fn compute(m: Mnemonic, a: u128, b: u128, imm: u8, width: u32) -> Option<u128> {
    use Mnemonic as M;
    let lanes = |bits: u32| width / bits;
    Some(match m {
        M::Pshufb => {
            let index_mask = u64::from(width / 8 - 1);
            build(8, lanes(8), |i| {
                let sel = lane(b, 8, i);
                if sel & 0x80 != 0 {
                    0
                } else {
                    lane(a, 8, (sel & index_mask) as u32) as i64
                }
            })
        }
        M::Phaddw => horizontal(a, b, 16, width, |x, y| x + y),
        M::Phaddd => horizontal(a, b, 32, width, |x, y| x + y),
        M::Phaddsw => horizontal(a, b, 16, width, |x, y| sat16(x + y)),
        M::Phsubw => horizontal(a, b, 16, width, |x, y| x - y),
        M::Phsubd => horizontal(a, b, 32, width, |x, y| x - y),
        M::Phsubsw => horizontal(a, b, 16, width, |x, y| sat16(x - y)),
        M::Pmaddubsw => build(16, lanes(16), |i| {
            let p = |k: u32| lane(a, 8, k) as i64 * slane(b, 8, k);
            sat16(p(2 * i) + p(2 * i + 1))
        }),
        M::Pmulhrsw => build(16, lanes(16), |i| {
            let product = slane(a, 16, i) * slane(b, 16, i);
            ((product >> 14) + 1) >> 1
        }),
        M::Psignb | M::Psignw | M::Psignd => {
            let bits = match m {
                M::Psignb => 8,
                M::Psignw => 16,
                _ => 32,
            };
            build(bits, lanes(bits), |i| match slane(b, bits, i).signum() {
                -1 => slane(a, bits, i).wrapping_neg(),
                0 => 0,
                _ => slane(a, bits, i),
            })
        }
        M::Pabsb | M::Pabsw | M::Pabsd => {
            let bits = match m {
                M::Pabsb => 8,
                M::Pabsw => 16,
                _ => 32,
            };
            build(bits, lanes(bits), |i| slane(b, bits, i).abs())
        }
        M::Palignr => {
            // The destination:source pair, 2 * width bits, as a u128 pair.
            let shift = u32::from(imm) * 8;
            let (hi, lo) = if width == 128 {
                (a, b)
            } else {
                (0, (a << 64) | (b & u128::from(u64::MAX)))
            };
            let total = if width == 128 { 256 } else { 128 };
            let r = if shift >= total {
                0
            } else if shift >= 128 {
                hi >> (shift - 128)
            } else if shift == 0 {
                lo
            } else {
                (lo >> shift) | (hi << (128 - shift))
            };
            if width == 128 {
                r
            } else {
                r & u128::from(u64::MAX)
            }
        }
        _ => return None,
    })
}

/// The handler of every SSSE3 mnemonic: destination, source, and the
/// immediate of PALIGNR.
fn ssse3(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    let mmx = check_simd(cpu, insn)?;
    let width = if mmx { 64 } else { 128 };
    let a = read_operand(cpu, insn, 0)?;
    let b = read_operand(cpu, insn, 1)?;
    let imm = if insn.op_count() == 3 {
        insn.immediate8()
    } else {
        0
    };
    let r = compute(insn.mnemonic(), a, b, imm, width).unwrap_or(a);
    write_operand(cpu, insn, 0, r)?;
    if mmx {
        mmx_enter(cpu);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use Mnemonic as M;

    /// Bytes, lowest first, as a lane vector.
    fn bytes(b: &[u8]) -> u128 {
        b.iter()
            .enumerate()
            .fold(0u128, |r, (i, &x)| r | u128::from(x) << (8 * i))
    }

    /// Words, lowest first.
    fn words(w: &[i16]) -> u128 {
        w.iter()
            .enumerate()
            .fold(0u128, |r, (i, &x)| r | u128::from(x as u16) << (16 * i))
    }

    #[test]
    fn pshufb_selects_bytes_and_zeroes_where_bit_7_is_set() {
        let a = bytes(&[
            10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25,
        ]);
        let sel = bytes(&[15, 0, 0x80, 1, 0x8f, 0x1f, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0xff]);
        let r = compute(M::Pshufb, a, sel, 0, 128).unwrap();
        assert_eq!(
            r,
            bytes(&[25, 10, 0, 11, 0, 25, 12, 13, 14, 15, 16, 17, 18, 19, 20, 0])
        );
        // MMX: the index is 3 bits.
        let r = compute(M::Pshufb, a, bytes(&[7, 8, 0x80, 9, 0, 0, 0, 0]), 0, 64).unwrap();
        assert_eq!(r, bytes(&[17, 10, 0, 11, 10, 10, 10, 10]));
    }

    #[test]
    fn horizontal_adds_take_destination_pairs_then_source_pairs() {
        let a = words(&[1, 2, 3, 4, 5, 6, 7, 8]);
        let b = words(&[10, 20, 30, 40, 50, 60, 70, 80]);
        assert_eq!(
            compute(M::Phaddw, a, b, 0, 128).unwrap(),
            words(&[3, 7, 11, 15, 30, 70, 110, 150])
        );
        assert_eq!(
            compute(M::Phsubw, a, b, 0, 128).unwrap(),
            words(&[-1, -1, -1, -1, -10, -10, -10, -10])
        );
        let big = words(&[i16::MAX, 1, i16::MIN, -1, 0, 0, 0, 0]);
        assert_eq!(
            compute(M::Phaddsw, big, 0, 0, 128).unwrap(),
            words(&[i16::MAX, i16::MIN, 0, 0, 0, 0, 0, 0])
        );
        assert_eq!(
            compute(M::Phaddw, big, 0, 0, 128).unwrap(),
            words(&[i16::MIN, i16::MAX, 0, 0, 0, 0, 0, 0])
        );
        // MMX: two pairs each.
        assert_eq!(
            compute(
                M::Phaddd,
                0x0000_0002_0000_0001,
                0x0000_0005_0000_0004,
                0,
                64
            )
            .unwrap(),
            0x0000_0009_0000_0003
        );
    }

    #[test]
    fn pmaddubsw_multiplies_unsigned_by_signed_and_saturates() {
        let a = bytes(&[255, 255, 1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        let b = bytes(&[127, 127, 0xff, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            compute(M::Pmaddubsw, a, b, 0, 128).unwrap(),
            words(&[i16::MAX, 5, 0, 0, 0, 0, 0, 0])
        );
    }

    #[test]
    fn pmulhrsw_rounds() {
        let a = words(&[0x4000, -0x8000, 3, 0, 0, 0, 0, 0]);
        let b = words(&[0x4000, -0x8000, 0x2aab, 0, 0, 0, 0, 0]);
        // 0.5 * 0.5 = 0.25; -1 * -1 = 1, which wraps to -0x8000; 3 * 1/3.
        assert_eq!(
            compute(M::Pmulhrsw, a, b, 0, 128).unwrap(),
            words(&[0x2000, -0x8000, 1, 0, 0, 0, 0, 0])
        );
    }

    #[test]
    fn psign_and_pabs() {
        let a = words(&[5, 5, 5, i16::MIN, 0, 0, 0, 0]);
        let b = words(&[-1, 0, 7, -3, 0, 0, 0, 0]);
        assert_eq!(
            compute(M::Psignw, a, b, 0, 128).unwrap(),
            words(&[-5, 0, 5, i16::MIN, 0, 0, 0, 0])
        );
        assert_eq!(
            compute(M::Pabsb, 0, bytes(&[0x80, 0xff, 1, 0x7f]), 0, 64).unwrap(),
            bytes(&[0x80, 1, 1, 0x7f])
        );
    }

    #[test]
    fn palignr_shifts_the_pair() {
        let a = bytes(&[
            16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31,
        ]);
        let b = bytes(&[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]);
        let pair = |k: u8| {
            bytes(
                &(k..k + 16)
                    .map(|x| if x < 32 { x } else { 0 })
                    .collect::<Vec<_>>(),
            )
        };
        for k in [0u8, 1, 5, 15, 16, 17, 31, 32, 200] {
            assert_eq!(
                compute(M::Palignr, a, b, k, 128).unwrap(),
                pair(k),
                "imm {k}"
            );
        }
        // MMX: an 8-byte pair of halves.
        let a64 = bytes(&[8, 9, 10, 11, 12, 13, 14, 15]);
        let b64 = bytes(&[0, 1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(
            compute(M::Palignr, a64, b64, 3, 64).unwrap(),
            bytes(&[3, 4, 5, 6, 7, 8, 9, 10])
        );
        assert_eq!(compute(M::Palignr, a64, b64, 16, 64).unwrap(), 0);
    }
}
