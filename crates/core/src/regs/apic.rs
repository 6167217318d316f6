//! The inspector's view of a local APIC, shared by both engines: the
//! registers of the xAPIC page (Intel SDM Vol. 3A §10.4.1, Table 10-1)
//! decoded into named values — priorities (§10.8.3.1), the ISR, TMR and
//! IRR as lists of vectors (§10.8.4), the error status (§10.5.3, Figure
//! 10-9), every LVT entry (§10.5.1, Figure 10-8) and the timer (§10.5.4).
//!
//! The emu engine fills [`LocalApicRegs`] from its register file, the kvm
//! engine from `KVM_GET_LAPIC`'s copy of the page; both get the same
//! names.

use crate::inspect::Tree;

/// Register slots of the xAPIC page that hold registers: offsets
/// 0x000-0x3f0, one 32-bit register per 16-byte slot.
pub const APIC_REGISTER_SLOTS: usize = 64;

/// Slot indices (MMIO offset / 16) the inspector reads (SDM Vol. 3A
/// Table 10-1).
pub mod slot {
    #![allow(missing_docs)]
    pub const ID: usize = 0x02;
    pub const VERSION: usize = 0x03;
    pub const TPR: usize = 0x08;
    pub const APR: usize = 0x09;
    pub const PPR: usize = 0x0a;
    pub const LDR: usize = 0x0d;
    pub const DFR: usize = 0x0e;
    pub const SVR: usize = 0x0f;
    pub const ISR0: usize = 0x10;
    pub const TMR0: usize = 0x18;
    pub const IRR0: usize = 0x20;
    pub const ESR: usize = 0x28;
    pub const LVT_CMCI: usize = 0x2f;
    pub const ICR_LOW: usize = 0x30;
    pub const ICR_HIGH: usize = 0x31;
    pub const LVT_TIMER: usize = 0x32;
    pub const LVT_THERMAL: usize = 0x33;
    pub const LVT_PERF: usize = 0x34;
    pub const LVT_LINT0: usize = 0x35;
    pub const LVT_LINT1: usize = 0x36;
    pub const LVT_ERROR: usize = 0x37;
    pub const TIMER_INITIAL: usize = 0x38;
    pub const TIMER_CURRENT: usize = 0x39;
    pub const TIMER_DIVIDE: usize = 0x3e;
}

/// IA32_APIC_BASE.BSP (bit 8).
const BASE_BSP: u64 = 1 << 8;
/// IA32_APIC_BASE.EXTD (bit 10): x2APIC mode.
const BASE_EXTD: u64 = 1 << 10;
/// IA32_APIC_BASE.EN (bit 11): globally enabled.
const BASE_EN: u64 = 1 << 11;

/// A local APIC's state as the inspector reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalApicRegs {
    /// IA32_APIC_BASE.
    pub base: u64,
    /// The APIC ID: the x2APIC ID, or bits 31:24 of the xAPIC ID register.
    pub id: u32,
    /// The page's registers, slot `n` at offset `n * 16`, with the
    /// current-count register as of the moment of reading.
    pub regs: [u32; APIC_REGISTER_SLOTS],
    /// IA32_TSC_DEADLINE, if the engine could read it.
    pub tsc_deadline: Option<u64>,
}

/// The vectors whose bits are set in a 256-bit register (ISR, TMR, IRR)
/// stored as eight 32-bit words from `first`, lowest first, in hex;
/// `none` if there are none.
fn vector_list(regs: &[u32; APIC_REGISTER_SLOTS], first: usize) -> String {
    let vectors: Vec<String> = (0..256usize)
        .filter(|v| regs[first + v / 32] & (1 << (v % 32)) != 0)
        .map(|v| format!("{v:#04x}"))
        .collect();
    if vectors.is_empty() {
        "none".into()
    } else {
        vectors.join(" ")
    }
}

/// The delivery mode of an LVT entry, bits 10:8 (Figure 10-8).
fn delivery_mode(entry: u32) -> &'static str {
    match (entry >> 8) & 7 {
        0 => "fixed",
        2 => "SMI",
        4 => "NMI",
        5 => "INIT",
        7 => "ExtINT",
        _ => "reserved",
    }
}

/// The timer mode of the LVT timer entry, bits 18:17.
fn timer_mode(entry: u32) -> &'static str {
    match (entry >> 17) & 3 {
        0 => "one-shot",
        1 => "periodic",
        2 => "TSC-deadline",
        _ => "reserved",
    }
}

