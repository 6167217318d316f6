//! Multiplication and division: MUL, IMUL (one, two and three operands),
//! DIV, IDIV (SDM Vol. 1 §7.3.2.3, Vol. 2 "MUL", "IMUL", "DIV", "IDIV").
//!
//! Undefined flags:
//! - MUL/IMUL: CF = OF = "the result did not fit" (defined); SF, ZF and PF
//!   follow the low half of the result (the destination of the 2- and
//!   3-operand forms) and AF = 0, as Intel hardware and Bochs do.
//! - DIV/IDIV: all six flags are left unchanged.
//!
//! #DE is raised for a zero divisor and for a quotient that does not fit
//! the destination; nothing is written then.

use iced_x86::{Instruction, Mnemonic};

use super::operand::{op_size, read_op, write_reg};
use super::HandlerEntry;
use super::LinkEffect::KeepsLinks;
use crate::fault::Fault;
use crate::flags::{mask, sign_extend, FlagOp, CF, OF};
use crate::state::reg;
use crate::Cpu;

/// The handler for `insn`, if this module implements it, with its effect
/// on block links.
pub fn lookup(insn: &Instruction) -> Option<HandlerEntry> {
    Some(match insn.mnemonic() {
        Mnemonic::Mul => (mul, KeepsLinks),
        Mnemonic::Imul => match insn.op_count() {
            1 => (imul1, KeepsLinks),
            2 => (imul2, KeepsLinks),
            _ => (imul3, KeepsLinks),
        },
        Mnemonic::Div => (div, KeepsLinks),
        Mnemonic::Idiv => (idiv, KeepsLinks),
        _ => return None,
    })
}

/// Records the flags of a multiplication with low half `low`.
#[inline]
pub(crate) fn mul_flags(cpu: &mut Cpu, size: u8, low: u64, overflow: bool) {
    cpu.s
        .flags
        .set_result(FlagOp::Logic, size, low, low, low, false);
    if overflow {
        cpu.s.flags.set_arith(CF | OF, CF | OF);
    }
}

/// Writes the double-width result `hi:lo` of a one-operand multiply or
/// divide: AH:AL (as AX), DX:AX, EDX:EAX or RDX:RAX.
#[inline]
fn write_pair(cpu: &mut Cpu, size: u8, lo: u64, hi: u64) {
    if size == 1 {
        cpu.s
            .write_gpr(reg::RAX, 2, false, (lo & 0xff) | ((hi & 0xff) << 8));
    } else {
        cpu.s.write_gpr(reg::RAX, size, false, lo);
        cpu.s.write_gpr(reg::RDX, size, false, hi);
    }
}

fn mul(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    let size = op_size(insn, 0);
    let s = read_op(cpu, insn, 0)?;
    let a = cpu.s.read_gpr(reg::RAX, size, false);
    let (lo, hi) = if size == 8 {
        let p = u128::from(a) * u128::from(s);
        (p as u64, (p >> 64) as u64)
    } else {
        let p = a * s;
        let bits = u32::from(size) * 8;
        (p & mask(size), p >> bits)
    };
    write_pair(cpu, size, lo, hi);
    mul_flags(cpu, size, lo, hi != 0);
    Ok(())
}

fn imul1(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    let size = op_size(insn, 0);
    let s = read_op(cpu, insn, 0)?;
    let a = cpu.s.read_gpr(reg::RAX, size, false);
    let (lo, hi, overflow) = if size == 8 {
        let p = i128::from(a as i64) * i128::from(s as i64);
        (p as u64, (p >> 64) as u64, p != i128::from(p as i64))
    } else {
        // At most 32 x 32 bits: the product fits an i64.
        let p = (sign_extend(a, size) as i64) * (sign_extend(s, size) as i64);
        let bits = u32::from(size) * 8;
        let lo = p as u64 & mask(size);
        (lo, (p >> bits) as u64, sign_extend(lo, size) as i64 != p)
    };
    write_pair(cpu, size, lo, hi);
    mul_flags(cpu, size, lo, overflow);
    Ok(())
}

