//! The CPU side of the local APIC: attaching it to a vCPU, the xAPIC page
//! in the vCPU's address space, and the INIT / STARTUP protocol (SDM Vol.
//! 3A §9.1.1 and Table 9-1 for the INIT state, §8.4.4 / §10.6.1 for the
//! INIT-SIPI-SIPI sequence of the MP initialization protocol).
//!
//! An INIT puts the CPU in its INIT state (real mode at the reset vector,
//! like power-on, but MSRs other than EFER, the TSC, the MTRRs and CR0.CD
//! / CR0.NW are kept) and then in wait-for-SIPI: the vCPU thread sleeps on
//! its interrupt lines' condvar (no spinning) until a STARTUP IPI or a
//! stop request. A STARTUP with vector `v` starts it in real mode at
//! CS.selector = `v << 8`, CS.base = `v << 12`, IP = 0.

use std::sync::Arc;

use alcazar_core::cpuid::CpuidPolicy;

use super::{regs::base, LocalApic, Startup};
use crate::state::{cr0, reg, seg, CpuState};
use crate::Cpu;

/// [`crate::mmu::Mmu::apic_page`] when no xAPIC page is mapped (never a
/// page address).
pub const NO_APIC_PAGE: u64 = 1;

impl Cpu {
    /// Gives this CPU its local APIC: it becomes the interrupt source of
    /// the CPU's lines, takes over IA32_APIC_BASE, and its xAPIC page
    /// shadows the address space.
    pub fn attach_apic(&mut self, apic: Arc<LocalApic>) {
        // Keep whatever base the CPU already had (the BSP flag included).
        let _ = apic.set_base(self.s.msr.apic_base, false);
        self.irq.connect(apic.clone());
        self.apic = Some(apic);
        self.refresh_apic_page();
    }

    /// Re-reads IA32_APIC_BASE from the APIC and (un)maps the xAPIC page:
    /// mapped while the APIC is enabled in xAPIC mode.
    pub fn refresh_apic_page(&mut self) {
        let Some(apic) = &self.apic else {
            return;
        };
        let b = apic.base();
        self.s.msr.apic_base = b;
        let page = if b & (base::EN | base::EXTD) == base::EN {
            b & !0xfff
        } else {
            NO_APIC_PAGE
        };
        if page != self.mmu.apic_page {
            self.mmu.apic_page = page;
            self.mmu.flush_all();
        }
    }

    /// RESET in place (SDM Vol. 3A §10.1.1, Table 10-1, "Power up / Reset"
    /// column): the architectural state of a new CPU (real mode at
    /// F000:FFF0, EDX = the processor signature), MSRs and MTRRs at their
    /// power-up values except the TSC, which keeps counting (its offset
    /// and IA32_TSC_ADJUST are kept), the local APIC reset, and nothing
    /// pending on the interrupt lines. Decoded blocks and translations
    /// stay valid (they are found by physical address and bitness and
    /// checked against the code pages' generations); the TLB is flushed
    /// and block links dropped, as after an INIT. What the platform does
    /// to the CPUs on a wake from ACPI S3.
    pub fn reset(&mut self) {
        let old = self.s.msr;
        let mut s = CpuState::default();
        s.msr.apic_base = base::DEFAULT | base::EN | if self.id == 0 { base::BSP } else { 0 };
        s.msr.misc_enable = crate::msr::MISC_ENABLE_RESET;
        s.msr.tsc_offset = old.tsc_offset;
        s.msr.tsc_adjust = old.tsc_adjust;
        s.gpr[reg::RDX] = u64::from(CpuidPolicy::lookup(&self.cpuid, 1, 0).eax);
        self.s = s;
        self.mtrr = crate::msr::Mtrrs::default();
        self.irq.reset();
        if let Some(apic) = &self.apic {
            apic.reset();
        }
        self.next_rip = self.s.rip;
        self.end_block = false;
        self.exit = None;
        self.mmu.flush_all();
        self.ctx_epoch = self.ctx_epoch.wrapping_add(1);
        self.refresh_apic_page();
    }

    /// Puts this CPU in the INIT state, waiting for a STARTUP IPI (an AP
    /// at creation, [`alcazar_core::engine::Vcpu::set_wait_for_sipi`]).
    /// Returns `false` if it has no local APIC.
    pub fn enter_wait_for_sipi(&mut self) -> bool {
        let Some(apic) = self.apic.clone() else {
            return false;
        };
        apic.enter_wait_for_sipi();
        init_state(self);
        true
    }
}

/// Acts on what the local APIC received: INIT, then maybe a STARTUP that
/// arrived right behind it.
pub(crate) fn handle(cpu: &mut Cpu) {
    let Some(apic) = cpu.apic.clone() else {
        return;
    };
    loop {
        match apic.take_startup() {
            Startup::None => return,
            Startup::Init => {
                tracing::debug!(vcpu = cpu.id, "INIT: wait for SIPI");
                init_state(cpu);
            }
            Startup::Sipi(vector) => {
                tracing::debug!(vcpu = cpu.id, vector, "STARTUP");
                start_at(cpu, vector);
            }
        }
    }
}

/// The INIT state (SDM Vol. 3A Table 9-1, "INIT" column) plus
/// wait-for-SIPI.
fn init_state(cpu: &mut Cpu) {
    let old = &cpu.s;
    let mut s = CpuState {
        msr: old.msr,
        ..CpuState::default()
    };
    s.cr0 = cr0::ET | (old.cr0 & (cr0::CD | cr0::NW));
    // EDX holds the processor signature after INIT, as after reset.
    s.gpr[reg::RDX] = u64::from(CpuidPolicy::lookup(&cpu.cpuid, 1, 0).eax);
    s.efer = 0;
    s.wait_for_sipi = true;
    s.halted = true;
    cpu.s = s;
    cpu.mmu.flush_all();
    cpu.ctx_epoch = cpu.ctx_epoch.wrapping_add(1);
    cpu.refresh_apic_page();
}

/// Leaves wait-for-SIPI in real mode at `vector << 12`.
fn start_at(cpu: &mut Cpu, vector: u8) {
    let cs = &mut cpu.s.seg[seg::CS];
    cs.selector = u16::from(vector) << 8;
    cs.base = u64::from(vector) << 12;
    cpu.s.rip = 0;
    cpu.next_rip = 0;
    cpu.s.wait_for_sipi = false;
    cpu.s.halted = false;
    cpu.ctx_epoch = cpu.ctx_epoch.wrapping_add(1);
}
