//! IEEE 754 helpers shared by the SSE and x87 units: the three binary
//! formats (single, double, x87 double-extended), their special values in
//! x86's conventions (SDM Vol. 1 §4.8.3: QNaN indefinite, quieting an
//! SNaN), correctly rounded square root, and the mapping of
//! `rustc_apfloat`'s status to the x86 exception flags (bit positions are
//! the same in MXCSR and the x87 status word).

use rustc_apfloat::ieee::{Double, Half, Quad, Single, X87DoubleExtended};
use rustc_apfloat::{Float, FloatConvert, Round, Status, StatusAnd};

/// Exception flag bits, as in MXCSR and FSW.
pub mod exc {
    #![allow(missing_docs)]
    pub const IE: u32 = 1 << 0;
    pub const DE: u32 = 1 << 1;
    pub const ZE: u32 = 1 << 2;
    pub const OE: u32 = 1 << 3;
    pub const UE: u32 = 1 << 4;
    pub const PE: u32 = 1 << 5;
}

/// A binary floating-point format and its bit layout.
pub trait Fmt: Float + Copy {
    /// Total width in bits (32, 64, 80).
    const WIDTH: u32;
    /// Stored significand bits (23, 52, 64 with the explicit integer bit).
    const FRAC: u32;
    /// Exponent bits.
    const EXP: u32;
    /// Whether the integer bit is stored (x87 double-extended).
    const EXPLICIT: bool;
}

impl Fmt for Single {
    const WIDTH: u32 = 32;
    const FRAC: u32 = 23;
    const EXP: u32 = 8;
    const EXPLICIT: bool = false;
}

impl Fmt for Double {
    const WIDTH: u32 = 64;
    const FRAC: u32 = 52;
    const EXP: u32 = 11;
    const EXPLICIT: bool = false;
}

impl Fmt for Half {
    const WIDTH: u32 = 16;
    const FRAC: u32 = 10;
    const EXP: u32 = 5;
    const EXPLICIT: bool = false;
}

impl Fmt for X87DoubleExtended {
    const WIDTH: u32 = 80;
    const FRAC: u32 = 64;
    const EXP: u32 = 15;
    const EXPLICIT: bool = true;
}

/// The rounding mode of an RC field (MXCSR bits 13-14, FCW bits 10-11).
pub fn round_of(rc: u32) -> Round {
    match rc & 3 {
        0 => Round::NearestTiesToEven,
        1 => Round::TowardNegative,
        2 => Round::TowardPositive,
        _ => Round::TowardZero,
    }
}

/// The x86 exception flags of an apfloat status.
pub fn flags_of(s: Status) -> u32 {
    let mut f = 0;
    if s.contains(Status::INVALID_OP) {
        f |= exc::IE;
    }
    if s.contains(Status::DIV_BY_ZERO) {
        f |= exc::ZE;
    }
    if s.contains(Status::OVERFLOW) {
        f |= exc::OE;
    }
    if s.contains(Status::UNDERFLOW) {
        f |= exc::UE;
    }
    if s.contains(Status::INEXACT) {
        f |= exc::PE;
    }
    f
}

/// Adds the overflow flag `rustc_apfloat` leaves out: like LLVM's APFloat
/// it reports only "inexact" when a directed rounding mode turns an
/// overflow into the largest finite number, where IEEE 754 and x86 report
/// overflow. `beyond` tells whether the exact result's magnitude is at
/// least 2^(emax+1), the IEEE overflow threshold for those modes.
pub fn with_overflow<F: Fmt>(r: StatusAnd<F>, beyond: impl FnOnce() -> bool) -> StatusAnd<F> {
    if r.status.contains(Status::OVERFLOW)
        || !r.status.contains(Status::INEXACT)
        || !r.value.abs().bitwise_eq(F::largest())
        || !beyond()
    {
        return r;
    }
    StatusAnd {
        status: r.status | Status::OVERFLOW,
        value: r.value,
    }
}

/// 2^(emax+1) of format `F`, as a quad.
pub(crate) fn threshold<F: Fmt>() -> Quad {
    Quad::from_u128(1).value.scalbn(F::MAX_EXP + 1)
}

