//! IBM VGA adapter, shown as text in the host terminal.
//!
//! Models the registers of the IBM VGA (IBM VGA Technical Reference,
//! "Registers"; the same facts are in the FreeVGA project's register
//! pages) well enough for a VGA BIOS written for the standard ports
//! (SeaVGABIOS's ISA build) to set modes and draw text, and for the BIOS
//! boot menu and GRUB's text menu to be seen and driven from a terminal:
//!
//! - ports 0x3B0-0x3DF ([`PORT_BASE`], [`PORT_LEN`]): miscellaneous output
//!   (write 0x3C2, read 0x3CC), input status 0 (0x3C2) and 1
//!   (0x3DA/0x3BA, with the retrace bits toggling on every read so that
//!   polling loops end), feature control (0x3DA/0x3BA write, 0x3CA read),
//!   video subsystem enable (0x3C3), the sequencer (0x3C4/0x3C5), the CRT
//!   controller (0x3D4/0x3D5, or 0x3B4/0x3B5 when misc output bit 0 selects
//!   mono addressing; CR00-CR07 write protected by CR11 bit 7), the
//!   graphics controller (0x3CE/0x3CF), the attribute controller (0x3C0
//!   index/data flip-flop, 0x3C1 read, palette address source bit) and the
//!   DAC (0x3C6 mask, 0x3C7/0x3C8 indexes, 0x3C9 data in R, G, B triples);
//! - the memory window 0xA0000-0xBFFFF ([`MMIO_BASE`], [`MMIO_LEN`]) over
//!   four 64 KiB planes, with every CPU read and write mode (see
//!   [`memory`]).
//!
//! Output is text only: [`Vga::text_screen`] reads the screen the CRT
//! controller would scan out in an alphanumeric mode ([`text`]), and
//! [`render::AnsiRenderer`] turns it into ANSI escape sequences for a
//! terminal. In a graphics mode the memory and registers still work but
//! the screen shows one line saying so. Not modelled: pixels (fonts are
//! stored but never drawn), the DAC's colours (attribute bytes map to the
//! 16 standard terminal colours), smooth scrolling and panning, the
//! split screen (line compare), cursor skew, blinking, light pen,
//! vertical retrace interrupts, and mono underline attributes.
//!
//! Wiring: share one `Arc<Mutex<Vga>>` between a [`VgaPorts`] registered
//! at port [`PORT_BASE`] (length [`PORT_LEN`]) and a [`VgaMemory`] at MMIO
//! [`MMIO_BASE`] (length [`MMIO_LEN`]); a console thread locks it now and
//! then (30 times a second is plenty), takes [`Vga::text_screen`], and
//! writes what [`render::AnsiRenderer::frame`] returns to the terminal.

pub mod memory;
pub mod render;
pub mod text;

use std::sync::{Arc, Mutex};

use alcazar_core::inspect::Tree;
use alcazar_core::BusDevice;

pub use render::AnsiRenderer;
pub use text::{Cell, TextScreen};

/// First port of the VGA's I/O range (the mono CRTC's 0x3B0 block).
pub const PORT_BASE: u16 = 0x3b0;
/// Ports from [`PORT_BASE`] through 0x3DF.
pub const PORT_LEN: u16 = 0x30;
/// Start of the VGA memory window.
pub const MMIO_BASE: u64 = 0xa_0000;
/// Size of the window (0xA0000-0xBFFFF).
pub const MMIO_LEN: u64 = 0x2_0000;

/// Sequencer registers SR00-SR04.
const SEQ_REGS: usize = 5;
/// CRT controller registers CR00-CR18.
const CRTC_REGS: usize = 0x19;
/// Graphics controller registers GR00-GR08.
const GC_REGS: usize = 9;
/// Attribute controller registers AR00-AR14.
const ATTR_REGS: usize = 0x15;

