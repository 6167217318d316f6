//! Motorola MC146818A real-time clock and its 128 bytes of CMOS RAM, as
//! the PC/AT wires them.
//!
//! Ports: 0x70 (index, write-only; bit 7 disables NMI) and 0x71 (data).
//! IRQ 8 (the chip's active-low IRQ pin, inverted on the board): high
//! while register C's IRQF is set, lowered by reading register C.
//!
//! Reference: Motorola MC146818A datasheet: "Address Map", "Time,
//! Calendar and Alarm Locations" (BCD or binary, 12- or 24-hour),
//! "Register A" (UIP, DV2-DV0, RS3-RS0 and the periodic rate table),
//! "Register B" (SET, PIE, AIE, UIE, SQWE, DM, 24/12, DSE), "Register C"
//! (IRQF, PF, AF, UF, cleared by reading), "Register D" (VRT), "Update
//! Cycle" (UIP is set 244 µs before the update). The CMOS map above 0x0d
//! follows the IBM PC/AT Technical Reference and the later BIOS
//! conventions: 0x10 floppy types, 0x14 equipment, 0x15-0x16 base memory
//! (KiB), 0x17-0x18 and 0x30-0x31 extended memory above 1 MiB (KiB, at
//! most 0xffff), 0x2e-0x2f checksum of 0x10-0x2d, 0x32 century, 0x34-0x35
//! memory above 16 MiB below the 4 GiB hole (64 KiB blocks), 0x5b-0x5d
//! memory above 4 GiB (64 KiB blocks).
//!
//! Time: the clock starts at the host's UTC wall-clock time and advances
//! with the host's monotonic clock ([`Instant`]); later host clock steps
//! are not followed. The guest may set the clock (SET=1, write the time
//! registers, SET=0); from then on it runs at that offset from host time.
//! The divider chain is modelled: time stops while DV2-DV0 hold it in
//! reset and the first update comes 500 ms after the reset is released,
//! as Linux's `mc146818_set_time` expects; the second boundaries and the
//! periodic taps are phases of that chain.
//!
//! Interrupts: the periodic (rate from RS3-RS0), alarm (with "don't care"
//! bytes) and update-ended interrupts set their flags whether or not they
//! are enabled. The alarm also drives an *alarm output*
//! ([`Rtc::set_alarm_output`]): high while AF and AIE are both set. The
//! VMM wires it to the ACPI PM block's RTC_STS, as a PC chipset routes
//! the RTC alarm to its power-management logic (ACPI 6.5 §4.8.2.1.1,
//! "RTC_STS"), so the alarm can wake the machine from S3. The device owns no thread: the VMM drives it through
//! [`TimedDevice`], like the PIT. Flags are also brought up to date on
//! every register access, so a guest polling register C sees them
//! without a tick.
//!
//! Left out: daylight saving (DSE is stored but ignored), the square-wave
//! pin (SQWE is stored), the 4.194304 and 1.048576 MHz time bases
//! (DV = 000 and 001 run like 010, the PC's 32.768 kHz crystal; other
//! divider values hold the chain), and the second CMOS bank at 0x72-0x73.
//! Port 0x70 reads as 0xff. Invalid time values the guest writes are
//! normalized when the clock restarts (second 99 is 1 minute 39 seconds).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use alcazar_core::inspect::Tree;
use alcazar_core::irq::IrqLine;
use alcazar_core::{BusDevice, GuestClock};

use crate::pit::{DeadlineNotifier, TimedDevice};

mod inspect;

/// The index port.
pub const INDEX_PORT: u16 = 0x70;
/// The data port.
pub const DATA_PORT: u16 = 0x71;
/// Number of ports, from [`INDEX_PORT`].
pub const PORT_COUNT: u16 = 2;
/// Bytes of CMOS RAM, clock registers included.
pub const CMOS_SIZE: usize = 128;
/// The CMOS byte holding the century (the FADT's CENTURY field).
pub const CENTURY: u8 = 0x32;

// Clock registers.
const SECONDS: u8 = 0x00;
const SECONDS_ALARM: u8 = 0x01;
const MINUTES: u8 = 0x02;
const MINUTES_ALARM: u8 = 0x03;
const HOURS: u8 = 0x04;
const HOURS_ALARM: u8 = 0x05;
const DAY_OF_WEEK: u8 = 0x06;
const DAY_OF_MONTH: u8 = 0x07;
const MONTH: u8 = 0x08;
const YEAR: u8 = 0x09;
const REG_A: u8 = 0x0a;
const REG_B: u8 = 0x0b;
const REG_C: u8 = 0x0c;
const REG_D: u8 = 0x0d;
const TIME_REGISTERS: [u8; 8] = [
    SECONDS,
    MINUTES,
    HOURS,
    DAY_OF_WEEK,
    DAY_OF_MONTH,
    MONTH,
    YEAR,
    CENTURY,
];

// Register A.
const A_UIP: u8 = 1 << 7;
const A_DV_SHIFT: u8 = 4;
const A_RS_MASK: u8 = 0x0f;
// Register B.
const B_SET: u8 = 1 << 7;
const B_PIE: u8 = 1 << 6;
const B_AIE: u8 = 1 << 5;
const B_UIE: u8 = 1 << 4;
const B_DM_BINARY: u8 = 1 << 2;
const B_24H: u8 = 1 << 1;
// Register C.
const C_IRQF: u8 = 1 << 7;
const C_PF: u8 = 1 << 6;
const C_AF: u8 = 1 << 5;
const C_UF: u8 = 1 << 4;
// Register D.
const D_VRT: u8 = 1 << 7;
// Index port.
const NMI_DISABLE: u8 = 1 << 7;
// A "don't care" alarm byte.
const ALARM_ANY: u8 = 0xc0;

// CMOS map.
const EQUIPMENT: usize = 0x14;
const EQUIPMENT_FPU: u8 = 1 << 1;
const BASE_MEMORY: usize = 0x15;
const EXTENDED_MEMORY: usize = 0x17;
const EXTENDED_MEMORY_POST: usize = 0x30;
const CHECKSUM: usize = 0x2e;
const CHECKSUMMED: std::ops::RangeInclusive<usize> = 0x10..=0x2d;
const MEMORY_ABOVE_16M: usize = 0x34;
const MEMORY_ABOVE_4G: usize = 0x5b;

