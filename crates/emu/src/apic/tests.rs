//! Unit tests of the local APIC: priorities, EOI, the timer on a fake
//! clock, IPI routing, x2APIC semantics, INIT/SIPI and hostile accesses.

use std::sync::{Arc, Mutex};

use alcazar_core::irq::{ApicBus, DeliveryMode, InterruptMessage, MsiSink, PlatformInterrupts};

use super::ipi::Ipi;
use super::regs::{esr, lvt, reg, ApicState, RegFault};
use super::timer::TimerMode;
use super::*;
use crate::interrupts::{take_pending, InterruptLines, InterruptSource};
use crate::testutil::{assemble, cpu32, CODE, DATA};

/// The 8259A and IOAPIC as the tests see them: a fixed INTA vector and a
/// log of EOI broadcasts.
#[derive(Default)]
struct FakePlatform {
    inta: Mutex<Option<u8>>,
    eois: Mutex<Vec<u8>>,
}

impl PlatformInterrupts for FakePlatform {
    fn ext_int_acknowledge(&self) -> Option<u8> {
        self.inta.lock().unwrap().take()
    }
    fn eoi(&self, vector: u8) {
        self.eois.lock().unwrap().push(vector);
    }
}

/// `n` APICs on one bus, software-enabled, with a connected platform.
fn apics(n: u32) -> (EmuApicBus, Vec<Arc<LocalApic>>, Arc<FakePlatform>) {
    let bus = EmuApicBus::new();
    let platform = Arc::new(FakePlatform::default());
    bus.connect(platform.clone());
    let all: Vec<_> = (0..n)
        .map(|i| LocalApic::new(i, Arc::new(InterruptLines::new()), &bus))
        .collect();
    for a in &all {
        a.mmio_write(0xf0, 4, 0x1ff);
    }
    (bus, all, platform)
}

fn irr(a: &LocalApic, v: u8) -> bool {
    a.snapshot().irr.test(v)
}

fn sw_enabled_state() -> ApicState {
    let mut s = ApicState::new(0, true);
    s.write(reg::SVR, 0x1ff, false, 0).unwrap();
    s
}

#[test]
fn ppr_follows_tpr_and_the_in_service_class() {
    let mut s = sw_enabled_state();
    assert!(s.accept(0x51, false) && s.accept(0x32, false));
    assert_eq!(s.deliverable(), Some(0x51));
    s.tpr = 0x50;
    assert_eq!(s.ppr(), 0x50);
    assert_eq!(s.deliverable(), None, "class 5 is not above TPR class 5");
    s.tpr = 0x40;
    assert_eq!(s.acknowledge(), 0x51);
    assert_eq!(s.ppr(), 0x50, "the in-service class wins over a lower TPR");
    assert_eq!(
        s.deliverable(),
        None,
        "0x32 waits behind the in-service 0x51"
    );
    assert_eq!(s.eoi(), None, "edge-triggered: no EOI broadcast");
    assert_eq!(s.ppr(), 0x40);
    s.tpr = 0;
    assert_eq!(s.acknowledge(), 0x32);
    assert_eq!(s.read(reg::PPR, false, 0), Ok(0x30));
}

#[test]
fn a_vector_masked_between_pending_and_acknowledge_is_spurious() {
    let (_bus, a, _) = apics(1);
    a[0].receive(&Ipi::self_ipi(0x41));
    assert!(a[0].pending());
    a[0].set_tpr(0xf);
    assert_eq!(a[0].acknowledge(), Some(0xff), "the SVR's spurious vector");
    assert!(irr(&a[0], 0x41), "the request stays in IRR");
    assert_eq!(
        a[0].snapshot().isr.highest(),
        None,
        "spurious sets no ISR bit"
    );
}

