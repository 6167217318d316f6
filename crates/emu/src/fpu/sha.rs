//! The SHA extensions (SDM Vol. 1 §5.13 "Intel SHA Extensions"; Vol. 2B
//! "SHA1RNDS4", "SHA1NEXTE", "SHA1MSG1", "SHA1MSG2", "SHA256RNDS2",
//! "SHA256MSG1", "SHA256MSG2"; FIPS 180-4 §4.1 for the functions and
//! §4.2 for the constants).
//!
//! The instructions work on 32-bit words packed in XMM registers, the
//! highest lane first in the SDM's notation:
//!
//! | instruction | what it computes |
//! |---|---|
//! | SHA1RNDS4 | four SHA-1 rounds: state A:B:C:D in the first source, W0+E:W1:W2:W3 in the second; imm8[1:0] picks f and K (rounds 0-19, 20-39, 40-59, 60-79) |
//! | SHA1NEXTE | E for the next four rounds, `A ROL 30` of the first source, added to the second source's top word |
//! | SHA1MSG1, SHA1MSG2 | the two halves of the SHA-1 message schedule `W[t] = ROL1(W[t-3] ^ W[t-8] ^ W[t-14] ^ W[t-16])` |
//! | SHA256RNDS2 | two SHA-256 rounds: C:D:G:H in the first source, A:B:E:F in the second, W+K of the two rounds in the implicit XMM0; the result is the new A:B:E:F |
//! | SHA256MSG1, SHA256MSG2 | the σ0 and σ1 halves of the SHA-256 message schedule |
//!
//! [`compute`] is the instruction on one 128-bit lane, free of CPU state,
//! so the VEX forms can share it. None touches MXCSR or the flags; the
//! legacy 16-byte memory operand must be aligned.

use iced_x86::{Instruction, Mnemonic};

use super::access::{read_operand, write_operand};
use super::check_sse;
use crate::exec::HandlerEntry;
use crate::exec::LinkEffect::KeepsLinks;
use crate::fault::Fault;
use crate::Cpu;

/// The four 32-bit words of `v`, lowest lane first.
fn words(v: u128) -> [u32; 4] {
    std::array::from_fn(|i| (v >> (32 * i)) as u32)
}

/// Four words, lowest lane first, as a 128-bit value.
fn pack(w: [u32; 4]) -> u128 {
    w.iter()
        .enumerate()
        .fold(0u128, |r, (i, &x)| r | u128::from(x) << (32 * i))
}

/// Ch (FIPS 180-4 §4.1.1, §4.1.2).
fn ch(x: u32, y: u32, z: u32) -> u32 {
    (x & y) ^ (!x & z)
}

/// Parity (FIPS 180-4 §4.1.1).
fn parity(x: u32, y: u32, z: u32) -> u32 {
    x ^ y ^ z
}

/// Maj (FIPS 180-4 §4.1.1, §4.1.2).
fn maj(x: u32, y: u32, z: u32) -> u32 {
    (x & y) ^ (x & z) ^ (y & z)
}

/// SHA-1's f and K for the round group imm8[1:0] selects (FIPS 180-4
/// §4.1.1, §4.2.1).
fn sha1_round_function(imm: u8) -> (fn(u32, u32, u32) -> u32, u32) {
    match imm & 3 {
        0 => (ch, 0x5a82_7999),
        1 => (parity, 0x6ed9_eba1),
        2 => (maj, 0x8f1b_bcdc),
        _ => (parity, 0xca62_c1d6),
    }
}

/// SHA-256's Σ0 (FIPS 180-4 §4.1.2).
fn big_sigma0(x: u32) -> u32 {
    x.rotate_right(2) ^ x.rotate_right(13) ^ x.rotate_right(22)
}

/// SHA-256's Σ1.
fn big_sigma1(x: u32) -> u32 {
    x.rotate_right(6) ^ x.rotate_right(11) ^ x.rotate_right(25)
}

/// SHA-256's σ0.
fn small_sigma0(x: u32) -> u32 {
    x.rotate_right(7) ^ x.rotate_right(18) ^ (x >> 3)
}

/// SHA-256's σ1.
fn small_sigma1(x: u32) -> u32 {
    x.rotate_right(17) ^ x.rotate_right(19) ^ (x >> 10)
}

