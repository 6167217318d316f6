//! A PIIX3-compatible IDE controller (Intel 82371SB function 1, vendor
//! 8086h device 7010h) with ATA hard disks and ATAPI CD/DVD-ROM drives.
//!
//! | file | models |
//! |---|---|
//! | [`channel`] | a channel's task file, device select, status/error, nIEN, SRST, INTRQ |
//! | [`ata`] | the ATA command set and IDENTIFY DEVICE (ATA/ATAPI-6, ACS-3) |
//! | [`atapi`] | PACKET and the MMC-5 commands of the CD-ROM, sense data, media change |
//! | [`bus_master`] | the BMIDE registers and PRD scatter/gather DMA (SFF-8038i) |
//! | [`media`] | raw disk images and ISO 9660 images |
//!
//! **The PCI function** (PIIX3 datasheet §2.3, "PCI configuration
//! registers (IDE function)"): class 01h sub-class 01h prog-if 80h, both
//! channels in compatibility mode (fixed ports and ISA IRQs, prog-if bits
//! 0 and 2 clear and not changeable) and a bus master (bit 7). BAR0-3 are
//! unused; BAR4 is the 16-byte I/O window of the bus master registers
//! (primary at +0, secondary at +8). No PCI interrupt pin. The IDE timing
//! registers IDETIM (40h-43h), SIDETIM (44h) and, for drivers that
//! probe them, the PIIX4 UDMA registers (48h-4Bh) are plain read/write
//! bytes; IDETIM's decode-enable bit 15 resets set (the firmware would
//! set it anyway) and is not honoured: the legacy ports always decode.
//!
//! **Legacy ports**: primary command block 0x1F0-0x1F7, control 0x3F6,
//! ISA IRQ 14; secondary 0x170-0x177, control 0x376, IRQ 15. Port 0x3F7
//! (the floppy controller's DIR) is not claimed.
//!
//! # Wiring
//!
//! ```ignore
//! let mut ide = IdeController::new(memory.dma(), [irq14, irq15], 0xc000);
//! ide.attach(IdePosition::PrimaryMaster, IdeDrive::Disk(DiskImage::open(&disk, false)?))?;
//! ide.attach(IdePosition::SecondaryMaster, IdeDrive::Cdrom(Some(CdImage::open(&iso)?)))?;
//! let ide = Arc::new(Mutex::new(ide));
//! for r in IdeController::legacy_ports(&ide) {
//!     bus.insert(IoSpace::Port, r.base.into(), r.len.into(), r.name, r.device)?;
//! }
//! pci_root.add(slot, ide.clone())?;
//! ```
//!
//! The bus master registers are BAR4 of the PCI function
//! ([`PciDevice::read_bar`]/[`PciDevice::write_bar`] with `bar == 4`).
//! A host bridge that decodes I/O BARs forwards them there; otherwise
//! [`IdeController::bus_master_ports`] gives a port device to insert at
//! the BAR's address ([`IdeController::bus_master_window`] says where
//! the guest put it). Media change at run time:
//! [`IdeController::change_media`].
//!
//! Left out: native-PCI mode, the PIIX3's other functions (ISA bridge,
//! USB), more than one command in flight per channel, IDE timing
//! semantics.

pub mod ata;
pub mod atapi;
pub mod bus_master;
pub mod channel;
pub mod media;

use std::fs::File;
use std::sync::{Arc, Mutex};

use alcazar_core::bus::lock;
use alcazar_core::inspect::Tree;
use alcazar_core::irq::IrqLine;
use alcazar_core::{BusDevice, DmaMemory};

use crate::pci::config::COMMAND_BUS_MASTER;
use crate::pci::{Bar, BarKind, PciConfig, PciDevice, PciIds};

pub use atapi::Cdrom;
pub use channel::{Block, Channel};
pub use media::{CdImage, DiskImage, MediaError};

