//! PCLMULQDQ, the carry-less multiplication of two quadwords (SDM Vol. 2B
//! "PCLMULQDQ—Carry-Less Multiplication Quadword").
//!
//! imm8 bit 0 selects the quadword of the first source (the legacy
//! destination), bit 4 that of the second; the other bits are ignored.
//! The 128-bit result is the product of the two as polynomials over
//! GF(2): partial products are combined with XOR instead of addition, so
//! no carry ever propagates (the primitive of GCM's GHASH and of CRC
//! folding). [`compute`] is the instruction on one 128-bit lane, free of
//! CPU state, so the VEX forms can share it. It touches neither MXCSR nor
//! the flags; the legacy 16-byte memory operand must be aligned.

use iced_x86::{Instruction, Mnemonic};

use super::access::{read_operand, write_operand};
use super::check_sse;
use crate::exec::HandlerEntry;
use crate::exec::LinkEffect::KeepsLinks;
use crate::fault::Fault;
use crate::Cpu;

/// The carry-less product of `a` and `b`: bit `k` is the XOR of
/// `a[i] AND b[k - i]` over every `i`.
pub fn carryless_multiply(a: u64, b: u64) -> u128 {
    let wide = u128::from(a);
    (0..64)
        .filter(|i| b >> i & 1 != 0)
        .fold(0u128, |acc, i| acc ^ (wide << i))
}

/// The result of PCLMULQDQ on one 128-bit lane: quadword `imm[0]` of `a`
/// times quadword `imm[4]` of `b`. `None` if `m` is not PCLMULQDQ.
pub fn compute(m: Mnemonic, a: u128, b: u128, imm: u8) -> Option<u128> {
    if m != Mnemonic::Pclmulqdq {
        return None;
    }
    let x = (a >> (64 * u32::from(imm & 1))) as u64;
    let y = (b >> (64 * u32::from(imm >> 4 & 1))) as u64;
    Some(carryless_multiply(x, y))
}

/// The handler for `insn`, if it is the legacy PCLMULQDQ, with its effect
/// on block links.
pub fn lookup(insn: &Instruction) -> Option<HandlerEntry> {
    if insn.mnemonic() == Mnemonic::Pclmulqdq {
        Some((pclmulqdq, KeepsLinks))
    } else {
        None
    }
}

/// PCLMULQDQ xmm1, xmm2/m128, imm8.
fn pclmulqdq(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    check_sse(cpu)?;
    let a = read_operand(cpu, insn, 0)?;
    let b = read_operand(cpu, insn, 1)?;
    let r = compute(insn.mnemonic(), a, b, insn.immediate8()).ok_or(Fault::InvalidOpcode)?;
    write_operand(cpu, insn, 0, r)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 16-byte GCM block as the GCM specification prints it.
    fn block(hex: &str) -> u128 {
        u128::from_str_radix(hex, 16).unwrap()
    }

    /// GF(2^128) multiplication as GCM defines it (NIST SP 800-38D §6.3),
    /// in polynomial order (coefficient of x^i in bit i: GCM's blocks
    /// bit-reversed), through four PCLMULQDQs and a reduction modulo
    /// x^128 + x^7 + x^2 + x + 1.
    fn gf128_mul(a: u128, b: u128) -> u128 {
        let m = |imm| compute(Mnemonic::Pclmulqdq, a, b, imm).unwrap();
        let (lo, hi) = (m(0x00), m(0x11));
        let mid = m(0x01) ^ m(0x10);
        let mut low = lo ^ (mid << 64);
        let mut high = hi ^ (mid >> 64);
        // Fold the high half down, bit by bit from the top.
        for bit in (0..128).rev() {
            if high >> bit & 1 != 0 {
                high ^= 1 << bit;
                // x^(128 + bit) = x^bit * (x^7 + x^2 + x + 1).
                let r = 0x87u128;
                low ^= r << bit;
                if bit > 120 {
                    high ^= r >> (128 - bit);
                }
            }
        }
        low
    }

    #[test]
    fn small_products_have_no_carries() {
        assert_eq!(carryless_multiply(0b11, 0b11), 0b101);
        assert_eq!(carryless_multiply(0b101, 0b111), 0b11011);
        assert_eq!(
            carryless_multiply(u64::MAX, u64::MAX),
            0x5555_5555_5555_5555_5555_5555_5555_5555
        );
        assert_eq!(carryless_multiply(1 << 63, 1 << 63), 1 << 126);
    }

    #[test]
    fn imm8_bits_0_and_4_select_the_quadwords() {
        let a = 3u128 << 64 | 5;
        let b = 7u128 << 64 | 9;
        let m = |imm| compute(Mnemonic::Pclmulqdq, a, b, imm).unwrap();
        assert_eq!(m(0x00), carryless_multiply(5, 9));
        assert_eq!(m(0x01), carryless_multiply(3, 9));
        assert_eq!(m(0x10), carryless_multiply(5, 7));
        assert_eq!(m(0x11), carryless_multiply(3, 7));
        assert_eq!(m(0xee), m(0x00), "only bits 0 and 4 count");
        assert_eq!(compute(Mnemonic::Pxor, a, b, 0), None);
    }

    #[test]
    fn the_legacy_memory_form_needs_16_byte_alignment() {
        use iced_x86::{Decoder, DecoderOptions};
        // pclmulqdq xmm1, [rax], 0x10
        let bytes = [0x66, 0x0f, 0x3a, 0x44, 0x08, 0x10];
        let insn = Decoder::new(64, &bytes, DecoderOptions::NONE).decode();
        assert!(lookup(&insn).is_some());
        assert!(super::super::access::needs_alignment(&insn));
    }

    #[test]
    fn ghash_of_gcm_test_case_2() {
        // GCM specification (McGrew, Viega), test case 2: K = 0, IV = 0,
        // P = 0^128. H = E(K, 0), C the ciphertext, and the tag is
        // E(K, Y0) ^ GHASH(H, {}, C), E(K, Y0) being test case 1's tag.
        let poly = |x: u128| x.reverse_bits();
        let h = poly(block("66e94bd4ef8a2c3b884cfa59ca342b2e"));
        let c = poly(block("0388dace60b6a392f328c2b971b2fe78"));
        // len(A) = 0, len(C) = 128 bits.
        let lengths = poly(128);
        let x1 = gf128_mul(c, h);
        let ghash = poly(gf128_mul(x1 ^ lengths, h));
        let tag = ghash ^ block("58e2fccefa7e3061367f1d57a4e7455a");
        assert_eq!(tag, block("ab6e47d42cec13bdf53a67b21257bddf"));
    }
}
