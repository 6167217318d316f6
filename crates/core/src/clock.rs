//! The guest's clock: host monotonic time that stands still while the VM
//! is paused.
//!
//! Every time source a guest can read — the emu engine's TSC and local
//! APIC timers, the 8254 PIT, the ACPI PM timer, the RTC's periodic
//! interrupt — asks the VM's [`GuestClock`] for "now" instead of the
//! host. While the VM runs the guest clock advances with the host's
//! `CLOCK_MONOTONIC`; [`GuestClock::freeze`] (pause) stops it and
//! [`GuestClock::thaw`] (resume) lets it go on from the same instant, so a
//! paused guest sees no time pass: no timer interrupts pile up, and its
//! `uptime` after a resume is short by exactly the pause.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A monotonic clock that can be stopped and restarted.
#[derive(Debug, Default)]
pub struct GuestClock {
    state: Mutex<ClockState>,
}

#[derive(Debug, Default)]
struct ClockState {
    /// Host time spent frozen, in total, before the current freeze.
    paused: Duration,
    /// The host instant of the current freeze, while frozen.
    frozen_at: Option<Instant>,
}

impl GuestClock {
    /// A running clock.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ClockState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The guest's "now": the host's monotonic time less every pause so
    /// far (the instant of the freeze while frozen).
    pub fn now(&self) -> Instant {
        let s = self.lock();
        let host = s.frozen_at.unwrap_or_else(Instant::now);
        host.checked_sub(s.paused).unwrap_or(host)
    }

    /// Whether the clock is frozen.
    pub fn is_frozen(&self) -> bool {
        self.lock().frozen_at.is_some()
    }

    /// Stops the clock (a second freeze changes nothing).
    pub fn freeze(&self) {
        let mut s = self.lock();
        if s.frozen_at.is_none() {
            s.frozen_at = Some(Instant::now());
        }
    }

    /// Restarts the clock where it stopped (nothing if it runs).
    pub fn thaw(&self) {
        let mut s = self.lock();
        if let Some(at) = s.frozen_at.take() {
            s.paused += at.elapsed();
        }
    }

    /// Host time the clock has spent frozen, in total.
    pub fn paused_total(&self) -> Duration {
        let s = self.lock();
        s.paused + s.frozen_at.map_or(Duration::ZERO, |at| at.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frozen_clock_stands_still_and_resumes_where_it_stopped() {
        let c = GuestClock::new();
        c.freeze();
        let a = c.now();
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(c.now(), a);
        assert!(c.is_frozen());
        c.thaw();
        let b = c.now();
        assert!(b >= a && b - a < Duration::from_millis(20), "{:?}", b - a);
        assert!(c.paused_total() >= Duration::from_millis(30));
        // Running again: it advances.
        std::thread::sleep(Duration::from_millis(5));
        assert!(c.now() > b);
    }

    #[test]
    fn a_running_clock_follows_the_host() {
        let c = GuestClock::new();
        let t0 = c.now();
        std::thread::sleep(Duration::from_millis(5));
        assert!(c.now() - t0 >= Duration::from_millis(5));
        c.thaw();
        assert!(!c.is_frozen());
    }
}
