//! Near control transfers: JMP, Jcc, CALL, RET, LOOP/LOOPE/LOOPNE and
//! JCXZ/JECXZ/JRCXZ (SDM Vol. 1 §6.3, §7.3.8). Far transfers through
//! descriptors are system instructions.

use iced_x86::{Code, Instruction, Mnemonic, OpKind};

use super::operand::{pop, push, read_op, stack_op_size};
use super::HandlerEntry;
use super::LinkEffect::DropsLinks;
use crate::fault::Fault;
use crate::state::CodeSize;
use crate::Cpu;

/// The handler for `insn`, if this module implements it, with its effect
/// on block links.
///
/// Near transfers change only RIP and RSP, so dropping the links after
/// them is conservative; the common forms have specialized handlers
/// ([`super::fast::flow`]) that do not go through this choice.
pub fn lookup(insn: &Instruction) -> Option<HandlerEntry> {
    let near = !matches!(insn.op_kind(0), OpKind::FarBranch16 | OpKind::FarBranch32)
        && insn.memory_size().size() <= 8;
    Some(match insn.mnemonic() {
        Mnemonic::Jmp if near && !is_far_memory(insn) => (jmp, DropsLinks),
        Mnemonic::Call if near && !is_far_memory(insn) => (call, DropsLinks),
        Mnemonic::Ret => (ret, DropsLinks),
        m if is_jcc(m) => (jcc, DropsLinks),
        Mnemonic::Loop | Mnemonic::Loope | Mnemonic::Loopne => (loop_, DropsLinks),
        Mnemonic::Jcxz | Mnemonic::Jecxz | Mnemonic::Jrcxz => (jcxz, DropsLinks),
        _ => return None,
    })
}

fn is_far_memory(insn: &Instruction) -> bool {
    insn.op_kind(0) == OpKind::Memory
        && matches!(
            insn.memory_size(),
            iced_x86::MemorySize::SegPtr16
                | iced_x86::MemorySize::SegPtr32
                | iced_x86::MemorySize::SegPtr64
        )
}

fn is_jcc(m: Mnemonic) -> bool {
    use Mnemonic::*;
    matches!(
        m,
        Jo | Jno | Jb | Jae | Je | Jne | Jbe | Ja | Js | Jns | Jp | Jnp | Jl | Jge | Jle | Jg
    )
}

/// Checks a branch target against CS and sets RIP (SDM: #GP(0) if the
/// target is outside the CS limit or, in 64-bit mode, non-canonical).
#[inline]
pub fn branch_to(cpu: &mut Cpu, target: u64, op_size: u8) -> Result<(), Fault> {
    let target = match cpu.s.code_size() {
        CodeSize::Bits64 if op_size == 8 => target,
        _ => target & crate::flags::mask(op_size.min(4)),
    };
    let ok = match cpu.s.code_size() {
        CodeSize::Bits64 => crate::mem::canonical(target),
        _ => target <= u64::from(cpu.s.seg[crate::state::seg::CS].limit),
    };
    if !ok {
        return Err(Fault::GeneralProtection(0));
    }
    cpu.next_rip = target;
    Ok(())
}

/// Operand size of a near branch: from the branch kind or memory size.
fn branch_size(cpu: &Cpu, insn: &Instruction) -> u8 {
    match insn.op_kind(0) {
        OpKind::NearBranch16 => 2,
        OpKind::NearBranch32 => 4,
        OpKind::NearBranch64 => 8,
        OpKind::Register => insn.op_register(0).size() as u8,
        OpKind::Memory => insn.memory_size().size() as u8,
        _ => match cpu.s.code_size() {
            CodeSize::Bits64 => 8,
            CodeSize::Bits32 => 4,
            CodeSize::Bits16 => 2,
        },
    }
}

fn target_of(cpu: &mut Cpu, insn: &Instruction) -> Result<u64, Fault> {
    match insn.op_kind(0) {
        OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64 => {
            // Decoded at this RIP, so the target is absolute already.
            Ok(insn.near_branch_target())
        }
        _ => read_op(cpu, insn, 0),
    }
}

fn jmp(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    let size = branch_size(cpu, insn);
    let target = target_of(cpu, insn)?;
    branch_to(cpu, target, size)
}

