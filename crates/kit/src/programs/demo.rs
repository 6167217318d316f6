//! `demo`: what `alcazar run` boots by default. It walks the whole x86
//! boot ladder itself: real mode -> 32-bit protected mode -> 64-bit long
//! mode, printing a line on each rung, then powers off through ACPI.
//!
//! A `CodeAssembler` has one bitness, so the three rungs are assembled
//! separately at fixed image offsets and the far jumps target those:
//!
//! | image offset | contents                                      |
//! |--------------|-----------------------------------------------|
//! | +0x000       | 16-bit part (runs with CS = load >> 4, IP = 0) |
//! | +0x400       | 32-bit part (flat code selector 0x08)          |
//! | +0x800       | 64-bit part (64-bit code selector 0x18)        |
//! | +0xc00       | data: strings, GDT, GDTR                       |
//!
//! Page tables (identity map of the first 2 MiB) go to 0x40000..0x42fff.
//! Everything touched lies below 1 MiB, so the A20 gate does not matter.

use iced_x86::code_asm::*;
use iced_x86::{Code, Instruction, MemoryOperand};

use super::{finish, Built, Info};
use crate::arch::{
    CODE32_FLAT, CODE64, CR0_PE, DATA_FLAT, NULL_DESCRIPTOR, PAGE_SIZE, PDE_LARGE, PTE_RW,
};
use crate::cpu::{enable_ia32e, load_data_segments, push_gdt, set_stack, STACK_TOP};
use crate::image::{addr32, offset16, Asm, DataArea, Image};
use crate::uart::{bsp_only, power_off, Uart};
use crate::{Expect, FlatMode, KitError, DEFAULT_LOAD_ADDRESS};

/// Registry facts.
pub(crate) const INFO: Info = Info {
    name: "demo",
    description: "real -> protected -> long mode walk with a line per mode, then ACPI power-off",
    mode: FlatMode::Real,
};

const PART16: usize = 0x000;
const PART32: usize = 0x400;
const PART64: usize = 0x800;
const DATA: usize = 0xc00;

/// Own GDT: 0x08 = flat 32-bit code, 0x10 = flat data, 0x18 = 64-bit code.
const CODE32_SEL: u16 = 0x08;
const DATA_SEL: u32 = 0x10;
const CODE64_SEL: u16 = 0x18;

const PML4: u32 = 0x40000;
const PDPT: u32 = PML4 + PAGE_SIZE;
const PD: u32 = PDPT + PAGE_SIZE;

const BANNER: &str = "Alcazar demo guest: hello from real mode (16-bit)\n";
const PROTECTED: &str = "Alcazar demo guest: now in 32-bit protected mode\n";
const LONG: &str = "Alcazar demo guest: now in 64-bit long mode\n";
const POWER_OFF: &str = "Alcazar demo guest: powering off\n";

/// Where things are: image offsets for 16-bit code (DS base = load),
/// linear addresses for the rest.
struct Addrs {
    banner16: u32,
    gdtr16: u32,
    part32: u32,
    part64: u32,
    protected: u32,
    long: u32,
    power_off: u32,
}

/// Assembles `demo`.
pub(crate) fn build() -> Result<Built, KitError> {
    let load = DEFAULT_LOAD_ADDRESS;
    let mut image = Image::new(load);
    let mut data = DataArea::new(DATA);
    let banner = data.push_cstr(BANNER);
    let protected = data.push_cstr(PROTECTED);
    let long = data.push_cstr(LONG);
    let off = data.push_cstr(POWER_OFF);
    let gdtr = push_gdt(
        &mut data,
        load,
        &[NULL_DESCRIPTOR, CODE32_FLAT, DATA_FLAT, CODE64],
    )?;
    data.place_into(&mut image)?;

    let addrs = Addrs {
        banner16: offset16("banner", banner as u64)?,
        gdtr16: offset16("GDTR", gdtr as u64)?,
        part32: addr32("32-bit part", image.linear(PART32))?,
        part64: addr32("64-bit part", image.linear(PART64))?,
        protected: addr32("protected message", image.linear(protected))?,
        long: addr32("long message", image.linear(long))?,
        power_off: addr32("power-off message", image.linear(off))?,
    };
    image.code("demo 16-bit part", PART16, 16, |a| part16(a, &addrs))?;
    image.code("demo 32-bit part", PART32, 32, |a| part32(a, &addrs))?;
    image.code("demo 64-bit part", PART64, 64, |a| part64(a, &addrs))?;

    let expect = Expect {
        output: vec![
            "Alcazar demo guest: hello from real mode (16-bit)",
            "Alcazar demo guest: now in 32-bit protected mode",
            "Alcazar demo guest: now in 64-bit long mode",
            "Alcazar demo guest: powering off",
        ],
        status: 0,
    };
    Ok(finish(image, &INFO, expect))
}

