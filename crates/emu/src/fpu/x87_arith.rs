//! x87 arithmetic and comparison (SDM Vol. 1 §8.3, §8.5; Vol. 2 pages):
//! FADD/FSUB/FSUBR/FMUL/FDIV/FDIVR with their P (pop) and I (integer
//! operand) forms, FCOM/FCOMP/FCOMPP/FUCOM/FUCOMP/FUCOMPP, FCOMI/FCOMIP/
//! FUCOMI/FUCOMIP, FICOM/FICOMP, FTST, FSQRT, FRNDINT, FSCALE, FXTRACT,
//! FPREM/FPREM1, and the transcendentals FSIN/FCOS/FSINCOS/FPTAN/FPATAN/
//! F2XM1/FYL2X/FYL2XP1.
//!
//! Basic arithmetic, FSQRT, FRNDINT, FPREM/FPREM1 (within an exponent
//! difference of 63) and comparisons are exact in the 64-bit significand
//! with FCW.RC rounding. Not modelled: FCW.PC (precision control is
//! always 64 bits: Linux and glibc keep the default, extended), the
//! biased results of unmasked overflow/underflow (the rounded result is
//! stored and ES set). The transcendentals are computed in host double
//! precision (about 53 correct bits instead of the x87's 64; PE always
//! set), and partial FPREM steps reduce the exponent by 32 + (d mod 32).

use std::cmp::Ordering;

use iced_x86::{Instruction, Mnemonic, OpKind};
use rustc_apfloat::ieee::{Double, Single};
use rustc_apfloat::{Float, Round, Status, StatusAnd};

use super::control::st_index;
use super::float::{self, exc};
use super::x87::{note, pop, push, raise, rc, set_cc, underflow, unsupported, widen, X};
use super::{check_x87, fsw};
use crate::exec::operand::memory_operand;
use crate::exec::HandlerEntry;
use crate::exec::LinkEffect::KeepsLinks;
use crate::fault::Fault;
use crate::flags::{ARITH, CF, PF, ZF};
use crate::Cpu;