/// Register values of BIOS mode 3 (80×25 colour text), the state the card
/// is in when the guest starts (IBM VGA Technical Reference, "BIOS video
/// modes" parameter tables).
const MODE3_MISC: u8 = 0x67;
const MODE3_SEQ: [u8; SEQ_REGS] = [0x03, 0x00, 0x03, 0x00, 0x02];
const MODE3_CRTC: [u8; CRTC_REGS] = [
    0x5f, 0x4f, 0x50, 0x82, 0x55, 0x81, 0xbf, 0x1f, 0x00, 0x4f, 0x0d, 0x0e, 0x00, 0x00, 0x00, 0x00,
    0x9c, 0x8e, 0x8f, 0x28, 0x1f, 0x96, 0xb9, 0xa3, 0xff,
];
const MODE3_GC: [u8; GC_REGS] = [0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x0e, 0x00, 0xff];
const MODE3_ATTR: [u8; ATTR_REGS] = [
    0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x14, 0x07, 0x38, 0x39, 0x3a, 0x3b, 0x3c, 0x3d, 0x3e, 0x3f,
    0x0c, 0x00, 0x0f, 0x08, 0x00,
];

/// Misc output bit 0: CRTC at 0x3Dx (colour) rather than 0x3Bx (mono).
const MISC_COLOR_IO: u8 = 1 << 0;
/// CR11 bit 7: CR00-CR07 are write protected.
const CR11_PROTECT: u8 = 1 << 7;
/// Attribute controller index bit 5: palette address source (the display
/// uses the palette; when clear the screen is blanked).
const ATTR_PAS: u8 = 1 << 5;
/// Input status 1 bit 0: display disabled (in a retrace interval).
const IS1_DISPLAY_DISABLED: u8 = 1 << 0;
/// Input status 1 bit 3: vertical retrace.
const IS1_VRETRACE: u8 = 1 << 3;

/// The VGA adapter: its registers and its 256 KiB of display memory (see
/// the module documentation for what is modelled).
pub struct Vga {
    misc: u8,
    feature: u8,
    subsystem_enable: u8,
    seq_index: u8,
    seq: [u8; SEQ_REGS],
    crtc_index: u8,
    crtc: [u8; CRTC_REGS],
    gc_index: u8,
    gc: [u8; GC_REGS],
    /// Attribute index (bits 0-4) and palette address source (bit 5).
    attr_index: u8,
    /// The 0x3C0 flip-flop: `true` when the next write is data.
    attr_data_next: bool,
    attr: [u8; ATTR_REGS],
    dac_mask: u8,
    dac_read_index: u8,
    dac_write_index: u8,
    /// Which of R, G, B the next data access is (0-2).
    dac_component: u8,
    /// The last index written was the read index (0x3C7 reads 3).
    dac_reading: bool,
    /// The colour being written, committed after its blue.
    dac_pending: [u8; 3],
    dac: Box<[[u8; 3]; 256]>,
    /// Input status 1 reads so far (drives the retrace bits).
    status_reads: u32,
    mem: memory::Planes,
}

impl std::fmt::Debug for Vga {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vga")
            .field("misc", &self.misc)
            .field("seq", &self.seq)
            .field("crtc", &self.crtc)
            .field("gc", &self.gc)
            .field("attr", &self.attr)
            .finish_non_exhaustive()
    }
}

impl Default for Vga {
    fn default() -> Self {
        Self::new()
    }
}

impl Vga {
    /// An adapter with mode 3's registers loaded (80×25 colour text,
    /// display on), blank memory and a zeroed DAC; a VGA BIOS will
    /// program it again.
    pub fn new() -> Self {
        Vga {
            misc: MODE3_MISC,
            feature: 0,
            subsystem_enable: 1,
            seq_index: 0,
            seq: MODE3_SEQ,
            crtc_index: 0,
            crtc: MODE3_CRTC,
            gc_index: 0,
            gc: MODE3_GC,
            attr_index: ATTR_PAS,
            attr_data_next: false,
            attr: MODE3_ATTR,
            dac_mask: 0xff,
            dac_read_index: 0,
            dac_write_index: 0,
            dac_component: 0,
            dac_reading: false,
            dac_pending: [0; 3],
            dac: Box::new([[0; 3]; 256]),
            status_reads: 0,
            mem: memory::Planes::new(),
        }
    }

