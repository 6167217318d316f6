//! The ATAPI CD/DVD-ROM drive: the PACKET protocol (ATA/ATAPI-6 §9.10
//! and §9.11) and the MMC-5 / SPC-3 commands that SeaBIOS, GRUB and
//! Linux's `sr` driver send.
//!
//! **Protocol.** PACKET (0xA0) raises DRQ with Interrupt Reason C/D=1,
//! I/O=0 and no interrupt (IDENTIFY PACKET DEVICE word 0 announces the
//! accelerated-DRQ timing). The host writes the 12-byte command packet;
//! then, for a command with data, the drive sends it in PIO chunks of at
//! most the byte count limit the host put in LBA Mid/High (rounded down
//! to even unless it is the last chunk; 0 means 0xFFFE), each with DRQ,
//! I/O=1 C/D=0, the chunk size in LBA Mid/High and an interrupt; or,
//! when Features bit 0 (DMA) was set, through the bus master. Completion
//! is status DRDY (ERR on CHECK CONDITION, with the sense key in Error
//! bits 7:4 and ABRT), I/O=1 C/D=1, and an interrupt.
//!
//! **Commands** (MMC-5 §6, SPC-3 §6): TEST UNIT READY, REQUEST SENSE
//! (fixed format), INQUIRY (standard data, peripheral type 05h),
//! READ CAPACITY(10), READ(10), READ(12), SEEK(10), MODE SENSE(6/10)
//! (pages 01h read error recovery, 0Dh CD parameters, 2Ah capabilities,
//! 3Fh all), READ TOC/PMA/ATIP (format 0 TOC and 1 session info, LBA or
//! MSF), GET CONFIGURATION (profile list with CD-ROM and DVD-ROM, core,
//! morphing, removable medium, random readable, CD read, DVD read),
//! GET EVENT STATUS NOTIFICATION (polled, media class), READ DISC
//! INFORMATION, PREVENT ALLOW MEDIUM REMOVAL, START STOP UNIT (eject and
//! load the tray), MECHANISM STATUS, SET CD SPEED. Writes are refused
//! with DATA PROTECT/WRITE PROTECTED; anything else is ILLEGAL
//! REQUEST/INVALID COMMAND OPERATION CODE.
//!
//! **Media.** A disc is an ISO image; the tray may be empty. Commands
//! that need the medium then end with NOT READY/MEDIUM NOT PRESENT.
//! Inserting a disc ([`Cdrom::change_media`]) or closing the tray sets a
//! UNIT ATTENTION (28h NOT READY TO READY CHANGE, MEDIUM MAY HAVE
//! CHANGED) that the next command other than INQUIRY, REQUEST SENSE,
//! GET CONFIGURATION and GET EVENT STATUS NOTIFICATION reports (and
//! clears), and a media event for GET EVENT STATUS NOTIFICATION. The
//! current profile is CD-ROM for images up to 800 MiB, DVD-ROM above.
//!
//! Left out: audio (PLAY, READ CD, READ SUB-CHANNEL), raw TOC formats,
//! READ DISC STRUCTURE and other DVD specifics, MODE SELECT, write
//! profiles, multi-session discs, the power-on unit attention.

use alcazar_core::inspect::Tree;

use super::channel::{Drive, Kind, Source, Xfer, ERR_ABRT, IR_COD, IR_IO, ST_DRDY, ST_DRQ, ST_ERR};
use super::media::{CdImage, CD_BLOCK_SIZE};

/// The model string in IDENTIFY PACKET DEVICE and INQUIRY.
pub const CD_MODEL: &str = "ALCAZAR DVD-ROM";

/// Images larger than this many blocks are DVDs (800 MiB).
const CD_MAX_BLOCKS: u64 = 800 * 1024 * 1024 / CD_BLOCK_SIZE;

/// A sense key with its additional sense code and qualifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sense {
    /// Sense key (SPC-3 Table 27).
    pub key: u8,
    /// Additional sense code.
    pub asc: u8,
    /// Additional sense code qualifier.
    pub ascq: u8,
}

