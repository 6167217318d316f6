//! `register-storm` and `register-storm-quick`: every register of every
//! device written with several values at every width, in 64-bit mode on
//! the bootstrap CPU; afterwards the program re-initializes what it needs
//! and proves the machine still works.
//!
//! 1. **Find the virtio entropy device** (as `virtio-rng`) and enable its
//!    BAR 0 (memory decoding, bus mastering): R12 = BAR 0. Remember the
//!    local APIC's ID.
//! 2. **For each value** 0, all ones, 0xaa.., 0x55.. (R9; a narrower
//!    access uses its low bytes):
//!    - **ports**: `in` then `out` of the value at byte, word and dword
//!      width on every port below [`PORTS_FULL`] (`register-storm`) or
//!      [`PORTS_QUICK`] (`register-storm-quick`, where every device of the
//!      machine lives, for the kvm engine, whose port exits cost ~6.4 µs
//!      each), except the ports in [`SKIP`], which end or reset the VM by
//!      design; a wide access overlapping a skipped port is left out, as
//!      in `port-sweep`. COM1 is not skipped: it is re-initialized below.
//!    - **MMIO**: BAR 0 put back and enabled (the last pass moved it),
//!      then a read then a write of the value at widths 1, 2, 4 and 8
//!      at every naturally aligned offset of: the populated parts of the
//!      virtio device's BAR 0 (common configuration, ISR, device
//!      configuration, notifications, MSI-X table and pending bits), the
//!      first 256 bytes of every bus-0 slot's ECAM page (this moves BARs
//!      and rewrites command registers and capabilities), the local APIC
//!      page except the ICR's low half (0x300-0x30f: an IPI with INIT
//!      delivery to self resets the CPU by design, SDM Vol. 3A §10.6.1),
//!      the IOAPIC window and the HPET page.
//! 3. **Re-initialize**: the UART (8N1, no interrupts, MCR = DTR|RTS
//!    without loopback), both 8259As (ICW1-ICW4, all masked), the local
//!    APIC (its ID back, TPR 0, software-enabled, every LVT masked but the
//!    timer).
//! 4. **Prove it works**: the APIC timer, one-shot, vector 0x40, must
//!    interrupt within a bounded wait with IF=1 (vectors 0x20-0xff all
//!    have gates: one left pending in an IRR by the storm is counted and
//!    acknowledged, not fatal); then print and exit with KIT_PASS.
//!
//! Image layout: a jump at +0, the exception machinery of [`crate::idt`],
//! data from +0xc00 (the IDT reaches vector 0xff), handlers at +0x2800,
//! main code at +0x3000.

use iced_x86::code_asm::*;

use super::hostile_virtio::RNG;
use super::virtio_rng::{config_address, find_device};
use super::{finish, Built, Info};
use crate::cpu::set_stack;
use crate::idt::{emit_handlers, push_idt, Faults, Pieces, DATA};
use crate::image::{addr32, Asm, DataArea, Image};
use crate::uart::{bsp_only, exit, out_byte, Uart};
use crate::{debug_exit_status, Expect, FlatMode, KitError, COM1, DEFAULT_LOAD_ADDRESS, KIT_PASS};

/// Registry facts of the full storm.
pub(crate) const FULL: Info = Info {
    name: "register-storm",
    description: "every port and MMIO register written with 0/ones/0x55/0xaa at every width",
    mode: FlatMode::Long,
};

/// Registry facts of the quick storm (ports below 0x1000 only).
pub(crate) const QUICK: Info = Info {
    name: "register-storm-quick",
    description: "register-storm with ports below 0x1000 only (sized for the kvm engine)",
    mode: FlatMode::Long,
};

/// Ports the full storm covers (all of them).
pub(crate) const PORTS_FULL: u32 = 0x1_0000;
/// Ports the quick storm covers.
pub(crate) const PORTS_QUICK: u32 = 0x1000;

/// Image offsets: interrupt handlers and the main code.
const HANDLERS: usize = 0x2800;
const MAIN: usize = 0x3000;

/// Inclusive port ranges never touched at any width: they end or reset
/// the VM by design.
const SKIP: [(u32, u32); 5] = [
    (0x64, 0x64),   // i8042 command: 0xfe pulses the reset line
    (0x92, 0x92),   // System Control Port A: fast reset
    (0xf4, 0xf7),   // debug-exit
    (0x600, 0x607), // ACPI PM1a event/control: power-off
    (0xcf9, 0xcf9), // Reset Control Register
];

