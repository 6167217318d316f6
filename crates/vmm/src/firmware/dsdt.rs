//! The DSDT (ACPI 6.5 §5.2.11.1): the AML definition block that names the
//! machine's devices the OS cannot probe, and the `\_S3` and `\_S5` sleep
//! objects.
//!
//! Namespace (ACPI 6.5 §5.3, §7.4.2 for `\_Sx`, §6.1.5 for `_HID`,
//! §6.2.2 for `_CRS`, resource descriptors from §6.4.2):
//!
//! ```text
//! \_S3_  Package {SLP_TYP_S3, SLP_TYP_S3, 0, 0}   suspend to RAM (if Platform::s3)
//! \_S5_  Package {SLP_TYP_S5, SLP_TYP_S5, 0, 0}   soft off (PM1_CNT.SLP_TYP)
//! \_SB_
//!   COMn  PNP0501  IO port/8, IRQ         each 16550 UART on the bus (COM1: 0x3f8, IRQ 4)
//!   PS2K  PNP0303  IO 0x60, IO 0x64, IRQ 1  i8042 keyboard port   (if the 8042 is there)
//!   PS2M  PNP0F13  IRQ 12                 i8042 auxiliary (mouse) port
//!   RTC_  PNP0B00  IO 0x70/2, IRQ 8       MC146818 RTC/CMOS
//!   TIMR  PNP0100  IO 0x40/4, IRQ 0       8254 PIT
//!   PIC_  PNP0000  IO 0x20/2, 0xa0/2, 0x4d0/2   dual 8259A + ELCR
//!   PCI0  PNP0A08 (_CID PNP0A03)           PCI host bridge, bus 0
//!     _CRS  bus 0, I/O 0-0xcf7 and 0xd00-0xffff, memory windows
//!     _PRT  slot s, pin p -> GSI 16 + (s + p) % 4
//! ```
//!
//! The ISA devices sit directly under `\_SB` (there is no PCI-to-ISA
//! bridge function); `system_bus_devices` is the one place that lists
//! what `\_SB` holds. The PCI routing table (ACPI 6.5 §6.2.13) uses the
//! "GSI" form: source 0 and the IOAPIC input as the source index, which
//! an OS reads as level-triggered, active-low lines.
//!
//! AML comes from the `acpi_tables` crate's `aml` module, plus the short
//! IRQ descriptor ([`IrqNoFlags`]), which the crate lacks.

use acpi_tables::aml::{
    AddressSpace, AddressSpaceCacheable, Device, EISAName, Name, Package, PackageBuilder, Path,
    ResourceTemplate, Scope, IO,
};
use acpi_tables::sdt::Sdt;
use acpi_tables::{Aml, AmlSink};
use alcazar_core::layout::{self, pci_intx_gsi};
use alcazar_devices::acpi_pm::{SLP_TYP_S3, SLP_TYP_S5};
use alcazar_devices::pci::root::SLOTS;

use super::acpi::SDT_HEADER_LEN;
use super::{Platform, ACPI_OEM_ID, ACPI_OEM_REVISION, ACPI_OEM_TABLE_ID};

/// DSDT revision: 2, so AML integers are 64 bits (ACPI 6.5 §5.2.11.1).
pub const DSDT_REVISION: u8 = 2;

/// The `\_S5` SLP_TYP value. The PM control register's SLP_TYP field is
/// 3 bits, so the device's constant always fits a byte.
const S5_SLP_TYP: u8 = (SLP_TYP_S5 & 0x7) as u8;
/// The `\_S3` SLP_TYP value (ACPI 6.5 §7.4.2.4), from the PM block.
const S3_SLP_TYP: u8 = (SLP_TYP_S3 & 0x7) as u8;

/// An I/O port range a device decodes, at a fixed address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoRange {
    /// First port.
    pub base: u16,
    /// Number of ports.
    pub len: u8,
}

