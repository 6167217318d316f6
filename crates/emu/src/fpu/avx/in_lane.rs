//! The VEX forms of SSE-SSE4.1 operations that work within 128-bit
//! lanes (SDM Vol. 1 §14.4, §14.7; Vol. 2 "VEX.128/VEX.256 encoded
//! version" paragraphs of each SSE instruction page).
//!
//! `VOP ymm1, ymm2, ymm3/m256` is the legacy `OP xmm, xmm/m128` done on
//! each 128-bit half with `ymm2`'s half as the destination's old value
//! and `ymm3`'s as the source; the VEX.128 form is the low half, with
//! bits 255:128 of the destination zeroed. The per-chunk functions are
//! the legacy ones ([`sse_int::compute`], [`ssse3::compute`],
//! [`sse41::compute`], [`sse_float::arith_chunk`],
//! [`sse3::horizontal_chunk`], [`sse41_float::round_chunk`], the AES-NI
//! and PCLMULQDQ ones ([`aes::compute`], [`clmul::compute`]),
//! [`sse41_float::dot`]), so the two encodings cannot disagree.
//!
//! What differs from lane to lane or from the legacy form:
//! * the two-operand forms with an immediate and no VEX.vvvv
//!   (`VPSHUFD ymm1, ymm2/m256, imm8`) take their one source as both
//!   inputs, and the immediate shifts (`VPSLLW ymm1, ymm2, imm8`, where
//!   `ymm1` is in VEX.vvvv) shift `ymm2` by the immediate;
//! * shifts by an XMM count use the same 64-bit count in both halves;
//! * the immediates of VBLENDPS (4 bits per half), VBLENDPD and VSHUFPD
//!   (2 bits per half) and VMPSADBW (3 bits per half) select per half;
//! * VCMPPS/PD/SS/SD take all 32 predicates (legacy CMPPS: 8);
//! * MXCSR flags of both halves are gathered before any is committed, so
//!   an unmasked exception in either half leaves the destination alone.

use std::collections::HashMap;
use std::sync::OnceLock;

use iced_x86::{Instruction, Mnemonic, OpKind};
use rustc_apfloat::ieee::{Double, Single};

use super::check_avx;
use super::operands::{is_256, read, write, Ymm};
use crate::exec::HandlerEntry;
use crate::exec::LinkEffect::KeepsLinks;
use crate::fault::Fault;
use crate::fpu::sse_float::{self, Ctx};
use crate::fpu::{aes, clmul, sse3, sse41, sse41_float, sse_int, ssse3};
use crate::Cpu;

/// The legacy mnemonic whose operation VEX mnemonic `m` performs
/// (`Vpaddb` → `Paddb`), found by name: iced-x86 names every VEX form
/// `V` + the legacy name. A table indexed by mnemonic, built once.
pub fn legacy(m: Mnemonic) -> Option<Mnemonic> {
    static TABLE: OnceLock<Vec<Option<Mnemonic>>> = OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let by_name: HashMap<String, Mnemonic> =
            Mnemonic::values().map(|m| (format!("{m:?}"), m)).collect();
        Mnemonic::values()
            .map(|v| {
                let name = format!("{v:?}");
                let rest = name.strip_prefix('V')?;
                let mut l = rest.chars();
                let first = l.next()?.to_ascii_uppercase();
                by_name.get(&format!("{first}{}", l.as_str())).copied()
            })
            .collect()
    });
    table.get(m as usize).copied().flatten()
}

/// How a legacy operation computes a 128-bit chunk.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Family {
    /// Integer, logical and shuffle operations: no MXCSR.
    Integer,
    /// SSE/SSE2 floating-point arithmetic and compares.
    Float,
    /// SSE3 ADDSUB/HADD/HSUB.
    Horizontal,
    /// SSE3 MOVSLDUP/MOVSHDUP/MOVDDUP.
    Duplicate,
    /// SSE4.1 ROUND*.
    Round,
    /// SSE4.1 DPPS/DPPD.
    Dot,
}

/// The family of legacy mnemonic `l`, if it is an in-lane operation.
fn family(l: Mnemonic) -> Option<Family> {
    use Mnemonic as M;
    if sse41::compute(l, 0, 0, 0).is_some() {
        // The widening moves are not in-lane: `super::moves` has them.
        return (!is_widening(l)).then_some(Family::Integer);
    }
    if sse_int::compute(l, 0, 0, 0, 128).is_some() && l != M::Pshufw {
        return Some(Family::Integer);
    }
    if ssse3::compute(l, 0, 0, 0, 128).is_some()
        || aes::compute(l, 0, 0, 0).is_some()
        || clmul::compute(l, 0, 0, 0).is_some()
    {
        return Some(Family::Integer);
    }
    let mut ctx = Ctx::new(crate::fpu::mxcsr::RESET);
    if sse_float::arith_chunk(l, 0, 0, 0, &mut ctx).is_some() {
        return Some(Family::Float);
    }
    if sse3::horizontal_chunk(l, 0, 0, &mut ctx).is_some() {
        return Some(Family::Horizontal);
    }
    Some(match l {
        M::Movsldup | M::Movshdup | M::Movddup => Family::Duplicate,
        M::Roundps | M::Roundpd | M::Roundss | M::Roundsd => Family::Round,
        M::Dpps | M::Dppd => Family::Dot,
        _ => return None,
    })
}

