//! One IDE channel: the command block (8 ports) and control block (one
//! port) two devices share, their task-file registers, device
//! selection, the interrupt line and software reset.
//!
//! Ports, from the command block base (0x1F0 primary, 0x170 secondary):
//!
//! | offset | read | write |
//! |---|---|---|
//! | 0 | Data (16 bits; 8- and 32-bit accesses move 1 or 4 bytes) | Data |
//! | 1 | Error | Features |
//! | 2 | Sector Count (ATAPI: Interrupt Reason) | Sector Count |
//! | 3 | LBA Low | LBA Low |
//! | 4 | LBA Mid (ATAPI: Byte Count low) | LBA Mid |
//! | 5 | LBA High (ATAPI: Byte Count high) | LBA High |
//! | 6 | Device | Device |
//! | 7 | Status (clears the pending interrupt) | Command |
//!
//! The control block is one port (0x3F6 primary, 0x376 secondary):
//! Alternate Status on read (no side effect), Device Control on write
//! (bit 1 nIEN, bit 2 SRST, bit 7 HOB). ATA/ATAPI-6 §7 (register
//! descriptions), §9.2 (software reset protocol), §6.20 (48-bit
//! addressing: every register write pushes the previous value into the
//! "previous content" that HOB=1 reads back).
//!
//! Each device keeps its own copy of the task file: writes reach both,
//! reads come from the selected one (so an ATA device 0 and an ATAPI
//! device 1 show their own signatures after a reset). A register read
//! with the selected device absent returns 0 (device 0 answering for a
//! missing device 1, §9.16.1), except the Device register; a channel
//! with no device at all floats and reads 0xFF everywhere.
//!
//! **Interrupts.** INTRQ is asserted when a command completes or a PIO
//! data block is ready (ATA-6 §9.4-§9.10 protocols), cleared by reading
//! Status, writing Command or a reset. The ISA line (IRQ 14/15, edge)
//! follows INTRQ unless nIEN masks it; a new interrupt while the line is
//! still high lowers and raises it again so an edge reaches the PIC.
//! Each rising edge also sets the bus master's Interrupt status bit.
//!
//! Commands complete immediately (no BSY phase is ever visible except
//! while SRST is held): data is ready as soon as the command is written.
//!
//! Left out: per-device nIEN (one for the channel), overlapped and
//! queued commands, the BSY timing of real drives, register access while
//! BSY (accepted, not ignored).

use std::sync::Arc;

use alcazar_core::inspect::Tree;
use alcazar_core::irq::IrqLine;
use alcazar_core::DmaMemory;

use super::atapi::Cdrom;
use super::bus_master::{BusMaster, DmaPeer};
use super::media::DiskImage;

// Status register bits (ATA-6 §7.15).
/// Busy.
pub const ST_BSY: u8 = 0x80;
/// Device ready.
pub const ST_DRDY: u8 = 0x40;
/// Device fault.
pub const ST_DF: u8 = 0x20;
/// Seek complete (ATA) / service (ATAPI).
pub const ST_DSC: u8 = 0x10;
/// Data request.
pub const ST_DRQ: u8 = 0x08;
/// Error.
pub const ST_ERR: u8 = 0x01;

// Error register bits (ATA-6 §7.9).
/// Command aborted.
pub const ERR_ABRT: u8 = 0x04;
/// ID not found: an address outside the device.
pub const ERR_IDNF: u8 = 0x10;
/// Uncorrectable data error (a host I/O error on the image).
pub const ERR_UNC: u8 = 0x40;

// Device Control bits (ATA-6 §7.8).
/// Interrupts disabled.
pub const CTL_NIEN: u8 = 0x02;
/// Software reset.
pub const CTL_SRST: u8 = 0x04;
/// High order byte: reads return the previous register contents.
pub const CTL_HOB: u8 = 0x80;

// Device register bits.
/// Device 1 selected.
pub const DEV_DEV: u8 = 0x10;
/// LBA addressing (28-bit commands).
pub const DEV_LBA: u8 = 0x40;

/// ATAPI Interrupt Reason bits (in Sector Count).
pub const IR_COD: u8 = 0x01;
/// Transfer toward the host.
pub const IR_IO: u8 = 0x02;

