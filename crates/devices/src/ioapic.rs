//! Intel 82093AA I/O APIC: 24 interrupt pins turned into interrupt
//! messages for the local APICs.
//!
//! MMIO at [`layout::IOAPIC_BASE`] (0xfec00000), [`layout::IOAPIC_WINDOW`] bytes: IOREGSEL at
//! offset 0x00 selects a register, IOWIN at 0x10 reads and writes it.
//! Registers: IOAPICID (0x00), IOAPICVER (0x01, reads 0x00170011: version
//! 0x11, 24 redirection entries), IOAPICARB (0x02) and the
//! `redirection_table`, 24 64-bit entries at 0x10-0x3f (low dword first).
//! Inputs: [`Ioapic::set_irq`] (or an [`IoapicLine`] per pin). Output:
//! [`InterruptMessage`]s to a [`MsiSink`] (the local APICs); the local
//! APICs' EOI broadcast for level-triggered vectors comes back through
//! [`Ioapic::eoi`].
//!
//! Reference: Intel 82093AA I/O Advanced Programmable Interrupt Controller
//! datasheet (order 290566): §3.1 "Memory Mapped Registers", §3.2.1-3.2.3
//! (ID, version, arbitration: loaded from the ID when the ID is written),
//! §3.2.4 "I/O Redirection Table Registers" (vector, delivery mode,
//! destination mode, delivery status, polarity, remote IRR, trigger mode,
//! mask, destination).
//!
//! Semantics: an edge-triggered pin delivers on each rising edge while
//! unmasked; edges on a masked pin are lost. A level-triggered pin
//! delivers while asserted, unmasked and its remote IRR is clear, and
//! sets remote IRR; an EOI for the entry's vector clears remote IRR and
//! re-delivers if the pin is still asserted. Unmasking an asserted level
//! pin delivers. Switching an entry to edge clears its remote IRR (what
//! Linux's `__eoi_ioapic_pin` relies on for a version 0x11 IOAPIC, which
//! has no EOI register). SMI, NMI, INIT and ExtINT entries are always
//! edge-triggered, as the datasheet requires; entries with a reserved
//! delivery mode deliver nothing.
//!
//! Left out: the polarity bit is stored but pins are modelled logically
//! (`set_irq(pin, true)` means asserted, whatever the polarity), as KVM
//! and QEMU do; the VMM's ACPI tables describe every line as active high.
//! Delivery is instantaneous, so delivery status always reads idle, and
//! the arbitration protocol of the APIC serial bus does not exist. IOREGSEL
//! and IOWIN take any access width (a partial write of IOWIN merges into
//! the selected register); everything else in the window reads as zero.

use std::sync::{Arc, Mutex};

use alcazar_core::inspect::Tree;
use alcazar_core::irq::{DeliveryMode, InterruptMessage, IrqLine, MsiSink};
use alcazar_core::{layout, BusDevice};

mod inspect;

/// Number of interrupt input pins ([`layout::IOAPIC_PINS`]).
pub const PINS: usize = layout::IOAPIC_PINS as usize;
/// IOAPICVER: maximum redirection entry 23, version 0x11.
pub const VERSION: u32 = ((PINS as u32 - 1) << 16) | 0x11;

const IOREGSEL: u64 = 0x00;
const IOWIN: u64 = 0x10;
const REG_ID: u8 = 0x00;
const REG_VERSION: u8 = 0x01;
const REG_ARBITRATION: u8 = 0x02;
const REG_REDIRECTION: u8 = 0x10;
const ID_SHIFT: u32 = 24;

// Redirection entry fields.
const RTE_VECTOR: u64 = 0xff;
const RTE_DELIVERY_MODE_SHIFT: u64 = 8;
const RTE_DEST_LOGICAL: u64 = 1 << 11;
const RTE_REMOTE_IRR: u64 = 1 << 14;
const RTE_TRIGGER_LEVEL: u64 = 1 << 15;
const RTE_MASKED: u64 = 1 << 16;
const RTE_DESTINATION_SHIFT: u64 = 56;
/// Bits the guest may write: vector, delivery mode, destination mode,
/// polarity, trigger mode, mask and destination (delivery status and
/// remote IRR are read-only, 55:17 reserved).
const RTE_WRITABLE: u64 = 0xff00_0000_0001_afff;

