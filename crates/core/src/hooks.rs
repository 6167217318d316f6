//! Hooks: how an embedder intercepts MSRs, CPUID leaves and hypercalls.
//!
//! Palacios lets a host module claim an MSR (`v3_hook_msr`), a CPUID leaf
//! (`v3_hook_cpuid`) or a hypercall number (`v3_register_hypercall`) and
//! see every guest access to it. [`Hooks`] is that registry for Alcazar.
//! Both engines consult it:
//!
//! * **MSRs** — the emu engine asks on every `rdmsr`/`wrmsr`; the kvm engine
//!   installs a KVM MSR filter that denies the hooked indices, so KVM exits
//!   to user space (`KVM_EXIT_X86_RDMSR`/`WRMSR`) and the hook answers. A
//!   hook that returns [`MsrFault`] makes the guest take #GP(0).
//! * **CPUID** — a hook sees the value the VM's CPUID policy would return
//!   and may change it. KVM answers CPUID in the kernel without exiting, so
//!   under kvm the hooks are evaluated once per vCPU when its CPUID table is
//!   installed; under emu they run on every `cpuid`.
//! * **Hypercalls** — number in RAX, arguments in RBX, RCX, RDX, RSI, result
//!   in RAX. The emu engine takes them from `vmcall`/`vmmcall`. KVM answers
//!   `vmcall` itself and only forwards its own hypercall numbers, so under
//!   kvm a guest issues Alcazar hypercalls with `out HYPERCALL_PORT, al`
//!   (the register convention is the same). An unknown number returns -1.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use crate::cpuid::CpuidResult;

/// The port a guest writes to make an Alcazar hypercall under the kvm
/// engine (`out 0xea, al`; RAX = number, RBX/RCX/RDX/RSI = arguments).
pub const HYPERCALL_PORT: u16 = 0xea;

/// Value returned in RAX for a hypercall number nobody registered.
pub const HYPERCALL_UNKNOWN: u64 = u64::MAX;

/// A hooked MSR access the guest must see fail: it takes #GP(0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("MSR access faults (#GP)")]
pub struct MsrFault;

/// Handler for one or more hooked MSRs.
pub trait MsrHook: Send + Sync {
    /// `rdmsr` of `msr` on vCPU `vcpu`.
    fn read(&self, vcpu: u32, msr: u32) -> Result<u64, MsrFault>;
    /// `wrmsr` of `value` to `msr` on vCPU `vcpu`.
    fn write(&self, vcpu: u32, msr: u32, value: u64) -> Result<(), MsrFault>;
}

/// Handler for a hooked CPUID leaf: adjusts the policy's answer in place.
pub trait CpuidHook: Send + Sync {
    /// Called for `cpuid` with EAX = `leaf`, ECX = `subleaf`.
    fn cpuid(&self, vcpu: u32, leaf: u32, subleaf: u32, result: &mut CpuidResult);
}

impl<F> CpuidHook for F
where
    F: Fn(u32, u32, u32, &mut CpuidResult) + Send + Sync,
{
    fn cpuid(&self, vcpu: u32, leaf: u32, subleaf: u32, result: &mut CpuidResult) {
        self(vcpu, leaf, subleaf, result)
    }
}

/// The arguments of a hypercall, from the guest's registers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HypercallArgs {
    /// RBX.
    pub a0: u64,
    /// RCX.
    pub a1: u64,
    /// RDX.
    pub a2: u64,
    /// RSI.
    pub a3: u64,
}

/// Handler for one hypercall number; its return value goes to RAX.
pub trait Hypercall: Send + Sync {
    /// Performs the hypercall for vCPU `vcpu`.
    fn call(&self, vcpu: u32, args: &HypercallArgs) -> u64;
}

impl<F> Hypercall for F
where
    F: Fn(u32, &HypercallArgs) -> u64 + Send + Sync,
{
    fn call(&self, vcpu: u32, args: &HypercallArgs) -> u64 {
        self(vcpu, args)
    }
}

/// Errors from registering hooks.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HookError {
    /// The MSR already has a hook.
    #[error("MSR {0:#x} is already hooked")]
    MsrTaken(u32),
    /// The CPUID leaf already has a hook.
    #[error("CPUID leaf {0:#x} is already hooked")]
    CpuidTaken(u32),
    /// The hypercall number already has a handler.
    #[error("hypercall {0:#x} is already registered")]
    HypercallTaken(u64),
}

/// The hook registry of one VM.
#[derive(Default)]
pub struct Hooks {
    msrs: RwLock<BTreeMap<u32, Arc<dyn MsrHook>>>,
    cpuid: RwLock<BTreeMap<u32, Arc<dyn CpuidHook>>>,
    hypercalls: RwLock<BTreeMap<u64, Arc<dyn Hypercall>>>,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("msrs", &self.hooked_msrs())
            .field("cpuid", &self.hooked_cpuid_leaves())
            .field("hypercalls", &self.hypercall_numbers())
            .finish()
    }
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

