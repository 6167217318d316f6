//! The XSAVE feature set (SDM Vol. 1 ch. 13): XCR0's state components,
//! the XSAVE area, and XSAVE, XSAVEOPT, XSAVEC and XRSTOR with their
//! 64-bit (REX.W) forms.
//!
//! Three state components exist (XCR0 bits 0-2, [`XCR0_SUPPORTED`]):
//! x87 (FCW..FDP and ST0-7 in the legacy region), SSE (XMM0-15, with MXCSR
//! saved alongside) and AVX (bits 255:128 of YMM0-15, [`AVX_OFFSET`]).
//! The area is the 512-byte FXSAVE layout, the 64-byte XSAVE header
//! (XSTATE_BV, XCOMP_BV) and the AVX component at offset 576 in both the
//! standard and the compacted format (it is the only extended component).
//!
//! XINUSE (which components are not in their initial configuration,
//! §13.6) is computed from the registers when it is needed rather than
//! tracked; the SDM allows a processor to report a component as in use
//! when it is in fact initial, and this one does not: a component is in
//! use exactly when it differs from its initial values. XSAVEOPT uses the
//! init optimization (components not in use are not written) but not the
//! modified optimization. XSAVES/XRSTORS (supervisor components) and
//! XGETBV with ECX = 1 are not implemented and not advertised.

use iced_x86::{Instruction, Mnemonic};

use super::access::{probe_write, read_block, write_block};
use super::fxsave::{fxrstor_image, fxsave_image};
use super::{mxcsr, FpuState};
use crate::exec::operand::memory_operand;
use crate::exec::HandlerEntry;
use crate::exec::LinkEffect::KeepsLinks;
use crate::fault::Fault;
use crate::state::{cr0, cr4, reg, CodeSize};
use crate::Cpu;

/// XCR0 bit of the x87 state component.
pub const X87: u64 = 1 << 0;
/// XCR0 bit of the SSE state component (XMM registers, with MXCSR).
pub const SSE: u64 = 1 << 1;
/// XCR0 bit of the AVX state component (the upper halves of YMM0-15).
pub const AVX: u64 = 1 << 2;
/// The XCR0 bits the emu engine supports (CPUID.(EAX=0DH,ECX=0):EAX).
pub const XCR0_SUPPORTED: u64 = X87 | SSE | AVX;
/// Offset of the XSAVE header in the area.
pub const HEADER_OFFSET: usize = 512;
/// Offset of the AVX component (standard and, as the first extended
/// component, compacted format).
pub const AVX_OFFSET: usize = 576;
/// Size of the AVX component.
pub const AVX_SIZE: usize = 256;
/// Bit 63 of XCOMP_BV: the area is in the compacted format.
const COMPACTED: u64 = 1 << 63;

/// Whether `v` is a valid XCR0 for XSETBV (SDM Vol. 2C "XSETBV"): x87
/// set, only supported bits, and AVX only together with SSE.
pub fn valid_xcr0(v: u64) -> bool {
    v & X87 != 0 && v & !XCR0_SUPPORTED == 0 && (v & AVX == 0 || v & SSE != 0)
}

/// The size of an area holding the components of `xcr0` in the standard
/// format (CPUID.(EAX=0DH,ECX=0):EBX).
pub fn area_size(xcr0: u64) -> u32 {
    if xcr0 & AVX != 0 {
        (AVX_OFFSET + AVX_SIZE) as u32
    } else {
        AVX_OFFSET as u32
    }
}

/// XINUSE: the components of `f` that are not in their initial
/// configuration (SDM Vol. 1 §13.6). MXCSR is not part of any component's
/// initial configuration here; it is saved with SSE or AVX.
pub fn in_use(f: &FpuState) -> u64 {
    let x87_initial = f.fcw == 0x37f
        && f.fsw == 0
        && f.ftw == 0xffff
        && f.fop == 0
        && f.fip == 0
        && f.fdp == 0
        && f.fcs == 0
        && f.fds == 0
        && f.st.iter().all(|&v| v == 0);
    let mut r = 0;
    if !x87_initial {
        r |= X87;
    }
    if f.xmm.iter().any(|&v| v != 0) {
        r |= SSE;
    }
    if f.ymm_hi.iter().any(|&v| v != 0) {
        r |= AVX;
    }
    r
}

/// Puts component `bit` of `f` into its initial configuration.
fn init_component(f: &mut FpuState, bit: u64) {
    match bit {
        X87 => {
            f.finit();
            f.st = [0; 8];
        }
        SSE => f.xmm = [0; 16],
        _ => f.ymm_hi = [0; 16],
    }
}

