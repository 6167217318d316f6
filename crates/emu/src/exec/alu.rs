//! Integer arithmetic and logic: ADD, ADC, SUB, SBB, AND, OR, XOR, CMP,
//! TEST, INC, DEC, NEG, NOT; the flag instructions CLC, STC, CMC, CLD,
//! STD, LAHF, SAHF, SALC; the sign extensions CBW/CWDE/CDQE and
//! CWD/CDQ/CQO; XLAT; and the decimal adjusts AAA, AAS, DAA, DAS, AAM,
//! AAD (SDM Vol. 1 §7.3.2-§7.3.4 and §7.3.13, Vol. 2 instruction pages).
//!
//! Flags are recorded lazily through [`Flags::set_result`]. Where the SDM
//! leaves a flag undefined this module makes these choices (the
//! differential tester masks them):
//! - AND/OR/XOR/TEST: AF = 0 (as Intel hardware).
//! - AAA/AAS: SF, ZF, PF from the final AL, OF = 0.
//! - DAA/DAS: OF = 0.
//! - AAM: CF = OF = AF = 0 (flags of a logic operation on AL).
//! - AAD: CF, OF, AF of the 8-bit addition AL + AH * imm8 (what Intel
//!   hardware reports).

use iced_x86::{Instruction, Mnemonic};

use super::operand::{modify_op, op_size, read_op};
use super::HandlerEntry;
use super::LinkEffect::KeepsLinks;
use crate::fault::Fault;
use crate::flags::{self, sign_extend, FlagOp, Flags, AF, ARITH, CF, PF, SF, ZF};
use crate::state::{reg, CodeSize};
use crate::Cpu;

pub(crate) const ADD: u8 = 0;
pub(crate) const ADC: u8 = 1;
pub(crate) const SUB: u8 = 2;
pub(crate) const SBB: u8 = 3;
pub(crate) const AND: u8 = 4;
pub(crate) const OR: u8 = 5;
pub(crate) const XOR: u8 = 6;

/// The handler for `insn`, if this module implements it, with its effect
/// on block links.
pub fn lookup(insn: &Instruction) -> Option<HandlerEntry> {
    use Mnemonic as M;
    Some(match insn.mnemonic() {
        M::Add => (binop::<ADD>, KeepsLinks),
        M::Adc => (binop::<ADC>, KeepsLinks),
        M::Sub => (binop::<SUB>, KeepsLinks),
        M::Sbb => (binop::<SBB>, KeepsLinks),
        M::And => (binop::<AND>, KeepsLinks),
        M::Or => (binop::<OR>, KeepsLinks),
        M::Xor => (binop::<XOR>, KeepsLinks),
        M::Cmp => (cmp, KeepsLinks),
        M::Test => (test, KeepsLinks),
        M::Inc => (inc, KeepsLinks),
        M::Dec => (dec, KeepsLinks),
        M::Neg => (neg, KeepsLinks),
        M::Not => (not, KeepsLinks),
        M::Clc => (clc, KeepsLinks),
        M::Stc => (stc, KeepsLinks),
        M::Cmc => (cmc, KeepsLinks),
        M::Cld => (cld, KeepsLinks),
        M::Std => (std_, KeepsLinks),
        M::Lahf => (lahf, KeepsLinks),
        M::Sahf => (sahf, KeepsLinks),
        M::Salc => (salc, KeepsLinks),
        M::Cbw => (cbw, KeepsLinks),
        M::Cwde => (cwde, KeepsLinks),
        M::Cdqe => (cdqe, KeepsLinks),
        M::Cwd => (cwd, KeepsLinks),
        M::Cdq => (cdq, KeepsLinks),
        M::Cqo => (cqo, KeepsLinks),
        M::Xlatb => (xlat, KeepsLinks),
        M::Aaa => (aaa, KeepsLinks),
        M::Aas => (aas, KeepsLinks),
        M::Daa => (daa, KeepsLinks),
        M::Das => (das, KeepsLinks),
        M::Aam => (aam, KeepsLinks),
        M::Aad => (aad, KeepsLinks),
        _ => return None,
    })
}

