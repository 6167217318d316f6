//! The inspector's view of an emu vCPU: the engine-neutral register tree
//! ([`alcazar_core::regs::inspect_registers`]) plus what the software CPU
//! can show of itself:
//!
//! * `apic` — the local APIC ([`crate::apic::LocalApic::inspect`]);
//! * `state` — the activity state (halted, wait-for-SIPI; SDM Vol. 3A
//!   §9.1.1), the STI/MOV SS interrupt shadow (§6.8.3), pending NMI and
//!   external interrupt (§6.7.1), NMI blocking, instructions retired;
//! * `msr` — the engine's own MSRs (SDM Vol. 4 Table 2-2): the values the
//!   emu engine holds, not what an embedder's MSR hook would answer;
//! * `debug` — DR0-DR3, DR6, DR7 (Vol. 3B §18.2);
//! * `fpu` — FCW, FSW, FTW, TOP, the tags, ST(0)-ST(7), MXCSR, XMM0-15,
//!   XCR0 (Vol. 1 §8.1, §10.2);
//! * `mmu` — software TLB entries in use, flushes, page walks;
//! * `code_cache` — decoded blocks cached and decoded, code pages
//!   invalidated (the latter counts every vCPU of the VM);
//! * `jit` — the translator (tier 1, [`crate::jit`]): the tier in use,
//!   blocks translated and refused, translation time, code-cache bytes
//!   used and flushes, instructions retired in translated code, entries
//!   and exits by reason, direct branches linked, lookup-cache fills, and
//!   the instructions translated code left to the interpreter, by
//!   mnemonic (the most frequent first).
//!
//! Everything is read through shared references: nothing here can fill
//! the TLB, decode code, acknowledge or EOI an interrupt, latch the ESR,
//! tick the timer or raise a fault. The APIC is read under its lock from
//! a copy.

use alcazar_core::inspect::Tree;

use crate::fpu::Tag;
use crate::interrupts::InterruptSource;
use crate::mmu::TLB_ENTRIES;
use crate::msr::read_tsc;
use crate::state::CodeSize;
use crate::Cpu;

/// `cpu`'s inspector tree: `base` (the register tree) followed by
/// `apic` (if the CPU has one), `state`, `msr`, `debug`, `fpu`, `mmu` and
/// `code_cache`.
pub fn inspect_cpu(cpu: &Cpu, base: Tree) -> Tree {
    let mut t = base;
    if let Some(apic) = &cpu.apic {
        t.child("apic", apic.inspect());
    }
    t.child("state", state(cpu))
        .child("msr", msrs(cpu))
        .child("debug", debug(cpu))
        .child("fpu", fpu(cpu))
        .child("mmu", mmu(cpu))
        .child("code_cache", code_cache(cpu))
        .child("jit", jit(cpu));
    t
}

fn jit(cpu: &Cpu) -> Tree {
    let j = &cpu.jit;
    let s = &j.stats;
    let (used, size) = j.cache_bytes();
    let mut t = Tree::new();
    t.value(
        "tier",
        match j.tier() {
            crate::EmuTier::Interp => "interp",
            crate::EmuTier::Jit => "jit",
        },
    )
    .value("blocks_translated", s.blocks_translated)
    .value("blocks_refused", s.blocks_refused)
    .value("translation_us", s.translation_ns / 1000)
    .value("code_cache_bytes_used", used)
    .value("code_cache_bytes", size)
    .value("code_cache_flushes", s.cache_flushes)
    .value("instructions", s.instructions)
    .value("entries", s.entries)
    .value("chain_links", s.chain_links)
    .value("lookup_fills", s.lookup_fills);
    let mut exits = Tree::new();
    for (name, i) in [
        ("attention", 1),
        ("budget", 2),
        ("stale", 3),
        ("chain", 4),
        ("lookup_miss", 5),
        ("interpreter", 6),
    ] {
        exits.value(name, s.exits[i]);
    }
    t.child("exits", exits);
    let mut fallbacks = Tree::new();
    for (m, n) in s.top_fallbacks(12) {
        fallbacks.value(m, n);
    }
    t.child("fallbacks", fallbacks);
    t
}

fn state(cpu: &Cpu) -> Tree {
    let s = &cpu.s;
    let activity = if s.wait_for_sipi {
        "wait-for-SIPI"
    } else if s.halted {
        "HLT"
    } else {
        "active"
    };
    let external = cpu.apic.as_ref().is_some_and(|a| a.pending());
    let mut t = Tree::new();
    t.value("activity", activity)
        .value("halted", s.halted)
        .value("wait_for_sipi", s.wait_for_sipi)
        .value("interrupt_shadow", s.interrupt_shadow)
        .value("nmi_pending", cpu.irq.nmi_pending())
        .value("nmi_blocked", cpu.irq.nmi_blocked())
        .value("external_interrupt_pending", external)
        .value("instructions_retired", cpu.icount)
        .value("cpl", s.cpl)
        .value(
            "code_size",
            match s.code_size() {
                CodeSize::Bits16 => 16,
                CodeSize::Bits32 => 32,
                CodeSize::Bits64 => 64,
            },
        );
    t
}

