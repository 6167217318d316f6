//! The ATA command set of the hard disk (and the ATA commands a packet
//! device must answer), after ATA/ATAPI-6 (T13/1410D) §8 with the
//! IDENTIFY layout cross-checked against ACS-3 §7.12.7.
//!
//! | code | command | protocol |
//! |---|---|---|
//! | 0xEC | IDENTIFY DEVICE (packet device: abort + signature) | PIO in |
//! | 0xA1 | IDENTIFY PACKET DEVICE (packet device only) | PIO in |
//! | 0x20/0x21, 0x24 | READ SECTORS (28-bit, CHS or LBA), READ SECTORS EXT | PIO in |
//! | 0x30/0x31, 0x34 | WRITE SECTORS, WRITE SECTORS EXT | PIO out |
//! | 0xC4, 0x29 | READ MULTIPLE (EXT) | PIO in, blocks of N sectors |
//! | 0xC5, 0x39 | WRITE MULTIPLE (EXT) | PIO out |
//! | 0xC6 | SET MULTIPLE MODE (1-16, power of two; 0 turns it off) | non-data |
//! | 0xC8/0xC9, 0x25 | READ DMA (EXT) | DMA |
//! | 0xCA/0xCB, 0x35 | WRITE DMA (EXT) | DMA |
//! | 0xE7, 0xEA | FLUSH CACHE (EXT): `fdatasync` before completion | non-data |
//! | 0xEF | SET FEATURES: 02h/82h write cache on/off, 03h transfer mode, AAh/55h look-ahead, 66h/CCh defaults | non-data |
//! | 0x91 | INITIALIZE DEVICE PARAMETERS (CHS translation) | non-data |
//! | 0x40/0x41, 0x42 | READ VERIFY SECTORS (EXT): range check only | non-data |
//! | 0xE0-0xE3, 0xE5, 0xE6, 0x94-0x99 | STANDBY/IDLE (IMMEDIATE), CHECK POWER MODE (always active), SLEEP | non-data |
//! | 0x10-0x1F, 0x70 | RECALIBRATE, SEEK (range check) | non-data |
//! | 0x08 | DEVICE RESET (packet device only) | device reset |
//! | 0x90 | EXECUTE DEVICE DIAGNOSTIC (handled by the channel) | diagnostic |
//! | 0xA0 | PACKET (packet device only; see `atapi`) | packet |
//!
//! Everything else (NOP included, §8.21) ends with ABRT. An address
//! range outside the disk ends with IDNF; a write to a read-only image
//! and a failed host read or write end with ABRT (UNC for a read).
//!
//! The volatile write cache is the host page cache: with it on (the
//! default) writes complete when they reach the host kernel and FLUSH
//! CACHE syncs; turned off by SET FEATURES 82h, every write syncs
//! before it completes.
//!
//! Left out: SMART, security, HPA (READ NATIVE MAX), the general purpose
//! log, TRIM, tagged queuing, 512e/4Kn sector sizes, power states
//! (standby is accepted and the drive stays active).

use super::channel::{
    default_geometry, Drive, Kind, Source, Xfer, DEV_LBA, ERR_ABRT, ERR_IDNF, ERR_UNC, ST_DRDY,
    ST_DRQ, ST_DSC,
};
use super::media::SECTOR_SIZE;

/// The most sectors per block READ/WRITE MULTIPLE accepts.
pub const MAX_MULTIPLE: u16 = 16;
/// The model string in IDENTIFY DEVICE.
pub const DISK_MODEL: &str = "ALCAZAR HARDDISK";
/// The firmware revision string.
pub const FIRMWARE: &str = "1.0";

/// How a read/write command addresses the disk.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Addr {
    /// 28-bit: LBA or CHS, 8-bit count.
    Short,
    /// 48-bit LBA, 16-bit count.
    Long,
}