/// The largest PIO byte count an ATAPI device sends per DRQ block.
const ATAPI_MAX_CHUNK: usize = 0xfffe;

/// The task file registers of one device, with the "previous contents"
/// of the 48-bit registers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskFile {
    /// Features (current, previous).
    pub feature: [u8; 2],
    /// Sector Count.
    pub nsect: [u8; 2],
    /// LBA Low.
    pub lbal: [u8; 2],
    /// LBA Mid.
    pub lbam: [u8; 2],
    /// LBA High.
    pub lbah: [u8; 2],
    /// Device.
    pub device: u8,
}

impl TaskFile {
    /// A guest write of register `reg` (1-6).
    fn write(&mut self, reg: u64, value: u8) {
        let r = match reg {
            1 => &mut self.feature,
            2 => &mut self.nsect,
            3 => &mut self.lbal,
            4 => &mut self.lbam,
            5 => &mut self.lbah,
            6 => {
                self.device = value;
                return;
            }
            _ => return,
        };
        r[1] = r[0];
        r[0] = value;
    }

    /// The 28-bit LBA of the current registers.
    pub fn lba28(&self) -> u64 {
        u64::from(self.device & 0x0f) << 24
            | u64::from(self.lbah[0]) << 16
            | u64::from(self.lbam[0]) << 8
            | u64::from(self.lbal[0])
    }

    /// The 48-bit LBA of the current and previous registers.
    pub fn lba48(&self) -> u64 {
        u64::from(self.lbah[1]) << 40
            | u64::from(self.lbam[1]) << 32
            | u64::from(self.lbal[1]) << 24
            | u64::from(self.lbah[0]) << 16
            | u64::from(self.lbam[0]) << 8
            | u64::from(self.lbal[0])
    }

    /// The 8-bit sector count (0 means 256).
    pub fn count28(&self) -> u64 {
        match self.nsect[0] {
            0 => 256,
            n => u64::from(n),
        }
    }

    /// The 16-bit sector count (0 means 65536).
    pub fn count48(&self) -> u64 {
        match u16::from_le_bytes([self.nsect[0], self.nsect[1]]) {
            0 => 65536,
            n => u64::from(n),
        }
    }

    /// The ATAPI byte count limit (LBA Mid/High).
    pub fn byte_count(&self) -> u16 {
        u16::from_le_bytes([self.lbam[0], self.lbah[0]])
    }

    /// Sets the ATAPI byte count.
    pub fn set_byte_count(&mut self, n: u16) {
        let [lo, hi] = n.to_le_bytes();
        self.lbam[0] = lo;
        self.lbah[0] = hi;
    }

    /// Loads the reset signature (ATA-6 §9.12): 0x14/0xEB in LBA Mid/High
    /// for a packet device, 0/0 for an ATA one.
    pub fn set_signature(&mut self, packet: bool) {
        self.nsect[0] = 1;
        self.lbal[0] = 1;
        let (m, h) = if packet { (0x14, 0xeb) } else { (0, 0) };
        self.lbam[0] = m;
        self.lbah[0] = h;
        self.device = 0;
    }
}

/// Where the bytes of a data transfer come from or go to.
#[derive(Debug)]
pub enum Source {
    /// A reply built in memory (IDENTIFY, SCSI replies), from `at`.
    Memory {
        /// The bytes.
        data: Vec<u8>,
        /// How many were consumed.
        at: usize,
    },
    /// The drive's image, from byte `offset`.
    Image {
        /// Next byte offset in the image.
        offset: u64,
    },
}