impl Sense {
    /// No sense.
    pub const NONE: Sense = Sense::new(0x00, 0x00, 0x00);
    /// NOT READY, MEDIUM NOT PRESENT (tray closed).
    pub const NO_MEDIUM: Sense = Sense::new(0x02, 0x3a, 0x01);
    /// NOT READY, MEDIUM NOT PRESENT (tray open).
    pub const TRAY_OPEN: Sense = Sense::new(0x02, 0x3a, 0x02);
    /// MEDIUM ERROR, UNRECOVERED READ ERROR.
    pub const READ_ERROR: Sense = Sense::new(0x03, 0x11, 0x00);
    /// ILLEGAL REQUEST, INVALID COMMAND OPERATION CODE.
    pub const INVALID_OPCODE: Sense = Sense::new(0x05, 0x20, 0x00);
    /// ILLEGAL REQUEST, LOGICAL BLOCK ADDRESS OUT OF RANGE.
    pub const LBA_OUT_OF_RANGE: Sense = Sense::new(0x05, 0x21, 0x00);
    /// ILLEGAL REQUEST, INVALID FIELD IN CDB.
    pub const INVALID_FIELD: Sense = Sense::new(0x05, 0x24, 0x00);
    /// ILLEGAL REQUEST, SAVING PARAMETERS NOT SUPPORTED.
    pub const NO_SAVING: Sense = Sense::new(0x05, 0x39, 0x00);
    /// ILLEGAL REQUEST, MEDIUM REMOVAL PREVENTED.
    pub const REMOVAL_PREVENTED: Sense = Sense::new(0x05, 0x53, 0x02);
    /// UNIT ATTENTION, NOT READY TO READY CHANGE, MEDIUM MAY HAVE CHANGED.
    pub const MEDIUM_CHANGED: Sense = Sense::new(0x06, 0x28, 0x00);
    /// DATA PROTECT, WRITE PROTECTED.
    pub const WRITE_PROTECTED: Sense = Sense::new(0x07, 0x27, 0x00);
    /// ABORTED COMMAND (a failed DMA).
    pub const ABORTED: Sense = Sense::new(0x0b, 0x00, 0x00);

    const fn new(key: u8, asc: u8, ascq: u8) -> Self {
        Sense { key, asc, ascq }
    }

    /// Fixed-format sense data (SPC-3 §4.5.3), 18 bytes.
    fn bytes(self) -> Vec<u8> {
        let mut s = vec![0u8; 18];
        s[0] = 0x70;
        s[2] = self.key;
        s[7] = 10;
        s[12] = self.asc;
        s[13] = self.ascq;
        s
    }
}

/// What a command produces.
enum Reply {
    /// Status only.
    Done,
    /// These bytes to the host.
    Data(Vec<u8>),
    /// `len` bytes of the disc from byte `offset`.
    Read { offset: u64, len: u64 },
}

// Media event codes (MMC-5 Table 326).
const EVENT_NONE: u8 = 0;
const EVENT_NEW_MEDIA: u8 = 2;
const EVENT_MEDIA_REMOVAL: u8 = 3;

/// The CD-ROM drive's own state.
#[derive(Debug, Default)]
pub struct Cdrom {
    image: Option<CdImage>,
    tray_open: bool,
    prevent: bool,
    unit_attention: bool,
    sense: Sense,
    media_event: u8,
    /// The PACKET command asked for DMA.
    dma: bool,
    ejects: u64,
    media_changes: u64,
}

impl Default for Sense {
    fn default() -> Self {
        Sense::NONE
    }
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// LBA to MSF (MMC-5 §6.26.3.1): 150 frames of lead-in, 75 frames per
/// second. Large LBAs saturate minutes at 255.
fn msf(lba: u64) -> [u8; 4] {
    let f = lba + 150;
    let m = (f / (75 * 60)).min(255) as u8;
    [0, m, ((f / 75) % 60) as u8, (f % 75) as u8]
}

impl Cdrom {
    /// A drive holding `image` (or empty).
    pub fn new(image: Option<CdImage>) -> Self {
        Cdrom {
            image,
            ..Cdrom::default()
        }
    }

    /// The disc, if one is in the closed tray.
    pub fn image(&self) -> Option<&CdImage> {
        self.image.as_ref().filter(|_| !self.tray_open)
    }

    /// Inserts a disc (closing the tray) or removes it. An inserted disc
    /// raises UNIT ATTENTION; the guest's lock (PREVENT MEDIUM REMOVAL)
    /// is overridden, as by a user pulling the disc out.
    pub fn change_media(&mut self, image: Option<CdImage>) {
        self.media_changes += 1;
        match image {
            Some(image) => {
                self.image = Some(image);
                self.tray_open = false;
                self.unit_attention = true;
                self.media_event = EVENT_NEW_MEDIA;
            }
            None => {
                self.image = None;
                self.unit_attention = false;
                self.media_event = EVENT_MEDIA_REMOVAL;
            }
        }
    }

    pub(super) fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        match self.image() {
            Some(i) => i.read_at(buf, offset),
            None => Err(std::io::ErrorKind::NotFound.into()),
        }
    }

    pub(super) fn inspect_into(&self, t: &mut Tree) {
        match self.image() {
            Some(i) => t
                .value("disc", i.path().display())
                .value("blocks", i.blocks()),
            None => t.value("disc", "none"),
        };
        t.value("tray_open", self.tray_open)
            .value("prevent_removal", self.prevent)
            .value("unit_attention", self.unit_attention)
            .hex("sense_key", self.sense.key.into(), 2)
            .hex("asc", self.sense.asc.into(), 2)
            .hex("ascq", self.sense.ascq.into(), 2)
            .value("ejects", self.ejects)
            .value("media_changes", self.media_changes);
    }

