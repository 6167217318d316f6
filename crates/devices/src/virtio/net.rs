//! virtio-net: an Ethernet card whose wire is a host TAP interface or
//! passt (virtio 1.2 §5.1).
//!
//! Queues: `receiveq1` (index 0), `transmitq1` (index 1); no control
//! queue, no multiqueue. Features offered: `VIRTIO_F_VERSION_1`,
//! `VIRTIO_NET_F_MAC` (the configuration's `mac`) and
//! `VIRTIO_NET_F_STATUS` (the link is always up). No offloads: without
//! `VIRTIO_NET_F_CSUM`/`GUEST_CSUM`/TSO every frame is complete, its
//! checksums computed, and the 12-byte `virtio_net_hdr_v1` in front of it
//! (§5.1.6) is all zeros except `num_buffers`, which is 1 on receive.
//!
//! **The backend** is a [`NetBackend`]: it takes and returns whole
//! Ethernet frames without blocking, and the device does not know what
//! carries them — a TAP ([`super::net_backend::TapBackend`]) or passt's
//! stream socket ([`crate::passt::PasstStream`]); a datagram socketpair
//! stands in for a TAP in tests.
//!
//! **Transmit** runs on the notifying thread (the vCPU under emu): each
//! chain's device-readable bytes, header plus frame, at most
//! [`MAX_FRAME_LEN`] of frame, are checked and the frame goes to the
//! backend (a backend that cannot write it all at once has the receive
//! thread finish when the host side is writable). A
//! frame whose header asks for an offload that was not negotiated (a
//! checksum to fill in, segmentation) is dropped and counted.
//!
//! **Receive** runs on the device's own thread (`virtio-net-rx`): it
//! polls the backend and a wake-up eventfd; a frame goes into the next
//! receive chain with a fresh header, and the chain is returned as used.
//! When the guest has no receive buffer the frame waits, and the thread
//! stops reading the backend (the host kernel queues or drops) until a
//! notification on `receiveq1` wakes it. Frames bigger than the buffer
//! are dropped and counted, the buffer reused. The thread ends when the
//! driver resets the device or the VM stops (a kicker on its
//! [`VmControl`]).
//!
//! Every chain is validated ([`Chain::parse`]): a bad one is returned
//! with nothing written and counted.

use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;

use alcazar_core::bus::lock;
use alcazar_core::{DmaMemory, VmControl};
use virtio_queue::QueueT;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::chain::{complete, pop_chain, Chain};
use super::net_backend::NetBackend;
use super::net_rx::{receive_loop, Active, Shared, State};
use super::{ActivateError, Activation, DeviceType, VirtioDevice};
use crate::tap::VNET_HDR_LEN;

/// Index of `receiveq1`.
pub const RX_QUEUE: u16 = 0;
/// Index of `transmitq1`.
pub const TX_QUEUE: u16 = 1;
/// The size of each queue.
pub const QUEUE_SIZE: u16 = 256;
/// The largest frame (without the virtio header) either way: 64 KiB.
pub const MAX_FRAME_LEN: usize = 64 * 1024;

/// Feature bit: the device has a MAC address in its configuration.
pub const VIRTIO_NET_F_MAC: u64 = 1 << 5;
/// Feature bit: the configuration's `status` field is valid.
pub const VIRTIO_NET_F_STATUS: u64 = 1 << 16;
/// `status`: the link is up.
pub const VIRTIO_NET_S_LINK_UP: u16 = 1;
/// Header `flags` bit: the driver left a checksum to compute.
pub const VIRTIO_NET_HDR_F_NEEDS_CSUM: u8 = 1;
/// Header `gso_type`: no segmentation.
pub const VIRTIO_NET_HDR_GSO_NONE: u8 = 0;

/// The default MAC: locally administered (bit 1 of the first byte),
/// unicast (bit 0 clear).
pub const DEFAULT_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

/// Parses `aa:bb:cc:dd:ee:ff`; refuses multicast addresses (a card
/// cannot have one).
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for b in &mut mac {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    // More than six bytes, a multicast address (bit 0 of the first byte)
    // or all zeros (no station has it) is no unicast MAC.
    if parts.next().is_some() || mac[0] & 1 != 0 || mac == [0; 6] {
        return None;
    }
    Some(mac)
}

