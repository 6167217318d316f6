//! AES-NI, the Advanced Encryption Standard instructions (SDM Vol. 2A
//! "AESDEC", "AESDECLAST", "AESENC", "AESENCLAST", "AESIMC",
//! "AESKEYGENASSIST"; Intel's white paper "Advanced Encryption Standard
//! (AES) New Instructions Set" for the round definitions; FIPS-197 §5 for
//! the transformations).
//!
//! An XMM register holds an AES state of 16 bytes, byte `4c + r` being
//! row `r` of column `c` (FIPS-197 §3.4: the input bytes fill the state
//! column by column). One instruction is one round:
//!
//! | instruction | result |
//! |---|---|
//! | AESENC | MixColumns(SubBytes(ShiftRows(state))) XOR round key |
//! | AESENCLAST | SubBytes(ShiftRows(state)) XOR round key |
//! | AESDEC | InvMixColumns(InvSubBytes(InvShiftRows(state))) XOR round key |
//! | AESDECLAST | InvSubBytes(InvShiftRows(state)) XOR round key |
//! | AESIMC | InvMixColumns(source): a round key for the equivalent inverse cipher |
//! | AESKEYGENASSIST | SubWord and RotWord of the source's words 1 and 3, with RCON = imm8 |
//!
//! The S-box is computed from its definition (FIPS-197 §5.1.1: the
//! multiplicative inverse in GF(2^8), then the affine transformation)
//! when the crate is compiled. [`compute`] is the instruction on one
//! 128-bit lane, free of CPU state, so the VEX forms (which apply it to
//! each lane) can share it. None of these instructions touches MXCSR or
//! the flags; their legacy 16-byte memory operand must be aligned.

use iced_x86::{Instruction, Mnemonic};

use super::access::{read_operand, write_operand};
use super::check_sse;
use crate::exec::HandlerEntry;
use crate::exec::LinkEffect::KeepsLinks;
use crate::fault::Fault;
use crate::Cpu;

/// Multiplication in GF(2^8) modulo x^8 + x^4 + x^3 + x + 1 (FIPS-197
/// §4.2).
const fn gf_mul(mut a: u8, mut b: u8) -> u8 {
    let mut p = 0u8;
    while b != 0 {
        if b & 1 != 0 {
            p ^= a;
        }
        // xtime (FIPS-197 §4.2.1): multiply by x, reducing by 0x1b.
        a = (a << 1) ^ if a & 0x80 != 0 { 0x1b } else { 0 };
        b >>= 1;
    }
    p
}

/// The multiplicative inverse in GF(2^8) (0 maps to 0): `a^254`.
const fn gf_inverse(a: u8) -> u8 {
    // 254 = 0b1111_1110: square-and-multiply.
    let mut result = 1u8;
    let mut base = a;
    let mut e = 254u32;
    while e != 0 {
        if e & 1 != 0 {
            result = gf_mul(result, base);
        }
        base = gf_mul(base, base);
        e >>= 1;
    }
    if a == 0 {
        0
    } else {
        result
    }
}

/// The S-box and its inverse (FIPS-197 §5.1.1, §5.3.2).
const fn boxes() -> ([u8; 256], [u8; 256]) {
    let mut sbox = [0u8; 256];
    let mut inverse = [0u8; 256];
    let mut i = 0usize;
    while i < 256 {
        let b = gf_inverse(i as u8);
        // The affine transformation: b ^ rotl(b, 1..4) ^ 0x63.
        let s =
            b ^ b.rotate_left(1) ^ b.rotate_left(2) ^ b.rotate_left(3) ^ b.rotate_left(4) ^ 0x63;
        sbox[i] = s;
        inverse[s as usize] = i as u8;
        i += 1;
    }
    (sbox, inverse)
}

/// SubBytes' substitution table.
const SBOX: [u8; 256] = boxes().0;
/// InvSubBytes' table.
const INV_SBOX: [u8; 256] = boxes().1;

/// The state as bytes, byte `4c + r` = row `r`, column `c`.
type State = [u8; 16];

/// ShiftRows (FIPS-197 §5.1.2): row `r` rotates left by `r` columns.
fn shift_rows(s: &State) -> State {
    std::array::from_fn(|i| {
        let (c, r) = (i / 4, i % 4);
        s[4 * ((c + r) % 4) + r]
    })
}

/// InvShiftRows (FIPS-197 §5.3.1): row `r` rotates right by `r` columns.
fn inv_shift_rows(s: &State) -> State {
    std::array::from_fn(|i| {
        let (c, r) = (i / 4, i % 4);
        s[4 * ((c + 4 - r) % 4) + r]
    })
}

/// Every byte through `table` (SubBytes, InvSubBytes).
fn substitute(s: &State, table: &[u8; 256]) -> State {
    s.map(|b| table[usize::from(b)])
}