const NANOS: u64 = 1_000_000_000;
/// Hz of the time base the divider chain divides.
const TIME_BASE_HZ: u64 = 32_768;
/// UIP rises this long before an update: 8 cycles of the time base.
const UIP_NANOS: u64 = 244_141;
/// After the divider leaves reset, the first update comes this late.
const RESET_RELEASE_NANOS: u64 = 500_000_000;
const SECONDS_PER_DAY: i64 = 86_400;

/// How much RAM the machine has, for the CMOS memory-size bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemorySizes {
    /// Bytes of RAM from address 0 up to the 32-bit PCI hole.
    pub below_4g: u64,
    /// Bytes of RAM from 4 GiB up.
    pub above_4g: u64,
}

/// The 22-stage divider chain while it runs: at `origin` it was
/// `phase0` nanoseconds into its current cycle of seconds.
#[derive(Clone, Copy, Debug)]
struct Divider {
    origin: Instant,
    phase0: u64,
}

impl Divider {
    /// Nanoseconds since the chain's phase zero.
    fn phase(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.origin).as_nanos();
        self.phase0
            .saturating_add(u64::try_from(since).unwrap_or(u64::MAX))
    }

    fn instant_of(&self, phase: u64) -> Option<Instant> {
        let after = Duration::from_nanos(phase.saturating_sub(self.phase0));
        self.origin.checked_add(after)
    }
}

/// Ticks of the 32.768 kHz time base in `phase` nanoseconds.
fn time_base_ticks(phase: u64) -> u64 {
    (u128::from(phase) * u128::from(TIME_BASE_HZ) / u128::from(NANOS)) as u64
}

/// A broken-down UTC time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct DateTime {
    year: i64,
    month: u8,
    day: u8,
    hour: u8,
    minute: u8,
    second: u8,
    /// 1 = Sunday ... 7 = Saturday, as the chip counts.
    weekday: u8,
}

/// Days from 1970-01-01 to a proleptic Gregorian date (H. Hinnant's
/// `days_from_civil`); `day` may be out of range and counts on linearly.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = year + (month - 1).div_euclid(12);
    let month = (month - 1).rem_euclid(12) + 1;
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

impl DateTime {
    fn from_unix(secs: i64) -> Self {
        let days = secs.div_euclid(SECONDS_PER_DAY);
        let sod = secs.rem_euclid(SECONDS_PER_DAY);
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        DateTime {
            year,
            month: month as u8,
            day: day as u8,
            hour: (sod / 3600) as u8,
            minute: (sod / 60 % 60) as u8,
            second: (sod % 60) as u8,
            // 1970-01-01 was a Thursday (5).
            weekday: ((days + 4).rem_euclid(7) + 1) as u8,
        }
    }
}

/// Host wall-clock time as (Unix seconds, nanoseconds into the second).
fn unix_time(t: SystemTime) -> (i64, u64) {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (
            i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            u64::from(d.subsec_nanos()),
        ),
        Err(e) => {
            let d = e.duration();
            let secs = -i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            match d.subsec_nanos() {
                0 => (secs, 0),
                n => (secs - 1, NANOS - u64::from(n)),
            }
        }
    }
}

/// The MC146818A with its CMOS RAM.
pub struct Rtc {
    index: u8,
    nmi_disabled: bool,
    /// NVRAM, alarms, registers A (bits 6-0) and B, and the time
    /// registers while the clock is stopped.
    cmos: [u8; CMOS_SIZE],
    /// Register C's PF, AF and UF.
    flags: u8,
    /// The divider chain, unless held in reset.
    divider: Option<Divider>,
    /// Guest Unix time = `epoch` + whole seconds of the divider's phase.
    epoch: i64,
    /// Added to the computed day of week (the chip keeps whatever the
    /// guest wrote).
    weekday_offset: u8,
    /// Flags are up to date as of this instant.
    settled: Instant,
    irq: Arc<dyn IrqLine>,
    irq_level: bool,
    /// The alarm output (AF and AIE), if the VMM wired it.
    alarm_output: Option<Arc<dyn IrqLine>>,
    alarm_level: bool,
    notifier: Option<DeadlineNotifier>,
    /// The VM's guest clock (a private running one for
    /// [`Rtc::with_start_time`]).
    clock: Arc<GuestClock>,
}

impl std::fmt::Debug for Rtc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rtc")
            .field("index", &self.index)
            .field("register_a", &self.cmos[usize::from(REG_A)])
            .field("register_b", &self.cmos[usize::from(REG_B)])
            .field("flags", &self.flags)
            .field("epoch", &self.epoch)
            .field("irq", &self.irq_level)
            .finish_non_exhaustive()
    }
}

impl Rtc {
    /// An RTC showing the host's current UTC time, with the memory-size
    /// bytes for `memory`, raising `irq8`, keeping time by `clock` (the
    /// VM's guest clock, so the RTC stands still while the VM is paused).
    pub fn new(memory: MemorySizes, irq8: Arc<dyn IrqLine>, clock: Arc<GuestClock>) -> Self {
        let mut rtc = Self::with_start_time(memory, irq8, SystemTime::now(), clock.now());
        rtc.clock = clock;
        rtc
    }

    /// An RTC whose clock reads `start` at the monotonic instant `now`
    /// (for reproducible runs and tests). Registers as a BIOS leaves
    /// them: A = 0x26 (32.768 kHz, 1024 Hz periodic rate), B = 0x02 (BCD,
    /// 24-hour, no interrupts).
    pub fn with_start_time(
        memory: MemorySizes,
        irq8: Arc<dyn IrqLine>,
        start: SystemTime,
        now: Instant,
    ) -> Self {
        let (secs, nanos) = unix_time(start);
        let mut rtc = Rtc {
            index: 0,
            nmi_disabled: false,
            cmos: [0; CMOS_SIZE],
            flags: 0,
            divider: Some(Divider {
                origin: now,
                phase0: nanos,
            }),
            epoch: secs,
            weekday_offset: 0,
            settled: now,
            irq: irq8,
            irq_level: false,
            alarm_output: None,
            alarm_level: false,
            notifier: None,
            clock: Arc::new(GuestClock::new()),
        };
        rtc.cmos[usize::from(REG_A)] = 0x26;
        rtc.cmos[usize::from(REG_B)] = B_24H;
        rtc.store_memory_sizes(memory);
        rtc
    }

