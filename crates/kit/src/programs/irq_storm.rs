//! `irq-storm`: interrupt storms against the VMM's interrupt controllers,
//! in 64-bit mode on the bootstrap CPU. The VMM must survive them, keep
//! delivering, and not queue work without bound: a pending interrupt is
//! one bit in an IRR (the local APIC's, SDM Vol. 3A §10.8.4; the 8259A's),
//! so repeated requests of one vector coalesce.
//!
//! 1. **Self-IPIs with IF=0.** The program software-enables its xAPIC and
//!    writes the ICR [`IPIS`] times with "self" shorthand, fixed, vector
//!    0x50 (SDM §10.6.1). With interrupts off nothing may arrive; after
//!    opening them for a while exactly one must (the IRR holds one bit
//!    per vector).
//! 2. **Self-IPIs with IF=1.** The same storm with interrupts open: the
//!    0x50 handler counts and writes EOI; the count must be between 1 and
//!    [`IPIS`].
//! 3. **The 8254 at its fastest useful rate through the 8259A.** Counter 0
//!    in mode 2 with a count of 2 (about 597 kHz; a count of 1 is illegal
//!    in mode 2, 8254 datasheet), IRQ 0 unmasked at the master 8259A
//!    (vectors 0x20-0x27, virtual wire through LINT0 as in `isa-irq`).
//!    The 0x20 handler counts and sends EOI. Once [`TICKS`] ticks arrived,
//!    the program masks IR0, opens interrupts for a while and checks that
//!    at most one more tick arrived (nothing queued behind the mask).
//! 4. **The same storm through the IOAPIC**: pin 2 (ISA IRQ 0 per the
//!    interrupt source override) edge-triggered to vector 0x51, physical
//!    destination APIC 0; the handler counts and writes the local APIC's
//!    EOI. [`TICKS`] ticks, then the pin is masked and at most one more
//!    may arrive.
//! 5. **A virtio MSI-X vector fired repeatedly.** The program enables
//!    MSI-X on the virtio entropy device (capability walk, table entry 0
//!    = this CPU, vector 0x52) and makes the device send [`MSIS`]
//!    configuration-change messages (each round: reset, vector 0 as
//!    `config_msix_vector`, DRIVER_OK without FEATURES_OK, which the
//!    transport refuses with DEVICE_NEEDS_RESET and a configuration
//!    interrupt, virtio 1.2 §2.1.2). With IF=0 they must arrive as exactly
//!    one; with IF=1 at least one and at most [`MSIS`].
//! 6. Stop the counter (mode 0 control word: OUT goes low and stays), mask
//!    the watchdog, print and exit with KIT_PASS.
//!
//! A watchdog — the local APIC timer, one-shot, about 2 s, vector 0x60 —
//! turns a stalled storm into a failure. The 8259A's spurious IRQ 7
//! (vector 0x27, raised when a request disappears before the INTA cycle)
//! and the APIC's spurious vector 0xff are counted and ignored. Any
//! exception fails the program.
//!
//! Image layout: a jump at +0, the exception machinery of [`crate::idt`],
//! data from +0xc00 (the IDT reaches vector 0xff), interrupt handlers from +0x2800, main code at
//! +0x3000.

use iced_x86::code_asm::*;

use super::hostile_virtio::RNG;
use super::virtio_rng::{config_address, find_device};
use super::{finish, Built, Info};
use crate::cpu::set_stack;
use crate::idt::{emit_handlers, push_idt, Faults, Pieces, DATA};
use crate::image::{addr32, Asm, DataArea, Image};
use crate::uart::{bsp_only, exit, out_byte, Uart};
use crate::{debug_exit_status, Expect, FlatMode, KitError, DEFAULT_LOAD_ADDRESS, KIT_PASS};

/// Registry facts.
pub(crate) const INFO: Info = Info {
    name: "irq-storm",
    description:
        "interrupt storms: self-IPIs with IF=0/1, the 8254 at ~597 kHz via 8259A and IOAPIC",
    mode: FlatMode::Long,
};

/// Image offsets: handlers (0x40 bytes each) and the main code.
const HANDLERS: usize = 0x2800;
const MAIN: usize = 0x3000;