    fn ready(&self) -> Result<&CdImage, Sense> {
        match (&self.image, self.tray_open) {
            (_, true) => Err(Sense::TRAY_OPEN),
            (None, false) => Err(Sense::NO_MEDIUM),
            (Some(i), false) => Ok(i),
        }
    }

    fn profile(&self) -> u16 {
        match self.image() {
            None => 0,
            Some(i) if i.blocks() > CD_MAX_BLOCKS => 0x0010,
            Some(_) => 0x0008,
        }
    }

    /// Executes one command packet.
    fn command(&mut self, cdb: &[u8; 12]) -> Result<Reply, Sense> {
        let op = cdb[0];
        if op != 0x03 {
            self.sense = Sense::NONE;
        }
        let exempt = matches!(op, 0x12 | 0x03 | 0x46 | 0x4a);
        if self.unit_attention && !exempt {
            self.unit_attention = false;
            return Err(Sense::MEDIUM_CHANGED);
        }
        match op {
            0x00 => self.ready().map(|_| Reply::Done),
            0x03 => {
                let sense = if self.unit_attention {
                    self.unit_attention = false;
                    Sense::MEDIUM_CHANGED
                } else {
                    self.sense
                };
                self.sense = Sense::NONE;
                Ok(truncated(sense.bytes(), cdb[4].into()))
            }
            0x12 => self.inquiry(cdb),
            0x1a | 0x5a => self.mode_sense(cdb),
            0x1b => self.start_stop(cdb),
            0x1e => {
                self.prevent = cdb[4] & 1 != 0;
                Ok(Reply::Done)
            }
            0x25 => {
                let i = self.ready()?;
                let last = i.blocks().saturating_sub(1).min(u32::MAX.into()) as u32;
                let mut d = last.to_be_bytes().to_vec();
                d.extend_from_slice(&(CD_BLOCK_SIZE as u32).to_be_bytes());
                Ok(Reply::Data(d))
            }
            0x28 => self.read(be32(&cdb[2..6]).into(), be16(&cdb[7..9]).into()),
            0xa8 => self.read(be32(&cdb[2..6]).into(), be32(&cdb[6..10]).into()),
            0x2b => {
                let i = self.ready()?;
                if u64::from(be32(&cdb[2..6])) >= i.blocks() {
                    return Err(Sense::LBA_OUT_OF_RANGE);
                }
                Ok(Reply::Done)
            }
            0x2a | 0xaa | 0x2e => {
                self.ready()?;
                Err(Sense::WRITE_PROTECTED)
            }
            0x43 => self.read_toc(cdb),
            0x46 => Ok(truncated(self.configuration(cdb)?, be16(&cdb[7..9]).into())),
            0x4a => self.event_status(cdb),
            0x51 => self.disc_information(cdb),
            0xbd => {
                let mut d = vec![0u8; 8];
                if self.tray_open {
                    d[1] = 0x10;
                }
                Ok(truncated(d, be16(&cdb[8..10]).into()))
            }
            0xbb => Ok(Reply::Done),
            _ => {
                tracing::debug!("ide: ATAPI command {op:#04x} not supported");
                Err(Sense::INVALID_OPCODE)
            }
        }
    }

    fn read(&mut self, lba: u64, blocks: u64) -> Result<Reply, Sense> {
        let i = self.ready()?;
        if lba.saturating_add(blocks) > i.blocks() {
            return Err(Sense::LBA_OUT_OF_RANGE);
        }
        if blocks == 0 {
            return Ok(Reply::Done);
        }
        Ok(Reply::Read {
            offset: lba * CD_BLOCK_SIZE,
            len: blocks * CD_BLOCK_SIZE,
        })
    }

    fn inquiry(&self, cdb: &[u8; 12]) -> Result<Reply, Sense> {
        if cdb[1] & 1 != 0 {
            // No vital product data pages.
            return Err(Sense::INVALID_FIELD);
        }
        let mut d = vec![0u8; 36];
        d[0] = 0x05; // CD/DVD device
        d[1] = 0x80; // removable
        d[2] = 0x05; // SPC-3
        d[3] = 0x32; // ATAPI transport, response data format 2
        d[4] = 31;
        d[8..16].copy_from_slice(b"ALCAZAR ");
        let mut product = [b' '; 16];
        product[..7].copy_from_slice(b"DVD-ROM");
        d[16..32].copy_from_slice(&product);
        d[32..36].copy_from_slice(b"1.0 ");
        Ok(truncated(d, be16(&cdb[3..5]).into()))
    }

