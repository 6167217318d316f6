//! SSE4.1's floating-point instructions (SDM Vol. 2: ROUNDPS, ROUNDPD,
//! ROUNDSS, ROUNDSD, DPPS, DPPD).
//!
//! **ROUND\*** rounds each lane to an integral value in the mode imm8
//! selects (bits 1:0, or MXCSR.RC when bit 2 is set); bit 3 suppresses the
//! precision exception. An SNaN raises IE and gives its quiet form; DAZ
//! turns denormal inputs into zeros; no DE, OE or UE is possible. The
//! scalar forms round the source's low lane and keep the destination's
//! upper lanes.
//!
//! **DP\*** is a dot product: the lanes imm8[7:4] (DPPS) or imm8[5:4]
//! (DPPD) selects are multiplied (the others count as +0.0), the products
//! summed pairwise (DPPS: (p0 + p1) + (p2 + p3)), and the sum written to
//! the lanes imm8[3:0] selects, +0.0 to the rest. Every multiply and add
//! is an SSE lane operation of [`super::sse_float`], with its rounding,
//! NaN and exception rules, in three steps (multiplies, first adds, last
//! add) whose flags are recorded in turn; an unmasked exception leaves
//! the destination as it was and the later steps undone.

use iced_x86::{Instruction, Mnemonic};
use rustc_apfloat::ieee::{Double, Quad, Single};
use rustc_apfloat::{FloatConvert, Status};

use super::access::{read_operand, xmm_index};
use super::check_sse;
use super::float::{self, exc, Fmt};
use super::lanes::part;
use super::sse_float::{lane, Ctx, Op};
use crate::exec::HandlerEntry;
use crate::exec::LinkEffect::KeepsLinks;
use crate::fault::Fault;
use crate::Cpu;

/// The handler for `insn`, if it is ROUND* or DP*.
pub fn lookup(insn: &Instruction) -> Option<HandlerEntry> {
    use Mnemonic as M;
    Some(match insn.mnemonic() {
        M::Roundps | M::Roundpd | M::Roundss | M::Roundsd => (round, KeepsLinks),
        M::Dpps | M::Dppd => (dot_product, KeepsLinks),
        _ => return None,
    })
}

/// One lane of ROUND*: `v` rounded by `imm`.
fn round_lane<F: Fmt>(v: u128, imm: u8, ctx: &mut Ctx) -> u128 {
    if float::is_nan::<F>(v) {
        if float::is_snan::<F>(v) {
            ctx.pre |= exc::IE;
        }
        return float::quiet::<F>(v);
    }
    let v = ctx.input::<F>(v, false);
    let mode = if imm & 4 != 0 {
        ctx.round
    } else {
        float::round_of(u32::from(imm & 3))
    };
    let r = float::val::<F>(v).round_to_integral(mode);
    if r.status.contains(Status::INEXACT) && imm & 8 == 0 {
        ctx.post |= exc::PE;
    }
    float::bits(r.value)
}

/// One 128-bit chunk of ROUND* `m`: the lanes it rounds are `b`'s
/// rounded by `imm`, the others are `a`'s; `None` if `m` is not ROUND*.
pub fn round_chunk(m: Mnemonic, a: u128, b: u128, imm: u8, ctx: &mut Ctx) -> Option<u128> {
    use Mnemonic as M;
    let (double, scalar) = match m {
        M::Roundps => (false, false),
        M::Roundpd => (true, false),
        M::Roundss => (false, true),
        M::Roundsd => (true, true),
        _ => return None,
    };
    let bits = if double { 64 } else { 32 };
    let lanes = if scalar { 1 } else { 128 / bits };
    let mask = (1u128 << bits) - 1;
    let mut r = a;
    for i in 0..lanes {
        let x = part(b, bits, i);
        let v = if double {
            round_lane::<Double>(x, imm, ctx)
        } else {
            round_lane::<Single>(x, imm, ctx)
        };
        r = (r & !(mask << (bits * i))) | (v & mask) << (bits * i);
    }
    Some(r)
}

/// ROUNDPS, ROUNDPD, ROUNDSS, ROUNDSD.
fn round(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    check_sse(cpu)?;
    let d = xmm_index(insn.op_register(0));
    let a = cpu.s.fpu.xmm[d];
    let b = read_operand(cpu, insn, 1)?;
    let mut ctx = Ctx::new(cpu.s.fpu.mxcsr);
    let r = round_chunk(insn.mnemonic(), a, b, insn.immediate8(), &mut ctx).unwrap_or(a);
    ctx.finish(cpu)?;
    cpu.s.fpu.xmm[d] = r;
    Ok(())
}

