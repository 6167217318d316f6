//! Fuzzes the Linux boot loaders with files a user hands the VMM: the
//! input as a bzImage (boot protocol header, setup sectors, protected-
//! mode payload), as an ELF vmlinux (program headers, the PVH entry
//! note) and as an initrd, with a command line, through
//! `alcazar_vmm::boot::Payload::install` into 16 MiB of guest RAM (told
//! the ACPI tables are at the RSDP address, as a machine's builder says
//! after writing them).
//!
//! Asserts, whatever the files hold: no panic (a bad file is an error);
//! every write stays inside guest RAM (guest memory is bounds-checked
//! and the build runs under AddressSanitizer); a successful bzImage
//! install names an entry point and zero page inside RAM (a PVH install
//! its start info; the ELF's own entry is the kernel's business).
//!
//! Input: mode (bit 0: force the ELF magic, so the ELF/PVH path is
//! taken), vCPU count, command-line length, initrd length (3 bytes),
//! then the command line, the initrd and the kernel.

#![no_main]

#[path = "common.rs"]
mod common;

use std::sync::OnceLock;

use alcazar_core::memory::{GuestMemory, MemoryMap};
use alcazar_vmm::boot::linux::LinuxImage;
use alcazar_vmm::boot::{Payload, Start};
use common::Input;
use libfuzzer_sys::fuzz_target;

/// Guest RAM for the loaders: room for a small kernel and initrd, and
/// far less than a real file claims, as hostile headers should find.
const RAM: u64 = 16 << 20;

fuzz_target!(|data: &[u8]| {
    static MEM: OnceLock<GuestMemory> = OnceLock::new();
    let mem = MEM.get_or_init(|| GuestMemory::new(MemoryMap::pc(RAM).expect("map")).expect("RAM"));
    let mut input = Input(data);
    let mode = input.take(1);
    let cpus = (input.take(1) % 8 + 1) as u32;
    let cmdline_len = input.take(1) as usize;
    let initrd_len = input.take(3) as usize;
    let rest = input.0;
    let (cmdline, rest) = rest.split_at(cmdline_len.min(rest.len()));
    let (initrd, kernel) = rest.split_at(initrd_len.min(rest.len()));
    let mut kernel = kernel.to_vec();
    if mode & 1 != 0 && kernel.len() >= 4 {
        kernel[..4].copy_from_slice(b"\x7fELF");
    }
    let payload = Payload::Linux(LinuxImage {
        kernel,
        initrd: (mode & 2 != 0).then(|| initrd.to_vec()),
        cmdline: String::from_utf8_lossy(cmdline).into_owned(),
    });
    match payload.install(mem, cpus, Some(alcazar_core::layout::RSDP_ADDRESS)) {
        Ok(Start::Linux(boot)) => {
            assert!(
                boot.entry < RAM,
                "entry {:#x} outside guest RAM",
                boot.entry
            );
            assert!(boot.zero_page < RAM, "zero page outside guest RAM");
        }
        Ok(Start::Pvh(boot)) => {
            assert!(boot.start_info < RAM, "start info outside guest RAM");
        }
        Ok(Start::Flat(_) | Start::Reset) => unreachable!("a Linux payload installs as Linux"),
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