    fn mode_page(&self, page: u8, changeable: bool) -> Option<Vec<u8>> {
        let mut p = match page {
            0x01 => vec![0x01, 0x0a, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0],
            0x0d => vec![0x0d, 0x06, 0, 0, 0, 60, 0, 75],
            0x2a => {
                let mut p = vec![0u8; 22];
                p[0] = 0x2a;
                p[1] = 0x14;
                p[2] = 0x0f; // reads CD-R, CD-RW, method 2, DVD-ROM
                p[4] = 0x70; // mode 2 form 1/2, multi-session
                p[5] = 0x00;
                // Lock, lock state, eject, tray loading mechanism.
                p[6] = 0x29 | if self.prevent { 0x02 } else { 0 };
                p[8..10].copy_from_slice(&706u16.to_be_bytes());
                p[12..14].copy_from_slice(&512u16.to_be_bytes());
                p[14..16].copy_from_slice(&706u16.to_be_bytes());
                p
            }
            _ => return None,
        };
        if changeable {
            p[2..].fill(0);
        }
        Some(p)
    }

    fn mode_sense(&self, cdb: &[u8; 12]) -> Result<Reply, Sense> {
        let ten = cdb[0] == 0x5a;
        let control = cdb[2] >> 6;
        let page = cdb[2] & 0x3f;
        if control == 3 {
            return Err(Sense::NO_SAVING);
        }
        let mut pages = Vec::new();
        if page == 0x3f {
            for p in [0x01, 0x0d, 0x2a] {
                pages.extend(self.mode_page(p, control == 1).unwrap_or_default());
            }
        } else {
            pages = self
                .mode_page(page, control == 1)
                .ok_or(Sense::INVALID_FIELD)?;
        }
        let (mut d, alloc) = if ten {
            let len = (pages.len() + 6) as u16;
            let mut h = vec![0u8; 8];
            h[0..2].copy_from_slice(&len.to_be_bytes());
            (h, usize::from(be16(&cdb[7..9])))
        } else {
            (vec![(pages.len() + 3) as u8, 0, 0, 0], usize::from(cdb[4]))
        };
        d.extend(pages);
        Ok(truncated(d, alloc))
    }

    fn start_stop(&mut self, cdb: &[u8; 12]) -> Result<Reply, Sense> {
        let start = cdb[4] & 1 != 0;
        let load_eject = cdb[4] & 2 != 0;
        if !load_eject {
            return Ok(Reply::Done);
        }
        if start {
            if self.tray_open {
                self.tray_open = false;
                if self.image.is_some() {
                    self.unit_attention = true;
                    self.media_event = EVENT_NEW_MEDIA;
                }
            }
        } else {
            if self.prevent {
                return Err(Sense::REMOVAL_PREVENTED);
            }
            if !self.tray_open {
                self.tray_open = true;
                self.ejects += 1;
                self.media_event = EVENT_MEDIA_REMOVAL;
            }
        }
        Ok(Reply::Done)
    }

    fn read_toc(&self, cdb: &[u8; 12]) -> Result<Reply, Sense> {
        let i = self.ready()?;
        let time = cdb[1] & 2 != 0;
        let format = match cdb[2] & 0x0f {
            0 => cdb[9] >> 6, // the older location of the format
            f => f,
        };
        let track = cdb[6];
        let addr = |lba: u64| {
            if time {
                msf(lba)
            } else {
                (lba.min(u32::MAX.into()) as u32).to_be_bytes()
            }
        };
        let descriptor = |number: u8, lba: u64| {
            let mut d = vec![0, 0x14, number, 0];
            d.extend(addr(lba));
            d
        };
        let mut d = vec![0u8, 0, 1, 1];
        match format {
            0 => match track {
                0 | 1 => {
                    d.extend(descriptor(1, 0));
                    d.extend(descriptor(0xaa, i.blocks()));
                }
                0xaa => d.extend(descriptor(0xaa, i.blocks())),
                _ => return Err(Sense::INVALID_FIELD),
            },
            1 => d.extend(descriptor(1, 0)),
            _ => return Err(Sense::INVALID_FIELD),
        }
        let len = (d.len() - 2) as u16;
        d[0..2].copy_from_slice(&len.to_be_bytes());
        Ok(truncated(d, be16(&cdb[7..9]).into()))
    }