impl Drive {
    /// Executes ATA command `cmd` (the channel handled EXECUTE DEVICE
    /// DIAGNOSTIC and cleared the previous transfer).
    pub fn execute(&mut self, cmd: u8) {
        if self.is_packet() {
            return self.execute_packet_device(cmd);
        }
        match cmd {
            0xec => {
                let id = self.identify_device();
                self.data_in(id);
            }
            0x20 | 0x21 => self.start_pio_read(Addr::Short, 1),
            0x24 => self.start_pio_read(Addr::Long, 1),
            0xc4 | 0x29 => match self.multiple {
                0 => self.fail(ERR_ABRT),
                m => self
                    .start_pio_read(if cmd == 0x29 { Addr::Long } else { Addr::Short }, m.into()),
            },
            0x30 | 0x31 => self.start_pio_write(Addr::Short, 1),
            0x34 => self.start_pio_write(Addr::Long, 1),
            0xc5 | 0x39 => match self.multiple {
                0 => self.fail(ERR_ABRT),
                m => self
                    .start_pio_write(if cmd == 0x39 { Addr::Long } else { Addr::Short }, m.into()),
            },
            0xc6 => {
                let n = u16::from(self.tf.nsect[0]);
                if n == 0 || (n <= MAX_MULTIPLE && n.is_power_of_two()) {
                    self.multiple = n;
                    self.complete(true);
                } else {
                    self.fail(ERR_ABRT);
                }
            }
            0xc8 | 0xc9 => self.start_dma(Addr::Short, true),
            0x25 => self.start_dma(Addr::Long, true),
            0xca | 0xcb => self.start_dma(Addr::Short, false),
            0x35 => self.start_dma(Addr::Long, false),
            0xe7 | 0xea => {
                self.stats.flushes += 1;
                match self.sync() {
                    Ok(()) => self.complete(true),
                    Err(e) => {
                        tracing::warn!("ide: flush failed: {e}");
                        self.fail(ERR_ABRT);
                    }
                }
            }
            0xef => self.set_features(),
            0x91 => {
                let spt = u16::from(self.tf.nsect[0]);
                if spt == 0 {
                    self.fail(ERR_ABRT);
                } else {
                    self.spt = spt;
                    self.heads = u16::from(self.tf.device & 0x0f) + 1;
                    self.complete(true);
                }
            }
            0x40 | 0x41 => self.verify(Addr::Short),
            0x42 => self.verify(Addr::Long),
            0x10..=0x1f => self.complete(true),
            0x70 => match self.address(Addr::Short) {
                Some((lba, _)) if lba < self.capacity() => self.complete(true),
                _ => self.fail(ERR_IDNF | ERR_ABRT),
            },
            0xe0..=0xe3 | 0xe6 | 0x94..=0x97 | 0x99 => self.complete(true),
            0xe5 | 0x98 => {
                self.complete(true);
                self.tf.nsect[0] = 0xff; // active or idle
            }
            _ => {
                tracing::debug!("ide: ATA command {cmd:#04x} not supported");
                self.fail(ERR_ABRT);
            }
        }
    }

    /// The ATA commands a packet device answers (ATA-6 §6.3.1).
    fn execute_packet_device(&mut self, cmd: u8) {
        match cmd {
            0xa0 => self.start_packet(),
            0xa1 => {
                let id = self.identify_packet_device();
                self.data_in(id);
            }
            0x08 => {
                // DEVICE RESET: no interrupt (ATA-6 §8.8).
                self.reset();
            }
            0xec => {
                // IDENTIFY DEVICE: abort and show the packet signature,
                // which is how hosts tell ATAPI devices apart (§8.15).
                self.fail(ERR_ABRT);
                self.tf.set_signature(true);
            }
            0xef => self.set_features(),
            0xe0..=0xe3 | 0xe6 | 0x94..=0x97 | 0x99 => self.packet_nondata_done(),
            0xe5 | 0x98 => {
                self.packet_nondata_done();
                self.tf.nsect[0] = 0xff;
            }
            _ => self.fail(ERR_ABRT),
        }
    }

