//! A text screen drawn in an ANSI terminal.
//!
//! [`render`] compares the previous frame with the current one and writes
//! only what changed: cursor positioning (`CSI row;col H`), colours
//! (`SGR` with the 16 standard colours: attribute bits 0-3 are the
//! foreground, bit 3 making it bright (90-97); bits 4-6 the background,
//! made bright (100-107) by bit 7 when the attribute controller's mode
//! control bit 3 selects background intensity rather than blink; with
//! blink selected bit 7 is ignored, as nothing blinks here), the changed
//! characters as UTF-8 (code page 437 converted), then the cursor's place
//! and whether it shows (`CSI ?25h` / `CSI ?25l`). The first frame, or one
//! of another size, clears the terminal and draws every cell. Sequences
//! are ECMA-48's (CUP, ED, SGR) plus the DEC private cursor-visibility
//! mode that xterm and every current terminal accept.
//!
//! The renderer is pure: it writes to any `Write`, so tests read its
//! bytes. The VMM's console thread calls [`AnsiRenderer::frame`] some 30
//! times a second and writes the result to the terminal; an unchanged
//! screen produces no bytes.

use std::io::{self, Write};

use super::text::{cp437, TextScreen};

/// CGA colour numbers (blue = 1, red = 4) to ANSI's (red = 1, blue = 4).
const CGA_TO_ANSI: [u8; 8] = [0, 4, 2, 6, 1, 5, 3, 7];

/// The SGR parameters for an attribute byte.
fn sgr(attr: u8, blink: bool) -> (u8, u8) {
    let fg = attr & 0x0f;
    let bg = (attr >> 4) & 0x07;
    let fg_code = if fg & 8 != 0 { 90 } else { 30 } + CGA_TO_ANSI[usize::from(fg & 7)];
    let bright_bg = !blink && attr & 0x80 != 0;
    let bg_code = if bright_bg { 100 } else { 40 } + CGA_TO_ANSI[usize::from(bg)];
    (fg_code, bg_code)
}

/// Writes the escape sequences that turn a terminal showing `prev` (or
/// anything, when `None`) into one showing `cur`.
pub fn render(prev: Option<&TextScreen>, cur: &TextScreen, out: &mut impl Write) -> io::Result<()> {
    let prev = prev.filter(|p| p.rows == cur.rows && p.cols == cur.cols);
    let mut pos: Option<(usize, usize)> = None;
    let mut colours: Option<(u8, u8)> = None;
    if prev.is_none() {
        out.write_all(b"\x1b[0m\x1b[2J\x1b[H")?;
        pos = Some((0, 0));
    }
    let mut wrote = false;
    let mut buf = [0u8; 4];
    for r in 0..cur.rows {
        for c in 0..cur.cols {
            let cell = cur.cell(r, c);
            let want = sgr(cell.attr, cur.blink);
            if let Some(p) = prev {
                let old = p.cell(r, c);
                if old.ch == cell.ch && sgr(old.attr, p.blink) == want {
                    continue;
                }
            }
            if pos != Some((r, c)) {
                write!(out, "\x1b[{};{}H", r + 1, c + 1)?;
            }
            if colours != Some(want) {
                write!(out, "\x1b[0;{};{}m", want.0, want.1)?;
                colours = Some(want);
            }
            out.write_all(cp437(cell.ch).encode_utf8(&mut buf).as_bytes())?;
            wrote = true;
            // After the last column the terminal's cursor is in its
            // pending-wrap state: position explicitly next time.
            pos = (c + 1 < cur.cols).then_some((r, c + 1));
        }
    }
    if wrote {
        out.write_all(b"\x1b[0m")?;
    }
    let prev_cursor = prev.map(|p| p.cursor);
    if let Some((r, c)) = cur.cursor {
        if wrote || prev_cursor != Some(cur.cursor) {
            write!(out, "\x1b[{};{}H", r + 1, c + 1)?;
        }
    }
    let shown = cur.cursor.is_some();
    if prev_cursor.map(|c| c.is_some()) != Some(shown) {
        out.write_all(if shown { b"\x1b[?25h" } else { b"\x1b[?25l" })?;
    }
    Ok(())
}

/// Keeps the last frame drawn, so each call draws only the changes.
#[derive(Clone, Debug, Default)]
pub struct AnsiRenderer {
    prev: Option<TextScreen>,
}

impl AnsiRenderer {
    /// A renderer whose first frame clears the terminal.
    pub fn new() -> Self {
        Self::default()
    }

