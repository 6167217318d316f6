//! The text screen as data: what the CRT controller scans out in an
//! alphanumeric mode, as rows of (character, attribute) cells.
//!
//! Geometry from the CRTC (IBM VGA Technical Reference, "CRT Controller
//! Registers"): columns are horizontal display end (CR01) plus one; scan
//! lines are vertical display end (CR12, bit 8 in CR07 bit 1, bit 9 in CR07
//! bit 6) plus one; rows are scan lines / (maximum scan line (CR09 bits
//! 0-4) plus one),
//! halved again when CR09 bit 7 doubles every scan line — 25 rows with the
//! 16-line font of mode 3, 50 with an 8-line font. The screen starts at
//! the start address (CR0C/CR0D), each row is 2 × offset (CR13) character
//! addresses after the previous one, and a character address is shifted
//! into a plane offset by the addressing mode: word mode (CR17 bit 6
//! clear) doubles it, doubleword mode (CR14 bit 6) quadruples it. The
//! character code is in plane 0 and its attribute in plane 1 at that
//! offset. The cursor is at the cursor location (CR0E/CR0F), shown unless
//! cursor start (CR0A) has its cursor-off bit 5 set or is below cursor end
//! (CR0B).
//!
//! Characters are code page 437, the VGA ROM font's encoding; [`cp437`]
//! gives their Unicode equivalents.

use super::Vga;

/// Most columns a screen is given (CR01 can say up to 256).
pub const MAX_COLS: usize = 256;
/// Most rows a screen is given.
pub const MAX_ROWS: usize = 128;

/// One character cell: a code page 437 character and its attribute byte
/// (bits 0-3 foreground colour, 4-6 background, 7 blink or background
/// intensity, per the attribute controller's mode control bit 3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cell {
    /// The character (code page 437).
    pub ch: u8,
    /// The attribute byte.
    pub attr: u8,
}

/// A snapshot of the screen, `rows` × `cols` cells, row after row.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TextScreen {
    /// Characters per row.
    pub cols: usize,
    /// Rows.
    pub rows: usize,
    /// `rows * cols` cells, row-major.
    pub cells: Vec<Cell>,
    /// Where the cursor is shown, as (row, column), or `None` when it is
    /// off or outside the screen.
    pub cursor: Option<(usize, usize)>,
    /// Attribute bit 7 means blink (AR10 bit 3 set) rather than a bright
    /// background.
    pub blink: bool,
}

impl TextScreen {
    /// The cell at `row`, `col` (a blank one outside the screen).
    pub fn cell(&self, row: usize, col: usize) -> Cell {
        if col >= self.cols {
            return Cell::default();
        }
        self.cells
            .get(row.saturating_mul(self.cols).saturating_add(col))
            .copied()
            .unwrap_or_default()
    }

    /// Row `row` as Unicode text (code page 437 converted).
    pub fn line(&self, row: usize) -> String {
        (0..self.cols)
            .map(|c| cp437(self.cell(row, c).ch))
            .collect()
    }

    /// Every row as Unicode text.
    pub fn lines(&self) -> Vec<String> {
        (0..self.rows).map(|r| self.line(r)).collect()
    }

    /// A screen of `rows` × `cols` blank cells (attribute `attr`), no
    /// cursor.
    fn blank(rows: usize, cols: usize, attr: u8) -> Self {
        TextScreen {
            cols,
            rows,
            cells: vec![Cell { ch: b' ', attr }; rows * cols],
            cursor: None,
            blink: false,
        }
    }
}

