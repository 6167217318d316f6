//! Templates for the memory-centred classes: data movement (MOV and
//! friends, XCHG, XADD, CMPXCHG*, CMOVcc, SETcc, LEA, PUSH, POP, ENTER,
//! LEAVE), string instructions, and LOCK-prefixed read-modify-writes.

use iced_x86::{
    Code, Instruction, MemoryOperand, Mnemonic, OpCodeOperandKind as K, Register, RepPrefixKind,
};

use super::build::{bit, make, Builder, Fill, MemOpts, Operand};
use super::classes::{bit_offset_guard, pick_code, plain};
use super::regs::{self, RAX, RBX, RCX, RDI, RDX, RSI};
use super::tables::kinds;
use crate::layout::{DATA, DATA_SIZE, PAGE};

/// A data-movement unit: MOV (all forms), MOVZX/MOVSX/MOVSXD, XCHG,
/// XADD, CMPXCHG, CMPXCHG8B/16B, CMOVcc, SETcc, LEA, PUSH, POP, ENTER or
/// LEAVE.
pub fn moves(b: &mut Builder<'_>) -> bool {
    use Mnemonic::*;
    const CMOV: [Mnemonic; 16] = [
        Cmovo, Cmovno, Cmovb, Cmovae, Cmove, Cmovne, Cmovbe, Cmova, Cmovs, Cmovns, Cmovp, Cmovnp,
        Cmovl, Cmovge, Cmovle, Cmovg,
    ];
    const SET: [Mnemonic; 16] = [
        Seto, Setno, Setb, Setae, Sete, Setne, Setbe, Seta, Sets, Setns, Setp, Setnp, Setl, Setge,
        Setle, Setg,
    ];
    let m = match b.rng.below(20) {
        0..=3 => Mov,
        4 => Movzx,
        5 => Movsx,
        6 => Movsxd,
        7 => Xchg,
        8 => Xadd,
        9 => Cmpxchg,
        10 => {
            if b.rng.chance(1, 2) {
                Cmpxchg8b
            } else {
                Cmpxchg16b
            }
        }
        11 => *b.rng.pick(&CMOV),
        12 => *b.rng.pick(&SET),
        13 => Lea,
        14 | 15 => Push,
        16 | 17 => Pop,
        18 => Enter,
        _ => Leave,
    };
    match m {
        Lea => lea(b),
        Enter => enter(b),
        Leave => leave(b),
        Cmpxchg8b | Cmpxchg16b => cmpxchg_wide(b, m, false),
        Cmpxchg => cmpxchg(b, false),
        Xchg => {
            let Some(code) = pick_code(b, &[Xchg]) else {
                return false;
            };
            let mut f = plain();
            f.mem.line_safe = true; // XCHG with memory is always locked
            b.emit(code, &f)
        }
        _ => {
            let Some(code) = pick_code(b, &[m]) else {
                return false;
            };
            b.emit(code, &plain())
        }
    }
}

fn lea(b: &mut Builder<'_>) -> bool {
    let code = *b
        .rng
        .pick(&[Code::Lea_r16_m, Code::Lea_r32_m, Code::Lea_r64_m]);
    let size = match code {
        Code::Lea_r16_m => 2,
        Code::Lea_r32_m => 4,
        _ => 8,
    };
    let r = b.reg(size, 0);
    let a = b.address();
    make(code, &[Operand::Reg(r), Operand::Mem(a)]).is_some_and(|i| b.push(i))
}

/// `lea rbp, [rsp + 8k]`: a frame pointer into the stack, for ENTER with
/// nesting and LEAVE.
fn frame_pointer(b: &mut Builder<'_>) {
    let k = b.rng.below(9) as i64 * 8;
    let m = MemoryOperand::with_base_displ(Register::RSP, k);
    if let Some(i) = make(
        Code::Lea_r64_m,
        &[Operand::Reg(Register::RBP), Operand::Mem(m)],
    ) {
        b.push(i);
    }
}

fn enter(b: &mut Builder<'_>) -> bool {
    let code = if b.rng.chance(4, 5) {
        Code::Enterq_imm16_imm8
    } else {
        Code::Enterw_imm16_imm8
    };
    let size = match b.rng.below(6) {
        0 => 0,
        1 => 8,
        2 => 0x10,
        3 => 0x20,
        4 => b.rng.below(0x100) as i64,
        _ => b.rng.below(0x40) as i64,
    };
    let level = match b.rng.below(10) {
        0..=4 => 0,
        5..=8 => b.rng.range(1, 4) as i64,
        _ => b.rng.range(5, 31) as i64,
    };
    if level > 0 && b.rng.chance(7, 10) {
        frame_pointer(b);
    }
    make(code, &[Operand::Imm(size), Operand::Imm(level)]).is_some_and(|i| b.push(i))
}

