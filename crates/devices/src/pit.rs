//! Intel 8254 programmable interval timer, clocked from the host's
//! monotonic clock, and the [`TimedDevice`] contract the VMM drives timers
//! through.
//!
//! Ports 0x40-0x42 are counters 0-2, 0x43 the control word register
//! (write-only). Counter 0's OUT is IRQ 0; counter 1 (DRAM refresh on the
//! PC) has no output wired; counter 2's gate and OUT belong to system
//! control port B (0x61, bits 0 and 5: see
//! [`SystemControlB::with_pit`](crate::system_control::SystemControlB::with_pit)).
//! The input clock is 1.193182 MHz ([`PIT_HZ`]) derived from
//! [`std::time::Instant`], so counts read back reflect elapsed host time.
//!
//! Reference: Intel 8254 datasheet (order 231164): "Control Word Format",
//! "Read-Back Command", "Counter Latch Command", "Modes" 0-5 and the
//! "Gate Pin Operations Summary".
//!
//! Modelled: all six modes (6 and 7 alias 2 and 3), LSB, MSB and
//! LSB-then-MSB access with the read and write flip-flops, the counter
//! latch command, the read-back command (count and status, with OUTPUT
//! and NULL COUNT), BCD counting, the gate (level for modes 0, 2, 3, 4;
//! rising edge for 1, 2, 3, 5), new counts taking effect at the end of
//! the current period in modes 2 and 3, and the "writing the first byte
//! stops the count" rule of mode 0.
//!
//! Timing: counter 0 raises IRQ 0 with an [`IrqLine::pulse`] on every
//! rising edge of OUT (every period in modes 2 and 3, once at terminal
//! count in modes 0 and 4). The device owns no thread; the VMM drives it
//! through [`TimedDevice`]: call [`TimedDevice::tick`] no later than
//! [`TimedDevice::next_deadline`]. Edges that passed between two ticks are
//! coalesced into one pulse (lost timer ticks are not re-injected; Linux
//! keeps time from its clocksource, not by counting them).
//!
//! Approximations: a count is loaded the moment it is written (the chip
//! loads it on the next CLK, 838 ns later); in mode 3 the count read back
//! is exact for even counts and off by one for odd ones, and a new count
//! takes effect at the end of the full period rather than the half
//! period. The illegal count of 1 in modes 2 and 3 leaves OUT constant
//! (no interrupts) instead of flooding the guest.

use std::sync::Arc;
use std::time::{Duration, Instant};

use alcazar_core::inspect::Tree;
use alcazar_core::irq::IrqLine;
pub use alcazar_core::timer::{DeadlineNotifier, TimedDevice};
use alcazar_core::{BusDevice, GuestClock};

mod inspect;

/// First port (counter 0).
pub const BASE_PORT: u16 = 0x40;
/// Number of ports.
pub const PORT_COUNT: u16 = 4;
/// The counters' input clock, in Hz.
pub const PIT_HZ: u64 = 1_193_182;
/// The counter whose OUT is IRQ 0.
pub const TIMER_CHANNEL: usize = 0;
/// The counter gated and read through port 0x61.
pub const SPEAKER_CHANNEL: usize = 2;

const CONTROL_OFFSET: u64 = 3;
const NANOS_PER_SEC: u128 = 1_000_000_000;

// Control word fields.
const CW_BCD: u8 = 1 << 0;
const READ_BACK: u8 = 3;
const RB_NO_COUNT: u8 = 1 << 5;
const RB_NO_STATUS: u8 = 1 << 4;
// Status byte.
const STATUS_OUTPUT: u8 = 1 << 7;
const STATUS_NULL_COUNT: u8 = 1 << 6;

/// The number of input clocks in `d`.
fn ticks_in(d: Duration) -> u64 {
    let ticks = d.as_nanos() * u128::from(PIT_HZ) / NANOS_PER_SEC;
    u64::try_from(ticks).unwrap_or(u64::MAX)
}

