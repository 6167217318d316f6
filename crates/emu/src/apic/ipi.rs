//! Interrupt messages between local APICs (SDM Vol. 3A §10.6): what an
//! ICR write or an IOAPIC/MSI message says, and which APICs it reaches
//! (§10.6.2: physical and logical destinations, flat and cluster models,
//! x2APIC logical clusters of §10.12.10, destination shorthands).

use alcazar_core::irq::{DeliveryMode, InterruptMessage};

use super::regs::ApicState;

/// How a message is delivered (ICR bits 10:8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// To every destination, at the vector.
    Fixed,
    /// To one destination: the one with the lowest task priority (ties:
    /// the lowest vCPU index; focus processors are not modelled).
    LowestPriority,
    /// A system-management interrupt (not modelled: dropped).
    Smi,
    /// A non-maskable interrupt.
    Nmi,
    /// INIT (a level de-assert is a no-op on this APIC version).
    Init,
    /// A STARTUP IPI: start at `vector << 12` in real mode.
    StartUp,
    /// As from an 8259A: the vector comes from the PIC's INTA cycle.
    ExtInt,
    /// The reserved encoding 0b011: dropped.
    Reserved,
}

impl Mode {
    fn from_bits(bits: u64) -> Mode {
        match bits & 7 {
            0 => Mode::Fixed,
            1 => Mode::LowestPriority,
            2 => Mode::Smi,
            4 => Mode::Nmi,
            5 => Mode::Init,
            6 => Mode::StartUp,
            7 => Mode::ExtInt,
            _ => Mode::Reserved,
        }
    }
}

/// ICR bits 19:18.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shorthand {
    /// The destination field says who.
    None,
    /// The sender only.
    SelfOnly,
    /// Every APIC, the sender included.
    All,
    /// Every APIC but the sender.
    AllButSelf,
}

/// One interrupt message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipi {
    /// Vector (fixed, lowest priority, STARTUP).
    pub vector: u8,
    /// Delivery mode.
    pub mode: Mode,
    /// The destination is logical.
    pub logical: bool,
    /// Physical APIC ID or logical destination.
    pub dest: u32,
    /// The destination is a 32-bit x2APIC one (else 8 bits).
    pub wide: bool,
    /// Shorthand.
    pub shorthand: Shorthand,
    /// Level-triggered.
    pub level_trigger: bool,
    /// Level asserted (ICR bit 14; always set for messages from the IOAPIC).
    pub assert: bool,
}

impl Ipi {
    /// The message an ICR value describes (`x2`: x2APIC format, with the
    /// 32-bit destination in bits 63:32; else the xAPIC destination in
    /// bits 63:56).
    pub fn from_icr(icr: u64, x2: bool) -> Ipi {
        let shorthand = match (icr >> 18) & 3 {
            0 => Shorthand::None,
            1 => Shorthand::SelfOnly,
            2 => Shorthand::All,
            _ => Shorthand::AllButSelf,
        };
        Ipi {
            vector: icr as u8,
            mode: Mode::from_bits(icr >> 8),
            logical: icr & (1 << 11) != 0,
            dest: if x2 {
                (icr >> 32) as u32
            } else {
                (icr >> 56) as u32
            },
            wide: x2,
            shorthand,
            level_trigger: icr & (1 << 15) != 0,
            assert: icr & (1 << 14) != 0,
        }
    }

    /// The x2APIC SELF IPI register's message: fixed, edge, to self.
    pub fn self_ipi(vector: u8) -> Ipi {
        Ipi {
            vector,
            mode: Mode::Fixed,
            logical: false,
            dest: 0,
            wide: true,
            shorthand: Shorthand::SelfOnly,
            level_trigger: false,
            assert: true,
        }
    }

    /// An IOAPIC redirection entry's or MSI's message (8-bit destination,
    /// no shorthand).
    pub fn from_message(m: InterruptMessage) -> Ipi {
        let mode = match m.delivery_mode {
            DeliveryMode::Fixed => Mode::Fixed,
            DeliveryMode::LowestPriority => Mode::LowestPriority,
            DeliveryMode::Smi => Mode::Smi,
            DeliveryMode::Nmi => Mode::Nmi,
            DeliveryMode::Init => Mode::Init,
            DeliveryMode::ExtInt => Mode::ExtInt,
        };
        Ipi {
            vector: m.vector,
            mode,
            logical: m.dest_mode_logical,
            dest: u32::from(m.destination),
            wide: false,
            shorthand: Shorthand::None,
            level_trigger: m.trigger_level,
            assert: true,
        }
    }

    /// Whether the sender must refuse it with "send illegal vector"
    /// (§10.5.3): a fixed or lowest-priority vector below 16.
    pub fn illegal_vector(&self) -> bool {
        matches!(self.mode, Mode::Fixed | Mode::LowestPriority) && self.vector < 16
    }

    /// Whether `apic` is one of the message's destinations (shorthands are
    /// the bus's business).
    pub fn matches(&self, apic: &ApicState) -> bool {
        let broadcast = if self.wide { u32::MAX } else { 0xff };
        if self.dest == broadcast {
            return true;
        }
        if apic.x2apic() {
            if !self.logical {
                return self.dest == apic.id();
            }
            // x2APIC logical: cluster in 31:16, member bitmap in 15:0.
            let ldr = apic.logical_id();
            return self.dest >> 16 == ldr >> 16 && self.dest & ldr & 0xffff != 0;
        }
        let dest = self.dest & 0xff;
        if !self.logical {
            return dest == apic.id();
        }
        let ldr = apic.logical_id() >> 24;
        if apic.dfr >> 28 == 0xf {
            // Flat model: a bitmap of up to eight APICs.
            dest & ldr != 0
        } else {
            // Cluster model: cluster in 7:4 (15 = all clusters), member
            // bitmap in 3:0.
            (dest >> 4 == ldr >> 4 || dest >> 4 == 0xf) && dest & ldr & 0xf != 0
        }
    }
}