/// PIIX3 IDE vendor ID.
pub const VENDOR_ID: u16 = 0x8086;
/// PIIX3 IDE device ID.
pub const DEVICE_ID: u16 = 0x7010;
/// Class code: mass storage, IDE, compatibility mode with bus master.
pub const CLASS_CODE: u32 = 0x01_01_80;
/// Primary command block.
pub const PRIMARY_COMMAND: u16 = 0x1f0;
/// Primary control block (Alternate Status / Device Control).
pub const PRIMARY_CONTROL: u16 = 0x3f6;
/// Secondary command block.
pub const SECONDARY_COMMAND: u16 = 0x170;
/// Secondary control block.
pub const SECONDARY_CONTROL: u16 = 0x376;
/// The primary channel's ISA IRQ.
pub const PRIMARY_IRQ: u8 = 14;
/// The secondary channel's ISA IRQ.
pub const SECONDARY_IRQ: u8 = 15;
/// The BAR holding the bus master registers.
pub const BUS_MASTER_BAR: usize = 4;
/// Bytes of the bus master window.
pub const BUS_MASTER_LEN: u16 = 16;

/// The PIIX IDE timing registers live at 40h..4Ch.
const TIMING_BASE: usize = 0x40;
const TIMING_LEN: usize = 12;

/// Where a drive is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IdePosition {
    /// Primary channel, device 0.
    PrimaryMaster,
    /// Primary channel, device 1.
    PrimarySlave,
    /// Secondary channel, device 0.
    SecondaryMaster,
    /// Secondary channel, device 1.
    SecondarySlave,
}

impl IdePosition {
    /// (channel, device).
    pub fn index(self) -> (usize, usize) {
        match self {
            IdePosition::PrimaryMaster => (0, 0),
            IdePosition::PrimarySlave => (0, 1),
            IdePosition::SecondaryMaster => (1, 0),
            IdePosition::SecondarySlave => (1, 1),
        }
    }
}

impl std::fmt::Display for IdePosition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            IdePosition::PrimaryMaster => "primary master",
            IdePosition::PrimarySlave => "primary slave",
            IdePosition::SecondaryMaster => "secondary master",
            IdePosition::SecondarySlave => "secondary slave",
        })
    }
}

/// A drive to attach.
#[derive(Debug)]
pub enum IdeDrive {
    /// An ATA hard disk.
    Disk(DiskImage),
    /// An ATAPI CD/DVD-ROM drive, with a disc or empty.
    Cdrom(Option<CdImage>),
}

/// Errors from assembling or changing the controller's drives.
#[derive(Debug, thiserror::Error)]
pub enum IdeError {
    /// The image is unusable.
    #[error(transparent)]
    Media(#[from] MediaError),
    /// Two drives at one position.
    #[error("the IDE {0} position is already taken")]
    Occupied(IdePosition),
    /// Media change for a position without a CD-ROM drive.
    #[error("there is no CD-ROM drive at the IDE {0} position")]
    NotCdrom(IdePosition),
}

/// The controller: the PCI function, both channels and their drives.
pub struct IdeController {
    config: PciConfig,
    timing: [u8; TIMING_LEN],
    channels: [Channel; 2],
}

impl std::fmt::Debug for IdeController {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdeController")
            .field("channels", &self.channels)
            .finish_non_exhaustive()
    }
}

impl IdeController {
    /// A controller with no drives. `irqs` are the primary (ISA IRQ 14)
    /// and secondary (IRQ 15) lines, `memory` is where bus-master DMA
    /// goes, and `bus_master_base` is BAR4's initial I/O address.
    pub fn new(memory: DmaMemory, irqs: [Arc<dyn IrqLine>; 2], bus_master_base: u16) -> Self {
        let ids = PciIds {
            vendor_id: VENDOR_ID,
            device_id: DEVICE_ID,
            revision_id: 0,
            class_code: CLASS_CODE,
            subsystem_vendor_id: 0,
            subsystem_id: 0,
        };
        let mut config = PciConfig::new(ids, 0);
        let bar = Bar {
            size: u64::from(BUS_MASTER_LEN),
            kind: BarKind::Io,
        };
        // A 16-byte I/O BAR at index 4 is always a valid declaration.
        if let Err(e) = config.add_bar(BUS_MASTER_BAR, bar, bus_master_base.into()) {
            tracing::error!("ide: cannot declare BAR4: {e}");
        }
        let mut timing = [0u8; TIMING_LEN];
        timing[1] = 0x80; // IDETIM primary: decode enable
        timing[3] = 0x80; // IDETIM secondary
        let [irq0, irq1] = irqs;
        IdeController {
            config,
            timing,
            channels: [
                Channel::new(irq0, memory.clone()),
                Channel::new(irq1, memory),
            ],
        }
    }

