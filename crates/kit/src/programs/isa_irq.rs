//! `isa-irq`: an ISA interrupt (the 8254's counter 0 on IRQ 0) through
//! both of the chipset's controllers, in 64-bit mode on the bootstrap CPU.
//!
//! 1. **8259A, virtual wire.** The program initializes the master 8259A
//!    (ICW1-ICW4: vectors 0x20-0x27, 8086 mode; 8259A datasheet, "Interrupt
//!    Sequence") with only IR0 unmasked, starts counter 0 in mode 2 (rate
//!    generator, about 1 ms; 8254 datasheet) and sleeps in `sti; hlt`. It
//!    leaves the local APIC's LVT LINT0 as the firmware left it (ExtINT,
//!    unmasked: virtual-wire mode, MP specification §3.6.2.2), so each tick
//!    reaches the CPU through LINT0 and the INTA cycle; the 0x20 handler
//!    counts it and sends a non-specific EOI (OCW2 0x20).
//! 2. **IOAPIC, level-triggered.** It masks the 8259A, then points IOAPIC
//!    pin 2 (where ISA IRQ 0 arrives, per the interrupt source override)
//!    at vector 0x51, fixed, physical destination APIC 0, *level*
//!    triggered (82093AA datasheet §3.2.4). The 0x51 handler counts and
//!    writes the local APIC's EOI register; the local APIC then sends the
//!    EOI to the IOAPIC, which clears the entry's remote IRR (SDM Vol. 3A
//!    §10.8.5). Without that EOI the entry would never deliver again, so
//!    three ticks prove it arrived. This phase waits awake (`sti; pause`)
//!    rather than in HLT, so that it tests the EOI path alone: on the PVM
//!    backend of KVM a level-triggered vector that becomes pending while
//!    the vCPU sleeps in HLT after an EOI exit was seen not to wake it
//!    (see `crates/kvm/src/irqchip.rs`); phase 1 and `apic-timer` cover
//!    waking from HLT.
//!
//! A watchdog — the local APIC timer, one-shot, about 0.5 s, vector 0x60 —
//! turns a lost interrupt into a failure instead of a hang. An exception
//! fails the program too.
//!
//! Image layout (as in [`crate::idt`]): code +0x000, handlers at +0xb00,
//! +0xb40, +0xb80, data from +0xc00.

use iced_x86::code_asm::*;

use super::{finish, Built, Info};
use crate::cpu::set_stack;
use crate::idt::{emit_handlers, push_idt, Faults, Pieces, DATA, EXTRA};
use crate::image::{addr32, Asm, DataArea, Image};
use crate::uart::{bsp_only, exit, out_byte, Uart};
use crate::{debug_exit_status, Expect, FlatMode, KitError, DEFAULT_LOAD_ADDRESS, KIT_PASS};

/// Registry facts.
pub(crate) const INFO: Info = Info {
    name: "isa-irq",
    description: "PIT IRQ 0 through the 8259A (LINT0 ExtINT) then the IOAPIC (level, EOI)",
    mode: FlatMode::Long,
};

/// The xAPIC page (default base), through R14; register offsets.
const APIC: u32 = 0xfee0_0000;
const SVR: i32 = 0xf0;
const EOI: i32 = 0xb0;
const LVT_TIMER: i32 = 0x320;
const INITIAL_COUNT: i32 = 0x380;
const DIVIDE: i32 = 0x3e0;

/// The IOAPIC's index and data registers (82093AA §3.1), through R13.
const IOAPIC: u32 = 0xfec0_0000;
const IOWIN: i32 = 0x10;
/// Redirection entry of pin 2: registers 0x10 + 2 * pin (low), +1 (high).
const RTE2_LOW: u32 = 0x14;
const RTE2_HIGH: u32 = 0x15;
/// Trigger mode level (bit 15) and mask (bit 16) of a redirection entry.
const RTE_LEVEL: u32 = 1 << 15;
const RTE_MASKED: u32 = 1 << 16;

