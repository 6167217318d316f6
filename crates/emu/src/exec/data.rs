//! Data movement: MOV and its zero/sign-extending forms, LEA, PUSH, POP,
//! NOP, the exchanges XCHG, XADD, CMPXCHG, CMPXCHG8B, CMPXCHG16B, the
//! conditional CMOVcc and SETcc, the frame instructions ENTER and LEAVE,
//! and PUSHA/POPA (SDM Vol. 1 §7.3.1, §7.3.6.1, §7.3.9.1 and Vol. 2
//! instruction pages).
//!
//! XCHG with memory is always atomic; XADD, CMPXCHG and CMPXCHG8B are
//! atomic with LOCK (CMPXCHG8B always is, which hardware allows).
//! CMPXCHG16B runs under the VM-wide split lock: atomic against other
//! CMPXCHG16Bs and split-lock accesses, not against concurrent aligned
//! 8-byte locked operations on the same memory.

use iced_x86::{Code, Instruction, Mnemonic, OpKind};

use super::operand::{
    effective_address, mask_to, memory_operand, modify_op, op_size, peek, pop, push, read_op,
    read_reg, stack_op_size, write_op, write_reg,
};
use super::HandlerEntry;
use super::LinkEffect::KeepsLinks;
use crate::fault::Fault;
use crate::flags::{sign_extend, FlagOp, ZF};
use crate::mmu::AccessKind;
use crate::state::{reg, seg, CodeSize};
use crate::Cpu;

/// The handler for `insn`, if this module implements it, with its effect
/// on block links.
pub fn lookup(insn: &Instruction) -> Option<HandlerEntry> {
    Some(match insn.mnemonic() {
        // MOV to/from segment and control registers are system instructions.
        Mnemonic::Mov if is_plain_mov(insn) => (mov, KeepsLinks),
        Mnemonic::Movzx => (movzx, KeepsLinks),
        Mnemonic::Movsx | Mnemonic::Movsxd => (movsx, KeepsLinks),
        Mnemonic::Lea => (lea, KeepsLinks),
        Mnemonic::Push if !is_segment_push(insn) => (push_op, KeepsLinks),
        Mnemonic::Pop if !is_segment_push(insn) => (pop_op, KeepsLinks),
        Mnemonic::Nop | Mnemonic::Pause | Mnemonic::Endbr32 | Mnemonic::Endbr64 => {
            (nop, KeepsLinks)
        }
        Mnemonic::Xchg => (xchg, KeepsLinks),
        Mnemonic::Xadd => (xadd, KeepsLinks),
        Mnemonic::Cmpxchg => (cmpxchg, KeepsLinks),
        Mnemonic::Cmpxchg8b => (cmpxchg8b, KeepsLinks),
        Mnemonic::Cmpxchg16b => (cmpxchg16b, KeepsLinks),
        m if is_cmov(m) => (cmov, KeepsLinks),
        m if is_setcc(m) => (setcc, KeepsLinks),
        Mnemonic::Enter => (enter, KeepsLinks),
        Mnemonic::Leave => (leave, KeepsLinks),
        Mnemonic::Pusha | Mnemonic::Pushad => (pusha, KeepsLinks),
        Mnemonic::Popa | Mnemonic::Popad => (popa, KeepsLinks),
        _ => return None,
    })
}

/// Whether `m` is one of the sixteen CMOVcc.
pub(crate) fn is_cmov(m: Mnemonic) -> bool {
    use Mnemonic::*;
    matches!(
        m,
        Cmovo
            | Cmovno
            | Cmovb
            | Cmovae
            | Cmove
            | Cmovne
            | Cmovbe
            | Cmova
            | Cmovs
            | Cmovns
            | Cmovp
            | Cmovnp
            | Cmovl
            | Cmovge
            | Cmovle
            | Cmovg
    )
}

