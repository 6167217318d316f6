//! The bus master IDE registers of one channel and the scatter/gather
//! engine behind them (SFF-8038i rev 1.0, "Programming Interface for Bus
//! Master IDE Controller"; Intel PIIX3 datasheet §2.7 "BMIDE registers").
//!
//! Eight bytes per channel in the function's BAR4 I/O window (primary at
//! +0, secondary at +8):
//!
//! | offset | register |
//! |---|---|
//! | 0 | Command: bit 0 Start/Stop, bit 3 Read/Write Control (1: the bus master writes memory, a device read) |
//! | 2 | Status: bit 0 Active (RO), bit 1 Error (write 1 to clear), bit 2 Interrupt (write 1 to clear), bits 5-6 drive 0/1 DMA capable (RW), bit 7 simplex (RO, 0) |
//! | 4-7 | Descriptor Table Pointer (dword aligned: bits 1:0 read 0) |
//!
//! Bytes 1 and 3 read 0 and ignore writes.
//!
//! **The Physical Region Descriptor table** (SFF-8038i §1.2): 8-byte
//! entries, a 32-bit memory address (bit 0 ignored), a 16-bit byte count
//! (0 means 64 KiB) and bit 31 of the second dword marking the last entry
//! (EOT). The table lies within one 64 KiB region, so at most 8192
//! entries are walked: a table without EOT ends there with an error.
//!
//! **A transfer** runs, synchronously, once Start is set and the selected
//! device has a DMA command pending (whichever comes second). The engine
//! moves the bytes between guest memory (bounds-checked: an address
//! outside guest RAM is an error, never a host access) and the device one
//! descriptor at a time through a bounce buffer of at most 64 KiB. Ends,
//! as the Status table of SFF-8038i §3.1 says:
//!
//! * descriptors exactly cover the transfer: Active cleared, Interrupt set
//!   (by the device's interrupt);
//! * descriptors larger than the transfer: Active stays set, Interrupt set;
//! * descriptors smaller (EOT reached early), a memory error, a direction
//!   bit that does not match the command, or bus mastering disabled in
//!   the PCI command register: Error set, Active cleared, and the device
//!   ends the command with ABRT (ATA) or ABORTED COMMAND (ATAPI).
//!
//! Left out: transfer pacing (the whole command moves at once), the PCI
//! master/target abort bits, simplex mode.

use alcazar_core::inspect::Tree;
use alcazar_core::DmaMemory;

/// Command: start.
pub const CMD_START: u8 = 0x01;
/// Command: the bus master writes to memory.
pub const CMD_TO_MEMORY: u8 = 0x08;
/// Status: active.
pub const STS_ACTIVE: u8 = 0x01;
/// Status: error.
pub const STS_ERROR: u8 = 0x02;
/// Status: interrupt.
pub const STS_INTERRUPT: u8 = 0x04;
/// Status: the drive-capable bits the driver may set.
const STS_DMA_CAPABLE: u8 = 0x60;
/// The most descriptors a table holds (64 KiB / 8 bytes).
pub const MAX_PRD_ENTRIES: u32 = 8192;

/// What the engine moves bytes to and from: the device that issued the
/// DMA command.
pub trait DmaPeer {
    /// `Some(true)` for a device-to-memory transfer, `Some(false)` for
    /// memory to device, `None` if no DMA command is pending.
    fn to_guest(&self) -> Option<bool>;
    /// Bytes the command still has to move.
    fn remaining(&self) -> u64;
    /// Takes the next `buf.len()` bytes from the device; false on error.
    fn pull(&mut self, buf: &mut [u8]) -> bool;
    /// Gives the device the next bytes; false on error.
    fn push(&mut self, buf: &[u8]) -> bool;
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DmaOutcome {
    /// The command's bytes all moved.
    pub ok: bool,
    /// Bytes moved.
    pub bytes: u64,
}

/// Counters for the inspector.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BusMasterStats {
    /// Transfers run.
    pub transfers: u64,
    /// Descriptors walked.
    pub descriptors: u64,
    /// Bytes moved.
    pub bytes: u64,
    /// Transfers that ended with Error.
    pub errors: u64,
}

/// One channel's bus master registers.
#[derive(Debug, Default)]
pub struct BusMaster {
    command: u8,
    status: u8,
    prd: u32,
    bounce: Vec<u8>,
    stats: BusMasterStats,
}

impl BusMaster {
    /// Reads the register byte at `offset` (0-7).
    pub fn read(&self, offset: u64) -> u8 {
        match offset {
            0 => self.command,
            2 => self.status,
            4..=7 => (self.prd >> (8 * (offset - 4))) as u8,
            _ => 0,
        }
    }