#[test]
fn eoi_of_a_level_triggered_vector_is_broadcast_to_the_ioapic() {
    let (bus, a, platform) = apics(2);
    bus.deliver(InterruptMessage {
        vector: 0x61,
        delivery_mode: DeliveryMode::Fixed,
        dest_mode_logical: false,
        destination: 1,
        trigger_level: true,
    });
    assert!(!irr(&a[0], 0x61) && irr(&a[1], 0x61));
    assert!(a[1].snapshot().tmr.test(0x61));
    assert_eq!(a[1].acknowledge(), Some(0x61));
    a[1].mmio_write(0xb0, 4, 0);
    assert_eq!(*platform.eois.lock().unwrap(), vec![0x61]);
    a[1].receive(&Ipi::self_ipi(0x62));
    a[1].acknowledge();
    a[1].mmio_write(0xb0, 4, 0);
    assert_eq!(platform.eois.lock().unwrap().len(), 1, "edge: no broadcast");
}

#[test]
fn ext_int_takes_the_pic_vector_and_bypasses_irr_and_isr() {
    let (bus, a, platform) = apics(2);
    *platform.inta.lock().unwrap() = Some(0x08);
    assert!(!a[0].pending());
    bus.set_ext_int(true);
    assert!(a[0].pending(), "the BSP's LINT0 is in ExtINT mode at reset");
    assert!(!a[1].pending(), "an AP's LINT0 is masked at reset");
    assert_eq!(a[0].acknowledge(), Some(0x08));
    assert_eq!(a[0].snapshot().isr.highest(), None);
    bus.set_ext_int(false);
    assert!(!a[0].pending());
    // An IOAPIC ExtINT message works whatever LINT0 says.
    *platform.inta.lock().unwrap() = Some(0x09);
    bus.deliver(InterruptMessage {
        vector: 0,
        delivery_mode: DeliveryMode::ExtInt,
        dest_mode_logical: false,
        destination: 1,
        trigger_level: false,
    });
    assert!(a[1].pending());
    assert_eq!(a[1].acknowledge(), Some(0x09));
}

#[test]
fn one_shot_and_periodic_timers_count_on_the_input_clock() {
    let mut s = sw_enabled_state();
    s.write(reg::TIMER_DIVIDE, 0b0001, false, 0).unwrap(); // divide by 4
    s.write(reg::LVT_TIMER, 0x40, false, 0).unwrap();
    s.write(reg::TIMER_INITIAL, 1000, false, 100).unwrap();
    assert_eq!(s.timer_mode(), TimerMode::OneShot);
    assert_eq!(s.read(reg::TIMER_CURRENT, false, 100), Ok(1000));
    assert_eq!(s.read(reg::TIMER_CURRENT, false, 100 + 400), Ok(900));
    assert_eq!(s.timer.next, Some(100 + 4000));
    assert!(!s.timer_tick(4099));
    assert!(s.timer_tick(4100));
    assert!(s.irr.test(0x40));
    assert_eq!(s.timer.next, None, "one-shot: disarmed");
    assert_eq!(s.read(reg::TIMER_CURRENT, false, 5000), Ok(0));

    s.irr.clear(0x40);
    s.write(reg::LVT_TIMER, 1 << 17 | 0x41, false, 0).unwrap();
    s.write(reg::TIMER_DIVIDE, 0b1011, false, 0).unwrap(); // divide by 1
    s.write(reg::TIMER_INITIAL, 100_000, false, 0).unwrap();
    assert_eq!(s.read(reg::TIMER_CURRENT, false, 250_000), Ok(50_000));
    // Ticking late coalesces missed periods and re-arms on the grid.
    assert!(s.timer_tick(350_000));
    assert_eq!(s.timer.next, Some(400_000));
    assert_eq!(s.read(reg::TIMER_CURRENT, false, 350_000), Ok(50_000));
    // A masked timer still counts but requests nothing.
    s.irr.clear(0x41);
    let masked = u64::from(lvt::MASKED) | 1 << 17 | 0x41;
    s.write(reg::LVT_TIMER, masked, false, 0).unwrap();
    assert!(!s.timer_tick(400_000));
    assert!(!s.irr.test(0x41));
    assert_eq!(s.timer.next, Some(500_000));
    // Initial count 0 stops it.
    s.write(reg::TIMER_INITIAL, 0, false, 450_000).unwrap();
    assert_eq!(s.timer.next, None);
    // A tiny period expires no more often than the floor.
    s.write(reg::TIMER_INITIAL, 10, false, 1_000_000).unwrap();
    assert!(!s.timer_tick(1_000_010));
    assert_eq!(s.timer.next, Some(1_000_010 + timer::MIN_PERIODIC_NS));
}

