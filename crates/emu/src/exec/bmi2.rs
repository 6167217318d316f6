//! BMI2, the second set of VEX-encoded general-register bit
//! manipulations: BZHI, MULX, PDEP, PEXT, RORX, SARX, SHLX, SHRX (SDM
//! Vol. 2 instruction pages; CPUID.(EAX=7,ECX=0):EBX.BMI2[bit 8]).
//!
//! The encoding rules they share with BMI1 (VEX.L = 1 is #UD, no VEX in
//! real-address or virtual-8086 mode, VEX.W ignored outside 64-bit mode,
//! 32-bit destinations zero-extended) are described in [`super::bmi1`].
//! Only BZHI changes flags (ZF, SF, CF; OF = 0; AF = 0 and PF from the
//! result's low byte, as this project's AMD hosts do where the SDM says
//! "undefined"); the others leave RFLAGS alone, which is their point.

use iced_x86::{Instruction, Mnemonic};

use super::alu::szp;
use super::bmi1::check_vex_gpr;
use super::operand::{op_size, read_op, read_reg, write_op, write_reg};
use super::HandlerEntry;
use super::LinkEffect::KeepsLinks;
use crate::fault::Fault;
use crate::flags::{mask, ARITH, CF};
use crate::Cpu;

/// The handler for `insn`, if this module implements it, with its effect
/// on block links.
pub fn lookup(insn: &Instruction) -> Option<HandlerEntry> {
    Some(match insn.mnemonic() {
        Mnemonic::Bzhi => (bzhi, KeepsLinks),
        Mnemonic::Mulx => (mulx, KeepsLinks),
        Mnemonic::Pdep => (pdep, KeepsLinks),
        Mnemonic::Pext => (pext, KeepsLinks),
        Mnemonic::Rorx => (rorx, KeepsLinks),
        Mnemonic::Sarx => (shift::<SARX>, KeepsLinks),
        Mnemonic::Shlx => (shift::<SHLX>, KeepsLinks),
        Mnemonic::Shrx => (shift::<SHRX>, KeepsLinks),
        _ => return None,
    })
}

const SARX: u8 = 0;
const SHLX: u8 = 1;
const SHRX: u8 = 2;

/// PDEP: deposits the low bits of `src`, in order, at the set bits of
/// `selector` (the other result bits are 0).
pub fn parallel_deposit(src: u64, selector: u64) -> u64 {
    let mut res = 0;
    let mut m = selector;
    let mut k = 0;
    while m != 0 {
        let bit = m & m.wrapping_neg();
        if (src >> k) & 1 != 0 {
            res |= bit;
        }
        m &= m - 1;
        k += 1;
    }
    res
}

/// PEXT: gathers the bits of `src` at the set bits of `selector` into the
/// low bits of the result, in order.
pub fn parallel_extract(src: u64, selector: u64) -> u64 {
    let mut res = 0;
    let mut m = selector;
    let mut k = 0;
    while m != 0 {
        let bit = m & m.wrapping_neg();
        if src & bit != 0 {
            res |= 1 << k;
        }
        m &= m - 1;
        k += 1;
    }
    res
}

/// BZHI's result and CF: `src` with bits `n` and up cleared, where `n` is
/// `index` bits 7:0; CF = 1 when `n` is beyond the operand (and the
/// source is kept whole).
pub fn zero_high_bits(src: u64, index: u64, size: u8) -> (u64, bool) {
    let n = index & 0xff;
    let bits = u64::from(size) * 8;
    let src = src & mask(size);
    if n < bits {
        (src & ((1u64 << n) - 1), false)
    } else {
        (src, n > bits - 1)
    }
}

/// BZHI r, r/m, vvvv.
fn bzhi(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    check_vex_gpr(cpu)?;
    let size = op_size(insn, 0);
    let src = read_op(cpu, insn, 1)?;
    let index = read_op(cpu, insn, 2)?;
    let (res, cf) = zero_high_bits(src, index, size);
    write_op(cpu, insn, 0, res)?;
    cpu.s
        .flags
        .set_arith(ARITH, szp(res, size) | if cf { CF } else { 0 });
    Ok(())
}