/// Whether `m` is one of the sixteen SETcc.
pub(crate) fn is_setcc(m: Mnemonic) -> bool {
    use Mnemonic::*;
    matches!(
        m,
        Seto | Setno
            | Setb
            | Setae
            | Sete
            | Setne
            | Setbe
            | Seta
            | Sets
            | Setns
            | Setp
            | Setnp
            | Setl
            | Setge
            | Setle
            | Setg
    )
}

fn is_plain_mov(insn: &Instruction) -> bool {
    (0..insn.op_count())
        .all(|n| insn.op_kind(n) != OpKind::Register || insn.op_register(n).is_gpr())
}

fn is_segment_push(insn: &Instruction) -> bool {
    insn.op_kind(0) == OpKind::Register && insn.op_register(0).is_segment_register()
}

fn mov(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    let v = read_op(cpu, insn, 1)?;
    write_op(cpu, insn, 0, v)
}

fn movzx(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    let v = read_op(cpu, insn, 1)?;
    write_op(cpu, insn, 0, v)
}

fn movsx(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    let v = read_op(cpu, insn, 1)?;
    let v = sign_extend(v, op_size(insn, 1));
    write_op(cpu, insn, 0, v)
}

fn lea(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    let ea = effective_address(cpu, insn);
    write_op(cpu, insn, 0, ea)
}

fn push_op(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    let size = stack_op_size(insn);
    let v = read_op(cpu, insn, 0)?;
    push(cpu, size, v)
}

fn pop_op(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    let size = stack_op_size(insn);
    // POP with an RSP-relative memory destination computes the address
    // after RSP is incremented (SDM POP): pop first, then store; on a
    // fault restore RSP.
    let saved = cpu.s.gpr[crate::state::reg::RSP];
    let v = pop(cpu, size)?;
    write_op(cpu, insn, 0, v).inspect_err(|_| cpu.s.gpr[crate::state::reg::RSP] = saved)
}

fn nop(_: &mut Cpu, _: &Instruction) -> Result<(), Fault> {
    Ok(())
}

/// XCHG: register-register, or register-memory (always locked).
fn xchg(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    let (k0, k1) = (insn.op_kind(0), insn.op_kind(1));
    if k0 == OpKind::Register && k1 == OpKind::Register {
        let (r0, r1) = (insn.op_register(0), insn.op_register(1));
        let (a, b) = (read_reg(cpu, r0), read_reg(cpu, r1));
        write_reg(cpu, r0, b);
        write_reg(cpu, r1, a);
        return Ok(());
    }
    let r = if k0 == OpKind::Register {
        insn.op_register(0)
    } else {
        insn.op_register(1)
    };
    let v = read_reg(cpu, r);
    let (s, off) = memory_operand(cpu, insn);
    let old = cpu.locked_rmw(s, off, insn.memory_size().size() as u8, &mut |_| v)?;
    write_reg(cpu, r, old);
    Ok(())
}

/// XADD: TEMP := SRC + DEST; SRC := DEST; DEST := TEMP.
fn xadd(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    let size = op_size(insn, 0);
    let src = insn.op_register(1);
    let s = read_reg(cpu, src);
    let old = if insn.op_kind(0) == OpKind::Register {
        if insn.has_lock_prefix() {
            return Err(Fault::InvalidOpcode);
        }
        // With the same register twice the sum wins: write SRC first.
        let dst = insn.op_register(0);
        let d = read_reg(cpu, dst);
        write_reg(cpu, src, d);
        write_reg(cpu, dst, d.wrapping_add(s));
        d
    } else {
        let old = modify_op(cpu, insn, 0, |d| d.wrapping_add(s))?;
        write_reg(cpu, src, old);
        old
    };
    cpu.s
        .flags
        .set_result(FlagOp::Add, size, old, s, old.wrapping_add(s), false);
    Ok(())
}

