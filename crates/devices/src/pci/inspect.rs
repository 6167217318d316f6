//! The inspector's view of a PCI function's configuration space (PCI
//! Local Bus 3.0 §6.2, the type 0 header; §6.8.2.3 for the MSI-X message
//! control): identification, command and status decoded, each BAR as the
//! guest programmed it, the interrupt line and pin, and MSI-X enable and
//! function mask. Everything is read from the 256 bytes as they are.

use alcazar_core::inspect::Tree;

use super::config::{
    reg, BarKind, PciConfig, COMMAND_BUS_MASTER, COMMAND_INTX_DISABLE, COMMAND_IO_SPACE,
    COMMAND_MEMORY_SPACE, STATUS_CAPABILITIES_LIST, STATUS_INTERRUPT,
};
use super::msix::{self, CONTROL_ENABLE, CONTROL_FUNCTION_MASK};

/// At most this many capabilities are followed (a 256-byte space holds
/// at most 48), so a looping list cannot hang the inspector.
const MAX_CAPABILITIES: usize = 48;

impl PciConfig {
    /// The configuration space, decoded for the inspector.
    pub fn inspect(&self) -> Tree {
        let mut t = Tree::new();
        let class = self.read_u32(reg::REVISION_ID) >> 8;
        t.hex("vendor_id", u64::from(self.read_u16(reg::VENDOR_ID)), 4)
            .hex("device_id", u64::from(self.read_u16(reg::DEVICE_ID)), 4)
            .hex(
                "revision_id",
                u64::from(self.read_u32(reg::REVISION_ID) & 0xff),
                2,
            )
            .hex("class_code", u64::from(class), 6)
            .hex(
                "subsystem_vendor_id",
                u64::from(self.read_u16(reg::SUBSYSTEM_VENDOR_ID)),
                4,
            )
            .hex(
                "subsystem_id",
                u64::from(self.read_u16(reg::SUBSYSTEM_ID)),
                4,
            );
        let command = self.command();
        let mut c = Tree::new();
        c.hex("value", u64::from(command), 4)
            .value("io_space", command & COMMAND_IO_SPACE != 0)
            .value("memory_space", command & COMMAND_MEMORY_SPACE != 0)
            .value("bus_master", command & COMMAND_BUS_MASTER != 0)
            .value("interrupt_disable", command & COMMAND_INTX_DISABLE != 0);
        t.child("command", c);
        let status = self.read_u16(reg::STATUS);
        let mut s = Tree::new();
        s.hex("value", u64::from(status), 4)
            .value("interrupt_status", status & STATUS_INTERRUPT != 0)
            .value("capabilities_list", status & STATUS_CAPABILITIES_LIST != 0);
        t.child("status", s);
        let mut bars = Tree::new();
        for index in 0..6 {
            let Some(bar) = self.bar(index) else { continue };
            let raw = self.read_u32(reg::BAR0 + 4 * index);
            let mut b = Tree::new();
            let kind = match bar.kind {
                BarKind::Memory32 => "memory, 32-bit",
                BarKind::Io => "I/O",
            };
            b.value("kind", kind)
                .hex("register", u64::from(raw), 8)
                .hex("address", u64::from(raw) & !(bar.size - 1), 8)
                .hex("size", bar.size, 8)
                .value("decoding", self.bar_window(index).is_some());
            bars.child(format!("bar{index}"), b);
        }
        t.child("bars", bars);
        let pin = self.read_u32(reg::INTERRUPT_LINE) >> 8 & 0xff;
        t.hex(
            "interrupt_line",
            u64::from(self.read_u32(reg::INTERRUPT_LINE) & 0xff),
            2,
        )
        .value(
            "interrupt_pin",
            match pin {
                0 => "none".to_string(),
                1..=4 => format!("INT{}#", (b'A' + pin as u8 - 1) as char),
                p => format!("reserved ({p})"),
            },
        );
        if let Some(cap) = self.find_capability(msix::CAPABILITY_ID) {
            let control = self.read_u16(cap + 2);
            let mut m = Tree::new();
            m.hex("capability", cap as u64, 2)
                .hex("message_control", u64::from(control), 4)
                .value("enable", control & CONTROL_ENABLE != 0)
                .value("function_mask", control & CONTROL_FUNCTION_MASK != 0)
                .value("table_size", (control & 0x7ff) + 1);
            t.child("msix", m);
        }
        t
    }

    /// The offset of the first capability with ID `id`, walking the list
    /// from the capabilities pointer.
    pub fn find_capability(&self, id: u8) -> Option<usize> {
        if self.read_u16(reg::STATUS) & STATUS_CAPABILITIES_LIST == 0 {
            return None;
        }
        let mut at = usize::from(self.read_u16(reg::CAPABILITIES_POINTER) as u8) & !3;
        for _ in 0..MAX_CAPABILITIES {
            if at < 0x40 {
                return None;
            }
            let header = self.read_u16(at);
            if header as u8 == id {
                return Some(at);
            }
            at = usize::from((header >> 8) as u8) & !3;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use alcazar_core::inspect::Node;

    use super::super::config::{reg, Bar, BarKind, PciConfig, PciIds};
    use super::super::msix::{Msix, CAPABILITY_ID};

    fn value(c: &PciConfig, path: &str) -> String {
        match c.inspect().get(path) {
            Some(Node::Value(v)) => v,
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn header_bars_and_msix_are_decoded_as_programmed() {
        let ids = PciIds {
            vendor_id: 0x1af4,
            device_id: 0x1044,
            revision_id: 1,
            class_code: 0xff_00_00,
            subsystem_vendor_id: 0x1af4,
            subsystem_id: 0x40,
        };
        let mut c = PciConfig::new(ids, 1);
        let bar = Bar {
            size: 0x8000,
            kind: BarKind::Memory32,
        };
        c.add_bar(0, bar, 0xc000_0000).unwrap();
        let (body, mask) = Msix::new(2).capability(0, 0x4000, 0x5000);
        c.add_capability(CAPABILITY_ID, &body, &mask).unwrap();
        assert_eq!(value(&c, "vendor_id"), "0x1af4");
        assert_eq!(value(&c, "class_code"), "0xff0000");
        assert_eq!(value(&c, "bars/bar0/address"), "0xc0000000");
        assert_eq!(value(&c, "bars/bar0/decoding"), "false");
        assert_eq!(value(&c, "interrupt_pin"), "INTA#");
        assert_eq!(value(&c, "msix/enable"), "false");
        assert_eq!(value(&c, "msix/table_size"), "2");
        // The OS moves the BAR, enables memory decoding and MSI-X.
        c.write(reg::BAR0, &0xfebf_0000u32.to_le_bytes());
        c.write(reg::COMMAND, &0x0406u16.to_le_bytes());
        c.write(reg::INTERRUPT_LINE, &[11]);
        let cap = c.find_capability(CAPABILITY_ID).unwrap();
        c.write(cap + 2, &0xc000u16.to_le_bytes());
        assert_eq!(value(&c, "bars/bar0/address"), "0xfebf0000");
        assert_eq!(value(&c, "bars/bar0/decoding"), "true");
        assert_eq!(value(&c, "command/value"), "0x0406");
        assert_eq!(value(&c, "command/bus_master"), "true");
        assert_eq!(value(&c, "command/interrupt_disable"), "true");
        assert_eq!(value(&c, "interrupt_line"), "0x0b");
        assert_eq!(value(&c, "msix/enable"), "true");
        assert_eq!(value(&c, "msix/function_mask"), "true");
        assert!(c.inspect().get("bars/bar1").is_none());
    }
}
