//! Interrupt lines, as a device sees them.
//!
//! A device raises an interrupt by driving a line; what is at the other end
//! (an 8259A PIC input, an IOAPIC pin, both, or nothing yet) is decided by
//! whoever wires the machine. Edge-triggered devices (ISA: UART, PIT, RTC)
//! use [`IrqLine::pulse`] or a rising [`IrqLine::set_level`]; level-triggered
//! ones (PCI INTx) hold the level until the guest acknowledges the device.
//!
//! Beyond the lines, interrupts travel as [`InterruptMessage`]s (what an
//! IOAPIC redirection entry or a PCI MSI describes) to the VM's local
//! APICs. The local APICs belong to the engine (the emu engine models
//! them; under KVM they are KVM's); the engine offers them to the platform
//! as an [`ApicBus`], and the platform (8259A, IOAPIC) answers their
//! questions through [`PlatformInterrupts`].

use std::sync::Arc;

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

/// How an interrupt message is delivered (redirection entry bits 10:8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryMode {
    /// To every destination processor, at `vector`.
    Fixed = 0,
    /// To the destination processor with the lowest priority.
    LowestPriority = 1,
    /// A system management interrupt (vector ignored).
    Smi = 2,
    /// A non-maskable interrupt (vector ignored).
    Nmi = 4,
    /// An INIT (vector ignored).
    Init = 5,
    /// As from an 8259A: the processor gets the vector from the PIC's
    /// INTA cycle.
    ExtInt = 7,
}

impl DeliveryMode {
    /// The mode encoded in three bits, if it is not a reserved one.
    pub fn from_bits(bits: u8) -> Option<Self> {
        match bits & 7 {
            0 => Some(DeliveryMode::Fixed),
            1 => Some(DeliveryMode::LowestPriority),
            2 => Some(DeliveryMode::Smi),
            4 => Some(DeliveryMode::Nmi),
            5 => Some(DeliveryMode::Init),
            7 => Some(DeliveryMode::ExtInt),
            _ => None,
        }
    }
}

/// One interrupt message on its way to the local APICs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InterruptMessage {
    /// The vector (meaningful for fixed and lowest-priority delivery).
    pub vector: u8,
    /// How it is delivered.
    pub delivery_mode: DeliveryMode,
    /// `destination` is a logical destination (set of APICs) rather than
    /// a physical APIC ID.
    pub dest_mode_logical: bool,
    /// APIC ID or logical destination.
    pub destination: u8,
    /// Level-triggered: the receiving local APIC sets the vector's TMR
    /// bit and broadcasts its EOI back to the sender
    /// ([`PlatformInterrupts::eoi`]).
    pub trigger_level: bool,
}

/// Where the IOAPIC sends its messages: the local APICs.
///
/// [`MsiSink::deliver`] is called with the IOAPIC locked: it must not call
/// back into the IOAPIC (a local APIC queues the vector; its EOI arrives
/// later, from the guest's EOI write, and must be forwarded to
/// [`PlatformInterrupts::eoi`] without holding the local APIC's own lock).
pub trait MsiSink: Send + Sync {
    /// Delivers one message.
    fn deliver(&self, message: InterruptMessage);

    /// IOAPIC pin `pin`'s redirection entry was written: it now describes
    /// `route` (`None`: a reserved delivery mode). Sent whatever the mask
    /// bit says, since an EOI for a masked level-triggered entry must
    /// still arrive. Local APICs that must know in advance which vectors
    /// are level-triggered (KVM's split irqchip reports a guest EOI only
    /// for vectors its IOAPIC routes name) follow it; others ignore it.
    fn route_changed(&self, _pin: u8, _route: Option<InterruptMessage>) {}

    /// A level-triggered IOAPIC pin rose again while its remote IRR was
    /// still set: the local APICs owe the IOAPIC the EOI of `message`.
    /// Local APICs that report EOIs lazily (KVM on the PVM backend holds a
    /// guest's EOI until the vCPU next leaves `KVM_RUN`) get the vCPUs to
    /// report it now; others ignore it.
    fn eoi_overdue(&self, _message: InterruptMessage) {}
}

/// The platform's interrupt controllers as the local APICs see them.
pub trait PlatformInterrupts: Send + Sync {
    /// The 8259A's interrupt-acknowledge cycle: the vector of an ExtINT
    /// delivery (LINT0 in virtual-wire mode, or an IOAPIC ExtINT entry),
    /// or `None` if the PIC has nothing to give (the CPU then takes
    /// nothing).
    fn ext_int_acknowledge(&self) -> Option<u8>;
    /// A local APIC's EOI broadcast for a level-triggered `vector` (the
    /// IOAPIC clears remote IRR of the entries with that vector).
    fn eoi(&self, vector: u8);
}

/// The local APICs of one VM, as the platform sees them: the "APIC bus"
/// of the MP specification.
pub trait ApicBus: MsiSink {
    /// The 8259A's INTR output, wired to every local APIC's LINT0 (SDM
    /// Vol. 3A §10.5.1: LINT0 programmed as ExtINT makes the processor
    /// fetch the vector from the PIC).
    fn set_ext_int(&self, level: bool);
    /// Connects the platform controllers (once, before the vCPUs run).
    fn connect(&self, platform: Arc<dyn PlatformInterrupts>);
}
