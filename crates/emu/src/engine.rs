//! The emu engine as the rest of Alcazar sees it: [`EmuEngine`] and
//! [`EmuVm`] implement the engine-neutral [`Engine`] and [`EngineVm`]
//! traits of `alcazar_core::engine` (the kvm engine implements the same
//! ones), creating [`Cpu`]s with their local APICs on one APIC bus.
//!
//! A vCPU is handed out as a [`crate::vcpu::EmuVcpu`], which implements
//! [`alcazar_core::engine::Vcpu`] over a [`Cpu`]. (Alcazar's glue, no SDM
//! section.)

use std::sync::{Arc, Mutex};

use alcazar_core::engine::{Engine, EngineError, EngineKind, EngineVm, Vcpu};
use alcazar_core::Machine;

use crate::code::CodePages;
use crate::{apic, vcpu, Cpu};

/// The emu engine.
#[derive(Debug, Default)]
pub struct EmuEngine;

impl EmuEngine {
    /// The engine (always available).
    pub fn new() -> Self {
        EmuEngine
    }
}

impl Engine for EmuEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::Emu
    }

    fn create_vm(&self, machine: Arc<Machine>) -> Result<Box<dyn EngineVm>, EngineError> {
        let phys_end = machine
            .memory
            .map()
            .backed()
            .map(|e| e.end())
            .max()
            .unwrap_or(0);
        let code = Arc::new(CodePages::new(phys_end));
        machine.memory.set_dma_observer(code.clone());
        let apic_bus = apic::EmuApicBus::with_clock(machine.clock.clone());
        Ok(Box::new(EmuVm {
            machine,
            code,
            apic_bus,
        }))
    }
}

/// The emu engine's side of a VM.
#[derive(Debug)]
pub struct EmuVm {
    machine: Arc<Machine>,
    code: Arc<CodePages>,
    apic_bus: apic::EmuApicBus,
}

impl EngineVm for EmuVm {
    /// A vCPU with its local APIC on the VM's APIC bus, its timer
    /// registered with the machine's timer service.
    fn create_vcpu(&self, id: u32) -> Result<Box<dyn Vcpu>, EngineError> {
        let mut cpu = Cpu::new(id, self.machine.clone(), self.code.clone());
        let apic = apic::LocalApic::new(id, cpu.irq.clone(), &self.apic_bus);
        apic.set_timer_notifier(self.machine.timers.notifier());
        self.machine
            .timers
            .register(Arc::new(Mutex::new(apic::ApicTimerDevice::new(
                apic.clone(),
            ))));
        cpu.attach_apic(apic);
        Ok(Box::new(vcpu::EmuVcpu::new(cpu)))
    }

    fn cpuid_table(&self) -> Vec<alcazar_core::cpuid::CpuidEntry> {
        let mut table = crate::cpuid::cpuid_table();
        self.machine
            .cpuid
            .apply(&mut table, 0, self.machine.vcpu_count());
        table
    }

    fn apic_bus(&self) -> Option<Arc<dyn alcazar_core::irq::ApicBus>> {
        Some(Arc::new(self.apic_bus.clone()))
    }
}