/// Vectors: the 8259A's IR0, the IOAPIC pin, the watchdog.
const PIC_VECTOR: u8 = 0x20;
const IOAPIC_VECTOR: u8 = 0x51;
const WATCHDOG_VECTOR: u8 = 0x60;
/// Watchdog: 0.5 s at the 1 GHz timer clock, divide-by-1.
const WATCHDOG_COUNT: u32 = 500_000_000;
/// Counter 0 reload: 1193 input clocks of 1.193182 MHz, about 1 ms.
const PIT_RELOAD: u32 = 1193;
/// Ticks each phase waits for.
const TICKS: i32 = 3;

/// Tick counters (dwords) and the watchdog flag.
const PIC_COUNT: u32 = 0x21000;
const IOAPIC_COUNT: u32 = 0x21004;
const TIMED_OUT: u32 = 0x21008;

/// Lines printed.
const PIC_OK: &str = "kit: pit irq 0 via 8259A and LINT0 ok";
const IOAPIC_OK: &str = "kit: pit irq 0 via IOAPIC level-triggered ok";

/// Assembles `isa-irq`.
pub(crate) fn build() -> Result<Built, KitError> {
    let load = DEFAULT_LOAD_ADDRESS;
    let mut image = Image::new(load);
    let mut data = DataArea::new(DATA);
    let idtr = push_idt(
        &mut data,
        load,
        &[
            (PIC_VECTOR, EXTRA),
            (IOAPIC_VECTOR, EXTRA + 0x40),
            (WATCHDOG_VECTOR, EXTRA + 0x80),
        ],
    )?;
    let pieces = Pieces::new(&mut data, load)?;
    let linear = |offset: usize| addr32("message", load + offset as u64);
    let pic_ok = linear(data.push_cstr(&format!("{PIC_OK}\n")))?;
    let ioapic_ok = linear(data.push_cstr(&format!("{IOAPIC_OK}\n")))?;
    let pic_lost = linear(
        data.push_cstr("kit: isa irq FAILED: no tick through the 8259A and LINT0 within 0.5 s\n"),
    )?;
    let ioapic_lost = linear(data.push_cstr(
        "kit: isa irq FAILED: IOAPIC ticks stopped (EOI not forwarded?) within 0.5 s\n",
    ))?;
    data.place_into(&mut image)?;
    emit_handlers(&mut image)?;
    image.code("8259A handler", EXTRA, 64, |a| {
        a.inc(dword_ptr(PIC_COUNT))?;
        a.push(rax)?;
        a.mov(al, 0x20u32)?;
        a.out(0x20u32, al)?;
        a.pop(rax)?;
        a.iretq()?;
        Ok(())
    })?;
    image.code("IOAPIC handler", EXTRA + 0x40, 64, |a| {
        a.inc(dword_ptr(IOAPIC_COUNT))?;
        a.push(rax)?;
        a.mov(eax, APIC)?;
        a.mov(dword_ptr(rax + EOI), 0u32)?;
        a.pop(rax)?;
        a.iretq()?;
        Ok(())
    })?;
    image.code("watchdog handler", EXTRA + 0x80, 64, |a| {
        a.mov(dword_ptr(TIMED_OUT), 1u32)?;
        a.push(rax)?;
        a.mov(eax, APIC)?;
        a.mov(dword_ptr(rax + EOI), 0u32)?;
        a.pop(rax)?;
        a.iretq()?;
        Ok(())
    })?;

    image.code(INFO.name, 0, 64, |a| {
        a.cli()?;
        a.cld()?;
        bsp_only(a)?;
        set_stack(a)?;
        let mut uart = Uart::new(a);
        let mut faults = Faults::new(a, pieces);
        Uart::init(a)?;
        faults.install(a, idtr)?;
        for at in [PIC_COUNT, IOAPIC_COUNT, TIMED_OUT] {
            a.mov(dword_ptr(at), 0u32)?;
        }
        a.mov(r14d, APIC)?;
        a.mov(r13d, IOAPIC)?;
        // Software-enable the APIC (spurious vector 0xff) for the
        // watchdog; LINT0 keeps its firmware setting.
        a.mov(dword_ptr(r14 + SVR), 0x1ffu32)?;
        a.mov(dword_ptr(r14 + DIVIDE), 0b1011u32)?;
        a.mov(dword_ptr(r14 + LVT_TIMER), u32::from(WATCHDOG_VECTOR))?;

        init_pic(a)?;
        start_pit(a)?;
        wait_for_ticks(a, &faults, PIC_COUNT, pic_lost, Wait::Halt)?;
        uart.print(a, pic_ok)?;

        // Phase 2: the 8259A masked, the IOAPIC entry level-triggered.
        out_byte(a, 0x21, 0xff)?;
        ioapic_write(a, RTE2_HIGH, 0)?;
        ioapic_write(a, RTE2_LOW, RTE_LEVEL | u32::from(IOAPIC_VECTOR))?;
        wait_for_ticks(a, &faults, IOAPIC_COUNT, ioapic_lost, Wait::Spin)?;
        ioapic_write(
            a,
            RTE2_LOW,
            RTE_MASKED | RTE_LEVEL | u32::from(IOAPIC_VECTOR),
        )?;
        a.mov(dword_ptr(r14 + INITIAL_COUNT), 0u32)?;
        uart.print(a, ioapic_ok)?;
        exit(a, KIT_PASS)?;
        faults.emit_routines(a, &uart)?;
        uart.emit_routines(a)
    })?;
    let expect = Expect {
        output: vec![PIC_OK, IOAPIC_OK],
        status: debug_exit_status(KIT_PASS),
    };
    Ok(finish(image, &INFO, expect))
}