/// The values written (a narrower access takes the low bytes).
/// 0xaa.. comes before 0x55..: the 0xaa.. pass over ECAM leaves MSI-X
/// enabled and unmasked in the control register (bits 15, 14), so the
/// 0x55.. pass storms the device with MSI-X live.
const VALUES: [u64; 4] = [0, u64::MAX, 0xaaaa_aaaa_aaaa_aaaa, 0x5555_5555_5555_5555];

/// The local APIC page and the registers the program sets again.
const APIC: u32 = 0xfee0_0000;
const APIC_ID: i32 = 0x20;
const TPR: i32 = 0x80;
const EOI: i32 = 0xb0;
const SVR: i32 = 0xf0;
const LVT_TIMER: i32 = 0x320;
const INITIAL_COUNT: i32 = 0x380;
const DIVIDE: i32 = 0x3e0;
/// LVT entries other than the timer: thermal, performance, LINT0,
/// LINT1, error.
const OTHER_LVTS: [i32; 5] = [0x330, 0x340, 0x350, 0x360, 0x370];
const LVT_MASKED: u32 = 1 << 16;

/// MMIO windows: fixed ones (base, bytes).
const FIXED_WINDOWS: [(u32, u32); 4] = [
    (APIC, 0x300),
    (APIC + 0x310, 0x1000 - 0x310),
    (0xfec0_0000, 0x100), // IOAPIC
    (0xfed0_0000, 0x400), // HPET
];
/// The virtio BAR 0's populated parts (offset, bytes), see
/// `crates/devices/src/virtio/pci.rs`.
const VIRTIO_WINDOWS: [(i32, u32); 6] = [
    (0x0000, 0x40),
    (0x1000, 0x8),
    (0x2000, 0x40),
    (0x3000, 0x10),
    (0x4000, 0x40),
    (0x5000, 0x8),
];
/// The ECAM window (bus 0: 32 slots of 32 KiB, function 0 first).
const ECAM: u32 = 0xe000_0000;
/// Bytes of each slot's configuration space stormed.
const ECAM_BYTES: u32 = 0x100;

/// Vectors: the proof timer; every other one from 0x20 is a stray.
const TIMER_VECTOR: u8 = 0x40;
const SPURIOUS: u8 = 0xff;
/// Proof timer count (1 ms at the 1 GHz timer clock).
const TIMER_COUNT: u32 = 1_000_000;
/// Bound of the wait for the proof tick.
const WAIT: u32 = 50_000_000;

/// Data: the saved APIC ID, the tick and stray counters, the device's
/// slot.
const SAVED_ID: u32 = 0x21000;
const SLOT: u32 = 0x2100c;
const TICKS: u32 = 0x21004;
const STRAYS: u32 = 0x21008;

/// The success line.
const OK: &str = "kit: register-storm: every register stormed; UART and APIC timer still work ok";

/// Assembles `register-storm`.
pub(crate) fn build_full() -> Result<Built, KitError> {
    build(&FULL, PORTS_FULL)
}

/// Assembles `register-storm-quick`.
pub(crate) fn build_quick() -> Result<Built, KitError> {
    build(&QUICK, PORTS_QUICK)
}

