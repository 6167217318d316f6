//! Guest instructions that run as themselves: which ones, and how they are
//! re-encoded for the host (same ISA; SDM Vol. 2 for each instruction;
//! Vol. 1 ch. 10-11 for SSE and SSE2).
//!
//! An instruction runs natively when the host executes it exactly as the
//! guest's CPU would, given the guest's register values: integer data
//! movement and arithmetic, logic, shifts, bit tests, conditional moves
//! and sets, exchanges, sign extensions and the carry-flag instructions.
//! Its GPR operands are renamed to their host registers ([`super::regs`];
//! frame-resident ones are loaded into scratch registers around it) and
//! its memory operand, if any, becomes `[T1]` after the TLB probe
//! ([`super::memory`]). Anything that touches state the host must keep
//! (segments, control registers, RFLAGS.IF/DF/TF, the x87 state, MXCSR),
//! that may fault on the host
//! (division, misaligned or privileged instructions), whose result the
//! host might compute differently (CPUID, RDTSC, instructions the guest's
//! CPUID does not advertise) or that addresses memory in other ways
//! (string instructions, `BT m, r` with its bit offset beyond the operand,
//! `XLAT`, stack instructions other than PUSH/POP r64) runs in the
//! interpreter instead ([`super::helpers`]).
//!
//! VEX instructions of the same kinds (AVX/AVX2 integer, logic, shuffles,
//! permutes, moves) run natively when the guest may use AVX and the host
//! has AVX2: their vector registers are loaded whole (the XMM home and
//! the frame's `ymm_hi`) into host YMM0-YMM2 and stored whole after, and
//! a VZEROUPPER follows so no dirty upper state meets legacy SSE code.
//!
//! SSE, SSE2 and SSSE3 instructions that neither depend on MXCSR nor raise SIMD
//! floating-point exceptions (moves, integer arithmetic, logic, shuffles)
//! run natively too when the guest's SSE state is usable (CR4.OSFXSR = 1,
//! CR0.EM = CR0.TS = 0: the translation's mode): guest XMM registers live
//! in the frame while translated code runs and are loaded into host XMM0-
//! XMM2 around each such instruction. So do AES-NI, PCLMULQDQ and the SHA
//! extensions where the host CPU has them (checked once).
//!
//! The general-register extensions BMI1 (TZCNT, ANDN, BEXTR, BLSI, BLSMSK,
//! BLSR), BMI2 (BZHI, MULX, PDEP, PEXT, RORX, SARX, SHLX, SHRX) and ADX
//! (ADCX, ADOX) run natively where the host CPU has them (checked once);
//! RDRAND, RDSEED and the FSGSBASE instructions stay in the interpreter.
//!
//! Undefined flags (SDM: "the SF, ZF, AF and PF flags are undefined" after
//! `IMUL`, for instance) are whatever the host computes; the interpreter
//! may leave other values. Defined results are identical.

use iced_x86::{
    Code, Encoder, Instruction, InstructionInfoFactory, Mnemonic, OpAccess, OpKind, Register,
};

use super::emit::Reg;
use super::memory::Access;
use super::regs::{guest_gpr, host, iced_reg, T0, T1};

/// What the translator needs to know to run an instruction natively.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Native {
    /// Its explicit memory operand.
    pub mem: Option<MemAccess>,
    /// Frame-resident guest GPRs among its data operands, with the
    /// scratch register each is loaded into, and whether it is written.
    pub temps: Vec<(usize, Reg, bool)>,
    /// The guest XMM registers it uses (their home is the frame).
    pub xmms: Vec<Xmm>,
    /// A VEX instruction: its vector registers are loaded and stored
    /// whole (YMM: the XMM home and the `ymm_hi` home), since VEX writes
    /// bits 255:128 too (VEX.128 zeroes them).
    pub vex: bool,
}

/// An instruction's memory operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemAccess {
    /// How it is accessed.
    pub access: Access,
    /// Its size in bytes (1, 2, 4, 8, 16).
    pub size: u8,
    /// `address & align` must be 0 for the fast path: a locked access
    /// (LOCK, or XCHG with memory) that may not split a cache line, or a
    /// 16-byte SSE operand that must be aligned (else #GP, which the
    /// interpreter raises).
    pub align: u8,
}

/// A guest XMM register an instruction uses, and the host XMM register it
/// runs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Xmm {
    /// The guest register (0-15).
    pub guest: u8,
    /// The host scratch register (XMM0-XMM2).
    pub host: u8,
    /// Its value is read (or partly kept): load it first.
    pub load: bool,
    /// It is written: store it back after.
    pub store: bool,
}

