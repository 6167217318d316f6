//! The emu vCPU's inspector tree: what it shows, and that reading it
//! changes nothing.

use std::sync::Arc;

use alcazar_core::engine::Vcpu;
use alcazar_core::inspect::{Node, Tree};
use iced_x86::code_asm::*;

use super::inspect_cpu;
use crate::apic::{EmuApicBus, LocalApic};
use crate::interrupts::InterruptSource;
use crate::testutil::{assemble, cpu32, cpu64, run_until, CODE};
use crate::vcpu::EmuVcpu;

fn value(t: &Tree, path: &str) -> String {
    match t.get(path) {
        Some(Node::Value(v)) => v,
        other => panic!("{path}: {other:?}"),
    }
}

fn hex(t: &Tree, path: &str) -> u64 {
    let v = value(t, path);
    u64::from_str_radix(v.trim_start_matches("0x"), 16).unwrap_or_else(|_| panic!("{path}: {v}"))
}

/// A 64-bit vCPU that ran three instructions, with a software-enabled
/// local APIC holding vector 0x40 in service and 0x51 requested, and a
/// periodic timer (vector 0xec, divide by 1) counting down from 10^9.
/// Also returns where the code stopped (at its final NOP).
fn long_mode_vcpu_with_a_busy_apic() -> (EmuVcpu, Arc<LocalApic>, u64) {
    let code = assemble(64, |a| {
        a.mov(rax, 0x1122_3344_5566_7788u64).unwrap();
        a.mov(rbx, 0x42u64).unwrap();
        a.mov(qword_ptr(0x40000), rbx).unwrap();
        a.nop().unwrap();
    });
    let end = CODE + code.len() as u64 - 1;
    let mut cpu = cpu64(&code);
    let bus = EmuApicBus::new();
    let apic = LocalApic::new(0, cpu.irq.clone(), &bus);
    cpu.attach_apic(apic.clone());
    cpu.s.msr.lstar = 0xffff_ffff_8100_0040;
    assert_eq!(run_until(&mut cpu, end, 10), 3);
    apic.mmio_write(0xf0, 4, 0x1ff);
    // Self IPIs (ICR shorthand 01): 0x40, taken into ISR, then 0x51.
    apic.mmio_write(0x300, 4, 1 << 18 | 0x40);
    assert_eq!(apic.acknowledge(), Some(0x40));
    apic.mmio_write(0x300, 4, 1 << 18 | 0x51);
    apic.mmio_write(0x3e0, 4, 0b1011);
    apic.mmio_write(0x320, 4, 1 << 17 | 0xec);
    apic.mmio_write(0x380, 4, 1_000_000_000);
    (EmuVcpu::new(cpu), apic, end)
}

#[test]
fn long_mode_registers_and_an_armed_apic_show_in_the_tree() {
    let (vcpu, _apic, end) = long_mode_vcpu_with_a_busy_apic();
    let t = vcpu.inspect();
    assert_eq!(value(&t, "regs/rax"), "0x1122334455667788");
    assert_eq!(hex(&t, "regs/rip"), end);
    assert_eq!(value(&t, "mode"), "long 64-bit");
    assert_eq!(value(&t, "cpl"), "0");
    assert_eq!(value(&t, "control/efer_bits"), "NXE LMA LME");
    assert_eq!(value(&t, "control/paging"), "4-level");
    assert_eq!(value(&t, "segments/cs/selector"), "0x0008");

    assert_eq!(value(&t, "apic/mode"), "xAPIC");
    assert_eq!(value(&t, "apic/id"), "0");
    assert_eq!(value(&t, "apic/bsp"), "true");
    assert_eq!(value(&t, "apic/version"), "0x14");
    assert_eq!(value(&t, "apic/isr"), "0x40");
    assert_eq!(value(&t, "apic/irr"), "0x51");
    assert_eq!(value(&t, "apic/tmr"), "none");
    assert_eq!(value(&t, "apic/ppr"), "0x40");
    assert_eq!(value(&t, "apic/deliverable"), "0x51");
    assert_eq!(value(&t, "apic/software_enabled"), "true");
    assert_eq!(value(&t, "apic/lvt/timer/vector"), "0xec");
    assert_eq!(value(&t, "apic/lvt/timer/masked"), "false");
    assert_eq!(value(&t, "apic/lvt/lint0/delivery"), "ExtINT");
    assert_eq!(value(&t, "apic/lvt/lint1/delivery"), "NMI");
    assert_eq!(value(&t, "apic/timer/mode"), "periodic");
    assert_eq!(value(&t, "apic/timer/divide"), "1");
    assert_eq!(hex(&t, "apic/timer/initial_count"), 1_000_000_000);
    let current = hex(&t, "apic/timer/current_count");
    assert!(current > 0 && current <= 1_000_000_000, "{current}");
    assert_ne!(value(&t, "apic/timer_expires_in_ns"), "disarmed");

    assert_eq!(value(&t, "state/activity"), "active");
    assert_eq!(value(&t, "state/external_interrupt_pending"), "true");
    assert_eq!(value(&t, "state/instructions_retired"), "3");
    assert_eq!(value(&t, "state/code_size"), "64");
    assert_eq!(value(&t, "msr/lstar"), "0xffffffff81000040");
    assert_eq!(hex(&t, "msr/efer"), 0xd00);
    assert_eq!(hex(&t, "msr/apic_base"), 0xfee0_0900);
    assert_eq!(hex(&t, "msr/pat"), 0x0007_0406_0007_0406);
    assert_eq!(value(&t, "fpu/fcw"), "0x0040");
    assert_eq!(value(&t, "fpu/mxcsr"), "0x00001f80");
    assert_ne!(value(&t, "mmu/tlb_entries_in_use"), "0");
    assert_eq!(value(&t, "mmu/apic_page"), "0xfee00000");
    // run_until steps one instruction at a time: a block per RIP.
    assert_eq!(value(&t, "code_cache/blocks_cached"), "3");
    assert_eq!(value(&t, "code_cache/blocks_decoded"), "3");
}

