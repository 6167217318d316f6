//! The inspector's view of the 82093AA: the ID, version and arbitration
//! registers (datasheet §3.2.1-3.2.3), IOREGSEL, and every redirection
//! table entry decoded field by field (§3.2.4), with its pin's level.

use alcazar_core::inspect::Tree;

use super::{
    level_triggered, Ioapic, PINS, RTE_DELIVERY_MODE_SHIFT, RTE_DESTINATION_SHIFT,
    RTE_DEST_LOGICAL, RTE_MASKED, RTE_REMOTE_IRR, RTE_TRIGGER_LEVEL, RTE_VECTOR, VERSION,
};

/// Bit 13 of a redirection entry: INTPOL, 1 = active low.
const RTE_POLARITY_LOW: u64 = 1 << 13;

/// The delivery mode field's name in the datasheet's table.
fn delivery_mode_name(bits: u8) -> &'static str {
    match bits & 7 {
        0 => "Fixed",
        1 => "Lowest Priority",
        2 => "SMI",
        4 => "NMI",
        5 => "INIT",
        7 => "ExtINT",
        _ => "reserved",
    }
}

/// The IOAPIC's tree.
pub(super) fn tree(io: &Ioapic) -> Tree {
    let mut t = Tree::new();
    t.hex("ioapicid", u64::from(io.id), 2)
        .hex("ioapicver", u64::from(VERSION), 8)
        .hex("ioapicarb", u64::from(io.arbitration_id), 2)
        .hex("ioregsel", u64::from(io.ioregsel), 2);
    let mut table = Tree::new();
    for (pin, &entry) in io.redirection_table.iter().enumerate().take(PINS) {
        let mut e = Tree::new();
        let mode = (entry >> RTE_DELIVERY_MODE_SHIFT) as u8 & 7;
        e.hex("raw", entry, 16)
            .hex("vector", entry & RTE_VECTOR, 2)
            .value("delivery_mode", delivery_mode_name(mode))
            .value(
                "destination_mode",
                if entry & RTE_DEST_LOGICAL != 0 {
                    "logical"
                } else {
                    "physical"
                },
            )
            .hex("destination", entry >> RTE_DESTINATION_SHIFT, 2)
            .value("masked", entry & RTE_MASKED != 0)
            .value(
                "trigger_mode",
                if entry & RTE_TRIGGER_LEVEL != 0 {
                    "level"
                } else {
                    "edge"
                },
            )
            .value(
                "effective_trigger",
                if level_triggered(entry) {
                    "level"
                } else {
                    "edge"
                },
            )
            .value(
                "polarity",
                if entry & RTE_POLARITY_LOW != 0 {
                    "low"
                } else {
                    "high"
                },
            )
            .value("remote_irr", entry & RTE_REMOTE_IRR != 0)
            .value("delivery_status", "idle")
            .value("pin_asserted", io.asserted & (1 << pin) != 0);
        table.child(format!("{pin:02}"), e);
    }
    t.child("redirection_table", table);
    t
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use alcazar_core::inspect::Node;
    use alcazar_core::irq::{InterruptMessage, MsiSink};
    use alcazar_core::BusDevice;

    use super::super::Ioapic;

    #[derive(Default)]
    struct Sink(Mutex<Vec<InterruptMessage>>);

    impl MsiSink for Sink {
        fn deliver(&self, message: InterruptMessage) {
            self.0.lock().unwrap().push(message);
        }
    }

    fn value(io: &Ioapic, path: &str) -> String {
        match io.inspect().get(path) {
            Some(Node::Value(v)) => v,
            other => panic!("{path}: {other:?}"),
        }
    }

    fn write_register(io: &mut Ioapic, index: u32, value: u32) {
        io.write(0x00, &index.to_le_bytes());
        io.write(0x10, &value.to_le_bytes());
    }

    #[test]
    fn redirection_entries_are_decoded() {
        let sink = Arc::new(Sink::default());
        let mut io = Ioapic::new(2, sink.clone());
        assert_eq!(value(&io, "ioapicid"), "0x02");
        assert_eq!(value(&io, "ioapicver"), "0x00170011");
        assert_eq!(value(&io, "redirection_table/05/masked"), "true");
        // Pin 9: vector 0x41, lowest priority, logical, level, CPU set 0x03.
        write_register(&mut io, 0x10 + 2 * 9 + 1, 0x0300_0000);
        write_register(&mut io, 0x10 + 2 * 9, 0x0000_a941);
        io.set_irq(9, true);
        assert_eq!(sink.0.lock().unwrap().len(), 1);
        let pin = |f: &str| value(&io, &format!("redirection_table/09/{f}"));
        assert_eq!(pin("raw"), "0x030000000000e941");
        assert_eq!(pin("vector"), "0x41");
        assert_eq!(pin("delivery_mode"), "Lowest Priority");
        assert_eq!(pin("destination_mode"), "logical");
        assert_eq!(pin("destination"), "0x03");
        assert_eq!(pin("masked"), "false");
        assert_eq!(pin("trigger_mode"), "level");
        assert_eq!(pin("polarity"), "low");
        assert_eq!(pin("remote_irr"), "true");
        assert_eq!(pin("pin_asserted"), "true");
        assert_eq!(value(&io, "ioregsel"), "0x22");
    }

    #[test]
    fn inspecting_delivers_and_clears_nothing() {
        let sink = Arc::new(Sink::default());
        let mut io = Ioapic::new(0, sink.clone());
        write_register(&mut io, 0x10 + 2 * 4, 0x0000_8030);
        io.set_irq(4, true);
        let before = format!("{io:?}");
        let _ = io.inspect();
        assert_eq!(format!("{io:?}"), before);
        assert_eq!(sink.0.lock().unwrap().len(), 1, "no second delivery");
        io.eoi(0x30);
        assert_eq!(sink.0.lock().unwrap().len(), 2, "remote IRR was still set");
    }
}
