//! Coverage checks of the generator: every class produces every one of
//! its mnemonics, and nearly every encoding form of each.

use std::collections::HashSet;

use iced_x86::{Code, Mnemonic, OpKind};

use crate::gen::tables::{kinds, Tables};
use crate::gen::{Class, Generator};

fn seen(class: Class, n: u64) -> (HashSet<Mnemonic>, HashSet<Code>, bool, bool) {
    let g = Generator::new(8);
    let mut mnemonics = HashSet::new();
    let mut codes = HashSet::new();
    let mut addr32 = false;
    let mut locked = false;
    for i in 0..n {
        for item in g.case(99, i, class).items {
            let insn = item.insn;
            mnemonics.insert(insn.mnemonic());
            codes.insert(insn.code());
            locked |= insn.has_lock_prefix();
            addr32 |= (0..insn.op_count()).any(|k| insn.op_kind(k) == OpKind::Memory)
                && insn.memory_base().size() == 4;
        }
    }
    (mnemonics, codes, addr32, locked)
}

/// Every mnemonic of a class shows up, and nearly every encoding form
/// of it (all operand sizes, register and memory forms).
fn check(class: Class, expected: &[Mnemonic]) {
    let (mnemonics, codes, _, _) = seen(class, 4000);
    let tables = Tables::new();
    for m in expected {
        assert!(mnemonics.contains(m), "{class}: {m:?} never generated");
        let forms: Vec<Code> = tables
            .codes(*m)
            .iter()
            .copied()
            .filter(|c| {
                !matches!(
                    kinds(*c).first(),
                    Some(iced_x86::OpCodeOperandKind::br64_1 | iced_x86::OpCodeOperandKind::br64_4)
                )
            })
            .collect();
        let missing: Vec<&Code> = forms.iter().filter(|c| !codes.contains(c)).collect();
        assert!(
            missing.len() * 10 <= forms.len().max(1),
            "{class}: forms of {m:?} never generated: {missing:?}"
        );
    }
}

#[test]
fn alu_covers_every_mnemonic_and_form() {
    use Mnemonic::*;
    check(
        Class::Alu,
        &[
            Add, Adc, Sub, Sbb, And, Or, Xor, Cmp, Test, Inc, Dec, Neg, Not,
        ],
    );
}

#[test]
fn shift_covers_every_mnemonic_and_form() {
    use Mnemonic::*;
    check(
        Class::Shift,
        &[Shl, Sal, Shr, Sar, Rol, Ror, Rcl, Rcr, Shld, Shrd],
    );
}

#[test]
fn muldiv_and_bits_cover_every_mnemonic_and_form() {
    use Mnemonic::*;
    check(Class::MulDiv, &[Mul, Imul, Div, Idiv]);
    check(
        Class::Bits,
        &[Bt, Bts, Btr, Btc, Bsf, Bsr, Tzcnt, Lzcnt, Popcnt, Bswap],
    );
}

#[test]
fn move_covers_every_mnemonic() {
    use Mnemonic::*;
    let (m, _, addr32, _) = seen(Class::Move, 4000);
    for x in [
        Mov, Movzx, Movsx, Movsxd, Xchg, Xadd, Cmpxchg, Cmpxchg8b, Cmpxchg16b, Cmovb, Cmovg, Sete,
        Setl, Lea, Push, Pop, Enter, Leave,
    ] {
        assert!(m.contains(&x), "move: {x:?} never generated");
    }
    assert!(addr32, "no 0x67 (32-bit address) form");
}

#[test]
fn string_flags_convert_and_branch_cover_every_mnemonic() {
    use Mnemonic::*;
    let (m, _, _, _) = seen(Class::String, 3000);
    for x in [
        Movsb, Movsw, Movsd, Movsq, Stosb, Stosq, Lodsb, Lodsd, Scasb, Scasw, Cmpsb, Cmpsq,
    ] {
        assert!(m.contains(&x), "string: {x:?} never generated");
    }
    let (m, _, _, _) = seen(Class::Flags, 2000);
    for x in [
        Clc, Stc, Cmc, Cld, Std, Lahf, Sahf, Pushf, Pushfq, Popf, Popfq,
    ] {
        assert!(m.contains(&x), "flags: {x:?} never generated");
    }
    let (m, _, _, _) = seen(Class::Convert, 1000);
    for x in [Cbw, Cwde, Cdqe, Cwd, Cdq, Cqo] {
        assert!(m.contains(&x), "convert: {x:?} never generated");
    }
    let (m, _, _, _) = seen(Class::Branch, 3000);
    for x in [
        Jo, Jb, Je, Jbe, Js, Jp, Jl, Jle, Jmp, Loop, Loope, Loopne, Jrcxz, Jecxz,
    ] {
        assert!(m.contains(&x), "branch: {x:?} never generated");
    }
}

#[test]
fn lock_class_uses_lock() {
    let (_, _, _, locked) = seen(Class::Lock, 500);
    assert!(locked);
}
