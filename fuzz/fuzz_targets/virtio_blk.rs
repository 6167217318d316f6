//! Fuzzes virtio-blk's request handling: the pure parser on raw header
//! bytes and lengths, then a queue with arbitrary size and ring addresses
//! over guest memory filled with the input, drained by a `VirtioBlock` on
//! a small scratch image (reads, writes, flushes, discards and the
//! refusals all run for real).
//!
//! Input: 16 header bytes, readable and writable lengths (8 bytes each)
//! for the parser; then queue size (2 bytes), descriptor table, available
//! ring and used ring addresses (8 bytes each), feature bits (8 bytes),
//! then guest memory.

#![no_main]

#[path = "common.rs"]
mod common;

use std::path::PathBuf;
use std::sync::OnceLock;

use alcazar_devices::virtio::block::request::{parse, parse_discard, Limits};
use alcazar_devices::virtio::block::VirtioBlock;
use alcazar_devices::virtio::{Activation, VirtioDevice};
use common::{memory_with, nowhere, queue, Input};
use libfuzzer_sys::fuzz_target;
use virtio_queue::QueueT;

/// A 64 KiB scratch image, made once per process (one file for every
/// run, so none pile up; parallel workers sharing it is harmless).
fn image() -> &'static PathBuf {
    static IMAGE: OnceLock<PathBuf> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let path = std::env::temp_dir().join("alcazar-fuzz-blk.img");
        std::fs::write(&path, vec![0u8; 64 * 1024]).expect("scratch image");
        path
    })
}

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        capacity: 128,
        readonly: data.first().is_some_and(|b| b & 1 != 0),
        max_data: 1 << 20,
        discard: true,
        max_discard_seg: 32,
        max_discard_sectors: 1 << 22,
    };
    let header = &data[..data.len().min(16)];
    let mut input = Input(&data[header.len()..]);
    let _ = parse(header, input.take(8), input.take(8), &limits);
    let _ = parse_discard(input.0, &limits);

    let mut q = queue(&mut input);
    let features = input.take(8);
    let mem = memory_with(input.0);
    if !q.is_valid(mem.mmap()) {
        return;
    }
    q.set_event_idx(features & (1 << 29) != 0);
    let Ok(mut blk) = VirtioBlock::new(image(), limits.readonly) else {
        return;
    };
    let _ = blk.activate(Activation {
        features,
        queues: vec![q],
        memory: mem.clone(),
        interrupt: nowhere(),
    });
    blk.queue_notify(0);
    blk.reset();
});
