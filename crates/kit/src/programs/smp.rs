//! `smp-hello`: every vCPU runs this same code in 64-bit mode, with
//! RDI = its index and RSI = the vCPU count.
//!
//! Shared state lives at fixed addresses and relies on guest RAM starting
//! zeroed (a fresh VM): nobody can initialize it without racing the others.
//!
//! * `LOCK` (dword at 0x20000): a spinlock around the print, taken with
//!   `lock cmpxchg`.
//! * `COUNTER` (dword at 0x20008): arrivals, bumped with `lock xadd`.
//!
//! Each CPU first waits until `COUNTER` equals its own index, so the lines
//! come out in index order and a test can expect them in order; the lock
//! still guards the UART. The CPU that brings `COUNTER` to the vCPU count
//! (the last one) prints the summary and exits; the others park.
//!
//! Image layout: code at +0x000, data at +0x200.

use iced_x86::code_asm::*;

use super::{finish, Built, Info};
use crate::cpu::set_stack;
use crate::image::{addr32, Asm, DataArea, Image};
use crate::uart::{exit, park, Uart};
use crate::{debug_exit_status, Expect, FlatMode, KitError, DEFAULT_LOAD_ADDRESS, KIT_PASS};

/// Registry facts.
pub(crate) const INFO: Info = Info {
    name: "smp-hello",
    description:
        "64-bit long mode on every vCPU: spinlocked prints in index order, atomic arrival counter",
    mode: FlatMode::Long,
};

const CODE: usize = 0x000;
const DATA: usize = 0x200;

/// Spinlock dword: 0 = free, 1 = held.
const LOCK: u32 = 0x20000;
/// Arrival counter dword.
const COUNTER: u32 = 0x20008;

/// Strings the code prints around the decimal numbers (linear addresses).
struct Strings {
    cpu: u32,
    up: u32,
    all: u32,
    cpus_up: u32,
}

/// Assembles `smp-hello`.
pub(crate) fn build() -> Result<Built, KitError> {
    let mut image = Image::new(DEFAULT_LOAD_ADDRESS);
    let mut data = DataArea::new(DATA);
    let offsets = [
        data.push_cstr("kit: cpu "),
        data.push_cstr(" up\n"),
        data.push_cstr("kit: all "),
        data.push_cstr(" cpus up\n"),
    ];
    data.place_into(&mut image)?;
    let [cpu, up, all, cpus_up] = offsets.map(|offset| addr32("string", image.linear(offset)));
    let strings = Strings {
        cpu: cpu?,
        up: up?,
        all: all?,
        cpus_up: cpus_up?,
    };

    image.code("smp-hello code", CODE, 64, |a| emit(a, &strings))?;
    Ok(finish(image, &INFO, smp_expect(1)))
}

/// The whole program. R12D = vCPU count and R13D = index, because the
/// print routine clobbers RSI and the stack setup clobbers RAX.
fn emit(a: &mut CodeAssembler, strings: &Strings) -> Asm {
    let mut uart = Uart::new(a);
    let mut put_dec = a.create_label();
    let mut not_last = a.create_label();
    a.cli()?;
    a.cld()?;
    a.mov(r12d, esi)?;
    a.mov(r13d, edi)?;
    set_stack(a)?;

    wait_for_turn(a)?;
    acquire(a)?;
    Uart::init(a)?;
    uart.print(a, strings.cpu)?;
    a.mov(eax, r13d)?;
    a.call(put_dec)?;
    uart.print(a, strings.up)?;
    // Release: a plain store suffices, x86 does not reorder it before the
    // earlier stores and port writes (SDM 9.2.2, memory ordering).
    a.mov(dword_ptr(LOCK), 0u32)?;

    // Arrive: XADD returns the old count, so old + 1 == count means last.
    a.mov(eax, 1u32)?;
    a.lock().xadd(dword_ptr(COUNTER), eax)?;
    a.inc(eax)?;
    a.cmp(eax, r12d)?;
    a.jne(not_last)?;
    uart.print(a, strings.all)?;
    a.mov(eax, r12d)?;
    a.call(put_dec)?;
    uart.print(a, strings.cpus_up)?;
    exit(a, KIT_PASS)?;

    a.set_label(&mut not_last)?;
    park(a)?;
    emit_put_dec(a, &uart, &mut put_dec)?;
    uart.emit_routines(a)
}

