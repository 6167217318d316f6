//! `port-sweep`: a robustness test for the VMM's I/O and MMIO dispatch.
//!
//! 1. Every port 0..=0xffff gets `in`/`out` (value 0) at byte, word and
//!    dword width, except the ports in [`SKIP`], which would end or reset
//!    the VM or disturb the final print. A word access at `p` also touches
//!    `p + 1` and a dword access `p + 1 ..= p + 3`, so wide accesses whose
//!    range overlaps a skipped port are left out too.
//! 2. Every 16 MiB step from 64 MiB (beyond the test VM's RAM) to the top of
//!    the 32-bit space gets a dword read and a dword write of 0. Paging is
//!    off, so these linear addresses are physical.
//! 3. A few addresses in the IOAPIC/HPET/LAPIC window get byte and word
//!    reads (narrow accesses to registers that are normally dword-only).
//! 4. Re-initialize the UART, print, exit with [`KIT_PASS`].
//!
//! Roughly 1M instructions, a third of them port accesses.
//!
//! Image layout: code at +0x000, data at +0x400.

use iced_x86::code_asm::*;

use super::{finish, Built, Info};
use crate::cpu::set_stack;
use crate::image::{addr32, Asm, DataArea, Image};
use crate::uart::{bsp_only, exit, Uart};
use crate::{debug_exit_status, Expect, FlatMode, KitError, DEFAULT_LOAD_ADDRESS, KIT_PASS};

/// Registry facts.
pub(crate) const INFO: Info = Info {
    name: "port-sweep",
    description: "32-bit protected mode: in/out on every port at every width, then an MMIO sweep",
    mode: FlatMode::Protected,
};

const CODE: usize = 0x000;
const DATA: usize = 0x400;

/// Inclusive port ranges never touched at any width.
const SKIP: [(u32, u32); 6] = [
    (0x64, 0x64),   // i8042 command: 0xfe pulses the reset line
    (0x92, 0x92),   // System Control Port A: fast A20 and fast reset
    (0xf4, 0xf7),   // debug-exit (4 bytes wide)
    (0x3f8, 0x3ff), // COM1: keep the UART intact for the final line
    (0x600, 0x607), // ACPI PM1a event/control: power-off
    (0xcf9, 0xcf9), // Reset Control Register
];

/// First address of the MMIO sweep (64 MiB).
const MMIO_START: u32 = 0x0400_0000;
/// Step of the MMIO sweep (16 MiB).
const MMIO_STEP: u32 = 0x0100_0000;
/// Addresses probed with byte and word reads: IOAPIC select/window, HPET
/// capabilities, LAPIC ID/version/last register.
const NARROW_PROBES: [u32; 7] = [
    0xfec0_0000,
    0xfec0_0010,
    0xfed0_0000,
    0xfee0_0020,
    0xfee0_0030,
    0xfee0_0ff0,
    0xfee0_0ffe,
];

/// Assembles `port-sweep`.
pub(crate) fn build() -> Result<Built, KitError> {
    let mut image = Image::new(DEFAULT_LOAD_ADDRESS);
    let mut data = DataArea::new(DATA);
    let done = data.push_cstr("kit: port sweep done\n");
    data.place_into(&mut image)?;
    let done = addr32("done message", image.linear(done))?;

    image.code("port-sweep code", CODE, 32, |a| {
        a.cli()?;
        a.cld()?;
        bsp_only(a)?;
        set_stack(a)?;
        sweep_ports(a)?;
        sweep_mmio(a)?;
        probe_narrow(a)?;
        let mut uart = Uart::new(a);
        Uart::init(a)?;
        uart.print(a, done)?;
        exit(a, KIT_PASS)?;
        uart.emit_routines(a)
    })?;

    let expect = Expect {
        output: vec!["kit: port sweep done"],
        status: debug_exit_status(KIT_PASS),
    };
    Ok(finish(image, &INFO, expect))
}

/// The port loop. EDX is the port counter (DX is what `in`/`out` use);
/// EAX is scratch. The three access blocks fall through into each other,
/// so jumping to a later block drops the wider widths.
fn sweep_ports(a: &mut CodeAssembler) -> Asm {
    let mut top = a.create_label();
    let mut dword = a.create_label();
    let mut word = a.create_label();
    let mut byte = a.create_label();
    let mut next = a.create_label();
    let highest_skip = SKIP.iter().map(|&(_, hi)| hi).max().unwrap_or(0);

    a.xor(edx, edx)?;
    a.set_label(&mut top)?;
    // Fast path: above the last skipped port every width is allowed.
    a.cmp(edx, highest_skip)?;
    a.ja(dword)?;
    // Slow path, checked narrowest-first: the port itself is skipped; a
    // word at p overlaps [lo, hi] iff p is in [lo-1, hi]; a dword iff p is
    // in [lo-3, hi].
    for (widen, target) in [(0, next), (1, byte), (3, word)] {
        for &(lo, hi) in &SKIP {
            jump_if_in_range(a, lo.saturating_sub(widen), hi, target)?;
        }
    }

    a.set_label(&mut dword)?;
    a.in_(eax, dx)?;
    a.xor(eax, eax)?;
    a.out(dx, eax)?;
    a.set_label(&mut word)?;
    a.in_(ax, dx)?;
    a.xor(eax, eax)?;
    a.out(dx, ax)?;
    a.set_label(&mut byte)?;
    a.in_(al, dx)?;
    a.xor(eax, eax)?;
    a.out(dx, al)?;

    a.set_label(&mut next)?;
    a.inc(edx)?;
    a.cmp(edx, 0x1_0000u32)?;
    a.jb(top)?;
    Ok(())
}

/// `if lo <= EDX <= hi goto target`, with one unsigned compare: EDX - lo
/// wraps to a huge value when EDX < lo. Clobbers EAX.
fn jump_if_in_range(a: &mut CodeAssembler, lo: u32, hi: u32, target: CodeLabel) -> Asm {
    a.lea(eax, edx - lo)?;
    a.cmp(eax, hi - lo)?;
    a.jbe(target)?;
    Ok(())
}

/// Dword read and dword write of 0 at every [`MMIO_STEP`] from
/// [`MMIO_START`]; the walk ends when adding the step carries out of bit 31
/// (after 0xff00_0000). EBX is the address.
fn sweep_mmio(a: &mut CodeAssembler) -> Asm {
    let mut top = a.create_label();
    a.mov(ebx, MMIO_START)?;
    a.set_label(&mut top)?;
    a.mov(eax, dword_ptr(ebx))?;
    a.mov(dword_ptr(ebx), 0u32)?;
    a.add(ebx, MMIO_STEP)?;
    a.jnc(top)?;
    Ok(())
}

/// Byte and word reads at [`NARROW_PROBES`], unrolled.
fn probe_narrow(a: &mut CodeAssembler) -> Asm {
    for address in NARROW_PROBES {
        a.movzx(eax, byte_ptr(address))?;
        a.movzx(eax, word_ptr(address))?;
    }
    Ok(())
}