/// MULX r_hi, r_lo (vvvv), r/m: the unsigned product of EDX/RDX and the
/// source, low half to the second operand, then high half to the first
/// (so the high half wins when both name one register). Flags unchanged.
fn mulx(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    check_vex_gpr(cpu)?;
    let size = op_size(insn, 0);
    let src = read_op(cpu, insn, 2)?;
    let (lo, hi) = if size == 8 {
        let p = u128::from(cpu.s.gpr[crate::state::reg::RDX]) * u128::from(src);
        (p as u64, (p >> 64) as u64)
    } else {
        let p = (cpu.s.gpr[crate::state::reg::RDX] & 0xffff_ffff) * (src & 0xffff_ffff);
        (p & 0xffff_ffff, p >> 32)
    };
    write_reg(cpu, insn.op_register(1), lo);
    write_reg(cpu, insn.op_register(0), hi);
    Ok(())
}

/// PDEP r, vvvv, r/m.
fn pdep(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    check_vex_gpr(cpu)?;
    let size = op_size(insn, 0);
    let src = read_reg(cpu, insn.op_register(1));
    let selector = read_op(cpu, insn, 2)? & mask(size);
    write_op(cpu, insn, 0, parallel_deposit(src, selector))
}

/// PEXT r, vvvv, r/m.
fn pext(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    check_vex_gpr(cpu)?;
    let size = op_size(insn, 0);
    let src = read_reg(cpu, insn.op_register(1));
    let selector = read_op(cpu, insn, 2)? & mask(size);
    write_op(cpu, insn, 0, parallel_extract(src, selector))
}

/// RORX r, r/m, imm8: rotate right by the immediate (mod the operand
/// width). Flags unchanged.
fn rorx(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    check_vex_gpr(cpu)?;
    let size = op_size(insn, 0);
    let src = read_op(cpu, insn, 1)?;
    let count = u32::from(insn.immediate8());
    let res = if size == 8 {
        src.rotate_right(count & 63)
    } else {
        u64::from((src as u32).rotate_right(count & 31))
    };
    write_op(cpu, insn, 0, res)
}

/// SARX, SHLX, SHRX r, r/m, vvvv: shifts by the third operand (mod the
/// operand width). Flags unchanged.
fn shift<const OP: u8>(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    check_vex_gpr(cpu)?;
    let size = op_size(insn, 0);
    let src = read_op(cpu, insn, 1)?;
    let bits = u64::from(size) * 8;
    let count = (read_op(cpu, insn, 2)? & (bits - 1)) as u32;
    let res = match OP {
        SHLX => src << count,
        SHRX => (src & mask(size)) >> count,
        _ => (crate::flags::sign_extend(src, size) as i64 >> count) as u64,
    };
    write_op(cpu, insn, 0, res & mask(size))
}

#[cfg(test)]
mod tests {
    use iced_x86::code_asm::*;

    use super::{parallel_deposit, parallel_extract, zero_high_bits};
    use crate::flags::{ARITH, CF, OF, PF, SF, ZF};
    use crate::state::reg;
    use crate::testutil::{run64, DATA};
    use crate::Cpu;

    fn arith(cpu: &Cpu) -> u64 {
        cpu.s.flags.get() & ARITH
    }

    #[test]
    fn pdep_and_pext_follow_the_sdm_examples() {
        // A selector with two fields: the source's low 12 bits go to
        // bits 15:4, its next 8 to bits 31:24.
        assert_eq!(
            parallel_deposit(0x0000_0000_000f_ffff, 0xff00_fff0),
            0xff00_fff0
        );
        assert_eq!(parallel_deposit(0b1011, 0b1111_0000), 0b1011_0000);
        assert_eq!(parallel_deposit(0b101, 0b1010_1000), 0b1000_1000);
        assert_eq!(parallel_deposit(u64::MAX, 0), 0);
        assert_eq!(parallel_deposit(1, 1 << 63), 1 << 63);
        // The same selector gathers bits 31:24 above bits 15:4.
        assert_eq!(parallel_extract(0x1234_5678, 0xff00_fff0), 0x0001_2567);
        assert_eq!(parallel_extract(0b1011_0000, 0b1111_0000), 0b1011);
        assert_eq!(parallel_extract(u64::MAX, 0x8000_0000_0000_0001), 0b11);
        let cpu = run64(|a| {
            a.mov(rcx, 0x1234_5678u64).unwrap();
            a.mov(edx, 0xff00_fff0u32).unwrap();
            a.pext(rax, rcx, rdx).unwrap();
            a.pdep(rbx, rax, rdx).unwrap();
            a.mov(dword_ptr(DATA), 0x0f0fu32).unwrap();
            a.mov(rsi, -1i64).unwrap();
            a.pdep(esi, esi, dword_ptr(DATA)).unwrap();
        });
        assert_eq!(cpu.s.gpr[reg::RAX], 0x0001_2567);
        assert_eq!(cpu.s.gpr[reg::RBX], 0x1200_5670);
        assert_eq!(cpu.s.gpr[reg::RSI], 0x0f0f);
    }

