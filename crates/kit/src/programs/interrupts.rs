//! `int-roundtrip` and `int-roundtrip-real`: a software interrupt
//! (`int 0x40`) into a handler and back with IRET.
//!
//! * 64-bit (SDM Vol. 3A §6.12.1, §6.14): vector 0x40 is a DPL 0
//!   interrupt gate in the program's IDT (see [`crate::idt`]). INT pushes
//!   SS, RSP, RFLAGS, CS and the address of the *next* instruction, and an
//!   interrupt gate clears IF (§6.12.1.3). The handler counts its calls,
//!   records RFLAGS, the saved RIP and CS, puts a value in RBX and returns
//!   with IRETQ, which restores RIP, CS, RFLAGS, RSP and SS (§6.14.3).
//!   The main line runs the INT with IF=1 (safe: nothing can raise an
//!   external interrupt, there is no interrupt controller yet) and checks
//!   all of it.
//! * Real mode (SDM Vol. 3A §21.1.4, "Interrupt and Exception Handling"):
//!   the vector's CS:IP comes from the IVT at linear 0x100 (4 bytes per
//!   vector from 0, with IDTR base 0, limit 0x3ff); INT pushes FLAGS, CS
//!   and IP and clears IF; IRET pops them.
//!
//! 64-bit image layout: as in [`crate::idt`], the 0x40 handler at +0xb00.
//! Real-mode layout: code +0x000, handler +0x1c0, data +0x200.

use iced_x86::code_asm::*;

use super::{finish, Built, Info};
use crate::arch::RFLAGS_IF;
use crate::cpu::set_stack;
use crate::idt::{emit_handlers, push_idt, Faults, Pieces, DATA, EXTRA};
use crate::image::{addr32, offset16, Asm, DataArea, Image};
use crate::uart::{bsp_only, exit, Uart};
use crate::{
    debug_exit_status, Expect, FlatMode, KitError, DEFAULT_LOAD_ADDRESS, KIT_FAIL, KIT_PASS,
};

/// Registry facts for the 64-bit program.
pub(crate) const LONG: Info = Info {
    name: "int-roundtrip",
    description:
        "64-bit int 0x40 through an interrupt gate and IRETQ back: IF, RIP, CS, RSP, registers",
    mode: FlatMode::Long,
};

/// Registry facts for the real-mode program.
pub(crate) const REAL: Info = Info {
    name: "int-roundtrip-real",
    description: "real-mode int 0x40 through the IVT and IRET back: IF, CS, SP, registers",
    mode: FlatMode::Real,
};

/// The vector both programs use.
const VECTOR: u32 = 0x40;
/// What the handlers leave in (R/E)BX.
const MAGIC: u32 = 0xb0a7;
/// The success line.
const OK: &str = "kit: int round trip ok";

/// 64-bit handler variables (qwords).
const COUNTER: u32 = 0x21000;
const INSIDE_FLAGS: u32 = COUNTER + 8;
const SAVED_RIP: u32 = COUNTER + 16;
const SAVED_CS: u32 = COUNTER + 24;

/// The kernel code selector of the VMM's GDT.
const KERNEL_CS: i32 = 0x08;

/// What can go wrong, in the order the checks run.
const WHY: [&str; 7] = [
    "the handler did not run exactly once",
    "BX does not hold the value the handler left in it",
    "the saved return address is not the instruction after int",
    "the saved CS is not the interrupted code's",
    "IF was not clear inside the handler",
    "IRET did not restore IF=1",
    "the stack pointer differs after the round trip",
];

/// The failure line for reason `why`.
fn failure(why: &str) -> String {
    format!("kit: int round trip FAILED: {why}")
}

