//! Tests of the translator: each hard case, and differential runs
//! against the interpreter.

use alcazar_core::engine::VcpuExit;
use iced_x86::code_asm::*;

use crate::state::reg;
use crate::testutil::{assemble, cpu64};
use crate::EmuTier;

#[test]
fn a_hot_loop_is_translated_and_computes_what_the_interpreter_does() {
    let code = assemble(64, |a| {
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