/// The 82093AA.
pub struct Ioapic {
    id: u8,
    arbitration_id: u8,
    ioregsel: u8,
    redirection_table: [u64; PINS],
    /// Pins currently asserted, one bit each.
    asserted: u32,
    sink: Arc<dyn MsiSink>,
}

impl std::fmt::Debug for Ioapic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ioapic")
            .field("id", &self.id)
            .field("ioregsel", &self.ioregsel)
            .field("asserted", &format_args!("{:#08x}", self.asserted))
            .field("redirection_table", &self.redirection_table)
            .finish_non_exhaustive()
    }
}

impl Ioapic {
    /// An IOAPIC with APIC ID `id` (4 bits, as the MADT declares it) and
    /// every pin masked, sending messages to `sink`.
    pub fn new(id: u8, sink: Arc<dyn MsiSink>) -> Self {
        Ioapic {
            id: id & 0x0f,
            arbitration_id: id & 0x0f,
            ioregsel: 0,
            redirection_table: [RTE_MASKED; PINS],
            asserted: 0,
            sink,
        }
    }

    /// The IOAPIC's APIC ID.
    pub fn id(&self) -> u8 {
        self.id
    }

    /// Redirection entry `pin`, if there is such a pin.
    pub fn redirection_entry(&self, pin: u8) -> Option<u64> {
        self.redirection_table.get(usize::from(pin)).copied()
    }

    /// Drives input `pin` (0-23): `true` is asserted. Other pins are
    /// ignored.
    pub fn set_irq(&mut self, pin: u8, level: bool) {
        let Some(&entry) = self.redirection_table.get(usize::from(pin)) else {
            tracing::debug!(pin, "IOAPIC: no such pin");
            return;
        };
        let bit = 1 << pin;
        let rising = level && self.asserted & bit == 0;
        if level {
            self.asserted |= bit;
        } else {
            self.asserted &= !bit;
        }
        if entry & RTE_MASKED != 0 {
            return;
        }
        if level_triggered(entry) {
            if rising && entry & RTE_REMOTE_IRR != 0 {
                let bits = (entry >> RTE_DELIVERY_MODE_SHIFT) as u8 & 7;
                if let Some(mode) = DeliveryMode::from_bits(bits) {
                    self.sink.eoi_overdue(message_of(entry, mode));
                }
            }
            self.service(pin);
        } else if rising {
            self.deliver(pin);
        }
    }

    /// The local APICs' EOI for `vector`: every level-triggered entry with
    /// that vector and remote IRR set has remote IRR cleared and, if its
    /// pin is still asserted, delivers again.
    pub fn eoi(&mut self, vector: u8) {
        for pin in 0..PINS as u8 {
            let entry = &mut self.redirection_table[usize::from(pin)];
            if *entry & RTE_REMOTE_IRR != 0 && (*entry & RTE_VECTOR) as u8 == vector {
                *entry &= !RTE_REMOTE_IRR;
                self.service(pin);
            }
        }
    }

    /// Delivers a level-triggered pin if it is asserted, unmasked and not
    /// waiting for an EOI.
    fn service(&mut self, pin: u8) {
        let Some(&entry) = self.redirection_table.get(usize::from(pin)) else {
            return;
        };
        let asserted = self.asserted & (1 << pin) != 0;
        let ready = entry & (RTE_MASKED | RTE_REMOTE_IRR) == 0;
        if asserted && ready && level_triggered(entry) {
            self.deliver(pin);
        }
    }

