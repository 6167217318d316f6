//! Interrupt lines, as a device sees them.
//!
//! A device raises an interrupt by driving a line; what is at the other end
//! (an 8259A PIC input, an IOAPIC pin, both, or nothing yet) is decided by
//! whoever wires the machine. Edge-triggered devices (ISA: UART, PIT, RTC)
//! use [`IrqLine::pulse`] or a rising [`IrqLine::set_level`]; level-triggered
//! ones (PCI INTx) hold the level until the guest acknowledges the device.

/// One interrupt request line.
pub trait IrqLine: Send + Sync {
    /// Drives the line high (`true`) or low (`false`).
    fn set_level(&self, high: bool);

    /// A rising then falling edge: how an edge-triggered ISA device signals.
    fn pulse(&self) {
        self.set_level(true);
        self.set_level(false);
    }
}

/// A line connected to nothing, for machines without an interrupt
/// controller (the foundation's kit guests poll).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoIrq;

impl IrqLine for NoIrq {
    fn set_level(&self, _high: bool) {}
}
