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
