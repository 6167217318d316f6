//! Bit instructions: BT, BTS, BTR, BTC, BSF, BSR, TZCNT, LZCNT, POPCNT,
//! BSWAP, MOVBE (SDM Vol. 1 §7.3.7, Vol. 2 instruction pages).
//!
//! Undefined behaviour, as chosen here:
//! - BT/BTS/BTR/BTC change only CF (OF, SF, AF, PF keep their values).
//! - BSF/BSR with a non-zero source: CF = OF = SF = AF = 0 and PF from
//!   the result (ZF = 0). With a zero source: ZF = 1, the other flags
//!   are kept, and the destination keeps its value but is written back,
//!   so a 32-bit destination has its upper half cleared, as Intel CPUs do
//!   (AMD leaves the whole register alone).
//! - TZCNT/LZCNT: OF, SF, AF, PF = 0.
//! - BSWAP of a 16-bit register zeroes that register's low word.

use iced_x86::{Code, Instruction, Mnemonic, OpKind};

use super::alu::szp;
use super::operand::{
    address_size, memory_operand, modify_mem, modify_op, op_size, read_op, read_reg, write_op,
    write_reg,
};
use super::HandlerEntry;
use super::LinkEffect::KeepsLinks;
use crate::fault::Fault;
use crate::flags::{mask, sign_extend, ARITH, CF, PF, ZF};
use crate::Cpu;

const BT: u8 = 0;
const BTS: u8 = 1;
const BTR: u8 = 2;
const BTC: u8 = 3;

/// The handler for `insn`, if this module implements it, with its effect
/// on block links.
pub fn lookup(insn: &Instruction) -> Option<HandlerEntry> {
    Some(match insn.mnemonic() {
        Mnemonic::Bt => (bt::<BT>, KeepsLinks),
        Mnemonic::Bts => (bt::<BTS>, KeepsLinks),
        Mnemonic::Btr => (bt::<BTR>, KeepsLinks),
        Mnemonic::Btc => (bt::<BTC>, KeepsLinks),
        Mnemonic::Bsf => (bsf, KeepsLinks),
        Mnemonic::Bsr => (bsr, KeepsLinks),
        Mnemonic::Tzcnt => (tzcnt, KeepsLinks),
        Mnemonic::Lzcnt => (lzcnt, KeepsLinks),
        Mnemonic::Popcnt => (popcnt, KeepsLinks),
        Mnemonic::Bswap => (bswap, KeepsLinks),
        Mnemonic::Movbe => (movbe, KeepsLinks),
        _ => return None,
    })
}

#[inline(always)]
fn bit_op<const OP: u8>(v: u64, bit: u64) -> u64 {
    match OP {
        BTS => v | (1 << bit),
        BTR => v & !(1 << bit),
        BTC => v ^ (1 << bit),
        _ => v,
    }
}

fn bt<const OP: u8>(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    let size = op_size(insn, 0);
    let bits = u64::from(size) * 8;
    let offset = read_op(cpu, insn, 1)?;
    let old;
    let bit;
    if insn.op_kind(0) == OpKind::Register {
        bit = offset & (bits - 1);
        old = if OP == BT {
            read_reg(cpu, insn.op_register(0))
        } else {
            modify_op(cpu, insn, 0, |v| bit_op::<OP>(v, bit))?
        };
    } else {
        let (s, mut ea) = memory_operand(cpu, insn);
        if insn.op_kind(1) == OpKind::Register {
            // A register bit offset is signed and may address memory
            // beyond the operand: the operand-sized unit at
            // EA + size * (offset SAR log2(bits)).
            let off = sign_extend(offset, size) as i64;
            let unit = off >> bits.trailing_zeros();
            ea = ea.wrapping_add(unit.wrapping_mul(i64::from(size)) as u64)
                & mask(address_size(insn));
        }
        bit = offset & (bits - 1);
        old = if OP == BT {
            if insn.has_lock_prefix() {
                return Err(Fault::InvalidOpcode);
            }
            cpu.read(s, ea, size)?
        } else if insn.has_lock_prefix() {
            cpu.locked_rmw(s, ea, size, &mut |v| bit_op::<OP>(v, bit))?
        } else {
            modify_mem(cpu, s, ea, size, |v| bit_op::<OP>(v, bit))?
        };
    }
    cpu.s.flags.set_flag(CF, (old >> bit) & 1 != 0);
    Ok(())
}

/// BSF/BSR with a zero source: ZF = 1 and the destination rewritten with
/// its own value.
#[inline]
fn bit_scan_zero(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    let r = insn.op_register(0);
    let v = read_reg(cpu, r);
    write_reg(cpu, r, v);
    cpu.s.flags.set_flag(ZF, true);
    Ok(())
}

#[inline]
fn bit_scan_found(cpu: &mut Cpu, insn: &Instruction, index: u64) {
    write_reg(cpu, insn.op_register(0), index);
    cpu.s.flags.set_arith(ARITH, szp(index, 1) & PF);
}

