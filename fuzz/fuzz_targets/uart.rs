//! Fuzzes the 16550A UART (COM1's eight ports, 0x3f8-0x3ff) as the guest
//! drives it: every register of any width at any offset (DLAB, FCR,
//! loopback, scratch), interleaved with host input arriving.
//!
//! Asserts, whatever the guest writes and the host sends: no panic; a
//! read fills only its width and, the UART being an 8-bit device, bytes
//! above the first float high (0xff); the receive FIFO never holds more
//! than its depth (`rx_space()` stays within it); LSR.DR is set exactly
//! when the FIFO holds a byte; `inspect()` never panics.
//!
//! Input: a sequence of [`common::Op`]s; offsets are from port 0x3f8.

#![no_main]

#[path = "common.rs"]
mod common;

use std::sync::Arc;

use alcazar_devices::serial::RX_FIFO_DEPTH;
use alcazar_devices::{ConsoleSink, Uart16550};
use common::{Input, Line, Op};
use libfuzzer_sys::fuzz_target;

/// The line status register's offset.
const LSR: u64 = 5;

fuzz_target!(|data: &[u8]| {
    let irq4 = Arc::new(Line::default());
    let mut uart = Uart16550::new(ConsoleSink::none(), irq4);
    let mut input = Input(data);
    while !input.is_empty() {
        let op = input.op(8);
        // Inspection is costly under the sanitizer: at time steps and at
        // the end (the fuzzer chooses where time steps fall).
        let look = matches!(op, Op::Time { .. }) || input.is_empty();
        match op {
            Op::Read { offset, width } => {
                let v = common::read(&mut uart, offset, width);
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
            } => common::write(&mut uart, offset, width, value),
            Op::Time { .. } => {}
            Op::Other { arg, .. } => {
                let bytes = arg.to_le_bytes();
                let n = (arg >> 60) as usize % 9;
                let space = uart.rx_space();
                let taken = uart.enqueue_input(&bytes[..n]);
                assert_eq!(taken, n.min(space), "enqueue took the wrong count");
            }
        }
        let space = uart.rx_space();
        assert!(space <= RX_FIFO_DEPTH, "receive FIFO beyond its depth");
        // LSR.DR says whether the FIFO holds a byte (DLAB does not hide LSR).
        let lsr = common::read(&mut uart, LSR, 1);
        assert_eq!(
            lsr & 1 == 1,
            space < RX_FIFO_DEPTH,
            "LSR.DR disagrees with the FIFO"
        );
        if look {
            common::inspect(&uart);
        }
    }
});