/// The data transfer a drive is in.
#[derive(Debug, Default)]
pub enum Xfer {
    /// None: no DRQ.
    #[default]
    Idle,
    /// PIO data-in of sectors: the buffer holds the current block;
    /// `remaining` sectors from `lba` follow in blocks of `block`.
    ReadPio {
        /// Next sector to load.
        lba: u64,
        /// Sectors still to load.
        remaining: u64,
        /// Sectors per DRQ block.
        block: u64,
    },
    /// PIO data-out of sectors: the buffer receives the block for `lba`,
    /// then `remaining` more sectors follow.
    WritePio {
        /// Sector of the buffer's first byte.
        lba: u64,
        /// Sectors after the current block.
        remaining: u64,
        /// Sectors per DRQ block.
        block: u64,
    },
    /// One PIO data-in block, then the command completes (IDENTIFY).
    DataIn,
    /// The drive waits for the 12 command packet bytes.
    Packet,
    /// ATAPI PIO data-in: the buffer holds one chunk; `remaining` bytes
    /// of `source` follow.
    AtapiIn {
        /// Where the bytes come from.
        source: Source,
        /// Bytes still to send after the buffer.
        remaining: u64,
    },
    /// Waiting for (or in) a bus-master transfer.
    Dma {
        /// Device to memory.
        to_guest: bool,
        /// Where the bytes come from or go to.
        source: Source,
        /// Bytes left.
        remaining: u64,
        /// The command is an ATAPI packet.
        packet: bool,
        /// Sync after the write (write cache off).
        sync: bool,
    },
}

/// What a drive is.
#[derive(Debug)]
pub enum Kind {
    /// An ATA hard disk.
    Disk(DiskImage),
    /// An ATAPI CD/DVD-ROM drive.
    Cdrom(Cdrom),
}

/// Counters for the inspector.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DriveStats {
    /// ATA commands received.
    pub commands: u64,
    /// ATAPI packets received.
    pub packets: u64,
    /// Sectors (or 2048-byte blocks) read.
    pub blocks_read: u64,
    /// Sectors written.
    pub blocks_written: u64,
    /// Bytes moved by the bus master.
    pub dma_bytes: u64,
    /// FLUSH CACHE commands.
    pub flushes: u64,
    /// Commands that ended with ERR.
    pub errors: u64,
}

/// One device on a channel.
#[derive(Debug)]
pub struct Drive {
    /// Disk or CD-ROM.
    pub kind: Kind,
    /// Its task file.
    pub tf: TaskFile,
    /// Status register.
    pub status: u8,
    /// Error register.
    pub error: u8,
    /// The current PIO block.
    pub buf: Vec<u8>,
    /// Bytes of `buf` transferred.
    pub pos: usize,
    /// The transfer in progress.
    pub xfer: Xfer,
    /// Sectors per block for READ/WRITE MULTIPLE (0: not set).
    pub multiple: u16,
    /// Logical geometry for CHS addressing: heads, sectors per track.
    pub heads: u16,
    /// Sectors per track.
    pub spt: u16,
    /// The transfer mode SET FEATURES selected (0: default PIO).
    pub xfer_mode: u8,
    /// Volatile write cache on (off: every write is synced).
    pub write_cache: bool,
    /// The last command byte.
    pub last_command: u8,
    /// Serial number string.
    pub serial: String,
    /// Asks the channel to assert INTRQ.
    pub raise: bool,
    /// Counters.
    pub stats: DriveStats,
}

impl Drive {
    /// A drive of `kind`, with the reset signature loaded.
    pub fn new(kind: Kind, serial: String) -> Self {
        let mut d = Drive {
            kind,
            tf: TaskFile::default(),
            status: 0,
            error: 0,
            buf: Vec::new(),
            pos: 0,
            xfer: Xfer::Idle,
            multiple: 0,
            heads: 16,
            spt: 63,
            xfer_mode: 0,
            write_cache: true,
            last_command: 0,
            serial,
            raise: false,
            stats: DriveStats::default(),
        };
        d.reset();
        d
    }

    /// Whether it is a packet (ATAPI) device.
    pub fn is_packet(&self) -> bool {
        matches!(self.kind, Kind::Cdrom(_))
    }

    /// Completes a reset (SRST, EXECUTE DEVICE DIAGNOSTIC, DEVICE RESET):
    /// signature, diagnostic code 01h, ready status, no transfer.
    pub fn reset(&mut self) {
        self.abort_transfer();
        self.tf.set_signature(self.is_packet());
        self.error = 0x01;
        self.status = if self.is_packet() {
            0
        } else {
            ST_DRDY | ST_DSC
        };
        if let Kind::Disk(d) = &self.kind {
            let (_, h, s) = default_geometry(d.sectors());
            self.heads = h;
            self.spt = s;
        }
    }

    /// Drops any transfer in progress.
    pub fn abort_transfer(&mut self) {
        self.xfer = Xfer::Idle;
        self.buf.clear();
        self.pos = 0;
        self.status &= !ST_DRQ;
    }