/// SF, ZF and PF of `res` as an operand of `size` bytes (for handlers that
/// set the flags explicitly).
#[inline]
pub fn szp(res: u64, size: u8) -> u64 {
    let res = res & flags::mask(size);
    let mut f = 0;
    if res == 0 {
        f |= ZF;
    }
    if res & flags::sign_bit(size) != 0 {
        f |= SF;
    }
    if (res as u8).count_ones().is_multiple_of(2) {
        f |= PF;
    }
    f
}

/// The result of binary ALU operation `OP` (shared with the fast handlers).
#[inline(always)]
pub(crate) fn compute<const OP: u8>(d: u64, s: u64, carry: bool) -> u64 {
    match OP {
        ADD => d.wrapping_add(s),
        ADC => d.wrapping_add(s).wrapping_add(u64::from(carry)),
        SUB => d.wrapping_sub(s),
        SBB => d.wrapping_sub(s).wrapping_sub(u64::from(carry)),
        AND => d & s,
        OR => d | s,
        _ => d ^ s,
    }
}

/// The lazy-flags record kind of binary ALU operation `OP`.
#[inline(always)]
pub(crate) fn flag_op<const OP: u8>() -> FlagOp {
    match OP {
        ADD => FlagOp::Add,
        ADC => FlagOp::Adc,
        SUB => FlagOp::Sub,
        SBB => FlagOp::Sbb,
        _ => FlagOp::Logic,
    }
}

fn binop<const OP: u8>(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    let size = op_size(insn, 0);
    let src = read_op(cpu, insn, 1)?;
    let carry = (OP == ADC || OP == SBB) && cpu.s.flags.cf();
    let old = modify_op(cpu, insn, 0, |d| compute::<OP>(d, src, carry))?;
    let res = compute::<OP>(old, src, carry);
    cpu.s
        .flags
        .set_result(flag_op::<OP>(), size, old, src, res, carry);
    Ok(())
}

fn cmp(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    if insn.has_lock_prefix() {
        return Err(Fault::InvalidOpcode);
    }
    let d = read_op(cpu, insn, 0)?;
    let s = read_op(cpu, insn, 1)?;
    let size = op_size(insn, 0);
    cpu.s
        .flags
        .set_result(FlagOp::Sub, size, d, s, d.wrapping_sub(s), false);
    Ok(())
}

fn test(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    if insn.has_lock_prefix() {
        return Err(Fault::InvalidOpcode);
    }
    let d = read_op(cpu, insn, 0)?;
    let s = read_op(cpu, insn, 1)?;
    let size = op_size(insn, 0);
    cpu.s
        .flags
        .set_result(FlagOp::Logic, size, d, s, d & s, false);
    Ok(())
}

fn inc(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    let size = op_size(insn, 0);
    let old = modify_op(cpu, insn, 0, |d| d.wrapping_add(1))?;
    cpu.s
        .flags
        .set_result(FlagOp::Inc, size, old, 1, old.wrapping_add(1), false);
    Ok(())
}

fn dec(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    let size = op_size(insn, 0);
    let old = modify_op(cpu, insn, 0, |d| d.wrapping_sub(1))?;
    cpu.s
        .flags
        .set_result(FlagOp::Dec, size, old, 1, old.wrapping_sub(1), false);
    Ok(())
}

fn neg(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    let size = op_size(insn, 0);
    let old = modify_op(cpu, insn, 0, |d| d.wrapping_neg())?;
    cpu.s
        .flags
        .set_result(FlagOp::Neg, size, 0, old, old.wrapping_neg(), false);
    Ok(())
}

fn not(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    modify_op(cpu, insn, 0, |d| !d)?;
    Ok(())
}

fn clc(cpu: &mut Cpu, _: &Instruction) -> Result<(), Fault> {
    cpu.s.flags.set_flag(CF, false);
    Ok(())
}

fn stc(cpu: &mut Cpu, _: &Instruction) -> Result<(), Fault> {
    cpu.s.flags.set_flag(CF, true);
    Ok(())
}

fn cmc(cpu: &mut Cpu, _: &Instruction) -> Result<(), Fault> {
    let cf = cpu.s.flags.cf();
    cpu.s.flags.set_flag(CF, !cf);
    Ok(())
}

fn cld(cpu: &mut Cpu, _: &Instruction) -> Result<(), Fault> {
    cpu.s.flags.set_flag(flags::DF, false);
    Ok(())
}

fn std_(cpu: &mut Cpu, _: &Instruction) -> Result<(), Fault> {
    cpu.s.flags.set_flag(flags::DF, true);
    Ok(())
}