    /// A shared adapter and its two bus faces: (ports at [`PORT_BASE`],
    /// memory at [`MMIO_BASE`]).
    pub fn shared() -> (Arc<Mutex<Vga>>, VgaPorts, VgaMemory) {
        let vga = Arc::new(Mutex::new(Vga::new()));
        (
            vga.clone(),
            VgaPorts { vga: vga.clone() },
            VgaMemory { vga },
        )
    }

    fn color_io(&self) -> bool {
        self.misc & MISC_COLOR_IO != 0
    }

    /// Input status 1 (IBM VGA Technical Reference, "Input Status Register
    /// One"): the display-disabled bit flips on every read and vertical
    /// retrace on every other, so loops waiting for either edge end.
    /// Reading it also resets the attribute controller's flip-flop.
    fn input_status_1(&mut self) -> u8 {
        self.attr_data_next = false;
        self.status_reads = self.status_reads.wrapping_add(1);
        let n = self.status_reads;
        let mut v = 0;
        if n & 1 != 0 {
            v |= IS1_DISPLAY_DISABLED;
        }
        if n & 2 != 0 {
            v |= IS1_VRETRACE | IS1_DISPLAY_DISABLED;
        }
        v
    }

    /// An I/O read of `port` (0x3B0-0x3DF; others read 0xFF).
    pub fn port_read(&mut self, port: u16) -> u8 {
        let color = self.color_io();
        match port {
            0x3b4 if !color => self.crtc_index,
            0x3d4 if color => self.crtc_index,
            0x3b5 if !color => self.crtc_read(),
            0x3d5 if color => self.crtc_read(),
            0x3ba if !color => self.input_status_1(),
            0x3da if color => self.input_status_1(),
            0x3c0 => self.attr_index,
            0x3c1 => self
                .attr
                .get(usize::from(self.attr_index & 0x1f))
                .copied()
                .unwrap_or(0),
            // Input status 0: bit 4 is the monitor sense line (a colour
            // monitor is attached); no retrace interrupt is pending.
            0x3c2 => 0x10,
            0x3c3 => self.subsystem_enable,
            0x3c4 => self.seq_index,
            0x3c5 => self
                .seq
                .get(usize::from(self.seq_index))
                .copied()
                .unwrap_or(0),
            0x3c6 => self.dac_mask,
            0x3c7 => {
                if self.dac_reading {
                    3
                } else {
                    0
                }
            }
            0x3c8 => self.dac_write_index,
            0x3c9 => self.dac_data_read(),
            0x3ca => self.feature,
            0x3cc => self.misc,
            0x3ce => self.gc_index,
            0x3cf => self
                .gc
                .get(usize::from(self.gc_index))
                .copied()
                .unwrap_or(0),
            _ => 0xff,
        }
    }

    /// An I/O write of `value` to `port` (0x3B0-0x3DF; others ignored).
    pub fn port_write(&mut self, port: u16, value: u8) {
        let color = self.color_io();
        match port {
            0x3b4 if !color => self.crtc_index = value,
            0x3d4 if color => self.crtc_index = value,
            0x3b5 if !color => self.crtc_write(value),
            0x3d5 if color => self.crtc_write(value),
            0x3ba if !color => self.feature = value,
            0x3da if color => self.feature = value,
            0x3c0 => self.attr_write(value),
            0x3c2 => self.misc = value,
            0x3c3 => self.subsystem_enable = value & 1,
            0x3c4 => self.seq_index = value,
            0x3c5 => {
                if let Some(r) = self.seq.get_mut(usize::from(self.seq_index)) {
                    *r = value;
                }
            }
            0x3c6 => self.dac_mask = value,
            0x3c7 => {
                self.dac_read_index = value;
                self.dac_component = 0;
                self.dac_reading = true;
            }
            0x3c8 => {
                self.dac_write_index = value;
                self.dac_component = 0;
                self.dac_reading = false;
            }
            0x3c9 => self.dac_data_write(value),
            0x3ce => self.gc_index = value,
            0x3cf => {
                if let Some(r) = self.gc.get_mut(usize::from(self.gc_index)) {
                    *r = value;
                }
            }
            _ => {}
        }
    }

