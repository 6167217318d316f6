//! ACPI fixed-hardware power management registers (PM1a event and control
//! blocks, PM timer).
//!
//! ACPI 6.5 §4.8 "ACPI Hardware Specification": the PM1a event block
//! (PM1_STS, PM1_EN), the PM1a control block (PM1_CNT) and the 3.579545 MHz
//! power-management timer (§4.8.3.3). Ports, as the FADT describes them:
//!
//! | port  | width | register |
//! |-------|-------|----------|
//! | 0x600 | 16    | PM1_STS (write 1 to clear) |
//! | 0x602 | 16    | PM1_EN |
//! | 0x604 | 16    | PM1_CNT |
//! | 0x608 | 32    | PM_TMR (read-only, 32-bit: FADT TMR_VAL_EXT) |
//!
//! Writing PM1_CNT with SLP_EN set and SLP_TYP equal to the `\_S5` value
//! ([`SLP_TYP_S5`], which the DSDT must declare) powers the machine off:
//! the VM stops with [`StopReason::PowerOff`].
//!
//! SLP_TYP equal to the `\_S3` value ([`SLP_TYP_S3`]) puts the machine to
//! sleep (S3, suspend to RAM; ACPI 6.5 §16.1.3) if the VMM allows it
//! ([`VmControl::allow_suspend`]; it then declares `\_S3`):
//! [`VmControl::request_suspend`] stops every vCPU while RAM, the devices
//! and the guest clock stay as they are, and the SCI stays low. A wake
//! event ends the sleep (§4.8.2.1.1, Table 4.11): the power button always
//! (PWRBTN_STS), the RTC alarm when RTC_EN is set (RTC_STS, from the
//! RTC's alarm output: [`AcpiPm::rtc_alarm_line`]). The block latches it
//! with [`VmControl::request_wake`]; the VMM resets the vCPUs and starts
//! the BSP at the FACS waking vector, and WAK_STS reads as set from then
//! on. A wake event already pending when SLP_EN is written wakes the
//! machine at once, as the hardware's wake logic would. Other sleep
//! states (and S3 when the VMM does not allow it) are ignored: WAK_STS is
//! set at once, so an OS that waits for it goes on.
//!
//! The power button (PWRBTN_STS) raises the SCI when enabled, so the VMM
//! can ask the guest to shut down cleanly; RTC_STS does too when RTC_EN is
//! set.

use std::sync::Arc;
use std::time::Instant;

use alcazar_core::inspect::Tree;
use alcazar_core::irq::IrqLine;
use alcazar_core::{BusDevice, GuestClock, StopReason, VmControl};
use std::sync::{Mutex, Weak};

/// Number of ports the device claims, from
/// [`alcazar_core::layout::ACPI_PM_BASE_PORT`]; its SCI is
/// [`alcazar_core::layout::SCI_ISA_IRQ`].
pub const PORT_COUNT: u16 = 12;
/// Offset of PM1a_EVT_BLK.
pub const PM1_EVT_OFFSET: u16 = 0;
/// Offset of PM1a_CNT_BLK.
pub const PM1_CNT_OFFSET: u16 = 4;
/// Offset of PM_TMR_BLK.
pub const PM_TMR_OFFSET: u16 = 8;
/// The SLP_TYP value that means S5 (soft off) on this machine.
pub const SLP_TYP_S5: u16 = 5;
/// The SLP_TYP value that means S3 (suspend to RAM) on this machine.
pub const SLP_TYP_S3: u16 = 3;
/// PM timer frequency in Hz.
pub const PM_TIMER_HZ: u64 = 3_579_545;

