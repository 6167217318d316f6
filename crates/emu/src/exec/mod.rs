//! Instruction execution: choosing a handler once per decoded instruction,
//! and the operand helpers every handler uses.
//!
//! A [`Handler`] executes one instruction. It is chosen at decode time by
//! [`handler_for`] (each module offers the mnemonics it implements), so the
//! hot loop is an indirect call per instruction, never a re-decode. Before
//! the call the run loop sets [`Cpu::next_rip`] to the following
//! instruction; branches overwrite it. A handler that faults returns
//! `Err(Fault)` and must not have changed architectural state (or must have
//! changed only what the SDM says a faulting instruction may change).

pub mod alu;
pub mod bits;
pub mod data;
pub mod fast;
pub mod flow;
pub mod io;
pub mod muldiv;
pub mod operand;
pub mod shift;
pub mod string;
pub mod system;

use iced_x86::{Code, Instruction};

use crate::fault::Fault;
use crate::Cpu;

/// Executes one decoded instruction.
pub type Handler = fn(&mut Cpu, &Instruction) -> Result<(), Fault>;

/// The handler for `insn`; #UD for anything not implemented.
pub fn handler_for(insn: &Instruction) -> Handler {
    if insn.code() == Code::INVALID {
        return undefined;
    }
    let lookups: [fn(&Instruction) -> Option<Handler>; 10] = [
        crate::fpu::lookup,
        data::lookup,
        flow::lookup,
        alu::lookup,
        shift::lookup,
        muldiv::lookup,
        bits::lookup,
        string::lookup,
        io::lookup,
        system::lookup,
    ];
    lookups.iter().find_map(|l| l(insn)).unwrap_or(undefined)
}

/// Whether `insn`'s generic handler can only change general registers,
/// flags (not IF, TF or IOPL), memory and the FPU/SSE state: never CS,
/// the CPU mode, CPL, paging or the interrupt shadow. Such an instruction
/// leaves every block link valid ([`crate::code::Link`]); a store into
/// code still invalidates through the code pages, and a fault through
/// its delivery.
pub fn is_pure(insn: &Instruction) -> bool {
    if insn.code() == Code::INVALID {
        return false;
    }
    let pure: [fn(&Instruction) -> Option<Handler>; 7] = [
        crate::fpu::lookup,
        data::lookup,
        alu::lookup,
        shift::lookup,
        muldiv::lookup,
        bits::lookup,
        string::lookup,
    ];
    pure.iter().any(|l| l(insn).is_some())
}

/// Raises #UD: invalid or unimplemented opcodes.
pub fn undefined(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    tracing::trace!(rip = cpu.s.rip, code = ?insn.code(), "#UD");
    Err(Fault::InvalidOpcode)
}
