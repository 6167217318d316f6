//! Operands of x87, MMX and SSE instructions: XMM/MMX/GPR registers and
//! memory blocks wider than 8 bytes (16-byte vectors, 10-byte x87 values,
//! the 512-byte FXSAVE area).
//!
//! Block accesses have the fault semantics of [`Cpu::read`]/[`Cpu::write`]
//! (SDM Vol. 3A §5.3, §4.7): segment limit and type (#GP(0), #SS(0) for
//! SS), canonical addresses in 64-bit mode, and every page translated
//! before any byte is read or written, so a #PF (with CR2) on the second
//! page leaves memory untouched. Where the instruction requires it, a
//! misaligned operand is #GP(0) (SDM Vol. 1 §11.6.7: legacy SSE 16-byte
//! operands other than the explicitly unaligned moves), checked before the
//! canonical check. The unaligned 16-byte moves raise #AC when misaligned
//! with alignment checking on (the host CPU does); narrower SSE memory
//! operands go through [`Cpu::read`], which checks #AC by their size.

use iced_x86::{Instruction, Mnemonic, OpKind, Register};

use crate::exec::operand::{memory_operand, read_reg, write_reg};
use crate::fault::Fault;
use crate::mem::canonical;
use crate::mmu::{AccessKind, Translation};
use crate::state::seg;
use crate::Cpu;

/// The linear address of a block of `len` bytes at `seg:off`, with segment
/// and canonical checks, and #GP(0) unless aligned to `align` bytes.
pub fn block_linear(
    cpu: &Cpu,
    seg_index: usize,
    off: u64,
    len: u64,
    kind: AccessKind,
    align: u64,
) -> Result<u64, Fault> {
    let lin = if cpu.s.long_mode() && cpu.s.seg[seg::CS].l {
        let base = if seg_index >= seg::FS {
            cpu.s.seg[seg_index].base
        } else {
            0
        };
        let lin = base.wrapping_add(off);
        let last = lin.wrapping_add(len - 1);
        // A required alignment is checked first: #GP(0) even where the
        // address is also non-canonical through SS.
        if align > 1 && lin & (align - 1) != 0 {
            return Err(Fault::GeneralProtection(0));
        }
        if !canonical(lin) || !canonical(last) {
            return Err(if seg_index == seg::SS {
                Fault::StackFault(0)
            } else {
                Fault::GeneralProtection(0)
            });
        }
        lin
    } else {
        let lin = cpu.linear(seg_index, off, 1, kind)?;
        cpu.linear(seg_index, off.wrapping_add(len - 1), 1, kind)?;
        lin
    };
    if align > 1 && lin & (align - 1) != 0 {
        return Err(Fault::GeneralProtection(0));
    }
    // The explicitly unaligned 16-byte moves raise #AC when alignment
    // checking is on and they are not 16-byte aligned (as the host CPU
    // does; the SDM's exception tables only promise it for 8 bytes or less).
    if align <= 1 && len == 16 && cpu.misaligned_for_ac(lin, 16) {
        return Err(Fault::AlignmentCheck);
    }
    Ok(lin)
}

/// Checks that a store of `len` bytes at `seg:off` would succeed
/// (segment, canonical and page checks for every page it touches),
/// without writing: x87 stores probe before they change any FPU state.
pub fn probe_write(cpu: &mut Cpu, seg_index: usize, off: u64, len: u64) -> Result<(), Fault> {
    let lin = block_linear(cpu, seg_index, off, len, AccessKind::Write, 1)?;
    pages(cpu, lin, len, AccessKind::Write)?;
    Ok(())
}

/// Translates the (at most two) pages of `len` bytes at `lin`.
fn pages(
    cpu: &mut Cpu,
    lin: u64,
    len: u64,
    kind: AccessKind,
) -> Result<[(Translation, u64); 2], Fault> {
    let user = cpu.user();
    let first = (0x1000 - (lin & 0xfff)).min(len);
    let t0 = cpu.translate(lin, kind, user)?;
    if first == len {
        return Ok([(t0, len), (t0, 0)]);
    }
    let second = lin.wrapping_add(first);
    if cpu.s.long_mode() && cpu.s.seg[seg::CS].l && !canonical(second) {
        return Err(Fault::GeneralProtection(0));
    }
    let t1 = cpu.translate(second, kind, user)?;
    Ok([(t0, first), (t1, len - first)])
}