    /// The GET CONFIGURATION reply before truncation (MMC-5 §6.6).
    fn configuration(&self, cdb: &[u8; 12]) -> Result<Vec<u8>, Sense> {
        let rt = cdb[1] & 3;
        let start = be16(&cdb[2..4]);
        let profile = self.profile();
        let media = profile != 0;
        let current = |on: bool| u8::from(on);
        let mut features: Vec<(u16, bool, Vec<u8>)> = Vec::new();
        let mut list = Vec::new();
        for p in [0x0010u16, 0x0008] {
            list.extend(p.to_be_bytes());
            list.extend([current(p == profile), 0]);
        }
        features.push((0x0000, true, list));
        features.push((0x0001, true, vec![0, 0, 0, 2, 1, 0, 0, 0]));
        features.push((0x0002, true, vec![0x02, 0, 0, 0]));
        features.push((0x0003, true, vec![0x29, 0, 0, 0]));
        let blocking: u16 = if profile == 0x0010 { 16 } else { 1 };
        let mut rr = (CD_BLOCK_SIZE as u32).to_be_bytes().to_vec();
        rr.extend(blocking.to_be_bytes());
        rr.extend([0, 0]);
        features.push((0x0010, media, rr));
        features.push((0x001e, profile == 0x0008, vec![0, 0, 0, 0]));
        features.push((0x001f, profile == 0x0010, vec![0, 0, 0, 0]));
        let version = |code: u16| -> u8 {
            match code {
                0x0001 | 0x001e => 2,
                0x0002 | 0x001f => 1,
                _ => 0,
            }
        };
        let mut d = vec![0u8; 8];
        d[6..8].copy_from_slice(&profile.to_be_bytes());
        for (code, cur, body) in features {
            let wanted = match rt {
                0 => code >= start,
                1 => code >= start && cur,
                2 => code == start,
                _ => return Err(Sense::INVALID_FIELD),
            };
            if !wanted {
                continue;
            }
            d.extend(code.to_be_bytes());
            // Persistent for the always-current ones.
            let persistent = matches!(code, 0x0000..=0x0003);
            d.push(version(code) << 2 | u8::from(persistent) << 1 | current(cur));
            d.push(body.len() as u8);
            d.extend(body);
        }
        let len = (d.len() - 4) as u32;
        d[0..4].copy_from_slice(&len.to_be_bytes());
        Ok(d)
    }

    fn event_status(&mut self, cdb: &[u8; 12]) -> Result<Reply, Sense> {
        if cdb[1] & 1 == 0 {
            // Asynchronous notification is not supported.
            return Err(Sense::INVALID_FIELD);
        }
        const MEDIA_CLASS: u8 = 1 << 4;
        let alloc = usize::from(be16(&cdb[7..9]));
        if cdb[4] & MEDIA_CLASS == 0 {
            // No event available from the requested classes.
            return Ok(truncated(vec![0, 2, 0x80, MEDIA_CLASS], alloc));
        }
        let event = std::mem::replace(&mut self.media_event, EVENT_NONE);
        let mut status = 0u8;
        if self.tray_open {
            status |= 1;
        }
        if self.image().is_some() {
            status |= 2;
        }
        Ok(truncated(
            vec![0, 6, 4, MEDIA_CLASS, event, status, 0, 0],
            alloc,
        ))
    }

    fn disc_information(&self, cdb: &[u8; 12]) -> Result<Reply, Sense> {
        self.ready()?;
        if cdb[1] & 7 != 0 {
            return Err(Sense::INVALID_FIELD);
        }
        let mut d = vec![0u8; 34];
        d[1] = 32;
        d[2] = 0x0e; // last session complete, disc complete
        d[3] = 1; // first track
        d[4] = 1; // sessions
        d[5] = 1; // first track in last session
        d[6] = 1; // last track in last session
        d[7] = 0x20; // unrestricted use
        Ok(truncated(d, be16(&cdb[7..9]).into()))
    }
}

/// `data` cut to the allocation length.
fn truncated(mut data: Vec<u8>, alloc: usize) -> Reply {
    data.truncate(alloc);
    Reply::Data(data)
}

impl Drive {
    /// PACKET: asks for the command packet.
    pub fn start_packet(&mut self) {
        let dma = self.tf.feature[0] & 1 != 0;
        if let Kind::Cdrom(cd) = &mut self.kind {
            cd.dma = dma;
        }
        self.buf.clear();
        self.buf.resize(12, 0);
        self.pos = 0;
        self.xfer = Xfer::Packet;
        self.tf.nsect[0] = IR_COD;
        self.status = ST_DRDY | ST_DRQ;
        self.error = 0;
    }

    /// Executes the command packet the host wrote.
    pub fn execute_packet(&mut self, cdb: &[u8; 12]) {
        self.stats.packets += 1;
        let Kind::Cdrom(cd) = &mut self.kind else {
            return self.fail(ERR_ABRT);
        };
        let dma = cd.dma;
        let (source, len) = match cd.command(cdb) {
            Err(sense) => return self.check_condition(sense),
            Ok(Reply::Done) => return self.packet_complete(),
            Ok(Reply::Data(data)) => {
                let len = data.len() as u64;
                (Source::Memory { data, at: 0 }, len)
            }
            Ok(Reply::Read { offset, len }) => {
                self.stats.blocks_read += len / CD_BLOCK_SIZE;
                (Source::Image { offset }, len)
            }
        };
        if len == 0 {
            return self.packet_complete();
        }
        if dma {
            self.xfer = Xfer::Dma {
                to_guest: true,
                source,
                remaining: len,
                packet: true,
                sync: false,
            };
            self.tf.nsect[0] = IR_IO;
            self.status = ST_DRDY | ST_DRQ;
        } else {
            self.atapi_next_chunk(source, len);
        }
    }