impl Vga {
    /// The screen the adapter shows now. In a graphics mode (AR10 bit 0)
    /// it is one line saying so, "(graphics mode WxH: not shown in the
    /// terminal)"; with the display off (palette address source clear or
    /// SR01 screen off) it is blank.
    pub fn text_screen(&self) -> TextScreen {
        let cr = |i: usize| usize::from(self.crtc[i]);
        let cols = (cr(0x01) + 1).min(MAX_COLS);
        let lines = (cr(0x12) | ((cr(0x07) >> 1) & 1) << 8 | ((cr(0x07) >> 6) & 1) << 9) + 1;
        let char_height = (cr(0x09) & 0x1f) + 1;
        let double = if cr(0x09) & 0x80 != 0 { 2 } else { 1 };
        if self.graphics_mode() {
            // 8 dots per character clock in graphics modes, halved when
            // the sequencer divides the dot clock (SR01 bit 3).
            let mut width = cols * 8;
            if self.seq[1] & 0x08 != 0 {
                width /= 2;
            }
            let height = lines / (char_height * double);
            let msg = format!("(graphics mode {width}x{height}: not shown in the terminal)");
            let mut s = TextScreen::blank(1, msg.len().max(80), 0x07);
            for (c, b) in s.cells.iter_mut().zip(msg.bytes()) {
                c.ch = b;
            }
            return s;
        }
        let rows = (lines / (char_height * double)).min(MAX_ROWS);
        if !self.display_enabled() {
            return TextScreen::blank(rows, cols, 0x00);
        }
        let start = cr(0x0c) << 8 | cr(0x0d);
        let stride = cr(0x13) * 2;
        let shift = if cr(0x14) & 0x40 != 0 {
            2
        } else if cr(0x17) & 0x40 == 0 {
            1
        } else {
            0
        };
        let mut cells = Vec::with_capacity(rows * cols);
        for r in 0..rows {
            for c in 0..cols {
                let offset = (start + r * stride + c) << shift;
                cells.push(Cell {
                    ch: self.mem.get(0, offset),
                    attr: self.mem.get(1, offset),
                });
            }
        }
        let cursor_off = cr(0x0a) & 0x20 != 0 || cr(0x0a) & 0x1f > cr(0x0b) & 0x1f;
        let location = cr(0x0e) << 8 | cr(0x0f);
        let cursor = match location.checked_sub(start) {
            Some(_) if cursor_off => None,
            Some(i) if stride == 0 => (i < cols).then_some((0, i)),
            Some(i) => {
                let (r, c) = (i / stride, i % stride);
                (r < rows && c < cols).then_some((r, c))
            }
            None => None,
        };
        TextScreen {
            cols,
            rows,
            cells,
            cursor,
            blink: self.attr[0x10] & 0x08 != 0,
        }
    }

    /// The screen as Unicode lines ([`Vga::text_screen`], code page 437
    /// converted): for the inspector and tests.
    pub fn text_lines(&self) -> Vec<String> {
        self.text_screen().lines()
    }
}

/// Code page 437 characters 0x80-0xFF as Unicode (the IBM PC character
/// set, as in the VGA ROM font).
const CP437_HIGH: [char; 128] = [
    'Ç', 'ü', 'é', 'â', 'ä', 'à', 'å', 'ç', 'ê', 'ë', 'è', 'ï', 'î', 'ì', 'Ä', 'Å', //
    'É', 'æ', 'Æ', 'ô', 'ö', 'ò', 'û', 'ù', 'ÿ', 'Ö', 'Ü', '¢', '£', '¥', '₧', 'ƒ', //
    'á', 'í', 'ó', 'ú', 'ñ', 'Ñ', 'ª', 'º', '¿', '⌐', '¬', '½', '¼', '¡', '«', '»', //
    '░', '▒', '▓', '│', '┤', '╡', '╢', '╖', '╕', '╣', '║', '╗', '╝', '╜', '╛', '┐', //
    '└', '┴', '┬', '├', '─', '┼', '╞', '╟', '╚', '╔', '╩', '╦', '╠', '═', '╬', '╧', //
    '╨', '╤', '╥', '╙', '╘', '╒', '╓', '╫', '╪', '┘', '┌', '█', '▄', '▌', '▐', '▀', //
    'α', 'ß', 'Γ', 'π', 'Σ', 'σ', 'µ', 'τ', 'Φ', 'Θ', 'Ω', 'δ', '∞', 'φ', 'ε', '∩', //
    '≡', '±', '≥', '≤', '⌠', '⌡', '÷', '≈', '°', '∙', '·', '√', 'ⁿ', '²', '■', '\u{a0}',
];

/// Code page 437 characters 0x01-0x1F (the ROM font draws glyphs there).
const CP437_LOW: [char; 32] = [
    ' ', '☺', '☻', '♥', '♦', '♣', '♠', '•', '◘', '○', '◙', '♂', '♀', '♪', '♫', '☼', //
    '►', '◄', '↕', '‼', '¶', '§', '▬', '↨', '↑', '↓', '→', '←', '∟', '↔', '▲', '▼',
];