/// The header written in front of every received frame: no checksum or
/// segmentation information, one buffer (§5.1.6.4: `num_buffers` is 1
/// without `VIRTIO_NET_F_MRG_RXBUF`).
pub fn rx_header() -> [u8; VNET_HDR_LEN] {
    let mut h = [0u8; VNET_HDR_LEN];
    h[10..12].copy_from_slice(&1u16.to_le_bytes());
    h
}

/// Why a transmitted frame was not sent.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TxError {
    /// Shorter than the header (or no frame after it).
    #[error("the chain holds {0} bytes, less than a header and a frame")]
    TooShort(u64),
    /// More than [`MAX_FRAME_LEN`] bytes of frame.
    #[error("the frame is {0} bytes, more than the maximum")]
    TooLong(u64),
    /// The header asks for an offload that was not negotiated.
    #[error("the header asks for an offload (flags {flags:#x}, gso_type {gso_type})")]
    Offload {
        /// `flags`.
        flags: u8,
        /// `gso_type`.
        gso_type: u8,
    },
}

/// Checks a transmit chain's size and header (§5.1.6.2: without
/// `VIRTIO_NET_F_CSUM` the driver sets no `NEEDS_CSUM`; without the
/// host TSO/UFO features, `gso_type` is `GSO_NONE`). Returns the frame
/// length.
pub fn check_tx(header: &[u8; VNET_HDR_LEN], chain_len: u64) -> Result<usize, TxError> {
    let hdr = VNET_HDR_LEN as u64;
    if chain_len <= hdr {
        return Err(TxError::TooShort(chain_len));
    }
    let frame = chain_len - hdr;
    if frame > MAX_FRAME_LEN as u64 {
        return Err(TxError::TooLong(frame));
    }
    let (flags, gso_type) = (header[0], header[1]);
    if flags & VIRTIO_NET_HDR_F_NEEDS_CSUM != 0 || gso_type != VIRTIO_NET_HDR_GSO_NONE {
        return Err(TxError::Offload { flags, gso_type });
    }
    Ok(frame as usize)
}

/// Counters, shown by the inspector.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetCounters {
    /// Frames delivered to the guest.
    pub rx_frames: u64,
    /// Their bytes (without headers).
    pub rx_bytes: u64,
    /// Frames dropped: bigger than the guest's buffer.
    pub rx_too_big: u64,
    /// Receive chains refused as malformed.
    pub rx_bad_chains: u64,
    /// Frames sent to the backend.
    pub tx_frames: u64,
    /// Their bytes (without headers).
    pub tx_bytes: u64,
    /// Transmit chains refused (malformed, too short or long, offloads).
    pub tx_bad_chains: u64,
    /// Frames the backend did not take (full, or an error).
    pub tx_dropped: u64,
}

/// The virtio network device.
pub struct VirtioNet {
    mac: [u8; 6],
    backend: Arc<dyn NetBackend>,
    shared: Arc<Shared>,
    worker: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for VirtioNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtioNet")
            .field("mac", &self.mac)
            .finish_non_exhaustive()
    }
}