/// Multiplies each column by the circulant matrix whose first row is
/// `m` (MixColumns: 02 03 01 01; InvMixColumns: 0e 0b 0d 09).
fn mix(s: &State, m: [u8; 4]) -> State {
    std::array::from_fn(|i| {
        let (c, r) = (i / 4, i % 4);
        (0..4).fold(0u8, |acc, k| acc ^ gf_mul(m[(k + 4 - r) % 4], s[4 * c + k]))
    })
}

/// MixColumns (FIPS-197 §5.1.3).
fn mix_columns(s: &State) -> State {
    mix(s, [2, 3, 1, 1])
}

/// InvMixColumns (FIPS-197 §5.3.3).
fn inv_mix_columns(s: &State) -> State {
    mix(s, [0x0e, 0x0b, 0x0d, 0x09])
}

/// SubWord (FIPS-197 §5.2) of a 32-bit word.
fn sub_word(w: u32) -> u32 {
    u32::from_le_bytes(w.to_le_bytes().map(|b| SBOX[usize::from(b)]))
}

/// The result of AES-NI mnemonic `m` on one 128-bit lane: `a` is the
/// state (the legacy destination's value; unused by AESIMC and
/// AESKEYGENASSIST), `b` the round key or the source, `imm` the RCON of
/// AESKEYGENASSIST. `None` if `m` is not an AES-NI mnemonic.
pub fn compute(m: Mnemonic, a: u128, b: u128, imm: u8) -> Option<u128> {
    use Mnemonic as M;
    let state = a.to_le_bytes();
    let source = b.to_le_bytes();
    let round = |s: State| u128::from_le_bytes(s) ^ b;
    Some(match m {
        M::Aesenc => round(mix_columns(&substitute(&shift_rows(&state), &SBOX))),
        M::Aesenclast => round(substitute(&shift_rows(&state), &SBOX)),
        M::Aesdec => round(inv_mix_columns(&substitute(
            &inv_shift_rows(&state),
            &INV_SBOX,
        ))),
        M::Aesdeclast => round(substitute(&inv_shift_rows(&state), &INV_SBOX)),
        M::Aesimc => u128::from_le_bytes(inv_mix_columns(&source)),
        M::Aeskeygenassist => {
            let word = |i: u32| (b >> (32 * i)) as u32;
            let rcon = u32::from(imm);
            let (x1, x3) = (sub_word(word(1)), sub_word(word(3)));
            // RotWord (FIPS-197 §5.2) on a little-endian word: the bytes
            // [a0, a1, a2, a3] become [a1, a2, a3, a0].
            let rot = |w: u32| w.rotate_right(8) ^ rcon;
            u128::from(x1)
                | u128::from(rot(x1)) << 32
                | u128::from(x3) << 64
                | u128::from(rot(x3)) << 96
        }
        _ => return None,
    })
}

/// The handler for `insn`, if it is a legacy AES-NI instruction, with its
/// effect on block links.
pub fn lookup(insn: &Instruction) -> Option<HandlerEntry> {
    if compute(insn.mnemonic(), 0, 0, 0).is_some() {
        Some((aes, KeepsLinks))
    } else {
        None
    }
}

