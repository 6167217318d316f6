//! The inspector's view of the 8254: per counter the control word's
//! fields ("Control Word Format": mode, RW access, BCD), the count
//! register, the counting element now, GATE and OUT, and whatever the
//! guest has latched. The count shown is computed, never latched: a
//! counter latch or read-back the guest issued stays pending.

use std::time::Instant;

use alcazar_core::inspect::Tree;

use super::{Access, Counter, Pit8254};

/// The mode names of the datasheet's "Modes" section.
fn mode_name(mode: u8) -> &'static str {
    match mode {
        0 => "interrupt on terminal count",
        1 => "hardware retriggerable one-shot",
        2 => "rate generator",
        3 => "square wave",
        4 => "software triggered strobe",
        _ => "hardware triggered strobe",
    }
}

/// The PIT's tree at `now`.
pub(super) fn tree_at(pit: &Pit8254, now: Instant) -> Tree {
    let mut t = Tree::new();
    for (i, c) in pit.counters.iter().enumerate() {
        t.child(format!("counter{i}"), counter_tree(c, now));
    }
    t
}

fn counter_tree(c: &Counter, now: Instant) -> Tree {
    let mut t = Tree::new();
    let access = match c.access() {
        Access::Lsb => "LSB",
        Access::Msb => "MSB",
        Access::Word => "LSB then MSB",
    };
    let mode = c.mode();
    t.hex("control", u64::from(c.control), 2)
        .value("mode", mode)
        .value("mode_name", mode_name(mode))
        .value("access", access)
        .value("bcd", c.bcd())
        .hex("count_register", u64::from(c.count_register), 4)
        .value("count_written", c.has_count);
    let tick = c.clock.ticks(now);
    match c.phase(tick) {
        Some((initial, _)) => t.value("initial_count", initial),
        None => t.value("initial_count", "not loaded"),
    };
    // Modes 2 and 3: a new count waits for the end of the current period.
    match c.reload.filter(|r| r.start > tick) {
        Some(r) => t.value("next_count", r.initial),
        None => t.value("next_count", "none"),
    };
    t.hex("count", u64::from(c.value(now)), 4)
        .value("gate", c.gate)
        .value("out", c.out(now))
        .value("null_count", c.null_count)
        .hex("status", u64::from(c.status(now)), 2);
    match c.latched_count {
        Some(v) => t.hex("latched_count", u64::from(v), 4),
        None => t.value("latched_count", "none"),
    };
    match c.latched_status {
        Some(v) => t.hex("latched_status", u64::from(v), 2),
        None => t.value("latched_status", "none"),
    };
    t.value("write_next", if c.write_high_next { "MSB" } else { "LSB" });
    t
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use alcazar_core::inspect::{Node, Tree};
    use alcazar_core::irq::NoIrq;
    use alcazar_core::GuestClock;

    use super::super::{duration_of, Pit8254};
    use super::tree_at;

    fn value(t: &Tree, path: &str) -> String {
        match t.get(path) {
            Some(Node::Value(v)) => v,
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn counters_show_mode_access_and_the_count_now() {
        let mut p = Pit8254::new(Arc::new(NoIrq), Arc::new(GuestClock::new()));
        let t0 = p.counters[0].clock.epoch;
        // Linux's periodic timer: counter 0, LSB then MSB, mode 2, 1193.
        p.write_at(3, 0x34, t0);
        p.write_at(0, 0xa9, t0);
        p.write_at(0, 0x04, t0);
        let t = tree_at(&p, t0 + duration_of(100));
        assert_eq!(value(&t, "counter0/mode"), "2");
        assert_eq!(value(&t, "counter0/mode_name"), "rate generator");
        assert_eq!(value(&t, "counter0/access"), "LSB then MSB");
        assert_eq!(value(&t, "counter0/bcd"), "false");
        assert_eq!(value(&t, "counter0/count_register"), "0x04a9");
        assert_eq!(value(&t, "counter0/initial_count"), "1193");
        assert_eq!(value(&t, "counter0/count"), format!("{:#06x}", 1193 - 100));
        assert_eq!(value(&t, "counter0/gate"), "true");
        assert_eq!(value(&t, "counter0/out"), "true");
        assert_eq!(value(&t, "counter2/gate"), "false");
        assert_eq!(value(&t, "counter1/initial_count"), "not loaded");
        assert_eq!(value(&t, "counter0/next_count"), "none");
        // A new count in mode 2 waits for the end of the period.
        let t1 = t0 + duration_of(200);
        p.write_at(0, 0x00, t1);
        p.write_at(0, 0x01, t1);
        let t = tree_at(&p, t1);
        assert_eq!(value(&t, "counter0/initial_count"), "1193");
        assert_eq!(value(&t, "counter0/next_count"), "256");
        assert_eq!(value(&t, "counter0/count_register"), "0x0100");
        let t = tree_at(&p, t0 + duration_of(1193 + 10));
        assert_eq!(value(&t, "counter0/initial_count"), "256");
        assert_eq!(value(&t, "counter0/next_count"), "none");
    }

    #[test]
    fn a_latched_count_stays_latched() {
        let mut p = Pit8254::new(Arc::new(NoIrq), Arc::new(GuestClock::new()));
        let t0 = p.counters[0].clock.epoch;
        p.write_at(3, 0x34, t0);
        p.write_at(0, 0x00, t0);
        p.write_at(0, 0x10, t0);
        let t1 = t0 + duration_of(0x100);
        p.write_at(3, 0x00, t1); // counter latch command
        p.write_at(3, 0xe2, t1); // read-back: status of counter 0
        let t2 = t0 + duration_of(0x300);
        let t = tree_at(&p, t2);
        assert_eq!(value(&t, "counter0/latched_count"), "0x0f00");
        assert_eq!(value(&t, "counter0/latched_status"), "0xb4");
        assert_eq!(value(&t, "counter0/count"), "0x0d00");
        assert_eq!(tree_at(&p, t2), t, "inspecting again changes nothing");
        // The guest still reads the status, then the latched count.
        assert_eq!(p.read_at(0, t2), 0xb4);
        assert_eq!(p.read_at(0, t2), 0x00);
        assert_eq!(p.read_at(0, t2), 0x0f);
    }
}
