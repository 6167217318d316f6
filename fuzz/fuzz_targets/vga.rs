//! Fuzzes the VGA adapter as the guest drives it: its I/O ports
//! (0x3B0-0x3DF) at any width and offset, CPU reads and writes of the
//! memory window (0xA0000-0xBFFFF) under whatever sequencer and graphics
//! controller modes the ports set, and the host's side: taking the text
//! screen, rendering it for a terminal, and translating terminal input to
//! scancodes.
//!
//! Asserts, whatever the guest writes: no panic; a read fills only its
//! width; the text screen is `rows × cols` cells within the bounds of
//! `vga::text` with the cursor inside it; rendering the same screen twice
//! produces no bytes the second time; `inspect()` never panics.
//!
//! Input: a sequence of [`common::Op`]s. Reads and writes are port
//! accesses, offsets from 0x3B0. `Other { what, arg }` selects by
//! `what & 3`: 0, a memory write of width `[1, 2, 4, 8][(what >> 2) & 3]`
//! at offset `arg & 0x1ffff` from 0xA0000 of the value `arg >> 24`; 1, a
//! memory read of that width there; 2, take the screen and render it;
//! 3, translate the eight bytes of `arg` as terminal input. Time steps
//! inspect the device.

#![no_main]

#[path = "common.rs"]
mod common;

use alcazar_devices::i8042_keys::KeyTranslator;
use alcazar_devices::vga::{text, AnsiRenderer, Vga};
use common::{Input, Op};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (vga, mut ports, mut mem) = Vga::shared();
    let mut renderer = AnsiRenderer::new();
    let mut keys = KeyTranslator::new();
    let mut input = Input(data);
    while !input.is_empty() {
        let op = input.op(0x30);
        match op {
            Op::Read { offset, width } => {
                common::read(&mut ports, offset, width);
            }
            Op::Write {
                offset,
                width,
                value,
            } => common::write(&mut ports, offset, width, value),
            Op::Time { .. } => common::inspect(&ports),
            Op::Other { what, arg } => {
                let width = [1, 2, 4, 8][usize::from((what >> 2) & 3)];
                let offset = arg & 0x1_ffff;
                match what & 3 {
                    0 => common::write(&mut mem, offset, width, arg >> 24),
                    1 => {
                        common::read(&mut mem, offset, width);
                    }
                    2 => {
                        let screen = vga.lock().expect("not poisoned").text_screen();
                        assert!(screen.rows <= text::MAX_ROWS && screen.cols <= text::MAX_COLS);
                        assert_eq!(screen.cells.len(), screen.rows * screen.cols);
                        if let Some((r, c)) = screen.cursor {
                            assert!(r < screen.rows && c < screen.cols, "cursor off screen");
                        }
                        let _ = screen.lines();
                        renderer.frame(&screen);
                        assert!(
                            renderer.frame(&screen).is_empty(),
                            "redraw of a still screen"
                        );
                    }
                    _ => {
                        let _ = keys.translate_to_vec(&arg.to_le_bytes());
                    }
                }
            }
        }
    }
    common::inspect(&mem);
});
