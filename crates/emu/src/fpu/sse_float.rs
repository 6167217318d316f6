//! SSE/SSE2 floating point (SDM Vol. 1 §10.4, §11.4, §11.5): ADD, SUB,
//! MUL, DIV, SQRT, MIN, MAX in PS/SS/PD/SD forms, CMPccPS/SS/PD/SD,
//! COMISS/UCOMISS/COMISD/UCOMISD, RCPPS/SS and RSQRTPS/SS.
//!
//! Each lane is computed exactly (see [`super::float`]) in MXCSR's
//! rounding mode. x86 specifics: DAZ turns denormal inputs into signed
//! zeros before anything else; a NaN input gives the first NaN operand
//! quieted (SDM Table 4-7), an SNaN (or, for MIN/MAX, COMISS and the
//! ordered CMP predicates, any NaN) raises IE; invalid operations return
//! the QNaN indefinite; DE flags denormal inputs; FTZ (with UE masked)
//! flushes tiny results to signed zero and sets UE and PE. If any flag is
//! unmasked, no destination is written: when an unmasked pre-computation
//! exception (IE, DE, ZE) occurs, only pre-computation flags are recorded
//! (§11.5.2), then #XM is raised if CR4.OSXMMEXCPT, else #UD.
//! RCP/RSQRT return the exact value truncated to 12 significand bits
//! (the SDM only bounds their error by 1.5 * 2^-12; real CPUs use
//! tables, so these two are not bit-exact against hardware).

use iced_x86::{Instruction, Mnemonic};
use rustc_apfloat::ieee::{Double, Quad, Single};
use rustc_apfloat::{Float, FloatConvert, Round, Status};

use super::access::{read_operand, xmm_index};
use super::check_sse;
use super::float::{self, exc, Fmt};
use super::mxcsr;
use crate::exec::HandlerEntry;
use crate::exec::LinkEffect::KeepsLinks;
use crate::fault::Fault;
use crate::flags::{ARITH, CF, PF, ZF};
use crate::state::cr4;
use crate::Cpu;

/// The handler for `insn`, if this module implements it, with its effect
/// on block links.
pub fn lookup(insn: &Instruction) -> Option<HandlerEntry> {
    use Mnemonic as M;
    let xmm_dst = insn.op_count() > 0
        && insn.op_kind(0) == iced_x86::OpKind::Register
        && insn.op_register(0).is_xmm();
    Some(match insn.mnemonic() {
        M::Addps | M::Addss | M::Addpd | M::Addsd => (arith, KeepsLinks),
        M::Subps | M::Subss | M::Subpd | M::Subsd => (arith, KeepsLinks),
        M::Mulps | M::Mulss | M::Mulpd | M::Mulsd => (arith, KeepsLinks),
        M::Divps | M::Divss | M::Divpd | M::Divsd => (arith, KeepsLinks),
        M::Sqrtps | M::Sqrtss | M::Sqrtpd | M::Sqrtsd => (arith, KeepsLinks),
        M::Minps | M::Minss | M::Minpd | M::Minsd => (arith, KeepsLinks),
        M::Maxps | M::Maxss | M::Maxpd | M::Maxsd => (arith, KeepsLinks),
        M::Rcpps | M::Rcpss | M::Rsqrtps | M::Rsqrtss => (arith, KeepsLinks),
        M::Cmpps | M::Cmpss | M::Cmppd => (arith, KeepsLinks),
        M::Cmpsd if xmm_dst => (arith, KeepsLinks),
        M::Comiss | M::Ucomiss | M::Comisd | M::Ucomisd => (comis, KeepsLinks),
        _ => super::sse_conv::lookup(insn)?,
    })
}

/// The operation of one lane.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    Add,
    Sub,
    Mul,
    Div,
    Sqrt,
    Min,
    Max,
    Rcp,
    Rsqrt,
    Cmp(u8),
}

/// MXCSR-driven context of one instruction: rounding, DAZ/FTZ and the
/// flags raised before (IE, DE, ZE) and after (OE, UE, PE) computing.
pub struct Ctx {
    /// Rounding mode from MXCSR.RC.
    pub round: Round,
    /// MXCSR.DAZ.
    pub daz: bool,
    /// MXCSR.FZ, effective only with UE masked.
    pub ftz: bool,
    /// Pre-computation flags of all lanes.
    pub pre: u32,
    /// Post-computation flags of all lanes.
    pub post: u32,
    masks: u32,
}