/// LAHF: AH := SF:ZF:0:AF:0:PF:1:CF. Valid in 64-bit mode (our CPUID
/// reports LAHF-SAHF).
fn lahf(cpu: &mut Cpu, _: &Instruction) -> Result<(), Fault> {
    let f = cpu.s.flags.get() & (SF | ZF | AF | PF | CF | flags::FIXED);
    cpu.s.write_gpr(reg::RAX, 1, true, f);
    Ok(())
}

fn sahf(cpu: &mut Cpu, _: &Instruction) -> Result<(), Fault> {
    let ah = cpu.s.read_gpr(reg::RAX, 1, true);
    cpu.s.flags.set_arith(SF | ZF | AF | PF | CF, ah);
    Ok(())
}

#[inline]
fn legacy_only(cpu: &Cpu) -> Result<(), Fault> {
    if cpu.s.code_size() == CodeSize::Bits64 {
        Err(Fault::InvalidOpcode)
    } else {
        Ok(())
    }
}

/// SALC (undocumented, D6): AL := CF ? 0xff : 0; #UD in 64-bit mode.
fn salc(cpu: &mut Cpu, _: &Instruction) -> Result<(), Fault> {
    legacy_only(cpu)?;
    let v = if cpu.s.flags.cf() { 0xff } else { 0 };
    cpu.s.write_gpr(reg::RAX, 1, false, v);
    Ok(())
}

fn cbw(cpu: &mut Cpu, _: &Instruction) -> Result<(), Fault> {
    let v = sign_extend(cpu.s.gpr[reg::RAX], 1);
    cpu.s.write_gpr(reg::RAX, 2, false, v);
    Ok(())
}

fn cwde(cpu: &mut Cpu, _: &Instruction) -> Result<(), Fault> {
    let v = sign_extend(cpu.s.gpr[reg::RAX], 2);
    cpu.s.write_gpr(reg::RAX, 4, false, v);
    Ok(())
}

fn cdqe(cpu: &mut Cpu, _: &Instruction) -> Result<(), Fault> {
    cpu.s.gpr[reg::RAX] = sign_extend(cpu.s.gpr[reg::RAX], 4);
    Ok(())
}

/// CWD/CDQ/CQO: rDX := the sign of rAX, replicated.
#[inline]
fn sign_to_rdx(cpu: &mut Cpu, size: u8) {
    let neg = cpu.s.gpr[reg::RAX] & flags::sign_bit(size) != 0;
    cpu.s
        .write_gpr(reg::RDX, size, false, if neg { u64::MAX } else { 0 });
}

fn cwd(cpu: &mut Cpu, _: &Instruction) -> Result<(), Fault> {
    sign_to_rdx(cpu, 2);
    Ok(())
}

fn cdq(cpu: &mut Cpu, _: &Instruction) -> Result<(), Fault> {
    sign_to_rdx(cpu, 4);
    Ok(())
}

fn cqo(cpu: &mut Cpu, _: &Instruction) -> Result<(), Fault> {
    sign_to_rdx(cpu, 8);
    Ok(())
}

/// XLAT: AL := [seg:rBX + AL] (iced describes the operand as base rBX,
/// index AL, with the address size and segment override applied).
fn xlat(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    let v = read_op(cpu, insn, 0)?;
    cpu.s.write_gpr(reg::RAX, 1, false, v);
    Ok(())
}

/// Replaces all six arithmetic flags.
#[inline]
fn set_all(f: &mut Flags, bits: u64) {
    f.set_arith(ARITH, bits);
}

fn aaa(cpu: &mut Cpu, _: &Instruction) -> Result<(), Fault> {
    legacy_only(cpu)?;
    let mut ax = cpu.s.gpr[reg::RAX] & 0xffff;
    let adjust = ax & 0xf > 9 || cpu.s.flags.af();
    if adjust {
        ax = ax.wrapping_add(0x106);
    }
    ax &= 0xff0f;
    cpu.s.write_gpr(reg::RAX, 2, false, ax);
    let cf_af = if adjust { CF | AF } else { 0 };
    set_all(&mut cpu.s.flags, cf_af | szp(ax, 1));
    Ok(())
}