    /// Writes the register byte at `offset` (0-7).
    pub fn write(&mut self, offset: u64, value: u8) {
        match offset {
            0 => {
                let was = self.command & CMD_START != 0;
                let now = value & CMD_START != 0;
                if now && !was {
                    self.status |= STS_ACTIVE;
                } else if !now && was {
                    // Stopping aborts whatever is left.
                    self.status &= !STS_ACTIVE;
                }
                self.command = value & (CMD_START | CMD_TO_MEMORY);
            }
            2 => {
                let cleared = value & (STS_ERROR | STS_INTERRUPT);
                self.status &= !cleared;
                self.status = (self.status & !STS_DMA_CAPABLE) | (value & STS_DMA_CAPABLE);
            }
            4..=7 => {
                let shift = 8 * (offset - 4);
                self.prd &= !(0xff << shift);
                self.prd |= u32::from(value) << shift;
                self.prd &= !3;
            }
            _ => {}
        }
    }

    /// Whether a transfer may run now.
    pub fn started(&self) -> bool {
        self.command & CMD_START != 0 && self.status & STS_ACTIVE != 0
    }

    /// The channel's interrupt line rose.
    pub fn interrupt(&mut self) {
        self.status |= STS_INTERRUPT;
    }

    fn error(&mut self, bytes: u64) -> DmaOutcome {
        self.status = (self.status & !STS_ACTIVE) | STS_ERROR;
        self.stats.errors += 1;
        DmaOutcome { ok: false, bytes }
    }

    /// Runs the pending transfer of `peer` through the descriptor table
    /// (see the module documentation for how it ends). `enabled` is the
    /// PCI command register's Bus Master Enable.
    pub fn run(&mut self, memory: &DmaMemory, peer: &mut dyn DmaPeer, enabled: bool) -> DmaOutcome {
        let Some(to_guest) = peer.to_guest() else {
            return DmaOutcome {
                ok: false,
                bytes: 0,
            };
        };
        self.stats.transfers += 1;
        if !enabled || to_guest != (self.command & CMD_TO_MEMORY != 0) {
            return self.error(0);
        }
        let mut entry_addr = u64::from(self.prd);
        let mut bytes = 0u64;
        let mut bounce = std::mem::take(&mut self.bounce);
        let mut result = None;
        for _ in 0..MAX_PRD_ENTRIES {
            let mut e = [0u8; 8];
            if memory.read(entry_addr, &mut e).is_err() {
                break;
            }
            self.stats.descriptors += 1;
            let base = u64::from(u32::from_le_bytes([e[0], e[1], e[2], e[3]]) & !1);
            let count = match u16::from_le_bytes([e[4], e[5]]) {
                0 => 0x1_0000,
                n => u64::from(n),
            };
            let eot = e[7] & 0x80 != 0;
            let n = count.min(peer.remaining());
            if n > 0 {
                bounce.clear();
                bounce.resize(n as usize, 0);
                let moved = if to_guest {
                    peer.pull(&mut bounce) && memory.write(base, &bounce).is_ok()
                } else {
                    memory.read(base, &mut bounce).is_ok() && peer.push(&bounce)
                };
                if !moved {
                    break;
                }
                bytes += n;
            }
            if peer.remaining() == 0 {
                if eot && n == count {
                    self.status &= !STS_ACTIVE;
                }
                result = Some(DmaOutcome { ok: true, bytes });
                break;
            }
            if eot {
                break;
            }
            entry_addr = (entry_addr + 8) & 0xffff_ffff;
        }
        self.bounce = bounce;
        self.stats.bytes += bytes;
        result.unwrap_or_else(|| self.error(bytes))
    }

    /// The inspector's view.
    pub fn tree(&self) -> Tree {
        let mut t = Tree::new();
        t.hex("command", self.command.into(), 2)
            .hex("status", self.status.into(), 2)
            .hex("prd_table", self.prd.into(), 8)
            .value("transfers", self.stats.transfers)
            .value("descriptors", self.stats.descriptors)
            .value("bytes", self.stats.bytes)
            .value("errors", self.stats.errors);
        t
    }
}

#[cfg(test)]
mod tests {
    use super::super::channel::{ERR_ABRT, ST_ERR};
    use super::super::media::tests::TempImage;
    use super::super::tests::*;
    use super::*;

    const BM: u16 = 0xc000;

    /// Writes a descriptor table at `table` from (address, count, eot).
    fn prd(ide: &mut super::super::IdeController, table: u64, entries: &[(u32, u16, bool)]) {
        let mem = ide.memory_for_tests();
        for (i, &(addr, count, eot)) in entries.iter().enumerate() {
            let mut e = [0u8; 8];
            e[..4].copy_from_slice(&addr.to_le_bytes());
            e[4..6].copy_from_slice(&count.to_le_bytes());
            e[7] = if eot { 0x80 } else { 0 };
            mem.write(table + 8 * i as u64, &e).unwrap();
        }
        bm_write(ide, 4, &(table as u32).to_le_bytes());
    }

