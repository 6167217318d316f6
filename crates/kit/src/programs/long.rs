//! `long-hello`: starts in 64-bit mode on the VMM's page tables, builds its
//! own 4-level tables, switches CR3 to them and proves they are live by
//! writing through a mapping that is *not* an identity mapping.
//!
//! Own tables (SDM 4.5, 4-level paging), each one 4 KiB page:
//!
//! | table       | address | entry                                     |
//! |-------------|---------|-------------------------------------------|
//! | PML4        | 0x40000 | [0] -> PDPT                               |
//! | PDPT        | 0x41000 | [0] -> PD low, [1] -> PD 1 GiB            |
//! | PD low      | 0x42000 | [0] = 2 MiB page at 0 (identity)          |
//! | PD 1 GiB    | 0x43000 | [0] -> PT                                 |
//! | PT          | 0x44000 | [0] = 4 KiB page at 0x50000               |
//!
//! So linear 0x4000_0000 maps to physical 0x50000. Under the VMM's identity
//! tables the same linear address is unbacked MMIO at 1 GiB, so the magic
//! only shows up at 0x50000 if the CPU really walks the new tables.
//!
//! Image layout: code at +0x000, data at +0x200.

use iced_x86::code_asm::*;

use super::{finish, Built, Info};
use crate::arch::{PAGE_SIZE, PDE_LARGE, PTE_RW};
use crate::cpu::set_stack;
use crate::image::{addr32, DataArea, Image};
use crate::uart::{bsp_only, exit, Uart};
use crate::{
    debug_exit_status, Expect, FlatMode, KitError, DEFAULT_LOAD_ADDRESS, KIT_FAIL, KIT_PASS,
};

/// Registry facts.
pub(crate) const INFO: Info = Info {
    name: "long-hello",
    description:
        "64-bit long mode: builds and loads its own page tables, checks a non-identity mapping",
    mode: FlatMode::Long,
};

const CODE: usize = 0x000;
const DATA: usize = 0x200;

const PML4: u32 = 0x40000;
const PDPT: u32 = PML4 + PAGE_SIZE;
const PD_LOW: u32 = PDPT + PAGE_SIZE;
const PD_1G: u32 = PD_LOW + PAGE_SIZE;
const PT: u32 = PD_1G + PAGE_SIZE;
const TABLES: u32 = 5;

/// The linear address the program maps somewhere else (1 GiB = PDPT[1]).
const ALIAS_LINEAR: u32 = 0x4000_0000;
/// Where [`ALIAS_LINEAR`] points physically.
const ALIAS_PHYSICAL: u32 = 0x50000;
/// Written through the alias, looked for at the physical address ("kit!").
const MAGIC: u32 = u32::from_le_bytes(*b"kit!");

/// Assembles `long-hello`.
pub(crate) fn build() -> Result<Built, KitError> {
    let mut image = Image::new(DEFAULT_LOAD_ADDRESS);
    let mut data = DataArea::new(DATA);
    let ok = data.push_cstr("kit: long mode ok, own page tables live\n");
    let failed = data.push_cstr("kit: long mode FAILED\n");
    data.place_into(&mut image)?;
    let ok = addr32("ok message", image.linear(ok))?;
    let failed = addr32("failed message", image.linear(failed))?;

    image.code("long-hello code", CODE, 64, |a| {
        a.cli()?;
        a.cld()?;
        bsp_only(a)?;
        set_stack(a)?;
        let mut uart = Uart::new(a);
        Uart::init(a)?;
        build_tables(a)?;
        // Clear the target through the identity map first, so a stale
        // magic left in RAM cannot fake success.
        a.mov(dword_ptr(ALIAS_PHYSICAL), 0u32)?;
        // Writing CR3 switches to the new tables and flushes the TLB of
        // non-global entries (SDM 4.10.4.1).
        a.mov(eax, PML4)?;
        a.mov(cr3, rax)?;
        check_alias(a, &mut uart, ok, failed)?;
        uart.emit_routines(a)
    })?;

    let expect = Expect {
        output: vec!["kit: long mode ok, own page tables live"],
        status: debug_exit_status(KIT_PASS),
    };
    Ok(finish(image, &INFO, expect))
}

/// Zeroes the five tables and writes the six entries described above.
/// Every address is below 4 GiB, so a dword store per entry suffices: the
/// upper halves stay zero from the clearing.
fn build_tables(a: &mut CodeAssembler) -> Result<(), KitError> {
    // rep stosq: store RAX at [RDI], RCX times (512 entries per table).
    a.mov(edi, PML4)?;
    a.xor(eax, eax)?;
    a.mov(ecx, TABLES * 512)?;
    a.rep().stosq()?;

    let rw = PTE_RW as u32;
    let entries = [
        (PML4, PDPT | rw),
        (PDPT, PD_LOW | rw),
        (PDPT + 8, PD_1G | rw),
        (PD_LOW, rw | PDE_LARGE as u32),
        (PD_1G, PT | rw),
        (PT, ALIAS_PHYSICAL | rw),
    ];
    for (at, value) in entries {
        a.mov(dword_ptr(at), value)?;
    }
    Ok(())
}

/// Writes [`MAGIC`] through the alias and reads it back physically.
fn check_alias(
    a: &mut CodeAssembler,
    uart: &mut Uart,
    ok: u32,
    failed: u32,
) -> Result<(), KitError> {
    let mut bad = a.create_label();
    a.mov(dword_ptr(ALIAS_LINEAR), MAGIC)?;
    a.cmp(dword_ptr(ALIAS_PHYSICAL), MAGIC)?;
    a.jne(bad)?;
    uart.print(a, ok)?;
    exit(a, KIT_PASS)?;
    a.set_label(&mut bad)?;
    uart.print(a, failed)?;
    exit(a, KIT_FAIL)
}
