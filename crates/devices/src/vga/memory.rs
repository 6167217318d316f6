//! The VGA's display memory and how the CPU reaches it.
//!
//! 256 KiB in four 64 KiB planes (maps 0-3). The CPU sees them through the
//! window at 0xA0000-0xBFFFF, of which the graphics controller's
//! miscellaneous register (GR06 bits 2-3, "memory map select") decodes
//! 0xA0000-0xBFFFF (128 KiB), 0xA0000-0xAFFFF (64 KiB), 0xB0000-0xB7FFF or
//! 0xB8000-0xBFFFF (32 KiB each); the rest of the window reads 0xFF and
//! ignores writes, as does all of it while misc output bit 1 (RAM enable)
//! is clear. IBM VGA Technical Reference, "Graphics Controller Registers"
//! and "Sequencer Registers"; FreeVGA's "VGA Memory Organization" and
//! "Graphics Controller" pages describe the same read and write logic.
//!
//! Addressing (which planes an access reaches, and where in them):
//!
//! - chain 4 (SR04 bit 3): address bits 0-1 select the plane, the address
//!   with those bits clear is the offset in it;
//! - odd/even (writes: SR04 bit 2 clear; reads: GR05 bit 4 set): address
//!   bit 0 selects plane 0/2 (even) or 1/3 (odd), the address with bit 0
//!   clear is the offset — text mode keeps characters in plane 0 and
//!   attributes in plane 1 this way; reads take the plane pair from GR04
//!   bit 1;
//! - otherwise planar: all four planes at the same offset.
//!
//! Every read loads the four latches; read mode 0 returns one plane (GR04
//! or the addressing above), read mode 1 compares the planes enabled by
//! colour don't care (GR07) with colour compare (GR02). Writes go through
//! write modes 0-3 (GR05 bits 0-1): data rotate and logical function
//! (GR03), set/reset and its enable (GR00, GR01), the bit mask (GR08)
//! against the latches, then the sequencer's map mask (SR02) picks the
//! planes written.

use super::Vga;

/// Bytes in one plane.
pub const PLANE_SIZE: usize = 0x1_0000;

/// The four planes.
pub struct Planes {
    data: Box<[u8]>,
    latches: [u8; 4],
}

impl Planes {
    /// Four zeroed planes, latches clear.
    pub fn new() -> Self {
        Planes {
            data: vec![0; 4 * PLANE_SIZE].into_boxed_slice(),
            latches: [0; 4],
        }
    }

    /// The byte at `offset` (taken modulo the plane size) of `plane`
    /// (0-3, modulo 4).
    pub fn get(&self, plane: usize, offset: usize) -> u8 {
        let i = (plane & 3) * PLANE_SIZE + (offset % PLANE_SIZE);
        self.data.get(i).copied().unwrap_or(0)
    }

    fn set(&mut self, plane: usize, offset: usize, value: u8) {
        let i = (plane & 3) * PLANE_SIZE + (offset % PLANE_SIZE);
        if let Some(b) = self.data.get_mut(i) {
            *b = value;
        }
    }

    /// The latches as the last CPU read left them.
    pub fn latches(&self) -> [u8; 4] {
        self.latches
    }
}

impl Default for Planes {
    fn default() -> Self {
        Self::new()
    }
}

/// Sequencer memory mode (SR04) bits.
const SR4_ODD_EVEN_DISABLE: u8 = 1 << 2;
const SR4_CHAIN4: u8 = 1 << 3;
/// Graphics mode (GR05) bits.
const GR5_READ_MODE1: u8 = 1 << 3;
const GR5_HOST_ODD_EVEN: u8 = 1 << 4;
/// Misc output bit 1: the CPU may access display memory.
const MISC_RAM_ENABLE: u8 = 1 << 1;