/// SSE and SSE2 instructions that run natively (the guest's CPUID
/// advertises no later ones): data movement, integer arithmetic, logic,
/// comparisons, shuffles and packs. None depends on MXCSR or raises a
/// SIMD floating-point exception, so the host's MXCSR does not matter
/// (floating-point arithmetic stays in the interpreter).
fn allowed_sse(m: Mnemonic) -> bool {
    allowed_sse_base(m)
        || (is_ssse3(m) && host_has_ssse3())
        || (is_sse3_move(m) && host_has_sse3())
        || host_runs_crypto(m)
}

/// The SSE and SSE2 instructions of [`allowed_sse`].
fn allowed_sse_base(m: Mnemonic) -> bool {
    use Mnemonic as M;
    matches!(
        m,
        M::Movaps
            | M::Movups
            | M::Movapd
            | M::Movupd
            | M::Movdqa
            | M::Movdqu
            | M::Movq
            | M::Movd
            | M::Movlps
            | M::Movhps
            | M::Movlpd
            | M::Movhpd
            | M::Movhlps
            | M::Movlhps
            | M::Movntdq
            | M::Movntps
            | M::Movntpd
            | M::Movss
            | M::Movsd
            | M::Movmskps
            | M::Movmskpd
            | M::Pmovmskb
            | M::Andps
            | M::Andpd
            | M::Andnps
            | M::Andnpd
            | M::Orps
            | M::Orpd
            | M::Xorps
            | M::Xorpd
            | M::Shufps
            | M::Shufpd
            | M::Unpcklps
            | M::Unpckhps
            | M::Unpcklpd
            | M::Unpckhpd
            | M::Paddb
            | M::Paddw
            | M::Paddd
            | M::Paddq
            | M::Paddsb
            | M::Paddsw
            | M::Paddusb
            | M::Paddusw
            | M::Psubb
            | M::Psubw
            | M::Psubd
            | M::Psubq
            | M::Psubsb
            | M::Psubsw
            | M::Psubusb
            | M::Psubusw
            | M::Pcmpeqb
            | M::Pcmpeqw
            | M::Pcmpeqd
            | M::Pcmpgtb
            | M::Pcmpgtw
            | M::Pcmpgtd
            | M::Pand
            | M::Pandn
            | M::Por
            | M::Pxor
            | M::Pminub
            | M::Pmaxub
            | M::Pminsw
            | M::Pmaxsw
            | M::Pavgb
            | M::Pavgw
            | M::Psadbw
            | M::Pmullw
            | M::Pmulhw
            | M::Pmulhuw
            | M::Pmuludq
            | M::Pmaddwd
            | M::Punpcklbw
            | M::Punpcklwd
            | M::Punpckldq
            | M::Punpcklqdq
            | M::Punpckhbw
            | M::Punpckhwd
            | M::Punpckhdq
            | M::Punpckhqdq
            | M::Packsswb
            | M::Packssdw
            | M::Packuswb
            | M::Pshufd
            | M::Pshuflw
            | M::Pshufhw
            | M::Psllw
            | M::Pslld
            | M::Psllq
            | M::Psrlw
            | M::Psrld
            | M::Psrlq
            | M::Psraw
            | M::Psrad
            | M::Pslldq
            | M::Psrldq
            | M::Pextrw
            | M::Pinsrw
    )
}

/// AES-NI, PCLMULQDQ and the SHA extensions, which run natively where the
/// host has them (checked once; else the interpreter runs them:
/// [`crate::fpu::aes`], [`crate::fpu::clmul`], [`crate::fpu::sha`]).
/// SHA256RNDS2's implicit XMM0 is the host's XMM0 ([`classify`] puts
/// guest XMM0 there).
fn host_runs_crypto(m: Mnemonic) -> bool {
    use Mnemonic as M;
    match m {
        M::Aesenc | M::Aesenclast | M::Aesdec | M::Aesdeclast | M::Aesimc | M::Aeskeygenassist => {
            std::arch::is_x86_feature_detected!("aes")
        }
        M::Pclmulqdq => std::arch::is_x86_feature_detected!("pclmulqdq"),
        M::Sha1rnds4
        | M::Sha1nexte
        | M::Sha1msg1
        | M::Sha1msg2
        | M::Sha256rnds2
        | M::Sha256msg1
        | M::Sha256msg2 => std::arch::is_x86_feature_detected!("sha"),
        _ => false,
    }
}

/// The SSE3 moves (the SSE3 arithmetic depends on MXCSR and stays in the
/// interpreter).
fn is_sse3_move(m: Mnemonic) -> bool {
    use Mnemonic as M;
    matches!(m, M::Movddup | M::Movshdup | M::Movsldup | M::Lddqu)
}