/// Whether `op` applied exactly to `x` and `y` reaches 2^(emax+1) of `F`
/// in magnitude: computed in quad precision rounded toward zero, which is
/// monotonic and exact at the (representable) threshold; for x87 values
/// quad's own largest number stands for the threshold.
pub fn op_beyond<F: Fmt + FloatConvert<Quad>>(
    x: F,
    y: F,
    op: impl FnOnce(Quad, Quad) -> StatusAnd<Quad>,
) -> bool {
    let mut loses = false;
    let qx: Quad = x.convert(&mut loses).value;
    let qy: Quad = y.convert(&mut loses).value;
    let r = op(qx, qy);
    let a = r.value.abs();
    if F::EXPLICIT {
        return a.bitwise_eq(Quad::largest()) || a.is_infinite();
    }
    a >= threshold::<F>()
}

/// Whether the exact value `v` (of a wider format `S`) reaches
/// 2^(emax+1) of the narrower format `D`.
pub fn value_beyond<S: Fmt + FloatConvert<Quad>, D: Fmt>(v: S) -> bool {
    let mut loses = false;
    let q: Quad = v.convert(&mut loses).value;
    q.abs() >= threshold::<D>()
}

/// The sign bit of format `F`.
pub fn sign_bit<F: Fmt>() -> u128 {
    1u128 << (F::WIDTH - 1)
}

fn exp_field<F: Fmt>(v: u128) -> u128 {
    (v >> F::FRAC) & ((1 << F::EXP) - 1)
}

fn frac_field<F: Fmt>(v: u128) -> u128 {
    v & ((1u128 << F::FRAC) - 1)
}

/// The quiet bit (the most significant fraction bit).
pub fn quiet_bit<F: Fmt>() -> u128 {
    1u128 << (F::FRAC - 1 - u32::from(F::EXPLICIT))
}

/// Whether `v` is a NaN (x87: any fraction besides the integer bit).
pub fn is_nan<F: Fmt>(v: u128) -> bool {
    let frac = frac_field::<F>(v) & (quiet_bit::<F>() * 2 - 1);
    exp_field::<F>(v) == (1 << F::EXP) - 1 && frac != 0
}

/// Whether `v` is a signaling NaN.
pub fn is_snan<F: Fmt>(v: u128) -> bool {
    is_nan::<F>(v) && v & quiet_bit::<F>() == 0
}

/// Whether `v` is denormal (x87: also pseudo-denormals).
pub fn is_denormal<F: Fmt>(v: u128) -> bool {
    exp_field::<F>(v) == 0 && frac_field::<F>(v) != 0
}

/// Whether `v` is +0 or -0.
pub fn is_zero<F: Fmt>(v: u128) -> bool {
    v & (sign_bit::<F>() - 1) == 0
}

/// `v` with its quiet bit set.
pub fn quiet<F: Fmt>(v: u128) -> u128 {
    v | quiet_bit::<F>()
}

/// The QNaN indefinite: sign 1, exponent all ones, only the quiet (and,
/// for x87, the integer) bit set.
pub fn indefinite<F: Fmt>() -> u128 {
    let int = if F::EXPLICIT { 1u128 << 63 } else { 0 };
    sign_bit::<F>() | ((1u128 << F::EXP) - 1) << F::FRAC | quiet_bit::<F>() | int
}

/// A signed zero of format `F`.
pub fn zero<F: Fmt>(negative: bool) -> u128 {
    if negative {
        sign_bit::<F>()
    } else {
        0
    }
}

/// The apfloat value of bits `v`.
pub fn val<F: Fmt>(v: u128) -> F {
    F::from_bits(v)
}

/// The bits of an apfloat value (x87: the integer bit set as hardware
/// stores it).
pub fn bits<F: Fmt>(f: F) -> u128 {
    f.to_bits() & ((1u128 << F::WIDTH) - 1)
}

/// Whether the exact value `q` is tiny after rounding to `F`'s precision
/// with an unbounded exponent (IEEE 754 "tininess after rounding", which
/// x86 uses): a value just below the smallest normal that rounds up to it
/// in the bounded format is still tiny. `q` is scaled into `F`'s normal
/// range first (exactly: a power of two), so the rounding sees the full
/// precision.
pub fn tiny_unbounded<F: Fmt + FloatConvert<Quad>>(q: Quad, round: Round) -> bool
where
    Quad: FloatConvert<F>,
{
    if q.is_zero() || !q.is_finite() {
        return false;
    }
    let scale = F::MAX_EXP / 2;
    let min_normal = Quad::from_u128(1).value.scalbn(F::MIN_EXP);
    if q.abs() >= min_normal {
        return false;
    }
    let mut loses = false;
    let scaled: F = q.scalbn(scale).convert_r(round, &mut loses).value;
    let back: Quad = scaled.convert(&mut loses).value;
    back.abs() < min_normal.scalbn(scale)
}