#[test]
fn a_divide_change_keeps_the_current_count() {
    let mut s = sw_enabled_state();
    s.write(reg::TIMER_DIVIDE, 0b1011, false, 0).unwrap();
    s.write(reg::LVT_TIMER, 0x40, false, 0).unwrap();
    s.write(reg::TIMER_INITIAL, 1000, false, 0).unwrap();
    s.write(reg::TIMER_DIVIDE, 0b0000, false, 200).unwrap(); // by 2
    assert_eq!(s.timer_current(200), 800);
    assert_eq!(s.timer_current(400), 700);
    assert_eq!(s.timer.next, Some(200 + 1600));
}

#[test]
fn tsc_deadline_mode_fires_once_and_leaving_it_disarms() {
    let mut s = sw_enabled_state();
    s.write(reg::TIMER_INITIAL, 500, false, 0).unwrap();
    s.write(reg::LVT_TIMER, 2 << 17 | 0x42, false, 0).unwrap();
    assert_eq!(s.timer.next, None, "entering TSC-deadline mode disarms");
    assert_eq!(s.read(reg::TIMER_CURRENT, false, 0), Ok(0));
    s.write(reg::TIMER_INITIAL, 700, false, 0).unwrap();
    assert_eq!(s.timer.initial, 500, "initial-count writes are ignored");
    assert_eq!(s.timer.next, None);
    s.write_tsc_deadline(12345, 1000);
    assert_eq!(s.read_tsc_deadline(), 12345);
    assert!(!s.timer_tick(999));
    assert!(s.timer_tick(1000));
    assert_eq!(s.read_tsc_deadline(), 0, "cleared when it fires");
    s.write_tsc_deadline(777, 2000);
    s.write(reg::LVT_TIMER, 0x42, false, 0).unwrap();
    assert_eq!(s.timer.next, None);
    assert_eq!(s.read_tsc_deadline(), 0);
    s.write_tsc_deadline(5, 5);
    assert_eq!(s.timer.next, None, "ignored outside TSC-deadline mode");
}

#[test]
fn the_timer_thread_view_fires_through_the_lines() {
    let (_bus, a, _) = apics(1);
    a[0].mmio_write(0x320, 4, 0x50);
    a[0].mmio_write(0x3e0, 4, 0b1011);
    a[0].mmio_write(0x380, 4, 1000);
    let due = a[0].timer_deadline().expect("armed");
    let mut dev = ApicTimerDevice::new(a[0].clone());
    use alcazar_core::timer::TimedDevice;
    assert_eq!(dev.next_deadline(), Some(timer::ns_to_instant(due)));
    dev.tick(timer::ns_to_instant(due));
    assert!(irr(&a[0], 0x50));
    assert!(a[0].pending());
    let current = a[0].mmio_read(0x390, 4);
    assert_eq!(current, 0, "one-shot expired");
}

fn fixed(dest: u32, logical: bool) -> Ipi {
    Ipi::from_icr(
        u64::from(dest) << 56 | 0x70 | u64::from(logical) << 11,
        false,
    )
}

#[test]
fn physical_logical_flat_and_cluster_destinations() {
    let (bus, a, _) = apics(4);
    let shared = bus.shared().clone();
    shared.send(Some(&a[0]), fixed(2, false));
    assert_eq!(
        (0..4).map(|i| irr(&a[i], 0x70)).collect::<Vec<_>>(),
        [false, false, true, false]
    );
    // Flat: LDR bit i for APIC i.
    for (i, x) in a.iter().enumerate() {
        x.mmio_write(0xd0, 4, (1 << i) << 24);
        x.mmio_write(0xb0, 4, 0);
        let mut s = x.lock();
        s.irr = Default::default();
    }
    shared.send(Some(&a[0]), fixed(0b1010, true));
    assert_eq!(
        (0..4).map(|i| irr(&a[i], 0x70)).collect::<Vec<_>>(),
        [false, true, false, true]
    );
    // Cluster: APICs 0,1 in cluster 1, APICs 2,3 in cluster 2.
    for (i, x) in a.iter().enumerate() {
        x.mmio_write(0xe0, 4, 0x0fff_ffff);
        let cluster = 1 + (i as u64 / 2);
        x.mmio_write(0xd0, 4, (cluster << 4 | 1 << (i % 2)) << 24);
        x.lock().irr = Default::default();
    }
    shared.send(Some(&a[0]), fixed(0x22, true));
    assert_eq!(
        (0..4).map(|i| irr(&a[i], 0x70)).collect::<Vec<_>>(),
        [false, false, false, true]
    );
    shared.send(Some(&a[0]), fixed(0xff, true));
    assert!((0..4).all(|i| irr(&a[i], 0x70)), "0xff is a broadcast");
}