/// The xAPIC page (default base), through R14; register offsets.
const APIC: u32 = 0xfee0_0000;
const SVR: i32 = 0xf0;
const EOI: i32 = 0xb0;
const ICR_LOW: i32 = 0x300;
const ICR_HIGH: i32 = 0x310;
const LVT_TIMER: i32 = 0x320;
const INITIAL_COUNT: i32 = 0x380;
const DIVIDE: i32 = 0x3e0;
/// ICR: destination shorthand "self" (bits 19:18 = 01), fixed, edge.
const ICR_SELF: u32 = 1 << 18;
/// LVT mask bit.
const LVT_MASKED: u32 = 1 << 16;

/// The IOAPIC's index and data registers, through R13.
const IOAPIC: u32 = 0xfec0_0000;
const IOWIN: i32 = 0x10;
/// Redirection entry of pin 2 (low, high dwords).
const RTE2_LOW: u32 = 0x14;
const RTE2_HIGH: u32 = 0x15;
const RTE_MASKED: u32 = 1 << 16;

/// Vectors.
const IPI_VECTOR: u8 = 0x50;
const PIC_VECTOR: u8 = 0x20;
const PIC_SPURIOUS: u8 = 0x27;
const IOAPIC_VECTOR: u8 = 0x51;
const MSI_VECTOR: u8 = 0x52;
const WATCHDOG_VECTOR: u8 = 0x60;
const APIC_SPURIOUS: u8 = 0xff;

/// Self-IPIs per storm.
pub(crate) const IPIS: u32 = 2000;
/// Timer ticks each 8254 storm waits for.
pub(crate) const TICKS: u32 = 1000;
/// Counter 0's count: the fastest legal rate in mode 2.
const PIT_COUNT: u32 = 2;
/// Watchdog: about 2 s at the 1 GHz timer clock, divide-by-1.
const WATCHDOG_COUNT: u32 = 2_000_000_000;
/// Pause iterations with IF=1 after masking a source.
const SETTLE: u32 = 20_000;

/// Counters (dwords) and the watchdog flag.
const IPI_COUNT: u32 = 0x21000;
const PIC_COUNT: u32 = 0x21004;
const IOAPIC_COUNT: u32 = 0x21008;
const TIMED_OUT: u32 = 0x2100c;
const SPURIOUS_COUNT: u32 = 0x21010;
const MSI_COUNT: u32 = 0x21014;

/// MSI-X messages per storm.
pub(crate) const MSIS: u32 = 200;
/// The virtio common configuration's `config_msix_vector` and
/// `device_status` (virtio 1.2 §4.1.4.3), and the MSI-X table in BAR 0.
const CONFIG_MSIX_VECTOR: i32 = 0x10;
const DEVICE_STATUS: i32 = 0x14;
const MSIX_TABLE: i32 = 0x4000;
/// `DRIVER_OK` alone: without FEATURES_OK the transport refuses it, sets
/// DEVICE_NEEDS_RESET and signals a configuration change (§2.1.2).
const DRIVER_OK: u32 = 4;
/// The MSI-X capability ID (PCI 3.0 §6.8.2).
const MSIX_CAP_ID: u32 = 0x11;

/// Lines printed.
const IF0_OK: &str = "kit: irq-storm: 2000 self-IPIs with IF=0 coalesced into one ok";
const IF1_OK: &str = "kit: irq-storm: 2000 self-IPIs with IF=1 delivered and bounded ok";
const PIC_OK: &str = "kit: irq-storm: 1000 8254 ticks via the 8259A, none after the mask ok";
const IOAPIC_OK: &str = "kit: irq-storm: 1000 8254 ticks via the IOAPIC, none after the mask ok";
const MSI_OK: &str = "kit: irq-storm: 200 virtio MSI-X messages with IF=0 then IF=1 ok";
const DONE: &str = "kit: irq-storm: every source masked, the VMM still runs ok";

/// Linear addresses of the failure messages.
struct Failures {
    if0_early: u32,
    if0_count: u32,
    if1_count: u32,
    pic_lost: u32,
    ioapic_lost: u32,
    after_mask: u32,
    no_device: u32,
    no_msix: u32,
    msi_count: u32,
}