/// The handler of every AES-NI mnemonic: destination (the state), source
/// (round key or input), and AESKEYGENASSIST's immediate.
fn aes(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    check_sse(cpu)?;
    let a = read_operand(cpu, insn, 0)?;
    let b = read_operand(cpu, insn, 1)?;
    let imm = if insn.op_count() == 3 {
        insn.immediate8()
    } else {
        0
    };
    let r = compute(insn.mnemonic(), a, b, imm).ok_or(Fault::InvalidOpcode)?;
    write_operand(cpu, insn, 0, r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Mnemonic as M;

    /// A 16-byte block written as FIPS-197 prints it (first byte first).
    fn block(hex: &str) -> u128 {
        let bytes: Vec<u8> = (0..16)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        u128::from_le_bytes(bytes.try_into().unwrap())
    }

    /// The AES-128 key schedule (FIPS-197 §5.2) through AESKEYGENASSIST:
    /// its top word is RotWord(SubWord(w3)) ^ Rcon, which the next round
    /// key folds into the running XOR of the previous one's words.
    fn key_schedule(key: u128) -> [u128; 11] {
        const RCON: [u8; 10] = [0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0x1b, 0x36];
        let mut keys = [key; 11];
        for (i, rcon) in RCON.into_iter().enumerate() {
            let k = keys[i];
            let assist = compute(M::Aeskeygenassist, 0, k, rcon).unwrap();
            let t = (assist >> 96) as u32;
            let broadcast = (0..4).fold(0u128, |r, j| r | u128::from(t) << (32 * j));
            keys[i + 1] = k ^ (k << 32) ^ (k << 64) ^ (k << 96) ^ broadcast;
        }
        keys
    }

    #[test]
    fn the_sbox_has_the_fips_197_values() {
        assert_eq!(SBOX[0x00], 0x63);
        assert_eq!(SBOX[0x53], 0xed, "FIPS-197 §5.1.1's example");
        assert_eq!(SBOX[0xff], 0x16);
        assert_eq!(INV_SBOX[0x63], 0x00);
        assert_eq!(INV_SBOX[0xed], 0x53);
    }

    #[test]
    fn the_key_schedule_matches_fips_197_appendix_a1() {
        let keys = key_schedule(block("2b7e151628aed2a6abf7158809cf4f3c"));
        assert_eq!(keys[1], block("a0fafe1788542cb123a339392a6c7605"));
        assert_eq!(keys[10], block("d014f9a8c9ee2589e13f0cc8b6630ca6"));
    }

    #[test]
    fn aes_128_encrypts_the_fips_197_appendix_c1_example() {
        let keys = key_schedule(block("000102030405060708090a0b0c0d0e0f"));
        let mut state = block("00112233445566778899aabbccddeeff") ^ keys[0];
        assert_eq!(state, block("00102030405060708090a0b0c0d0e0f0"));
        for (round, k) in keys.iter().enumerate().take(10).skip(1) {
            state = compute(M::Aesenc, state, *k, 0).unwrap();
            if round == 1 {
                assert_eq!(state, block("89d810e8855ace682d1843d8cb128fe4"));
            }
        }
        state = compute(M::Aesenclast, state, keys[10], 0).unwrap();
        assert_eq!(state, block("69c4e0d86a7b0430d8cdb78070b4c55a"));
    }

    #[test]
    fn aes_128_decrypts_through_the_equivalent_inverse_cipher() {
        let keys = key_schedule(block("000102030405060708090a0b0c0d0e0f"));
        let mut state = block("69c4e0d86a7b0430d8cdb78070b4c55a") ^ keys[10];
        for k in keys[1..10].iter().rev() {
            let dk = compute(M::Aesimc, 0xdead, *k, 0).unwrap();
            state = compute(M::Aesdec, state, dk, 0).unwrap();
        }
        state = compute(M::Aesdeclast, state, keys[0], 0).unwrap();
        assert_eq!(state, block("00112233445566778899aabbccddeeff"));
    }

    #[test]
    fn mix_columns_and_its_inverse_match_the_known_column() {
        // The column db 13 53 45 mixes to 8e 4d a1 bc.
        let s: State = [0xdb, 0x13, 0x53, 0x45, 0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0];
        let m = mix_columns(&s);
        assert_eq!(&m[..4], &[0x8e, 0x4d, 0xa1, 0xbc]);
        assert_eq!(&m[8..12], &[1, 1, 1, 1]);
        assert_eq!(inv_mix_columns(&m), s);
        assert_eq!(inv_shift_rows(&shift_rows(&m)), m);
    }

    #[test]
    fn aeskeygenassist_substitutes_and_rotates_words_1_and_3() {
        // Words (low first): 0, 0x00000053 (SubWord: 0x636363ed), 0,
        // 0x01000000 (SubWord: 0x7c636363).
        let src = 0x0100_0000u128 << 96 | 0x53u128 << 32;
        let r = compute(M::Aeskeygenassist, 0, src, 0x8d).unwrap();
        assert_eq!(r as u32, 0x6363_63ed);
        assert_eq!((r >> 32) as u32, 0xed63_6363 ^ 0x8d);
        assert_eq!((r >> 64) as u32, 0x7c63_6363);
        assert_eq!((r >> 96) as u32, 0x637c_6363 ^ 0x8d);
    }

    #[test]
    fn the_legacy_memory_forms_need_16_byte_alignment() {
        use iced_x86::{Decoder, DecoderOptions};
        // aesenc/aesenclast/aesdec/aesdeclast/aesimc xmm1, [rax];
        // aeskeygenassist xmm1, [rax], 1.
        for bytes in [
            &[0x66, 0x0f, 0x38, 0xdc, 0x08][..],
            &[0x66, 0x0f, 0x38, 0xdd, 0x08],
            &[0x66, 0x0f, 0x38, 0xde, 0x08],
            &[0x66, 0x0f, 0x38, 0xdf, 0x08],
            &[0x66, 0x0f, 0x38, 0xdb, 0x08],
            &[0x66, 0x0f, 0x3a, 0xdf, 0x08, 0x01],
        ] {
            let insn = Decoder::new(64, bytes, DecoderOptions::NONE).decode();
            assert!(lookup(&insn).is_some(), "{bytes:02x?}");
            assert!(super::super::access::needs_alignment(&insn), "{bytes:02x?}");
        }
    }

    #[test]
    fn other_mnemonics_are_not_aes() {
        assert_eq!(compute(M::Pxor, 1, 2, 0), None);
        assert_eq!(compute(M::Vaesenc, 1, 2, 0), None);
    }
}
