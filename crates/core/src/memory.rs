//! Guest physical memory and the PC memory map.
//!
//! A PC's physical address space is not one flat RAM array: the 1 GiB below
//! 4 GiB is a hole where device MMIO (the IOAPIC at `0xfec0_0000`, the local
//! APIC at `0xfee0_0000`, PCI BARs) and the firmware ROM live, and RAM that
//! does not fit below the hole continues above 4 GiB. [`MemoryMap`] records
//! that layout; [`GuestMemory`] backs its RAM and ROM regions with host
//! memory through `vm-memory`.
//!
//! Everything a guest (or a loader acting for it) does to memory goes
//! through bounds-checked `vm-memory` calls, so a wild guest address is an
//! error value, never a host access outside the mapping.

use std::sync::{Arc, OnceLock};

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

/// Start of the MMIO hole below 4 GiB (3 GiB).
pub const MMIO_HOLE_START: u64 = 0xc000_0000;
/// End (exclusive) of the MMIO hole: 4 GiB.
pub const MMIO_HOLE_END: u64 = 0x1_0000_0000;
/// Smallest guest RAM Alcazar accepts: 1 MiB, the real-mode address space.
pub const MIN_RAM: u64 = 1 << 20;
/// The legacy VGA memory window (0xa0000-0xbffff), MMIO on a BIOS machine.
pub const LEGACY_VGA_START: u64 = 0xa_0000;
/// End (exclusive) of the legacy VGA window.
pub const LEGACY_VGA_END: u64 = 0xc_0000;
/// Largest guest RAM Alcazar accepts: 1 TiB.
pub const MAX_RAM: u64 = 1 << 40;

/// The `vm-memory` type that backs guest RAM and ROM.
pub type GuestMemoryMmap = vm_memory::GuestMemoryMmap<()>;

/// Errors from building or accessing guest memory.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// The requested RAM size is outside what a guest can have.
    #[error("guest memory of {0} bytes is out of range: it must be between 1 MiB and 1 TiB")]
    BadRamSize(u64),
    /// A region would overlap an existing one.
    #[error("memory region {start:#x}+{size:#x} overlaps an existing region")]
    Overlap {
        /// Start of the rejected region.
        start: u64,
        /// Size of the rejected region.
        size: u64,
    },
    /// The host could not allocate the memory.
    #[error("cannot allocate guest memory: {0}")]
    Alloc(String),
    /// A guest-physical range is not backed by RAM or ROM.
    #[error("guest physical range {addr:#x}+{len:#x} is not backed by memory")]
    OutOfRange {
        /// Start of the access.
        addr: u64,
        /// Length of the access.
        len: usize,
    },
}

/// What a range of guest physical addresses is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegionKind {
    /// Read-write memory.
    Ram,
    /// Read-only memory (firmware); guest writes are dropped (emu) or exit
    /// as MMIO writes (kvm, `KVM_MEM_READONLY`).
    Rom,
    /// Reserved for device MMIO; accesses go to the [`crate::Bus`].
    Mmio,
}

/// One entry of the memory map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapEntry {
    /// First guest physical address.
    pub start: u64,
    /// Length in bytes.
    pub size: u64,
    /// What lives there.
    pub kind: RegionKind,
}

impl MapEntry {
    /// One past the last address.
    pub fn end(&self) -> u64 {
        self.start + self.size
    }

    fn overlaps(&self, start: u64, size: u64) -> bool {
        start < self.end() && self.start < start + size
    }
}

/// The guest physical memory map: sorted, non-overlapping entries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemoryMap {
    entries: Vec<MapEntry>,
}

impl MemoryMap {
    /// The standard PC layout for `ram_bytes` of RAM: RAM from 0 up to the
    /// MMIO hole, the hole itself, and the rest of RAM above 4 GiB.
    pub fn pc(ram_bytes: u64) -> Result<Self, MemoryError> {
        if !(MIN_RAM..=MAX_RAM).contains(&ram_bytes) {
            return Err(MemoryError::BadRamSize(ram_bytes));
        }
        let mut map = MemoryMap::default();
        let low = ram_bytes.min(MMIO_HOLE_START);
        map.add(0, low, RegionKind::Ram)?;
        map.add(
            MMIO_HOLE_START,
            MMIO_HOLE_END - MMIO_HOLE_START,
            RegionKind::Mmio,
        )?;
        if ram_bytes > low {
            map.add(MMIO_HOLE_END, ram_bytes - low, RegionKind::Ram)?;
        }
        Ok(map)
    }