/// Assembles `irq-storm`.
pub(crate) fn build() -> Result<Built, KitError> {
    let load = DEFAULT_LOAD_ADDRESS;
    let mut image = Image::new(load);
    let mut data = DataArea::new(DATA);
    let handler = |i: usize| HANDLERS + 0x40 * i;
    let idtr = push_idt(
        &mut data,
        load,
        &[
            (PIC_VECTOR, handler(0)),
            (PIC_SPURIOUS, handler(1)),
            (IPI_VECTOR, handler(2)),
            (IOAPIC_VECTOR, handler(3)),
            (WATCHDOG_VECTOR, handler(4)),
            (MSI_VECTOR, handler(5)),
            (APIC_SPURIOUS, handler(1)),
        ],
    )?;
    let pieces = Pieces::new(&mut data, load)?;
    let mut text = |s: &str| addr32("message", load + data.push_cstr(s) as u64);
    let ok: [u32; 6] = [
        text(&format!("{IF0_OK}\n"))?,
        text(&format!("{IF1_OK}\n"))?,
        text(&format!("{PIC_OK}\n"))?,
        text(&format!("{IOAPIC_OK}\n"))?,
        text(&format!("{MSI_OK}\n"))?,
        text(&format!("{DONE}\n"))?,
    ];
    let failures = Failures {
        if0_early: text("kit: irq-storm FAILED: a self-IPI arrived with IF=0")?,
        if0_count: text(
            "kit: irq-storm FAILED: self-IPIs sent with IF=0 did not arrive as exactly one",
        )?,
        if1_count: text(
            "kit: irq-storm FAILED: self-IPIs with IF=1: none, or more than were sent",
        )?,
        pic_lost: text("kit: irq-storm FAILED: 8254 ticks via the 8259A stalled (watchdog)")?,
        ioapic_lost: text("kit: irq-storm FAILED: 8254 ticks via the IOAPIC stalled (watchdog)")?,
        after_mask: text("kit: irq-storm FAILED: more than one tick arrived after the mask")?,
        no_device: text("kit: irq-storm FAILED: no 1af4:1044 function on bus 0")?,
        no_msix: text("kit: irq-storm FAILED: the virtio function has no MSI-X capability")?,
        msi_count: text(
            "kit: irq-storm FAILED: MSI-X storm: not exactly one with IF=0, or none / too many with IF=1",
        )?,
    };
    data.place_into(&mut image)?;
    emit_handlers(&mut image)?;
    emit_irq_handlers(&mut image, handler)?;
    let main = image.linear(MAIN);
    image.code("irq-storm entry", 0, 64, |a| {
        a.jmp(main)?;
        Ok(())
    })?;

    image.code(INFO.name, MAIN, 64, |a| {
        a.cli()?;
        a.cld()?;
        bsp_only(a)?;
        set_stack(a)?;
        let mut uart = Uart::new(a);
        let mut faults = Faults::new(a, pieces);
        Uart::init(a)?;
        faults.install(a, idtr)?;
        for at in [
            IPI_COUNT,
            PIC_COUNT,
            IOAPIC_COUNT,
            TIMED_OUT,
            SPURIOUS_COUNT,
        ] {
            a.mov(dword_ptr(at), 0u32)?;
        }
        a.mov(r14d, APIC)?;
        a.mov(r13d, IOAPIC)?;
        a.mov(dword_ptr(r14 + SVR), 0x100 | u32::from(APIC_SPURIOUS))?;
        a.mov(dword_ptr(r14 + DIVIDE), 0b1011u32)?;
        a.mov(dword_ptr(r14 + LVT_TIMER), u32::from(WATCHDOG_VECTOR))?;
        a.mov(dword_ptr(r14 + ICR_HIGH), 0u32)?;

        // 1. IF=0: the storm coalesces into one pending vector.
        self_ipis(a)?;
        a.cmp(dword_ptr(IPI_COUNT), 0)?;
        faults.fail_if(a, CodeAssembler::jne, failures.if0_early)?;
        open_for_a_while(a)?;
        a.cmp(dword_ptr(IPI_COUNT), 1)?;
        faults.fail_if(a, CodeAssembler::jne, failures.if0_count)?;
        uart.print(a, ok[0])?;

        // 2. IF=1: delivered, at most one per IPI.
        a.mov(dword_ptr(IPI_COUNT), 0u32)?;
        a.sti()?;
        self_ipis(a)?;
        open_for_a_while(a)?;
        a.cmp(dword_ptr(IPI_COUNT), 0)?;
        faults.fail_if(a, CodeAssembler::je, failures.if1_count)?;
        a.cmp(dword_ptr(IPI_COUNT), IPIS as i32)?;
        faults.fail_if(a, CodeAssembler::ja, failures.if1_count)?;
        uart.print(a, ok[1])?;

        // 3. The 8254 through the 8259A.
        init_pic(a)?;
        start_pit(a)?;
        storm(a, &faults, PIC_COUNT, failures.pic_lost)?;
        out_byte(a, 0x21, 0xff)?;
        settle(a, &faults, PIC_COUNT, failures.after_mask)?;
        uart.print(a, ok[2])?;

        // 4. The 8254 through the IOAPIC, edge-triggered.
        ioapic_write(a, RTE2_HIGH, 0)?;
        ioapic_write(a, RTE2_LOW, u32::from(IOAPIC_VECTOR))?;
        storm(a, &faults, IOAPIC_COUNT, failures.ioapic_lost)?;
        ioapic_write(a, RTE2_LOW, RTE_MASKED | u32::from(IOAPIC_VECTOR))?;
        settle(a, &faults, IOAPIC_COUNT, failures.after_mask)?;
        uart.print(a, ok[3])?;

        // 5. A virtio MSI-X vector fired repeatedly.
        msix_setup(a, &faults, &failures)?;
        msi_storm(a)?;
        a.cmp(dword_ptr(MSI_COUNT), 0)?;
        faults.fail_if(a, CodeAssembler::jne, failures.msi_count)?;
        open_for_a_while(a)?;
        a.cmp(dword_ptr(MSI_COUNT), 1)?;
        faults.fail_if(a, CodeAssembler::jne, failures.msi_count)?;
        a.mov(dword_ptr(MSI_COUNT), 0u32)?;
        a.sti()?;
        msi_storm(a)?;
        open_for_a_while(a)?;
        a.cmp(dword_ptr(MSI_COUNT), 0)?;
        faults.fail_if(a, CodeAssembler::je, failures.msi_count)?;
        a.cmp(dword_ptr(MSI_COUNT), MSIS as i32)?;
        faults.fail_if(a, CodeAssembler::ja, failures.msi_count)?;
        // Reset the device: its vectors go back to NO_VECTOR.
        a.mov(byte_ptr(r12 + DEVICE_STATUS), 0u32)?;
        uart.print(a, ok[4])?;

        // 6. Everything off.
        out_byte(a, 0x43, 0x30)?;
        a.mov(dword_ptr(r14 + INITIAL_COUNT), 0u32)?;
        a.mov(
            dword_ptr(r14 + LVT_TIMER),
            LVT_MASKED | u32::from(WATCHDOG_VECTOR),
        )?;
        uart.print(a, ok[5])?;
        exit(a, KIT_PASS)?;
        faults.emit_routines(a, &uart)?;
        uart.emit_routines(a)
    })?;
    let expect = Expect {
        output: vec![IF0_OK, IF1_OK, PIC_OK, IOAPIC_OK, MSI_OK, DONE],
        status: debug_exit_status(KIT_PASS),
    };
    let mut built = finish(image, &INFO, expect);
    built.program.devices = vec!["virtio-rng"];
    Ok(built)
}

