//! `fault-pf`: page faults (SDM Vol. 3A §6.15, interrupt 14; §4.7).
//!
//! The program switches CR3 to its own tables (see [`crate::paging`]):
//! linear 0..2 MiB identity-mapped with 4 KiB pages, except that
//!
//! * page 0x100000 is not present, and
//! * page 0x101000 is present but read-only.
//!
//! It sets CR0.WP, which the VMM leaves clear, so that supervisor writes
//! honour read-only pages (SDM §4.6.1). Then:
//!
//! 1. a read from 0x100040 must give #PF with error code 0 (P=0: not
//!    present; W/R=0: read; U/S=0: supervisor; SDM §4.7, figure 4-12) and
//!    CR2 = 0x100040, the exact linear address, not just its page;
//! 2. a read from 0x101080 must work;
//! 3. a write to 0x101080 must give #PF with error code 3 (P=1: protection
//!    violation; W/R=1: write) and CR2 = 0x101080.
//!
//! Image layout: as in [`crate::idt`], plus the four page tables at +0x2000.

use iced_x86::code_asm::*;

use super::faults::{build_fault_program, labelled, provoke};
use super::{Built, Info};
use crate::arch::{CR0_WP, PTE_PRESENT, PTE_RW};
use crate::idt::Expected;
use crate::image::addr32;
use crate::paging::low_identity_tables;
use crate::{FlatMode, KitError, DEFAULT_LOAD_ADDRESS};

/// Registry facts.
pub(crate) const INFO: Info = Info {
    name: "fault-pf",
    description:
        "64-bit #PF on own page tables: not-present read (err 0), write to read-only (err 3), CR2",
    mode: FlatMode::Long,
};

/// Image offset of the page tables (4 KiB aligned).
const TABLES: usize = 0x2000;
/// The not-present page.
const NOT_PRESENT: u64 = 0x10_0000;
/// The read-only page.
const READ_ONLY: u64 = 0x10_1000;
/// Where the program reads the not-present page.
const NOT_PRESENT_READ: u32 = 0x10_0040;
/// Where it reads and writes the read-only page.
const READ_ONLY_ACCESS: u32 = 0x10_1080;

const CASES: [Expected; 2] = [
    Expected {
        line: "kit: #PF not-present read ok (vector=0xe, err=0x0, cr2=0x100040)",
        vector: 14,
        error: 0,
        cr2: Some(NOT_PRESENT_READ),
    },
    Expected {
        line: "kit: #PF write to read-only page ok (vector=0xe, err=0x3, cr2=0x101080)",
        vector: 14,
        error: 0x3,
        cr2: Some(READ_ONLY_ACCESS),
    },
];

/// Entry flags of each 4 KiB page of the low 2 MiB.
fn page_flags(address: u64) -> u64 {
    match address {
        NOT_PRESENT => 0,
        READ_ONLY => PTE_PRESENT,
        _ => PTE_RW,
    }
}

/// Assembles `fault-pf`.
pub(crate) fn build() -> Result<Built, KitError> {
    let tables_linear = DEFAULT_LOAD_ADDRESS + TABLES as u64;
    let tables = low_identity_tables(tables_linear, 0, page_flags);
    let cr3_value = addr32("page tables", tables_linear)?;
    let place = |image: &mut crate::image::Image| image.place("page tables", TABLES, &tables);
    build_fault_program(&INFO, &CASES, "kit: page faults ok", place, |a, ctx| {
        // Writing CR3 switches to the new tables (SDM §4.10.4.1).
        a.mov(eax, cr3_value)?;
        a.mov(cr3, rax)?;
        a.mov(rax, cr0)?;
        a.or(eax, CR0_WP)?;
        a.mov(cr0, rax)?;
        provoke(a, ctx, &ctx.cases[0], |a| {
            labelled(a, |a| a.mov(rax, qword_ptr(NOT_PRESENT_READ)))
        })?;
        // Reading the read-only page is allowed; a fault here would land
        // on the unexpected-exception report.
        a.mov(eax, dword_ptr(READ_ONLY_ACCESS))?;
        provoke(a, ctx, &ctx.cases[1], |a| {
            labelled(a, |a| a.mov(dword_ptr(READ_ONLY_ACCESS), 0x1234_5678u32))
        })
    })
}
