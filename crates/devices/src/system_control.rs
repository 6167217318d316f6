//! System control port B (port 0x61), the PC/AT's grab bag of bits.
//!
//! Bit 0 gates PIT channel 2, bit 1 connects channel 2 to the speaker,
//! bit 4 toggles with every DRAM refresh cycle (about every 15 µs; old
//! delay loops and some firmware poll it), bit 5 reflects PIT channel 2's
//! OUT pin (Linux's PIT-based TSC calibration polls it). Reference: IBM
//! PC/AT Technical Reference, "System Control Port B"; Intel 8254 datasheet
//! for the channel 2 OUT pin.
//!
//! This device owns the register and the refresh toggle. Channel 2's
//! gate and output belong to the PIT: a port built with
//! [`SystemControlB::with_pit`] holds a shared handle to the
//! [`Pit8254`], drives channel 2's gate from bit 0 on every write that
//! changes it, and reads bit 5 from channel 2's OUT at the time of the
//! read. Lock order: the port locks the PIT, never the other way round.
//! A port built with [`SystemControlB::new`] has no PIT: its OUT bit reads
//! as the gate (as if channel 2 were idle in mode 0 with a count that has
//! expired).

use std::sync::{Arc, Mutex};

use alcazar_core::bus::lock;
use alcazar_core::inspect::Tree;
use alcazar_core::BusDevice;

use crate::pit::{Pit8254, SPEAKER_CHANNEL};

/// Port 0x61.
pub const PORT: u16 = 0x61;

const GATE2: u8 = 1 << 0;
const SPEAKER: u8 = 1 << 1;
const REFRESH: u8 = 1 << 4;
const OUT2: u8 = 1 << 5;

/// Port 0x61.
#[derive(Debug, Default)]
pub struct SystemControlB {
    control: u8,
    refresh: bool,
    pit: Option<Arc<Mutex<Pit8254>>>,
}

impl SystemControlB {
    /// The port with channel 2 gated off and the speaker off, not wired to
    /// a PIT.
    pub fn new() -> Self {
        Self::default()
    }

    /// The port wired to `pit`'s channel 2: bit 0 drives its gate (low
    /// now), bit 5 reads its OUT.
    pub fn with_pit(pit: Arc<Mutex<Pit8254>>) -> Self {
        lock(&pit).set_gate(SPEAKER_CHANNEL, false);
        SystemControlB {
            pit: Some(pit),
            ..Self::default()
        }
    }

    /// PIT channel 2's OUT pin, as bit 5 shows it.
    fn out2(&self) -> bool {
        match &self.pit {
            Some(pit) => lock(pit).out(SPEAKER_CHANNEL),
            None => self.gate2(),
        }
    }

    /// Whether the guest has opened PIT channel 2's gate (bit 0).
    pub fn gate2(&self) -> bool {
        self.control & GATE2 != 0
    }
}