    fn crtc_read(&self) -> u8 {
        self.crtc
            .get(usize::from(self.crtc_index))
            .copied()
            .unwrap_or(0)
    }

    /// CRTC data write; with CR11 bit 7 set, CR00-CR06 ignore writes and
    /// CR07 takes only its line-compare bit 4 (VGA Technical Reference,
    /// "Vertical Retrace End Register").
    fn crtc_write(&mut self, value: u8) {
        let i = usize::from(self.crtc_index);
        let protect = self.crtc[0x11] & CR11_PROTECT != 0;
        let Some(r) = self.crtc.get_mut(i) else {
            return;
        };
        match i {
            0..=6 if protect => {}
            7 if protect => *r = (*r & !0x10) | (value & 0x10),
            _ => *r = value,
        }
    }

    /// 0x3C0 write: index (with the PAS bit) or data, as the flip-flop
    /// says, then the flip-flop toggles.
    fn attr_write(&mut self, value: u8) {
        if self.attr_data_next {
            if let Some(r) = self.attr.get_mut(usize::from(self.attr_index & 0x1f)) {
                *r = value;
            }
        } else {
            self.attr_index = value & 0x3f;
        }
        self.attr_data_next = !self.attr_data_next;
    }

    fn dac_data_read(&mut self) -> u8 {
        let entry = self.dac[usize::from(self.dac_read_index)];
        let v = entry[usize::from(self.dac_component.min(2))];
        self.dac_component += 1;
        if self.dac_component >= 3 {
            self.dac_component = 0;
            self.dac_read_index = self.dac_read_index.wrapping_add(1);
        }
        v
    }

    fn dac_data_write(&mut self, value: u8) {
        self.dac_pending[usize::from(self.dac_component.min(2))] = value & 0x3f;
        self.dac_component += 1;
        if self.dac_component >= 3 {
            self.dac_component = 0;
            self.dac[usize::from(self.dac_write_index)] = self.dac_pending;
            self.dac_write_index = self.dac_write_index.wrapping_add(1);
        }
    }

    /// Whether the attribute controller's mode control (AR10 bit 0) says
    /// graphics rather than alphanumeric.
    pub fn graphics_mode(&self) -> bool {
        self.attr[0x10] & 1 != 0
    }

    /// Whether the screen is shown: palette address source set and the
    /// sequencer's screen-off bit (SR01 bit 5) clear.
    pub fn display_enabled(&self) -> bool {
        self.attr_index & ATTR_PAS != 0 && self.seq[1] & 0x20 == 0
    }

    /// The inspector's view: the registers by controller, and the screen
    /// as text.
    fn tree(&self) -> Tree {
        fn regs(prefix: &str, values: &[u8]) -> Tree {
            let mut t = Tree::new();
            for (i, &v) in values.iter().enumerate() {
                t.hex(format!("{prefix}{i:02x}"), u64::from(v), 2);
            }
            t
        }
        let mut t = Tree::new();
        t.hex("misc_output", u64::from(self.misc), 2)
            .value(
                "crtc_ports",
                if self.color_io() { "0x3d4" } else { "0x3b4" },
            )
            .hex("feature_control", u64::from(self.feature), 2)
            .value(
                "mode",
                if self.graphics_mode() {
                    "graphics"
                } else {
                    "text"
                },
            )
            .value("display_enabled", self.display_enabled());
        let mut seq = regs("sr", &self.seq);
        seq.hex("index", u64::from(self.seq_index), 2);
        let mut crtc = regs("cr", &self.crtc);
        crtc.hex("index", u64::from(self.crtc_index), 2);
        let mut gc = regs("gr", &self.gc);
        gc.hex("index", u64::from(self.gc_index), 2);
        let mut attr = regs("ar", &self.attr);
        attr.hex("index", u64::from(self.attr_index & 0x1f), 2)
            .value("palette_address_source", self.attr_index & ATTR_PAS != 0)
            .value(
                "flip_flop",
                if self.attr_data_next { "data" } else { "index" },
            );
        let mut dac = Tree::new();
        dac.hex("pel_mask", u64::from(self.dac_mask), 2)
            .hex("read_index", u64::from(self.dac_read_index), 2)
            .hex("write_index", u64::from(self.dac_write_index), 2)
            .value("component", self.dac_component);
        let screen = self.text_screen();
        let mut text = Tree::new();
        for (i, line) in screen.lines().into_iter().enumerate() {
            text.value(format!("{i:02}"), line);
        }
        match screen.cursor {
            Some((r, c)) => text.value("cursor", format!("{r},{c}")),
            None => text.value("cursor", "hidden"),
        };
        t.child("sequencer", seq)
            .child("crtc", crtc)
            .child("graphics", gc)
            .child("attribute", attr)
            .child("dac", dac)
            .child("text", text);
        t
    }
}

