//! Fuzzes the cascaded 8259A pair and its ELCR (ports 0x20-0x21,
//! 0xa0-0xa1, 0x4d0-0x4d1) as the guest drives them: ICW/OCW sequences
//! of any width at any offset, interleaved with the 16 ISA lines going
//! up and down and INTA cycles.
//!
//! Asserts, whatever the guest writes: no panic; a read fills only its
//! width; the vector the pair answers an INTA with is a base the guest
//! set by ICW2, masked to bits 7:3 as the 8259A datasheet says (T7-T3
//! from ICW2, the low three bits from the IR level), or the floating bus
//! (0xff) for a master IR cascaded to no slave; `inspect()` never panics.
//!
//! Input: a sequence of [`common::Op`]s; offsets are from port 0x20 and
//! span 0x20-0x4d1 and beyond.

#![no_main]

#[path = "common.rs"]
mod common;

use std::sync::Arc;

use alcazar_devices::pic::{Pic8259, MASTER_PORT};
use common::{Input, Line, Op};
use libfuzzer_sys::fuzz_target;

/// What the guest has programmed as each chip's ICW2, tracked the
/// datasheet's way: ICW1 (a command-port write with D4 set) starts an
/// initialization, the next data-port write is ICW2.
struct Shadow {
    expect_icw2: [bool; 2],
    base: [u8; 2],
}

impl Shadow {
    /// As the BIOS leaves the pair ([`Pic8259::new`], [`Pic8259::reset`]).
    fn power_on() -> Self {
        Shadow {
            expect_icw2: [false; 2],
            base: [0x08, 0x70],
        }
    }

    fn byte_written(&mut self, port: u64, value: u8) {
        let chip = match port {
            0x20 | 0x21 => 0,
            0xa0 | 0xa1 => 1,
            _ => return,
        };
        if port & 1 == 0 {
            if value & 0x10 != 0 {
                self.expect_icw2[chip] = true;
            }
        } else if self.expect_icw2[chip] {
            self.expect_icw2[chip] = false;
            self.base[chip] = value & 0xf8;
        }
    }

    fn check(&self, vector: u8) {
        assert!(
            vector == 0xff || self.base.contains(&(vector & 0xf8)),
            "vector {vector:#x} is not from ICW2 bases {:#x?}",
            self.base
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let intr = Arc::new(Line::default());
    let mut pic = Pic8259::new(intr.clone());
    let mut shadow = Shadow::power_on();
    let mut input = Input(data);
    let span = u64::from(0x4d2 - MASTER_PORT);
    while !input.is_empty() {
        let op = input.op(span);
        // Inspection is costly under the sanitizer: at time steps and at
        // the end (the fuzzer chooses where time steps fall).
        let look = matches!(op, Op::Time { .. }) || input.is_empty();
        match op {
            Op::Read { offset, width } => {
                common::read(&mut pic, offset, width);
            }
            Op::Write {
                offset,
                width,
                value,
            } => {
                common::write(&mut pic, offset, width, value);
                for (i, b) in value.to_le_bytes()[..width.min(8)].iter().enumerate() {
                    shadow.byte_written(offset + i as u64 + u64::from(MASTER_PORT), *b);
                }
            }
            Op::Time { .. } => {}
            Op::Other { what, arg } => match what % 4 {
                0 | 1 => pic.set_irq((arg & 0x1f) as u8, arg & 0x100 != 0),
                2 => shadow.check(pic.acknowledge()),
                _ => {
                    pic.reset();
                    shadow = Shadow::power_on();
                }
            },
        }
        if let Some(v) = pic.pending_vector() {
            shadow.check(v);
        }
        assert_eq!(
            pic.intr(),
            intr.level.load(std::sync::atomic::Ordering::SeqCst),
            "INTR and the CPU's pin disagree"
        );
        if look {
            common::inspect(&pic);
        }
    }
});
