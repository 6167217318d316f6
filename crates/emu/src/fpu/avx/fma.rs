//! FMA: fused multiply-add (SDM Vol. 1 §14.5; Vol. 2 "VFMADD132PS" and
//! the pages after it): VFMADD, VFMSUB, VFNMADD, VFNMSUB in PS, PD, SS
//! and SD forms, and VFMADDSUB/VFMSUBADD in PS and PD forms, each in the
//! 132, 213 and 231 operand orders.
//!
//! With operands `dst, src2, src3` the digits name which operands are
//! multiplied and which is added: 132 is `dst * src3 + src2`, 213 is
//! `src2 * dst + src3`, 231 is `src2 * src3 + dst`. The product and the
//! sum are rounded once (IEEE 754 fusedMultiplyAdd). The negated forms
//! negate the product, the subtracting forms the addend; negation is
//! exact, so `-(a*b) + c` is computed as `(-a)*b + c`.
//!
//! x86 specifics, as for the other SSE arithmetic: DAZ on inputs, DE for
//! denormal inputs (hidden by a NaN input or an invalid operation), a NaN
//! input gives the first NaN operand in the order multiplicand,
//! multiplier, addend (quieted; IE only for an SNaN: `0 * inf + QNaN` is
//! the QNaN without IE, as the CPU does), `0 * inf` with a number addend
//! is invalid (QNaN indefinite), and FTZ on results.
//! Scalar forms keep bits 127:32 (or 127:64) of `dst` and zero 255:128.

use iced_x86::{Instruction, Mnemonic};
use rustc_apfloat::ieee::{Double, Quad, Single};
use rustc_apfloat::{Float, FloatConvert, Round, Status, StatusAnd};

use super::check_avx;
use super::operands::{is_256, read, write, Ymm};
use crate::exec::HandlerEntry;
use crate::exec::LinkEffect::KeepsLinks;
use crate::fault::Fault;
use crate::fpu::float::{self, exc, Fmt};
use crate::fpu::lanes::lane;
use crate::fpu::sse_float::Ctx;
use crate::Cpu;

/// What an FMA mnemonic computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Form {
    /// Operand order: 132, 213 or 231.
    order: u16,
    /// Negate the product (VFNM*).
    negate_product: bool,
    /// Subtract the addend: in every element (VFMSUB, VFNMSUB), or in
    /// even elements only (VFMADDSUB) or odd elements only (VFMSUBADD).
    subtract: Subtract,
    /// Double precision.
    double: bool,
    /// Scalar (SS/SD).
    scalar: bool,
}

/// Which elements subtract the addend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Subtract {
    None,
    All,
    Even,
    Odd,
}

/// The form of FMA mnemonic `m` (`None`: not FMA), from a table indexed
/// by mnemonic built once from [`parse`].
fn form(m: Mnemonic) -> Option<Form> {
    static TABLE: std::sync::OnceLock<Vec<Option<Form>>> = std::sync::OnceLock::new();
    TABLE
        .get_or_init(|| Mnemonic::values().map(parse).collect())
        .get(m as usize)
        .copied()
        .flatten()
}

/// Parses an FMA mnemonic's name: `Vf` `[n]` `madd|msub|maddsub|msubadd`
/// `132|213|231` `ps|pd|ss|sd`.
fn parse(m: Mnemonic) -> Option<Form> {
    let name = format!("{m:?}").to_ascii_lowercase();
    let rest = name.strip_prefix("vf")?;
    let (negate_product, rest) = match rest.strip_prefix('n') {
        Some(r) => (true, r),
        None => (false, rest),
    };
    let (subtract, rest) = if let Some(r) = rest.strip_prefix("maddsub") {
        (Subtract::Even, r)
    } else if let Some(r) = rest.strip_prefix("msubadd") {
        (Subtract::Odd, r)
    } else if let Some(r) = rest.strip_prefix("madd") {
        (Subtract::None, r)
    } else if let Some(r) = rest.strip_prefix("msub") {
        (Subtract::All, r)
    } else {
        return None;
    };
    if negate_product && matches!(subtract, Subtract::Even | Subtract::Odd) {
        return None;
    }
    let order: u16 = rest.get(..3)?.parse().ok()?;
    if !matches!(order, 132 | 213 | 231) {
        return None;
    }
    let (double, scalar) = match rest.get(3..)? {
        "ps" => (false, false),
        "pd" => (true, false),
        "ss" => (false, true),
        "sd" => (true, true),
        _ => return None,
    };
    if scalar && matches!(subtract, Subtract::Even | Subtract::Odd) {
        return None;
    }
    Some(Form {
        order,
        negate_product,
        subtract,
        double,
        scalar,
    })
}

/// The handler for `insn`, if it is an FMA instruction.
pub fn lookup(insn: &Instruction) -> Option<HandlerEntry> {
    form(insn.mnemonic())?;
    Some((fused, KeepsLinks))
}