    fn deliver(&mut self, pin: u8) {
        let Some(entry) = self.redirection_table.get_mut(usize::from(pin)) else {
            return;
        };
        let bits = (*entry >> RTE_DELIVERY_MODE_SHIFT) as u8 & 7;
        let Some(delivery_mode) = DeliveryMode::from_bits(bits) else {
            tracing::debug!(pin, bits, "IOAPIC: reserved delivery mode, nothing sent");
            return;
        };
        if level_triggered(*entry) {
            *entry |= RTE_REMOTE_IRR;
        }
        let message = message_of(*entry, delivery_mode);
        self.sink.deliver(message);
    }

    /// Reads the register IOREGSEL selects.
    fn read_register(&self, index: u8) -> u32 {
        match index {
            REG_ID => u32::from(self.id) << ID_SHIFT,
            REG_VERSION => VERSION,
            REG_ARBITRATION => u32::from(self.arbitration_id) << ID_SHIFT,
            _ => match redirection_half(index) {
                Some((pin, high)) => {
                    let entry = self.redirection_table[pin];
                    (if high { entry >> 32 } else { entry }) as u32
                }
                None => 0,
            },
        }
    }

    /// Writes the register IOREGSEL selects (the version and arbitration
    /// registers are read-only).
    fn write_register(&mut self, index: u8, value: u32) {
        if index == REG_ID {
            self.id = (value >> ID_SHIFT) as u8 & 0x0f;
            self.arbitration_id = self.id;
            return;
        }
        let Some((pin, high)) = redirection_half(index) else {
            return;
        };
        let old = self.redirection_table[pin];
        let merged = if high {
            (old & 0xffff_ffff) | u64::from(value) << 32
        } else {
            (old & !0xffff_ffff) | u64::from(value)
        };
        let mut entry = (merged & RTE_WRITABLE) | (old & !RTE_WRITABLE & RTE_REMOTE_IRR);
        if !level_triggered(entry) {
            entry &= !RTE_REMOTE_IRR;
        }
        self.redirection_table[pin] = entry;
        if route_of(entry) != route_of(old) {
            self.sink.route_changed(pin as u8, route_of(entry));
        }
        self.service(pin as u8);
    }
}

/// The message `entry` sends, if its delivery mode is not reserved.
fn route_of(entry: u64) -> Option<InterruptMessage> {
    let bits = (entry >> RTE_DELIVERY_MODE_SHIFT) as u8 & 7;
    DeliveryMode::from_bits(bits).map(|mode| message_of(entry, mode))
}

/// The message of `entry` with its decoded delivery mode.
fn message_of(entry: u64, delivery_mode: DeliveryMode) -> InterruptMessage {
    InterruptMessage {
        vector: (entry & RTE_VECTOR) as u8,
        delivery_mode,
        dest_mode_logical: entry & RTE_DEST_LOGICAL != 0,
        destination: (entry >> RTE_DESTINATION_SHIFT) as u8,
        trigger_level: level_triggered(entry),
    }
}

/// Whether an entry is level-triggered: its trigger mode bit, for the
/// delivery modes that may be level-triggered at all.
fn level_triggered(entry: u64) -> bool {
    let bits = (entry >> RTE_DELIVERY_MODE_SHIFT) as u8 & 7;
    let fixed_or_lowest = matches!(
        DeliveryMode::from_bits(bits),
        Some(DeliveryMode::Fixed | DeliveryMode::LowestPriority)
    );
    entry & RTE_TRIGGER_LEVEL != 0 && fixed_or_lowest
}

/// The (pin, high dword) a redirection register index selects.
fn redirection_half(index: u8) -> Option<(usize, bool)> {
    let n = usize::from(index.checked_sub(REG_REDIRECTION)?);
    (n < 2 * PINS).then_some((n / 2, n % 2 == 1))
}