/// The dot product of `a` and `b` in the format `F` under `mxcsr`, in
/// three steps as the hardware does them: the multiplies, the first adds,
/// the last add. Each step's flags are committed through `commit` before
/// the next step runs (so an underflowing product's UE and PE are
/// recorded even when the add it feeds then faults on a denormal
/// operand); an error from `commit` ends the instruction.
pub fn dot<F: Fmt + FloatConvert<Quad>>(
    a: u128,
    b: u128,
    imm: u8,
    mxcsr: u32,
    mut commit: impl FnMut(Ctx) -> Result<(), Fault>,
) -> Result<u128, Fault> {
    let bits = F::WIDTH;
    let lanes = 128 / bits;
    let zero = float::zero::<F>(false);
    let mut ctx = Ctx::new(mxcsr);
    let products: Vec<u128> = (0..lanes)
        .map(|i| {
            if imm >> (4 + i) & 1 != 0 {
                lane::<F>(Op::Mul, part(a, bits, i), part(b, bits, i), &mut ctx)
            } else {
                zero
            }
        })
        .collect();
    commit(ctx)?;
    let mut ctx = Ctx::new(mxcsr);
    let sum = if lanes == 4 {
        let low = lane::<F>(Op::Add, products[0], products[1], &mut ctx);
        let high = lane::<F>(Op::Add, products[2], products[3], &mut ctx);
        commit(ctx)?;
        let mut last = Ctx::new(mxcsr);
        let sum = lane::<F>(Op::Add, low, high, &mut last);
        commit(last)?;
        sum
    } else {
        let sum = lane::<F>(Op::Add, products[0], products[1], &mut ctx);
        commit(ctx)?;
        sum
    };
    Ok((0..lanes).fold(0u128, |r, i| {
        let v = if imm >> i & 1 != 0 { sum } else { zero };
        r | (v & ((1u128 << bits) - 1)) << (bits * i)
    }))
}

/// DPPS, DPPD.
fn dot_product(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    check_sse(cpu)?;
    let d = xmm_index(insn.op_register(0));
    let a = cpu.s.fpu.xmm[d];
    let b = read_operand(cpu, insn, 1)?;
    let imm = insn.immediate8();
    let mxcsr = cpu.s.fpu.mxcsr;
    let commit = |ctx: Ctx| ctx.finish(cpu);
    let r = if insn.mnemonic() == Mnemonic::Dppd {
        dot::<Double>(a, b, imm, mxcsr, commit)?
    } else {
        dot::<Single>(a, b, imm, mxcsr, commit)?
    };
    cpu.s.fpu.xmm[d] = r;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::lanes::singles;
    use super::*;

    #[test]
    fn round_follows_the_immediate_mode() {
        let mut ctx = Ctx::new(0x1f80);
        let v = u128::from(2.5f32.to_bits());
        let r = |imm, ctx: &mut Ctx| f32::from_bits(round_lane::<Single>(v, imm, ctx) as u32);
        assert_eq!(r(0, &mut ctx), 2.0, "nearest even");
        assert_eq!(r(1, &mut ctx), 2.0, "down");
        assert_eq!(r(2, &mut ctx), 3.0, "up");
        assert_eq!(r(3, &mut ctx), 2.0, "toward zero");
        assert_eq!(ctx.post & exc::PE, exc::PE);
        let mut quiet = Ctx::new(0x1f80);
        r(8 | 2, &mut quiet);
        assert_eq!(quiet.post, 0, "imm bit 3 suppresses PE");
    }

    #[test]
    fn dpps_sums_the_selected_products_into_the_selected_lanes() {
        let a = singles([1.0, 2.0, 3.0, 4.0]);
        let b = singles([10.0, 20.0, 30.0, 40.0]);
        // Products of lanes 0, 1 and 3: 10 + 40 + 160 = 210, into lanes 1, 2.
        let r = dot::<Single>(a, b, 0b1011_0110, 0x1f80, |_| Ok(())).unwrap();
        assert_eq!(r, singles([0.0, 210.0, 210.0, 0.0]));
    }
}