    /// The PC layout a BIOS expects, for `ram_bytes` of RAM and a BIOS
    /// image of `bios_bytes`: [`MemoryMap::pc`] with the legacy VGA window
    /// 0xa0000-0xbffff taken out of RAM (MMIO, for a VGA adapter) and the
    /// BIOS as ROM at the top of 4 GiB, where the reset vector
    /// (0xfffffff0) lies inside it. 0xc0000-0xfffff stays RAM: the option
    /// ROM area and the shadow copy of the BIOS's last 128 KiB.
    pub fn pc_firmware(ram_bytes: u64, bios_bytes: u64) -> Result<Self, MemoryError> {
        if ram_bytes < LEGACY_VGA_END {
            return Err(MemoryError::BadRamSize(ram_bytes));
        }
        let mut map = Self::pc(ram_bytes)?;
        let low = map
            .entries
            .iter()
            .position(|e| e.start == 0)
            .ok_or(MemoryError::BadRamSize(ram_bytes))?;
        let ram = map.entries.remove(low);
        let pieces = [
            (0, LEGACY_VGA_START, RegionKind::Ram),
            (
                LEGACY_VGA_START,
                LEGACY_VGA_END - LEGACY_VGA_START,
                RegionKind::Mmio,
            ),
            (LEGACY_VGA_END, ram.size - LEGACY_VGA_END, RegionKind::Ram),
        ];
        for (start, size, kind) in pieces.into_iter().filter(|p| p.1 > 0) {
            map.entries.push(MapEntry { start, size, kind });
        }
        map.entries.sort_by_key(|e| e.start);
        map.add(MMIO_HOLE_END - bios_bytes, bios_bytes, RegionKind::Rom)?;
        Ok(map)
    }

    /// Adds a region; it must not overlap an existing one, except that a ROM
    /// region may be carved out of the MMIO hole.
    pub fn add(&mut self, start: u64, size: u64, kind: RegionKind) -> Result<(), MemoryError> {
        if size == 0 || start.checked_add(size).is_none() {
            return Err(MemoryError::Overlap { start, size });
        }
        if kind == RegionKind::Rom {
            return self.carve_rom(start, size);
        }
        if self.entries.iter().any(|e| e.overlaps(start, size)) {
            return Err(MemoryError::Overlap { start, size });
        }
        self.entries.push(MapEntry { start, size, kind });
        self.entries.sort_by_key(|e| e.start);
        Ok(())
    }

    fn carve_rom(&mut self, start: u64, size: u64) -> Result<(), MemoryError> {
        let end = start + size;
        let idx = self
            .entries
            .iter()
            .position(|e| e.kind == RegionKind::Mmio && e.start <= start && end <= e.end())
            .ok_or(MemoryError::Overlap { start, size })?;
        let hole = self.entries.remove(idx);
        let pieces = [
            (hole.start, start - hole.start, RegionKind::Mmio),
            (start, size, RegionKind::Rom),
            (end, hole.end() - end, RegionKind::Mmio),
        ];
        for (start, size, kind) in pieces.into_iter().filter(|p| p.1 > 0) {
            self.entries.push(MapEntry { start, size, kind });
        }
        self.entries.sort_by_key(|e| e.start);
        Ok(())
    }

    /// All entries, sorted by address.
    pub fn entries(&self) -> &[MapEntry] {
        &self.entries
    }

    /// The entries backed by host memory (RAM and ROM).
    pub fn backed(&self) -> impl Iterator<Item = &MapEntry> {
        self.entries.iter().filter(|e| e.kind != RegionKind::Mmio)
    }

    /// What `addr` is, or `None` if nothing is mapped there (unclaimed
    /// addresses above RAM behave like MMIO nobody answers).
    pub fn kind_at(&self, addr: u64) -> Option<RegionKind> {
        self.entries
            .iter()
            .find(|e| e.start <= addr && addr < e.end())
            .map(|e| e.kind)
    }

