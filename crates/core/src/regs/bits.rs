//! Names for what the bits of the mode registers mean, for the inspector:
//! RFLAGS (Intel SDM Vol. 1 §3.4.3, Figure 3-8), CR0 and CR4 (Vol. 3A
//! §2.5, Figures 2-7 and 2-8), IA32_EFER (Vol. 3A §2.2.1), segment
//! descriptor types (Vol. 3A §3.4.5.1, §3.5), the operating mode
//! (Vol. 3A §2.2, Figure 2-3), the current privilege level (Vol. 3A §5.5)
//! and the paging mode (Vol. 3A §4.1.1, Table 4-1).

use super::Segment;

/// A bit position and its name in the manual.
pub type BitName = (u32, &'static str);

/// RFLAGS status, control and system flags (bit 1 always reads 1 and
/// IOPL, bits 13:12, is a field: both are left out).
pub const RFLAGS_BITS: &[BitName] = &[
    (0, "CF"),
    (2, "PF"),
    (4, "AF"),
    (6, "ZF"),
    (7, "SF"),
    (8, "TF"),
    (9, "IF"),
    (10, "DF"),
    (11, "OF"),
    (14, "NT"),
    (16, "RF"),
    (17, "VM"),
    (18, "AC"),
    (19, "VIF"),
    (20, "VIP"),
    (21, "ID"),
];

/// CR0 flags.
pub const CR0_BITS: &[BitName] = &[
    (0, "PE"),
    (1, "MP"),
    (2, "EM"),
    (3, "TS"),
    (4, "ET"),
    (5, "NE"),
    (16, "WP"),
    (18, "AM"),
    (29, "NW"),
    (30, "CD"),
    (31, "PG"),
];

/// CR4 flags.
pub const CR4_BITS: &[BitName] = &[
    (0, "VME"),
    (1, "PVI"),
    (2, "TSD"),
    (3, "DE"),
    (4, "PSE"),
    (5, "PAE"),
    (6, "MCE"),
    (7, "PGE"),
    (8, "PCE"),
    (9, "OSFXSR"),
    (10, "OSXMMEXCPT"),
    (11, "UMIP"),
    (12, "LA57"),
    (13, "VMXE"),
    (14, "SMXE"),
    (16, "FSGSBASE"),
    (17, "PCIDE"),
    (18, "OSXSAVE"),
    (19, "KL"),
    (20, "SMEP"),
    (21, "SMAP"),
    (22, "PKE"),
    (23, "CET"),
    (24, "PKS"),
    (25, "UINTR"),
    (28, "LAM_SUP"),
];

/// IA32_EFER flags.
pub const EFER_BITS: &[BitName] = &[(0, "SCE"), (8, "LME"), (10, "LMA"), (11, "NXE")];

/// The names of the bits set in `value`, highest first, separated by
/// spaces; a set bit the table does not name shows as `bit N`, and bits
/// in `ignore` are skipped. `none` when nothing is set.
pub fn bit_names(value: u64, table: &[BitName], ignore: u64) -> String {
    let names: Vec<String> = (0..64u32)
        .rev()
        .filter(|&b| value & !ignore & (1 << b) != 0)
        .map(|b| match table.iter().find(|(bit, _)| *bit == b) {
            Some((_, name)) => (*name).to_string(),
            None => format!("bit {b}"),
        })
        .collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(" ")
    }
}

/// RFLAGS as a debugger shows it: the flags set, highest first, then the
/// I/O privilege level (`IF ZF PF IOPL=0`).
pub fn rflags_names(rflags: u64) -> String {
    let iopl = (rflags >> 12) & 3;
    let flags = bit_names(rflags, RFLAGS_BITS, super::RFLAGS_FIXED | 3 << 12);
    if flags == "none" {
        format!("IOPL={iopl}")
    } else {
        format!("{flags} IOPL={iopl}")
    }
}

const RFLAGS_VM: u64 = 1 << 17;

/// The operating mode (SDM Vol. 3A §2.2): `real`, `virtual-8086`,
/// `protected 16-bit` / `protected 32-bit`, `long 64-bit`, or IA-32e
/// `compatibility 16-bit` / `compatibility 32-bit`. `rflags` is `None`
/// when it could not be read (virtual-8086 mode is then not recognized).
pub fn operating_mode(cr0: u64, efer: u64, rflags: Option<u64>, cs: &Segment) -> &'static str {
    let width = if cs.db { "32-bit" } else { "16-bit" };
    if cr0 & super::CR0_PE == 0 {
        "real"
    } else if efer & super::EFER_LMA != 0 {
        match (cs.l, width) {
            (true, _) => "long 64-bit",
            (false, "32-bit") => "compatibility 32-bit",
            (false, _) => "compatibility 16-bit",
        }
    } else if rflags.is_some_and(|f| f & RFLAGS_VM != 0) {
        "virtual-8086"
    } else if cs.db {
        "protected 32-bit"
    } else {
        "protected 16-bit"
    }
}

/// The current privilege level (SDM Vol. 3A §5.5: held in bits 1:0 of
/// CS): 0 in real mode, 3 in virtual-8086 mode, else CS.RPL.
pub fn current_privilege_level(cr0: u64, efer: u64, rflags: Option<u64>, cs: &Segment) -> u8 {
    match operating_mode(cr0, efer, rflags, cs) {
        "real" => 0,
        "virtual-8086" => 3,
        _ => (cs.selector & 3) as u8,
    }
}

