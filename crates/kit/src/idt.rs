//! Shared exception machinery for the 64-bit programs that provoke
//! exceptions (`fault-*`, `int-roundtrip`, `syscall-sysret`): a static IDT,
//! one stub per exception vector, a common handler that records what the
//! CPU delivered, and emitters that arm a recovery point, check the record
//! and print it.
//!
//! Delivery (SDM Vol. 3A §6.12.1, §6.14.2): in 64-bit mode the CPU aligns
//! RSP to 16 bytes, pushes SS, RSP, RFLAGS, CS and RIP, then an error code
//! for the vectors that have one (8, 10-14, 17, 21; §6.15), and loads
//! CS:RIP from the 16-byte gate (§6.14.1). An interrupt gate also clears
//! RFLAGS.IF. Each stub pushes a dummy error code when the CPU pushes none,
//! so every frame looks alike, then the vector, and jumps to the handler.
//!
//! The handler stores vector, error code, CR2 and the saved RIP in the
//! record, replaces the saved RIP with the armed recovery address (so the
//! faulting instruction is skipped) and the saved CS and SS with the kernel
//! selectors 0x08 and 0x10 (so an exception in user mode also recovers at
//! CPL 0; every GDT the kit loads has kernel code and data there), re-arms
//! the "unexpected exception" address and returns with IRETQ. Arming is
//! one-shot: a second exception before the next [`Faults::arm`] lands on
//! the unexpected path, which reports the record and fails the program.
//!
//! Image layout every user of this module follows (image offsets): main
//! code +0x000..+0x800, handler +0x800, stubs +0x900..+0xb00 (16 bytes
//! each), +0xb00..+0xc00 free for the program's own handlers or raw bytes,
//! data from +0xc00.

use iced_x86::code_asm::*;

use crate::arch::{interrupt_gate, pseudo_descriptor64};
use crate::image::{addr32, Asm, DataArea, Image};
use crate::uart::{exit, Uart};
use crate::{KitError, KIT_FAIL};

/// Image offset of the common handler.
const HANDLER: usize = 0x800;
/// Image offset of the first stub.
const STUBS: usize = 0x900;
/// Bytes per stub slot (a stub is at most 2 + 2 + 5 bytes).
const STUB_SIZE: usize = 16;
/// Exception vectors 0..31 get stubs (SDM §6.3.1: 0-31 are reserved for
/// exceptions).
const EXCEPTIONS: u8 = 32;
/// Image offset free for program-specific handlers or bytes.
pub(crate) const EXTRA: usize = 0xb00;
/// Image offset of the data area.
pub(crate) const DATA: usize = 0xc00;
/// The code selector of every gate (the VMM's and the programs' own GDTs
/// both have the 64-bit kernel code segment there).
const KERNEL_CS: u16 = 0x08;
/// The kernel data selector of those GDTs.
const KERNEL_SS: i32 = 0x10;

/// The record: qwords at fixed linear addresses in the data region.
const RECORD: u32 = 0x20000;
/// Vector of the last exception (-1 after [`Faults::arm`]).
const REC_VECTOR: u32 = RECORD;
/// Its error code (0 when the vector has none).
const REC_ERROR: u32 = RECORD + 8;
/// CR2 at the time of the last exception.
const REC_CR2: u32 = RECORD + 16;
/// The RIP the CPU saved (the faulting instruction for faults).
const REC_RIP: u32 = RECORD + 24;
/// Where the handler resumes the next exception.
const REC_RECOVER: u32 = RECORD + 32;
/// Where it resumes once that was used up.
const REC_UNEXPECTED: u32 = RECORD + 40;

/// Whether the CPU pushes an error code for `vector` (SDM §6.15, table
/// 6-1): #DF, #TS, #NP, #SS, #GP, #PF, #AC, #CP.
fn has_error_code(vector: u8) -> bool {
    matches!(vector, 8 | 10..=14 | 17 | 21)
}

