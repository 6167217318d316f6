//! The x87 register stack and its data transfers (SDM Vol. 1 §8.1-8.5,
//! Vol. 2 pages): FLD/FST/FSTP (m32/m64/m80/ST(i)), FILD/FIST/FISTP
//! (m16/m32/m64), FISTTP, FBLD/FBSTP, the constants FLD1/FLDZ/FLDPI/
//! FLDL2E/FLDL2T/FLDLG2/FLDLN2, FXCH, FCMOVcc, FCHS, FABS, FXAM.
//!
//! Stack faults (SDM §8.5.1.1): pushing onto a full register or reading
//! an empty one is an invalid operation with FSW.SF, C1 = 1 for overflow
//! and 0 for underflow; masked, the QNaN indefinite is used. Unmasked
//! exceptions leave the stack unchanged and set FSW.ES for the next
//! waiting instruction's #MF. FIP/FCS/FDP/FDS record the last x87
//! instruction and operand; FOP is not tracked (it reads as 0 unless
//! loaded by FXRSTOR/FLDENV/FRSTOR).

use iced_x86::{Instruction, Mnemonic, OpKind};
use rustc_apfloat::ieee::{Double, Single, X87DoubleExtended};
use rustc_apfloat::{Float, FloatConvert, Round, Status, StatusAnd};

use super::control::st_index;
use super::float::{self, exc, Fmt};
use super::{check_x87, fsw, Tag};
use crate::exec::operand::{memory_operand, seg_index};
use crate::exec::HandlerEntry;
use crate::exec::LinkEffect::KeepsLinks;
use crate::fault::Fault;
use crate::flags::{CF, PF, ZF};
use crate::state::seg;
use crate::Cpu;

/// The x87 double-extended format.
pub type X = X87DoubleExtended;

/// The 80 bits of a double-extended value.
pub const MASK80: u128 = (1u128 << 80) - 1;

/// The tag a value gets when loaded (SDM Vol. 1 §8.1.7).
pub fn tag_of(v: u128) -> Tag {
    let exp = (v >> 64) as u16 & 0x7fff;
    let sig = v as u64;
    if exp == 0 {
        if sig == 0 {
            Tag::Zero
        } else {
            Tag::Special
        }
    } else if exp == 0x7fff || sig >> 63 == 0 {
        Tag::Special
    } else {
        Tag::Valid
    }
}

/// Whether `v` is an unsupported encoding: a nonzero exponent with the
/// integer bit clear (unnormals, pseudo-NaNs, pseudo-infinities).
pub fn unsupported(v: u128) -> bool {
    (v >> 64) as u16 & 0x7fff != 0 && (v as u64) >> 63 == 0
}

/// The handler for `insn`, if this module implements it, with its effect
/// on block links.
pub fn lookup(insn: &Instruction) -> Option<HandlerEntry> {
    use Mnemonic as M;
    Some(match insn.mnemonic() {
        M::Fld | M::Fild | M::Fbld => (fld, KeepsLinks),
        M::Fld1 | M::Fldz | M::Fldpi | M::Fldl2e | M::Fldl2t | M::Fldlg2 | M::Fldln2 => {
            (fld_const, KeepsLinks)
        }
        M::Fst | M::Fstp | M::Fstpnce => (fst, KeepsLinks),
        M::Fist | M::Fistp | M::Fisttp => (fist, KeepsLinks),
        M::Fbstp => (fbstp, KeepsLinks),
        M::Fxch => (fxch, KeepsLinks),
        M::Fcmovb
        | M::Fcmove
        | M::Fcmovbe
        | M::Fcmovu
        | M::Fcmovnb
        | M::Fcmovne
        | M::Fcmovnbe
        | M::Fcmovnu => (fcmov, KeepsLinks),
        M::Fchs | M::Fabs => (fchs_fabs, KeepsLinks),
        M::Fxam => (fxam, KeepsLinks),
        _ => return None,
    })
}

/// The rounding mode of FCW.RC.
pub fn rc(cpu: &Cpu) -> Round {
    float::round_of(u32::from(cpu.s.fpu.fcw >> 10))
}

/// Records exception `flags` in FSW; returns whether one is unmasked.
pub fn raise(cpu: &mut Cpu, flags: u32) -> bool {
    let f = &mut cpu.s.fpu;
    f.fsw |= flags as u16 & fsw::EXCEPTIONS;
    f.update_summary();
    flags as u16 & !f.fcw & fsw::EXCEPTIONS != 0
}