    /// Completion of a non-data command on a packet device.
    fn packet_nondata_done(&mut self) {
        self.complete(true);
        self.status = ST_DRDY;
    }

    /// The disk's capacity in sectors.
    fn capacity(&self) -> u64 {
        match &self.kind {
            Kind::Disk(d) => d.sectors(),
            Kind::Cdrom(_) => 0,
        }
    }

    fn readonly(&self) -> bool {
        match &self.kind {
            Kind::Disk(d) => d.readonly(),
            Kind::Cdrom(_) => true,
        }
    }

    /// Syncs the image.
    pub fn sync(&self) -> std::io::Result<()> {
        match &self.kind {
            Kind::Disk(d) => d.sync(),
            Kind::Cdrom(_) => Ok(()),
        }
    }

    /// The first sector and sector count of the command, if it addresses
    /// a valid CHS sector (LBA is always valid here; range is checked by
    /// the caller).
    fn address(&self, addr: Addr) -> Option<(u64, u64)> {
        let tf = &self.tf;
        match addr {
            Addr::Long => Some((tf.lba48(), tf.count48())),
            Addr::Short if tf.device & DEV_LBA != 0 => Some((tf.lba28(), tf.count28())),
            Addr::Short => {
                let cyl = u64::from(u16::from_le_bytes([tf.lbam[0], tf.lbah[0]]));
                let head = u64::from(tf.device & 0x0f);
                let sector = u64::from(tf.lbal[0]);
                let (heads, spt) = (u64::from(self.heads), u64::from(self.spt));
                if sector == 0 || sector > spt || head >= heads {
                    return None;
                }
                Some(((cyl * heads + head) * spt + sector - 1, tf.count28()))
            }
        }
    }

    /// The command's range, if it lies inside the disk; otherwise the
    /// command fails with IDNF.
    fn checked_range(&mut self, addr: Addr) -> Option<(u64, u64)> {
        let cap = self.capacity();
        match self.address(addr) {
            Some((lba, count)) if lba.checked_add(count).is_some_and(|end| end <= cap) => {
                Some((lba, count))
            }
            _ => {
                self.fail(ERR_IDNF);
                None
            }
        }
    }

    fn start_pio_read(&mut self, addr: Addr, block: u64) {
        if let Some((lba, count)) = self.checked_range(addr) {
            self.load_read_block(lba, count, block);
        }
    }

    /// Loads up to `block` sectors at `lba` into the PIO buffer and
    /// raises DRQ and INTRQ; `remaining` counts them.
    pub fn load_read_block(&mut self, lba: u64, remaining: u64, block: u64) {
        let n = remaining.min(block);
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        buf.resize((n * SECTOR_SIZE) as usize, 0);
        let read = self.image_read(&mut buf, lba * SECTOR_SIZE);
        self.buf = buf;
        if let Err(e) = read {
            tracing::warn!("ide: disk read at sector {lba} failed: {e}");
            self.fail(ERR_UNC | ERR_ABRT);
            return;
        }
        self.stats.blocks_read += n;
        self.pos = 0;
        self.xfer = Xfer::ReadPio {
            lba: lba + n,
            remaining: remaining - n,
            block,
        };
        self.status = ST_DRDY | ST_DSC | ST_DRQ;
        self.error = 0;
        self.raise = true;
    }

    fn start_pio_write(&mut self, addr: Addr, block: u64) {
        if self.readonly() {
            return self.fail(ERR_ABRT);
        }
        if let Some((lba, count)) = self.checked_range(addr) {
            // The first block is requested without an interrupt
            // (ATA-6 §9.8).
            self.expect_write_block(lba, count, block);
        }
    }

    /// Raises DRQ for the block of `remaining` sectors starting at `lba`.
    fn expect_write_block(&mut self, lba: u64, remaining: u64, block: u64) {
        let n = remaining.min(block);
        self.buf.clear();
        self.buf.resize((n * SECTOR_SIZE) as usize, 0);
        self.pos = 0;
        self.xfer = Xfer::WritePio {
            lba,
            remaining: remaining - n,
            block,
        };
        self.status = ST_DRDY | ST_DSC | ST_DRQ;
        self.error = 0;
    }

