//! Per-class templates. A template appends one "unit": the instruction
//! under test plus the setup it needs. Templates only use setup
//! instructions from the plainest forms (`mov r64, imm64`, `cmp r64,
//! imm32`, `lea`), so a class's results depend on little outside it.
//! The templates that revolve around memory (data movement, strings,
//! LOCK) are in [`super::memory`].

use iced_x86::{Code, Instruction, Mnemonic, OpCodeOperandKind as K, Register};

use super::build::{bit, make, Builder, Fill, MemOpts, Operand};
use super::regs::{self, RAX, RCX, RDX};
use super::tables::kinds;
use super::Class;
use crate::analysis::fl;

/// Appends one unit of `class` (retrying templates whose operands cannot
/// be encoded together).
pub fn unit(b: &mut Builder<'_>, class: Class) {
    let class = if class == Class::Mixed {
        *b.rng.pick(&Class::ALL[..Class::ALL.len() - 1])
    } else {
        class
    };
    for _ in 0..32 {
        let mark = b.mark();
        b.begin_unit();
        let ok = match class {
            Class::Alu => alu(b),
            Class::Shift => shift(b),
            Class::MulDiv => muldiv(b),
            Class::Bits => bits(b),
            Class::Move => super::memory::moves(b),
            Class::String => super::memory::string(b),
            Class::Flags => flags(b),
            Class::Convert => convert(b),
            Class::Branch => branch(b),
            Class::Lock => super::memory::lock(b),
            Class::Sse => super::simd::sse(b),
            Class::SseFloat => super::simd::sse_float(b),
            Class::Sse3 => super::simd::sse3(b),
            Class::Ssse3 => super::simd::ssse3(b),
            Class::Sse4 => super::simd::sse4(b),
            Class::Avx => super::avx::avx(b),
            Class::Avx2 => super::avx::avx2(b),
            Class::Fma => super::avx::fma(b),
            Class::X87 => super::simd::x87(b),
            Class::Bmi => super::bmi::bmi(b),
            Class::Crypto => super::crypto::crypto(b),
            Class::Mixed => false,
        };
        if ok {
            return;
        }
        b.reset(mark);
    }
}

/// A random form of a random mnemonic from `ms`.
pub(super) fn pick_code(b: &mut Builder<'_>, ms: &[Mnemonic]) -> Option<Code> {
    let m = *b.rng.pick(ms);
    let codes = b.tables.codes(m);
    (!codes.is_empty()).then(|| *b.rng.pick(codes))
}

pub(super) fn plain() -> Fill {
    Fill {
        mem: MemOpts {
            wild: true,
            ..MemOpts::default()
        },
        ..Fill::default()
    }
}

fn alu(b: &mut Builder<'_>) -> bool {
    use Mnemonic::*;
    let Some(code) = pick_code(
        b,
        &[
            Add, Adc, Sub, Sbb, And, Or, Xor, Cmp, Test, Inc, Dec, Neg, Not,
        ],
    ) else {
        return false;
    };
    b.emit(code, &plain())
}

/// Shift counts worth trying: 0, 1, around each width, and beyond.
const COUNTS: [u64; 20] = [
    0, 1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 255, 5,
];

fn count(b: &mut Builder<'_>, double16: bool) -> u64 {
    loop {
        let c = if b.rng.chance(1, 5) {
            b.rng.below(256)
        } else {
            *b.rng.pick(&COUNTS)
        };
        if !double16 || c & 0x1f <= 16 {
            return c;
        }
    }
}

fn shift(b: &mut Builder<'_>) -> bool {
    use Mnemonic::*;
    let Some(code) = pick_code(b, &[Shl, Sal, Shr, Sar, Rol, Ror, Rcl, Rcr, Shld, Shrd]) else {
        return false;
    };
    let ks = kinds(code);
    let double16 = matches!(code.mnemonic(), Shld | Shrd) && ks[0] == K::r16_or_mem;
    let by_cl = ks.last() == Some(&K::cl);
    let mut f = plain();
    if by_cl && b.rng.chance(3, 5) {
        let c = count(b, double16);
        let v = (b.rng.edgy() & !0xff) | c;
        b.set_reg(RCX, v);
        f.mem.avoid |= bit(RCX);
    }
    let Some(mut insn) = b.fill(code, &f) else {
        return false;
    };
    if ks.last() == Some(&K::imm8) {
        insn.set_immediate8(count(b, double16) as u8);
    }
    b.push(insn)
}

fn muldiv(b: &mut Builder<'_>) -> bool {
    use Mnemonic::*;
    let Some(code) = pick_code(b, &[Mul, Imul, Div, Idiv]) else {
        return false;
    };
    let m = code.mnemonic();
    if matches!(m, Div | Idiv) && b.rng.chance(9, 10) {
        guarded_div(b, code)
    } else {
        b.emit(code, &plain())
    }
}

