//! Engine-neutral x86-64 register state.
//!
//! Both engines read and write vCPU state through these types, so boot
//! code, the inspector and tests never see `kvm_regs` or the emu engine's
//! internals. Layouts follow the Intel SDM Vol. 3A: §3.4.5 (segment
//! descriptors), §2.5 (control registers), §2.2.1 (EFER).

pub mod apic;
pub mod bits;

/// General-purpose registers, RIP and RFLAGS.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Regs {
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rsp: u64,
    pub rbp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    pub rip: u64,
    pub rflags: u64,
}

/// The CPU mode a flat image is entered in: the flat boot contract that
/// `alcazar_vmm::boot::flat` implements and the tiny-guest kit's programs
/// are written for (segments, stack and paging per mode are documented
/// there).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlatMode {
    /// 16-bit real mode (`CS = load_address >> 4`, `IP = 0`).
    Real,
    /// 32-bit flat protected mode with paging off.
    Protected,
    /// 64-bit long mode with identity-mapped page tables for 0..4 GiB.
    Long,
}

/// RFLAGS bit 1, which always reads as 1.
pub const RFLAGS_FIXED: u64 = 1 << 1;
/// RFLAGS.IF.
pub const RFLAGS_IF: u64 = 1 << 9;

/// A segment register with its hidden (descriptor-cache) part.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    /// Base address.
    pub base: u64,
    /// Limit, in bytes (already scaled by the granularity bit).
    pub limit: u32,
    /// Visible selector.
    pub selector: u16,
    /// Descriptor type field (4 bits).
    pub type_: u8,
    /// Present.
    pub present: bool,
    /// Descriptor privilege level.
    pub dpl: u8,
    /// Default operation size (D/B): 32-bit when set.
    pub db: bool,
    /// Code/data (true) or system (false) descriptor.
    pub s: bool,
    /// 64-bit code segment.
    pub l: bool,
    /// Granularity: limit in 4 KiB units.
    pub g: bool,
    /// Available for software.
    pub avl: bool,
    /// Null/unusable.
    pub unusable: bool,
}

impl Segment {
    /// A real-mode segment for `selector` (base = selector * 16, 64 KiB).
    pub fn real_mode(selector: u16, code: bool) -> Self {
        Segment {
            base: u64::from(selector) << 4,
            limit: 0xffff,
            selector,
            type_: if code { 0xb } else { 0x3 },
            present: true,
            s: true,
            ..Default::default()
        }
    }

    /// A flat 4 GiB 32-bit code (`code`) or data segment, DPL 0.
    pub fn flat32(selector: u16, code: bool) -> Self {
        Segment {
            base: 0,
            limit: 0xffff_ffff,
            selector,
            type_: if code { 0xb } else { 0x3 },
            present: true,
            db: true,
            s: true,
            g: true,
            ..Default::default()
        }
    }

    /// A 64-bit code segment, DPL 0.
    pub fn code64(selector: u16) -> Self {
        Segment {
            l: true,
            db: false,
            ..Segment::flat32(selector, true)
        }
    }

    /// The 8-byte GDT descriptor that loads as this segment.
    pub fn to_descriptor(&self) -> u64 {
        let limit = if self.g { self.limit >> 12 } else { self.limit };
        let limit = u64::from(limit);
        let base = self.base & 0xffff_ffff;
        let access = u64::from(self.type_ & 0xf)
            | u64::from(self.s) << 4
            | u64::from(self.dpl & 3) << 5
            | u64::from(self.present) << 7;
        let flags = u64::from(self.avl)
            | u64::from(self.l) << 1
            | u64::from(self.db) << 2
            | u64::from(self.g) << 3;
        (limit & 0xffff)
            | (base & 0xff_ffff) << 16
            | access << 40
            | ((limit >> 16) & 0xf) << 48
            | flags << 52
            | (base >> 24) << 56
    }
}

/// GDTR or IDTR.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DescriptorTable {
    /// Linear base address.
    pub base: u64,
    /// Limit (size - 1).
    pub limit: u16,
}