fn msrs(cpu: &Cpu) -> Tree {
    let s = &cpu.s;
    let m = &s.msr;
    let apic_base = cpu.apic.as_ref().map_or(m.apic_base, |a| a.base());
    let mut t = Tree::new();
    for (name, value) in [
        ("efer", s.efer),
        ("star", m.star),
        ("lstar", m.lstar),
        ("cstar", m.cstar),
        ("sfmask", m.sfmask),
        ("fs_base", s.seg[crate::state::seg::FS].base),
        ("gs_base", s.seg[crate::state::seg::GS].base),
        ("kernel_gs_base", m.kernel_gs_base),
        ("sysenter_cs", m.sysenter_cs),
        ("sysenter_esp", m.sysenter_esp),
        ("sysenter_eip", m.sysenter_eip),
        ("tsc", read_tsc(cpu)),
        ("tsc_adjust", m.tsc_adjust),
        ("tsc_aux", m.tsc_aux),
        ("apic_base", apic_base),
        ("pat", m.pat),
        ("misc_enable", m.misc_enable),
        ("spec_ctrl", m.spec_ctrl),
        ("mtrr_def_type", m.mtrr_def_type),
    ] {
        t.hex(name, value, 16);
    }
    match &cpu.apic {
        Some(apic) => t.hex("tsc_deadline", apic.read_tsc_deadline(), 16),
        None => t.value("tsc_deadline", "no local APIC"),
    };
    t
}

fn debug(cpu: &Cpu) -> Tree {
    let dr = &cpu.s.dr;
    let mut t = Tree::new();
    for (name, i) in [
        ("dr0", 0),
        ("dr1", 1),
        ("dr2", 2),
        ("dr3", 3),
        ("dr6", 6),
        ("dr7", 7),
    ] {
        t.hex(name, dr[i], 16);
    }
    t
}

fn tag_name(tag: u16) -> &'static str {
    match tag & 3 {
        t if t == Tag::Valid as u16 => "valid",
        t if t == Tag::Zero as u16 => "zero",
        t if t == Tag::Special as u16 => "special",
        _ => "empty",
    }
}

fn fpu(cpu: &Cpu) -> Tree {
    let f = &cpu.s.fpu;
    let top = f.top();
    let mut t = Tree::new();
    t.hex("fcw", f.fcw.into(), 4)
        .hex("fsw", f.fsw.into(), 4)
        .hex("ftw", f.ftw.into(), 4)
        .value("top", top)
        .hex("fop", f.fop.into(), 3)
        .hex("fcs", f.fcs.into(), 4)
        .hex("fip", f.fip, 16)
        .hex("fds", f.fds.into(), 4)
        .hex("fdp", f.fdp, 16);
    let mut st = Tree::new();
    for i in 0..8 {
        let phys = (top + i) & 7;
        let tag = tag_name(f.ftw >> (2 * phys));
        st.value(
            format!("st{i}"),
            format!("{:#022x} {tag} (R{phys})", f.st[phys]),
        );
    }
    t.child("st", st).hex("mxcsr", f.mxcsr.into(), 8);
    let mut xmm = Tree::new();
    for (i, v) in f.xmm.iter().enumerate() {
        xmm.value(format!("xmm{i}"), format!("{v:#034x}"));
    }
    t.child("xmm", xmm).hex("xcr0", cpu.s.xcr0, 16);
    t
}

fn mmu(cpu: &Cpu) -> Tree {
    let m = &cpu.mmu;
    let mut t = Tree::new();
    t.value("tlb_entries_in_use", m.entries_in_use())
        .value("tlb_entries", 6 * TLB_ENTRIES)
        .value("flushes", m.flushes)
        .value("walks", m.walks);
    if m.apic_page == crate::apic::startup::NO_APIC_PAGE {
        t.value("apic_page", "none");
    } else {
        t.hex("apic_page", m.apic_page, 8);
    }
    t
}

fn code_cache(cpu: &Cpu) -> Tree {
    let mut t = Tree::new();
    t.value("blocks_cached", cpu.cache.len())
        .value("blocks_decoded", cpu.cache.decoded)
        .value("bytes", cpu.cache.bytes)
        .value("flushes", cpu.cache.flushes)
        .value("code_page_invalidations", cpu.code.invalidations());
    t
}

#[cfg(test)]
mod tests;
