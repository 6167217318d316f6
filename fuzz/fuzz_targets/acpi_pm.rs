//! Fuzzes the ACPI PM1 event/control block and PM timer (ports
//! 0x600-0x60b) as the guest drives them: PM1_STS write-one-to-clear,
//! PM1_EN, PM1_CNT with any SLP_TYP/SLP_EN, of any width at any offset,
//! interleaved with the power button and guest time passing.
//!
//! Asserts, whatever the guest writes: no panic; a read fills only its
//! width; SCI_EN stays set (there is no SMM to hand over to); the PM
//! timer never goes backwards (a run is far shorter than its wrap);
//! entering S5 only asks the VM to stop; `inspect()` never panics.
//!
//! Input: a sequence of [`common::Op`]s; offsets are from port 0x600.

#![no_main]

#[path = "common.rs"]
mod common;

use std::sync::Arc;

use alcazar_core::control::VmControl;
use alcazar_devices::acpi_pm::{PM1_CNT_OFFSET, PORT_COUNT};
use alcazar_devices::AcpiPm;
use common::{Input, Line, Op, Time};
use libfuzzer_sys::fuzz_target;

/// PM1_CNT.SCI_EN.
const SCI_EN: u64 = 1;

fuzz_target!(|data: &[u8]| {
    let time = Time::new();
    let sci = Arc::new(Line::default());
    let control = Arc::new(VmControl::new());
    let mut pm = AcpiPm::new(sci, control, time.clock.clone());
    let mut last_timer = pm.pm_timer();
    let mut input = Input(data);
    while !input.is_empty() {
        let op = input.op(u64::from(PORT_COUNT));
        // Inspection is costly under the sanitizer: at time steps and at
        // the end (the fuzzer chooses where time steps fall).
        let look = matches!(op, Op::Time { .. }) || input.is_empty();
        match op {
            Op::Read { offset, width } => {
                common::read(&mut pm, offset, width);
            }
            Op::Write {
                offset,
                width,
                value,
            } => common::write(&mut pm, offset, width, value),
            Op::Time { .. } => {
                let now = pm.pm_timer();
                // At 3.58 MHz a u32 wraps after 20 minutes: a run is shorter.
                assert!(now >= last_timer, "the PM timer went backwards");
                last_timer = now;
            }
            Op::Other { .. } => {
                pm.press_power_button();
            }
        }
        let cnt = common::read(&mut pm, u64::from(PM1_CNT_OFFSET), 2);
        assert_eq!(cnt & SCI_EN, SCI_EN, "SCI_EN cleared");
        if look {
            common::inspect(&pm);
        }
    }
});