fn aas(cpu: &mut Cpu, _: &Instruction) -> Result<(), Fault> {
    legacy_only(cpu)?;
    let mut ax = cpu.s.gpr[reg::RAX] & 0xffff;
    let adjust = ax & 0xf > 9 || cpu.s.flags.af();
    if adjust {
        ax = ax.wrapping_sub(0x106);
    }
    ax &= 0xff0f;
    cpu.s.write_gpr(reg::RAX, 2, false, ax);
    let cf_af = if adjust { CF | AF } else { 0 };
    set_all(&mut cpu.s.flags, cf_af | szp(ax, 1));
    Ok(())
}

fn daa(cpu: &mut Cpu, _: &Instruction) -> Result<(), Fault> {
    legacy_only(cpu)?;
    let old_al = cpu.s.gpr[reg::RAX] & 0xff;
    let old_cf = cpu.s.flags.cf();
    let mut al = old_al;
    let mut f = 0;
    if al & 0xf > 9 || cpu.s.flags.af() {
        al += 6;
        if old_cf || al > 0xff {
            f |= CF;
        }
        f |= AF;
    }
    if old_al > 0x99 || old_cf {
        al += 0x60;
        f |= CF;
    } else {
        f &= !CF;
    }
    cpu.s.write_gpr(reg::RAX, 1, false, al);
    set_all(&mut cpu.s.flags, f | szp(al, 1));
    Ok(())
}

fn das(cpu: &mut Cpu, _: &Instruction) -> Result<(), Fault> {
    legacy_only(cpu)?;
    let old_al = cpu.s.gpr[reg::RAX] & 0xff;
    let old_cf = cpu.s.flags.cf();
    let mut al = old_al;
    let mut f = 0;
    if al & 0xf > 9 || cpu.s.flags.af() {
        if old_cf || al < 6 {
            f |= CF;
        }
        al = al.wrapping_sub(6);
        f |= AF;
    }
    if old_al > 0x99 || old_cf {
        al = al.wrapping_sub(0x60);
        f |= CF;
    }
    cpu.s.write_gpr(reg::RAX, 1, false, al);
    set_all(&mut cpu.s.flags, f | szp(al, 1));
    Ok(())
}

/// AAM imm8: AH := AL / imm8, AL := AL mod imm8; #DE if imm8 = 0.
fn aam(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    legacy_only(cpu)?;
    let base = u64::from(insn.immediate8());
    if base == 0 {
        return Err(Fault::DivideError);
    }
    let al = cpu.s.gpr[reg::RAX] & 0xff;
    let (q, r) = (al / base, al % base);
    cpu.s.write_gpr(reg::RAX, 2, false, (q << 8) | r);
    cpu.s.flags.set_result(FlagOp::Logic, 1, r, r, r, false);
    Ok(())
}

/// AAD imm8: AL := AL + AH * imm8, AH := 0.
fn aad(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    legacy_only(cpu)?;
    let base = u64::from(insn.immediate8());
    let al = cpu.s.gpr[reg::RAX] & 0xff;
    let ah = (cpu.s.gpr[reg::RAX] >> 8) & 0xff;
    let prod = (ah * base) & 0xff;
    let res = (al + prod) & 0xff;
    cpu.s.write_gpr(reg::RAX, 2, false, res);
    cpu.s
        .flags
        .set_result(FlagOp::Add, 1, al, prod, al + prod, false);
    Ok(())
}

#[cfg(test)]
mod tests {
    use iced_x86::code_asm::*;

    use crate::fault::Fault;
    use crate::flags::{AF, ARITH, CF, DF, OF, PF, SF, ZF};
    use crate::state::reg;
    use crate::testutil::{assemble, cpu32, cpu64, run64, run_until, CODE, DATA};
    use crate::Cpu;

    fn arith(cpu: &Cpu) -> u64 {
        cpu.s.flags.get() & ARITH
    }

    fn run32(f: impl FnOnce(&mut CodeAssembler)) -> Cpu {
        let code = assemble(32, f);
        let mut cpu = cpu32(&code);
        run_until(&mut cpu, CODE + code.len() as u64, 1000);
        cpu
    }

    fn first_fault(bitness: u32, bytes: &[u8]) -> Result<(), Fault> {
        let mut cpu = if bitness == 64 {
            cpu64(bytes)
        } else {
            cpu32(bytes)
        };
        cpu.run_block(1)
    }

