//! The machine an engine runs: memory, buses, hooks, CPUID policy, the stop
//! switch and the counters, bundled so that one `Arc<Machine>` is all an
//! engine (or an embedder) needs.

use std::sync::Arc;

use crate::bus::Bus;
use crate::clock::GuestClock;
use crate::control::VmControl;
use crate::cpuid::CpuidPolicy;
use crate::hooks::Hooks;
use crate::memory::GuestMemory;
use crate::stats::VcpuStats;
use crate::timer::Timers;

/// Everything engines share about one VM.
#[derive(Debug)]
pub struct Machine {
    /// Guest physical memory.
    pub memory: GuestMemory,
    /// Port-I/O and MMIO buses.
    pub bus: Bus,
    /// MSR, CPUID and hypercall hooks.
    pub hooks: Hooks,
    /// What the guest is told about its CPUs.
    pub cpuid: CpuidPolicy,
    /// Stop requests and reasons (shared with the devices that end the VM).
    pub control: Arc<VmControl>,
    /// Per-vCPU exit counters, indexed by vCPU id.
    pub stats: Vec<VcpuStats>,
    /// The timer service every time-driven device registers with.
    pub timers: Timers,
    /// The guest's clock, which stands still while the VM is paused:
    /// every guest-visible time source reads it.
    pub clock: Arc<GuestClock>,
}

impl Machine {
    /// A machine with `memory`, empty buses and hooks, the default CPUID
    /// policy and counters for `vcpus` vCPUs.
    pub fn new(memory: GuestMemory, vcpus: u32) -> Self {
        let clock = Arc::new(GuestClock::new());
        Machine {
            memory,
            bus: Bus::new(),
            hooks: Hooks::new(),
            cpuid: CpuidPolicy::default(),
            control: Arc::new(VmControl::new()),
            stats: (0..vcpus).map(|_| VcpuStats::default()).collect(),
            timers: Timers::with_clock(clock.clone()),
            clock,
        }
    }

    /// Number of vCPUs.
    pub fn vcpu_count(&self) -> u32 {
        self.stats.len() as u32
    }

    /// Counters of vCPU `id` (a shared dummy for out-of-range ids, so a
    /// bad id can never panic an engine).
    pub fn vcpu_stats(&self, id: u32) -> &VcpuStats {
        static SPARE: std::sync::OnceLock<VcpuStats> = std::sync::OnceLock::new();
        self.stats
            .get(id as usize)
            .unwrap_or_else(|| SPARE.get_or_init(VcpuStats::default))
    }
}