/// Whether `l` is one of the PMOVSX/PMOVZX widening moves.
pub fn is_widening(l: Mnemonic) -> bool {
    sse41::widening(l).is_some()
}

/// The handler for `insn`, if it is the VEX form of an in-lane operation
/// or of a scalar compare into RFLAGS: one handler per family, chosen
/// here once per decoded instruction.
pub fn lookup(insn: &Instruction) -> Option<HandlerEntry> {
    use Mnemonic as M;
    let l = legacy(insn.mnemonic())?;
    if matches!(l, M::Comiss | M::Ucomiss | M::Comisd | M::Ucomisd) {
        return Some((compare_scalar, KeepsLinks));
    }
    let h: fn(&mut Cpu, &Instruction) -> Result<(), Fault> = match family(l)? {
        Family::Integer => integer,
        Family::Float => float,
        Family::Horizontal => horizontal,
        Family::Duplicate => duplicate,
        Family::Round => round,
        Family::Dot => dot,
    };
    Some((h, KeepsLinks))
}

/// VCOMISS/VUCOMISS/VCOMISD/VUCOMISD: as the legacy forms
/// ([`sse_float::compare_flags`]).
fn compare_scalar(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    check_avx(cpu)?;
    let Some(l) = legacy(insn.mnemonic()) else {
        return Err(Fault::InvalidOpcode);
    };
    let a = read(cpu, insn, 0)?[0];
    let b = read(cpu, insn, 1)?[0];
    let mut ctx = Ctx::new(cpu.s.fpu.mxcsr);
    let f = sse_float::compare_flags(l, a, b, &mut ctx).unwrap_or(0);
    ctx.finish(cpu)?;
    cpu.s.flags.set_arith(crate::flags::ARITH, f);
    Ok(())
}

/// Whether legacy `l` with an immediate count is a shift by that count.
fn is_immediate_shift(l: Mnemonic) -> bool {
    use Mnemonic as M;
    matches!(
        l,
        M::Psllw
            | M::Pslld
            | M::Psllq
            | M::Psrlw
            | M::Psrld
            | M::Psrlq
            | M::Psraw
            | M::Psrad
            | M::Pslldq
            | M::Psrldq
    )
}

/// The immediate that half `k` (0 or 1) of legacy operation `l` uses.
fn half_imm(l: Mnemonic, imm: u8, k: u32) -> u8 {
    use Mnemonic as M;
    match l {
        M::Blendps => imm >> (4 * k),
        M::Blendpd | M::Shufpd => imm >> (2 * k),
        M::Mpsadbw => imm >> (3 * k),
        _ => imm,
    }
}

/// The inputs of an in-lane instruction: (first source, second source,
/// immediate).
fn inputs(cpu: &mut Cpu, insn: &Instruction, l: Mnemonic) -> Result<(Ymm, Ymm, u8), Fault> {
    let n = insn.op_count();
    let last_is_imm = insn.op_kind(n - 1) == OpKind::Immediate8;
    let imm = if last_is_imm { insn.immediate8() } else { 0 };
    let sources = if last_is_imm { n - 2 } else { n - 1 };
    Ok(if sources >= 2 {
        let a = read(cpu, insn, 1)?;
        let mut b = read(cpu, insn, 2)?;
        // A 128-bit count (VPSLLW ymm, ymm, xmm/m128) shifts both halves.
        let count_128 = insn.op_kind(2) == OpKind::Memory && insn.memory_size().size() == 16
            || insn.op_kind(2) == OpKind::Register && insn.op_register(2).is_xmm();
        if is_256(insn) && count_128 {
            b[1] = b[0];
        }
        (a, b, imm)
    } else {
        let src = read(cpu, insn, 1)?;
        if last_is_imm && is_immediate_shift(l) {
            (src, [u128::from(imm); 2], imm)
        } else {
            (src, src, imm)
        }
    })
}