/// The interrupt handlers, one 0x40-byte slot each: 8259A IR0 (count,
/// non-specific EOI), spurious (count only: a spurious vector has no ISR
/// bit to clear), self-IPI and IOAPIC (count, local APIC EOI), watchdog
/// (flag, EOI).
fn emit_irq_handlers(image: &mut Image, handler: impl Fn(usize) -> usize) -> Asm {
    image.code("8259A handler", handler(0), 64, |a| {
        a.inc(dword_ptr(PIC_COUNT))?;
        a.push(rax)?;
        a.mov(al, 0x20u32)?;
        a.out(0x20u32, al)?;
        a.pop(rax)?;
        a.iretq()?;
        Ok(())
    })?;
    image.code("spurious handler", handler(1), 64, |a| {
        a.inc(dword_ptr(SPURIOUS_COUNT))?;
        a.iretq()?;
        Ok(())
    })?;
    for (slot, counter) in [
        (2, IPI_COUNT),
        (3, IOAPIC_COUNT),
        (4, TIMED_OUT),
        (5, MSI_COUNT),
    ] {
        image.code("local APIC handler", handler(slot), 64, |a| {
            a.inc(dword_ptr(counter))?;
            a.push(rax)?;
            a.mov(eax, APIC)?;
            a.mov(dword_ptr(rax + EOI), 0u32)?;
            a.pop(rax)?;
            a.iretq()?;
            Ok(())
        })?;
    }
    Ok(())
}

