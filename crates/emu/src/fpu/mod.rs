//! The x87 FPU, MMX, SSE/SSE2/SSE3, SSSE3, SSE4.1/4.2 and AVX/AVX2/FMA/F16C units
//! ([`avx`]) and the XSAVE state areas ([`xsave`]): their state, the checks every
//! floating-point or SIMD instruction makes first, and the dispatch of
//! their mnemonics to handlers.
//!
//! State follows the Intel SDM: the x87 register stack of eight 80-bit
//! registers with TOP, the tag word, the control and status words and the
//! last-instruction pointers (Vol. 1 §8.1); the MMX registers alias the
//! x87 significands (Vol. 1 §9.5); XMM0-15 and MXCSR (Vol. 1 §10.2).
//!
//! Arithmetic is exact IEEE 754: single, double and x87 double-extended
//! values are computed with `rustc_apfloat` (a port of LLVM's APFloat),
//! which rounds correctly in all four rounding modes and reports the IEEE
//! status flags; the x86-specific parts (NaN propagation, QNaN indefinite,
//! denormal-operand flag, DAZ/FTZ, unmasked-exception behaviour) are done
//! here. What is left out is listed in `docs/architecture.md`.

pub mod access;
pub mod aes;
pub mod avx;
pub mod clmul;
pub mod control;
pub mod float;
pub mod fxsave;
pub mod lanes;
pub mod sha;
pub mod sse3;
pub mod sse41;
pub mod sse41_float;
pub mod sse42_string;
pub mod sse_conv;
pub mod sse_float;
pub mod sse_int;
pub mod sse_move;
pub mod ssse3;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_avx;
#[cfg(test)]
mod tests_sse_float;
#[cfg(test)]
mod tests_x87;
pub mod x87;
pub mod x87_arith;
pub mod xsave;

use iced_x86::{Instruction, Mnemonic};

use crate::exec::HandlerEntry;
use crate::exec::LinkEffect::KeepsLinks;
use crate::fault::Fault;
use crate::state::{cr0, cr4};
use crate::Cpu;

/// x87 status word bits (SDM Vol. 1 §8.1.3, Figure 8-4).
pub mod fsw {
    #![allow(missing_docs)]
    pub const IE: u16 = 1 << 0;
    pub const DE: u16 = 1 << 1;
    pub const ZE: u16 = 1 << 2;
    pub const OE: u16 = 1 << 3;
    pub const UE: u16 = 1 << 4;
    pub const PE: u16 = 1 << 5;
    /// Stack fault (with IE): C1 tells overflow (1) from underflow (0).
    pub const SF: u16 = 1 << 6;
    /// Error summary: an unmasked exception is pending.
    pub const ES: u16 = 1 << 7;
    pub const C0: u16 = 1 << 8;
    pub const C1: u16 = 1 << 9;
    pub const C2: u16 = 1 << 10;
    pub const TOP_SHIFT: u32 = 11;
    pub const TOP: u16 = 7 << 11;
    pub const C3: u16 = 1 << 14;
    /// Busy (mirrors ES).
    pub const B: u16 = 1 << 15;
    /// The six exception flags.
    pub const EXCEPTIONS: u16 = 0x3f;
}

/// MXCSR bits (SDM Vol. 1 §10.2.3, Figure 10-3).
pub mod mxcsr {
    #![allow(missing_docs)]
    pub const IE: u32 = 1 << 0;
    pub const DE: u32 = 1 << 1;
    pub const ZE: u32 = 1 << 2;
    pub const OE: u32 = 1 << 3;
    pub const UE: u32 = 1 << 4;
    pub const PE: u32 = 1 << 5;
    /// Denormals are zeros.
    pub const DAZ: u32 = 1 << 6;
    /// The exception masks IM..PM, bits 7-12.
    pub const MASK_SHIFT: u32 = 7;
    pub const RC_SHIFT: u32 = 13;
    /// Flush to zero.
    pub const FZ: u32 = 1 << 15;
    /// The bits that may be set (MXCSR_MASK as FXSAVE reports it).
    pub const WRITABLE: u32 = 0xffff;
    /// The reset value: all exceptions masked, round to nearest.
    pub const RESET: u32 = 0x1f80;
}

/// The tag of one x87 register (SDM Vol. 1 §8.1.7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tag {
    /// A normal finite value.
    Valid = 0,
    /// +0 or -0.
    Zero = 1,
    /// NaN, infinity, denormal or unsupported format.
    Special = 2,
    /// No value.
    Empty = 3,
}