/// Whether the host CPU runs SSE3 instructions.
fn host_has_sse3() -> bool {
    std::arch::is_x86_feature_detected!("sse3")
}

/// The SSSE3 mnemonics, which run natively only where the host has SSSE3
/// (every x86-64 CPU of the last fifteen years; checked once).
fn is_ssse3(m: Mnemonic) -> bool {
    use Mnemonic as M;
    matches!(
        m,
        M::Pshufb
            | M::Phaddw
            | M::Phaddd
            | M::Phaddsw
            | M::Phsubw
            | M::Phsubd
            | M::Phsubsw
            | M::Pmaddubsw
            | M::Pmulhrsw
            | M::Psignb
            | M::Psignw
            | M::Psignd
            | M::Pabsb
            | M::Pabsw
            | M::Pabsd
            | M::Palignr
    )
}

/// SSE4.1 instructions without MXCSR effects: whose VEX forms run
/// natively (the legacy forms stay in the interpreter).
fn is_sse41_integer(m: Mnemonic) -> bool {
    use Mnemonic as M;
    matches!(
        m,
        M::Pmulld
            | M::Pmuldq
            | M::Pminsb
            | M::Pmaxsb
            | M::Pminsd
            | M::Pmaxsd
            | M::Pminuw
            | M::Pmaxuw
            | M::Pminud
            | M::Pmaxud
            | M::Pcmpeqq
            | M::Pcmpgtq
            | M::Packusdw
            | M::Pblendw
            | M::Blendps
            | M::Blendpd
            | M::Pblendvb
            | M::Blendvps
            | M::Blendvpd
            | M::Ptest
            | M::Phminposuw
            | M::Mpsadbw
            | M::Pextrb
            | M::Pextrd
            | M::Pextrq
            | M::Pinsrb
            | M::Pinsrd
            | M::Pinsrq
            | M::Extractps
            | M::Insertps
            | M::Movntdqa
            | M::Pmovsxbw
            | M::Pmovsxbd
            | M::Pmovsxbq
            | M::Pmovsxwd
            | M::Pmovsxwq
            | M::Pmovsxdq
            | M::Pmovzxbw
            | M::Pmovzxbd
            | M::Pmovzxbq
            | M::Pmovzxwd
            | M::Pmovzxwq
            | M::Pmovzxdq
    )
}

/// VEX instructions that run natively when the guest may use AVX (the
/// translation's [`super::Mode`]) and the host has AVX2: the VEX forms of
/// the SSE-SSE4.1 instructions above that neither depend on MXCSR nor
/// raise SIMD floating-point exceptions, and AVX/AVX2's own data movement,
/// permutes and per-element shifts. Not here: floating-point arithmetic
/// (MXCSR), gathers (VSIB), masked moves (they fault per element),
/// VZEROUPPER/VZEROALL, VLDMXCSR/VSTMXCSR.
fn allowed_vex(m: Mnemonic) -> bool {
    use Mnemonic as M;
    if let Some(l) = crate::fpu::avx::in_lane::legacy(m) {
        if allowed_sse_base(l) || is_ssse3(l) || is_sse3_move(l) || is_sse41_integer(l) {
            return true;
        }
    }
    matches!(
        m,
        M::Vbroadcastss
            | M::Vbroadcastsd
            | M::Vbroadcastf128
            | M::Vbroadcasti128
            | M::Vpbroadcastb
            | M::Vpbroadcastw
            | M::Vpbroadcastd
            | M::Vpbroadcastq
            | M::Vinsertf128
            | M::Vinserti128
            | M::Vextractf128
            | M::Vextracti128
            | M::Vperm2f128
            | M::Vperm2i128
            | M::Vpermilps
            | M::Vpermilpd
            | M::Vpermd
            | M::Vpermps
            | M::Vpermq
            | M::Vpermpd
            | M::Vpsllvd
            | M::Vpsllvq
            | M::Vpsrlvd
            | M::Vpsrlvq
            | M::Vpsravd
            | M::Vpblendd
            | M::Vtestps
            | M::Vtestpd
    )
}

/// Whether the host CPU runs AVX2 (and so AVX) instructions, with the OS
/// saving YMM state.
fn host_has_avx2() -> bool {
    std::arch::is_x86_feature_detected!("avx2")
}

/// VEX moves whose memory operand must be aligned to its size.
fn vex_aligned(m: Mnemonic) -> bool {
    matches!(
        m,
        Mnemonic::Vmovdqa
            | Mnemonic::Vmovaps
            | Mnemonic::Vmovapd
            | Mnemonic::Vmovntdq
            | Mnemonic::Vmovntps
            | Mnemonic::Vmovntpd
            | Mnemonic::Vmovntdqa
    )
}