/// Step 5's set-up: find the virtio entropy device (R12 = its BAR 0,
/// memory decoding on), walk its capability list (PCI 3.0 §6.7) to the
/// MSI-X capability and set MSI-X Enable in its message control, then
/// point table entry 0 at this CPU (address 0xfee00000, physical
/// destination 0), fixed delivery of [`MSI_VECTOR`], unmasked.
/// Clobbers RAX, RBX, RCX, RDX.
fn msix_setup(a: &mut CodeAssembler, faults: &Faults, failures: &Failures) -> Asm {
    let mut walk = a.create_label();
    let mut found = a.create_label();
    find_device(a, RNG.id)?;
    a.cmp(ebx, 32)?;
    faults.fail_if(a, CodeAssembler::jae, failures.no_device)?;
    config_address(a, 0x10)?;
    a.mov(dx, 0xcfcu32)?;
    a.in_(eax, dx)?;
    a.and(eax, 0xffff_fff0u32)?;
    a.mov(r12d, eax)?;
    config_address(a, 0x04)?;
    a.mov(dx, 0xcfcu32)?;
    a.mov(eax, 0x6u32)?;
    a.out(dx, eax)?;
    // ECX = the capabilities pointer (register 0x34), then each `next`.
    config_address(a, 0x34)?;
    a.mov(dx, 0xcfcu32)?;
    a.in_(eax, dx)?;
    a.movzx(ecx, al)?;
    a.set_label(&mut walk)?;
    a.and(ecx, 0xfc)?;
    faults.fail_if(a, CodeAssembler::jz, failures.no_msix)?;
    config_address_at_ecx(a)?;
    a.in_(eax, dx)?;
    a.cmp(al, MSIX_CAP_ID)?;
    a.je(found)?;
    a.movzx(ecx, ah)?;
    a.jmp(walk)?;
    a.set_label(&mut found)?;
    // Message control is the capability dword's upper half: bit 31 of
    // the dword is MSI-X Enable (the ID and next bytes are read-only).
    a.or(eax, 0x8000_0000u32)?;
    a.out(dx, eax)?;
    a.mov(dword_ptr(r12 + MSIX_TABLE), 0xfee0_0000u32)?;
    a.mov(dword_ptr(r12 + MSIX_TABLE + 4), 0u32)?;
    a.mov(dword_ptr(r12 + MSIX_TABLE + 8), u32::from(MSI_VECTOR))?;
    a.mov(dword_ptr(r12 + MSIX_TABLE + 12), 0u32)?;
    Ok(())
}

/// CONFIG_ADDRESS = enable | slot EBX << 11 | register ECX; leaves DX =
/// CONFIG_DATA. Clobbers EAX.
fn config_address_at_ecx(a: &mut CodeAssembler) -> Asm {
    a.mov(eax, ebx)?;
    a.shl(eax, 11)?;
    a.or(eax, ecx)?;
    a.or(eax, 0x8000_0000u32)?;
    a.mov(dx, 0xcf8u32)?;
    a.out(dx, eax)?;
    a.mov(dx, 0xcfcu32)?;
    Ok(())
}

/// [`MSIS`] configuration-change messages from the virtio device: each
/// round resets it, points `config_msix_vector` at table entry 0 and
/// sets DRIVER_OK alone, which the transport refuses with
/// DEVICE_NEEDS_RESET and a configuration-change interrupt. Clobbers
/// ECX.
fn msi_storm(a: &mut CodeAssembler) -> Asm {
    let mut again = a.create_label();
    a.mov(ecx, MSIS)?;
    a.set_label(&mut again)?;
    a.mov(byte_ptr(r12 + DEVICE_STATUS), 0u32)?;
    a.mov(word_ptr(r12 + CONFIG_MSIX_VECTOR), 0u32)?;
    a.mov(byte_ptr(r12 + DEVICE_STATUS), DRIVER_OK)?;
    a.dec(ecx)?;
    a.jnz(again)?;
    Ok(())
}