fn bsf(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    let src = read_op(cpu, insn, 1)?;
    if src == 0 {
        return bit_scan_zero(cpu, insn);
    }
    bit_scan_found(cpu, insn, u64::from(src.trailing_zeros()));
    Ok(())
}

fn bsr(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    let src = read_op(cpu, insn, 1)?;
    if src == 0 {
        return bit_scan_zero(cpu, insn);
    }
    bit_scan_found(cpu, insn, u64::from(63 - src.leading_zeros()));
    Ok(())
}

/// Writes a count result with CF = (source was 0), ZF = (count is 0).
#[inline]
fn write_count(cpu: &mut Cpu, insn: &Instruction, count: u64, cf: bool) {
    write_reg(cpu, insn.op_register(0), count);
    let f = if cf { CF } else { 0 } | if count == 0 { ZF } else { 0 };
    cpu.s.flags.set_arith(ARITH, f);
}

fn tzcnt(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    let size = op_size(insn, 0);
    let src = read_op(cpu, insn, 1)?;
    let count = if src == 0 {
        u64::from(size) * 8
    } else {
        u64::from(src.trailing_zeros())
    };
    write_count(cpu, insn, count, src == 0);
    Ok(())
}

fn lzcnt(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    let size = op_size(insn, 0);
    let src = read_op(cpu, insn, 1)?;
    let count = u64::from(src.leading_zeros()) - (64 - u64::from(size) * 8);
    write_count(cpu, insn, count, src == 0);
    Ok(())
}

fn popcnt(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    let src = read_op(cpu, insn, 1)?;
    write_reg(cpu, insn.op_register(0), u64::from(src.count_ones()));
    cpu.s.flags.set_arith(ARITH, if src == 0 { ZF } else { 0 });
    Ok(())
}

/// `v`'s low `size` bytes in reverse order (BSWAP, MOVBE).
#[inline]
pub(crate) fn swap(v: u64, size: u8) -> u64 {
    match size {
        2 => u64::from((v as u16).swap_bytes()),
        4 => u64::from((v as u32).swap_bytes()),
        _ => v.swap_bytes(),
    }
}

fn bswap(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    let r = insn.op_register(0);
    let v = read_reg(cpu, r);
    let v = if insn.code() == Code::Bswap_r16 {
        0
    } else {
        swap(v, r.size() as u8)
    };
    write_reg(cpu, r, v);
    Ok(())
}

fn movbe(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    let size = op_size(insn, 0);
    let v = read_op(cpu, insn, 1)?;
    write_op(cpu, insn, 0, swap(v, size))
}

#[cfg(test)]
mod tests {
    use iced_x86::code_asm::*;

    use crate::flags::{ARITH, CF, OF, PF, SF, ZF};
    use crate::state::reg;
    use crate::testutil::{run64, DATA};
    use crate::Cpu;

    fn arith(cpu: &Cpu) -> u64 {
        cpu.s.flags.get() & ARITH
    }

    #[test]
    fn bt_copies_the_bit_into_carry_and_keeps_the_rest() {
        let cpu = run64(|a| {
            a.mov(al, 0x7fu32).unwrap();
            a.add(al, 1u32).unwrap(); // OF SF AF
            a.mov(ecx, 0x10u32).unwrap();
            a.bt(ecx, 36).unwrap(); // 36 mod 32 = 4
        });
        assert_eq!(arith(&cpu) & (CF | OF | SF), CF | OF | SF);
        let cpu = run64(|a| {
            a.mov(rcx, 1u64 << 63).unwrap();
            a.mov(edx, 127u32).unwrap();
            a.bt(rcx, rdx).unwrap(); // 127 mod 64 = 63
        });
        assert_eq!(arith(&cpu) & CF, CF);
    }

    #[test]
    fn bts_btr_btc_modify_the_bit() {
        let cpu = run64(|a| {
            a.xor(eax, eax).unwrap();
            a.bts(eax, 5).unwrap();
            a.mov(rbx, -1i64).unwrap();
            a.btr(bx, 15).unwrap();
            a.mov(qword_ptr(DATA), 0).unwrap();
            a.lock().btc(qword_ptr(DATA), 40).unwrap();
            a.btc(qword_ptr(DATA), 40).unwrap();
            a.btc(qword_ptr(DATA), 41).unwrap();
        });
        assert_eq!(cpu.s.gpr[reg::RAX], 0x20);
        assert_eq!(cpu.s.gpr[reg::RBX], 0xffff_ffff_ffff_7fff);
        assert_eq!(cpu.machine.memory.read_u64(DATA).unwrap(), 1 << 41);
        assert_eq!(arith(&cpu) & CF, 0);
    }