impl Ctx {
    /// The context for the current MXCSR.
    pub fn new(m: u32) -> Ctx {
        let masks = (m >> mxcsr::MASK_SHIFT) & 0x3f;
        Ctx {
            round: float::round_of(m >> mxcsr::RC_SHIFT),
            daz: m & mxcsr::DAZ != 0,
            ftz: m & mxcsr::FZ != 0 && masks & exc::UE != 0,
            pre: 0,
            post: 0,
            masks,
        }
    }

    /// A source operand after DAZ, with DE recorded for denormals.
    pub fn input<F: Fmt>(&mut self, v: u128, flag_denormal: bool) -> u128 {
        if float::is_denormal::<F>(v) {
            if self.daz {
                return v & float::sign_bit::<F>();
            }
            if flag_denormal {
                self.pre |= exc::DE;
            }
        }
        v
    }

    /// Records the status of a computed result and applies FTZ.
    pub fn output<F: Fmt>(&mut self, v: u128, s: Status) -> u128 {
        self.output_with_tininess::<F>(v, s, float::is_tiny::<F>(v))
    }

    /// [`Ctx::output`] for a result whose tininess the caller knows from
    /// the exact value ([`float::tiny_unbounded`]); a result rounded up to
    /// the smallest normal can still be tiny.
    pub fn output_with_tininess<F: Fmt>(&mut self, v: u128, s: Status, tiny: bool) -> u128 {
        let f = float::flags_of(s);
        self.pre |= f & (exc::IE | exc::ZE);
        let mut post = f & (exc::OE | exc::UE | exc::PE);
        if tiny && s.contains(Status::INEXACT) {
            post |= exc::UE;
        }
        if tiny && self.masks & exc::UE == 0 {
            // Unmasked underflow is reported for tiny results even when
            // exact (SDM Vol. 1 §4.9.1.5).
            post |= exc::UE;
        }
        self.post |= post;
        if tiny && self.ftz {
            self.post |= exc::UE | exc::PE;
            return v & float::sign_bit::<F>();
        }
        v
    }

    /// Commits the flags to MXCSR, or faults if one is unmasked.
    pub fn finish(self, cpu: &mut Cpu) -> Result<(), Fault> {
        let unmasked_pre = self.pre & !self.masks;
        let flags = if unmasked_pre != 0 {
            self.pre
        } else {
            self.pre | self.post
        };
        cpu.s.fpu.mxcsr |= flags;
        if flags & !self.masks != 0 {
            return Err(simd_fault(cpu));
        }
        Ok(())
    }
}

/// #XM if CR4.OSXMMEXCPT, else #UD.
pub fn simd_fault(cpu: &Cpu) -> Fault {
    if cpu.s.cr4 & cr4::OSXMMEXCPT != 0 {
        Fault::SimdError
    } else {
        Fault::InvalidOpcode
    }
}

/// The NaN result of a two-operand instruction with a NaN input (SDM
/// Table 4-7, SSE column): the first NaN operand, quieted.
fn nan_result<F: Fmt>(a: u128, b: u128, ctx: &mut Ctx) -> u128 {
    if float::is_snan::<F>(a) || float::is_snan::<F>(b) {
        ctx.pre |= exc::IE;
    }
    if float::is_nan::<F>(a) {
        float::quiet::<F>(a)
    } else {
        float::quiet::<F>(b)
    }
}

/// An arithmetic result: QNaN indefinite when invalid.
fn arith_result<F: Fmt>(r: rustc_apfloat::StatusAnd<F>, ctx: &mut Ctx) -> u128 {
    let v = if r.status.contains(Status::INVALID_OP) {
        float::indefinite::<F>()
    } else {
        float::bits(r.value)
    };
    ctx.output::<F>(v, r.status)
}

/// Compares `a` and `b`: `None` if unordered.
fn compare<F: Fmt>(a: u128, b: u128) -> Option<std::cmp::Ordering> {
    float::val::<F>(a).partial_cmp(&float::val::<F>(b))
}

