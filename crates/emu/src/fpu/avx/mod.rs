//! AVX, AVX2, FMA and F16C: the VEX-encoded vector instructions (SDM
//! Vol. 1 ch. 14; Vol. 2A §2.3 for the VEX prefix and the exception
//! classes).
//!
//! The model, which the files of this module follow:
//! * The registers are YMM0-15: bits 127:0 are the XMM registers
//!   ([`super::FpuState::xmm`]), bits 255:128 are
//!   [`super::FpuState::ymm_hi`], the XSAVE AVX component.
//! * VEX makes the destructive two-operand SSE forms non-destructive:
//!   `VADDPS ymm1, ymm2, ymm3/m256` computes `ymm2 op ymm3` into `ymm1`.
//!   Most 256-bit instructions are their 128-bit operation done
//!   independently on each 128-bit half ("in-lane", [`in_lane`]), with
//!   exactly the semantics of the legacy SSE instruction, which is why
//!   they reuse its per-chunk functions ([`super::sse_int::compute`],
//!   [`super::sse_float::arith_chunk`], ...).
//! * A VEX.128 instruction writing an XMM register zeroes bits 255:128 of
//!   its YMM register ([`operands::write_vec`]); a legacy SSE instruction
//!   keeps them.
//! * Memory operands need no alignment except for the explicitly aligned
//!   moves ([`operands::needs_alignment`]).
//! * Every VEX instruction is #UD unless CR4.OSXSAVE = 1 and XCR0 enables
//!   the SSE and AVX components, and #NM if CR0.TS = 1 ([`check_avx`]);
//!   CR0.EM and CR4.OSFXSR do not matter to VEX.
//!
//! The files: [`operands`] (reading and writing YMM/XMM/memory),
//! [`in_lane`] (the VEX forms of SSE-SSE4 operations), [`moves`] (loads,
//! stores, broadcasts, insert/extract, masked moves, VZEROUPPER),
//! [`permute`] (cross-lane permutes, blends, variable shifts, VPTEST),
//! [`convert`] (conversions and F16C), [`fma`] and [`gather`].

pub mod convert;
pub mod fma;
pub mod gather;
pub mod in_lane;
pub mod moves;
pub mod operands;
pub mod permute;

use iced_x86::{EncodingKind, Instruction};

use super::xsave;
use crate::exec::HandlerEntry;
use crate::fault::Fault;
use crate::state::{cr0, cr4};
use crate::Cpu;

/// The checks every VEX-encoded vector instruction makes first (SDM Vol.
/// 2A §2.8, exception class tables): #UD unless CR4.OSXSAVE and XCR0 has
/// both SSE and AVX state enabled; then #NM if CR0.TS.
#[inline]
pub fn check_avx(cpu: &Cpu) -> Result<(), Fault> {
    let need = xsave::SSE | xsave::AVX;
    if cpu.s.cr4 & cr4::OSXSAVE == 0 || cpu.s.xcr0 & need != need {
        return Err(Fault::InvalidOpcode);
    }
    if cpu.s.cr0 & cr0::TS != 0 {
        return Err(Fault::DeviceNotAvailable);
    }
    Ok(())
}

/// The handler for a VEX-encoded vector instruction, if one of this
/// module's files implements it. (VEX-encoded general-register
/// instructions, BMI1/BMI2, are not vector instructions and are not
/// found here.)
pub fn lookup(insn: &Instruction) -> Option<HandlerEntry> {
    if insn.encoding() != EncodingKind::VEX {
        return None;
    }
    moves::lookup(insn)
        .or_else(|| permute::lookup(insn))
        .or_else(|| convert::lookup(insn))
        .or_else(|| fma::lookup(insn))
        .or_else(|| gather::lookup(insn))
        .or_else(|| in_lane::lookup(insn))
}