    /// Whether the guest has set bit 7 of the index port (NMI disabled).
    pub fn nmi_disabled(&self) -> bool {
        self.nmi_disabled
    }

    /// Sets the function called when a guest access may have moved the
    /// next deadline (see [`DeadlineNotifier`]).
    pub fn set_deadline_notifier(&mut self, notifier: DeadlineNotifier) {
        self.notifier = Some(notifier);
    }

    /// Wires the alarm output: `line` is high while register C's AF and
    /// register B's AIE are both set (an alarm the guest asked to be
    /// told of). A PC routes it to the ACPI PM block's RTC_STS.
    pub fn set_alarm_output(&mut self, line: Arc<dyn IrqLine>) {
        self.alarm_level = false;
        self.alarm_output = Some(line);
        self.update_irq();
    }

    fn store_memory_sizes(&mut self, memory: MemorySizes) {
        const KIB: u64 = 1 << 10;
        const MIB: u64 = 1 << 20;
        let below_4g = memory.below_4g.min(1 << 32);
        let base = (below_4g / KIB).min(640);
        let extended = (below_4g.saturating_sub(MIB) / KIB).min(0xffff);
        let above_16m = (below_4g.saturating_sub(16 * MIB) / (64 * KIB)).min(0xffff);
        let above_4g = (memory.above_4g / (64 * KIB)).min(0xff_ffff);
        self.cmos[EQUIPMENT] = EQUIPMENT_FPU;
        self.put_le(BASE_MEMORY, base, 2);
        self.put_le(EXTENDED_MEMORY, extended, 2);
        self.put_le(EXTENDED_MEMORY_POST, extended, 2);
        self.put_le(MEMORY_ABOVE_16M, above_16m, 2);
        self.put_le(MEMORY_ABOVE_4G, above_4g, 3);
        let sum: u16 = self.cmos[CHECKSUMMED]
            .iter()
            .fold(0, |s, &b| s.wrapping_add(u16::from(b)));
        self.cmos[CHECKSUM..CHECKSUM + 2].copy_from_slice(&sum.to_be_bytes());
    }

    fn put_le(&mut self, at: usize, value: u64, len: usize) {
        let bytes = value.to_le_bytes();
        if let Some(dst) = self.cmos.get_mut(at..at + len) {
            dst.copy_from_slice(&bytes[..len]);
        }
    }

    fn reg(&self, index: u8) -> u8 {
        self.cmos[usize::from(index & 0x7f)]
    }

    fn binary(&self) -> bool {
        self.reg(REG_B) & B_DM_BINARY != 0
    }

    fn hours_24(&self) -> bool {
        self.reg(REG_B) & B_24H != 0
    }

    /// Whether the time registers are frozen: SET inhibits updates, or the
    /// divider chain is held in reset.
    fn frozen(&self) -> bool {
        self.reg(REG_B) & B_SET != 0 || self.divider.is_none()
    }

    fn encode(&self, v: u8) -> u8 {
        if self.binary() {
            v
        } else {
            ((v / 10) << 4) | (v % 10)
        }
    }

    fn decode(&self, b: u8) -> i64 {
        if self.binary() {
            i64::from(b)
        } else {
            i64::from(b >> 4) * 10 + i64::from(b & 0xf)
        }
    }

    fn encode_hours(&self, hour: u8) -> u8 {
        if self.hours_24() {
            return self.encode(hour);
        }
        let pm = if hour >= 12 { 0x80 } else { 0 };
        let h12 = match hour % 12 {
            0 => 12,
            h => h,
        };
        self.encode(h12) | pm
    }

    fn decode_hours(&self, b: u8) -> i64 {
        let h = self.decode(b & 0x7f);
        if self.hours_24() {
            h
        } else {
            h % 12 + if b & 0x80 != 0 { 12 } else { 0 }
        }
    }

    /// Guest Unix seconds at `now` while the clock runs.
    fn seconds(&self, now: Instant) -> i64 {
        let whole = self.divider.map_or(0, |d| d.phase(now) / NANOS);
        self.epoch.saturating_add(whole as i64)
    }

    /// The value of time register `index` for time `t`.
    fn time_field(&self, index: u8, t: &DateTime) -> u8 {
        match index {
            SECONDS => self.encode(t.second),
            MINUTES => self.encode(t.minute),
            HOURS => self.encode_hours(t.hour),
            DAY_OF_WEEK => self.encode((t.weekday - 1 + self.weekday_offset) % 7 + 1),
            DAY_OF_MONTH => self.encode(t.day),
            MONTH => self.encode(t.month),
            YEAR => self.encode(t.year.rem_euclid(100) as u8),
            CENTURY => self.encode((t.year / 100).rem_euclid(100) as u8),
            _ => self.reg(index),
        }
    }

    fn time_register(&self, index: u8, now: Instant) -> u8 {
        if self.frozen() {
            self.reg(index)
        } else {
            self.time_field(index, &DateTime::from_unix(self.seconds(now)))
        }
    }

    /// Stops the clock: the time registers keep the current time.
    fn snapshot(&mut self, now: Instant) {
        let t = DateTime::from_unix(self.seconds(now));
        for index in TIME_REGISTERS {
            self.cmos[usize::from(index)] = self.time_field(index, &t);
        }
    }

