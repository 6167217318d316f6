//! # alcazar-devices
//!
//! Alcazar's device models, one device per file, each behind the core's
//! [`alcazar_core::BusDevice`] trait. Each file opens with what it models,
//! the ports or MMIO it owns, the IRQ it raises and the manual it follows.
//!
//! The devices know nothing about how the machine is assembled: the VMM's
//! device registry creates them from the configuration and inserts them in
//! the bus at their ranges.

pub mod acpi_pm;
pub mod debug_exit;
pub mod debugcon;
pub mod fw_cfg;
pub mod i8042;
pub mod i8042_keys;
pub mod ide;
pub mod ioapic;
pub mod passt;
pub mod pci;
pub mod pic;
pub mod pit;
pub mod rtc;
pub mod serial;
pub mod sink;
pub mod system_control;
pub mod tap;
pub mod vga;
pub mod virtio;

pub use acpi_pm::AcpiPm;
pub use alcazar_core::irq::{DeliveryMode, InterruptMessage, MsiSink};
pub use debug_exit::DebugExit;
pub use debugcon::DebugCon;
pub use fw_cfg::FwCfg;
pub use i8042::I8042;
pub use i8042_keys::KeyTranslator;
pub use ide::{CdImage, DiskImage, IdeController, IdeDrive, IdeError, IdePosition};
pub use ioapic::{Ioapic, IoapicLine};
pub use pic::{Pic8259, PicLine, PicPort};
pub use pit::{DeadlineNotifier, Pit8254, TimedDevice};
pub use rtc::{MemorySizes, Rtc};
pub use serial::Uart16550;
pub use sink::ConsoleSink;
pub use system_control::SystemControlB;
pub use vga::{Vga, VgaMemory, VgaPorts};