    /// Attaches `drive` at `at`.
    pub fn attach(&mut self, at: IdePosition, drive: IdeDrive) -> Result<(), IdeError> {
        let (ch, dev) = at.index();
        let slot = &mut self.channels[ch].drives[dev];
        if slot.is_some() {
            return Err(IdeError::Occupied(at));
        }
        let kind = match drive {
            IdeDrive::Disk(d) => channel::Kind::Disk(d),
            IdeDrive::Cdrom(c) => channel::Kind::Cdrom(Cdrom::new(c)),
        };
        let serial = format!("ALCAZAR-IDE-{}{}", ch, dev);
        *slot = Some(channel::Drive::new(kind, serial));
        Ok(())
    }

    /// Puts a disc in (an ISO 9660 image, checked) or takes it out of the
    /// CD-ROM drive at `at`. The guest sees UNIT ATTENTION (medium may
    /// have changed) and a media event.
    pub fn change_media(&mut self, at: IdePosition, media: Option<File>) -> Result<(), IdeError> {
        let image = match media {
            Some(file) => {
                let name = media::name_of(&file);
                Some(CdImage::from_file(file, name)?)
            }
            None => None,
        };
        self.insert_cd(at, image)
    }

    /// Like [`Self::change_media`] with an already checked image.
    pub fn insert_cd(&mut self, at: IdePosition, image: Option<CdImage>) -> Result<(), IdeError> {
        let (ch, dev) = at.index();
        match self.channels[ch].drives[dev].as_mut().map(|d| &mut d.kind) {
            Some(channel::Kind::Cdrom(cd)) => {
                cd.change_media(image);
                Ok(())
            }
            _ => Err(IdeError::NotCdrom(at)),
        }
    }

    /// Channel `i` (0 primary, 1 secondary) for inspection.
    pub fn channel(&self, i: usize) -> &Channel {
        &self.channels[i.min(1)]
    }

    /// A guest read of legacy port `port`. Returns false (and leaves
    /// `data` alone) for ports the controller does not own.
    pub fn read_port(&mut self, port: u16, data: &mut [u8]) -> bool {
        let Some((ch, block, offset)) = decode_port(port) else {
            return false;
        };
        if data.is_empty() {
            return true;
        }
        let channel = &mut self.channels[ch];
        if block == Block::Control || offset == 0 {
            channel.read(block, offset, data);
            return true;
        }
        // Other registers are bytes: a wider access covers the next ones.
        for (i, b) in data.iter_mut().enumerate() {
            let o = offset + i as u64;
            if o < 8 {
                let mut one = [0u8];
                channel.read(block, o, &mut one);
                *b = one[0];
            } else {
                *b = 0xff;
            }
        }
        true
    }

    /// A guest write of legacy port `port`. Returns false for ports the
    /// controller does not own.
    pub fn write_port(&mut self, port: u16, data: &[u8]) -> bool {
        let Some((ch, block, offset)) = decode_port(port) else {
            return false;
        };
        if data.is_empty() {
            return true;
        }
        let channel = &mut self.channels[ch];
        if block == Block::Control || offset == 0 {
            channel.write(block, offset, data);
            return true;
        }
        for (i, &b) in data.iter().enumerate() {
            let o = offset + i as u64;
            if o < 8 {
                channel.write(block, o, &[b]);
            }
        }
        true
    }

    /// Where the guest put the bus master window (I/O base, length), if
    /// I/O decoding is on.
    pub fn bus_master_window(&self) -> Option<(u16, u16)> {
        let (_, base, len) = self.config.bar_window(BUS_MASTER_BAR)?;
        Some((u16::try_from(base).ok()?, u16::try_from(len).ok()?))
    }

    /// The port devices of the legacy command and control blocks, for
    /// the VMM to insert in the port bus.
    pub fn legacy_ports(controller: &Arc<Mutex<IdeController>>) -> Vec<PortRange> {
        [
            (PRIMARY_COMMAND, 8, "ide-primary"),
            (PRIMARY_CONTROL, 1, "ide-primary-control"),
            (SECONDARY_COMMAND, 8, "ide-secondary"),
            (SECONDARY_CONTROL, 1, "ide-secondary-control"),
        ]
        .into_iter()
        .map(|(base, len, name)| PortRange {
            base,
            len,
            name,
            device: Arc::new(Mutex::new(IdePorts {
                controller: controller.clone(),
                base,
                window: Window::Legacy,
            })),
        })
        .collect()
    }