    /// The bytes that bring the terminal from the last frame to `cur`
    /// (empty if nothing changed).
    pub fn frame(&mut self, cur: &TextScreen) -> Vec<u8> {
        let mut out = Vec::new();
        // Writing to a Vec cannot fail.
        let _ = render(self.prev.as_ref(), cur, &mut out);
        self.prev = Some(cur.clone());
        out
    }

    /// What to write to the terminal when the VGA stops owning it:
    /// default colours and a visible cursor.
    pub fn restore() -> &'static [u8] {
        b"\x1b[0m\x1b[?25h"
    }

    /// Forgets the last frame: the next one redraws everything (after the
    /// terminal was cleared or resized, or other output went to it).
    pub fn invalidate(&mut self) {
        self.prev = None;
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::bios_mode3;
    use super::super::Vga;
    use super::*;

    fn put(v: &mut Vga, row: u64, col: u64, s: &[u8], attr: u8) {
        for (i, &ch) in (0u64..).zip(s) {
            let a = 0x18000 + (row * 80 + col + i) * 2;
            v.mem_write(a, ch);
            v.mem_write(a + 1, attr);
        }
    }

    fn text(b: &[u8]) -> String {
        String::from_utf8(b.to_vec()).expect("UTF-8")
    }

    #[test]
    fn first_frame_clears_and_draws_hello_in_colour() {
        let mut v = bios_mode3();
        put(&mut v, 0, 0, b"Hello", 0x1e); // yellow on blue
        let mut r = AnsiRenderer::new();
        let out = text(&r.frame(&v.text_screen()));
        assert!(out.starts_with("\x1b[0m\x1b[2J\x1b[H\x1b[0;93;44mHello"));
        // The rest of the screen: NULs with attribute 0, black on black.
        assert!(out.contains("\x1b[0;30;40m "));
        assert!(out.ends_with("\x1b[0m\x1b[1;1H\x1b[?25h"));
        // One position per row after the first, one for the cursor.
        assert_eq!(out.matches(";1H").count(), 24 + 1);
    }

    #[test]
    fn one_changed_cell_is_redrawn_alone() {
        let mut v = bios_mode3();
        put(&mut v, 0, 0, b"Hello", 0x07);
        let mut r = AnsiRenderer::new();
        r.frame(&v.text_screen());
        assert!(r.frame(&v.text_screen()).is_empty(), "no change, no bytes");
        put(&mut v, 3, 7, b"\xc4", 0x4f); // bright white on red
        let out = text(&r.frame(&v.text_screen()));
        assert_eq!(out, "\x1b[4;8H\x1b[0;97;41m─\x1b[0m\x1b[1;1H");
    }

    #[test]
    fn background_intensity_versus_blink() {
        let mut v = bios_mode3();
        put(&mut v, 0, 0, b"x", 0xf0);
        let mut s = v.text_screen();
        assert!(s.blink, "mode 3 enables blink");
        let out = text(&AnsiRenderer::new().frame(&s));
        assert!(out.contains("\x1b[0;30;47mx"));
        s.blink = false;
        let out = text(&AnsiRenderer::new().frame(&s));
        assert!(out.contains("\x1b[0;30;107mx"));
    }

    #[test]
    fn cursor_moves_and_hides() {
        let mut v = bios_mode3();
        let mut r = AnsiRenderer::new();
        r.frame(&v.text_screen());
        v.port_write(0x3d4, 0x0f);
        v.port_write(0x3d5, 83); // row 1, column 3
        assert_eq!(text(&r.frame(&v.text_screen())), "\x1b[2;4H");
        v.port_write(0x3d4, 0x0a);
        v.port_write(0x3d5, 0x20);
        assert_eq!(text(&r.frame(&v.text_screen())), "\x1b[?25l");
        v.port_write(0x3d5, 0x0d);
        assert_eq!(text(&r.frame(&v.text_screen())), "\x1b[2;4H\x1b[?25h");
    }

    #[test]
    fn adjacent_changes_share_one_position() {
        let mut v = bios_mode3();
        let mut r = AnsiRenderer::new();
        r.frame(&v.text_screen());
        put(&mut v, 24, 78, b"ab", 0x07);
        put(&mut v, 24, 0, b"c", 0x07);
        let out = text(&r.frame(&v.text_screen()));
        assert_eq!(out, "\x1b[25;1H\x1b[0;37;40mc\x1b[25;79Hab\x1b[0m\x1b[1;1H");
    }

    #[test]
    fn size_change_redraws_everything() {
        let mut v = bios_mode3();
        let mut r = AnsiRenderer::new();
        r.frame(&v.text_screen());
        v.port_write(0x3d4, 0x09);
        v.port_write(0x3d5, 0x47);
        let out = r.frame(&v.text_screen());
        assert!(text(&out).starts_with("\x1b[0m\x1b[2J"));
    }
}
