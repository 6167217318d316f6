//! SSE/SSE2 conversions (SDM Vol. 1 §11.4.6, Vol. 2 pages): CVTSI2SS/SD,
//! CVT(T)SS2SI/SD2SI, CVTSS2SD/CVTSD2SS, CVTPS2PD/CVTPD2PS, CVTDQ2PS,
//! CVT(T)PS2DQ, CVTDQ2PD, CVT(T)PD2DQ, and the MMX-operand forms CVTPI2PS,
//! CVTPI2PD, CVT(T)PS2PI, CVT(T)PD2PI.
//!
//! Integer results that are NaN or out of range are the integer
//! indefinite (only the sign bit set) with IE; the truncating forms round
//! toward zero, the others by MXCSR.RC. Float-to-float conversions quiet
//! SNaNs (IE) and keep the NaN payload's top bits.

use iced_x86::{Instruction, Mnemonic};
use rustc_apfloat::ieee::{Double, Quad, Single};
use rustc_apfloat::{FloatConvert, Round, Status, StatusAnd};

use super::access::{mmx_enter, read_operand, write_operand};
use super::check_simd;
use super::float::{self, exc, Fmt};
use super::sse_float::Ctx;
use crate::exec::HandlerEntry;
use crate::exec::LinkEffect::KeepsLinks;
use crate::fault::Fault;
use crate::Cpu;

/// The handler for `insn`, if this module implements it, with its effect
/// on block links.
pub fn lookup(insn: &Instruction) -> Option<HandlerEntry> {
    use Mnemonic as M;
    Some(match insn.mnemonic() {
        M::Cvtsi2ss | M::Cvtsi2sd => (cvtsi2s, KeepsLinks),
        M::Cvtss2si | M::Cvttss2si | M::Cvtsd2si | M::Cvttsd2si => (cvts2si, KeepsLinks),
        M::Cvtss2sd
        | M::Cvtsd2ss
        | M::Cvtps2pd
        | M::Cvtpd2ps
        | M::Cvtdq2ps
        | M::Cvtps2dq
        | M::Cvttps2dq
        | M::Cvtdq2pd
        | M::Cvtpd2dq
        | M::Cvttpd2dq
        | M::Cvtpi2ps
        | M::Cvtpi2pd
        | M::Cvtps2pi
        | M::Cvttps2pi
        | M::Cvtpd2pi
        | M::Cvttpd2pi => (convert, KeepsLinks),
        _ => return None,
    })
}

/// A float to a signed integer of `width` bits.
pub(crate) fn to_int<F: Fmt>(v: u128, width: usize, round: Round, ctx: &mut Ctx) -> u64 {
    let v = ctx.input::<F>(v, false);
    let indefinite = 1u64 << (width - 1);
    if float::is_nan::<F>(v) {
        ctx.pre |= exc::IE;
        return indefinite;
    }
    let mut exact = false;
    let r = float::val::<F>(v).to_i128_r(width, round, &mut exact);
    if r.status.contains(Status::INVALID_OP) {
        ctx.pre |= exc::IE;
        return indefinite;
    }
    if r.status.contains(Status::INEXACT) {
        ctx.post |= exc::PE;
    }
    let mask = if width == 64 {
        u64::MAX
    } else {
        (1 << width) - 1
    };
    r.value as u64 & mask
}

/// A signed integer to a float.
pub(crate) fn from_int<F: Fmt>(v: i64, ctx: &mut Ctx) -> u128 {
    let r = F::from_i128_r(i128::from(v), ctx.round);
    ctx.output::<F>(float::bits(r.value), r.status)
}

/// Converts between float formats `S` and `D`.
pub(crate) fn float_to_float<S: Fmt + FloatConvert<D> + FloatConvert<Quad>, D: Fmt>(
    v: u128,
    ctx: &mut Ctx,
) -> u128 {
    let v = ctx.input::<S>(v, true);
    if float::is_nan::<S>(v) {
        if float::is_snan::<S>(v) {
            ctx.pre |= exc::IE;
        }
        let sign = if v & float::sign_bit::<S>() != 0 {
            float::sign_bit::<D>()
        } else {
            0
        };
        let payload = v & (float::quiet_bit::<S>() * 2 - 1);
        let payload = if D::FRAC >= S::FRAC {
            payload << (D::FRAC - S::FRAC)
        } else {
            payload >> (S::FRAC - D::FRAC)
        };
        return float::quiet::<D>(sign | float::bits(D::INFINITY) | payload);
    }
    let conv = |round| -> StatusAnd<D> {
        let mut loses = false;
        float::val::<S>(v).convert_r(round, &mut loses)
    };
    let r = float::with_overflow(conv(ctx.round), || {
        float::value_beyond::<S, D>(float::val::<S>(v))
    });
    ctx.output::<D>(float::bits(r.value), r.status)
}

