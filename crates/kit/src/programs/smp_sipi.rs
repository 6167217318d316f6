//! `smp-sipi`: the MP initialization protocol (SDM Vol. 3A §8.4.4, MP
//! specification appendix B.4): the application processors start in
//! wait-for-SIPI ([`crate::KitProgram::aps_wait_for_sipi`]); the bootstrap
//! CPU, in 64-bit mode, software-enables its xAPIC and sends each AP, by
//! physical APIC ID 1..count-1, an INIT IPI then a STARTUP IPI whose vector
//! points at a real-mode trampoline in this image below 1 MiB.
//!
//! Each AP starts there at CS = vector << 8, IP = 0, reads its initial
//! APIC ID from CPUID leaf 1 (EBX[31:24]), waits for its turn (the arrival
//! counter equal to its ID - 1, so lines come out in ID order), prints
//! "kit: ap N up", bumps the counter and parks. The BSP waits (with
//! `pause`) until every AP arrived, then prints the summary and exits.
//!
//! Image layout: BSP code +0x0000, data +0x0800, trampoline +0x1000 (the
//! page at 0x11000: STARTUP vector 0x11), its strings +0x1c00, the arrival
//! counter at +0x2000 (its own page, away from code).

use iced_x86::code_asm::*;

use super::{finish, smp::emit_put_dec, Built, Info};
use crate::cpu::set_stack;
use crate::image::{addr32, offset16, Asm, DataArea, Image};
use crate::uart::{exit, park, Uart};
use crate::{debug_exit_status, Expect, FlatMode, KitError, DEFAULT_LOAD_ADDRESS, KIT_PASS};

/// Registry facts.
pub(crate) const INFO: Info = Info {
    name: "smp-sipi",
    description: "BSP starts the APs with INIT + STARTUP IPIs into a real-mode trampoline",
    mode: FlatMode::Long,
};

const BSP_DATA: usize = 0x800;
const TRAMPOLINE: usize = 0x1000;
const TRAMPOLINE_DATA: usize = 0x1c00;
const COUNTER_OFFSET: usize = 0x2000;

/// The STARTUP vector: the trampoline's 4 KiB page number.
const SIPI_VECTOR: u64 = (DEFAULT_LOAD_ADDRESS + TRAMPOLINE as u64) >> 12;
/// The trampoline's real-mode code segment (CS = vector << 8).
const TRAMPOLINE_CS: u64 = SIPI_VECTOR << 8;

/// The xAPIC page (default base), reached through R14 (a 64-bit
/// displacement sign-extends), and the register offsets used.
const APIC: u32 = 0xfee0_0000;
const SVR: i32 = 0xf0;
const ICR_LOW: i32 = 0x300;
const ICR_HIGH: i32 = 0x310;
/// ICR: delivery mode INIT (101b), level assert.
const ICR_INIT: u32 = 5 << 8 | 1 << 14;
/// ICR: delivery mode STARTUP (110b), level assert, the vector.
const ICR_STARTUP: u32 = 6 << 8 | 1 << 14 | SIPI_VECTOR as u32;
/// ICR delivery status: the previous IPI is still being sent.
const ICR_BUSY: u32 = 1 << 12;

/// Builds `concat!(prefix, n, suffix)` for each listed number.
macro_rules! lines {
    ($prefix:literal, $suffix:literal; $($n:literal)*) => {
        [$(concat!($prefix, $n, $suffix)),*]
    };
}

/// `AP_UP[i]` is the line AP `i` prints.
const AP_UP: [&str; 16] = lines!("kit: ap ", " up"; 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);
/// `ALL_UP[n - 1]` is the summary for `n` vCPUs.
const ALL_UP: [&str; 16] =
    lines!("kit: all ", " cpus up via sipi"; 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16);

/// What `smp-sipi` prints and returns with `cpus` vCPUs (1..=16; more
/// are clamped to 16): one line per AP in APIC ID order, then the
/// summary; exit status 0x21.
pub fn smp_sipi_expect(cpus: u32) -> Expect {
    let cpus = cpus.clamp(1, 16) as usize;
    let mut output: Vec<&'static str> = AP_UP[1..cpus].to_vec();
    output.push(ALL_UP[cpus - 1]);
    Expect {
        output,
        status: debug_exit_status(KIT_PASS),
    }
}

/// Assembles `smp-sipi`.
pub(crate) fn build() -> Result<Built, KitError> {
    let load = DEFAULT_LOAD_ADDRESS;
    let mut image = Image::new(load);

    let mut data = DataArea::new(BSP_DATA);
    let all = data.push_cstr("kit: all ");
    let via = data.push_cstr(" cpus up via sipi\n");
    data.place_into(&mut image)?;
    let all = addr32("string", image.linear(all))?;
    let via = addr32("string", image.linear(via))?;
    let counter = addr32("counter", image.linear(COUNTER_OFFSET))?;

    // The trampoline's DS is its CS: offsets from the trampoline page.
    let mut ap_data = DataArea::new(TRAMPOLINE_DATA);
    let ap = ap_data.push_cstr("kit: ap ");
    let up = ap_data.push_cstr(" up\n");
    ap_data.place_into(&mut image)?;
    let ds_offset = |what, at: usize| offset16(what, (at - TRAMPOLINE) as u64);
    let ap = ds_offset("string", ap)?;
    let up = ds_offset("string", up)?;
    let ap_counter = ds_offset("counter", COUNTER_OFFSET)?;
    image.place("arrival counter", COUNTER_OFFSET, &[0; 8])?;

    image.code("smp-sipi trampoline", TRAMPOLINE, 16, |a| {
        emit_trampoline(a, ap, up, ap_counter)
    })?;
    image.code(INFO.name, 0, 64, |a| emit_bsp(a, all, via, counter))?;
    Ok(finish_sipi(image))
}

