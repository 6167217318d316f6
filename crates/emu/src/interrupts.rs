//! Exception and interrupt delivery.
//!
//! Implements Intel SDM Vol. 3A chapter 6 ("Interrupt and Exception
//! Handling") and §20.1.4 (real-address-mode interrupts):
//!
//! * real mode: through the IVT at IDTR.base (FLAGS, CS, IP pushed);
//! * protected mode (§6.10-§6.12): 8-byte interrupt and trap gates (16- and
//!   32-bit), the stack switch from the TSS on a privilege change, error
//!   codes, virtual-8086 mode interrupts (§20.3);
//! * IA-32e mode (§6.14): 16-byte gates, RSP0-2 and IST1-7 from the 64-bit
//!   TSS, SS:RSP always pushed, RSP aligned to 16 bytes;
//! * double faults (§6.15, Table 6-5) and triple faults (shutdown);
//! * the external interrupt and NMI interface of a vCPU and the HLT sleep
//!   ([`lines`]).
//!
//! Task gates are not supported: delivery through one raises #GP with the
//! gate's error code (and is logged).

mod idt;
mod lines;

pub(crate) use idt::{legacy_stack, tss_read};
pub use lines::{take_pending, wait_for_interrupt, InterruptLines, InterruptSource};

use alcazar_core::engine::{ExitKind, VcpuExit};

use crate::fault::{Fault, FaultClass};
use crate::flags;
use crate::segment::Stack;
use crate::state::seg;
use crate::Cpu;

/// Where an event comes from; decides the IDT gate DPL check and the EXT
/// bit of error codes raised while delivering it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// An exception raised by an instruction (or by an earlier delivery).
    Exception,
    /// `int n`, `int3`, `into`: the gate's DPL must be >= CPL.
    Software,
    /// `int1` (ICEBP): a trap without the DPL check.
    Icebp,
    /// An external interrupt or NMI.
    External,
}

/// One event to deliver through the IVT or IDT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// The vector.
    pub vector: u8,
    /// The error code to push (protected mode only).
    pub error: Option<u32>,
    /// What raised it.
    pub source: Source,
    /// The RIP saved for the handler's IRET.
    pub return_rip: u64,
}

/// Delivers `ev` in the current mode; on success CS:RIP is the handler.
/// A fault during delivery is returned (the caller decides about double
/// faults); state is unchanged except for memory already written.
pub fn deliver(cpu: &mut Cpu, ev: Event) -> Result<(), Fault> {
    if cpu.s.protected_mode() {
        idt::deliver_protected(cpu, ev)?;
    } else {
        deliver_real(cpu, ev)?;
    }
    cpu.machine.vcpu_stats(cpu.id).count_vector(ev.vector);
    Ok(())
}

/// Delivers an exception raised by the instruction at RIP (traps: after
/// it). A fault while delivering it escalates per SDM Table 6-5: two
/// contributory faults, or a page fault followed by a contributory fault or
/// another page fault, become a double fault (#DF); a fault while
/// delivering #DF is a triple fault: the vCPU shuts down
/// ([`VcpuExit::Shutdown`]). Never panics.
pub fn deliver_fault(cpu: &mut Cpu, fault: Fault) {
    let mut current = fault;
    // A chain is at most benign -> contributory/#PF -> #DF -> shutdown.
    for _ in 0..4 {
        let return_rip = if current.is_trap() {
            cpu.next_rip
        } else {
            cpu.s.rip
        };
        if let Fault::PageFault { addr, .. } = current {
            cpu.s.cr2 = addr;
        }
        tracing::trace!(vcpu = cpu.id, ?current, rip = cpu.s.rip, "exception");
        let ev = Event {
            vector: current.vector(),
            error: current.error_code(),
            source: Source::Exception,
            return_rip,
        };
        match deliver(cpu, ev) {
            Ok(()) => {
                // Delivery happens between blocks: nothing to end.
                cpu.end_block = false;
                return;
            }
            Err(second) => {
                if current == Fault::DoubleFault {
                    break;
                }
                current = escalate(current, second);
            }
        }
    }
    triple_fault(cpu, fault);
}

/// The exception to deliver when `second` happened while delivering
/// `first` (SDM Vol. 3A Table 6-5).
pub fn escalate(first: Fault, second: Fault) -> Fault {
    use FaultClass::*;
    match (first.class(), second.class()) {
        (Contributory, Contributory) | (PageFault, Contributory) | (PageFault, PageFault) => {
            Fault::DoubleFault
        }
        _ => second,
    }
}

/// Shutdown after a triple fault: the run loop returns
/// [`VcpuExit::Shutdown`].
fn triple_fault(cpu: &mut Cpu, first: Fault) {
    let insn = crate::debug::insn_at_rip(cpu);
    tracing::warn!(
        vcpu = cpu.id,
        ?first,
        rip = format_args!("{:#x}", cpu.s.rip),
        insn,
        cs = cpu.s.seg[seg::CS].selector,
        "triple fault: shutdown"
    );
    cpu.machine.vcpu_stats(cpu.id).count(ExitKind::Shutdown);
    cpu.exit = Some(VcpuExit::Shutdown);
    cpu.end_block = true;
}

/// Jumps to a handler: RIP (and the run loop's next RIP) = `rip`, and the
/// current block ends (CS may have changed).
fn set_rip(cpu: &mut Cpu, rip: u64) {
    cpu.s.rip = rip;
    cpu.next_rip = rip;
    cpu.end_block = true;
}

/// Real-mode delivery through the IVT (SDM Vol. 3A §20.1.4): push FLAGS,
/// CS, IP; clear IF, TF, AC and RF; jump to the 4-byte vector.
fn deliver_real(cpu: &mut Cpu, ev: Event) -> Result<(), Fault> {
    let off = u64::from(ev.vector) * 4;
    if off + 3 > u64::from(cpu.s.idtr.limit) {
        return Err(Fault::GeneralProtection(0));
    }
    let addr = cpu.s.idtr.base.wrapping_add(off) & 0xffff_ffff;
    let entry = cpu.read_system(addr, 4)?;
    let mut st = Stack::current(cpu);
    let rflags = cpu.s.flags.get();
    st.push(cpu, 2, rflags)?;
    st.push(cpu, 2, u64::from(cpu.s.seg[seg::CS].selector))?;
    st.push(cpu, 2, ev.return_rip)?;
    st.commit(cpu);
    for bit in [flags::IF, flags::TF, flags::AC, flags::RF] {
        cpu.s.flags.set_flag(bit, false);
    }
    let cs = (entry >> 16) as u16;
    let c = &mut cpu.s.seg[seg::CS];
    c.selector = cs;
    c.base = u64::from(cs) << 4;
    set_rip(cpu, entry & 0xffff);
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests;
