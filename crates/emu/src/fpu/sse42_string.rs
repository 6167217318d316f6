//! SSE4.2's packed string compares: PCMPESTRI, PCMPESTRM, PCMPISTRI,
//! PCMPISTRM (SDM Vol. 2B, and Vol. 2A §4.1 "Imm8 Control Byte
//! Operation for PCMPESTRI / PCMPESTRM / PCMPISTRI / PCMPISTRM").
//!
//! The first operand (an XMM register, "a": the set, the ranges or the
//! needle) is compared with the second (XMM or unaligned memory, "b": the
//! text) element by element, as imm8 says:
//!
//! | imm8 bits | meaning |
//! |---|---|
//! | 1:0 | elements: unsigned bytes, unsigned words, signed bytes, signed words |
//! | 3:2 | aggregation: equal any, ranges, equal each, equal ordered |
//! | 5:4 | polarity: positive, negative, masked positive, masked negative |
//! | 6 | index: least (0) or most (1) significant bit; mask: bits (0) or expanded elements (1) |
//!
//! The lengths are explicit (`E`: \|EAX\| and \|EDX\|, or RAX/RDX with
//! REX.W, saturated to the element count) or implicit (`I`: up to the first
//! zero element). Results: the `I` forms write ECX (the index, or the
//! element count if no bit is set), the `M` forms write XMM0; CF = result
//! not zero, ZF = b shorter than the register, SF = a shorter, OF = result
//! bit 0, AF = PF = 0.

use iced_x86::{Instruction, Mnemonic};

use super::access::{read_operand, xmm_index};
use super::check_sse;
use super::lanes::{lane, slane};
use crate::exec::HandlerEntry;
use crate::exec::LinkEffect::KeepsLinks;
use crate::fault::Fault;
use crate::flags::{AF, ARITH, CF, OF, PF, SF, ZF};
use crate::state::reg;
use crate::Cpu;

/// The handler for `insn`, if it is a packed string compare.
pub fn lookup(insn: &Instruction) -> Option<HandlerEntry> {
    use Mnemonic as M;
    match insn.mnemonic() {
        M::Pcmpestri
        | M::Pcmpestrm
        | M::Pcmpistri
        | M::Pcmpistrm
        | M::Vpcmpestri
        | M::Vpcmpestrm
        | M::Vpcmpistri
        | M::Vpcmpistrm => Some((string_compare, KeepsLinks)),
        _ => None,
    }
}

/// The element format imm8[1:0] selects.
#[derive(Clone, Copy)]
struct Format {
    /// 16 bytes or 8 words.
    count: u32,
    signed: bool,
}

impl Format {
    fn of(imm: u8) -> Format {
        Format {
            count: if imm & 1 != 0 { 8 } else { 16 },
            signed: imm & 2 != 0,
        }
    }

    fn bits(self) -> u32 {
        128 / self.count
    }

    /// Element `i` of `v`, extended as the format says.
    fn element(self, v: u128, i: u32) -> i64 {
        if self.signed {
            slane(v, self.bits(), i)
        } else {
            lane(v, self.bits(), i) as i64
        }
    }

    /// The implicit length: the index of the first zero element.
    fn implicit_length(self, v: u128) -> u32 {
        (0..self.count)
            .find(|&i| self.element(v, i) == 0)
            .unwrap_or(self.count)
    }

    /// An explicit length: |value| saturated to the element count.
    fn explicit_length(self, value: i64) -> u32 {
        u32::try_from(value.unsigned_abs())
            .unwrap_or(u32::MAX)
            .min(self.count)
    }
}

/// IntRes2 of the comparison of `a` (`len_a` valid elements) with `b`
/// (`len_b`), as imm8 says.
fn compare(imm: u8, a: u128, len_a: u32, b: u128, len_b: u32) -> u32 {
    let f = Format::of(imm);
    let n = f.count;
    // BoolRes for element `j` of b and `i` of a, with the forced values
    // for invalid elements (SDM Table 4-7) depending on the aggregation.
    let aggregation = imm >> 2 & 3;
    let bool_res = |j: u32, i: u32| -> bool {
        let (a_valid, b_valid) = (i < len_a, j < len_b);
        match (a_valid, b_valid, aggregation) {
            (true, true, 1) => {
                // Ranges: even elements of a are lower bounds, odd upper.
                let (x, y) = (f.element(b, j), f.element(a, i));
                if i.is_multiple_of(2) {
                    x >= y
                } else {
                    x <= y
                }
            }
            (true, true, _) => f.element(b, j) == f.element(a, i),
            (false, false, 2 | 3) => true,
            (false, true, 3) => true,
            _ => false,
        }
    };
    let mut res1 = 0u32;
    for j in 0..n {
        let hit = match aggregation {
            0 => (0..n).any(|i| bool_res(j, i)),
            1 => (0..n / 2).any(|k| bool_res(j, 2 * k) && bool_res(j, 2 * k + 1)),
            2 => bool_res(j, j),
            _ => (0..n - j).all(|i| bool_res(j + i, i)),
        };
        res1 |= u32::from(hit) << j;
    }
    let all = (1u32 << n) - 1;
    let valid_b = (1u32 << len_b) - 1;
    match imm >> 4 & 3 {
        1 => res1 ^ all,
        3 => res1 ^ valid_b,
        _ => res1,
    }
}