/// Like [`finish`], marking the program as one whose APs wait for SIPI.
fn finish_sipi(image: Image) -> Built {
    let mut built = finish(image, &INFO, smp_sipi_expect(1));
    built.program.aps_wait_for_sipi = true;
    built
}

/// The BSP: enable the APIC, INIT + STARTUP each AP, wait, report.
/// R12D = vCPU count (RSI at entry).
fn emit_bsp(a: &mut CodeAssembler, all: u32, via: u32, counter: u32) -> Asm {
    let mut uart = Uart::new(a);
    let mut put_dec = a.create_label();
    let mut next_ap = a.create_label();
    let mut sent = a.create_label();
    let mut wait = a.create_label();
    let mut arrived = a.create_label();
    a.cli()?;
    a.cld()?;
    a.mov(r12d, esi)?;
    set_stack(a)?;
    Uart::init(a)?;
    // SVR: software enable, spurious vector 0xff.
    a.mov(r14d, APIC)?;
    a.mov(dword_ptr(r14 + SVR), 0x1ffu32)?;

    a.mov(r13d, 1u32)?;
    a.set_label(&mut next_ap)?;
    a.cmp(r13d, r12d)?;
    a.jae(sent)?;
    a.mov(eax, r13d)?;
    a.shl(eax, 24)?;
    a.mov(dword_ptr(r14 + ICR_HIGH), eax)?;
    a.mov(dword_ptr(r14 + ICR_LOW), ICR_INIT)?;
    wait_idle(a)?;
    a.mov(dword_ptr(r14 + ICR_HIGH), eax)?;
    a.mov(dword_ptr(r14 + ICR_LOW), ICR_STARTUP)?;
    wait_idle(a)?;
    a.inc(r13d)?;
    a.jmp(next_ap)?;
    a.set_label(&mut sent)?;

    // Wait for count - 1 arrivals.
    a.lea(ecx, dword_ptr(r12 - 1))?;
    a.set_label(&mut wait)?;
    a.cmp(dword_ptr(counter), ecx)?;
    a.je(arrived)?;
    a.pause()?;
    a.jmp(wait)?;
    a.set_label(&mut arrived)?;
    uart.print(a, all)?;
    a.mov(eax, r12d)?;
    a.call(put_dec)?;
    uart.print(a, via)?;
    exit(a, KIT_PASS)?;
    emit_put_dec(a, &uart, &mut put_dec)?;
    uart.emit_routines(a)
}

/// Polls the ICR's delivery status until the IPI left (SDM Vol. 3A
/// §10.6.1). Keeps EAX.
fn wait_idle(a: &mut CodeAssembler) -> Asm {
    let mut busy = a.create_label();
    a.set_label(&mut busy)?;
    a.test(dword_ptr(r14 + ICR_LOW), ICR_BUSY)?;
    a.jnz(busy)?;
    Ok(())
}

/// The AP's real-mode entry (CS = [`TRAMPOLINE_CS`], IP = 0, the INIT
/// state: IF = 0, every other segment base 0).
fn emit_trampoline(a: &mut CodeAssembler, ap: u32, up: u32, counter: u32) -> Asm {
    let mut uart = Uart::new(a);
    let mut turn = a.create_label();
    let mut go = a.create_label();
    let mut units = a.create_label();
    a.cli()?;
    a.cld()?;
    a.mov(ax, TRAMPOLINE_CS as u32)?;
    a.mov(ds, ax)?;
    // CPUID.1:EBX[31:24] = initial APIC ID, kept in DI.
    a.mov(eax, 1u32)?;
    a.cpuid()?;
    a.shr(ebx, 24)?;
    a.mov(di, bx)?;
    // Stack: SS = 0x9000, SP = 0xf000 - id * 0x1000 (the kit convention).
    a.mov(ax, 0x9000u32)?;
    a.mov(ss, ax)?;
    a.mov(ax, di)?;
    a.shl(ax, 12)?;
    a.mov(sp, 0xf000u32)?;
    a.sub(sp, ax)?;
    // Wait until counter == id - 1.
    a.set_label(&mut turn)?;
    a.mov(ax, word_ptr(counter))?;
    a.inc(ax)?;
    a.cmp(ax, di)?;
    a.je(go)?;
    a.pause()?;
    a.jmp(turn)?;
    a.set_label(&mut go)?;
    uart.print(a, ap)?;
    // Two decimal digits at most (the kit runs up to 16 vCPUs).
    a.mov(ax, di)?;
    a.mov(bl, 10u32)?;
    a.div(bl)?;
    a.mov(cx, ax)?;
    a.test(al, al)?;
    a.jz(units)?;
    a.add(al, i32::from(b'0'))?;
    uart.putc(a)?;
    a.set_label(&mut units)?;
    a.mov(al, ch)?;
    a.add(al, i32::from(b'0'))?;
    uart.putc(a)?;
    uart.print(a, up)?;
    a.lock().inc(dword_ptr(counter))?;
    park(a)?;
    uart.emit_routines(a)
}
