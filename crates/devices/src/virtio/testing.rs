//! A driver's side of a split virtqueue, for device tests: builds
//! descriptor chains in guest memory, makes them available and reads the
//! used ring back (virtio 1.2 §2.7).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use alcazar_core::{GuestMemory, MemoryMap};
use virtio_queue::{Queue, QueueT};

use super::VirtioInterrupt;

/// `VIRTQ_DESC_F_NEXT`.
const F_NEXT: u16 = 1;
/// `VIRTQ_DESC_F_WRITE`.
const F_WRITE: u16 = 2;

/// 1 MiB of guest RAM at 0.
pub fn memory() -> GuestMemory {
    GuestMemory::new(MemoryMap::pc(1 << 20).expect("map")).expect("memory")
}

/// A queue of `size` entries whose rings start at `base` (descriptor
/// table, then the available ring at +0x1000, the used ring at +0x2000).
pub struct DriverQueue {
    base: u64,
    size: u16,
    next_desc: u16,
    avail_idx: u16,
}

impl DriverQueue {
    /// An empty queue.
    pub fn new(base: u64, size: u16) -> Self {
        DriverQueue {
            base,
            size,
            next_desc: 0,
            avail_idx: 0,
        }
    }

    fn avail(&self) -> u64 {
        self.base + 0x1000
    }

    fn used(&self) -> u64 {
        self.base + 0x2000
    }

    /// The device's view: the queue as the transport would hand it over.
    pub fn device_queue(&self, mem: &GuestMemory) -> Queue {
        let mut q = Queue::new(self.size).expect("queue size");
        let split = |a: u64| (Some(a as u32), Some((a >> 32) as u32));
        let (lo, hi) = split(self.base);
        q.set_desc_table_address(lo, hi);
        let (lo, hi) = split(self.avail());
        q.set_avail_ring_address(lo, hi);
        let (lo, hi) = split(self.used());
        q.set_used_ring_address(lo, hi);
        q.set_ready(true);
        assert!(q.is_valid(mem.mmap()));
        q
    }

    /// Writes a chain of `readable` then `writable` (address, length)
    /// buffers and makes it available; returns its head.
    pub fn add(
        &mut self,
        mem: &GuestMemory,
        readable: &[(u64, u32)],
        writable: &[(u64, u32)],
    ) -> u16 {
        let head = self.next_desc;
        let all: Vec<(u64, u32, u16)> = readable
            .iter()
            .map(|&(a, l)| (a, l, 0))
            .chain(writable.iter().map(|&(a, l)| (a, l, F_WRITE)))
            .collect();
        for (i, &(addr, len, flags)) in all.iter().enumerate() {
            let index = self.next_desc;
            self.next_desc = (self.next_desc + 1) % self.size;
            let last = i + 1 == all.len();
            let flags = if last { flags } else { flags | F_NEXT };
            let mut d = [0u8; 16];
            d[0..8].copy_from_slice(&addr.to_le_bytes());
            d[8..12].copy_from_slice(&len.to_le_bytes());
            d[12..14].copy_from_slice(&flags.to_le_bytes());
            d[14..16].copy_from_slice(&self.next_desc.to_le_bytes());
            mem.write(self.base + 16 * u64::from(index), &d)
                .expect("desc");
        }
        let slot = self.avail() + 4 + 2 * u64::from(self.avail_idx % self.size);
        mem.write(slot, &head.to_le_bytes()).expect("avail ring");
        self.avail_idx = self.avail_idx.wrapping_add(1);
        mem.write(self.avail() + 2, &self.avail_idx.to_le_bytes())
            .expect("avail idx");
        head
    }

    /// The used ring's entries so far: (head, bytes written).
    pub fn used_entries(&self, mem: &GuestMemory) -> Vec<(u32, u32)> {
        let mut idx = [0u8; 2];
        mem.read(self.used() + 2, &mut idx).expect("used idx");
        let n = u16::from_le_bytes(idx);
        (0..n)
            .map(|i| {
                let mut e = [0u8; 8];
                let at = self.used() + 4 + 8 * u64::from(i % self.size);
                mem.read(at, &mut e).expect("used elem");
                (
                    u32::from_le_bytes([e[0], e[1], e[2], e[3]]),
                    u32::from_le_bytes([e[4], e[5], e[6], e[7]]),
                )
            })
            .collect()
    }
}

/// Counts the interrupts a device raises.
#[derive(Default)]
pub struct CountingInterrupt {
    /// Queue interrupts.
    pub queue: AtomicU32,
    /// Configuration-change interrupts.
    pub config: AtomicU32,
    /// Times the device asked for a reset.
    pub needs_reset: AtomicU32,
}

impl CountingInterrupt {
    /// A new counter, shareable with a device.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Queue interrupts so far.
    pub fn queue_count(&self) -> u32 {
        self.queue.load(Ordering::SeqCst)
    }
}

impl VirtioInterrupt for CountingInterrupt {
    fn signal_queue(&self, _queue: u16) {
        self.queue.fetch_add(1, Ordering::SeqCst);
    }

    fn signal_config(&self) {
        self.config.fetch_add(1, Ordering::SeqCst);
    }

    fn needs_reset(&self) {
        self.needs_reset.fetch_add(1, Ordering::SeqCst);
    }
}
