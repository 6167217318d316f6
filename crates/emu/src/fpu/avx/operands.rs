//! Operands of VEX-encoded instructions (SDM Vol. 1 §14.1, Vol. 2A
//! §2.3): YMM registers as two 128-bit halves, 32-byte memory operands,
//! and the VEX rule for destinations: a VEX.128 instruction that writes
//! an XMM register zeroes bits 255:128 of the YMM register (unlike a
//! legacy SSE instruction, which keeps them).
//!
//! VEX memory operands need no alignment, except where an instruction
//! says so ([`needs_alignment`]: the aligned moves and non-temporal
//! stores, #GP(0) when misaligned).

use iced_x86::{Instruction, Mnemonic, OpKind, Register};

use crate::exec::operand::{memory_operand, read_reg, write_reg};
use crate::fault::Fault;
use crate::fpu::access::{read_block, write_block, xmm_index};
use crate::Cpu;

/// A YMM value: bits 127:0 then bits 255:128.
pub type Ymm = [u128; 2];

/// Whether `r` is a YMM register.
#[inline]
fn is_ymm(r: Register) -> bool {
    r.is_ymm()
}

/// The index (0-15) of an XMM or YMM register.
#[inline]
pub fn vec_index(r: Register) -> usize {
    if is_ymm(r) {
        (r as usize).wrapping_sub(Register::YMM0 as usize) & 15
    } else {
        xmm_index(r)
    }
}

/// Whether `insn` works on 256 bits (VEX.L = 1): any YMM operand, or a
/// 32-byte memory operand (`VCVTPD2PS xmm1, m256`).
pub fn is_256(insn: &Instruction) -> bool {
    (0..insn.op_count()).any(|n| match insn.op_kind(n) {
        OpKind::Register => is_ymm(insn.op_register(n)),
        OpKind::Memory => insn.memory_size().size() == 32,
        _ => false,
    })
}

/// Whether the memory operand of `insn` must be aligned to its size:
/// VMOVAPS/PD, VMOVDQA and the non-temporal moves (SDM Vol. 2, their
/// exception tables: "#GP(0) if the memory address is not aligned").
pub fn needs_alignment(insn: &Instruction) -> bool {
    use Mnemonic as M;
    matches!(
        insn.mnemonic(),
        M::Vmovaps
            | M::Vmovapd
            | M::Vmovdqa
            | M::Vmovntps
            | M::Vmovntpd
            | M::Vmovntdq
            | M::Vmovntdqa
    )
}

/// The alignment the memory operand of `insn` needs (1 for none).
fn alignment(insn: &Instruction) -> u64 {
    if needs_alignment(insn) {
        insn.memory_size().size() as u64
    } else {
        1
    }
}

/// Reads the memory operand of `insn`: 1-32 bytes, zero-extended.
pub fn read_mem(cpu: &mut Cpu, insn: &Instruction) -> Result<Ymm, Fault> {
    let (s, off) = memory_operand(cpu, insn);
    let size = insn.memory_size().size();
    if size <= 8 {
        crate::fpu::access::check_far_end(cpu, s, off, size)?;
        return Ok([u128::from(cpu.read(s, off, size.max(1) as u8)?), 0]);
    }
    let mut b = [0u8; 32];
    read_block(cpu, s, off, &mut b[..size.min(32)], alignment(insn))?;
    Ok(split(&b))
}

/// Writes `len` bytes of `v` at the memory operand of `insn`.
pub fn write_mem(cpu: &mut Cpu, insn: &Instruction, v: Ymm, len: usize) -> Result<(), Fault> {
    let (s, off) = memory_operand(cpu, insn);
    if len <= 8 {
        crate::fpu::access::check_far_end(cpu, s, off, len)?;
        return cpu.write(s, off, len as u8, v[0] as u64);
    }
    let b = join(v);
    write_block(cpu, s, off, &b[..len.min(32)], alignment(insn))
}