    /// The host filled the PIO buffer for `lba`: write it, then ask for
    /// the next block or complete; either way INTRQ.
    pub fn store_write_block(&mut self, lba: u64, remaining: u64, block: u64) {
        let n = self.buf.len() as u64 / SECTOR_SIZE;
        if let Err(e) = self.image_write(&self.buf, lba * SECTOR_SIZE) {
            tracing::warn!("ide: disk write at sector {lba} failed: {e}");
            return self.fail(ERR_ABRT);
        }
        self.stats.blocks_written += n;
        if remaining > 0 {
            self.expect_write_block(lba + n, remaining, block);
            self.raise = true;
            return;
        }
        if !self.write_cache {
            if let Err(e) = self.sync() {
                tracing::warn!("ide: write-through sync failed: {e}");
                return self.fail(ERR_ABRT);
            }
        }
        self.complete(true);
    }

    fn start_dma(&mut self, addr: Addr, to_guest: bool) {
        if !to_guest && self.readonly() {
            return self.fail(ERR_ABRT);
        }
        let Some((lba, count)) = self.checked_range(addr) else {
            return;
        };
        if to_guest {
            self.stats.blocks_read += count;
        } else {
            self.stats.blocks_written += count;
        }
        self.xfer = Xfer::Dma {
            to_guest,
            source: Source::Image {
                offset: lba * SECTOR_SIZE,
            },
            remaining: count * SECTOR_SIZE,
            packet: false,
            sync: !to_guest && !self.write_cache,
        };
        self.status = ST_DRDY | ST_DSC | ST_DRQ;
        self.error = 0;
    }

    /// The bus master finished (or gave up on) the DMA transfer.
    pub fn dma_done(&mut self, ok: bool) {
        let (packet, sync, left) = match &self.xfer {
            Xfer::Dma {
                packet,
                sync,
                remaining,
                ..
            } => (*packet, *sync, *remaining),
            _ => return,
        };
        let ok = ok && left == 0;
        if packet {
            if ok {
                self.packet_complete();
            } else {
                self.atapi_aborted();
            }
            return;
        }
        if !ok {
            return self.fail(ERR_ABRT);
        }
        if sync {
            if let Err(e) = self.sync() {
                tracing::warn!("ide: write-through sync failed: {e}");
                return self.fail(ERR_ABRT);
            }
        }
        self.complete(true);
    }

    fn verify(&mut self, addr: Addr) {
        if self.checked_range(addr).is_some() {
            self.complete(true);
        }
    }

    fn set_features(&mut self) {
        let ok = match self.tf.feature[0] {
            0x02 => {
                self.write_cache = true;
                true
            }
            0x82 => {
                // Turning the cache off first writes back what it holds.
                self.write_cache = false;
                self.sync().is_ok()
            }
            0x03 => {
                let mode = self.tf.nsect[0];
                let valid = matches!(mode, 0x00 | 0x01 | 0x08..=0x0c | 0x20..=0x22 | 0x40..=0x45);
                if valid {
                    self.xfer_mode = mode;
                }
                valid
            }
            0xaa | 0x55 | 0x66 | 0xcc => true,
            _ => false,
        };
        if !ok {
            return self.fail(ERR_ABRT);
        }
        if self.is_packet() {
            self.packet_nondata_done();
        } else {
            self.complete(true);
        }
    }

    /// Words 63 and 88 with the selected mode marked.
    fn dma_words(&self) -> (u16, u16) {
        let mut mw = 0x0007;
        let mut udma = 0x003f;
        match self.xfer_mode {
            m @ 0x20..=0x22 => mw |= 1 << (8 + (m & 7)),
            m @ 0x40..=0x45 => udma |= 1 << (8 + (m & 7)),
            _ => {}
        }
        (mw, udma)
    }

