//! How a running VM is asked to stop, and why it stopped.
//!
//! Anything may end a VM: a device (debug-exit, the i8042 reset line, ACPI
//! power-off), a vCPU (triple fault), the user (Ctrl-A X) or an error. They
//! all call [`VmControl::request_stop`]; the first reason wins.
//!
//! A VM is also *paused* through this switch: [`VmControl::request_pause`]
//! asks every vCPU to leave [`crate::engine::Vcpu::run`] without stopping
//! the VM, and the VMM parks the vCPU threads until a resume.
//!
//! The guest may also put the machine to *sleep* (ACPI S3, suspend to RAM):
//! the PM block calls [`VmControl::request_suspend`], which asks every
//! vCPU to leave `run` like a pause does, but the guest clock keeps
//! running. A wake event (the RTC alarm, the power button) calls
//! [`VmControl::request_wake`]; the VMM acts on it once every vCPU is
//! asleep and then calls [`VmControl::finish_wake`]. Only a VMM whose
//! engine can reset its vCPUs in place allows it
//! ([`VmControl::allow_suspend`]).
//!
//! Engines poll [`VmControl::should_leave_run`] between guest exits (and
//! between blocks on emu) and register a *kicker* that forces a vCPU out of
//! guest mode (under kvm: a signal that makes `KVM_RUN` return; on emu: a
//! wake-up of a vCPU sleeping in HLT), so a vCPU spinning in the guest
//! stops or pauses promptly. Threads that must end with the VM (timers,
//! device back ends) register with [`VmControl::on_stop`] instead.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// Why a VM stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The guest wrote `value` to the debug-exit port; the process exit
    /// status is `(value << 1) | 1`, as with QEMU's isa-debug-exit.
    DebugExit(u32),
    /// The guest powered the machine off (ACPI S5).
    PowerOff,
    /// The guest reset the machine (i8042 pulse, port 0xcf9, ...).
    Reset,
    /// A vCPU hit a triple fault (shutdown).
    TripleFault {
        /// The vCPU that faulted.
        vcpu: u32,
    },
    /// Every vCPU halted and nothing can ever wake one.
    Halted,
    /// The guest kernel panicked (recognized on its console), with the
    /// panic message.
    GuestPanic(String),
    /// The user asked the VMM to quit (Ctrl-A X, a signal, the API).
    UserQuit,
    /// The VMM failed while running the guest.
    Error(String),
}

impl StopReason {
    /// The process exit status the `alcazar` CLI reports for this reason.
    pub fn exit_status(&self) -> i32 {
        match self {
            StopReason::DebugExit(v) => ((v << 1) | 1) as i32 & 0xff,
            StopReason::PowerOff | StopReason::Reset | StopReason::UserQuit => 0,
            StopReason::Halted => 0,
            StopReason::TripleFault { .. } | StopReason::GuestPanic(_) | StopReason::Error(_) => 1,
        }
    }
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StopReason::DebugExit(v) => write!(f, "guest wrote {v:#x} to debug-exit"),
            StopReason::PowerOff => f.write_str("guest powered off"),
            StopReason::Reset => f.write_str("guest reset the machine"),
            StopReason::TripleFault { vcpu } => write!(f, "triple fault on vCPU {vcpu}"),
            StopReason::Halted => f.write_str("all vCPUs halted with no interrupt source"),
            StopReason::UserQuit => f.write_str("stopped by the user"),
            StopReason::GuestPanic(why) => write!(f, "guest kernel panic: {why}"),
            StopReason::Error(e) => write!(f, "VMM error: {e}"),
        }
    }
}

type Kicker = Box<dyn Fn() + Send + Sync>;

/// [`VmControl::attention`] bit: the VM is stopping.
const STOP: u8 = 1;
/// [`VmControl::attention`] bit: the vCPUs are asked to pause.
const PAUSE: u8 = 2;
/// [`VmControl::attention`] bit: the guest put the machine to sleep (S3).
const SUSPEND: u8 = 4;

/// The ACPI sleep switch of one VM (see the module documentation).
#[derive(Default)]
struct Sleep {
    /// The VMM can restart its vCPUs from a waking vector.
    allowed: AtomicBool,
    /// A wake event arrived while the machine sleeps (latched).
    wake: AtomicBool,
    /// Times the guest entered S3.
    suspends: AtomicU64,
    /// Times the machine woke from S3.
    wakes: AtomicU64,
}

/// The stop (and pause) switch of one VM.
#[derive(Default)]
pub struct VmControl {
    /// [`STOP`] and [`PAUSE`]: one load tells an engine whether to leave
    /// its run loop.
    attention: AtomicU8,
    reason: Mutex<Option<StopReason>>,
    stopped: Condvar,
    /// Kick vCPUs out of guest mode (stop and pause).
    kickers: Mutex<Vec<Kicker>>,
    /// End the VM's other threads (stop only).
    stop_hooks: Mutex<Vec<Kicker>>,
    sleep: Sleep,
}

