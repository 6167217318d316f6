//! What the fuzz targets share: a small guest memory reused across runs,
//! and interrupt sinks that drop everything.

#![allow(dead_code)] // each target uses its own part

use std::sync::{Arc, OnceLock};

use alcazar_core::irq::{InterruptMessage, MsiSink};
use alcazar_core::memory::{GuestMemory, MemoryMap};
use alcazar_core::DmaMemory;
use alcazar_devices::virtio::VirtioInterrupt;
use virtio_queue::{Queue, QueueT};

/// Bytes of guest RAM the targets use (the rest of the address space is
/// outside guest memory, as wild addresses should find).
pub const RAM: u64 = 1 << 20;

/// The shared guest memory, its first `data.len()` bytes replaced by
/// `data` (the rest zeroed).
pub fn memory_with(data: &[u8]) -> DmaMemory {
    static MEM: OnceLock<GuestMemory> = OnceLock::new();
    let mem = MEM.get_or_init(|| {
        GuestMemory::new(MemoryMap::pc(RAM).expect("1 MiB map")).expect("1 MiB of RAM")
    });
    let dma = mem.dma();
    let len = data.len().min(RAM as usize);
    dma.write(len as u64, &vec![0u8; RAM as usize - len])
        .expect("inside RAM");
    dma.write(0, &data[..len]).expect("inside RAM");
    dma
}

/// Interrupts that go nowhere.
#[derive(Debug, Default)]
pub struct Nowhere;

impl VirtioInterrupt for Nowhere {
    fn signal_queue(&self, _queue: u16) {}
    fn signal_config(&self) {}
}

impl MsiSink for Nowhere {
    fn deliver(&self, _message: InterruptMessage) {}
}

/// An `Arc` of [`Nowhere`].
pub fn nowhere() -> Arc<Nowhere> {
    Arc::new(Nowhere)
}

/// A queue of the size and ring addresses the next 26 input bytes give
/// (size, then descriptor table, available and used ring), enabled.
pub fn queue(input: &mut Input<'_>) -> Queue {
    let mut q = Queue::new(256).expect("256 is a valid size");
    q.set_size(input.take(2) as u16);
    for set in [
        Queue::set_desc_table_address,
        Queue::set_avail_ring_address,
        Queue::set_used_ring_address,
    ] {
        let a = input.take(8);
        set(&mut q, Some(a as u32), Some((a >> 32) as u32));
    }
    q.set_ready(true);
    q
}

/// Reads little-endian integers off the front of the input.
pub struct Input<'a>(pub &'a [u8]);

impl Input<'_> {
    /// The next `n` bytes (fewer at the end) as a little-endian number.
    pub fn take(&mut self, n: usize) -> u64 {
        let n = n.min(self.0.len());
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head.iter()
            .rev()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
    }

    /// Whether the input is used up.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// One step of a register-interface run, decoded from the input by
/// [`Input::op`].
#[derive(Clone, Copy, Debug)]
pub enum Op {
    /// A read of `width` bytes at `offset`.
    Read {
        /// Offset from the device's first port or MMIO address.
        offset: u64,
        /// Bytes in the access (1, 2, 4, or an odd 3 or 8).
        width: usize,
    },
    /// A write of the low `width` bytes of `value` at `offset`.
    Write {
        /// Offset from the device's first port or MMIO address.
        offset: u64,
        /// Bytes in the access.
        width: usize,
        /// The value, little-endian.
        value: u64,
    },
    /// Time passes: `nanos` of guest time.
    Time {
        /// How much, in nanoseconds (up to about 4.3 s, or hours when the
        /// high bit of the selector is set).
        nanos: u64,
    },
    /// A device-specific action (an IRQ line, an acknowledge, ...):
    /// `what` selects it, `arg` is its argument.
    Other {
        /// The selector.
        what: u8,
        /// The argument.
        arg: u64,
    },
}