    /// A port device for the bus master registers placed at `base` (for
    /// a host bridge that does not decode I/O BARs).
    pub fn bus_master_ports(controller: &Arc<Mutex<IdeController>>, base: u16) -> PortRange {
        PortRange {
            base,
            len: BUS_MASTER_LEN,
            name: "ide-bus-master",
            device: Arc::new(Mutex::new(IdePorts {
                controller: controller.clone(),
                base,
                window: Window::BusMaster,
            })),
        }
    }

    fn tree(&self) -> Tree {
        let mut t = Tree::new();
        let mut timing = Tree::new();
        let word = |i: usize| u64::from(u16::from_le_bytes([self.timing[i], self.timing[i + 1]]));
        timing
            .hex("idetim_primary", word(0), 4)
            .hex("idetim_secondary", word(2), 4)
            .hex("sidetim", self.timing[4].into(), 2)
            .hex("udmactl", self.timing[8].into(), 2)
            .hex("udmatim", word(10), 4);
        t.child("timing", timing);
        if let Some((base, _)) = self.bus_master_window() {
            t.hex("bus_master_base", base.into(), 4);
        }
        t.child("primary", self.channels[0].tree());
        t.child("secondary", self.channels[1].tree());
        t
    }

    #[cfg(test)]
    pub(crate) fn memory_for_tests(&self) -> DmaMemory {
        self.channels[0].memory_for_tests()
    }
}

/// (channel, block, offset) of a legacy port.
fn decode_port(port: u16) -> Option<(usize, Block, u64)> {
    match port {
        0x1f0..=0x1f7 => Some((0, Block::Command, u64::from(port - 0x1f0))),
        PRIMARY_CONTROL => Some((0, Block::Control, 0)),
        0x170..=0x177 => Some((1, Block::Command, u64::from(port - 0x170))),
        SECONDARY_CONTROL => Some((1, Block::Control, 0)),
        _ => None,
    }
}

impl PciDevice for IdeController {
    fn config(&self) -> &PciConfig {
        &self.config
    }

    fn read_config(&mut self, offset: usize, data: &mut [u8]) {
        // ECAM reaches at most 4 KiB; anything else reads zero.
        if offset
            .checked_add(data.len())
            .is_none_or(|end| end > 0x1000)
        {
            data.fill(0);
            return;
        }
        self.config.read(offset, data);
        for (i, b) in data.iter_mut().enumerate() {
            if let Some(t) = offset
                .checked_add(i)
                .and_then(|o| o.checked_sub(TIMING_BASE))
                .and_then(|o| self.timing.get(o))
            {
                *b = *t;
            }
        }
    }

    fn write_config(&mut self, offset: usize, data: &[u8]) {
        for (i, &b) in data.iter().enumerate() {
            let Some(at) = offset.checked_add(i) else {
                return;
            };
            match at
                .checked_sub(TIMING_BASE)
                .and_then(|o| self.timing.get_mut(o))
            {
                Some(t) => *t = b,
                None => self.config.write(at, &[b]),
            }
        }
        let enabled = self.config.command() & COMMAND_BUS_MASTER != 0;
        for ch in &mut self.channels {
            ch.bus_master_enabled = enabled;
            // A transfer waiting for bus mastering may go now.
            ch.settle();
        }
    }

    fn read_bar(&mut self, bar: usize, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            let at = offset.saturating_add(i as u64);
            *b = match (bar, at) {
                (BUS_MASTER_BAR, 0..=15) => self.channels[(at / 8) as usize].bm.read(at % 8),
                _ => 0xff,
            };
        }
    }

    fn write_bar(&mut self, bar: usize, offset: u64, data: &[u8]) {
        if bar != BUS_MASTER_BAR {
            return;
        }
        for (i, &b) in data.iter().enumerate() {
            let at = offset.saturating_add(i as u64);
            if at < 16 {
                self.channels[(at / 8) as usize].bm.write(at % 8, b);
            }
        }
        for ch in &mut self.channels {
            ch.settle();
        }
    }

    fn name(&self) -> String {
        "piix3-ide".into()
    }

    fn inspect_tree(&self) -> Tree {
        self.tree()
    }
}

