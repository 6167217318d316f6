//! The execution-engine interface shared by the kvm and emu engines.
//!
//! An [`Engine`] turns a [`Machine`] (memory, bus, hooks) into an
//! [`EngineVm`], which creates [`Vcpu`]s. A vCPU runs guest code with
//! [`Vcpu::run`] and handles every port, MMIO, MSR and hypercall access
//! itself by calling into the machine's [`crate::Bus`] and
//! [`crate::Hooks`]; it returns to its caller only for the events in
//! [`VcpuExit`], which concern the VM as a whole. The per-exit counts live in
//! [`crate::stats::VcpuStats`], keyed by [`ExitKind`].

use std::sync::Arc;

use crate::irq::ApicBus;
use crate::machine::Machine;
use crate::regs::{Regs, SpecialRegs};

/// Which engine runs the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EngineKind {
    /// Hardware-assisted virtualization through `/dev/kvm`.
    Kvm,
    /// Alcazar's software x86-64 CPU.
    Emu,
}

impl std::fmt::Display for EngineKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EngineKind::Kvm => "kvm",
            EngineKind::Emu => "emu",
        })
    }
}

/// Errors from an engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The engine cannot run on this host.
    #[error("the {engine} engine is unavailable: {why}")]
    Unavailable {
        /// Which engine.
        engine: EngineKind,
        /// Why not.
        why: String,
    },
    /// A host system call failed.
    #[error("{what} failed: {source}")]
    Host {
        /// What the VMM was doing.
        what: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// The guest did something the engine cannot go on from.
    #[error("vCPU {vcpu}: {what}")]
    Guest {
        /// Which vCPU.
        vcpu: u32,
        /// What went wrong, with the guest state that matters.
        what: String,
    },
    /// The engine does not do what was asked of it.
    #[error("the engine does not support {0}")]
    Unsupported(&'static str),
}

impl EngineError {
    /// A host error from an `errno`.
    pub fn host(what: &'static str, errno: i32) -> Self {
        EngineError::Host {
            what,
            source: std::io::Error::from_raw_os_error(errno),
        }
    }
}

/// Why [`Vcpu::run`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VcpuExit {
    /// The VM's [`crate::VmControl`] asked every vCPU to stop.
    Stopped,
    /// The vCPU executed `hlt` and nothing can ever wake it (the engine
    /// has no local APIC connected for this VM). With local APICs a
    /// halted vCPU sleeps inside `run` until an interrupt or a stop.
    Halted,
    /// The vCPU hit a triple fault; the machine must reset or shut down.
    Shutdown,
}

/// The kinds of exit counted per vCPU (see [`crate::stats::VcpuStats`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExitKind {
    /// `in`/`out`/`ins`/`outs`.
    PortIo,
    /// An access to MMIO.
    Mmio,
    /// `rdmsr`/`wrmsr` that reached user space.
    Msr,
    /// `cpuid` that reached user space.
    Cpuid,
    /// An Alcazar hypercall.
    Hypercall,
    /// `hlt`.
    Hlt,
    /// Triple fault.
    Shutdown,
    /// The vCPU was kicked out of guest mode (signal, immediate exit).
    Interrupted,
    /// Anything else.
    Other,
}

impl ExitKind {
    /// Every kind, in display order.
    pub const ALL: [ExitKind; 9] = [
        ExitKind::PortIo,
        ExitKind::Mmio,
        ExitKind::Msr,
        ExitKind::Cpuid,
        ExitKind::Hypercall,
        ExitKind::Hlt,
        ExitKind::Shutdown,
        ExitKind::Interrupted,
        ExitKind::Other,
    ];

    /// A short lower-case name for telemetry.
    pub fn name(self) -> &'static str {
        match self {
            ExitKind::PortIo => "port_io",
            ExitKind::Mmio => "mmio",
            ExitKind::Msr => "msr",
            ExitKind::Cpuid => "cpuid",
            ExitKind::Hypercall => "hypercall",
            ExitKind::Hlt => "hlt",
            ExitKind::Shutdown => "shutdown",
            ExitKind::Interrupted => "interrupted",
            ExitKind::Other => "other",
        }
    }
}

/// An execution engine: a factory of VMs.
pub trait Engine: Send + Sync {
    /// Which engine this is.
    fn kind(&self) -> EngineKind;
    /// Creates the engine's side of a VM for `machine` (under kvm: the VM fd
    /// and the memory slots).
    fn create_vm(&self, machine: Arc<Machine>) -> Result<Box<dyn EngineVm>, EngineError>;
}

/// An engine's VM: creates the vCPUs.
pub trait EngineVm: Send + Sync {
    /// Creates vCPU `id` (0 is the bootstrap processor).
    fn create_vcpu(&self, id: u32) -> Result<Box<dyn Vcpu>, EngineError>;