#[test]
fn shorthands_and_lowest_priority_pick_their_targets() {
    let (bus, a, _) = apics(3);
    let shared = bus.shared().clone();
    let with = |sh: u64| Ipi::from_icr(sh << 18 | 0x71, false);
    shared.send(Some(&a[1]), with(3));
    assert_eq!(
        (0..3).map(|i| irr(&a[i], 0x71)).collect::<Vec<_>>(),
        [true, false, true]
    );
    shared.send(Some(&a[1]), with(1));
    assert!(irr(&a[1], 0x71));
    for x in &a {
        x.lock().irr = Default::default();
    }
    shared.send(Some(&a[1]), with(2));
    assert!((0..3).all(|i| irr(&a[i], 0x71)));
    // Lowest priority to all three: the lowest TPR, ties to the lowest index.
    for x in &a {
        x.lock().irr = Default::default();
    }
    a[0].set_tpr(3);
    a[1].set_tpr(1);
    a[2].set_tpr(1);
    shared.send(
        Some(&a[0]),
        Ipi::from_icr(0xffu64 << 56 | 1 << 8 | 0x72, false),
    );
    assert_eq!(
        (0..3).map(|i| irr(&a[i], 0x72)).collect::<Vec<_>>(),
        [false, true, false]
    );
}

#[test]
fn illegal_vectors_set_esr_bits_with_write_then_read_semantics() {
    let (_bus, a, _) = apics(2);
    a[0].mmio_write(0x310, 4, 1 << 24);
    a[0].mmio_write(0x300, 4, 0x05);
    assert!(!irr(&a[1], 0x05));
    assert_eq!(
        a[0].mmio_read(0x280, 4),
        0,
        "not visible before an ESR write"
    );
    a[0].mmio_write(0x280, 4, 0);
    assert_eq!(
        a[0].mmio_read(0x280, 4),
        u64::from(esr::SEND_ILLEGAL_VECTOR)
    );
    a[1].receive(&Ipi::self_ipi(3));
    a[1].mmio_write(0x280, 4, 0);
    assert_eq!(
        a[1].mmio_read(0x280, 4),
        u64::from(esr::RECEIVE_ILLEGAL_VECTOR)
    );
    a[1].mmio_write(0x280, 4, 0);
    assert_eq!(a[1].mmio_read(0x280, 4), 0, "the next write clears it");
    // An unmasked error LVT requests its vector.
    a[1].mmio_write(0x370, 4, 0xfe);
    a[1].mmio_read(0x2f0, 4); // CMCI is reserved here
    assert!(irr(&a[1], 0xfe));
}

#[test]
fn software_disable_masks_the_lvt_and_drops_fixed_interrupts() {
    let (_bus, a, _) = apics(1);
    a[0].mmio_write(0x350, 4, 0x30);
    a[0].mmio_write(0xf0, 4, 0xff);
    assert_ne!(a[0].mmio_read(0x350, 4) & u64::from(lvt::MASKED), 0);
    a[0].mmio_write(0x350, 4, 0x30);
    assert_ne!(
        a[0].mmio_read(0x350, 4) & u64::from(lvt::MASKED),
        0,
        "cannot unmask"
    );
    a[0].receive(&Ipi::self_ipi(0x40));
    assert!(!irr(&a[0], 0x40));
}