/// Which registers a [`IdePorts`] device reaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Window {
    /// Legacy ports, by absolute port number.
    Legacy,
    /// The bus master registers.
    BusMaster,
}

/// A port range of the controller on the machine's port bus.
pub struct IdePorts {
    controller: Arc<Mutex<IdeController>>,
    base: u16,
    window: Window,
}

impl std::fmt::Debug for IdePorts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdePorts")
            .field("base", &format_args!("{:#x}", self.base))
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

impl BusDevice for IdePorts {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let mut c = lock(&self.controller);
        match self.window {
            Window::Legacy => {
                let port = u16::try_from(u64::from(self.base) + offset).unwrap_or(0);
                if !c.read_port(port, data) {
                    data.fill(0xff);
                }
            }
            Window::BusMaster => c.read_bar(BUS_MASTER_BAR, offset, data),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let mut c = lock(&self.controller);
        match self.window {
            Window::Legacy => {
                let port = u16::try_from(u64::from(self.base) + offset).unwrap_or(0);
                c.write_port(port, data);
            }
            Window::BusMaster => c.write_bar(BUS_MASTER_BAR, offset, data),
        }
    }

    fn inspect(&self) -> Tree {
        // The command block ranges show their channel; the others
        // nothing, so the inspector lists each channel once.
        let c = lock(&self.controller);
        match (self.window, self.base) {
            (Window::Legacy, PRIMARY_COMMAND) => c.channels[0].tree(),
            (Window::Legacy, SECONDARY_COMMAND) => c.channels[1].tree(),
            _ => Tree::new(),
        }
    }
}

/// A port range to insert in the machine's port bus.
#[derive(Debug)]
pub struct PortRange {
    /// First port.
    pub base: u16,
    /// Number of ports.
    pub len: u16,
    /// A name for the bus and the inspector.
    pub name: &'static str,
    /// The device.
    pub device: Arc<Mutex<IdePorts>>,
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

    use alcazar_core::memory::{GuestMemory, MemoryMap};
    use alcazar_core::{Bus, IoSpace};

    use super::channel::{DEV_LBA, ST_BSY, ST_DRDY, ST_DSC};
    use super::media::tests::TempImage;
    use super::*;

    /// An interrupt line that counts rising edges.
    #[derive(Debug, Default)]
    pub(crate) struct TestLine {
        level: AtomicBool,
        rises: AtomicU32,
    }

    impl TestLine {
        pub(crate) fn rises(&self) -> u32 {
            self.rises.load(Ordering::SeqCst)
        }
        pub(crate) fn level(&self) -> bool {
            self.level.load(Ordering::SeqCst)
        }
    }

    impl IrqLine for TestLine {
        fn set_level(&self, high: bool) {
            if high && !self.level.swap(true, Ordering::SeqCst) {
                self.rises.fetch_add(1, Ordering::SeqCst);
            }
            self.level.store(high, Ordering::SeqCst);
        }
    }

    /// A controller over 1 MiB of guest RAM; the returned line is the
    /// one both channels share (tests use one channel at a time).
    pub(crate) fn controller() -> (IdeController, Arc<TestLine>) {
        let mem = GuestMemory::new(MemoryMap::pc(1 << 20).unwrap()).unwrap();
        let line = Arc::new(TestLine::default());
        let ide = IdeController::new(mem.dma(), [line.clone(), line.clone()], 0xc000);
        (ide, line)
    }

    /// A controller with `img` as the primary master.
    pub(crate) fn controller_with_disk(
        img: &TempImage,
        readonly: bool,
    ) -> (IdeController, Arc<TestLine>) {
        let (mut ide, line) = controller();
        let disk = DiskImage::open(&img.0, readonly).unwrap();
        ide.attach(IdePosition::PrimaryMaster, IdeDrive::Disk(disk))
            .unwrap();
        (ide, line)
    }

    pub(crate) fn outb(ide: &mut IdeController, port: u16, v: u8) {
        assert!(ide.write_port(port, &[v]));
    }

    pub(crate) fn inb(ide: &mut IdeController, port: u16) -> u8 {
        let mut b = [0u8];
        assert!(ide.read_port(port, &mut b));
        b[0]
    }