fn build(info: &Info, ports: u32) -> Result<Built, KitError> {
    let load = DEFAULT_LOAD_ADDRESS;
    let mut image = Image::new(load);
    let mut data = DataArea::new(DATA);
    let timer = HANDLERS;
    let stray = HANDLERS + 0x40;
    let spurious = HANDLERS + 0x80;
    let gates: Vec<(u8, usize)> = (0x20..=0xffu8)
        .map(|v| match v {
            TIMER_VECTOR => (v, timer),
            SPURIOUS => (v, spurious),
            _ => (v, stray),
        })
        .collect();
    let idtr = push_idt(&mut data, load, &gates)?;
    let pieces = Pieces::new(&mut data, load)?;
    let mut text = |s: &str| addr32("message", load + data.push_cstr(s) as u64);
    let ok = text(&format!("{OK}\n"))?;
    let no_device = text("kit: register-storm FAILED: no 1af4:1044 function on bus 0")?;
    let no_tick = text("kit: register-storm FAILED: the APIC timer no longer interrupts")?;
    data.place_into(&mut image)?;
    emit_handlers(&mut image)?;
    for (offset, counter) in [(timer, TICKS), (stray, STRAYS)] {
        image.code("local APIC handler", offset, 64, |a| {
            a.inc(dword_ptr(counter))?;
            a.push(rax)?;
            a.mov(eax, APIC)?;
            a.mov(dword_ptr(rax + EOI), 0u32)?;
            a.pop(rax)?;
            a.iretq()?;
            Ok(())
        })?;
    }
    image.code("spurious handler", spurious, 64, |a| {
        a.iretq()?;
        Ok(())
    })?;
    let main = image.linear(MAIN);
    image.code("register-storm entry", 0, 64, |a| {
        a.jmp(main)?;
        Ok(())
    })?;

    image.code(info.name, MAIN, 64, |a| {
        a.cli()?;
        a.cld()?;
        bsp_only(a)?;
        set_stack(a)?;
        let mut uart = Uart::new(a);
        let mut faults = Faults::new(a, pieces);
        let mut port_storm = a.create_label();
        let mut mmio_storm = a.create_label();
        let mut window = a.create_label();
        Uart::init(a)?;
        faults.install(a, idtr)?;
        a.mov(dword_ptr(TICKS), 0u32)?;
        a.mov(dword_ptr(STRAYS), 0u32)?;
        a.mov(r14d, APIC)?;
        a.mov(eax, dword_ptr(r14 + APIC_ID))?;
        a.mov(dword_ptr(SAVED_ID), eax)?;
        find_device(a, RNG.id)?;
        a.cmp(ebx, 32)?;
        faults.fail_if(a, CodeAssembler::jae, no_device)?;
        config_address(a, 0x10)?;
        a.mov(dx, 0xcfcu32)?;
        a.in_(eax, dx)?;
        a.and(eax, 0xffff_fff0u32)?;
        a.mov(r12d, eax)?;
        a.mov(dword_ptr(SLOT), ebx)?;

        for value in VALUES {
            a.mov(r9, value)?;
            a.call(port_storm)?;
            a.call(mmio_storm)?;
        }

        reinit(a)?;
        prove_timer(a, &faults, no_tick)?;
        uart.print(a, ok)?;
        exit(a, KIT_PASS)?;

        a.set_label(&mut port_storm)?;
        emit_port_storm(a, ports)?;
        a.set_label(&mut mmio_storm)?;
        emit_mmio_storm(a, window)?;
        a.set_label(&mut window)?;
        emit_window(a)?;
        faults.emit_routines(a, &uart)?;
        uart.emit_routines(a)
    })?;
    let expect = Expect {
        output: vec![OK],
        status: debug_exit_status(KIT_PASS),
    };
    let mut built = finish(image, info, expect);
    built.program.devices = vec!["virtio-rng"];
    Ok(built)
}

/// The port routine: for every port below `ports` (EDX), `in` then `out`
/// of R9 at dword, word and byte width, honouring [`SKIP`]. The three
/// access blocks fall through into each other, so jumping to a later one
/// drops the wider widths. Clobbers EAX, EDX.
fn emit_port_storm(a: &mut CodeAssembler, ports: u32) -> Asm {
    let mut top = a.create_label();
    let mut dword = a.create_label();
    let mut word = a.create_label();
    let mut byte = a.create_label();
    let mut next = a.create_label();
    let highest_skip = SKIP.iter().map(|&(_, hi)| hi).max().unwrap_or(0);
    a.xor(edx, edx)?;
    a.set_label(&mut top)?;
    a.cmp(edx, highest_skip)?;
    a.ja(dword)?;
    // Narrowest first: the port itself; a word at p overlaps [lo, hi] iff
    // p is in [lo-1, hi]; a dword iff p is in [lo-3, hi].
    for (widen, target) in [(0, next), (1, byte), (3, word)] {
        for &(lo, hi) in &SKIP {
            a.lea(eax, edx - lo.saturating_sub(widen))?;
            a.cmp(eax, hi - lo.saturating_sub(widen))?;
            a.jbe(target)?;
        }
    }
    a.set_label(&mut dword)?;
    a.in_(eax, dx)?;
    a.mov(rax, r9)?;
    a.out(dx, eax)?;
    a.set_label(&mut word)?;
    a.in_(ax, dx)?;
    a.mov(rax, r9)?;
    a.out(dx, ax)?;
    a.set_label(&mut byte)?;
    a.in_(al, dx)?;
    a.mov(rax, r9)?;
    a.out(dx, al)?;
    a.set_label(&mut next)?;
    a.inc(edx)?;
    a.cmp(edx, ports)?;
    a.jb(top)?;
    a.ret()?;
    Ok(())
}

