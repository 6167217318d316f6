//! QEMU's firmware configuration device (fw_cfg), the interface through
//! which a PC firmware such as SeaBIOS learns about the machine: the CPU
//! count, the memory map, the ACPI tables to install, the boot order,
//! option ROMs to run.
//!
//! **Ports** (the x86 I/O-port flavour of the interface, QEMU's
//! `docs/specs/fw_cfg.rst`):
//!
//! | port | width | register |
//! |---|---|---|
//! | 0x510 | 16-bit write | selector: the item the data port reads; resets the offset |
//! | 0x511 | 8-bit read | data: the selected item's next byte (0 past its end) |
//! | 0x514 | 32-bit write (big-endian) | DMA address, high half |
//! | 0x518 | 32-bit write (big-endian) | DMA address, low half: starts the transfer |
//!
//! Reading the DMA address register gives the signature "QEMU CFG" (as a
//! big-endian 64-bit value), how a guest probes for DMA.
//!
//! **Items.** Key 0x0000 is the signature "QEMU", 0x0001 the interface
//! version (bit 0: the port interface; bit 1: DMA), 0x0019 the file
//! directory, and named files ("etc/e820", "bootorder", ...) get keys from
//! 0x0020 on, in the order they are added; the directory lists them
//! sorted by name (a big-endian count, then per file: big-endian size,
//! big-endian key, two reserved bytes and a 56-byte NUL-padded name).
//! The VMM adds the numbered items a firmware reads
//! ([`keys`]) and the files.
//!
//! **DMA.** The guest writes the guest-physical address of a 16-byte
//! access structure: big-endian control, length and address. Control bit 3
//! (select) takes a new item from bits 31:16 first; then bit 1 reads
//! `length` bytes of the item into guest memory at `address`, bit 2 skips
//! them, bit 4 (write) is refused. When done the device writes back
//! control = 0, or bit 0 (error) if the structure or the buffer is not in
//! guest RAM or the request is unsupported. Transfers happen synchronously,
//! in the vCPU's `out`.
//!
//! Left out: writable items and files (no firmware Alcazar runs writes
//! any), the MMIO flavour of other architectures.

use std::collections::BTreeMap;

use alcazar_core::inspect::Tree;
use alcazar_core::{BusDevice, DmaMemory};

/// The first port of the device (the selector).
pub const FW_CFG_PORT: u16 = 0x510;
/// Ports the device claims: selector, data, and the two halves of the
/// DMA address register (0x510-0x51B).
pub const FW_CFG_PORT_COUNT: u16 = 12;

/// Offsets of the registers from [`FW_CFG_PORT`].
const SELECTOR: u64 = 0;
const DATA: u64 = 1;
const DMA_HIGH: u64 = 4;
const DMA_LOW: u64 = 8;

/// The numbered items (QEMU's `FW_CFG_*` keys) a PC firmware reads.
pub mod keys {
    /// "QEMU", the signature a firmware checks first.
    pub const SIGNATURE: u16 = 0x0000;
    /// The interface version bits: 1 = ports, 2 = DMA.
    pub const ID: u16 = 0x0001;
    /// 16-byte machine UUID.
    pub const UUID: u16 = 0x0002;
    /// RAM size in bytes (little-endian u64).
    pub const RAM_SIZE: u16 = 0x0003;
    /// Whether there is no graphical display (u16).
    pub const NOGRAPHIC: u16 = 0x0004;
    /// vCPUs present at boot (u16).
    pub const NB_CPUS: u16 = 0x0005;
    /// NUMA nodes (u64 count, then per-CPU and per-node data).
    pub const NUMA: u16 = 0x000d;
    /// Whether the firmware shows its boot menu (u16).
    pub const BOOT_MENU: u16 = 0x000e;
    /// Most vCPUs the machine can have (u16).
    pub const MAX_CPUS: u16 = 0x000f;
    /// The file directory.
    pub const FILE_DIR: u16 = 0x0019;
    /// The key of the first named file.
    pub const FIRST_FILE: u16 = 0x0020;
}

/// Version bits of [`keys::ID`].
const ID_PORTS: u32 = 1;
const ID_DMA: u32 = 2;

/// DMA control bits.
const DMA_ERROR: u32 = 1;
const DMA_READ: u32 = 2;
const DMA_SKIP: u32 = 4;
const DMA_SELECT: u32 = 8;
const DMA_WRITE: u32 = 0x10;

/// The value a read of the DMA address register returns: "QEMU CFG".
const DMA_SIGNATURE: u64 = 0x5145_4d55_2043_4647;