/// CMPXCHG: compares the accumulator with DEST; equal: DEST := SRC, else
/// the accumulator := DEST. Flags as `cmp acc, dest`. A register
/// destination is only written on success and the accumulator only on
/// failure (so neither is zero-extended otherwise, as on hardware); a
/// memory destination is always written.
fn cmpxchg(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    let size = op_size(insn, 0);
    let acc = cpu.s.read_gpr(reg::RAX, size, false);
    let src = read_reg(cpu, insn.op_register(1));
    let old = if insn.op_kind(0) == OpKind::Register {
        if insn.has_lock_prefix() {
            return Err(Fault::InvalidOpcode);
        }
        let dst = insn.op_register(0);
        let d = read_reg(cpu, dst);
        if d == acc {
            write_reg(cpu, dst, src);
        }
        d
    } else {
        modify_op(cpu, insn, 0, |d| if d == acc { src } else { d })?
    };
    if old != acc {
        cpu.s.write_gpr(reg::RAX, size, false, old);
    }
    cpu.s
        .flags
        .set_result(FlagOp::Sub, size, acc, old, acc.wrapping_sub(old), false);
    Ok(())
}

/// CMPXCHG8B m64: EDX:EAX against m64; equal: m64 := ECX:EBX, ZF = 1;
/// else EDX:EAX := m64, ZF = 0. Other flags unchanged.
fn cmpxchg8b(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    if insn.op_kind(0) != OpKind::Memory {
        return Err(Fault::InvalidOpcode);
    }
    let g = |cpu: &Cpu, i: usize| cpu.s.gpr[i] & 0xffff_ffff;
    let expected = (g(cpu, reg::RDX) << 32) | g(cpu, reg::RAX);
    let new = (g(cpu, reg::RCX) << 32) | g(cpu, reg::RBX);
    let (s, off) = memory_operand(cpu, insn);
    let old = cpu.locked_rmw(s, off, 8, &mut |d| if d == expected { new } else { d })?;
    let equal = old == expected;
    if !equal {
        cpu.s.write_gpr(reg::RAX, 4, false, old);
        cpu.s.write_gpr(reg::RDX, 4, false, old >> 32);
    }
    cpu.s.flags.set_flag(ZF, equal);
    Ok(())
}

/// CMPXCHG16B m128: RDX:RAX against m128 (16-byte aligned, else #GP(0));
/// equal: m128 := RCX:RBX, ZF = 1; else RDX:RAX := m128, ZF = 0.
fn cmpxchg16b(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    if insn.op_kind(0) != OpKind::Memory {
        return Err(Fault::InvalidOpcode);
    }
    let (s, off) = memory_operand(cpu, insn);
    // The 16-byte alignment #GP(0) comes before an alignment-check #AC:
    // test the start address first, then do the full segment checks.
    if cpu.linear(s, off, 1, AccessKind::Write)? & 15 != 0 {
        return Err(Fault::GeneralProtection(0));
    }
    let lin = cpu.linear(s, off, 16, AccessKind::Write)?;
    let user = cpu.user();
    let (lo, hi) = {
        let _guard = crate::mem::SPLIT_LOCK
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // Aligned: both halves are on one page. Check writability first.
        cpu.translate(lin, AccessKind::Write, user)?;
        let lo = cpu.read_lin(lin, 8, user)?;
        let hi = cpu.read_lin(lin.wrapping_add(8), 8, user)?;
        let (nlo, nhi) = if lo == cpu.s.gpr[reg::RAX] && hi == cpu.s.gpr[reg::RDX] {
            (cpu.s.gpr[reg::RBX], cpu.s.gpr[reg::RCX])
        } else {
            (lo, hi)
        };
        cpu.write_lin(lin, 8, nlo, user)?;
        cpu.write_lin(lin.wrapping_add(8), 8, nhi, user)?;
        (lo, hi)
    };
    let equal = lo == cpu.s.gpr[reg::RAX] && hi == cpu.s.gpr[reg::RDX];
    if !equal {
        cpu.s.gpr[reg::RAX] = lo;
        cpu.s.gpr[reg::RDX] = hi;
    }
    cpu.s.flags.set_flag(ZF, equal);
    Ok(())
}