/// [`IPIS`] writes of the ICR: self, fixed, [`IPI_VECTOR`]. Clobbers ECX.
fn self_ipis(a: &mut CodeAssembler) -> Asm {
    let mut again = a.create_label();
    a.mov(ecx, IPIS)?;
    a.set_label(&mut again)?;
    a.mov(dword_ptr(r14 + ICR_LOW), ICR_SELF | u32::from(IPI_VECTOR))?;
    a.dec(ecx)?;
    a.jnz(again)?;
    Ok(())
}

/// The master 8259A (as in `isa-irq`): ICW1-ICW4 with vectors 0x20-0x27,
/// only IR0 unmasked; the slave masked.
fn init_pic(a: &mut CodeAssembler) -> Asm {
    for (port, value) in [(0x20, 0x11), (0x21, 0x20), (0x21, 0x04), (0x21, 0x01)] {
        out_byte(a, port, value)?;
    }
    out_byte(a, 0xa1, 0xff)?;
    out_byte(a, 0x21, 0xfe)
}

/// Counter 0, lobyte/hibyte, mode 2 (control word 0x34), count
/// [`PIT_COUNT`].
fn start_pit(a: &mut CodeAssembler) -> Asm {
    out_byte(a, 0x43, 0x34)?;
    out_byte(a, 0x40, PIT_COUNT)?;
    out_byte(a, 0x40, 0)
}

/// IOAPIC register `index` = `value` (R13 = the IOAPIC).
fn ioapic_write(a: &mut CodeAssembler, index: u32, value: u32) -> Asm {
    a.mov(dword_ptr(r13), index)?;
    a.mov(dword_ptr(r13 + IOWIN), value)?;
    Ok(())
}

/// Arms the watchdog, then keeps interrupts open until the dword at
/// `counter` reaches [`TICKS`]; fails with `lost` if the watchdog fires
/// first. Disarms the watchdog.
///
/// IF stays 1 for the whole wait: on the PVM backend of KVM, an
/// interrupt signalled (`KVM_SIGNAL_MSI`) while the emulated ring-0 code
/// had IF=0 was seen not to be injected when a later `sti` opened a
/// one-instruction window, so a `sti; pause; cli` loop starved.
fn storm(a: &mut CodeAssembler, faults: &Faults, counter: u32, lost: u32) -> Asm {
    let mut again = a.create_label();
    let mut timed_out = a.create_label();
    let mut done = a.create_label();
    a.mov(dword_ptr(r14 + INITIAL_COUNT), WATCHDOG_COUNT)?;
    a.sti()?;
    a.set_label(&mut again)?;
    a.pause()?;
    a.cmp(dword_ptr(TIMED_OUT), 0)?;
    a.jne(timed_out)?;
    a.cmp(dword_ptr(counter), TICKS as i32)?;
    a.jb(again)?;
    a.cli()?;
    a.jmp(done)?;
    a.set_label(&mut timed_out)?;
    a.cli()?;
    faults.fail_if(a, CodeAssembler::jmp, lost)?;
    a.set_label(&mut done)?;
    a.mov(dword_ptr(r14 + INITIAL_COUNT), 0u32)?;
    Ok(())
}

/// `sti`, [`SETTLE`] pauses, `cli`: time for anything pending to arrive
/// (under kvm an interrupt pending while IF=0 is injected only after an
/// interrupt-window exit, not right after STI's shadow). Clobbers ECX.
fn open_for_a_while(a: &mut CodeAssembler) -> Asm {
    let mut spin = a.create_label();
    a.mov(ecx, SETTLE)?;
    a.sti()?;
    a.set_label(&mut spin)?;
    a.pause()?;
    a.dec(ecx)?;
    a.jnz(spin)?;
    a.cli()?;
    Ok(())
}

/// With the source just masked: remember the count, keep interrupts open
/// for a while, and fail with `why` if more than one more tick (one
/// already on its way to the CPU) arrived. Clobbers EAX, ECX, R8.
fn settle(a: &mut CodeAssembler, faults: &Faults, counter: u32, why: u32) -> Asm {
    a.mov(r8d, dword_ptr(counter))?;
    open_for_a_while(a)?;
    a.mov(eax, dword_ptr(counter))?;
    a.sub(eax, r8d)?;
    a.cmp(eax, 1)?;
    faults.fail_if(a, CodeAssembler::ja, why)?;
    Ok(())
}