/// The shortest duration holding `ticks` input clocks.
fn duration_of(ticks: u64) -> Duration {
    let hz = u128::from(PIT_HZ);
    let nanos = (u128::from(ticks) * NANOS_PER_SEC).div_ceil(hz);
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

fn bcd_to_binary(v: u16) -> u64 {
    (0..4).fold(0, |acc, digit| {
        acc * 10 + u64::from((v >> (12 - 4 * digit)) & 0xf)
    })
}

fn binary_to_bcd(v: u64) -> u16 {
    (0..4).fold(0u16, |acc, digit| {
        let d = (v / 10u64.pow(3 - digit)) % 10;
        (acc << 4) | d as u16
    })
}

/// A counter's input clock, gated: it stops while the counter may not
/// count and resumes where it left off. Ticks are counted from one fixed
/// epoch, so stopping and restarting loses nothing to rounding.
#[derive(Clone, Copy, Debug)]
struct Clock {
    epoch: Instant,
    /// Epoch ticks the gate has swallowed.
    skipped: u64,
    /// The count the clock stopped at, while stopped.
    stopped: Option<u64>,
}

impl Clock {
    fn new(epoch: Instant) -> Self {
        Clock {
            epoch,
            skipped: 0,
            stopped: Some(0),
        }
    }

    fn since_epoch(&self, now: Instant) -> u64 {
        ticks_in(now.saturating_duration_since(self.epoch))
    }

    fn ticks(&self, now: Instant) -> u64 {
        match self.stopped {
            Some(t) => t,
            None => self.since_epoch(now).saturating_sub(self.skipped),
        }
    }

    fn run(&mut self, running: bool, now: Instant) {
        match (running, self.stopped) {
            (true, Some(t)) => {
                self.skipped = self.since_epoch(now).saturating_sub(t);
                self.stopped = None;
            }
            (false, None) => self.stopped = Some(self.ticks(now)),
            _ => {}
        }
    }

    /// When the clock reaches `tick`, if it is running.
    fn instant_of(&self, tick: u64) -> Option<Instant> {
        if self.stopped.is_some() {
            return None;
        }
        let since_epoch = tick.saturating_add(self.skipped);
        self.epoch.checked_add(duration_of(since_epoch))
    }
}

/// RW bits of the control word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Access {
    Lsb,
    Msb,
    Word,
}

/// One counting period: the counting element was loaded with `initial`
/// at clock tick `start`.
#[derive(Clone, Copy, Debug)]
struct Cycle {
    start: u64,
    initial: u64,
}

/// One of the three counters.
#[derive(Clone, Debug)]
struct Counter {
    /// Bits 5:0 of the last control word: RW, M2-M0, BCD.
    control: u8,
    count_register: u16,
    has_count: bool,
    null_count: bool,
    write_high_next: bool,
    low_byte: u8,
    read_high_next: bool,
    latched_count: Option<u16>,
    latch_high_next: bool,
    latched_status: Option<u8>,
    gate: bool,
    clock: Clock,
    /// The counting element's current period, once loaded.
    cycle: Option<Cycle>,
    /// Modes 2 and 3: a new count that starts a period at tick `start`.
    reload: Option<Cycle>,
    /// What the counting element reads while not loaded.
    idle_value: u16,
    /// Clock tick up to which OUT's rising edges have been reported.
    signalled: u64,
}

impl Counter {
    fn new(gate: bool, now: Instant) -> Self {
        Counter {
            control: 0x30, // LSB then MSB, mode 0, binary
            count_register: 0,
            has_count: false,
            null_count: true,
            write_high_next: false,
            low_byte: 0,
            read_high_next: false,
            latched_count: None,
            latch_high_next: false,
            latched_status: None,
            gate,
            clock: Clock::new(now),
            cycle: None,
            reload: None,
            idle_value: 0,
            signalled: 0,
        }
    }

    fn mode(&self) -> u8 {
        match (self.control >> 1) & 7 {
            6 => 2,
            7 => 3,
            m => m,
        }
    }

    fn access(&self) -> Access {
        match (self.control >> 4) & 3 {
            1 => Access::Lsb,
            2 => Access::Msb,
            _ => Access::Word,
        }
    }

    fn bcd(&self) -> bool {
        self.control & CW_BCD != 0
    }

    fn modulus(&self) -> u64 {
        if self.bcd() {
            10_000
        } else {
            0x1_0000
        }
    }

    /// The period a count register value stands for (0 is the maximum).
    fn initial_from(&self, value: u16) -> u64 {
        let n = if self.bcd() {
            bcd_to_binary(value)
        } else {
            u64::from(value)
        };
        if n == 0 {
            self.modulus()
        } else {
            n
        }
    }

    /// Whether the gate lets the counting element count in this mode.
    fn counting(&self) -> bool {
        match self.mode() {
            0 => self.gate && !self.write_high_next,
            1 | 5 => true,
            _ => self.gate,
        }
    }

    fn sync_clock(&mut self, now: Instant) {
        let run = self.cycle.is_some() && self.counting();
        self.clock.run(run, now);
    }