/// Spins (with `pause`, the spin-wait hint) until COUNTER == R13D.
fn wait_for_turn(a: &mut CodeAssembler) -> Asm {
    let mut check = a.create_label();
    let mut go = a.create_label();
    a.set_label(&mut check)?;
    a.cmp(dword_ptr(COUNTER), r13d)?;
    a.je(go)?;
    a.pause()?;
    a.jmp(check)?;
    a.set_label(&mut go)?;
    Ok(())
}

/// Takes the spinlock: `lock cmpxchg [LOCK], 1` stores 1 only if the lock
/// still holds EAX = 0, atomically (SDM Vol. 2A, CMPXCHG), and sets ZF on
/// success. On failure, spin reading until it looks free, then retry.
fn acquire(a: &mut CodeAssembler) -> Asm {
    let mut retry = a.create_label();
    let mut held = a.create_label();
    let mut wait = a.create_label();
    a.mov(ecx, 1u32)?;
    a.set_label(&mut retry)?;
    a.xor(eax, eax)?;
    a.lock().cmpxchg(dword_ptr(LOCK), ecx)?;
    a.je(held)?;
    a.set_label(&mut wait)?;
    a.pause()?;
    a.cmp(dword_ptr(LOCK), 0u32)?;
    a.jne(wait)?;
    a.jmp(retry)?;
    a.set_label(&mut held)?;
    Ok(())
}

/// `put_dec`: prints EAX in decimal. Divides by 10 until zero, pushing the
/// digits, then pops them most significant first. Clobbers RAX, RCX, RDX,
/// R8.
pub(crate) fn emit_put_dec(a: &mut CodeAssembler, uart: &Uart, label: &mut CodeLabel) -> Asm {
    let mut divide = a.create_label();
    let mut print = a.create_label();
    a.set_label(label)?;
    a.xor(r8d, r8d)?;
    a.mov(ecx, 10u32)?;
    a.set_label(&mut divide)?;
    a.xor(edx, edx)?;
    a.div(ecx)?;
    a.add(dl, i32::from(b'0'))?;
    a.push(rdx)?;
    a.inc(r8d)?;
    a.test(eax, eax)?;
    a.jnz(divide)?;
    a.set_label(&mut print)?;
    a.pop(rax)?;
    uart.putc(a)?;
    a.dec(r8d)?;
    a.jnz(print)?;
    a.ret()?;
    Ok(())
}

/// Builds `concat!(prefix, n, suffix)` for each listed number.
macro_rules! lines {
    ($prefix:literal, $suffix:literal; $($n:literal)*) => {
        [$(concat!($prefix, $n, $suffix)),*]
    };
}

/// `CPU_UP[i]` is the line vCPU `i` prints.
const CPU_UP: [&str; 16] = lines!("kit: cpu ", " up"; 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);
/// `ALL_UP[n - 1]` is the summary for `n` vCPUs.
const ALL_UP: [&str; 16] = lines!("kit: all ", " cpus up"; 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16);

/// What `smp-hello` prints and returns when run with `cpus` vCPUs: one
/// "kit: cpu N up" line per vCPU in index order, then "kit: all N cpus up",
/// exit status 0x21. `cpus = 0` is treated as 1. Counts above 16 use
/// leaked strings (fine for tests, which call this a few times).
pub fn smp_expect(cpus: u32) -> Expect {
    let cpus = cpus.max(1);
    let mut output: Vec<&'static str> = (0..cpus)
        .map(|i| line(&CPU_UP, i as usize, || format!("kit: cpu {i} up")))
        .collect();
    output.push(line(&ALL_UP, cpus as usize - 1, || {
        format!("kit: all {cpus} cpus up")
    }));
    Expect {
        output,
        status: debug_exit_status(KIT_PASS),
    }
}

/// `table[index]`, or a leaked copy of `make()` beyond the table.
fn line(table: &[&'static str], index: usize, make: impl FnOnce() -> String) -> &'static str {
    match table.get(index) {
        Some(line) => line,
        None => Box::leak(make().into_boxed_str()),
    }
}