    /// Reads `n` bytes from the data port in 16-bit words.
    pub(crate) fn read_data(ide: &mut IdeController, port: u16, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n + 1);
        for _ in 0..n.div_ceil(2) {
            let mut w = [0u8; 2];
            ide.read_port(port, &mut w);
            out.extend(w);
        }
        out.truncate(n);
        out
    }

    /// Writes `data` to the data port in 16-bit words.
    pub(crate) fn write_data(ide: &mut IdeController, port: u16, data: &[u8]) {
        for w in data.chunks(2) {
            ide.write_port(port, w);
        }
    }

    /// Selects device `dev` on the primary channel with `flags`.
    pub(crate) fn select(ide: &mut IdeController, dev: u8, flags: u8) {
        outb(ide, 0x1f6, 0xa0 | flags | dev << 4);
    }

    /// Loads a 28-bit LBA and count on the primary master.
    pub(crate) fn set_lba28(ide: &mut IdeController, lba: u32, count: u8) {
        outb(ide, 0x1f6, 0xa0 | DEV_LBA | ((lba >> 24) as u8 & 0x0f));
        outb(ide, 0x1f2, count);
        outb(ide, 0x1f3, lba as u8);
        outb(ide, 0x1f4, (lba >> 8) as u8);
        outb(ide, 0x1f5, (lba >> 16) as u8);
    }

    #[test]
    fn pci_function_identifies_as_piix3_ide() {
        let (mut ide, _) = controller();
        let mut id = [0u8; 4];
        ide.read_config(0, &mut id);
        assert_eq!(id, [0x86, 0x80, 0x10, 0x70]);
        let mut class = [0u8; 3];
        ide.read_config(0x09, &mut class);
        assert_eq!(class, [0x80, 0x01, 0x01]);
        // prog-if is read-only: the channels stay in compatibility mode.
        ide.write_config(0x09, &[0x8f]);
        ide.read_config(0x09, &mut class[..1]);
        assert_eq!(class[0], 0x80);
        // BAR4 sizes as 16 bytes of I/O.
        ide.write_config(0x20, &u32::MAX.to_le_bytes());
        let mut bar = [0u8; 4];
        ide.read_config(0x20, &mut bar);
        assert_eq!(u32::from_le_bytes(bar), 0xffff_fff1);
        ide.write_config(0x20, &0xd000u32.to_le_bytes());
        assert_eq!(ide.bus_master_window(), None, "I/O decoding off");
        ide.write_config(0x04, &[0x01, 0]);
        assert_eq!(ide.bus_master_window(), Some((0xd000, 16)));
        // Timing registers are plain read/write.
        let mut t = [0u8; 4];
        ide.read_config(0x40, &mut t);
        assert_eq!(t, [0x00, 0x80, 0x00, 0x80]);
        ide.write_config(0x40, &[0x07, 0xa3, 0x44, 0xe3]);
        ide.write_config(0x44, &[0x11]);
        let mut t = [0u8; 5];
        ide.read_config(0x40, &mut t);
        assert_eq!(t, [0x07, 0xa3, 0x44, 0xe3, 0x11]);
        assert_eq!(
            ide.inspect_tree().get("timing/idetim_primary"),
            Some(alcazar_core::Node::Value("0xa307".into()))
        );
        // Reads across the end of the space do not panic.
        let mut far = [0u8; 4];
        ide.read_config(usize::MAX - 1, &mut far);
        ide.write_config(usize::MAX - 1, &far);
        ide.read_bar(0, 0, &mut far);
        ide.write_bar(4, u64::MAX, &far);
    }

    #[test]
    fn empty_channels_float_and_absent_devices_read_zero() {
        let img = TempImage::new("absent", &vec![0u8; 8 * 512]);
        let (mut ide, _) = controller_with_disk(&img, false);
        assert_eq!(inb(&mut ide, 0x177), 0xff);
        assert_eq!(inb(&mut ide, 0x376), 0xff);
        assert_eq!(inb(&mut ide, 0x1f7), ST_DRDY | ST_DSC);
        select(&mut ide, 1, 0);
        outb(&mut ide, 0x1f2, 0x55);
        assert_eq!(inb(&mut ide, 0x1f2), 0, "device 1 is absent");
        assert_eq!(inb(&mut ide, 0x1f7), 0);
        assert_eq!(inb(&mut ide, 0x1f6), 0xb0);
        outb(&mut ide, 0x1f7, 0xec); // ignored
        select(&mut ide, 0, 0);
        assert_eq!(inb(&mut ide, 0x1f2), 0x55);
        assert_eq!(inb(&mut ide, 0x1f7), ST_DRDY | ST_DSC);
        assert!(!ide.read_port(0x3f7, &mut [0]));
        assert!(!ide.write_port(0x1f8, &[0]));
    }

    #[test]
    fn software_reset_and_diagnostic_load_signatures() {
        let img = TempImage::new("srst", &vec![0u8; 8 * 512]);
        let iso = TempImage::iso("srst", 20);
        let (mut ide, irq) = controller_with_disk(&img, false);
        ide.attach(
            IdePosition::PrimarySlave,
            IdeDrive::Cdrom(Some(CdImage::open(&iso.0).unwrap())),
        )
        .unwrap();
        assert!(matches!(
            ide.attach(IdePosition::PrimarySlave, IdeDrive::Cdrom(None)),
            Err(IdeError::Occupied(IdePosition::PrimarySlave))
        ));
        assert!(matches!(
            ide.change_media(IdePosition::PrimaryMaster, None),
            Err(IdeError::NotCdrom(_))
        ));
        outb(&mut ide, 0x1f3, 0x77);
        outb(&mut ide, 0x3f6, 0x06);
        assert_eq!(inb(&mut ide, 0x3f6), ST_BSY);
        outb(&mut ide, 0x3f6, 0x02);
        assert_eq!(inb(&mut ide, 0x1f7), ST_DRDY | ST_DSC);
        let sig =
            |ide: &mut IdeController| [0x1f1, 0x1f2, 0x1f3, 0x1f4, 0x1f5].map(|p| inb(ide, p));
        assert_eq!(sig(&mut ide), [1, 1, 1, 0, 0]);
        select(&mut ide, 1, 0);
        assert_eq!(sig(&mut ide), [1, 1, 1, 0x14, 0xeb]);
        assert_eq!(irq.rises(), 0, "no interrupt for SRST");
        // EXECUTE DEVICE DIAGNOSTIC interrupts and selects device 0.
        outb(&mut ide, 0x3f6, 0);
        outb(&mut ide, 0x1f7, 0x90);
        assert_eq!(irq.rises(), 1);
        assert_eq!(inb(&mut ide, 0x1f1), 0x01);
        assert_eq!(inb(&mut ide, 0x1f6) & 0x10, 0);
        let tree = ide.inspect_tree();
        assert_eq!(
            tree.get("primary/device1/kind"),
            Some(alcazar_core::Node::Value("atapi-cdrom".into()))
        );
        assert_eq!(
            tree.get("primary/device0/counters/commands"),
            Some(alcazar_core::Node::Value("1".into()))
        );
    }

    #[test]
    fn legacy_ports_work_through_the_bus() {
        let img = TempImage::new("bus", &vec![0u8; 8 * 512]);
        let (ide, irq) = controller_with_disk(&img, false);
        let ide = Arc::new(Mutex::new(ide));
        let bus = Bus::new();
        for r in IdeController::legacy_ports(&ide) {
            bus.insert(IoSpace::Port, r.base.into(), r.len.into(), r.name, r.device)
                .unwrap();
        }
        let bm = IdeController::bus_master_ports(&ide, 0xc000);
        bus.insert(
            IoSpace::Port,
            bm.base.into(),
            bm.len.into(),
            bm.name,
            bm.device,
        )
        .unwrap();
        bus.write(IoSpace::Port, 0x1f6, &[0xe0]);
        bus.write(IoSpace::Port, 0x1f7, &[0xec]);
        assert!(irq.level());
        let mut st = [0u8];
        bus.read(IoSpace::Port, 0x1f7, &mut st);
        assert_eq!(st[0] & 0x08, 0x08);
        assert!(!irq.level());
        let mut w = [0u8; 4];
        bus.read(IoSpace::Port, 0x1f0, &mut w);
        assert_eq!(u16::from_le_bytes([w[0], w[1]]), 0x0040);
        bus.write(IoSpace::Port, 0xc004, &0x1234_5678u32.to_le_bytes());
        bus.read(IoSpace::Port, 0xc004, &mut w);
        assert_eq!(u32::from_le_bytes(w), 0x1234_5678);
        let names: Vec<String> = bus.devices().into_iter().map(|(n, _)| n).collect();
        assert!(names.contains(&"ide-primary".to_string()));
    }
}