fn at(t: Translation, by: u64) -> Translation {
    Translation {
        phys: t.phys + by,
        // SAFETY: `by` stays inside the translated page (callers pass
        // offsets below the part length, which ends at the page end).
        host: t.host.map(|p| unsafe { p.add(by as usize) }),
    }
}

/// Reads `buf.len()` bytes at `seg:off` (see the module doc for faults).
pub fn read_block(
    cpu: &mut Cpu,
    seg_index: usize,
    off: u64,
    buf: &mut [u8],
    align: u64,
) -> Result<(), Fault> {
    let len = buf.len() as u64;
    let lin = block_linear(cpu, seg_index, off, len, AccessKind::Read, align)?;
    let parts = pages(cpu, lin, len, AccessKind::Read)?;
    let mut pos = 0usize;
    for (t, n) in parts {
        let mut i = 0u64;
        while i < n {
            let step: u8 = if n - i >= 8 { 8 } else { 1 };
            let v = cpu.read_phys_at(at(t, i), step);
            buf[pos..pos + usize::from(step)]
                .copy_from_slice(&v.to_le_bytes()[..usize::from(step)]);
            pos += usize::from(step);
            i += u64::from(step);
        }
    }
    Ok(())
}

/// Writes `buf` at `seg:off`, after translating every page it touches.
pub fn write_block(
    cpu: &mut Cpu,
    seg_index: usize,
    off: u64,
    buf: &[u8],
    align: u64,
) -> Result<(), Fault> {
    let len = buf.len() as u64;
    let lin = block_linear(cpu, seg_index, off, len, AccessKind::Write, align)?;
    let parts = pages(cpu, lin, len, AccessKind::Write)?;
    let mut pos = 0usize;
    for (t, n) in parts {
        let mut i = 0u64;
        while i < n {
            let step: u8 = if n - i >= 8 { 8 } else { 1 };
            let mut b = [0u8; 8];
            b[..usize::from(step)].copy_from_slice(&buf[pos..pos + usize::from(step)]);
            cpu.write_phys_at(at(t, i), step, u64::from_le_bytes(b));
            pos += usize::from(step);
            i += u64::from(step);
        }
    }
    Ok(())
}

/// Whether a legacy SSE instruction requires its 16-byte memory operand
/// to be 16-byte aligned (all but the explicitly unaligned forms and
/// SSE4.2's string compares; VEX forms never do, except the explicitly
/// aligned ones: [`super::avx::operands::needs_alignment`]).
pub fn needs_alignment(insn: &Instruction) -> bool {
    insn.encoding() == iced_x86::EncodingKind::Legacy
        && insn.memory_size().size() == 16
        && !matches!(
            insn.mnemonic(),
            Mnemonic::Movups
                | Mnemonic::Movupd
                | Mnemonic::Movdqu
                | Mnemonic::Lddqu
                | Mnemonic::Pcmpestri
                | Mnemonic::Pcmpestrm
                | Mnemonic::Pcmpistri
                | Mnemonic::Pcmpistrm
        )
}

/// The index of an XMM register operand.
#[inline]
pub fn xmm_index(r: Register) -> usize {
    (r as usize).wrapping_sub(Register::XMM0 as usize) & 15
}

/// The index of an MMX register operand.
#[inline]
pub fn mm_index(r: Register) -> usize {
    (r as usize).wrapping_sub(Register::MM0 as usize) & 7
}

/// Reads an MMX register (the significand of physical x87 register i).
#[inline]
pub fn read_mm(cpu: &Cpu, i: usize) -> u64 {
    cpu.s.fpu.st[i & 7] as u64
}

/// Writes an MMX register: the significand takes the value, the
/// exponent/sign bits become all ones, and (as for every MMX instruction)
/// TOP = 0 and all tags valid (SDM Vol. 1 §9.5.1).
#[inline]
pub fn write_mm(cpu: &mut Cpu, i: usize, v: u64) {
    cpu.s.fpu.st[i & 7] = u128::from(v) | (0xffffu128 << 64);
    mmx_enter(cpu);
}

