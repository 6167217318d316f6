//! Templates of the `bmi` class: the general-register extensions BMI1
//! (ANDN, BEXTR, BLSI, BLSMSK, BLSR), BMI2 (BZHI, MULX, PDEP, PEXT, RORX,
//! SARX, SHLX, SHRX), all VEX-encoded ([`super::tables::Tables::vex_codes`]),
//! and ADX (ADCX, ADOX, legacy-encoded).
//!
//! Operands are filled like any integer instruction's; the operand that
//! controls the operation (BEXTR's start and length, BZHI's index, the
//! X-shifts' count, RORX's immediate) is usually set to a value around
//! the interesting boundaries (0, the operand width, 255) so those cases
//! come up often; PDEP and PEXT selectors are sometimes sparse.

use iced_x86::{Instruction, Mnemonic, OpKind};

use super::build::Builder;
use super::classes::plain;
use super::regs::{self, RDX};

/// The VEX-encoded mnemonics of the class.
const VEX: [Mnemonic; 13] = {
    use Mnemonic::*;
    [
        Andn, Bextr, Blsi, Blsmsk, Blsr, Bzhi, Mulx, Pdep, Pext, Rorx, Sarx, Shlx, Shrx,
    ]
};

/// The legacy-encoded ones.
const LEGACY: [Mnemonic; 2] = [Mnemonic::Adcx, Mnemonic::Adox];

/// Bit positions and counts worth trying: 0, 1, around 32 and 64, beyond.
const POSITIONS: [u64; 14] = [0, 1, 7, 8, 31, 32, 33, 63, 64, 65, 127, 128, 255, 16];

/// Every mnemonic the class generates.
pub fn mnemonics() -> impl Iterator<Item = Mnemonic> {
    VEX.into_iter().chain(LEGACY)
}

/// A position: usually one of [`POSITIONS`], sometimes any byte.
fn position(b: &mut Builder<'_>) -> u64 {
    if b.rng.chance(1, 4) {
        b.rng.below(256)
    } else {
        *b.rng.pick(&POSITIONS)
    }
}

/// Appends one BMI1/BMI2/ADX unit.
pub fn bmi(b: &mut Builder<'_>) -> bool {
    let vex = b
        .rng
        .chance(VEX.len() as u64, (VEX.len() + LEGACY.len()) as u64);
    let (m, codes) = if vex {
        let m = *b.rng.pick(&VEX);
        (m, b.tables.vex_codes(m))
    } else {
        let m = *b.rng.pick(&LEGACY);
        (m, b.tables.codes(m))
    };
    if codes.is_empty() {
        return false;
    }
    let code = *b.rng.pick(codes);
    if m == Mnemonic::Mulx && b.rng.chance(1, 3) {
        let v = b.rng.edgy();
        b.set_reg(RDX, v);
    }
    let Some(mut insn) = b.fill(code, &plain()) else {
        return false;
    };
    match m {
        Mnemonic::Rorx => {
            let count = position(b);
            insn.set_immediate8(count as u8);
        }
        Mnemonic::Bextr if b.rng.chance(3, 4) => {
            let control = position(b) | position(b) << 8;
            let upper = b.rng.edgy() & !0xffff;
            set_control(b, &insn, 2, upper | control);
        }
        Mnemonic::Bzhi | Mnemonic::Sarx | Mnemonic::Shlx | Mnemonic::Shrx if b.rng.chance(3, 4) => {
            let upper = b.rng.edgy() & !0xff;
            let index = position(b);
            set_control(b, &insn, 2, upper | index);
        }
        Mnemonic::Pdep | Mnemonic::Pext if b.rng.chance(1, 2) => {
            let sparse = b.rng.next_u64() & b.rng.next_u64() & b.rng.next_u64();
            set_control(b, &insn, 2, sparse);
        }
        _ => {}
    }
    b.push(insn)
}

/// Sets operand `n` of `insn`, if it is a register not used to address
/// memory, to `value` (with a `mov` before the instruction).
fn set_control(b: &mut Builder<'_>, insn: &Instruction, n: u32, value: u64) {
    if insn.op_kind(n) != OpKind::Register {
        return;
    }
    let Some(i) = regs::index_of(insn.op_register(n)) else {
        return;
    };
    let address = [insn.memory_base(), insn.memory_index()];
    if (0..insn.op_count()).any(|k| insn.op_kind(k) == OpKind::Memory)
        && address.iter().any(|&r| regs::index_of(r) == Some(i))
    {
        return;
    }
    b.set_reg(i, value);
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::gen::{Class, Generator};

    #[test]
    fn every_mnemonic_and_form_comes_up() {
        let g = Generator::new(8);
        let mut seen = HashSet::new();
        let mut codes = HashSet::new();
        let mut memory = false;
        for i in 0..3000 {
            for item in g.case(13, i, Class::Bmi).items {
                seen.insert(item.insn.mnemonic());
                codes.insert(item.insn.code());
                memory |= item.insn.mnemonic() != Mnemonic::Mov
                    && (0..item.insn.op_count()).any(|k| item.insn.op_kind(k) == OpKind::Memory);
            }
        }
        let tables = crate::gen::tables::Tables::new();
        for m in mnemonics() {
            assert!(seen.contains(&m), "{m:?} never generated");
            let forms = if VEX.contains(&m) {
                tables.vex_codes(m)
            } else {
                tables.codes(m)
            };
            assert_eq!(forms.len(), 2, "{m:?}: a 32- and a 64-bit form");
            for c in forms {
                assert!(codes.contains(c), "{c:?} never generated");
            }
        }
        assert!(memory, "no memory operand");
    }
}
