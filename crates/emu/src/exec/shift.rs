//! Shifts and rotates: SHL/SAL, SHR, SAR, ROL, ROR, RCL, RCR, SHLD, SHRD
//! (SDM Vol. 1 §7.3.5, Vol. 2 "SAL/SAR/SHL/SHR", "RCL/RCR/ROL/ROR",
//! "SHLD", "SHRD").
//!
//! The count is masked to 5 bits (6 for 64-bit operands). A masked count
//! of 0 changes no flags, but the destination is still written back (so a
//! 32-bit register is zero-extended, as on hardware). Choices where the
//! SDM leaves things undefined:
//! - AF is 0 after every shift (rotates do not touch it).
//! - OF for counts other than 1 uses the count-1 formula.
//! - CF for SHL/SHR with a count at least the operand width: the last bit
//!   shifted out of a wider shift (0 once everything is gone).
//! - SHLD/SHRD of 16-bit operands with a count above 16 shift the 48-bit
//!   value dst:src:dst, as P6-and-later Intel CPUs do (Bochs models the
//!   same).

use iced_x86::{Instruction, Mnemonic};

use super::alu::szp;
use super::operand::{modify_op, op_size, read_op};
use super::HandlerEntry;
use super::LinkEffect::KeepsLinks;
use crate::fault::Fault;
use crate::flags::{mask, sign_bit, sign_extend, FlagOp, ARITH, CF, OF};
use crate::Cpu;

const SHL: u8 = 0;
const SHR: u8 = 1;
const SAR: u8 = 2;
pub(crate) const ROL: u8 = 3;
pub(crate) const ROR: u8 = 4;
const RCL: u8 = 5;
const RCR: u8 = 6;

/// The handler for `insn`, if this module implements it, with its effect
/// on block links.
pub fn lookup(insn: &Instruction) -> Option<HandlerEntry> {
    Some(match insn.mnemonic() {
        Mnemonic::Shl | Mnemonic::Sal => (shift::<SHL>, KeepsLinks),
        Mnemonic::Shr => (shift::<SHR>, KeepsLinks),
        Mnemonic::Sar => (shift::<SAR>, KeepsLinks),
        Mnemonic::Rol => (rotate::<ROL>, KeepsLinks),
        Mnemonic::Ror => (rotate::<ROR>, KeepsLinks),
        Mnemonic::Rcl => (rotate::<RCL>, KeepsLinks),
        Mnemonic::Rcr => (rotate::<RCR>, KeepsLinks),
        Mnemonic::Shld => (shld, KeepsLinks),
        Mnemonic::Shrd => (shrd, KeepsLinks),
        _ => return None,
    })
}

/// Operand `n` as a shift count, masked for an operand of `size` bytes.
#[inline]
fn count(cpu: &mut Cpu, insn: &Instruction, n: u32, size: u8) -> Result<u32, Fault> {
    let c = read_op(cpu, insn, n)? as u32;
    Ok(c & if size == 8 { 0x3f } else { 0x1f })
}

#[inline(always)]
fn shifted<const OP: u8>(d: u64, c: u32, size: u8) -> u64 {
    match OP {
        SHL => d << c,
        SHR => d >> c,
        _ => ((sign_extend(d, size) as i64) >> c) as u64,
    }
}

fn shift<const OP: u8>(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    let size = op_size(insn, 0);
    let c = count(cpu, insn, 1, size)?;
    if c == 0 {
        modify_op(cpu, insn, 0, |d| d)?;
        return Ok(());
    }
    let old = modify_op(cpu, insn, 0, |d| shifted::<OP>(d, c, size))?;
    let res = shifted::<OP>(old, c, size);
    let op = match OP {
        SHL => FlagOp::Shl,
        SHR => FlagOp::Shr,
        _ => FlagOp::Sar,
    };
    cpu.s
        .flags
        .set_result(op, size, old, u64::from(c), res, false);
    Ok(())
}