/// Longest file name, with its terminating NUL.
pub const MAX_NAME: usize = 56;
/// Most named files (the keys from 0x20 to 0x3fff).
pub const MAX_FILES: usize = 0x3fe0;

/// Errors from adding items (VMM bugs or bad user files, caught when the
/// machine is built).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FwCfgError {
    /// A file name that does not fit the directory's 56 bytes.
    #[error("fw_cfg file name {0:?} is longer than 55 bytes")]
    NameTooLong(String),
    /// Two files with one name.
    #[error("fw_cfg file {0:?} added twice")]
    Duplicate(String),
    /// More files than keys.
    #[error("too many fw_cfg files (at most {MAX_FILES})")]
    TooManyFiles,
    /// An item larger than the directory's 32-bit size field.
    #[error("fw_cfg item {0:?} is larger than 4 GiB")]
    TooLarge(String),
}

/// The device: items by key, the selected one and the offset in it.
pub struct FwCfg {
    items: BTreeMap<u16, Vec<u8>>,
    names: BTreeMap<String, u16>,
    selected: u16,
    offset: usize,
    dma_high: u32,
    memory: DmaMemory,
    dma_transfers: u64,
    dma_errors: u64,
}

impl std::fmt::Debug for FwCfg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FwCfg")
            .field("files", &self.names.len())
            .field("selected", &self.selected)
            .finish_non_exhaustive()
    }
}

impl FwCfg {
    /// A device with the signature, the version (ports and DMA) and an
    /// empty directory; DMA reaches `memory`.
    pub fn new(memory: DmaMemory) -> Self {
        let mut d = FwCfg {
            items: BTreeMap::new(),
            names: BTreeMap::new(),
            selected: 0,
            offset: 0,
            dma_high: 0,
            memory,
            dma_transfers: 0,
            dma_errors: 0,
        };
        d.items.insert(keys::SIGNATURE, b"QEMU".to_vec());
        d.items
            .insert(keys::ID, (ID_PORTS | ID_DMA).to_le_bytes().to_vec());
        d.rebuild_directory();
        d
    }

    /// Sets numbered item `key` (one of [`keys`], below the file keys).
    pub fn set_item(&mut self, key: u16, data: Vec<u8>) {
        if key < keys::FIRST_FILE && key != keys::FILE_DIR {
            self.items.insert(key, data);
        }
    }

    /// Adds the named file `name` holding `data`.
    pub fn add_file(&mut self, name: &str, data: Vec<u8>) -> Result<(), FwCfgError> {
        if name.len() >= MAX_NAME || name.contains('\0') {
            return Err(FwCfgError::NameTooLong(name.to_string()));
        }
        if self.names.contains_key(name) {
            return Err(FwCfgError::Duplicate(name.to_string()));
        }
        if u32::try_from(data.len()).is_err() {
            return Err(FwCfgError::TooLarge(name.to_string()));
        }
        let key = u16::try_from(self.names.len())
            .ok()
            .filter(|&n| usize::from(n) < MAX_FILES)
            .map(|n| keys::FIRST_FILE + n)
            .ok_or(FwCfgError::TooManyFiles)?;
        self.names.insert(name.to_string(), key);
        self.items.insert(key, data);
        self.rebuild_directory();
        Ok(())
    }

    /// The names of the files, sorted.
    pub fn file_names(&self) -> Vec<String> {
        self.names.keys().cloned().collect()
    }

    /// The directory item: files sorted by name, all fields big-endian.
    fn rebuild_directory(&mut self) {
        let mut dir = (self.names.len() as u32).to_be_bytes().to_vec();
        for (name, key) in &self.names {
            let size = self.items.get(key).map_or(0, Vec::len) as u32;
            dir.extend_from_slice(&size.to_be_bytes());
            dir.extend_from_slice(&key.to_be_bytes());
            dir.extend_from_slice(&[0, 0]);
            let mut field = [0u8; MAX_NAME];
            field[..name.len()].copy_from_slice(name.as_bytes());
            dir.extend_from_slice(&field);
        }
        self.items.insert(keys::FILE_DIR, dir);
    }

    /// Selects `key` (bit 14, the write flag, and bit 15, the
    /// architecture-specific flag, are part of the key as QEMU numbers
    /// them; neither names an item here, so such keys read as empty).
    fn select(&mut self, key: u16) {
        self.selected = key;
        self.offset = 0;
    }

    fn item(&self) -> &[u8] {
        self.items.get(&self.selected).map_or(&[], Vec::as_slice)
    }

