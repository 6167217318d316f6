//! State save areas: FXSAVE/FXRSTOR (and their REX.W forms) with the
//! 512-byte layout of SDM Vol. 1 §10.5.1 (Table 10-2), and the x87
//! environment/state images of FNSTENV/FLDENV/FNSAVE/FRSTOR in their 16-
//! and 32-bit, real- and protected-mode formats (SDM Vol. 1 §8.1.10,
//! Figures 8-9 to 8-12).
//!
//! FXSAVE writes bytes 0-159 and the XMM registers (8 outside 64-bit mode,
//! 16 in it); the reserved and software-available tail is left alone.
//! XMM state is saved whatever CR4.OSFXSR says (the SDM leaves that case
//! implementation-specific), and EFER.FFXSR is not supported.

use iced_x86::{Instruction, Mnemonic};

use super::access::{read_block, write_block};
use super::{check_x87, check_x87_nowait, mxcsr, x87, FpuState};
use crate::exec::operand::memory_operand;
use crate::fault::Fault;
use crate::state::CodeSize;
use crate::Cpu;

/// Whether the CPU is in 64-bit mode.
fn bits64(cpu: &Cpu) -> bool {
    cpu.s.code_size() == CodeSize::Bits64
}

/// The 512-byte FXSAVE image of `f`; `rex_w` selects the 64-bit pointer
/// format, `nxmm` the number of XMM registers stored.
pub fn fxsave_image(f: &FpuState, rex_w: bool, nxmm: usize) -> [u8; 512] {
    let mut b = [0u8; 512];
    b[0..2].copy_from_slice(&f.fcw.to_le_bytes());
    b[2..4].copy_from_slice(&f.fsw.to_le_bytes());
    b[4] = f.abridged_tag();
    b[6..8].copy_from_slice(&f.fop.to_le_bytes());
    if rex_w {
        b[8..16].copy_from_slice(&f.fip.to_le_bytes());
        b[16..24].copy_from_slice(&f.fdp.to_le_bytes());
    } else {
        b[8..12].copy_from_slice(&(f.fip as u32).to_le_bytes());
        b[12..14].copy_from_slice(&f.fcs.to_le_bytes());
        b[16..20].copy_from_slice(&(f.fdp as u32).to_le_bytes());
        b[20..22].copy_from_slice(&f.fds.to_le_bytes());
    }
    b[24..28].copy_from_slice(&f.mxcsr.to_le_bytes());
    b[28..32].copy_from_slice(&mxcsr::WRITABLE.to_le_bytes());
    for i in 0..8 {
        let at = 32 + 16 * i;
        b[at..at + 10].copy_from_slice(&f.st(i).to_le_bytes()[..10]);
    }
    for (i, x) in f.xmm.iter().enumerate().take(nxmm) {
        let at = 160 + 16 * i;
        b[at..at + 16].copy_from_slice(&x.to_le_bytes());
    }
    b
}

/// Loads `f` from an FXSAVE image; #GP(0) if MXCSR has reserved bits set.
pub fn fxrstor_image(
    f: &mut FpuState,
    b: &[u8; 512],
    rex_w: bool,
    nxmm: usize,
) -> Result<(), Fault> {
    let u16_at = |at: usize| u16::from_le_bytes([b[at], b[at + 1]]);
    let u32_at = |at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
    let mx = u32_at(24);
    if mx & !mxcsr::WRITABLE != 0 {
        return Err(Fault::GeneralProtection(0));
    }
    f.mxcsr = mx;
    f.fcw = u16_at(0);
    f.fsw = u16_at(2);
    f.fop = u16_at(6) & 0x7ff;
    if rex_w {
        f.fip = u64::from(u32_at(8)) | u64::from(u32_at(12)) << 32;
        f.fdp = u64::from(u32_at(16)) | u64::from(u32_at(20)) << 32;
    } else {
        f.fip = u64::from(u32_at(8));
        f.fcs = u16_at(12);
        f.fdp = u64::from(u32_at(16));
        f.fds = u16_at(20);
    }
    let top = f.top();
    for i in 0..8 {
        let at = 32 + 16 * i;
        let mut v = [0u8; 16];
        v[..10].copy_from_slice(&b[at..at + 10]);
        f.st[(top + i) & 7] = u128::from_le_bytes(v);
    }
    f.set_abridged_tag(b[4]);
    for (i, x) in f.xmm.iter_mut().enumerate().take(nxmm) {
        let at = 160 + 16 * i;
        let mut v = [0u8; 16];
        v.copy_from_slice(&b[at..at + 16]);
        *x = u128::from_le_bytes(v);
    }
    Ok(())
}

/// FXSAVE/FXSAVE64 m512: #NM if CR0.TS or CR0.EM, #GP(0) if the operand
/// is not 16-byte aligned (SDM Vol. 2A "FXSAVE").
pub fn fxsave(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    check_x87_nowait(cpu)?;
    let rex_w = insn.mnemonic() == Mnemonic::Fxsave64;
    let nxmm = if bits64(cpu) { 16 } else { 8 };
    let (s, off) = memory_operand(cpu, insn);
    let img = fxsave_image(&cpu.s.fpu, rex_w, nxmm);
    let len = 160 + 16 * nxmm;
    write_block(cpu, s, off, &img[..len], 16)
}