    fn bm_write(ide: &mut super::super::IdeController, offset: u64, data: &[u8]) {
        use crate::pci::PciDevice;
        ide.write_bar(4, offset, data);
    }

    fn bm_read(ide: &mut super::super::IdeController, offset: u64) -> u8 {
        use crate::pci::PciDevice;
        let mut b = [0u8];
        ide.read_bar(4, offset, &mut b);
        b[0]
    }

    fn enable_bus_master(ide: &mut super::super::IdeController) {
        use crate::pci::PciDevice;
        ide.write_config(0x04, &[0x05, 0]);
    }

    #[test]
    fn dma_write_then_read_through_a_scatter_list() {
        let img = TempImage::new("dma", &vec![0u8; 64 * 512]);
        let (mut ide, irq) = controller_with_disk(&img, false);
        enable_bus_master(&mut ide);
        let mem = ide.memory_for_tests();
        let pattern: Vec<u8> = (0..3 * 512u32).map(|i| (i % 251) as u8).collect();
        mem.write(0x10000, &pattern[..1024]).unwrap();
        mem.write(0x20000, &pattern[1024..]).unwrap();
        // WRITE DMA of 3 sectors at LBA 10 from two regions.
        prd(
            &mut ide,
            0x8000,
            &[(0x10000, 1024, false), (0x20000, 512, true)],
        );
        bm_write(&mut ide, 0, &[0]); // memory to device
        set_lba28(&mut ide, 10, 3);
        outb(&mut ide, 0x1f7, 0xca);
        assert_eq!(irq.rises(), 0);
        bm_write(&mut ide, 0, &[CMD_START]);
        assert_eq!(irq.rises(), 1);
        assert_eq!(bm_read(&mut ide, 2) & 7, STS_INTERRUPT);
        assert_eq!(inb(&mut ide, 0x1f7) & ST_ERR, 0);
        let file = std::fs::read(&img.0).unwrap();
        assert_eq!(&file[10 * 512..13 * 512], &pattern[..]);
        // Clear Interrupt, stop.
        bm_write(&mut ide, 2, &[STS_INTERRUPT]);
        bm_write(&mut ide, 0, &[0]);
        assert_eq!(bm_read(&mut ide, 2) & 7, 0);
        // READ DMA EXT with the engine started first, into one region
        // larger than the transfer: Active stays set.
        prd(&mut ide, 0x8100, &[(0x30000, 0, true)]);
        bm_write(&mut ide, 0, &[CMD_TO_MEMORY | CMD_START]);
        outb(&mut ide, 0x1f6, 0x40);
        for (reg, v) in [
            (2, 0),
            (2, 3),
            (3, 0),
            (3, 10),
            (4, 0),
            (4, 0),
            (5, 0),
            (5, 0),
        ] {
            outb(&mut ide, 0x1f0 + reg, v);
        }
        outb(&mut ide, 0x1f7, 0x25);
        assert_eq!(
            bm_read(&mut ide, 2) & 7,
            STS_INTERRUPT | STS_ACTIVE,
            "descriptors larger than the transfer"
        );
        let mut back = vec![0u8; 1536];
        mem.read(0x30000, &mut back).unwrap();
        assert_eq!(back, pattern);
        let drive = ide.channel(0).drives[0].as_ref().unwrap();
        assert_eq!(drive.stats.dma_bytes, 3072);
    }