fn leave(b: &mut Builder<'_>) -> bool {
    if b.rng.chance(4, 5) {
        frame_pointer(b);
    }
    let code = if b.rng.chance(4, 5) {
        Code::Leaveq
    } else {
        Code::Leavew
    };
    b.push(Instruction::with(code))
}

/// The accumulator of `size` bytes.
fn acc(size: u32) -> Register {
    regs::sized(RAX, size)
}

fn cmpxchg(b: &mut Builder<'_>, locked: bool) -> bool {
    let Some(code) = pick_code(b, &[Mnemonic::Cmpxchg]) else {
        return false;
    };
    let mut f = plain();
    f.avoid = bit(RAX);
    f.mem.line_safe = locked;
    f.force_mem = locked;
    let Some(mut insn) = b.fill(code, &f) else {
        return false;
    };
    // Often make the comparison succeed: load the accumulator from the
    // destination.
    if b.rng.chance(2, 5) {
        let size = match kinds(code)[0] {
            K::r8_or_mem => 1,
            K::r16_or_mem => 2,
            K::r32_or_mem => 4,
            _ => 8,
        };
        let load = match size {
            1 => Code::Mov_r8_rm8,
            2 => Code::Mov_r16_rm16,
            4 => Code::Mov_r32_rm32,
            _ => Code::Mov_r64_rm64,
        };
        let src = if insn.op0_kind() == iced_x86::OpKind::Register {
            Operand::Reg(insn.op0_register())
        } else {
            Operand::Mem(mem_of(&insn))
        };
        if !make(load, &[Operand::Reg(acc(size)), src]).is_some_and(|i| b.push(i)) {
            return false;
        }
    }
    insn.set_has_lock_prefix(locked);
    b.push(insn)
}

/// The memory operand of `insn` as a [`MemoryOperand`].
fn mem_of(insn: &Instruction) -> MemoryOperand {
    let displ_size = match insn.memory_displ_size() {
        0 | 1 => 1,
        s => s,
    };
    let displ = insn.memory_displacement64() as i64;
    MemoryOperand::new(
        insn.memory_base(),
        insn.memory_index(),
        insn.memory_index_scale(),
        displ,
        displ_size,
        false,
        Register::None,
    )
}

fn cmpxchg_wide(b: &mut Builder<'_>, m: Mnemonic, locked: bool) -> bool {
    let (code, size) = if m == Mnemonic::Cmpxchg8b {
        (Code::Cmpxchg8b_m64, 8u32)
    } else {
        (Code::Cmpxchg16b_m128, 16)
    };
    let align = if size == 16 && b.rng.chance(1, 10) {
        1 // misaligned CMPXCHG16B: #GP
    } else if b.rng.chance(4, 5) {
        u64::from(size)
    } else {
        1
    };
    let opts = MemOpts {
        avoid: bit(RAX) | bit(RDX) | bit(RBX) | bit(RCX),
        line_safe: true,
        align,
        wild: false,
    };
    let mem = b.mem(size, opts);
    if b.rng.chance(1, 2) {
        // Load RDX:RAX (EDX:EAX) from the operand so the compare succeeds.
        let half = size / 2;
        let load = if half == 8 {
            Code::Mov_r64_rm64
        } else {
            Code::Mov_r32_rm32
        };
        let hi = MemoryOperand::new(
            mem.base,
            mem.index,
            mem.scale,
            mem.displacement + i64::from(half),
            mem.displ_size.max(1),
            false,
            Register::None,
        );
        for (r, m) in [(RAX, mem), (RDX, hi)] {
            if !make(load, &[Operand::Reg(regs::sized(r, half)), Operand::Mem(m)])
                .is_some_and(|i| b.push(i))
            {
                return false;
            }
        }
    }
    let lock = locked || b.rng.chance(1, 4);
    match make(code, &[Operand::Mem(mem)]) {
        Some(mut i) => {
            i.set_has_lock_prefix(lock);
            b.push(i)
        }
        None => false,
    }
}

/// A string-instruction pointer: somewhere in the data pages with room
/// for eight elements either way, sometimes near the page boundary.
fn string_pointer(b: &mut Builder<'_>) -> u64 {
    let off = if b.rng.chance(1, 5) {
        PAGE - 32 + b.rng.below(64)
    } else {
        b.rng.range(0x80, DATA_SIZE - 0x80)
    };
    DATA + off
}