#[test]
fn x2apic_mode_transitions_follow_the_sdm() {
    let (_bus, a, _) = apics(1);
    let x = &a[0];
    let en = regs::base::EN;
    let extd = regs::base::EXTD;
    assert_eq!(
        x.msr_read(0x802),
        Err(RegFault::Illegal),
        "not in x2APIC mode"
    );
    assert_eq!(
        x.set_base(0xfee0_0000 | extd, true),
        Err(RegFault::Illegal),
        "EXTD without EN"
    );
    assert_eq!(
        x.set_base(0xfee0_0000 | en | 1 << 9, true),
        Err(RegFault::Illegal),
        "reserved"
    );
    x.set_base(0xfee0_0000 | en | extd, true).unwrap();
    assert_eq!(x.base() & regs::base::BSP, regs::base::BSP, "BSP flag kept");
    assert_eq!(
        x.set_base(0xfee0_0000 | en, true),
        Err(RegFault::Illegal),
        "x2APIC -> xAPIC"
    );
    x.set_base(0xfee0_0000, true).unwrap();
    assert_eq!(
        x.set_base(0xfee0_0000 | en | extd, true),
        Err(RegFault::Illegal),
        "disabled -> x2APIC"
    );
    x.set_base(0xfee0_0000 | en, true).unwrap();
    assert_eq!(
        x.mmio_read(0xf0, 4),
        0xff,
        "re-enabled in the power-up state"
    );
}

#[test]
fn x2apic_registers_fault_where_the_sdm_says() {
    let (bus, a, _) = apics(20);
    for x in &a {
        x.set_base(0xfee0_0000 | regs::base::EN | regs::base::EXTD, true)
            .unwrap();
    }
    let x = &a[19];
    assert_eq!(x.msr_read(0x802), Ok(19));
    assert_eq!(
        x.msr_read(0x80d),
        Ok(1 << 16 | 1 << 3),
        "LDR: cluster 1, bit 3"
    );
    assert_eq!(x.msr_read(0x803), Ok(0x50014));
    for bad in [0x809, 0x80c, 0x80e, 0x831, 0x80b, 0x83f, 0x801, 0x8ff] {
        assert_eq!(x.msr_read(bad), Err(RegFault::Illegal), "read {bad:#x}");
    }
    for ro in [0x802, 0x803, 0x80a, 0x80d, 0x810, 0x839] {
        assert_eq!(x.msr_write(ro, 0), Err(RegFault::Illegal), "write {ro:#x}");
    }
    assert_eq!(
        x.msr_write(0x80b, 1),
        Err(RegFault::Illegal),
        "EOI must be 0"
    );
    assert_eq!(
        x.msr_write(0x828, 1),
        Err(RegFault::Illegal),
        "ESR must be 0"
    );
    assert_eq!(x.msr_write(0x808, 1 << 32), Err(RegFault::Illegal));
    assert_eq!(x.msr_write(0x83f, 0x100), Err(RegFault::Illegal));
    assert_eq!(x.msr_write(0x830, 1 << 13), Err(RegFault::Illegal));
    // SELF IPI.
    x.msr_write(0x83f, 0x45).unwrap();
    assert!(irr(x, 0x45));
    // ICR: one 64-bit write, 32-bit destination, logical cluster 1 bit 3.
    x.msr_write(0x830, (1u64 << 16 | 1 << 3) << 32 | 1 << 11 | 0x46)
        .unwrap();
    assert_eq!(
        x.msr_read(0x830),
        Ok((1u64 << 16 | 1 << 3) << 32 | 1 << 11 | 0x46)
    );
    assert!(irr(&a[19], 0x46));
    assert!(!irr(&a[3], 0x46), "APIC 3 is in cluster 0");
    x.msr_write(0x830, 3u64 << 32 | 0x47).unwrap();
    assert!(irr(&a[3], 0x47));
    drop(bus);
}

