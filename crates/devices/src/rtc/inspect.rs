//! The inspector's view of the MC146818A: registers A-D decoded by the
//! datasheet's bit names, the time and alarm registers as the guest reads
//! them now (in its chosen BCD/binary and 12/24-hour format) and decoded,
//! and the CMOS index. Register C is shown with the flags it would report
//! now, but reading it through the inspector clears nothing.

use std::time::Instant;

use alcazar_core::inspect::Tree;

use super::*;

/// The RTC's tree at `now`.
pub(super) fn tree_at(rtc: &Rtc, now: Instant) -> Tree {
    let mut t = Tree::new();
    t.hex("index", u64::from(rtc.index), 2)
        .value("nmi_disabled", rtc.nmi_disabled)
        .child("register_a", register_a(rtc, now))
        .child("register_b", register_b(rtc))
        .child("register_c", register_c(rtc, now))
        .child("register_d", register_d())
        .child("time", time(rtc, now))
        .child("alarm", alarm(rtc))
        .value("irq8", rtc.irq_level);
    t
}

fn register_a(rtc: &Rtc, now: Instant) -> Tree {
    let a = rtc.reg(REG_A);
    let uip = rtc.update_in_progress(now);
    let mut t = Tree::new();
    t.hex("value", u64::from(a | if uip { A_UIP } else { 0 }), 2)
        .value("uip", uip)
        .value("dv", format!("{:03b}", (a >> A_DV_SHIFT) & 7))
        .value(
            "divider",
            if rtc.divider.is_some() {
                "running"
            } else {
                "reset"
            },
        )
        .value("rs", format!("{:04b}", a & A_RS_MASK));
    match rtc.periodic_ticks() {
        Some(ticks) => t.value("periodic_rate", format!("{} Hz", TIME_BASE_HZ / ticks)),
        None => t.value("periodic_rate", "none"),
    };
    t
}

fn register_b(rtc: &Rtc) -> Tree {
    let b = rtc.reg(REG_B);
    let bit = |mask: u8| b & mask != 0;
    let mut t = Tree::new();
    t.hex("value", u64::from(b), 2)
        .value("set", bit(B_SET))
        .value("pie", bit(B_PIE))
        .value("aie", bit(B_AIE))
        .value("uie", bit(B_UIE))
        .value("sqwe", bit(1 << 3))
        .value("dm", if bit(B_DM_BINARY) { "binary" } else { "BCD" })
        .value("hours", if bit(B_24H) { "24" } else { "12" })
        .value("dse", bit(1 << 0));
    t
}

fn register_c(rtc: &Rtc, now: Instant) -> Tree {
    let flags = rtc.flags_at(now);
    let irqf = flags & rtc.reg(REG_B) & (B_PIE | B_AIE | B_UIE) != 0;
    let c = flags | if irqf { C_IRQF } else { 0 };
    let mut t = Tree::new();
    t.hex("value", u64::from(c), 2)
        .value("irqf", irqf)
        .value("pf", c & C_PF != 0)
        .value("af", c & C_AF != 0)
        .value("uf", c & C_UF != 0);
    t
}

fn register_d() -> Tree {
    let mut t = Tree::new();
    t.hex("value", u64::from(D_VRT), 2).value("vrt", true);
    t
}

fn time(rtc: &Rtc, now: Instant) -> Tree {
    let r = |index: u8| rtc.time_register(index, now);
    let mut t = Tree::new();
    for (name, index) in [
        ("seconds", SECONDS),
        ("minutes", MINUTES),
        ("hours", HOURS),
        ("day_of_week", DAY_OF_WEEK),
        ("day_of_month", DAY_OF_MONTH),
        ("month", MONTH),
        ("year", YEAR),
        ("century", CENTURY),
    ] {
        t.hex(name, u64::from(r(index)), 2);
    }
    let year = rtc.decode(r(YEAR)) + 100 * rtc.decode(r(CENTURY));
    t.value(
        "date_time",
        format!(
            "{year:04}-{:02}-{:02} {:02}:{:02}:{:02}",
            rtc.decode(r(MONTH)),
            rtc.decode(r(DAY_OF_MONTH)),
            rtc.decode_hours(r(HOURS)),
            rtc.decode(r(MINUTES)),
            rtc.decode(r(SECONDS)),
        ),
    )
    .value("running", !rtc.frozen());
    t
}