/// CMOVcc: the source is read whatever the condition; a 32-bit
/// destination is zero-extended even when the condition is false.
fn cmov(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    let v = read_op(cpu, insn, 1)?;
    let r = insn.op_register(0);
    if cpu.s.flags.cond(insn.condition_code()) {
        write_reg(cpu, r, v);
    } else if r.size() == 4 {
        let old = read_reg(cpu, r);
        write_reg(cpu, r, old);
    }
    Ok(())
}

fn setcc(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    let v = u64::from(cpu.s.flags.cond(insn.condition_code()));
    write_op(cpu, insn, 0, v)
}

/// The operand size of ENTER/LEAVE from the instruction's code.
fn frame_op_size(insn: &Instruction) -> u8 {
    match insn.code() {
        Code::Enterw_imm16_imm8 | Code::Leavew => 2,
        Code::Enterd_imm16_imm8 | Code::Leaved => 4,
        _ => 8,
    }
}

/// ENTER imm16, imm8: pushes rBP, copies `imm8 mod 32 - 1` outer frame
/// pointers plus the new one (nesting > 0), sets rBP to the new frame and
/// allocates imm16 bytes. State is restored if a push faults.
fn enter(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    let (rsp, rbp) = (cpu.s.gpr[reg::RSP], cpu.s.gpr[reg::RBP]);
    enter_frame(cpu, insn).inspect_err(|_| {
        cpu.s.gpr[reg::RSP] = rsp;
        cpu.s.gpr[reg::RBP] = rbp;
    })
}

fn enter_frame(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    let size = frame_op_size(insn);
    let alloc = u64::from(insn.immediate16());
    let level = insn.immediate8_2nd() & 31;
    let ss = cpu.s.stack_size();
    let rbp = cpu.s.read_gpr(reg::RBP, size, false);
    push(cpu, size, rbp)?;
    let frame = cpu.s.read_gpr(reg::RSP, ss, false);
    if level > 0 {
        let mut bp = cpu.s.read_gpr(reg::RBP, ss, false);
        for _ in 1..level {
            bp = mask_to(bp.wrapping_sub(u64::from(size)), ss);
            let v = cpu.read(seg::SS, bp, size)?;
            push(cpu, size, v)?;
        }
        push(cpu, size, frame)?;
    }
    let rsp = mask_to(cpu.s.read_gpr(reg::RSP, ss, false).wrapping_sub(alloc), ss);
    // ENTER faults if a write at the final stack pointer would (SDM ENTER:
    // #SS/#PF "using the final value of the stack pointer"; with alignment
    // checking on, a misaligned final frame raises #AC).
    let lin = cpu.linear(seg::SS, rsp, size, AccessKind::Write)?;
    let user = cpu.user();
    cpu.translate(lin, AccessKind::Write, user)?;
    cpu.s.write_gpr(reg::RBP, size, false, frame);
    cpu.s.write_gpr(reg::RSP, ss, false, rsp);
    Ok(())
}

/// LEAVE: rSP := rBP (stack size), then pops rBP (operand size).
fn leave(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    let size = frame_op_size(insn);
    let ss = cpu.s.stack_size();
    let saved = cpu.s.gpr[reg::RSP];
    let bp = cpu.s.read_gpr(reg::RBP, ss, false);
    cpu.s.write_gpr(reg::RSP, ss, false, bp);
    let v = pop(cpu, size).inspect_err(|_| cpu.s.gpr[reg::RSP] = saved)?;
    cpu.s.write_gpr(reg::RBP, size, false, v);
    Ok(())
}

fn legacy_size(cpu: &Cpu, insn: &Instruction) -> Result<u8, Fault> {
    if cpu.s.code_size() == CodeSize::Bits64 {
        return Err(Fault::InvalidOpcode);
    }
    Ok(match insn.code() {
        Code::Pushad | Code::Popad => 4,
        _ => 2,
    })
}

/// PUSHA/PUSHAD: pushes AX, CX, DX, BX, the original SP, BP, SI, DI.
fn pusha(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    let size = legacy_size(cpu, insn)?;
    let regs: [u64; 8] = std::array::from_fn(|i| cpu.s.read_gpr(i, size, false));
    let saved = cpu.s.gpr[reg::RSP];
    for v in regs {
        push(cpu, size, v).inspect_err(|_| cpu.s.gpr[reg::RSP] = saved)?;
    }
    Ok(())
}