/// Whether the host CPU runs SSSE3 instructions.
fn host_has_ssse3() -> bool {
    std::arch::is_x86_feature_detected!("ssse3")
}

/// SSE moves whose 16-byte memory operand may be misaligned.
fn unaligned_ok(m: Mnemonic) -> bool {
    matches!(
        m,
        Mnemonic::Movdqu | Mnemonic::Movups | Mnemonic::Movupd | Mnemonic::Lddqu
    )
}

/// Instructions that may run natively (with the operand checks of
/// [`classify`]).
fn allowed(m: Mnemonic) -> bool {
    use Mnemonic as M;
    matches!(
        m,
        M::Mov
            | M::Movzx
            | M::Movsx
            | M::Movsxd
            | M::Add
            | M::Adc
            | M::Sub
            | M::Sbb
            | M::And
            | M::Or
            | M::Xor
            | M::Cmp
            | M::Test
            | M::Inc
            | M::Dec
            | M::Neg
            | M::Not
            | M::Shl
            | M::Sal
            | M::Shr
            | M::Sar
            | M::Rol
            | M::Ror
            | M::Rcl
            | M::Rcr
            | M::Shld
            | M::Shrd
            | M::Imul
            | M::Mul
            | M::Bt
            | M::Bts
            | M::Btr
            | M::Btc
            | M::Bswap
            | M::Bsf
            | M::Bsr
            | M::Xchg
            | M::Xadd
            | M::Cmpxchg
            | M::Cbw
            | M::Cwde
            | M::Cdqe
            | M::Cwd
            | M::Cdq
            | M::Cqo
            | M::Clc
            | M::Stc
            | M::Cmc
            | M::Lahf
            | M::Sahf
            | M::Cmovo
            | M::Cmovno
            | M::Cmovb
            | M::Cmovae
            | M::Cmove
            | M::Cmovne
            | M::Cmovbe
            | M::Cmova
            | M::Cmovs
            | M::Cmovns
            | M::Cmovp
            | M::Cmovnp
            | M::Cmovl
            | M::Cmovge
            | M::Cmovle
            | M::Cmovg
            | M::Seto
            | M::Setno
            | M::Setb
            | M::Setae
            | M::Sete
            | M::Setne
            | M::Setbe
            | M::Seta
            | M::Sets
            | M::Setns
            | M::Setp
            | M::Setnp
            | M::Setl
            | M::Setge
            | M::Setle
            | M::Setg
    )
}

/// Whether the host runs TZCNT as TZCNT (BMI1; without it the same bytes
/// are BSF, and the interpreter implements TZCNT).
fn host_has_bmi1() -> bool {
    std::arch::is_x86_feature_detected!("bmi1")
}

/// Whether the host has BMI2.
fn host_has_bmi2() -> bool {
    std::arch::is_x86_feature_detected!("bmi2")
}

/// Whether the host has ADX.
fn host_has_adx() -> bool {
    std::arch::is_x86_feature_detected!("adx")
}

/// The general-register instructions of the BMI1, BMI2 and ADX
/// extensions, which run natively where the host has the extension (else
/// the interpreter runs them: [`crate::exec::bmi1`], [`crate::exec::bmi2`],
/// [`crate::exec::adx`]). Flags the SDM leaves undefined after them are
/// the host's.
fn host_runs_extension(m: Mnemonic) -> bool {
    use Mnemonic as M;
    match m {
        M::Tzcnt | M::Andn | M::Bextr | M::Blsi | M::Blsmsk | M::Blsr => host_has_bmi1(),
        M::Bzhi | M::Mulx | M::Pdep | M::Pext | M::Rorx | M::Sarx | M::Shlx | M::Shrx => {
            host_has_bmi2()
        }
        M::Adcx | M::Adox => host_has_adx(),
        _ => false,
    }
}

/// Whether a native `insn` needs its 32-bit destination zero-extended
/// afterwards: BSF/BSR with a zero source leave the destination alone on
/// AMD hosts but write it back (clearing bits 63:32) on Intel ones, whose
/// behaviour the interpreter and the guest's CPUID follow.
pub fn zero_extend_after(insn: &Instruction) -> bool {
    matches!(insn.mnemonic(), Mnemonic::Bsf | Mnemonic::Bsr)
        && insn.op0_kind() == OpKind::Register
        && insn.op0_register().size() == 4
}