    /// The IDENTIFY DEVICE data (ATA-6 §8.15, Table 16).
    pub fn identify_device(&self) -> Vec<u8> {
        let mut w = [0u16; 256];
        let sectors = self.capacity();
        let (cyl, heads, spt) = default_geometry(sectors);
        w[0] = 0x0040; // fixed device
        w[1] = cyl;
        w[3] = heads;
        w[6] = spt;
        put_string(&mut w[10..20], &self.serial);
        put_string(&mut w[23..27], FIRMWARE);
        put_string(&mut w[27..47], DISK_MODEL);
        w[47] = 0x8000 | MAX_MULTIPLE;
        w[49] = (1 << 11) | (1 << 9) | (1 << 8); // IORDY, LBA, DMA
        w[50] = 0x4000;
        w[51] = 0x0200;
        w[53] = 0x0007; // words 54-58, 64-70 and 88 valid
        let cur_cyl =
            (sectors / (u64::from(self.heads) * u64::from(self.spt)).max(1)).clamp(1, 65535) as u16;
        w[54] = cur_cyl;
        w[55] = self.heads;
        w[56] = self.spt;
        let chs = u32::from(cur_cyl) * u32::from(self.heads) * u32::from(self.spt);
        w[57] = chs as u16;
        w[58] = (chs >> 16) as u16;
        if self.multiple != 0 {
            w[59] = 0x0100 | self.multiple;
        }
        let lba28 = sectors.min(0x0fff_ffff) as u32;
        w[60] = lba28 as u16;
        w[61] = (lba28 >> 16) as u16;
        let (mw, udma) = self.dma_words();
        w[63] = mw;
        w[64] = 0x0003; // PIO 3 and 4
        w[65] = 120;
        w[66] = 120;
        w[67] = 120;
        w[68] = 120;
        w[80] = 0x00f0; // ATA/ATAPI-4 to -7
                        // Power management (3), write cache (5), look-ahead (6).
        w[82] = (1 << 3) | (1 << 5) | (1 << 6);
        // FLUSH CACHE EXT (13), FLUSH CACHE (12), 48-bit (10).
        w[83] = 0x4000 | (1 << 13) | (1 << 12) | (1 << 10);
        w[84] = 0x4000;
        w[85] = (1 << 3) | (1 << 6) | if self.write_cache { 1 << 5 } else { 0 };
        w[86] = (1 << 13) | (1 << 12) | (1 << 10);
        w[87] = 0x4000;
        w[88] = udma;
        w[93] = 0x4001;
        w[100] = sectors as u16;
        w[101] = (sectors >> 16) as u16;
        w[102] = (sectors >> 32) as u16;
        w[103] = (sectors >> 48) as u16;
        w[106] = 0x4000;
        finish(w)
    }

    /// The IDENTIFY PACKET DEVICE data (ATA-6 §8.16, Table 20).
    pub fn identify_packet_device(&self) -> Vec<u8> {
        let mut w = [0u16; 256];
        // ATAPI, CD-ROM device type (05h), removable, accelerated DRQ
        // (50 µs, no interrupt for the packet), 12-byte packets.
        w[0] = 0x8000 | (0x05 << 8) | 0x80 | (2 << 5);
        put_string(&mut w[10..20], &self.serial);
        put_string(&mut w[23..27], FIRMWARE);
        put_string(&mut w[27..47], super::atapi::CD_MODEL);
        w[49] = (1 << 11) | (1 << 9) | (1 << 8);
        w[50] = 0x4000;
        w[53] = 0x0006;
        let (mw, udma) = self.dma_words();
        w[63] = mw;
        w[64] = 0x0003;
        w[65] = 120;
        w[66] = 120;
        w[67] = 120;
        w[68] = 120;
        w[80] = 0x0070; // ATAPI-4 to -6
                        // DEVICE RESET (9), PACKET (4), power management (3).
        w[82] = (1 << 9) | (1 << 4) | (1 << 3);
        w[83] = 0x4000;
        w[84] = 0x4000;
        w[85] = w[82];
        w[87] = 0x4000;
        w[88] = udma;
        w[93] = 0x4001;
        finish(w)
    }
}

