//! Fuzzes the PCI surface a guest drives: configuration mechanism #1
//! (ports 0xCF8-0xCFF), ECAM and the BAR window, with a virtio-rng device
//! behind the virtio PCI transport (common configuration, ISR, MSI-X
//! table, notifications, the PCI_CFG window) and guest memory filled
//! with the input's tail.
//!
//! Input: a sequence of 16-byte operations — kind, width, 6-byte offset,
//! 8-byte value — then guest memory after a zero kind byte.

#![no_main]

#[path = "common.rs"]
mod common;

use std::sync::{Arc, Mutex};

use alcazar_core::irq::NoIrq;
use alcazar_core::layout::ECAM_SIZE;
use alcazar_core::BusDevice;
use alcazar_devices::pci::root::PciEcam;
use alcazar_devices::pci::{PciDevice, PciRoot, PciRootPorts, PciWindow};
use alcazar_devices::virtio::pci::{VirtioPci, BAR_SIZE};
use alcazar_devices::virtio::rng::VirtioRng;
use common::{memory_with, nowhere, Input};
use libfuzzer_sys::fuzz_target;

const WINDOW: u64 = 0xc000_0000;

fuzz_target!(|data: &[u8]| {
    let split = data.len().min(16 * 256);
    let (ops, memory) = data.split_at(split);
    let mem = memory_with(memory);
    let Ok(rng) = VirtioRng::new() else {
        return;
    };
    let Ok(transport) = VirtioPci::new(Box::new(rng), mem, WINDOW, Arc::new(NoIrq), 16, nowhere())
    else {
        return;
    };
    let root = Arc::new(Mutex::new(PciRoot::new()));
    let device: Arc<Mutex<dyn PciDevice>> = Arc::new(Mutex::new(transport));
    root.lock()
        .expect("fresh lock")
        .add(1, device)
        .expect("slot 1 is free");
    let mut ports = PciRootPorts(root.clone());
    let mut ecam = PciEcam(root.clone());
    let mut window = PciWindow { root, base: WINDOW };

    let mut input = Input(ops);
    while !input.is_empty() {
        let kind = input.take(1) as u8;
        let width = [1usize, 2, 4, 8][(input.take(1) & 3) as usize];
        let offset = input.take(6);
        let value = input.take(8).to_le_bytes();
        let mut buf = [0u8; 8];
        let (device, at): (&mut dyn BusDevice, u64) = match kind % 3 {
            0 => (&mut ports, offset % 8),
            1 => (&mut ecam, offset % ECAM_SIZE),
            _ => (&mut window, offset % (2 * BAR_SIZE)),
        };
        if kind & 0x80 != 0 {
            device.write(at, &value[..width]);
        } else {
            device.read(at, &mut buf[..width]);
        }
    }
});