    /// The engine's local APICs, if it models them for the platform to
    /// deliver to (the emu engine does). `None`: interrupts from the
    /// platform's controllers go nowhere on this engine.
    fn apic_bus(&self) -> Option<Arc<dyn ApicBus>> {
        None
    }

    /// The CPUID table the engine gives its vCPUs (the VM's
    /// [`crate::cpuid::CpuidPolicy`] applied, as vCPU 0 sees it): what the
    /// firmware tables say about the CPU model. Empty if the engine cannot
    /// tell.
    fn cpuid_table(&self) -> Vec<crate::cpuid::CpuidEntry> {
        Vec::new()
    }

    /// The engine's fast path for device doorbells, if it has one (the
    /// kvm engine's ioeventfds). `None`: doorbell writes reach the bus
    /// like any MMIO write (the emu engine calls the device directly,
    /// which is already the fast path there).
    fn io_events(&self) -> Option<Arc<dyn IoEvents>> {
        None
    }

    /// Whether this engine's vCPUs can be reset in place
    /// ([`Vcpu::reset`]), which waking from ACPI S3 needs. The emu engine
    /// can; the default says no.
    fn can_reset_vcpus(&self) -> bool {
        false
    }
}

/// Doorbells that signal an eventfd without leaving guest mode (KVM's
/// `KVM_IOEVENTFD`): a guest write of any width to a registered MMIO
/// address increments the eventfd's counter instead of exiting to the
/// VMM, and a device thread waiting on the eventfd does the work. The
/// written value is not delivered, so only registers whose write means
/// "go" (virtio queue notifications) are registered.
pub trait IoEvents: Send + Sync {
    /// Routes guest writes to MMIO `addr` to the eventfd `fd` (the engine
    /// keeps its own duplicate of the descriptor).
    fn register_mmio(&self, addr: u64, fd: std::os::fd::BorrowedFd<'_>) -> Result<(), EngineError>;
    /// Undoes [`IoEvents::register_mmio`] for `addr`; later writes reach
    /// the bus again.
    fn unregister_mmio(&self, addr: u64) -> Result<(), EngineError>;
}

/// One virtual CPU.
pub trait Vcpu: Send {
    /// The vCPU index (also its initial APIC ID).
    fn id(&self) -> u32;
    /// Reads the general-purpose registers.
    fn regs(&self) -> Result<Regs, EngineError>;
    /// Writes the general-purpose registers.
    fn set_regs(&mut self, regs: &Regs) -> Result<(), EngineError>;
    /// Reads segment, control and mode registers.
    fn sregs(&self) -> Result<SpecialRegs, EngineError>;
    /// Writes segment, control and mode registers.
    fn set_sregs(&mut self, sregs: &SpecialRegs) -> Result<(), EngineError>;
    /// The vCPU's state for the inspector, read between runs (the VM is
    /// paused or the vCPU thread is parked). The default shows the
    /// general, segment and control registers; engines add what they
    /// model (the emu engine its local APIC, kvm KVM's).
    fn inspect(&self) -> crate::inspect::Tree {
        crate::regs::inspect_registers(self.regs(), self.sregs())
    }
    /// The VM is pausing and this vCPU has left `run`: stop whatever clock
    /// the engine keeps outside the VM's guest clock (kvm: the hardware
    /// TSC, saved here). The default does nothing (emu's TSC reads the
    /// guest clock, which the VMM freezes).
    fn freeze_clock(&mut self) {}
    /// The VM resumes: let that clock go on from where
    /// [`Vcpu::freeze_clock`] stopped it (kvm: the saved TSC is written
    /// back, so the guest sees no time pass).
    fn thaw_clock(&mut self) {}
    /// Runs guest code until an event in [`VcpuExit`]. Device and hook
    /// accesses are handled inside.
    fn run(&mut self) -> Result<VcpuExit, EngineError>;

    /// Puts an application processor in the wait-for-SIPI state: it runs
    /// nothing until another CPU sends it INIT and a STARTUP IPI (MP
    /// specification, appendix B.4). Engines without IPIs refuse.
    fn set_wait_for_sipi(&mut self) -> Result<(), EngineError> {
        Err(EngineError::Unsupported("starting a vCPU by INIT/SIPI"))
    }

    /// Resets the vCPU in place to its power-on state (the RESET column of
    /// Intel SDM Vol. 3A §10.1.1, Table 10-1): real mode at F000:FFF0,
    /// general, control, debug and FPU registers, MSRs and the local APIC
    /// back to their power-up values (the TSC keeps counting), nothing
    /// pending. The platform does this on a wake from ACPI S3, where the
    /// processor context is lost (ACPI 6.5 §16.1.3). Engines that cannot
    /// refuse; see [`EngineVm::can_reset_vcpus`].
    fn reset(&mut self) -> Result<(), EngineError> {
        Err(EngineError::Unsupported("resetting a vCPU in place"))
    }
}