/// Assembles `int-roundtrip`.
pub(crate) fn build_long() -> Result<Built, KitError> {
    let load = DEFAULT_LOAD_ADDRESS;
    let mut image = Image::new(load);
    let mut data = DataArea::new(DATA);
    let idtr = push_idt(&mut data, load, &[(VECTOR as u8, EXTRA)])?;
    let pieces = Pieces::new(&mut data, load)?;
    let linear = |offset: usize| addr32("message", load + offset as u64);
    let ok = linear(data.push_cstr(&format!("{OK}\n")))?;
    let mut why = [0u32; WHY.len()];
    for (slot, text) in why.iter_mut().zip(WHY) {
        *slot = linear(data.push_cstr(&failure(text)))?;
    }
    data.place_into(&mut image)?;
    emit_handlers(&mut image)?;
    image.code("int 0x40 handler", EXTRA, 64, emit_long_handler)?;

    image.code(LONG.name, 0, 64, |a| {
        a.cli()?;
        a.cld()?;
        bsp_only(a)?;
        set_stack(a)?;
        let mut uart = Uart::new(a);
        let mut faults = Faults::new(a, pieces);
        Uart::init(a)?;
        faults.install(a, idtr)?;
        round_trip_long(a, &faults, &why)?;
        uart.print(a, ok)?;
        exit(a, KIT_PASS)?;
        faults.emit_routines(a, &uart)?;
        uart.emit_routines(a)
    })?;
    Ok(finish(image, &LONG, expect()))
}

/// Both programs print the same line.
fn expect() -> Expect {
    Expect {
        output: vec![OK],
        status: debug_exit_status(KIT_PASS),
    }
}

/// The 0x40 handler: frame RIP at [RSP], CS at [RSP+8]. It touches no
/// register but RBX (memory-to-memory moves go through push/pop).
fn emit_long_handler(a: &mut CodeAssembler) -> Asm {
    a.inc(qword_ptr(COUNTER))?;
    a.pushfq()?;
    a.pop(qword_ptr(INSIDE_FLAGS))?;
    a.push(qword_ptr(rsp))?;
    a.pop(qword_ptr(SAVED_RIP))?;
    a.push(qword_ptr(rsp + 8))?;
    a.pop(qword_ptr(SAVED_CS))?;
    a.mov(ebx, MAGIC)?;
    a.iretq()?;
    Ok(())
}

/// The INT and the checks; `why` holds the failure lines' addresses.
fn round_trip_long(a: &mut CodeAssembler, faults: &Faults, why: &[u32; WHY.len()]) -> Asm {
    let mut after = a.create_label();
    a.mov(qword_ptr(COUNTER), 0)?;
    a.xor(ebx, ebx)?;
    a.mov(r12, rsp)?;
    a.sti()?;
    a.int(VECTOR)?;
    a.set_label(&mut after)?;
    a.pushfq()?;
    a.pop(r13)?;
    a.cli()?;

    a.cmp(qword_ptr(COUNTER), 1)?;
    faults.fail_if(a, CodeAssembler::jne, why[0])?;
    a.cmp(rbx, MAGIC as i32)?;
    faults.fail_if(a, CodeAssembler::jne, why[1])?;
    a.lea(rax, ptr(after))?;
    a.cmp(qword_ptr(SAVED_RIP), rax)?;
    faults.fail_if(a, CodeAssembler::jne, why[2])?;
    a.cmp(qword_ptr(SAVED_CS), KERNEL_CS)?;
    faults.fail_if(a, CodeAssembler::jne, why[3])?;
    a.test(qword_ptr(INSIDE_FLAGS), RFLAGS_IF as i32)?;
    faults.fail_if(a, CodeAssembler::jnz, why[4])?;
    a.test(r13d, RFLAGS_IF)?;
    faults.fail_if(a, CodeAssembler::jz, why[5])?;
    a.cmp(rsp, r12)?;
    faults.fail_if(a, CodeAssembler::jne, why[6])
}

/// Real-mode image offsets.
const REAL_CODE: usize = 0x000;
const REAL_HANDLER: usize = 0x1c0;
const REAL_DATA: usize = 0x200;
/// Linear (= ES:0 offset) address of the IVT slot of [`VECTOR`].
const IVT_SLOT: u32 = VECTOR * 4;
/// The real-mode IDTR: limit 0x3ff, base 0 (256 four-byte vectors).
const IVT_IDTR: [u8; 6] = [0xff, 0x03, 0, 0, 0, 0];

/// DS offsets (= image offsets) of the real-mode program's data.
struct RealAddrs {
    idtr: u32,
    counter: u32,
    inside: u32,
    saved_cs: u32,
    saved_sp: u32,
    ok: u32,
    why: [u32; WHY.len()],
}

