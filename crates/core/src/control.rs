//! How a running VM is asked to stop, and why it stopped.
//!
//! Anything may end a VM: a device (debug-exit, the i8042 reset line, ACPI
//! power-off), a vCPU (triple fault), the user (Ctrl-A X) or an error. They
//! all call [`VmControl::request_stop`]; the first reason wins. Engines poll
//! [`VmControl::should_stop`] between guest exits and register a *kicker*
//! that forces a vCPU out of guest mode (under kvm: a signal that makes
//! `KVM_RUN` return), so a vCPU spinning in the guest stops promptly.

use std::sync::atomic::{AtomicBool, Ordering};
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

/// The stop switch of one VM.
#[derive(Default)]
pub struct VmControl {
    stopping: AtomicBool,
    reason: Mutex<Option<StopReason>>,
    stopped: Condvar,
    kickers: Mutex<Vec<Kicker>>,
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
            self.stopping.store(true, Ordering::SeqCst);
            self.stopped.notify_all();
        }
        for kick in self
            .kickers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            kick();
        }
    }

    /// Whether a stop has been requested (cheap; engines poll it).
    pub fn should_stop(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
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

    /// Registers a function that forces one vCPU out of guest mode. If a
    /// stop was already requested, the kicker runs at once.
    pub fn add_kicker(&self, kick: Kicker) {
        if self.should_stop() {
            kick();
        }
        self.kickers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(kick);
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