/// CVTSI2SS/CVTSI2SD xmm, r/m32 or r/m64.
fn cvtsi2s(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    check_simd(cpu, insn)?;
    let size = crate::exec::operand::op_size(insn, 1);
    let raw = read_operand(cpu, insn, 1)? as u64;
    let v = if size == 8 {
        raw as i64
    } else {
        i64::from(raw as u32 as i32)
    };
    let mut ctx = Ctx::new(cpu.s.fpu.mxcsr);
    let d = super::access::xmm_index(insn.op_register(0));
    let (r, mask) = if insn.mnemonic() == Mnemonic::Cvtsi2ss {
        (from_int::<Single>(v, &mut ctx), 0xffff_ffffu128)
    } else {
        (from_int::<Double>(v, &mut ctx), u128::from(u64::MAX))
    };
    ctx.finish(cpu)?;
    let old = cpu.s.fpu.xmm[d];
    cpu.s.fpu.xmm[d] = (old & !mask) | r;
    Ok(())
}

/// CVT(T)SS2SI/CVT(T)SD2SI r32/r64, xmm/m.
fn cvts2si(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    check_simd(cpu, insn)?;
    let m = insn.mnemonic();
    let v = read_operand(cpu, insn, 1)?;
    let width = crate::exec::operand::op_size(insn, 0) as usize * 8;
    let mut ctx = Ctx::new(cpu.s.fpu.mxcsr);
    let round = if matches!(m, Mnemonic::Cvttss2si | Mnemonic::Cvttsd2si) {
        Round::TowardZero
    } else {
        ctx.round
    };
    let r = if matches!(m, Mnemonic::Cvtss2si | Mnemonic::Cvttss2si) {
        to_int::<Single>(v & 0xffff_ffff, width, round, &mut ctx)
    } else {
        to_int::<Double>(v & u128::from(u64::MAX), width, round, &mut ctx)
    };
    ctx.finish(cpu)?;
    crate::exec::operand::write_reg(cpu, insn.op_register(0), r);
    Ok(())
}

/// The packed and scalar float/float and float/int conversions.
fn convert(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    use Mnemonic as M;
    let mmx = check_simd(cpu, insn)?;
    let m = insn.mnemonic();
    let src = read_operand(cpu, insn, 1)?;
    let dst = read_operand(cpu, insn, 0)?;
    if mmx {
        // The x87-to-MMX transition happens before any SIMD exception.
        mmx_enter(cpu);
    }
    let mut ctx = Ctx::new(cpu.s.fpu.mxcsr);
    let l32 = |v: u128, i: u32| (v >> (32 * i)) & 0xffff_ffff;
    let l64 = |v: u128, i: u32| (v >> (64 * i)) & u128::from(u64::MAX);
    let lo64 = u128::from(u64::MAX);
    let trunc = matches!(m, M::Cvttps2dq | M::Cvttpd2dq | M::Cvttps2pi | M::Cvttpd2pi);
    let round = if trunc { Round::TowardZero } else { ctx.round };
    let r = match m {
        M::Cvtss2sd => (dst & !lo64) | float_to_float::<Single, Double>(l32(src, 0), &mut ctx),
        M::Cvtsd2ss => {
            (dst & !0xffff_ffff) | float_to_float::<Double, Single>(l64(src, 0), &mut ctx)
        }
        M::Cvtps2pd => {
            let a = float_to_float::<Single, Double>(l32(src, 0), &mut ctx);
            let b = float_to_float::<Single, Double>(l32(src, 1), &mut ctx);
            a | b << 64
        }
        M::Cvtpd2ps => {
            let a = float_to_float::<Double, Single>(l64(src, 0), &mut ctx);
            let b = float_to_float::<Double, Single>(l64(src, 1), &mut ctx);
            a | b << 32
        }
        M::Cvtdq2ps => (0..4).fold(0, |acc, i| {
            acc | from_int::<Single>(i64::from(l32(src, i) as u32 as i32), &mut ctx) << (32 * i)
        }),
        M::Cvtpi2ps => {
            (dst & !lo64)
                | (0..2).fold(0, |acc, i| {
                    acc | from_int::<Single>(i64::from(l32(src, i) as u32 as i32), &mut ctx)
                        << (32 * i)
                })
        }
        M::Cvtdq2pd | M::Cvtpi2pd => (0..2).fold(0, |acc, i| {
            acc | from_int::<Double>(i64::from(l32(src, i) as u32 as i32), &mut ctx) << (64 * i)
        }),
        M::Cvtps2dq | M::Cvttps2dq => (0..4).fold(0, |acc, i| {
            acc | u128::from(to_int::<Single>(l32(src, i), 32, round, &mut ctx)) << (32 * i)
        }),
        M::Cvtps2pi | M::Cvttps2pi => (0..2).fold(0, |acc, i| {
            acc | u128::from(to_int::<Single>(l32(src, i), 32, round, &mut ctx)) << (32 * i)
        }),
        // CVT(T)PD2DQ zero the upper half; the PI forms write an MMX reg.
        _ => (0..2).fold(0, |acc, i| {
            acc | u128::from(to_int::<Double>(l64(src, i), 32, round, &mut ctx)) << (32 * i)
        }),
    };
    ctx.finish(cpu)?;
    write_operand(cpu, insn, 0, r)?;
    if mmx {
        mmx_enter(cpu);
    }
    Ok(())
}
