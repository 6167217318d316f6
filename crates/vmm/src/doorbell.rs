//! Virtio doorbells through the engine's ioeventfds.
//!
//! Under the kvm engine a queue notification written by the guest would
//! be an MMIO exit: the vCPU leaves KVM, the VMM decodes the write, calls
//! the device and re-enters. With an ioeventfd (`KVM_IOEVENTFD`) the
//! write only signals an eventfd and the vCPU keeps running; a
//! `virtio-io` thread per live device waits on its queues' eventfds and
//! calls the device. The route is (re)built each time the driver sets
//! `DRIVER_OK` (the BAR may have moved since the last time) and taken
//! down at reset, when its thread ends. If registering fails, the
//! notifications simply keep arriving as MMIO writes.
//!
//! The emu engine has no ioeventfds: there the MMIO write calls the
//! device directly on the vCPU thread, which is its fast path.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::{Arc, Mutex, Weak};

use alcazar_core::bus::lock;
use alcazar_core::engine::IoEvents;
use alcazar_core::VmControl;
use alcazar_devices::virtio::pci::{NotifyRoute, VirtioPci};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// The doorbell route of one virtio device.
pub struct DoorbellRoute {
    io: Arc<dyn IoEvents>,
    device: Weak<Mutex<VirtioPci>>,
    name: String,
    /// Readable once the VM stops: every I/O thread ends.
    shutdown: Arc<EventFd>,
    live: Mutex<Option<Live>>,
}

/// A route in service: the registered addresses and the eventfd that
/// ends its thread.
struct Live {
    addresses: Vec<u64>,
    cancel: EventFd,
}

impl std::fmt::Debug for DoorbellRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DoorbellRoute")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl DoorbellRoute {
    /// A route for `device` through `io`; its threads end when `control`
    /// stops the VM.
    pub fn new(
        io: Arc<dyn IoEvents>,
        device: &Arc<Mutex<VirtioPci>>,
        name: String,
        control: &VmControl,
    ) -> std::io::Result<Arc<Self>> {
        let shutdown = Arc::new(EventFd::new(EFD_NONBLOCK)?);
        let kick = shutdown.clone();
        control.on_stop(Box::new(move || {
            let _ = kick.write(1);
        }));
        Ok(Arc::new(DoorbellRoute {
            io,
            device: Arc::downgrade(device),
            name,
            shutdown,
            live: Mutex::new(None),
        }))
    }

    fn live(&self) -> std::sync::MutexGuard<'_, Option<Live>> {
        lock(&self.live)
    }

    /// Registers one eventfd per queue; `None` (and nothing registered)
    /// if any step fails.
    fn register(&self, addresses: &[(u16, u64)]) -> Option<Vec<(u16, EventFd)>> {
        let mut events = Vec::new();
        for &(queue, addr) in addresses {
            let registered = EventFd::new(EFD_NONBLOCK)
                .map_err(|e| e.to_string())
                .and_then(|fd| {
                    self.io
                        // SAFETY: `fd` is open for the whole call; the
                        // engine duplicates it before keeping it.
                        .register_mmio(addr, unsafe { BorrowedFd::borrow_raw(fd.as_raw_fd()) })
                        .map(|()| fd)
                        .map_err(|e| e.to_string())
                });
            match registered {
                Ok(fd) => events.push((queue, fd)),
                Err(e) => {
                    tracing::warn!(device = %self.name, "no ioeventfd for queue {queue}: {e}; notifications stay MMIO writes");
                    for &(_, a) in &addresses[..events.len()] {
                        let _ = self.io.unregister_mmio(a);
                    }
                    return None;
                }
            }
        }
        Some(events)
    }
}

impl NotifyRoute for DoorbellRoute {
    fn activated(&self, addresses: Vec<(u16, u64)>) {
        self.reset();
        let Some(events) = self.register(&addresses) else {
            return;
        };
        let (cancel, thread_cancel) = match EventFd::new(EFD_NONBLOCK).and_then(|c| {
            let t = c.try_clone()?;
            Ok((c, t))
        }) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(device = %self.name, "no I/O thread: {e}");
                return;
            }
        };
        let worker = Worker {
            device: self.device.clone(),
            events,
            cancel: thread_cancel,
            shutdown: self.shutdown.clone(),
        };
        let spawned = std::thread::Builder::new()
            .name(format!("virtio-io-{}", self.name))
            .spawn(move || worker.run());
        if let Err(e) = spawned {
            tracing::warn!(device = %self.name, "no I/O thread: {e}");
        }
        *self.live() = Some(Live {
            addresses: addresses.iter().map(|&(_, a)| a).collect(),
            cancel,
        });
    }

    fn reset(&self) {
        let Some(live) = self.live().take() else {
            return;
        };
        for addr in live.addresses {
            if let Err(e) = self.io.unregister_mmio(addr) {
                tracing::warn!(device = %self.name, "deassigning ioeventfd {addr:#x}: {e}");
            }
        }
        let _ = live.cancel.write(1);
    }
}

/// The thread behind a live route.
struct Worker {
    device: Weak<Mutex<VirtioPci>>,
    events: Vec<(u16, EventFd)>,
    cancel: EventFd,
    shutdown: Arc<EventFd>,
}

impl Worker {
    /// Waits on the queues' eventfds (and the two ends) with poll(2);
    /// each signalled queue is handed to the device.
    fn run(self) {
        let mut fds: Vec<libc::pollfd> = self
            .events
            .iter()
            .map(|(_, e)| e.as_raw_fd())
            .chain([self.cancel.as_raw_fd(), self.shutdown.as_raw_fd()])
            .map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let queues = self.events.len();
        loop {
            // SAFETY: `fds` is a live, correctly sized array of pollfd
            // whose descriptors this worker owns (or shares through Arc)
            // for the whole call.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
            if n < 0 {
                if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return;
            }
            if fds[queues..].iter().any(|f| f.revents != 0) {
                return; // reset or VM stop
            }
            for (i, (queue, event)) in self.events.iter().enumerate() {
                if fds[i].revents & libc::POLLIN == 0 {
                    continue;
                }
                let _ = event.read();
                let Some(device) = self.device.upgrade() else {
                    return;
                };
                lock(&device).notify_routed(*queue);
            }
        }
    }
}
