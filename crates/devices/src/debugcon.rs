//! Debug console on port 0xe9 (the Bochs/QEMU "port e9 hack").
//!
//! Every byte written goes straight to the console sink, with no UART to
//! program: the quickest way for early boot code to say something. Reads
//! return 0xe9, which is how guests detect that the port is present.

use alcazar_core::inspect::Tree;
use alcazar_core::BusDevice;

use crate::sink::ConsoleSink;

/// The conventional port.
pub const DEFAULT_PORT: u16 = 0xe9;

/// The debug console.
#[derive(Debug)]
pub struct DebugCon {
    out: ConsoleSink,
    /// Bytes written so far, for the inspector.
    bytes_written: u64,
}

impl DebugCon {
    /// A debug console writing to `out`.
    pub fn new(out: ConsoleSink) -> Self {
        DebugCon {
            out,
            bytes_written: 0,
        }
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
            self.bytes_written += 1;
        }
    }

    /// How many bytes the guest has written.
    fn inspect(&self) -> Tree {
        let mut t = Tree::new();
        t.value("bytes_written", self.bytes_written);
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inspector_counts_the_bytes_written() {
        let mut d = DebugCon::new(ConsoleSink::none());
        d.write(0, b"h");
        d.write(0, b"i");
        assert_eq!(
            d.inspect().get("bytes_written"),
            Some(alcazar_core::Node::Value("2".into()))
        );
    }
}