/// The handler for `insn`, if it is one of this module's.
pub fn lookup(insn: &Instruction) -> Option<HandlerEntry> {
    use Mnemonic as M;
    match insn.mnemonic() {
        M::Xsave | M::Xsave64 | M::Xsaveopt | M::Xsaveopt64 | M::Xsavec | M::Xsavec64 => {
            Some((save, KeepsLinks))
        }
        M::Xrstor | M::Xrstor64 => Some((restore, KeepsLinks)),
        _ => None,
    }
}

/// #UD unless CR4.OSXSAVE; #NM if CR0.TS (SDM Vol. 2C "XSAVE",
/// protected-mode exceptions).
fn check(cpu: &Cpu) -> Result<(), Fault> {
    if cpu.s.cr4 & cr4::OSXSAVE == 0 {
        return Err(Fault::InvalidOpcode);
    }
    if cpu.s.cr0 & cr0::TS != 0 {
        return Err(Fault::DeviceNotAvailable);
    }
    Ok(())
}

/// The requested-feature bitmap: XCR0 AND EDX:EAX.
fn rfbm(cpu: &Cpu) -> u64 {
    let edx_eax = (cpu.s.gpr[reg::RDX] << 32) | (cpu.s.gpr[reg::RAX] & 0xffff_ffff);
    cpu.s.xcr0 & edx_eax
}

/// What one save instruction does differently.
#[derive(Clone, Copy, PartialEq, Eq)]
enum SaveKind {
    /// XSAVE: every requested component is written.
    Standard,
    /// XSAVEOPT: components in their initial configuration are skipped.
    Optimized,
    /// XSAVEC: the compacted format, with the init optimization.
    Compacted,
}

/// XSAVE, XSAVEOPT and XSAVEC (and their 64 forms): #GP(0) unless the
/// area is 64-byte aligned; the whole area the instruction may write is
/// checked before any byte is, so a fault leaves memory untouched.
fn save(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    use Mnemonic as M;
    check(cpu)?;
    let kind = match insn.mnemonic() {
        M::Xsaveopt | M::Xsaveopt64 => SaveKind::Optimized,
        M::Xsavec | M::Xsavec64 => SaveKind::Compacted,
        _ => SaveKind::Standard,
    };
    let rex_w = matches!(insn.mnemonic(), M::Xsave64 | M::Xsaveopt64 | M::Xsavec64);
    let nxmm = if cpu.s.code_size() == CodeSize::Bits64 {
        16
    } else {
        8
    };
    let rfbm = rfbm(cpu);
    let inuse = in_use(&cpu.s.fpu);
    let (s, off) = memory_operand(cpu, insn);
    let end = if rfbm & AVX != 0 {
        AVX_OFFSET + AVX_SIZE
    } else {
        AVX_OFFSET
    };
    // Alignment first (#GP(0)), then every page of the area.
    super::access::block_linear(cpu, s, off, end as u64, crate::mmu::AccessKind::Write, 64)?;
    probe_write(cpu, s, off, end as u64)?;

    let written = |bit: u64| rfbm & bit != 0 && (kind == SaveKind::Standard || inuse & bit != 0);
    let legacy = fxsave_image(&cpu.s.fpu, rex_w, nxmm);
    if written(X87) {
        write_block(cpu, s, off, &legacy[0..24], 1)?;
        write_block(cpu, s, off + 32, &legacy[32..160], 1)?;
    }
    if rfbm & (SSE | AVX) != 0 {
        write_block(cpu, s, off + 24, &legacy[24..32], 1)?;
    }
    if written(SSE) {
        write_block(cpu, s, off + 160, &legacy[160..160 + 16 * nxmm], 1)?;
    }
    if written(AVX) {
        let mut b = [0u8; AVX_SIZE];
        for (i, v) in cpu.s.fpu.ymm_hi.iter().enumerate().take(nxmm) {
            b[16 * i..16 * i + 16].copy_from_slice(&v.to_le_bytes());
        }
        write_block(cpu, s, off + AVX_OFFSET as u64, &b[..16 * nxmm], 1)?;
    }
    let header = off + HEADER_OFFSET as u64;
    if kind == SaveKind::Compacted {
        // XSTATE_BV, XCOMP_BV, then zeros to the end of the header.
        let mut h = [0u8; 64];
        h[0..8].copy_from_slice(&(rfbm & inuse).to_le_bytes());
        h[8..16].copy_from_slice(&(COMPACTED | rfbm).to_le_bytes());
        write_block(cpu, s, header, &h, 1)
    } else {
        // Only the XSTATE_BV bits of the requested components change.
        let mut b = [0u8; 8];
        read_block(cpu, s, header, &mut b, 1)?;
        let old = u64::from_le_bytes(b);
        let new = (old & !rfbm) | (rfbm & inuse);
        write_block(cpu, s, header, &new.to_le_bytes(), 1)
    }
}