/// 32 little-endian bytes as a YMM value.
pub fn split(b: &[u8; 32]) -> Ymm {
    let mut lo = [0u8; 16];
    let mut hi = [0u8; 16];
    lo.copy_from_slice(&b[..16]);
    hi.copy_from_slice(&b[16..]);
    [u128::from_le_bytes(lo), u128::from_le_bytes(hi)]
}

/// A YMM value as 32 little-endian bytes.
pub fn join(v: Ymm) -> [u8; 32] {
    let mut b = [0u8; 32];
    b[..16].copy_from_slice(&v[0].to_le_bytes());
    b[16..].copy_from_slice(&v[1].to_le_bytes());
    b
}

/// The YMM register `i`.
#[inline]
pub fn ymm(cpu: &Cpu, i: usize) -> Ymm {
    [cpu.s.fpu.xmm[i & 15], cpu.s.fpu.ymm_hi[i & 15]]
}

/// Reads operand `n`: a vector register (an XMM register reads as its
/// low half, upper half 0), a general register, memory, or an immediate.
pub fn read(cpu: &mut Cpu, insn: &Instruction, n: u32) -> Result<Ymm, Fault> {
    match insn.op_kind(n) {
        OpKind::Register => {
            let r = insn.op_register(n);
            Ok(if is_ymm(r) {
                ymm(cpu, vec_index(r))
            } else if r.is_xmm() {
                [cpu.s.fpu.xmm[xmm_index(r)], 0]
            } else {
                [u128::from(read_reg(cpu, r)), 0]
            })
        }
        OpKind::Memory => read_mem(cpu, insn),
        _ => Ok([u128::from(insn.immediate(n)), 0]),
    }
}

/// Writes the vector register `r` with VEX rules: a YMM register takes
/// all 256 bits, an XMM register the low 128 with bits 255:128 zeroed.
pub fn write_vec(cpu: &mut Cpu, r: Register, v: Ymm) {
    let i = vec_index(r);
    cpu.s.fpu.xmm[i] = v[0];
    cpu.s.fpu.ymm_hi[i] = if is_ymm(r) { v[1] } else { 0 };
}

/// Writes operand `n`: a vector register ([`write_vec`]), a general
/// register (with the x86-64 write rules) or memory of the operand's size.
pub fn write(cpu: &mut Cpu, insn: &Instruction, n: u32, v: Ymm) -> Result<(), Fault> {
    match insn.op_kind(n) {
        OpKind::Register => {
            let r = insn.op_register(n);
            if r.is_xmm() || is_ymm(r) {
                write_vec(cpu, r, v);
            } else {
                write_reg(cpu, r, v[0] as u64);
            }
            Ok(())
        }
        _ => {
            let len = insn.memory_size().size();
            write_mem(cpu, insn, v, len)
        }
    }
}

/// The 8-bit immediate of `insn` (0 if it has none).
pub fn imm8(insn: &Instruction) -> u8 {
    let last = insn.op_count().saturating_sub(1);
    if insn.op_count() > 0 && insn.op_kind(last) == OpKind::Immediate8 {
        insn.immediate8()
    } else {
        0
    }
}

/// Element `i` of `bits` bits of a YMM value, counting across both
/// halves (element 0 is bits `bits-1:0` of the low half).
pub fn element(v: &Ymm, bits: u32, i: u32) -> u64 {
    let per = 128 / bits;
    crate::fpu::lanes::lane(v[(i / per) as usize], bits, i % per)
}

/// Sets element `i` of `bits` bits of a YMM value.
pub fn set_element(v: &mut Ymm, bits: u32, i: u32, e: u64) {
    let per = 128 / bits;
    let h = &mut v[(i / per) as usize];
    let at = bits * (i % per);
    let ones = crate::fpu::lanes::ones(bits);
    *h = (*h & !(u128::from(ones) << at)) | u128::from(e & ones) << at;
}