const STS_TMR: u16 = 1 << 0;
const STS_PWRBTN: u16 = 1 << 8;
const STS_RTC: u16 = 1 << 10;
const STS_WAK: u16 = 1 << 15;
const EN_TMR: u16 = 1 << 0;
const EN_PWRBTN: u16 = 1 << 8;
const EN_RTC: u16 = 1 << 10;
/// The status bits that raise the SCI when enabled.
const SCI_EVENTS: u16 = STS_PWRBTN | STS_TMR | STS_RTC;
const EN_MASK: u16 = (1 << 0) | (1 << 5) | (1 << 8) | (1 << 10);
const CNT_SCI_EN: u16 = 1 << 0;
const CNT_SLP_EN: u16 = 1 << 13;
const CNT_SLP_TYP_SHIFT: u16 = 10;

/// The ACPI PM register block.
pub struct AcpiPm {
    pm1_sts: u16,
    pm1_en: u16,
    pm1_cnt: u16,
    /// The guest put the machine in S3 and the VMM has not woken it yet.
    sleeping: bool,
    /// The RTC's alarm output, as last seen.
    rtc_alarm: bool,
    started: Instant,
    sci: Arc<dyn IrqLine>,
    control: Arc<VmControl>,
    clock: Arc<GuestClock>,
}

impl std::fmt::Debug for AcpiPm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcpiPm")
            .field("pm1_sts", &self.pm1_sts)
            .field("pm1_en", &self.pm1_en)
            .field("pm1_cnt", &self.pm1_cnt)
            .field("sleeping", &self.sleeping)
            .finish_non_exhaustive()
    }
}

impl AcpiPm {
    /// A PM block in ACPI mode (SCI_EN set: there is no SMM firmware to
    /// hand over from), raising `sci` and stopping the VM via `control`.
    /// The PM timer counts by `clock`, the VM's guest clock.
    pub fn new(sci: Arc<dyn IrqLine>, control: Arc<VmControl>, clock: Arc<GuestClock>) -> Self {
        AcpiPm {
            pm1_sts: 0,
            pm1_en: 0,
            pm1_cnt: CNT_SCI_EN,
            sleeping: false,
            rtc_alarm: false,
            started: clock.now(),
            sci,
            control,
            clock,
        }
    }

    /// The PM timer: ticks at 3.579545 MHz of guest time from device
    /// creation.
    pub fn pm_timer(&self) -> u32 {
        let nanos = self
            .clock
            .now()
            .saturating_duration_since(self.started)
            .as_nanos();
        (nanos * u128::from(PM_TIMER_HZ) / 1_000_000_000) as u32
    }

    /// Presses the power button: sets PWRBTN_STS and raises the SCI if
    /// the guest enabled it; a sleeping machine wakes (whatever PWRBTN_EN
    /// says, ACPI 6.5 Table 4.11). Returns whether the guest will be
    /// notified (or woken).
    pub fn press_power_button(&mut self) -> bool {
        self.settle_wake();
        self.pm1_sts |= STS_PWRBTN;
        if self.sleeping {
            return self.wake("power button");
        }
        self.update_sci()
    }

    /// The RTC's alarm output changed to `level`: a rising edge sets
    /// RTC_STS, which raises the SCI or wakes a sleeping machine when
    /// RTC_EN is set.
    pub fn rtc_alarm(&mut self, level: bool) {
        self.settle_wake();
        let rising = level && !self.rtc_alarm;
        self.rtc_alarm = level;
        if !rising {
            return;
        }
        self.pm1_sts |= STS_RTC;
        if self.sleeping {
            if self.pm1_en & EN_RTC != 0 {
                self.wake("RTC alarm");
            }
        } else {
            self.update_sci();
        }
    }

    /// An [`IrqLine`] for the RTC's alarm output that drives this block's
    /// RTC_STS ([`AcpiPm::rtc_alarm`]).
    pub fn rtc_alarm_line(pm: &Arc<Mutex<AcpiPm>>) -> Arc<dyn IrqLine> {
        Arc::new(RtcAlarmLine(Arc::downgrade(pm)))
    }

    /// Whether the guest put the machine to sleep and it has not woken.
    pub fn sleeping(&self) -> bool {
        self.sleeping
    }