/// The x87 side effects of an MMX instruction: TOP = 0, all tags valid.
#[inline]
pub fn mmx_enter(cpu: &mut Cpu) {
    cpu.s.fpu.set_top(0);
    cpu.s.fpu.ftw = 0;
}

/// In 64-bit mode, a SIMD access whose last byte is not canonical is
/// #GP(0) (#SS(0) for SS) before any page is translated: unlike integer
/// accesses, real CPUs report it ahead of a page fault on the first part.
pub fn check_far_end(cpu: &Cpu, s: usize, off: u64, size: usize) -> Result<(), Fault> {
    if cpu.s.long_mode() && cpu.s.seg[seg::CS].l {
        let base = if s >= seg::FS { cpu.s.seg[s].base } else { 0 };
        let last = base.wrapping_add(off).wrapping_add(size.max(1) as u64 - 1);
        if !canonical(last) {
            return Err(if s == seg::SS {
                Fault::StackFault(0)
            } else {
                Fault::GeneralProtection(0)
            });
        }
    }
    Ok(())
}

/// Reads memory operand bytes of `insn` (1-16 bytes) zero-extended.
pub fn read_mem_operand(cpu: &mut Cpu, insn: &Instruction) -> Result<u128, Fault> {
    let (s, off) = memory_operand(cpu, insn);
    let size = insn.memory_size().size();
    if size <= 8 {
        check_far_end(cpu, s, off, size)?;
        return Ok(u128::from(cpu.read(s, off, size as u8)?));
    }
    let mut b = [0u8; 16];
    let align = if needs_alignment(insn) { 16 } else { 1 };
    read_block(cpu, s, off, &mut b[..size.min(16)], align)?;
    Ok(u128::from_le_bytes(b))
}

/// Writes the memory operand of `insn` (1-16 bytes of `v`).
pub fn write_mem_operand(cpu: &mut Cpu, insn: &Instruction, v: u128) -> Result<(), Fault> {
    let (s, off) = memory_operand(cpu, insn);
    let size = insn.memory_size().size();
    if size <= 8 {
        check_far_end(cpu, s, off, size)?;
        return cpu.write(s, off, size as u8, v as u64);
    }
    let align = if needs_alignment(insn) { 16 } else { 1 };
    write_block(cpu, s, off, &v.to_le_bytes()[..size.min(16)], align)
}

/// Reads operand `n`: an XMM, MMX or general register, or memory.
pub fn read_operand(cpu: &mut Cpu, insn: &Instruction, n: u32) -> Result<u128, Fault> {
    match insn.op_kind(n) {
        OpKind::Register => {
            let r = insn.op_register(n);
            Ok(if r.is_xmm() {
                cpu.s.fpu.xmm[xmm_index(r)]
            } else if r.is_mm() {
                u128::from(read_mm(cpu, mm_index(r)))
            } else {
                u128::from(read_reg(cpu, r))
            })
        }
        OpKind::Memory => read_mem_operand(cpu, insn),
        _ => Ok(u128::from(insn.immediate(n))),
    }
}

/// Writes operand `n` (XMM: the whole register; MMX; a GPR with x86-64
/// write rules; memory of the operand's size).
pub fn write_operand(cpu: &mut Cpu, insn: &Instruction, n: u32, v: u128) -> Result<(), Fault> {
    match insn.op_kind(n) {
        OpKind::Register => {
            let r = insn.op_register(n);
            if r.is_xmm() {
                cpu.s.fpu.xmm[xmm_index(r)] = v;
            } else if r.is_mm() {
                write_mm(cpu, mm_index(r), v as u64);
            } else {
                write_reg(cpu, r, v as u64);
            }
            Ok(())
        }
        _ => write_mem_operand(cpu, insn, v),
    }
}

/// Whether any operand of `insn` is an MMX register.
#[inline]
pub fn uses_mmx(insn: &Instruction) -> bool {
    (0..insn.op_count()).any(|n| insn.op_kind(n) == OpKind::Register && insn.op_register(n).is_mm())
}