    /// Restarts the clock from the time registers, keeping the divider's
    /// phase within the second.
    fn anchor(&mut self, now: Instant) {
        let Some(divider) = self.divider else { return };
        let year = self.decode(self.reg(YEAR)) + 100 * self.decode(self.reg(CENTURY));
        let month = self.decode(self.reg(MONTH));
        let day = self.decode(self.reg(DAY_OF_MONTH));
        let secs = days_from_civil(year, month, day) * SECONDS_PER_DAY
            + self.decode_hours(self.reg(HOURS)) * 3600
            + self.decode(self.reg(MINUTES)) * 60
            + self.decode(self.reg(SECONDS));
        self.epoch = secs - (divider.phase(now) / NANOS) as i64;
        let computed = i64::from(DateTime::from_unix(secs).weekday);
        let written = self.decode(self.reg(DAY_OF_WEEK));
        self.weekday_offset = (written - computed).rem_euclid(7) as u8;
    }

    /// Periodic interrupt period in time-base ticks (register A RS3-RS0).
    fn periodic_ticks(&self) -> Option<u64> {
        match self.reg(REG_A) & A_RS_MASK {
            0 => None,
            rs @ (1 | 2) => Some(1 << (rs + 6)),
            rs => Some(1 << (rs - 1)),
        }
    }

    /// An alarm byte: `Ok(None)` for "don't care", `Err` for a value the
    /// clock never shows.
    fn alarm_field(&self, b: u8, limit: i64) -> Result<Option<i64>, ()> {
        if b & ALARM_ANY == ALARM_ANY {
            return Ok(None);
        }
        let digits_ok = self.binary() || (b & 0xf < 10 && b >> 4 < 10);
        let v = self.decode(b);
        if digits_ok && v < limit {
            Ok(Some(v))
        } else {
            Err(())
        }
    }

    fn alarm_hours(&self, b: u8) -> Result<Option<i64>, ()> {
        if b & ALARM_ANY == ALARM_ANY || self.hours_24() {
            return self.alarm_field(b, 24);
        }
        match self.alarm_field(b & 0x7f, 13)? {
            Some(0) => Err(()),
            Some(h) => Ok(Some(self.decode_hours(self.encode(h as u8) | (b & 0x80)))),
            None => Ok(None),
        }
    }

    /// Whether the alarm matches any update in guest seconds
    /// `first..=last` (a day covers every time of day).
    fn alarm_hit(&self, first: i64, last: i64) -> bool {
        let fields = (
            self.alarm_hours(self.reg(HOURS_ALARM)),
            self.alarm_field(self.reg(MINUTES_ALARM), 60),
            self.alarm_field(self.reg(SECONDS_ALARM), 60),
        );
        let (Ok(hour), Ok(minute), Ok(second)) = fields else {
            return false;
        };
        let first = first.max(last.saturating_sub(SECONDS_PER_DAY - 1));
        let hits = |field: Option<i64>, value: i64| field.unwrap_or(value) == value;
        (first..=last).any(|t| {
            let sod = t.rem_euclid(SECONDS_PER_DAY);
            hits(hour, sod / 3600) && hits(minute, sod / 60 % 60) && hits(second, sod % 60)
        })
    }

    /// Brings PF, UF and AF up to `now`.
    fn settle(&mut self, now: Instant) {
        if now <= self.settled {
            return;
        }
        self.flags = self.flags_at(now);
        self.settled = now;
    }

    /// PF, UF and AF as they will be at `now` (without settling them).
    fn flags_at(&self, now: Instant) -> u8 {
        let mut flags = self.flags;
        let Some(divider) = self.divider.filter(|_| now > self.settled) else {
            return flags;
        };
        let (p0, p1) = (divider.phase(self.settled), divider.phase(now));
        if let Some(period) = self.periodic_ticks() {
            if time_base_ticks(p1) / period > time_base_ticks(p0) / period {
                flags |= C_PF;
            }
        }
        let (s0, s1) = ((p0 / NANOS) as i64, (p1 / NANOS) as i64);
        if s1 > s0 && self.reg(REG_B) & B_SET == 0 {
            flags |= C_UF;
            let (first, last) = (self.epoch + s0 + 1, self.epoch + s1);
            if flags & C_AF == 0 && self.alarm_hit(first, last) {
                flags |= C_AF;
            }
        }
        flags
    }

    fn irqf(&self) -> bool {
        self.flags & self.reg(REG_B) & (B_PIE | B_AIE | B_UIE) != 0
    }

    fn update_irq(&mut self) {
        let level = self.irqf();
        if level != self.irq_level {
            self.irq_level = level;
            self.irq.set_level(level);
        }
        let alarm = self.flags & self.reg(REG_B) & C_AF & B_AIE != 0;
        if alarm != self.alarm_level {
            self.alarm_level = alarm;
            if let Some(line) = &self.alarm_output {
                line.set_level(alarm);
            }
        }
    }

    /// Whether the alarm output waits for an alarm: wired, AIE set, AF
    /// not yet set and the clock running.
    fn alarm_armed(&self) -> bool {
        let b = self.reg(REG_B);
        self.alarm_output.is_some() && b & B_AIE != 0 && self.flags & C_AF == 0 && b & B_SET == 0
    }

    fn update_in_progress(&self, now: Instant) -> bool {
        match self.divider {
            Some(d) if self.reg(REG_B) & B_SET == 0 => d.phase(now) % NANOS >= NANOS - UIP_NANOS,
            _ => false,
        }
    }

    fn read_register(&mut self, index: u8, now: Instant) -> u8 {
        match index {
            REG_A => {
                let uip = if self.update_in_progress(now) {
                    A_UIP
                } else {
                    0
                };
                self.reg(REG_A) | uip
            }
            REG_C => {
                let irqf = if self.irqf() { C_IRQF } else { 0 };
                std::mem::take(&mut self.flags) | irqf
            }
            REG_D => D_VRT,
            i if TIME_REGISTERS.contains(&i) => self.time_register(i, now),
            i => self.reg(i),
        }
    }

    fn write_register(&mut self, index: u8, value: u8, now: Instant) {
        match index {
            REG_A => self.write_register_a(value, now),
            REG_B => self.write_register_b(value, now),
            REG_C | REG_D => {} // read-only
            i if TIME_REGISTERS.contains(&i) => {
                let running = !self.frozen();
                if running {
                    self.snapshot(now);
                }
                self.cmos[usize::from(i)] = value;
                if running {
                    self.anchor(now);
                }
            }
            i => self.cmos[usize::from(i & 0x7f)] = value,
        }
    }