    /// Latches a wake of the sleeping machine.
    fn wake(&mut self, source: &'static str) -> bool {
        let woke = self.control.request_wake();
        if woke {
            tracing::info!(source, "ACPI: wake event for the sleeping machine");
        }
        woke
    }

    /// The VMM has woken the machine since it went to sleep: WAK_STS is
    /// set (ACPI 6.5 §4.8.2.1.1: set by the hardware on the way back to
    /// S0) and the SCI may rise again.
    fn settle_wake(&mut self) {
        if self.sleeping && !self.control.suspend_requested() {
            self.sleeping = false;
            self.pm1_sts |= STS_WAK;
            self.update_sci();
        }
    }

    /// Whether a wake event is pending: the power button, or the RTC
    /// alarm with RTC_EN.
    fn wake_event_pending(&self) -> bool {
        self.pm1_sts & STS_PWRBTN != 0 || self.pm1_sts & self.pm1_en & STS_RTC != 0
    }

    fn update_sci(&self) -> bool {
        let level = !self.sleeping && self.pm1_sts & self.pm1_en & SCI_EVENTS != 0;
        self.sci.set_level(level);
        level
    }

    fn registers(&self) -> [u8; PORT_COUNT as usize] {
        let mut r = [0u8; PORT_COUNT as usize];
        r[0..2].copy_from_slice(&self.pm1_sts.to_le_bytes());
        r[2..4].copy_from_slice(&self.pm1_en.to_le_bytes());
        r[4..6].copy_from_slice(&self.pm1_cnt.to_le_bytes());
        r[8..12].copy_from_slice(&self.pm_timer().to_le_bytes());
        r
    }

    fn write_cnt(&mut self, value: u16) {
        let slp_typ = (value >> CNT_SLP_TYP_SHIFT) & 7;
        self.pm1_cnt = (value & !CNT_SLP_EN) | CNT_SCI_EN;
        if value & CNT_SLP_EN == 0 {
            return;
        }
        if slp_typ == SLP_TYP_S5 {
            tracing::info!("ACPI: guest entered S5 (soft off)");
            self.control.request_stop(StopReason::PowerOff);
        } else if slp_typ == SLP_TYP_S3 && self.control.suspend_allowed() {
            self.enter_s3();
        } else {
            tracing::info!(slp_typ, "ACPI: unsupported sleep state ignored");
            self.pm1_sts |= STS_WAK;
        }
    }

    /// SLP_TYP = S3 with SLP_EN: the machine goes to sleep, unless it
    /// already does (a second vCPU writing before it stopped) or is
    /// stopping.
    fn enter_s3(&mut self) {
        if self.sleeping || !self.control.request_suspend() {
            return;
        }
        tracing::info!("ACPI: guest entered S3 (suspend to RAM)");
        self.sleeping = true;
        self.pm1_sts &= !STS_WAK;
        self.update_sci();
        if self.wake_event_pending() {
            self.wake("event pending at SLP_EN");
        }
    }
}

/// The RTC's alarm output, wired to RTC_STS of a PM block (which may be
/// gone when the VM is torn down).
struct RtcAlarmLine(Weak<Mutex<AcpiPm>>);

impl IrqLine for RtcAlarmLine {
    fn set_level(&self, high: bool) {
        if let Some(pm) = self.0.upgrade() {
            alcazar_core::bus::lock(&pm).rtc_alarm(high);
        }
    }
}