/// A legacy ISA device the DSDT declares: its ACPI name, its PNP ID
/// (`_HID`), an optional `_UID` and the resources its `_CRS` lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsaDevice {
    /// Four-character ACPI name segment.
    pub name: String,
    /// EISA ID string, e.g. `PNP0501` (compressed by `EISAID()`).
    pub hid: &'static str,
    /// `_UID`, to tell apart devices of the same `_HID`.
    pub uid: Option<u8>,
    /// Fixed I/O port ranges.
    pub io: Vec<IoRange>,
    /// ISA IRQ, if the device has one.
    pub irq: Option<u8>,
}

impl IsaDevice {
    fn new(name: &str, hid: &'static str, io: &[(u16, u8)], irq: Option<u8>) -> Self {
        IsaDevice {
            name: name.into(),
            hid,
            uid: None,
            io: io
                .iter()
                .map(|&(base, len)| IoRange { base, len })
                .collect(),
            irq,
        }
    }
}

/// The ISA devices of `platform`, in `\_SB`: its UARTs (`COM1`, `COM2`,
/// ... in device order), the 8042's two ports if it has one, and the
/// chipset's RTC, PIT and 8259A pair, which every machine has.
pub fn isa_devices(platform: &Platform) -> Vec<IsaDevice> {
    let mut devices: Vec<IsaDevice> = platform
        .uarts
        .iter()
        .zip(1u8..)
        .map(|(&(port, irq), n)| IsaDevice {
            uid: Some(n),
            ..IsaDevice::new(&format!("COM{n}"), "PNP0501", &[(port, 8)], Some(irq))
        })
        .collect();
    if platform.i8042 {
        devices.push(IsaDevice::new(
            "PS2K",
            "PNP0303",
            &[(0x60, 1), (0x64, 1)],
            Some(layout::KEYBOARD_ISA_IRQ),
        ));
        devices.push(IsaDevice::new("PS2M", "PNP0F13", &[], Some(12)));
    }
    devices.push(IsaDevice::new(
        "RTC_",
        "PNP0B00",
        &[(0x70, 2)],
        Some(layout::RTC_ISA_IRQ),
    ));
    devices.push(IsaDevice::new(
        "TIMR",
        "PNP0100",
        &[(0x40, 4)],
        Some(layout::PIT_ISA_IRQ),
    ));
    devices.push(IsaDevice::new(
        "PIC_",
        "PNP0000",
        &[(0x20, 2), (0xa0, 2), (0x4d0, 2)],
        None,
    ));
    devices
}

/// The short IRQ descriptor without its information byte, ASL
/// `IRQNoFlags() {n}` (ACPI 6.5 §6.4.2.1): an edge-triggered, active-high,
/// exclusive ISA IRQ, given as a 16-bit mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IrqNoFlags {
    /// The ISA IRQ (0-15).
    pub irq: u8,
}

/// Small resource item tag of a 2-byte IRQ descriptor: type 0x04, length 2.
const IRQ_DESCRIPTOR_NO_FLAGS: u8 = (0x04 << 3) | 2;

impl Aml for IrqNoFlags {
    fn to_aml_bytes(&self, sink: &mut dyn AmlSink) {
        sink.byte(IRQ_DESCRIPTOR_NO_FLAGS);
        sink.word(1u16.checked_shl(u32::from(self.irq)).unwrap_or(0));
    }
}

/// Already-encoded AML, so owned pieces can sit in a `Vec<&dyn Aml>`.
struct Encoded(Vec<u8>);

impl Aml for Encoded {
    fn to_aml_bytes(&self, sink: &mut dyn AmlSink) {
        sink.vec(&self.0);
    }
}

