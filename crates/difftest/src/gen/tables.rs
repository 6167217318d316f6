//! Instruction forms by mnemonic: every iced-x86 [`Code`] that is valid
//! in 64-bit mode and whose operands are all things the generator can
//! fill (GPRs, memory, immediates, near branches; x87/MMX/XMM registers
//! for the SIMD classes).
//!
//! Legacy and VEX encodings are kept in separate tables
//! ([`Tables::codes`], [`Tables::vex_codes`]), so a class says which it
//! draws from and the legacy classes' case streams do not change as VEX
//! operand kinds become fillable. A VEX [`Code`] fixes VEX.L and VEX.W
//! (iced-x86 has one code per valid L/W combination and encodes the
//! ignored ones as 0), so every form the tables hold is a valid encoding.

use std::collections::HashMap;

use iced_x86::{Code, EncodingKind, Mnemonic, OpCodeOperandKind as K};

/// Whether the generator can fill an operand of this kind.
pub fn fillable(kind: K) -> bool {
    matches!(
        kind,
        K::r8_or_mem
            | K::r16_or_mem
            | K::r32_or_mem
            | K::r64_or_mem
            | K::mem
            | K::mem_offs
            | K::r8_reg
            | K::r8_opcode
            | K::r16_reg
            | K::r16_rm
            | K::r16_opcode
            | K::r32_reg
            | K::r32_rm
            | K::r32_opcode
            | K::r64_reg
            | K::r64_rm
            | K::r64_opcode
            | K::r32_vvvv
            | K::r64_vvvv
            | K::al
            | K::cl
            | K::ax
            | K::eax
            | K::rax
            | K::imm8
            | K::imm8_const_1
            | K::imm8sex16
            | K::imm8sex32
            | K::imm8sex64
            | K::imm16
            | K::imm32
            | K::imm32sex64
            | K::imm64
            | K::br64_1
            | K::br64_4
    )
}

/// Whether an operand kind is an x87, MMX or XMM register or a vector
/// memory operand (filled only for the SIMD classes).
pub fn simd_kind(kind: K) -> bool {
    matches!(
        kind,
        K::xmm_reg
            | K::xmm_rm
            | K::xmm_or_mem
            | K::mm_reg
            | K::mm_rm
            | K::mm_or_mem
            | K::st0
            | K::sti_opcode
    )
}

/// Whether an operand kind is a VEX vector operand: a YMM register, an
/// XMM or YMM register in VEX.vvvv or in imm8[7:4], or YMM/memory.
pub fn vex_kind(kind: K) -> bool {
    matches!(
        kind,
        K::xmm_vvvv
            | K::xmm_is4
            | K::ymm_reg
            | K::ymm_rm
            | K::ymm_vvvv
            | K::ymm_is4
            | K::ymm_or_mem
    )
}

/// Forms left out on purpose: BSWAP r16 has an undefined result; MOVSXD
/// r16, r/m16 reads two bytes on Intel but four on AMD (this project's
/// hosts), so the oracle and the SDM disagree.
const EXCLUDED: [Code; 2] = [Code::Bswap_r16, Code::Movsxd_r16_rm16];

/// The operand kinds of `code`.
pub fn kinds(code: Code) -> Vec<K> {
    let op = code.op_code();
    (0..op.op_count()).map(|i| op.op_kind(i)).collect()
}

/// Instruction forms grouped by mnemonic.
#[derive(Debug)]
pub struct Tables {
    by_mnemonic: HashMap<Mnemonic, Vec<Code>>,
    simd_by_mnemonic: HashMap<Mnemonic, Vec<Code>>,
    vex_by_mnemonic: HashMap<Mnemonic, Vec<Code>>,
}

impl Default for Tables {
    fn default() -> Self {
        Self::new()
    }
}