#[test]
fn inspecting_changes_nothing() {
    let (vcpu, apic, _) = long_mode_vcpu_with_a_busy_apic();
    // Also an unlatched APIC error and a pending NMI.
    apic.mmio_read(0x10, 4);
    vcpu.cpu().irq.raise_nmi();
    let cpu = vcpu.cpu();
    let before = (
        vcpu.regs().unwrap(),
        vcpu.sregs().unwrap(),
        apic.snapshot(),
        cpu.s.fpu.clone(),
        (cpu.mmu.entries_in_use(), cpu.mmu.flushes, cpu.mmu.walks),
        (
            cpu.mmu.epoch,
            cpu.cache.len(),
            cpu.cache.decoded,
            cpu.icount,
        ),
        (cpu.irq.attention(), cpu.irq.nmi_pending()),
    );
    assert_ne!(before.2.esr_pending, 0);
    let first = vcpu.inspect();
    let second = vcpu.inspect();
    let cpu = vcpu.cpu();
    let after = (
        vcpu.regs().unwrap(),
        vcpu.sregs().unwrap(),
        apic.snapshot(),
        cpu.s.fpu.clone(),
        (cpu.mmu.entries_in_use(), cpu.mmu.flushes, cpu.mmu.walks),
        (
            cpu.mmu.epoch,
            cpu.cache.len(),
            cpu.cache.decoded,
            cpu.icount,
        ),
        (cpu.irq.attention(), cpu.irq.nmi_pending()),
    );
    assert_eq!(before, after);
    assert_eq!(value(&first, "apic/esr"), "0x00", "ESR not latched");
    assert_eq!(value(&first, "apic/esr_pending"), "0x80");
    assert_eq!(value(&first, "state/nmi_pending"), "true");
    // Two reads differ only in what the clock moves.
    let timeless = |t: &Tree| -> Vec<(String, String)> {
        t.flatten("")
            .into_iter()
            .filter(|(p, _)| {
                !p.ends_with("current_count") && !p.ends_with("expires_in_ns") && p != "msr/tsc"
            })
            .collect()
    };
    assert_eq!(timeless(&first), timeless(&second));
}

#[test]
fn a_halted_cpu_without_an_apic_shows_its_state() {
    let mut cpu = cpu32(&assemble(32, |a| a.hlt().unwrap()));
    cpu.s.halted = true;
    cpu.s.interrupt_shadow = true;
    cpu.irq.raise_nmi();
    let t = inspect_cpu(&cpu, Tree::new());
    assert!(t.get("apic").is_none());
    assert_eq!(value(&t, "state/activity"), "HLT");
    assert_eq!(value(&t, "state/interrupt_shadow"), "true");
    assert_eq!(value(&t, "state/nmi_pending"), "true");
    assert_eq!(value(&t, "state/external_interrupt_pending"), "false");
    assert_eq!(value(&t, "state/code_size"), "32");
    assert_eq!(value(&t, "msr/tsc_deadline"), "no local APIC");
    assert_eq!(value(&t, "mmu/apic_page"), "none");
    assert_eq!(value(&t, "fpu/top"), "0");
    assert_eq!(value(&t, "fpu/st/st0"), format!("{:#022x} zero (R0)", 0));
    assert_eq!(value(&t, "code_cache/blocks_cached"), "0");
}

#[test]
fn an_x2apic_shows_its_32_bit_id_and_no_apr() {
    let mut cpu = cpu32(&[]);
    let bus = EmuApicBus::new();
    let apic = LocalApic::new(0, cpu.irq.clone(), &bus);
    cpu.attach_apic(apic.clone());
    apic.set_base(0xfee0_0000 | 1 << 11 | 1 << 10, true)
        .expect("xAPIC -> x2APIC");
    let t = inspect_cpu(&cpu, Tree::new());
    assert_eq!(value(&t, "apic/mode"), "x2APIC");
    assert_eq!(value(&t, "apic/ldr"), "0x00000001");
    assert!(t.get("apic/apr").is_none() && t.get("apic/dfr").is_none());
}