/// The legacy operation of an in-lane VEX instruction and, for each
/// 128-bit half it works on, (first source, second source, immediate).
fn halves(cpu: &mut Cpu, insn: &Instruction) -> Result<(Mnemonic, Halves), Fault> {
    check_avx(cpu)?;
    let l = legacy(insn.mnemonic()).ok_or(Fault::InvalidOpcode)?;
    let (a, b, imm) = inputs(cpu, insn, l)?;
    let count = if is_256(insn) { 2 } else { 1 };
    let half = |k: usize| (a[k], b[k], half_imm(l, imm, k as u32));
    Ok((l, ([half(0), half(1)], count)))
}

/// The inputs of each half ([`halves`]) and how many halves there are.
type Halves = ([(u128, u128, u8); 2], usize);

/// Runs `chunk` on each 128-bit half of an in-lane VEX instruction (with
/// that half's immediate), then writes the destination.
fn per_half(
    cpu: &mut Cpu,
    insn: &Instruction,
    mut chunk: impl FnMut(&mut Cpu, Mnemonic, u128, u128, u8) -> Result<u128, Fault>,
) -> Result<(), Fault> {
    let (l, (inputs, count)) = halves(cpu, insn)?;
    let mut r: Ymm = [0; 2];
    for (k, &(x, y, i)) in inputs.iter().take(count).enumerate() {
        r[k] = chunk(cpu, l, x, y, i)?;
    }
    write(cpu, insn, 0, r)
}

/// The same, for operations that set MXCSR flags: the flags of both
/// halves are gathered in one context and committed (or faulted on)
/// before the destination is written.
fn per_half_float(
    cpu: &mut Cpu,
    insn: &Instruction,
    chunk: impl Fn(Mnemonic, u128, u128, u8, &mut Ctx) -> Option<u128>,
) -> Result<(), Fault> {
    let (l, (inputs, count)) = halves(cpu, insn)?;
    let mut ctx = Ctx::new(cpu.s.fpu.mxcsr);
    let mut r: Ymm = [0; 2];
    for (k, &(x, y, i)) in inputs.iter().take(count).enumerate() {
        r[k] = chunk(l, x, y, i, &mut ctx).unwrap_or(x);
    }
    ctx.finish(cpu)?;
    write(cpu, insn, 0, r)
}

/// Integer, logical and shuffle operations.
fn integer(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    per_half(cpu, insn, |_, l, x, y, i| {
        Ok(sse41::compute(l, x, y, i)
            .or_else(|| sse_int::compute(l, x, y, i, 128))
            .or_else(|| ssse3::compute(l, x, y, i, 128))
            .or_else(|| aes::compute(l, x, y, i))
            .or_else(|| clmul::compute(l, x, y, i))
            .unwrap_or(x))
    })
}

/// SSE/SSE2 floating-point arithmetic and compares (all 32 predicates).
fn float(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    per_half_float(cpu, insn, |l, x, y, i, ctx| {
        sse_float::arith_chunk(l, x, y, i & 31, ctx)
    })
}

/// ADDSUB, HADD, HSUB.
fn horizontal(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    per_half_float(cpu, insn, |l, x, y, _, ctx| {
        sse3::horizontal_chunk(l, x, y, ctx)
    })
}

/// ROUND*.
fn round(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    per_half_float(cpu, insn, sse41_float::round_chunk)
}

/// MOVSLDUP, MOVSHDUP, MOVDDUP.
fn duplicate(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    per_half(cpu, insn, |_, l, _, y, _| Ok(sse3::duplicate_chunk(l, y)))
}

/// DPPS/DPPD: each step's flags are committed in turn, as for the legacy
/// forms.
fn dot(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    per_half(cpu, insn, |cpu, l, x, y, i| {
        let mxcsr = cpu.s.fpu.mxcsr;
        let commit = |c: Ctx| c.finish(cpu);
        if l == Mnemonic::Dppd {
            sse41_float::dot::<Double>(x, y, i, mxcsr, commit)
        } else {
            sse41_float::dot::<Single>(x, y, i, mxcsr, commit)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vex_mnemonics_name_their_legacy_operation() {
        assert_eq!(legacy(Mnemonic::Vpaddb), Some(Mnemonic::Paddb));
        assert_eq!(legacy(Mnemonic::Vaddps), Some(Mnemonic::Addps));
        assert_eq!(legacy(Mnemonic::Vpshufb), Some(Mnemonic::Pshufb));
        assert_eq!(legacy(Mnemonic::Vbroadcastss), None);
    }

    #[test]
    fn in_lane_families_cover_the_sse_operations() {
        for m in [
            Mnemonic::Vpaddb,
            Mnemonic::Vmulpd,
            Mnemonic::Vhaddps,
            Mnemonic::Vdpps,
        ] {
            assert!(family(legacy(m).unwrap()).is_some(), "{m:?}");
        }
        assert!(
            family(Mnemonic::Pmovzxbw).is_none(),
            "widening is cross-lane"
        );
    }
}