/// Assembles the common handler and the exception stubs into `image`.
pub(crate) fn emit_handlers(image: &mut Image) -> Asm {
    let handler = image.linear(HANDLER);
    image.code("exception handler", HANDLER, 64, emit_common_handler)?;
    for vector in 0..EXCEPTIONS {
        let offset = STUBS + usize::from(vector) * STUB_SIZE;
        image.code("exception stub", offset, 64, |a| {
            if !has_error_code(vector) {
                a.push(0)?;
            }
            a.push(i32::from(vector))?;
            a.jmp(handler)?;
            Ok(())
        })?;
    }
    Ok(())
}

/// The common handler. Frame on entry: vector, error code, RIP, CS,
/// RFLAGS, RSP, SS; after `push rax` everything sits 8 bytes further up
/// (RIP at +24, CS at +32, SS at +56).
fn emit_common_handler(a: &mut CodeAssembler) -> Asm {
    a.push(rax)?;
    for (slot, record) in [(8, REC_VECTOR), (16, REC_ERROR), (24, REC_RIP)] {
        a.mov(rax, qword_ptr(rsp + slot))?;
        a.mov(qword_ptr(record), rax)?;
    }
    a.mov(rax, cr2)?;
    a.mov(qword_ptr(REC_CR2), rax)?;
    a.mov(rax, qword_ptr(REC_RECOVER))?;
    a.mov(qword_ptr(rsp + 24), rax)?;
    a.mov(qword_ptr(rsp + 32), i32::from(KERNEL_CS))?;
    a.mov(qword_ptr(rsp + 56), KERNEL_SS)?;
    a.mov(rax, qword_ptr(REC_UNEXPECTED))?;
    a.mov(qword_ptr(REC_RECOVER), rax)?;
    a.pop(rax)?;
    a.add(rsp, 16)?;
    a.iretq()?;
    Ok(())
}

/// Appends an IDT to `data` with gates for the exception stubs and the
/// `(vector, image offset)` pairs in `extra`; vectors without a handler
/// stay not present. Returns the linear address of the pseudo-descriptor.
pub(crate) fn push_idt(
    data: &mut DataArea,
    load: u64,
    extra: &[(u8, usize)],
) -> Result<u32, KitError> {
    let top = extra
        .iter()
        .map(|&(vector, _)| usize::from(vector) + 1)
        .max();
    let count = top.unwrap_or(0).max(usize::from(EXCEPTIONS));
    let mut table = vec![0u8; count * 16];
    let stubs = (0..EXCEPTIONS).map(|v| (v, STUBS + usize::from(v) * STUB_SIZE));
    for (vector, offset) in stubs.chain(extra.iter().copied()) {
        let at = usize::from(vector) * 16;
        table[at..at + 16].copy_from_slice(&interrupt_gate(load + offset as u64, KERNEL_CS));
    }
    // The IDT base should be 8-byte aligned (SDM §6.10); use 16.
    data.align(16);
    let base = load + data.push_bytes(&table) as u64;
    let idtr = data.push_bytes(&pseudo_descriptor64(base, table.len()));
    addr32("IDTR", load + idtr as u64)
}

/// One exception a program provokes and what the record must then hold.
pub(crate) struct Expected {
    /// The line printed on success; the part before " (" is stored in the
    /// image, the values in parentheses are printed from the record.
    pub(crate) line: &'static str,
    /// The vector.
    pub(crate) vector: u8,
    /// The error code (0 for vectors without one).
    pub(crate) error: u32,
    /// CR2, checked and printed only for #PF.
    pub(crate) cr2: Option<u32>,
}

/// An [`Expected`] with the linear addresses of its two messages.
pub(crate) struct Case {
    vector: u8,
    error: u32,
    cr2: Option<u32>,
    ok: u64,
    failed: u64,
}

impl Case {
    /// Stores the messages of `expected` in `data`, for an image loaded at
    /// `load`.
    pub(crate) fn new(data: &mut DataArea, load: u64, expected: &Expected) -> Self {
        let title = expected.line.split(" (").next().unwrap_or(expected.line);
        let what = title.strip_prefix("kit: ").unwrap_or(title);
        let what = what.strip_suffix(" ok").unwrap_or(what);
        let fault_address = expected
            .cr2
            .map_or(String::new(), |c| format!(", cr2={c:#x}"));
        let failed = format!(
            "kit: {what} FAILED: wanted vector={:#x}, err={:#x}{fault_address} at the faulting rip; got",
            expected.vector, expected.error
        );
        let ok = data.push_cstr(title);
        let failed = data.push_cstr(&failed);
        Self {
            vector: expected.vector,
            error: expected.error,
            cr2: expected.cr2,
            ok: load + ok as u64,
            failed: load + failed as u64,
        }
    }
}