impl Vga {
    /// The offset inside the decoded part of the window for `offset` from
    /// 0xA0000, or `None` outside it.
    fn decode(&self, offset: u64) -> Option<usize> {
        let (start, len) = match (self.gc[6] >> 2) & 3 {
            0 => (0, 0x2_0000),
            1 => (0, 0x1_0000),
            2 => (0x1_0000, 0x8000),
            _ => (0x1_8000, 0x8000),
        };
        let rel = offset.checked_sub(start)?;
        if rel < len {
            usize::try_from(rel).ok()
        } else {
            None
        }
    }

    /// A CPU read of the byte at `offset` from 0xA0000 (see the module
    /// documentation).
    pub fn mem_read(&mut self, offset: u64) -> u8 {
        if self.misc & MISC_RAM_ENABLE == 0 {
            return 0xff;
        }
        let Some(a) = self.decode(offset) else {
            return 0xff;
        };
        let gr5 = self.gc[5];
        let (off, plane) = if self.seq[4] & SR4_CHAIN4 != 0 {
            (a & !3, a & 3)
        } else if gr5 & GR5_HOST_ODD_EVEN != 0 {
            (a & !1, usize::from(self.gc[4] & 2) | (a & 1))
        } else {
            (a, usize::from(self.gc[4] & 3))
        };
        for p in 0..4 {
            self.mem.latches[p] = self.mem.get(p, off);
        }
        if gr5 & GR5_READ_MODE1 != 0 {
            let (compare, care) = (self.gc[2], self.gc[7]);
            let mut r = 0xff;
            for (p, &l) in self.mem.latches.iter().enumerate() {
                if care & (1 << p) != 0 {
                    let c = if compare & (1 << p) != 0 { 0xff } else { 0 };
                    r &= !(l ^ c);
                }
            }
            r
        } else {
            self.mem.latches[plane & 3]
        }
    }

    /// A CPU write of `value` to `offset` from 0xA0000 (see the module
    /// documentation).
    pub fn mem_write(&mut self, offset: u64, value: u8) {
        if self.misc & MISC_RAM_ENABLE == 0 {
            return;
        }
        let Some(a) = self.decode(offset) else {
            return;
        };
        let sr4 = self.seq[4];
        let (off, planes) = if sr4 & SR4_CHAIN4 != 0 {
            (a & !3, 1u8 << (a & 3))
        } else if sr4 & SR4_ODD_EVEN_DISABLE == 0 {
            (a & !1, if a & 1 != 0 { 0b1010 } else { 0b0101 })
        } else {
            (a, 0b1111)
        };
        let enabled = planes & self.seq[2];
        let data = self.write_logic(value);
        for (p, &d) in data.iter().enumerate() {
            if enabled & (1 << p) != 0 {
                self.mem.set(p, off, d);
            }
        }
    }

    /// The bytes write mode GR05[1:0] puts in each plane for CPU data
    /// `value`, before the map mask.
    fn write_logic(&self, value: u8) -> [u8; 4] {
        let [set_reset, enable_sr, _, rotate_fn] = [self.gc[0], self.gc[1], self.gc[2], self.gc[3]];
        let rotated = value.rotate_right(u32::from(rotate_fn & 7));
        let function = (rotate_fn >> 3) & 3;
        let mode = self.gc[5] & 3;
        let latches = self.mem.latches;
        if mode == 1 {
            return latches;
        }
        let mask = if mode == 3 {
            self.gc[8] & rotated
        } else {
            self.gc[8]
        };
        let mut out = [0u8; 4];
        for (p, o) in out.iter_mut().enumerate() {
            let bit = 1u8 << p;
            let fill = |on: bool| if on { 0xff } else { 0x00 };
            let v = match mode {
                0 if enable_sr & bit != 0 => fill(set_reset & bit != 0),
                0 => rotated,
                2 => fill(value & bit != 0),
                _ => fill(set_reset & bit != 0),
            };
            let l = latches[p];
            let v = match function {
                0 => v,
                1 => v & l,
                2 => v | l,
                _ => v ^ l,
            };
            *o = (v & mask) | (l & !mask);
        }
        out
    }