/// POPA/POPAD: pops DI, SI, BP, (SP discarded), BX, DX, CX, AX. All eight
/// are read before any register changes.
fn popa(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    let size = legacy_size(cpu, insn)?;
    let mut vals = [0u64; 8];
    for (k, v) in vals.iter_mut().enumerate() {
        *v = peek(cpu, k as u64 * u64::from(size), size)?;
    }
    for (k, v) in vals.iter().enumerate() {
        let r = 7 - k;
        if r != reg::RSP {
            cpu.s.write_gpr(r, size, false, *v);
        }
    }
    let ss = cpu.s.stack_size();
    let rsp = cpu.s.read_gpr(reg::RSP, ss, false);
    let rsp = mask_to(rsp.wrapping_add(8 * u64::from(size)), ss);
    cpu.s.write_gpr(reg::RSP, ss, false, rsp);
    Ok(())
}

#[cfg(test)]
mod tests {
    use iced_x86::code_asm::*;

    use crate::fault::Fault;
    use crate::flags::{ARITH, CF, PF, ZF};
    use crate::state::reg;
    use crate::testutil::{assemble, cpu16, cpu32, cpu64, run64, run_until, CODE, DATA, STACK};
    use crate::Cpu;

    fn run32(f: impl FnOnce(&mut CodeAssembler)) -> Cpu {
        let code = assemble(32, f);
        let mut cpu = cpu32(&code);
        run_until(&mut cpu, CODE + code.len() as u64, 1000);
        cpu
    }

    fn mem(cpu: &Cpu, at: u64) -> u64 {
        cpu.machine.memory.read_u64(at).unwrap()
    }

    #[test]
    fn movzx_movsx_and_movsxd_extend_their_source() {
        let cpu = run64(|a| {
            a.mov(qword_ptr(DATA), -2).unwrap();
            a.mov(rax, -1i64).unwrap();
            a.movzx(eax, byte_ptr(DATA)).unwrap();
            a.movsx(rbx, word_ptr(DATA)).unwrap();
            a.mov(rcx, -1i64).unwrap();
            a.movsx(cx, byte_ptr(DATA)).unwrap();
            a.movsxd(rdx, dword_ptr(DATA)).unwrap();
            a.mov(esi, 0x8000u32).unwrap();
            a.movzx(rdi, si).unwrap();
        });
        assert_eq!(cpu.s.gpr[reg::RAX], 0xfe);
        assert_eq!(cpu.s.gpr[reg::RBX], (-2i64) as u64);
        assert_eq!(cpu.s.gpr[reg::RCX], u64::MAX - 1);
        assert_eq!(cpu.s.gpr[reg::RDX], (-2i64) as u64);
        assert_eq!(cpu.s.gpr[reg::RDI], 0x8000);
    }

    #[test]
    fn xchg_swaps_registers_and_memory() {
        let cpu = run64(|a| {
            a.mov(rax, 0x1122u64).unwrap();
            a.mov(rbx, 2u64).unwrap();
            a.xchg(rax, rbx).unwrap();
            a.xchg(bl, bh).unwrap();
            a.mov(qword_ptr(DATA), 5).unwrap();
            a.mov(rcx, -1i64).unwrap();
            a.mov(ecx, 7u32).unwrap();
            a.xchg(dword_ptr(DATA), ecx).unwrap();
        });
        assert_eq!(cpu.s.gpr[reg::RAX], 2);
        assert_eq!(cpu.s.gpr[reg::RBX], 0x2211);
        assert_eq!(cpu.s.gpr[reg::RCX], 5);
        assert_eq!(mem(&cpu, DATA), 7);
    }