impl VirtioNet {
    /// A network device with address `mac` on `backend`. Its receive
    /// thread ends when `control` stops the VM.
    pub fn new(backend: Arc<dyn NetBackend>, mac: [u8; 6], control: Arc<VmControl>) -> Self {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                active: None,
                generation: 0,
                counters: NetCounters::default(),
            }),
            wake: Mutex::new(None),
            control: control.clone(),
        });
        let weak: Weak<Shared> = Arc::downgrade(&shared);
        control.on_stop(Box::new(move || {
            if let Some(s) = weak.upgrade() {
                s.wake();
            }
        }));
        VirtioNet {
            mac,
            backend,
            shared,
            worker: None,
        }
    }

    /// The counters so far.
    pub fn counters(&self) -> NetCounters {
        self.shared.lock().counters
    }

    /// The configuration structure (§5.1.4): `mac`, `status`,
    /// `max_virtqueue_pairs` (1).
    fn config_image(&self) -> [u8; 10] {
        let mut c = [0u8; 10];
        c[..6].copy_from_slice(&self.mac);
        c[6..8].copy_from_slice(&VIRTIO_NET_S_LINK_UP.to_le_bytes());
        c[8..10].copy_from_slice(&1u16.to_le_bytes());
        c
    }

    /// Sends every available transmit chain.
    fn transmit(&self) {
        let mut guard = self.shared.lock();
        let state = &mut *guard;
        let Some(active) = state.active.as_mut() else {
            return;
        };
        let mut buf = Vec::new();
        let limit = (VNET_HDR_LEN + MAX_FRAME_LEN) as u64;
        while let Some((head, parsed)) = pop_chain(
            &mut active.tx,
            &active.memory,
            limit,
            active.interrupt.as_ref(),
        ) {
            match parsed {
                Ok(chain) => match read_tx_frame(&chain, &active.memory, &mut buf) {
                    Ok(()) => match self.backend.send(&buf[VNET_HDR_LEN..]) {
                        Ok(()) => {
                            state.counters.tx_frames += 1;
                            state.counters.tx_bytes += (buf.len() - VNET_HDR_LEN) as u64;
                        }
                        Err(e) => {
                            tracing::debug!("virtio-net: backend refused a frame: {e}");
                            state.counters.tx_dropped += 1;
                        }
                    },
                    Err(e) => {
                        tracing::debug!("virtio-net: bad transmit frame: {e}");
                        state.counters.tx_bad_chains += 1;
                    }
                },
                Err(e) => {
                    tracing::debug!("virtio-net: bad transmit chain: {e}");
                    state.counters.tx_bad_chains += 1;
                }
            }
            complete(
                &mut active.tx,
                TX_QUEUE,
                &active.memory,
                head,
                0,
                active.interrupt.as_ref(),
            );
        }
        drop(guard);
        // Bytes the backend queued are written by the receive thread when
        // the host side is writable: make it poll for that.
        if self.backend.wants_write() {
            self.shared.wake();
        }
    }

    /// Stops the receive thread of the current generation, if any.
    fn stop_worker(&mut self, join: bool) {
        {
            let mut st = self.shared.lock();
            st.active = None;
            st.generation += 1;
        }
        self.shared.wake();
        if let Some(h) = self.worker.take() {
            if join {
                let _ = h.join();
            }
        }
    }
}

/// Reads a transmit chain into `buf`: a clean header, then the frame.
fn read_tx_frame(chain: &Chain, mem: &DmaMemory, buf: &mut Vec<u8>) -> Result<(), TxError> {
    let len = chain.readable_len();
    let mut header = [0u8; VNET_HDR_LEN];
    if chain.read_at(mem, 0, &mut header) < VNET_HDR_LEN {
        return Err(TxError::TooShort(len));
    }
    let frame_len = check_tx(&header, len)?;
    buf.clear();
    buf.resize(VNET_HDR_LEN + frame_len, 0);
    let got = chain.read_at(mem, VNET_HDR_LEN as u64, &mut buf[VNET_HDR_LEN..]);
    buf.truncate(VNET_HDR_LEN + got);
    Ok(())
}

