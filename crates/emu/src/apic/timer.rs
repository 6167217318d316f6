//! The local APIC timer (SDM Vol. 3A §10.5.4): one-shot, periodic and
//! TSC-deadline modes.
//!
//! **Clock.** The timer counts the APIC's input clock divided by the
//! divide configuration register. The emu engine's input clock is the
//! 1 GHz "core crystal" of CPUID leaf 0x15 (ECX = 1 000 000 000), the
//! same clock as the TSC ([`crate::msr::TSC_HZ`]): one count per host
//! nanosecond at divide-by-1, like KVM's 1 GHz APIC bus. The count is
//! computed from host time when read, so the current-count register moves
//! consistently with the TSC and with wall-clock devices; nothing runs per
//! instruction. Expiries are driven by the VM's timer thread
//! ([`alcazar_core::timer::Timers`]) through [`ApicTimerDevice`], which
//! sets the vector in IRR and wakes the vCPU (also from HLT).
//!
//! A periodic timer expires at most every [`MIN_PERIODIC_NS`] (KVM has a
//! similar floor): a guest programming a period of a few counts gets its
//! interrupts at that rate, and cannot keep the timer thread spinning.
//!
//! Times are nanoseconds of the guest clock ([`crate::msr::guest_tsc`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use alcazar_core::timer::TimedDevice;

use super::regs::{lvt, ApicState};
use super::LocalApic;

/// The timer's state besides its LVT entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timer {
    /// Initial-count register.
    pub initial: u32,
    /// Divide configuration register (bits 0, 1 and 3).
    pub divide: u32,
    /// When the count last stood at `start_count` (host ns).
    pub start: u64,
    /// The count at `start`.
    pub start_count: u32,
    /// The next expiry (host ns), if the timer is armed.
    pub next: Option<u64>,
    /// IA32_TSC_DEADLINE as the guest last wrote it (0: disarmed).
    pub tsc_deadline: u64,
}

/// The shortest interval between two periodic expiries, in ns (50 µs).
pub const MIN_PERIODIC_NS: u64 = 50_000;

/// LVT timer bits 18:17.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerMode {
    /// Counts down once from the initial count.
    OneShot,
    /// Reloads the initial count at zero.
    Periodic,
    /// Fires when the TSC reaches IA32_TSC_DEADLINE.
    TscDeadline,
}

/// Host nanoseconds (the TSC clock) at `t`.
pub fn instant_to_ns(t: Instant) -> u64 {
    t.saturating_duration_since(crate::msr::tsc_epoch())
        .as_nanos()
        .min(u128::from(u64::MAX)) as u64
}

/// The instant of host nanosecond `ns` (the TSC clock). A deadline the
/// host's clock type cannot represent becomes one a year after the epoch.
pub fn ns_to_instant(ns: u64) -> Instant {
    let epoch = crate::msr::tsc_epoch();
    epoch
        .checked_add(Duration::from_nanos(ns))
        .or_else(|| epoch.checked_add(Duration::from_secs(365 * 86_400)))
        .unwrap_or(epoch)
}

impl ApicState {
    /// The timer mode the LVT selects (the reserved encoding 0b11 counts
    /// as one-shot).
    pub fn timer_mode(&self) -> TimerMode {
        match (self.lvt[lvt::TIMER] >> 17) & 3 {
            1 => TimerMode::Periodic,
            2 => TimerMode::TscDeadline,
            _ => TimerMode::OneShot,
        }
    }

    /// log2 of the divide ratio: DCR bits 3,1:0 = 0b111 is divide by 1,
    /// 0b000 by 2, ... 0b110 by 128 (SDM Vol. 3A Figure 10-10).
    pub fn divide_shift(&self) -> u32 {
        let d = self.timer.divide;
        let value = (d & 3) | ((d >> 1) & 4);
        (value + 1) & 7
    }

    /// One period (or the one-shot duration) in ns.
    fn timer_period(&self) -> u64 {
        u64::from(self.timer.initial) << self.divide_shift()
    }

    /// The current-count register at `now`.
    pub fn timer_current(&self, now: u64) -> u32 {
        let t = &self.timer;
        if t.initial == 0 || t.next.is_none() || self.timer_mode() == TimerMode::TscDeadline {
            return 0;
        }
        let elapsed = now.saturating_sub(t.start) >> self.divide_shift();
        let done = u64::from(t.initial.saturating_sub(t.start_count)) + elapsed;
        match self.timer_mode() {
            TimerMode::Periodic => t.initial - (done % u64::from(t.initial)) as u32,
            _ => u64::from(t.initial).saturating_sub(done) as u32,
        }
    }