    /// Ends the command successfully, asserting INTRQ if `irq`.
    pub fn complete(&mut self, irq: bool) {
        self.abort_transfer();
        self.status = ST_DRDY | ST_DSC;
        self.error = 0;
        self.raise |= irq;
    }

    /// Ends the command with ERR and `error`, asserting INTRQ.
    pub fn fail(&mut self, error: u8) {
        self.abort_transfer();
        self.status = ST_DRDY | ST_ERR;
        self.error = error;
        self.stats.errors += 1;
        self.raise = true;
    }

    /// Starts PIO data-in of `data` (one block, then completion).
    pub fn data_in(&mut self, data: Vec<u8>) {
        self.buf = data;
        self.pos = 0;
        self.xfer = Xfer::DataIn;
        self.status = ST_DRDY | ST_DSC | ST_DRQ;
        self.error = 0;
        self.raise = true;
    }

    /// Reads from the image behind the drive.
    pub fn image_read(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        match &self.kind {
            Kind::Disk(d) => d.read_at(buf, offset),
            Kind::Cdrom(c) => c.read_at(buf, offset),
        }
    }

    /// Writes to the image behind the drive (disks only).
    pub fn image_write(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        match &self.kind {
            Kind::Disk(d) => d.write_at(buf, offset),
            Kind::Cdrom(_) => Err(std::io::ErrorKind::PermissionDenied.into()),
        }
    }

    /// A data port read of `data.len()` bytes.
    fn data_read(&mut self, data: &mut [u8]) {
        let readable = matches!(
            self.xfer,
            Xfer::DataIn | Xfer::ReadPio { .. } | Xfer::AtapiIn { .. }
        );
        if !readable || self.status & ST_DRQ == 0 {
            data.fill(0xff);
            return;
        }
        for b in data.iter_mut() {
            *b = self.buf.get(self.pos).copied().unwrap_or(0);
            self.pos += 1;
        }
        if self.pos >= self.buf.len() {
            self.block_in_done();
        }
    }

    /// A data port write.
    fn data_write(&mut self, data: &[u8]) {
        let writable = matches!(self.xfer, Xfer::WritePio { .. } | Xfer::Packet);
        if !writable || self.status & ST_DRQ == 0 {
            return;
        }
        for &b in data {
            if let Some(slot) = self.buf.get_mut(self.pos) {
                *slot = b;
            }
            self.pos += 1;
        }
        if self.pos >= self.buf.len() {
            self.block_out_done();
        }
    }

    /// The host has read the whole PIO block.
    fn block_in_done(&mut self) {
        match std::mem::take(&mut self.xfer) {
            Xfer::ReadPio {
                lba,
                remaining,
                block,
            } if remaining > 0 => self.load_read_block(lba, remaining, block),
            Xfer::AtapiIn { source, remaining } if remaining > 0 => {
                self.atapi_next_chunk(source, remaining)
            }
            Xfer::AtapiIn { .. } => self.packet_complete(),
            _ => self.complete(false),
        }
    }

    /// The host has written the whole PIO block.
    fn block_out_done(&mut self) {
        match std::mem::take(&mut self.xfer) {
            Xfer::WritePio {
                lba,
                remaining,
                block,
            } => self.store_write_block(lba, remaining, block),
            Xfer::Packet => {
                let mut cdb = [0u8; 12];
                let n = self.buf.len().min(12);
                cdb[..n].copy_from_slice(&self.buf[..n]);
                self.execute_packet(&cdb);
            }
            _ => self.complete(false),
        }
    }

    /// Loads the next ATAPI PIO chunk (at most the byte count limit) from
    /// `source` and raises DRQ with Interrupt Reason "data to host".
    pub fn atapi_next_chunk(&mut self, mut source: Source, remaining: u64) {
        let limit = match usize::from(self.tf.byte_count()) {
            0 => ATAPI_MAX_CHUNK,
            n => n.min(ATAPI_MAX_CHUNK),
        };
        let n_total = usize::try_from(remaining).unwrap_or(usize::MAX);
        // An odd limit is only usable for the last chunk.
        let n = if n_total <= limit {
            n_total
        } else {
            (limit & !1).max(2)
        };
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        buf.resize(n, 0);
        if let Err(e) = self.fill(&mut source, &mut buf) {
            tracing::debug!("ide: ATAPI read failed: {e}");
            self.buf = buf;
            self.atapi_medium_error();
            return;
        }
        self.buf = buf;
        self.pos = 0;
        self.tf.set_byte_count(n as u16);
        self.tf.nsect[0] = IR_IO;
        self.xfer = Xfer::AtapiIn {
            source,
            remaining: remaining - n as u64,
        };
        self.status = ST_DRDY | ST_DRQ;
        self.raise = true;
    }