    #[test]
    fn add_of_0x7f_and_1_overflows_into_the_sign() {
        let cpu = run64(|a| {
            a.mov(al, 0x7fu32).unwrap();
            a.add(al, 1u32).unwrap();
        });
        assert_eq!(cpu.s.gpr[reg::RAX] & 0xff, 0x80);
        assert_eq!(arith(&cpu), OF | SF | AF);
    }

    #[test]
    fn adc_adds_the_carry_in() {
        let cpu = run64(|a| {
            a.mov(rax, -1i64).unwrap();
            a.stc().unwrap();
            a.adc(eax, 0).unwrap();
        });
        assert_eq!(cpu.s.gpr[reg::RAX], 0, "32-bit results zero-extend");
        assert_eq!(arith(&cpu), CF | ZF | PF | AF);
    }

    #[test]
    fn sbb_subtracts_the_borrow() {
        let cpu = run64(|a| {
            a.mov(rdx, 0x1234_0000u64).unwrap();
            a.stc().unwrap();
            a.sbb(dx, 0).unwrap();
        });
        assert_eq!(cpu.s.gpr[reg::RDX], 0x1234_ffff, "16-bit results merge");
        assert_eq!(arith(&cpu), CF | SF | PF | AF);
    }

    #[test]
    fn sub_of_one_from_the_most_negative_quadword_overflows() {
        let cpu = run64(|a| {
            a.mov(rax, i64::MIN).unwrap();
            a.sub(rax, 1).unwrap();
        });
        assert_eq!(cpu.s.gpr[reg::RAX], i64::MAX as u64);
        assert_eq!(arith(&cpu), OF | AF | PF);
    }

    #[test]
    fn logic_clears_carry_and_overflow() {
        let cpu = run64(|a| {
            a.mov(rcx, -1i64).unwrap();
            a.stc().unwrap();
            a.and(ecx, 0x0f0).unwrap();
            a.or(ecx, 0x1).unwrap();
            a.xor(cl, 0x1).unwrap();
            a.mov(rbx, -1i64).unwrap();
            a.xor(ebx, ebx).unwrap();
        });
        assert_eq!(cpu.s.gpr[reg::RCX], 0xf0);
        assert_eq!(cpu.s.gpr[reg::RBX], 0);
        assert_eq!(arith(&cpu), ZF | PF);
    }

    #[test]
    fn high_byte_registers_are_operands() {
        let cpu = run64(|a| {
            a.mov(eax, 0x1020u32).unwrap();
            a.add(ah, 0xf0u32).unwrap();
        });
        assert_eq!(cpu.s.gpr[reg::RAX], 0x0020);
        assert_eq!(arith(&cpu), CF | ZF | PF);
    }

    #[test]
    fn memory_destinations_are_read_modified_and_written() {
        let cpu = run64(|a| {
            a.mov(qword_ptr(DATA), 5).unwrap();
            a.add(qword_ptr(DATA), -3).unwrap();
            a.mov(rbx, DATA).unwrap();
            a.mov(ecx, 0x10u32).unwrap();
            a.sub(word_ptr(rbx + 8), cx).unwrap();
            a.lock().add(dword_ptr(rbx + 16), 7).unwrap();
            a.lock().not(byte_ptr(rbx + 24)).unwrap();
        });
        let m = &cpu.machine.memory;
        assert_eq!(m.read_u64(DATA).unwrap(), 2);
        assert_eq!(m.read_u64(DATA + 8).unwrap(), 0xfff0);
        assert_eq!(m.read_u64(DATA + 16).unwrap(), 7);
        assert_eq!(m.read_u64(DATA + 24).unwrap(), 0xff);
        assert_eq!(arith(&cpu), 0, "not leaves the flags of the add");
    }

    #[test]
    fn lock_on_a_register_destination_is_undefined() {
        // lock add eax, ebx
        assert_eq!(
            first_fault(64, &[0xf0, 0x01, 0xd8]),
            Err(Fault::InvalidOpcode)
        );
        // lock cmp [rax], ebx
        assert_eq!(
            first_fault(64, &[0xf0, 0x39, 0x18]),
            Err(Fault::InvalidOpcode)
        );
    }

