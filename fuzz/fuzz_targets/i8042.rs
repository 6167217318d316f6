//! Fuzzes the i8042 keyboard controller (data port 0x60, command/status
//! port 0x64) as the guest drives it: controller commands, command-byte
//! and output-port writes (including the reset line), keyboard commands,
//! of any width.
//!
//! Asserts, whatever the guest writes: no panic; a read fills only its
//! width and bytes above the first float high; the output buffer drains
//! (status OBF clears) within its bounded depth of reads, so a guest
//! cannot grow it; `inspect()` never panics. A reset pulse only asks the
//! VM to stop (`VmControl`), it never aborts.
//!
//! Input: a sequence of [`common::Op`]s; offset 0 is the data port,
//! any other offset the command/status port (as [`I8042`] decodes it).

#![no_main]

#[path = "common.rs"]
mod common;

use std::sync::Arc;

use alcazar_core::control::VmControl;
use alcazar_devices::I8042;
use common::{Input, Line, Op};
use libfuzzer_sys::fuzz_target;

/// Status register: output buffer full.
const STATUS_OBF: u64 = 1;
/// More reads than the controller's queue can hold.
const DRAIN: usize = 64;

fuzz_target!(|data: &[u8]| {
    let irq1 = Arc::new(Line::default());
    let control = Arc::new(VmControl::new());
    let mut kbc = I8042::new(irq1, control);
    let mut input = Input(data);
    while !input.is_empty() {
        let op = input.op(8);
        // Inspection is costly under the sanitizer: at time steps and at
        // the end (the fuzzer chooses where time steps fall).
        let look = matches!(op, Op::Time { .. }) || input.is_empty();
        match op {
            Op::Read { offset, width } => {
                let v = common::read(&mut kbc, offset, width);
                if width > 1 {
                    let high = v >> 8;
                    let all = if width >= 8 {
                        u64::MAX >> 8
                    } else {
                        (1 << (8 * (width - 1))) - 1
                    };
                    assert_eq!(high, all, "upper bytes of a {width}-byte read do not float");
                }
            }
            Op::Write {
                offset,
                width,
                value,
            } => common::write(&mut kbc, offset, width, value),
            Op::Time { .. } => {}
            Op::Other { .. } => {
                let drained = (0..DRAIN).any(|_| {
                    let status = common::read(&mut kbc, 4, 1);
                    if status & STATUS_OBF == 0 {
                        return true;
                    }
                    common::read(&mut kbc, 0, 1);
                    false
                });
                assert!(drained, "the output buffer does not drain");
            }
        }
        if look {
            common::inspect(&kbc);
        }
    }
});