fn alarm(rtc: &Rtc) -> Tree {
    let field = |b: u8, value: i64| {
        if b & ALARM_ANY == ALARM_ANY {
            "**".to_string()
        } else {
            format!("{value:02}")
        }
    };
    let (h, m, s) = (
        rtc.reg(HOURS_ALARM),
        rtc.reg(MINUTES_ALARM),
        rtc.reg(SECONDS_ALARM),
    );
    let mut t = Tree::new();
    t.hex("seconds", u64::from(s), 2)
        .hex("minutes", u64::from(m), 2)
        .hex("hours", u64::from(h), 2)
        .value(
            "time",
            format!(
                "{}:{}:{}",
                field(h, rtc.decode_hours(h)),
                field(m, rtc.decode(m)),
                field(s, rtc.decode(s))
            ),
        );
    t
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant, UNIX_EPOCH};

    use alcazar_core::inspect::{Node, Tree};
    use alcazar_core::irq::NoIrq;

    use super::super::{MemorySizes, Rtc};
    use super::tree_at;

    fn value(t: &Tree, path: &str) -> String {
        match t.get(path) {
            Some(Node::Value(v)) => v,
            other => panic!("{path}: {other:?}"),
        }
    }

    /// 2024-02-29 13:45:30.25 UTC.
    fn rtc() -> (Rtc, Instant) {
        let t0 = Instant::now();
        let start = UNIX_EPOCH + Duration::new(1_709_214_330, 250_000_000);
        let r = Rtc::with_start_time(MemorySizes::default(), Arc::new(NoIrq), start, t0);
        (r, t0)
    }

    fn set(r: &mut Rtc, index: u8, value: u8, now: Instant) {
        r.write_at(0, index, now);
        r.write_at(1, value, now);
    }

    #[test]
    fn registers_time_and_alarm_as_the_guest_reads_them() {
        let (mut r, t0) = rtc();
        let t = tree_at(&r, t0);
        assert_eq!(value(&t, "register_a/value"), "0x26");
        assert_eq!(value(&t, "register_a/periodic_rate"), "1024 Hz");
        assert_eq!(value(&t, "register_b/dm"), "BCD");
        assert_eq!(value(&t, "time/hours"), "0x13");
        assert_eq!(value(&t, "time/date_time"), "2024-02-29 13:45:30");
        set(&mut r, 0x0b, 0x20, t0); // AIE, BCD, 12-hour
        set(&mut r, 0x05, 0x81, t0); // alarm 1 PM
        set(&mut r, 0x03, 0xc0, t0); // any minute
        set(&mut r, 0x01, 0x00, t0);
        set(&mut r, 0x0a, 0x2f, t0); // 2 Hz
        let t = tree_at(&r, t0 + Duration::from_secs(1));
        assert_eq!(value(&t, "time/hours"), "0x81");
        assert_eq!(value(&t, "time/date_time"), "2024-02-29 13:45:31");
        assert_eq!(value(&t, "alarm/time"), "13:**:00");
        assert_eq!(value(&t, "register_b/aie"), "true");
        assert_eq!(value(&t, "register_b/hours"), "12");
        assert_eq!(value(&t, "register_a/periodic_rate"), "2 Hz");
        assert_eq!(value(&t, "register_c/uf"), "true");
        assert_eq!(value(&t, "register_c/pf"), "true");
    }

    #[test]
    fn register_c_flags_are_shown_not_cleared() {
        let (mut r, t0) = rtc();
        set(&mut r, 0x0b, 0x12, t0); // UIE, BCD, 24-hour
        let later = t0 + Duration::from_secs(2);
        let t = tree_at(&r, later);
        assert_eq!(value(&t, "register_c/uf"), "true");
        assert_eq!(value(&t, "register_c/irqf"), "true");
        assert_eq!(value(&t, "register_c/value"), "0xd0");
        assert_eq!(tree_at(&r, later), t);
        r.write_at(0, 0x0c, later);
        assert_eq!(r.read_at(1, later) & 0x90, 0x90, "UF and IRQF still set");
        assert_eq!(r.read_at(1, later), 0x00, "the guest's read cleared them");
    }
}