/// DIV/IDIV set up so that it (almost always) does not raise #DE: a
/// non-zero divisor, and a dividend whose quotient fits.
fn guarded_div(b: &mut Builder<'_>, code: Code) -> bool {
    let size = match kinds(code)[0] {
        K::r8_or_mem => 1u32,
        K::r16_or_mem => 2,
        K::r32_or_mem => 4,
        _ => 8,
    };
    let bits = size * 8;
    let mask = if size == 8 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    };
    let signed = code.mnemonic() == Mnemonic::Idiv;
    let mut d = b.rng.edgy() & mask;
    if d == 0 {
        d = 1 + b.rng.below(9);
    }
    // The dividend.
    if signed {
        let v = b.rng.edgy();
        b.set_reg(RAX, v);
        let convert = match size {
            1 => Code::Cbw,
            2 => Code::Cwd,
            4 => Code::Cdq,
            _ => Code::Cqo,
        };
        b.push(Instruction::with(convert));
    } else {
        let high = match b.rng.below(3) {
            0 => 0,
            1 => d - 1,
            _ => b.rng.below(d),
        };
        if size == 1 {
            let v = (b.rng.edgy() & !0xffff) | (high << 8) | (b.rng.next_u64() & 0xff);
            b.set_reg(RAX, v);
        } else {
            let v = b.rng.edgy();
            b.set_reg(RAX, v);
            let v = (b.rng.edgy() & !mask) | high;
            b.set_reg(RDX, v);
        }
    }
    let avoid = bit(RAX) | bit(RDX);
    let divisor = if b.rng.chance(3, 5) {
        let r = b.reg(size, avoid);
        let Some(i) = regs::index_of(r) else {
            return false;
        };
        let shift = if regs::HIGH8.contains(&r) { 8 } else { 0 };
        let v = (b.rng.edgy() & !(mask << shift)) | (d << shift);
        b.set_reg(i, v);
        Operand::Reg(r)
    } else {
        let mem = b.mem(
            size,
            MemOpts {
                avoid,
                ..MemOpts::default()
            },
        );
        let (store, imm) = match size {
            1 => (Code::Mov_rm8_imm8, i64::from(d as u8)),
            2 => (Code::Mov_rm16_imm16, i64::from(d as i16)),
            4 => (Code::Mov_rm32_imm32, i64::from(d as i32)),
            _ => {
                let v = i64::from(d as i32);
                (Code::Mov_rm64_imm32, if v == 0 { 1 } else { v })
            }
        };
        if !make(store, &[Operand::Mem(mem), Operand::Imm(imm)]).is_some_and(|i| b.push(i)) {
            return false;
        }
        Operand::Mem(mem)
    };
    make(code, &[divisor]).is_some_and(|i| b.push(i))
}

fn bits(b: &mut Builder<'_>) -> bool {
    use Mnemonic::*;
    let Some(code) = pick_code(
        b,
        &[Bt, Bts, Btr, Btc, Bsf, Bsr, Tzcnt, Lzcnt, Popcnt, Bswap],
    ) else {
        return false;
    };
    let Some(insn) = b.fill(code, &plain()) else {
        return false;
    };
    bit_offset_guard(b, &insn);
    b.push(insn)
}

/// BT* with a memory operand and a register bit offset can address far
/// from the operand: usually keep the offset small.
pub(super) fn bit_offset_guard(b: &mut Builder<'_>, insn: &Instruction) {
    let bt = matches!(
        insn.mnemonic(),
        Mnemonic::Bt | Mnemonic::Bts | Mnemonic::Btr | Mnemonic::Btc
    );
    if !bt
        || insn.op0_kind() != iced_x86::OpKind::Memory
        || insn.op1_kind() != iced_x86::OpKind::Register
    {
        return;
    }
    let r = insn.op1_register();
    let Some(i) = regs::index_of(r) else {
        return;
    };
    let used = [insn.memory_base(), insn.memory_index()];
    if used.iter().any(|&u| regs::index_of(u) == Some(i)) || !b.rng.chance(4, 5) {
        return;
    }
    let off = b.rng.range(0, 340) as i64 - 40;
    b.set_reg(i, off as u64);
}

/// RFLAGS bits a POPF value may carry: everything up to ID except TF
/// (single-stepping is not under test) and NT (under PVM a host interrupt
/// that lands in the guest's user code clears NT now and then, so the
/// oracle cannot keep it).
const POPF_BITS: u64 = 0x3f_ffff & !(fl::TF | fl::NT);