    #[test]
    fn cmp_and_test_set_flags_without_writing() {
        let cpu = run64(|a| {
            a.mov(eax, 1u32).unwrap();
            a.cmp(eax, 2).unwrap();
        });
        assert_eq!(cpu.s.gpr[reg::RAX], 1);
        assert_eq!(arith(&cpu), CF | SF | AF | PF);
        let cpu = run64(|a| {
            a.mov(rax, 0x8000_0000_0000_0001u64).unwrap();
            a.mov(rbx, -1i64).unwrap();
            a.test(rax, rbx).unwrap();
        });
        assert_eq!(arith(&cpu), SF);
    }

    #[test]
    fn inc_and_dec_keep_the_carry() {
        let cpu = run64(|a| {
            a.stc().unwrap();
            a.mov(al, 0xffu32).unwrap();
            a.inc(al).unwrap();
        });
        assert_eq!(cpu.s.gpr[reg::RAX] & 0xff, 0);
        assert_eq!(arith(&cpu), CF | ZF | AF | PF);
        let cpu = run64(|a| {
            a.clc().unwrap();
            a.mov(dword_ptr(DATA), i32::MIN).unwrap();
            a.dec(dword_ptr(DATA)).unwrap();
        });
        assert_eq!(cpu.machine.memory.read_u64(DATA).unwrap(), 0x7fff_ffff);
        assert_eq!(arith(&cpu), OF | AF | PF);
    }

    #[test]
    fn neg_sets_carry_unless_zero() {
        let cpu = run64(|a| {
            a.stc().unwrap();
            a.xor(ecx, ecx).unwrap();
            a.neg(ecx).unwrap();
        });
        assert_eq!(arith(&cpu), ZF | PF);
        let cpu = run64(|a| {
            a.mov(bl, 0x80u32).unwrap();
            a.neg(bl).unwrap();
        });
        assert_eq!(cpu.s.gpr[reg::RBX] & 0xff, 0x80);
        assert_eq!(arith(&cpu), CF | OF | SF);
        let cpu = run64(|a| {
            a.mov(rdx, 1u64).unwrap();
            a.neg(rdx).unwrap();
        });
        assert_eq!(cpu.s.gpr[reg::RDX], u64::MAX);
        assert_eq!(arith(&cpu), CF | SF | AF | PF);
    }

    #[test]
    fn flag_instructions_set_clear_and_complement() {
        let cpu = run64(|a| {
            a.stc().unwrap();
            a.cmc().unwrap();
            a.std().unwrap();
        });
        assert_eq!(arith(&cpu), 0);
        assert!(cpu.s.flags.test(DF));
        let cpu = run64(|a| {
            a.clc().unwrap();
            a.cmc().unwrap();
            a.std().unwrap();
            a.cld().unwrap();
        });
        assert_eq!(arith(&cpu), CF);
        assert!(!cpu.s.flags.test(DF));
    }

    #[test]
    fn lahf_and_sahf_move_the_low_flags_through_ah() {
        let cpu = run64(|a| {
            a.mov(al, 0xffu32).unwrap();
            a.add(al, 1u32).unwrap(); // CF ZF AF PF
            a.lahf().unwrap();
            a.mov(bl, ah).unwrap();
            a.mov(ah, 0xd5u32).unwrap(); // SF ZF AF PF CF
            a.sahf().unwrap();
        });
        assert_eq!(cpu.s.gpr[reg::RBX] & 0xff, 0x57);
        assert_eq!(arith(&cpu), SF | ZF | AF | PF | CF);
    }

    #[test]
    fn sign_extensions_fill_the_upper_part() {
        let cpu = run64(|a| {
            a.mov(rax, 0x1234_5678_9abc_de80u64).unwrap();
            a.cbw().unwrap(); // ax = ff80
            a.cwd().unwrap(); // dx = ffff
            a.cwde().unwrap(); // eax = ffffff80
            a.mov(rbx, rax).unwrap();
            a.cdqe().unwrap(); // rax = -0x80
            a.mov(rcx, rax).unwrap();
            a.cqo().unwrap();
            a.mov(rsi, rdx).unwrap();
            a.mov(eax, 0x7fff_ffffu32).unwrap();
            a.cdq().unwrap();
        });
        assert_eq!(cpu.s.gpr[reg::RBX], 0xffff_ff80);
        assert_eq!(cpu.s.gpr[reg::RCX], (-0x80i64) as u64);
        assert_eq!(cpu.s.gpr[reg::RSI], u64::MAX);
        assert_eq!(cpu.s.gpr[reg::RDX], 0, "cdq writes edx, zero-extending");
    }

