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
//! gate and output belong to the PIT: until the 8254 is wired in, the OUT
//! bit reads as the gate (as if channel 2 were idle in mode 0 with a count
//! that has expired).

use alcazar_core::BusDevice;

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
}

impl SystemControlB {
    /// The port with channel 2 gated off and the speaker off.
    pub fn new() -> Self {
        Self::default()
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
        if self.gate2() {
            v |= OUT2;
        }
        data.fill(0xff);
        if let Some(first) = data.first_mut() {
            *first = v;
        }
    }

    fn write(&mut self, _offset: u64, data: &[u8]) {
        if let Some(&v) = data.first() {
            self.control = v & 0x0f;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