/// Segment, descriptor-table, control and mode registers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct SpecialRegs {
    pub cs: Segment,
    pub ds: Segment,
    pub es: Segment,
    pub fs: Segment,
    pub gs: Segment,
    pub ss: Segment,
    pub tr: Segment,
    pub ldt: Segment,
    pub gdt: DescriptorTable,
    pub idt: DescriptorTable,
    pub cr0: u64,
    pub cr2: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub cr8: u64,
    pub efer: u64,
    pub apic_base: u64,
}

/// CR0.PE: protected mode.
pub const CR0_PE: u64 = 1 << 0;
/// CR0.ET: x87 present (hard-wired to 1).
pub const CR0_ET: u64 = 1 << 4;
/// CR0.NE: native x87 error reporting.
pub const CR0_NE: u64 = 1 << 5;
/// CR0.WP: supervisor writes honour read-only pages.
pub const CR0_WP: u64 = 1 << 16;
/// CR0.PG: paging.
pub const CR0_PG: u64 = 1 << 31;
/// CR4.PAE: physical address extension.
pub const CR4_PAE: u64 = 1 << 5;
/// EFER.LME: long mode enable.
pub const EFER_LME: u64 = 1 << 8;
/// EFER.LMA: long mode active.
pub const EFER_LMA: u64 = 1 << 10;
/// EFER.NXE: no-execute enable.
pub const EFER_NXE: u64 = 1 << 11;

