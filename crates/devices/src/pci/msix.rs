//! MSI-X (PCI Local Bus 3.0 §6.8.2): a table of interrupt messages in a
//! BAR, one entry per vector, with a pending-bit array.
//!
//! Each table entry is 16 bytes: message address (low, high), message
//! data, vector control (bit 0: masked). Signalling a vector sends its
//! message, or, while the vector or the whole function is masked, sets
//! its pending bit; unmasking sends what is pending (§6.8.2.9).
//!
//! On x86 a message is a write to `0xFEEx_xxxx` (Intel SDM Vol. 3A
//! §10.11, "Message Signalled Interrupts"): address bits 19:12 hold the
//! destination APIC ID, bit 2 the destination mode; data bits 7:0 hold the
//! vector, 10:8 the delivery mode, 15 the trigger mode. A message with
//! another address would be a DMA write into memory; Alcazar drops it.

use alcazar_core::inspect::Tree;
use alcazar_core::irq::{DeliveryMode, InterruptMessage, MsiSink};

/// Bytes per table entry.
pub const ENTRY_SIZE: u64 = 16;
/// Capability ID of MSI-X.
pub const CAPABILITY_ID: u8 = 0x11;
/// Message control: MSI-X enable.
pub const CONTROL_ENABLE: u16 = 1 << 15;
/// Message control: function mask.
pub const CONTROL_FUNCTION_MASK: u16 = 1 << 14;
/// Vector control: masked.
const VECTOR_MASKED: u32 = 1;

#[derive(Clone, Copy, Debug, Default)]
struct Entry {
    address_low: u32,
    address_high: u32,
    data: u32,
    control: u32,
}

/// The MSI-X state of one function: its table, pending bits and the
/// enable and function-mask bits of its capability.
#[derive(Debug)]
pub struct Msix {
    entries: Vec<Entry>,
    pending: Vec<bool>,
    enabled: bool,
    function_mask: bool,
}

impl Msix {
    /// A table of `vectors` entries, all masked (the reset state).
    pub fn new(vectors: u16) -> Self {
        let n = usize::from(vectors.max(1));
        Msix {
            entries: vec![
                Entry {
                    control: VECTOR_MASKED,
                    ..Entry::default()
                };
                n
            ],
            pending: vec![false; n],
            enabled: false,
            function_mask: false,
        }
    }

    /// Number of vectors.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table is empty (never: there is at least one entry).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes of the table in its BAR.
    pub fn table_size(&self) -> u64 {
        self.entries.len() as u64 * ENTRY_SIZE
    }

    /// Bytes of the pending-bit array (whole QWORDs).
    pub fn pba_size(&self) -> u64 {
        self.entries.len().div_ceil(64) as u64 * 8
    }

    /// Whether the driver enabled MSI-X.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The capability body (after ID and next pointer): message control,
    /// table offset/BIR, PBA offset/BIR; with the writable mask.
    pub fn capability(&self, bar: u8, table_offset: u32, pba_offset: u32) -> ([u8; 10], [u8; 10]) {
        let mut body = [0u8; 10];
        let control = (self.entries.len() - 1) as u16;
        body[0..2].copy_from_slice(&control.to_le_bytes());
        body[2..6].copy_from_slice(&(table_offset | u32::from(bar)).to_le_bytes());
        body[6..10].copy_from_slice(&(pba_offset | u32::from(bar)).to_le_bytes());
        let mut mask = [0u8; 10];
        mask[1] = ((CONTROL_ENABLE | CONTROL_FUNCTION_MASK) >> 8) as u8;
        (body, mask)
    }

    /// The guest wrote the capability's message control.
    pub fn set_control(&mut self, control: u16, sink: &dyn MsiSink) {
        self.enabled = control & CONTROL_ENABLE != 0;
        self.function_mask = control & CONTROL_FUNCTION_MASK != 0;
        self.deliver_pending(sink);
    }