/// One lane with the exception priorities of SDM Vol. 1 §4.9.2 (Table
/// 4-8): an invalid operation or a NaN operand hides a denormal operand;
/// so does a zero divisor (as the differential tester observed on
/// hardware: x / 0 with a denormal x reports ZE alone).
pub(super) fn lane<F: Fmt + FloatConvert<Quad>>(op: Op, a: u128, b: u128, ctx: &mut Ctx) -> u128 {
    let saved = ctx.pre;
    ctx.pre = 0;
    let unary = matches!(op, Op::Sqrt | Op::Rcp | Op::Rsqrt);
    let nan_in = float::is_nan::<F>(b) || (!unary && float::is_nan::<F>(a));
    let r = lane_inner::<F>(op, a, b, ctx);
    let mut mine = ctx.pre;
    if nan_in || mine & (exc::IE | exc::ZE) != 0 {
        mine &= !exc::DE;
    }
    ctx.pre = saved | mine;
    r
}

fn lane_inner<F: Fmt + FloatConvert<Quad>>(op: Op, a: u128, b: u128, ctx: &mut Ctx) -> u128 {
    let unary = matches!(op, Op::Sqrt | Op::Rcp | Op::Rsqrt);
    let is_nan = |v| float::is_nan::<F>(v);
    if let Op::Cmp(p) = op {
        let a = ctx.input::<F>(a, true);
        let b = ctx.input::<F>(b, true);
        // SDM Vol. 2A "CMPPD", Table 3-1: predicates 16-31 are 0-15 with
        // the signaling behaviour swapped.
        let q = p & 15;
        let signaling = matches!(q, 1 | 2 | 5 | 6 | 9 | 10 | 13 | 14) != (p & 16 != 0);
        if float::is_snan::<F>(a) || float::is_snan::<F>(b) || signaling && (is_nan(a) || is_nan(b))
        {
            ctx.pre |= exc::IE;
        }
        use std::cmp::Ordering::*;
        let c = compare::<F>(a, b);
        let t = match q {
            0 => c == Some(Equal),
            1 => c == Some(Less),
            2 => matches!(c, Some(Less | Equal)),
            3 => c.is_none(),
            4 => c != Some(Equal),
            5 => c != Some(Less),
            6 => !matches!(c, Some(Less | Equal)),
            7 => c.is_some(),
            8 => matches!(c, Some(Equal) | None),
            9 => matches!(c, Some(Less) | None),
            10 => matches!(c, Some(Less | Equal) | None),
            11 => false,
            12 => matches!(c, Some(Less | Greater)),
            13 => matches!(c, Some(Greater | Equal)),
            14 => c == Some(Greater),
            _ => true,
        };
        return if t { (1u128 << F::WIDTH) - 1 } else { 0 };
    }
    if matches!(op, Op::Rcp | Op::Rsqrt) {
        return approx::<F>(op, b);
    }
    let b = ctx.input::<F>(b, true);
    let a = if unary { a } else { ctx.input::<F>(a, true) };
    if matches!(op, Op::Min | Op::Max) {
        if is_nan(a) || is_nan(b) {
            ctx.pre |= exc::IE;
            return b;
        }
        let less = compare::<F>(a, b) == Some(std::cmp::Ordering::Less);
        let greater = compare::<F>(a, b) == Some(std::cmp::Ordering::Greater);
        return if (op == Op::Min && less) || (op == Op::Max && greater) {
            a
        } else {
            b
        };
    }
    if unary {
        if is_nan(b) {
            return nan_result::<F>(b, b, ctx);
        }
        let neg = b & float::sign_bit::<F>() != 0;
        if float::is_zero::<F>(b) || (!neg && float::val::<F>(b).is_infinite()) {
            return b;
        }
        if neg {
            ctx.pre |= exc::IE;
            return float::indefinite::<F>();
        }
        let r = float::sqrt_positive::<F>(b, ctx.round);
        return arith_result::<F>(r, ctx);
    }
    if is_nan(a) || is_nan(b) {
        return nan_result::<F>(a, b, ctx);
    }
    let (x, y) = (float::val::<F>(a), float::val::<F>(b));
    let f = |round| match op {
        Op::Add => x.add_r(y, round),
        Op::Sub => x.sub_r(y, round),
        Op::Mul => x.mul_r(y, round),
        _ => x.div_r(y, round),
    };
    let r = float::with_overflow(f(ctx.round), || {
        float::op_beyond(x, y, |p, q| match op {
            Op::Add => p.add_r(q, Round::TowardZero),
            Op::Sub => p.sub_r(q, Round::TowardZero),
            Op::Mul => p.mul_r(q, Round::TowardZero),
            _ => p.div_r(q, Round::TowardZero),
        })
    });
    arith_result::<F>(r, ctx)
}

