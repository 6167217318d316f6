//! Fuzzes the 8254 PIT (ports 0x40-0x43) and system control port B
//! (0x61, which gates counter 2 and reads its OUT) as the guest drives
//! them: control words, counts, latches and read-backs of any width at
//! any offset, interleaved with guest time passing and the timer thread's
//! ticks.
//!
//! Asserts, whatever the guest writes: no panic; a read fills only its
//! width; after a tick at `t` the next deadline is after `t` (nothing is
//! left overdue, so the timer thread cannot spin); `inspect()` never
//! panics.
//!
//! Input: a sequence of [`common::Op`]s; offsets are from port 0x40,
//! 0x21 is port 0x61.

#![no_main]

#[path = "common.rs"]
mod common;

use std::sync::{Arc, Mutex};

use alcazar_core::bus::lock;
use alcazar_devices::pit::{Pit8254, TimedDevice, PORT_COUNT};
use alcazar_devices::SystemControlB;
use common::{Input, Line, Op, Time};
use libfuzzer_sys::fuzz_target;

/// Port 0x61 less port 0x40.
const PORT_B: u64 = 0x21;

fuzz_target!(|data: &[u8]| {
    let mut time = Time::new();
    let irq0 = Arc::new(Line::default());
    let pit = Arc::new(Mutex::new(Pit8254::new(irq0, time.clock.clone())));
    let mut port_b = SystemControlB::with_pit(pit.clone());
    let mut input = Input(data);
    while !input.is_empty() {
        let op = input.op(PORT_B + 1);
        // Inspection is costly under the sanitizer: at time steps and at
        // the end (the fuzzer chooses where time steps fall).
        let look = matches!(op, Op::Time { .. }) || input.is_empty();
        match op {
            Op::Read { offset, width } if offset >= PORT_B => {
                common::read(&mut port_b, offset - PORT_B, width);
            }
            Op::Write {
                offset,
                width,
                value,
            } if offset >= PORT_B => common::write(&mut port_b, offset - PORT_B, width, value),
            Op::Read { offset, width } => {
                common::read(
                    &mut *lock(&pit),
                    offset % (2 * u64::from(PORT_COUNT)),
                    width,
                );
            }
            Op::Write {
                offset,
                width,
                value,
            } => common::write(
                &mut *lock(&pit),
                offset % (2 * u64::from(PORT_COUNT)),
                width,
                value,
            ),
            Op::Time { nanos } => {
                let t = time.step(nanos).max(time.clock.now());
                let mut p = lock(&pit);
                p.tick(t);
                if let Some(d) = p.next_deadline() {
                    assert!(d > t, "a deadline is overdue right after a tick");
                }
            }
            Op::Other { what, arg } => {
                let mut p = lock(&pit);
                if what & 1 == 0 {
                    p.set_gate((arg % 4) as usize, arg & 0x100 != 0);
                } else if let Some(d) = p.next_deadline() {
                    // The timer thread, woken at the deadline.
                    p.tick(d);
                }
            }
        }
        if look {
            common::inspect(&*lock(&pit));
            common::inspect(&port_b);
        }
    }
});