impl std::fmt::Debug for VmControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VmControl")
            .field("reason", &self.reason())
            .finish_non_exhaustive()
    }
}

impl VmControl {
    /// A control for a VM that is not stopping.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the VM to stop for `reason`. Only the first request counts;
    /// later ones are logged and ignored. Kicks every vCPU.
    pub fn request_stop(&self, reason: StopReason) {
        {
            let mut slot = self.reason.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(first) = slot.as_ref() {
                tracing::debug!(%reason, %first, "stop already requested");
                return;
            }
            tracing::debug!(%reason, "stop requested");
            *slot = Some(reason);
            self.attention.fetch_or(STOP, Ordering::SeqCst);
            self.stopped.notify_all();
        }
        Self::run_all(&self.kickers);
        Self::run_all(&self.stop_hooks);
    }

    fn run_all(list: &Mutex<Vec<Kicker>>) {
        for kick in list.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            kick();
        }
    }

    /// Whether a stop has been requested (cheap).
    pub fn should_stop(&self) -> bool {
        self.attention.load(Ordering::Relaxed) & STOP != 0
    }

    /// Whether a vCPU must return from `run` now: the VM is stopping or
    /// pausing (cheap; engines poll it).
    pub fn should_leave_run(&self) -> bool {
        self.attention.load(Ordering::Relaxed) != 0
    }

    /// Asks every vCPU to leave `run` at its next instruction boundary
    /// (emu) or out of `KVM_RUN` (kvm), without stopping the VM; the
    /// VMM's vCPU loop then parks. Kicks every vCPU.
    pub fn request_pause(&self) {
        self.attention.fetch_or(PAUSE, Ordering::SeqCst);
        Self::run_all(&self.kickers);
    }

    /// Withdraws a pause request: vCPUs may run again.
    pub fn clear_pause(&self) {
        self.attention.fetch_and(!PAUSE, Ordering::SeqCst);
    }

    /// Whether a pause is requested.
    pub fn pause_requested(&self) -> bool {
        self.attention.load(Ordering::SeqCst) & PAUSE != 0
    }

    /// Lets the guest suspend the machine (ACPI S3): set by a VMM whose
    /// engine can reset its vCPUs and restart them at the waking vector,
    /// and whose firmware tables offer `\_S3_`.
    pub fn allow_suspend(&self, allowed: bool) {
        self.sleep.allowed.store(allowed, Ordering::SeqCst);
    }

    /// Whether the guest may suspend the machine.
    pub fn suspend_allowed(&self) -> bool {
        self.sleep.allowed.load(Ordering::SeqCst)
    }

    /// The guest put the machine to sleep (ACPI S3): every vCPU is asked to
    /// leave `run` (the kickers run, as for a pause), while the guest
    /// clock keeps running. Returns `false`, changing nothing, if sleep is
    /// not allowed, the machine already sleeps or the VM is stopping.
    pub fn request_suspend(&self) -> bool {
        if !self.suspend_allowed() || self.should_stop() {
            return false;
        }
        if self.attention.fetch_or(SUSPEND, Ordering::SeqCst) & SUSPEND != 0 {
            return false;
        }
        self.sleep.wake.store(false, Ordering::SeqCst);
        self.sleep.suspends.fetch_add(1, Ordering::Relaxed);
        Self::run_all(&self.kickers);
        true
    }

    /// Whether the machine sleeps (from [`VmControl::request_suspend`]
    /// until [`VmControl::finish_wake`]).
    pub fn suspend_requested(&self) -> bool {
        self.attention.load(Ordering::SeqCst) & SUSPEND != 0
    }

    /// A wake event for a sleeping machine: latched until the VMM, once
    /// every vCPU is asleep, restarts them. Returns whether the machine
    /// sleeps (and so will wake).
    pub fn request_wake(&self) -> bool {
        if !self.suspend_requested() {
            return false;
        }
        self.sleep.wake.store(true, Ordering::SeqCst);
        true
    }

    /// Whether a wake event is latched.
    pub fn wake_requested(&self) -> bool {
        self.sleep.wake.load(Ordering::SeqCst)
    }

    /// The VMM has restarted the vCPUs: the machine is awake again.
    pub fn finish_wake(&self) {
        self.sleep.wake.store(false, Ordering::SeqCst);
        if self.attention.fetch_and(!SUSPEND, Ordering::SeqCst) & SUSPEND != 0 {
            self.sleep.wakes.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Times the guest suspended the machine, and times it woke.
    pub fn sleep_counts(&self) -> (u64, u64) {
        (
            self.sleep.suspends.load(Ordering::Relaxed),
            self.sleep.wakes.load(Ordering::Relaxed),
        )
    }

    /// The stop reason, once there is one.
    pub fn reason(&self) -> Option<StopReason> {
        self.reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Blocks until a stop is requested and returns its reason.
    pub fn wait(&self) -> StopReason {
        let mut slot = self.reason.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(r) = slot.as_ref() {
                return r.clone();
            }
            slot = self.stopped.wait(slot).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Like [`VmControl::wait`], but gives up after `timeout`.
    pub fn wait_timeout(&self, timeout: Duration) -> Option<StopReason> {
        let slot = self.reason.lock().unwrap_or_else(|p| p.into_inner());
        let (slot, _) = self
            .stopped
            .wait_timeout_while(slot, timeout, |r| r.is_none())
            .unwrap_or_else(|p| p.into_inner());
        slot.clone()
    }

    /// Registers a function that forces one vCPU out of guest mode; it
    /// runs on every stop and pause request, so it must be harmless to
    /// call again. If a stop or pause is already requested, it runs at
    /// once.
    pub fn add_kicker(&self, kick: Kicker) {
        if self.should_leave_run() {
            kick();
        }
        self.kickers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(kick);
    }

    /// Registers a function that ends one of the VM's other threads (a
    /// timer or device thread) when the VM stops; a pause does not call
    /// it. If a stop was already requested, it runs at once.
    pub fn on_stop(&self, hook: Kicker) {
        if self.should_stop() {
            hook();
        }
        self.stop_hooks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(hook);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;
    use std::sync::Arc;

    #[test]
    fn first_stop_reason_wins_and_kicks_everyone() {
        let c = VmControl::new();
        let kicks = Arc::new(AtomicU32::new(0));
        let k = kicks.clone();
        c.add_kicker(Box::new(move || {
            k.fetch_add(1, Ordering::SeqCst);
        }));
        assert!(!c.should_stop());
        c.request_stop(StopReason::DebugExit(1));
        c.request_stop(StopReason::PowerOff);
        assert_eq!(c.wait(), StopReason::DebugExit(1));
        assert_eq!(kicks.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_pause_kicks_vcpus_but_not_stop_hooks() {
        let c = VmControl::new();
        let kicks = Arc::new(AtomicU32::new(0));
        let hooks = Arc::new(AtomicU32::new(0));
        let (k, h) = (kicks.clone(), hooks.clone());
        c.add_kicker(Box::new(move || {
            k.fetch_add(1, Ordering::SeqCst);
        }));
        c.on_stop(Box::new(move || {
            h.fetch_add(1, Ordering::SeqCst);
        }));
        c.request_pause();
        assert!(c.should_leave_run() && !c.should_stop() && c.pause_requested());
        assert_eq!(
            (kicks.load(Ordering::SeqCst), hooks.load(Ordering::SeqCst)),
            (1, 0)
        );
        c.clear_pause();
        assert!(!c.should_leave_run());
        c.request_stop(StopReason::UserQuit);
        assert!(c.should_leave_run() && c.should_stop());
        assert_eq!(
            (kicks.load(Ordering::SeqCst), hooks.load(Ordering::SeqCst)),
            (2, 1)
        );
    }

    #[test]
    fn suspend_needs_permission_latches_wakes_and_counts() {
        let c = VmControl::new();
        let kicks = Arc::new(AtomicU32::new(0));
        let k = kicks.clone();
        c.add_kicker(Box::new(move || {
            k.fetch_add(1, Ordering::SeqCst);
        }));
        assert!(!c.request_suspend(), "not allowed yet");
        assert!(!c.request_wake(), "nothing sleeps");
        c.allow_suspend(true);
        assert!(c.request_suspend());
        assert!(!c.request_suspend(), "entered twice");
        assert!(c.should_leave_run() && c.suspend_requested() && !c.should_stop());
        assert_eq!(kicks.load(Ordering::SeqCst), 1);
        assert!(!c.wake_requested());
        assert!(c.request_wake());
        assert!(c.wake_requested() && c.suspend_requested());
        c.finish_wake();
        assert!(!c.should_leave_run() && !c.wake_requested());
        assert_eq!(c.sleep_counts(), (1, 1));
        c.request_stop(StopReason::UserQuit);
        assert!(!c.request_suspend(), "a stopping VM does not sleep");
    }

    #[test]
    fn exit_status_follows_isa_debug_exit() {
        assert_eq!(StopReason::DebugExit(0).exit_status(), 1);
        assert_eq!(StopReason::DebugExit(0x10).exit_status(), 0x21);
        assert_eq!(StopReason::PowerOff.exit_status(), 0);
        assert_eq!(StopReason::TripleFault { vcpu: 0 }.exit_status(), 1);
    }

    #[test]
    fn wait_timeout_returns_none_while_running() {
        let c = VmControl::new();
        assert_eq!(c.wait_timeout(Duration::from_millis(1)), None);
    }
}
