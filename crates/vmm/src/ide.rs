//! The machine's IDE controller: the `ide-disk` and `ide-cdrom` devices of
//! a configuration become drives on one PIIX-compatible controller
//! ([`alcazar_devices::ide`]) in a PCI slot of its own, with the legacy
//! command blocks at 0x1F0/0x3F6 (IRQ 14) and 0x170/0x376 (IRQ 15).
//!
//! Drives take the positions a PC's BIOS setup gives them, in
//! configuration order: CD-ROM drives from the secondary master (where
//! QEMU's `-cdrom` goes, so guests find it as `/dev/sr0` there too),
//! disks from the primary master, each kind then filling the remaining
//! positions. Disk images are locked as virtio-blk images are
//! ([`crate::disk_lock`]).

use std::sync::{Arc, Mutex};

use alcazar_core::bus::lock;
use alcazar_core::{IoSpace, Machine};
use alcazar_devices::ide::{CdImage, DiskImage, IdeController, IdeDrive, IdePosition};

use crate::config::{DeviceConfig, DeviceSpec};
use crate::error::{ConfigError, VmmError};
use crate::pci::PciBus;
use crate::platform::Chipset;

/// The ISA interrupt lines of the two channels.
const CHANNEL_IRQS: [u8; 2] = [14, 15];
/// Where the bus-master I/O BAR starts (a BIOS may move it).
const BUS_MASTER_PORT: u16 = 0xc000;

/// The IDE controller as built: its PCI slot and where each drive went.
#[derive(Debug, Clone)]
pub struct IdeBuilt {
    /// The controller's PCI slot.
    pub slot: u8,
    /// Each drive's device id and position.
    pub drives: Vec<(String, IdePosition)>,
}

impl IdeBuilt {
    /// The Open Firmware path a BIOS boot order names drive `id` by
    /// (`/pci@i0cf8/ide@SLOT/drive@CHANNEL/disk@UNIT`), if it is an IDE
    /// drive.
    pub fn boot_path(&self, id: &str) -> Option<String> {
        let (_, at) = self.drives.iter().find(|(d, _)| d == id)?;
        let (channel, unit) = at.index();
        Some(format!(
            "/pci@i0cf8/ide@{:x}/drive@{channel:x}/disk@{unit:x}",
            self.slot
        ))
    }
}

/// Builds the controller if `specs` has IDE drives; returns `None`
/// otherwise.
pub fn build(
    machine: &Machine,
    chipset: &Chipset,
    pci: &PciBus,
    specs: &[DeviceSpec],
) -> Result<Option<IdeBuilt>, VmmError> {
    let wanted: Vec<&DeviceSpec> = specs
        .iter()
        .filter(|s| {
            matches!(
                s.config,
                DeviceConfig::IdeDisk(_) | DeviceConfig::IdeCdrom(_)
            )
        })
        .collect();
    if wanted.is_empty() {
        return Ok(None);
    }
    let irqs = CHANNEL_IRQS.map(|n| chipset.isa_irq(n));
    let mut controller = IdeController::new(machine.memory.dma(), irqs, BUS_MASTER_PORT);
    const CD_POSITIONS: [IdePosition; 4] = [
        IdePosition::SecondaryMaster,
        IdePosition::SecondarySlave,
        IdePosition::PrimarySlave,
        IdePosition::PrimaryMaster,
    ];
    const DISK_POSITIONS: [IdePosition; 4] = [
        IdePosition::PrimaryMaster,
        IdePosition::PrimarySlave,
        IdePosition::SecondarySlave,
        IdePosition::SecondaryMaster,
    ];
    let mut taken: Vec<IdePosition> = Vec::new();
    let mut drives = Vec::new();
    for spec in wanted {
        let next = |order: &[IdePosition; 4]| {
            order
                .iter()
                .copied()
                .find(|p| !taken.contains(p))
                .ok_or_else(|| {
                    VmmError::from(ConfigError::new(
                        spec.key("class"),
                        format!("\"{}\"", spec.class()),
                        "the IDE controller's four positions are taken",
                        "use at most four IDE drives (disks and CD-ROMs together)",
                    ))
                })
        };
        let (drive, at) = match &spec.config {
            DeviceConfig::IdeDisk(c) => {
                crate::registry::lock_disk(spec, &c.path, c.readonly, &machine.control)?;
                let image = DiskImage::open(&c.path, c.readonly).map_err(|e| {
                    ConfigError::new(
                        spec.key("path"),
                        format!("\"{}\"", c.path.display()),
                        e.to_string(),
                        "give a raw disk image whose size is a multiple of 512 bytes",
                    )
                })?;
                (IdeDrive::Disk(image), next(&DISK_POSITIONS)?)
            }
            DeviceConfig::IdeCdrom(c) => {
                let disc = c
                    .path
                    .as_deref()
                    .map(|p| {
                        CdImage::open(p).map_err(|e| {
                            ConfigError::new(
                                spec.key("path"),
                                format!("\"{}\"", p.display()),
                                e.to_string(),
                                "give an ISO 9660 image (a CD or DVD image, e.g. made by xorriso)",
                            )
                        })
                    })
                    .transpose()?;
                (IdeDrive::Cdrom(disc), next(&CD_POSITIONS)?)
            }
            _ => continue,
        };
        controller
            .attach(at, drive)
            .map_err(|e| VmmError::Pci(e.to_string()))?;
        taken.push(at);
        drives.push((spec.id.clone(), at));
    }
    let controller = Arc::new(Mutex::new(controller));
    for r in IdeController::legacy_ports(&controller) {
        machine.bus.insert(
            IoSpace::Port,
            u64::from(r.base),
            u64::from(r.len),
            r.name,
            r.device,
        )?;
    }
    let root = pci.root();
    let mut root = lock(root);
    let slot = root.free_slot().map_err(|e| VmmError::Pci(e.to_string()))?;
    root.add(slot, controller)
        .map_err(|e| VmmError::Pci(e.to_string()))?;
    Ok(Some(IdeBuilt { slot, drives }))
}
