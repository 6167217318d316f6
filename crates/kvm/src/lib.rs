//! # alcazar-kvm
//!
//! The kvm engine: runs guests with hardware-assisted virtualization
//! through `/dev/kvm` (Linux KVM API, `Documentation/virt/kvm/api.rst`).
//!
//! * [`KvmEngine`] opens `/dev/kvm`; [`KvmVm`] owns the VM file descriptor,
//!   installs one memory slot per RAM/ROM region of the machine's memory
//!   map, and (when the embedder hooked MSRs) a KVM MSR filter so that
//!   accesses to hooked MSRs exit to user space.
//! * [`vcpu::KvmVcpu`] is the run loop: `KVM_RUN`, then dispatch the exit to
//!   the machine's bus or hooks, count it, repeat — one thread per vCPU.
//! * [`kick`] stops a vCPU that is inside `KVM_RUN`: a real-time signal
//!   whose handler sets `kvm_run.immediate_exit`.
//! * [`irqchip`]: when the platform asks for the APIC bus
//!   ([`EngineVm::apic_bus`]), the VM gets a split irqchip — KVM's local
//!   APICs in the kernel, our 8259A/IOAPIC/PIT in user space — and the
//!   vCPUs created after that have in-kernel local APICs (HLT then waits
//!   inside KVM, and APs can wait for SIPI). A VM whose embedder never asks
//!   has no local APICs, and HLT returns [`alcazar_core::engine::VcpuExit::Halted`].
//!
//! On hosts whose KVM is the PVM backend (no VT-x/SVM), guest ring-0 code is
//! emulated by KVM itself at about 1 µs per instruction; small guests run
//! fine, Linux does not boot in reasonable time (use the emu engine).

pub mod cpuid;
mod inspect;
pub mod ioevent;
pub mod irqchip;
pub mod kick;
mod regs;
mod tsc;
pub mod vcpu;

use std::sync::{Arc, OnceLock};

use alcazar_core::engine::{Engine, EngineError, EngineKind, EngineVm, IoEvents, Vcpu};
use alcazar_core::irq::ApicBus;
use alcazar_core::Machine;
use kvm_bindings::{kvm_enable_cap, kvm_userspace_memory_region, KVM_MEM_READONLY};
use kvm_ioctls::{
    Cap, Kvm, MsrExitReason, MsrFilterDefaultAction, MsrFilterRange, MsrFilterRangeFlags, VmFd,
};

/// Where KVM may put the three pages of the real-mode TSS it needs on
/// Intel hosts: just below the firmware area at the top of 4 GiB, inside
/// the MMIO hole, where no guest RAM lives.
const TSS_ADDRESS: usize = 0xfffb_d000;

fn unavailable(why: impl Into<String>) -> EngineError {
    EngineError::Unavailable {
        engine: EngineKind::Kvm,
        why: why.into(),
    }
}

/// The kvm engine.
pub struct KvmEngine {
    kvm: Kvm,
}

impl std::fmt::Debug for KvmEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvmEngine").finish_non_exhaustive()
    }
}

impl KvmEngine {
    /// Opens `/dev/kvm` and checks the capabilities the engine relies on.
    pub fn new() -> Result<Self, EngineError> {
        let kvm = Kvm::new().map_err(|e| unavailable(format!("cannot open /dev/kvm: {e}")))?;
        let version = kvm.get_api_version();
        if version != 12 {
            return Err(unavailable(format!(
                "KVM API version {version}, expected 12"
            )));
        }
        if !kvm.check_extension(Cap::ImmediateExit) {
            return Err(unavailable("KVM lacks KVM_CAP_IMMEDIATE_EXIT"));
        }
        Ok(KvmEngine { kvm })
    }
}

impl Engine for KvmEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::Kvm
    }

    fn create_vm(&self, machine: Arc<Machine>) -> Result<Box<dyn EngineVm>, EngineError> {
        let vm = self
            .kvm
            .create_vm()
            .map_err(|e| EngineError::host("KVM_CREATE_VM", e.errno()))?;
        // Only Intel VMX needs it; other backends may refuse, which is fine.
        if let Err(e) = vm.set_tss_address(TSS_ADDRESS) {
            tracing::debug!("KVM_SET_TSS_ADDR refused ({e}); not needed on this host");
        }
        install_memory(&vm, &machine)?;
        install_msr_filter(&vm, &machine)?;
        let supported = self
            .kvm
            .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
            .map_err(|e| EngineError::host("KVM_GET_SUPPORTED_CPUID", e.errno()))?;
        let vm = Arc::new(vm);
        Ok(Box::new(KvmVm {
            io_events: Arc::new(ioevent::KvmIoEvents::new(vm.clone())),
            vm,
            irqchip: OnceLock::new(),
            machine,
            supported: cpuid::from_kvm(&supported),
        }))
    }
}

