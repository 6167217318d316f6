//! Conversions between the core's register types and KVM's.

use alcazar_core::regs::{DescriptorTable, Regs, Segment, SpecialRegs};
use kvm_bindings::{kvm_dtable, kvm_regs, kvm_segment, kvm_sregs};

pub fn regs_from_kvm(r: &kvm_regs) -> Regs {
    Regs {
        rax: r.rax,
        rbx: r.rbx,
        rcx: r.rcx,
        rdx: r.rdx,
        rsi: r.rsi,
        rdi: r.rdi,
        rsp: r.rsp,
        rbp: r.rbp,
        r8: r.r8,
        r9: r.r9,
        r10: r.r10,
        r11: r.r11,
        r12: r.r12,
        r13: r.r13,
        r14: r.r14,
        r15: r.r15,
        rip: r.rip,
        rflags: r.rflags,
    }
}

pub fn regs_to_kvm(r: &Regs) -> kvm_regs {
    kvm_regs {
        rax: r.rax,
        rbx: r.rbx,
        rcx: r.rcx,
        rdx: r.rdx,
        rsi: r.rsi,
        rdi: r.rdi,
        rsp: r.rsp,
        rbp: r.rbp,
        r8: r.r8,
        r9: r.r9,
        r10: r.r10,
        r11: r.r11,
        r12: r.r12,
        r13: r.r13,
        r14: r.r14,
        r15: r.r15,
        rip: r.rip,
        rflags: r.rflags,
    }
}

fn seg_from_kvm(s: &kvm_segment) -> Segment {
    Segment {
        base: s.base,
        limit: s.limit,
        selector: s.selector,
        type_: s.type_,
        present: s.present != 0,
        dpl: s.dpl,
        db: s.db != 0,
        s: s.s != 0,
        l: s.l != 0,
        g: s.g != 0,
        avl: s.avl != 0,
        unusable: s.unusable != 0,
    }
}

fn seg_to_kvm(s: &Segment) -> kvm_segment {
    kvm_segment {
        base: s.base,
        limit: s.limit,
        selector: s.selector,
        type_: s.type_,
        present: u8::from(s.present),
        dpl: s.dpl,
        db: u8::from(s.db),
        s: u8::from(s.s),
        l: u8::from(s.l),
        g: u8::from(s.g),
        avl: u8::from(s.avl),
        unusable: u8::from(s.unusable),
        padding: 0,
    }
}

fn dt_from_kvm(d: &kvm_dtable) -> DescriptorTable {
    DescriptorTable {
        base: d.base,
        limit: d.limit,
    }
}

fn dt_to_kvm(d: &DescriptorTable) -> kvm_dtable {
    kvm_dtable {
        base: d.base,
        limit: d.limit,
        ..Default::default()
    }
}

pub fn sregs_from_kvm(s: &kvm_sregs) -> SpecialRegs {
    SpecialRegs {
        cs: seg_from_kvm(&s.cs),
        ds: seg_from_kvm(&s.ds),
        es: seg_from_kvm(&s.es),
        fs: seg_from_kvm(&s.fs),
        gs: seg_from_kvm(&s.gs),
        ss: seg_from_kvm(&s.ss),
        tr: seg_from_kvm(&s.tr),
        ldt: seg_from_kvm(&s.ldt),
        gdt: dt_from_kvm(&s.gdt),
        idt: dt_from_kvm(&s.idt),
        cr0: s.cr0,
        cr2: s.cr2,
        cr3: s.cr3,
        cr4: s.cr4,
        cr8: s.cr8,
        efer: s.efer,
        apic_base: s.apic_base,
    }
}

/// Writes `s` over `base` (KVM's current sregs), keeping the interrupt
/// bitmap KVM owns.
pub fn sregs_to_kvm(s: &SpecialRegs, base: &kvm_sregs) -> kvm_sregs {
    kvm_sregs {
        cs: seg_to_kvm(&s.cs),
        ds: seg_to_kvm(&s.ds),
        es: seg_to_kvm(&s.es),
        fs: seg_to_kvm(&s.fs),
        gs: seg_to_kvm(&s.gs),
        ss: seg_to_kvm(&s.ss),
        tr: seg_to_kvm(&s.tr),
        ldt: seg_to_kvm(&s.ldt),
        gdt: dt_to_kvm(&s.gdt),
        idt: dt_to_kvm(&s.idt),
        cr0: s.cr0,
        cr2: s.cr2,
        cr3: s.cr3,
        cr4: s.cr4,
        cr8: s.cr8,
        efer: s.efer,
        apic_base: s.apic_base,
        interrupt_bitmap: base.interrupt_bitmap,
    }
}
