//! Fuzzes the virtio devices that have no target of their own —
//! virtio-net (transmit on the notifying thread, receive on its own
//! thread), virtio-console and virtio-rng — driven through
//! [`VirtioDevice`] the way the PCI transport drives them: queues of any
//! size (up to the device's maximum) and ring addresses over guest
//! memory filled from the input, activation with any features and any
//! queues enabled, notifications of any queue index, resets mid-flight,
//! re-activation, configuration reads and writes at any offset and
//! width, and guest memory rewritten under the device's feet. The host
//! side moves too: virtio-net's backend is one end of an
//! `AF_UNIX`/`SOCK_DGRAM` socketpair whose other end the target writes
//! frames to (the receive thread puts them in the guest's buffers) and
//! reads transmitted frames from; virtio-console gets host input; the
//! VM may be stopped.
//!
//! Asserts, whatever the guest does: no panic and no hang (every call
//! returns); interrupts name only queues the device has; a transmitted
//! frame carries a clean 12-byte header and 1 to 64 KiB of frame;
//! console input takes no more than offered and holds at most its
//! capacity; configuration reads fill exactly the bytes asked for;
//! `inspect()` never panics; and once the device is dropped, the
//! process has no more threads than before it was made (the receive
//! threads of earlier activations end on reset, the last one on drop).
//!
//! Input: device (1 byte: net, console, rng), then per queue its size
//! (2 bytes), ready flag (1 byte), descriptor table, available and used
//! ring addresses (8 bytes each); the length of the operation list (2
//! bytes, modulo 2048) and the operations (see [`run`]); the rest is guest memory.

#![no_main]

#[path = "common.rs"]
mod common;

use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alcazar_core::{DmaMemory, StopReason, VmControl};
use alcazar_devices::sink::ConsoleSink;
use alcazar_devices::virtio::console::{VirtioConsole, INPUT_CAPACITY};
use alcazar_devices::virtio::net::{VirtioNet, DEFAULT_MAC, MAX_FRAME_LEN};
use alcazar_devices::virtio::net_backend::TapBackend;
use alcazar_devices::virtio::rng::VirtioRng;
use alcazar_devices::virtio::{Activation, VirtioDevice, VirtioInterrupt};
use common::{memory_with, Input, RAM};
use libfuzzer_sys::fuzz_target;
use virtio_queue::{Queue, QueueT};

/// The virtio-net header in front of every frame.
const VNET_HDR_LEN: usize = 12;
/// Access widths for configuration accesses (odd ones included).
const WIDTHS: [usize; 8] = [1, 2, 4, 1, 2, 4, 3, 8];

/// Interrupts checked against the device's queue count.
struct Interrupts(u16);

impl VirtioInterrupt for Interrupts {
    fn signal_queue(&self, queue: u16) {
        assert!(
            queue < self.0,
            "interrupt for queue {queue} of {} queues",
            self.0
        );
    }
    fn signal_config(&self) {}
}

/// Console output, counted.
struct Count(Arc<AtomicU64>);

impl Write for Count {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.fetch_add(buf.len() as u64, Ordering::Relaxed);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The next `n` bytes of the input (fewer at its end).
fn bytes<'a>(input: &mut Input<'a>, n: usize) -> &'a [u8] {
    let n = n.min(input.0.len());
    let (head, rest) = input.0.split_at(n);
    input.0 = rest;
    head
}

/// A queue's configuration as the driver wrote it (26 bytes: size,
/// ready, three addresses), for building it again at each activation.
#[derive(Clone, Copy)]
struct QueueConfig {
    size: u16,
    ready: bool,
    addrs: [u64; 3],
}

impl QueueConfig {
    fn take(input: &mut Input<'_>) -> Self {
        QueueConfig {
            size: input.take(2) as u16,
            ready: input.take(1) & 1 != 0,
            addrs: [input.take(8), input.take(8), input.take(8)],
        }
    }

    /// The queue, with the device's maximum size; `None` if it is ready
    /// but not valid (the transport refuses `DRIVER_OK` then).
    fn build(&self, max: u16, mem: &DmaMemory, event_idx: bool) -> Option<Queue> {
        let mut q = Queue::new(max).ok()?;
        q.set_size(self.size);
        let [d, a, u] = self.addrs;
        q.set_desc_table_address(Some(d as u32), Some((d >> 32) as u32));
        q.set_avail_ring_address(Some(a as u32), Some((a >> 32) as u32));
        q.set_used_ring_address(Some(u as u32), Some((u >> 32) as u32));
        q.set_ready(self.ready);
        q.set_event_idx(event_idx);
        (!self.ready || q.is_valid(mem.mmap())).then_some(q)
    }
}

/// The host end of the device under test.
enum Host {
    Net(UnixDatagram),
    Console(alcazar_devices::virtio::console::ConsoleInput),
    Rng,
}

/// The threads of this process. (Counted, not matched by name: a
/// thread just spawned has not named itself yet.)
fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count())
}

/// Reads every frame the device transmitted and checks it.
fn drain(peer: &UnixDatagram) {
    let mut buf = vec![0u8; VNET_HDR_LEN + MAX_FRAME_LEN + 1];
    while let Ok(n) = peer.recv(&mut buf) {
        assert!(
            n > VNET_HDR_LEN && n <= VNET_HDR_LEN + MAX_FRAME_LEN,
            "a transmitted frame of {n} bytes"
        );
        assert!(
            buf[..VNET_HDR_LEN].iter().all(|&b| b == 0),
            "a transmitted header is not clean: {:?}",
            &buf[..VNET_HDR_LEN]
        );
    }
}