/// The AML `Device` object for `dev`: `_HID`, `_UID` if any, `_CRS`.
pub fn isa_device_aml(dev: &IsaDevice) -> Vec<u8> {
    let io: Vec<IO> = dev
        .io
        .iter()
        .map(|r| IO::new(r.base, r.base, 1, r.len))
        .collect();
    let irq = dev.irq.map(|irq| IrqNoFlags { irq });
    let mut resources: Vec<&dyn Aml> = io.iter().map(|r| r as &dyn Aml).collect();
    if let Some(irq) = &irq {
        resources.push(irq);
    }
    let crs = ResourceTemplate::new(resources);

    let hid = EISAName::new(dev.hid);
    let hid = Name::new(Path::new("_HID"), &hid);
    let crs = Name::new(Path::new("_CRS"), &crs);
    let uid = dev.uid.map(|uid| Name::new(Path::new("_UID"), &uid));
    let mut children: Vec<&dyn Aml> = vec![&hid];
    if let Some(uid) = &uid {
        children.push(uid);
    }
    children.push(&crs);

    let mut bytes = Vec::new();
    Device::new(Path::new(&dev.name), children).to_aml_bytes(&mut bytes);
    bytes
}

/// The objects of `\_SB`, each already encoded.
fn system_bus_devices(platform: &Platform) -> Vec<Vec<u8>> {
    let mut devices: Vec<Vec<u8>> = isa_devices(platform).iter().map(isa_device_aml).collect();
    devices.push(pci_host_bridge_aml());
    devices
}

/// `\_SB.PCI0`: the host bridge (ACPI 6.5 §6.1.5 `_HID` PNP0A08, PCI
/// Firmware 3.3 §4.1.1), its decoded resources and its routing table.
pub fn pci_host_bridge_aml() -> Vec<u8> {
    use alcazar_core::layout::{PCI_MMIO2_END, PCI_MMIO2_START, PCI_MMIO_END, PCI_MMIO_START};

    let bus = AddressSpace::<u16>::new_bus_number(0, 0);
    let config_ports = IO::new(0xcf8, 0xcf8, 1, 8);
    let io_low = AddressSpace::<u16>::new_io(0x0000, 0x0cf7, None);
    let io_high = AddressSpace::<u16>::new_io(0x0d00, 0xffff, None);
    let window = AddressSpace::<u32>::new_memory(
        AddressSpaceCacheable::NotCacheable,
        true,
        PCI_MMIO_START as u32,
        (PCI_MMIO_END - 1) as u32,
        None,
    );
    let window2 = AddressSpace::<u32>::new_memory(
        AddressSpaceCacheable::NotCacheable,
        true,
        PCI_MMIO2_START as u32,
        (PCI_MMIO2_END - 1) as u32,
        None,
    );
    let crs = ResourceTemplate::new(vec![
        &bus,
        &config_ports,
        &io_low,
        &io_high,
        &window,
        &window2,
    ]);

    let hid = EISAName::new("PNP0A08");
    let cid = EISAName::new("PNP0A03");
    let hid = Name::new(Path::new("_HID"), &hid);
    let cid = Name::new(Path::new("_CID"), &cid);
    let seg = Name::new(Path::new("_SEG"), &0u8);
    let bbn = Name::new(Path::new("_BBN"), &0u8);
    let uid = Name::new(Path::new("_UID"), &0u8);
    let crs = Name::new(Path::new("_CRS"), &crs);
    let prt = Encoded(routing_table());
    let prt = Name::new(Path::new("_PRT"), &prt);
    let mut bytes = Vec::new();
    Device::new(
        Path::new("PCI0"),
        vec![&hid, &cid, &seg, &bbn, &uid, &crs, &prt],
    )
    .to_aml_bytes(&mut bytes);
    bytes
}

/// The `_PRT` package: for every slot (1-31) and interrupt pin (INTA#..
/// INTD#, 0-3), `Package { address, pin, 0, gsi }` with address
/// `slot << 16 | 0xffff` (any function).
fn routing_table() -> Vec<u8> {
    let mut prt = PackageBuilder::new();
    for slot in 1..SLOTS as u8 {
        for pin in 0..4u8 {
            let address = u32::from(slot) << 16 | 0xffff;
            let gsi = u32::from(pci_intx_gsi(slot, pin + 1));
            let entry = Package::new(vec![&address, &pin, &0u8, &gsi]);
            prt.add_element(&entry);
        }
    }
    let mut bytes = Vec::new();
    prt.to_aml_bytes(&mut bytes);
    bytes
}