/// Access widths: the usual ones weighted up, and the odd ones a bus
/// should still survive.
const WIDTHS: [usize; 8] = [1, 2, 4, 1, 2, 4, 3, 8];

impl Input<'_> {
    /// The next operation. Offsets mostly fall in `0..2 * span` (the
    /// device and as much again beyond it); one in 16 is any 16-bit value.
    pub fn op(&mut self, span: u64) -> Op {
        let kind = self.take(1) as u8;
        let width = WIDTHS[usize::from(kind >> 2) & 7];
        let raw = self.take(2);
        let offset = if kind & 0xe0 == 0xe0 {
            raw
        } else {
            raw % (2 * span.max(1))
        };
        match kind & 3 {
            0 => Op::Read { offset, width },
            1 => Op::Write {
                offset,
                width,
                value: self.take(width),
            },
            2 => {
                let n = self.take(4);
                Op::Time {
                    nanos: if kind & 0x80 != 0 { n << 12 } else { n },
                }
            }
            _ => Op::Other {
                what: (raw & 0xff) as u8,
                arg: self.take(8),
            },
        }
    }
}

/// Reads `width` bytes at `offset` from `device` into a buffer whose
/// bytes past the access are a sentinel, checks the sentinel survived,
/// and returns the value read.
pub fn read(device: &mut dyn alcazar_core::BusDevice, offset: u64, width: usize) -> u64 {
    let mut buf = [0xa5u8; 16];
    device.read(offset, &mut buf[..width]);
    assert!(
        buf[width..].iter().all(|&b| b == 0xa5),
        "a {width}-byte read at {offset:#x} wrote past its width"
    );
    let mut v = [0u8; 8];
    let n = width.min(8);
    v[..n].copy_from_slice(&buf[..n]);
    u64::from_le_bytes(v)
}

/// Writes the low `width` bytes of `value` at `offset`.
pub fn write(device: &mut dyn alcazar_core::BusDevice, offset: u64, width: usize, value: u64) {
    let bytes = value.to_le_bytes();
    device.write(offset, &bytes[..width.min(8)]);
}

/// Calls `inspect()` and walks the whole tree (it must never panic,
/// whatever the state).
pub fn inspect(device: &dyn alcazar_core::BusDevice) {
    let tree = device.inspect();
    let _ = tree.flatten("");
}

/// An interrupt line that remembers its level and counts rising edges.
#[derive(Debug, Default)]
pub struct Line {
    /// The level now.
    pub level: std::sync::atomic::AtomicBool,
    /// Rising edges so far.
    pub rises: std::sync::atomic::AtomicU64,
}

impl alcazar_core::irq::IrqLine for Line {
    fn set_level(&self, high: bool) {
        use std::sync::atomic::Ordering;
        if high && !self.level.swap(true, Ordering::SeqCst) {
            self.rises.fetch_add(1, Ordering::SeqCst);
        }
        self.level.store(high, Ordering::SeqCst);
    }
}

/// A guest clock for a timed device, with a synthetic "now" the target
/// moves forward: devices read the real (running) clock on register
/// accesses, and are ticked at `base + advanced` in between.
pub struct Time {
    /// The VM's guest clock.
    pub clock: Arc<alcazar_core::clock::GuestClock>,
    /// Where synthetic time starts.
    pub base: std::time::Instant,
    /// Synthetic time passed so far.
    pub advanced: std::time::Duration,
}

impl Time {
    /// A running clock, synthetic time at its "now".
    pub fn new() -> Self {
        let clock = Arc::new(alcazar_core::clock::GuestClock::new());
        let base = clock.now();
        Time {
            clock,
            base,
            advanced: std::time::Duration::ZERO,
        }
    }

    /// Moves synthetic time on by `nanos` and returns the new instant
    /// (saturating far in the future).
    pub fn step(&mut self, nanos: u64) -> std::time::Instant {
        self.advanced = self
            .advanced
            .saturating_add(std::time::Duration::from_nanos(nanos));
        self.base.checked_add(self.advanced).unwrap_or(self.base)
    }
}
