//! Templates and initial state for the x87, MMX and SSE classes.
//!
//! Left out of the sequences, with the reason:
//! * RCPPS/RCPSS/RSQRTPS/RSQRTSS and the x87 transcendentals: their
//!   results are implementation-specific approximations (the emu engine
//!   documents its own);
//! * FPREM/FPREM1: the partial-remainder step size is model-specific;
//! * FLDCW/LDMXCSR/FLDENV/FRSTOR/FXRSTOR with random memory: they could
//!   select precision control below 64 bits or unmask overflow/underflow,
//!   which the emu engine does not model (see `alcazar_emu::fpu`);
//! * FNSAVE/FNSTENV/FXSAVE: they store FOP and the last instruction and
//!   data pointers, which the emu engine does not track the same way;
//! * FBLD: invalid BCD digits give undefined results.
//!
//! Initial states keep OM and UM masked in FCW and MXCSR for the same
//! reason and FCW.PC = 11 (extended); everything else is random.

use iced_x86::{Code, Instruction, Mnemonic, Register};

use super::build::{Builder, Fill, MemOpts};
use super::classes::plain;
use crate::rng::Rng;
use crate::state::FpuRegs;

/// XMM0..XMM15.
pub const XMM: [Register; 16] = {
    use Register::*;
    [
        XMM0, XMM1, XMM2, XMM3, XMM4, XMM5, XMM6, XMM7, XMM8, XMM9, XMM10, XMM11, XMM12, XMM13,
        XMM14, XMM15,
    ]
};

/// YMM0..YMM15.
pub const YMM: [Register; 16] = {
    use Register::*;
    [
        YMM0, YMM1, YMM2, YMM3, YMM4, YMM5, YMM6, YMM7, YMM8, YMM9, YMM10, YMM11, YMM12, YMM13,
        YMM14, YMM15,
    ]
};

/// MM0..MM7.
pub const MM: [Register; 8] = {
    use Register::*;
    [MM0, MM1, MM2, MM3, MM4, MM5, MM6, MM7]
};

/// ST0..ST7.
pub const ST: [Register; 8] = {
    use Register::*;
    [ST0, ST1, ST2, ST3, ST4, ST5, ST6, ST7]
};

/// Doubles worth trying: zeros, ones, limits, infinities, NaNs, denormals.
const EDGE_F64: [u64; 14] = [
    0,
    1 << 63,
    0x3ff0_0000_0000_0000,
    0xbff0_0000_0000_0000,
    0x7fef_ffff_ffff_ffff,
    0x0010_0000_0000_0000,
    0x0000_0000_0000_0001,
    0x800f_ffff_ffff_ffff,
    0x7ff0_0000_0000_0000,
    0xfff0_0000_0000_0000,
    0x7ff8_0000_0000_0000,
    0x7ff0_0000_0000_0001,
    0x41e0_0000_0000_0000,
    0x43e0_0000_0000_0000,
];

/// Singles worth trying.
const EDGE_F32: [u32; 12] = [
    0,
    1 << 31,
    0x3f80_0000,
    0xbf80_0000,
    0x7f7f_ffff,
    0x0080_0000,
    0x0000_0001,
    0x7f80_0000,
    0xff80_0000,
    0x7fc0_0000,
    0x7f80_0001,
    0x4f00_0000,
];

/// A random 32-bit lane: often an ordinary float, sometimes an edge.
fn lane32(rng: &mut Rng) -> u32 {
    match rng.below(4) {
        0 => *rng.pick(&EDGE_F32),
        1 => rng.next_u64() as u32,
        _ => {
            // An ordinary float of moderate exponent.
            let exp = 100 + rng.below(56) as u32;
            (rng.next_u64() as u32 & 0x807f_ffff) | exp << 23
        }
    }
}

/// A random 64-bit lane.
fn lane64(rng: &mut Rng) -> u64 {
    match rng.below(5) {
        0 => *rng.pick(&EDGE_F64),
        1 => rng.next_u64(),
        2 => u64::from(lane32(rng)) | u64::from(lane32(rng)) << 32,
        _ => {
            let exp = 1000 + rng.below(48);
            (rng.next_u64() & 0x800f_ffff_ffff_ffff) | exp << 52
        }
    }
}

