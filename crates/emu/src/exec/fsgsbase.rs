//! FSGSBASE: RDFSBASE, RDGSBASE, WRFSBASE, WRGSBASE read and write the FS
//! and GS segment bases directly, at any privilege level (SDM Vol. 2
//! "RDFSBASE/RDGSBASE", "WRFSBASE/WRGSBASE"; Vol. 3A §2.5 CR4.FSGSBASE;
//! CPUID.(EAX=7,ECX=0):EBX.FSGSBASE[bit 0]).
//!
//! All four are #UD outside 64-bit mode (iced-x86 decodes them only in
//! 64-bit code; checked again here) and while CR4.FSGSBASE = 0. The
//! 32-bit forms read the low half of the base (zero-extended into the
//! register) and write a zero-extended value; a 64-bit value that is not
//! canonical is #GP(0). The bases are those IA32_FS_BASE and
//! IA32_GS_BASE show; SWAPGS exchanges the latter with
//! IA32_KERNEL_GS_BASE ([`super::system`]).
//!
//! The writes declare [`LinkEffect::DropsLinks`](super::LinkEffect): the
//! translator keeps a copy of both bases while translated code runs
//! ([`crate::jit`]), which must be reloaded after one changes.

use iced_x86::{Instruction, Mnemonic};

use super::operand::{read_reg, write_reg};
use super::HandlerEntry;
use super::LinkEffect::{DropsLinks, KeepsLinks};
use crate::fault::Fault;
use crate::modes::in_64bit;
use crate::state::{cr4, seg};
use crate::Cpu;

/// The handler for `insn`, if this module implements it, with its effect
/// on block links.
pub fn lookup(insn: &Instruction) -> Option<HandlerEntry> {
    Some(match insn.mnemonic() {
        Mnemonic::Rdfsbase => (read_base::<{ seg::FS }>, KeepsLinks),
        Mnemonic::Rdgsbase => (read_base::<{ seg::GS }>, KeepsLinks),
        Mnemonic::Wrfsbase => (write_base::<{ seg::FS }>, DropsLinks),
        Mnemonic::Wrgsbase => (write_base::<{ seg::GS }>, DropsLinks),
        _ => return None,
    })
}

/// #UD unless in 64-bit mode with CR4.FSGSBASE = 1.
fn check_enabled(cpu: &Cpu) -> Result<(), Fault> {
    if !in_64bit(cpu) || cpu.s.cr4 & cr4::FSGSBASE == 0 {
        return Err(Fault::InvalidOpcode);
    }
    Ok(())
}

/// RDFSBASE r, RDGSBASE r: segment `S`'s base into the register.
fn read_base<const S: usize>(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    check_enabled(cpu)?;
    let base = cpu.s.seg[S].base;
    write_reg(cpu, insn.op_register(0), base);
    Ok(())
}

/// WRFSBASE r, WRGSBASE r: the register into segment `S`'s base.
fn write_base<const S: usize>(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    check_enabled(cpu)?;
    let v = read_reg(cpu, insn.op_register(0));
    if !crate::mem::canonical(v) {
        return Err(Fault::GeneralProtection(0));
    }
    cpu.s.seg[S].base = v;
    Ok(())
}

#[cfg(test)]
mod tests {
    use iced_x86::code_asm::*;

    use crate::fault::Fault;
    use crate::state::{cr4, reg, seg};
    use crate::testutil::{assemble, cpu64, run_until, CODE};
    use crate::Cpu;

    /// Runs `f`'s code one instruction at a time with CR4.FSGSBASE as
    /// given; returns the CPU and the first fault, if any (the run stops
    /// there).
    fn run(enabled: bool, f: impl FnOnce(&mut CodeAssembler)) -> (Cpu, Option<Fault>) {
        let code = assemble(64, f);
        let mut cpu = cpu64(&code);
        if enabled {
            cpu.s.cr4 |= cr4::FSGSBASE;
        }
        let end = CODE + code.len() as u64;
        while cpu.s.rip < end {
            if let Err(fault) = cpu.run_block(1) {
                return (cpu, Some(fault));
            }
        }
        (cpu, None)
    }

    #[test]
    fn the_bases_are_read_and_written() {
        let (cpu, fault) = run(true, |a| {
            a.mov(rax, 0x1234_5678_9abc_def0u64 >> 16).unwrap();
            a.wrfsbase(rax).unwrap();
            a.mov(rbx, 0xffff_8000_0000_1000u64).unwrap();
            a.wrgsbase(rbx).unwrap();
            a.rdfsbase(rcx).unwrap();
            a.mov(rdx, -1i64).unwrap();
            a.rdgsbase(edx).unwrap();
            a.mov(rsi, 0xdead_0000_8000_0000u64).unwrap();
            a.wrfsbase(esi).unwrap();
        });
        assert_eq!(fault, None);
        assert_eq!(cpu.s.gpr[reg::RCX], 0x1234_5678_9abc);
        assert_eq!(cpu.s.gpr[reg::RDX], 0x1000, "32-bit form zero-extends");
        assert_eq!(cpu.s.seg[seg::GS].base, 0xffff_8000_0000_1000);
        assert_eq!(cpu.s.seg[seg::FS].base, 0x8000_0000, "32-bit write");
    }

    #[test]
    fn fsgsbase_is_undefined_while_cr4_disables_it() {
        for f in [
            (|a: &mut CodeAssembler| a.rdfsbase(rax).unwrap()) as fn(&mut CodeAssembler),
            |a| a.rdgsbase(eax).unwrap(),
            |a| a.wrfsbase(rax).unwrap(),
            |a| a.wrgsbase(eax).unwrap(),
        ] {
            let (cpu, fault) = run(false, f);
            assert_eq!(fault, Some(Fault::InvalidOpcode));
            assert_eq!(cpu.s.seg[seg::FS].base, 0);
        }
    }

    #[test]
    fn a_non_canonical_base_is_a_general_protection_fault() {
        let (cpu, fault) = run(true, |a| {
            a.mov(rax, 0x0000_8000_0000_0000u64).unwrap();
            a.wrgsbase(rax).unwrap();
        });
        assert_eq!(fault, Some(Fault::GeneralProtection(0)));
        assert_eq!(cpu.s.seg[seg::GS].base, 0);
    }

    #[test]
    fn cr4_fsgsbase_is_writable_and_the_instructions_run_in_a_guest() {
        let code = assemble(64, |a| {
            a.mov(rax, cr4).unwrap();
            a.or(eax, 1 << 16).unwrap();
            a.mov(cr4, rax).unwrap();
            a.mov(rbx, 0x7000u64).unwrap();
            a.wrfsbase(rbx).unwrap();
            a.rdfsbase(rcx).unwrap();
        });
        let mut cpu = cpu64(&code);
        run_until(&mut cpu, CODE + code.len() as u64, 100);
        assert_ne!(cpu.s.cr4 & cr4::FSGSBASE, 0);
        assert_eq!(cpu.s.gpr[reg::RCX], 0x7000);
    }
}