/// Sets C0-C3 (`c` holds them at their FSW positions).
pub fn set_cc(cpu: &mut Cpu, c: u16) {
    let all = fsw::C0 | fsw::C1 | fsw::C2 | fsw::C3;
    cpu.s.fpu.fsw = (cpu.s.fpu.fsw & !all) | (c & all);
}

/// Records FIP/FCS (and FDP/FDS for a memory operand) for `insn`.
pub fn note(cpu: &mut Cpu, insn: &Instruction) {
    cpu.s.fpu.fip = cpu.s.rip;
    cpu.s.fpu.fcs = cpu.s.seg[seg::CS].selector;
    if (0..insn.op_count()).any(|n| insn.op_kind(n) == OpKind::Memory) {
        let (s, off) = memory_operand(cpu, insn);
        cpu.s.fpu.fdp = off;
        cpu.s.fpu.fds = cpu.s.seg[seg_index(insn.memory_segment())].selector;
        let _ = s;
    }
}

/// Stack underflow on reading an empty register: IE|SF, C1 = 0. Returns
/// whether the exception is masked (the caller then uses the indefinite).
pub fn underflow(cpu: &mut Cpu) -> bool {
    cpu.s.fpu.fsw &= !fsw::C1;
    cpu.s.fpu.fsw |= fsw::SF;
    !raise(cpu, exc::IE)
}

/// Pushes `v`; on overflow (ST(7) in use) IE|SF with C1 = 1, and when
/// masked the QNaN indefinite is pushed instead.
pub fn push(cpu: &mut Cpu, v: u128) {
    let f = &mut cpu.s.fpu;
    let new_top = (f.top() + 7) & 7;
    if f.tag(new_top) != Tag::Empty {
        f.fsw |= fsw::SF | fsw::C1;
        if raise(cpu, exc::IE) {
            return;
        }
        let f = &mut cpu.s.fpu;
        f.set_top(new_top);
        f.set_st(0, float::indefinite::<X>());
        return;
    }
    f.set_top(new_top);
    f.set_st(0, v);
}

/// Pops the stack: ST(0) becomes empty, TOP + 1.
pub fn pop(cpu: &mut Cpu) {
    let f = &mut cpu.s.fpu;
    let p = f.top();
    f.set_tag(p, Tag::Empty);
    f.set_top(p + 1);
}

/// Converts a single/double to extended: exact; SNaN quieted with IE,
/// denormal with DE. Returns the value and the flags.
pub fn widen<F: Fmt + FloatConvert<X>>(v: u128) -> (u128, u32) {
    if float::is_nan::<F>(v) {
        let flags = if float::is_snan::<F>(v) { exc::IE } else { 0 };
        let sign = if v & float::sign_bit::<F>() != 0 {
            1u128 << 79
        } else {
            0
        };
        let payload = (v & (float::quiet_bit::<F>() * 2 - 1)) << (63 - F::FRAC);
        return (sign | 0x7fffu128 << 64 | 3u128 << 62 | payload, flags);
    }
    let flags = if float::is_denormal::<F>(v) {
        exc::DE
    } else {
        0
    };
    let mut loses = false;
    let r: StatusAnd<X> = float::val::<F>(v).convert_r(Round::NearestTiesToEven, &mut loses);
    (float::bits(r.value), flags)
}

/// Converts extended to single/double with rounding `round`: returns the
/// bits, the exception flags and whether it rounded away from zero.
pub fn narrow<F: Fmt + FloatConvert<X>>(v: u128, round: Round) -> (u128, u32, bool)
where
    X: FloatConvert<F>,
{
    if unsupported(v) {
        return (float::indefinite::<F>(), exc::IE, false);
    }
    if float::is_nan::<X>(v) {
        let flags = if float::is_snan::<X>(v) { exc::IE } else { 0 };
        let sign = if v >> 79 != 0 {
            float::sign_bit::<F>()
        } else {
            0
        };
        let payload = (v & ((1u128 << 63) - 1)) >> (63 - F::FRAC);
        let r = float::quiet::<F>(sign | float::bits(F::INFINITY) | payload);
        return (r, flags, false);
    }
    let mut loses = false;
    let x = float::val::<X>(v);
    let conv = |round| -> StatusAnd<F> {
        let mut loses = false;
        x.convert_r(round, &mut loses)
    };
    let r = float::with_overflow(conv(round), || float::value_beyond::<X, F>(x));
    // FST/FSTP report no denormal-operand exception (SDM Vol. 2A "FST").
    let flags = float::flags_of(r.status);
    let up = r.status.contains(Status::INEXACT) && {
        let back: StatusAnd<X> = r.value.convert_r(Round::NearestTiesToEven, &mut loses);
        back.value.abs() > x.abs()
    };
    (float::bits(r.value), flags, up)
}