/// A random x87 register value (never an unsupported encoding).
fn ext80(rng: &mut Rng) -> u128 {
    let sign = u128::from(rng.chance(1, 2)) << 79;
    let sig = rng.next_u64() | 1 << 63;
    let v = match rng.below(8) {
        0 => 0,
        1 => 0x7fffu128 << 64 | 1u128 << 63,
        2 => 0x7fffu128 << 64 | u128::from(sig),
        3 => u128::from(sig >> 1 >> rng.below(60)),
        4 => 0x3fffu128 << 64 | 1u128 << 63,
        _ => u128::from(0x3fc0 + rng.below(0x80)) << 64 | u128::from(sig),
    };
    sign | v
}

/// A random x87/SSE state within the limits in the module doc.
pub fn random_fpu(rng: &mut Rng) -> FpuRegs {
    let mut f = FpuRegs::default();
    for x in f.xmm.iter_mut() {
        *x = u128::from(lane64(rng)) | u128::from(lane64(rng)) << 64;
    }
    for s in f.st.iter_mut() {
        *s = ext80(rng);
    }
    let rc = rng.below(4) as u32;
    // Masks: all, or a random subset of IM, DM, ZM, PM (OM, UM stay).
    let unmask = if rng.chance(1, 6) {
        rng.below(64) as u32 & 0x27
    } else {
        0
    };
    f.mxcsr = (0x1f80 & !(unmask << 7)) | rc << 13 | rng.below(64) as u32 & 0x3f;
    if rng.chance(1, 4) {
        f.mxcsr |= 1 << 6;
    }
    if rng.chance(1, 4) {
        f.mxcsr |= 1 << 15;
    }
    // Pending MXCSR flags never fault: only FCW matters for #MF.
    let x87_unmask = if rng.chance(1, 6) {
        rng.below(64) as u16 & 0x27
    } else {
        0
    };
    f.fcw = (0x037f & !x87_unmask) | (rng.below(4) as u16) << 10;
    // Sticky flags only where masked, so no #MF is pending at the start.
    f.fsw = (rng.below(8) as u16) << 11 | (rng.below(64) as u16 & 0x3f & !x87_unmask);
    f.ftw = rng.next_u64() as u8;
    f
}

/// [`random_fpu`] with the upper halves of the YMM registers random too
/// (for the AVX classes; the SSE classes' streams stay as they were).
pub fn random_fpu_with_ymm(rng: &mut Rng) -> FpuRegs {
    let mut f = random_fpu(rng);
    for y in f.ymm_hi.iter_mut() {
        *y = u128::from(lane64(rng)) | u128::from(lane64(rng)) << 64;
    }
    f
}

/// A SIMD form of a random mnemonic from `ms`.
fn pick(b: &mut Builder<'_>, ms: &[Mnemonic]) -> Option<Code> {
    let m = *b.rng.pick(ms);
    let codes = b.tables.simd_codes(m);
    (!codes.is_empty()).then(|| *b.rng.pick(codes))
}

/// Fill options for `code`: memory operands of its size, 16-byte aligned
/// (mostly) where the SDM requires alignment.
pub(super) fn fill_for(b: &mut Builder<'_>, code: Code) -> Fill {
    let mut probe = Instruction::default();
    probe.set_code(code);
    let size = probe.memory_size().size() as u32;
    let mut f = plain();
    f.mem_size = size.max(1);
    // The emu engine's rule (the SDM's): 16-byte operands aligned but
    // for the explicitly unaligned forms. One in 20 stays unaligned, to
    // check the rule itself against the CPU.
    let align = if code.encoding() == iced_x86::EncodingKind::VEX {
        alcazar_emu::fpu::avx::operands::needs_alignment(&probe).then_some(u64::from(size))
    } else {
        alcazar_emu::fpu::access::needs_alignment(&probe).then_some(16)
    };
    if let Some(align) = align {
        if !b.rng.chance(1, 20) {
            f.mem = MemOpts { align, ..f.mem };
            f.mem.wild = false;
        }
    }
    f
}

