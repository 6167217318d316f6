//! Test fixtures: a small machine and a CPU in a chosen mode, running code
//! assembled with iced-x86's `code_asm`. Used by the unit tests of every
//! instruction module.

use std::sync::Arc;

use alcazar_core::memory::{GuestMemory, MemoryMap};
use alcazar_core::regs::Segment;
use alcazar_core::Machine;
use iced_x86::code_asm::CodeAssembler;

use crate::code::CodePages;
use crate::state::{cr0, cr4, efer, reg, seg};
use crate::Cpu;

/// Where test code is loaded.
pub const CODE: u64 = 0x10000;
/// Initial stack pointer.
pub const STACK: u64 = 0x80000;
/// A scratch data area tests may use.
pub const DATA: u64 = 0x40000;
const PML4: u64 = 0x1000;

/// A machine with 16 MiB of RAM and no devices.
pub fn machine() -> Arc<Machine> {
    let memory = GuestMemory::new(MemoryMap::pc(16 << 20).unwrap()).unwrap();
    Arc::new(Machine::new(memory, 1))
}

fn cpu_on(machine: Arc<Machine>) -> Cpu {
    let code = Arc::new(CodePages::new(16 << 20));
    Cpu::new(0, machine, code)
}

/// Assembles `f`'s instructions at [`CODE`] with `bitness`.
pub fn assemble(bitness: u32, f: impl FnOnce(&mut CodeAssembler)) -> Vec<u8> {
    let mut a = CodeAssembler::new(bitness).unwrap();
    f(&mut a);
    a.assemble(CODE).unwrap()
}

/// A CPU in 64-bit mode at CPL 0 (identity paging of the first 1 GiB with
/// 2 MiB pages) about to run `code` at [`CODE`].
pub fn cpu64(code: &[u8]) -> Cpu {
    let m = machine();
    m.memory.write_u64(PML4, (PML4 + 0x1000) | 3).unwrap();
    m.memory
        .write_u64(PML4 + 0x1000, (PML4 + 0x2000) | 3)
        .unwrap();
    for i in 0..512u64 {
        m.memory
            .write_u64(PML4 + 0x2000 + i * 8, (i << 21) | 0x83)
            .unwrap();
    }
    m.memory.write(CODE, code).unwrap();
    let mut cpu = cpu_on(m);
    let s = &mut cpu.s;
    s.cr0 = cr0::PE | cr0::PG | cr0::ET | cr0::NE | cr0::WP;
    s.cr4 = cr4::PAE;
    s.cr3 = PML4;
    s.efer = efer::LME | efer::LMA | efer::NXE;
    s.seg[seg::CS] = Segment::code64(0x08);
    for i in [seg::DS, seg::ES, seg::SS, seg::FS, seg::GS] {
        s.seg[i] = Segment::flat32(0x10, false);
    }
    s.gpr[reg::RSP] = STACK;
    s.rip = CODE;
    cpu
}

/// A CPU in 32-bit protected mode, paging off, flat segments.
pub fn cpu32(code: &[u8]) -> Cpu {
    let m = machine();
    m.memory.write(CODE, code).unwrap();
    let mut cpu = cpu_on(m);
    let s = &mut cpu.s;
    s.cr0 = cr0::PE | cr0::ET | cr0::NE;
    s.seg[seg::CS] = Segment::flat32(0x08, true);
    for i in [seg::DS, seg::ES, seg::SS, seg::FS, seg::GS] {
        s.seg[i] = Segment::flat32(0x10, false);
    }
    s.gpr[reg::RSP] = STACK;
    s.rip = CODE;
    cpu
}

/// A CPU in real mode with CS = DS = ES = SS = 0 and `code` at [`CODE`]
/// (reached as 0x1000:0000, i.e. CS = 0x1000).
pub fn cpu16(code: &[u8]) -> Cpu {
    let m = machine();
    m.memory.write(CODE, code).unwrap();
    let mut cpu = cpu_on(m);
    let s = &mut cpu.s;
    s.cr0 = cr0::ET;
    s.seg[seg::CS] = Segment::real_mode((CODE >> 4) as u16, true);
    for i in [seg::DS, seg::ES, seg::SS, seg::FS, seg::GS] {
        s.seg[i] = Segment::real_mode(0, false);
    }
    s.gpr[reg::RSP] = 0x7000;
    s.rip = 0;
    cpu
}

/// Runs one instruction at a time until RIP reaches `end` (an offset in
/// CS), the CPU halts or exits, or `max` instructions ran. Returns the
/// number of instructions run.
pub fn run_until(cpu: &mut Cpu, end: u64, max: usize) -> usize {
    for n in 0..max {
        if cpu.s.rip == end || cpu.exit.is_some() || cpu.s.halted {
            return n;
        }
        if let Err(fault) = cpu.run_block(1) {
            cpu.raise(fault);
        }
    }
    max
}

/// Assembles `f` for 64-bit mode, runs it to its end, returns the CPU.
pub fn run64(f: impl FnOnce(&mut CodeAssembler)) -> Cpu {
    let code = assemble(64, f);
    let end = CODE + code.len() as u64;
    let mut cpu = cpu64(&code);
    run_until(&mut cpu, end, 100_000);
    cpu
}