/// The VGA's I/O ports as a bus device, registered at [`PORT_BASE`] for
/// [`PORT_LEN`] ports. Wider accesses are split into bytes at successive
/// ports (`out dx, ax` to 0x3C4 writes index and data).
#[derive(Clone)]
pub struct VgaPorts {
    /// The shared adapter.
    pub vga: Arc<Mutex<Vga>>,
}

impl BusDevice for VgaPorts {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let mut vga = alcazar_core::bus::lock(&self.vga);
        for (i, b) in (0u64..).zip(data.iter_mut()) {
            *b = match u16::try_from(offset.wrapping_add(i)) {
                Ok(o) => vga.port_read(PORT_BASE.wrapping_add(o)),
                Err(_) => 0xff,
            };
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let mut vga = alcazar_core::bus::lock(&self.vga);
        for (i, &b) in (0u64..).zip(data.iter()) {
            if let Ok(o) = u16::try_from(offset.wrapping_add(i)) {
                vga.port_write(PORT_BASE.wrapping_add(o), b);
            }
        }
    }

    fn inspect(&self) -> Tree {
        alcazar_core::bus::lock(&self.vga).tree()
    }
}

/// The VGA's memory window as a bus device, registered at [`MMIO_BASE`]
/// for [`MMIO_LEN`] bytes. Wider accesses are split into bytes at
/// successive addresses, lowest first.
#[derive(Clone)]
pub struct VgaMemory {
    /// The shared adapter.
    pub vga: Arc<Mutex<Vga>>,
}

impl BusDevice for VgaMemory {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let mut vga = alcazar_core::bus::lock(&self.vga);
        for (i, b) in (0u64..).zip(data.iter_mut()) {
            *b = vga.mem_read(offset.wrapping_add(i));
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let mut vga = alcazar_core::bus::lock(&self.vga);
        for (i, &b) in (0u64..).zip(data.iter()) {
            vga.mem_write(offset.wrapping_add(i), b);
        }
    }

    fn inspect(&self) -> Tree {
        alcazar_core::bus::lock(&self.vga).tree()
    }
}

impl BusDevice for Vga {
    /// Ports only: `offset` from [`PORT_BASE`]. (Register the memory
    /// through [`VgaMemory`].)
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        for (i, b) in (0u64..).zip(data.iter_mut()) {
            *b = match u16::try_from(offset.wrapping_add(i)) {
                Ok(o) => self.port_read(PORT_BASE.wrapping_add(o)),
                Err(_) => 0xff,
            };
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        for (i, &b) in (0u64..).zip(data.iter()) {
            if let Ok(o) = u16::try_from(offset.wrapping_add(i)) {
                self.port_write(PORT_BASE.wrapping_add(o), b);
            }
        }
    }