impl VirtioDevice for VirtioNet {
    fn device_type(&self) -> DeviceType {
        DeviceType::Net
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE, QUEUE_SIZE]
    }

    fn device_features(&self) -> u64 {
        super::VIRTIO_F_VERSION_1 | VIRTIO_NET_F_MAC | VIRTIO_NET_F_STATUS
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let img = self.config_image();
        for (i, b) in data.iter_mut().enumerate() {
            let at = (offset as usize).saturating_add(i);
            *b = img.get(at).copied().unwrap_or(0);
        }
    }

    fn activate(&mut self, activation: Activation) -> Result<(), ActivateError> {
        let Activation {
            queues,
            memory,
            interrupt,
            ..
        } = activation;
        let mut queues = queues.into_iter();
        let rx = queues.next().filter(|q| q.ready());
        let rx = rx.ok_or(ActivateError::QueueNotReady(RX_QUEUE))?;
        let tx = queues.next().filter(|q| q.ready());
        let tx = tx.ok_or(ActivateError::QueueNotReady(TX_QUEUE))?;
        self.stop_worker(true);
        let wake = EventFd::new(EFD_NONBLOCK)
            .map(Arc::new)
            .map_err(|e| ActivateError::Host(format!("virtio-net eventfd: {e}")))?;
        let generation = {
            let mut st = self.shared.lock();
            st.active = Some(Active {
                rx,
                tx,
                memory,
                interrupt,
                pending: None,
            });
            st.generation
        };
        *lock(&self.shared.wake) = Some(wake.clone());
        let (shared, backend) = (self.shared.clone(), self.backend.clone());
        let worker = std::thread::Builder::new()
            .name("virtio-net-rx".into())
            .spawn(move || receive_loop(shared, backend, wake, generation))
            .map_err(|e| ActivateError::Host(format!("virtio-net receive thread: {e}")))?;
        self.worker = Some(worker);
        self.transmit();
        Ok(())
    }

    fn queue_notify(&mut self, queue: u16) {
        match queue {
            RX_QUEUE => self.shared.wake(),
            TX_QUEUE => self.transmit(),
            _ => {}
        }
    }

    fn reset(&mut self) {
        // Not joined: the thread may be signalling an interrupt, and the
        // caller holds the transport's lock. It sees the new generation
        // and ends on its own.
        self.stop_worker(false);
    }

    fn inspect(&self) -> Vec<(String, String)> {
        let st = self.shared.lock();
        let c = st.counters;
        let mac: Vec<String> = self.mac.iter().map(|b| format!("{b:02x}")).collect();
        let mut v = vec![
            ("mac".into(), mac.join(":")),
            ("backend".into(), self.backend.kind().into()),
            ("rx_frames".into(), c.rx_frames.to_string()),
            ("rx_bytes".into(), c.rx_bytes.to_string()),
            ("rx_too_big".into(), c.rx_too_big.to_string()),
            ("rx_bad_chains".into(), c.rx_bad_chains.to_string()),
            ("tx_frames".into(), c.tx_frames.to_string()),
            ("tx_bytes".into(), c.tx_bytes.to_string()),
            ("tx_bad_chains".into(), c.tx_bad_chains.to_string()),
            ("tx_dropped".into(), c.tx_dropped.to_string()),
        ];
        if let Some(a) = &st.active {
            v.push(("rx_pending".into(), a.pending.is_some().to_string()));
        }
        v
    }
}