/// The paging mode CR0.PG, CR4.PAE, CR4.LA57 and EFER.LME select (SDM
/// Vol. 3A §4.1.1, Table 4-1): `off`, `32-bit`, `PAE`, `4-level`,
/// `5-level`.
pub fn paging_mode(cr0: u64, cr4: u64, efer: u64) -> &'static str {
    const CR4_LA57: u64 = 1 << 12;
    if cr0 & super::CR0_PG == 0 {
        "off"
    } else if cr4 & super::CR4_PAE == 0 {
        "32-bit"
    } else if efer & super::EFER_LME == 0 {
        "PAE"
    } else if cr4 & CR4_LA57 != 0 {
        "5-level"
    } else {
        "4-level"
    }
}

/// What a descriptor's type field says (SDM Vol. 3A Table 3-1 for code
/// and data segments, Table 3-2 for system descriptors in IA-32e mode,
/// where `long` is set, and in legacy mode).
pub fn segment_kind(seg: &Segment, long: bool) -> String {
    let t = seg.type_ & 0xf;
    if seg.s {
        let accessed = if t & 1 != 0 { ", accessed" } else { "" };
        if t & 8 != 0 {
            let read = if t & 2 != 0 {
                "execute/read"
            } else {
                "execute-only"
            };
            let conforming = if t & 4 != 0 { ", conforming" } else { "" };
            format!("code {read}{conforming}{accessed}")
        } else {
            let write = if t & 2 != 0 {
                "read/write"
            } else {
                "read-only"
            };
            let down = if t & 4 != 0 { ", expand-down" } else { "" };
            format!("data {write}{down}{accessed}")
        }
    } else {
        let name = match (t, long) {
            (2, _) => "LDT",
            (9, true) => "64-bit TSS (available)",
            (11, true) => "64-bit TSS (busy)",
            (12, true) => "64-bit call gate",
            (14, true) => "64-bit interrupt gate",
            (15, true) => "64-bit trap gate",
            (1, false) => "16-bit TSS (available)",
            (3, false) => "16-bit TSS (busy)",
            (4, false) => "16-bit call gate",
            (5, false) => "task gate",
            (6, false) => "16-bit interrupt gate",
            (7, false) => "16-bit trap gate",
            (9, false) => "32-bit TSS (available)",
            (11, false) => "32-bit TSS (busy)",
            (12, false) => "32-bit call gate",
            (14, false) => "32-bit interrupt gate",
            (15, false) => "32-bit trap gate",
            _ => "reserved system type",
        };
        name.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rflags_lists_set_flags_highest_first_with_iopl() {
        // IF, ZF, PF and the fixed bit 1.
        assert_eq!(rflags_names(0x246), "IF ZF PF IOPL=0");
        assert_eq!(rflags_names(0x3002), "IOPL=3");
        assert_eq!(rflags_names(0x2_0202 | 1 << 30), "bit 30 VM IF IOPL=0");
    }

    #[test]
    fn control_register_names_follow_the_manual() {
        assert_eq!(bit_names(0x8005_0033, CR0_BITS, 0), "PG AM WP NE ET MP PE");
        assert_eq!(bit_names(0x3406f0, CR4_BITS, 0).split(' ').count(), 9);
        assert_eq!(bit_names(0xd01, EFER_BITS, 0), "NXE LMA LME SCE");
        assert_eq!(bit_names(0, EFER_BITS, 0), "none");
    }

    #[test]
    fn modes_and_privilege_levels() {
        let real = Segment::real_mode(0xf000, true);
        assert_eq!(operating_mode(0x10, 0, Some(2), &real), "real");
        assert_eq!(current_privilege_level(0x10, 0, Some(2), &real), 0);
        let code32 = Segment::flat32(0x1b, true);
        assert_eq!(operating_mode(1, 0, Some(2), &code32), "protected 32-bit");
        assert_eq!(current_privilege_level(1, 0, Some(2), &code32), 3);
        let v86 = Segment::real_mode(0x2000, true);
        assert_eq!(operating_mode(1, 0, Some(RFLAGS_VM), &v86), "virtual-8086");
        assert_eq!(current_privilege_level(1, 0, Some(RFLAGS_VM), &v86), 3);
        let code64 = Segment::code64(0x10);
        let lma = super::super::EFER_LMA | super::super::EFER_LME;
        assert_eq!(
            operating_mode(0x8000_0001, lma, None, &code64),
            "long 64-bit"
        );
        assert_eq!(
            operating_mode(0x8000_0001, lma, None, &code32),
            "compatibility 32-bit"
        );
        assert_eq!(paging_mode(0x8000_0001, 0x20, lma), "4-level");
        assert_eq!(paging_mode(0x8000_0001, 0x20, 0), "PAE");
        assert_eq!(paging_mode(0x8000_0001, 0, 0), "32-bit");
        assert_eq!(paging_mode(1, 0x20, lma), "off");
    }

    #[test]
    fn descriptor_types_are_named() {
        assert_eq!(
            segment_kind(&Segment::code64(8), true),
            "code execute/read, accessed"
        );
        assert_eq!(
            segment_kind(&Segment::flat32(0x10, false), false),
            "data read/write, accessed"
        );
        let tss = Segment {
            type_: 11,
            ..Default::default()
        };
        assert_eq!(segment_kind(&tss, true), "64-bit TSS (busy)");
        assert_eq!(segment_kind(&tss, false), "32-bit TSS (busy)");
    }
}
