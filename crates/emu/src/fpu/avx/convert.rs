//! VEX conversions (SDM Vol. 2: the VEX forms of CVTDQ2PS, CVT(T)PS2DQ,
//! CVTPS2PD, CVTPD2PS, CVTDQ2PD, CVT(T)PD2DQ, CVTSS2SD, CVTSD2SS,
//! CVTSI2SS/SD, CVT(T)SS2SI, CVT(T)SD2SI) and F16C (VCVTPH2PS,
//! VCVTPS2PH; SDM Vol. 1 §14.9).
//!
//! Element conversions are the SSE ones ([`crate::fpu::sse_conv`]); the
//! 256-bit forms convert twice as many elements, and the narrowing ones
//! (VCVTPD2PS, VCVT(T)PD2DQ, VCVTPS2PH) read a YMM register and write an
//! XMM register. Flags of all elements are gathered before any is
//! committed.
//!
//! F16C: half to single is exact and ignores DAZ (a half denormal is a
//! normal single); an SNaN input raises IE. Single to half rounds by
//! imm8[1:0], or by MXCSR.RC when imm8[2] is set; DAZ applies to its
//! inputs but FTZ does not apply to its results (SDM Vol. 2C "VCVTPS2PH").

use iced_x86::{Instruction, Mnemonic};
use rustc_apfloat::ieee::{Double, Half, Single};
use rustc_apfloat::{FloatConvert, Round};

use super::check_avx;
use super::operands::{element, is_256, read, set_element, write, Ymm};
use crate::exec::operand::{op_size, write_reg};
use crate::exec::HandlerEntry;
use crate::exec::LinkEffect::KeepsLinks;
use crate::fault::Fault;
use crate::fpu::float::{self, exc};
use crate::fpu::mxcsr;
use crate::fpu::sse_conv::{float_to_float, from_int, to_int};
use crate::fpu::sse_float::Ctx;
use crate::Cpu;

/// The handler for `insn`, if it is one of this file's.
pub fn lookup(insn: &Instruction) -> Option<HandlerEntry> {
    use Mnemonic as M;
    let h: fn(&mut Cpu, &Instruction) -> Result<(), Fault> = match insn.mnemonic() {
        M::Vcvtdq2ps
        | M::Vcvtps2dq
        | M::Vcvttps2dq
        | M::Vcvtps2pd
        | M::Vcvtpd2ps
        | M::Vcvtdq2pd
        | M::Vcvtpd2dq
        | M::Vcvttpd2dq => packed,
        M::Vcvtss2sd | M::Vcvtsd2ss | M::Vcvtsi2ss | M::Vcvtsi2sd => scalar,
        M::Vcvtss2si | M::Vcvttss2si | M::Vcvtsd2si | M::Vcvttsd2si => to_gpr,
        M::Vcvtph2ps => half_to_single,
        M::Vcvtps2ph => single_to_half,
        _ => return None,
    };
    Some((h, KeepsLinks))
}

/// Element `i` of `bits` bits across a YMM value.
fn get(v: &Ymm, bits: u32, i: u32) -> u128 {
    u128::from(element(v, bits, i))
}

/// Sets element `i` of `bits` bits of a YMM value.
fn put(v: &mut Ymm, bits: u32, i: u32, e: u128) {
    set_element(v, bits, i, e as u64);
}

/// The packed conversions.
fn packed(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    use Mnemonic as M;
    check_avx(cpu)?;
    let m = insn.mnemonic();
    let src = read(cpu, insn, 1)?;
    let wide = is_256(insn);
    let mut ctx = Ctx::new(cpu.s.fpu.mxcsr);
    let trunc = matches!(m, M::Vcvttps2dq | M::Vcvttpd2dq);
    let round = if trunc { Round::TowardZero } else { ctx.round };
    // Elements: 8/4 for the same-width ones, 4/2 for the others.
    let n = |same: bool| match (wide, same) {
        (true, true) => 8,
        (false, true) => 4,
        (true, false) => 4,
        (false, false) => 2,
    };
    let mut r: Ymm = [0; 2];
    match m {
        M::Vcvtdq2ps => {
            for i in 0..n(true) {
                let v = i64::from(get(&src, 32, i) as u32 as i32);
                put(&mut r, 32, i, from_int::<Single>(v, &mut ctx));
            }
        }
        M::Vcvtps2dq | M::Vcvttps2dq => {
            for i in 0..n(true) {
                let v = to_int::<Single>(get(&src, 32, i), 32, round, &mut ctx);
                put(&mut r, 32, i, u128::from(v));
            }
        }
        M::Vcvtps2pd => {
            for i in 0..n(false) {
                let v = float_to_float::<Single, Double>(get(&src, 32, i), &mut ctx);
                put(&mut r, 64, i, v);
            }
        }
        M::Vcvtdq2pd => {
            for i in 0..n(false) {
                let v = i64::from(get(&src, 32, i) as u32 as i32);
                put(&mut r, 64, i, from_int::<Double>(v, &mut ctx));
            }
        }
        M::Vcvtpd2ps => {
            for i in 0..n(false) {
                let v = float_to_float::<Double, Single>(get(&src, 64, i), &mut ctx);
                put(&mut r, 32, i, v);
            }
        }
        _ => {
            for i in 0..n(false) {
                let v = to_int::<Double>(get(&src, 64, i), 32, round, &mut ctx);
                put(&mut r, 32, i, u128::from(v));
            }
        }
    }
    ctx.finish(cpu)?;
    write(cpu, insn, 0, r)
}