/// Where the faulting instruction is: a label in the same code part, or a
/// fixed linear address (raw bytes outside the code parts).
#[derive(Clone, Copy)]
pub(crate) enum Rip {
    /// A label on the instruction.
    Label(CodeLabel),
    /// A linear address.
    At(u32),
}

/// Linear addresses of the fragments the record printer needs.
pub(crate) struct Pieces {
    vector: u32,
    error: u32,
    cr2: u32,
    rip: u32,
    close: u32,
    newline: u32,
    unexpected: u32,
}

impl Pieces {
    /// Stores the fragments in `data`.
    pub(crate) fn new(data: &mut DataArea, load: u64) -> Result<Self, KitError> {
        let mut piece = |text: &str| addr32("record text", load + data.push_cstr(text) as u64);
        Ok(Self {
            vector: piece(" (vector=")?,
            error: piece(", err=")?,
            cr2: piece(", cr2=")?,
            rip: piece(", rip=")?,
            close: piece(")\n")?,
            newline: piece("\n")?,
            unexpected: piece("kit: unexpected exception")?,
        })
    }
}

/// The main line's side of the machinery, for one code part: create it
/// before emitting, call [`Faults::emit_routines`] after the last
/// instruction.
pub(crate) struct Faults {
    pieces: Pieces,
    put_hex: CodeLabel,
    report: CodeLabel,
    fail: CodeLabel,
    unexpected: CodeLabel,
}

impl Faults {
    /// Reserves the routine labels in `a`.
    pub(crate) fn new(a: &mut CodeAssembler, pieces: Pieces) -> Self {
        Self {
            pieces,
            put_hex: a.create_label(),
            report: a.create_label(),
            fail: a.create_label(),
            unexpected: a.create_label(),
        }
    }

    /// Loads the IDT at pseudo-descriptor `idtr` and points both recovery
    /// addresses at the unexpected-exception report. Clobbers RAX.
    pub(crate) fn install(&self, a: &mut CodeAssembler, idtr: u32) -> Asm {
        a.lidt(ptr(idtr))?;
        a.lea(rax, ptr(self.unexpected))?;
        a.mov(qword_ptr(REC_UNEXPECTED), rax)?;
        a.mov(qword_ptr(REC_RECOVER), rax)?;
        Ok(())
    }

    /// Makes the next exception resume at `recover` and marks the record
    /// empty (vector -1). Clobbers RAX.
    pub(crate) fn arm(&self, a: &mut CodeAssembler, recover: CodeLabel) -> Asm {
        a.mov(qword_ptr(REC_VECTOR), -1)?;
        a.lea(rax, ptr(recover))?;
        a.mov(qword_ptr(REC_RECOVER), rax)?;
        Ok(())
    }

    /// Checks the record against `case` and the faulting instruction at
    /// `rip`; prints the ok line with the recorded values, or reports the
    /// failure and exits. Clobbers RAX, RCX, RDX, RSI, R8, R15.
    pub(crate) fn check(&self, a: &mut CodeAssembler, uart: &Uart, case: &Case, rip: Rip) -> Asm {
        a.mov(r15d, addr32("failed message", case.failed)?)?;
        a.cmp(qword_ptr(REC_VECTOR), i32::from(case.vector))?;
        a.jne(self.report)?;
        a.cmp(qword_ptr(REC_ERROR), case.error as i32)?;
        a.jne(self.report)?;
        if let Some(address) = case.cr2 {
            a.cmp(qword_ptr(REC_CR2), address as i32)?;
            a.jne(self.report)?;
        }
        match rip {
            Rip::Label(label) => a.lea(rax, ptr(label))?,
            Rip::At(address) => a.mov(eax, address)?,
        }
        a.cmp(qword_ptr(REC_RIP), rax)?;
        a.jne(self.report)?;
        uart.print(a, addr32("ok message", case.ok)?)?;
        self.put_field(a, uart, self.pieces.vector, REC_VECTOR)?;
        self.put_field(a, uart, self.pieces.error, REC_ERROR)?;
        if case.cr2.is_some() {
            self.put_field(a, uart, self.pieces.cr2, REC_CR2)?;
        }
        uart.print(a, self.pieces.close)
    }