/// Real mode: print the banner, load the GDT, set CR0.PE, far jump.
fn part16(a: &mut CodeAssembler, addrs: &Addrs) -> Asm {
    a.cli()?;
    a.cld()?;
    bsp_only(a)?;
    a.mov(ax, cs)?;
    a.mov(ds, ax)?;
    let mut uart = Uart::new(a);
    Uart::init(a)?;
    uart.print(a, addrs.banner16)?;

    // LGDT with a 16-bit operand size loads only 24 bits of the base
    // (SDM Vol. 2A, LGDT); force the 32-bit form (0x66 prefix) so the whole
    // base is taken. The operand is DS-relative, like any real-mode access.
    let gdtr = MemoryOperand::with_displ(u64::from(addrs.gdtr16), 2);
    a.add_instruction(Instruction::with1(Code::Lgdt_m1632, gdtr)?)?;

    // CR0.PE=1 enters protected mode, but CS still holds its real-mode
    // cached descriptor until a far jump reloads it (SDM 10.9.1).
    a.mov(eax, cr0)?;
    a.or(eax, CR0_PE)?;
    a.mov(cr0, eax)?;
    // The target offset is above 0xffff, so the 16-bit part needs the
    // ptr16:32 form (0x66 EA) rather than code_asm's default ptr16:16.
    a.add_instruction(Instruction::with_far_branch(
        Code::Jmp_ptr1632,
        CODE32_SEL,
        addrs.part32,
    )?)?;
    uart.emit_routines(a)
}

/// Protected mode: print, build page tables, enable PAE + LME + PG, and far
/// jump to the 64-bit code segment (SDM 10.8.5, "Initializing IA-32e FlatMode").
fn part32(a: &mut CodeAssembler, addrs: &Addrs) -> Asm {
    load_data_segments(a, DATA_SEL)?;
    set_stack(a)?;
    let mut uart = Uart::new(a);
    uart.print(a, addrs.protected)?;
    identity_map_2mib(a)?;

    // CR4.PAE, CR3, EFER.LME, CR0.PG: now in compatibility mode.
    enable_ia32e(a, PML4)?;
    // 5. A far jump to a code segment with L=1 enters 64-bit mode.
    a.jmp_far(CODE64_SEL, addrs.part64)?;
    uart.emit_routines(a)
}

/// Writes PML4[0] -> PDPT, PDPT[0] -> PD, PD[0] = 2 MiB page at 0.
fn identity_map_2mib(a: &mut CodeAssembler) -> Asm {
    // rep stosd: store EAX at [EDI], ECX times; 3 tables of 1024 dwords.
    a.mov(edi, PML4)?;
    a.xor(eax, eax)?;
    a.mov(ecx, 3 * 1024)?;
    a.rep().stosd()?;
    let rw = PTE_RW as u32;
    a.mov(dword_ptr(PML4), PDPT | rw)?;
    a.mov(dword_ptr(PDPT), PD | rw)?;
    a.mov(dword_ptr(PD), rw | PDE_LARGE as u32)?;
    Ok(())
}

/// Long mode: print two lines and power off.
fn part64(a: &mut CodeAssembler, addrs: &Addrs) -> Asm {
    // DS/ES/SS still hold the flat data selector; in 64-bit mode their
    // bases are ignored anyway (SDM 3.4.4). RSP needs a full 64-bit value:
    // the upper halves of registers are undefined after running in
    // compatibility mode (SDM Vol. 1, 3.4.1.1). Only the bootstrap CPU gets
    // here, and `rep stosd` reused EDI, so use vCPU 0's stack top directly;
    // writing ESP zero-extends into RSP.
    a.mov(esp, STACK_TOP)?;
    let mut uart = Uart::new(a);
    uart.print(a, addrs.long)?;
    uart.print(a, addrs.power_off)?;
    power_off(a)?;
    uart.emit_routines(a)
}
