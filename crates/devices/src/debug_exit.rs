//! Debug-exit: lets a test guest end the VM with a status code.
//!
//! Compatible with QEMU's `isa-debug-exit`: a write of value `v` to the
//! device's port ends the VM, and the VMM process exits with status
//! `(v << 1) | 1` (so a guest can never fake a plain 0). Default I/O base
//! 0xf4, 4 bytes wide, as test kernels commonly configure it. Reads return
//! all ones. No IRQ.

use std::sync::Arc;

use alcazar_core::inspect::Tree;
use alcazar_core::{BusDevice, StopReason, VmControl};

/// The default I/O base.
pub const DEFAULT_PORT: u16 = 0xf4;
/// The default width of the range, in ports.
pub const DEFAULT_SIZE: u16 = 4;

/// The debug-exit device.
#[derive(Debug)]
pub struct DebugExit {
    control: Arc<VmControl>,
    /// The last value written, for the inspector.
    last_write: Option<u32>,
}

impl DebugExit {
    /// A debug-exit device that stops the VM through `control`.
    pub fn new(control: Arc<VmControl>) -> Self {
        DebugExit {
            control,
            last_write: None,
        }
    }
}

impl BusDevice for DebugExit {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0xff);
    }

    fn write(&mut self, _offset: u64, data: &[u8]) {
        let mut bytes = [0u8; 4];
        let n = data.len().min(4);
        bytes[..n].copy_from_slice(&data[..n]);
        let value = u32::from_le_bytes(bytes);
        self.last_write = Some(value);
        tracing::info!(value, "guest wrote to debug-exit");
        self.control.request_stop(StopReason::DebugExit(value));
    }

    /// The last value written and the exit status it stands for.
    fn inspect(&self) -> Tree {
        let mut t = Tree::new();
        match self.last_write {
            Some(v) => t
                .hex("last_write", u64::from(v), 8)
                .value("exit_status", StopReason::DebugExit(v).exit_status()),
            None => t.value("last_write", "none"),
        };
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_ends_the_vm_with_the_value() {
        let control = Arc::new(VmControl::new());
        let mut d = DebugExit::new(control.clone());
        d.write(0, &[0x10]);
        assert_eq!(control.reason(), Some(StopReason::DebugExit(0x10)));
        assert_eq!(control.reason().unwrap().exit_status(), 0x21);
    }

    #[test]
    fn dword_writes_carry_the_whole_value() {
        let control = Arc::new(VmControl::new());
        DebugExit::new(control.clone()).write(0, &0x1234u32.to_le_bytes());
        assert_eq!(control.reason(), Some(StopReason::DebugExit(0x1234)));
    }

    #[test]
    fn inspector_shows_the_last_value() {
        let mut d = DebugExit::new(Arc::new(VmControl::new()));
        assert_eq!(
            d.inspect().get("last_write"),
            Some(alcazar_core::Node::Value("none".into()))
        );
        d.write(0, &[0x10]);
        let t = d.inspect();
        assert_eq!(
            t.get("last_write"),
            Some(alcazar_core::Node::Value("0x00000010".into()))
        );
        assert_eq!(
            t.get("exit_status"),
            Some(alcazar_core::Node::Value("33".into()))
        );
    }
}
