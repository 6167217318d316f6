//! Fuzzes the IOAPIC (MMIO 0xfec00000-0xfec0001f) as the guest drives
//! it: IOREGSEL and IOWIN of any width at any offset (so every index,
//! ID, version, arbitration and the 24 redirection entries, half by
//! half), interleaved with pins going up and down (any pin number, valid
//! or not) and EOI broadcasts for any vector.
//!
//! Asserts, whatever the guest writes: no panic; a read fills only its
//! width; only the 24 real pins have redirection entries; every message
//! the IOAPIC sends carries the vector of an entry that was unmasked
//! (a masked or non-existent pin sends nothing); `inspect()` never
//! panics.
//!
//! Input: a sequence of [`common::Op`]s; offsets are from the MMIO base.

#![no_main]

#[path = "common.rs"]
mod common;

use std::sync::{Arc, Mutex};

use alcazar_core::irq::{InterruptMessage, MsiSink};
use alcazar_core::layout::IOAPIC_WINDOW as MMIO_SIZE;
use alcazar_devices::ioapic::PINS;
use alcazar_devices::Ioapic;
use common::{Input, Op};
use libfuzzer_sys::fuzz_target;

/// Redirection entry: the interrupt mask.
const RTE_MASKED: u64 = 1 << 16;

/// Records what the IOAPIC sends.
#[derive(Default)]
struct Sent(Mutex<Vec<InterruptMessage>>);

impl MsiSink for Sent {
    fn deliver(&self, message: InterruptMessage) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(message);
    }
}

fuzz_target!(|data: &[u8]| {
    let sent = Arc::new(Sent::default());
    let mut input = Input(data);
    let mut ioapic = Ioapic::new(input.take(1) as u8, sent.clone());
    while !input.is_empty() {
        // What was unmasked before the operation (a write may mask an
        // entry after it sent).
        let unmasked_before: Vec<u64> = (0..PINS as u8)
            .filter_map(|p| ioapic.redirection_entry(p))
            .filter(|e| e & RTE_MASKED == 0)
            .collect();
        let op = input.op(MMIO_SIZE);
        // Inspection is costly under the sanitizer: at time steps and at
        // the end (the fuzzer chooses where time steps fall).
        let look = matches!(op, Op::Time { .. }) || input.is_empty();
        match op {
            Op::Read { offset, width } => {
                common::read(&mut ioapic, offset, width);
            }
            Op::Write {
                offset,
                width,
                value,
            } => common::write(&mut ioapic, offset, width, value),
            Op::Time { .. } => {}
            Op::Other { what, arg } => {
                if what & 1 == 0 {
                    ioapic.set_irq(arg as u8, arg & 0x100 != 0);
                } else {
                    ioapic.eoi(arg as u8);
                }
            }
        }
        for pin in PINS as u16..=255 {
            assert!(
                ioapic.redirection_entry(pin as u8).is_none(),
                "pin {pin} exists"
            );
        }
        let unmasked_after: Vec<u64> = (0..PINS as u8)
            .filter_map(|p| ioapic.redirection_entry(p))
            .filter(|e| e & RTE_MASKED == 0)
            .collect();
        for m in std::mem::take(&mut *sent.0.lock().unwrap_or_else(|p| p.into_inner())) {
            let from_entry = |e: &u64| (*e & 0xff) as u8 == m.vector;
            assert!(
                unmasked_before.iter().any(from_entry) || unmasked_after.iter().any(from_entry),
                "{m:?} sent with no unmasked entry for its vector"
            );
        }
        if look {
            common::inspect(&ioapic);
        }
    }
});