/// RCP/RSQRT: the exact reciprocal (square root) truncated to 12
/// significand bits; zeros give infinities, negatives (RSQRT) and NaNs the
/// usual special results. No flags, as on hardware.
fn approx<F: Fmt>(op: Op, b: u128) -> u128 {
    let v = float::val::<F>(b);
    let sign = b & float::sign_bit::<F>();
    if v.is_nan() {
        return float::quiet::<F>(b);
    }
    if float::is_zero::<F>(b) || float::is_denormal::<F>(b) {
        return sign | float::bits(F::INFINITY);
    }
    if op == Op::Rsqrt && sign != 0 {
        return float::indefinite::<F>();
    }
    if v.is_infinite() {
        return if op == Op::Rsqrt { 0 } else { sign };
    }
    let x = if op == Op::Rsqrt {
        float::val::<F>(float::bits(
            float::sqrt_positive::<F>(b, Round::TowardZero).value,
        ))
    } else {
        v.abs()
    };
    let r = F::from_u128(1).value.div_r(x, Round::TowardZero).value;
    let drop = F::PRECISION as u32 - 12;
    let bits = float::bits(r) & !((1u128 << drop) - 1);
    // Tiny reciprocals of huge inputs flush to zero, as the tables do.
    if float::is_denormal::<F>(bits) {
        return sign;
    }
    sign | bits
}

/// Whether mnemonic `m` works on doubles, and whether on one scalar.
fn shape(m: Mnemonic) -> (bool, bool) {
    use Mnemonic as M;
    match m {
        M::Addpd | M::Subpd | M::Mulpd | M::Divpd | M::Sqrtpd | M::Minpd | M::Maxpd | M::Cmppd => {
            (true, false)
        }
        M::Addsd | M::Subsd | M::Mulsd | M::Divsd | M::Sqrtsd | M::Minsd | M::Maxsd | M::Cmpsd => {
            (true, true)
        }
        M::Addss
        | M::Subss
        | M::Mulss
        | M::Divss
        | M::Sqrtss
        | M::Minss
        | M::Maxss
        | M::Cmpss
        | M::Rcpss
        | M::Rsqrtss => (false, true),
        _ => (false, false),
    }
}

/// The lane operation of arithmetic mnemonic `m` (`pred`: the compare
/// predicate of CMPcc, 0-31), or `None` if `m` is not one of them.
fn op_of(m: Mnemonic, pred: u8) -> Option<Op> {
    use Mnemonic as M;
    Some(match m {
        M::Addps | M::Addss | M::Addpd | M::Addsd => Op::Add,
        M::Subps | M::Subss | M::Subpd | M::Subsd => Op::Sub,
        M::Mulps | M::Mulss | M::Mulpd | M::Mulsd => Op::Mul,
        M::Divps | M::Divss | M::Divpd | M::Divsd => Op::Div,
        M::Sqrtps | M::Sqrtss | M::Sqrtpd | M::Sqrtsd => Op::Sqrt,
        M::Minps | M::Minss | M::Minpd | M::Minsd => Op::Min,
        M::Maxps | M::Maxss | M::Maxpd | M::Maxsd => Op::Max,
        M::Rcpps | M::Rcpss => Op::Rcp,
        M::Rsqrtps | M::Rsqrtss => Op::Rsqrt,
        M::Cmpps | M::Cmpss | M::Cmppd | M::Cmpsd => Op::Cmp(pred),
        _ => return None,
    })
}