    /// Ends the packet command successfully.
    pub fn packet_complete(&mut self) {
        self.abort_transfer();
        self.status = ST_DRDY;
        self.error = 0;
        self.tf.nsect[0] = IR_IO | IR_COD;
        self.raise = true;
    }

    /// Ends the packet command with CHECK CONDITION and `sense`.
    fn check_condition(&mut self, sense: Sense) {
        if let Kind::Cdrom(cd) = &mut self.kind {
            cd.sense = sense;
        }
        self.abort_transfer();
        self.status = ST_DRDY | ST_ERR;
        self.error = sense.key << 4 | ERR_ABRT;
        self.tf.nsect[0] = IR_IO | IR_COD;
        self.stats.errors += 1;
        self.raise = true;
    }

    /// The image could not be read.
    pub fn atapi_medium_error(&mut self) {
        self.check_condition(Sense::READ_ERROR);
    }

    /// The bus master failed the transfer.
    pub fn atapi_aborted(&mut self) {
        self.check_condition(Sense::ABORTED);
    }
}

#[cfg(test)]
mod tests {
    use super::super::channel::{ST_DRQ, ST_ERR};
    use super::super::media::tests::TempImage;
    use super::super::tests::*;
    use super::super::IdePosition;
    use super::*;

    /// Sends a packet on the secondary master and reads the whole reply
    /// (PIO, byte count limit `limit`); returns (status, error, data).
    fn packet(ide: &mut super::super::IdeController, cdb: &[u8], limit: u16) -> (u8, u8, Vec<u8>) {
        outb(ide, 0x176, 0xa0);
        outb(ide, 0x171, 0);
        outb(ide, 0x174, limit as u8);
        outb(ide, 0x175, (limit >> 8) as u8);
        outb(ide, 0x177, 0xa0);
        assert_eq!(inb(ide, 0x172), IR_COD);
        let mut p = [0u8; 12];
        p[..cdb.len()].copy_from_slice(cdb);
        write_data(ide, 0x170, &p);
        let mut data = Vec::new();
        for _ in 0..10_000 {
            let st = inb(ide, 0x177);
            if st & ST_DRQ == 0 {
                assert_eq!(inb(ide, 0x172), IR_IO | IR_COD);
                return (st, inb(ide, 0x171), data);
            }
            assert_eq!(inb(ide, 0x172), IR_IO);
            let n = usize::from(inb(ide, 0x174)) | usize::from(inb(ide, 0x175)) << 8;
            assert!(n <= usize::from(limit.max(2)));
            data.extend(read_data(ide, 0x170, n));
        }
        panic!("data phase never ended");
    }

    fn sense(ide: &mut super::super::IdeController) -> (u8, u8, u8) {
        let (st, _, d) = packet(ide, &[0x03, 0, 0, 0, 18], 0xfffe);
        assert_eq!(st & ST_ERR, 0);
        (d[2], d[12], d[13])
    }

    fn with_disc(blocks: u64) -> (TempImage, super::super::IdeController, Line2) {
        let iso = TempImage::iso("disc", blocks);
        let (mut ide, irq) = controller();
        ide.attach(
            IdePosition::SecondaryMaster,
            super::super::IdeDrive::Cdrom(Some(CdImage::open(&iso.0).unwrap())),
        )
        .unwrap();
        (iso, ide, irq)
    }

    type Line2 = std::sync::Arc<TestLine>;

    #[test]
    fn identify_packet_and_signature() {
        let (_iso, mut ide, _) = with_disc(20);
        outb(&mut ide, 0x176, 0xa0);
        outb(&mut ide, 0x177, 0xec);
        assert_eq!(inb(&mut ide, 0x171), ERR_ABRT);
        assert_eq!((inb(&mut ide, 0x174), inb(&mut ide, 0x175)), (0x14, 0xeb));
        outb(&mut ide, 0x177, 0xa1);
        let id = read_data(&mut ide, 0x170, 512);
        let w0 = u16::from_le_bytes([id[0], id[1]]);
        assert_eq!(w0 >> 14, 2, "ATAPI");
        assert_eq!((w0 >> 8) & 0x1f, 5, "CD-ROM");
        assert_ne!(w0 & 0x80, 0, "removable");
        let model: String = (27..47)
            .flat_map(|i| [id[2 * i + 1], id[2 * i]])
            .map(char::from)
            .collect();
        assert_eq!(model.trim_end(), CD_MODEL);
        // SRST leaves the signature.
        outb(&mut ide, 0x376, 0x04);
        outb(&mut ide, 0x376, 0x00);
        assert_eq!((inb(&mut ide, 0x174), inb(&mut ide, 0x175)), (0x14, 0xeb));
    }