    /// The period in force at clock tick `t`, and the ticks into it.
    fn phase(&self, t: u64) -> Option<(u64, u64)> {
        match (self.cycle, self.reload) {
            (_, Some(r)) if t >= r.start => Some((r.initial, t - r.start)),
            (Some(c), _) => Some((c.initial, t.saturating_sub(c.start))),
            (None, _) => None,
        }
    }

    /// Applies a pending reload whose time has come.
    fn settle(&mut self, now: Instant) {
        let t = self.clock.ticks(now);
        if let Some(r) = self.reload.filter(|r| t >= r.start) {
            self.cycle = Some(r);
            self.reload = None;
            self.null_count = false;
        }
    }

    /// The OUT pin at clock tick `t`.
    fn out_at(&self, t: u64) -> bool {
        let mode = self.mode();
        let Some((n, d)) = self.phase(t) else {
            return mode != 0;
        };
        match mode {
            0 | 1 => d >= n,
            2 => !self.gate || d % n != n - 1,
            3 => !self.gate || d % n < n.div_ceil(2),
            _ => d != n,
        }
    }

    fn out(&self, now: Instant) -> bool {
        self.out_at(self.clock.ticks(now))
    }

    /// The counting element as the guest reads it.
    fn value(&self, now: Instant) -> u16 {
        let Some((n, d)) = self.phase(self.clock.ticks(now)) else {
            return self.idle_value;
        };
        let modulus = self.modulus();
        let v = match self.mode() {
            2 => n - d % n,
            3 => {
                let p = d % n;
                let half = n.div_ceil(2);
                n.saturating_sub(2 * if p < half { p } else { p - half })
            }
            _ => (n % modulus + modulus - d % modulus) % modulus,
        } % modulus;
        if self.bcd() {
            binary_to_bcd(v)
        } else {
            v as u16
        }
    }

    fn status(&self, now: Instant) -> u8 {
        let mut s = self.control;
        if self.out(now) {
            s |= STATUS_OUTPUT;
        }
        if self.null_count {
            s |= STATUS_NULL_COUNT;
        }
        s
    }

    /// The first rising edge of OUT after clock tick `t`.
    fn next_edge_after(&self, t: u64) -> Option<u64> {
        let mode = self.mode();
        if matches!(mode, 2 | 3) && !self.gate {
            return None;
        }
        let in_period = |c: Cycle| -> Option<u64> {
            let (n, d) = (c.initial, t.saturating_sub(c.start));
            let rel = match mode {
                0 | 1 => (d < n).then_some(n),
                2 | 3 => (n >= 2).then(|| (d / n + 1).saturating_mul(n)),
                _ => (d <= n).then_some(n + 1),
            };
            rel.map(|r| c.start.saturating_add(r))
        };
        match (self.cycle, self.reload) {
            (_, Some(r)) if t >= r.start => in_period(r),
            (Some(c), Some(r)) => Some(in_period(c).map_or(r.start, |e| e.min(r.start))),
            (Some(c), None) => in_period(c),
            (None, _) => None,
        }
    }

    /// Loads the counting element with `initial` now (a new period).
    fn start_cycle(&mut self, initial: u64, now: Instant) {
        let t = self.clock.ticks(now);
        self.cycle = Some(Cycle { start: t, initial });
        self.reload = None;
        self.null_count = false;
        self.signalled = t;
        self.sync_clock(now);
    }

    /// A control word selecting this counter's mode and access.
    fn program(&mut self, control: u8, now: Instant) {
        self.idle_value = self.value(now);
        self.control = control & 0x3f;
        self.cycle = None;
        self.reload = None;
        self.has_count = false;
        self.null_count = true;
        self.write_high_next = false;
        self.read_high_next = false;
        self.latched_count = None;
        self.latch_high_next = false;
        self.latched_status = None;
        self.sync_clock(now);
    }

    /// A complete count written to the count register.
    fn load(&mut self, value: u16, now: Instant) {
        self.count_register = value;
        self.has_count = true;
        let initial = self.initial_from(value);
        match self.mode() {
            2 | 3 if self.cycle.is_some() && self.gate => {
                let t = self.clock.ticks(now);
                if let Some((n, d)) = self.phase(t) {
                    let start = t.saturating_add(n - d % n);
                    self.reload = Some(Cycle { start, initial });
                    self.null_count = true;
                }
            }
            // Modes 1 and 5 load it at the next trigger.
            1 | 5 => self.null_count = true,
            _ => self.start_cycle(initial, now),
        }
    }

