//! Exception and interrupt delivery. (Real-mode IVT only for now; the
//! protected/long-mode IDT paths are being written.)

use crate::cpu::{reg, seg};
use crate::exec::operand::push;
use crate::fault::Fault;
use crate::Cpu;
use alcazar_core::engine::VcpuExit;

/// Delivers an exception raised by the instruction at RIP.
pub fn deliver_fault(cpu: &mut Cpu, fault: Fault) {
    let return_rip = if fault.is_trap() {
        cpu.next_rip
    } else {
        cpu.s.rip
    };
    if !cpu.s.protected_mode() && real_mode_vector(cpu, fault.vector(), return_rip).is_ok() {
        return;
    }
    tracing::warn!(
        vcpu = cpu.id,
        ?fault,
        rip = cpu.s.rip,
        "unhandled exception: shutdown"
    );
    #[cfg(test)]
    eprintln!("unhandled {fault:?} at rip {:#x}", cpu.s.rip);
    cpu.exit = Some(VcpuExit::Shutdown);
}

/// Real-mode delivery through the IVT (SDM Vol. 3A §20.1.4).
fn real_mode_vector(cpu: &mut Cpu, vector: u8, return_rip: u64) -> Result<(), Fault> {
    let entry = cpu.read_lin(u64::from(vector) * 4 + cpu.s.idtr.base, 4, false)?;
    let flags = cpu.s.flags.get();
    push(cpu, 2, flags)?;
    push(cpu, 2, u64::from(cpu.s.seg[seg::CS].selector))?;
    push(cpu, 2, return_rip)?;
    cpu.s.flags.set_flag(crate::flags::IF, false);
    cpu.s.flags.set_flag(crate::flags::TF, false);
    let cs = (entry >> 16) as u16;
    cpu.s.seg[seg::CS].selector = cs;
    cpu.s.seg[seg::CS].base = u64::from(cs) << 4;
    cpu.s.rip = entry & 0xffff;
    let _ = reg::RSP;
    Ok(())
}

/// Delivers a pending external interrupt or NMI if one can be taken now;
/// returns whether one was. (No interrupt controllers yet.)
pub fn take_pending(_cpu: &mut Cpu) -> bool {
    false
}