/// The handler for `insn`, if this module implements it, with its effect
/// on block links.
pub fn lookup(insn: &Instruction) -> Option<HandlerEntry> {
    use Mnemonic as M;
    Some(match insn.mnemonic() {
        M::Fadd | M::Faddp | M::Fiadd => (binary, KeepsLinks),
        M::Fsub | M::Fsubp | M::Fisub | M::Fsubr | M::Fsubrp | M::Fisubr => (binary, KeepsLinks),
        M::Fmul | M::Fmulp | M::Fimul => (binary, KeepsLinks),
        M::Fdiv | M::Fdivp | M::Fidiv | M::Fdivr | M::Fdivrp | M::Fidivr => (binary, KeepsLinks),
        M::Fcom | M::Fcomp | M::Fcompp | M::Fucom | M::Fucomp | M::Fucompp => (compare, KeepsLinks),
        M::Ficom | M::Ficomp | M::Ftst => (compare, KeepsLinks),
        M::Fcomi | M::Fcomip | M::Fucomi | M::Fucomip => (compare, KeepsLinks),
        M::Fsqrt | M::Frndint => (unary, KeepsLinks),
        M::Fscale => (fscale, KeepsLinks),
        M::Fxtract => (fxtract, KeepsLinks),
        M::Fprem | M::Fprem1 => (fprem, KeepsLinks),
        M::Fsin | M::Fcos | M::Fsincos | M::Fptan | M::Fpatan => (transcendental, KeepsLinks),
        M::F2xm1 | M::Fyl2x | M::Fyl2xp1 => (transcendental, KeepsLinks),
        _ => return None,
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Add,
    Sub,
    Mul,
    Div,
}

/// The x87 NaN result of two operands (SDM Table 4-7, x87 column): an
/// SNaN and a QNaN give the QNaN; two of a kind the larger significand
/// (the positive one on a tie); always quieted.
fn nan_pick(a: u128, b: u128) -> u128 {
    let (an, bn) = (float::is_nan::<X>(a), float::is_nan::<X>(b));
    let r = match (an, bn) {
        (true, false) => a,
        (false, true) => b,
        _ => {
            let (aq, bq) = (!float::is_snan::<X>(a), !float::is_snan::<X>(b));
            if aq != bq {
                if aq {
                    a
                } else {
                    b
                }
            } else {
                let (sa, sb) = (a as u64 & !(1 << 62), b as u64 & !(1 << 62));
                match sa.cmp(&sb) {
                    Ordering::Greater => a,
                    Ordering::Less => b,
                    Ordering::Equal if a >> 79 == 0 => a,
                    Ordering::Equal => b,
                }
            }
        }
    };
    float::quiet::<X>(r)
}

/// Checks of two operands common to arithmetic: unsupported formats and
/// NaNs decide the result early; denormals add DE.
fn precheck(a: u128, b: u128, flags: &mut u32) -> Option<u128> {
    if unsupported(a) || unsupported(b) {
        *flags |= exc::IE;
        return Some(float::indefinite::<X>());
    }
    if float::is_nan::<X>(a) || float::is_nan::<X>(b) {
        if float::is_snan::<X>(a) || float::is_snan::<X>(b) {
            *flags |= exc::IE;
        }
        return Some(nan_pick(a, b));
    }
    if float::is_denormal::<X>(a) || float::is_denormal::<X>(b) {
        *flags |= exc::DE;
    }
    None
}

/// The bits and flags of a computed result, and whether it rounded away
/// from zero (`toward_zero` is the same operation rounded toward zero).
fn finish(r: StatusAnd<X>, toward_zero: impl FnOnce() -> X, flags: &mut u32) -> (u128, bool) {
    *flags |= float::flags_of(r.status);
    if r.status.contains(Status::INVALID_OP) {
        return (float::indefinite::<X>(), false);
    }
    let up = r.status.contains(Status::INEXACT) && r.value.abs() > toward_zero().abs();
    (float::bits(r.value), up)
}

fn compute(op: Op, a: u128, b: u128, round: Round) -> (u128, u32, bool) {
    let mut flags = 0;
    if let Some(v) = precheck(a, b, &mut flags) {
        return (v, flags, false);
    }
    let (x, y) = (float::val::<X>(a), float::val::<X>(b));
    let f = |r: Round| match op {
        Op::Add => x.add_r(y, r),
        Op::Sub => x.sub_r(y, r),
        Op::Mul => x.mul_r(y, r),
        Op::Div => x.div_r(y, r),
    };
    let r = float::with_overflow(f(round), || {
        float::op_beyond(x, y, |p, q| match op {
            Op::Add => p.add_r(q, Round::TowardZero),
            Op::Sub => p.sub_r(q, Round::TowardZero),
            Op::Mul => p.mul_r(q, Round::TowardZero),
            Op::Div => p.div_r(q, Round::TowardZero),
        })
    });
    let (v, up) = finish(r, || f(Round::TowardZero).value, &mut flags);
    (v, flags, up)
}

/// Reads an m32/m64 real or m16/m32 integer source as extended.
fn mem_source(cpu: &mut Cpu, insn: &Instruction) -> Result<(u128, u32), Fault> {
    let (s, off) = memory_operand(cpu, insn);
    let size = insn.memory_size().size();
    super::access::check_far_end(cpu, s, off, size)?;
    let raw = cpu.read(s, off, size as u8)?;
    let integer = matches!(
        insn.mnemonic(),
        Mnemonic::Fiadd
            | Mnemonic::Fisub
            | Mnemonic::Fisubr
            | Mnemonic::Fimul
            | Mnemonic::Fidiv
            | Mnemonic::Fidivr
            | Mnemonic::Ficom
            | Mnemonic::Ficomp
    );
    Ok(if integer {
        let i = match size {
            2 => i64::from(raw as u16 as i16),
            4 => i64::from(raw as u32 as i32),
            _ => raw as i64,
        };
        let v = X::from_i128_r(i128::from(i), Round::TowardZero).value;
        (float::bits(v), 0)
    } else if size == 4 {
        widen::<Single>(u128::from(raw))
    } else {
        widen::<Double>(u128::from(raw))
    })
}

/// Stores `v` into ST(`d`) after an operation with `flags`: nothing is
/// stored when IE, DE or ZE is unmasked.
fn store(cpu: &mut Cpu, d: usize, v: u128, mut flags: u32, up: bool) -> bool {
    // An invalid operation or a zero divide hides a denormal operand
    // (SDM Vol. 1 §4.9.2; as observed on hardware).
    if flags & (exc::IE | exc::ZE) != 0 {
        flags &= !exc::DE;
    }
    let pre_flags = flags & (exc::IE | exc::DE | exc::ZE);
    if pre_flags & !u32::from(cpu.s.fpu.fcw) != 0 {
        // An unmasked pre-computation exception: nothing is computed, so
        // no post-computation flag is raised either.
        raise(cpu, pre_flags);
        cpu.s.fpu.fsw &= !fsw::C1;
        return false;
    }
    let pre = false;
    raise(cpu, flags);
    cpu.s.fpu.fsw = (cpu.s.fpu.fsw & !fsw::C1) | if up { fsw::C1 } else { 0 };
    if pre {
        return false;
    }
    cpu.s.fpu.set_st(d, v);
    true
}

fn binary(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    use Mnemonic as M;
    check_x87(cpu)?;
    let m = insn.mnemonic();
    let (op, reverse) = match m {
        M::Fadd | M::Faddp | M::Fiadd => (Op::Add, false),
        M::Fsub | M::Fsubp | M::Fisub => (Op::Sub, false),
        M::Fsubr | M::Fsubrp | M::Fisubr => (Op::Sub, true),
        M::Fmul | M::Fmulp | M::Fimul => (Op::Mul, false),
        M::Fdiv | M::Fdivp | M::Fidiv => (Op::Div, false),
        _ => (Op::Div, true),
    };
    let popping = matches!(
        m,
        M::Faddp | M::Fsubp | M::Fsubrp | M::Fmulp | M::Fdivp | M::Fdivrp
    );
    let (d, src, mut flags, empty) = if insn.op_kind(0) == OpKind::Memory {
        let (v, f) = mem_source(cpu, insn)?;
        (0, v, f, cpu.s.fpu.is_empty(0))
    } else {
        let d = st_index(insn, 0);
        let s = if insn.op_count() > 1 {
            st_index(insn, 1)
        } else {
            1
        };
        let empty = cpu.s.fpu.is_empty(d) || cpu.s.fpu.is_empty(s);
        (d, cpu.s.fpu.st(s), 0, empty)
    };
    note(cpu, insn);
    if empty {
        if underflow(cpu) {
            cpu.s.fpu.set_st(d, float::indefinite::<X>());
            if popping {
                pop(cpu);
            }
        }
        return Ok(());
    }
    let dst = cpu.s.fpu.st(d);
    let (a, b) = if reverse { (src, dst) } else { (dst, src) };
    let (v, f, up) = compute(op, a, b, rc(cpu));
    flags |= f;
    // A NaN operand hides a denormal one (SDM Vol. 1 §4.9.2).
    if float::is_nan::<X>(a) || float::is_nan::<X>(b) {
        flags &= !exc::DE;
    }
    if store(cpu, d, v, flags, up) && popping {
        pop(cpu);
    }
    Ok(())
}

/// Compares two extended values: `None` if unordered, with IE for SNaNs
/// (any NaN if `ordered`) and unsupported formats, DE for denormals.
fn cmp_values(a: u128, b: u128, ordered: bool, flags: &mut u32) -> Option<Ordering> {
    if unsupported(a) || unsupported(b) {
        *flags |= exc::IE;
        return None;
    }
    let nan = float::is_nan::<X>(a) || float::is_nan::<X>(b);
    if nan {
        if ordered || float::is_snan::<X>(a) || float::is_snan::<X>(b) {
            *flags |= exc::IE;
        }
        return None;
    }
    if float::is_denormal::<X>(a) || float::is_denormal::<X>(b) {
        *flags |= exc::DE;
    }
    float::val::<X>(a).partial_cmp(&float::val::<X>(b))
}

fn compare(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    use Mnemonic as M;
    check_x87(cpu)?;
    let m = insn.mnemonic();
    let ordered = !matches!(
        m,
        M::Fucom | M::Fucomp | M::Fucompp | M::Fucomi | M::Fucomip
    );
    let to_eflags = matches!(m, M::Fcomi | M::Fcomip | M::Fucomi | M::Fucomip);
    let pops = match m {
        M::Fcompp | M::Fucompp => 2,
        M::Fcomp | M::Fucomp | M::Ficomp | M::Fcomip | M::Fucomip => 1,
        _ => 0,
    };
    let (b, mut flags, other_empty) = if m == M::Ftst {
        (0u128, 0, false)
    } else if insn.op_count() > 0 && insn.op_kind(0) == OpKind::Memory {
        let (v, f) = mem_source(cpu, insn)?;
        (v, f, false)
    } else {
        let i = match insn.op_count() {
            0 => 1,
            1 => st_index(insn, 0),
            _ => st_index(insn, 1),
        };
        (cpu.s.fpu.st(i), 0, cpu.s.fpu.is_empty(i))
    };
    note(cpu, insn);
    let underflowed = cpu.s.fpu.is_empty(0) || other_empty;
    let c = if underflowed {
        cpu.s.fpu.fsw |= fsw::SF;
        flags |= exc::IE;
        None
    } else {
        cmp_values(cpu.s.fpu.st(0), b, ordered, &mut flags)
    };
    let nan_in = !underflowed && (float::is_nan::<X>(cpu.s.fpu.st(0)) || float::is_nan::<X>(b));
    if flags & exc::IE != 0 || nan_in {
        flags &= !exc::DE;
    }
    raise(cpu, flags);
    // With IE or DE unmasked the comparison still reports its result
    // (unordered for an invalid operand) but nothing is popped.
    let keep_stack = flags & (exc::IE | exc::DE) & !u32::from(cpu.s.fpu.fcw) != 0;
    if to_eflags {
        let f = match c {
            None => ZF | PF | CF,
            Some(Ordering::Less) => CF,
            Some(Ordering::Equal) => ZF,
            Some(Ordering::Greater) => 0,
        };
        cpu.s.flags.set_arith(ARITH, f);
        // C1 is cleared only on stack underflow (as observed on hardware).
        if underflowed {
            cpu.s.fpu.fsw &= !fsw::C1;
        }
    } else {
        let cc = match c {
            None => fsw::C3 | fsw::C2 | fsw::C0,
            Some(Ordering::Less) => fsw::C0,
            Some(Ordering::Equal) => fsw::C3,
            Some(Ordering::Greater) => 0,
        };
        set_cc(cpu, cc);
    }
    if !keep_stack {
        for _ in 0..pops {
            pop(cpu);
        }
    }
    Ok(())
}

/// FSQRT and FRNDINT on ST(0).
fn unary(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    check_x87(cpu)?;
    note(cpu, insn);
    if cpu.s.fpu.is_empty(0) {
        if underflow(cpu) {
            cpu.s.fpu.set_st(0, float::indefinite::<X>());
        }
        return Ok(());
    }
    let a = cpu.s.fpu.st(0);
    let round = rc(cpu);
    let mut flags = 0;
    let (v, up) = if let Some(v) = precheck(a, a, &mut flags) {
        (v, false)
    } else {
        let x = float::val::<X>(a);
        if insn.mnemonic() == Mnemonic::Frndint {
            finish(
                x.round_to_integral(round),
                || x.round_to_integral(Round::TowardZero).value,
                &mut flags,
            )
        } else if x.is_zero() || (x.is_infinite() && !x.is_negative()) {
            (a, false)
        } else if x.is_negative() {
            flags |= exc::IE;
            (float::indefinite::<X>(), false)
        } else {
            let r = float::sqrt_positive::<X>(a, round);
            finish(
                r,
                || float::sqrt_positive::<X>(a, Round::TowardZero).value,
                &mut flags,
            )
        }
    };
    store(cpu, 0, v, flags, up);
    Ok(())
}

/// ST(0) * 2^trunc(ST(1)).
fn fscale(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    check_x87(cpu)?;
    note(cpu, insn);
    if cpu.s.fpu.is_empty(0) || cpu.s.fpu.is_empty(1) {
        if underflow(cpu) {
            cpu.s.fpu.set_st(0, float::indefinite::<X>());
        }
        return Ok(());
    }
    let (a, b) = (cpu.s.fpu.st(0), cpu.s.fpu.st(1));
    let mut flags = 0;
    let (v, up) = if let Some(v) = precheck(a, b, &mut flags) {
        (v, false)
    } else {
        let (x, y) = (float::val::<X>(a), float::val::<X>(b));
        if y.is_infinite() {
            match (x.is_zero(), x.is_infinite(), y.is_negative()) {
                (true, _, false) | (_, true, true) => {
                    flags |= exc::IE;
                    (float::indefinite::<X>(), false)
                }
                (false, false, false) => (float::bits(X::INFINITY.copy_sign(x)), false),
                (false, false, true) => (float::bits(X::ZERO.copy_sign(x)), false),
                _ => (a, false),
            }
        } else {
            let mut exact = false;
            let n = y
                .to_i128_r(32, Round::TowardZero, &mut exact)
                .value
                .clamp(-70_000, 70_000) as i32;
            // Multiply by 2^n in at most three exact powers of two.
            let mut r = StatusAnd {
                status: Status::OK,
                value: x,
            };
            let mut left = n;
            let round = rc(cpu);
            while left != 0 && !r.value.is_zero() && !r.value.is_infinite() {
                let step = left.clamp(-16_382, 16_383);
                let p = X::from_bits((u128::from((16_383 + step) as u16)) << 64 | 1u128 << 63);
                let next = r.value.mul_r(p, round);
                r = StatusAnd {
                    status: r.status | next.status,
                    value: next.value,
                };
                left -= step;
            }
            finish(r, || x, &mut flags)
        }
    };
    store(cpu, 0, v, flags, up);
    Ok(())
}

/// FXTRACT: ST(0) becomes its unbiased exponent, then its significand
/// (with exponent 0) is pushed.
fn fxtract(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    check_x87(cpu)?;
    note(cpu, insn);
    if cpu.s.fpu.is_empty(0) {
        if underflow(cpu) {
            cpu.s.fpu.set_st(0, float::indefinite::<X>());
            push(cpu, float::indefinite::<X>());
        }
        return Ok(());
    }
    let a = cpu.s.fpu.st(0);
    if !cpu.s.fpu.is_empty(7) {
        // Stack overflow: with IE masked both results are the indefinite.
        cpu.s.fpu.fsw |= fsw::SF | fsw::C1;
        if !raise(cpu, exc::IE) {
            cpu.s.fpu.set_st(0, float::indefinite::<X>());
            push(cpu, float::indefinite::<X>());
        }
        return Ok(());
    }
    let mut flags = 0;
    let (e, s) = if let Some(v) = precheck(a, a, &mut flags) {
        (v, v)
    } else {
        let x = float::val::<X>(a);
        if x.is_zero() {
            flags |= exc::ZE;
            (float::bits(-X::INFINITY), a)
        } else if x.is_infinite() {
            (float::bits(X::INFINITY), a)
        } else {
            let e = x.ilogb();
            let sig = x.scalbn(-e);
            (
                float::bits(X::from_i128(i128::from(e)).value),
                float::bits(sig),
            )
        }
    };
    if !store(cpu, 0, e, flags, false) {
        return Ok(());
    }
    push(cpu, s);
    Ok(())
}

/// FPREM (truncating quotient) and FPREM1 (IEEE, round to nearest).
fn fprem(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    check_x87(cpu)?;
    note(cpu, insn);
    if cpu.s.fpu.is_empty(0) || cpu.s.fpu.is_empty(1) {
        if underflow(cpu) {
            cpu.s.fpu.set_st(0, float::indefinite::<X>());
        }
        return Ok(());
    }
    let (a, b) = (cpu.s.fpu.st(0), cpu.s.fpu.st(1));
    let ieee = insn.mnemonic() == Mnemonic::Fprem1;
    let mut flags = 0;
    if let Some(v) = precheck(a, b, &mut flags) {
        store(cpu, 0, v, flags, false);
        return Ok(());
    }
    let (x, y) = (float::val::<X>(a), float::val::<X>(b));
    if x.is_infinite() || y.is_zero() {
        store(cpu, 0, float::indefinite::<X>(), flags | exc::IE, false);
        return Ok(());
    }
    if y.is_infinite() || x.is_zero() {
        store(cpu, 0, a, flags, false);
        set_cc(cpu, 0);
        return Ok(());
    }
    let d = x.ilogb() - y.ilogb();
    if d >= 64 {
        // A partial remainder: reduce the exponent by 32 + (d mod 32).
        let n = 32 + d % 32;
        let yy = y.scalbn(d - n);
        let mut exact = false;
        let q = x
            .div_r(yy, Round::TowardZero)
            .value
            .round_to_integral(Round::TowardZero)
            .value;
        let _ = q.to_i128_r(64, Round::TowardZero, &mut exact);
        let r = x.sub_r(
            q.mul_r(yy, Round::NearestTiesToEven).value,
            Round::NearestTiesToEven,
        );
        store(cpu, 0, float::bits(r.value), flags, false);
        set_cc(cpu, fsw::C2);
        return Ok(());
    }
    let r = if ieee { x.ieee_rem(y) } else { x.c_fmod(y) };
    // The quotient is exact: (x - r) / y is an integer below 2^64.
    let q = x
        .sub_r(r.value, Round::NearestTiesToEven)
        .value
        .div_r(y, Round::NearestTiesToEven)
        .value
        .abs();
    let mut exact = false;
    let q = q.to_u128_r(64, Round::TowardZero, &mut exact).value as u64;
    store(cpu, 0, float::bits(r.value), flags, false);
    let cc = (if q & 4 != 0 { fsw::C0 } else { 0 })
        | (if q & 2 != 0 { fsw::C3 } else { 0 })
        | (if q & 1 != 0 { fsw::C1 } else { 0 });
    set_cc(cpu, cc);
    Ok(())
}

/// Extended to host f64 (rounded to nearest) and back.
fn to_f64(v: u128) -> f64 {
    let (bits, _, _) = super::x87::narrow::<Double>(v, Round::NearestTiesToEven);
    f64::from_bits(bits as u64)
}

fn from_f64(v: f64) -> u128 {
    widen::<Double>(u128::from(v.to_bits())).0
}

/// The transcendental instructions, in host double precision.
fn transcendental(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    use Mnemonic as M;
    check_x87(cpu)?;
    note(cpu, insn);
    let m = insn.mnemonic();
    let two = matches!(m, M::Fpatan | M::Fyl2x | M::Fyl2xp1);
    if cpu.s.fpu.is_empty(0) || (two && cpu.s.fpu.is_empty(1)) {
        if underflow(cpu) {
            cpu.s.fpu.set_st(0, float::indefinite::<X>());
        }
        return Ok(());
    }
    let a = cpu.s.fpu.st(0);
    let b = if two { cpu.s.fpu.st(1) } else { a };
    let mut flags = 0;
    if let Some(v) = precheck(a, b, &mut flags) {
        let d = if two { 1 } else { 0 };
        if store(cpu, d, v, flags, false) && two {
            pop(cpu);
        }
        return Ok(());
    }
    let x = to_f64(a);
    if matches!(m, M::Fsin | M::Fcos | M::Fsincos | M::Fptan) && x.abs() >= 2f64.powi(63) {
        set_cc(cpu, fsw::C2);
        return Ok(());
    }
    let y = to_f64(b);
    let r = match m {
        M::Fsin | M::Fsincos => x.sin(),
        M::Fcos => x.cos(),
        M::Fptan => x.tan(),
        M::F2xm1 => x.exp2() - 1.0,
        M::Fpatan => y.atan2(x),
        M::Fyl2x => y * x.log2(),
        _ => y * x.ln_1p() / std::f64::consts::LN_2,
    };
    if r.is_nan() {
        flags |= exc::IE;
    }
    let v = if r.is_nan() {
        float::indefinite::<X>()
    } else {
        from_f64(r)
    };
    if r != 0.0 && !r.is_infinite() {
        flags |= exc::PE;
    }
    if m == M::Fyl2x && x == 0.0 && y != 0.0 {
        flags |= exc::ZE;
    }
    set_cc(cpu, 0);
    if two {
        if store(cpu, 1, v, flags, false) {
            pop(cpu);
        }
        return Ok(());
    }
    if !store(cpu, 0, v, flags, false) {
        return Ok(());
    }
    match m {
        M::Fptan => push(cpu, float::bits(X::from_u128(1).value)),
        M::Fsincos => {
            cpu.s.fpu.set_st(0, from_f64(x.sin()));
            push(cpu, from_f64(x.cos()));
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext(x: f64) -> u128 {
        from_f64(x)
    }

    #[test]
    fn nan_selection_follows_the_x87_column_of_table_4_7() {
        let snan = 0x7fffu128 << 64 | 1u128 << 63 | 5;
        let qnan = 0x7fffu128 << 64 | 3u128 << 62 | 1;
        assert_eq!(nan_pick(snan, qnan), qnan);
        assert_eq!(nan_pick(snan, ext(1.0)), snan | 1u128 << 62);
        let big = qnan | 0xff;
        assert_eq!(nan_pick(qnan, big), big);
    }

    #[test]
    fn division_rounds_in_64_bits_and_reports_rounding_up_in_c1() {
        let (v, flags, up) = compute(Op::Div, ext(1.0), ext(3.0), Round::NearestTiesToEven);
        assert_eq!(v, 0x3ffd_aaaa_aaaa_aaaa_aaab);
        assert_eq!(flags, exc::PE);
        assert!(up);
        let (v, flags, _) = compute(Op::Div, ext(1.0), ext(0.0), Round::NearestTiesToEven);
        assert_eq!((v, flags), (0x7fff_8000_0000_0000_0000, exc::ZE));
        let (v, flags, _) = compute(
            Op::Mul,
            ext(0.0),
            0x7fff_8000_0000_0000_0000,
            Round::TowardZero,
        );
        assert_eq!((v, flags), (float::indefinite::<X>(), exc::IE));
    }
}