    fn write_count_byte(&mut self, byte: u8, now: Instant) {
        match self.access() {
            Access::Lsb => self.load(u16::from(byte), now),
            Access::Msb => self.load(u16::from(byte) << 8, now),
            Access::Word if !self.write_high_next => {
                self.low_byte = byte;
                self.write_high_next = true;
                // Mode 0: writing the first byte stops the count.
                self.sync_clock(now);
            }
            Access::Word => {
                self.write_high_next = false;
                let value = u16::from(self.low_byte) | u16::from(byte) << 8;
                self.load(value, now);
            }
        }
    }

    fn latch_count(&mut self, now: Instant) {
        if self.latched_count.is_none() {
            self.latched_count = Some(self.value(now));
            self.latch_high_next = false;
        }
    }

    fn latch_status(&mut self, now: Instant) {
        if self.latched_status.is_none() {
            self.latched_status = Some(self.status(now));
        }
    }

    fn read_byte(&mut self, now: Instant) -> u8 {
        if let Some(status) = self.latched_status.take() {
            return status;
        }
        let (value, high) = match self.latched_count {
            Some(v) => {
                let high = match self.access() {
                    Access::Lsb => false,
                    Access::Msb => true,
                    Access::Word => std::mem::replace(&mut self.latch_high_next, true),
                };
                if high || self.access() == Access::Lsb {
                    self.latched_count = None;
                    self.latch_high_next = false;
                }
                (v, high)
            }
            None => {
                let high = match self.access() {
                    Access::Lsb => false,
                    Access::Msb => true,
                    Access::Word => {
                        let high = self.read_high_next;
                        self.read_high_next = !high;
                        high
                    }
                };
                (self.value(now), high)
            }
        };
        let [lo, hi] = value.to_le_bytes();
        if high {
            hi
        } else {
            lo
        }
    }

    fn set_gate(&mut self, high: bool, now: Instant) {
        let rising = high && !self.gate;
        self.gate = high;
        let retrigger = match self.mode() {
            1 | 2 | 3 | 5 => rising && self.has_count,
            _ => false,
        };
        if retrigger {
            let initial = self.initial_from(self.count_register);
            self.start_cycle(initial, now);
        } else {
            self.sync_clock(now);
        }
    }
}

/// The 8254 with its three counters.
pub struct Pit8254 {
    counters: [Counter; 3],
    irq0: Arc<dyn IrqLine>,
    notifier: Option<DeadlineNotifier>,
    /// The VM's guest clock (stands still while the VM is paused).
    clock: Arc<GuestClock>,
}

impl std::fmt::Debug for Pit8254 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pit8254")
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl Pit8254 {
    /// A PIT with no counter programmed, counter 0 raising `irq0`. Gates
    /// 0 and 1 are tied high as on the PC; gate 2 starts low (port 0x61).
    /// Time is read from `clock`, the VM's guest clock.
    pub fn new(irq0: Arc<dyn IrqLine>, clock: Arc<GuestClock>) -> Self {
        let now = clock.now();
        Pit8254 {
            counters: [
                Counter::new(true, now),
                Counter::new(true, now),
                Counter::new(false, now),
            ],
            irq0,
            notifier: None,
            clock,
        }
    }

    /// Sets the function called when a guest access may have moved the
    /// next deadline (see [`DeadlineNotifier`]).
    pub fn set_deadline_notifier(&mut self, notifier: DeadlineNotifier) {
        self.notifier = Some(notifier);
    }

    /// Drives the gate input of `channel` (0-2; others are ignored).
    pub fn set_gate(&mut self, channel: usize, high: bool) {
        self.set_gate_at(channel, high, self.clock.now());
    }

    fn set_gate_at(&mut self, channel: usize, high: bool, now: Instant) {
        if let Some(c) = self.counters.get_mut(channel) {
            c.settle(now);
            c.set_gate(high, now);
        }
        if channel == TIMER_CHANNEL {
            self.notify();
        }
    }

    /// The gate input of `channel`.
    pub fn gate(&self, channel: usize) -> bool {
        self.counters.get(channel).is_some_and(|c| c.gate)
    }

    /// The OUT pin of `channel` now (false for a channel that does not
    /// exist).
    pub fn out(&self, channel: usize) -> bool {
        self.out_at(channel, self.clock.now())
    }

    fn out_at(&self, channel: usize, now: Instant) -> bool {
        self.counters.get(channel).is_some_and(|c| c.out(now))
    }

    fn notify(&self) {
        if let Some(n) = &self.notifier {
            n();
        }
    }

    fn write_control(&mut self, value: u8, now: Instant) {
        let select = value >> 6;
        if select == READ_BACK {
            self.read_back(value, now);
            return;
        }
        let Some(c) = self.counters.get_mut(usize::from(select)) else {
            return;
        };
        c.settle(now);
        if (value >> 4) & 3 == 0 {
            c.latch_count(now);
        } else {
            c.program(value, now);
        }
    }

    /// The read-back command: latches the count and/or status of every
    /// counter whose bit (1-3) is set; bits 5 and 4 are active low.
    fn read_back(&mut self, value: u8, now: Instant) {
        for (i, c) in self.counters.iter_mut().enumerate() {
            if value & (2 << i) == 0 {
                continue;
            }
            c.settle(now);
            if value & RB_NO_COUNT == 0 {
                c.latch_count(now);
            }
            if value & RB_NO_STATUS == 0 {
                c.latch_status(now);
            }
        }
    }

    fn read_at(&mut self, offset: u64, now: Instant) -> u8 {
        let index = usize::try_from(offset).unwrap_or(usize::MAX);
        match self.counters.get_mut(index) {
            Some(c) => {
                c.settle(now);
                c.read_byte(now)
            }
            None => 0xff, // the control word register cannot be read
        }
    }

    fn write_at(&mut self, offset: u64, value: u8, now: Instant) {
        if offset == CONTROL_OFFSET {
            self.write_control(value, now);
        } else if let Some(c) = usize::try_from(offset)
            .ok()
            .and_then(|i| self.counters.get_mut(i))
        {
            c.settle(now);
            c.write_count_byte(value, now);
        } else {
            return;
        }
        if offset == TIMER_CHANNEL as u64 || offset == CONTROL_OFFSET {
            self.notify();
        }
    }
}