    /// Register A: DV2-DV0 start, stop or reset the divider chain.
    fn write_register_a(&mut self, value: u8, now: Instant) {
        let runs = (value >> A_DV_SHIFT) & 7 <= 2;
        match (self.divider.is_some(), runs) {
            (true, false) => {
                if !self.frozen() {
                    self.snapshot(now);
                }
                self.divider = None;
            }
            (false, true) => {
                self.divider = Some(Divider {
                    origin: now,
                    phase0: RESET_RELEASE_NANOS,
                });
                if !self.frozen() {
                    self.anchor(now);
                }
            }
            _ => {}
        }
        self.cmos[usize::from(REG_A)] = value & !A_UIP;
    }

    /// Register B: SET stops the clock (and clears UIE); clearing it
    /// restarts the clock from the time registers.
    fn write_register_b(&mut self, value: u8, now: Instant) {
        let was_frozen = self.frozen();
        let value = if value & B_SET != 0 {
            value & !B_UIE
        } else {
            value
        };
        if !was_frozen && value & B_SET != 0 {
            self.snapshot(now);
        }
        self.cmos[usize::from(REG_B)] = value;
        if was_frozen && !self.frozen() {
            self.anchor(now);
        }
    }

    fn notify(&self) {
        if let Some(n) = &self.notifier {
            n();
        }
    }

    fn read_at(&mut self, offset: u64, now: Instant) -> u8 {
        if offset != 1 {
            return 0xff; // the index port is write-only
        }
        self.settle(now);
        let value = self.read_register(self.index, now);
        self.update_irq();
        value
    }

    fn write_at(&mut self, offset: u64, value: u8, now: Instant) {
        match offset {
            0 => {
                self.index = value & 0x7f;
                self.nmi_disabled = value & NMI_DISABLE != 0;
            }
            1 => {
                self.settle(now);
                self.write_register(self.index, value, now);
                self.update_irq();
                self.notify();
            }
            _ => {}
        }
    }
}

impl TimedDevice for Rtc {
    /// The next periodic edge (PIE) or update (UIE, AIE: the alarm is
    /// checked at every update). While IRQ 8 is already asserted nothing
    /// more reaches the guest until it reads register C, so only the
    /// updates an armed alarm output still waits for count (a sleeping
    /// guest reads nothing, and its wake alarm must still fire).
    fn next_deadline(&self) -> Option<Instant> {
        if self.irq_level && !self.alarm_armed() {
            return None;
        }
        let divider = self.divider?;
        let b = self.reg(REG_B);
        let phase = divider.phase(self.settled);
        let pie = b & B_PIE != 0 && !self.irq_level;
        let periodic = self.periodic_ticks().filter(|_| pie).map(|p| {
            let next = (time_base_ticks(phase) / p + 1).saturating_mul(p);
            let nanos = (u128::from(next) * u128::from(NANOS)).div_ceil(u128::from(TIME_BASE_HZ));
            u64::try_from(nanos).unwrap_or(u64::MAX)
        });
        let updates = b & (B_UIE | B_AIE) != 0 && b & B_SET == 0;
        let update = updates.then(|| (phase / NANOS + 1).saturating_mul(NANOS));
        let next = match (periodic, update) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        divider.instant_of(next?)
    }

    fn tick(&mut self, now: Instant) {
        self.settle(now);
        self.update_irq();
    }
}

impl BusDevice for Rtc {
    /// An 8-bit device: a wide access is consecutive byte cycles (so
    /// `out 0x70, ax` selects the index in AL and writes AH).
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