/// The result of a rotate of `d` (masked to `size`) by the masked count
/// `c` (non-zero), and the CF after it.
#[inline(always)]
pub(crate) fn rotated<const OP: u8>(d: u64, c: u32, size: u8, cf: bool) -> (u64, bool) {
    let bits = u32::from(size) * 8;
    let m = mask(size);
    match OP {
        ROL | ROR => {
            let r = c % bits;
            let res = if r == 0 {
                d
            } else if OP == ROL {
                ((d << r) | (d >> (bits - r))) & m
            } else {
                ((d >> r) | (d << (bits - r))) & m
            };
            let cf = if OP == ROL {
                res & 1 != 0
            } else {
                res & sign_bit(size) != 0
            };
            (res, cf)
        }
        _ => {
            // Rotate the (bits + 1)-bit value CF:d.
            let t = match size {
                1 => c % 9,
                2 => c % 17,
                _ => c,
            };
            if t == 0 {
                return (d, cf);
            }
            let width = bits + 1;
            let v = (u128::from(cf) << bits) | u128::from(d);
            let wm = (1u128 << width) - 1;
            let v = if OP == RCL {
                ((v << t) | (v >> (width - t))) & wm
            } else {
                ((v >> t) | (v << (width - t))) & wm
            };
            (v as u64 & m, (v >> bits) & 1 != 0)
        }
    }
}

fn rotate<const OP: u8>(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    let size = op_size(insn, 0);
    let c = count(cpu, insn, 1, size)?;
    if c == 0 {
        modify_op(cpu, insn, 0, |d| d)?;
        return Ok(());
    }
    let cf_in = OP >= RCL && cpu.s.flags.cf();
    let old = modify_op(cpu, insn, 0, |d| rotated::<OP>(d, c, size, cf_in).0)?;
    let (res, cf) = rotated::<OP>(old, c, size, cf_in);
    cpu.s
        .flags
        .set_arith(CF | OF, rotate_flags::<OP>(res, cf, size));
    Ok(())
}

/// CF and OF after a rotate that produced `res` with carry `cf` (OF is
/// architecturally defined for a count of 1 only; this is what the host
/// CPU gives for every count, as the differential tests check).
#[inline(always)]
pub(crate) fn rotate_flags<const OP: u8>(res: u64, cf: bool, size: u8) -> u64 {
    let msb = res & sign_bit(size) != 0;
    let of = if OP == ROL || OP == RCL {
        msb != cf
    } else {
        msb != (res & (sign_bit(size) >> 1) != 0)
    };
    (if cf { CF } else { 0 }) | if of { OF } else { 0 }
}

/// The 48-bit value dst:src:dst a 16-bit double shift works on.
#[inline]
fn wide16(d: u64, s: u64) -> u64 {
    ((d & 0xffff) << 32) | ((s & 0xffff) << 16) | (d & 0xffff)
}

/// SHLD of `d` by `c` (1..=63) filling from `s`: (result, CF).
#[inline]
fn shld_value(d: u64, s: u64, c: u32, size: u8) -> (u64, bool) {
    if size == 2 {
        let x = wide16(d, s);
        return ((x >> (32 - c)) & 0xffff, (x >> (48 - c)) & 1 != 0);
    }
    let bits = u32::from(size) * 8;
    let res = ((d << c) | (s >> (bits - c))) & mask(size);
    (res, (d >> (bits - c)) & 1 != 0)
}

/// SHRD of `d` by `c` (1..=63) filling from `s`: (result, CF).
#[inline]
fn shrd_value(d: u64, s: u64, c: u32, size: u8) -> (u64, bool) {
    if size == 2 {
        let x = wide16(d, s);
        return ((x >> c) & 0xffff, (x >> (c - 1)) & 1 != 0);
    }
    let bits = u32::from(size) * 8;
    let res = ((d >> c) | (s << (bits - c))) & mask(size);
    (res, (d >> (c - 1)) & 1 != 0)
}

fn double_shift(
    cpu: &mut Cpu,
    insn: &Instruction,
    f: fn(u64, u64, u32, u8) -> (u64, bool),
) -> Result<(), Fault> {
    let size = op_size(insn, 0);
    let src = read_op(cpu, insn, 1)?;
    let c = count(cpu, insn, 2, size)?;
    if c == 0 {
        modify_op(cpu, insn, 0, |d| d)?;
        return Ok(());
    }
    let old = modify_op(cpu, insn, 0, |d| f(d, src, c, size).0)?;
    let (res, cf) = f(old, src, c, size);
    // OF: the sign changed (defined for a count of 1).
    let of = (res ^ old) & sign_bit(size) != 0;
    let bits = szp(res, size) | if cf { CF } else { 0 } | if of { OF } else { 0 };
    cpu.s.flags.set_arith(ARITH, bits);
    Ok(())
}

fn shld(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    double_shift(cpu, insn, shld_value)
}

fn shrd(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    double_shift(cpu, insn, shrd_value)
}

#[cfg(test)]
mod tests {
    use iced_x86::code_asm::*;

    use crate::flags::{AF, ARITH, CF, OF, PF, SF, ZF};
    use crate::state::reg;
    use crate::testutil::{run64, DATA};
    use crate::Cpu;