    fn inspect(&self) -> Tree {
        self.tree()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Programs mode 3 the way a BIOS does: misc output, sequencer under
    /// synchronous reset, CRTC after lifting the write protection, GC,
    /// attribute controller (then PAS), and a grey-scale DAC ramp.
    pub(crate) fn bios_mode3() -> Vga {
        let mut v = Vga::new();
        // Scramble first, so the test sees the writes take effect.
        v.misc = 0;
        v.seq = [0; SEQ_REGS];
        v.crtc = [0; CRTC_REGS];
        v.gc = [0; GC_REGS];
        v.attr = [0; ATTR_REGS];
        v.port_write(0x3c2, MODE3_MISC);
        v.port_write(0x3c4, 0);
        v.port_write(0x3c5, 1); // synchronous reset
        for (i, &r) in MODE3_SEQ.iter().enumerate().skip(1) {
            v.port_write(0x3c4, i as u8);
            v.port_write(0x3c5, r);
        }
        v.port_write(0x3c4, 0);
        v.port_write(0x3c5, 3);
        v.port_write(0x3d4, 0x11);
        v.port_write(0x3d5, 0x0e); // protection off
        for (i, &r) in MODE3_CRTC.iter().enumerate() {
            v.port_write(0x3d4, i as u8);
            v.port_write(0x3d5, r);
        }
        for (i, &r) in MODE3_GC.iter().enumerate() {
            v.port_write(0x3ce, i as u8);
            v.port_write(0x3cf, r);
        }
        v.port_read(0x3da);
        for (i, &r) in MODE3_ATTR.iter().enumerate() {
            v.port_write(0x3c0, i as u8);
            v.port_write(0x3c0, r);
        }
        v.port_write(0x3c0, ATTR_PAS);
        v.port_write(0x3c8, 0);
        for i in 0..64u8 {
            for _ in 0..3 {
                v.port_write(0x3c9, i);
            }
        }
        v
    }

    #[test]
    fn bios_sequence_leaves_mode3_programmed() {
        let v = bios_mode3();
        assert_eq!(v.crtc, MODE3_CRTC);
        assert_eq!(v.attr, MODE3_ATTR);
        assert!(v.display_enabled());
        assert!(!v.graphics_mode());
        assert_eq!(v.dac[5], [5, 5, 5]);
    }

    #[test]
    fn crtc_protection_guards_cr0_to_cr7() {
        let mut v = Vga::new();
        v.port_write(0x3d4, 0);
        v.port_write(0x3d5, 0x12);
        assert_eq!(v.port_read(0x3d5), 0x5f);
        v.port_write(0x3d4, 7);
        v.port_write(0x3d5, 0x00);
        assert_eq!(v.port_read(0x3d5), 0x0f, "only bit 4 is writable");
        v.port_write(0x3d4, 0x0e);
        v.port_write(0x3d5, 0x01);
        assert_eq!(v.port_read(0x3d5), 0x01);
    }

    #[test]
    fn misc_bit0_moves_the_crtc_between_3b4_and_3d4() {
        let mut v = Vga::new();
        v.port_write(0x3d4, 0x0f);
        v.port_write(0x3d5, 0x42);
        assert_eq!(v.port_read(0x3b5), 0xff, "mono ports are off in colour");
        v.port_write(0x3c2, MODE3_MISC & !MISC_COLOR_IO);
        assert_eq!(v.port_read(0x3cc), 0x66);
        assert_eq!(v.port_read(0x3d5), 0xff, "colour ports are off in mono");
        v.port_write(0x3b4, 0x0f);
        assert_eq!(v.port_read(0x3b5), 0x42);
        v.port_write(0x3b5, 0x43);
        v.port_write(0x3c2, MODE3_MISC);
        v.port_write(0x3d4, 0x0f);
        assert_eq!(v.port_read(0x3d5), 0x43);
    }

    #[test]
    fn input_status_read_resets_the_attribute_flip_flop() {
        let mut v = Vga::new();
        v.port_write(0x3c0, 0x10 | ATTR_PAS); // index: mode control
        assert!(v.attr_data_next);
        v.port_read(0x3da);
        assert!(!v.attr_data_next);
        // So this write is an index again, not data for AR10.
        v.port_write(0x3c0, 0x11 | ATTR_PAS);
        v.port_write(0x3c0, 0x05);
        assert_eq!(v.attr[0x10], 0x0c);
        assert_eq!(v.attr[0x11], 0x05);
        assert_eq!(v.port_read(0x3c0), 0x31);
        assert_eq!(v.port_read(0x3c1), 0x05);
    }

    #[test]
    fn retrace_bits_toggle_so_polling_ends() {
        let mut v = Vga::new();
        let reads: Vec<u8> = (0..4).map(|_| v.port_read(0x3da)).collect();
        assert!(reads.iter().any(|r| r & IS1_VRETRACE != 0));
        assert!(reads.iter().any(|r| r & IS1_VRETRACE == 0));
        assert!(reads.iter().any(|r| r & IS1_DISPLAY_DISABLED == 0));
        assert!(reads.iter().any(|r| r & IS1_DISPLAY_DISABLED != 0));
    }

    #[test]
    fn dac_cycles_through_rgb() {
        let mut v = Vga::new();
        v.port_write(0x3c8, 0x10);
        for c in [0x3f, 0x20, 0x01, 0x02] {
            v.port_write(0x3c9, c);
        }
        assert_eq!(v.port_read(0x3c8), 0x11);
        v.port_write(0x3c7, 0x10);
        assert_eq!(v.port_read(0x3c7), 3);
        let got: Vec<u8> = (0..3).map(|_| v.port_read(0x3c9)).collect();
        assert_eq!(got, [0x3f, 0x20, 0x01]);
    }

    #[test]
    fn word_port_write_sets_index_and_data() {
        let (vga, mut ports, _) = Vga::shared();
        ports.write(0x3c4 - 0x3b0, &[0x02, 0x0f]);
        assert_eq!(alcazar_core::bus::lock(&vga).seq[2], 0x0f);
        let mut b = [0u8; 2];
        ports.read(0x3c4 - 0x3b0, &mut b);
        assert_eq!(b, [0x02, 0x0f]);
    }

    /// A cheap stand-in for the fuzz target: many pseudo-random port and
    /// memory accesses (biased towards index/data pairs), screens and
    /// renders, none of which may panic or break the screen's bounds.
    #[test]
    fn random_accesses_never_panic() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut v = Vga::new();
        let mut r = AnsiRenderer::new();
        for i in 0..200_000u32 {
            let n = next();
            let port = PORT_BASE + (n % u64::from(PORT_LEN)) as u16;
            let val = (n >> 16) as u8;
            let addr = (n >> 24) % MMIO_LEN;
            match (n >> 56) % 6 {
                0 | 1 => v.port_write(port, val),
                2 => {
                    v.port_read(port);
                }
                3 => v.mem_write(addr, val),
                4 => {
                    v.mem_read(addr);
                }
                _ => {
                    let idx = [0x3c4, 0x3ce, 0x3d4, 0x3c0][(n >> 40) as usize % 4];
                    v.port_write(idx, val & 0x1f);
                    v.port_write(idx + 1, (n >> 32) as u8);
                    v.port_write(0x3c0, (n >> 32) as u8);
                }
            }
            if i % 1000 == 0 {
                let s = v.text_screen();
                assert_eq!(s.cells.len(), s.rows * s.cols);
                if let Some((row, col)) = s.cursor {
                    assert!(row < s.rows && col < s.cols);
                }
                r.frame(&s);
                assert!(r.frame(&s).is_empty());
                let _ = v.tree();
            }
        }
    }

    #[test]
    fn inspector_shows_registers_and_text() {
        let (_, ports, mut mem) = Vga::shared();
        mem.write(0x18000, b"H\x07i\x07");
        let t = ports.inspect();
        assert_eq!(
            t.get("crtc/cr01"),
            Some(alcazar_core::Node::Value("0x4f".into()))
        );
        assert_eq!(
            t.get("text/00"),
            Some(alcazar_core::Node::Value(format!("Hi{}", " ".repeat(78))))
        );
        assert!(t.get("text/24").is_some());
        assert!(t.get("text/25").is_none());
    }
}