impl TimedDevice for Pit8254 {
    fn next_deadline(&self) -> Option<Instant> {
        let c = &self.counters[TIMER_CHANNEL];
        let edge = c.next_edge_after(c.signalled)?;
        c.clock.instant_of(edge)
    }

    fn tick(&mut self, now: Instant) {
        let c = &mut self.counters[TIMER_CHANNEL];
        let t = c.clock.ticks(now);
        let due = c.next_edge_after(c.signalled).is_some_and(|e| e <= t);
        c.signalled = c.signalled.max(t);
        c.settle(now);
        if due {
            self.irq0.pulse();
        }
    }
}

impl BusDevice for Pit8254 {
    /// An 8-bit device: a wide access is consecutive byte cycles.
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let now = self.clock.now();
        for (i, byte) in data.iter_mut().enumerate() {
            *byte = self.read_at(offset.saturating_add(i as u64), now);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let now = self.clock.now();
        for (i, &byte) in data.iter().enumerate() {
            self.write_at(offset.saturating_add(i as u64), byte, now);
        }
    }

    /// Each counter's mode, counts, GATE and OUT now (nothing latched).
    fn inspect(&self) -> Tree {
        inspect::tree_at(self, self.clock.now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[derive(Default)]
    struct Pulses(AtomicU32);

    impl IrqLine for Pulses {
        fn set_level(&self, high: bool) {
            if high {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    fn pit() -> (Pit8254, Arc<Pulses>, Instant) {
        let irq = Arc::new(Pulses::default());
        let p = Pit8254::new(irq.clone(), Arc::new(GuestClock::new()));
        let t0 = p.counters[0].clock.epoch;
        (p, irq, t0)
    }

    fn after_ticks(t0: Instant, ticks: u64) -> Instant {
        t0 + duration_of(ticks)
    }

    fn at_ms(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    /// Reads a 16-bit count with a counter latch command.
    fn latched(p: &mut Pit8254, channel: u8, now: Instant) -> u16 {
        p.write_at(3, channel << 6, now);
        let lo = p.read_at(u64::from(channel), now);
        let hi = p.read_at(u64::from(channel), now);
        u16::from_le_bytes([lo, hi])
    }

    /// Linux's periodic clockevent: mode 2, LSB then MSB, LATCH = 1193.
    fn linux_periodic(p: &mut Pit8254, now: Instant) {
        p.write_at(3, 0x34, now);
        p.write_at(0, (1193 & 0xff) as u8, now);
        p.write_at(0, (1193 >> 8) as u8, now);
    }

    /// Drives `p` the way a timer thread would until `end`.
    fn run_until(p: &mut Pit8254, end: Instant) {
        while let Some(deadline) = p.next_deadline().filter(|&d| d <= end) {
            p.tick(deadline);
        }
        p.tick(end);
    }

    #[test]
    fn mode2_count_decreases_with_time() {
        let (mut p, _, t0) = pit();
        linux_periodic(&mut p, t0);
        assert_eq!(latched(&mut p, 0, t0), 1193);
        assert_eq!(latched(&mut p, 0, after_ticks(t0, 100)), 1093);
        assert_eq!(latched(&mut p, 0, after_ticks(t0, 1192)), 1);
        assert_eq!(latched(&mut p, 0, after_ticks(t0, 1193)), 1193, "reload");
        assert_eq!(latched(&mut p, 0, after_ticks(t0, 1193 + 7)), 1186);
    }

    #[test]
    fn mode2_count_follows_the_host_clock() {
        let (mut p, _, _) = pit();
        p.write(3, &[0x34]);
        p.write(0, &[0xff, 0xff]);
        // The wide write above went to counters 0 and 1; reprogram 0.
        p.write(3, &[0x34]);
        p.write(0, &[0x00]);
        p.write(0, &[0x00]);
        let read = |p: &mut Pit8254| {
            let mut b = [0u8; 1];
            p.write(3, &[0x00]);
            p.read(0, &mut b);
            let lo = b[0];
            p.read(0, &mut b);
            u16::from_le_bytes([lo, b[0]])
        };
        let start = Instant::now();
        let a = read(&mut p);
        std::thread::sleep(Duration::from_millis(5));
        let b = read(&mut p);
        let elapsed = ticks_in(start.elapsed());
        let counted = u64::from(a.wrapping_sub(b));
        assert!(counted >= 5_000, "{counted} ticks counted in 5 ms");
        assert!(counted <= elapsed + 10, "{counted} > {elapsed}");
    }

    #[test]
    fn irq0_is_periodic_at_1khz_for_count_1193() {
        let (mut p, irq, t0) = pit();
        linux_periodic(&mut p, t0);
        run_until(&mut p, at_ms(t0, 100));
        let n = irq.0.load(Ordering::SeqCst);
        assert!((99..=101).contains(&n), "{n} interrupts in 100 ms");
        let deadline = p.next_deadline().expect("periodic");
        let period = duration_of(1193);
        assert!(deadline > at_ms(t0, 100) && deadline <= at_ms(t0, 100) + period);
    }

    #[test]
    fn missed_periods_coalesce_into_one_pulse() {
        let (mut p, irq, t0) = pit();
        linux_periodic(&mut p, t0);
        p.tick(at_ms(t0, 50));
        assert_eq!(irq.0.load(Ordering::SeqCst), 1);
        p.tick(at_ms(t0, 50));
        assert_eq!(irq.0.load(Ordering::SeqCst), 1, "ticking twice is harmless");
    }

    #[test]
    fn mode0_fires_irq0_once() {
        let (mut p, irq, t0) = pit();
        p.write_at(3, 0x30, t0);
        assert!(!p.out_at(0, t0), "mode 0 control word sets OUT low");
        p.write_at(0, 0x10, t0);
        p.write_at(0, 0x27, t0); // 10000 ticks, ~8.4 ms
        assert_eq!(p.next_deadline(), Some(after_ticks(t0, 10_000)));
        run_until(&mut p, at_ms(t0, 100));
        assert_eq!(irq.0.load(Ordering::SeqCst), 1);
        assert_eq!(p.next_deadline(), None);
        assert!(p.out_at(0, at_ms(t0, 100)));
    }

    #[test]
    fn mode4_one_shot_as_linux_programs_it() {
        let (mut p, irq, t0) = pit();
        p.write_at(3, 0x38, t0);
        assert!(p.out_at(0, t0));
        p.write_at(0, 100, t0);
        p.write_at(0, 0, t0);
        assert!(!p.out_at(0, after_ticks(t0, 100)), "strobe");
        assert!(p.out_at(0, after_ticks(t0, 101)));
        run_until(&mut p, at_ms(t0, 10));
        assert_eq!(irq.0.load(Ordering::SeqCst), 1);
        // set_next_event: a new count retriggers.
        let t1 = at_ms(t0, 10);
        p.write_at(0, 50, t1);
        p.write_at(0, 0, t1);
        run_until(&mut p, at_ms(t0, 20));
        assert_eq!(irq.0.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn mode3_square_wave_halves_and_interrupts() {
        let (mut p, irq, t0) = pit();
        p.write_at(3, 0x36, t0);
        p.write_at(0, 100, t0);
        p.write_at(0, 0, t0);
        assert!(p.out_at(0, after_ticks(t0, 49)));
        assert!(!p.out_at(0, after_ticks(t0, 50)));
        assert!(p.out_at(0, after_ticks(t0, 100)));
        assert_eq!(latched(&mut p, 0, after_ticks(t0, 10)), 80);
        run_until(&mut p, after_ticks(t0, 1000));
        assert_eq!(irq.0.load(Ordering::SeqCst), 10);
    }

    #[test]
    fn channel2_out_goes_high_after_the_count_in_mode0() {
        // pit_calibrate_tsc: gate on, mode 0, LSB then MSB, poll OUT.
        let (mut p, _, t0) = pit();
        p.set_gate_at(2, true, t0);
        p.write_at(3, 0xb0, t0);
        p.write_at(2, 0x2e, t0);
        p.write_at(2, 0xe9, t0); // 59694 ticks: 50 ms
        assert!(!p.out_at(2, at_ms(t0, 49)));
        assert!(p.out_at(2, at_ms(t0, 51)));
    }

    #[test]
    fn quick_pit_calibrate_sees_the_msb_fall() {
        let (mut p, _, t0) = pit();
        p.set_gate_at(2, true, t0);
        p.write_at(3, 0xb0, t0);
        p.write_at(2, 0xff, t0);
        p.write_at(2, 0xff, t0);
        // Unlatched LSB, MSB reads, as pit_expect_msb does them.
        let now = after_ticks(t0, 256 * 3 + 10);
        let _lsb = p.read_at(2, now);
        assert_eq!(p.read_at(2, now), 0xff - 3);
    }

    #[test]
    fn gate_low_pauses_mode0_on_channel2() {
        let (mut p, _, t0) = pit();
        p.write_at(3, 0xb0, t0);
        p.write_at(2, 0xe8, t0);
        p.write_at(2, 0x03, t0); // 1000
        assert_eq!(latched(&mut p, 2, after_ticks(t0, 500)), 1000, "gate low");
        p.set_gate_at(2, true, after_ticks(t0, 500));
        assert_eq!(latched(&mut p, 2, after_ticks(t0, 600)), 900);
        p.set_gate_at(2, false, after_ticks(t0, 600));
        assert_eq!(latched(&mut p, 2, after_ticks(t0, 5000)), 900);
    }

    #[test]
    fn mode1_one_shot_starts_on_a_gate_edge() {
        let (mut p, _, t0) = pit();
        p.write_at(3, 0x92, t0); // counter 2, LSB, mode 1
        p.write_at(2, 10, t0);
        assert!(p.out_at(2, after_ticks(t0, 50)), "not triggered: high");
        p.set_gate_at(2, true, after_ticks(t0, 50));
        assert!(!p.out_at(2, after_ticks(t0, 55)));
        assert!(p.out_at(2, after_ticks(t0, 60)));
    }

    #[test]
    fn mode5_strobe_starts_on_a_gate_edge() {
        let (mut p, _, t0) = pit();
        p.write_at(3, 0x9a, t0); // counter 2, LSB, mode 5
        p.write_at(2, 10, t0);
        p.set_gate_at(2, true, after_ticks(t0, 5));
        assert!(!p.out_at(2, after_ticks(t0, 15)));
        assert!(p.out_at(2, after_ticks(t0, 16)));
    }

    #[test]
    fn mode2_new_count_waits_for_the_end_of_the_period() {
        let (mut p, _, t0) = pit();
        p.write_at(3, 0x34, t0);
        p.write_at(0, 100, t0);
        p.write_at(0, 0, t0);
        p.write_at(0, 40, after_ticks(t0, 30));
        p.write_at(0, 0, after_ticks(t0, 30));
        assert_eq!(latched(&mut p, 0, after_ticks(t0, 65)), 35, "old period");
        p.write_at(3, 0xe2, after_ticks(t0, 60)); // status of counter 0
        assert_ne!(p.read_at(0, after_ticks(t0, 60)) & STATUS_NULL_COUNT, 0);
        assert_eq!(latched(&mut p, 0, after_ticks(t0, 110)), 30, "new period");
    }

    #[test]
    fn read_back_latches_status_then_count() {
        let (mut p, _, t0) = pit();
        p.write_at(3, 0x34, t0);
        p.write_at(3, 0xe2, t0); // read-back: status of counter 0
        assert_eq!(p.read_at(0, t0), 0x34 | STATUS_OUTPUT | STATUS_NULL_COUNT);
        p.write_at(0, 0x10, t0);
        p.write_at(0, 0x00, t0);
        p.write_at(3, 0xc2, after_ticks(t0, 3)); // count and status
        let later = after_ticks(t0, 9);
        assert_eq!(p.read_at(0, later), 0x34 | STATUS_OUTPUT, "status first");
        assert_eq!(p.read_at(0, later), 0x0d, "16 - 3");
        assert_eq!(p.read_at(0, later), 0x00);
        assert_eq!(p.read_at(0, later), 0x07, "unlatched again: 16 - 9");
    }

    #[test]
    fn a_second_latch_before_reading_is_ignored() {
        let (mut p, _, t0) = pit();
        p.write_at(3, 0x34, t0);
        p.write_at(0, 0x00, t0);
        p.write_at(0, 0x10, t0);
        p.write_at(3, 0x00, after_ticks(t0, 1));
        p.write_at(3, 0x00, after_ticks(t0, 100));
        assert_eq!(p.read_at(0, after_ticks(t0, 200)), 0xff);
        assert_eq!(p.read_at(0, after_ticks(t0, 200)), 0x0f);
    }

    #[test]
    fn lsb_only_and_msb_only_access() {
        let (mut p, _, t0) = pit();
        p.write_at(3, 0x10, t0); // LSB only, mode 0
        p.write_at(0, 0x80, t0);
        assert_eq!(p.read_at(0, after_ticks(t0, 0x10)), 0x70);
        p.write_at(3, 0x20, t0); // MSB only
        p.write_at(0, 0x02, t0);
        assert_eq!(p.read_at(0, after_ticks(t0, 1)), 0x01, "0x200 - 1 = 0x1ff");
    }

    #[test]
    fn bcd_counting() {
        let (mut p, _, t0) = pit();
        p.write_at(3, 0x31, t0); // mode 0, BCD
        p.write_at(0, 0x00, t0);
        p.write_at(0, 0x10, t0); // 1000 decimal
        assert_eq!(latched(&mut p, 0, after_ticks(t0, 1)), 0x0999);
        p.write_at(0, 0x00, t0);
        p.write_at(0, 0x00, t0); // 0 = 10000
        assert_eq!(latched(&mut p, 0, after_ticks(t0, 1)), 0x9999);
    }

    #[test]
    fn control_port_reads_float() {
        let (mut p, _, t0) = pit();
        assert_eq!(p.read_at(3, t0), 0xff);
    }

    #[test]
    fn notifier_runs_when_counter0_is_reprogrammed() {
        let (mut p, _, t0) = pit();
        let calls = Arc::new(AtomicU32::new(0));
        let c = calls.clone();
        p.set_deadline_notifier(Arc::new(move || {
            c.fetch_add(1, Ordering::SeqCst);
        }));
        linux_periodic(&mut p, t0);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        p.write_at(2, 0, t0);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn every_control_word_and_count_byte() {
        let (mut p, irq, t0) = pit();
        let mut now = t0;
        for control in 0..=255u8 {
            for value in [0u8, 1, 2, 3, 0x99, 0xff] {
                now += Duration::from_micros(1);
                p.write_at(3, control, now);
                for counter in 0..3 {
                    p.write_at(counter, value, now);
                    p.write_at(counter, value, now);
                    p.set_gate_at(counter as usize, value & 1 != 0, now);
                    p.read_at(counter, now);
                    p.read_at(counter, now);
                    p.read_at(counter, now);
                }
                p.tick(now + Duration::from_millis(60));
                let _ = p.next_deadline();
            }
        }
        assert!(irq.0.load(Ordering::SeqCst) > 0);
    }

    #[test]
    fn hostile_guest_accesses_never_panic() {
        let (mut p, _, t0) = pit();
        let mut rng = 0x2545_f491_4f6c_dd1d;
        let mut now = t0;
        for _ in 0..50_000 {
            let r = xorshift(&mut rng);
            now += Duration::from_nanos(r % 5_000_000);
            let offset = [0, 1, 2, 3, 4, 7, u64::MAX][(r % 7) as usize];
            let value = (r >> 8) as u8;
            match (r >> 16) % 5 {
                0 => {
                    p.read_at(offset, now);
                }
                1 => p.set_gate_at((r >> 20) as usize % 4, r & (1 << 30) != 0, now),
                2 => p.tick(now),
                _ => p.write_at(offset, value, now),
            }
            let _ = p.next_deadline();
            let _ = p.out_at(2, now);
            if r.is_multiple_of(16) {
                let _ = inspect::tree_at(&p, now);
            }
        }
        let mut wide = [0u8; 8];
        p.read(0, &mut wide);
        p.write(1, &[0xff; 8]);
        p.read(u64::MAX, &mut wide);
    }
}