    #[test]
    fn inquiry_capacity_and_read10() {
        let (_iso, mut ide, irq) = with_disc(20);
        let (st, _, d) = packet(&mut ide, &[0x12, 0, 0, 0, 36], 0xfffe);
        assert_eq!(st & ST_ERR, 0);
        assert_eq!(d.len(), 36);
        assert_eq!((d[0], d[1]), (0x05, 0x80));
        assert_eq!(&d[8..15], b"ALCAZAR");
        let (_, _, d) = packet(&mut ide, &[0x25], 0xfffe);
        assert_eq!(d, [0, 0, 0, 19, 0, 0, 8, 0]);
        // READ(10) of blocks 3 and 4 in 2048-byte chunks.
        let before = irq.rises();
        let (st, _, d) = packet(&mut ide, &[0x28, 0, 0, 0, 0, 3, 0, 0, 2], 2048);
        assert_eq!(st & ST_ERR, 0);
        assert_eq!(d.len(), 4096);
        assert!(d[..2048].iter().all(|&b| b == 3));
        assert!(d[2048..].iter().all(|&b| b == 4));
        assert_eq!(irq.rises() - before, 3, "two chunks and completion");
        // An odd byte count limit: chunks of 1000 bytes, then the rest.
        let (_, _, d) = packet(&mut ide, &[0x28, 0, 0, 0, 0, 16, 0, 0, 1], 1001);
        assert_eq!(&d[1..6], b"CD001");
        // READ(12) and the TOC.
        let (_, _, d) = packet(&mut ide, &[0xa8, 0, 0, 0, 0, 19, 0, 0, 0, 1], 0xfffe);
        assert!(d.iter().all(|&b| b == 19) && d.len() == 2048);
        let (_, _, d) = packet(&mut ide, &[0x43, 0, 0, 0, 0, 0, 0, 0, 100], 0xfffe);
        assert_eq!(d.len(), 20);
        assert_eq!(&d[16..20], &20u32.to_be_bytes());
        let (_, _, d) = packet(&mut ide, &[0x43, 2, 0, 0, 0, 0, 0, 0, 100], 0xfffe);
        assert_eq!(&d[8..12], &[0, 0, 2, 0], "track 1 at 00:02:00");
        // MODE SENSE(10) page 2Ah.
        let (_, _, d) = packet(&mut ide, &[0x5a, 0, 0x2a, 0, 0, 0, 0, 0, 128], 0xfffe);
        assert_eq!(d[8], 0x2a);
        assert_eq!(usize::from(be16(&d[0..2])) + 2, d.len());
        // GET CONFIGURATION: current profile CD-ROM.
        let (_, _, d) = packet(&mut ide, &[0x46, 0, 0, 0, 0, 0, 0, 0, 64], 0xfffe);
        assert_eq!(be16(&d[6..8]), 0x0008);
    }

    #[test]
    fn firmware_style_polled_boot_read_with_32_bit_pio() {
        // A BIOS polls with interrupts masked (nIEN) and reads with insl.
        let iso = TempImage::iso("bios", 40);
        let (mut ide, irq) = controller();
        ide.attach(
            IdePosition::SecondaryMaster,
            super::super::IdeDrive::Cdrom(None),
        )
        .unwrap();
        outb(&mut ide, 0x376, 0x0e); // SRST | nIEN | bit 3
        outb(&mut ide, 0x376, 0x0a);
        let sig = [0x172, 0x173, 0x174, 0x175].map(|p| inb(&mut ide, p));
        assert_eq!(sig, [1, 1, 0x14, 0xeb]);
        ide.change_media(
            IdePosition::SecondaryMaster,
            Some(std::fs::File::open(&iso.0).unwrap()),
        )
        .unwrap();
        // TEST UNIT READY reports the new disc once.
        let (st, err, _) = packet(&mut ide, &[0x00], 2048);
        assert_eq!((st & ST_ERR, err >> 4), (ST_ERR, 0x06));
        let (st, _, _) = packet(&mut ide, &[0x00], 2048);
        assert_eq!(st & ST_ERR, 0);
        // READ(10) of the boot record volume descriptor, 32 bits at a time.
        outb(&mut ide, 0x176, 0xa0);
        outb(&mut ide, 0x171, 0);
        outb(&mut ide, 0x174, 0x00);
        outb(&mut ide, 0x175, 0x08);
        outb(&mut ide, 0x177, 0xa0);
        let cdb = [0x28u8, 0, 0, 0, 0, 17, 0, 0, 1, 0, 0, 0];
        for c in cdb.chunks(4) {
            assert!(ide.write_port(0x170, c));
        }
        assert_ne!(inb(&mut ide, 0x177) & ST_DRQ, 0);
        let mut block = Vec::new();
        for _ in 0..512 {
            let mut d = [0u8; 4];
            ide.read_port(0x170, &mut d);
            block.extend(d);
        }
        assert!(block.iter().all(|&b| b == 17));
        assert_eq!(inb(&mut ide, 0x376) & (ST_DRQ | ST_ERR), 0);
        assert_eq!(irq.rises(), 0, "nIEN kept the line low");
        assert!(ide.channel(1).intrq(), "INTRQ itself is pending");
    }