fn flags(b: &mut Builder<'_>) -> bool {
    let code = *b.rng.pick(&[
        Code::Clc,
        Code::Stc,
        Code::Cmc,
        Code::Cld,
        Code::Std,
        Code::Lahf,
        Code::Sahf,
        Code::Pushfq,
        Code::Pushfw,
        Code::Popfq,
        Code::Popfw,
    ]);
    match code {
        Code::Sahf if b.rng.chance(3, 5) => {
            let v = b.rng.next_u64() & 0xff;
            if let Ok(i) = Instruction::with2(Code::Mov_r8_imm8, Register::AH, v as u32) {
                b.push(i);
            }
        }
        Code::Popfq => {
            let v = b.rng.next_u64() & POPF_BITS;
            let push = if b.rng.chance(7, 10) {
                Instruction::with1(Code::Pushq_imm32, v as i32)
            } else {
                Ok(Instruction::with(Code::Pushfq))
            };
            if !push.is_ok_and(|i| b.push(i)) {
                return false;
            }
        }
        Code::Popfw => {
            let v = b.rng.next_u64() & POPF_BITS & 0xffff;
            let push = if b.rng.chance(7, 10) {
                Instruction::with1(Code::Push_imm16, v as u32)
            } else {
                Ok(Instruction::with(Code::Pushfw))
            };
            if !push.is_ok_and(|i| b.push(i)) {
                return false;
            }
        }
        _ => {}
    }
    b.push(Instruction::with(code))
}

fn convert(b: &mut Builder<'_>) -> bool {
    if b.rng.chance(3, 10) {
        let v = b.rng.edgy();
        b.set_reg(RAX, v);
    }
    let code = *b.rng.pick(&[
        Code::Cbw,
        Code::Cwde,
        Code::Cdqe,
        Code::Cwd,
        Code::Cdq,
        Code::Cqo,
    ]);
    b.push(Instruction::with(code))
}

fn branch(b: &mut Builder<'_>) -> bool {
    use Mnemonic::*;
    const JCC: [Mnemonic; 16] = [
        Jo, Jno, Jb, Jae, Je, Jne, Jbe, Ja, Js, Jns, Jp, Jnp, Jl, Jge, Jle, Jg,
    ];
    if b.rng.chance(1, 4) {
        b.define_flags();
    }
    let code = match b.rng.below(10) {
        0..=5 => {
            let m = *b.rng.pick(&JCC);
            let codes: Vec<Code> = b
                .tables
                .codes(m)
                .iter()
                .copied()
                .filter(|c| matches!(kinds(*c)[0], K::br64_1 | K::br64_4))
                .collect();
            if codes.is_empty() {
                return false;
            }
            *b.rng.pick(&codes)
        }
        6 => *b.rng.pick(&[Code::Jmp_rel8_64, Code::Jmp_rel32_64]),
        7 | 8 => *b.rng.pick(&[
            Code::Loop_rel8_64_RCX,
            Code::Loop_rel8_64_ECX,
            Code::Loope_rel8_64_RCX,
            Code::Loope_rel8_64_ECX,
            Code::Loopne_rel8_64_RCX,
            Code::Loopne_rel8_64_ECX,
        ]),
        _ => *b.rng.pick(&[Code::Jrcxz_rel8_64, Code::Jecxz_rel8_64]),
    };
    let uses_rcx = matches!(code.mnemonic(), Loop | Loope | Loopne | Jrcxz | Jecxz);
    if uses_rcx && b.rng.chance(1, 2) {
        let upper = if b.rng.chance(1, 3) { 1u64 << 32 } else { 0 };
        let v = upper | b.rng.below(3);
        b.set_reg(RCX, v);
    }
    let skip = b.rng.below(3) as usize;
    let Ok(insn) = Instruction::with_branch(code, 0) else {
        return false;
    };
    if !b.push_branch(insn, skip) {
        return false;
    }
    // Payload the branch may skip: plain moves.
    for _ in 0..b.rng.range(1, 2) {
        let r = b.gpr(bit(RCX));
        let v = b.rng.edgy();
        b.set_reg(r, v);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gen::tables::Tables;
    use crate::rng::Rng;

    #[test]
    fn lock_units_put_lock_on_a_memory_destination() {
        let tables = Tables::new();
        let mut rng = Rng::new(3);
        for _ in 0..300 {
            let mut b = Builder::new(&mut rng, &tables);
            unit(&mut b, Class::Lock);
            let items = b.finish();
            let main = items.last().unwrap().insn;
            assert!(
                main.has_lock_prefix() || main.mnemonic() == Mnemonic::Xchg,
                "{main}"
            );
            assert_eq!(main.op0_kind(), iced_x86::OpKind::Memory, "{main}");
        }
    }
}