impl BusDevice for Ioapic {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let window = self.read_register(self.ioregsel).to_le_bytes();
        let select = u32::from(self.ioregsel).to_le_bytes();
        for (i, byte) in data.iter_mut().enumerate() {
            let at = offset.saturating_add(i as u64);
            *byte = match at {
                IOREGSEL..=0x03 => select[(at - IOREGSEL) as usize],
                IOWIN..=0x13 => window[(at - IOWIN) as usize],
                _ => 0,
            };
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let mut select = u32::from(self.ioregsel).to_le_bytes();
        let mut window = None;
        for (i, &byte) in data.iter().enumerate() {
            let at = offset.saturating_add(i as u64);
            match at {
                IOREGSEL..=0x03 => select[(at - IOREGSEL) as usize] = byte,
                IOWIN..=0x13 => {
                    let current = self.read_register(self.ioregsel).to_le_bytes();
                    window.get_or_insert(current)[(at - IOWIN) as usize] = byte;
                }
                _ => {}
            }
        }
        if let Some(window) = window {
            self.write_register(self.ioregsel, u32::from_le_bytes(window));
        }
        self.ioregsel = select[0];
    }

    /// ID, version, IOREGSEL and the decoded redirection table.
    fn inspect(&self) -> Tree {
        inspect::tree(self)
    }
}

/// One IOAPIC pin as an [`IrqLine`], for devices wired to it.
pub struct IoapicLine {
    ioapic: Arc<Mutex<Ioapic>>,
    pin: u8,
}

impl IoapicLine {
    /// Pin `pin` (0-23) of `ioapic`.
    pub fn new(ioapic: Arc<Mutex<Ioapic>>, pin: u8) -> Self {
        IoapicLine { ioapic, pin }
    }
}