/// Puts `s` in ATA string order (two characters per word, the first in
/// the high byte), padded with spaces.
fn put_string(words: &mut [u16], s: &str) {
    let mut bytes = s.bytes().chain(std::iter::repeat(b' '));
    for w in words {
        let hi = bytes.next().unwrap_or(b' ');
        let lo = bytes.next().unwrap_or(b' ');
        *w = u16::from_be_bytes([hi, lo]);
    }
}

/// The little-endian bytes of `w` with the integrity word (255): A5h and
/// a checksum making all 512 bytes sum to zero (ATA-6 §8.15.61).
fn finish(mut w: [u16; 256]) -> Vec<u8> {
    w[255] = 0x00a5;
    let mut out: Vec<u8> = w.iter().flat_map(|x| x.to_le_bytes()).collect();
    let sum = out[..511].iter().fold(0u8, |a, &b| a.wrapping_add(b));
    out[511] = sum.wrapping_neg();
    out
}

#[cfg(test)]
mod tests {
    use super::super::channel::{Block, CTL_HOB, ERR_IDNF, ST_ERR};
    use super::super::media::tests::TempImage;
    use super::super::tests::*;
    use super::*;

    fn word(id: &[u8], i: usize) -> u16 {
        u16::from_le_bytes([id[2 * i], id[2 * i + 1]])
    }

    fn string(id: &[u8], words: std::ops::Range<usize>) -> String {
        words
            .flat_map(|i| word(id, i).to_be_bytes())
            .map(char::from)
            .collect::<String>()
            .trim_end()
            .to_string()
    }

    #[test]
    fn identify_reports_model_capacity_and_feature_words() {
        let img = TempImage::new("identify", &vec![0u8; 300 * 512]);
        let (mut ide, irq) = controller_with_disk(&img, false);
        select(&mut ide, 0, 0);
        outb(&mut ide, 0x1f7, 0xec);
        assert_eq!(irq.rises(), 1);
        assert_eq!(inb(&mut ide, 0x1f7) & (ST_DRQ | ST_ERR), ST_DRQ);
        let id = read_data(&mut ide, 0x1f0, 512);
        assert_eq!(string(&id, 27..47), DISK_MODEL);
        assert_eq!(word(&id, 0) & 0x8000, 0);
        assert_ne!(word(&id, 49) & (1 << 9), 0, "LBA");
        assert_ne!(word(&id, 83) & (1 << 10), 0, "48-bit supported");
        assert_ne!(word(&id, 86) & (1 << 10), 0, "48-bit enabled");
        assert_ne!(word(&id, 83) & (1 << 13), 0, "FLUSH CACHE EXT");
        assert_eq!(word(&id, 83) >> 14, 1);
        assert_eq!(
            u32::from(word(&id, 60)) | u32::from(word(&id, 61)) << 16,
            300
        );
        let lba48 = (0..4).fold(0u64, |a, i| a | u64::from(word(&id, 100 + i)) << (16 * i));
        assert_eq!(lba48, 300);
        assert_eq!(id[510], 0xa5);
        assert_eq!(id.iter().fold(0u8, |a, &b| a.wrapping_add(b)), 0);
        // The data phase is over: no DRQ, no error.
        assert_eq!(inb(&mut ide, 0x1f7), ST_DRDY | ST_DSC);
    }

