//! The inspector's view of the 8259A pair: per chip the initialization
//! command words, the three registers of the datasheet's block diagram
//! (IRR, ISR, IMR), the ELCR and the operating modes OCW2/OCW3 selected.
//! Read-only: nothing here acknowledges, polls or clears.

use alcazar_core::inspect::Tree;

use super::{Chip, InitStep, Pic8259, ICW1_IC4, ICW1_LTIM, ICW1_SNGL, ICW4_SFNM};

/// The pair's tree: `master`, `slave`, the INTR pin and the vector an
/// INTA cycle would return now.
pub(super) fn tree(pic: &Pic8259) -> Tree {
    let mut t = Tree::new();
    t.child("master", chip_tree(&pic.master))
        .child("slave", chip_tree(&pic.slave))
        .value("intr", pic.intr_level);
    match pic.pending_vector() {
        Some(v) => t.hex("pending_vector", u64::from(v), 2),
        None => t.value("pending_vector", "none"),
    };
    t
}

fn chip_tree(c: &Chip) -> Tree {
    let mut t = Tree::new();
    let init = match c.step {
        InitStep::Ready => "ready",
        InitStep::Icw2 => "awaiting ICW2",
        InitStep::Icw3 => "awaiting ICW3",
        InitStep::Icw4 => "awaiting ICW4",
    };
    t.value("init", init)
        .hex("icw1", u64::from(c.icw1), 2)
        .hex("icw2", u64::from(c.vector_base), 2)
        .hex("icw3", u64::from(c.icw3), 2)
        .hex("icw4", u64::from(c.icw4), 2)
        .hex("vector_base", u64::from(c.vector_base), 2)
        .hex("imr", u64::from(c.imr), 2)
        .hex("irr", u64::from(c.irr), 2)
        .hex("isr", u64::from(c.isr), 2)
        .hex("inputs", u64::from(c.inputs), 2)
        .hex("elcr", u64::from(c.elcr), 2)
        .value(
            "trigger",
            if c.icw1 & ICW1_LTIM != 0 {
                "level (ICW1.LTIM)"
            } else {
                "edge, level where ELCR"
            },
        )
        .value("single", c.icw1 & ICW1_SNGL != 0)
        .value("icw4_needed", c.icw1 & ICW1_IC4 != 0)
        .value("auto_eoi", c.auto_eoi())
        .value("special_fully_nested", c.icw4 & ICW4_SFNM != 0)
        .value("special_mask", c.special_mask)
        .value("rotate_in_auto_eoi", c.rotate_on_aeoi)
        .value("highest_priority", format!("IR{}", c.highest))
        .value("read_register", if c.read_isr { "ISR" } else { "IRR" })
        .value("poll", c.poll);
    match c.requested() {
        Some(ir) => t.value("int", format!("IR{ir}")),
        None => t.value("int", "none"),
    };
    t
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use alcazar_core::inspect::Node;
    use alcazar_core::irq::NoIrq;
    use alcazar_core::BusDevice;

    use super::super::Pic8259;

    fn value(pic: &Pic8259, path: &str) -> String {
        match pic.inspect().get(path) {
            Some(Node::Value(v)) => v,
            other => panic!("{path}: {other:?}"),
        }
    }

    fn linux_init(p: &mut Pic8259) {
        for (port, v) in [
            (0x20, 0x11),
            (0x21, 0x30),
            (0x21, 0x04),
            (0x21, 0x01),
            (0xa0, 0x11),
            (0xa1, 0x38),
            (0xa1, 0x02),
            (0xa1, 0x01),
            (0x21, 0xf0),
            (0xa1, 0xff),
        ] {
            p.write_port(port, v);
        }
    }

    #[test]
    fn programmed_registers_show_by_datasheet_name() {
        let mut p = Pic8259::new(Arc::new(NoIrq));
        assert_eq!(value(&p, "master/vector_base"), "0x08");
        linux_init(&mut p);
        p.write_port(0x4d1, 0x0c);
        p.set_irq(1, true);
        assert_eq!(value(&p, "master/icw1"), "0x11");
        assert_eq!(value(&p, "master/icw2"), "0x30");
        assert_eq!(value(&p, "slave/vector_base"), "0x38");
        assert_eq!(value(&p, "slave/icw3"), "0x02");
        assert_eq!(value(&p, "master/imr"), "0xf0");
        assert_eq!(value(&p, "master/irr"), "0x02");
        assert_eq!(value(&p, "slave/elcr"), "0x0c");
        assert_eq!(value(&p, "master/init"), "ready");
        assert_eq!(value(&p, "pending_vector"), "0x31");
        assert_eq!(value(&p, "intr"), "true");
        p.write_port(0x20, 0x11);
        assert_eq!(value(&p, "master/init"), "awaiting ICW2");
    }

    #[test]
    fn inspecting_acknowledges_and_clears_nothing() {
        let mut p = Pic8259::new(Arc::new(NoIrq));
        linux_init(&mut p);
        p.set_irq(3, true);
        assert_eq!(p.acknowledge(), 0x33);
        p.set_irq(1, true);
        // A poll command is pending: a read of port 0x20 would acknowledge.
        p.write_port(0x20, 0x0c);
        let before = format!("{p:?}");
        let tree = p.inspect();
        assert_eq!(format!("{p:?}"), before);
        assert_eq!(tree, p.inspect());
        assert_eq!(value(&p, "master/isr"), "0x08");
        assert_eq!(value(&p, "master/irr"), "0x02");
        assert_eq!(value(&p, "master/poll"), "true");
        // The poll still answers IRQ 1, and IRQ 3 is still in service.
        assert_eq!(p.read_port(0x20), 0x81);
        p.write_port(0x20, 0x0b);
        assert_eq!(p.read_port(0x20), 0x0a);
    }
}