/// PCMPESTRI, PCMPESTRM, PCMPISTRI, PCMPISTRM and their VEX.128 forms
/// (which check as AVX instructions and, for the mask forms, zero bits
/// 255:128 of YMM0).
fn string_compare(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    use Mnemonic as M;
    let vex = insn.encoding() == iced_x86::EncodingKind::VEX;
    if vex {
        super::avx::check_avx(cpu)?;
    } else {
        check_sse(cpu)?;
    }
    let m = match insn.mnemonic() {
        M::Vpcmpestri => M::Pcmpestri,
        M::Vpcmpestrm => M::Pcmpestrm,
        M::Vpcmpistri => M::Pcmpistri,
        M::Vpcmpistrm => M::Pcmpistrm,
        m => m,
    };
    let imm = insn.immediate8();
    let f = Format::of(imm);
    let a = cpu.s.fpu.xmm[xmm_index(insn.op_register(0))];
    let b = read_operand(cpu, insn, 1)?;
    let (len_a, len_b) = if matches!(m, M::Pcmpestri | M::Pcmpestrm) {
        let wide = matches!(
            insn.code(),
            iced_x86::Code::Pcmpestri64_xmm_xmmm128_imm8
                | iced_x86::Code::Pcmpestrm64_xmm_xmmm128_imm8
                | iced_x86::Code::VEX_Vpcmpestri64_xmm_xmmm128_imm8
                | iced_x86::Code::VEX_Vpcmpestrm64_xmm_xmmm128_imm8
        );
        let read = |r: usize| {
            let v = cpu.s.gpr[r];
            if wide {
                v as i64
            } else {
                i64::from(v as i32)
            }
        };
        (
            f.explicit_length(read(reg::RAX)),
            f.explicit_length(read(reg::RDX)),
        )
    } else {
        (f.implicit_length(a), f.implicit_length(b))
    };
    let res2 = compare(imm, a, len_a, b, len_b);
    let n = f.count;
    if matches!(m, M::Pcmpestri | M::Pcmpistri) {
        let index = if res2 == 0 {
            n
        } else if imm & 0x40 != 0 {
            31 - res2.leading_zeros()
        } else {
            res2.trailing_zeros()
        };
        // ECX, zero-extended into RCX.
        cpu.s.gpr[reg::RCX] = u64::from(index);
    } else {
        if vex {
            cpu.s.fpu.ymm_hi[0] = 0;
        }
        cpu.s.fpu.xmm[0] = if imm & 0x40 != 0 {
            let bits = f.bits();
            (0..n).fold(0u128, |r, i| {
                if res2 >> i & 1 != 0 {
                    r | ((1u128 << bits) - 1) << (bits * i)
                } else {
                    r
                }
            })
        } else {
            u128::from(res2)
        };
    }
    let mut flags = 0;
    if res2 != 0 {
        flags |= CF;
    }
    if len_b < n {
        flags |= ZF;
    }
    if len_a < n {
        flags |= SF;
    }
    if res2 & 1 != 0 {
        flags |= OF;
    }
    cpu.s.flags.set_arith(ARITH, flags & !(AF | PF));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &[u8]) -> u128 {
        let mut b = [0u8; 16];
        b[..s.len()].copy_from_slice(s);
        u128::from_le_bytes(b)
    }

    #[test]
    fn equal_any_finds_characters_of_a_set() {
        // Unsigned bytes, equal any: which of "hello, world" are in " ,".
        let set = text(b" ,");
        let s = text(b"hello, world");
        let r = compare(0b0000_0000, set, 2, s, 12);
        assert_eq!(r, 1 << 5 | 1 << 6);
    }

    #[test]
    fn ranges_match_between_bounds() {
        let ranges = text(b"az");
        let s = text(b"aZz0");
        assert_eq!(compare(0b0000_0100, ranges, 2, s, 4), 0b0101);
    }

    #[test]
    fn equal_ordered_finds_substrings_and_partial_ones_only_at_the_register_end() {
        let needle = text(b"lo");
        // "lo" at 3 and 6; the "l" at 9 is cut by the text's end: no match.
        let s = text(b"hello lo l");
        assert_eq!(compare(0b0000_1100, needle, 2, s, 10), 1 << 3 | 1 << 6);
        // Cut by the register's end instead, the partial match counts.
        let s = text(b"hello lo l.....l");
        assert_eq!(
            compare(0b0000_1100, needle, 2, s, 16),
            1 << 3 | 1 << 6 | 1 << 15
        );
    }

    #[test]
    fn negative_polarities() {
        let a = text(b"ab");
        let b = text(b"abc");
        // Equal each: elements 0-1 equal, 2 (a ended, b not) false, 3-15
        // (both ended) true.
        assert_eq!(compare(0b0000_1000, a, 2, b, 3), 0xfffb, "equal each");
        assert_eq!(compare(0b0001_1000, a, 2, b, 3), 0x0004, "negative");
        assert_eq!(
            compare(0b0011_1000, a, 2, b, 3),
            0xfffc,
            "masked negative: b's valid elements only"
        );
    }

    #[test]
    fn explicit_lengths_saturate() {
        let f = Format::of(0);
        assert_eq!(f.explicit_length(-5), 5);
        assert_eq!(f.explicit_length(100), 16);
        assert_eq!(f.explicit_length(i64::MIN), 16);
        assert_eq!(Format::of(1).explicit_length(-9), 8);
    }
}