    fn arith(cpu: &Cpu) -> u64 {
        cpu.s.flags.get() & ARITH
    }

    #[test]
    fn shl_by_one_reports_the_bit_out_and_the_sign_change() {
        let cpu = run64(|a| {
            a.mov(al, 0xc1u32).unwrap();
            a.shl(al, 1).unwrap();
        });
        assert_eq!(cpu.s.gpr[reg::RAX], 0x82);
        assert_eq!(arith(&cpu), CF | SF | PF);
        let cpu = run64(|a| {
            a.mov(al, 0x41u32).unwrap();
            a.sal(al, 1).unwrap();
        });
        assert_eq!(arith(&cpu), OF | SF | PF);
    }

    #[test]
    fn shift_counts_are_masked_and_zero_changes_no_flags() {
        let cpu = run64(|a| {
            a.stc().unwrap();
            a.mov(rax, -1i64).unwrap();
            a.mov(cl, 32u32).unwrap();
            a.shl(eax, cl).unwrap(); // count 0: flags kept, rax zero-extended
        });
        assert_eq!(cpu.s.gpr[reg::RAX], 0xffff_ffff);
        assert_eq!(arith(&cpu), CF);
        let cpu = run64(|a| {
            a.mov(rax, 1u64).unwrap();
            a.mov(cl, 0x7fu32).unwrap();
            a.shl(rax, cl).unwrap(); // 63
        });
        assert_eq!(cpu.s.gpr[reg::RAX], 1 << 63);
        assert_eq!(arith(&cpu) & (CF | SF | ZF), SF);
    }

    #[test]
    fn shl_of_a_word_by_its_width_moves_bit_0_into_carry() {
        let cpu = run64(|a| {
            a.mov(ebx, 0x1_0001u32).unwrap();
            a.shl(bx, 16).unwrap();
        });
        assert_eq!(cpu.s.gpr[reg::RBX], 0x1_0000);
        assert_eq!(arith(&cpu) & (CF | ZF | SF), CF | ZF);
    }

    #[test]
    fn shr_and_sar_differ_in_the_sign_fill() {
        let cpu = run64(|a| {
            a.mov(dword_ptr(DATA), i32::MIN + 3).unwrap();
            a.shr(dword_ptr(DATA), 1).unwrap();
        });
        assert_eq!(cpu.machine.memory.read_u64(DATA).unwrap(), 0x4000_0001);
        assert_eq!(arith(&cpu), CF | OF);
        let cpu = run64(|a| {
            a.mov(dx, 0x8003u32).unwrap();
            a.sar(dx, 1).unwrap();
        });
        assert_eq!(cpu.s.gpr[reg::RDX], 0xc001);
        assert_eq!(arith(&cpu), CF | SF);
        let cpu = run64(|a| {
            a.mov(al, 0x80u32).unwrap();
            a.mov(cl, 20u32).unwrap();
            a.sar(al, cl).unwrap();
        });
        assert_eq!(cpu.s.gpr[reg::RAX] & 0xff, 0xff);
        assert_eq!(arith(&cpu) & (CF | SF | OF), CF | SF);
    }

    #[test]
    fn rotates_touch_only_carry_and_overflow() {
        let cpu = run64(|a| {
            a.xor(eax, eax).unwrap(); // ZF PF
            a.mov(bl, 0x81u32).unwrap();
            a.rol(bl, 1).unwrap();
        });
        assert_eq!(cpu.s.gpr[reg::RBX] & 0xff, 0x03);
        assert_eq!(arith(&cpu), ZF | PF | CF | OF);
        let cpu = run64(|a| {
            a.mov(bl, 0x01u32).unwrap();
            a.ror(bl, 1).unwrap();
        });
        assert_eq!(cpu.s.gpr[reg::RBX] & 0xff, 0x80);
        assert_eq!(arith(&cpu) & (CF | OF), CF | OF);
        let cpu = run64(|a| {
            a.mov(rax, 0x8000_0000_0000_0001u64).unwrap();
            a.ror(rax, 4).unwrap();
        });
        assert_eq!(cpu.s.gpr[reg::RAX], 0x1800_0000_0000_0000);
        assert_eq!(arith(&cpu) & CF, 0);
    }

    #[test]
    fn rol_by_a_multiple_of_the_width_still_sets_carry() {
        let cpu = run64(|a| {
            a.clc().unwrap();
            a.mov(al, 0x01u32).unwrap();
            a.rol(al, 8).unwrap();
        });
        assert_eq!(cpu.s.gpr[reg::RAX] & 0xff, 0x01);
        assert_eq!(arith(&cpu) & CF, CF);
    }