    #[test]
    fn pio_sectors_round_trip_through_the_image() {
        let img = TempImage::new("pio", &vec![0u8; 64 * 512]);
        let (mut ide, irq) = controller_with_disk(&img, false);
        let pattern: Vec<u8> = (0..1024u32).map(|i| (i * 7 + 3) as u8).collect();
        // WRITE SECTORS, 2 sectors at LBA 5.
        set_lba28(&mut ide, 5, 2);
        outb(&mut ide, 0x1f7, 0x30);
        assert_eq!(irq.rises(), 0, "no interrupt before the first block");
        write_data(&mut ide, 0x1f0, &pattern[..512]);
        assert_eq!(irq.rises(), 1);
        assert_ne!(inb(&mut ide, 0x1f7) & ST_DRQ, 0);
        write_data(&mut ide, 0x1f0, &pattern[512..]);
        assert_eq!(irq.rises(), 2);
        assert_eq!(inb(&mut ide, 0x1f7), ST_DRDY | ST_DSC);
        let file = std::fs::read(&img.0).unwrap();
        assert_eq!(&file[5 * 512..7 * 512], &pattern[..]);
        // READ SECTORS gives them back, one interrupt per sector.
        set_lba28(&mut ide, 5, 2);
        outb(&mut ide, 0x1f7, 0x20);
        let back = read_data(&mut ide, 0x1f0, 1024);
        assert_eq!(back, pattern);
        assert_eq!(irq.rises(), 4);
        // READ MULTIPLE is refused until SET MULTIPLE MODE.
        outb(&mut ide, 0x1f7, 0xc4);
        assert_eq!(inb(&mut ide, 0x1f1), ERR_ABRT);
        outb(&mut ide, 0x1f2, 4);
        outb(&mut ide, 0x1f7, 0xc6);
        assert_eq!(inb(&mut ide, 0x1f7) & ST_ERR, 0);
        set_lba28(&mut ide, 5, 2);
        outb(&mut ide, 0x1f7, 0xc4);
        let before = irq.rises();
        assert_eq!(read_data(&mut ide, 0x1f0, 1024), pattern);
        assert_eq!(irq.rises(), before, "one block, one interrupt");
        // FLUSH CACHE.
        outb(&mut ide, 0x1f7, 0xe7);
        assert_eq!(inb(&mut ide, 0x1f7), ST_DRDY | ST_DSC);
        assert_eq!(ide.channel(0).drives[0].as_ref().unwrap().stats.flushes, 1);
    }

    #[test]
    fn lba48_uses_the_previous_register_contents() {
        let img = TempImage::new("lba48", &vec![0u8; 40 * 512]);
        let (mut ide, _) = controller_with_disk(&img, false);
        let mut data = vec![0u8; 40 * 512];
        data[33 * 512..34 * 512].fill(0x5a);
        std::fs::write(&img.0, &data).unwrap();
        select(&mut ide, 0, DEV_LBA);
        // Count 0x0001 and LBA 33: high bytes first.
        for (reg, hi, lo) in [(2, 0, 1), (3, 0, 33), (4, 0, 0), (5, 0, 0)] {
            outb(&mut ide, 0x1f0 + reg, hi);
            outb(&mut ide, 0x1f0 + reg, lo);
        }
        outb(&mut ide, 0x3f6, CTL_HOB);
        assert_eq!(inb(&mut ide, 0x1f3), 0, "HOB shows the previous value");
        outb(&mut ide, 0x3f6, 0);
        assert_eq!(inb(&mut ide, 0x1f3), 33);
        outb(&mut ide, 0x1f7, 0x24);
        assert_eq!(read_data(&mut ide, 0x1f0, 512), vec![0x5a; 512]);
        // A high byte that puts the range past the end is IDNF.
        outb(&mut ide, 0x1f3, 1); // previous LBA low: bit 24
        outb(&mut ide, 0x1f3, 0);
        outb(&mut ide, 0x1f7, 0x24);
        assert_ne!(inb(&mut ide, 0x1f7) & ST_ERR, 0);
        assert_eq!(inb(&mut ide, 0x1f1), ERR_IDNF);
        // A 28-bit range past the end too, and no data is offered.
        set_lba28(&mut ide, 39, 2);
        outb(&mut ide, 0x1f7, 0x20);
        assert_eq!(inb(&mut ide, 0x1f7) & (ST_ERR | ST_DRQ), ST_ERR);
    }

