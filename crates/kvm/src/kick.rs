//! Kicking a vCPU thread out of `KVM_RUN`.
//!
//! A vCPU thread spends its life inside the `KVM_RUN` ioctl. To stop it
//! (the VM is stopping, or later: pausing, an interrupt to inject), another
//! thread sends it a real-time signal. The ioctl then returns `EINTR`.
//! A signal that lands just *before* the thread enters `KVM_RUN` would be
//! lost, so the handler also sets `kvm_run.immediate_exit` through a
//! thread-local pointer: KVM checks that flag on entry and returns at once
//! (`Documentation/virt/kvm/api.rst`, "immediate_exit").

use std::cell::Cell;
use std::sync::{Arc, Mutex, Once};

use kvm_bindings::kvm_run;
use vmm_sys_util::signal::{register_signal_handler, SIGRTMIN};

thread_local! {
    /// The `kvm_run` page of the vCPU this thread is running, or null.
    /// `const`-initialised and destructor-free, so reading it from a signal
    /// handler never allocates or registers anything.
    static KVM_RUN: Cell<*mut kvm_run> = const { Cell::new(std::ptr::null_mut()) };
}

/// The signal used to kick vCPU threads.
pub fn kick_signal() -> i32 {
    SIGRTMIN()
}

extern "C" fn handle_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    let run = KVM_RUN.with(|c| c.get());
    if !run.is_null() {
        // SAFETY: the pointer is set by `RunGuard` for exactly the time the
        // thread owns a live, mapped kvm_run page, and this handler runs on
        // that same thread; a single byte store is async-signal-safe.
        unsafe { (*run).immediate_exit = 1 };
    }
}

/// Installs the kick signal handler (once per process).
pub fn install_handler() -> Result<(), std::io::Error> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        result = register_signal_handler(kick_signal(), handle_kick)
            .map_err(|e| std::io::Error::from_raw_os_error(e.errno()));
    });
    result
}

/// The thread currently running a vCPU, as a kicker can reach it. The
/// mutex makes "kick" and "thread leaves run()" mutually exclusive, so a
/// kick never targets a thread that has gone.
#[derive(Clone, Default)]
pub struct Target(Arc<Mutex<Option<libc::pthread_t>>>);

impl Target {
    /// Sends the kick signal to the running thread, if any.
    pub fn kick(&self) {
        let guard = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(thread) = *guard {
            // SAFETY: `thread` is a live thread: it clears this slot (under
            // the same lock) before it stops running the vCPU.
            unsafe { libc::pthread_kill(thread, kick_signal()) };
        }
    }
}

/// Marks the current thread as running a vCPU for as long as it lives.
pub struct RunGuard {
    target: Target,
}

impl RunGuard {
    /// Publishes this thread and its `kvm_run` page.
    pub fn enter(target: &Target, run: *mut kvm_run) -> Self {
        KVM_RUN.with(|c| c.set(run));
        // SAFETY: pthread_self has no preconditions.
        let me = unsafe { libc::pthread_self() };
        *target.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(me);
        RunGuard {
            target: target.clone(),
        }
    }
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        *self.target.0.lock().unwrap_or_else(|p| p.into_inner()) = None;
        KVM_RUN.with(|c| c.set(std::ptr::null_mut()));
    }
}
