//! ioeventfds (`KVM_IOEVENTFD`): device doorbells that do not exit.
//!
//! A registered MMIO address is matched by KVM itself: a guest write of
//! any length (`len = 0`, no data match) increments the eventfd and the
//! vCPU goes on running guest code. The VMM's device thread waits on the
//! eventfd. On a PVM host the write is still emulated by KVM, but the
//! round trip to user space (about 6.8 µs per MMIO exit here) is saved.

use std::collections::HashMap;
use std::os::fd::{BorrowedFd, FromRawFd, IntoRawFd};
use std::sync::{Arc, Mutex};

use alcazar_core::bus::lock;
use alcazar_core::engine::{EngineError, IoEvents};
use kvm_ioctls::{IoEventAddress, NoDatamatch, VmFd};
use vmm_sys_util::eventfd::EventFd;

/// The VM's registered doorbells.
pub struct KvmIoEvents {
    vm: Arc<VmFd>,
    registered: Mutex<HashMap<u64, EventFd>>,
}

impl std::fmt::Debug for KvmIoEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvmIoEvents").finish_non_exhaustive()
    }
}

impl KvmIoEvents {
    /// No doorbells yet, for `vm`.
    pub fn new(vm: Arc<VmFd>) -> Self {
        KvmIoEvents {
            vm,
            registered: Mutex::new(HashMap::new()),
        }
    }

    fn registered(&self) -> std::sync::MutexGuard<'_, HashMap<u64, EventFd>> {
        lock(&self.registered)
    }
}

impl IoEvents for KvmIoEvents {
    fn register_mmio(&self, addr: u64, fd: BorrowedFd<'_>) -> Result<(), EngineError> {
        let owned = fd
            .try_clone_to_owned()
            .map_err(|source| EngineError::Host {
                what: "dup of an ioeventfd",
                source,
            })?;
        // SAFETY: `owned` is a descriptor this function just duplicated and
        // owns; ownership passes to the EventFd, which closes it.
        let event = unsafe { EventFd::from_raw_fd(owned.into_raw_fd()) };
        let mut registered = self.registered();
        if let Some(old) = registered.remove(&addr) {
            let _ = self
                .vm
                .unregister_ioevent(&old, &IoEventAddress::Mmio(addr), NoDatamatch);
        }
        self.vm
            .register_ioevent(&event, &IoEventAddress::Mmio(addr), NoDatamatch)
            .map_err(|e| EngineError::host("KVM_IOEVENTFD", e.errno()))?;
        registered.insert(addr, event);
        Ok(())
    }

    fn unregister_mmio(&self, addr: u64) -> Result<(), EngineError> {
        let Some(event) = self.registered().remove(&addr) else {
            return Ok(());
        };
        self.vm
            .unregister_ioevent(&event, &IoEventAddress::Mmio(addr), NoDatamatch)
            .map_err(|e| EngineError::host("KVM_IOEVENTFD (deassign)", e.errno()))
    }
}