    #[test]
    fn bzhi_zeroes_from_the_index_and_sets_carry_beyond_the_operand() {
        assert_eq!(zero_high_bits(u64::MAX, 8, 8), (0xff, false));
        assert_eq!(zero_high_bits(u64::MAX, 0x1_0000_0000, 8), (0, false));
        assert_eq!(zero_high_bits(u64::MAX, 63, 8), (u64::MAX >> 1, false));
        assert_eq!(zero_high_bits(u64::MAX, 64, 8), (u64::MAX, true));
        assert_eq!(zero_high_bits(u64::MAX, 32, 4), (0xffff_ffff, true));
        let cpu = run64(|a| {
            a.mov(rcx, -1i64).unwrap();
            a.mov(edx, 0x80u32).unwrap();
            a.bzhi(eax, ecx, edx).unwrap();
        });
        assert_eq!(cpu.s.gpr[reg::RAX], 0xffff_ffff);
        assert_eq!(arith(&cpu), CF | SF | PF);
        let cpu = run64(|a| {
            a.stc().unwrap();
            a.mov(rcx, 0xff00u64).unwrap();
            a.xor(edx, edx).unwrap();
            a.bzhi(rax, rcx, rdx).unwrap();
        });
        assert_eq!(cpu.s.gpr[reg::RAX], 0);
        assert_eq!(arith(&cpu), ZF | PF);
    }

    #[test]
    fn mulx_writes_both_halves_and_keeps_the_flags() {
        let cpu = run64(|a| {
            a.mov(al, 0x7fu32).unwrap();
            a.add(al, 1u32).unwrap(); // OF SF AF
            a.mov(rdx, -1i64).unwrap();
            a.mov(rcx, 3u64).unwrap();
            a.mulx(rbx, rsi, rcx).unwrap();
            a.mov(dword_ptr(DATA), 0x8000_0000u32).unwrap();
            a.mulx(r8d, r9d, dword_ptr(DATA)).unwrap();
            a.mulx(r10, r10, rcx).unwrap();
        });
        assert_eq!(cpu.s.gpr[reg::RBX], 2);
        assert_eq!(cpu.s.gpr[reg::RSI], u64::MAX - 2);
        // 0xffffffff * 0x80000000 = 0x7fffffff_80000000.
        assert_eq!(cpu.s.gpr[8], 0x7fff_ffff);
        assert_eq!(cpu.s.gpr[9], 0x8000_0000);
        assert_eq!(cpu.s.gpr[10], 2, "the high half wins");
        assert_eq!(arith(&cpu) & (OF | SF), OF | SF);
    }

    #[test]
    fn rorx_and_the_x_shifts_mask_the_count_and_keep_the_flags() {
        let cpu = run64(|a| {
            a.stc().unwrap();
            a.mov(rcx, 0x8000_0000_0000_0001u64).unwrap();
            a.rorx(rax, rcx, 68).unwrap(); // 68 mod 64 = 4
            a.rorx(ebx, ecx, 1).unwrap();
            a.mov(edx, 65u32).unwrap();
            a.shlx(rsi, rcx, rdx).unwrap();
            a.shrx(rdi, rcx, rdx).unwrap();
            a.sarx(r8, rcx, rdx).unwrap();
            a.mov(r9, 0xffff_ffff_8000_0000u64).unwrap();
            a.mov(edx, 36u32).unwrap(); // 36 mod 32 = 4
            a.sarx(r10d, r9d, edx).unwrap();
            a.shrx(r11d, r9d, edx).unwrap();
            a.shlx(r12d, r9d, edx).unwrap();
        });
        assert_eq!(cpu.s.gpr[reg::RAX], 0x1800_0000_0000_0000);
        assert_eq!(cpu.s.gpr[reg::RBX], 0x8000_0000);
        assert_eq!(cpu.s.gpr[reg::RSI], 2);
        assert_eq!(cpu.s.gpr[reg::RDI], 0x4000_0000_0000_0000);
        assert_eq!(cpu.s.gpr[8], 0xc000_0000_0000_0000);
        assert_eq!(cpu.s.gpr[10], 0xf800_0000);
        assert_eq!(cpu.s.gpr[11], 0x0800_0000);
        assert_eq!(cpu.s.gpr[12], 0);
        assert_eq!(arith(&cpu) & CF, CF, "flags unchanged");
    }
}
