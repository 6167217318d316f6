//! The guest's memory layout, shared by both engines: identity-mapped
//! 4-level page tables with 4 KiB pages, a GDT with DPL-3 64-bit segments,
//! an IDT whose ring-0 handlers report the vector with an `out`, a TSS, and
//! the user pages a sequence owns (code, two data pages, a stack page).
//!
//! Everything is identity mapped (linear = physical). Pages that are not
//! listed here are not present, so a stray access faults the same way on
//! both engines. The accessed and dirty bits of every entry are preset, so
//! neither engine changes the page tables while running user code.

use iced_x86::code_asm::{al, cr2, qword_ptr, rax, CodeAssembler};

use crate::Error;

/// Bytes of guest RAM (the emu engine's memory map needs at least 1 MiB).
pub const MEM_SIZE: u64 = 2 << 20;
/// One page.
pub const PAGE: u64 = 0x1000;
/// The PML4 (then the PDPT, PD and one PT in the next three pages).
pub const PML4: u64 = 0x1000;
/// The GDT.
pub const GDT: u64 = 0x5000;
/// The IDT (vectors 0..[`VECTORS`]).
pub const IDT: u64 = 0x6000;
/// The 64-bit TSS.
pub const TSS: u64 = 0x7000;
/// Ring-0 exception stubs, [`STUB_SIZE`] bytes per vector.
pub const HANDLERS: u64 = 0x8000;
/// Ring-0 data: the page-fault stub stores CR2 at [`CR2_SLOT`].
pub const KDATA: u64 = 0x9000;
/// Where the page-fault stub saves CR2.
pub const CR2_SLOT: u64 = KDATA;
/// Top of the ring-0 stack (RSP0 in the TSS).
pub const KSTACK_TOP: u64 = 0xb000;
/// User code: the sequence, then the final `out`.
pub const CODE: u64 = 0x10000;
/// Bytes of user code space.
pub const CODE_SIZE: u64 = PAGE;
/// User data: two writable pages.
pub const DATA: u64 = 0x20000;
/// Bytes of user data.
pub const DATA_SIZE: u64 = 2 * PAGE;
/// The user stack page.
pub const STACK: u64 = 0x30000;
/// Bytes of user stack.
pub const STACK_SIZE: u64 = PAGE;
/// The initial user RSP: the middle of the stack page.
pub const STACK_INIT: u64 = STACK + STACK_SIZE / 2;

/// Exceptions with a handler (vectors 0..31).
pub const VECTORS: u64 = 32;
/// Bytes per exception stub.
pub const STUB_SIZE: u64 = 32;
/// The port a sequence's final `out` writes: "done".
pub const DONE_PORT: u16 = 0xf0;
/// Exception vector `v` is reported with an `out` to `VECTOR_PORT_BASE + v`.
pub const VECTOR_PORT_BASE: u16 = 0x80;

/// Kernel 64-bit code selector.
pub const KERNEL_CS: u16 = 0x08;
/// Kernel data selector.
pub const KERNEL_DS: u16 = 0x10;
/// User data selector (RPL 3).
pub const USER_DS: u16 = 0x18 | 3;
/// User 64-bit code selector (RPL 3).
pub const USER_CS: u16 = 0x20 | 3;
/// TSS selector.
pub const TSS_SEL: u16 = 0x28;
/// GDT limit (seven 8-byte slots; the TSS takes two).
pub const GDT_LIMIT: u16 = 7 * 8 - 1;
/// IDT limit.
pub const IDT_LIMIT: u16 = (VECTORS * 16 - 1) as u16;
/// Offset of the I/O permission bitmap in the TSS.
pub const IOPB_OFFSET: u32 = 0x68;
/// TSS limit: the 104-byte TSS, a 32-byte I/O permission bitmap covering
/// ports 0..0xff, and the terminating 0xff byte.
pub const TSS_LIMIT: u32 = IOPB_OFFSET + 32;