    /// The display memory, for the text renderer and tests.
    pub fn planes(&self) -> &Planes {
        &self.mem
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gr(v: &mut Vga, i: u8, val: u8) {
        v.port_write(0x3ce, i);
        v.port_write(0x3cf, val);
    }

    fn sr(v: &mut Vga, i: u8, val: u8) {
        v.port_write(0x3c4, i);
        v.port_write(0x3c5, val);
    }

    /// What a VGA BIOS does around a font load: planar sequential access
    /// with plane 2 alone enabled, memory at 0xA0000, read map 2.
    fn enter_font_access(v: &mut Vga) {
        sr(v, 2, 0x04); // map mask: plane 2
        sr(v, 4, 0x07); // sequential (odd/even off), extended memory
        gr(v, 4, 0x02); // read map select: plane 2
        gr(v, 5, 0x00); // write mode 0, read mode 0, odd/even off
        gr(v, 6, 0x04); // A0000, 64 KiB, text
    }

    fn leave_font_access(v: &mut Vga) {
        sr(v, 2, 0x03);
        sr(v, 4, 0x02);
        gr(v, 4, 0x00);
        gr(v, 5, 0x10);
        gr(v, 6, 0x0e);
    }

    #[test]
    fn text_mode_puts_chars_in_plane0_and_attributes_in_plane1() {
        let mut v = Vga::new();
        v.mem_write(0x18000, b'H');
        v.mem_write(0x18001, 0x1e);
        v.mem_write(0x18002, b'i');
        assert_eq!(v.planes().get(0, 0), b'H');
        assert_eq!(v.planes().get(1, 0), 0x1e);
        assert_eq!(v.planes().get(0, 2), b'i');
        assert_eq!(v.planes().get(2, 0), 0, "map mask keeps plane 2 out");
        assert_eq!(v.mem_read(0x18001), 0x1e);
        assert_eq!(v.mem_read(0x18002), b'i');
    }

    #[test]
    fn font_upload_to_plane2_and_read_back() {
        let mut v = Vga::new();
        v.mem_write(0x18000, b'A');
        enter_font_access(&mut v);
        // Glyph 0x41 at 32 bytes per character.
        let glyph: Vec<u8> = (0..16).map(|i| 0x80 >> (i % 8)).collect();
        for (i, &g) in glyph.iter().enumerate() {
            v.mem_write(0x41 * 32 + i as u64, g);
        }
        for (i, &g) in glyph.iter().enumerate() {
            assert_eq!(v.planes().get(2, 0x41 * 32 + i), g);
            assert_eq!(v.mem_read(0x41 * 32 + i as u64), g);
        }
        assert_eq!(v.planes().get(0, 0), b'A', "plane 0 untouched");
        leave_font_access(&mut v);
        assert_eq!(v.mem_read(0x18000), b'A');
        assert_eq!(v.planes().get(2, 0x41 * 32), 0x80);
    }

    #[test]
    fn write_modes_use_set_reset_latches_and_bit_mask() {
        let mut v = Vga::new();
        sr(&mut v, 2, 0x0f);
        sr(&mut v, 4, 0x06);
        gr(&mut v, 5, 0x00);
        gr(&mut v, 6, 0x05); // graphics, A0000 64K
                             // Mode 0, set/reset enabled for planes 0 and 2 (value 1 for plane 0).
        gr(&mut v, 0, 0x01);
        gr(&mut v, 1, 0x05);
        v.mem_write(0, 0x3c);
        assert_eq!(
            [0, 1, 2, 3].map(|p| v.planes().get(p, 0)),
            [0xff, 0x3c, 0x00, 0x3c]
        );
        // Latch it, then mode 1 copies the latches elsewhere.
        v.mem_read(0);
        gr(&mut v, 5, 0x01);
        v.mem_write(10, 0x00);
        assert_eq!(
            [0, 1, 2, 3].map(|p| v.planes().get(p, 10)),
            [0xff, 0x3c, 0x00, 0x3c]
        );
        // Mode 2 with a bit mask: colour 0b0110 into bits 0-3 only.
        gr(&mut v, 1, 0);
        gr(&mut v, 5, 0x02);
        gr(&mut v, 8, 0x0f);
        v.mem_read(0);
        v.mem_write(0, 0x06);
        assert_eq!(
            [0, 1, 2, 3].map(|p| v.planes().get(p, 0)),
            [0xf0, 0x3f, 0x0f, 0x30]
        );
        // Mode 3: rotated data ANDed with the bit mask, set/reset as colour.
        gr(&mut v, 5, 0x03);
        gr(&mut v, 8, 0xff);
        gr(&mut v, 0, 0x08);
        gr(&mut v, 3, 0x04); // rotate right by 4
        v.mem_read(20);
        v.mem_write(20, 0xf0);
        assert_eq!(
            [0, 1, 2, 3].map(|p| v.planes().get(p, 20)),
            [0x00, 0x00, 0x00, 0x0f]
        );
        // Logical function XOR against the latches (mode 0).
        gr(&mut v, 5, 0x00);
        gr(&mut v, 3, 0x18);
        v.mem_read(20);
        v.mem_write(20, 0xff);
        assert_eq!(v.planes().get(3, 20), 0xf0);
        assert_eq!(v.planes().get(0, 20), 0xff);
    }

    #[test]
    fn read_mode1_compares_colours() {
        let mut v = Vga::new();
        sr(&mut v, 2, 0x0f);
        sr(&mut v, 4, 0x06);
        gr(&mut v, 5, 0x02);
        gr(&mut v, 6, 0x05);
        v.mem_write(0, 0x05); // colour 5 in every bit
        gr(&mut v, 5, 0x08);
        gr(&mut v, 2, 0x05);
        gr(&mut v, 7, 0x0f);
        assert_eq!(v.mem_read(0), 0xff);
        gr(&mut v, 2, 0x04);
        assert_eq!(v.mem_read(0), 0x00);
        gr(&mut v, 7, 0x04); // only plane 2 matters
        assert_eq!(v.mem_read(0), 0xff);
    }

    #[test]
    fn chain4_spreads_bytes_over_planes() {
        let mut v = Vga::new();
        sr(&mut v, 2, 0x0f);
        sr(&mut v, 4, 0x0e);
        gr(&mut v, 5, 0x40);
        gr(&mut v, 6, 0x05);
        for i in 0..8u8 {
            v.mem_write(u64::from(i), i + 1);
        }
        assert_eq!(v.planes().get(0, 0), 1);
        assert_eq!(v.planes().get(3, 0), 4);
        assert_eq!(v.planes().get(1, 4), 6);
        assert_eq!(v.mem_read(6), 7);
    }

    #[test]
    fn memory_map_select_moves_the_window() {
        let mut v = Vga::new();
        // Mode 3 maps B8000 only.
        assert_eq!(v.mem_read(0), 0xff);
        v.mem_write(0x10000, 1);
        assert_eq!(v.planes().get(0, 0), 0);
        v.mem_write(0x18000, b'x');
        assert_eq!(v.planes().get(0, 0), b'x');
        // B0000 32K (mono text).
        gr(&mut v, 6, 0x0a);
        assert_eq!(v.mem_read(0x10000), b'x');
        assert_eq!(v.mem_read(0x18000), 0xff);
        // A0000 128K: the whole window.
        gr(&mut v, 6, 0x02);
        assert_eq!(v.mem_read(0), b'x');
        assert_eq!(v.mem_read(0x10000), b'x', "wraps at the plane size");
        // A0000 64K.
        gr(&mut v, 6, 0x06);
        assert_eq!(v.mem_read(0x10000), 0xff);
        // RAM disabled.
        v.port_write(0x3c2, 0x65);
        assert_eq!(v.mem_read(0), 0xff);
    }
}