    /// Registers A-D, the time and alarm as the guest reads them now
    /// (register C's flags are shown, not cleared).
    fn inspect(&self) -> Tree {
        inspect::tree_at(self, self.clock.now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[derive(Default)]
    struct Line(AtomicBool);

    impl IrqLine for Line {
        fn set_level(&self, high: bool) {
            self.0.store(high, Ordering::SeqCst);
        }
    }

    /// 2024-02-29 13:45:30.25 UTC, a Thursday.
    const LEAP_DAY: u64 = 1_709_214_330;

    fn rtc_at(unix: u64, nanos: u32) -> (Rtc, Arc<Line>, Instant) {
        let line = Arc::new(Line::default());
        let t0 = Instant::now();
        let start = UNIX_EPOCH + Duration::new(unix, nanos);
        let memory = MemorySizes {
            below_4g: 3 << 30,
            above_4g: 5 << 30,
        };
        let rtc = Rtc::with_start_time(memory, line.clone(), start, t0);
        (rtc, line, t0)
    }

    fn rtc() -> (Rtc, Arc<Line>, Instant) {
        rtc_at(LEAP_DAY, 250_000_000)
    }

    fn get(r: &mut Rtc, index: u8, now: Instant) -> u8 {
        r.write_at(0, index, now);
        r.read_at(1, now)
    }

    fn set(r: &mut Rtc, index: u8, value: u8, now: Instant) {
        r.write_at(0, index, now);
        r.write_at(1, value, now);
    }

    fn ms(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    fn time(r: &mut Rtc, now: Instant) -> [u8; 8] {
        TIME_REGISTERS.map(|i| get(r, i, now))
    }

    #[test]
    fn time_registers_show_the_start_time_in_bcd() {
        let (mut r, _, t0) = rtc();
        // seconds, minutes, hours, weekday, day, month, year, century
        assert_eq!(
            time(&mut r, t0),
            [0x30, 0x45, 0x13, 5, 0x29, 0x02, 0x24, 0x20]
        );
    }

    #[test]
    fn time_registers_in_binary_and_12_hour_mode() {
        let (mut r, _, t0) = rtc();
        set(&mut r, REG_B, B_24H | B_DM_BINARY, t0);
        assert_eq!(time(&mut r, t0), [30, 45, 13, 5, 29, 2, 24, 20]);
        set(&mut r, REG_B, 0, t0); // BCD, 12-hour
        assert_eq!(get(&mut r, HOURS, t0), 0x81, "1 PM");
        let (mut r, _, t0) = rtc_at(LEAP_DAY - 13 * 3600 - 45 * 60 - 30, 0);
        set(&mut r, REG_B, 0, t0);
        assert_eq!(get(&mut r, HOURS, t0), 0x12, "midnight is 12 AM");
        let (mut r, _, t0) = rtc_at(LEAP_DAY - 3600 - 45 * 60 - 30, 0);
        set(&mut r, REG_B, 0, t0);
        assert_eq!(get(&mut r, HOURS, t0), 0x92, "noon is 12 PM");
    }

    #[test]
    fn time_matches_the_host_clock() {
        let line = Arc::new(Line::default());
        let mut r = Rtc::new(MemorySizes::default(), line, Arc::new(GuestClock::new()));
        let now = Instant::now();
        let host = unix_time(SystemTime::now()).0;
        set(&mut r, REG_B, B_24H | B_DM_BINARY, now);
        let read = time(&mut r, now);
        let sod = i64::from(read[2]) * 3600 + i64::from(read[1]) * 60 + i64::from(read[0]);
        let diff = (sod - host.rem_euclid(SECONDS_PER_DAY)).rem_euclid(SECONDS_PER_DAY);
        assert!(diff <= 1 || diff >= SECONDS_PER_DAY - 1, "off by {diff} s");
        let today = DateTime::from_unix(host);
        assert_eq!(read[4], today.day);
        assert_eq!(read[5], today.month);
        assert_eq!(i64::from(read[7]) * 100 + i64::from(read[6]), today.year);
    }

    #[test]
    fn seconds_advance_at_the_update() {
        let (mut r, _, t0) = rtc();
        assert_eq!(get(&mut r, SECONDS, ms(t0, 749)), 0x30);
        assert_eq!(get(&mut r, SECONDS, ms(t0, 750)), 0x31);
        assert_eq!(get(&mut r, SECONDS, ms(t0, 29_750)), 0x00);
        assert_eq!(get(&mut r, MINUTES, ms(t0, 29_750)), 0x46);
    }

    #[test]
    fn uip_is_set_for_244_us_before_each_update() {
        let (mut r, _, t0) = rtc();
        let update = ms(t0, 750);
        assert_eq!(get(&mut r, REG_A, t0), 0x26);
        let before = update - Duration::from_micros(250);
        assert_eq!(get(&mut r, REG_A, before) & A_UIP, 0);
        let during = update - Duration::from_micros(240);
        assert_eq!(get(&mut r, REG_A, during) & A_UIP, A_UIP);
        assert_eq!(get(&mut r, SECONDS, during), 0x30, "not updated yet");
        assert_eq!(get(&mut r, REG_A, update) & A_UIP, 0);
        set(&mut r, REG_A, 0xa6, t0);
        assert_eq!(get(&mut r, REG_A, t0), 0x26, "UIP is read-only");
    }

    #[test]
    fn register_c_reads_clear_the_flags_and_lower_irq8() {
        let (mut r, line, t0) = rtc();
        set(&mut r, REG_B, B_24H | B_UIE, t0);
        assert!(!line.0.load(Ordering::SeqCst));
        r.tick(ms(t0, 800));
        assert!(line.0.load(Ordering::SeqCst));
        assert_eq!(get(&mut r, REG_C, ms(t0, 800)), C_IRQF | C_UF | C_PF);
        assert!(!line.0.load(Ordering::SeqCst));
        assert_eq!(get(&mut r, REG_C, ms(t0, 800)), 0);
    }

    #[test]
    fn flags_are_set_without_their_enables() {
        let (mut r, line, t0) = rtc();
        r.tick(ms(t0, 800));
        assert!(!line.0.load(Ordering::SeqCst));
        assert_eq!(get(&mut r, REG_C, ms(t0, 800)), C_UF | C_PF);
        set(&mut r, REG_B, B_24H | B_PIE, ms(t0, 800));
        assert!(!line.0.load(Ordering::SeqCst));
        r.tick(ms(t0, 801));
        assert!(line.0.load(Ordering::SeqCst), "1024 Hz: due within 1 ms");
    }

    /// Runs the RTC like a timer thread with a guest handler that reads
    /// register C on every interrupt; returns the interrupt count.
    fn interrupts_until(r: &mut Rtc, line: &Line, end: Instant) -> u32 {
        let mut n = 0;
        while let Some(deadline) = r.next_deadline().filter(|&d| d <= end) {
            r.tick(deadline);
            if line.0.load(Ordering::SeqCst) {
                n += 1;
                get(r, REG_C, deadline);
            }
        }
        n
    }

    #[test]
    fn periodic_interrupt_follows_the_rate_in_register_a() {
        let (mut r, line, t0) = rtc();
        set(&mut r, REG_B, B_24H | B_PIE, t0);
        assert_eq!(interrupts_until(&mut r, &line, ms(t0, 1000)), 1024);
        set(&mut r, REG_A, 0x2f, ms(t0, 1000)); // 2 Hz
        assert_eq!(interrupts_until(&mut r, &line, ms(t0, 3000)), 4);
        set(&mut r, REG_A, 0x23, ms(t0, 3000)); // 8192 Hz
        assert_eq!(interrupts_until(&mut r, &line, ms(t0, 3100)), 819);
        set(&mut r, REG_A, 0x20, ms(t0, 3100)); // none
        assert_eq!(r.next_deadline(), None);
    }

    #[test]
    fn update_ended_interrupt_once_a_second() {
        let (mut r, line, t0) = rtc();
        set(&mut r, REG_B, B_24H | B_UIE, t0);
        assert_eq!(interrupts_until(&mut r, &line, ms(t0, 3000)), 3);
    }

    #[test]
    fn alarm_interrupt_at_the_alarm_time() {
        let (mut r, line, t0) = rtc();
        set(&mut r, HOURS_ALARM, 0x13, t0);
        set(&mut r, MINUTES_ALARM, 0x45, t0);
        set(&mut r, SECONDS_ALARM, 0x33, t0);
        set(&mut r, REG_B, B_24H | B_AIE, t0);
        r.tick(ms(t0, 2_749));
        assert!(!line.0.load(Ordering::SeqCst), "13:45:32");
        r.tick(ms(t0, 2_750));
        assert!(line.0.load(Ordering::SeqCst), "13:45:33");
        assert_eq!(
            get(&mut r, REG_C, ms(t0, 2_750)),
            C_IRQF | C_AF | C_UF | C_PF
        );
    }

    #[test]
    fn the_alarm_output_follows_af_and_aie() {
        let (mut r, irq, t0) = rtc();
        let out = Arc::new(Line::default());
        r.set_alarm_output(out.clone());
        set(&mut r, HOURS_ALARM, 0x13, t0);
        set(&mut r, MINUTES_ALARM, 0x45, t0);
        set(&mut r, SECONDS_ALARM, 0x33, t0);
        r.tick(ms(t0, 2_750));
        assert!(!out.0.load(Ordering::SeqCst), "AF without AIE stays inside");
        get(&mut r, REG_C, ms(t0, 2_750));
        set(&mut r, SECONDS_ALARM, 0x35, t0);
        set(&mut r, REG_B, B_24H | B_AIE, ms(t0, 2_750));
        r.tick(ms(t0, 4_749));
        assert!(!out.0.load(Ordering::SeqCst), "13:45:34");
        r.tick(ms(t0, 4_750));
        assert!(out.0.load(Ordering::SeqCst) && irq.0.load(Ordering::SeqCst));
        get(&mut r, REG_C, ms(t0, 4_750));
        assert!(
            !out.0.load(Ordering::SeqCst),
            "reading register C lowers it"
        );
    }

    #[test]
    fn an_armed_alarm_fires_while_irq8_is_already_asserted() {
        // A guest asleep with an unread update flag: IRQ 8 is high, nobody
        // reads register C, and the wake alarm must still reach RTC_STS.
        let (mut r, irq, t0) = rtc();
        let out = Arc::new(Line::default());
        r.set_alarm_output(out.clone());
        set(&mut r, HOURS_ALARM, 0x13, t0);
        set(&mut r, MINUTES_ALARM, 0x45, t0);
        set(&mut r, SECONDS_ALARM, 0x35, t0);
        set(&mut r, REG_B, B_24H | B_AIE | B_UIE, t0);
        r.tick(ms(t0, 750));
        assert!(irq.0.load(Ordering::SeqCst) && !out.0.load(Ordering::SeqCst));
        let mut now = ms(t0, 750);
        while let Some(d) = r.next_deadline().filter(|&d| d <= ms(t0, 10_000)) {
            now = d;
            r.tick(d);
            if out.0.load(Ordering::SeqCst) {
                break;
            }
        }
        assert!(out.0.load(Ordering::SeqCst), "no alarm by {now:?}");
        assert_eq!(now, ms(t0, 4_750), "13:45:35");
        assert_eq!(r.next_deadline(), None, "nothing left to wait for");
    }

    #[test]
    fn dont_care_alarm_bytes_match_every_second() {
        let (mut r, line, t0) = rtc();
        for i in [HOURS_ALARM, MINUTES_ALARM, SECONDS_ALARM] {
            set(&mut r, i, 0xc0, t0);
        }
        set(&mut r, REG_B, B_24H | B_AIE, t0);
        assert_eq!(interrupts_until(&mut r, &line, ms(t0, 5000)), 5);
    }

    #[test]
    fn alarm_missed_between_ticks_is_still_flagged() {
        let (mut r, _, t0) = rtc();
        set(&mut r, HOURS_ALARM, 0x14, t0);
        set(&mut r, MINUTES_ALARM, 0x00, t0);
        set(&mut r, SECONDS_ALARM, 0x00, t0);
        assert_eq!(get(&mut r, REG_C, ms(t0, 3_600_000)) & C_AF, C_AF);
        set(&mut r, SECONDS_ALARM, 0x61, t0); // never shown in BCD
        assert_eq!(get(&mut r, REG_C, ms(t0, 90_000_000)) & C_AF, 0);
        set(&mut r, SECONDS_ALARM, 0x0a, t0); // not a BCD digit
        assert_eq!(get(&mut r, REG_C, ms(t0, 180_000_000)) & C_AF, 0);
        set(&mut r, SECONDS_ALARM, 0xc0, t0); // don't care: 14:00:xx
        assert_eq!(get(&mut r, REG_C, ms(t0, 270_000_000)) & C_AF, C_AF);
    }

    #[test]
    fn guest_sets_the_clock_as_linux_does() {
        let (mut r, _, t0) = rtc();
        // mc146818_set_time: SET, divider reset, time, B, then A.
        let b = get(&mut r, REG_B, t0);
        set(&mut r, REG_B, b | B_SET, t0);
        let a = get(&mut r, REG_A, t0);
        set(&mut r, REG_A, a | 0x70, t0);
        let at = ms(t0, 100);
        for (i, v) in [(YEAR, 0x99), (MONTH, 0x12), (DAY_OF_MONTH, 0x31)] {
            set(&mut r, i, v, at);
        }
        for (i, v) in [(HOURS, 0x23), (MINUTES, 0x59), (SECONDS, 0x58)] {
            set(&mut r, i, v, at);
        }
        set(&mut r, CENTURY, 0x19, at);
        assert_eq!(get(&mut r, SECONDS, ms(t0, 5000)), 0x58, "stopped");
        set(&mut r, REG_B, b, ms(t0, 200));
        assert_eq!(get(&mut r, SECONDS, ms(t0, 5000)), 0x58, "divider in reset");
        set(&mut r, REG_A, a, ms(t0, 300));
        assert_eq!(get(&mut r, SECONDS, ms(t0, 799)), 0x58);
        assert_eq!(get(&mut r, SECONDS, ms(t0, 800)), 0x59, "500 ms later");
        let then = ms(t0, 1800);
        assert_eq!(
            time(&mut r, then),
            [0x00, 0x00, 0x00, 0x06, 0x01, 0x01, 0x00, 0x20],
            "2000-01-01 00:00:00; the day of week counts on from the stored one"
        );
    }

    #[test]
    fn set_bit_clears_uie_and_freezes_the_time() {
        let (mut r, _, t0) = rtc();
        set(&mut r, REG_B, B_24H | B_UIE, t0);
        set(&mut r, REG_B, B_24H | B_UIE | B_SET, t0);
        assert_eq!(get(&mut r, REG_B, t0), B_24H | B_SET);
        assert_eq!(get(&mut r, SECONDS, ms(t0, 10_000)), 0x30);
        assert_eq!(get(&mut r, REG_A, ms(t0, 749)) & A_UIP, 0);
        set(&mut r, REG_B, B_24H, ms(t0, 10_000));
        assert_eq!(get(&mut r, SECONDS, ms(t0, 10_000)), 0x30);
        assert_eq!(get(&mut r, SECONDS, ms(t0, 10_750)), 0x31, "same phase");
    }

    #[test]
    fn writing_a_time_register_while_running_keeps_the_clock_going() {
        let (mut r, _, t0) = rtc();
        set(&mut r, MINUTES, 0x10, t0);
        assert_eq!(get(&mut r, MINUTES, ms(t0, 60_000)), 0x11);
        assert_eq!(get(&mut r, HOURS, ms(t0, 60_000)), 0x13);
        set(&mut r, DAY_OF_WEEK, 0x02, t0);
        assert_eq!(get(&mut r, DAY_OF_WEEK, ms(t0, 86_400_000)), 0x03);
    }

    #[test]
    fn register_d_reports_valid_ram_and_time() {
        let (mut r, _, t0) = rtc();
        set(&mut r, REG_D, 0x00, t0);
        set(&mut r, REG_C, 0xff, t0);
        assert_eq!(get(&mut r, REG_D, t0), D_VRT);
        assert_eq!(get(&mut r, REG_C, t0), 0);
    }

    #[test]
    fn cmos_holds_the_memory_sizes() {
        let (mut r, _, t0) = rtc();
        let word = |r: &mut Rtc, i: u8| u16::from_le_bytes([get(r, i, t0), get(r, i + 1, t0)]);
        assert_eq!(word(&mut r, 0x15), 640);
        assert_eq!(word(&mut r, 0x17), 0xffff);
        assert_eq!(word(&mut r, 0x30), 0xffff);
        assert_eq!(word(&mut r, 0x34), ((3u32 << 30) / 65536 - 256) as u16);
        let above = [
            get(&mut r, 0x5b, t0),
            get(&mut r, 0x5c, t0),
            get(&mut r, 0x5d, t0),
        ];
        assert_eq!(above, [0x00, 0x40, 0x01], "5 GiB = 0x14000 blocks");
        let small = MemorySizes {
            below_4g: 32 << 20,
            above_4g: 0,
        };
        let mut r = Rtc::with_start_time(small, Arc::new(Line::default()), UNIX_EPOCH, t0);
        assert_eq!(word(&mut r, 0x17), 31 * 1024);
        assert_eq!(word(&mut r, 0x34), 256);
        let sum: u16 = (0x10..=0x2d).map(|i| u16::from(get(&mut r, i, t0))).sum();
        assert_eq!(word(&mut r, 0x2e).swap_bytes(), sum);
    }

    #[test]
    fn nvram_round_trips_and_index_bit7_disables_nmi() {
        let (mut r, _, t0) = rtc();
        for i in 0x40..0x80 {
            set(&mut r, i, i ^ 0x5a, t0);
        }
        for i in 0x40..0x80 {
            assert_eq!(get(&mut r, i, t0), i ^ 0x5a);
        }
        r.write_at(0, 0x80 | 0x41, t0);
        assert!(r.nmi_disabled());
        assert_eq!(r.read_at(1, t0), 0x41 ^ 0x5a);
        assert_eq!(r.read_at(0, t0), 0xff);
        r.write(0, &[0x0b, 0x06]); // out 0x70, ax
        assert_eq!(get(&mut r, REG_B, t0), 0x06);
        assert!(!r.nmi_disabled());
    }

    #[test]
    fn calendar_conversion_round_trips() {
        for secs in [0, 951_782_400, 4_107_542_400, -86_400, LEAP_DAY as i64] {
            let t = DateTime::from_unix(secs);
            let back = days_from_civil(t.year, i64::from(t.month), i64::from(t.day))
                * SECONDS_PER_DAY
                + i64::from(t.hour) * 3600
                + i64::from(t.minute) * 60
                + i64::from(t.second);
            assert_eq!(back, secs);
        }
        assert_eq!(DateTime::from_unix(951_782_400).day, 29, "2000-02-29");
    }

    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn every_register_takes_every_value() {
        let (mut r, _, t0) = rtc();
        let mut now = t0;
        for index in 0..CMOS_SIZE as u8 {
            for value in 0..=255 {
                now += Duration::from_micros(37);
                set(&mut r, index, value, now);
                get(&mut r, index, now);
                get(&mut r, REG_C, now);
                r.tick(now);
                let _ = r.next_deadline();
                let _ = inspect::tree_at(&r, now + Duration::from_secs(u64::from(value)));
            }
            set(&mut r, REG_A, 0x26, now);
            set(&mut r, REG_B, B_24H, now);
        }
        assert_eq!(get(&mut r, REG_D, now), D_VRT);
    }

    #[test]
    fn hostile_guest_accesses_never_panic() {
        let (mut r, _, t0) = rtc();
        let mut rng = 0x1234_5678_9abc_def1;
        let mut now = t0;
        for _ in 0..50_000 {
            let x = xorshift(&mut rng);
            now += Duration::from_micros(x % 200_000);
            let value = (x >> 8) as u8;
            match (x >> 16) % 6 {
                0 => r.write_at(0, value, now),
                1 => {
                    r.read_at((x >> 24) % 3, now);
                }
                2 => r.tick(now),
                _ => r.write_at(1, value, now),
            }
            let _ = r.next_deadline();
        }
        for len in [1, 2, 4, 8] {
            let mut data = [0u8; 8];
            for offset in [0, 1, 2, u64::MAX] {
                r.read(offset, &mut data[..len]);
                r.write(offset, &[0xff; 8][..len]);
            }
        }
        assert_eq!(get(&mut r, REG_D, now), D_VRT);
    }
}
