//! Tests of the translator: each hard case against the interpreter
//! (`cases.rs`), and differential runs of random code on both tiers
//! (`diff.rs`). Fixtures here.

mod cases;
mod diff;

use alcazar_core::engine::VcpuExit;

use crate::state::reg;
use crate::testutil::cpu64;
use crate::{Cpu, EmuTier};

/// The page directory of [`cpu64`]'s identity map (512 x 2 MiB).
pub(super) const PD: u64 = 0x3000;
/// A page table this module installs for 4 KiB pages.
pub(super) const PT: u64 = 0x9000;

/// Runs `cpu` until its run loop returns (HLT with nothing to wake it, a
/// stop, a shutdown); panics after `max` slices.
pub(super) fn run_bounded(cpu: &mut Cpu, max: usize) -> VcpuExit {
    for _ in 0..max {
        if let Some(exit) = cpu.run_slice(64) {
            return exit;
        }
    }
    panic!("no exit after {max} slices; RIP {:#x}", cpu.s.rip);
}

/// A [`cpu64`] CPU running `code` with `tier`, set up by `setup`; the
/// translator translates on the first run of a block.
pub(super) fn cpu_with(code: &[u8], tier: EmuTier, setup: &dyn Fn(&mut Cpu)) -> Cpu {
    let mut cpu = cpu64(code);
    cpu.jit.config.threshold = 0;
    assert_eq!(cpu.set_tier(tier), tier);
    setup(&mut cpu);
    cpu
}

/// Runs `code` on both tiers from the same state to their run loop's
/// exit; returns (interpreter, translator).
pub(super) fn both(code: &[u8], setup: &dyn Fn(&mut Cpu)) -> (Cpu, Cpu) {
    let mut reference = cpu_with(code, EmuTier::Interp, setup);
    let mut jit = cpu_with(code, EmuTier::Jit, setup);
    let a = run_bounded(&mut reference, 100_000);
    let b = run_bounded(&mut jit, 100_000);
    assert_eq!(a, b, "run loop exits");
    (reference, jit)
}

/// Asserts the architectural state both tiers reached is the same:
/// GPRs, RIP, RFLAGS, CR2, instructions retired.
pub(super) fn assert_same(reference: &Cpu, jit: &Cpu) {
    for r in 0..16 {
        assert_eq!(
            reference.s.gpr[r], jit.s.gpr[r],
            "GPR {r}: interpreter {:#x}, translator {:#x}",
            reference.s.gpr[r], jit.s.gpr[r]
        );
    }
    assert_eq!(reference.s.rip, jit.s.rip, "RIP");
    assert_eq!(
        reference.s.flags.get(),
        jit.s.flags.get(),
        "RFLAGS: interpreter {:#x}, translator {:#x}",
        reference.s.flags.get(),
        jit.s.flags.get()
    );
    assert_eq!(reference.s.cr2, jit.s.cr2, "CR2");
    for x in 0..16 {
        assert_eq!(
            reference.s.fpu.xmm[x], jit.s.fpu.xmm[x],
            "XMM{x}: interpreter {:#x}, translator {:#x}",
            reference.s.fpu.xmm[x], jit.s.fpu.xmm[x]
        );
    }
    assert_eq!(reference.icount, jit.icount, "instructions retired");
}

/// Gives the 2 MiB region at `base` 4 KiB pages (identity, RW), through
/// the page table at [`PT`]; returns the address of the PTE of `page`.
pub(super) fn small_pages(cpu: &mut Cpu, base: u64) -> impl Fn(u64) -> u64 {
    let m = &cpu.machine.memory;
    for i in 0..512u64 {
        m.write_u64(PT + 8 * i, (base + (i << 12)) | 3).unwrap();
    }
    m.write_u64(PD + 8 * (base >> 21), PT | 3).unwrap();
    cpu.mmu.flush_all();
    move |page| PT + 8 * ((page - base) >> 12)
}

#[test]
fn a_hot_loop_is_translated_and_computes_what_the_interpreter_does() {
    use iced_x86::code_asm::*;
    let code = crate::testutil::assemble(64, |a| {
        let mut top = a.create_label();
        a.xor(eax, eax).unwrap();
        a.mov(ecx, 100_000u32).unwrap();
        a.set_label(&mut top).unwrap();
        a.add(rax, rcx).unwrap();
        a.dec(rcx).unwrap();
        a.jnz(top).unwrap();
        a.hlt().unwrap();
    });
    let mut cpu = cpu64(&code);
    assert_eq!(cpu.jit.tier(), EmuTier::Jit);
    assert_eq!(cpu.run(), VcpuExit::Halted);
    assert_eq!(cpu.s.gpr[reg::RAX], 100_000 * 100_001 / 2);
    assert!(cpu.jit.stats.blocks_translated > 0);
    assert!(cpu.jit.stats.instructions > 200_000, "{:?}", cpu.jit.stats);
    assert_eq!(cpu.icount, 2 + 3 * 100_000 + 1);
}
