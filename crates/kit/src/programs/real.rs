//! `real-hello`: the smallest program. 16-bit real mode, prints one line
//! from string data addressed through DS, exits through debug-exit.
//!
//! Image layout: code at +0x000, data at +0x100.

use iced_x86::code_asm::*;

use super::{finish, Built, Info};
use crate::image::{offset16, DataArea, Image};
use crate::uart::{bsp_only, exit, Uart};
use crate::{debug_exit_status, Expect, FlatMode, KitError, DEFAULT_LOAD_ADDRESS, KIT_PASS};

/// Registry facts.
pub(crate) const INFO: Info = Info {
    name: "real-hello",
    description:
        "16-bit real mode: prints a DS-relative string through the UART, exits via debug-exit",
    mode: FlatMode::Real,
};

const CODE: usize = 0x000;
const DATA: usize = 0x100;
const MESSAGE: &str = "kit: real mode ok\n";

/// Assembles `real-hello`.
pub(crate) fn build() -> Result<Built, KitError> {
    let mut image = Image::new(DEFAULT_LOAD_ADDRESS);
    let mut data = DataArea::new(DATA);
    // Real-mode addresses are segment * 16 + offset (SDM Vol. 3B, "Address
    // Translation in Real-Address FlatMode"). With
    // DS = load >> 4 the segment base is the load address, so a string's
    // DS offset is simply its offset inside the image.
    let message = offset16("real-hello message", data.push_cstr(MESSAGE) as u64)?;
    data.place_into(&mut image)?;

    image.code("real-hello code", CODE, 16, |a| {
        a.cli()?;
        a.cld()?;
        bsp_only(a)?;
        // The VMM already sets DS = CS; copying CS makes the dependency of
        // the string addresses on DS explicit (no `mov ds, imm` exists).
        a.mov(ax, cs)?;
        a.mov(ds, ax)?;
        let mut uart = Uart::new(a);
        Uart::init(a)?;
        uart.print(a, message)?;
        exit(a, KIT_PASS)?;
        uart.emit_routines(a)
    })?;

    let expect = Expect {
        output: vec!["kit: real mode ok"],
        status: debug_exit_status(KIT_PASS),
    };
    Ok(finish(image, &INFO, expect))
}