/// The master 8259A: ICW1 (edge, cascade, ICW4 needed), ICW2 (vector
/// base 0x20), ICW3 (slave on IR2), ICW4 (8086 mode), then OCW1 masking
/// all but IR0. The slave stays masked.
fn init_pic(a: &mut CodeAssembler) -> Asm {
    for (port, value) in [(0x20, 0x11), (0x21, 0x20), (0x21, 0x04), (0x21, 0x01)] {
        out_byte(a, port, value)?;
    }
    out_byte(a, 0xa1, 0xff)?;
    out_byte(a, 0x21, 0xfe)
}

/// Counter 0, lobyte/hibyte, mode 2, binary (control word 0x34), with the
/// [`PIT_RELOAD`] count.
fn start_pit(a: &mut CodeAssembler) -> Asm {
    out_byte(a, 0x43, 0x34)?;
    out_byte(a, 0x40, PIT_RELOAD & 0xff)?;
    out_byte(a, 0x40, PIT_RELOAD >> 8)
}

/// IOAPIC register `index` = `value`, through IOREGSEL/IOWIN (R13).
fn ioapic_write(a: &mut CodeAssembler, index: u32, value: u32) -> Asm {
    a.mov(dword_ptr(r13), index)?;
    a.mov(dword_ptr(r13 + IOWIN), value)?;
    Ok(())
}

/// How [`wait_for_ticks`] waits between checks.
#[derive(Clone, Copy)]
enum Wait {
    /// `sti; hlt`: sleep until an interrupt (STI's interrupt shadow keeps
    /// a tick from slipping in before the HLT; SDM Vol. 3A §6.8.3).
    Halt,
    /// `sti; pause`: stay awake with interrupts open for one instruction.
    Spin,
}

/// Arms the watchdog, then opens interrupts (see [`Wait`]) until the
/// dword at `counter` reaches [`TICKS`]; fails with `lost` if the
/// watchdog fires first.
fn wait_for_ticks(
    a: &mut CodeAssembler,
    faults: &Faults,
    counter: u32,
    lost: u32,
    wait: Wait,
) -> Asm {
    let mut again = a.create_label();
    a.mov(dword_ptr(r14 + INITIAL_COUNT), WATCHDOG_COUNT)?;
    a.set_label(&mut again)?;
    a.sti()?;
    match wait {
        Wait::Halt => a.hlt()?,
        Wait::Spin => a.pause()?,
    }
    a.cli()?;
    a.cmp(dword_ptr(TIMED_OUT), 0)?;
    faults.fail_if(a, CodeAssembler::jne, lost)?;
    a.cmp(dword_ptr(counter), TICKS)?;
    a.jb(again)?;
    Ok(())
}
