//! Fuzzes the MC146818A RTC and its CMOS RAM (ports 0x70-0x71) as the
//! guest drives them: index and data of any width at any offset (so
//! every CMOS byte, registers A-D with divider resets, SET, the periodic
//! rate, alarms and BCD/binary modes), interleaved with guest time
//! passing and the timer thread's ticks.
//!
//! Asserts, whatever the guest writes: no panic; a read fills only its
//! width; after a tick at `t` the next deadline is after `t` (nothing is
//! left overdue, so the timer thread cannot spin); register D reads VRT
//! set; `inspect()` never panics.
//!
//! Input: 8 bytes of start time, 8 of RAM sizes, then a sequence of
//! [`common::Op`]s; offsets are from port 0x70.

#![no_main]

#[path = "common.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use alcazar_devices::pit::TimedDevice;
use alcazar_devices::rtc::{MemorySizes, Rtc, PORT_COUNT};
use common::{Input, Line, Op, Time};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    // The first 8 bytes: the start time, seconds since 1970 (any u64,
    // wrapped into four millennia).
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(input.take(8) % (4000 * 366 * 86400));
    // Then the RAM sizes for the CMOS memory bytes (any size).
    let memory = MemorySizes {
        below_4g: input.take(4) << 12,
        above_4g: input.take(4) << 20,
    };
    let mut time = Time::new();
    let irq8 = Arc::new(Line::default());
    let mut rtc = Rtc::with_start_time(memory, irq8, start, time.clock.now());
    while !input.is_empty() {
        let op = input.op(u64::from(PORT_COUNT));
        // Inspection is costly under the sanitizer: at time steps and at
        // the end (the fuzzer chooses where time steps fall).
        let look = matches!(op, Op::Time { .. }) || input.is_empty();
        match op {
            Op::Read { offset, width } => {
                common::read(&mut rtc, offset, width);
            }
            Op::Write {
                offset,
                width,
                value,
            } => common::write(&mut rtc, offset, width, value),
            Op::Time { nanos } => {
                let t = time.step(nanos).max(time.clock.now());
                rtc.tick(t);
                if let Some(d) = rtc.next_deadline() {
                    assert!(d > t, "a deadline is overdue right after a tick");
                }
            }
            Op::Other { what, .. } => {
                if what & 1 == 0 {
                    // Register D: VRT is always set (valid RAM and time).
                    common::write(&mut rtc, 0, 1, 0x0d);
                    let d = common::read(&mut rtc, 1, 1);
                    assert_eq!(d & 0x80, 0x80, "register D without VRT");
                } else if let Some(d) = rtc.next_deadline() {
                    rtc.tick(d);
                }
            }
        }
        if look {
            common::inspect(&rtc);
        }
    }
});