impl BusDevice for SystemControlB {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        self.refresh = !self.refresh;
        let mut v = self.control & (GATE2 | SPEAKER);
        if self.refresh {
            v |= REFRESH;
        }
        if self.out2() {
            v |= OUT2;
        }
        data.fill(0xff);
        if let Some(first) = data.first_mut() {
            *first = v;
        }
    }

    /// The register's bits by name; channel 2's OUT read from the PIT now.
    /// The refresh bit is shown as it last read, not toggled.
    fn inspect(&self) -> Tree {
        let mut t = Tree::new();
        let out2 = self.out2();
        let mut v = self.control & (GATE2 | SPEAKER);
        if self.refresh {
            v |= REFRESH;
        }
        if out2 {
            v |= OUT2;
        }
        t.hex("port_b", u64::from(v), 2)
            .value("timer2_gate", self.gate2())
            .value("speaker_data", self.control & SPEAKER != 0)
            .value("refresh_detect", self.refresh)
            .value("timer2_out", out2)
            .value("wired_to_pit", self.pit.is_some());
        t
    }

    fn write(&mut self, _offset: u64, data: &[u8]) {
        let Some(&v) = data.first() else { return };
        let gate_was = self.gate2();
        self.control = v & 0x0f;
        if let Some(pit) = self.pit.as_ref().filter(|_| self.gate2() != gate_was) {
            lock(pit).set_gate(SPEAKER_CHANNEL, self.gate2());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alcazar_core::irq::NoIrq;

    #[test]
    fn refresh_bit_toggles_on_every_read() {
        let mut p = SystemControlB::new();
        let mut a = [0];
        let mut b = [0];
        p.read(0, &mut a);
        p.read(0, &mut b);
        assert_ne!(a[0] & REFRESH, b[0] & REFRESH);
    }

    #[test]
    fn gate_and_speaker_bits_read_back() {
        let mut p = SystemControlB::new();
        p.write(0, &[0x03]);
        let mut a = [0];
        p.read(0, &mut a);
        assert_eq!(a[0] & 0x03, 0x03);
        assert!(p.gate2());
    }

    fn pit() -> Arc<Mutex<Pit8254>> {
        Arc::new(Mutex::new(Pit8254::new(
            Arc::new(NoIrq),
            Arc::new(alcazar_core::GuestClock::new()),
        )))
    }

    fn out2(p: &mut SystemControlB) -> bool {
        let mut b = [0];
        p.read(0, &mut b);
        b[0] & OUT2 != 0
    }

    #[test]
    fn bit0_drives_the_pit_channel2_gate() {
        let pit = pit();
        let mut p = SystemControlB::with_pit(pit.clone());
        assert!(!lock(&pit).gate(SPEAKER_CHANNEL));
        p.write(0, &[GATE2]);
        assert!(lock(&pit).gate(SPEAKER_CHANNEL));
        p.write(0, &[SPEAKER]);
        assert!(!lock(&pit).gate(SPEAKER_CHANNEL));
    }

    #[test]
    fn bit5_follows_channel2_out_as_linux_calibrates_the_tsc() {
        let pit = pit();
        let mut p = SystemControlB::with_pit(pit.clone());
        // pit_calibrate_tsc: gate high, speaker off, mode 0, 2 ms latch.
        let mut b = [0];
        p.read(0, &mut b);
        p.write(0, &[(b[0] & !SPEAKER) | GATE2]);
        {
            let mut pit = lock(&pit);
            pit.write(3, &[0xb0]);
            pit.write(2, &[0x52]);
            pit.write(2, &[0x09]); // 2386 ticks: 2 ms
        }
        assert!(!out2(&mut p), "counting: OUT low");
        let start = std::time::Instant::now();
        while !out2(&mut p) {
            assert!(start.elapsed() < std::time::Duration::from_secs(5));
            std::hint::spin_loop();
        }
        let elapsed = start.elapsed();
        assert!(
            elapsed >= std::time::Duration::from_micros(1900),
            "{elapsed:?}"
        );
    }

    #[test]
    fn an_unwired_port_reads_out_as_the_gate() {
        let mut p = SystemControlB::new();
        assert!(!out2(&mut p));
        p.write(0, &[GATE2]);
        assert!(out2(&mut p));
    }

    #[test]
    fn inspector_shows_the_gate_and_out_without_toggling_refresh() {
        let pit = pit();
        let mut p = SystemControlB::with_pit(pit.clone());
        p.write(0, &[GATE2 | SPEAKER]);
        let t = p.inspect();
        assert_eq!(
            t.get("port_b"),
            Some(alcazar_core::Node::Value("0x03".into()))
        );
        assert_eq!(
            t.get("timer2_gate"),
            Some(alcazar_core::Node::Value("true".into()))
        );
        assert_eq!(p.inspect(), t, "the refresh bit did not toggle");
        let mut b = [0];
        p.read(0, &mut b);
        assert_ne!(
            b[0] & REFRESH,
            0,
            "the guest's first read still sees it rise"
        );
    }
}