    /// A write of the initial count starts (or, with 0, stops) counting;
    /// ignored in TSC-deadline mode.
    pub fn write_initial_count(&mut self, v: u32, now: u64) {
        if self.timer_mode() == TimerMode::TscDeadline {
            return;
        }
        self.timer.initial = v;
        self.timer.start = now;
        self.timer.start_count = v;
        self.timer.next = (v != 0).then(|| now.saturating_add(self.timer_period()));
    }

    /// A new divide ratio: a running count goes on from its current value
    /// at the new rate.
    pub fn write_divide(&mut self, d: u32, now: u64) {
        let counting = self.timer.next.is_some() && self.timer_mode() != TimerMode::TscDeadline;
        let current = self.timer_current(now);
        self.timer.divide = d;
        if counting && current != 0 {
            self.timer.start = now;
            self.timer.start_count = current;
            self.timer.next = Some(now.saturating_add(u64::from(current) << self.divide_shift()));
        }
    }

    /// A new LVT timer entry. Entering or leaving TSC-deadline mode
    /// disarms the timer (§10.5.4.1); switching between one-shot and
    /// periodic keeps the count running.
    pub fn write_lvt_timer(&mut self, entry: u32, now: u64) {
        let old = self.timer_mode();
        self.lvt[lvt::TIMER] = entry;
        let new = self.timer_mode();
        if old != new && (old == TimerMode::TscDeadline || new == TimerMode::TscDeadline) {
            self.timer.next = None;
            self.timer.tsc_deadline = 0;
            self.timer.start = now;
        }
    }

    /// IA32_TSC_DEADLINE as RDMSR sees it: 0 outside TSC-deadline mode.
    pub fn read_tsc_deadline(&self) -> u64 {
        if self.timer_mode() == TimerMode::TscDeadline {
            self.timer.tsc_deadline
        } else {
            0
        }
    }

    /// WRMSR IA32_TSC_DEADLINE: `value` in guest TSC units, due at host
    /// ns `host_deadline`; 0 disarms. Ignored outside TSC-deadline mode.
    pub fn write_tsc_deadline(&mut self, value: u64, host_deadline: u64) {
        if self.timer_mode() != TimerMode::TscDeadline {
            return;
        }
        self.timer.tsc_deadline = value;
        self.timer.next = (value != 0).then_some(host_deadline);
    }

    /// Brings the timer up to `now`: if it expired, re-arms it (periodic:
    /// the next period boundary after `now`, missed periods coalesce into
    /// one interrupt) or disarms it, and requests the LVT vector unless
    /// masked. Returns whether a vector was requested.
    pub fn timer_tick(&mut self, now: u64) -> bool {
        let Some(due) = self.timer.next else {
            return false;
        };
        if due > now {
            return false;
        }
        match self.timer_mode() {
            TimerMode::Periodic => {
                let period = self.timer_period().max(MIN_PERIODIC_NS);
                let next = due + ((now - due) / period + 1) * period;
                self.timer.start = next - period;
                self.timer.start_count = self.timer.initial;
                self.timer.next = Some(next);
            }
            TimerMode::OneShot => self.timer.next = None,
            TimerMode::TscDeadline => {
                self.timer.next = None;
                self.timer.tsc_deadline = 0;
            }
        }
        let entry = self.lvt[lvt::TIMER];
        entry & lvt::MASKED == 0 && self.accept(entry as u8, false)
    }
}

/// A local APIC's timer as the VM's timer thread sees it.
pub struct ApicTimerDevice {
    apic: Arc<LocalApic>,
}

impl ApicTimerDevice {
    /// The timer of `apic`.
    pub fn new(apic: Arc<LocalApic>) -> Self {
        ApicTimerDevice { apic }
    }
}

impl TimedDevice for ApicTimerDevice {
    fn next_deadline(&self) -> Option<Instant> {
        self.apic.timer_deadline().map(ns_to_instant)
    }

    fn tick(&mut self, now: Instant) {
        self.apic.timer_tick(instant_to_ns(now));
    }
}