/// Runs the operations on `dev`. Each is a kind byte (bits 0-3, modulo
/// 11, select) and its arguments: 0 activate (features: 8 bytes), 1
/// notify (queue: 1 byte), 2 reset, 3 read configuration and 4 write it
/// (offset: 1 byte, or 2 when the kind's bit 7 is set; width from bits
/// 4-6; a write's value), 5 host input (length: 2 bytes, then the bytes:
/// a frame to receive, console input), 6 read transmitted frames, 7
/// inspect, 8 rewrite guest memory (offset: 3 bytes, length: 1 byte, the
/// bytes), 9 stop the VM, 10 let the receive thread run (100 µs).
fn run(
    dev: &mut dyn VirtioDevice,
    host: &Host,
    control: &VmControl,
    queues: &[QueueConfig],
    mem: &DmaMemory,
    ops: &mut Input<'_>,
) {
    let maxes = dev.queue_max_sizes();
    let interrupt = Arc::new(Interrupts(maxes.len() as u16));
    let mut active = false;
    while !ops.is_empty() {
        let kind = ops.take(1) as u8;
        let what = (kind & 0x0f) % 11;
        match what {
            0 => {
                let features = ops.take(8);
                let event_idx = features & (1 << 29) != 0;
                let built: Option<Vec<Queue>> = queues
                    .iter()
                    .zip(&maxes)
                    .map(|(c, &max)| c.build(max, mem, event_idx))
                    .collect();
                if let Some(queues) = built {
                    if active {
                        // DRIVER_OK again only after a reset.
                        dev.reset();
                    }
                    active = dev
                        .activate(Activation {
                            features: features & dev.device_features(),
                            queues,
                            memory: mem.clone(),
                            interrupt: interrupt.clone(),
                        })
                        .is_ok();
                }
            }
            1 => {
                let queue = ops.take(1) as u16;
                if active {
                    dev.queue_notify(queue % (maxes.len() as u16 + 1));
                }
            }
            2 => {
                dev.reset();
                active = false;
            }
            3 | 4 => {
                let offset = ops.take(if kind & 0x80 != 0 { 2 } else { 1 });
                let width = WIDTHS[usize::from(kind >> 4) & 7];
                if what == 3 {
                    let mut buf = [0xa5u8; 16];
                    dev.read_config(offset, &mut buf[..width]);
                    assert!(
                        buf[width..].iter().all(|&b| b == 0xa5),
                        "a {width}-byte config read at {offset:#x} wrote past its width"
                    );
                } else {
                    let value = ops.take(width).to_le_bytes();
                    dev.write_config(offset, &value[..width]);
                }
            }
            5 => {
                let len = ops.take(2) as usize;
                let data = bytes(ops, len);
                match host {
                    Host::Net(peer) => {
                        let _ = peer.send(data);
                    }
                    Host::Console(input) => {
                        let taken = input.push_input(data);
                        assert!(taken <= data.len(), "took {taken} of {}", data.len());
                        assert!(input.pending() <= INPUT_CAPACITY);
                    }
                    Host::Rng => {}
                }
            }
            6 => {
                if let Host::Net(peer) = host {
                    drain(peer);
                }
            }
            7 => {
                let _ = dev.inspect();
            }
            8 => {
                let at = ops.take(3) % RAM;
                let len = ops.take(1) as usize;
                let data = bytes(ops, len);
                let len = data.len().min((RAM - at) as usize);
                let _ = mem.write(at, &data[..len]);
            }
            9 => control.request_stop(StopReason::UserQuit),
            _ => {
                if matches!(host, Host::Net(_)) {
                    std::thread::sleep(Duration::from_micros(100));
                }
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let which = input.take(1) % 3;
    let queue_count = if which == 2 { 1 } else { 2 };
    let queues: Vec<QueueConfig> = (0..queue_count)
        .map(|_| QueueConfig::take(&mut input))
        .collect();
    let ops_len = input.take(2) as usize % 2048;
    let mut ops = Input(bytes(&mut input, ops_len));
    let mem = memory_with(input.0);
    let control = Arc::new(VmControl::new());
    match which {
        0 => {
            let before = threads();
            let Ok((ours, peer)) = UnixDatagram::pair() else {
                return;
            };
            let _ = peer.set_nonblocking(true);
            let Ok(backend) = TapBackend::new(OwnedFd::from(ours)) else {
                return;
            };
            let mut net = VirtioNet::new(Arc::new(backend), DEFAULT_MAC, control.clone());
            let host = Host::Net(peer);
            run(&mut net, &host, &control, &queues, &mem, &mut ops);
            drop(net);
            if let Host::Net(peer) = &host {
                drain(peer);
            }
            // Threads of earlier activations were not joined (reset does
            // not wait); they must end on their own, promptly.
            let deadline = Instant::now() + Duration::from_secs(5);
            while threads() > before {
                assert!(
                    Instant::now() < deadline,
                    "a virtio-net receive thread outlived its device"
                );
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        1 => {
            let out = Arc::new(AtomicU64::new(0));
            let mut console = VirtioConsole::new(ConsoleSink::new(Box::new(Count(out.clone()))));
            let host = Host::Console(console.input());
            run(&mut console, &host, &control, &queues, &mem, &mut ops);
        }
        _ => {
            let Ok(mut rng) = VirtioRng::new() else {
                return;
            };
            run(&mut rng, &Host::Rng, &control, &queues, &mem, &mut ops);
        }
    }
});