impl Tables {
    /// Builds the tables from iced-x86's opcode table.
    pub fn new() -> Self {
        let mut by_mnemonic: HashMap<Mnemonic, Vec<Code>> = HashMap::new();
        let mut simd_by_mnemonic: HashMap<Mnemonic, Vec<Code>> = HashMap::new();
        let mut vex_by_mnemonic: HashMap<Mnemonic, Vec<Code>> = HashMap::new();
        for code in Code::values() {
            let op = code.op_code();
            let usable = op.is_instruction() && op.mode64() && !EXCLUDED.contains(&code);
            let legacy = usable && op.encoding() == EncodingKind::Legacy;
            let vex = usable && op.encoding() == EncodingKind::VEX;
            if vex
                && kinds(code)
                    .into_iter()
                    .all(|k| fillable(k) || simd_kind(k) || vex_kind(k))
            {
                vex_by_mnemonic
                    .entry(code.mnemonic())
                    .or_default()
                    .push(code);
            }
            if legacy && kinds(code).into_iter().all(fillable) {
                by_mnemonic.entry(code.mnemonic()).or_default().push(code);
            }
            if legacy && kinds(code).into_iter().all(|k| fillable(k) || simd_kind(k)) {
                simd_by_mnemonic
                    .entry(code.mnemonic())
                    .or_default()
                    .push(code);
            }
        }
        Tables {
            by_mnemonic,
            simd_by_mnemonic,
            vex_by_mnemonic,
        }
    }

    /// Every form of `m` (empty if none is usable).
    pub fn codes(&self, m: Mnemonic) -> &[Code] {
        self.by_mnemonic.get(&m).map_or(&[], Vec::as_slice)
    }

    /// Every form of `m`, including those with x87/MMX/XMM operands.
    pub fn simd_codes(&self, m: Mnemonic) -> &[Code] {
        self.simd_by_mnemonic.get(&m).map_or(&[], Vec::as_slice)
    }

    /// Every VEX-encoded form of `m` whose operands can be filled: the
    /// general-register ones of BMI1/BMI2 and the vector ones of AVX,
    /// AVX2, FMA and F16C.
    pub fn vex_codes(&self, m: Mnemonic) -> &[Code] {
        self.vex_by_mnemonic.get(&m).map_or(&[], Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_usual_forms_are_there() {
        let t = Tables::new();
        assert!(t.codes(Mnemonic::Add).contains(&Code::Add_rm64_imm8));
        assert!(t.codes(Mnemonic::Add).contains(&Code::Add_AL_imm8));
        assert!(t.codes(Mnemonic::Imul).contains(&Code::Imul_r64_rm64_imm32));
        assert!(t.codes(Mnemonic::Mov).contains(&Code::Mov_RAX_moffs64));
        assert!(t.codes(Mnemonic::Shl).contains(&Code::Shl_rm16_1));
        assert!(!t.codes(Mnemonic::Mov).contains(&Code::Mov_r64_cr));
        assert!(!t.codes(Mnemonic::Bswap).contains(&Code::Bswap_r16));
        assert!(t
            .codes(Mnemonic::Cmpxchg16b)
            .contains(&Code::Cmpxchg16b_m128));
    }

    #[test]
    fn vex_forms_are_apart_from_the_legacy_ones() {
        let t = Tables::new();
        assert!(t.codes(Mnemonic::Andn).is_empty());
        assert_eq!(
            t.vex_codes(Mnemonic::Andn),
            [Code::VEX_Andn_r32_r32_rm32, Code::VEX_Andn_r64_r64_rm64]
        );
        assert_eq!(t.vex_codes(Mnemonic::Rorx).len(), 2);
        assert_eq!(t.vex_codes(Mnemonic::Mulx).len(), 2);
        assert!(t.vex_codes(Mnemonic::Add).is_empty());
        assert!(t.codes(Mnemonic::Adcx).contains(&Code::Adcx_r64_rm64));
        // Only VEX.L = 0 forms exist for the GPR instructions.
        for m in [Mnemonic::Blsi, Mnemonic::Bzhi, Mnemonic::Shlx] {
            for c in t.vex_codes(m) {
                assert_eq!(c.op_code().l(), 0, "{c:?}");
            }
        }
    }
}