impl AcpiPm {
    /// The inspector's view: PM1_STS, PM1_EN and PM1_CNT with the bits
    /// ACPI 6.5 §4.8.3.1-4.8.3.2 names, the SCI level and PM_TMR now.
    fn tree(&self) -> Tree {
        let mut t = Tree::new();
        // As the guest will read them: a wake the VMM has done shows.
        let asleep = self.sleeping && self.control.suspend_requested();
        let woke = if self.sleeping && !asleep { STS_WAK } else { 0 };
        let (sts, en, cnt) = (self.pm1_sts | woke, self.pm1_en, self.pm1_cnt);
        let mut s = Tree::new();
        s.hex("value", u64::from(sts), 4)
            .value("tmr_sts", sts & STS_TMR != 0)
            .value("pwrbtn_sts", sts & STS_PWRBTN != 0)
            .value("rtc_sts", sts & STS_RTC != 0)
            .value("wak_sts", sts & STS_WAK != 0);
        let mut e = Tree::new();
        e.hex("value", u64::from(en), 4)
            .value("tmr_en", en & EN_TMR != 0)
            .value("pwrbtn_en", en & EN_PWRBTN != 0)
            .value("rtc_en", en & EN_RTC != 0);
        let mut c = Tree::new();
        c.hex("value", u64::from(cnt), 4)
            .value("sci_en", cnt & CNT_SCI_EN != 0)
            .value("slp_typ", (cnt >> CNT_SLP_TYP_SHIFT) & 7);
        t.child("pm1_sts", s)
            .child("pm1_en", e)
            .child("pm1_cnt", c)
            .value("sci", !asleep && sts & en & SCI_EVENTS != 0)
            .value("sleeping", asleep)
            .hex("pm_tmr", u64::from(self.pm_timer()), 8);
        t
    }
}

/// The 16-bit register covering `offset`, with the bytes `data` writes
/// merged into `current` (bytes outside the access keep `fill`).
fn merge16(offset: u64, data: &[u8], reg_offset: u64, fill: u16) -> Option<u16> {
    let mut bytes = fill.to_le_bytes();
    let mut touched = false;
    for (i, &b) in data.iter().enumerate() {
        let at = offset + i as u64;
        if (reg_offset..reg_offset + 2).contains(&at) {
            bytes[(at - reg_offset) as usize] = b;
            touched = true;
        }
    }
    touched.then(|| u16::from_le_bytes(bytes))
}

impl BusDevice for AcpiPm {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        self.settle_wake();
        let regs = self.registers();
        for (i, b) in data.iter_mut().enumerate() {
            *b = usize::try_from(offset + i as u64)
                .ok()
                .and_then(|at| regs.get(at).copied())
                .unwrap_or(0xff);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        self.settle_wake();
        if let Some(clear) = merge16(offset, data, 0, 0) {
            self.pm1_sts &= !clear;
        }
        if let Some(en) = merge16(offset, data, 2, self.pm1_en) {
            self.pm1_en = en & EN_MASK;
        }
        self.update_sci();
        if let Some(cnt) = merge16(offset, data, 4, self.pm1_cnt) {
            self.write_cnt(cnt);
        }
    }

