//! `protected-hello`: starts on the VMM's flat GDT, loads its own GDT with a
//! different selector layout, far-jumps to reload CS, reloads the data
//! segments, and checks CS before printing.
//!
//! The own GDT leaves slots 0x08 and 0x10 (the VMM's selectors) null and
//! puts code at 0x18 and data at 0x20, so the program can only reach the
//! print with the new table really in use.
//!
//! Image layout: stage 1 (VMM selectors) at +0x000, stage 2 (own selectors)
//! at +0x100, data at +0x200.

use iced_x86::code_asm::*;

use super::{finish, Built, Info};
use crate::arch::{CODE32_FLAT, DATA_FLAT, NULL_DESCRIPTOR};
use crate::cpu::{load_data_segments, push_gdt, set_stack};
use crate::image::{addr32, DataArea, Image};
use crate::uart::{bsp_only, exit, Uart};
use crate::{
    debug_exit_status, Expect, FlatMode, KitError, DEFAULT_LOAD_ADDRESS, KIT_FAIL, KIT_PASS,
};

/// Registry facts.
pub(crate) const INFO: Info = Info {
    name: "protected-hello",
    description:
        "32-bit protected mode: loads its own GDT (code 0x18, data 0x20), reloads CS by far jump",
    mode: FlatMode::Protected,
};

const STAGE1: usize = 0x000;
const STAGE2: usize = 0x100;
const DATA: usize = 0x200;

/// The program's own code selector (GDT index 3, TI=0, RPL=0).
const OWN_CODE: u16 = 0x18;
/// The program's own data selector (GDT index 4).
const OWN_DATA: u32 = 0x20;

/// Addresses the code needs, all linear.
struct Addrs {
    gdtr: u32,
    stage2: u32,
    ok: u32,
    failed: u32,
}

/// Assembles `protected-hello`.
pub(crate) fn build() -> Result<Built, KitError> {
    let load = DEFAULT_LOAD_ADDRESS;
    let mut image = Image::new(load);
    let mut data = DataArea::new(DATA);
    let gdt = [
        NULL_DESCRIPTOR,
        NULL_DESCRIPTOR,
        NULL_DESCRIPTOR,
        CODE32_FLAT,
        DATA_FLAT,
    ];
    let gdtr = push_gdt(&mut data, load, &gdt)?;
    let ok = data.push_cstr("kit: protected mode ok, own GDT loaded\n");
    let failed = data.push_cstr("kit: protected mode FAILED\n");
    data.place_into(&mut image)?;

    let addrs = Addrs {
        gdtr: addr32("GDTR", image.linear(gdtr))?,
        stage2: addr32("stage 2", image.linear(STAGE2))?,
        ok: addr32("ok message", image.linear(ok))?,
        failed: addr32("failed message", image.linear(failed))?,
    };
    image.code("protected-hello stage 1", STAGE1, 32, |a| stage1(a, &addrs))?;
    image.code("protected-hello stage 2", STAGE2, 32, |a| stage2(a, &addrs))?;

    let expect = Expect {
        output: vec!["kit: protected mode ok, own GDT loaded"],
        status: debug_exit_status(KIT_PASS),
    };
    Ok(finish(image, &INFO, expect))
}

/// Stage 1, running on the VMM's selectors: load the new GDT and jump.
fn stage1(a: &mut CodeAssembler, addrs: &Addrs) -> Result<(), KitError> {
    a.cli()?;
    a.cld()?;
    bsp_only(a)?;
    // LGDT only changes GDTR; the segment registers keep their cached
    // descriptors until reloaded (SDM 3.4.3), so execution continues here.
    a.lgdt(ptr(addrs.gdtr))?;
    // A far JMP is the way to load CS: it reads the new code descriptor
    // from the GDT just loaded (SDM Vol. 2A, JMP).
    a.jmp_far(OWN_CODE, addrs.stage2)?;
    Ok(())
}

/// Stage 2, running on the program's own code selector.
fn stage2(a: &mut CodeAssembler, addrs: &Addrs) -> Result<(), KitError> {
    load_data_segments(a, OWN_DATA)?;
    set_stack(a)?;
    let mut uart = Uart::new(a);
    let mut failed = a.create_label();
    Uart::init(a)?;
    // Double-check the far jump: CS must now hold our selector.
    a.mov(ax, cs)?;
    a.cmp(ax, u32::from(OWN_CODE))?;
    a.jne(failed)?;
    uart.print(a, addrs.ok)?;
    exit(a, KIT_PASS)?;

    a.set_label(&mut failed)?;
    uart.print(a, addrs.failed)?;
    exit(a, KIT_FAIL)?;
    uart.emit_routines(a)
}