/// The truncated signed product of `a` and `b` as `size`-byte operands,
/// and whether it overflowed.
#[inline]
pub(crate) fn imul_trunc(a: u64, b: u64, size: u8) -> (u64, bool) {
    let a = sign_extend(a, size) as i64;
    let b = sign_extend(b, size) as i64;
    if size == 8 {
        let (p, o) = a.overflowing_mul(b);
        (p as u64, o)
    } else {
        let p = a * b;
        let lo = p as u64 & mask(size);
        (lo, sign_extend(lo, size) as i64 != p)
    }
}

fn imul2(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    let size = op_size(insn, 0);
    let b = read_op(cpu, insn, 1)?;
    let r = insn.op_register(0);
    let a = super::operand::read_reg(cpu, r);
    let (lo, overflow) = imul_trunc(a, b, size);
    write_reg(cpu, r, lo);
    mul_flags(cpu, size, lo, overflow);
    Ok(())
}

fn imul3(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    let size = op_size(insn, 0);
    let a = read_op(cpu, insn, 1)?;
    let b = insn.immediate(2);
    let (lo, overflow) = imul_trunc(a, b, size);
    write_reg(cpu, insn.op_register(0), lo);
    mul_flags(cpu, size, lo, overflow);
    Ok(())
}

fn div(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    let size = op_size(insn, 0);
    let s = read_op(cpu, insn, 0)?;
    if s == 0 {
        return Err(Fault::DivideError);
    }
    let (q, r) = match size {
        1 => {
            let n = cpu.s.read_gpr(reg::RAX, 2, false);
            (n / s, n % s)
        }
        8 => {
            let n = (u128::from(cpu.s.gpr[reg::RDX]) << 64) | u128::from(cpu.s.gpr[reg::RAX]);
            let q = n / u128::from(s);
            if q > u128::from(u64::MAX) {
                return Err(Fault::DivideError);
            }
            (q as u64, (n % u128::from(s)) as u64)
        }
        _ => {
            let bits = u32::from(size) * 8;
            let n = (cpu.s.read_gpr(reg::RDX, size, false) << bits)
                | cpu.s.read_gpr(reg::RAX, size, false);
            (n / s, n % s)
        }
    };
    if q > mask(size) {
        return Err(Fault::DivideError);
    }
    write_pair(cpu, size, q, r);
    Ok(())
}

fn idiv(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    let size = op_size(insn, 0);
    let s = read_op(cpu, insn, 0)?;
    if s == 0 {
        return Err(Fault::DivideError);
    }
    let (q, r) = if size == 8 {
        let n = ((u128::from(cpu.s.gpr[reg::RDX]) << 64) | u128::from(cpu.s.gpr[reg::RAX])) as i128;
        let d = i128::from(s as i64);
        let q = n.checked_div(d).ok_or(Fault::DivideError)?;
        if q != i128::from(q as i64) {
            return Err(Fault::DivideError);
        }
        (q as u64, n.wrapping_rem(d) as u64)
    } else {
        let n = if size == 1 {
            i64::from(cpu.s.read_gpr(reg::RAX, 2, false) as i16)
        } else {
            let bits = u32::from(size) * 8;
            let n = (cpu.s.read_gpr(reg::RDX, size, false) << bits)
                | cpu.s.read_gpr(reg::RAX, size, false);
            sign_extend(n, size * 2) as i64
        };
        let d = sign_extend(s, size) as i64;
        let q = n.checked_div(d).ok_or(Fault::DivideError)?;
        let qm = q as u64 & mask(size);
        if sign_extend(qm, size) as i64 != q {
            return Err(Fault::DivideError);
        }
        (qm, n.wrapping_rem(d) as u64)
    };
    write_pair(cpu, size, q, r);
    Ok(())
}

#[cfg(test)]
mod tests {
    use iced_x86::code_asm::*;

    use crate::fault::Fault;
    use crate::flags::{ARITH, CF, OF, PF, SF, ZF};
    use crate::state::reg;
    use crate::testutil::{assemble, cpu64, run64, DATA};
    use crate::Cpu;

    fn arith(cpu: &Cpu) -> u64 {
        cpu.s.flags.get() & ARITH
    }