/// One 128-bit chunk of packed or scalar arithmetic `m` (MIN/MAX, SQRT,
/// RCP/RSQRT and CMPcc included) on first source `a` and second source
/// `b`: the lanes the instruction computes are replaced, the others are
/// `a`'s. `pred` is CMPcc's predicate (0-31; legacy encodings pass
/// imm8[2:0]). Flags accumulate in `ctx`; `None` if `m` is not one of
/// these. The VEX forms ([`crate::fpu::avx`]) call this once per chunk.
pub fn arith_chunk(m: Mnemonic, a: u128, b: u128, pred: u8, ctx: &mut Ctx) -> Option<u128> {
    let op = op_of(m, pred)?;
    let (double, scalar) = shape(m);
    let (width, lanes) = match (double, scalar) {
        (true, true) => (64, 1),
        (true, false) => (64, 2),
        (false, true) => (32, 1),
        (false, false) => (32, 4),
    };
    let mask = (1u128 << width) - 1;
    let mut r = a;
    for i in 0..lanes {
        let (x, y) = ((a >> (width * i)) & mask, (b >> (width * i)) & mask);
        let v = if double {
            lane::<Double>(op, x, y, ctx)
        } else {
            lane::<Single>(op, x, y, ctx)
        };
        r = (r & !(mask << (width * i))) | (v & mask) << (width * i);
    }
    Some(r)
}

/// Packed/scalar arithmetic, MIN/MAX, SQRT, RCP/RSQRT and CMPcc.
fn arith(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    check_sse(cpu)?;
    let d = xmm_index(insn.op_register(0));
    let a = cpu.s.fpu.xmm[d];
    let b = read_operand(cpu, insn, 1)?;
    let mut ctx = Ctx::new(cpu.s.fpu.mxcsr);
    let pred = if insn.op_count() > 2 {
        insn.immediate8() & 7
    } else {
        0
    };
    let r = arith_chunk(insn.mnemonic(), a, b, pred, &mut ctx).unwrap_or(a);
    ctx.finish(cpu)?;
    cpu.s.fpu.xmm[d] = r;
    Ok(())
}

/// The arithmetic flags COMISS/UCOMISS/COMISD/UCOMISD `m` sets for
/// first operand `a` and second operand `b` (unordered: ZF PF CF; less:
/// CF; equal: ZF; greater: none), with MXCSR flags in `ctx`; `None` if
/// `m` is not one of them.
pub fn compare_flags(m: Mnemonic, a: u128, b: u128, ctx: &mut Ctx) -> Option<u64> {
    use Mnemonic as M;
    let (double, ordered) = match m {
        M::Comiss => (false, true),
        M::Ucomiss => (false, false),
        M::Comisd => (true, true),
        M::Ucomisd => (true, false),
        _ => return None,
    };
    let c = if double {
        comis_lane::<Double>(a as u64 as u128, b as u64 as u128, ordered, ctx)
    } else {
        comis_lane::<Single>(a as u32 as u128, b as u32 as u128, ordered, ctx)
    };
    use std::cmp::Ordering::*;
    Some(match c {
        None => ZF | PF | CF,
        Some(Less) => CF,
        Some(Equal) => ZF,
        Some(Greater) => 0,
    })
}

/// COMISS/UCOMISS/COMISD/UCOMISD: the flags of [`compare_flags`]; OF,
/// SF, AF cleared.
fn comis(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    check_sse(cpu)?;
    let a = cpu.s.fpu.xmm[xmm_index(insn.op_register(0))];
    let b = read_operand(cpu, insn, 1)?;
    let mut ctx = Ctx::new(cpu.s.fpu.mxcsr);
    let f = compare_flags(insn.mnemonic(), a, b, &mut ctx).unwrap_or(0);
    ctx.finish(cpu)?;
    cpu.s.flags.set_arith(ARITH, f);
    Ok(())
}

fn comis_lane<F: Fmt>(
    a: u128,
    b: u128,
    ordered: bool,
    ctx: &mut Ctx,
) -> Option<std::cmp::Ordering> {
    let nan = float::is_nan::<F>(a) || float::is_nan::<F>(b);
    let a = ctx.input::<F>(a, !nan);
    let b = ctx.input::<F>(b, !nan);
    if float::is_snan::<F>(a) || float::is_snan::<F>(b) || (ordered && nan) {
        ctx.pre |= exc::IE;
    }
    compare::<F>(a, b)
}
