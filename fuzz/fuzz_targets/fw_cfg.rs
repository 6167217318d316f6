//! Fuzzes the fw_cfg device as a firmware drives it: the selector, data
//! and DMA registers on its ports, DMA access structures in guest memory
//! taken from the input, and files added by the host with names and
//! sizes from the input (as a user's config could).
//!
//! Asserts, whatever the guest does: no panic; a DMA whose access
//! structure is in RAM leaves its control word 0 (done) or with only the
//! error bit set; the directory (key 0x19) always counts the files the
//! host added; the signature item still reads "QEMU"; the inspector never
//! panics.
//!
//! Input: a 2-byte length N, N bytes of [`common::Op`]s, then guest
//! memory. Op offsets are from port 0x510. `Other` ops: `arg & 3` 0 runs
//! a DMA at guest address `what << 8` with control bits 1-4 from `arg`
//! bits 3-6, the key from bits 32-47, the length (up to 64 KiB) from bits
//! 8-23 and the buffer at `(arg >> 48) << 6` (in or near RAM); 1 adds a file whose name is `what` and `arg`'s
//! bytes, `what` bytes long; 2 reads the whole directory through the data
//! port; 3 inspects.

#![no_main]

#[path = "common.rs"]
mod common;

use alcazar_core::BusDevice;
use alcazar_devices::fw_cfg::{keys, FwCfg};
use common::{memory_with, Input, Op, RAM};
use libfuzzer_sys::fuzz_target;

const SELECTOR: u64 = 0;
const DATA: u64 = 1;
const DMA_HIGH: u64 = 4;
const DMA_LOW: u64 = 8;
const DMA_ERROR: u32 = 1;

fn select(d: &mut FwCfg, key: u16) {
    d.write(SELECTOR, &key.to_le_bytes());
}

fn read_bytes(d: &mut FwCfg, n: usize) -> Vec<u8> {
    (0..n)
        .map(|_| {
            let mut b = [0u8];
            d.read(DATA, &mut b);
            b[0]
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let n = (input.take(2) as usize).min(input.0.len());
    let (ops, memory) = input.0.split_at(n);
    let mem = memory_with(memory);
    let mut d = FwCfg::new(mem.clone());
    d.set_item(keys::RAM_SIZE, RAM.to_le_bytes().to_vec());
    let mut files = 0u32;
    for (name, size) in [
        ("etc/e820", 20),
        ("bootorder", 40),
        ("etc/acpi/tables", 4096),
    ] {
        if d.add_file(name, vec![0x5a; size]).is_ok() {
            files += 1;
        }
    }

    let mut input = Input(ops);
    while !input.is_empty() {
        match input.op(12) {
            Op::Read { offset, width } => {
                common::read(&mut d, offset, width);
            }
            Op::Write {
                offset,
                width,
                value,
            } => common::write(&mut d, offset, width, value),
            Op::Time { .. } => {}
            Op::Other { what, arg } => match arg & 3 {
                0 => {
                    let at = u64::from(what) << 8;
                    let control =
                        ((arg >> 2) as u32 & 0x1e) | (((arg >> 32) as u32 & 0xffff) << 16);
                    let length = (arg >> 8) as u32 & 0xffff;
                    let address = (arg >> 48) << 6;
                    let mut access = [0u8; 16];
                    access[..4].copy_from_slice(&control.to_be_bytes());
                    access[4..8].copy_from_slice(&length.to_be_bytes());
                    access[8..].copy_from_slice(&address.to_be_bytes());
                    if mem.write(at, &access).is_err() {
                        continue;
                    }
                    d.write(DMA_HIGH, &0u32.to_be_bytes());
                    d.write(DMA_LOW, &(at as u32).to_be_bytes());
                    let mut done = [0u8; 4];
                    mem.read(at, &mut done).expect("the structure is in RAM");
                    let status = u32::from_be_bytes(done);
                    // The transfer may have overwritten its own structure
                    // before the status went in; the status word is last.
                    assert!(
                        status & !DMA_ERROR == 0,
                        "control word {status:#x} after DMA"
                    );
                }
                1 => {
                    let mut name = vec![what];
                    name.extend(arg.to_le_bytes());
                    let name = String::from_utf8_lossy(&name).into_owned();
                    if d.add_file(&name, vec![0; usize::from(what)]).is_ok() {
                        files += 1;
                    }
                }
                2 => {
                    select(&mut d, keys::FILE_DIR);
                    let count = read_bytes(&mut d, 4);
                    let count = u32::from_be_bytes([count[0], count[1], count[2], count[3]]);
                    assert_eq!(count, files, "the directory counts every file");
                    read_bytes(&mut d, 64 * count as usize);
                }
                _ => {
                    common::inspect(&d);
                }
            },
        }
    }
    select(&mut d, keys::SIGNATURE);
    assert_eq!(read_bytes(&mut d, 4), b"QEMU");
});
