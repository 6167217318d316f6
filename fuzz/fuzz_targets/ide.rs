//! Fuzzes the PIIX3 IDE controller as a guest drives it: the legacy
//! command and control blocks of both channels (an ATA disk on a small
//! scratch image at the primary master, an empty CD-ROM drive at the
//! primary slave, a CD-ROM with a small ISO at the secondary master),
//! the bus master registers with descriptor tables in guest memory
//! filled from the input, the PCI configuration space (command register,
//! BAR4, the timing registers), and media changes from the host.
//!
//! Asserts, whatever the guest does: no panic; the bus master's simplex
//! bit and reserved bytes read 0; the inspector never panics.
//!
//! Input: a flags byte (bit 0: the disk is read-only), a 2-byte length
//! N, N bytes of [`common::Op`]s, then guest memory. Op offsets 0-17 are
//! the legacy ports (0x1F0-0x1F7, 0x3F6, 0x170-0x177, 0x376), 18-33 the
//! bus master window, beyond that BAR accesses at any BAR and offset.
//! `Other` ops: `arg & 7` 0-3 reads configuration space at `what`
//! (widths 1, 2, 4, 1), 4 writes `arg >> 8` there (4 bytes), 5 inserts
//! the ISO at position `what & 3`, 6 ejects it, 7 inspects.

#![no_main]

#[path = "common.rs"]
mod common;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use alcazar_core::irq::{IrqLine, NoIrq};
use alcazar_devices::ide::{CdImage, DiskImage, IdeController, IdeDrive, IdePosition};
use alcazar_devices::pci::PciDevice;
use common::{memory_with, Input, Op};
use libfuzzer_sys::fuzz_target;

/// The legacy ports, in op-offset order.
const PORTS: [u16; 18] = [
    0x1f0, 0x1f1, 0x1f2, 0x1f3, 0x1f4, 0x1f5, 0x1f6, 0x1f7, 0x3f6, 0x170, 0x171, 0x172, 0x173,
    0x174, 0x175, 0x176, 0x177, 0x376,
];
const BM_FIRST: u64 = 18;

/// A 64 KiB scratch disk image, made once per process.
fn disk() -> &'static PathBuf {
    static DISK: OnceLock<PathBuf> = OnceLock::new();
    DISK.get_or_init(|| {
        let path = std::env::temp_dir().join("alcazar-fuzz-ide-disk.img");
        std::fs::write(&path, vec![0u8; 64 * 1024]).expect("scratch disk");
        path
    })
}

/// A 20-block ISO-like image ("CD001" at 0x8001).
fn iso() -> &'static PathBuf {
    static ISO: OnceLock<PathBuf> = OnceLock::new();
    ISO.get_or_init(|| {
        let path = std::env::temp_dir().join("alcazar-fuzz-ide-disc.iso");
        let mut data = vec![0u8; 20 * 2048];
        for (i, b) in data.chunks_mut(2048).enumerate() {
            b.fill(i as u8);
        }
        data[0x8001..0x8006].copy_from_slice(b"CD001");
        std::fs::write(&path, data).expect("scratch iso");
        path
    })
}

fn position(what: u8) -> IdePosition {
    match what & 3 {
        0 => IdePosition::PrimaryMaster,
        1 => IdePosition::PrimarySlave,
        2 => IdePosition::SecondaryMaster,
        _ => IdePosition::SecondarySlave,
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let readonly = input.take(1) & 1 != 0;
    let n = (input.take(2) as usize).min(input.0.len());
    let (ops, memory) = input.0.split_at(n);
    let mem = memory_with(memory);
    let irq: Arc<dyn IrqLine> = Arc::new(NoIrq);
    let mut ide = IdeController::new(mem, [irq.clone(), irq], 0xc000);
    let Ok(d) = DiskImage::open(disk(), readonly) else {
        return;
    };
    let Ok(cd) = CdImage::open(iso()) else {
        return;
    };
    let _ = ide.attach(IdePosition::PrimaryMaster, IdeDrive::Disk(d));
    let _ = ide.attach(IdePosition::PrimarySlave, IdeDrive::Cdrom(None));
    let _ = ide.attach(IdePosition::SecondaryMaster, IdeDrive::Cdrom(Some(cd)));

    let mut input = Input(ops);
    while !input.is_empty() {
        match input.op(24) {
            Op::Read { offset, width } => {
                let mut buf = [0u8; 8];
                let buf = &mut buf[..width];
                if let Some(&port) = PORTS.get(offset as usize) {
                    ide.read_port(port, buf);
                } else if (BM_FIRST..BM_FIRST + 16).contains(&offset) {
                    let at = offset - BM_FIRST;
                    ide.read_bar(4, at, buf);
                    for (i, &b) in buf.iter().enumerate() {
                        let reg = (at + i as u64) % 8;
                        if at + (i as u64) < 16 {
                            assert!(reg != 1 && reg != 3 || b == 0, "reserved BM byte");
                            assert!(reg != 2 || b & 0x80 == 0, "simplex");
                        }
                    }
                } else {
                    ide.read_bar((offset % 6) as usize, offset, buf);
                }
            }
            Op::Write {
                offset,
                width,
                value,
            } => {
                let bytes = value.to_le_bytes();
                let buf = &bytes[..width];
                if let Some(&port) = PORTS.get(offset as usize) {
                    ide.write_port(port, buf);
                } else if (BM_FIRST..BM_FIRST + 16).contains(&offset) {
                    ide.write_bar(4, offset - BM_FIRST, buf);
                } else {
                    ide.write_bar((offset % 6) as usize, offset, buf);
                }
            }
            Op::Time { .. } => {}
            Op::Other { what, arg } => match arg & 7 {
                w @ 0..=3 => {
                    let mut buf = [0u8; 4];
                    let width = [1, 2, 4, 1][w as usize];
                    ide.read_config(what.into(), &mut buf[..width]);
                }
                4 => ide.write_config(what.into(), &((arg >> 8) as u32).to_le_bytes()),
                5 => {
                    if let Ok(f) = std::fs::File::open(iso()) {
                        let _ = ide.change_media(position(what), Some(f));
                    }
                }
                6 => {
                    let _ = ide.change_media(position(what), None);
                }
                _ => {
                    let _ = ide.inspect_tree();
                }
            },
        }
    }
    let _ = ide.inspect_tree();
});