/// A string unit: MOVS/STOS/LODS/SCAS/CMPS of any size, with or without
/// REP/REPE/REPNE, 64- or 32-bit addresses, pointers into the data pages,
/// a small count, sometimes CLD/STD first.
pub fn string(b: &mut Builder<'_>) -> bool {
    let op = b.rng.below(5);
    let size = 1u32 << b.rng.below(4);
    let addr32 = b.rng.chance(1, 8);
    let address_size = if addr32 { 32 } else { 64 };
    let cmp_like = op >= 3;
    let rep = match b.rng.below(10) {
        0..=3 => RepPrefixKind::None,
        4..=7 => RepPrefixKind::Repe,
        _ if cmp_like => RepPrefixKind::Repne,
        _ => RepPrefixKind::Repe,
    };
    // Setup: pointers, count, direction.
    let src = string_pointer(b);
    let dst = if b.rng.chance(1, 4) {
        // Overlapping source and destination.
        src.wrapping_add(b.rng.below(17)).wrapping_sub(8)
    } else {
        string_pointer(b)
    };
    let upper = if addr32 && b.rng.chance(1, 2) {
        b.rng.next_u64() << 32
    } else {
        0
    };
    if b.rng.chance(9, 10) {
        b.set_reg(RSI, upper | src);
    }
    if b.rng.chance(9, 10) {
        b.set_reg(RDI, upper | dst);
    }
    if rep != RepPrefixKind::None {
        let n = if b.rng.chance(1, 20) {
            b.rng.edgy()
        } else {
            upper | b.rng.below(9)
        };
        b.set_reg(RCX, n);
    }
    if b.rng.chance(1, 4) {
        let d = if b.rng.chance(1, 2) {
            Code::Cld
        } else {
            Code::Std
        };
        b.push(Instruction::with(d));
    }
    let seg = Register::None;
    let insn = match (op, size) {
        (0, 1) => Instruction::with_movsb(address_size, seg, rep),
        (0, 2) => Instruction::with_movsw(address_size, seg, rep),
        (0, 4) => Instruction::with_movsd(address_size, seg, rep),
        (0, _) => Instruction::with_movsq(address_size, seg, rep),
        (1, 1) => Instruction::with_stosb(address_size, rep),
        (1, 2) => Instruction::with_stosw(address_size, rep),
        (1, 4) => Instruction::with_stosd(address_size, rep),
        (1, _) => Instruction::with_stosq(address_size, rep),
        (2, 1) => Instruction::with_lodsb(address_size, seg, rep),
        (2, 2) => Instruction::with_lodsw(address_size, seg, rep),
        (2, 4) => Instruction::with_lodsd(address_size, seg, rep),
        (2, _) => Instruction::with_lodsq(address_size, seg, rep),
        (3, 1) => Instruction::with_scasb(address_size, rep),
        (3, 2) => Instruction::with_scasw(address_size, rep),
        (3, 4) => Instruction::with_scasd(address_size, rep),
        (3, _) => Instruction::with_scasq(address_size, rep),
        (_, 1) => Instruction::with_cmpsb(address_size, seg, rep),
        (_, 2) => Instruction::with_cmpsw(address_size, seg, rep),
        (_, 4) => Instruction::with_cmpsd(address_size, seg, rep),
        (_, _) => Instruction::with_cmpsq(address_size, seg, rep),
    };
    insn.is_ok_and(|i| b.push(i))
}

/// A LOCK unit: a lockable read-modify-write form with a memory
/// destination that stays inside one cache line.
pub fn lock(b: &mut Builder<'_>) -> bool {
    use Mnemonic::*;
    let m = *b.rng.pick(&[
        Add, Adc, Sub, Sbb, And, Or, Xor, Inc, Dec, Neg, Not, Bts, Btr, Btc, Xadd, Xchg, Cmpxchg,
        Cmpxchg8b, Cmpxchg16b,
    ]);
    match m {
        Cmpxchg => return cmpxchg(b, true),
        Cmpxchg8b | Cmpxchg16b => return cmpxchg_wide(b, m, true),
        _ => {}
    }
    let codes: Vec<Code> = b
        .tables
        .codes(m)
        .iter()
        .copied()
        .filter(|c| {
            c.op_code().can_use_lock_prefix()
                && matches!(
                    kinds(*c)[0],
                    K::r8_or_mem | K::r16_or_mem | K::r32_or_mem | K::r64_or_mem
                )
        })
        .collect();
    if codes.is_empty() {
        return false;
    }
    let code = *b.rng.pick(&codes);
    let size = match kinds(code)[0] {
        K::r8_or_mem => 1,
        K::r16_or_mem => 2,
        K::r32_or_mem => 4,
        _ => 8,
    };
    let bt = matches!(m, Bts | Btr | Btc);
    let f = Fill {
        force_mem: true,
        mem: MemOpts {
            line_safe: true,
            // A bit offset moves the access by whole operands: keep them aligned.
            align: if bt { size } else { 1 },
            ..MemOpts::default()
        },
        ..Fill::default()
    };
    let Some(mut insn) = b.fill(code, &f) else {
        return false;
    };
    if bt {
        bit_offset_guard(b, &insn);
    }
    if m != Xchg || b.rng.chance(1, 2) {
        insn.set_has_lock_prefix(true);
    }
    b.push(insn)
}
