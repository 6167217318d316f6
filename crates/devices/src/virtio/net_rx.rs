//! virtio-net's receive side: the thread that moves frames from the
//! backend ([`super::net_backend::NetBackend`]) into the guest's receive
//! buffers, and writes out what the backend could not take at once,
//! and the state it shares with [`super::net::VirtioNet`] (virtio 1.2
//! §5.1.6.3, "Setting Up Receive Buffers" and §5.1.6.4, "Processing of
//! Incoming Packets").

use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, MutexGuard};

use alcazar_core::bus::lock;
use alcazar_core::{DmaMemory, VmControl};
use virtio_queue::{Queue, QueueOwnedT};
use vmm_sys_util::eventfd::EventFd;

use super::chain::{complete, pop_chain};
use super::net::{rx_header, NetCounters, MAX_FRAME_LEN, RX_QUEUE};
use super::net_backend::NetBackend;
use super::VirtioInterrupt;
use crate::tap::VNET_HDR_LEN;

/// The largest receive chain looked at (bigger ones are refused).
const MAX_RX_CHAIN: u64 = 1 << 20;

pub(super) struct Active {
    pub(super) rx: Queue,
    pub(super) tx: Queue,
    pub(super) memory: DmaMemory,
    pub(super) interrupt: Arc<dyn VirtioInterrupt>,
    /// A frame read from the backend that waits for a receive buffer.
    pub(super) pending: Option<Vec<u8>>,
}

pub(super) struct State {
    pub(super) active: Option<Active>,
    /// Bumped on every activation and reset; a receive thread runs only
    /// while the generation it was started with is current.
    pub(super) generation: u64,
    pub(super) counters: NetCounters,
}

/// What the receive thread and the device share.
pub(super) struct Shared {
    pub(super) state: Mutex<State>,
    /// Wakes the current receive thread (a notification, a reset, a stop).
    pub(super) wake: Mutex<Option<Arc<EventFd>>>,
    pub(super) control: Arc<VmControl>,
}

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    pub(super) fn wake(&self) {
        let wake = lock(&self.wake);
        if let Some(w) = wake.as_ref() {
            let _ = w.write(1);
        }
    }
}

/// What happened to a received frame.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Delivery {
    /// In the guest (or dropped and counted): read the next one.
    Done,
    /// No receive buffer: keep the frame, stop reading.
    NoBuffer,
}

/// Puts `payload` (an Ethernet frame) into the next receive chain, with
/// a fresh header in front.
pub(super) fn deliver(state: &mut State, payload: &[u8]) -> Delivery {
    let Some(active) = state.active.as_mut() else {
        return Delivery::Done; // the device went away; the frame is lost
    };
    let Some((head, parsed)) = pop_chain(
        &mut active.rx,
        &active.memory,
        MAX_RX_CHAIN,
        active.interrupt.as_ref(),
    ) else {
        return Delivery::NoBuffer;
    };
    let chain = match parsed {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!("virtio-net: bad receive chain: {e}");
            state.counters.rx_bad_chains += 1;
            complete(
                &mut active.rx,
                RX_QUEUE,
                &active.memory,
                head,
                0,
                active.interrupt.as_ref(),
            );
            return Delivery::Done;
        }
    };
    let total = VNET_HDR_LEN + payload.len();
    if chain.writable_len() < total as u64 {
        // Reuse the buffer for the next frame.
        active.rx.go_to_previous_position();
        state.counters.rx_too_big += 1;
        return Delivery::Done;
    }
    let mut written = chain.write_at(&active.memory, 0, &rx_header());
    written += chain.write_at(&active.memory, VNET_HDR_LEN as u64, payload);
    state.counters.rx_frames += 1;
    state.counters.rx_bytes += payload.len() as u64;
    complete(
        &mut active.rx,
        RX_QUEUE,
        &active.memory,
        head,
        written as u32,
        active.interrupt.as_ref(),
    );
    Delivery::Done
}

/// The receive thread of one activation.
pub(super) fn receive_loop(
    shared: Arc<Shared>,
    backend: Arc<dyn NetBackend>,
    wake: Arc<EventFd>,
    generation: u64,
) {
    let mut buf = vec![0u8; MAX_FRAME_LEN];
    loop {
        // Deliver what waits; find out whether to read the backend.
        let read_backend = {
            let mut st = shared.lock();
            if st.generation != generation || shared.control.should_stop() {
                return;
            }
            match st.active.as_mut().and_then(|a| a.pending.take()) {
                Some(frame) => match deliver(&mut st, &frame) {
                    Delivery::Done => true,
                    Delivery::NoBuffer => {
                        if let Some(a) = st.active.as_mut() {
                            a.pending = Some(frame);
                        }
                        false
                    }
                },
                None => true,
            }
        };
        if backend.wants_write() {
            if let Err(e) = backend.flush() {
                tracing::debug!("virtio-net: flushing the backend failed: {e}");
            }
        }
        if read_backend {
            match backend.recv(&mut buf) {
                Ok(Some(n)) if n > 0 => {
                    let mut st = shared.lock();
                    if st.generation != generation {
                        return;
                    }
                    if deliver(&mut st, &buf[..n]) == Delivery::NoBuffer {
                        if let Some(a) = st.active.as_mut() {
                            a.pending = Some(buf[..n].to_vec());
                        }
                    }
                    continue;
                }
                Ok(Some(_)) => continue, // a runt: nothing to deliver
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!("virtio-net: reading the backend failed, receive stops: {e}");
                    return;
                }
            }
        }
        if !wait(backend.as_ref(), read_backend, &wake) {
            return;
        }
    }
}

/// Sleeps until the backend is readable (if `read_too`), writable (if it
/// has bytes waiting) or `wake` is signalled. Returns `false` on an
/// unexpected error.
pub(super) fn wait(backend: &dyn NetBackend, read_too: bool, wake: &EventFd) -> bool {
    let mut events = 0;
    if read_too {
        events |= libc::POLLIN;
    }
    if backend.wants_write() {
        events |= libc::POLLOUT;
    }
    let mut fds = [
        libc::pollfd {
            fd: wake.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: backend.poll_fd(),
            events,
            revents: 0,
        },
    ];
    let n = if events != 0 { 2 } else { 1 };
    // SAFETY: `fds` holds `n` valid pollfd structures.
    let rc = unsafe { libc::poll(fds.as_mut_ptr(), n as libc::nfds_t, -1) };
    if rc < 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            tracing::warn!("virtio-net: poll failed, receive stops: {e}");
            return false;
        }
    }
    if fds[0].revents & libc::POLLIN != 0 {
        let _ = wake.read();
    }
    true
}
