//! Time-driven devices and the one thread that drives them.
//!
//! Devices whose interrupts fall due at points in time (8254 PIT, RTC,
//! and the emu engine's local APIC timers) implement [`TimedDevice`] and
//! are registered with the machine's [`Timers`]. While the VM runs,
//! [`Timers::run`] sleeps until the earliest deadline of all of them,
//! ticks the devices that are due, and starts over; a device whose
//! deadline moves (the guest reprogrammed it) calls its
//! [`DeadlineNotifier`] to wake the thread early.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use crate::clock::GuestClock;

/// Called whenever a guest access may have moved a device's next
/// deadline, so a timer thread sleeping until the old one can re-read it.
/// It runs with the device locked: it must not lock the device.
pub type DeadlineNotifier = Arc<dyn Fn() + Send + Sync>;

/// A device whose interrupts fall due at points in time (PIT, RTC).
///
/// The VMM either polls (between guest exits and before a vCPU sleeps in
/// HLT, call `tick(Instant::now())` and sleep no later than
/// `next_deadline()`), or runs one timer thread that sleeps until the
/// earliest deadline of its devices, ticks them, and is woken early by
/// their [`DeadlineNotifier`]. Ticking late, early or twice is harmless.
pub trait TimedDevice: Send {
    /// When the device next needs [`TimedDevice::tick`], if ever (may be
    /// in the past if a tick is overdue).
    fn next_deadline(&self) -> Option<Instant>;
    /// Brings the device up to `now`, raising any interrupt that fell due.
    fn tick(&mut self, now: Instant);
}

/// A registered device.
pub type SharedTimed = Arc<Mutex<dyn TimedDevice>>;

#[derive(Default)]
struct State {
    devices: Vec<SharedTimed>,
    /// A deadline may have moved since the thread last looked.
    changed: bool,
    stopped: bool,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    /// Deadlines are instants of this clock (the VM's guest clock).
    clock: Arc<GuestClock>,
}

/// The machine's timer service: one thread ([`Timers::run`]) for every
/// [`TimedDevice`] of a VM. Cloning gives another handle to the same
/// service.
#[derive(Clone, Default)]
pub struct Timers(Arc<Shared>);

impl std::fmt::Debug for Timers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("Timers")
            .field("devices", &state.devices.len())
            .field("stopped", &state.stopped)
            .finish()
    }
}

impl Timers {
    /// A service with no devices, on a clock of its own.
    pub fn new() -> Self {
        Self::default()
    }

    /// A service with no devices whose deadlines are instants of `clock`
    /// (the VM's guest clock): while the clock is frozen nothing falls
    /// due, and the thread sleeps until [`Timers::poke`].
    pub fn with_clock(clock: Arc<GuestClock>) -> Self {
        Timers(Arc::new(Shared {
            clock,
            ..Default::default()
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds `device`; the thread looks at its deadline from now on.
    pub fn register(&self, device: SharedTimed) {
        self.lock().devices.push(device);
        self.poke();
    }

    /// A notifier for devices to call when their deadline moves. It only
    /// takes the service's own lock, so a device may call it while locked.
    pub fn notifier(&self) -> DeadlineNotifier {
        let timers = self.clone();
        Arc::new(move || timers.poke())
    }

    /// Makes the thread look at every deadline again (after the guest
    /// clock was thawed).
    pub fn poke(&self) {
        self.lock().changed = true;
        self.0.wake.notify_all();
    }

    /// Ends [`Timers::run`] (and every later call of it).
    pub fn stop(&self) {
        self.lock().stopped = true;
        self.0.wake.notify_all();
    }

    /// Drives the devices until [`Timers::stop`]: the body of the VM's
    /// timer thread.
    pub fn run(&self) {
        loop {
            let devices = {
                let mut state = self.lock();
                if state.stopped {
                    return;
                }
                state.changed = false;
                state.devices.clone()
            };
            let clock = &self.0.clock;
            let next = Self::tick_due(&devices, clock.now());
            let mut state = self.lock();
            while !state.stopped && !state.changed {
                let now = clock.now();
                let wait = match next {
                    _ if clock.is_frozen() => std::time::Duration::from_secs(3600),
                    Some(t) if t <= now => break,
                    Some(t) => t - now,
                    None => std::time::Duration::from_secs(3600),
                };
                state = self
                    .0
                    .wake
                    .wait_timeout(state, wait)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
        }
    }

    /// Ticks every device due at `now`; returns the earliest deadline left.
    fn tick_due(devices: &[SharedTimed], now: Instant) -> Option<Instant> {
        let mut earliest: Option<Instant> = None;
        for device in devices {
            let mut d = device.lock().unwrap_or_else(|p| p.into_inner());
            if d.next_deadline().is_some_and(|t| t <= now) {
                d.tick(now);
            }
            if let Some(t) = d.next_deadline() {
                earliest = Some(earliest.map_or(t, |e| e.min(t)));
            }
        }
        earliest
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    /// Fires `left` times, every `period`.
    struct Ticker {
        next: Option<Instant>,
        period: Duration,
        left: u32,
        fired: Arc<AtomicU32>,
    }

    impl TimedDevice for Ticker {
        fn next_deadline(&self) -> Option<Instant> {
            self.next
        }
        fn tick(&mut self, now: Instant) {
            self.fired.fetch_add(1, Ordering::SeqCst);
            self.left -= 1;
            self.next = (self.left > 0).then(|| now + self.period);
        }
    }

    #[test]
    fn thread_ticks_devices_at_their_deadlines_and_stops() {
        let timers = Timers::new();
        let fired = Arc::new(AtomicU32::new(0));
        timers.register(Arc::new(Mutex::new(Ticker {
            next: Some(Instant::now()),
            period: Duration::from_millis(2),
            left: 5,
            fired: fired.clone(),
        })));
        let t = timers.clone();
        let thread = std::thread::spawn(move || t.run());
        let start = Instant::now();
        while fired.load(Ordering::SeqCst) < 5 && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(1));
        }
        timers.stop();
        thread.join().unwrap();
        assert_eq!(fired.load(Ordering::SeqCst), 5);
    }

    #[test]
    fn a_notifier_wakes_the_thread_for_a_new_earlier_deadline() {
        let timers = Timers::new();
        let fired = Arc::new(AtomicU32::new(0));
        let dev = Arc::new(Mutex::new(Ticker {
            next: None,
            period: Duration::from_secs(1),
            left: 1,
            fired: fired.clone(),
        }));
        timers.register(dev.clone());
        let t = timers.clone();
        let thread = std::thread::spawn(move || t.run());
        std::thread::sleep(Duration::from_millis(20));
        dev.lock().unwrap().next = Some(Instant::now());
        (timers.notifier())();
        let start = Instant::now();
        while fired.load(Ordering::SeqCst) == 0 && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(1));
        }
        timers.stop();
        thread.join().unwrap();
        assert_eq!(fired.load(Ordering::SeqCst), 1);
    }
}
