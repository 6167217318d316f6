//! `ticker` and `spinner`: real-mode loops that the lifecycle and API
//! tests pause, resume, inspect and stop.
//!
//! It counts loop iterations in a dword at [`COUNTER_ADDRESS`] and stores
//! the TSC it last read in the qword after it, until 2^30 TSC ticks have
//! passed since its start (about a second on the emu engine's 1 GHz TSC);
//! then it prints a line and exits through debug-exit. A test that pauses
//! the VM sees the counter stand still (the vCPUs are parked) and, on the
//! emu engine, the stored TSC too (the guest clock is frozen).
//!
//! `spinner` is the same loop without the end: it prints its line first
//! and then counts until the VMM stops it.
//!
//! Image layout: code at +0x000, data at +0x100.

use iced_x86::code_asm::*;

use super::{finish, Built, Info};
use crate::image::{offset16, DataArea, Image};
use crate::uart::{bsp_only, exit, Uart};
use crate::{debug_exit_status, Expect, FlatMode, KitError, DEFAULT_LOAD_ADDRESS, KIT_PASS};

/// Registry facts.
pub(crate) const INFO: Info = Info {
    name: "ticker",
    description:
        "real mode: counts iterations and samples the TSC for 2^30 ticks (pause/resume tests)",
    mode: FlatMode::Real,
};

/// Guest-physical address of the iteration counter (a dword); the last
/// TSC read follows it (a qword at +4), then the start TSC (+12).
pub const COUNTER_ADDRESS: u64 = 0x7000;

const CODE: usize = 0x000;
const DATA: usize = 0x100;
const MESSAGE: &str = "kit: ticker done\n";
const SPINNER_MESSAGE: &str = "kit: spinning until stopped\n";
/// How long the loop runs, in TSC ticks.
const RUN_TICKS: u32 = 1 << 30;

/// Registry facts of `spinner`.
pub(crate) const SPINNER: Info = Info {
    name: "spinner",
    description: "real mode: prints a line, then counts iterations until stopped (API tests)",
    mode: FlatMode::Real,
};

/// Assembles `ticker`.
pub(crate) fn build() -> Result<Built, KitError> {
    build_loop(false)
}

/// Assembles `spinner`.
pub(crate) fn build_spinner() -> Result<Built, KitError> {
    build_loop(true)
}

fn build_loop(forever: bool) -> Result<Built, KitError> {
    let info = if forever { &SPINNER } else { &INFO };
    let mut image = Image::new(DEFAULT_LOAD_ADDRESS);
    let mut data = DataArea::new(DATA);
    let text = if forever { SPINNER_MESSAGE } else { MESSAGE };
    let message = offset16("ticker message", data.push_cstr(text) as u64)?;
    data.place_into(&mut image)?;
    let counter = COUNTER_ADDRESS as u32;
    let last = counter + 4;
    let start = counter + 12;

    image.code("ticker code", CODE, 16, |a| {
        a.cli()?;
        a.cld()?;
        bsp_only(a)?;
        let mut uart = Uart::new(a);
        if forever {
            a.mov(ax, cs)?;
            a.mov(ds, ax)?;
            Uart::init(a)?;
            uart.print(a, message)?;
        }
        // DS = 0: the counter's DS offset is its physical address.
        a.xor(ax, ax)?;
        a.mov(ds, ax)?;
        a.mov(dword_ptr(counter), 0)?;
        a.rdtsc()?;
        a.mov(dword_ptr(start), eax)?;
        a.mov(dword_ptr(start + 4), edx)?;
        let mut again = a.create_label();
        let mut done = a.create_label();
        a.set_label(&mut again)?;
        a.inc(dword_ptr(counter))?;
        a.rdtsc()?;
        a.mov(dword_ptr(last), eax)?;
        a.mov(dword_ptr(last + 4), edx)?;
        // Elapsed = now - start (64-bit); done once it reaches RUN_TICKS.
        if forever {
            a.jmp(again)?;
        }
        a.sub(eax, dword_ptr(start))?;
        a.sbb(edx, dword_ptr(start + 4))?;
        a.test(edx, edx)?;
        a.jnz(done)?;
        a.cmp(eax, RUN_TICKS as i32)?;
        a.jb(again)?;
        a.set_label(&mut done)?;
        // Back to DS = CS for the message.
        a.mov(ax, cs)?;
        a.mov(ds, ax)?;
        Uart::init(a)?;
        uart.print(a, message)?;
        exit(a, KIT_PASS)?;
        uart.emit_routines(a)
    })?;

    let expect = Expect {
        output: vec![text.trim_end()],
        status: debug_exit_status(KIT_PASS),
    };
    Ok(finish(image, info, expect))
}