    /// Copies the next `buf.len()` bytes of `source` into `buf`.
    pub fn fill(&self, source: &mut Source, buf: &mut [u8]) -> std::io::Result<()> {
        match source {
            Source::Memory { data, at } => {
                let end = at.saturating_add(buf.len());
                let src = data
                    .get(*at..end)
                    .ok_or(std::io::ErrorKind::UnexpectedEof)?;
                buf.copy_from_slice(src);
                *at = end;
                Ok(())
            }
            Source::Image { offset } => {
                self.image_read(buf, *offset)?;
                *offset += buf.len() as u64;
                Ok(())
            }
        }
    }

    /// The inspector's view.
    fn tree(&self) -> Tree {
        let mut t = Tree::new();
        match &self.kind {
            Kind::Disk(d) => {
                t.value("kind", "ata-disk")
                    .value("image", d.path().display())
                    .value("sectors", d.sectors())
                    .value("readonly", d.readonly());
            }
            Kind::Cdrom(c) => {
                t.value("kind", "atapi-cdrom");
                c.inspect_into(&mut t);
            }
        }
        t.hex("status", self.status.into(), 2)
            .hex("error", self.error.into(), 2)
            .hex("features", self.tf.feature[0].into(), 2)
            .hex("sector_count", self.tf.nsect[0].into(), 2)
            .hex("lba_low", self.tf.lbal[0].into(), 2)
            .hex("lba_mid", self.tf.lbam[0].into(), 2)
            .hex("lba_high", self.tf.lbah[0].into(), 2)
            .hex("device", self.tf.device.into(), 2)
            .hex("last_command", self.last_command.into(), 2)
            .value("transfer", xfer_name(&self.xfer))
            .value("pio_bytes_left", self.buf.len().saturating_sub(self.pos))
            .value("multiple", self.multiple)
            .hex("xfer_mode", self.xfer_mode.into(), 2)
            .value("write_cache", self.write_cache);
        let s = &self.stats;
        let mut c = Tree::new();
        c.value("commands", s.commands)
            .value("packets", s.packets)
            .value("blocks_read", s.blocks_read)
            .value("blocks_written", s.blocks_written)
            .value("dma_bytes", s.dma_bytes)
            .value("flushes", s.flushes)
            .value("errors", s.errors);
        t.child("counters", c);
        t
    }
}

fn xfer_name(x: &Xfer) -> &'static str {
    match x {
        Xfer::Idle => "idle",
        Xfer::ReadPio { .. } => "pio-read",
        Xfer::WritePio { .. } => "pio-write",
        Xfer::DataIn => "pio-data-in",
        Xfer::Packet => "packet",
        Xfer::AtapiIn { .. } => "atapi-pio-in",
        Xfer::Dma { .. } => "dma",
    }
}

/// The default CHS geometry of a disk of `sectors` (ATA-6 Annex B style:
/// 16 heads, 63 sectors per track, at most 16383 cylinders).
pub fn default_geometry(sectors: u64) -> (u16, u16, u16) {
    let cyl = (sectors / (16 * 63)).clamp(1, 16383) as u16;
    (cyl, 16, 63)
}

/// The drive a DMA transfer runs against, as the bus master sees it.
impl DmaPeer for Drive {
    fn to_guest(&self) -> Option<bool> {
        match self.xfer {
            Xfer::Dma { to_guest, .. } => Some(to_guest),
            _ => None,
        }
    }

    fn remaining(&self) -> u64 {
        match self.xfer {
            Xfer::Dma { remaining, .. } => remaining,
            _ => 0,
        }
    }