/// The inspector's view of a vCPU's registers: `regs` (general purpose,
/// RIP, RFLAGS and its flags by name), `segments` (selector, base, limit,
/// attributes, descriptor kind), `tables` (GDTR, IDTR), `control` (CR0-CR4,
/// CR8, EFER, APIC base, their flags by name, the paging mode), and the
/// operating `mode` and `cpl` ([`bits`]). A register set the engine could
/// not read shows the error instead.
pub fn inspect_registers(
    regs: Result<Regs, crate::EngineError>,
    sregs: Result<SpecialRegs, crate::EngineError>,
) -> crate::inspect::Tree {
    use crate::inspect::Tree;
    let mut root = Tree::new();
    let rflags = regs.as_ref().ok().map(|r| r.rflags);
    match regs {
        Ok(r) => {
            let mut t = Tree::new();
            for (name, v) in [
                ("rax", r.rax),
                ("rbx", r.rbx),
                ("rcx", r.rcx),
                ("rdx", r.rdx),
                ("rsi", r.rsi),
                ("rdi", r.rdi),
                ("rsp", r.rsp),
                ("rbp", r.rbp),
                ("r8", r.r8),
                ("r9", r.r9),
                ("r10", r.r10),
                ("r11", r.r11),
                ("r12", r.r12),
                ("r13", r.r13),
                ("r14", r.r14),
                ("r15", r.r15),
                ("rip", r.rip),
                ("rflags", r.rflags),
            ] {
                t.hex(name, v, 16);
            }
            t.value("rflags_bits", bits::rflags_names(r.rflags))
                .value("iopl", (r.rflags >> 12) & 3);
            root.child("regs", t);
        }
        Err(e) => {
            root.value("regs", format!("unreadable: {e}"));
        }
    }
    match sregs {
        Ok(s) => {
            let long = s.efer & EFER_LMA != 0;
            let mut segs = Tree::new();
            for (name, seg) in [
                ("cs", s.cs),
                ("ds", s.ds),
                ("es", s.es),
                ("fs", s.fs),
                ("gs", s.gs),
                ("ss", s.ss),
                ("tr", s.tr),
                ("ldt", s.ldt),
            ] {
                let mut t = Tree::new();
                t.hex("selector", seg.selector.into(), 4)
                    .hex("base", seg.base, 16)
                    .hex("limit", seg.limit.into(), 8)
                    .hex("type", seg.type_.into(), 1)
                    .value("dpl", seg.dpl)
                    .value("present", seg.present)
                    .value("l", seg.l)
                    .value("db", seg.db)
                    .value("s", seg.s)
                    .value("g", seg.g)
                    .value("avl", seg.avl)
                    .value("unusable", seg.unusable)
                    .value("kind", bits::segment_kind(&seg, long));
                segs.child(name, t);
            }
            root.child("segments", segs);
            let mut tables = Tree::new();
            tables
                .hex("gdtr_base", s.gdt.base, 16)
                .hex("gdtr_limit", s.gdt.limit.into(), 4)
                .hex("idtr_base", s.idt.base, 16)
                .hex("idtr_limit", s.idt.limit.into(), 4);
            root.child("tables", tables);
            let mut control = Tree::new();
            control
                .hex("cr0", s.cr0, 8)
                .hex("cr2", s.cr2, 16)
                .hex("cr3", s.cr3, 16)
                .hex("cr4", s.cr4, 8)
                .hex("cr8", s.cr8, 1)
                .hex("efer", s.efer, 4)
                .hex("apic_base", s.apic_base, 8)
                .value("cr0_bits", bits::bit_names(s.cr0, bits::CR0_BITS, 0))
                .value("cr4_bits", bits::bit_names(s.cr4, bits::CR4_BITS, 0))
                .value("efer_bits", bits::bit_names(s.efer, bits::EFER_BITS, 0))
                .value("paging", bits::paging_mode(s.cr0, s.cr4, s.efer));
            root.child("control", control);
            root.value("mode", bits::operating_mode(s.cr0, s.efer, rflags, &s.cs))
                .value(
                    "cpl",
                    bits::current_privilege_level(s.cr0, s.efer, rflags, &s.cs),
                );
        }
        Err(e) => {
            root.value("sregs", format!("unreadable: {e}"));
        }
    }
    root
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_code_descriptor_matches_the_manual_encoding() {
        // The classic flat 32-bit ring-0 code descriptor.
        assert_eq!(
            Segment::flat32(0x8, true).to_descriptor(),
            0x00cf_9b00_0000_ffff
        );
        assert_eq!(
            Segment::flat32(0x10, false).to_descriptor(),
            0x00cf_9300_0000_ffff
        );
        assert_eq!(Segment::code64(0x8).to_descriptor(), 0x00af_9b00_0000_ffff);
    }

    #[test]
    fn the_inspector_decodes_flags_mode_and_privilege() {
        use crate::inspect::Node;
        let regs = Regs {
            rip: 0xffff_ffff_8100_0000,
            rflags: 0x246,
            ..Default::default()
        };
        let sregs = SpecialRegs {
            cs: Segment {
                selector: 0x33,
                dpl: 3,
                ..Segment::code64(0x33)
            },
            cr0: 0x8005_0033,
            cr4: CR4_PAE,
            efer: 0xd01,
            ..Default::default()
        };
        let t = inspect_registers(Ok(regs), Ok(sregs));
        let v = |p: &str| match t.get(p) {
            Some(Node::Value(v)) => v,
            other => panic!("{p}: {other:?}"),
        };
        assert_eq!(v("regs/rip"), "0xffffffff81000000");
        assert_eq!(v("regs/rflags_bits"), "IF ZF PF IOPL=0");
        assert_eq!(v("control/cr0_bits"), "PG AM WP NE ET MP PE");
        assert_eq!(v("control/cr4_bits"), "PAE");
        assert_eq!(v("control/efer_bits"), "NXE LMA LME SCE");
        assert_eq!(v("control/paging"), "4-level");
        assert_eq!(v("segments/cs/selector"), "0x0033");
        assert_eq!(v("mode"), "long 64-bit");
        assert_eq!(v("cpl"), "3");
    }

    #[test]
    fn unreadable_register_sets_show_the_error_and_the_rest() {
        use crate::inspect::Node;
        let t = inspect_registers(
            Err(crate::EngineError::Unsupported("test")),
            Ok(SpecialRegs::default()),
        );
        assert!(matches!(t.get("regs"), Some(Node::Value(v)) if v.starts_with("unreadable")));
        assert_eq!(t.get("mode"), Some(Node::Value("real".into())));
    }
}