/// FXRSTOR/FXRSTOR64 m512.
pub fn fxrstor(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    check_x87_nowait(cpu)?;
    let rex_w = insn.mnemonic() == Mnemonic::Fxrstor64;
    let nxmm = if bits64(cpu) { 16 } else { 8 };
    let (s, off) = memory_operand(cpu, insn);
    let mut img = [0u8; 512];
    read_block(cpu, s, off, &mut img, 16)?;
    let mut f = cpu.s.fpu.clone();
    fxrstor_image(&mut f, &img, rex_w, nxmm)?;
    cpu.s.fpu = f;
    Ok(())
}

/// The full tag word as FNSTENV reports it: empty stays empty, the others
/// are recomputed from the register contents.
fn full_tags(f: &FpuState) -> u16 {
    (0..8).fold(0u16, |acc, p| {
        let t = if f.tag(p) == super::Tag::Empty {
            3
        } else {
            x87::tag_of(f.st[p]) as u16
        };
        acc | t << (2 * p)
    })
}

/// Builds the environment image (14 or 28 bytes) for the current mode.
fn env_image(cpu: &Cpu, wide: bool) -> Vec<u8> {
    let f = &cpu.s.fpu;
    let real = !cpu.s.protected_mode() || cpu.s.v86_mode();
    let words: [u32; 7] = if real {
        let ip = f.fip as u32;
        let dp = f.fdp as u32;
        [
            u32::from(f.fcw),
            u32::from(f.fsw),
            u32::from(full_tags(f)),
            ip & 0xffff,
            (ip >> 16) << 12 | u32::from(f.fop & 0x7ff),
            dp & 0xffff,
            (dp >> 16) << 12,
        ]
    } else {
        [
            u32::from(f.fcw),
            u32::from(f.fsw),
            u32::from(full_tags(f)),
            f.fip as u32,
            u32::from(f.fcs) | u32::from(f.fop & 0x7ff) << 16,
            f.fdp as u32,
            u32::from(f.fds),
        ]
    };
    let mut out = Vec::with_capacity(28);
    for (i, w) in words.iter().enumerate() {
        if wide {
            // The reserved upper halves of the control, status and tag
            // dwords read as ones on Intel CPUs.
            let w = if i < 3 { w | 0xffff_0000 } else { *w };
            out.extend_from_slice(&w.to_le_bytes());
        } else {
            // 16-bit real mode keeps only the low 4 bits of the upper
            // pointer halves; `as u16` keeps the formats' low words.
            let w = if real && (i == 4 || i == 6) {
                (w >> 4 & 0xf000) | (w & 0x7ff)
            } else {
                *w
            };
            out.extend_from_slice(&(w as u16).to_le_bytes());
        }
    }
    out
}

/// Loads the environment from its image.
fn load_env(cpu: &mut Cpu, b: &[u8], wide: bool) {
    let real = !cpu.s.protected_mode() || cpu.s.v86_mode();
    let word = |i: usize| -> u32 {
        if wide {
            u32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]])
        } else {
            u32::from(u16::from_le_bytes([b[2 * i], b[2 * i + 1]]))
        }
    };
    let f = &mut cpu.s.fpu;
    f.fcw = (word(0) as u16 & 0x1f3f) | 0x40;
    f.fsw = word(1) as u16;
    f.ftw = word(2) as u16;
    if real {
        let hi_shift = 12;
        f.fip = u64::from(word(3) & 0xffff | (word(4) >> hi_shift) << 16);
        f.fop = (word(4) & 0x7ff) as u16;
        f.fdp = u64::from(word(5) & 0xffff | (word(6) >> hi_shift) << 16);
    } else {
        f.fip = u64::from(word(3));
        f.fcs = word(4) as u16;
        f.fop = if wide {
            (word(4) >> 16 & 0x7ff) as u16
        } else {
            0
        };
        f.fdp = u64::from(word(5));
        f.fds = word(6) as u16;
    }
    f.update_summary();
}

/// FNSTENV, FLDENV, FNSAVE, FRSTOR (operand size from the memory size:
/// 14/28-byte environments, 94/108-byte states).
pub fn env_op(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    let size = insn.memory_size().size();
    let wide = matches!(size, 28 | 108);
    let env_len = if wide { 28 } else { 14 };
    let (s, off) = memory_operand(cpu, insn);
    match insn.mnemonic() {
        Mnemonic::Fnstenv | Mnemonic::Fnsave => {
            check_x87_nowait(cpu)?;
            let mut img = env_image(cpu, wide);
            let save = insn.mnemonic() == Mnemonic::Fnsave;
            if save {
                for i in 0..8 {
                    img.extend_from_slice(&cpu.s.fpu.st(i).to_le_bytes()[..10]);
                }
            }
            write_block(cpu, s, off, &img, 1)?;
            if save {
                cpu.s.fpu.finit();
            } else {
                cpu.s.fpu.fcw |= 0x3f;
                cpu.s.fpu.update_summary();
            }
            Ok(())
        }
        _ => {
            check_x87(cpu)?;
            let mut img = vec![0u8; size];
            read_block(cpu, s, off, &mut img, 1)?;
            load_env(cpu, &img[..env_len], wide);
            if insn.mnemonic() == Mnemonic::Frstor {
                let top = cpu.s.fpu.top();
                for i in 0..8 {
                    let at = env_len + 10 * i;
                    let mut v = [0u8; 16];
                    v[..10].copy_from_slice(&img[at..at + 10]);
                    cpu.s.fpu.st[(top + i) & 7] = u128::from_le_bytes(v);
                }
            }
            Ok(())
        }
    }
}