    fn pull(&mut self, buf: &mut [u8]) -> bool {
        let mut xfer = std::mem::take(&mut self.xfer);
        let ok = match &mut xfer {
            Xfer::Dma {
                to_guest: true,
                source,
                remaining,
                ..
            } if buf.len() as u64 <= *remaining => {
                let ok = self.fill(source, buf).is_ok();
                *remaining -= buf.len() as u64;
                ok
            }
            _ => false,
        };
        self.xfer = xfer;
        ok
    }

    fn push(&mut self, buf: &[u8]) -> bool {
        let ok = match &mut self.xfer {
            Xfer::Dma {
                to_guest: false,
                source: Source::Image { offset },
                remaining,
                ..
            } if buf.len() as u64 <= *remaining => {
                let at = *offset;
                *offset += buf.len() as u64;
                *remaining -= buf.len() as u64;
                Some(at)
            }
            _ => None,
        };
        match ok {
            Some(at) => self.image_write(buf, at).is_ok(),
            None => false,
        }
    }
}

/// Which register block an access is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Block {
    /// The 8 command block ports.
    Command,
    /// The control block port.
    Control,
}

/// One channel.
pub struct Channel {
    /// Device 0 and device 1.
    pub drives: [Option<Drive>; 2],
    /// The selected device (the Device register's DEV bit).
    selected: usize,
    /// Device Control.
    devctl: u8,
    /// INTRQ of the channel (before nIEN).
    intrq: bool,
    /// What the ISA line was last driven to.
    line_high: bool,
    irq: Arc<dyn IrqLine>,
    /// The bus master registers of this channel.
    pub bm: BusMaster,
    /// Guest memory for DMA.
    memory: DmaMemory,
    /// Whether the PCI function may master the bus.
    pub bus_master_enabled: bool,
    /// Interrupts raised.
    interrupts: u64,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("drives", &self.drives)
            .field("selected", &self.selected)
            .field("devctl", &self.devctl)
            .finish_non_exhaustive()
    }
}

impl Channel {
    /// An empty channel raising `irq`, doing DMA in `memory`.
    pub fn new(irq: Arc<dyn IrqLine>, memory: DmaMemory) -> Self {
        Channel {
            drives: [None, None],
            selected: 0,
            devctl: 0,
            intrq: false,
            line_high: false,
            irq,
            bm: BusMaster::default(),
            memory,
            bus_master_enabled: false,
            interrupts: 0,
        }
    }

    fn is_empty(&self) -> bool {
        self.drives.iter().all(Option::is_none)
    }

    /// Whether INTRQ is pending (the line, before nIEN).
    pub fn intrq(&self) -> bool {
        self.intrq
    }

    /// Drives the ISA line from INTRQ and nIEN.
    fn update_line(&mut self) {
        let level = self.intrq && self.devctl & CTL_NIEN == 0;
        if level != self.line_high {
            if level {
                self.bm.interrupt();
                self.interrupts += 1;
            }
            self.line_high = level;
            self.irq.set_level(level);
        }
    }

    /// Asserts INTRQ for a new event.
    fn raise(&mut self) {
        if self.line_high {
            // Give the edge-triggered PIC a fresh edge.
            self.line_high = false;
            self.irq.set_level(false);
        }
        self.intrq = true;
        self.update_line();
    }

    fn clear_intrq(&mut self) {
        self.intrq = false;
        self.update_line();
    }

    /// Guest memory, for tests that build descriptor tables.
    #[cfg(test)]
    pub(crate) fn memory_for_tests(&self) -> DmaMemory {
        self.memory.clone()
    }

    /// Collects the drives' interrupt requests and starts a DMA that is
    /// now possible.
    pub fn settle(&mut self) {
        self.try_dma();
        let mut raise = false;
        for d in self.drives.iter_mut().flatten() {
            raise |= std::mem::take(&mut d.raise);
        }
        if raise {
            self.raise();
        }
    }

    /// Runs a pending DMA if the bus master is started.
    pub fn try_dma(&mut self) {
        if !self.bm.started() {
            return;
        }
        let enabled = self.bus_master_enabled;
        let Some(drive) = self
            .drives
            .iter_mut()
            .flatten()
            .find(|d| matches!(d.xfer, Xfer::Dma { .. }))
        else {
            return;
        };
        let outcome = self.bm.run(&self.memory, drive, enabled);
        drive.stats.dma_bytes += outcome.bytes;
        drive.dma_done(outcome.ok);
    }