impl Drop for VirtioNet {
    fn drop(&mut self) {
        self.stop_worker(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::net_backend::TapBackend;
    use crate::virtio::testing::{memory, CountingInterrupt, DriverQueue};
    use alcazar_core::GuestMemory;
    use std::os::unix::net::UnixDatagram;
    use std::time::{Duration, Instant};

    const RXQ: u64 = 0x10000;
    const TXQ: u64 = 0x20000;
    const BUF: u64 = 0x40000;

    struct Rig {
        mem: GuestMemory,
        rx: DriverQueue,
        tx: DriverQueue,
        net: VirtioNet,
        peer: UnixDatagram,
        irq: Arc<CountingInterrupt>,
        control: Arc<VmControl>,
    }

    fn rig() -> Rig {
        let (ours, peer) = UnixDatagram::pair().unwrap();
        peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let control = Arc::new(VmControl::new());
        let backend = TapBackend::new(std::os::fd::OwnedFd::from(ours)).unwrap();
        let net = VirtioNet::new(Arc::new(backend), DEFAULT_MAC, control.clone());
        Rig {
            mem: memory(),
            rx: DriverQueue::new(RXQ, 16),
            tx: DriverQueue::new(TXQ, 16),
            net,
            peer,
            irq: CountingInterrupt::new(),
            control,
        }
    }

    impl Rig {
        fn activate(&mut self) {
            let activation = Activation {
                features: self.net.device_features(),
                queues: vec![
                    self.rx.device_queue(&self.mem),
                    self.tx.device_queue(&self.mem),
                ],
                memory: self.mem.dma(),
                interrupt: self.irq.clone(),
            };
            self.net.activate(activation).unwrap();
        }

        fn wait_rx_used(&self, n: usize) -> Vec<(u32, u32)> {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let used = self.rx.used_entries(&self.mem);
                if used.len() >= n || Instant::now() > deadline {
                    return used;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }

    fn frame(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + 3) as u8).collect()
    }

    #[test]
    fn macs_parse_and_multicast_is_refused() {
        assert_eq!(
            parse_mac("52:54:00:ab:CD:ef"),
            Some([0x52, 0x54, 0, 0xab, 0xcd, 0xef])
        );
        assert_eq!(parse_mac("01:00:5e:00:00:01"), None, "multicast");
        assert_eq!(parse_mac("52:54:00:ab:cd"), None);
        assert_eq!(parse_mac("52:54:00:ab:cd:ef:01"), None);
        assert_eq!(parse_mac("5254:00:ab:cd:ef"), None);
        assert_eq!(parse_mac("52:54:00:ab:cd:gg"), None);
    }

    #[test]
    fn received_frames_get_one_buffer_and_no_offloads() {
        let h = rx_header();
        assert_eq!(h.len(), 12);
        assert_eq!(&h[..10], &[0; 10]);
        assert_eq!(u16::from_le_bytes([h[10], h[11]]), 1, "num_buffers");
    }

    #[test]
    fn transmit_checks_bound_the_frame_and_refuse_offloads() {
        let zero = [0u8; VNET_HDR_LEN];
        assert_eq!(check_tx(&zero, 12), Err(TxError::TooShort(12)));
        assert_eq!(check_tx(&zero, 13), Ok(1));
        let max = (VNET_HDR_LEN + MAX_FRAME_LEN) as u64;
        assert_eq!(check_tx(&zero, max), Ok(MAX_FRAME_LEN));
        assert_eq!(
            check_tx(&zero, max + 1),
            Err(TxError::TooLong(MAX_FRAME_LEN as u64 + 1))
        );
        let mut csum = zero;
        csum[0] = VIRTIO_NET_HDR_F_NEEDS_CSUM;
        assert!(matches!(check_tx(&csum, 100), Err(TxError::Offload { .. })));
        let mut tso = zero;
        tso[1] = 1; // GSO_TCPV4
        assert!(matches!(check_tx(&tso, 100), Err(TxError::Offload { .. })));
        let mut buffers = zero;
        buffers[10] = 5; // num_buffers means nothing on transmit
        assert_eq!(check_tx(&buffers, 100), Ok(88));
    }

    #[test]
    fn config_has_the_mac_and_link_up() {
        let r = rig();
        let mut c = [0xffu8; 12];
        r.net.read_config(0, &mut c);
        assert_eq!(&c[..6], &DEFAULT_MAC);
        assert_eq!(u16::from_le_bytes([c[6], c[7]]), VIRTIO_NET_S_LINK_UP);
        assert_eq!(&c[10..], &[0, 0], "beyond the structure reads zero");
        let mut far = [0xffu8; 4];
        r.net.read_config(u64::MAX, &mut far);
        assert_eq!(far, [0; 4]);
    }

    #[test]
    fn a_frame_split_over_descriptors_reaches_the_backend_with_a_clean_header() {
        let mut r = rig();
        r.activate();
        let data = frame(60);
        let mut hdr = [0u8; VNET_HDR_LEN];
        hdr[10] = 9; // num_buffers: the device ignores it on transmit
        r.mem.write(BUF, &hdr).unwrap();
        r.mem.write(BUF + 0x100, &data[..20]).unwrap();
        r.mem.write(BUF + 0x200, &data[20..]).unwrap();
        let head = r.tx.add(
            &r.mem,
            &[(BUF, 12), (BUF + 0x100, 20), (BUF + 0x200, 40)],
            &[],
        );
        r.net.queue_notify(TX_QUEUE);
        let mut got = vec![0u8; 200];
        let n = r.peer.recv(&mut got).unwrap();
        assert_eq!(n, 72);
        assert_eq!(&got[..12], &[0u8; 12]);
        assert_eq!(&got[12..72], &data[..]);
        assert_eq!(r.tx.used_entries(&r.mem), vec![(u32::from(head), 0)]);
        assert_eq!(r.irq.queue_count(), 1);
        let c = r.net.counters();
        assert_eq!((c.tx_frames, c.tx_bytes), (1, 60));
    }

    #[test]
    fn bad_transmit_chains_are_returned_unsent_and_counted() {
        let mut r = rig();
        r.activate();
        let mut hdr = [0u8; VNET_HDR_LEN];
        hdr[0] = VIRTIO_NET_HDR_F_NEEDS_CSUM;
        r.mem.write(BUF, &hdr).unwrap();
        r.tx.add(&r.mem, &[(BUF, 12), (BUF + 0x100, 40)], &[]);
        r.tx.add(&r.mem, &[(0xffff_0000, 100)], &[]); // outside RAM
        r.tx.add(&r.mem, &[(BUF, 12)], &[]); // no frame
        r.tx.add(&r.mem, &[(BUF, 0x2_0000)], &[]); // too long
        r.tx.add(&r.mem, &[], &[(BUF, 100)]); // nothing to read
        r.net.queue_notify(TX_QUEUE);
        assert_eq!(r.tx.used_entries(&r.mem).len(), 5);
        let c = r.net.counters();
        assert_eq!((c.tx_frames, c.tx_bad_chains), (0, 5));
        r.peer.set_nonblocking(true).unwrap();
        assert!(r.peer.recv(&mut [0u8; 64]).is_err(), "nothing was sent");
    }

    #[test]
    fn a_received_frame_lands_in_the_guest_buffer_with_a_fresh_header() {
        let mut r = rig();
        let head = r.rx.add(&r.mem, &[], &[(BUF, 8), (BUF + 0x100, 2000)]);
        r.activate();
        let data = frame(100);
        let mut wire = vec![0xaa; VNET_HDR_LEN]; // the host's header is not passed on
        wire.extend_from_slice(&data);
        r.peer.send(&wire).unwrap();
        let used = r.wait_rx_used(1);
        assert_eq!(used, vec![(u32::from(head), 112)]);
        let mut got = [0u8; 112];
        r.mem.read(BUF, &mut got[..8]).unwrap();
        r.mem.read(BUF + 0x100, &mut got[8..]).unwrap();
        assert_eq!(&got[..12], &rx_header());
        assert_eq!(&got[12..], &data[..]);
        assert!(r.irq.queue_count() >= 1);
    }

    #[test]
    fn a_frame_waits_for_a_buffer_and_the_notification_delivers_it() {
        let mut r = rig();
        r.activate();
        let mut wire = vec![0u8; VNET_HDR_LEN];
        wire.extend_from_slice(&frame(30));
        r.peer.send(&wire).unwrap();
        r.peer.send(&wire).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(r.net.counters().rx_frames, 0);
        r.rx.add(&r.mem, &[], &[(BUF, 2000)]);
        r.net.queue_notify(RX_QUEUE);
        assert_eq!(r.wait_rx_used(1).len(), 1);
        r.rx.add(&r.mem, &[], &[(BUF + 0x1000, 2000)]);
        r.net.queue_notify(RX_QUEUE);
        assert_eq!(r.wait_rx_used(2), vec![(0, 42), (1, 42)]);
        assert_eq!(r.net.counters().rx_frames, 2);
    }

    #[test]
    fn a_frame_bigger_than_the_buffer_is_dropped_and_the_buffer_reused() {
        let mut r = rig();
        let head = r.rx.add(&r.mem, &[], &[(BUF, 40)]);
        r.activate();
        let mut big = vec![0u8; VNET_HDR_LEN];
        big.extend_from_slice(&frame(100));
        let mut small = vec![0u8; VNET_HDR_LEN];
        small.extend_from_slice(&frame(20));
        r.peer.send(&big).unwrap();
        r.peer.send(&small).unwrap();
        assert_eq!(r.wait_rx_used(1), vec![(u32::from(head), 32)]);
        let c = r.net.counters();
        assert_eq!((c.rx_too_big, c.rx_frames, c.rx_bytes), (1, 1, 20));
    }

    #[test]
    fn a_bad_receive_chain_is_returned_empty() {
        let mut r = rig();
        r.rx.add(&r.mem, &[], &[(0xffff_f000, 0x2000)]);
        r.activate();
        let mut wire = vec![0u8; VNET_HDR_LEN];
        wire.extend_from_slice(&frame(20));
        r.peer.send(&wire).unwrap();
        assert_eq!(r.wait_rx_used(1), vec![(0, 0)]);
        assert_eq!(r.net.counters().rx_bad_chains, 1);
    }

    #[test]
    fn the_receive_thread_ends_when_the_vm_stops_or_the_device_resets() {
        let mut r = rig();
        r.activate();
        let gone = |net: &VirtioNet| {
            let deadline = Instant::now() + Duration::from_secs(5);
            while Arc::strong_count(&net.shared) > 1 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            Arc::strong_count(&net.shared) == 1
        };
        assert_eq!(Arc::strong_count(&r.net.shared), 2, "the thread runs");
        r.net.reset();
        assert!(gone(&r.net), "reset ends the thread");
        r.activate();
        assert_eq!(Arc::strong_count(&r.net.shared), 2, "a new thread runs");
        r.control.request_stop(alcazar_core::StopReason::UserQuit);
        assert!(gone(&r.net), "a VM stop ends the thread");
    }
}