/// Whether a finite result is tiny (nonzero with a zero exponent field).
pub fn is_tiny<F: Fmt>(v: u128) -> bool {
    is_denormal::<F>(v)
}

/// The integer square root digits of `m << shift`: (root, inexact).
fn isqrt_shifted(m: u128, shift: u32) -> (u128, bool) {
    let len = 128 - m.leading_zeros() + shift;
    let pairs = len.div_ceil(2);
    let bit = |j: u32| -> u128 {
        if j >= shift {
            (m >> (j - shift)) & 1
        } else {
            0
        }
    };
    let (mut rem, mut root) = (0u128, 0u128);
    for i in (0..pairs).rev() {
        rem = (rem << 2) | (bit(2 * i + 1) << 1) | bit(2 * i);
        let trial = (root << 2) | 1;
        if rem >= trial {
            rem -= trial;
            root = (root << 1) | 1;
        } else {
            root <<= 1;
        }
    }
    (root, rem != 0)
}

/// The correctly rounded square root of a positive finite nonzero `x`
/// (callers handle signs, zeros, infinities and NaNs).
pub fn sqrt_positive<F: Fmt>(x: u128, round: Round) -> StatusAnd<F> {
    let exp = exp_field::<F>(x) as i64;
    let frac = frac_field::<F>(x);
    let bias = (1i64 << (F::EXP - 1)) - 1;
    // x = sig * 2^e with sig an integer.
    let (mut sig, mut e) = if F::EXPLICIT {
        (frac, exp.max(1) - bias - 63)
    } else if exp == 0 {
        (frac, 1 - bias - i64::from(F::FRAC))
    } else {
        (frac | 1u128 << F::FRAC, exp - bias - i64::from(F::FRAC))
    };
    if e & 1 != 0 {
        sig <<= 1;
        e -= 1;
    }
    // A root of at least precision + 2 bits, then a sticky bit.
    let want = 2 * (F::PRECISION as u32 + 2);
    let have = 128 - sig.leading_zeros();
    let mut shift = want.saturating_sub(have) + 1;
    shift += shift & 1;
    let (root, inexact) = isqrt_shifted(sig, shift);
    let r = (root << 1) | u128::from(inexact);
    let scale = (e - i64::from(shift)) / 2 - 1;
    let q = F::from_u128_r(r, round);
    // The root of a finite value is always in the normal range, so the
    // power-of-two scaling is exact.
    let value = q.value.scalbn_r(scale as rustc_apfloat::ExpInt, round);
    let status = if q.status.contains(Status::INEXACT) {
        Status::INEXACT
    } else {
        Status::OK
    };
    StatusAnd { status, value }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn square_roots_are_correctly_rounded_in_every_mode() {
        let two = 2.0f64.to_bits() as u128;
        let r = sqrt_positive::<Double>(two, Round::NearestTiesToEven);
        assert_eq!(bits(r.value) as u64, 2f64.sqrt().to_bits());
        assert!(r.status.contains(Status::INEXACT));
        // The nearest double to sqrt(2) is above it, so rounding down
        // gives the one below and rounding up the nearest.
        let down = sqrt_positive::<Double>(two, Round::TowardZero);
        assert_eq!(bits(down.value) as u64, 2f64.sqrt().to_bits() - 1);
        let up = sqrt_positive::<Double>(two, Round::TowardPositive);
        assert_eq!(bits(up.value) as u64, 2f64.sqrt().to_bits());
        let nine = sqrt_positive::<Single>(9.0f32.to_bits() as u128, Round::TowardZero);
        assert_eq!(
            (bits(nine.value) as u32, nine.status),
            (3.0f32.to_bits(), Status::OK)
        );
        let tiny = sqrt_positive::<Double>(1, Round::NearestTiesToEven);
        assert_eq!(bits(tiny.value) as u64, f64::from_bits(1).sqrt().to_bits());
        // x87: sqrt(4) = 2 exactly, with the explicit integer bit.
        let four = 0x4001u128 << 64 | 1u128 << 63;
        let r = sqrt_positive::<X87DoubleExtended>(four, Round::NearestTiesToEven);
        assert_eq!(bits(r.value), 0x4000u128 << 64 | 1u128 << 63);
    }

    #[test]
    fn the_indefinite_nan_has_the_sign_set() {
        assert_eq!(indefinite::<Single>(), 0xffc0_0000);
        assert_eq!(indefinite::<Double>(), 0xfff8_0000_0000_0000);
        assert_eq!(
            indefinite::<X87DoubleExtended>(),
            0xffff_c000_0000_0000_0000
        );
    }
}