/// CR0: PE, MP, ET, NE, WP, AM, PG. Under PVM guest user code runs with
/// the host's CR0, so whether #AC is raised is the host's choice: the emu
/// runner's CR0.AM follows what [`crate::host::HostFacts`] measured.
pub const CR0: u64 = 1 | 2 | (1 << 4) | (1 << 5) | (1 << 16) | (1 << 18) | (1 << 31);
/// CR4: PAE, OSFXSR/OSXMMEXCPT and OSXSAVE (XCR0 enables AVX: [`XCR0`]).
pub const CR4: u64 = (1 << 5) | (1 << 9) | (1 << 10) | (1 << 18);

/// XCR0: x87, SSE and AVX state enabled.
pub const XCR0: u64 = 0b111;
/// EFER: SCE, LME, LMA, NXE.
pub const EFER: u64 = 1 | (1 << 8) | (1 << 10) | (1 << 11);

/// PTE bits: present, writable, user, accessed, dirty.
const P: u64 = 1;
const W: u64 = 2;
const U: u64 = 4;
const A: u64 = 1 << 5;
const D: u64 = 1 << 6;

/// One piece of the initial memory image.
#[derive(Clone, Debug)]
pub struct Chunk {
    /// Guest-physical address.
    pub addr: u64,
    /// Contents.
    pub bytes: Vec<u8>,
}

/// The GDT descriptor for a code or data segment.
fn descriptor(code: bool, dpl: u64, long: bool) -> u64 {
    let type_: u64 = if code { 0xb } else { 0x3 };
    let access = type_ | (1 << 4) | (dpl << 5) | (1 << 7);
    let flags: u64 = if long { 0b1010 } else { 0b1100 }; // G + (L or D/B)
    0xffff | (access << 40) | (0xf << 48) | (flags << 52)
}

fn gdt() -> Vec<u8> {
    let tss_low = TSS_LIMIT as u64
        | ((TSS & 0xff_ffff) << 16)
        | (0x89 << 40) // present, type 9: available 64-bit TSS
        | ((TSS >> 24) & 0xff) << 56;
    let tss_high = TSS >> 32;
    let entries = [
        0,
        descriptor(true, 0, true),
        descriptor(false, 0, false),
        descriptor(false, 3, false),
        descriptor(true, 3, true),
        tss_low,
        tss_high,
    ];
    entries.iter().flat_map(|e| e.to_le_bytes()).collect()
}

fn idt() -> Vec<u8> {
    let mut out = Vec::with_capacity((VECTORS * 16) as usize);
    for v in 0..VECTORS {
        let off = HANDLERS + v * STUB_SIZE;
        // 64-bit interrupt gate, DPL 0, present, IST 0.
        let low = (off & 0xffff)
            | (u64::from(KERNEL_CS) << 16)
            | (0x8e << 40)
            | ((off >> 16) & 0xffff) << 48;
        let high = off >> 32;
        out.extend_from_slice(&low.to_le_bytes());
        out.extend_from_slice(&high.to_le_bytes());
    }
    out
}

fn tss() -> Vec<u8> {
    let mut t = vec![0u8; (TSS_LIMIT + 1) as usize];
    t[4..12].copy_from_slice(&KSTACK_TOP.to_le_bytes());
    t[102..104].copy_from_slice(&(IOPB_OFFSET as u16).to_le_bytes());
    // Every port denied to CPL 3 (IOPL is 0) except DONE_PORT.
    let iopb = IOPB_OFFSET as usize;
    t[iopb..].fill(0xff);
    t[iopb + usize::from(DONE_PORT / 8)] &= !(1 << (DONE_PORT % 8));
    t
}

/// The exception stubs: `out VECTOR_PORT_BASE+v, al` then `hlt` forever;
/// the page-fault stub first saves CR2 at [`CR2_SLOT`] (preserving RAX).
fn handlers() -> Result<Vec<u8>, Error> {
    let mut out = vec![0xccu8; (VECTORS * STUB_SIZE) as usize];
    for v in 0..VECTORS {
        let mut a = CodeAssembler::new(64)?;
        if v == 14 {
            a.push(rax)?;
            a.mov(rax, cr2)?;
            a.mov(qword_ptr(CR2_SLOT), rax)?;
            a.pop(rax)?;
        }
        a.out(u32::from(VECTOR_PORT_BASE) + v as u32, al)?;
        let mut spin = a.create_label();
        a.set_label(&mut spin)?;
        a.hlt()?;
        a.jmp(spin)?;
        let base = HANDLERS + v * STUB_SIZE;
        let bytes = a.assemble(base)?;
        if bytes.len() as u64 > STUB_SIZE {
            return Err(Error::Layout(format!("stub {v} is {} bytes", bytes.len())));
        }
        let at = (v * STUB_SIZE) as usize;
        out[at..at + bytes.len()].copy_from_slice(&bytes);
    }
    Ok(out)
}