fn jcc(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    if cpu.s.flags.cond(insn.condition_code()) {
        let size = branch_size(cpu, insn);
        branch_to(cpu, insn.near_branch_target(), size)
    } else {
        Ok(())
    }
}

fn call(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    let size = branch_size(cpu, insn);
    let target = target_of(cpu, insn)?;
    let ret = cpu.next_rip;
    let saved_rsp = cpu.s.gpr[crate::state::reg::RSP];
    push(cpu, stack_op_size(insn), ret)?;
    branch_to(cpu, target, size).inspect_err(|_| cpu.s.gpr[crate::state::reg::RSP] = saved_rsp)
}

fn ret(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    if insn.op_count() > 0 && insn.op_kind(0) != OpKind::Immediate16 {
        return Err(Fault::InvalidOpcode);
    }
    // stack_pointer_increment covers the return address plus imm16.
    let imm = if insn.op_count() > 0 {
        i32::from(insn.immediate16())
    } else {
        0
    };
    let size = (insn.stack_pointer_increment() - imm).clamp(2, 8) as u8;
    let saved_rsp = cpu.s.gpr[crate::state::reg::RSP];
    let target = pop(cpu, size)?;
    if insn.op_count() > 0 {
        let ss = cpu.s.stack_size();
        let rsp = cpu
            .s
            .read_gpr(crate::state::reg::RSP, ss, false)
            .wrapping_add(u64::from(insn.immediate16()));
        cpu.s.write_gpr(crate::state::reg::RSP, ss, false, rsp);
    }
    branch_to(cpu, target, size).inspect_err(|_| cpu.s.gpr[crate::state::reg::RSP] = saved_rsp)
}

/// The counter size of LOOPcc/JrCXZ (the address size): CX, ECX or RCX.
fn counter_size(insn: &Instruction) -> u8 {
    use Code::*;
    match insn.code() {
        Loop_rel8_16_CX | Loop_rel8_32_CX | Loope_rel8_16_CX | Loope_rel8_32_CX
        | Loopne_rel8_16_CX | Loopne_rel8_32_CX | Jcxz_rel8_16 | Jcxz_rel8_32 => 2,
        Loop_rel8_16_ECX | Loop_rel8_32_ECX | Loop_rel8_64_ECX | Loope_rel8_16_ECX
        | Loope_rel8_32_ECX | Loope_rel8_64_ECX | Loopne_rel8_16_ECX | Loopne_rel8_32_ECX
        | Loopne_rel8_64_ECX | Jecxz_rel8_16 | Jecxz_rel8_32 | Jecxz_rel8_64 => 4,
        _ => 8,
    }
}

/// LOOP/LOOPE/LOOPNE: decrement the counter (flags unchanged) and branch
/// while it is non-zero (and ZF is 1 / 0).
fn loop_(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    let size = counter_size(insn);
    let saved = cpu.s.gpr[crate::state::reg::RCX];
    let count = cpu
        .s
        .read_gpr(crate::state::reg::RCX, size, false)
        .wrapping_sub(1);
    cpu.s.write_gpr(crate::state::reg::RCX, size, false, count);
    let count = count & crate::flags::mask(size);
    let take = count != 0
        && match insn.mnemonic() {
            Mnemonic::Loope => cpu.s.flags.zf(),
            Mnemonic::Loopne => !cpu.s.flags.zf(),
            _ => true,
        };
    if take {
        let bsize = branch_size(cpu, insn);
        branch_to(cpu, insn.near_branch_target(), bsize)
            .inspect_err(|_| cpu.s.gpr[crate::state::reg::RCX] = saved)?;
    }
    Ok(())
}