#[cfg(test)]
mod tests {
    use super::*;
    use iced_x86::code_asm::*;

    #[test]
    fn moves_pushes_and_calls_run_in_64_bit_mode() {
        let cpu = run64(|a| {
            let mut f = a.create_label();
            let mut done = a.create_label();
            a.mov(rax, 0x1122_3344_5566_7788u64).unwrap();
            a.push(rax).unwrap();
            a.pop(rbx).unwrap();
            a.mov(ecx, 5u32).unwrap();
            a.call(f).unwrap();
            a.jmp(done).unwrap();
            a.set_label(&mut f).unwrap();
            a.lea(rdx, qword_ptr(rbx + rcx * 2 + 1)).unwrap();
            a.mov(qword_ptr(DATA), rdx).unwrap();
            a.ret().unwrap();
            a.set_label(&mut done).unwrap();
            a.mov(rsi, qword_ptr(DATA)).unwrap();
            a.nop().unwrap();
        });
        assert_eq!(cpu.s.gpr[reg::RBX], 0x1122_3344_5566_7788);
        assert_eq!(cpu.s.gpr[reg::RSI], 0x1122_3344_5566_7788 + 11);
        assert_eq!(cpu.s.gpr[reg::RSP], STACK);
        assert!(cpu.exit.is_none());
    }

    #[test]
    fn real_mode_code_runs_from_its_segment() {
        let code = assemble(16, |a| {
            a.mov(ax, 0x1234u32).unwrap();
            a.mov(word_ptr(0x500), ax).unwrap();
            a.nop().unwrap();
        });
        let mut cpu = cpu16(&code);
        run_until(&mut cpu, code.len() as u64, 100);
        assert_eq!(cpu.machine.memory.read_u64(0x500).unwrap() & 0xffff, 0x1234);
    }

    #[test]
    fn a_store_into_decoded_code_is_seen_by_the_next_execution() {
        // mov byte [rip+patch], 0x90 overwrites the `int3` that follows it.
        let code = assemble(64, |a| {
            let mut patch = a.create_label();
            a.mov(byte_ptr(patch), 0x90u32).unwrap();
            a.set_label(&mut patch).unwrap();
            a.int3().unwrap();
            a.mov(eax, 7u32).unwrap();
        });
        let end = CODE + code.len() as u64;
        let mut cpu = cpu64(&code);
        run_until(&mut cpu, end, 100);
        assert_eq!(cpu.s.gpr[reg::RAX], 7);
        assert!(cpu.exit.is_none(), "the int3 was never executed");
    }

    #[test]
    fn linked_blocks_see_stores_into_their_code() {
        // A loop of linked blocks; halfway through, a store patches the
        // immediate of `add eax, 1` (in a block already linked) to 2.
        let program = |patch: u64| {
            assemble(64, |a| {
                let (mut top, mut p, mut q, mut r) = (
                    a.create_label(),
                    a.create_label(),
                    a.create_label(),
                    a.create_label(),
                );
                a.xor(eax, eax).unwrap();
                a.mov(ecx, 100u32).unwrap();
                a.set_label(&mut top).unwrap();
                a.jmp(p).unwrap();
                a.set_label(&mut p).unwrap();
                a.db(&[0x83, 0xc0, 0x01]).unwrap(); // add eax, 1
                a.jmp(q).unwrap();
                a.set_label(&mut q).unwrap();
                a.dec(ecx).unwrap();
                a.cmp(ecx, 50).unwrap();
                a.jne(r).unwrap();
                a.mov(byte_ptr(patch), 2u32).unwrap();
                a.set_label(&mut r).unwrap();
                a.test(ecx, ecx).unwrap();
                a.jnz(top).unwrap();
                a.hlt().unwrap();
            })
        };
        let add = [0x83, 0xc0, 0x01];
        let at = |code: &[u8]| code.windows(3).position(|w| w == add).unwrap() as u64;
        let code = program(CODE + at(&program(CODE)) + 2);
        let mut cpu = cpu64(&code);
        assert_eq!(cpu.run(), alcazar_core::engine::VcpuExit::Halted);
        assert_eq!(cpu.s.gpr[reg::RAX], 50 + 50 * 2);
        assert_eq!(cpu.s.gpr[reg::RCX], 0);
    }

    #[test]
    fn a_single_step_runs_only_the_compare_of_a_fused_pair() {
        let code = assemble(64, |a| {
            let mut t = a.create_label();
            a.cmp(eax, eax).unwrap();
            a.je(t).unwrap();
            a.nop().unwrap();
            a.set_label(&mut t).unwrap();
            a.nop().unwrap();
        });
        let mut cpu = cpu64(&code);
        cpu.run_block(1).unwrap();
        assert_eq!((cpu.s.rip, cpu.icount), (CODE + 2, 1));
        cpu.run_block(1).unwrap();
        assert_eq!((cpu.s.rip, cpu.icount), (CODE + 5, 2));
    }
}
