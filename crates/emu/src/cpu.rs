//! The CPU: [`Cpu`], one emulated x86-64 processor. It holds the
//! architectural state ([`CpuState`], in [`crate::state`]) and the
//! machinery that runs it: the MMU with its TLB ([`crate::mmu`]), the
//! decoded-block cache ([`crate::code`]), the translator ([`crate::jit`]),
//! the interrupt pins ([`crate::interrupts`]) and the local APIC
//! ([`crate::apic`]).
//!
//! This file has the structure and the power-on constructor (SDM Vol. 3A
//! §9.1.1). The methods live with the concept they implement (the crate
//! doc has the full table): running in `run.rs`, fetching and decoding
//! in `code/decode.rs`, memory accesses in [`crate::mem`],
//! INIT/STARTUP and the APIC page in [`crate::apic::startup`], the fast
//! paths' memory operands in [`crate::exec::fast`].

use std::sync::Arc;

use alcazar_core::cpuid::CpuidEntry;
use alcazar_core::engine::VcpuExit;
use alcazar_core::Machine;

use crate::code::{BlockCache, CodePages};
use crate::mmu::Mmu;
use crate::{apic, exec, interrupts, msr};

/// The register names and the state, defined in [`crate::state`];
/// re-exported here because other crates import them from this path
/// (`alcazar_emu::cpu::seg`, `alcazar_emu::cpu::CpuState`).
pub use crate::state::{cr0, cr4, efer, reg, seg, CodeSize, CpuState, Msrs};

/// One emulated CPU: architectural state plus the machinery that runs it.
pub struct Cpu {
    /// The vCPU index.
    pub id: u32,
    /// Architectural state.
    pub s: CpuState,
    /// Address translation and the TLB.
    pub mmu: Mmu,
    /// The machine: memory, bus, hooks, control.
    pub machine: Arc<Machine>,
    /// Code-page generations shared by all vCPUs.
    pub code: Arc<CodePages>,
    /// This vCPU's decoded blocks.
    pub cache: BlockCache,
    /// The CPUID table (policy applied; hooks run per query).
    pub cpuid: Vec<CpuidEntry>,
    /// Instructions retired.
    pub icount: u64,
    /// RIP of the instruction after the one executing; branches set it.
    pub next_rip: u64,
    /// Set by a handler to end the current block after it (mode changes,
    /// stores into code, `sti`).
    pub end_block: bool,
    /// Set by a handler for an event the run loop must return
    /// ([`VcpuExit::Shutdown`] after a triple fault).
    pub exit: Option<VcpuExit>,
    /// The interrupt pins (INTR, NMI) other threads drive.
    pub irq: Arc<interrupts::InterruptLines>,
    /// The local APIC, if the CPU has one (every vCPU an [`crate::EmuVm`]
    /// creates; bare CPUs of unit tests have none).
    pub apic: Option<Arc<apic::LocalApic>>,
    /// The MTRRs (stored for RDMSR/WRMSR; the emu engine has no caches).
    pub mtrr: msr::Mtrrs,
    /// Bumped by generic instructions, fault and interrupt delivery and
    /// each entry into [`Cpu::run`] (part of [`Cpu::link_epoch`]).
    pub(crate) ctx_epoch: u64,
    /// How the last block run ended: instructions run, times two, plus
    /// one if a taken side exit ended it (picks its [`crate::code::Link`]).
    pub(crate) exit_slot: usize,
    /// Tier 1: the translator and its code cache ([`crate::jit`]).
    pub jit: crate::jit::Jit,
}

impl std::fmt::Debug for Cpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cpu")
            .field("id", &self.id)
            .field("rip", &self.s.rip)
            .field("icount", &self.icount)
            .finish_non_exhaustive()
    }
}

impl Cpu {
    /// A CPU in its power-on state.
    pub fn new(id: u32, machine: Arc<Machine>, code: Arc<CodePages>) -> Self {
        let mmu = Mmu::new(&machine.memory.host_regions());
        let mut cpuid = exec::system::cpuid_table();
        machine.cpuid.apply(&mut cpuid, id, machine.vcpu_count());
        let mut s = CpuState::default();
        s.msr.apic_base = apic::regs::base::DEFAULT
            | apic::regs::base::EN
            | if id == 0 { apic::regs::base::BSP } else { 0 };
        s.msr.misc_enable = msr::MISC_ENABLE_RESET;
        Cpu {
            id,
            s,
            mmu,
            machine,
            code,
            cache: BlockCache::default(),
            cpuid,
            icount: 0,
            next_rip: 0,
            end_block: false,
            exit: None,
            irq: Arc::new(interrupts::InterruptLines::new()),
            apic: None,
            mtrr: msr::Mtrrs::default(),
            ctx_epoch: 0,
            exit_slot: 0,
            jit: crate::jit::Jit::default(),
        }
    }
}