    #[test]
    fn xchg_eax_eax_zero_extends_but_nop_does_not() {
        let cpu = run64(|a| {
            a.mov(rax, -1i64).unwrap();
            a.mov(rbx, -1i64).unwrap();
            a.db(&[0x87, 0xc0]).unwrap(); // xchg eax, eax
            a.db(&[0x90]).unwrap(); // nop (xchg eax, eax by its encoding)
        });
        assert_eq!(cpu.s.gpr[reg::RAX], 0xffff_ffff);
        assert_eq!(cpu.s.gpr[reg::RBX], u64::MAX);
    }

    #[test]
    fn xadd_exchanges_and_adds() {
        let cpu = run64(|a| {
            a.mov(eax, 5u32).unwrap();
            a.mov(ecx, 3u32).unwrap();
            a.xadd(eax, ecx).unwrap();
            a.mov(edx, 0x21u32).unwrap();
            a.xadd(edx, edx).unwrap();
            a.mov(qword_ptr(DATA), -1).unwrap();
            a.mov(rbx, 1u64).unwrap();
            a.lock().xadd(qword_ptr(DATA), rbx).unwrap();
        });
        assert_eq!(cpu.s.gpr[reg::RAX], 8);
        assert_eq!(cpu.s.gpr[reg::RCX], 5);
        assert_eq!(cpu.s.gpr[reg::RDX], 0x42);
        assert_eq!(cpu.s.gpr[reg::RBX], u64::MAX);
        assert_eq!(mem(&cpu, DATA), 0);
        assert_eq!(cpu.s.flags.get() & ARITH, CF | ZF | PF | crate::flags::AF);
    }

    #[test]
    fn cmpxchg_with_a_register_writes_only_what_it_must() {
        let cpu = run64(|a| {
            a.mov(rax, 0x1111_1111_0000_0005u64).unwrap();
            a.mov(rcx, 0xaaaa_aaaa_0000_0009u64).unwrap();
            a.mov(edx, 7u32).unwrap();
            a.cmpxchg(ecx, edx).unwrap(); // fails: eax := 9
            a.mov(rsi, rcx).unwrap();
            a.mov(rdi, rax).unwrap();
            a.cmpxchg(ecx, edx).unwrap(); // succeeds: ecx := 7
        });
        assert_eq!(cpu.s.gpr[reg::RSI], 0xaaaa_aaaa_0000_0009);
        assert_eq!(cpu.s.gpr[reg::RDI], 9);
        assert_eq!(cpu.s.gpr[reg::RCX], 7);
        assert_eq!(cpu.s.gpr[reg::RAX], 9);
        assert_eq!(cpu.s.flags.get() & ARITH, ZF | PF);
    }

    #[test]
    fn cmpxchg_with_memory_swaps_on_a_match() {
        let cpu = run64(|a| {
            a.mov(qword_ptr(DATA), 10).unwrap();
            a.mov(rax, 10u64).unwrap();
            a.mov(rbx, 20u64).unwrap();
            a.lock().cmpxchg(qword_ptr(DATA), rbx).unwrap();
            a.mov(ecx, 0u32).unwrap();
            a.cmpxchg(byte_ptr(DATA), cl).unwrap(); // al 10 != 20
        });
        assert_eq!(mem(&cpu, DATA), 20);
        assert_eq!(cpu.s.gpr[reg::RAX], 20);
        assert_eq!(cpu.s.flags.get() & (ZF | CF), CF, "10 - 20 borrows");
    }

    #[test]
    fn cmpxchg8b_compares_edx_eax() {
        let cpu = run64(|a| {
            a.mov(rax, 0x1111_2222_3333_4444u64).unwrap();
            a.mov(qword_ptr(DATA), rax).unwrap();
            a.mov(edx, 0x1111_2222u32).unwrap();
            a.mov(eax, 0x3333_4444u32).unwrap();
            a.mov(ecx, 0xaaaa_bbbbu32).unwrap();
            a.mov(ebx, 0xcccc_ddddu32).unwrap();
            a.lock().cmpxchg8b(qword_ptr(DATA)).unwrap();
            a.setz(sil).unwrap();
            a.cmpxchg8b(qword_ptr(DATA)).unwrap(); // fails now
        });
        assert_eq!(mem(&cpu, DATA), 0xaaaa_bbbb_cccc_dddd);
        assert_eq!(cpu.s.gpr[reg::RSI] & 0xff, 1);
        assert_eq!(cpu.s.gpr[reg::RDX], 0xaaaa_bbbb);
        assert_eq!(cpu.s.gpr[reg::RAX], 0xcccc_dddd);
        assert_eq!(cpu.s.flags.get() & ZF, 0);
    }