/// SHA1RNDS4: four rounds from A:B:C:D (`a`, A on top) with W0+E, W1,
/// W2, W3 (`b`, W0+E on top).
fn sha1rnds4(a: u128, b: u128, imm: u8) -> u128 {
    let (f, k) = sha1_round_function(imm);
    let [d, c, bb, aa] = words(a);
    let [w3, w2, w1, w0e] = words(b);
    // Round 0 takes E already added to W0.
    let (mut va, mut vb, mut vc, mut vd, mut ve) = (aa, bb, c, d, 0u32);
    for w in [w0e, w1, w2, w3] {
        let t = f(vb, vc, vd)
            .wrapping_add(va.rotate_left(5))
            .wrapping_add(w)
            .wrapping_add(ve)
            .wrapping_add(k);
        ve = vd;
        vd = vc;
        vc = vb.rotate_left(30);
        vb = va;
        va = t;
    }
    pack([vd, vc, vb, va])
}

/// SHA256RNDS2: two rounds from C:D:G:H (`a`) and A:B:E:F (`b`) with the
/// round inputs W+K in the low two words of `wk`; returns A:B:E:F.
fn sha256rnds2(a: u128, b: u128, wk: u128) -> u128 {
    let [h, g, d, c] = words(a);
    let [f, e, bb, aa] = words(b);
    let [wk0, wk1, _, _] = words(wk);
    let (mut va, mut vb, mut vc, mut vd) = (aa, bb, c, d);
    let (mut ve, mut vf, mut vg, mut vh) = (e, f, g, h);
    for w in [wk0, wk1] {
        let t1 = vh
            .wrapping_add(big_sigma1(ve))
            .wrapping_add(ch(ve, vf, vg))
            .wrapping_add(w);
        let t2 = big_sigma0(va).wrapping_add(maj(va, vb, vc));
        vh = vg;
        vg = vf;
        vf = ve;
        ve = vd.wrapping_add(t1);
        vd = vc;
        vc = vb;
        vb = va;
        va = t1.wrapping_add(t2);
    }
    pack([vf, ve, vb, va])
}

/// The result of SHA mnemonic `m` on one 128-bit lane: `a` the first
/// source (the legacy destination's value), `b` the second, `imm` the
/// round group of SHA1RNDS4, `xmm0` SHA256RNDS2's implicit operand.
/// `None` if `m` is not a SHA mnemonic.
pub fn compute(m: Mnemonic, a: u128, b: u128, imm: u8, xmm0: u128) -> Option<u128> {
    use Mnemonic as M;
    let [a0, a1, a2, a3] = words(a);
    let [b0, b1, b2, b3] = words(b);
    Some(match m {
        M::Sha1rnds4 => sha1rnds4(a, b, imm),
        M::Sha1nexte => pack([b0, b1, b2, b3.wrapping_add(a3.rotate_left(30))]),
        // W0..W3 in `a` (W0 on top), W4 and W5 the top of `b`.
        M::Sha1msg1 => pack([b2 ^ a0, b3 ^ a1, a0 ^ a2, a1 ^ a3]),
        M::Sha1msg2 => {
            let w16 = (a3 ^ b2).rotate_left(1);
            let w17 = (a2 ^ b1).rotate_left(1);
            let w18 = (a1 ^ b0).rotate_left(1);
            let w19 = (a0 ^ w16).rotate_left(1);
            pack([w19, w18, w17, w16])
        }
        M::Sha256rnds2 => sha256rnds2(a, b, xmm0),
        // W0..W3 in `a` (W0 lowest), W4 the bottom of `b`.
        M::Sha256msg1 => pack([
            a0.wrapping_add(small_sigma0(a1)),
            a1.wrapping_add(small_sigma0(a2)),
            a2.wrapping_add(small_sigma0(a3)),
            a3.wrapping_add(small_sigma0(b0)),
        ]),
        // W14, W15 the top of `b`.
        M::Sha256msg2 => {
            let w16 = a0.wrapping_add(small_sigma1(b2));
            let w17 = a1.wrapping_add(small_sigma1(b3));
            let w18 = a2.wrapping_add(small_sigma1(w16));
            let w19 = a3.wrapping_add(small_sigma1(w17));
            pack([w16, w17, w18, w19])
        }
        _ => return None,
    })
}