/// Emits `code` with random operands, fixing immediates to defined
/// ranges (CMPccPS predicates 0-7).
fn emit(b: &mut Builder<'_>, code: Code) -> bool {
    let f = fill_for(b, code);
    let Some(mut insn) = b.fill(code, &f) else {
        return false;
    };
    if matches!(
        code.mnemonic(),
        Mnemonic::Cmpps | Mnemonic::Cmpss | Mnemonic::Cmppd | Mnemonic::Cmpsd
    ) {
        insn.set_immediate8(insn.immediate8() & 7);
    }
    b.push(insn)
}

/// SSE2/MMX integer, logical, shuffle and move instructions.
pub fn sse(b: &mut Builder<'_>) -> bool {
    use Mnemonic::*;
    let Some(code) = pick(
        b,
        &[
            Paddb, Paddw, Paddd, Paddq, Psubb, Psubw, Psubd, Psubq, Paddsb, Paddsw, Psubsb, Psubsw,
            Paddusb, Paddusw, Psubusb, Psubusw, Pmullw, Pmulhw, Pmulhuw, Pmuludq, Pmaddwd, Pavgb,
            Pavgw, Psadbw, Pminub, Pmaxub, Pminsw, Pmaxsw, Pcmpeqb, Pcmpeqw, Pcmpeqd, Pcmpgtb,
            Pcmpgtw, Pcmpgtd, Pand, Pandn, Por, Pxor, Psllw, Pslld, Psllq, Psrlw, Psrld, Psrlq,
            Psraw, Psrad, Pslldq, Psrldq, Packsswb, Packssdw, Packuswb, Punpcklbw, Punpcklwd,
            Punpckldq, Punpcklqdq, Punpckhbw, Punpckhwd, Punpckhdq, Punpckhqdq, Pshufd, Pshufhw,
            Pshuflw, Pshufw, Pextrw, Pinsrw, Movd, Movq, Movdqa, Movdqu, Movaps, Movups, Movapd,
            Movupd, Movss, Movsd, Movlps, Movhps, Movlpd, Movhpd, Movhlps, Movlhps, Movntdq,
            Movntps, Movntpd, Movnti, Movntq, Movq2dq, Movdq2q, Movmskps, Movmskpd, Pmovmskb,
            Andps, Andnps, Orps, Xorps, Andpd, Andnpd, Orpd, Xorpd, Shufps, Shufpd, Unpcklps,
            Unpckhps, Unpcklpd, Unpckhpd, Emms, Stmxcsr, Maskmovq, Maskmovdqu,
        ],
    ) else {
        return false;
    };
    emit(b, code)
}

/// SSE3 on XMM registers.
pub fn sse3(b: &mut Builder<'_>) -> bool {
    use Mnemonic::*;
    let Some(code) = pick(
        b,
        &[
            Addsubps, Addsubpd, Haddps, Haddpd, Hsubps, Hsubpd, Movsldup, Movshdup, Movddup, Lddqu,
        ],
    ) else {
        return false;
    };
    emit(b, code)
}

/// SSSE3, MMX and XMM forms.
pub fn ssse3(b: &mut Builder<'_>) -> bool {
    use Mnemonic::*;
    let Some(code) = pick(
        b,
        &[
            Pshufb, Phaddw, Phaddd, Phaddsw, Phsubw, Phsubd, Phsubsw, Pmaddubsw, Pmulhrsw, Psignb,
            Psignw, Psignd, Pabsb, Pabsw, Pabsd, Palignr,
        ],
    ) else {
        return false;
    };
    emit(b, code)
}

