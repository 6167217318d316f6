//! `apic-timer`: the local APIC timer in periodic mode, in 64-bit mode on
//! the bootstrap CPU (SDM Vol. 3A §10.5.4).
//!
//! The program software-enables its xAPIC (SVR at 0xfee000f0, spurious
//! vector 0xff), programs divide-by-1, an LVT timer entry in periodic mode
//! with vector 0x40 and an initial count of 1 000 000, and checks that the
//! current-count register moves down between two reads. Then it sleeps in
//! `hlt` with IF=1 between interrupts; the 0x40 handler counts the tick and
//! writes the EOI register. After [`TICKS`] ticks it stops the timer
//! (initial count 0) and reports. An exception or a spurious interrupt
//! (vector 0xff, which has no ISR bit and must not be EOI'd) fails it.
//!
//! The VMM's identity page tables map 0..4 GiB, so the APIC page at its
//! default base is reachable at its physical address.
//!
//! Image layout (as in [`crate::idt`]): code +0x000, the timer and spurious
//! handlers at +0xb00, data from +0xc00.

use iced_x86::code_asm::*;

use super::{finish, Built, Info};
use crate::cpu::set_stack;
use crate::idt::{emit_handlers, push_idt, Faults, Pieces, DATA, EXTRA};
use crate::image::{addr32, Asm, DataArea, Image};
use crate::uart::{bsp_only, exit, Uart};
use crate::{debug_exit_status, Expect, FlatMode, KitError, DEFAULT_LOAD_ADDRESS, KIT_PASS};

/// Registry facts.
pub(crate) const INFO: Info = Info {
    name: "apic-timer",
    description: "64-bit xAPIC timer, periodic: HLT between ticks, EOI, the current count moves",
    mode: FlatMode::Long,
};

/// The xAPIC page (default base, SDM Vol. 3A Table 10-1). A 64-bit
/// displacement sign-extends, so the code reaches it through a base
/// register: R14 in the main line, RAX in the handler.
const APIC: u32 = 0xfee0_0000;
/// Register offsets in the page.
const SVR: i32 = 0xf0;
const EOI: i32 = 0xb0;
const LVT_TIMER: i32 = 0x320;
const INITIAL_COUNT: i32 = 0x380;
const CURRENT_COUNT: i32 = 0x390;
const DIVIDE: i32 = 0x3e0;

/// The timer's vector.
const VECTOR: u8 = 0x40;
/// The spurious-interrupt vector.
const SPURIOUS: u8 = 0xff;
/// Ticks to count before reporting.
pub(crate) const TICKS: u32 = 10;
/// Initial count: 1 ms per period with the 1 GHz timer clock of the emu
/// engine at divide-by-1.
const PERIOD: u32 = 1_000_000;

/// Tick counter (dword).
const COUNT: u32 = 0x21000;

/// The success line.
const OK: &str = "kit: apic timer ok, 10 periodic ticks";

/// Image offset of the spurious handler.
const SPURIOUS_HANDLER: usize = EXTRA + 0x80;