/// The page-table entries: which pages are mapped, and how.
fn mappings() -> Vec<(u64, u64)> {
    let mut m = Vec::new();
    // Ring-0 pages: tables, GDT, IDT, TSS, stubs, data, stack.
    for page in (PML4..KSTACK_TOP).step_by(PAGE as usize) {
        m.push((page, P | W | A | D));
    }
    for page in (CODE..CODE + CODE_SIZE).step_by(PAGE as usize) {
        m.push((page, P | U | A | D)); // read-only: no self-modifying code
    }
    for page in (DATA..DATA + DATA_SIZE).step_by(PAGE as usize) {
        m.push((page, P | W | U | A | D));
    }
    for page in (STACK..STACK + STACK_SIZE).step_by(PAGE as usize) {
        m.push((page, P | W | U | A | D));
    }
    m
}

fn page_tables() -> Vec<u8> {
    let mut t = vec![0u8; 4 * PAGE as usize];
    let mut put = |index: usize, value: u64| {
        t[index * 8..index * 8 + 8].copy_from_slice(&value.to_le_bytes());
    };
    let upper = P | W | U | A;
    put(0, (PML4 + PAGE) | upper); // PML4[0] -> PDPT
    put(512, (PML4 + 2 * PAGE) | upper); // PDPT[0] -> PD
    put(1024, (PML4 + 3 * PAGE) | upper); // PD[0] -> PT (first 2 MiB)
    for (page, flags) in mappings() {
        put(1536 + (page / PAGE) as usize, page | flags);
    }
    t
}

/// The code page of `prog` as every runner loads it: the program, then
/// `jmp $` after its final `out` (where the translator's runner parks a
/// vCPU that runs on), then INT3 to the end of the page. All runners load
/// the same bytes, so a sequence that reads its own code page sees the
/// same values everywhere.
pub fn code_image(prog: &crate::state::Program) -> Vec<u8> {
    let mut code = vec![0xccu8; CODE_SIZE as usize];
    let n = prog.bytes.len().min(code.len());
    code[..n].copy_from_slice(&prog.bytes[..n]);
    let after_out = prog.end_rip.wrapping_sub(CODE).wrapping_add(2);
    if let Some(spin) = usize::try_from(after_out)
        .ok()
        .and_then(|at| code.get_mut(at..at.saturating_add(2)))
    {
        spin.copy_from_slice(&[0xeb, 0xfe]);
    }
    code
}

/// The static part of the image: everything but the user pages.
pub fn system_image() -> Result<Vec<Chunk>, Error> {
    Ok(vec![
        Chunk {
            addr: PML4,
            bytes: page_tables(),
        },
        Chunk {
            addr: GDT,
            bytes: gdt(),
        },
        Chunk {
            addr: IDT,
            bytes: idt(),
        },
        Chunk {
            addr: TSS,
            bytes: tss(),
        },
        Chunk {
            addr: HANDLERS,
            bytes: handlers()?,
        },
    ])
}

/// Whether a linear address is in a user page a sequence can write.
pub fn user_writable(addr: u64) -> bool {
    (DATA..DATA + DATA_SIZE).contains(&addr) || (STACK..STACK + STACK_SIZE).contains(&addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_image_fits_below_the_user_pages() {
        let image = system_image().unwrap();
        for c in &image {
            assert!(c.addr + c.bytes.len() as u64 <= KSTACK_TOP, "{:#x}", c.addr);
        }
    }

    #[test]
    fn user_pages_are_mapped_for_user_mode() {
        let m = mappings();
        for page in [CODE, DATA, DATA + PAGE, STACK] {
            let (_, f) = m.iter().find(|(p, _)| *p == page).unwrap();
            assert_ne!(f & U, 0);
        }
        let (_, f) = m.iter().find(|(p, _)| *p == GDT).unwrap();
        assert_eq!(f & U, 0);
    }
}