/// JCXZ/JECXZ/JRCXZ: branch if the counter is zero.
fn jcxz(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    if cpu
        .s
        .read_gpr(crate::state::reg::RCX, counter_size(insn), false)
        == 0
    {
        let bsize = branch_size(cpu, insn);
        branch_to(cpu, insn.near_branch_target(), bsize)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use iced_x86::code_asm::*;

    use crate::fault::Fault;
    use crate::state::reg;
    use crate::testutil::{assemble, cpu16, cpu32, cpu64, run64, run_until, CODE, DATA, STACK};

    #[test]
    fn loop_counts_down_to_zero() {
        let cpu = run64(|a| {
            let mut top = a.create_label();
            a.mov(ecx, 5u32).unwrap();
            a.xor(eax, eax).unwrap();
            a.set_label(&mut top).unwrap();
            a.add(eax, 2).unwrap();
            a.loop_(top).unwrap();
        });
        assert_eq!(cpu.s.gpr[reg::RAX], 10);
        assert_eq!(cpu.s.gpr[reg::RCX], 0);
    }

    #[test]
    fn loop_with_a_32_bit_counter_uses_ecx() {
        // 67 e2 fe: loop $ with ECX.
        let cpu = run64(|a| {
            a.mov(rcx, 0x7_0000_0003u64).unwrap();
            a.db(&[0x67, 0xe2, 0xfe]).unwrap();
        });
        assert_eq!(
            cpu.s.gpr[reg::RCX],
            0,
            "ECX counted; the write zero-extends"
        );
    }

    #[test]
    fn loope_and_loopne_also_test_zf() {
        // Find the first non-zero byte in DATA[0..8].
        let cpu = run64(|a| {
            let mut top = a.create_label();
            a.mov(byte_ptr(DATA + 3), 7u32).unwrap();
            a.mov(rsi, DATA - 1).unwrap();
            a.mov(ecx, 8u32).unwrap();
            a.set_label(&mut top).unwrap();
            a.inc(rsi).unwrap();
            a.cmp(byte_ptr(rsi), 0).unwrap();
            a.loope(top).unwrap();
        });
        assert_eq!(cpu.s.gpr[reg::RSI], DATA + 3);
        assert_eq!(cpu.s.gpr[reg::RCX], 4);
        let cpu = run64(|a| {
            let mut top = a.create_label();
            a.mov(qword_ptr(DATA), -1).unwrap();
            a.mov(byte_ptr(DATA + 5), 0u32).unwrap();
            a.mov(rsi, DATA - 1).unwrap();
            a.mov(ecx, 8u32).unwrap();
            a.set_label(&mut top).unwrap();
            a.inc(rsi).unwrap();
            a.cmp(byte_ptr(rsi), 0).unwrap();
            a.loopne(top).unwrap();
        });
        assert_eq!(cpu.s.gpr[reg::RSI], DATA + 5);
    }

    #[test]
    fn jrcxz_and_jecxz_branch_on_a_zero_counter() {
        let cpu = run64(|a| {
            let mut skip = a.create_label();
            a.mov(rcx, 0x1_0000_0000u64).unwrap();
            a.jrcxz(skip).unwrap();
            a.mov(eax, 1u32).unwrap();
            a.set_label(&mut skip).unwrap();
            a.db(&[0x67, 0xe3, 0x05]).unwrap(); // jecxz over the next mov
            a.db(&[0xbb, 1, 0, 0, 0]).unwrap(); // mov ebx, 1
            a.nop().unwrap();
        });
        assert_eq!(cpu.s.gpr[reg::RAX], 1, "RCX is not zero");
        assert_eq!(cpu.s.gpr[reg::RBX], 0, "ECX is zero");
    }

    #[test]
    fn jcxz_in_16_bit_mode_tests_cx() {
        let code = assemble(16, |a| {
            let mut skip = a.create_label();
            a.mov(ecx, 0x1_0000u32).unwrap();
            a.jcxz(skip).unwrap();
            a.mov(ax, 1u32).unwrap();
            a.set_label(&mut skip).unwrap();
            a.nop().unwrap();
        });
        let mut cpu = cpu16(&code);
        run_until(&mut cpu, code.len() as u64, 100);
        assert_eq!(cpu.s.gpr[reg::RAX], 0);
    }

    #[test]
    fn call_and_ret_through_registers_and_memory() {
        let code = assemble(64, |a| {
            let mut f = a.create_label();
            let mut done = a.create_label();
            a.lea(rax, qword_ptr(f)).unwrap();
            a.mov(qword_ptr(DATA), rax).unwrap();
            a.call(rax).unwrap();
            a.push(0).unwrap();
            a.call(qword_ptr(DATA)).unwrap();
            a.lea(rdx, qword_ptr(done)).unwrap();
            a.jmp(rdx).unwrap();
            a.mov(edi, 0xbadu32).unwrap();
            a.set_label(&mut f).unwrap();
            a.add(esi, 1).unwrap();
            a.ret_1(0).unwrap();
            a.set_label(&mut done).unwrap();
            a.nop().unwrap();
        });
        let mut cpu = cpu64(&code);
        run_until(&mut cpu, CODE + code.len() as u64, 100);
        assert_eq!(cpu.s.gpr[reg::RSI], 2);
        assert_eq!(cpu.s.gpr[reg::RDI], 0);
        assert_eq!(cpu.s.gpr[reg::RSP], STACK - 8);
    }

    #[test]
    fn indirect_transfers_work_in_32_bit_mode() {
        // f sits at CODE + 2, behind a short jump; `done` is the last byte.
        let build = |done: u32| {
            assemble(32, |a| {
                let mut start = a.create_label();
                a.jmp(start).unwrap();
                a.inc(esi).unwrap(); // f
                a.ret().unwrap();
                a.set_label(&mut start).unwrap();
                a.mov(eax, CODE as u32 + 2).unwrap();
                a.mov(dword_ptr(DATA), eax).unwrap();
                a.call(eax).unwrap();
                a.call(dword_ptr(DATA)).unwrap();
                a.push(0x1234).unwrap();
                a.mov(edx, DATA as u32).unwrap();
                a.call(dword_ptr(edx)).unwrap();
                a.mov(dword_ptr(DATA + 4), done as i32).unwrap();
                a.jmp(dword_ptr(DATA + 4)).unwrap();
                a.mov(edi, 0xbadu32).unwrap();
                a.pop(ebx).unwrap(); // done
            })
        };
        let len = build(0x1_0000).len();
        let code = build(CODE as u32 + len as u32 - 1);
        assert_eq!(code[0], 0xeb, "short jump expected");
        let mut cpu = cpu32(&code);
        run_until(&mut cpu, CODE + code.len() as u64, 100);
        assert_eq!(cpu.s.gpr[reg::RSI], 3);
        assert_eq!(cpu.s.gpr[reg::RDI], 0);
        assert_eq!(cpu.s.gpr[reg::RBX], 0x1234);
        assert_eq!(cpu.s.gpr[reg::RSP], STACK);
    }

    #[test]
    fn indirect_transfers_work_in_16_bit_mode() {
        // f sits at offset 2, behind a short jump; `done` is the last byte.
        let build = |done: u16| {
            assemble(16, |a| {
                let mut start = a.create_label();
                a.jmp(start).unwrap();
                a.inc(si).unwrap(); // f
                a.ret().unwrap();
                a.set_label(&mut start).unwrap();
                a.mov(ax, 2u32).unwrap();
                a.call(ax).unwrap();
                a.mov(word_ptr(0x500), ax).unwrap();
                a.mov(bx, 0x500u32).unwrap();
                a.call(word_ptr(bx)).unwrap();
                a.mov(word_ptr(0x502), i32::from(done)).unwrap();
                a.jmp(word_ptr(0x502)).unwrap();
                a.mov(di, 0xbadu32).unwrap();
                a.nop().unwrap(); // done
            })
        };
        let len = build(0x100).len();
        let code = build(len as u16 - 1);
        assert_eq!(code[0], 0xeb, "short jump expected");
        let mut cpu = cpu16(&code);
        run_until(&mut cpu, code.len() as u64, 100);
        assert_eq!(cpu.s.gpr[reg::RSI], 2);
        assert_eq!(cpu.s.gpr[reg::RDI], 0);
        assert_eq!(cpu.s.gpr[reg::RSP], 0x7000);
    }

    #[test]
    fn a_jump_outside_cs_limit_faults() {
        let code = assemble(32, |a| a.jmp(eax).unwrap());
        let mut cpu = cpu32(&code);
        cpu.s.seg[crate::state::seg::CS].limit = 0xf_ffff;
        cpu.s.gpr[reg::RAX] = 0x10_0000;
        assert_eq!(cpu.run_block(1), Err(Fault::GeneralProtection(0)));
    }
}