/// SSE4.1 and SSE4.2.
pub fn sse4(b: &mut Builder<'_>) -> bool {
    use Mnemonic::*;
    let Some(code) = pick(
        b,
        &[
            Pmulld, Pmuldq, Pminsb, Pmaxsb, Pminsd, Pmaxsd, Pminuw, Pmaxuw, Pminud, Pmaxud,
            Pcmpeqq, Pcmpgtq, Packusdw, Pmovsxbw, Pmovsxbd, Pmovsxbq, Pmovsxwd, Pmovsxwq, Pmovsxdq,
            Pmovzxbw, Pmovzxbd, Pmovzxbq, Pmovzxwd, Pmovzxwq, Pmovzxdq, Pblendw, Blendps, Blendpd,
            Pblendvb, Blendvps, Blendvpd, Pextrb, Pextrw, Pextrd, Pextrq, Pinsrb, Pinsrd, Pinsrq,
            Extractps, Insertps, Ptest, Phminposuw, Mpsadbw, Movntdqa, Roundps, Roundpd, Roundss,
            Roundsd, Dpps, Dppd, Crc32, Pcmpestri, Pcmpestrm, Pcmpistri, Pcmpistrm,
        ],
    ) else {
        return false;
    };
    emit(b, code)
}

/// SSE/SSE2 floating point.
pub fn sse_float(b: &mut Builder<'_>) -> bool {
    use Mnemonic::*;
    let Some(code) = pick(
        b,
        &[
            Addps, Addss, Addpd, Addsd, Subps, Subss, Subpd, Subsd, Mulps, Mulss, Mulpd, Mulsd,
            Divps, Divss, Divpd, Divsd, Sqrtps, Sqrtss, Sqrtpd, Sqrtsd, Minps, Minss, Minpd, Minsd,
            Maxps, Maxss, Maxpd, Maxsd, Cmpps, Cmpss, Cmppd, Cmpsd, Comiss, Ucomiss, Comisd,
            Ucomisd, Cvtsi2ss, Cvtsi2sd, Cvtss2si, Cvttss2si, Cvtsd2si, Cvttsd2si, Cvtss2sd,
            Cvtsd2ss, Cvtps2pd, Cvtpd2ps, Cvtdq2ps, Cvtps2dq, Cvttps2dq, Cvtdq2pd, Cvtpd2dq,
            Cvttpd2dq, Cvtpi2ps, Cvtpi2pd, Cvtps2pi, Cvttps2pi, Cvtpd2pi, Cvttpd2pi,
        ],
    ) else {
        return false;
    };
    if matches!(code.mnemonic(), Cmpsd) && b.tables.simd_codes(Cmpsd).len() < 2 {
        return false;
    }
    emit(b, code)
}

/// x87 instructions; those that set C0-C3 are followed by FNSTSW AX.
pub fn x87(b: &mut Builder<'_>) -> bool {
    use Mnemonic::*;
    let Some(code) = pick(
        b,
        &[
            Fld, Fst, Fstp, Fild, Fist, Fistp, Fisttp, Fbstp, Fld1, Fldz, Fldpi, Fldl2e, Fldl2t,
            Fldlg2, Fldln2, Fxch, Fcmovb, Fcmove, Fcmovbe, Fcmovu, Fcmovnb, Fcmovne, Fcmovnbe,
            Fcmovnu, Fchs, Fabs, Fxam, Fadd, Faddp, Fiadd, Fsub, Fsubp, Fisub, Fsubr, Fsubrp,
            Fisubr, Fmul, Fmulp, Fimul, Fdiv, Fdivp, Fidiv, Fdivr, Fdivrp, Fidivr, Fcom, Fcomp,
            Fcompp, Fucom, Fucomp, Fucompp, Ficom, Ficomp, Ftst, Fcomi, Fcomip, Fucomi, Fucomip,
            Fsqrt, Frndint, Fscale, Fxtract, Fninit, Fnclex, Fnstcw, Ffree, Fincstp, Fdecstp, Fnop,
            Wait,
        ],
    ) else {
        return false;
    };
    if !emit(b, code) {
        return false;
    }
    let sets_cc = matches!(
        code.mnemonic(),
        Fxam | Fcom | Fcomp | Fcompp | Fucom | Fucomp | Fucompp | Ficom | Ficomp | Ftst
    );
    if sets_cc {
        return match Instruction::with1(Code::Fnstsw_AX, Register::AX) {
            Ok(i) => b.push(i),
            Err(_) => false,
        };
    }
    true
}