    #[test]
    fn dma_errors_set_the_error_bit_and_abort_the_command() {
        let img = TempImage::new("dmaerr", &vec![0u8; 64 * 512]);
        let (mut ide, _) = controller_with_disk(&img, false);
        // Bus mastering disabled in the PCI command register.
        prd(&mut ide, 0x8000, &[(0x10000, 512, true)]);
        bm_write(&mut ide, 0, &[CMD_TO_MEMORY | CMD_START]);
        set_lba28(&mut ide, 0, 1);
        outb(&mut ide, 0x1f7, 0xc8);
        assert_eq!(bm_read(&mut ide, 2) & 7, STS_ERROR | STS_INTERRUPT);
        assert_eq!(inb(&mut ide, 0x1f1), ERR_ABRT);
        enable_bus_master(&mut ide);
        // A descriptor outside guest memory.
        let cases: [&[(u32, u16, bool)]; 3] = [
            &[(0xfff0_0000, 512, true)],
            // Too short: EOT after 256 bytes.
            &[(0x10000, 256, true)],
            // Direction mismatch is checked below; this one is fine.
            &[(0x10000, 512, true)],
        ];
        for (i, entries) in cases.iter().enumerate() {
            bm_write(&mut ide, 0, &[0]);
            bm_write(&mut ide, 2, &[STS_ERROR | STS_INTERRUPT]);
            prd(&mut ide, 0x8000, entries);
            let dir = if i == 2 { 0 } else { CMD_TO_MEMORY };
            bm_write(&mut ide, 0, &[dir | CMD_START]);
            set_lba28(&mut ide, 0, 1);
            outb(&mut ide, 0x1f7, 0xc8);
            assert_eq!(
                bm_read(&mut ide, 2) & 7,
                STS_ERROR | STS_INTERRUPT,
                "case {i}"
            );
            assert_ne!(inb(&mut ide, 0x1f7) & ST_ERR, 0);
        }
        // A table with no EOT in zeroed memory: 8192 entries of 64 KiB
        // each would be 512 MiB; it ends at the first entry that fails or
        // after the bound, never loops.
        bm_write(&mut ide, 0, &[0]);
        bm_write(&mut ide, 2, &[STS_ERROR | STS_INTERRUPT]);
        ide.memory_for_tests().write(0x9000, &[0u8; 64]).unwrap();
        bm_write(&mut ide, 4, &0x9000u32.to_le_bytes());
        bm_write(&mut ide, 0, &[CMD_TO_MEMORY | CMD_START]);
        set_lba28(&mut ide, 0, 64);
        outb(&mut ide, 0x1f7, 0xc8);
        // 64 sectors = 32 KiB fit in the first 64 KiB entry at address 0.
        assert_eq!(bm_read(&mut ide, 2) & 7, STS_INTERRUPT | STS_ACTIVE);
        // Register bytes: PRD pointer bits 1:0 read 0, reserved bytes 0.
        bm_write(&mut ide, 4, &[0x07]);
        assert_eq!(bm_read(&mut ide, 4), 0x04);
        assert_eq!(bm_read(&mut ide, 1), 0);
        bm_write(&mut ide, 2, &[0x60]);
        assert_eq!(bm_read(&mut ide, 2) & 0x60, 0x60);
    }

    #[test]
    fn write_cache_off_makes_dma_writes_write_through() {
        let img = TempImage::new("wt", &vec![0u8; 8 * 512]);
        let (mut ide, _) = controller_with_disk(&img, false);
        enable_bus_master(&mut ide);
        outb(&mut ide, 0x1f1, 0x82); // write cache off
        outb(&mut ide, 0x1f7, 0xef);
        assert_eq!(inb(&mut ide, 0x1f7) & ST_ERR, 0);
        ide.memory_for_tests().write(0x10000, &[0xee; 512]).unwrap();
        prd(&mut ide, 0x8000, &[(0x10000, 512, true)]);
        set_lba28(&mut ide, 7, 1);
        outb(&mut ide, 0x1f7, 0xca);
        bm_write(&mut ide, 0, &[CMD_START]);
        assert_eq!(inb(&mut ide, 0x1f7) & ST_ERR, 0);
        assert_eq!(&std::fs::read(&img.0).unwrap()[7 * 512..], &[0xee; 512][..]);
        // IDENTIFY word 85 bit 5 shows the cache off.
        outb(&mut ide, 0x1f7, 0xec);
        let id = read_data(&mut ide, 0x1f0, 512);
        assert_eq!(id[170] & 0x20, 0);
    }

    #[test]
    fn atapi_dma_read() {
        let iso = TempImage::iso("dmacd", 20);
        let (mut ide, irq) = controller();
        ide.attach(
            super::super::IdePosition::SecondaryMaster,
            super::super::IdeDrive::Cdrom(Some(
                super::super::media::CdImage::open(&iso.0).unwrap(),
            )),
        )
        .unwrap();
        enable_bus_master(&mut ide);
        prd(&mut ide, 0x8000, &[(0x40000, 4096, true)]);
        // Secondary channel registers are at BM + 8.
        let mut entries = [0u8; 4];
        entries.copy_from_slice(&0x8000u32.to_le_bytes());
        bm_write(&mut ide, 12, &entries);
        bm_write(&mut ide, 8, &[CMD_TO_MEMORY | CMD_START]);
        outb(&mut ide, 0x176, 0xa0);
        outb(&mut ide, 0x171, 1); // DMA
        outb(&mut ide, 0x177, 0xa0);
        write_data(&mut ide, 0x170, &[0x28, 0, 0, 0, 0, 5, 0, 0, 2, 0, 0, 0]);
        assert_eq!(irq.rises(), 1);
        assert_eq!(bm_read(&mut ide, 10) & 7, STS_INTERRUPT);
        assert_eq!(inb(&mut ide, 0x177) & ST_ERR, 0);
        assert_eq!(inb(&mut ide, 0x172), 3);
        let mut back = vec![0u8; 4096];
        ide.memory_for_tests().read(0x40000, &mut back).unwrap();
        assert!(back[..2048].iter().all(|&b| b == 5));
        assert!(back[2048..].iter().all(|&b| b == 6));
        let _ = BM;
    }
}