    /// Total bytes of RAM.
    pub fn ram_bytes(&self) -> u64 {
        self.entries
            .iter()
            .filter(|e| e.kind == RegionKind::Ram)
            .map(|e| e.size)
            .sum()
    }
}

/// Guest memory: the map plus the host memory behind its RAM and ROM.
#[derive(Debug)]
pub struct GuestMemory {
    map: MemoryMap,
    mmap: GuestMemoryMmap,
    observer: Arc<OnceLock<Arc<dyn DmaObserver>>>,
}

/// Copies `data` into `mmap` at guest physical `addr`, all or nothing.
fn write_slice(mmap: &GuestMemoryMmap, addr: u64, data: &[u8]) -> Result<(), MemoryError> {
    mmap.write_slice(data, GuestAddress(addr))
        .map_err(|_| MemoryError::OutOfRange {
            addr,
            len: data.len(),
        })
}

/// Fills `data` from `mmap` at guest physical `addr`.
fn read_slice(mmap: &GuestMemoryMmap, addr: u64, data: &mut [u8]) -> Result<(), MemoryError> {
    let len = data.len();
    mmap.read_slice(data, GuestAddress(addr))
        .map_err(|_| MemoryError::OutOfRange { addr, len })
}

/// Someone who must hear about guest memory that a device wrote behind
/// the CPUs' backs (DMA): the emu engine, whose decoded-code cache would
/// otherwise keep running the old bytes of a page a disk read just filled.
pub trait DmaObserver: Send + Sync + std::fmt::Debug {
    /// `len` bytes at guest physical `addr` were written by a device.
    fn dma_written(&self, addr: u64, len: u64);
}

/// Guest memory as a DMA-capable device holds it: the `vm-memory` object
/// for the crates that speak its API (virtio queues), plus the write
/// notification every device write into guest buffers must go through.
///
/// Cloning is cheap (the regions are reference-counted); a device keeps
/// its own clone, so it never holds the [`crate::Machine`] and never
/// keeps it alive.
#[derive(Clone, Debug)]
pub struct DmaMemory {
    mmap: GuestMemoryMmap,
    observer: Arc<OnceLock<Arc<dyn DmaObserver>>>,
}

impl DmaMemory {
    /// The `vm-memory` object. Writes through it directly are not seen by
    /// the [`DmaObserver`]: use them only for structures that never hold
    /// code (virtio rings), and [`DmaMemory::write`] for data buffers.
    pub fn mmap(&self) -> &GuestMemoryMmap {
        &self.mmap
    }

    /// Copies `data` into guest memory at `addr` and tells the observer.
    pub fn write(&self, addr: u64, data: &[u8]) -> Result<(), MemoryError> {
        write_slice(&self.mmap, addr, data)?;
        self.note_written(addr, data.len() as u64);
        Ok(())
    }

    /// Fills `data` from guest memory at `addr`.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> Result<(), MemoryError> {
        read_slice(&self.mmap, addr, data)
    }

    /// Tells the observer that `len` bytes at `addr` were written some
    /// other way (for example by a host `read(2)` straight into guest
    /// memory).
    pub fn note_written(&self, addr: u64, len: u64) {
        if let Some(observer) = self.observer.get() {
            observer.dma_written(addr, len);
        }
    }
}

/// A host mapping of one backed region, as an engine needs it to install a
/// memory slot.
#[derive(Clone, Copy, Debug)]
pub struct HostRegion {
    /// Guest physical start.
    pub guest_addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// Host virtual address of the first byte.
    pub host_addr: *mut u8,
    /// Whether the guest may only read it.
    pub read_only: bool,
}

impl GuestMemory {
    /// Allocates host memory (anonymous, lazily committed) for every RAM
    /// and ROM region of `map`.
    pub fn new(map: MemoryMap) -> Result<Self, MemoryError> {
        let ranges: Vec<(GuestAddress, usize)> = map
            .backed()
            .map(|e| {
                usize::try_from(e.size)
                    .map(|size| (GuestAddress(e.start), size))
                    .map_err(|_| MemoryError::BadRamSize(e.size))
            })
            .collect::<Result<_, _>>()?;
        let mmap =
            GuestMemoryMmap::from_ranges(&ranges).map_err(|e| MemoryError::Alloc(e.to_string()))?;
        Ok(GuestMemory {
            map,
            mmap,
            observer: Arc::new(OnceLock::new()),
        })
    }