    /// Reads the table at `offset` (any width, naturally aligned or not:
    /// bytes outside the table read as zero).
    pub fn read_table(&self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = self.table_byte(offset.saturating_add(i as u64));
        }
    }

    fn table_byte(&self, offset: u64) -> u8 {
        let Some(entry) = self.entries.get((offset / ENTRY_SIZE) as usize) else {
            return 0;
        };
        let field = match (offset % ENTRY_SIZE) / 4 {
            0 => entry.address_low,
            1 => entry.address_high,
            2 => entry.data,
            _ => entry.control,
        };
        (field >> (8 * (offset % 4))) as u8
    }

    /// Writes the table at `offset`; unmasking a vector with its pending
    /// bit set sends it.
    pub fn write_table(&mut self, offset: u64, data: &[u8], sink: &dyn MsiSink) {
        for (i, &b) in data.iter().enumerate() {
            let at = offset.saturating_add(i as u64);
            let Some(entry) = self.entries.get_mut((at / ENTRY_SIZE) as usize) else {
                continue;
            };
            let field = match (at % ENTRY_SIZE) / 4 {
                0 => &mut entry.address_low,
                1 => &mut entry.address_high,
                2 => &mut entry.data,
                _ => &mut entry.control,
            };
            let shift = 8 * (at % 4);
            *field = (*field & !(0xff << shift)) | (u32::from(b) << shift);
        }
        self.deliver_pending(sink);
    }

    /// Reads the pending-bit array at `offset`.
    pub fn read_pba(&self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            let bit0 = offset.saturating_add(i as u64).saturating_mul(8);
            *b = (0..8)
                .filter(|k| {
                    self.pending
                        .get(bit0.saturating_add(*k) as usize)
                        .copied()
                        .unwrap_or(false)
                })
                .fold(0, |acc, k| acc | (1 << k));
        }
    }

    /// Signals `vector`: sends its message or marks it pending. A vector
    /// past the table is ignored.
    pub fn signal(&mut self, vector: u16, sink: &dyn MsiSink) {
        let v = usize::from(vector);
        let Some(entry) = self.entries.get(v).copied() else {
            return;
        };
        if self.function_mask || entry.control & VECTOR_MASKED != 0 {
            self.pending[v] = true;
            return;
        }
        send(&entry, sink);
    }

    /// The inspector's view: enable, function mask, and each vector's
    /// message address, data, mask bit and pending bit (§6.8.2.6-6.8.2.9).
    pub fn inspect(&self) -> Tree {
        let mut t = Tree::new();
        t.value("enabled", self.enabled)
            .value("function_mask", self.function_mask);
        let mut vectors = Tree::new();
        for (i, (e, &pending)) in self.entries.iter().zip(&self.pending).enumerate() {
            let address = u64::from(e.address_high) << 32 | u64::from(e.address_low);
            let mut v = Tree::new();
            v.hex("message_address", address, 16)
                .hex("message_data", u64::from(e.data), 8)
                .value("masked", e.control & VECTOR_MASKED != 0)
                .value("pending", pending);
            vectors.child(i.to_string(), v);
        }
        t.child("vectors", vectors);
        t
    }

    fn deliver_pending(&mut self, sink: &dyn MsiSink) {
        if !self.enabled || self.function_mask {
            return;
        }
        for (entry, pending) in self.entries.iter().zip(self.pending.iter_mut()) {
            if *pending && entry.control & VECTOR_MASKED == 0 {
                *pending = false;
                send(entry, sink);
            }
        }
    }
}

/// Decodes an x86 MSI address/data pair (SDM Vol. 3A §10.11.1, §10.11.2).
pub fn decode_message(address: u64, data: u32) -> Option<InterruptMessage> {
    if address >> 20 != 0xfee {
        return None;
    }
    Some(InterruptMessage {
        vector: data as u8,
        delivery_mode: DeliveryMode::from_bits((data >> 8) as u8)?,
        dest_mode_logical: address & (1 << 2) != 0,
        destination: (address >> 12) as u8,
        trigger_level: data & (1 << 15) != 0,
    })
}

fn send(entry: &Entry, sink: &dyn MsiSink) {
    let address = u64::from(entry.address_high) << 32 | u64::from(entry.address_low);
    match decode_message(address, entry.data) {
        Some(message) => sink.deliver(message),
        None => tracing::debug!(
            address = format_args!("{address:#x}"),
            data = entry.data,
            "MSI-X message dropped: not an interrupt"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Sink(Mutex<Vec<InterruptMessage>>);
    impl MsiSink for Sink {
        fn deliver(&self, m: InterruptMessage) {
            self.0.lock().unwrap().push(m);
        }
    }

    fn program(m: &mut Msix, v: u64, vector: u8, sink: &Sink) {
        let base = v * ENTRY_SIZE;
        m.write_table(base, &0xfee0_1000u32.to_le_bytes(), sink);
        m.write_table(base + 4, &0u32.to_le_bytes(), sink);
        m.write_table(base + 8, &u32::from(vector).to_le_bytes(), sink);
    }

    #[test]
    fn masked_vectors_pend_and_fire_when_unmasked() {
        let sink = Sink::default();
        let mut m = Msix::new(2);
        m.set_control(CONTROL_ENABLE, &sink);
        program(&mut m, 1, 0x41, &sink);
        m.signal(1, &sink);
        assert!(sink.0.lock().unwrap().is_empty());
        let mut pba = [0u8; 8];
        m.read_pba(0, &mut pba);
        assert_eq!(pba[0], 0b10);
        m.write_table(ENTRY_SIZE + 12, &0u32.to_le_bytes(), &sink);
        let got = sink.0.lock().unwrap().clone();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].vector, 0x41);
        assert_eq!(got[0].destination, 1);
        m.read_pba(0, &mut pba);
        assert_eq!(pba[0], 0);
    }

    #[test]
    fn messages_outside_the_interrupt_window_are_dropped() {
        assert!(decode_message(0x1000, 0x30).is_none());
        assert!(decode_message(0xfee0_0000, 0x330).is_none()); // reserved mode 3
        let m = decode_message(0xfee0_0004, 0x8030).unwrap();
        assert!(m.dest_mode_logical && m.trigger_level);
    }

    #[test]
    fn wild_offsets_and_vectors_are_ignored() {
        let sink = Sink::default();
        let mut m = Msix::new(1);
        m.write_table(u64::MAX - 2, &[1, 2, 3, 4], &sink);
        m.signal(999, &sink);
        let mut b = [0xffu8; 4];
        m.read_table(1 << 40, &mut b);
        assert_eq!(b, [0; 4]);
    }
}