    /// Emits `jump` (a conditional jump taken on failure) to a routine that
    /// prints the line `failed` (a linear address; the `mov` that loads it
    /// keeps the flags) and exits with KIT_FAIL.
    pub(crate) fn fail_if(
        &self,
        a: &mut CodeAssembler,
        jump: fn(&mut CodeAssembler, CodeLabel) -> Result<(), IcedError>,
        failed: u32,
    ) -> Asm {
        a.mov(r15d, failed)?;
        jump(a, self.fail)?;
        Ok(())
    }

    /// Prints `text` then the record qword at `record` in hex.
    fn put_field(&self, a: &mut CodeAssembler, uart: &Uart, text: u32, record: u32) -> Asm {
        uart.print(a, text)?;
        a.mov(rax, qword_ptr(record))?;
        a.call(self.put_hex)?;
        Ok(())
    }

    /// Emits the failure paths and `put_hex`: the report (prints the string
    /// R15 points at and the whole record, exits with KIT_FAIL), its
    /// unexpected-exception entry, and the plain failure of
    /// [`Faults::fail_if`].
    pub(crate) fn emit_routines(&mut self, a: &mut CodeAssembler, uart: &Uart) -> Asm {
        a.set_label(&mut self.fail)?;
        a.mov(rsi, r15)?;
        uart.print_si(a)?;
        uart.print(a, self.pieces.newline)?;
        exit(a, KIT_FAIL)?;

        a.set_label(&mut self.unexpected)?;
        a.mov(r15d, self.pieces.unexpected)?;
        a.set_label(&mut self.report)?;
        a.mov(rsi, r15)?;
        uart.print_si(a)?;
        let fields = [
            (self.pieces.vector, REC_VECTOR),
            (self.pieces.error, REC_ERROR),
            (self.pieces.cr2, REC_CR2),
            (self.pieces.rip, REC_RIP),
        ];
        for (text, record) in fields {
            self.put_field(a, uart, text, record)?;
        }
        uart.print(a, self.pieces.close)?;
        exit(a, KIT_FAIL)?;
        emit_put_hex(a, uart, &mut self.put_hex)
    }
}

/// `put_hex`: prints RAX as `0x` and its hex digits without leading zeros.
/// Clobbers RAX, RCX, RDX, R8.
fn emit_put_hex(a: &mut CodeAssembler, uart: &Uart, label: &mut CodeLabel) -> Asm {
    let mut skip = a.create_label();
    let mut digit = a.create_label();
    let mut decimal = a.create_label();
    a.set_label(label)?;
    a.mov(r8, rax)?;
    a.mov(al, u32::from(b'0'))?;
    uart.putc(a)?;
    a.mov(al, u32::from(b'x'))?;
    uart.putc(a)?;
    // ECX = shift of the nibble to print; skip zero nibbles but the last.
    a.mov(ecx, 60u32)?;
    a.set_label(&mut skip)?;
    a.mov(rax, r8)?;
    a.shr(rax, cl)?;
    a.test(al, 0xf)?;
    a.jnz(digit)?;
    a.sub(ecx, 4)?;
    a.jnz(skip)?;
    a.set_label(&mut digit)?;
    a.mov(rax, r8)?;
    a.shr(rax, cl)?;
    a.and(al, 0xf)?;
    a.add(al, i32::from(b'0'))?;
    a.cmp(al, i32::from(b'9'))?;
    a.jbe(decimal)?;
    a.add(al, i32::from(b'a' - b'9' - 1))?;
    a.set_label(&mut decimal)?;
    uart.putc(a)?;
    a.sub(ecx, 4)?;
    a.jns(digit)?;
    a.ret()?;
    Ok(())
}
