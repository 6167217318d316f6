//! The inspector's view of an emu local APIC: the register page decoded
//! by the engine-neutral [`alcazar_core::regs::apic`] (the same names as
//! under kvm), plus what only this model knows: the vector the CPU would
//! take now, the LINT0 level, a waiting ExtINT message, INIT/STARTUP
//! state and the timer's next expiry.
//!
//! Reading copies the register file under the APIC's lock and computes
//! from the copy: no EOI, no ESR latch, no timer tick, no notification.

use alcazar_core::inspect::Tree;
use alcazar_core::regs::apic::{inspect_local_apic, LocalApicRegs, APIC_REGISTER_SLOTS};

use super::regs::{reg, ApicState};
use super::LocalApic;
use crate::msr::guest_tsc;

impl ApicState {
    /// The register page as an xAPIC read would see each register at
    /// guest-clock ns `now`, with the ID, LDR and ICR of the current mode
    /// (x2APIC: the 32-bit ID, the derived LDR, the 32-bit destination).
    pub fn inspector_regs(&self, now: u64) -> LocalApicRegs {
        let mut regs = [0u32; APIC_REGISTER_SLOTS];
        for (r, slot) in regs.iter_mut().enumerate() {
            // Write-only and reserved registers read as 0 here; `read` is
            // a pure function of the state.
            *slot = self.read(r as u32, false, now).map_or(0, |v| v as u32);
        }
        regs[reg::LDR as usize] = self.logical_id();
        regs[reg::ICR as usize] = self.icr as u32;
        regs[reg::ICR2 as usize] = (self.icr >> 32) as u32;
        LocalApicRegs {
            base: self.base,
            id: self.id(),
            regs,
            tsc_deadline: Some(self.read_tsc_deadline()),
        }
    }
}

impl LocalApic {
    /// The APIC for the inspector: the decoded register page, then
    /// `deliverable` (the vector an interrupt-acknowledge would take now,
    /// or `none`), `ext_int_message`, `lint0_level`, `init_pending`,
    /// `wait_for_sipi`, `sipi_vector`, `esr_pending` (errors not yet
    /// latched by an ESR write) and `timer_expires_in_ns` (guest-clock
    /// ns until the timer's next expiry, or `disarmed`).
    /// Side-effect free.
    pub fn inspect(&self) -> Tree {
        let s = self.snapshot();
        let now = guest_tsc(&self.clock);
        let mut t = inspect_local_apic(&s.inspector_regs(now));
        t.value(
            "deliverable",
            s.deliverable()
                .map_or_else(|| "none".to_string(), |v| format!("{v:#04x}")),
        )
        .value("ext_int_message", s.ext_int_message)
        .value("lint0_level", s.lint0_level)
        .value("init_pending", s.init_pending)
        .value("wait_for_sipi", s.wait_for_sipi)
        .value(
            "sipi_vector",
            s.sipi
                .map_or_else(|| "none".to_string(), |v| format!("{v:#04x}")),
        )
        .hex("esr_pending", s.esr_pending.into(), 2);
        match s.timer.next {
            Some(due) => t.value("timer_expires_in_ns", due.saturating_sub(now)),
            None => t.value("timer_expires_in_ns", "disarmed"),
        };
        t
    }
}