    /// Runs `setup` then the last instruction, which must fault.
    fn fault_of(f: impl FnOnce(&mut CodeAssembler)) -> (Cpu, Result<(), Fault>) {
        let code = assemble(64, f);
        let mut cpu = cpu64(&code);
        loop {
            let rip = cpu.s.rip;
            let r = cpu.run_block(1);
            if r.is_err() || cpu.s.rip == rip {
                return (cpu, r);
            }
        }
    }

    #[test]
    fn mul_widens_into_the_high_half() {
        let cpu = run64(|a| {
            a.mov(al, 0x80u32).unwrap();
            a.mov(bl, 2u32).unwrap();
            a.mul(bl).unwrap();
        });
        assert_eq!(cpu.s.gpr[reg::RAX], 0x100);
        assert_eq!(arith(&cpu), CF | OF | ZF | PF);
        let cpu = run64(|a| {
            a.mov(rax, -1i64).unwrap();
            a.mov(qword_ptr(DATA), -1).unwrap();
            a.mul(qword_ptr(DATA)).unwrap();
        });
        assert_eq!(cpu.s.gpr[reg::RAX], 1);
        assert_eq!(cpu.s.gpr[reg::RDX], u64::MAX - 1);
        assert_eq!(arith(&cpu) & (CF | OF), CF | OF);
        let cpu = run64(|a| {
            a.mov(rdx, -1i64).unwrap();
            a.mov(eax, 3u32).unwrap();
            a.mov(ecx, 5u32).unwrap();
            a.mul(ecx).unwrap();
        });
        assert_eq!(cpu.s.gpr[reg::RAX], 15);
        assert_eq!(cpu.s.gpr[reg::RDX], 0, "edx is written, zero-extended");
        assert_eq!(arith(&cpu) & (CF | OF), 0);
    }

    #[test]
    fn imul_one_operand_is_signed() {
        let cpu = run64(|a| {
            a.mov(ax, 0xffffu32).unwrap();
            a.mov(cx, 2u32).unwrap();
            a.imul(cx).unwrap();
        });
        assert_eq!(cpu.s.gpr[reg::RAX] & 0xffff, 0xfffe);
        assert_eq!(cpu.s.gpr[reg::RDX] & 0xffff, 0xffff);
        assert_eq!(arith(&cpu) & (CF | OF | SF), SF);
        let cpu = run64(|a| {
            a.mov(rax, i64::MIN).unwrap();
            a.mov(rcx, -1i64).unwrap();
            a.imul(rcx).unwrap();
        });
        assert_eq!(cpu.s.gpr[reg::RAX], 1 << 63);
        assert_eq!(cpu.s.gpr[reg::RDX], 0);
        assert_eq!(arith(&cpu) & (CF | OF), CF | OF);
    }

    #[test]
    fn imul_two_and_three_operands_truncate() {
        let cpu = run64(|a| {
            a.mov(ebx, 0x10000u32).unwrap();
            a.imul_2(ebx, ebx).unwrap();
        });
        assert_eq!(cpu.s.gpr[reg::RBX], 0);
        assert_eq!(arith(&cpu) & (CF | OF | ZF), CF | OF | ZF);
        let cpu = run64(|a| {
            a.mov(dword_ptr(DATA), -7).unwrap();
            a.imul_3(esi, dword_ptr(DATA), 6).unwrap();
            a.imul_3(di, si, -1000).unwrap();
        });
        assert_eq!(cpu.s.gpr[reg::RSI], (-42i32) as u32 as u64);
        assert_eq!(cpu.s.gpr[reg::RDI], 42000);
        assert_eq!(arith(&cpu) & (CF | OF), CF | OF, "42000 does not fit i16");
        let cpu = run64(|a| {
            a.mov(rax, 1i64 << 40).unwrap();
            a.imul_3(rax, rax, -2).unwrap();
        });
        assert_eq!(cpu.s.gpr[reg::RAX], (-(1i64 << 41)) as u64);
        assert_eq!(arith(&cpu) & (CF | OF | SF), SF);
    }