    #[test]
    fn xlat_indexes_a_table_at_rbx() {
        let cpu = run64(|a| {
            a.mov(byte_ptr(DATA + 0xf0), 0x5au32).unwrap();
            a.mov(rbx, DATA).unwrap();
            a.mov(eax, 0xf0u32).unwrap();
            a.xlatb().unwrap();
        });
        assert_eq!(cpu.s.gpr[reg::RAX], 0x5a);
    }

    #[test]
    fn salc_copies_the_carry_into_al() {
        let cpu = run32(|a| {
            a.mov(eax, 0x1234u32).unwrap();
            a.stc().unwrap();
            a.salc().unwrap();
        });
        assert_eq!(cpu.s.gpr[reg::RAX], 0x12ff);
        assert_eq!(first_fault(64, &[0xd6]), Err(Fault::InvalidOpcode));
    }

    #[test]
    fn aaa_and_aas_adjust_unpacked_bcd() {
        let cpu = run32(|a| {
            a.mov(eax, 8u32).unwrap();
            a.add(al, 5u32).unwrap();
            a.aaa().unwrap();
        });
        assert_eq!(cpu.s.gpr[reg::RAX], 0x0103);
        assert_eq!(arith(&cpu) & (CF | AF), CF | AF);
        let cpu = run32(|a| {
            a.mov(eax, 0x0203u32).unwrap();
            a.sub(al, 5u32).unwrap();
            a.aas().unwrap();
        });
        assert_eq!(cpu.s.gpr[reg::RAX], 0x0108);
        assert_eq!(arith(&cpu) & (CF | AF), CF | AF);
        let cpu = run32(|a| {
            a.mov(eax, 0x0102u32).unwrap();
            a.add(al, 3u32).unwrap();
            a.aaa().unwrap();
        });
        assert_eq!(cpu.s.gpr[reg::RAX], 0x0105);
        assert_eq!(arith(&cpu) & (CF | AF), 0);
    }

    #[test]
    fn daa_and_das_adjust_packed_bcd() {
        let cpu = run32(|a| {
            a.mov(al, 0x79u32).unwrap();
            a.add(al, 0x35u32).unwrap();
            a.daa().unwrap();
        });
        assert_eq!(cpu.s.gpr[reg::RAX] & 0xff, 0x14);
        assert_eq!(arith(&cpu) & (CF | AF | ZF | SF | PF), CF | AF | PF);
        let cpu = run32(|a| {
            a.mov(al, 0x35u32).unwrap();
            a.sub(al, 0x47u32).unwrap();
            a.das().unwrap();
        });
        assert_eq!(cpu.s.gpr[reg::RAX] & 0xff, 0x88);
        assert_eq!(arith(&cpu) & (CF | AF | ZF | SF | PF), CF | AF | SF | PF);
        let cpu = run32(|a| {
            a.mov(al, 0x12u32).unwrap();
            a.add(al, 0x34u32).unwrap();
            a.daa().unwrap();
        });
        assert_eq!(cpu.s.gpr[reg::RAX] & 0xff, 0x46);
        assert_eq!(arith(&cpu) & (CF | AF), 0);
    }

    #[test]
    fn aam_and_aad_convert_between_binary_and_unpacked_bcd() {
        let cpu = run32(|a| {
            a.mov(eax, 77u32).unwrap();
            a.aam(10).unwrap();
            a.mov(ebx, eax).unwrap();
            a.aad(10).unwrap();
        });
        assert_eq!(cpu.s.gpr[reg::RBX], 0x0707);
        assert_eq!(cpu.s.gpr[reg::RAX], 77);
        assert_eq!(arith(&cpu) & (ZF | SF | PF), PF);
        // aam 0
        assert_eq!(first_fault(32, &[0xd4, 0x00]), Err(Fault::DivideError));
    }

    #[test]
    fn decimal_adjusts_are_invalid_in_64_bit_mode() {
        for op in [0x37u8, 0x3f, 0x27, 0x2f] {
            assert_eq!(first_fault(64, &[op]), Err(Fault::InvalidOpcode));
        }
        assert_eq!(first_fault(64, &[0xd4, 0x0a]), Err(Fault::InvalidOpcode));
        assert_eq!(first_fault(64, &[0xd5, 0x0a]), Err(Fault::InvalidOpcode));
    }
}