impl Hooks {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Hooks `msr` (like Palacios's `v3_hook_msr`). Under kvm, register
    /// MSR hooks before the VM is created: the filter is installed then.
    pub fn hook_msr(&self, msr: u32, hook: Arc<dyn MsrHook>) -> Result<(), HookError> {
        let mut map = write(&self.msrs);
        if map.contains_key(&msr) {
            return Err(HookError::MsrTaken(msr));
        }
        map.insert(msr, hook);
        Ok(())
    }

    /// Hooks CPUID leaf `leaf`, all subleaves (like `v3_hook_cpuid`).
    pub fn hook_cpuid(&self, leaf: u32, hook: Arc<dyn CpuidHook>) -> Result<(), HookError> {
        let mut map = write(&self.cpuid);
        if map.contains_key(&leaf) {
            return Err(HookError::CpuidTaken(leaf));
        }
        map.insert(leaf, hook);
        Ok(())
    }

    /// Registers hypercall number `nr` (like `v3_register_hypercall`).
    pub fn register_hypercall(
        &self,
        nr: u64,
        handler: Arc<dyn Hypercall>,
    ) -> Result<(), HookError> {
        let mut map = write(&self.hypercalls);
        if map.contains_key(&nr) {
            return Err(HookError::HypercallTaken(nr));
        }
        map.insert(nr, handler);
        Ok(())
    }

    /// The hooked MSR indices, sorted.
    pub fn hooked_msrs(&self) -> Vec<u32> {
        read(&self.msrs).keys().copied().collect()
    }

    /// The hooked CPUID leaves, sorted.
    pub fn hooked_cpuid_leaves(&self) -> Vec<u32> {
        read(&self.cpuid).keys().copied().collect()
    }

    /// The registered hypercall numbers, sorted.
    pub fn hypercall_numbers(&self) -> Vec<u64> {
        read(&self.hypercalls).keys().copied().collect()
    }

    /// `rdmsr` through the hooks: `None` if `msr` is not hooked.
    pub fn msr_read(&self, vcpu: u32, msr: u32) -> Option<Result<u64, MsrFault>> {
        let hook = read(&self.msrs).get(&msr).cloned()?;
        Some(hook.read(vcpu, msr))
    }

    /// `wrmsr` through the hooks: `None` if `msr` is not hooked.
    pub fn msr_write(&self, vcpu: u32, msr: u32, value: u64) -> Option<Result<(), MsrFault>> {
        let hook = read(&self.msrs).get(&msr).cloned()?;
        Some(hook.write(vcpu, msr, value))
    }

    /// Lets the hook of `leaf`, if any, adjust `result`.
    pub fn cpuid(&self, vcpu: u32, leaf: u32, subleaf: u32, result: &mut CpuidResult) {
        let hook = read(&self.cpuid).get(&leaf).cloned();
        if let Some(hook) = hook {
            hook.cpuid(vcpu, leaf, subleaf, result);
        }
    }

    /// Runs hypercall `nr`; unknown numbers return [`HYPERCALL_UNKNOWN`].
    pub fn hypercall(&self, vcpu: u32, nr: u64, args: &HypercallArgs) -> u64 {
        let handler = read(&self.hypercalls).get(&nr).cloned();
        match handler {
            Some(h) => h.call(vcpu, args),
            None => {
                tracing::debug!(vcpu, nr, "unknown hypercall");
                HYPERCALL_UNKNOWN
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    struct Counter(AtomicU64);

    impl MsrHook for Counter {
        fn read(&self, _: u32, _: u32) -> Result<u64, MsrFault> {
            Ok(self.0.load(Ordering::Relaxed))
        }
        fn write(&self, _: u32, _: u32, value: u64) -> Result<(), MsrFault> {
            if value > 100 {
                return Err(MsrFault);
            }
            self.0.store(value, Ordering::Relaxed);
            Ok(())
        }
    }

    #[test]
    fn hooked_msrs_see_reads_and_writes() {
        let hooks = Hooks::new();
        hooks
            .hook_msr(0x4b56_4d00, Arc::new(Counter(AtomicU64::new(7))))
            .unwrap();
        assert_eq!(hooks.msr_read(0, 0x4b56_4d00), Some(Ok(7)));
        assert_eq!(hooks.msr_write(0, 0x4b56_4d00, 9), Some(Ok(())));
        assert_eq!(hooks.msr_read(0, 0x4b56_4d00), Some(Ok(9)));
        assert_eq!(hooks.msr_write(0, 0x4b56_4d00, 1000), Some(Err(MsrFault)));
        assert_eq!(hooks.msr_read(0, 0x10), None);
    }

    #[test]
    fn a_second_hook_on_the_same_msr_is_refused() {
        let hooks = Hooks::new();
        let c = Arc::new(Counter(AtomicU64::new(0)));
        hooks.hook_msr(1, c.clone()).unwrap();
        assert_eq!(hooks.hook_msr(1, c), Err(HookError::MsrTaken(1)));
    }

    #[test]
    fn unknown_hypercalls_return_minus_one() {
        let hooks = Hooks::new();
        let add = |_: u32, a: &HypercallArgs| a.a0 + a.a1;
        hooks.register_hypercall(1, Arc::new(add)).unwrap();
        let args = HypercallArgs {
            a0: 2,
            a1: 40,
            ..Default::default()
        };
        assert_eq!(hooks.hypercall(0, 1, &args), 42);
        assert_eq!(hooks.hypercall(0, 2, &args) as i64, -1);
    }

    #[test]
    fn cpuid_hooks_adjust_the_answer() {
        let hooks = Hooks::new();
        let hook = |vcpu: u32, _: u32, _: u32, r: &mut CpuidResult| r.ebx = vcpu;
        hooks.hook_cpuid(0x4000_0100, Arc::new(hook)).unwrap();
        let mut r = CpuidResult::default();
        hooks.cpuid(3, 0x4000_0100, 0, &mut r);
        assert_eq!(r.ebx, 3);
    }
}