    #[test]
    fn div_leaves_quotient_and_remainder() {
        let cpu = run64(|a| {
            a.mov(ax, 1001u32).unwrap();
            a.mov(bl, 10u32).unwrap();
            a.div(bl).unwrap();
        });
        assert_eq!(cpu.s.gpr[reg::RAX] & 0xffff, (1 << 8) | 100);
        let cpu = run64(|a| {
            a.mov(rdx, 1u64).unwrap();
            a.mov(rax, 5u64).unwrap();
            a.mov(rcx, 2u64).unwrap();
            a.div(rcx).unwrap();
        });
        assert_eq!(cpu.s.gpr[reg::RAX], (1 << 63) + 2);
        assert_eq!(cpu.s.gpr[reg::RDX], 1);
        let cpu = run64(|a| {
            a.mov(edx, 3u32).unwrap();
            a.mov(eax, 7u32).unwrap();
            a.mov(dword_ptr(DATA), 4).unwrap();
            a.div(dword_ptr(DATA)).unwrap();
        });
        assert_eq!(cpu.s.gpr[reg::RAX], 0xc000_0001);
        assert_eq!(cpu.s.gpr[reg::RDX], 3);
    }

    #[test]
    fn idiv_truncates_toward_zero() {
        let cpu = run64(|a| {
            a.mov(ax, (-7i16) as u16 as u32).unwrap();
            a.mov(bl, 2u32).unwrap();
            a.idiv(bl).unwrap();
        });
        assert_eq!(cpu.s.gpr[reg::RAX] & 0xffff, 0xfffd, "q = -3, r = -1");
        let cpu = run64(|a| {
            a.mov(rax, -100i64).unwrap();
            a.cqo().unwrap();
            a.mov(rcx, 7i64).unwrap();
            a.idiv(rcx).unwrap();
        });
        assert_eq!(cpu.s.gpr[reg::RAX], (-14i64) as u64);
        assert_eq!(cpu.s.gpr[reg::RDX], (-2i64) as u64);
        let cpu = run64(|a| {
            a.mov(eax, (-128i32) as u32).unwrap();
            a.cdq().unwrap();
            a.mov(ecx, 1u32).unwrap();
            a.idiv(ecx).unwrap();
        });
        assert_eq!(cpu.s.gpr[reg::RAX], 0xffff_ff80);
    }

    #[test]
    fn div_by_zero_raises_de() {
        let (cpu, r) = fault_of(|a| {
            a.mov(eax, 5u32).unwrap();
            a.xor(ecx, ecx).unwrap();
            a.div(ecx).unwrap();
        });
        assert_eq!(r, Err(Fault::DivideError));
        assert_eq!(cpu.s.gpr[reg::RAX], 5, "nothing written");
        let (_, r) = fault_of(|a| {
            a.xor(ecx, ecx).unwrap();
            a.idiv(cl).unwrap();
        });
        assert_eq!(r, Err(Fault::DivideError));
    }

    #[test]
    fn quotient_overflow_raises_de() {
        let (_, r) = fault_of(|a| {
            a.mov(ax, 0x100u32).unwrap();
            a.mov(bl, 1u32).unwrap();
            a.div(bl).unwrap();
        });
        assert_eq!(r, Err(Fault::DivideError));
        let (_, r) = fault_of(|a| {
            a.mov(rax, i64::MIN).unwrap();
            a.cqo().unwrap();
            a.mov(rcx, -1i64).unwrap();
            a.idiv(rcx).unwrap();
        });
        assert_eq!(r, Err(Fault::DivideError));
        let (_, r) = fault_of(|a| {
            a.mov(rdx, i64::MIN).unwrap();
            a.xor(eax, eax).unwrap();
            a.mov(rcx, -1i64).unwrap();
            a.idiv(rcx).unwrap();
        });
        assert_eq!(r, Err(Fault::DivideError));
        let (_, r) = fault_of(|a| {
            a.mov(ax, 0x8000u32).unwrap();
            a.mov(cl, 0xffu32).unwrap();
            a.idiv(cl).unwrap();
        });
        assert_eq!(r, Err(Fault::DivideError), "+128 does not fit i8");
        let (_, r) = fault_of(|a| {
            a.mov(edx, 2u32).unwrap();
            a.mov(ecx, 2u32).unwrap();
            a.div(ecx).unwrap();
        });
        assert_eq!(r, Err(Fault::DivideError));
    }
}
