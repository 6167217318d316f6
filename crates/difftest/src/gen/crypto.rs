//! Templates and initial state of the `crypto` class: AES-NI (AESENC,
//! AESENCLAST, AESDEC, AESDECLAST, AESIMC, AESKEYGENASSIST), PCLMULQDQ
//! and the SHA extensions (SHA1RNDS4, SHA1NEXTE, SHA1MSG1, SHA1MSG2,
//! SHA256RNDS2 with its implicit XMM0, SHA256MSG1, SHA256MSG2), legacy
//! encodings.
//!
//! Their operands are bit patterns, not numbers, so the XMM registers
//! start with uniformly random values (the SSE classes' float-shaped
//! lanes would leave most bits alike). Register or 16-byte memory
//! sources, aligned but one time in twenty (which must be #GP); every
//! imm8 bit random, those the instructions ignore included.
//!
//! The SHA instructions' memory operands are always aligned: the SDM
//! gives them the Type 4 exception conditions (#GP for a misaligned
//! legacy 16-byte operand), which the emu engine follows, but the
//! oracle's AMD EPYC runs them misaligned without a fault.

use iced_x86::Mnemonic;

use super::build::Builder;
use super::simd::{fill_for, random_fpu};
use crate::rng::Rng;
use crate::state::FpuRegs;

/// The mnemonics of the class.
pub const MNEMONICS: [Mnemonic; 14] = {
    use Mnemonic::*;
    [
        Aesenc,
        Aesenclast,
        Aesdec,
        Aesdeclast,
        Aesimc,
        Aeskeygenassist,
        Pclmulqdq,
        Sha1rnds4,
        Sha1nexte,
        Sha1msg1,
        Sha1msg2,
        Sha256rnds2,
        Sha256msg1,
        Sha256msg2,
    ]
};

/// Whether `m` is a SHA instruction (see the module doc on alignment).
fn is_sha(m: Mnemonic) -> bool {
    use Mnemonic::*;
    matches!(
        m,
        Sha1rnds4 | Sha1nexte | Sha1msg1 | Sha1msg2 | Sha256rnds2 | Sha256msg1 | Sha256msg2
    )
}

/// [`random_fpu`]'s x87 and MXCSR state with every XMM register
/// uniformly random.
pub fn random_crypto_fpu(rng: &mut Rng) -> FpuRegs {
    let mut f = random_fpu(rng);
    for x in f.xmm.iter_mut() {
        *x = u128::from(rng.next_u64()) | u128::from(rng.next_u64()) << 64;
    }
    f
}

/// Appends one AES-NI, PCLMULQDQ or SHA instruction.
pub fn crypto(b: &mut Builder<'_>) -> bool {
    let m = *b.rng.pick(&MNEMONICS);
    let codes = b.tables.simd_codes(m);
    if codes.is_empty() {
        return false;
    }
    let code = *b.rng.pick(codes);
    let mut f = fill_for(b, code);
    if is_sha(m) {
        f.mem.align = 16;
        f.mem.wild = false;
    }
    let Some(mut insn) = b.fill(code, &f) else {
        return false;
    };
    if insn.op_count() == 3 {
        let imm = b.rng.below(256) as u8;
        insn.set_immediate8(imm);
    }
    b.push(insn)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use iced_x86::OpKind;

    use super::*;
    use crate::gen::{Class, Generator};

    #[test]
    fn every_mnemonic_comes_up_with_registers_and_memory() {
        let g = Generator::new(8);
        let mut seen = HashSet::new();
        let mut memory = HashSet::new();
        for i in 0..2000 {
            for item in g.case(17, i, Class::Crypto).items {
                let insn = item.insn;
                seen.insert(insn.mnemonic());
                if (0..insn.op_count()).any(|k| insn.op_kind(k) == OpKind::Memory) {
                    memory.insert(insn.mnemonic());
                }
            }
        }
        for m in MNEMONICS {
            assert!(seen.contains(&m), "{m:?} never generated");
            assert!(memory.contains(&m), "{m:?} never with a memory operand");
        }
    }
}