    #[test]
    fn rcl_and_rcr_rotate_through_the_carry() {
        let cpu = run64(|a| {
            a.stc().unwrap();
            a.mov(al, 0x80u32).unwrap();
            a.rcl(al, 1).unwrap();
        });
        assert_eq!(cpu.s.gpr[reg::RAX] & 0xff, 0x01);
        assert_eq!(arith(&cpu) & (CF | OF), CF | OF);
        let cpu = run64(|a| {
            a.stc().unwrap();
            a.mov(rax, 1u64).unwrap();
            a.rcr(rax, 1).unwrap();
        });
        assert_eq!(cpu.s.gpr[reg::RAX], 1 << 63);
        assert_eq!(arith(&cpu) & (CF | OF), CF | OF);
        // rcl ax, 17 is a full turn of the 17-bit rotation: nothing moves.
        let cpu = run64(|a| {
            a.stc().unwrap();
            a.mov(ax, 0x1234u32).unwrap();
            a.mov(cl, 17u32).unwrap();
            a.rcl(ax, cl).unwrap();
        });
        assert_eq!(cpu.s.gpr[reg::RAX] & 0xffff, 0x1234);
        assert_eq!(arith(&cpu) & CF, CF);
        // rcr bl, 9 with CF=0: 9 mod 9 = 0.
        let cpu = run64(|a| {
            a.clc().unwrap();
            a.mov(bl, 0x5au32).unwrap();
            a.rcr(bl, 4).unwrap();
        });
        // CF:bl = 0:01011010 -> rotated right 4 through CF: 0100:0101 with CF=1.
        assert_eq!(cpu.s.gpr[reg::RBX] & 0xff, 0x45);
        assert_eq!(arith(&cpu) & CF, CF);
        let cpu = run64(|a| {
            a.stc().unwrap();
            a.mov(edx, 0x8000_0000u32).unwrap();
            a.rcl(edx, 31).unwrap();
        });
        // CF:edx = 1:8000_0000 rotated left by 31: bit 32 (CF) -> 30, bit 31 -> 29.
        assert_eq!(cpu.s.gpr[reg::RDX], 0x6000_0000);
        assert_eq!(arith(&cpu) & CF, 0);
    }

    #[test]
    fn shld_and_shrd_shift_in_bits_from_the_source() {
        let cpu = run64(|a| {
            a.mov(eax, 0x8000_0001u32).unwrap();
            a.mov(ebx, 0xc000_0000u32).unwrap();
            a.shld(eax, ebx, 1).unwrap();
        });
        assert_eq!(cpu.s.gpr[reg::RAX], 0x0000_0003);
        assert_eq!(arith(&cpu), CF | OF | PF);
        let cpu = run64(|a| {
            a.mov(rax, 0x0123_4567_89ab_cdefu64).unwrap();
            a.mov(rdx, 0xfedc_ba98_7654_3210u64).unwrap();
            a.mov(cl, 8u32).unwrap();
            a.shrd(rax, rdx, cl).unwrap();
        });
        assert_eq!(cpu.s.gpr[reg::RAX], 0x1001_2345_6789_abcd);
        assert_eq!(arith(&cpu), CF);
        let cpu = run64(|a| {
            a.mov(word_ptr(DATA), 0x0001).unwrap();
            a.mov(cx, 0x8000u32).unwrap();
            a.shrd(word_ptr(DATA), cx, 1).unwrap();
        });
        assert_eq!(cpu.machine.memory.read_u64(DATA).unwrap(), 0x0000);
        assert_eq!(arith(&cpu), CF | ZF | PF);
    }

    #[test]
    fn shld_of_a_word_beyond_16_shifts_dst_src_dst() {
        let cpu = run64(|a| {
            a.mov(ax, 0x1234u32).unwrap();
            a.mov(bx, 0x5678u32).unwrap();
            a.mov(cl, 20u32).unwrap();
            a.shld(ax, bx, cl).unwrap();
            a.mov(dx, 0x1234u32).unwrap();
            a.shrd(dx, bx, cl).unwrap();
        });
        assert_eq!(cpu.s.gpr[reg::RAX] & 0xffff, 0x6781);
        assert_eq!(cpu.s.gpr[reg::RDX] & 0xffff, 0x4567);
    }

    #[test]
    fn shifts_clear_the_adjust_flag() {
        let cpu = run64(|a| {
            a.mov(al, 0x0fu32).unwrap();
            a.add(al, 1u32).unwrap(); // AF
            a.shr(al, 2).unwrap();
        });
        assert_eq!(arith(&cpu) & AF, 0);
    }
}
