//! Debug console on port 0xe9 (the Bochs/QEMU "port e9 hack").
//!
//! Every byte written goes straight to the console sink, with no UART to
//! program: the quickest way for early boot code to say something. Reads
//! return 0xe9, which is how guests detect that the port is present.

use alcazar_core::BusDevice;

use crate::sink::ConsoleSink;

/// The conventional port.
pub const DEFAULT_PORT: u16 = 0xe9;

/// The debug console.
#[derive(Debug)]
pub struct DebugCon {
    out: ConsoleSink,
}

impl DebugCon {
    /// A debug console writing to `out`.
    pub fn new(out: ConsoleSink) -> Self {
        DebugCon { out }
    }
}

impl BusDevice for DebugCon {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
        if let Some(first) = data.first_mut() {
            *first = 0xe9;
        }
    }

    fn write(&mut self, _offset: u64, data: &[u8]) {
        if let Some(&b) = data.first() {
            self.out.write(&[b]);
        }
    }
}