/// One memory slot per RAM/ROM region; ROM is read-only so that guest
/// writes to it exit as MMIO (and are dropped by the bus).
fn install_memory(vm: &VmFd, machine: &Machine) -> Result<(), EngineError> {
    for (slot, region) in machine.memory.host_regions().iter().enumerate() {
        let flags = if region.read_only {
            KVM_MEM_READONLY
        } else {
            0
        };
        let mem = kvm_userspace_memory_region {
            slot: slot as u32,
            flags,
            guest_phys_addr: region.guest_addr,
            memory_size: region.size,
            userspace_addr: region.host_addr as u64,
        };
        // SAFETY: the region is a live mapping owned by `machine.memory`,
        // which the Arc<Machine> held by KvmVm keeps alive as long as the
        // VM fd exists; the guest can only reach the mapped range.
        unsafe { vm.set_user_memory_region(mem) }
            .map_err(|e| EngineError::host("KVM_SET_USER_MEMORY_REGION", e.errno()))?;
    }
    Ok(())
}

/// Makes hooked MSRs exit to user space: enable `KVM_CAP_X86_USER_SPACE_MSR`
/// for filtered MSRs and install a filter that denies exactly the hooked
/// indices (everything else stays with KVM).
fn install_msr_filter(vm: &VmFd, machine: &Machine) -> Result<(), EngineError> {
    let msrs = machine.hooks.hooked_msrs();
    if msrs.is_empty() {
        return Ok(());
    }
    if msrs.len() > kvm_bindings::KVM_MSR_FILTER_MAX_RANGES as usize {
        return Err(unavailable(format!(
            "{} hooked MSRs; the KVM MSR filter takes at most {}",
            msrs.len(),
            kvm_bindings::KVM_MSR_FILTER_MAX_RANGES
        )));
    }
    let cap = kvm_enable_cap {
        cap: kvm_bindings::KVM_CAP_X86_USER_SPACE_MSR,
        args: [u64::from(MsrExitReason::Filter.bits()), 0, 0, 0],
        ..Default::default()
    };
    vm.enable_cap(&cap)
        .map_err(|e| EngineError::host("KVM_CAP_X86_USER_SPACE_MSR", e.errno()))?;
    // One single-MSR range per hook, bitmap bit 0 = 0: deny, i.e. exit.
    let deny = [0u8; 1];
    let ranges: Vec<MsrFilterRange<'_>> = msrs
        .iter()
        .map(|&base| MsrFilterRange {
            flags: MsrFilterRangeFlags::READ | MsrFilterRangeFlags::WRITE,
            base,
            msr_count: 1,
            bitmap: &deny,
        })
        .collect();
    vm.set_msr_filter(MsrFilterDefaultAction::ALLOW, &ranges)
        .map_err(|e| EngineError::host("KVM_X86_SET_MSR_FILTER", e.errno()))
}

/// The kvm engine's side of one VM.
pub struct KvmVm {
    vm: Arc<VmFd>,
    /// Decided once: at the first [`EngineVm::apic_bus`] call (split
    /// irqchip) or at the first vCPU (none: KVM accepts the capability
    /// only before vCPUs exist).
    irqchip: OnceLock<Option<Arc<irqchip::IrqChip>>>,
    machine: Arc<Machine>,
    supported: Vec<alcazar_core::cpuid::CpuidEntry>,
    io_events: Arc<ioevent::KvmIoEvents>,
}

impl std::fmt::Debug for KvmVm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvmVm").finish_non_exhaustive()
    }
}

impl EngineVm for KvmVm {
    fn cpuid_table(&self) -> Vec<alcazar_core::cpuid::CpuidEntry> {
        cpuid::vcpu_table(&self.supported, &self.machine, 0)
    }

    fn create_vcpu(&self, id: u32) -> Result<Box<dyn Vcpu>, EngineError> {
        let fd = self
            .vm
            .create_vcpu(u64::from(id))
            .map_err(|e| EngineError::host("KVM_CREATE_VCPU", e.errno()))?;
        let table = cpuid::vcpu_table(&self.supported, &self.machine, id);
        fd.set_cpuid2(&cpuid::to_kvm(&table)?)
            .map_err(|e| EngineError::host("KVM_SET_CPUID2", e.errno()))?;
        let chip = self.irqchip.get_or_init(|| None).clone();
        if chip.is_some() {
            irqchip::reset_lapic(&fd, id)?;
            irqchip::make_runnable(&fd)?;
        }
        Ok(Box::new(vcpu::KvmVcpu::new(
            id,
            fd,
            self.machine.clone(),
            chip,
        )))
    }

    fn io_events(&self) -> Option<Arc<dyn IoEvents>> {
        Some(self.io_events.clone())
    }

    fn apic_bus(&self) -> Option<Arc<dyn ApicBus>> {
        let chip = self
            .irqchip
            .get_or_init(|| match irqchip::enable_split_irqchip(&self.vm) {
                Ok(()) => Some(Arc::new(irqchip::IrqChip::new(self.vm.clone()))),
                Err(e) => {
                    tracing::warn!("no local APICs under kvm: {e}");
                    None
                }
            });
        match chip {
            Some(chip) => Some(Arc::new(irqchip::KvmApicBus(chip.clone()))),
            None => {
                tracing::warn!("the APIC bus was asked for after the first vCPU; none under kvm");
                None
            }
        }
    }
}