    /// A read in `block` at `offset`.
    pub fn read(&mut self, block: Block, offset: u64, data: &mut [u8]) {
        if data.is_empty() {
            return;
        }
        if self.is_empty() {
            data.fill(0xff);
            return;
        }
        let hob = self.devctl & CTL_HOB != 0;
        let sel = self.selected;
        let Some(drive) = self.drives[sel].as_mut() else {
            data.fill(0);
            if block == Block::Command && offset == 6 {
                // The Device register is latched whoever is selected.
                if let Some(d) = self.drives.iter().flatten().next() {
                    data[0] = d.tf.device | 0xa0;
                }
            }
            return;
        };
        if block == Block::Control {
            data.fill(0);
            data[0] = drive.status;
            return;
        }
        if offset == 0 {
            drive.data_read(data);
            self.settle();
            return;
        }
        data.fill(0);
        let h = usize::from(hob);
        let tf = &drive.tf;
        data[0] = match offset {
            1 => {
                if hob {
                    0
                } else {
                    drive.error
                }
            }
            2 => tf.nsect[h],
            3 => tf.lbal[h],
            4 => tf.lbam[h],
            5 => tf.lbah[h],
            6 => tf.device | 0xa0,
            _ => {
                let s = drive.status;
                self.clear_intrq();
                s
            }
        };
    }

    /// A write in `block` at `offset`.
    pub fn write(&mut self, block: Block, offset: u64, data: &[u8]) {
        let Some(&value) = data.first() else {
            return;
        };
        if block == Block::Control {
            self.write_control(value);
            return;
        }
        if offset == 0 {
            if let Some(d) = self.drives[self.selected].as_mut() {
                d.data_write(data);
            }
            self.settle();
            return;
        }
        // A command block write clears HOB.
        self.devctl &= !CTL_HOB;
        if offset == 7 {
            self.command(value);
            return;
        }
        for d in self.drives.iter_mut().flatten() {
            d.tf.write(offset, value);
        }
        if offset == 6 {
            self.selected = usize::from(value & DEV_DEV != 0);
        }
    }

    fn write_control(&mut self, value: u8) {
        let was_reset = self.devctl & CTL_SRST != 0;
        self.devctl = value;
        let reset = value & CTL_SRST != 0;
        if reset && !was_reset {
            for d in self.drives.iter_mut().flatten() {
                d.abort_transfer();
                d.status = ST_BSY;
            }
            self.intrq = false;
        } else if !reset && was_reset {
            for d in self.drives.iter_mut().flatten() {
                d.reset();
            }
            self.selected = 0;
        }
        self.update_line();
    }

    /// A write to the Command register.
    fn command(&mut self, cmd: u8) {
        self.clear_intrq();
        if self.devctl & CTL_SRST != 0 {
            return;
        }
        if cmd == 0x90 {
            // EXECUTE DEVICE DIAGNOSTIC addresses both devices; device 0
            // reports (ATA-6 §8.11).
            for d in self.drives.iter_mut().flatten() {
                d.stats.commands += 1;
                d.reset();
            }
            self.selected = 0;
            if let Some(d) = self.drives[0].as_mut() {
                d.raise = true;
            } else if let Some(d) = self.drives[1].as_mut() {
                // Device 1 alone answers for itself.
                d.raise = true;
            }
            self.settle();
            return;
        }
        let Some(drive) = self.drives[self.selected].as_mut() else {
            return;
        };
        drive.stats.commands += 1;
        drive.last_command = cmd;
        drive.abort_transfer();
        drive.execute(cmd);
        self.settle();
    }

    /// The inspector's view.
    pub fn tree(&self) -> Tree {
        let mut t = Tree::new();
        t.hex("device_control", self.devctl.into(), 2)
            .value("selected", self.selected)
            .value("intrq", self.intrq)
            .value("irq_line", self.line_high)
            .value("interrupts", self.interrupts);
        for (i, d) in self.drives.iter().enumerate() {
            let name = if i == 0 { "device0" } else { "device1" };
            match d {
                Some(d) => t.child(name, d.tree()),
                None => t.value(name, "absent"),
            };
        }
        t.child("bus_master", self.bm.tree());
        t
    }
}