    fn read_data(&mut self) -> u8 {
        let b = self.item().get(self.offset).copied().unwrap_or(0);
        self.offset = self.offset.saturating_add(1);
        b
    }

    /// Runs the DMA access structure at guest-physical `at`.
    fn dma(&mut self, at: u64) {
        self.dma_transfers += 1;
        let mut access = [0u8; 16];
        if self.memory.read(at, &mut access).is_err() {
            // Nowhere to report the error: the structure is not in RAM.
            self.dma_errors += 1;
            return;
        }
        let word =
            |i: usize| u32::from_be_bytes([access[i], access[i + 1], access[i + 2], access[i + 3]]);
        let control = word(0);
        let length = word(4) as usize;
        let address = u64::from_be_bytes([
            access[8], access[9], access[10], access[11], access[12], access[13], access[14],
            access[15],
        ]);
        if control & DMA_SELECT != 0 {
            self.select((control >> 16) as u16);
        }
        let ok = if control & DMA_WRITE != 0 {
            false
        } else if control & DMA_READ != 0 {
            self.dma_read(address, length)
        } else {
            if control & DMA_SKIP != 0 {
                self.offset = self.offset.saturating_add(length);
            }
            true
        };
        if !ok {
            self.dma_errors += 1;
        }
        let status: u32 = if ok { 0 } else { DMA_ERROR };
        // A structure the guest moved out of RAM meanwhile cannot be
        // written; the guest then sees its control word unchanged.
        let _ = self.memory.write(at, &status.to_be_bytes());
    }

    /// Copies `length` bytes of the item from the current offset to
    /// guest `address` (zeros past the item's end), in bounded chunks.
    fn dma_read(&mut self, address: u64, length: usize) -> bool {
        const CHUNK: usize = 64 * 1024;
        let mut done = 0usize;
        let mut buf = Vec::new();
        while done < length {
            let n = (length - done).min(CHUNK);
            buf.clear();
            buf.resize(n, 0);
            let item = self.item();
            if self.offset < item.len() {
                let avail = (item.len() - self.offset).min(n);
                buf[..avail].copy_from_slice(&item[self.offset..self.offset + avail]);
            }
            let Some(dst) = address.checked_add(done as u64) else {
                return false;
            };
            if self.memory.write(dst, &buf).is_err() {
                return false;
            }
            self.offset = self.offset.saturating_add(n);
            done += n;
        }
        true
    }
}

impl BusDevice for FwCfg {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match offset {
            DATA if data.len() == 1 => data[0] = self.read_data(),
            DMA_HIGH..=15 => {
                let sig = DMA_SIGNATURE.to_be_bytes();
                for (i, b) in data.iter_mut().enumerate() {
                    *b = sig
                        .get((offset - DMA_HIGH) as usize + i)
                        .copied()
                        .unwrap_or(0);
                }
            }
            _ => data.fill(0),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let mut value = [0u8; 4];
        let n = data.len().min(4);
        value[..n].copy_from_slice(&data[..n]);
        match (offset, data.len()) {
            (SELECTOR, 2) => self.select(u16::from_le_bytes([value[0], value[1]])),
            (DMA_HIGH, 4) => self.dma_high = u32::from_be_bytes(value),
            (DMA_LOW, 4) => {
                let at = (u64::from(self.dma_high) << 32) | u64::from(u32::from_be_bytes(value));
                self.dma_high = 0;
                self.dma(at);
            }
            (DMA_HIGH, 8) => {
                let mut v = [0u8; 8];
                v.copy_from_slice(&data[..8]);
                self.dma(u64::from_be_bytes(v));
            }
            _ => {}
        }
    }

