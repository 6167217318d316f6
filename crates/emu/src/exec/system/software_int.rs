//! Software interrupts: INT n, INT3, INTO and INT1 (SDM Vol. 2 "INT n/
//! INTO/INT3/INT1—Call to interrupt procedure"; Vol. 3A §6.4.2
//! "Software-generated exceptions", §6.12.1.1 the gate-DPL check,
//! §20.3.3 in virtual-8086 mode).
//!
//! Each delivers its vector through the IVT or IDT like any event
//! ([`crate::interrupts::deliver`]), as a trap: the return address is the
//! next instruction.

use iced_x86::Instruction;

use crate::fault::Fault;
use crate::interrupts::{deliver, Event, Source};
use crate::privilege::iopl;
use crate::Cpu;

/// Delivers software interrupt `vector`, returning after the instruction.
fn software(cpu: &mut Cpu, vector: u8, source: Source) -> Result<(), Fault> {
    let ev = Event {
        vector,
        error: None,
        source,
        return_rip: cpu.next_rip,
    };
    deliver(cpu, ev)
}

/// INT n: #GP(0) in virtual-8086 mode with IOPL < 3 (no VME); the gate's
/// DPL must be >= CPL.
pub(super) fn int_n(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    if cpu.s.v86_mode() && iopl(cpu) < 3 {
        return Err(Fault::GeneralProtection(0));
    }
    software(cpu, insn.immediate8(), Source::Software)
}

/// INT3: #BP as a trap, with the DPL check of software interrupts.
pub(super) fn int3(cpu: &mut Cpu, _: &Instruction) -> Result<(), Fault> {
    software(cpu, 3, Source::Software)
}

/// INTO: #OF if OF = 1 (the decoder rejects it in 64-bit mode).
pub(super) fn into(cpu: &mut Cpu, _: &Instruction) -> Result<(), Fault> {
    if cpu.s.flags.of() {
        software(cpu, 4, Source::Software)
    } else {
        Ok(())
    }
}

/// INT1 (ICEBP): #DB as a trap, without the DPL check.
pub(super) fn int1(cpu: &mut Cpu, _: &Instruction) -> Result<(), Fault> {
    software(cpu, 1, Source::Icebp)
}
