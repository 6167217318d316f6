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
//! the VM stops with [`StopReason::PowerOff`]. Other sleep states are not
//! supported and are ignored. The power button (PWRBTN_STS) raises the SCI
//! when enabled, so the VMM can ask the guest to shut down cleanly.

use std::sync::Arc;
use std::time::Instant;

use alcazar_core::inspect::Tree;
use alcazar_core::irq::IrqLine;
use alcazar_core::{BusDevice, GuestClock, StopReason, VmControl};

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
/// PM timer frequency in Hz.
pub const PM_TIMER_HZ: u64 = 3_579_545;

const STS_TMR: u16 = 1 << 0;
const STS_PWRBTN: u16 = 1 << 8;
const STS_WAK: u16 = 1 << 15;
const EN_TMR: u16 = 1 << 0;
const EN_PWRBTN: u16 = 1 << 8;
const EN_MASK: u16 = (1 << 0) | (1 << 5) | (1 << 8) | (1 << 10);
const CNT_SCI_EN: u16 = 1 << 0;
const CNT_SLP_EN: u16 = 1 << 13;
const CNT_SLP_TYP_SHIFT: u16 = 10;

/// The ACPI PM register block.
pub struct AcpiPm {
    pm1_sts: u16,
    pm1_en: u16,
    pm1_cnt: u16,
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
    /// the guest enabled it. Returns whether the guest will be notified.
    pub fn press_power_button(&mut self) -> bool {
        self.pm1_sts |= STS_PWRBTN;
        self.update_sci()
    }

    fn update_sci(&self) -> bool {
        let level = self.pm1_sts & self.pm1_en & (STS_PWRBTN | STS_TMR) != 0;
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
        } else {
            tracing::info!(slp_typ, "ACPI: unsupported sleep state ignored");
            self.pm1_sts |= STS_WAK;
        }
    }
}

impl AcpiPm {
    /// The inspector's view: PM1_STS, PM1_EN and PM1_CNT with the bits
    /// ACPI 6.5 §4.8.3.1-4.8.3.2 names, the SCI level and PM_TMR now.
    fn tree(&self) -> Tree {
        let mut t = Tree::new();
        let (sts, en, cnt) = (self.pm1_sts, self.pm1_en, self.pm1_cnt);
        let mut s = Tree::new();
        s.hex("value", u64::from(sts), 4)
            .value("tmr_sts", sts & STS_TMR != 0)
            .value("pwrbtn_sts", sts & STS_PWRBTN != 0)
            .value("wak_sts", sts & STS_WAK != 0);
        let mut e = Tree::new();
        e.hex("value", u64::from(en), 4)
            .value("tmr_en", en & EN_TMR != 0)
            .value("pwrbtn_en", en & EN_PWRBTN != 0);
        let mut c = Tree::new();
        c.hex("value", u64::from(cnt), 4)
            .value("sci_en", cnt & CNT_SCI_EN != 0)
            .value("slp_typ", (cnt >> CNT_SLP_TYP_SHIFT) & 7);
        t.child("pm1_sts", s)
            .child("pm1_en", e)
            .child("pm1_cnt", c)
            .value("sci", sts & en & (STS_PWRBTN | STS_TMR) != 0)
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
        let regs = self.registers();
        for (i, b) in data.iter_mut().enumerate() {
            *b = usize::try_from(offset + i as u64)
                .ok()
                .and_then(|at| regs.get(at).copied())
                .unwrap_or(0xff);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
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