    #[test]
    fn read_only_disks_refuse_writes() {
        let img = TempImage::new("ro", &vec![0u8; 8 * 512]);
        let (mut ide, _) = controller_with_disk(&img, true);
        set_lba28(&mut ide, 0, 1);
        outb(&mut ide, 0x1f7, 0x30);
        assert_eq!(inb(&mut ide, 0x1f7) & (ST_ERR | ST_DRQ), ST_ERR);
        assert_eq!(inb(&mut ide, 0x1f1), ERR_ABRT);
        outb(&mut ide, 0x1f7, 0xca);
        assert_eq!(inb(&mut ide, 0x1f1), ERR_ABRT);
        assert!(std::fs::read(&img.0).unwrap().iter().all(|&b| b == 0));
    }

    #[test]
    fn chs_addressing_follows_initialize_device_parameters() {
        let img = TempImage::new("chs", &vec![0u8; 100 * 512]);
        let (mut ide, _) = controller_with_disk(&img, false);
        let mut data = vec![0u8; 100 * 512];
        // 4 heads, 10 sectors per track: C0 H1 S3 is LBA 12.
        data[12 * 512] = 0xc3;
        std::fs::write(&img.0, &data).unwrap();
        outb(&mut ide, 0x1f6, 0xa0 | 3);
        outb(&mut ide, 0x1f2, 10);
        outb(&mut ide, 0x1f7, 0x91);
        assert_eq!(inb(&mut ide, 0x1f7) & ST_ERR, 0);
        outb(&mut ide, 0x1f6, 0xa0 | 1);
        for (port, v) in [(0x1f2, 1), (0x1f3, 3), (0x1f4, 0), (0x1f5, 0)] {
            outb(&mut ide, port, v);
        }
        outb(&mut ide, 0x1f7, 0x20);
        assert_eq!(read_data(&mut ide, 0x1f0, 512)[0], 0xc3);
        // Sector 0 does not exist.
        outb(&mut ide, 0x1f3, 0);
        outb(&mut ide, 0x1f7, 0x20);
        assert_eq!(inb(&mut ide, 0x1f1), ERR_IDNF);
    }

    #[test]
    fn unknown_commands_abort_and_control_reads_do_not_ack() {
        let img = TempImage::new("unknown", &vec![0u8; 8 * 512]);
        let (mut ide, irq) = controller_with_disk(&img, false);
        outb(&mut ide, 0x1f7, 0x00); // NOP aborts
        assert_eq!(inb(&mut ide, 0x3f6), ST_DRDY | ST_ERR);
        assert!(irq.level());
        assert_eq!(inb(&mut ide, 0x1f1), ERR_ABRT);
        assert!(irq.level(), "alternate status does not acknowledge");
        inb(&mut ide, 0x1f7);
        assert!(!irq.level());
        // nIEN masks the line.
        outb(&mut ide, 0x3f6, 0x02);
        outb(&mut ide, 0x1f7, 0xb0);
        assert!(!irq.level());
        // Check power mode answers "active".
        outb(&mut ide, 0x1f7, 0xe5);
        assert_eq!(inb(&mut ide, 0x1f2), 0xff);
        // SET FEATURES transfer mode: MWDMA2 shows in word 63.
        outb(&mut ide, 0x1f1, 0x03);
        outb(&mut ide, 0x1f2, 0x22);
        outb(&mut ide, 0x1f7, 0xef);
        assert_eq!(inb(&mut ide, 0x1f7) & ST_ERR, 0);
        outb(&mut ide, 0x1f7, 0xec);
        let id = read_data(&mut ide, 0x1f0, 512);
        assert_eq!(word(&id, 63), 0x0407);
        let ch = ide.channel(0);
        assert!(ch.drives[1].is_none());
        let _ = Block::Command;
    }
}