/// The handler for `insn`, if it is a legacy SHA instruction, with its
/// effect on block links.
pub fn lookup(insn: &Instruction) -> Option<HandlerEntry> {
    if compute(insn.mnemonic(), 0, 0, 0, 0).is_some() {
        Some((sha, KeepsLinks))
    } else {
        None
    }
}

/// The handler of every SHA mnemonic: destination, source, SHA1RNDS4's
/// immediate and SHA256RNDS2's implicit XMM0.
fn sha(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    check_sse(cpu)?;
    let a = read_operand(cpu, insn, 0)?;
    let b = read_operand(cpu, insn, 1)?;
    let imm = if insn.mnemonic() == Mnemonic::Sha1rnds4 {
        insn.immediate8()
    } else {
        0
    };
    let xmm0 = cpu.s.fpu.xmm[0];
    let r = compute(insn.mnemonic(), a, b, imm, xmm0).ok_or(Fault::InvalidOpcode)?;
    write_operand(cpu, insn, 0, r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Mnemonic as M;

    /// FIPS 180-4 §5.1.1 padding of a message shorter than 56 bytes: one
    /// 512-bit block as sixteen big-endian words.
    fn padded_block(msg: &[u8]) -> [u32; 16] {
        let mut bytes = [0u8; 64];
        bytes[..msg.len()].copy_from_slice(msg);
        bytes[msg.len()] = 0x80;
        bytes[56..].copy_from_slice(&(8 * msg.len() as u64).to_be_bytes());
        std::array::from_fn(|i| u32::from_be_bytes(bytes[4 * i..4 * i + 4].try_into().unwrap()))
    }

    /// Lane-wise 32-bit addition (PADDD).
    fn add(a: u128, b: u128) -> u128 {
        let (x, y) = (words(a), words(b));
        pack(std::array::from_fn(|i| x[i].wrapping_add(y[i])))
    }

    /// SHA-1 of one block through SHA1RNDS4, SHA1NEXTE, SHA1MSG1 and
    /// SHA1MSG2. Message words go in with the earliest on top, as the
    /// instructions expect; so does the state A:B:C:D.
    fn sha1_block(h: [u32; 5], w: [u32; 16]) -> [u32; 5] {
        let abcd0 = pack([h[3], h[2], h[1], h[0]]);
        let e0 = u128::from(h[4]) << 96;
        let mut msgs: Vec<u128> = (0..4)
            .map(|g| pack([w[4 * g + 3], w[4 * g + 2], w[4 * g + 1], w[4 * g]]))
            .collect();
        for g in 4..20 {
            let t = compute(M::Sha1msg1, msgs[g - 4], msgs[g - 3], 0, 0).unwrap();
            let t = t ^ msgs[g - 2];
            msgs.push(compute(M::Sha1msg2, t, msgs[g - 1], 0, 0).unwrap());
        }
        let mut abcd = abcd0;
        let mut e_msg = add(e0, msgs[0]);
        let mut previous = abcd;
        for (g, msg) in msgs.iter().enumerate() {
            if g > 0 {
                e_msg = compute(M::Sha1nexte, previous, *msg, 0, 0).unwrap();
            }
            previous = abcd;
            abcd = compute(M::Sha1rnds4, abcd, e_msg, (g / 5) as u8, 0).unwrap();
        }
        let e = compute(M::Sha1nexte, previous, e0, 0, 0).unwrap();
        let [d, c, b, a] = words(add(abcd, abcd0));
        [a, b, c, d, (e >> 96) as u32]
    }

    /// FIPS 180-4 §4.2.2: the first 32 bits of the fractional parts of
    /// the cube roots of the first 64 primes.
    const K256: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];

    /// SHA-256 of one block through SHA256RNDS2, SHA256MSG1 and
    /// SHA256MSG2. Message words go in with the earliest lowest; the
    /// state is split into A:B:E:F and C:D:G:H.
    fn sha256_block(h: [u32; 8], w: [u32; 16]) -> [u32; 8] {
        let [a, b, c, d, e, f, g, hh] = h;
        let abef0 = pack([f, e, b, a]);
        let cdgh0 = pack([hh, g, d, c]);
        let mut msgs: Vec<u128> = (0..4)
            .map(|i| pack([w[4 * i], w[4 * i + 1], w[4 * i + 2], w[4 * i + 3]]))
            .collect();
        for i in 4..16 {
            let t = compute(M::Sha256msg1, msgs[i - 4], msgs[i - 3], 0, 0).unwrap();
            // W[t-7]: words 1-4 of the pair msgs[i-2]:msgs[i-1] (PALIGNR 4).
            let w7 = (msgs[i - 2] >> 32) | (msgs[i - 1] << 96);
            msgs.push(compute(M::Sha256msg2, add(t, w7), msgs[i - 1], 0, 0).unwrap());
        }
        let (mut abef, mut cdgh) = (abef0, cdgh0);
        for (i, msg) in msgs.iter().enumerate() {
            let k = pack([
                K256[4 * i],
                K256[4 * i + 1],
                K256[4 * i + 2],
                K256[4 * i + 3],
            ]);
            let wk = add(*msg, k);
            let next = compute(M::Sha256rnds2, cdgh, abef, 0, wk).unwrap();
            cdgh = abef;
            abef = next;
            let next = compute(M::Sha256rnds2, cdgh, abef, 0, wk >> 64).unwrap();
            cdgh = abef;
            abef = next;
        }
        let [f, e, b, a] = words(add(abef, abef0));
        let [hh, g, d, c] = words(add(cdgh, cdgh0));
        [a, b, c, d, e, f, g, hh]
    }

    #[test]
    fn sha1_of_abc_is_the_fips_180_example() {
        let h0 = [0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476, 0xc3d2e1f0];
        assert_eq!(
            sha1_block(h0, padded_block(b"abc")),
            [0xa9993e36, 0x4706816a, 0xba3e2571, 0x7850c26c, 0x9cd0d89d]
        );
    }

    #[test]
    fn sha256_of_abc_is_the_fips_180_example() {
        let h0 = [
            0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
            0x5be0cd19,
        ];
        assert_eq!(
            sha256_block(h0, padded_block(b"abc")),
            [
                0xba7816bf, 0x8f01cfea, 0x414140de, 0x5dae2223, 0xb00361a3, 0x96177a9c, 0xb410ff61,
                0xf20015ad
            ]
        );
    }

    #[test]
    fn sha1nexte_adds_a_rol_30_to_the_top_word_only() {
        let a = 0x8000_0001u128 << 96 | 0xffff;
        let b = 0x10u128 << 96 | 0x1234_5678_9abc;
        assert_eq!(
            compute(M::Sha1nexte, a, b, 0, 0).unwrap(),
            (0x10 + 0x6000_0000u128) << 96 | 0x1234_5678_9abc
        );
    }

    #[test]
    fn the_legacy_memory_forms_need_16_byte_alignment() {
        use iced_x86::{Decoder, DecoderOptions};
        // sha1rnds4 xmm1, [rax], 0; sha1nexte, sha1msg1, sha1msg2,
        // sha256rnds2, sha256msg1, sha256msg2 xmm1, [rax].
        for bytes in [
            &[0x0f, 0x3a, 0xcc, 0x08, 0x00][..],
            &[0x0f, 0x38, 0xc8, 0x08],
            &[0x0f, 0x38, 0xc9, 0x08],
            &[0x0f, 0x38, 0xca, 0x08],
            &[0x0f, 0x38, 0xcb, 0x08],
            &[0x0f, 0x38, 0xcc, 0x08],
            &[0x0f, 0x38, 0xcd, 0x08],
        ] {
            let insn = Decoder::new(64, bytes, DecoderOptions::NONE).decode();
            assert!(lookup(&insn).is_some(), "{bytes:02x?}");
            assert!(super::super::access::needs_alignment(&insn), "{bytes:02x?}");
        }
    }

    #[test]
    fn only_sha_mnemonics_are_computed() {
        assert_eq!(compute(M::Pxor, 1, 2, 0, 0), None);
        assert!(compute(M::Sha256msg2, 1, 2, 0, 0).is_some());
    }
}
