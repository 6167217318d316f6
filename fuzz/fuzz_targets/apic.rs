//! Fuzzes the emu engine's local APIC as the guest drives it: two APICs
//! on one [`EmuApicBus`], each through its xAPIC MMIO page (any width,
//! any offset) and its x2APIC MSRs (0x800-0x8ff and beyond), with
//! IA32_APIC_BASE mode switches, the timer (one-shot, periodic,
//! TSC-deadline) ticked at synthetic instants, IPIs between the two
//! (ICR writes), MSIs from the platform, INTA cycles and TPR writes.
//!
//! Asserts, whatever the guest does: no panic; an MMIO read returns no
//! more than its width (and 32 bits at most); x2APIC MSRs fault unless
//! the APIC is in x2APIC mode; vectors 0-15 never reach IRR or ISR (the
//! SDM's "illegal vector", Vol. 3A 11.5.3: an error, not an interrupt);
//! after a tick at `t` the timer is not left due at `t`; `inspect()`
//! never panics.
//!
//! Input: a sequence of [`common::Op`]s; offsets below 0x1000 are APIC
//! 0's page, the next 0x1000 APIC 1's.

#![no_main]

#[path = "common.rs"]
mod common;

use std::sync::{Arc, Mutex};

use alcazar_core::irq::{ApicBus, DeliveryMode, InterruptMessage, MsiSink, PlatformInterrupts};
use alcazar_emu::apic::timer::instant_to_ns;
use alcazar_emu::apic::{EmuApicBus, LocalApic};
use alcazar_emu::interrupts::{InterruptLines, InterruptSource};
use common::{Input, Op, Time};
use libfuzzer_sys::fuzz_target;

/// IA32_APIC_BASE.EXTD: x2APIC mode.
const BASE_EXTD: u64 = 1 << 10;
/// IA32_APIC_BASE.EN: the APIC is enabled.
const BASE_EN: u64 = 1 << 11;

/// The 8259A and IOAPIC as the APICs see them.
#[derive(Default)]
struct Platform {
    inta: Mutex<Option<u8>>,
}

impl PlatformInterrupts for Platform {
    fn ext_int_acknowledge(&self) -> Option<u8> {
        self.inta.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
    fn eoi(&self, _vector: u8) {}
}

fn check(apic: &LocalApic) {
    let s = apic.snapshot();
    for v in 0..16u8 {
        assert!(!s.irr.test(v), "illegal vector {v} in IRR");
        assert!(!s.isr.test(v), "illegal vector {v} in ISR");
    }
}

fuzz_target!(|data: &[u8]| {
    let mut time = Time::new();
    let bus = EmuApicBus::with_clock(time.clock.clone());
    let platform = Arc::new(Platform::default());
    bus.connect(platform.clone());
    let apics = [
        LocalApic::new(0, Arc::new(InterruptLines::new()), &bus),
        LocalApic::new(1, Arc::new(InterruptLines::new()), &bus),
    ];
    let mut input = Input(data);
    while !input.is_empty() {
        let op = input.op(0x1000);
        // Inspection is costly under the sanitizer: at time steps and at
        // the end (the fuzzer chooses where time steps fall).
        let look = matches!(op, Op::Time { .. }) || input.is_empty();
        match op {
            Op::Read { offset, width } => {
                let apic = &apics[(offset >> 12) as usize & 1];
                let v = apic.mmio_read(offset & 0xfff, width as u8);
                let bits = 8 * width.min(4);
                assert_eq!(v >> bits, 0, "a {width}-byte read returned {v:#x}");
            }
            Op::Write {
                offset,
                width,
                value,
            } => apics[(offset >> 12) as usize & 1].mmio_write(offset & 0xfff, width as u8, value),
            Op::Time { nanos } => {
                let now = instant_to_ns(time.step(nanos).max(time.clock.now()));
                for apic in &apics {
                    apic.timer_tick(now);
                    if let Some(d) = apic.timer_deadline() {
                        assert!(d > now, "the timer is still due right after a tick");
                    }
                }
            }
            Op::Other { what, arg } => {
                let apic = &apics[usize::from(what >> 7)];
                let msr = 0x800 + (arg >> 48) as u32 % 0x180;
                let x2 = apic.base() & (BASE_EXTD | BASE_EN) == BASE_EXTD | BASE_EN;
                match what % 10 {
                    0 => {
                        let r = apic.msr_read(msr);
                        if !x2 || msr > 0x8ff {
                            assert!(r.is_err(), "MSR {msr:#x} read outside x2APIC mode");
                        }
                    }
                    1 => {
                        let r = apic.msr_write(msr, arg & 0xffff_ffff_ffff);
                        if !x2 || msr > 0x8ff {
                            assert!(r.is_err(), "MSR {msr:#x} written outside x2APIC mode");
                        }
                    }
                    2 => {
                        let _ = apic.set_base(arg, what & 0x10 != 0);
                    }
                    3 => {
                        if apic.pending() {
                            *platform.inta.lock().unwrap_or_else(|p| p.into_inner()) =
                                Some(arg as u8);
                            let _ = apic.acknowledge();
                        }
                    }
                    4 => {
                        if let Some(d) = apic.timer_deadline() {
                            apic.timer_tick(d);
                        }
                    }
                    5 => apic.write_tsc_deadline(arg, arg.rotate_left(17)),
                    6 => bus.deliver(InterruptMessage {
                        vector: arg as u8,
                        delivery_mode: match (arg >> 8) % 6 {
                            0 => DeliveryMode::Fixed,
                            1 => DeliveryMode::LowestPriority,
                            2 => DeliveryMode::Smi,
                            3 => DeliveryMode::Nmi,
                            4 => DeliveryMode::Init,
                            _ => DeliveryMode::ExtInt,
                        },
                        dest_mode_logical: arg & (1 << 16) != 0,
                        destination: (arg >> 24) as u8,
                        trigger_level: arg & (1 << 17) != 0,
                    }),
                    7 => apic.set_tpr(arg as u8),
                    8 => bus.set_ext_int(arg & 1 != 0),
                    _ => {
                        let _ = apic.take_startup();
                        if arg & 1 != 0 {
                            apic.enter_wait_for_sipi();
                        }
                    }
                }
            }
        }
        for apic in &apics {
            check(apic);
            if look {
                let _ = apic.inspect().flatten("");
            }
        }
    }
});