#[test]
fn hostile_xapic_accesses_never_panic() {
    let (_bus, a, _) = apics(2);
    for offset in 0..0x1000u64 {
        for size in [1u8, 2, 4, 8] {
            a[0].mmio_read(offset, size);
            a[0].mmio_write(offset, size, u64::MAX);
        }
    }
    for msr in 0x800..=0x8ff {
        let _ = a[1].msr_read(msr);
        let _ = a[1].msr_write(msr, u64::MAX);
    }
    // Odd widths read bytes of a register; bytes 4-15 of a slot are 0.
    let (_bus, b, _) = apics(2);
    assert_eq!(b[1].mmio_read(0x30, 4), 0x50014);
    assert_eq!(b[1].mmio_read(0x32, 1), 0x05);
    assert_eq!(b[1].mmio_read(0x30, 8), 0x50014);
    assert_eq!(b[1].mmio_read(0x34, 4), 0);
    b[1].mmio_write(0x80, 2, 0x30);
    assert_eq!(b[1].mmio_read(0x80, 4), 0, "a 16-bit write is dropped");
}

#[test]
fn init_and_sipi_reset_and_start_a_cpu() {
    let bus = EmuApicBus::new();
    let mut cpu = cpu32(&assemble(32, |a| a.nop().unwrap()));
    let apic = LocalApic::new(0, cpu.irq.clone(), &bus);
    cpu.attach_apic(apic);
    let ap_lines = Arc::new(InterruptLines::new());
    let ap = LocalApic::new(1, ap_lines, &bus);
    ap.mmio_write(0xf0, 4, 0x1ff);
    // The AP sends INIT then STARTUP 0x9a to APIC 0 (this CPU).
    ap.mmio_write(0x310, 4, 0);
    ap.mmio_write(0x300, 4, 5 << 8 | 1 << 14);
    assert!(take_pending(&mut cpu));
    assert!(cpu.s.wait_for_sipi && cpu.s.halted);
    assert_eq!(
        cpu.s.seg[crate::state::seg::CS].base + cpu.s.rip,
        0xffff_fff0
    );
    assert_eq!(cpu.s.msr.apic_base & 0xffff_f000, 0xfee0_0000);
    // INIT de-assert does nothing; the APIC, reset by INIT, is
    // software-disabled and drops fixed interrupts.
    ap.mmio_write(0x300, 4, 5 << 8 | 1 << 15);
    ap.mmio_write(0x300, 4, 0x40);
    assert!(!take_pending(&mut cpu));
    assert!(cpu.s.wait_for_sipi);
    ap.mmio_write(0x300, 4, 6 << 8 | 0x9a);
    assert!(take_pending(&mut cpu));
    assert!(!cpu.s.wait_for_sipi && !cpu.s.halted);
    let cs = cpu.s.seg[crate::state::seg::CS];
    assert_eq!((cs.selector, cs.base, cpu.s.rip), (0x9a00, 0x9a000, 0));
    // A second STARTUP is ignored.
    ap.mmio_write(0x300, 4, 6 << 8 | 0x10);
    take_pending(&mut cpu);
    assert_eq!(cpu.s.seg[crate::state::seg::CS].base, 0x9a000);
}

#[test]
fn the_cpu_reaches_its_apic_page_through_memory_and_cr8() {
    use iced_x86::code_asm::*;
    let code = assemble(32, |a| {
        a.mov(dword_ptr(0xfee0_00f0u32), 0x1ffu32).unwrap();
        a.mov(eax, dword_ptr(0xfee0_0030u32)).unwrap();
        a.mov(dword_ptr(DATA as u32), eax).unwrap();
        a.mov(dword_ptr(0xfee0_0080u32), 0x70u32).unwrap();
        a.mov(eax, dword_ptr(0xfee0_00a0u32)).unwrap();
        a.mov(dword_ptr(DATA as u32 + 4), eax).unwrap();
        a.nop().unwrap();
    });
    let end = CODE + code.len() as u64 - 1;
    let mut cpu = cpu32(&code);
    let bus = EmuApicBus::new();
    let apic = LocalApic::new(0, cpu.irq.clone(), &bus);
    cpu.attach_apic(apic.clone());
    crate::testutil::run_until(&mut cpu, end, 100);
    assert_eq!(
        cpu.machine.memory.read_u64(DATA).unwrap(),
        0x70 << 32 | 0x50014
    );
    assert_eq!(apic.tpr(), Some(7), "CR8 reads the TPR's class");
    // Relocating the page unmaps the old one.
    crate::msr::write_msr(&mut cpu, 0x1b, 0xfed0_0000 | 1 << 11).unwrap();
    assert_eq!(cpu.mmu.apic_page, 0xfed0_0000);
    assert_eq!(
        crate::msr::write_msr(&mut cpu, 0x1b, 0xfed0_0000 | 1 << 10),
        Err(crate::fault::Fault::GeneralProtection(0))
    );
}