/// The divide ratio of the divide configuration register (Figure
/// 10-10): bits 3 and 1:0, 0b111 is divide by 1, 0b000 by 2 ... 0b110 by
/// 128.
fn divide_ratio(dcr: u32) -> u32 {
    let value = (dcr & 3) | ((dcr >> 1) & 4);
    1 << ((value + 1) & 7)
}

/// The error status bits (Figure 10-9).
const ESR_BITS: &[super::bits::BitName] = &[
    (0, "send checksum"),
    (1, "receive checksum"),
    (2, "send accept"),
    (3, "receive accept"),
    (4, "redirectable IPI"),
    (5, "send illegal vector"),
    (6, "receive illegal vector"),
    (7, "illegal register address"),
];

/// One LVT entry: the raw value, the vector, the mask, and the fields the
/// entry has (Figure 10-8: the timer has a mode, LINT0/LINT1 a polarity,
/// remote IRR and trigger mode, all but the timer and error entries a
/// delivery mode).
fn lvt_entry(entry: u32, which: usize) -> Tree {
    let mut t = Tree::new();
    t.hex("raw", entry.into(), 8)
        .hex("vector", (entry & 0xff).into(), 2)
        .value("masked", entry & 1 << 16 != 0);
    if which == slot::LVT_TIMER {
        t.value("mode", timer_mode(entry));
    }
    if !matches!(which, slot::LVT_TIMER | slot::LVT_ERROR) {
        t.value("delivery", delivery_mode(entry));
    }
    t.value(
        "delivery_status",
        if entry & 1 << 12 != 0 {
            "send pending"
        } else {
            "idle"
        },
    );
    if matches!(which, slot::LVT_LINT0 | slot::LVT_LINT1) {
        t.value(
            "polarity",
            if entry & 1 << 13 != 0 {
                "active low"
            } else {
                "active high"
            },
        )
        .value("remote_irr", entry & 1 << 14 != 0)
        .value(
            "trigger",
            if entry & 1 << 15 != 0 {
                "level"
            } else {
                "edge"
            },
        );
    }
    t
}