/// The MMIO routine: put the virtio BAR 0 back where it was and enable
/// it (the previous pass's ECAM storm moved it), then every window
/// through `window` (RBX = base, ECX = bytes). Clobbers RAX, RBX, RCX,
/// RDX, RSI, R10.
fn emit_mmio_storm(a: &mut CodeAssembler, window: CodeLabel) -> Asm {
    a.mov(ebx, dword_ptr(SLOT))?;
    config_address(a, 0x10)?;
    a.mov(dx, 0xcfcu32)?;
    a.mov(eax, r12d)?;
    a.out(dx, eax)?;
    config_address(a, 0x04)?;
    a.mov(dx, 0xcfcu32)?;
    a.mov(eax, 0x6u32)?;
    a.out(dx, eax)?;
    for (offset, len) in VIRTIO_WINDOWS {
        a.lea(rbx, ptr(r12 + offset))?;
        a.mov(ecx, len)?;
        a.call(window)?;
    }
    let mut slot = a.create_label();
    a.xor(r10d, r10d)?;
    a.set_label(&mut slot)?;
    a.mov(ebx, r10d)?;
    a.shl(ebx, 15)?;
    a.or(ebx, ECAM)?;
    a.mov(ecx, ECAM_BYTES)?;
    a.call(window)?;
    a.inc(r10d)?;
    a.cmp(r10d, 32)?;
    a.jb(slot)?;
    for (base, len) in FIXED_WINDOWS {
        a.mov(ebx, base)?;
        a.mov(ecx, len)?;
        a.call(window)?;
    }
    a.ret()?;
    Ok(())
}

/// The window routine: for widths 1, 2, 4, 8, at every aligned offset
/// below ECX, read then write R9's low bytes at RBX + offset. Clobbers
/// RAX, RSI.
fn emit_window(a: &mut CodeAssembler) -> Asm {
    for width in [1u32, 2, 4, 8] {
        let mut again = a.create_label();
        a.xor(esi, esi)?;
        a.set_label(&mut again)?;
        let at = rbx + rsi;
        match width {
            1 => {
                a.mov(al, byte_ptr(at))?;
                a.mov(byte_ptr(at), r9b)?;
            }
            2 => {
                a.mov(ax, word_ptr(at))?;
                a.mov(word_ptr(at), r9w)?;
            }
            4 => {
                a.mov(eax, dword_ptr(at))?;
                a.mov(dword_ptr(at), r9d)?;
            }
            _ => {
                a.mov(rax, qword_ptr(at))?;
                a.mov(qword_ptr(at), r9)?;
            }
        }
        a.add(esi, width)?;
        a.cmp(esi, ecx)?;
        a.jb(again)?;
    }
    a.ret()?;
    Ok(())
}

/// Step 3: the UART, both 8259As and the local APIC set up again.
fn reinit(a: &mut CodeAssembler) -> Asm {
    Uart::init(a)?;
    out_byte(a, COM1 + 2, 0)?; // FCR: FIFOs off
    out_byte(a, COM1 + 4, 0x03)?; // MCR: DTR | RTS, loopback off
                                  // Master (vectors 0x20-0x27, slave on IR2) and slave (0x28-0x2f,
                                  // cascade identity 2), 8086 mode, then everything masked.
    for (port, value) in [
        (0x20, 0x11),
        (0x21, 0x20),
        (0x21, 0x04),
        (0x21, 0x01),
        (0xa0, 0x11),
        (0xa1, 0x28),
        (0xa1, 0x02),
        (0xa1, 0x01),
        (0x21, 0xff),
        (0xa1, 0xff),
    ] {
        out_byte(a, port, value)?;
    }
    a.mov(eax, dword_ptr(SAVED_ID))?;
    a.mov(dword_ptr(r14 + APIC_ID), eax)?;
    a.mov(dword_ptr(r14 + TPR), 0u32)?;
    a.mov(dword_ptr(r14 + SVR), 0x100 | u32::from(SPURIOUS))?;
    for lvt in OTHER_LVTS {
        a.mov(dword_ptr(r14 + lvt), LVT_MASKED)?;
    }
    a.mov(dword_ptr(r14 + DIVIDE), 0b1011u32)?;
    a.mov(dword_ptr(r14 + LVT_TIMER), u32::from(TIMER_VECTOR))?;
    Ok(())
}

/// Step 4: start the one-shot timer and wait with IF=1 (see `irq-storm`
/// on why IF stays open) until its handler counted a tick; fail with
/// `no_tick` after [`WAIT`] polls.
fn prove_timer(a: &mut CodeAssembler, faults: &Faults, no_tick: u32) -> Asm {
    let mut again = a.create_label();
    let mut ticked = a.create_label();
    a.mov(ecx, WAIT)?;
    a.mov(dword_ptr(r14 + INITIAL_COUNT), TIMER_COUNT)?;
    a.sti()?;
    a.set_label(&mut again)?;
    a.cmp(dword_ptr(TICKS), 0)?;
    a.jne(ticked)?;
    a.pause()?;
    a.dec(ecx)?;
    a.jnz(again)?;
    a.cli()?;
    faults.fail_if(a, CodeAssembler::jmp, no_tick)?;
    a.set_label(&mut ticked)?;
    a.cli()?;
    Ok(())
}