/// Instructions the LOCK prefix is valid on (with a memory destination;
/// SDM Vol. 2 "LOCK").
fn lockable(m: Mnemonic) -> bool {
    use Mnemonic as M;
    matches!(
        m,
        M::Add
            | M::Adc
            | M::Sub
            | M::Sbb
            | M::And
            | M::Or
            | M::Xor
            | M::Inc
            | M::Dec
            | M::Neg
            | M::Not
            | M::Bts
            | M::Btr
            | M::Btc
            | M::Xchg
            | M::Xadd
            | M::Cmpxchg
    )
}

/// Instructions the translator skips: no architectural effect at all
/// (`NOP`, `ENDBR64`, prefetches: they never fault).
pub fn is_skipped(insn: &Instruction) -> bool {
    use Mnemonic as M;
    matches!(
        insn.mnemonic(),
        M::Nop
            | M::Endbr64
            | M::Endbr32
            | M::Prefetchnta
            | M::Prefetcht0
            | M::Prefetcht1
            | M::Prefetcht2
            | M::Prefetchw
            | M::Prefetch
    ) && !insn.has_lock_prefix()
}

/// How `insn` (64-bit code) runs natively, or `None` if it must run in
/// the interpreter. `sse`: SSE instructions may run; `avx`: VEX ones may
/// (the translation's [`super::Mode`]).
pub fn classify(
    insn: &Instruction,
    info: &mut InstructionInfoFactory,
    sse: bool,
    avx: bool,
) -> Option<Native> {
    let m = insn.mnemonic();
    let vex = insn.encoding() == iced_x86::EncodingKind::VEX && allowed_vex(m);
    if vex && !(avx && host_has_avx2()) {
        return None;
    }
    let is_sse = if vex { true } else { allowed_sse(m) };
    let extension = host_runs_extension(m);
    if !(allowed(m) || extension || (sse && is_sse)) || insn.is_invalid() {
        return None;
    }
    // String MOVSD and the like are not SSE; neither are MMX forms.
    if is_sse && (crate::fpu::lookup(insn).is_none() || insn.op_count() == 0) {
        return None;
    }
    let mut explicit = Vec::with_capacity(3);
    let mut mem = None;
    for n in 0..insn.op_count() {
        match insn.op_kind(n) {
            OpKind::Register => {
                let r = insn.op_register(n);
                if (r.is_xmm() || (vex && r.is_ymm())) && is_sse && r.number() < 16 {
                    continue;
                }
                explicit.push(guest_gpr(r)?.0);
            }
            OpKind::Memory => {
                if mem.is_some() || insn.is_vsib() {
                    return None;
                }
                let size = insn.memory_size().size();
                let ok =
                    matches!(size, 1 | 2 | 4 | 8) || (is_sse && size == 16) || (vex && size == 32);
                if !ok {
                    return None;
                }
                mem = Some(size as u8);
            }
            OpKind::Immediate8
            | OpKind::Immediate8_2nd
            | OpKind::Immediate16
            | OpKind::Immediate32
            | OpKind::Immediate64
            | OpKind::Immediate8to16
            | OpKind::Immediate8to32
            | OpKind::Immediate8to64
            | OpKind::Immediate32to64 => {}
            _ => return None,
        }
    }
    // BT m, r addresses memory beyond the operand by the bit offset.
    if matches!(
        m,
        Mnemonic::Bt | Mnemonic::Bts | Mnemonic::Btr | Mnemonic::Btc
    ) && mem.is_some()
        && insn.op_kind(1) == OpKind::Register
    {
        return None;
    }
    let implicit_lock = m == Mnemonic::Xchg && mem.is_some();
    if insn.has_lock_prefix() && (!lockable(m) || insn.op0_kind() != OpKind::Memory) {
        return None;
    }
    let locked = insn.has_lock_prefix() || implicit_lock;

    let used = info.info(insn);
    let mut access = Access::Read;
    for u in used.used_memory() {
        if matches!(
            u.access(),
            OpAccess::Write | OpAccess::CondWrite | OpAccess::ReadWrite | OpAccess::ReadCondWrite
        ) {
            access = Access::Write;
        }
    }
    let address = [insn.memory_base(), insn.memory_index()];
    let mut temps: Vec<(usize, Reg, bool)> = Vec::new();
    let mut xmms: Vec<Xmm> = Vec::new();
    if m == Mnemonic::Sha256rnds2 {
        // Its implicit operand is XMM0 on the host too.
        xmms.push(Xmm {
            guest: 0,
            host: 0,
            load: true,
            store: false,
        });
    }
    for u in used.used_registers() {
        let r = u.register();
        let written = !matches!(u.access(), OpAccess::Read | OpAccess::CondRead);
        // A VEX write is reported on the ZMM register: it zeroes every bit
        // above the operand, up to the widest vector length.
        if (r.is_xmm() || (vex && (r.is_ymm() || r.is_zmm()))) && is_sse {
            let guest = r.number() as u8;
            if guest >= 16 {
                return None;
            }
            // A full write needs no load; anything else keeps or reads
            // the old value.
            let load = u.access() != OpAccess::Write;
            match xmms.iter_mut().find(|x| x.guest == guest) {
                Some(x) => {
                    x.load |= load;
                    x.store |= written;
                }
                None => {
                    let host = xmms.len() as u8;
                    if host > 2 {
                        return None;
                    }
                    xmms.push(Xmm {
                        guest,
                        host,
                        load,
                        store: written,
                    });
                }
            }
            continue;
        }
        let Some((g, _)) = guest_gpr(r) else {
            if r == Register::None || r.is_segment_register() {
                continue;
            }
            return None;
        };
        let is_explicit = explicit.contains(&g);
        let in_address = address
            .iter()
            .any(|a| guest_gpr(*a).is_some_and(|x| x.0 == g));
        if !is_explicit {
            if in_address && !written {
                continue;
            }
            // Implicit operands must be in their own host register.
            if host(g) != Some(Reg(g as u8)) {
                return None;
            }
            continue;
        }
        if host(g).is_none() {
            match temps.iter_mut().find(|t| t.0 == g) {
                Some(t) => t.2 |= written,
                None => {
                    let free: &[Reg] = if mem.is_some() { &[T0] } else { &[T0, T1] };
                    let t = *free.get(temps.len())?;
                    temps.push((g, t, written));
                }
            }
        }
    }
    let align = match mem {
        Some(size) if locked && size > 1 => size - 1,
        Some(size) if vex && vex_aligned(m) => size - 1,
        Some(16) if !vex && !unaligned_ok(m) => 15,
        _ => 0,
    };
    Some(Native {
        mem: mem.map(|size| MemAccess {
            access,
            size,
            align,
        }),
        temps,
        xmms,
        vex,
    })
}