fn fld(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    check_x87(cpu)?;
    let m = insn.mnemonic();
    let (v, flags) = if insn.op_kind(0) == OpKind::Register {
        let i = st_index(insn, 0);
        if cpu.s.fpu.is_empty(i) {
            note(cpu, insn);
            if underflow(cpu) {
                push(cpu, float::indefinite::<X>());
            }
            return Ok(());
        }
        (cpu.s.fpu.st(i), 0)
    } else {
        let (s, off) = memory_operand(cpu, insn);
        let size = insn.memory_size().size();
        super::access::check_far_end(cpu, s, off, size)?;
        let raw = if size <= 8 {
            u128::from(cpu.read(s, off, size as u8)?)
        } else {
            let mut b = [0u8; 16];
            super::access::read_block(cpu, s, off, &mut b[..10], 1)?;
            u128::from_le_bytes(b)
        };
        match (m, size) {
            (Mnemonic::Fild, _) => {
                let i = match size {
                    2 => i64::from(raw as u16 as i16),
                    4 => i64::from(raw as u32 as i32),
                    _ => raw as u64 as i64,
                };
                (
                    float::bits(X::from_i128_r(i128::from(i), Round::TowardZero).value),
                    0,
                )
            }
            (Mnemonic::Fbld, _) => (from_bcd(raw), 0),
            (_, 4) => widen::<Single>(raw),
            (_, 8) => widen::<Double>(raw),
            _ => (raw, 0),
        }
    };
    note(cpu, insn);
    // A stack overflow (invalid) hides a denormal source.
    let flags = if cpu.s.fpu.is_empty(7) {
        flags
    } else {
        flags & !exc::DE
    };
    // Only an unmasked invalid operation stops the load; a denormal
    // operand is flagged (and reported by #MF later) but still loaded.
    if raise(cpu, flags) && flags & exc::IE != 0 {
        return Ok(());
    }
    cpu.s.fpu.fsw &= !fsw::C1;
    push(cpu, v);
    Ok(())
}

/// Packed BCD (18 digits and a sign byte) to extended.
fn from_bcd(raw: u128) -> u128 {
    let mut n: u64 = 0;
    for i in (0..9).rev() {
        let b = (raw >> (8 * i)) as u8;
        n = n * 100 + u64::from(b >> 4 & 0xf) * 10 + u64::from(b & 0xf);
    }
    let v = float::bits(X::from_u128_r(u128::from(n), Round::TowardZero).value);
    if (raw >> 79) & 1 != 0 {
        v | 1u128 << 79
    } else {
        v
    }
}

fn fld_const(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    check_x87(cpu)?;
    // (exponent, significand rounded to nearest, nearest rounded up).
    let (exp, sig, nearest_is_up): (u16, u64, bool) = match insn.mnemonic() {
        Mnemonic::Fld1 => (0x3fff, 1 << 63, false),
        Mnemonic::Fldz => (0, 0, false),
        Mnemonic::Fldpi => (0x4000, 0xc90f_daa2_2168_c235, true),
        Mnemonic::Fldl2e => (0x3fff, 0xb8aa_3b29_5c17_f0bc, true),
        Mnemonic::Fldl2t => (0x4000, 0xd49a_784b_cd1b_8afe, false),
        Mnemonic::Fldlg2 => (0x3ffd, 0x9a20_9a84_fbcf_f799, true),
        _ => (0x3ffe, 0xb172_17f7_d1cf_79ac, true),
    };
    let inexact = !matches!(insn.mnemonic(), Mnemonic::Fld1 | Mnemonic::Fldz);
    let sig = match rc(cpu) {
        Round::TowardNegative | Round::TowardZero if inexact && nearest_is_up => sig - 1,
        Round::TowardPositive if inexact && !nearest_is_up => sig + 1,
        _ => sig,
    };
    note(cpu, insn);
    cpu.s.fpu.fsw &= !fsw::C1;
    push(cpu, u128::from(exp) << 64 | u128::from(sig));
    Ok(())
}