    fn inspect(&self) -> Tree {
        let mut t = Tree::new();
        t.value("selector", format!("{:#06x}", self.selected));
        t.value("offset", self.offset);
        t.value("dma_transfers", self.dma_transfers);
        t.value("dma_errors", self.dma_errors);
        let mut files = Tree::new();
        for (name, key) in &self.names {
            let size = self.items.get(key).map_or(0, Vec::len);
            files.value(name.clone(), format!("key {key:#06x}, {size} bytes"));
        }
        t.child("files", files);
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alcazar_core::memory::{GuestMemory, MemoryMap};

    fn device() -> (FwCfg, GuestMemory) {
        let mem = GuestMemory::new(MemoryMap::pc(16 << 20).unwrap()).unwrap();
        (FwCfg::new(mem.dma()), mem)
    }

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

    #[test]
    fn the_signature_and_version_read_through_the_data_port() {
        let (mut d, _) = device();
        select(&mut d, keys::SIGNATURE);
        assert_eq!(read_bytes(&mut d, 4), b"QEMU");
        select(&mut d, keys::ID);
        assert_eq!(read_bytes(&mut d, 4), vec![3, 0, 0, 0]);
        // Past the end: zeros.
        assert_eq!(read_bytes(&mut d, 2), vec![0, 0]);
        let mut sig = [0u8; 4];
        d.read(DMA_HIGH, &mut sig);
        assert_eq!(&sig, b"QEMU");
        d.read(DMA_LOW, &mut sig);
        assert_eq!(&sig, b" CFG");
    }

    #[test]
    fn the_directory_lists_files_sorted_with_big_endian_fields() {
        let (mut d, _) = device();
        d.add_file("etc/z", vec![1, 2, 3]).unwrap();
        d.add_file("bootorder", b"/x\n".to_vec()).unwrap();
        select(&mut d, keys::FILE_DIR);
        let dir = read_bytes(&mut d, 4 + 2 * 64);
        assert_eq!(&dir[..4], &[0, 0, 0, 2]);
        let entry = &dir[4..68];
        assert_eq!(&entry[..4], &[0, 0, 0, 3], "bootorder's size");
        assert_eq!(&entry[4..6], &[0, 0x21], "its key: the second file added");
        assert!(entry[8..].starts_with(b"bootorder\0"));
        select(&mut d, 0x21);
        assert_eq!(read_bytes(&mut d, 3), b"/x\n");
        assert_eq!(
            d.add_file("etc/z", vec![]),
            Err(FwCfgError::Duplicate("etc/z".into()))
        );
        assert!(d.add_file(&"n".repeat(56), vec![]).is_err());
    }

    /// Writes an access structure at `at` and starts it.
    fn dma(d: &mut FwCfg, mem: &GuestMemory, at: u64, control: u32, len: u32, addr: u64) -> u32 {
        let mut s = Vec::new();
        s.extend_from_slice(&control.to_be_bytes());
        s.extend_from_slice(&len.to_be_bytes());
        s.extend_from_slice(&addr.to_be_bytes());
        mem.write(at, &s).unwrap();
        d.write(DMA_HIGH, &((at >> 32) as u32).to_be_bytes());
        d.write(DMA_LOW, &(at as u32).to_be_bytes());
        let mut c = [0u8; 4];
        mem.read(at, &mut c).unwrap();
        u32::from_be_bytes(c)
    }

    #[test]
    fn dma_selects_skips_and_reads_into_guest_memory() {
        let (mut d, mem) = device();
        d.add_file("f", (0u8..200).collect()).unwrap();
        let control = DMA_SELECT | DMA_SKIP | (u32::from(keys::FIRST_FILE) << 16);
        assert_eq!(dma(&mut d, &mem, 0x1000, control, 10, 0), 0);
        assert_eq!(dma(&mut d, &mem, 0x1000, DMA_READ, 5, 0x2000), 0);
        let mut got = [0u8; 5];
        mem.read(0x2000, &mut got).unwrap();
        assert_eq!(got, [10, 11, 12, 13, 14]);
        // Reading past the end gives zeros, and the port continues there.
        assert_eq!(dma(&mut d, &mem, 0x1000, DMA_READ, 200, 0x3000), 0);
        let mut tail = [0xffu8; 200];
        mem.read(0x3000, &mut tail).unwrap();
        assert_eq!(tail[184], 199);
        assert_eq!(tail[185], 0);
    }

    #[test]
    fn dma_outside_ram_or_a_write_reports_an_error_and_never_panics() {
        let (mut d, mem) = device();
        select(&mut d, keys::SIGNATURE);
        assert_eq!(
            dma(&mut d, &mem, 0x1000, DMA_READ, 4, 0xffff_ffff_ffff_fff0),
            DMA_ERROR
        );
        assert_eq!(
            dma(&mut d, &mem, 0x1000, DMA_READ, u32::MAX, 0xf00_0000),
            DMA_ERROR
        );
        assert_eq!(dma(&mut d, &mem, 0x1000, DMA_WRITE, 4, 0x2000), DMA_ERROR);
        // A structure outside RAM: nothing to write back, no panic.
        d.write(DMA_HIGH, &0xffff_ffffu32.to_be_bytes());
        d.write(DMA_LOW, &0xffff_fff0u32.to_be_bytes());
        assert_eq!(d.dma_errors, 4);
    }
}