#[test]
fn a_cpu_without_an_apic_advertises_none() {
    let cpu = cpu32(&[]);
    let r = crate::cpuid::execute(&cpu, 1, 0);
    assert_eq!(r.edx & (1 << 9), 0);
    assert_eq!(r.ecx & (1 << 21 | 1 << 24), 0);
    let mut with = cpu32(&[]);
    with.attach_apic(LocalApic::new(0, with.irq.clone(), &EmuApicBus::new()));
    let r = crate::cpuid::execute(&with, 1, 0);
    assert_ne!(r.edx & (1 << 9), 0);
    assert_eq!(r.ecx & (1 << 21 | 1 << 24), 1 << 21 | 1 << 24);
}

#[test]
fn lint0_in_nmi_mode_raises_an_nmi_on_a_rising_edge() {
    let (bus, a, _) = apics(2);
    a[1].mmio_write(0x350, 4, 4 << 8);
    assert!(!a[1].lines.nmi_pending());
    bus.set_ext_int(true);
    assert!(a[1].lines.nmi_pending());
    assert!(!a[0].lines.nmi_pending(), "the BSP's LINT0 is ExtINT");
}

#[test]
fn a_cpu_waiting_for_sipi_sleeps_until_startup_and_still_stops() {
    use alcazar_core::engine::VcpuExit;
    use alcazar_core::StopReason;
    use iced_x86::code_asm::*;
    use std::time::Duration;
    // The trampoline at 0x9a000: mark linear 0x100 (DS base 0 after INIT), then park.
    let mut a = CodeAssembler::new(16).unwrap();
    a.mov(byte_ptr(0x100), 0x5au32).unwrap();
    a.cli().unwrap();
    let mut park = a.create_label();
    a.set_label(&mut park).unwrap();
    a.hlt().unwrap();
    a.jmp(park).unwrap();
    let code = a.assemble(0).unwrap();
    let mut cpu = cpu32(&[]);
    cpu.machine.memory.write(0x9a000, &code).unwrap();
    let bus = EmuApicBus::new();
    let apic = LocalApic::new(1, cpu.irq.clone(), &bus);
    cpu.attach_apic(apic);
    assert!(cpu.enter_wait_for_sipi());
    let bsp = LocalApic::new(0, Arc::new(InterruptLines::new()), &bus);
    let machine = cpu.machine.clone();
    let runner = std::thread::spawn(move || {
        let exit = cpu.run();
        (exit, cpu)
    });
    std::thread::sleep(Duration::from_millis(30));
    assert_eq!(
        machine.memory.read_u64(0x100).unwrap() & 0xff,
        0,
        "nothing ran yet"
    );
    bsp.mmio_write(0x310, 4, 1 << 24);
    bsp.mmio_write(0x300, 4, 6 << 8 | 1 << 14 | 0x9a);
    for _ in 0..400 {
        if machine.memory.read_u64(0x100).unwrap() & 0xff == 0x5a {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    machine.control.request_stop(StopReason::UserQuit);
    let (exit, cpu) = runner.join().unwrap();
    assert_eq!(exit, VcpuExit::Stopped);
    assert_eq!(machine.memory.read_u64(0x100).unwrap() & 0xff, 0x5a);
    assert!(!cpu.s.wait_for_sipi);
}

#[test]
fn a_cpu_in_wait_for_sipi_stops_when_the_vm_stops() {
    use alcazar_core::engine::VcpuExit;
    use alcazar_core::StopReason;
    let mut cpu = cpu32(&[]);
    let bus = EmuApicBus::new();
    cpu.attach_apic(LocalApic::new(1, cpu.irq.clone(), &bus));
    cpu.enter_wait_for_sipi();
    let machine = cpu.machine.clone();
    let runner = std::thread::spawn(move || cpu.run());
    std::thread::sleep(std::time::Duration::from_millis(20));
    machine.control.request_stop(StopReason::UserQuit);
    assert_eq!(runner.join().unwrap(), VcpuExit::Stopped);
}

#[test]
fn with_if_clear_attention_stays_set_only_while_an_interrupt_waits() {
    let mut cpu = cpu32(&[]);
    let bus = EmuApicBus::new();
    let apic = LocalApic::new(0, cpu.irq.clone(), &bus);
    cpu.attach_apic(apic.clone());
    assert!(!cpu.s.flags.test(crate::flags::IF));
    assert!(cpu.irq.attention(), "connecting the APIC notifies");
    assert!(!take_pending(&mut cpu));
    assert!(
        !cpu.irq.attention(),
        "nothing waits: the run loop may link blocks again"
    );
    apic.mmio_write(0xf0, 4, 0x1ff);
    apic.receive(&Ipi::self_ipi(0x40));
    assert!(!take_pending(&mut cpu));
    assert!(cpu.irq.attention(), "0x40 waits for IF = 1");
}

/// Found by the `apic` fuzz target: a 3-byte read returned four bytes.
#[test]
fn a_read_returns_only_the_bytes_of_its_width() {
    let bus = EmuApicBus::new();
    let apic = LocalApic::new(5, Arc::new(InterruptLines::new()), &bus);
    // The ID register holds the APIC ID in its top byte.
    let full = apic.mmio_read(0x20, 4);
    assert_eq!(full, 5 << 24);
    assert_eq!(apic.mmio_read(0x20, 3), 0);
    assert_eq!(apic.mmio_read(0x20, 8), full);
    assert_eq!(apic.mmio_read(0x20, 0), 0);
}

#[test]
fn a_reset_in_place_gives_the_power_on_state_and_runs_real_mode_code() {
    use crate::state::{cr0, seg};
    // A CPU that ran in protected mode with its APIC in x2APIC mode, an
    // NMI pending and the APIC timer armed: what a guest leaves at S3.
    let mut cpu = cpu32(&[]);
    let bus = EmuApicBus::new();
    let apic = LocalApic::new(0, cpu.irq.clone(), &bus);
    cpu.attach_apic(apic.clone());
    apic.mmio_write(0xf0, 4, 0x1ff);
    apic.mmio_write(0x380, 4, 1_000_000);
    assert!(apic.set_base(0xfee0_0000 | 0x900 | 0x400, true).is_ok());
    cpu.refresh_apic_page();
    cpu.irq.raise_nmi();
    cpu.s.msr.lstar = 0x1234;
    cpu.s.msr.tsc_offset = 77;
    cpu.reset();
    assert_eq!(cpu.s.seg[seg::CS].base, 0xffff_0000);
    assert_eq!((cpu.s.seg[seg::CS].selector, cpu.s.rip), (0xf000, 0xfff0));
    assert_eq!(cpu.s.cr0, cr0::ET | cr0::CD | cr0::NW);
    assert_eq!((cpu.s.efer, cpu.s.msr.lstar), (0, 0));
    assert_eq!(cpu.s.msr.tsc_offset, 77, "the TSC keeps counting");
    assert_eq!(cpu.s.msr.apic_base, 0xfee0_0900, "xAPIC, enabled, BSP");
    assert_eq!(apic.base(), 0xfee0_0900);
    assert_eq!(apic.snapshot().svr, 0xff, "software-disabled");
    assert_eq!(apic.snapshot().timer.initial, 0, "timer stopped");
    assert!(!cpu.irq.nmi_pending() && !cpu.s.halted && !cpu.s.wait_for_sipi);
    // Then the platform points it at a real-mode waking vector.
    let code = [0xc6, 0x06, 0x00, 0x01, 0x5a, 0xf4]; // mov byte [0x100], 0x5a; hlt
    cpu.machine.memory.write(0x9a000, &code).unwrap();
    cpu.s.seg[seg::CS].selector = 0x9a00;
    cpu.s.seg[seg::CS].base = 0x9a000;
    cpu.s.rip = 0;
    cpu.step();
    assert_eq!(cpu.machine.memory.read_u64(0x100).unwrap() & 0xff, 0x5a);
}