fn fst(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    check_x87(cpu)?;
    let popping = insn.mnemonic() != Mnemonic::Fst;
    let empty = cpu.s.fpu.is_empty(0);
    let v = cpu.s.fpu.st(0);
    if insn.op_kind(0) == OpKind::Register {
        note(cpu, insn);
        let i = st_index(insn, 0);
        let v = if empty {
            if !underflow(cpu) {
                return Ok(());
            }
            float::indefinite::<X>()
        } else {
            v
        };
        cpu.s.fpu.fsw &= !fsw::C1;
        cpu.s.fpu.set_st(i, v);
        if popping {
            pop(cpu);
        }
        return Ok(());
    }
    let (s, off) = memory_operand(cpu, insn);
    let size = insn.memory_size().size();
    let round = rc(cpu);
    let (out, flags, up) = if empty {
        let ind = match size {
            4 => float::indefinite::<Single>(),
            8 => float::indefinite::<Double>(),
            _ => float::indefinite::<X>(),
        };
        (ind, exc::IE, false)
    } else {
        match size {
            4 => narrow::<Single>(v, round),
            8 => narrow::<Double>(v, round),
            _ => (v, 0, false),
        }
    };
    // Check the destination before any state changes.
    super::access::probe_write(cpu, s, off, size as u64)?;
    note(cpu, insn);
    if empty {
        cpu.s.fpu.fsw |= fsw::SF;
    }
    let unmasked_pre = flags & (exc::IE | exc::DE) & !u32::from(cpu.s.fpu.fcw) != 0;
    let any_unmasked = raise(cpu, flags);
    cpu.s.fpu.fsw = (cpu.s.fpu.fsw & !fsw::C1) | if up { fsw::C1 } else { 0 };
    if unmasked_pre || any_unmasked && flags & (exc::OE | exc::UE) != 0 {
        return Ok(());
    }
    if size <= 8 {
        cpu.write(s, off, size as u8, out as u64)?;
    } else {
        super::access::write_block(cpu, s, off, &out.to_le_bytes()[..10], 1)?;
    }
    if popping {
        pop(cpu);
    }
    Ok(())
}

/// Extended to a signed integer of `bits` bits: the value, flags and
/// whether it rounded away from zero.
pub fn to_integer(v: u128, bits: usize, round: Round) -> (i64, u32, bool) {
    let indefinite = i64::MIN >> (64 - bits);
    if unsupported(v) || float::is_nan::<X>(v) {
        return (indefinite, exc::IE, false);
    }
    let x = float::val::<X>(v);
    let mut exact = false;
    let r = x.to_i128_r(bits, round, &mut exact);
    if r.status.contains(Status::INVALID_OP) {
        return (indefinite, exc::IE, false);
    }
    // FIST/FISTP/FISTTP/FBSTP report no denormal-operand exception.
    let flags = float::flags_of(r.status);
    let up = !exact && {
        let back = X::from_i128_r(r.value, Round::NearestTiesToEven).value;
        back.abs() > x.abs()
    };
    (r.value as i64, flags, up)
}

fn fist(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    check_x87(cpu)?;
    let m = insn.mnemonic();
    let (s, off) = memory_operand(cpu, insn);
    let size = insn.memory_size().size();
    let round = if m == Mnemonic::Fisttp {
        Round::TowardZero
    } else {
        rc(cpu)
    };
    let empty = cpu.s.fpu.is_empty(0);
    let (i, flags, up) = if empty {
        (i64::MIN >> (64 - 8 * size), exc::IE, false)
    } else {
        to_integer(cpu.s.fpu.st(0), 8 * size, round)
    };
    super::access::probe_write(cpu, s, off, size as u64)?;
    note(cpu, insn);
    if empty {
        cpu.s.fpu.fsw |= fsw::SF;
    }
    let unmasked_ie = flags & exc::IE != 0 && raise(cpu, exc::IE);
    if flags & exc::IE == 0 {
        raise(cpu, flags);
    }
    cpu.s.fpu.fsw = (cpu.s.fpu.fsw & !fsw::C1) | if up { fsw::C1 } else { 0 };
    if unmasked_ie {
        return Ok(());
    }
    cpu.write(s, off, size as u8, i as u64)?;
    if m != Mnemonic::Fist {
        pop(cpu);
    }
    Ok(())
}