/// Re-encodes `insn` for the host at address `ip`: GPRs renamed, frame
/// residents replaced by their scratch registers, the memory operand made
/// `[T1]`. The bytes are in `enc`'s buffer (take them with
/// [`Encoder::take_buffer`] and give the vector back with
/// [`Encoder::set_buffer`] to reuse it). `None` if the host cannot
/// encode the result (AH..BH next to a register that needs REX).
pub fn encode(enc: &mut Encoder, insn: &Instruction, n: &Native, ip: u64) -> Option<usize> {
    let mut i = *insn;
    for op in 0..i.op_count() {
        if i.op_kind(op) != OpKind::Register {
            continue;
        }
        let r = i.op_register(op);
        if r.is_xmm() || r.is_ymm() {
            let x = n.xmms.iter().find(|x| usize::from(x.guest) == r.number())?;
            let host = if r.is_ymm() { HOST_YMM } else { HOST_XMM };
            i.set_op_register(op, host[usize::from(x.host)]);
            continue;
        }
        let (g, _) = guest_gpr(r)?;
        let h = match host(g) {
            Some(h) => h,
            None => n.temps.iter().find(|t| t.0 == g)?.1,
        };
        i.set_op_register(op, iced_reg(h, r));
    }
    if n.mem.is_some() {
        i.set_code(register_form(i.code()));
        i.set_memory_base(Register::R14);
        i.set_memory_index(Register::None);
        i.set_memory_index_scale(1);
        i.set_memory_displacement64(0);
        i.set_memory_displ_size(0);
        i.set_segment_prefix(Register::None);
        debug_assert_eq!(super::regs::T1, Reg::R14);
    }
    match enc.encode(&i, ip) {
        Ok(len) => Some(len),
        Err(_) => {
            // A failed encoding may leave bytes behind: drop them.
            let mut buf = enc.take_buffer();
            buf.clear();
            enc.set_buffer(buf);
            None
        }
    }
}

/// The host scratch XMM registers.
pub(super) const HOST_XMM: [Register; 3] = [Register::XMM0, Register::XMM1, Register::XMM2];

/// The same registers as YMM (VEX.256 operands).
pub(super) const HOST_YMM: [Register; 3] = [Register::YMM0, Register::YMM1, Register::YMM2];

/// The ModR/M form of a `MOV` with a `moffs` operand (which has no base
/// register to put `[T1]` in); other codes unchanged.
fn register_form(code: Code) -> Code {
    match code {
        Code::Mov_AL_moffs8 => Code::Mov_r8_rm8,
        Code::Mov_AX_moffs16 => Code::Mov_r16_rm16,
        Code::Mov_EAX_moffs32 => Code::Mov_r32_rm32,
        Code::Mov_RAX_moffs64 => Code::Mov_r64_rm64,
        Code::Mov_moffs8_AL => Code::Mov_rm8_r8,
        Code::Mov_moffs16_AX => Code::Mov_rm16_r16,
        Code::Mov_moffs32_EAX => Code::Mov_rm32_r32,
        Code::Mov_moffs64_RAX => Code::Mov_rm64_r64,
        c => c,
    }
}