/// One element: `a * b + c` rounded once, with the x86 rules above
/// (`negate`: the product is negated; `sub`: the addend is).
fn element<F: Fmt + FloatConvert<Quad>>(
    a: u128,
    b: u128,
    c: u128,
    negate: bool,
    sub: bool,
    ctx: &mut Ctx,
) -> u128
where
    Quad: FloatConvert<F>,
{
    let saved = ctx.pre;
    ctx.pre = 0;
    let nan = |v| float::is_nan::<F>(v);
    let any_nan = nan(a) || nan(b) || nan(c);
    let a = ctx.input::<F>(a, true);
    let b = ctx.input::<F>(b, true);
    let c = ctx.input::<F>(c, true);
    let (x, y, z) = (float::val::<F>(a), float::val::<F>(b), float::val::<F>(c));
    let zero_times_inf = (x.is_infinite() && y.is_zero()) || (x.is_zero() && y.is_infinite());
    let r = if any_nan {
        if float::is_snan::<F>(a) || float::is_snan::<F>(b) || float::is_snan::<F>(c) {
            ctx.pre |= exc::IE;
        }
        let first = [a, b, c].into_iter().find(|&v| nan(v)).unwrap_or(c);
        float::quiet::<F>(first)
    } else if zero_times_inf {
        ctx.pre |= exc::IE;
        float::indefinite::<F>()
    } else {
        let x = if negate { -x } else { x };
        let z = if sub { -z } else { z };
        let rounded = x.mul_add_r(y, z, ctx.round);
        // The product is exact in quad precision (at most 106 bits), so
        // the quad sum decides overflow and tininess.
        let mut loses = false;
        let mut q = |v: F| -> Quad { v.convert(&mut loses).value };
        let (qx, qy, qz) = (q(x), q(y), q(z));
        let r = float::with_overflow(rounded, || {
            let s: StatusAnd<Quad> = qx.mul_add_r(qy, qz, Round::TowardZero);
            s.value.abs() >= float::threshold::<F>()
        });
        if r.status.contains(Status::INVALID_OP) {
            // inf - inf.
            ctx.pre |= exc::IE;
            float::indefinite::<F>()
        } else {
            let bits = float::bits(r.value);
            let exact = qx.mul_add_r(qy, qz, Round::NearestTiesToEven).value;
            let tiny = float::is_tiny::<F>(bits) || float::tiny_unbounded::<F>(exact, ctx.round);
            ctx.output_with_tininess::<F>(bits, r.status, tiny)
        }
    };
    let mut mine = ctx.pre;
    if any_nan || mine & exc::IE != 0 {
        mine &= !exc::DE;
    }
    ctx.pre = saved | mine;
    r
}

/// Every FMA instruction.
fn fused(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    check_avx(cpu)?;
    let Some(f) = form(insn.mnemonic()) else {
        return Err(Fault::InvalidOpcode);
    };
    let d = read(cpu, insn, 0)?;
    let s2 = read(cpu, insn, 1)?;
    let s3 = read(cpu, insn, 2)?;
    let (mul_a, mul_b, add) = match f.order {
        132 => (d, s3, s2),
        213 => (s2, d, s3),
        _ => (s2, s3, d),
    };
    let bits = if f.double { 64 } else { 32 };
    let per = 128 / bits;
    let halves = if is_256(insn) { 2 } else { 1 };
    let count = if f.scalar { 1 } else { per * halves };
    let mut ctx = Ctx::new(cpu.s.fpu.mxcsr);
    // Scalar forms keep the rest of the destination's low half.
    let mut r: Ymm = if f.scalar { [d[0], 0] } else { [0; 2] };
    for i in 0..count {
        let (k, j) = ((i / per) as usize, i % per);
        let get = |v: &Ymm| u128::from(lane(v[k], bits, j));
        let sub = match f.subtract {
            Subtract::None => false,
            Subtract::All => true,
            Subtract::Even => i % 2 == 0,
            Subtract::Odd => i % 2 == 1,
        };
        let (a, b, c) = (get(&mul_a), get(&mul_b), get(&add));
        let v = if f.double {
            element::<Double>(a, b, c, f.negate_product, sub, &mut ctx)
        } else {
            element::<Single>(a, b, c, f.negate_product, sub, &mut ctx)
        };
        let mask = (1u128 << bits) - 1;
        r[k] = (r[k] & !(mask << (bits * j))) | (v & mask) << (bits * j);
    }
    ctx.finish(cpu)?;
    write(cpu, insn, 0, r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mnemonic_names_give_the_form() {
        let f = form(Mnemonic::Vfnmsub231sd).unwrap();
        assert_eq!(
            (f.order, f.negate_product, f.subtract),
            (231, true, Subtract::All)
        );
        assert!(f.double && f.scalar);
        assert_eq!(
            form(Mnemonic::Vfmaddsub213ps).unwrap().subtract,
            Subtract::Even
        );
        assert!(form(Mnemonic::Vaddps).is_none());
    }

    #[test]
    fn the_product_and_sum_round_once() {
        // (1 + 2^-23)^2 - 1 = 2^-22 + 2^-46: a separate multiply would
        // round the product to 1 + 2^-22 and lose the 2^-46.
        let a = u128::from((1.0f32 + f32::EPSILON).to_bits());
        let c = u128::from(1.0f32.to_bits());
        let mut ctx = Ctx::new(0x1f80);
        let r = element::<Single>(a, a, c, false, true, &mut ctx);
        let want = f32::EPSILON.mul_add(1.0 + f32::EPSILON, f32::EPSILON);
        assert_eq!(f32::from_bits(r as u32), want);
    }
}