    #[test]
    fn register_bit_offsets_reach_beyond_a_memory_operand() {
        let cpu = run64(|a| {
            a.mov(rbx, DATA + 0x100).unwrap();
            a.mov(ecx, 70u32).unwrap();
            a.bts(dword_ptr(rbx), ecx).unwrap(); // DATA+0x108, bit 6
            a.mov(rcx, -1i64).unwrap();
            a.bts(qword_ptr(rbx), rcx).unwrap(); // DATA+0xf8, bit 63
            a.mov(cx, 0xfff0u32).unwrap();
            a.bts(word_ptr(rbx), cx).unwrap(); // -16: DATA+0xfe, bit 0
            a.mov(edx, 70u32).unwrap();
            a.bt(dword_ptr(rbx), edx).unwrap();
        });
        let m = &cpu.machine.memory;
        assert_eq!(m.read_u64(DATA + 0x108).unwrap(), 0x40);
        assert_eq!(m.read_u64(DATA + 0xf8).unwrap(), (1 << 63) | (1 << 48));
        assert_eq!(arith(&cpu) & CF, CF);
    }

    #[test]
    fn bsf_and_bsr_find_the_extreme_set_bits() {
        let cpu = run64(|a| {
            a.mov(ecx, 0x0001_0100u32).unwrap();
            a.bsf(eax, ecx).unwrap();
            a.bsr(edx, ecx).unwrap();
            a.mov(rsi, 1u64 << 63).unwrap();
            a.bsr(rdi, rsi).unwrap();
        });
        assert_eq!(cpu.s.gpr[reg::RAX], 8);
        assert_eq!(cpu.s.gpr[reg::RDX], 16);
        assert_eq!(cpu.s.gpr[reg::RDI], 63);
        assert_eq!(arith(&cpu), PF, "63 has even parity");
        let cpu = run64(|a| {
            a.xor(ecx, ecx).unwrap();
            a.mov(rax, 0x1234_5678_9abc_def0u64).unwrap();
            a.mov(bx, 0x5555u32).unwrap();
            a.bsf(bx, cx).unwrap();
            a.bsr(rax, rcx).unwrap();
        });
        assert_eq!(cpu.s.gpr[reg::RAX], 0x1234_5678_9abc_def0);
        assert_eq!(cpu.s.gpr[reg::RBX] & 0xffff, 0x5555);
        assert_eq!(arith(&cpu) & ZF, ZF);
    }

    #[test]
    fn tzcnt_lzcnt_and_popcnt_count_bits() {
        let cpu = run64(|a| {
            a.xor(ecx, ecx).unwrap();
            a.tzcnt(ax, cx).unwrap();
            a.lzcnt(rbx, rcx).unwrap();
        });
        assert_eq!(cpu.s.gpr[reg::RAX], 16);
        assert_eq!(cpu.s.gpr[reg::RBX], 64);
        assert_eq!(arith(&cpu), CF);
        let cpu = run64(|a| {
            a.mov(ecx, 0x00f0_0001u32).unwrap();
            a.tzcnt(eax, ecx).unwrap();
            a.lzcnt(ebx, ecx).unwrap();
        });
        assert_eq!(cpu.s.gpr[reg::RAX], 0);
        assert_eq!(cpu.s.gpr[reg::RBX], 8);
        assert_eq!(arith(&cpu), 0);
        let cpu = run64(|a| {
            a.mov(rcx, 0xff00_0000_0000_0f0fu64).unwrap();
            a.popcnt(rax, rcx).unwrap();
        });
        assert_eq!(cpu.s.gpr[reg::RAX], 16);
        assert_eq!(arith(&cpu), 0);
        let cpu = run64(|a| {
            a.stc().unwrap();
            a.xor(ecx, ecx).unwrap();
            a.popcnt(eax, ecx).unwrap();
        });
        assert_eq!(arith(&cpu), ZF);
        assert_eq!(arith(&cpu) & (PF | SF), 0);
    }

    #[test]
    fn bswap_reverses_bytes_and_zeroes_a_word() {
        let cpu = run64(|a| {
            a.mov(rax, 0x1122_3344_5566_7788u64).unwrap();
            a.bswap(rax).unwrap();
            a.mov(rbx, 0x1122_3344_5566_7788u64).unwrap();
            a.bswap(ebx).unwrap();
            a.mov(rcx, 0x1122_3344_5566_7788u64).unwrap();
            a.db(&[0x66, 0x0f, 0xc9]).unwrap(); // bswap cx
        });
        assert_eq!(cpu.s.gpr[reg::RAX], 0x8877_6655_4433_2211);
        assert_eq!(cpu.s.gpr[reg::RBX], 0x8877_6655);
        assert_eq!(cpu.s.gpr[reg::RCX], 0x1122_3344_5566_0000);
    }

    #[test]
    fn movbe_swaps_on_load_and_store() {
        let cpu = run64(|a| {
            a.mov(dword_ptr(DATA), 0x1122_3344).unwrap();
            a.movbe(eax, dword_ptr(DATA)).unwrap();
            a.mov(bx, 0xaabbu32).unwrap();
            a.movbe(word_ptr(DATA + 8), bx).unwrap();
        });
        assert_eq!(cpu.s.gpr[reg::RAX], 0x4433_2211);
        assert_eq!(cpu.machine.memory.read_u64(DATA + 8).unwrap(), 0xbbaa);
    }
}
