//! Fuzzes the virtqueue and descriptor-chain parsing a guest controls: a
//! queue with arbitrary size and ring addresses over guest memory filled
//! with the input, drained through `Chain::parse` and the virtio-rng
//! device (which writes into the chains and returns them as used).
//!
//! Input: size (2 bytes), descriptor table, available ring and used ring
//! addresses (8 bytes each), feature bits (8 bytes), then guest memory.

#![no_main]

#[path = "common.rs"]
mod common;

use alcazar_devices::virtio::chain::Chain;
use alcazar_devices::virtio::rng::VirtioRng;
use alcazar_devices::virtio::{Activation, VirtioDevice};
use common::{memory_with, nowhere, queue, Input};
use libfuzzer_sys::fuzz_target;
use virtio_queue::QueueT;

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let mut first = queue(&mut input);
    let mut second = queue(&mut Input(data));
    let features = input.take(8);
    let mem = memory_with(input.0);
    if !first.is_valid(mem.mmap()) {
        return;
    }
    // Parsing alone, with a bounded number of chains.
    for _ in 0..512 {
        let Some(chain) = first.pop_descriptor_chain(mem.mmap()) else {
            break;
        };
        if let Ok(c) = Chain::parse(chain, 1 << 20) {
            let mut buf = [0u8; 64];
            let _ = c.read_at(&mem, 3, &mut buf);
            let _ = c.write_at(&mem, 5, &buf);
        }
    }
    // The same queue through a device.
    second.set_event_idx(features & (1 << 29) != 0);
    let Ok(mut rng) = VirtioRng::new() else {
        return;
    };
    let _ = rng.activate(Activation {
        features,
        queues: vec![second],
        memory: mem.clone(),
        interrupt: nowhere(),
    });
    rng.queue_notify(0);
    rng.reset();
});