#[cfg(test)]
mod tests {
    use iced_x86::{Decoder, DecoderOptions, Formatter, IntelFormatter};

    use super::*;

    fn decode(bytes: &[u8]) -> Instruction {
        Decoder::with_ip(64, bytes, 0x1000, DecoderOptions::NONE).decode()
    }

    fn native(bytes: &[u8]) -> Option<String> {
        native_with(&mut Encoder::new(64), bytes)
    }

    fn native_with(enc: &mut Encoder, bytes: &[u8]) -> Option<String> {
        let insn = decode(bytes);
        let mut f = InstructionInfoFactory::new();
        let n = classify(&insn, &mut f, true, true)?;
        encode(enc, &insn, &n, 0x2000)?;
        let code = enc.take_buffer();
        let mut s = String::new();
        IntelFormatter::new().format(&decode(&code), &mut s);
        Some(s)
    }

    #[test]
    fn vex_instructions_run_in_the_host_ymm_registers() {
        if !host_has_avx2() {
            return;
        }
        // vpaddq ymm4, ymm5, ymm6
        assert_eq!(
            native(&[0xc5, 0xd5, 0xd4, 0xe6]).unwrap(),
            "vpaddq ymm0,ymm1,ymm2"
        );
        // vpaddq ymm0, ymm1, [rbp+0x20]
        assert_eq!(
            native(&[0xc5, 0xf5, 0xd4, 0x45, 0x20]).unwrap(),
            "vpaddq ymm0,ymm1,[r14]"
        );
        // vpalignr ymm8, ymm9, ymm10, 8
        assert_eq!(
            native(&[0xc4, 0x43, 0x35, 0x0f, 0xc2, 0x08]).unwrap(),
            "vpalignr ymm0,ymm1,ymm2,8"
        );
        // vaddps stays in the interpreter (MXCSR).
        assert_eq!(native(&[0xc5, 0xf4, 0x58, 0xc2]), None);
    }

    #[test]
    fn registers_are_renamed_and_memory_operands_become_t1() {
        assert_eq!(native(&[0x48, 0x01, 0xd8]).unwrap(), "add rax,rbx");
        assert_eq!(native(&[0x48, 0x89, 0xe5]).unwrap(), "mov rbp,r9"); // mov rbp, rsp
        assert_eq!(native(&[0x4d, 0x01, 0xfc]).unwrap(), "add r10,r13"); // add r12, r15
        assert_eq!(
            native(&[0x48, 0x8b, 0x44, 0x24, 0x08]).unwrap(), // mov rax, [rsp+8]
            "mov rax,[r14]"
        );
        assert_eq!(
            native(&[0xf0, 0x48, 0x0f, 0xc1, 0x03]).unwrap(), // lock xadd [rbx], rax
            "lock xadd [r14],rax"
        );
        assert_eq!(
            native(&[0x48, 0xa1, 1, 2, 3, 4, 5, 6, 7, 8]).unwrap(), // mov rax, moffs
            "mov rax,[r14]"
        );
        assert_eq!(native(&[0x88, 0xe0]).unwrap(), "mov al,ah");
        // pcmpeqb xmm9, [rax]: XMM registers become the host's scratch.
        assert_eq!(
            native(&[0x66, 0x44, 0x0f, 0x74, 0x08]).unwrap(),
            "pcmpeqb xmm0,[r14]"
        );
        assert_eq!(
            native(&[0x66, 0x0f, 0xd7, 0xc1]).unwrap(),
            "pmovmskb eax,xmm0"
        );
    }

    #[test]
    fn what_the_host_must_not_run_stays_in_the_interpreter() {
        for bytes in [
            &[0x48, 0xf7, 0xf1][..],         // div rcx
            &[0x0f, 0xa2],                   // cpuid
            &[0x0f, 0x31],                   // rdtsc
            &[0xfa],                         // cli
            &[0xfd],                         // std
            &[0x48, 0xa5],                   // movsq
            &[0x48, 0x0f, 0xab, 0x03],       // bts [rbx], rax
            &[0x8e, 0xd8],                   // mov ds, eax
            &[0x0f, 0x22, 0xd8],             // mov cr3, rax
            &[0x0f, 0x58, 0xc1],             // addps xmm0, xmm1
            &[0xf3, 0x48, 0x0f, 0xbd, 0xc1], // lzcnt rax, rcx
            &[0x48, 0x0f, 0xc7, 0x0b],       // cmpxchg16b [rbx]
            &[0x48, 0x0f, 0xc7, 0xf0],       // rdrand rax
            &[0x48, 0x0f, 0xc7, 0xf8],       // rdseed rax
            &[0xf3, 0x48, 0x0f, 0xae, 0xd0], // wrfsbase rax
            &[0xf3, 0x48, 0x0f, 0xae, 0xc0], // rdfsbase rax
        ] {
            assert_eq!(native(bytes), None, "{bytes:02x?}");
        }
    }

