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
use crate::jit::{EmuTier, JitConfig};
use crate::{apic, vcpu, Cpu};

/// The emu engine.
#[derive(Debug)]
pub struct EmuEngine {
    tier: EmuTier,
    jit: JitConfig,
}

impl Default for EmuEngine {
    fn default() -> Self {
        EmuEngine::new()
    }
}

impl EmuEngine {
    /// The engine (always available), with the host's default tier
    /// ([`EmuTier::host_default`]: the translator on x86-64 hosts).
    pub fn new() -> Self {
        EmuEngine::with_tier(EmuTier::host_default())
    }

    /// The engine running guest code with `tier` ([`EmuTier::Jit`] falls
    /// back to the interpreter on hosts that cannot run it).
    pub fn with_tier(tier: EmuTier) -> Self {
        EmuEngine {
            tier,
            jit: JitConfig::default(),
        }
    }

    /// Chooses the tier of the vCPUs of VMs created from now on.
    pub fn set_tier(&mut self, tier: EmuTier) {
        self.tier = tier;
    }

    /// The tier vCPUs are created with.
    pub fn tier(&self) -> EmuTier {
        self.tier
    }

    /// Sets the translator's tunables (threshold, code-cache size) for
    /// vCPUs created from now on.
    pub fn set_jit_config(&mut self, config: JitConfig) {
        self.jit = config;
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
            tier: self.tier,
            jit: self.jit,
        }))
    }
}

/// The emu engine's side of a VM.
#[derive(Debug)]
pub struct EmuVm {
    machine: Arc<Machine>,
    code: Arc<CodePages>,
    apic_bus: apic::EmuApicBus,
    tier: EmuTier,
    jit: JitConfig,
}

impl EngineVm for EmuVm {
    /// A vCPU with its local APIC on the VM's APIC bus, its timer
    /// registered with the machine's timer service.
    fn create_vcpu(&self, id: u32) -> Result<Box<dyn Vcpu>, EngineError> {
        let mut cpu = Cpu::new(id, self.machine.clone(), self.code.clone());
        cpu.jit.config = self.jit;
        cpu.set_tier(self.tier);
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

    /// Emu vCPUs reset in place ([`crate::Cpu::reset`]).
    fn can_reset_vcpus(&self) -> bool {
        true
    }
}