/// XRSTOR/XRSTOR64: loads the requested components present in XSTATE_BV
/// and initializes the requested ones that are not (SDM Vol. 2D
/// "XRSTOR"), from either format. #GP(0) for a misaligned area, a header
/// with reserved bits or bits outside XCR0, or an MXCSR with reserved
/// bits; on a fault nothing is loaded.
fn restore(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    check(cpu)?;
    let rex_w = insn.mnemonic() == Mnemonic::Xrstor64;
    let nxmm = if cpu.s.code_size() == CodeSize::Bits64 {
        16
    } else {
        8
    };
    let rfbm = rfbm(cpu);
    let (s, off) = memory_operand(cpu, insn);
    super::access::block_linear(cpu, s, off, 64, crate::mmu::AccessKind::Read, 64)?;
    let mut header = [0u8; 64];
    read_block(cpu, s, off + HEADER_OFFSET as u64, &mut header, 1)?;
    let word = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&header[8 * i..8 * i + 8]);
        u64::from_le_bytes(b)
    };
    let (xstate_bv, xcomp_bv) = (word(0), word(1));
    let compacted = xcomp_bv & COMPACTED != 0;
    let rest_zero = if compacted {
        (2..8).all(|i| word(i) == 0)
    } else {
        (1..3).all(|i| word(i) == 0)
    };
    let bad = if compacted {
        xcomp_bv & !COMPACTED & !cpu.s.xcr0 != 0 || xstate_bv & !xcomp_bv != 0
    } else {
        xstate_bv & !cpu.s.xcr0 != 0
    };
    if bad || !rest_zero {
        return Err(Fault::GeneralProtection(0));
    }
    let present = rfbm & xstate_bv;
    let mut legacy = [0u8; 512];
    read_block(cpu, s, off, &mut legacy, 1)?;
    let load_mxcsr = if compacted {
        present & (SSE | AVX) != 0
    } else {
        rfbm & (SSE | AVX) != 0
    };
    if !load_mxcsr {
        // Keep the current MXCSR (and keep a reserved value in memory
        // from faulting when MXCSR is not loaded).
        legacy[24..28].copy_from_slice(&cpu.s.fpu.mxcsr.to_le_bytes());
    }
    let mut image = cpu.s.fpu.clone();
    fxrstor_image(&mut image, &legacy, rex_w, nxmm)?;
    let mut avx = [0u8; AVX_SIZE];
    if present & AVX != 0 {
        read_block(cpu, s, off + AVX_OFFSET as u64, &mut avx[..16 * nxmm], 1)?;
    }

    let f = &mut cpu.s.fpu;
    for bit in [X87, SSE, AVX] {
        if rfbm & bit == 0 {
            continue;
        }
        if present & bit == 0 {
            init_component(f, bit);
            continue;
        }
        match bit {
            X87 => {
                f.st = image.st;
                f.fcw = image.fcw;
                f.fsw = image.fsw;
                f.ftw = image.ftw;
                f.fop = image.fop;
                f.fip = image.fip;
                f.fcs = image.fcs;
                f.fdp = image.fdp;
                f.fds = image.fds;
            }
            SSE => f.xmm[..nxmm].copy_from_slice(&image.xmm[..nxmm]),
            _ => {
                for (i, hi) in f.ymm_hi.iter_mut().enumerate().take(nxmm) {
                    let mut b = [0u8; 16];
                    b.copy_from_slice(&avx[16 * i..16 * i + 16]);
                    *hi = u128::from_le_bytes(b);
                }
            }
        }
    }
    if load_mxcsr {
        f.mxcsr = image.mxcsr;
    } else if compacted && rfbm & SSE != 0 {
        // The compacted format initializes MXCSR with the SSE component.
        f.mxcsr = mxcsr::RESET;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xcr0_needs_x87_and_avx_needs_sse() {
        assert!(valid_xcr0(X87));
        assert!(valid_xcr0(X87 | SSE | AVX));
        assert!(!valid_xcr0(SSE));
        assert!(!valid_xcr0(X87 | AVX));
        assert!(!valid_xcr0(X87 | SSE | 1 << 3));
    }

    #[test]
    fn the_area_grows_by_the_avx_component() {
        assert_eq!(area_size(X87 | SSE), 576);
        assert_eq!(area_size(X87 | SSE | AVX), 832);
    }

    #[test]
    fn power_on_state_is_in_use_only_for_x87() {
        // FCW 0x40 and FTW 0x5555 at power-on differ from FNINIT's.
        let mut f = FpuState::default();
        assert_eq!(in_use(&f), X87);
        f.finit();
        assert_eq!(in_use(&f), 0);
        f.ymm_hi[3] = 1;
        assert_eq!(in_use(&f), AVX);
    }
}
