//! SIGTERM, SIGINT and SIGHUP end the VM the way Ctrl-A X does: the
//! vCPUs stop, the API socket is removed, the exit status says "stopped
//! by the user". (In console mode the terminal sends Ctrl-C to the guest,
//! not to us: ISIG is off.)
//!
//! The signals are blocked in every thread (the mask is set before any
//! thread starts and is inherited) and one thread takes them with
//! `sigwait`, so no async-signal-safety rules constrain what it does.

use std::sync::{Arc, OnceLock};

use alcazar_control::api::ApiVm;
use alcazar_core::StopReason;

/// The VM a signal stops, once there is one.
pub type SignalTarget = Arc<OnceLock<Arc<ApiVm>>>;

const SIGNALS: [libc::c_int; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP];

fn signal_set() -> libc::sigset_t {
    // SAFETY: an all-zero sigset_t is valid storage for sigemptyset.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is valid, writable storage for a sigset_t.
    unsafe { libc::sigemptyset(&mut set) };
    for s in SIGNALS {
        // SAFETY: as above; `s` is a valid signal number.
        unsafe { libc::sigaddset(&mut set, s) };
    }
    set
}

/// Blocks the signals in the calling thread (call it before starting any
/// thread) and starts the thread that waits for them. Before a VM is set
/// in the returned target, a signal ends the process at once.
pub fn watch() -> SignalTarget {
    let target: SignalTarget = Arc::new(OnceLock::new());
    let set = signal_set();
    // SAFETY: `set` is a valid signal set; a null old-set pointer is
    // allowed.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    let t = target.clone();
    let spawned = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || loop {
            let mut signal: libc::c_int = 0;
            // SAFETY: `set` is valid and `signal` is writable.
            if unsafe { libc::sigwait(&set, &mut signal) } != 0 {
                return;
            }
            match t.get() {
                Some(vm) => {
                    tracing::info!(signal, "stopping the VM on a signal");
                    vm.get().stop(StopReason::UserQuit);
                }
                None => std::process::exit(128 + signal),
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("signals keep their default action: {e}");
    }
    target
}