    fn inspect(&self) -> Tree {
        self.tree()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alcazar_core::irq::NoIrq;

    fn pm() -> (AcpiPm, Arc<VmControl>) {
        let c = Arc::new(VmControl::new());
        (
            AcpiPm::new(Arc::new(NoIrq), c.clone(), Arc::new(GuestClock::new())),
            c,
        )
    }

    #[test]
    fn s5_sleep_powers_off() {
        let (mut p, c) = pm();
        let v = CNT_SLP_EN | (SLP_TYP_S5 << CNT_SLP_TYP_SHIFT);
        p.write(u64::from(PM1_CNT_OFFSET), &v.to_le_bytes());
        assert_eq!(c.reason(), Some(StopReason::PowerOff));
    }

    #[test]
    fn other_sleep_states_and_plain_writes_do_not_stop() {
        let (mut p, c) = pm();
        p.write(4, &(CNT_SLP_EN | (3 << CNT_SLP_TYP_SHIFT)).to_le_bytes());
        p.write(4, &(SLP_TYP_S5 << CNT_SLP_TYP_SHIFT).to_le_bytes());
        assert_eq!(c.reason(), None);
        let mut cnt = [0u8; 2];
        p.read(4, &mut cnt);
        assert_eq!(u16::from_le_bytes(cnt) & CNT_SCI_EN, CNT_SCI_EN);
    }

    #[derive(Default)]
    struct Line(std::sync::atomic::AtomicBool);

    impl IrqLine for Line {
        fn set_level(&self, high: bool) {
            self.0.store(high, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// A PM block whose VMM allows S3, with its SCI line.
    fn pm_s3() -> (AcpiPm, Arc<VmControl>, Arc<Line>) {
        let c = Arc::new(VmControl::new());
        c.allow_suspend(true);
        let sci = Arc::new(Line::default());
        let p = AcpiPm::new(sci.clone(), c.clone(), Arc::new(GuestClock::new()));
        (p, c, sci)
    }

    fn sts(p: &mut AcpiPm) -> u16 {
        let mut b = [0u8; 2];
        p.read(0, &mut b);
        u16::from_le_bytes(b)
    }

    fn sleep_s3(p: &mut AcpiPm) {
        // ACPICA's order: SLP_TYP first, then SLP_TYP | SLP_EN.
        let typ = (SLP_TYP_S3 << CNT_SLP_TYP_SHIFT) | CNT_SCI_EN;
        p.write(4, &typ.to_le_bytes());
        p.write(4, &(typ | CNT_SLP_EN).to_le_bytes());
    }

    #[test]
    fn s3_sleeps_and_the_power_button_wakes_with_wak_sts() {
        let (mut p, c, sci) = pm_s3();
        p.write(2, &EN_PWRBTN.to_le_bytes());
        p.write(0, &STS_WAK.to_le_bytes());
        sleep_s3(&mut p);
        assert!(p.sleeping() && c.suspend_requested() && c.should_leave_run());
        assert_eq!(c.reason(), None, "S3 is not a stop");
        assert!(!c.wake_requested());
        assert!(p.press_power_button(), "a press wakes a sleeping machine");
        assert!(c.wake_requested());
        assert!(
            !sci.0.load(std::sync::atomic::Ordering::SeqCst),
            "no SCI in S3"
        );
        assert!(
            matches!(p.inspect().get("sleeping"), Some(alcazar_core::Node::Value(v)) if v == "true")
        );
        // The VMM restarts the vCPUs; the guest then sees WAK_STS.
        c.finish_wake();
        assert_eq!(sts(&mut p), STS_WAK | STS_PWRBTN);
        assert!(!p.sleeping());
        assert!(
            sci.0.load(std::sync::atomic::Ordering::SeqCst),
            "PWRBTN_EN is set"
        );
        p.write(0, &(STS_WAK | STS_PWRBTN).to_le_bytes());
        assert_eq!(sts(&mut p), 0);
        assert!(!sci.0.load(std::sync::atomic::Ordering::SeqCst));
    }

    #[test]
    fn the_power_button_wakes_even_without_pwrbtn_en() {
        let (mut p, c, _) = pm_s3();
        sleep_s3(&mut p);
        assert!(p.press_power_button());
        assert!(c.wake_requested());
    }

    #[test]
    fn the_rtc_alarm_wakes_only_with_rtc_en() {
        let (mut p, c, _) = pm_s3();
        sleep_s3(&mut p);
        p.rtc_alarm(true);
        assert!(!c.wake_requested(), "RTC_EN is clear");
        c.finish_wake();
        assert_eq!(sts(&mut p), STS_WAK | STS_RTC);

        let (mut p, c, _) = pm_s3();
        p.write(2, &EN_RTC.to_le_bytes());
        sleep_s3(&mut p);
        p.rtc_alarm(true);
        assert!(c.wake_requested());
        p.rtc_alarm(true);
        p.rtc_alarm(false);
        c.finish_wake();
        assert_eq!(sts(&mut p), STS_WAK | STS_RTC);
    }

    #[test]
    fn rtc_sts_raises_the_sci_in_s0_when_enabled() {
        let (mut p, _, sci) = pm_s3();
        p.rtc_alarm(true);
        assert!(!sci.0.load(std::sync::atomic::Ordering::SeqCst));
        p.write(2, &EN_RTC.to_le_bytes());
        assert!(sci.0.load(std::sync::atomic::Ordering::SeqCst));
        p.write(0, &STS_RTC.to_le_bytes());
        assert!(!sci.0.load(std::sync::atomic::Ordering::SeqCst));
        // Only a rising edge sets the status again.
        p.rtc_alarm(true);
        assert_eq!(sts(&mut p), 0);
    }

    #[test]
    fn a_wake_event_pending_at_slp_en_wakes_at_once() {
        let (mut p, c, _) = pm_s3();
        p.write(2, &EN_RTC.to_le_bytes());
        p.rtc_alarm(true);
        sleep_s3(&mut p);
        assert!(c.suspend_requested() && c.wake_requested());
    }

    #[test]
    fn s3_twice_or_while_stopping_is_harmless() {
        let (mut p, c, _) = pm_s3();
        sleep_s3(&mut p);
        sleep_s3(&mut p);
        assert_eq!(c.sleep_counts(), (1, 0));
        c.request_stop(StopReason::UserQuit);
        let (mut p, c, _) = pm_s3();
        c.request_stop(StopReason::UserQuit);
        sleep_s3(&mut p);
        assert!(!p.sleeping() && !c.suspend_requested());
    }

    #[test]
    fn s3_without_the_vmms_permission_is_ignored_with_wak_sts() {
        let (mut p, c) = pm();
        sleep_s3(&mut p);
        assert!(!p.sleeping() && !c.should_leave_run());
        assert_eq!(sts(&mut p), STS_WAK);
    }

    #[test]
    fn pm_timer_advances_at_about_3_58_mhz() {
        let (mut p, _) = pm();
        let mut a = [0u8; 4];
        p.read(8, &mut a);
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut b = [0u8; 4];
        p.read(8, &mut b);
        let ticks = u32::from_le_bytes(b).wrapping_sub(u32::from_le_bytes(a));
        assert!((60_000..200_000).contains(&ticks), "{ticks} ticks in 20 ms");
    }

    #[test]
    fn power_button_status_is_write_one_to_clear() {
        let (mut p, _) = pm();
        p.write(2, &STS_PWRBTN.to_le_bytes());
        assert!(p.press_power_button());
        let mut s = [0u8; 2];
        p.read(0, &mut s);
        assert_eq!(u16::from_le_bytes(s), STS_PWRBTN);
        p.write(1, &[0x01]); // high byte of PM1_STS: bit 8
        p.read(0, &mut s);
        assert_eq!(u16::from_le_bytes(s), 0);
    }

    #[test]
    fn odd_offsets_and_widths_are_harmless() {
        let (mut p, c) = pm();
        let mut b = [0u8; 8];
        p.read(10, &mut b);
        p.write(11, &[0xff; 8]);
        assert_eq!(c.reason(), None);
    }

    #[test]
    fn inspector_decodes_pm1_registers_and_clears_nothing() {
        let (mut p, _) = pm();
        p.write(2, &EN_PWRBTN.to_le_bytes());
        assert!(p.press_power_button());
        p.write(4, &(3u16 << CNT_SLP_TYP_SHIFT).to_le_bytes());
        let t = p.inspect();
        let shown = |path: &str| match t.get(path) {
            Some(alcazar_core::Node::Value(v)) => v,
            other => panic!("{path}: {other:?}"),
        };
        assert_eq!(shown("pm1_sts/value"), "0x0100");
        assert_eq!(shown("pm1_sts/pwrbtn_sts"), "true");
        assert_eq!(shown("pm1_en/pwrbtn_en"), "true");
        assert_eq!(shown("pm1_cnt/value"), "0x0c01");
        assert_eq!(shown("pm1_cnt/slp_typ"), "3");
        assert_eq!(shown("sci"), "true");
        assert_eq!(shown("pm_tmr").len(), 10);
        let mut sts = [0u8; 2];
        p.read(0, &mut sts);
        assert_eq!(
            u16::from_le_bytes(sts),
            STS_PWRBTN,
            "still set for the guest"
        );
    }
}