    #[test]
    fn bad_lba_is_illegal_request_in_sense() {
        let (_iso, mut ide, _) = with_disc(20);
        let (st, err, d) = packet(&mut ide, &[0x28, 0, 0, 0, 0, 19, 0, 0, 2], 0xfffe);
        assert_ne!(st & ST_ERR, 0);
        assert_eq!(err, 0x05 << 4 | ERR_ABRT);
        assert!(d.is_empty());
        assert_eq!(sense(&mut ide), (0x05, 0x21, 0x00));
        // Sense is consumed.
        assert_eq!(sense(&mut ide), (0, 0, 0));
        let (st, _, _) = packet(&mut ide, &[0xff], 0xfffe);
        assert_ne!(st & ST_ERR, 0);
        assert_eq!(sense(&mut ide), (0x05, 0x20, 0x00));
        // Writes are refused: the disc is read-only.
        let (st, err, _) = packet(&mut ide, &[0x2a, 0, 0, 0, 0, 1, 0, 0, 1], 0xfffe);
        assert_ne!(st & ST_ERR, 0);
        assert_eq!(err >> 4, 0x07);
        assert_eq!(sense(&mut ide), (0x07, 0x27, 0x00));
    }

    #[test]
    fn no_disc_then_insert_raises_unit_attention() {
        let (mut ide, _) = controller();
        ide.attach(
            IdePosition::SecondaryMaster,
            super::super::IdeDrive::Cdrom(None),
        )
        .unwrap();
        let (st, err, _) = packet(&mut ide, &[0x00], 0xfffe);
        assert_ne!(st & ST_ERR, 0);
        assert_eq!(err >> 4, 0x02);
        assert_eq!(sense(&mut ide), (0x02, 0x3a, 0x01));
        let (_, _, _) = packet(&mut ide, &[0x25], 0xfffe);
        assert_eq!(sense(&mut ide), (0x02, 0x3a, 0x01));
        // GESN: no medium.
        let (_, _, d) = packet(&mut ide, &[0x4a, 1, 0, 0, 0x10, 0, 0, 0, 8], 0xfffe);
        assert_eq!(d[5] & 2, 0);
        // Insert a disc.
        let iso = TempImage::iso("insert", 20);
        let file = std::fs::File::open(&iso.0).unwrap();
        ide.change_media(IdePosition::SecondaryMaster, Some(file))
            .unwrap();
        let (_, _, d) = packet(&mut ide, &[0x4a, 1, 0, 0, 0x10, 0, 0, 0, 8], 0xfffe);
        assert_eq!((d[4], d[5] & 2), (EVENT_NEW_MEDIA, 2));
        let (st, err, _) = packet(&mut ide, &[0x00], 0xfffe);
        assert_ne!(st & ST_ERR, 0);
        assert_eq!(err >> 4, 0x06);
        assert_eq!(sense(&mut ide), (0x06, 0x28, 0x00));
        let (st, _, _) = packet(&mut ide, &[0x00], 0xfffe);
        assert_eq!(st & ST_ERR, 0, "ready after the unit attention");
        // A non-ISO file is refused with a typed error.
        let junk = TempImage::new("junk", &[0u8; 4096]);
        let file = std::fs::File::open(&junk.0).unwrap();
        let err = ide
            .change_media(IdePosition::SecondaryMaster, Some(file))
            .unwrap_err();
        assert!(err.to_string().contains("ISO 9660"), "{err}");
        // The guest locks the tray, so eject is refused; then allowed.
        packet(&mut ide, &[0x1e, 0, 0, 0, 1], 0xfffe);
        let (st, _, _) = packet(&mut ide, &[0x1b, 0, 0, 0, 2], 0xfffe);
        assert_ne!(st & ST_ERR, 0);
        packet(&mut ide, &[0x1e, 0, 0, 0, 0], 0xfffe);
        let (st, _, _) = packet(&mut ide, &[0x1b, 0, 0, 0, 2], 0xfffe);
        assert_eq!(st & ST_ERR, 0);
        packet(&mut ide, &[0x00], 0xfffe);
        assert_eq!(sense(&mut ide), (0x02, 0x3a, 0x02));
        // Closing the tray brings the disc back with a unit attention.
        packet(&mut ide, &[0x1b, 0, 0, 0, 3], 0xfffe);
        packet(&mut ide, &[0x00], 0xfffe);
        assert_eq!(sense(&mut ide), (0x06, 0x28, 0x00));
        // Ejecting from the host.
        ide.change_media(IdePosition::SecondaryMaster, None)
            .unwrap();
        packet(&mut ide, &[0x00], 0xfffe);
        assert_eq!(sense(&mut ide).1, 0x3a);
    }
}