    #[test]
    fn cmpxchg16b_needs_an_aligned_operand() {
        let cpu = run64(|a| {
            a.mov(qword_ptr(DATA), 1).unwrap();
            a.mov(qword_ptr(DATA + 8), 2).unwrap();
            a.mov(eax, 1u32).unwrap();
            a.mov(edx, 2u32).unwrap();
            a.mov(ebx, 3u32).unwrap();
            a.mov(ecx, 4u32).unwrap();
            a.lock().cmpxchg16b(xmmword_ptr(DATA)).unwrap();
            a.setz(sil).unwrap();
            a.cmpxchg16b(xmmword_ptr(DATA)).unwrap();
        });
        assert_eq!((mem(&cpu, DATA), mem(&cpu, DATA + 8)), (3, 4));
        assert_eq!(cpu.s.gpr[reg::RSI] & 0xff, 1);
        assert_eq!((cpu.s.gpr[reg::RAX], cpu.s.gpr[reg::RDX]), (3, 4));
        assert_eq!(cpu.s.flags.get() & ZF, 0);
        let code = assemble(64, |a| a.cmpxchg16b(xmmword_ptr(DATA + 8)).unwrap());
        let mut cpu = cpu64(&code);
        assert_eq!(cpu.run_block(1), Err(Fault::GeneralProtection(0)));
    }

    #[test]
    fn cmov_moves_on_the_condition_and_zero_extends_regardless() {
        let cpu = run64(|a| {
            a.mov(rax, -1i64).unwrap();
            a.mov(rbx, -1i64).unwrap();
            a.mov(ecx, 5u32).unwrap();
            a.mov(qword_ptr(DATA), 9).unwrap();
            a.cmp(ecx, 5).unwrap(); // ZF = 1
            a.cmovne(eax, ecx).unwrap(); // not taken: rax := 0xffffffff
            a.cmovne(rbx, rcx).unwrap(); // not taken: unchanged
            a.cmove(rdx, qword_ptr(DATA)).unwrap();
            a.cmovbe(si, cx).unwrap();
        });
        assert_eq!(cpu.s.gpr[reg::RAX], 0xffff_ffff);
        assert_eq!(cpu.s.gpr[reg::RBX], u64::MAX);
        assert_eq!(cpu.s.gpr[reg::RDX], 9);
        assert_eq!(cpu.s.gpr[reg::RSI], 5);
    }

    #[test]
    fn setcc_writes_one_or_zero() {
        let cpu = run64(|a| {
            a.mov(rax, -1i64).unwrap();
            a.mov(ecx, 1u32).unwrap();
            a.cmp(ecx, 2).unwrap(); // CF, SF
            a.setb(al).unwrap();
            a.setg(byte_ptr(DATA)).unwrap();
            a.setl(ah).unwrap();
        });
        assert_eq!(cpu.s.gpr[reg::RAX], 0xffff_ffff_ffff_0101);
        assert_eq!(mem(&cpu, DATA) & 0xff, 0);
    }

    #[test]
    fn enter_and_leave_build_and_drop_a_frame() {
        let cpu = run64(|a| {
            a.mov(rbp, 0x1234u64).unwrap();
            a.enter(0x20u32, 0u32).unwrap();
            a.mov(rsi, rbp).unwrap();
            a.mov(rdi, rsp).unwrap();
            a.leave().unwrap();
        });
        assert_eq!(cpu.s.gpr[reg::RSI], STACK - 8);
        assert_eq!(cpu.s.gpr[reg::RDI], STACK - 8 - 0x20);
        assert_eq!(cpu.s.gpr[reg::RBP], 0x1234);
        assert_eq!(cpu.s.gpr[reg::RSP], STACK);
    }