impl IrqLine for IoapicLine {
    fn set_level(&self, high: bool) {
        alcazar_core::bus::lock(&self.ioapic).set_irq(self.pin, high);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Sink(Mutex<Vec<InterruptMessage>>);

    impl MsiSink for Sink {
        fn deliver(&self, message: InterruptMessage) {
            self.0.lock().unwrap().push(message);
        }
    }

    impl Sink {
        fn take(&self) -> Vec<InterruptMessage> {
            std::mem::take(&mut *self.0.lock().unwrap())
        }
    }

    fn ioapic() -> (Ioapic, Arc<Sink>) {
        let sink = Arc::new(Sink::default());
        (Ioapic::new(0, sink.clone()), sink)
    }

    /// A 32-bit register access through IOREGSEL/IOWIN, as Linux's
    /// `io_apic_read`/`io_apic_write` do it.
    fn read32(a: &mut Ioapic, index: u8) -> u32 {
        a.write(IOREGSEL, &u32::from(index).to_le_bytes());
        let mut v = [0u8; 4];
        a.read(IOWIN, &mut v);
        u32::from_le_bytes(v)
    }

    fn write32(a: &mut Ioapic, index: u8, value: u32) {
        a.write(IOREGSEL, &u32::from(index).to_le_bytes());
        a.write(IOWIN, &value.to_le_bytes());
    }

    /// Programs entry `pin` the way Linux's `__ioapic_write_entry` does:
    /// high dword, then low.
    fn program(a: &mut Ioapic, pin: u8, entry: u64) {
        write32(a, REG_REDIRECTION + 2 * pin + 1, (entry >> 32) as u32);
        write32(a, REG_REDIRECTION + 2 * pin, entry as u32);
    }

    fn entry(a: &mut Ioapic, pin: u8) -> u64 {
        let low = read32(a, REG_REDIRECTION + 2 * pin);
        let high = read32(a, REG_REDIRECTION + 2 * pin + 1);
        u64::from(high) << 32 | u64::from(low)
    }

    fn fixed(vector: u8, destination: u8) -> InterruptMessage {
        InterruptMessage {
            vector,
            delivery_mode: DeliveryMode::Fixed,
            dest_mode_logical: false,
            destination,
            trigger_level: false,
        }
    }

    #[test]
    fn id_version_and_arbitration_registers() {
        let sink = Arc::new(Sink::default());
        let mut a = Ioapic::new(2, sink);
        assert_eq!(read32(&mut a, REG_VERSION), 0x0017_0011);
        assert_eq!(read32(&mut a, REG_ID), 2 << 24);
        write32(&mut a, REG_ID, 0x0900_0000);
        assert_eq!(read32(&mut a, REG_ID), 0x0900_0000);
        assert_eq!(read32(&mut a, REG_ARBITRATION), 0x0900_0000);
        write32(&mut a, REG_VERSION, 0);
        assert_eq!(read32(&mut a, REG_VERSION), VERSION);
        assert_eq!(a.id(), 9);
    }

    #[test]
    fn ioregsel_reads_back_its_low_byte() {
        let (mut a, _) = ioapic();
        a.write(IOREGSEL, &0x1234_5621u32.to_le_bytes());
        let mut v = [0u8; 4];
        a.read(IOREGSEL, &mut v);
        assert_eq!(u32::from_le_bytes(v), 0x21);
    }

    #[test]
    fn redirection_entries_round_trip_through_ioregsel_and_iowin() {
        let (mut a, _) = ioapic();
        for pin in 0..PINS as u8 {
            assert_eq!(entry(&mut a, pin), RTE_MASKED, "masked at reset");
        }
        let value = 0x0300_0000_0000_a931; // dest 3, level, low, logical, lowest
        program(&mut a, 5, value);
        assert_eq!(entry(&mut a, 5), value);
        assert_eq!(a.redirection_entry(5), Some(value));
        program(&mut a, 23, u64::MAX);
        assert_eq!(entry(&mut a, 23), RTE_WRITABLE, "RO and reserved bits");
        assert_eq!(read32(&mut a, REG_REDIRECTION + 48), 0, "beyond the table");
        assert_eq!(a.redirection_entry(24), None);
    }

    #[test]
    fn edge_pins_deliver_once_per_rising_edge() {
        let (mut a, sink) = ioapic();
        program(&mut a, 2, 0x0100_0000_0000_0030); // IRQ0 via pin 2 to APIC 1
        a.set_irq(2, true);
        a.set_irq(2, true);
        assert_eq!(sink.take(), vec![fixed(0x30, 1)]);
        a.set_irq(2, false);
        a.set_irq(2, true);
        assert_eq!(sink.take(), vec![fixed(0x30, 1)]);
        assert_eq!(
            entry(&mut a, 2) & RTE_REMOTE_IRR,
            0,
            "no remote IRR for edges"
        );
    }

    #[test]
    fn ioapic_lines_pulse_edge_pins() {
        let sink = Arc::new(Sink::default());
        let shared = Arc::new(Mutex::new(Ioapic::new(0, sink.clone())));
        program(&mut shared.lock().unwrap(), 8, 0x38);
        let rtc_line = IoapicLine::new(shared.clone(), 8);
        rtc_line.pulse();
        rtc_line.pulse();
        assert_eq!(sink.take(), vec![fixed(0x38, 0); 2]);
    }

    #[test]
    fn level_pins_wait_for_eoi_and_redeliver_while_asserted() {
        let (mut a, sink) = ioapic();
        program(&mut a, 9, 0x0000_0000_0000_8041); // SCI: level, vector 0x41
        a.set_irq(9, true);
        let level = InterruptMessage {
            trigger_level: true,
            ..fixed(0x41, 0)
        };
        assert_eq!(sink.take(), vec![level]);
        assert_ne!(entry(&mut a, 9) & RTE_REMOTE_IRR, 0);
        a.set_irq(9, true);
        a.eoi(0x42);
        assert!(sink.take().is_empty(), "remote IRR holds it back");
        a.eoi(0x41);
        assert_eq!(sink.take(), vec![level], "still asserted: again");
        a.set_irq(9, false);
        a.eoi(0x41);
        assert!(sink.take().is_empty());
        assert_eq!(entry(&mut a, 9) & RTE_REMOTE_IRR, 0);
        a.set_irq(9, true);
        assert_eq!(sink.take(), vec![level]);
    }

    #[test]
    fn masked_pins_deliver_nothing_and_level_pins_deliver_on_unmask() {
        let (mut a, sink) = ioapic();
        program(&mut a, 4, RTE_MASKED | 0x34);
        program(&mut a, 10, RTE_MASKED | RTE_TRIGGER_LEVEL | 0x3a);
        a.set_irq(4, true);
        a.set_irq(10, true);
        assert!(sink.take().is_empty());
        program(&mut a, 4, 0x34);
        assert!(sink.take().is_empty(), "the edge was lost");
        program(&mut a, 10, RTE_TRIGGER_LEVEL | 0x3a);
        let level = InterruptMessage {
            trigger_level: true,
            ..fixed(0x3a, 0)
        };
        assert_eq!(sink.take(), vec![level]);
    }

    #[test]
    fn switching_to_edge_clears_remote_irr() {
        let (mut a, sink) = ioapic();
        program(&mut a, 11, RTE_TRIGGER_LEVEL | 0x3b);
        a.set_irq(11, true);
        sink.take();
        // __eoi_ioapic_pin on a version 0x11 IOAPIC: mask + edge, restore.
        program(&mut a, 11, RTE_MASKED | 0x3b);
        program(&mut a, 11, RTE_TRIGGER_LEVEL | 0x3b);
        assert_eq!(sink.take().len(), 1, "asserted and unblocked again");
    }

    #[test]
    fn special_delivery_modes_are_edge_triggered() {
        let (mut a, sink) = ioapic();
        program(&mut a, 0, RTE_TRIGGER_LEVEL | 7 << 8); // ExtINT
        program(
            &mut a,
            1,
            RTE_TRIGGER_LEVEL | 4 << 8 | RTE_DEST_LOGICAL | 0xff << 56,
        );
        program(&mut a, 3, 3 << 8 | 0x40); // reserved mode
        a.set_irq(0, true);
        a.set_irq(1, true);
        a.set_irq(3, true);
        let sent = sink.take();
        assert_eq!(sent.len(), 2);
        assert_eq!(sent[0].delivery_mode, DeliveryMode::ExtInt);
        assert!(!sent[0].trigger_level);
        assert_eq!(sent[1].delivery_mode, DeliveryMode::Nmi);
        assert!(sent[1].dest_mode_logical);
        assert_eq!(sent[1].destination, 0xff);
        assert_eq!(entry(&mut a, 0) & RTE_REMOTE_IRR, 0);
    }

    #[test]
    fn partial_iowin_writes_merge_into_the_register() {
        let (mut a, _) = ioapic();
        write32(&mut a, REG_REDIRECTION + 2, RTE_MASKED as u32 | 0x30);
        a.write(IOWIN, &[0x31]);
        assert_eq!(
            read32(&mut a, REG_REDIRECTION + 2),
            RTE_MASKED as u32 | 0x31
        );
        let mut b = [0u8; 1];
        a.read(IOWIN + 2, &mut b);
        assert_eq!(b[0], 0x01, "the mask bit's byte");
    }

    #[test]
    fn pins_beyond_23_are_ignored() {
        let (mut a, sink) = ioapic();
        a.set_irq(24, true);
        a.set_irq(255, true);
        assert!(sink.take().is_empty());
    }

    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn every_register_with_every_width() {
        let (mut a, sink) = ioapic();
        for index in 0..=255u8 {
            for value in [0u64, u64::MAX, 0x5555_5555_5555_5555, 0x0000_0000_0000_8030] {
                for len in [1, 2, 4, 8] {
                    a.write(IOREGSEL, &[index]);
                    a.write(IOWIN, &value.to_le_bytes()[..len]);
                    let mut data = [0u8; 8];
                    a.read(IOWIN, &mut data[..len]);
                    for pin in 0..PINS as u8 {
                        a.set_irq(pin, true);
                        a.eoi(0x30);
                        a.set_irq(pin, false);
                    }
                }
            }
            sink.take();
        }
        assert_eq!(read32(&mut a, REG_VERSION), VERSION);
    }

    #[test]
    fn hostile_guest_accesses_never_panic() {
        let (mut a, sink) = ioapic();
        let mut rng = 0xdead_beef_cafe_f00d;
        for round in 0..100_000 {
            let r = xorshift(&mut rng);
            let offset =
                [0, 1, 3, 4, 0xc, 0xf, 0x10, 0x11, 0x13, 0x14, 0x1f, u64::MAX][(r % 12) as usize];
            let len = [1, 2, 4, 8][(r >> 8) as usize % 4];
            let bytes = (r >> 3).to_le_bytes();
            if round % 2 == 0 {
                a.write(offset, &bytes[..len]);
            } else {
                let mut data = [0u8; 8];
                a.read(offset, &mut data[..len]);
            }
            a.set_irq((r >> 48) as u8 % 32, r & (1 << 60) != 0);
            a.eoi((r >> 40) as u8);
            if round % 1000 == 0 {
                sink.take();
                let _ = a.inspect();
            }
        }
        assert_eq!(read32(&mut a, REG_VERSION), VERSION);
    }

    /// Records what the IOAPIC says about its routes.
    #[derive(Default)]
    struct RouteSink(Mutex<Vec<(u8, Option<InterruptMessage>)>>);

    impl MsiSink for RouteSink {
        fn deliver(&self, _message: InterruptMessage) {}
        fn route_changed(&self, pin: u8, route: Option<InterruptMessage>) {
            self.0.lock().unwrap().push((pin, route));
        }
    }

    #[derive(Default)]
    struct OverdueSink(Mutex<Vec<InterruptMessage>>);

    impl MsiSink for OverdueSink {
        fn deliver(&self, _message: InterruptMessage) {}
        fn eoi_overdue(&self, message: InterruptMessage) {
            self.0.lock().unwrap().push(message);
        }
    }

    #[test]
    fn a_level_pin_rising_again_before_its_eoi_says_the_eoi_is_overdue() {
        let sink = Arc::new(OverdueSink::default());
        let mut a = Ioapic::new(0, sink.clone());
        program(&mut a, 2, 0x0000_0000_0000_8051);
        a.set_irq(2, true);
        a.set_irq(2, false);
        assert!(
            sink.0.lock().unwrap().is_empty(),
            "the first rise is delivered"
        );
        a.set_irq(2, true);
        let overdue = sink.0.lock().unwrap().clone();
        assert_eq!(overdue.len(), 1);
        assert_eq!(overdue[0].vector, 0x51);
        a.set_irq(2, false);
        a.eoi(0x51);
        a.set_irq(2, true);
        assert_eq!(
            sink.0.lock().unwrap().len(),
            1,
            "after the EOI nothing is owed"
        );
    }

    #[test]
    fn rewriting_an_entry_reports_its_route_but_masking_does_not() {
        let sink = Arc::new(RouteSink::default());
        let mut a = Ioapic::new(0, sink.clone());
        program(&mut a, 5, RTE_TRIGGER_LEVEL | 0x45);
        let routes = std::mem::take(&mut *sink.0.lock().unwrap());
        let (pin, route) = *routes.last().expect("a route was reported");
        assert_eq!(pin, 5);
        let route = route.expect("fixed delivery is not reserved");
        assert_eq!(route.vector, 0x45);
        assert!(route.trigger_level);
        program(&mut a, 5, RTE_MASKED | RTE_TRIGGER_LEVEL | 0x45);
        assert!(
            sink.0.lock().unwrap().is_empty(),
            "the mask is not part of the route"
        );
        program(&mut a, 5, 3 << RTE_DELIVERY_MODE_SHIFT | 0x45);
        assert_eq!(
            sink.0.lock().unwrap().last(),
            Some(&(5, None)),
            "reserved mode 3"
        );
    }
}