/// Assembles `apic-timer`.
pub(crate) fn build() -> Result<Built, KitError> {
    let load = DEFAULT_LOAD_ADDRESS;
    let mut image = Image::new(load);
    let mut data = DataArea::new(DATA);
    let idtr = push_idt(
        &mut data,
        load,
        &[(VECTOR, EXTRA), (SPURIOUS, SPURIOUS_HANDLER)],
    )?;
    let pieces = Pieces::new(&mut data, load)?;
    let linear = |offset: usize| addr32("message", load + offset as u64);
    let ok = linear(data.push_cstr(&format!("{OK}\n")))?;
    let frozen =
        linear(data.push_cstr("kit: apic timer FAILED: the current count does not move\n"))?;
    let spurious = linear(data.push_cstr("kit: apic timer FAILED: spurious interrupt\n"))?;
    data.place_into(&mut image)?;
    emit_handlers(&mut image)?;
    image.code("timer handler", EXTRA, 64, |a| {
        a.inc(dword_ptr(COUNT))?;
        a.push(rax)?;
        a.mov(eax, APIC)?;
        a.mov(dword_ptr(rax + EOI), 0u32)?;
        a.pop(rax)?;
        a.iretq()?;
        Ok(())
    })?;
    image.code("spurious handler", SPURIOUS_HANDLER, 64, |a| {
        let mut uart = Uart::new(a);
        uart.print(a, spurious)?;
        exit(a, crate::KIT_FAIL)?;
        uart.emit_routines(a)
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
        a.mov(dword_ptr(COUNT), 0u32)?;
        a.mov(r14d, APIC)?;
        program_timer(a)?;
        check_count_moves(a, &faults, frozen)?;
        wait_for_ticks(a)?;
        // Stop the timer: an initial count of 0 disarms it.
        a.mov(dword_ptr(r14 + INITIAL_COUNT), 0u32)?;
        uart.print(a, ok)?;
        exit(a, KIT_PASS)?;
        faults.emit_routines(a, &uart)?;
        uart.emit_routines(a)
    })?;
    let expect = Expect {
        output: vec![OK],
        status: debug_exit_status(KIT_PASS),
    };
    Ok(finish(image, &INFO, expect))
}

/// With R14 = the APIC page: SVR: software enable (bit 8) with the spurious vector; DCR = 0b1011
/// (divide by 1); LVT timer: periodic (bits 18:17 = 01), unmasked, the
/// vector; then the initial count starts it.
fn program_timer(a: &mut CodeAssembler) -> Asm {
    a.mov(dword_ptr(r14 + SVR), 0x100 | u32::from(SPURIOUS))?;
    a.mov(dword_ptr(r14 + DIVIDE), 0b1011u32)?;
    a.mov(dword_ptr(r14 + LVT_TIMER), 1 << 17 | u32::from(VECTOR))?;
    a.mov(dword_ptr(r14 + INITIAL_COUNT), PERIOD)?;
    Ok(())
}

/// Two reads of the current count some time apart: both within the
/// period, the second lower (IF=0 keeps the handler away). A period is
/// 1 ms and the pause loop far shorter, but a host that deschedules the
/// vCPU between the reads may let the count reload in between: up to
/// eight attempts, each must stay within the period.
fn check_count_moves(a: &mut CodeAssembler, faults: &Faults, frozen: u32) -> Asm {
    let mut attempt = a.create_label();
    let mut spin = a.create_label();
    let mut moved = a.create_label();
    a.mov(edx, 8u32)?;
    a.set_label(&mut attempt)?;
    a.mov(r8d, dword_ptr(r14 + CURRENT_COUNT))?;
    a.mov(ecx, 200u32)?;
    a.set_label(&mut spin)?;
    a.pause()?;
    a.dec(ecx)?;
    a.jnz(spin)?;
    a.mov(r9d, dword_ptr(r14 + CURRENT_COUNT))?;
    a.cmp(r8d, PERIOD)?;
    faults.fail_if(a, CodeAssembler::ja, frozen)?;
    a.cmp(r9d, PERIOD)?;
    faults.fail_if(a, CodeAssembler::ja, frozen)?;
    a.cmp(r9d, r8d)?;
    a.jb(moved)?;
    a.dec(edx)?;
    a.jnz(attempt)?;
    faults.fail_if(a, CodeAssembler::jmp, frozen)?;
    a.set_label(&mut moved)?;
    // The label needs an instruction of its own (the next emitter starts
    // with a label too).
    a.nop()?;
    Ok(())
}

/// `sti; hlt` until the handler has counted [`TICKS`]: STI's interrupt
/// shadow keeps a tick from slipping in between the two (SDM Vol. 3A
/// §6.8.3), so the HLT always has a tick to wake it.
fn wait_for_ticks(a: &mut CodeAssembler) -> Asm {
    let mut again = a.create_label();
    a.set_label(&mut again)?;
    a.sti()?;
    a.hlt()?;
    a.cli()?;
    a.cmp(dword_ptr(COUNT), TICKS as i32)?;
    a.jb(again)?;
    Ok(())
}