    #[test]
    fn enter_with_nesting_copies_outer_frame_pointers() {
        let cpu = run64(|a| {
            a.mov(qword_ptr(DATA + 0xf8), 0xaaaa).unwrap();
            a.mov(rbp, DATA + 0x100).unwrap();
            a.enter(0x10u32, 2u32).unwrap();
        });
        assert_eq!(mem(&cpu, STACK - 8), DATA + 0x100);
        assert_eq!(mem(&cpu, STACK - 16), 0xaaaa);
        assert_eq!(mem(&cpu, STACK - 24), STACK - 8);
        assert_eq!(cpu.s.gpr[reg::RBP], STACK - 8);
        assert_eq!(cpu.s.gpr[reg::RSP], STACK - 24 - 0x10);
    }

    #[test]
    fn enter_in_16_bit_mode_uses_sp_and_bp() {
        let code = assemble(16, |a| {
            a.mov(bp, 0x5555u32).unwrap();
            a.enter(4u32, 1u32).unwrap();
        });
        let mut cpu = cpu16(&code);
        run_until(&mut cpu, code.len() as u64, 100);
        assert_eq!(cpu.s.gpr[reg::RBP], 0x7000 - 2);
        assert_eq!(cpu.s.gpr[reg::RSP], 0x7000 - 4 - 4);
        assert_eq!(mem(&cpu, 0x7000 - 4) & 0xffff_ffff, 0x5555_6ffe);
    }

    #[test]
    fn pushad_and_popad_save_and_restore_all_registers() {
        let cpu = run32(|a| {
            for (i, r) in [eax, ecx, edx, ebx, ebp, esi, edi].into_iter().enumerate() {
                a.mov(r, 0x100 * (i as u32 + 1)).unwrap();
            }
            a.pushad().unwrap();
            a.mov(ebx, esp).unwrap();
            a.mov(eax, dword_ptr(esp)).unwrap(); // EDI
            a.mov(ecx, dword_ptr(esp + 12)).unwrap(); // original ESP
            a.mov(dword_ptr(DATA), eax).unwrap();
            a.mov(dword_ptr(DATA + 4), ecx).unwrap();
            a.mov(dword_ptr(DATA + 8), ebx).unwrap();
            a.xor(eax, eax).unwrap();
            a.xor(edi, edi).unwrap();
            a.mov(esp, ebx).unwrap();
            a.popad().unwrap();
        });
        assert_eq!(mem(&cpu, DATA) & 0xffff_ffff, 0x700);
        assert_eq!(mem(&cpu, DATA) >> 32, STACK);
        assert_eq!(mem(&cpu, DATA + 8) & 0xffff_ffff, STACK - 32);
        assert_eq!(cpu.s.gpr[reg::RAX], 0x100);
        assert_eq!(cpu.s.gpr[reg::RDI], 0x700);
        assert_eq!(cpu.s.gpr[reg::RSP], STACK);
        assert_eq!(cpu.s.gpr[reg::RBX], 0x400);
    }

    #[test]
    fn pusha_is_invalid_in_64_bit_mode() {
        let mut cpu = cpu64(&[0x60]);
        assert_eq!(cpu.run_block(1), Err(Fault::InvalidOpcode));
    }

    #[test]
    fn push_immediate_sign_extends_to_the_stack_width() {
        let cpu = run64(|a| {
            a.push(-1).unwrap();
            a.push(0x1234_5678).unwrap();
            a.pop(rbx).unwrap();
            a.pop(rcx).unwrap();
            a.push(qword_ptr(DATA)).unwrap();
            a.pop(qword_ptr(DATA + 8)).unwrap();
        });
        assert_eq!(cpu.s.gpr[reg::RBX], 0x1234_5678);
        assert_eq!(cpu.s.gpr[reg::RCX], u64::MAX);
        assert_eq!(cpu.s.gpr[reg::RSP], STACK);
    }
}