    #[test]
    fn bmi_and_adx_run_natively_where_the_host_has_them() {
        let cases: [(&[u8], &str, bool); 5] = [
            // andn rax, r12, [rbx]
            (
                &[0xc4, 0xe2, 0x98, 0xf2, 0x03],
                "andn rax,r10,[r14]",
                host_has_bmi1(),
            ),
            // mulx rcx, rsi, rdi (RDX implicit, in its own register)
            (
                &[0xc4, 0xe2, 0xcb, 0xf6, 0xcf],
                "mulx rcx,rsi,rdi",
                host_has_bmi2(),
            ),
            // rorx eax, ecx, 5
            (
                &[0xc4, 0xe3, 0x7b, 0xf0, 0xc1, 0x05],
                "rorx eax,ecx,5",
                host_has_bmi2(),
            ),
            // shlx r9, r13, rsp: frame-resident R9 through a scratch register
            (
                &[0xc4, 0x42, 0xd9, 0xf7, 0xcd],
                "shlx r13,r11,r9",
                host_has_bmi2(),
            ),
            // adox rax, rbx
            (
                &[0xf3, 0x48, 0x0f, 0x38, 0xf6, 0xc3],
                "adox rax,rbx",
                host_has_adx(),
            ),
        ];
        for (bytes, text, host) in cases {
            let got = native(bytes);
            if host {
                assert_eq!(got.as_deref(), Some(text), "{bytes:02x?}");
            } else {
                assert_eq!(got, None, "{bytes:02x?}");
            }
        }
    }

    #[test]
    fn aes_pclmulqdq_and_sha_run_natively_where_the_host_has_them() {
        let aes = std::arch::is_x86_feature_detected!("aes");
        let clmul = std::arch::is_x86_feature_detected!("pclmulqdq");
        let sha = std::arch::is_x86_feature_detected!("sha");
        let cases: [(&[u8], &str, bool); 4] = [
            // aesenc xmm9, [rax]
            (
                &[0x66, 0x44, 0x0f, 0x38, 0xdc, 0x08],
                "aesenc xmm0,[r14]",
                aes,
            ),
            // pclmulqdq xmm1, xmm2, 0x11
            (
                &[0x66, 0x0f, 0x3a, 0x44, 0xca, 0x11],
                "pclmulhqhqdq xmm0,xmm1",
                clmul,
            ),
            // sha1rnds4 xmm1, xmm2, 3
            (
                &[0x0f, 0x3a, 0xcc, 0xca, 0x03],
                "sha1rnds4 xmm0,xmm1,3",
                sha,
            ),
            // sha256rnds2 xmm3, xmm5: guest XMM0 stays the host's XMM0.
            (&[0x0f, 0x38, 0xcb, 0xdd], "sha256rnds2 xmm1,xmm2", sha),
        ];
        for (bytes, text, host) in cases {
            let got = native(bytes);
            if host {
                assert_eq!(got.as_deref(), Some(text), "{bytes:02x?}");
            } else {
                assert_eq!(got, None, "{bytes:02x?}");
            }
        }
        if sha {
            let insn = decode(&[0x0f, 0x38, 0xcb, 0xdd]);
            let n = classify(&insn, &mut InstructionInfoFactory::new(), true, true).unwrap();
            let homes: Vec<(u8, u8, bool)> =
                n.xmms.iter().map(|x| (x.guest, x.host, x.store)).collect();
            assert_eq!(homes, [(0, 0, false), (3, 1, true), (5, 2, false)]);
        }
    }

    #[test]
    fn high_byte_registers_next_to_rex_registers_cannot_be_encoded() {
        // mov ah, [rbx]: the memory operand becomes [r14], which needs REX.
        assert_eq!(native(&[0x8a, 0x23]), None);
        // mov [rbx], ah; a failed encoding leaves nothing behind.
        let mut enc = Encoder::new(64);
        assert_eq!(native_with(&mut enc, &[0x88, 0x23]), None);
        assert_eq!(
            native_with(&mut enc, &[0x48, 0x01, 0xd8]).unwrap(),
            "add rax,rbx"
        );
    }
}