/// FBSTP m80: ST(0) rounded to an integer, stored as 18 BCD digits.
fn fbstp(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    check_x87(cpu)?;
    let (s, off) = memory_operand(cpu, insn);
    let v = cpu.s.fpu.st(0);
    let empty = cpu.s.fpu.is_empty(0);
    let (i, mut flags, up) = to_integer(v, 64, rc(cpu));
    let limit = 999_999_999_999_999_999i64;
    if empty || flags & exc::IE != 0 || !(-limit..=limit).contains(&i) {
        flags = exc::IE;
    }
    super::access::probe_write(cpu, s, off, 10)?;
    note(cpu, insn);
    cpu.s.fpu.fsw &= !fsw::C1;
    if empty {
        cpu.s.fpu.fsw |= fsw::SF;
    } else if up && flags & exc::IE == 0 {
        cpu.s.fpu.fsw |= fsw::C1;
    }
    let out: u128 = if flags & exc::IE != 0 {
        // The packed BCD indefinite.
        0xffff_c000_0000_0000_0000
    } else {
        let mut n = i.unsigned_abs();
        let mut r = 0u128;
        for k in 0..9 {
            let lo = n % 10;
            let hi = (n / 10) % 10;
            n /= 100;
            r |= u128::from(hi << 4 | lo) << (8 * k);
        }
        if v >> 79 != 0 {
            r |= 0x80u128 << 72;
        }
        r
    };
    // Only an unmasked invalid operation prevents the store; an
    // unmasked precision exception stores and pops, then #MF follows.
    if raise(cpu, flags) && flags & exc::IE != 0 {
        return Ok(());
    }
    super::access::write_block(cpu, s, off, &out.to_le_bytes()[..10], 1)?;
    pop(cpu);
    Ok(())
}

fn fxch(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    check_x87(cpu)?;
    note(cpu, insn);
    let i = st_index(insn, 1).max(st_index(insn, 0));
    let (e0, ei) = (cpu.s.fpu.is_empty(0), cpu.s.fpu.is_empty(i));
    if e0 || ei {
        if !underflow(cpu) {
            return Ok(());
        }
        let ind = float::indefinite::<X>();
        if e0 {
            cpu.s.fpu.set_st(0, ind);
        }
        if ei {
            cpu.s.fpu.set_st(i, ind);
        }
    }
    let (a, b) = (cpu.s.fpu.st(0), cpu.s.fpu.st(i));
    cpu.s.fpu.set_st(0, b);
    cpu.s.fpu.set_st(i, a);
    cpu.s.fpu.fsw &= !fsw::C1;
    Ok(())
}

fn fcmov(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    check_x87(cpu)?;
    note(cpu, insn);
    let f = cpu.s.flags;
    let (cf, zf, pf) = (f.cf(), f.zf(), f.pf());
    let _ = (CF, ZF, PF);
    let take = match insn.mnemonic() {
        Mnemonic::Fcmovb => cf,
        Mnemonic::Fcmove => zf,
        Mnemonic::Fcmovbe => cf || zf,
        Mnemonic::Fcmovu => pf,
        Mnemonic::Fcmovnb => !cf,
        Mnemonic::Fcmovne => !zf,
        Mnemonic::Fcmovnbe => !cf && !zf,
        _ => !pf,
    };
    let i = st_index(insn, 1);
    if cpu.s.fpu.is_empty(0) || cpu.s.fpu.is_empty(i) {
        if underflow(cpu) {
            cpu.s.fpu.set_st(0, float::indefinite::<X>());
        }
        return Ok(());
    }
    // C1 is only defined (cleared) on stack underflow.
    if take {
        let v = cpu.s.fpu.st(i);
        cpu.s.fpu.set_st(0, v);
    }
    Ok(())
}

fn fchs_fabs(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    check_x87(cpu)?;
    note(cpu, insn);
    if cpu.s.fpu.is_empty(0) {
        if underflow(cpu) {
            cpu.s.fpu.set_st(0, float::indefinite::<X>());
        }
        return Ok(());
    }
    let v = cpu.s.fpu.st(0);
    let r = if insn.mnemonic() == Mnemonic::Fchs {
        v ^ 1u128 << 79
    } else {
        v & !(1u128 << 79)
    };
    cpu.s.fpu.set_st(0, r);
    cpu.s.fpu.fsw &= !fsw::C1;
    Ok(())
}

/// FXAM: the class of ST(0) in C3, C2, C0, its sign in C1.
fn fxam(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    check_x87(cpu)?;
    note(cpu, insn);
    let v = cpu.s.fpu.st(0);
    let sign = if v >> 79 != 0 { fsw::C1 } else { 0 };
    let exp = (v >> 64) as u16 & 0x7fff;
    let class = if cpu.s.fpu.is_empty(0) {
        fsw::C3 | fsw::C0
    } else if unsupported(v) {
        0
    } else if exp == 0x7fff {
        if (v as u64) << 1 == 0 {
            fsw::C2 | fsw::C0
        } else {
            fsw::C0
        }
    } else if exp == 0 {
        if v as u64 == 0 {
            fsw::C3
        } else {
            fsw::C3 | fsw::C2
        }
    } else {
        fsw::C2
    };
    set_cc(cpu, class | sign);
    Ok(())
}