    /// The memory map this memory was built from.
    pub fn map(&self) -> &MemoryMap {
        &self.map
    }

    /// The underlying `vm-memory` object, for crates that speak its API
    /// (virtio queues, loaders).
    pub fn mmap(&self) -> &GuestMemoryMmap {
        &self.mmap
    }

    /// A handle for a device that reads and writes guest memory on its
    /// own (DMA).
    pub fn dma(&self) -> DmaMemory {
        DmaMemory {
            mmap: self.mmap.clone(),
            observer: self.observer.clone(),
        }
    }

    /// Installs the one [`DmaObserver`] (the engine does, when it creates
    /// its VM). Returns `false` if one was already installed.
    pub fn set_dma_observer(&self, observer: Arc<dyn DmaObserver>) -> bool {
        self.observer.set(observer).is_ok()
    }

    /// Copies `data` into guest memory at `addr` (loaders may write ROM).
    pub fn write(&self, addr: u64, data: &[u8]) -> Result<(), MemoryError> {
        write_slice(&self.mmap, addr, data)
    }

    /// Fills `data` from guest memory at `addr`.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> Result<(), MemoryError> {
        read_slice(&self.mmap, addr, data)
    }

    /// Writes a little-endian `u64` at `addr`.
    pub fn write_u64(&self, addr: u64, value: u64) -> Result<(), MemoryError> {
        self.write(addr, &value.to_le_bytes())
    }

    /// Reads a little-endian `u64` at `addr`.
    pub fn read_u64(&self, addr: u64) -> Result<u64, MemoryError> {
        let mut b = [0u8; 8];
        self.read(addr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// The host mappings behind every backed region, for engines that
    /// install them as memory slots.
    pub fn host_regions(&self) -> Vec<HostRegion> {
        self.mmap
            .iter()
            .map(|region| {
                let guest_addr = region.start_addr().0;
                let read_only = self.map.kind_at(guest_addr) == Some(RegionKind::Rom);
                HostRegion {
                    guest_addr,
                    size: region.len(),
                    host_addr: region.as_ptr(),
                    read_only,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_ram_sits_below_the_hole() {
        let map = MemoryMap::pc(256 << 20).unwrap();
        assert_eq!(map.entries()[0].size, 256 << 20);
        assert_eq!(map.kind_at(0xfec0_0000), Some(RegionKind::Mmio));
        assert_eq!(map.kind_at(MMIO_HOLE_END), None);
        assert_eq!(map.ram_bytes(), 256 << 20);
    }

    #[test]
    fn large_ram_continues_above_4g() {
        let map = MemoryMap::pc(4 << 30).unwrap();
        let above = map.entries().last().unwrap();
        assert_eq!(above.start, MMIO_HOLE_END);
        assert_eq!(above.size, 1 << 30);
        assert_eq!(map.ram_bytes(), 4 << 30);
    }

    #[test]
    fn zero_ram_is_rejected() {
        assert!(matches!(MemoryMap::pc(0), Err(MemoryError::BadRamSize(0))));
    }

    #[test]
    fn rom_is_carved_out_of_the_hole_and_never_overlaps_ram() {
        let mut map = MemoryMap::pc(64 << 20).unwrap();
        map.add(0xffff_0000, 0x1_0000, RegionKind::Rom).unwrap();
        assert_eq!(map.kind_at(0xffff_fff0), Some(RegionKind::Rom));
        assert_eq!(map.kind_at(0xfffe_ffff), Some(RegionKind::Mmio));
        assert!(map.add(0x1000, 0x1000, RegionKind::Rom).is_err());
        assert!(map.add(0x1000, 0x1000, RegionKind::Ram).is_err());
    }

    #[test]
    fn accesses_outside_memory_are_errors_not_crashes() {
        let mem = GuestMemory::new(MemoryMap::pc(1 << 20).unwrap()).unwrap();
        mem.write_u64(0x100, 0xdead_beef).unwrap();
        assert_eq!(mem.read_u64(0x100).unwrap(), 0xdead_beef);
        assert!(mem.write_u64((1 << 20) - 4, 1).is_err());
        assert!(mem.read_u64(u64::MAX - 2).is_err());
    }
}