/// The x87, MMX and SSE register state of one CPU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FpuState {
    /// Physical x87 registers R0-R7, each an 80-bit double-extended value
    /// in the low bits (significand 0-63, exponent 64-78, sign 79).
    pub st: [u128; 8],
    /// FCW: control word (masks, precision and rounding control).
    pub fcw: u16,
    /// FSW: status word, TOP included (bits 11-13).
    pub fsw: u16,
    /// FTW: the full tag word, two bits per physical register.
    pub ftw: u16,
    /// The last non-control instruction's opcode (11 bits).
    pub fop: u16,
    /// Last instruction pointer (offset) and its CS selector.
    pub fip: u64,
    /// Last instruction's CS selector.
    pub fcs: u16,
    /// Last data (operand) pointer.
    pub fdp: u64,
    /// Last data pointer's segment selector.
    pub fds: u16,
    /// XMM0-XMM15 (bits 127:0 of YMM0-YMM15).
    pub xmm: [u128; 16],
    /// Bits 255:128 of YMM0-YMM15 (SDM Vol. 1 §14.1.1): the AVX state
    /// component of XSAVE. Legacy SSE instructions keep them; VEX.128
    /// instructions zero them.
    pub ymm_hi: [u128; 16],
    /// MXCSR.
    pub mxcsr: u32,
}

impl Default for FpuState {
    /// The power-on state (SDM Vol. 3A §9.1.1, Table 9-1): FCW 0x0040,
    /// FTW 0x5555, registers +0, MXCSR 0x1F80.
    fn default() -> Self {
        FpuState {
            st: [0; 8],
            fcw: 0x40,
            fsw: 0,
            ftw: 0x5555,
            fop: 0,
            fip: 0,
            fcs: 0,
            fdp: 0,
            fds: 0,
            xmm: [0; 16],
            ymm_hi: [0; 16],
            mxcsr: mxcsr::RESET,
        }
    }
}

impl FpuState {
    /// FNINIT's state (SDM Vol. 2A "FINIT/FNINIT"): FCW 0x037F, FSW 0,
    /// all tags empty, pointers and opcode cleared; the registers and the
    /// SSE state are unchanged.
    pub fn finit(&mut self) {
        self.fcw = 0x37f;
        self.fsw = 0;
        self.ftw = 0xffff;
        self.fop = 0;
        self.fip = 0;
        self.fcs = 0;
        self.fdp = 0;
        self.fds = 0;
    }

    /// TOP, the physical index of ST(0).
    #[inline]
    pub fn top(&self) -> usize {
        usize::from((self.fsw & fsw::TOP) >> fsw::TOP_SHIFT)
    }

    /// Sets TOP.
    #[inline]
    pub fn set_top(&mut self, top: usize) {
        self.fsw = (self.fsw & !fsw::TOP) | (((top & 7) as u16) << fsw::TOP_SHIFT);
    }

    /// The physical index of ST(`i`).
    #[inline]
    pub fn phys(&self, i: usize) -> usize {
        (self.top() + i) & 7
    }

    /// The tag of physical register `p`.
    #[inline]
    pub fn tag(&self, p: usize) -> Tag {
        match (self.ftw >> (2 * (p & 7))) & 3 {
            0 => Tag::Valid,
            1 => Tag::Zero,
            2 => Tag::Special,
            _ => Tag::Empty,
        }
    }

    /// Sets the tag of physical register `p`.
    #[inline]
    pub fn set_tag(&mut self, p: usize, t: Tag) {
        let sh = 2 * (p & 7);
        self.ftw = (self.ftw & !(3 << sh)) | ((t as u16) << sh);
    }

    /// Whether ST(`i`) is empty.
    #[inline]
    pub fn is_empty(&self, i: usize) -> bool {
        self.tag(self.phys(i)) == Tag::Empty
    }

    /// Reads ST(`i`) (whatever its tag).
    #[inline]
    pub fn st(&self, i: usize) -> u128 {
        self.st[self.phys(i)]
    }

    /// Writes ST(`i`) and tags it from its value.
    #[inline]
    pub fn set_st(&mut self, i: usize, v: u128) {
        let p = self.phys(i);
        self.st[p] = v & x87::MASK80;
        self.set_tag(p, x87::tag_of(v));
    }

    /// The "abridged" tag byte FXSAVE stores: one bit per physical
    /// register, 1 = not empty (SDM Vol. 1 §10.5.1.1).
    pub fn abridged_tag(&self) -> u8 {
        (0..8).fold(0u8, |acc, p| {
            acc | (u8::from(self.tag(p) != Tag::Empty) << p)
        })
    }

    /// Rebuilds the full tag word from an abridged tag byte (FXRSTOR).
    pub fn set_abridged_tag(&mut self, abridged: u8) {
        for p in 0..8 {
            let t = if abridged & (1 << p) == 0 {
                Tag::Empty
            } else {
                x87::tag_of(self.st[p])
            };
            self.set_tag(p, t);
        }
    }