/// VCVTSS2SD, VCVTSD2SS, VCVTSI2SS/SD: the low element from the second
/// source, the rest of bits 127:0 from the first.
fn scalar(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    use Mnemonic as M;
    check_avx(cpu)?;
    let m = insn.mnemonic();
    let a = read(cpu, insn, 1)?[0];
    let b = read(cpu, insn, 2)?[0];
    let mut ctx = Ctx::new(cpu.s.fpu.mxcsr);
    let int = || {
        if op_size(insn, 2) == 8 {
            b as u64 as i64
        } else {
            i64::from(b as u32 as i32)
        }
    };
    let (v, bits) = match m {
        M::Vcvtss2sd => (
            float_to_float::<Single, Double>(b & 0xffff_ffff, &mut ctx),
            64,
        ),
        M::Vcvtsd2ss => (
            float_to_float::<Double, Single>(b & u128::from(u64::MAX), &mut ctx),
            32,
        ),
        M::Vcvtsi2ss => (from_int::<Single>(int(), &mut ctx), 32),
        _ => (from_int::<Double>(int(), &mut ctx), 64),
    };
    ctx.finish(cpu)?;
    let mask = (1u128 << bits) - 1;
    write(cpu, insn, 0, [(a & !mask) | (v & mask), 0])
}

/// VCVT(T)SS2SI and VCVT(T)SD2SI into a 32- or 64-bit register.
fn to_gpr(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    use Mnemonic as M;
    check_avx(cpu)?;
    let m = insn.mnemonic();
    let v = read(cpu, insn, 1)?[0];
    let width = op_size(insn, 0) as usize * 8;
    let mut ctx = Ctx::new(cpu.s.fpu.mxcsr);
    let round = if matches!(m, M::Vcvttss2si | M::Vcvttsd2si) {
        Round::TowardZero
    } else {
        ctx.round
    };
    let r = if matches!(m, M::Vcvtss2si | M::Vcvttss2si) {
        to_int::<Single>(v & 0xffff_ffff, width, round, &mut ctx)
    } else {
        to_int::<Double>(v & u128::from(u64::MAX), width, round, &mut ctx)
    };
    ctx.finish(cpu)?;
    write_reg(cpu, insn.op_register(0), r);
    Ok(())
}

/// VCVTPH2PS: 4 or 8 halves to singles.
fn half_to_single(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    check_avx(cpu)?;
    let src = read(cpu, insn, 1)?;
    let n = if is_256(insn) { 8 } else { 4 };
    // DAZ does not apply to half inputs, and the result is never tiny.
    let mut ctx = Ctx::new(cpu.s.fpu.mxcsr & !mxcsr::DAZ);
    let mut r: Ymm = [0; 2];
    for i in 0..n {
        let h = get(&src, 16, i);
        let v = if float::is_denormal::<Half>(h) {
            let mut loses = false;
            let s: Single = float::val::<Half>(h).convert(&mut loses).value;
            float::bits(s)
        } else {
            float_to_float::<Half, Single>(h, &mut ctx)
        };
        put(&mut r, 32, i, v);
    }
    ctx.pre &= !exc::DE;
    ctx.finish(cpu)?;
    write(cpu, insn, 0, r)
}

/// VCVTPS2PH: 4 or 8 singles to halves, to an XMM register (the rest
/// zeroed) or memory of 8 or 16 bytes.
fn single_to_half(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    check_avx(cpu)?;
    let src = read(cpu, insn, 1)?;
    let n = if is_256(insn) { 8 } else { 4 };
    let imm = u32::from(insn.immediate8());
    let m = cpu.s.fpu.mxcsr;
    let rc = if imm & 4 != 0 {
        m & (3 << mxcsr::RC_SHIFT)
    } else {
        (imm & 3) << mxcsr::RC_SHIFT
    };
    if insn.op_kind(0) == iced_x86::OpKind::Memory {
        // A store that cannot be done faults before any MXCSR flag is set.
        let (seg, off) = crate::exec::operand::memory_operand(cpu, insn);
        crate::fpu::access::probe_write(cpu, seg, off, 2 * n as u64)?;
    }
    // FTZ never applies to the half results.
    let mut ctx = Ctx::new((m & !(3 << mxcsr::RC_SHIFT) & !mxcsr::FZ) | rc);
    let mut r: Ymm = [0; 2];
    for i in 0..n {
        put(
            &mut r,
            16,
            i,
            float_to_float::<Single, Half>(get(&src, 32, i), &mut ctx),
        );
    }
    ctx.finish(cpu)?;
    write(cpu, insn, 0, r)
}