/// The AML of the definition block's body (everything after the header).
pub fn dsdt_body(platform: &Platform) -> Vec<u8> {
    let mut body = Vec::new();

    let s5 = Package::new(vec![&S5_SLP_TYP, &S5_SLP_TYP, &0u8, &0u8]);
    Name::new(Path::new("\\_S5_"), &s5).to_aml_bytes(&mut body);
    if platform.s3 {
        // Linux offers `mem` in /sys/power/state when `\_S3` evaluates.
        let s3 = Package::new(vec![&S3_SLP_TYP, &S3_SLP_TYP, &0u8, &0u8]);
        Name::new(Path::new("\\_S3_"), &s3).to_aml_bytes(&mut body);
    }

    let devices: Vec<Encoded> = system_bus_devices(platform)
        .into_iter()
        .map(Encoded)
        .collect();
    let children: Vec<&dyn Aml> = devices.iter().map(|d| d as &dyn Aml).collect();
    Scope::new(Path::new("\\_SB_"), children).to_aml_bytes(&mut body);
    body
}

/// The complete DSDT for `platform`: SDT header (signature `DSDT`) and
/// AML body.
pub fn build_dsdt(platform: &Platform) -> Vec<u8> {
    let mut table = Sdt::new(
        *b"DSDT",
        SDT_HEADER_LEN as u32,
        DSDT_REVISION,
        ACPI_OEM_ID,
        ACPI_OEM_TABLE_ID,
        ACPI_OEM_REVISION,
    );
    table.append_slice(&dsdt_body(platform));
    table.as_slice().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn irq_no_flags_is_a_mask() {
        let mut b = Vec::new();
        IrqNoFlags { irq: 12 }.to_aml_bytes(&mut b);
        assert_eq!(b, [0x22, 0x00, 0x10]);
        b.clear();
        IrqNoFlags { irq: 0 }.to_aml_bytes(&mut b);
        assert_eq!(b, [0x22, 0x01, 0x00]);
    }

    #[test]
    fn com1_device_encoding() {
        let aml = isa_device_aml(&isa_devices(&Platform::new(1))[0]);
        // ExtOpPrefix DeviceOp, then after the PkgLength the name "COM1".
        assert_eq!(&aml[0..2], &[0x5b, 0x82]);
        assert_eq!(&aml[3..7], b"COM1");
        // IO(Decode16, 0x3f8, 0x3f8, 1, 8) descriptor.
        let io = [0x47, 0x01, 0xf8, 0x03, 0xf8, 0x03, 0x01, 0x08];
        assert!(aml.windows(io.len()).any(|w| w == io));
    }

    #[test]
    fn s5_package_uses_the_pm_devices_slp_typ() {
        let body = dsdt_body(&Platform::new(1));
        // NameOp '\' "_S5_" PackageOp PkgLength NumElements BytePrefix 5 ...
        assert_eq!(&body[0..6], &[0x08, b'\\', b'_', b'S', b'5', b'_']);
        assert_eq!(body[6], 0x12);
        assert_eq!(body[8], 4);
        assert_eq!(&body[9..13], &[0x0a, S5_SLP_TYP, 0x0a, S5_SLP_TYP]);
        assert_eq!(&body[13..15], &[0x00, 0x00]);
    }

    #[test]
    fn s3_package_is_there_only_when_the_platform_can_wake() {
        let body = dsdt_body(&Platform::new(1));
        let s3 = [0x08, b'\\', b'_', b'S', b'3', b'_', 0x12];
        let at = body
            .windows(s3.len())
            .position(|w| w == s3)
            .expect("\\_S3_");
        assert_eq!(body[at + 8], 4);
        assert_eq!(
            &body[at + 9..at + 13],
            &[0x0a, S3_SLP_TYP, 0x0a, S3_SLP_TYP]
        );
        let mut no = Platform::new(1);
        no.s3 = false;
        let body = dsdt_body(&no);
        assert!(!body.windows(s3.len()).any(|w| w == s3));
    }
}