/// Assembles `int-roundtrip-real`.
pub(crate) fn build_real() -> Result<Built, KitError> {
    let mut image = Image::new(DEFAULT_LOAD_ADDRESS);
    let mut data = DataArea::new(REAL_DATA);
    let offset = |what, at: usize| offset16(what, at as u64);
    let idtr = offset("IDTR", data.push_bytes(&IVT_IDTR))?;
    data.align(2);
    let vars = offset("variables", data.push_bytes(&[0; 8]))?;
    let ok = offset("ok message", data.push_cstr(&format!("{OK}\n")))?;
    let mut why = [0u32; WHY.len()];
    for (slot, text) in why.iter_mut().zip(WHY) {
        *slot = offset("failure", data.push_cstr(&format!("{}\n", failure(text))))?;
    }
    data.place_into(&mut image)?;
    let addrs = RealAddrs {
        idtr,
        counter: vars,
        inside: vars + 2,
        saved_cs: vars + 4,
        saved_sp: vars + 6,
        ok,
        why,
    };
    image.code("int 0x40 real-mode handler", REAL_HANDLER, 16, |a| {
        emit_real_handler(a, &addrs)
    })?;
    image.code(REAL.name, REAL_CODE, 16, |a| emit_real_main(a, &addrs))?;
    Ok(finish(image, &REAL, expect()))
}

/// The real-mode handler (DS is still the program's). Frame after
/// `push bp`: old BP, IP, CS, FLAGS.
fn emit_real_handler(a: &mut CodeAssembler, addrs: &RealAddrs) -> Asm {
    a.inc(word_ptr(addrs.counter))?;
    a.pushf()?;
    a.pop(word_ptr(addrs.inside))?;
    a.push(bp)?;
    a.mov(bp, sp)?;
    a.push(word_ptr(bp + 4))?;
    a.pop(word_ptr(addrs.saved_cs))?;
    a.pop(bp)?;
    a.mov(bx, MAGIC)?;
    a.iret()?;
    Ok(())
}

/// Real-mode main line: install the vector, INT, check.
fn emit_real_main(a: &mut CodeAssembler, addrs: &RealAddrs) -> Asm {
    let mut uart = Uart::new(a);
    let mut fail = a.create_label();
    a.cli()?;
    a.cld()?;
    bsp_only(a)?;
    a.mov(ax, cs)?;
    a.mov(ds, ax)?;
    Uart::init(a)?;
    // The reset IDTR may have a 64 KiB limit; make the IVT explicit.
    a.lidt(ptr(addrs.idtr))?;
    // IVT slot: offset word, then segment word, through ES = 0.
    a.xor(ax, ax)?;
    a.mov(es, ax)?;
    a.mov(word_ptr(IVT_SLOT).es(), REAL_HANDLER as u32)?;
    a.mov(ax, cs)?;
    a.mov(word_ptr(IVT_SLOT + 2).es(), ax)?;

    a.mov(word_ptr(addrs.counter), 0u32)?;
    a.xor(bx, bx)?;
    a.mov(word_ptr(addrs.saved_sp), sp)?;
    a.sti()?;
    a.int(VECTOR)?;
    a.pushf()?;
    a.pop(cx)?;
    a.cli()?;

    let why = &addrs.why;
    a.cmp(word_ptr(addrs.counter), 1)?;
    fail_if(a, CodeAssembler::jne, why[0], fail)?;
    a.cmp(bx, MAGIC)?;
    fail_if(a, CodeAssembler::jne, why[1], fail)?;
    a.mov(ax, cs)?;
    a.cmp(word_ptr(addrs.saved_cs), ax)?;
    fail_if(a, CodeAssembler::jne, why[3], fail)?;
    a.test(word_ptr(addrs.inside), RFLAGS_IF)?;
    fail_if(a, CodeAssembler::jnz, why[4], fail)?;
    a.test(cx, RFLAGS_IF)?;
    fail_if(a, CodeAssembler::jz, why[5], fail)?;
    a.cmp(word_ptr(addrs.saved_sp), sp)?;
    fail_if(a, CodeAssembler::jne, why[6], fail)?;
    uart.print(a, addrs.ok)?;
    exit(a, KIT_PASS)?;

    a.set_label(&mut fail)?;
    uart.print_si(a)?;
    exit(a, KIT_FAIL)?;
    uart.emit_routines(a)
}

/// `mov si, message` (keeps the flags) and `jump` to `fail` in 16-bit code.
fn fail_if(
    a: &mut CodeAssembler,
    jump: fn(&mut CodeAssembler, CodeLabel) -> Result<(), IcedError>,
    message: u32,
    fail: CodeLabel,
) -> Asm {
    a.mov(si, message)?;
    jump(a, fail)?;
    Ok(())
}