/// The inspector's tree of a local APIC: `mode` (disabled, xAPIC,
/// x2APIC), base address, BSP flag, ID, version, priorities, logical
/// destination, SVR, ISR/TMR/IRR vectors, ESR, ICR, `lvt/*` and `timer`.
/// APR and DFR appear in xAPIC mode only (x2APIC has neither, §10.12.1.2).
pub fn inspect_local_apic(a: &LocalApicRegs) -> Tree {
    use slot::*;
    let r = &a.regs;
    let x2apic = a.base & (BASE_EN | BASE_EXTD) == BASE_EN | BASE_EXTD;
    let mut t = Tree::new();
    let mode = match (a.base & BASE_EN != 0, x2apic) {
        (false, _) => "disabled",
        (true, false) => "xAPIC",
        (true, true) => "x2APIC",
    };
    t.value("mode", mode)
        .hex("base_address", a.base & !0xfff, 8)
        .value("bsp", a.base & BASE_BSP != 0)
        .value("id", a.id)
        .hex("version", (r[VERSION] & 0xff).into(), 2)
        .value("max_lvt", (r[VERSION] >> 16) & 0xff)
        .hex("tpr", (r[TPR] & 0xff).into(), 2);
    if !x2apic {
        t.hex("apr", (r[APR] & 0xff).into(), 2);
    }
    t.hex("ppr", (r[PPR] & 0xff).into(), 2)
        .hex("ldr", r[LDR].into(), 8);
    if !x2apic {
        let model = match r[DFR] >> 28 {
            0xf => "flat",
            0 => "cluster",
            _ => "reserved",
        };
        t.hex("dfr", r[DFR].into(), 8).value("dfr_model", model);
    }
    t.hex("svr", r[SVR].into(), 3)
        .hex("spurious_vector", (r[SVR] & 0xff).into(), 2)
        .value("software_enabled", r[SVR] & 1 << 8 != 0)
        .value("isr", vector_list(r, ISR0))
        .value("tmr", vector_list(r, TMR0))
        .value("irr", vector_list(r, IRR0))
        .hex("esr", r[ESR].into(), 2)
        .value(
            "esr_bits",
            super::bits::bit_names(r[ESR].into(), ESR_BITS, 0),
        )
        .hex(
            "icr",
            u64::from(r[ICR_HIGH]) << 32 | u64::from(r[ICR_LOW]),
            16,
        );
    let mut lvt = Tree::new();
    let mut entries = vec![
        ("timer", LVT_TIMER),
        ("thermal", LVT_THERMAL),
        ("perf", LVT_PERF),
        ("lint0", LVT_LINT0),
        ("lint1", LVT_LINT1),
        ("error", LVT_ERROR),
    ];
    if (r[VERSION] >> 16) & 0xff >= 6 {
        entries.push(("cmci", LVT_CMCI));
    }
    for (name, which) in entries {
        lvt.child(name, lvt_entry(r[which], which));
    }
    t.child("lvt", lvt);
    let mut timer = Tree::new();
    timer
        .value("mode", timer_mode(r[LVT_TIMER]))
        .value("divide", divide_ratio(r[TIMER_DIVIDE]))
        .hex("initial_count", r[TIMER_INITIAL].into(), 8)
        .hex("current_count", r[TIMER_CURRENT].into(), 8);
    match a.tsc_deadline {
        Some(d) => timer.hex("tsc_deadline", d, 16),
        None => timer.value("tsc_deadline", "unreadable"),
    };
    t.child("timer", timer);
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::Node;

    fn value(t: &Tree, path: &str) -> String {
        match t.get(path) {
            Some(Node::Value(v)) => v,
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn a_page_decodes_to_named_fields() {
        let mut regs = [0u32; APIC_REGISTER_SLOTS];
        regs[slot::VERSION] = 0x0005_0014;
        regs[slot::SVR] = 0x1ff;
        regs[slot::ISR0 + 1] = 1 << 16; // vector 0x30
        regs[slot::IRR0 + 7] = 1 << 31; // vector 0xff
        regs[slot::IRR0 + 2] = 1; // vector 0x40
        regs[slot::LVT_TIMER] = 1 << 17 | 0xec;
        regs[slot::LVT_LINT0] = 7 << 8 | 1 << 15;
        regs[slot::LVT_ERROR] = 1 << 16 | 0xfe;
        regs[slot::TIMER_DIVIDE] = 0b1011;
        regs[slot::TIMER_INITIAL] = 0x1000;
        regs[slot::ESR] = 1 << 7;
        regs[slot::DFR] = 0xffff_ffff;
        let a = LocalApicRegs {
            base: 0xfee0_0900,
            id: 3,
            regs,
            tsc_deadline: Some(0),
        };
        let t = inspect_local_apic(&a);
        assert_eq!(value(&t, "mode"), "xAPIC");
        assert_eq!(value(&t, "bsp"), "true");
        assert_eq!(value(&t, "id"), "3");
        assert_eq!(value(&t, "max_lvt"), "5");
        assert_eq!(value(&t, "isr"), "0x30");
        assert_eq!(value(&t, "irr"), "0x40 0xff");
        assert_eq!(value(&t, "tmr"), "none");
        assert_eq!(value(&t, "dfr_model"), "flat");
        assert_eq!(value(&t, "esr_bits"), "illegal register address");
        assert_eq!(value(&t, "lvt/timer/mode"), "periodic");
        assert_eq!(value(&t, "lvt/timer/vector"), "0xec");
        assert_eq!(value(&t, "lvt/lint0/delivery"), "ExtINT");
        assert_eq!(value(&t, "lvt/lint0/trigger"), "level");
        assert_eq!(value(&t, "lvt/error/masked"), "true");
        assert!(t.get("lvt/cmci").is_none());
        assert_eq!(value(&t, "timer/divide"), "1");
        assert_eq!(value(&t, "timer/initial_count"), "0x00001000");
    }

    #[test]
    fn x2apic_mode_has_no_apr_or_dfr() {
        let a = LocalApicRegs {
            base: 0xfee0_0c00,
            id: 0x100,
            regs: [0; APIC_REGISTER_SLOTS],
            tsc_deadline: None,
        };
        let t = inspect_local_apic(&a);
        assert_eq!(value(&t, "mode"), "x2APIC");
        assert_eq!(value(&t, "id"), "256");
        assert!(t.get("apr").is_none() && t.get("dfr").is_none());
        assert_eq!(value(&t, "timer/divide"), "2");
        assert_eq!(value(&t, "timer/tsc_deadline"), "unreadable");
    }

    #[test]
    fn divide_ratios_follow_figure_10_10() {
        let ratios: Vec<u32> = [
            0b0000, 0b0001, 0b0010, 0b0011, 0b1000, 0b1001, 0b1010, 0b1011,
        ]
        .into_iter()
        .map(divide_ratio)
        .collect();
        assert_eq!(ratios, [2, 4, 8, 16, 32, 64, 128, 1]);
    }
}