/// The Unicode character for code page 437 byte `b` (0x00 as a space).
pub fn cp437(b: u8) -> char {
    match b {
        0x00..=0x1f => CP437_LOW[usize::from(b)],
        0x7f => '⌂',
        0x20..=0x7e => char::from(b),
        _ => CP437_HIGH[usize::from(b & 0x7f)],
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::bios_mode3;
    use super::*;

    fn crtc(v: &mut Vga, i: u8, val: u8) {
        v.port_write(0x3d4, i);
        v.port_write(0x3d5, val);
    }

    fn put(v: &mut Vga, row: u64, col: u64, s: &[u8], attr: u8) {
        for (i, &ch) in (0u64..).zip(s) {
            let a = 0x18000 + (row * 80 + col + i) * 2;
            v.mem_write(a, ch);
            v.mem_write(a + 1, attr);
        }
    }

    #[test]
    fn hello_with_attributes_reads_back_as_lines() {
        let mut v = bios_mode3();
        put(&mut v, 0, 0, b"Hello", 0x1f);
        put(&mut v, 2, 10, b"\xda\xc4\xbf", 0x07);
        let s = v.text_screen();
        assert_eq!((s.rows, s.cols), (25, 80));
        assert_eq!(
            s.cell(0, 0),
            Cell {
                ch: b'H',
                attr: 0x1f
            }
        );
        let lines = v.text_lines();
        assert_eq!(lines.len(), 25);
        assert!(lines[0].starts_with("Hello"));
        assert_eq!(lines[0].chars().count(), 80);
        assert_eq!(lines[2].trim(), "┌─┐");
        assert_eq!(lines[1].trim(), "", "NULs show as spaces");
        assert_eq!(s.cursor, Some((0, 0)));
    }

    #[test]
    fn start_address_and_eight_line_font() {
        let mut v = bios_mode3();
        put(&mut v, 1, 0, b"second", 0x07);
        crtc(&mut v, 0x0c, 0);
        crtc(&mut v, 0x0d, 80);
        assert!(v.text_lines()[0].starts_with("second"));
        crtc(&mut v, 0x09, 0x47);
        assert_eq!(v.text_screen().rows, 50);
    }

    #[test]
    fn cursor_registers_place_and_hide_the_cursor() {
        let mut v = bios_mode3();
        crtc(&mut v, 0x0e, 0x01);
        crtc(&mut v, 0x0f, 0x45); // 325 = row 4, column 5
        assert_eq!(v.text_screen().cursor, Some((4, 5)));
        crtc(&mut v, 0x0a, 0x2d); // cursor off
        assert_eq!(v.text_screen().cursor, None);
        crtc(&mut v, 0x0a, 0x0f); // start below end
        assert_eq!(v.text_screen().cursor, None);
        crtc(&mut v, 0x0a, 0x0d);
        crtc(&mut v, 0x0e, 0x10); // beyond the screen
        assert_eq!(v.text_screen().cursor, None);
    }

    #[test]
    fn forty_columns() {
        let mut v = bios_mode3();
        crtc(&mut v, 0x11, 0x0e);
        crtc(&mut v, 0x01, 0x27);
        crtc(&mut v, 0x13, 0x14);
        let s = v.text_screen();
        assert_eq!(s.cols, 40);
        put(&mut v, 0, 40, b"x", 0x07); // offset 40 is row 1 now
        assert!(v.text_lines()[1].starts_with('x'));
    }

    #[test]
    fn graphics_mode_shows_one_line() {
        let mut v = bios_mode3();
        // Mode 13h-like: 320x200, graphics in the attribute controller.
        v.port_read(0x3da);
        v.port_write(0x3c0, 0x30);
        v.port_write(0x3c0, 0x41);
        v.port_write(0x3c4, 1);
        v.port_write(0x3c5, 0x09);
        crtc(&mut v, 0x09, 0x41);
        let lines = v.text_lines();
        assert_eq!(lines.len(), 1);
        assert_eq!(
            lines[0].trim_end(),
            "(graphics mode 320x200: not shown in the terminal)"
        );
    }

    #[test]
    fn any_register_values_give_a_bounded_screen() {
        let mut v = bios_mode3();
        crtc(&mut v, 0x11, 0x0e);
        for (i, val) in [(0x01, 0xff), (0x12, 0xff), (0x07, 0xff), (0x09, 0x00)] {
            crtc(&mut v, i, val);
        }
        let s = v.text_screen();
        assert!(s.cols <= MAX_COLS && s.rows <= MAX_ROWS);
        crtc(&mut v, 0x09, 0x9f);
        crtc(&mut v, 0x13, 0x00);
        let s = v.text_screen();
        assert_eq!(s.cells.len(), s.rows * s.cols);
    }

    #[test]
    fn cp437_box_drawing_and_shades() {
        let s: String = [0xc9, 0xcd, 0xbb, 0xba, 0xc8, 0xbc, 0xb0, 0xb1, 0xb2, 0xdb]
            .iter()
            .map(|&b| cp437(b))
            .collect();
        assert_eq!(s, "╔═╗║╚╝░▒▓█");
        assert_eq!(cp437(0x00), ' ');
        assert_eq!(cp437(b'A'), 'A');
        assert_eq!(cp437(0x10), '►');
    }
}