    /// Recomputes FSW.ES and FSW.B from the exception flags and masks.
    pub fn update_summary(&mut self) {
        let unmasked = self.fsw & !self.fcw & fsw::EXCEPTIONS;
        if unmasked != 0 {
            self.fsw |= fsw::ES | fsw::B;
        } else {
            self.fsw &= !(fsw::ES | fsw::B);
        }
    }
}

/// #UD/#NM checks of an SSE/SSE2 instruction (SDM Vol. 2, exception class
/// tables): #UD if CR0.EM or not CR4.OSFXSR, then #NM if CR0.TS.
#[inline]
pub fn check_sse(cpu: &Cpu) -> Result<(), Fault> {
    if cpu.s.cr0 & cr0::EM != 0 || cpu.s.cr4 & cr4::OSFXSR == 0 {
        return Err(Fault::InvalidOpcode);
    }
    if cpu.s.cr0 & cr0::TS != 0 {
        return Err(Fault::DeviceNotAvailable);
    }
    Ok(())
}

/// The checks of a non-waiting x87 instruction (FNINIT, FNSTSW, ...):
/// #NM if CR0.EM or CR0.TS (SDM Vol. 3A §2.5, Table 2-2).
#[inline]
pub fn check_x87_nowait(cpu: &Cpu) -> Result<(), Fault> {
    if cpu.s.cr0 & (cr0::EM | cr0::TS) != 0 {
        return Err(Fault::DeviceNotAvailable);
    }
    Ok(())
}

/// The checks of a waiting x87 instruction: #NM as for non-waiting ones,
/// then #MF if an unmasked exception is pending (FSW.ES) and CR0.NE = 1.
/// With CR0.NE = 0 the PC-style FERR#/IGNNE# path would raise IRQ 13
/// through the interrupt controller; the emu engine does not model that
/// wire, so a pending exception is then simply not reported.
#[inline]
pub fn check_x87(cpu: &Cpu) -> Result<(), Fault> {
    check_x87_nowait(cpu)?;
    pending_mf(cpu)
}

/// #MF for a pending unmasked x87 exception (CR0.NE = 1 only).
#[inline]
pub fn pending_mf(cpu: &Cpu) -> Result<(), Fault> {
    if cpu.s.fpu.fsw & fsw::ES != 0 && cpu.s.cr0 & cr0::NE != 0 {
        return Err(Fault::X87Error);
    }
    Ok(())
}

/// The checks of an MMX instruction (SDM Vol. 3A §12.2, Table 12-1):
/// #UD if CR0.EM, #NM if CR0.TS, then #MF for a pending x87 exception.
#[inline]
pub fn check_mmx(cpu: &Cpu) -> Result<(), Fault> {
    if cpu.s.cr0 & cr0::EM != 0 {
        return Err(Fault::InvalidOpcode);
    }
    if cpu.s.cr0 & cr0::TS != 0 {
        return Err(Fault::DeviceNotAvailable);
    }
    pending_mf(cpu)
}

/// The handler for `insn`, if the FPU/SIMD units implement it, with its
/// effect on block links (x87, MMX and SSE instructions change only their
/// own state, general registers, flags and memory: they keep the links).
pub fn lookup(insn: &Instruction) -> Option<HandlerEntry> {
    let m = insn.mnemonic();
    if matches!(m, Mnemonic::Fxsave | Mnemonic::Fxsave64) {
        return Some((fxsave::fxsave, KeepsLinks));
    }
    if matches!(m, Mnemonic::Fxrstor | Mnemonic::Fxrstor64) {
        return Some((fxsave::fxrstor, KeepsLinks));
    }
    control::lookup(insn)
        .or_else(|| avx::lookup(insn))
        .or_else(|| xsave::lookup(insn))
        .or_else(|| sse_move::lookup(insn))
        .or_else(|| sse_int::lookup(insn))
        .or_else(|| ssse3::lookup(insn))
        .or_else(|| sse3::lookup(insn))
        .or_else(|| sse41::lookup(insn))
        .or_else(|| sse41_float::lookup(insn))
        .or_else(|| sse42_string::lookup(insn))
        .or_else(|| aes::lookup(insn))
        .or_else(|| clmul::lookup(insn))
        .or_else(|| sha::lookup(insn))
        .or_else(|| sse_float::lookup(insn))
        .or_else(|| x87::lookup(insn))
        .or_else(|| x87_arith::lookup(insn))
}

/// The checks of an SSE or MMX instruction, chosen by its operands: the
/// MMX forms check as MMX ([`check_mmx`]), the XMM forms as SSE
/// ([`check_sse`]). Returns whether the instruction is an MMX form.
#[inline]
pub fn check_simd(cpu: &Cpu, insn: &Instruction) -> Result<bool, Fault> {
    if access::uses_mmx(insn) {
        check_mmx(cpu)?;
        Ok(true)
    } else {
        check_sse(cpu)?;
        Ok(false)
    }
}
