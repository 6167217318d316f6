//! Intel 8042 keyboard controller, enough for Linux to probe it and for
//! the guest to reset the machine.
//!
//! Ports: 0x60 (data) and 0x64 (status on read, command on write).
//! IRQ 1 (keyboard) when the command byte enables it; no mouse (the AUX
//! port answers its tests but no device is attached, so Linux's
//! `i8042` driver reports no AUX port). Reference: IBM PC/AT Technical
//! Reference, "Keyboard Controller", and the command list in the 8042
//! chapter of the Personal System/2 Hardware Interface Technical Reference.
//!
//! The one command that matters most to a VMM is 0xFE, "pulse output
//! port bit 0": the output port's bit 0 drives the CPU's RESET line, so
//! this is how a PC without ACPI reboots. Writing an output-port value
//! with bit 0 clear (command 0xD1) resets too. Both end the VM with
//! [`StopReason::Reset`].
//!
//! Key presses come from the host through [`I8042::key_input`] as scancode
//! set 2, what a keyboard sends on its wire (see [`crate::i8042_keys`]).
//! They wait in a bounded queue and enter the output buffer one at a time,
//! when it is empty and the keyboard is enabled, translated to set 1 when
//! the command byte's translate bit (6) is set, as the PS/2 controller
//! does; each one raises IRQ 1. The keyboard's own scan-code-set command
//! (0xF0) is acknowledged but not modelled: it always sends set 2.

use std::collections::VecDeque;
use std::sync::Arc;

use alcazar_core::inspect::Tree;
use alcazar_core::irq::IrqLine;
use alcazar_core::{BusDevice, StopReason, VmControl};

/// The data port.
pub const DATA_PORT: u16 = 0x60;
/// Status/command port.
pub const COMMAND_PORT: u16 = 0x64;

// Status register bits.
const STATUS_OBF: u8 = 1 << 0;
const STATUS_SYSTEM: u8 = 1 << 2;
const STATUS_CMD: u8 = 1 << 3;
/// Keyboard not inhibited (the key lock switch is open): a virtual PC has
/// no key lock.
const STATUS_UNLOCKED: u8 = 1 << 4;
const STATUS_AUX_OBF: u8 = 1 << 5;

// Command byte bits.
const CB_KBD_INT: u8 = 1 << 0;
const CB_SYSTEM: u8 = 1 << 2;
const CB_KBD_DISABLE: u8 = 1 << 4;
const CB_AUX_DISABLE: u8 = 1 << 5;
const CB_AUX_INT: u8 = 1 << 1;
const CB_XLATE: u8 = 1 << 6;
// Output port bits.
const OP_RESET: u8 = 1 << 0;
const OP_A20: u8 = 1 << 1;

/// Which register the next data-port write goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pending {
    /// A command to the keyboard itself.
    Keyboard,
    /// 0x60: the controller's command byte.
    CommandByte,
    /// 0xD1: the output port.
    OutputPort,
    /// 0xD2: data to loop back as if from the keyboard.
    KbdBuffer,
    /// 0xD3: data to loop back as if from the mouse.
    AuxBuffer,
    /// 0xD4: a command for the (absent) mouse.
    Aux,
}

/// The 8042 controller. Its register offsets are 0 (data) and 4
/// (status/command); because port 0x61 sits between them and belongs to
/// another device, the VMM registers two [`I8042Port`] adapters, one per
/// port in [`I8042::PORTS`].
pub struct I8042 {
    command_byte: u8,
    output_port: u8,
    pending: Pending,
    status_cmd: bool,
    out: VecDeque<(u8, bool)>,
    /// Set 2 bytes from the keyboard, not yet in the output buffer.
    keys: VecDeque<u8>,
    /// Translation saw `F0`: the next byte is a break code.
    xlate_break: bool,
    /// The keyboard sends keys (off after its 0xF5 command).
    scanning: bool,
    irq1: Arc<dyn IrqLine>,
    control: Arc<VmControl>,
}

impl std::fmt::Debug for I8042 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("I8042")
            .field("command_byte", &self.command_byte)
            .field("output_port", &self.output_port)
            .field("status", &self.status())
            .finish()
    }
}

impl I8042 {
    /// The two single-port ranges the device answers: (port, len).
    pub const PORTS: [(u16, u16); 2] = [(DATA_PORT, 1), (COMMAND_PORT, 1)];

    /// A controller after self-test: keyboard interrupt enabled,
    /// translation on, system flag set, output port with the reset line
    /// released (bit 0) and A20 enabled (bit 1).
    pub fn new(irq1: Arc<dyn IrqLine>, control: Arc<VmControl>) -> Self {
        I8042 {
            command_byte: CB_KBD_INT | CB_SYSTEM | CB_XLATE,
            output_port: 0x03,
            pending: Pending::Keyboard,
            status_cmd: false,
            out: VecDeque::new(),
            keys: VecDeque::new(),
            xlate_break: false,
            scanning: true,
            irq1,
            control,
        }
    }

    fn status(&self) -> u8 {
        let mut s = STATUS_UNLOCKED
            | STATUS_SYSTEM
                & if self.command_byte & CB_SYSTEM != 0 {
                    0xff
                } else {
                    0
                };
        if let Some(&(_, aux)) = self.out.front() {
            s |= STATUS_OBF;
            if aux {
                s |= STATUS_AUX_OBF;
            }
        }
        if self.status_cmd {
            s |= STATUS_CMD;
        }
        s
    }

    fn push(&mut self, byte: u8, aux: bool) {
        // The real output buffer holds one byte; a short queue lets a
        // multi-byte reply (reset: ACK then 0xAA) wait its turn.
        if self.out.len() < 16 {
            self.out.push_back((byte, aux));
        }
        if !aux && self.command_byte & CB_KBD_INT != 0 {
            self.irq1.pulse();
        }
    }

    /// Bytes of key input the controller holds before it drops more (a
    /// real keyboard's buffer is 16 keys; a pasted line needs more).
    pub const KEY_QUEUE: usize = 1024;

    /// Key presses from the host keyboard, in scancode set 2 (make codes,
    /// `F0` before break codes, `E0` prefixes), e.g. from
    /// [`crate::i8042_keys::KeyTranslator`]. They reach the guest one byte
    /// per output-buffer read, translated to set 1 if the command byte
    /// says so; input beyond [`I8042::KEY_QUEUE`] bytes is dropped, and
    /// so is input while the guest has told the keyboard to stop
    /// scanning (0xF5), as a real keyboard does.
    pub fn key_input(&mut self, set2: &[u8]) {
        if !self.scanning {
            return;
        }
        let room = Self::KEY_QUEUE.saturating_sub(self.keys.len());
        self.keys.extend(set2.iter().take(room));
        self.refill();
    }

    /// Moves the next keyboard byte into the empty output buffer (the
    /// controller's translation applied), raising IRQ 1.
    fn refill(&mut self) {
        if !self.out.is_empty() || self.command_byte & CB_KBD_DISABLE != 0 || !self.scanning {
            return;
        }
        while let Some(b) = self.keys.pop_front() {
            if self.command_byte & CB_XLATE == 0 {
                self.push(b, false);
                return;
            }
            if b == 0xf0 {
                self.xlate_break = true;
                continue;
            }
            let mut t = crate::i8042_keys::set2_to_set1(b);
            if std::mem::take(&mut self.xlate_break) && b != 0xe0 && b != 0xe1 {
                t |= 0x80;
            }
            self.push(t, false);
            return;
        }
    }

    fn reset_machine(&mut self) {
        tracing::info!("i8042: guest pulsed the CPU reset line");
        self.control.request_stop(StopReason::Reset);
    }

    fn command(&mut self, cmd: u8) {
        self.status_cmd = true;
        match cmd {
            0x20 => self.push(self.command_byte, false),
            0x60 => self.pending = Pending::CommandByte,
            0xa7 => self.command_byte |= CB_AUX_DISABLE,
            0xa8 => self.command_byte &= !CB_AUX_DISABLE,
            0xa9 => self.push(0x00, false), // AUX interface test: OK
            0xaa => self.push(0x55, false), // controller self-test: OK
            0xab => self.push(0x00, false), // keyboard interface test: OK
            0xad => self.command_byte |= CB_KBD_DISABLE,
            0xae => {
                self.command_byte &= !CB_KBD_DISABLE;
                self.refill();
            }
            0xc0 => self.push(0x00, false), // input port
            0xd0 => self.push(self.output_port, false),
            0xd1 => self.pending = Pending::OutputPort,
            0xd2 => self.pending = Pending::KbdBuffer,
            0xd3 => self.pending = Pending::AuxBuffer,
            0xd4 => self.pending = Pending::Aux,
            // 0xF0-0xFF pulse output-port bits low; bit 0 is RESET.
            0xf0..=0xff if cmd & 1 == 0 => self.reset_machine(),
            0xf0..=0xff => {}
            _ => tracing::debug!(cmd, "i8042: unsupported command ignored"),
        }
    }

    fn keyboard_command(&mut self, byte: u8) {
        // Reset and "default disable" empty the keyboard's buffer; scanning
        // stops at 0xF5 and resumes at 0xF4, 0xF6 and after a reset (PS/2
        // Technical Reference, "Keyboard Commands"). Parameter bytes of
        // 0xED/0xF0/0xF3 are below 0x80, so they never match these.
        match byte {
            0xff | 0xf5 => {
                self.keys.clear();
                self.xlate_break = false;
                self.scanning = byte == 0xff;
            }
            0xf4 | 0xf6 => self.scanning = true,
            _ => {}
        }
        match byte {
            0xff => {
                self.push(0xfa, false);
                self.push(0xaa, false); // basic assurance test passed
            }
            0xf2 => {
                self.push(0xfa, false);
                self.push(0xab, false);
                self.push(0x83, false); // MF2 keyboard ID
            }
            0xee => self.push(0xee, false), // echo
            _ => self.push(0xfa, false),    // ACK everything else
        }
    }

    fn data_write(&mut self, byte: u8) {
        self.status_cmd = false;
        let pending = std::mem::replace(&mut self.pending, Pending::Keyboard);
        match pending {
            Pending::Keyboard => {
                self.keyboard_command(byte);
                self.refill();
            }
            Pending::CommandByte => {
                self.command_byte = byte;
                self.refill();
            }
            Pending::OutputPort => {
                self.output_port = byte;
                if byte & 1 == 0 {
                    self.reset_machine();
                }
            }
            Pending::KbdBuffer => self.push(byte, false),
            Pending::AuxBuffer => self.push(byte, true),
            // No mouse is attached: the controller times out (nothing
            // is queued), which is how Linux learns there is none.
            Pending::Aux => {}
        }
    }
}

impl I8042 {
    /// The inspector's view: status register, command byte, output port
    /// (with A20) and the output buffer, peeked, not read.
    fn tree(&self) -> Tree {
        let mut t = Tree::new();
        let cb = self.command_byte;
        let pending = match self.pending {
            Pending::Keyboard => "keyboard command",
            Pending::CommandByte => "command byte (0x60)",
            Pending::OutputPort => "output port (0xd1)",
            Pending::KbdBuffer => "keyboard output buffer (0xd2)",
            Pending::AuxBuffer => "aux output buffer (0xd3)",
            Pending::Aux => "aux device (0xd4)",
        };
        t.hex("status", u64::from(self.status()), 2)
            .hex("command_byte", u64::from(cb), 2)
            .value("keyboard_interrupt", cb & CB_KBD_INT != 0)
            .value("aux_interrupt", cb & CB_AUX_INT != 0)
            .value("keyboard_disabled", cb & CB_KBD_DISABLE != 0)
            .value("aux_disabled", cb & CB_AUX_DISABLE != 0)
            .value("translate", cb & CB_XLATE != 0)
            .hex("output_port", u64::from(self.output_port), 2)
            .value("a20", self.output_port & OP_A20 != 0)
            .value("reset_line_released", self.output_port & OP_RESET != 0)
            .value("output_buffer", self.out.len())
            .value("key_queue", self.keys.len());
        match self.out.front() {
            Some(&(b, aux)) => {
                t.hex("output_buffer_next", u64::from(b), 2)
                    .value("output_buffer_from", if aux { "aux" } else { "keyboard" });
            }
            None => {
                t.value("output_buffer_next", "empty");
            }
        }
        t.value("data_port_write_goes_to", pending);
        t
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0xff);
        let value = match offset {
            0 => {
                let b = self.out.pop_front().map(|(b, _)| b).unwrap_or(0);
                self.refill();
                b
            }
            _ => self.status(),
        };
        if let Some(first) = data.first_mut() {
            *first = value;
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(&value) = data.first() else { return };
        match offset {
            0 => self.data_write(value),
            _ => self.command(value),
        }
    }

    fn inspect(&self) -> Tree {
        self.tree()
    }
}

/// Adapter that presents one of the 8042's two ports as its own bus
/// device, so the pair can be registered at 0x60 and 0x64 without
/// claiming 0x61..0x63.
pub struct I8042Port {
    /// The shared controller.
    pub controller: Arc<std::sync::Mutex<I8042>>,
    /// 0 for the data port, 4 for the command port.
    pub offset: u64,
}

impl BusDevice for I8042Port {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        alcazar_core::bus::lock(&self.controller).read(self.offset, data);
    }

    fn write(&mut self, _offset: u64, data: &[u8]) {
        alcazar_core::bus::lock(&self.controller).write(self.offset, data);
    }

    /// The whole controller, whichever port this adapter is.
    fn inspect(&self) -> Tree {
        alcazar_core::bus::lock(&self.controller).inspect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alcazar_core::irq::NoIrq;

    fn kbc() -> (I8042, Arc<VmControl>) {
        let control = Arc::new(VmControl::new());
        (I8042::new(Arc::new(NoIrq), control.clone()), control)
    }

    fn read_data(k: &mut I8042) -> u8 {
        let mut b = [0];
        k.read(0, &mut b);
        b[0]
    }

    #[test]
    fn pulse_reset_command_resets_the_machine() {
        let (mut k, control) = kbc();
        k.write(4, &[0xfe]);
        assert_eq!(control.reason(), Some(StopReason::Reset));
    }

    #[test]
    fn output_port_write_with_reset_bit_clear_resets() {
        let (mut k, control) = kbc();
        k.write(4, &[0xd1]);
        k.write(0, &[0x02]);
        assert_eq!(control.reason(), Some(StopReason::Reset));
    }

    #[test]
    fn self_test_and_command_byte_round_trip() {
        let (mut k, _) = kbc();
        k.write(4, &[0xaa]);
        let mut s = [0];
        k.read(4, &mut s);
        assert_ne!(s[0] & STATUS_OBF, 0);
        assert_eq!(read_data(&mut k), 0x55);
        k.write(4, &[0x60]);
        k.write(0, &[0x45]);
        k.write(4, &[0x20]);
        assert_eq!(read_data(&mut k), 0x45);
    }

    #[test]
    fn keyboard_reset_acks_then_passes() {
        let (mut k, control) = kbc();
        k.write(0, &[0xff]);
        assert_eq!(read_data(&mut k), 0xfa);
        assert_eq!(read_data(&mut k), 0xaa);
        assert_eq!(control.reason(), None);
    }

    #[test]
    fn mouse_commands_get_no_answer() {
        let (mut k, _) = kbc();
        k.write(4, &[0xd4]);
        k.write(0, &[0xf2]);
        let mut s = [0];
        k.read(4, &mut s);
        assert_eq!(s[0] & STATUS_OBF, 0);
    }

    #[test]
    fn key_input_is_translated_and_delivered_one_byte_per_read() {
        let (mut k, _) = kbc();
        // "a" then Up, in set 2.
        k.key_input(&[0x1c, 0xf0, 0x1c, 0xe0, 0x75, 0xe0, 0xf0, 0x75]);
        let got: Vec<u8> = (0..6).map(|_| read_data(&mut k)).collect();
        assert_eq!(got, [0x1e, 0x9e, 0xe0, 0x48, 0xe0, 0xc8]);
        let mut s = [0];
        k.read(4, &mut s);
        assert_eq!(s[0] & STATUS_OBF, 0);
        // Translation off: set 2 passes through.
        k.write(4, &[0x60]);
        k.write(0, &[CB_KBD_INT | CB_SYSTEM]);
        k.key_input(&[0x1c, 0xf0, 0x1c]);
        let got: Vec<u8> = (0..3).map(|_| read_data(&mut k)).collect();
        assert_eq!(got, [0x1c, 0xf0, 0x1c]);
    }

    #[test]
    fn key_input_waits_while_the_keyboard_is_disabled() {
        let (mut k, _) = kbc();
        k.write(4, &[0xad]);
        k.key_input(&[0x1c]);
        let mut s = [0];
        k.read(4, &mut s);
        assert_eq!(s[0] & STATUS_OBF, 0);
        k.write(4, &[0xae]);
        assert_eq!(read_data(&mut k), 0x1e);
        k.key_input(&vec![0x1c; 5000]);
        assert_eq!(k.keys.len() + k.out.len(), I8042::KEY_QUEUE);
    }

    #[test]
    fn keyboard_reset_and_disable_drop_queued_keys() {
        let (mut k, _) = kbc();
        k.key_input(&[0x76, 0xf0, 0x76, 0x1c, 0xf0, 0x1c]);
        assert_eq!(read_data(&mut k), 0x01);
        k.write(0, &[0xf5]); // disable scanning
        assert_eq!(read_data(&mut k), 0x81, "already in the output buffer");
        assert_eq!(read_data(&mut k), 0xfa, "the ACK, not the next key");
        k.key_input(&[0x1c]);
        let mut s = [0];
        k.read(4, &mut s);
        assert_eq!(s[0] & STATUS_OBF, 0, "keys while disabled are lost");
        k.write(0, &[0xf4]);
        assert_eq!(read_data(&mut k), 0xfa);
        k.key_input(&[0x1c, 0xf0, 0x1c]);
        k.write(0, &[0xff]);
        assert_eq!(read_data(&mut k), 0x1e, "already in the output buffer");
        assert_eq!(read_data(&mut k), 0xfa);
        assert_eq!(read_data(&mut k), 0xaa);
        k.read(4, &mut s);
        assert_eq!(s[0] & STATUS_OBF, 0, "the reset emptied the queue");
    }

    fn shown(k: &I8042, path: &str) -> String {
        match k.inspect().get(path) {
            Some(alcazar_core::Node::Value(v)) => v,
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn inspector_shows_status_command_byte_and_a20() {
        let (mut k, _) = kbc();
        assert_eq!(shown(&k, "a20"), "true");
        k.write(4, &[0x60]);
        assert_eq!(shown(&k, "data_port_write_goes_to"), "command byte (0x60)");
        k.write(0, &[0x61]);
        k.write(4, &[0xd1]);
        k.write(0, &[0x01]); // A20 off, reset line released
        assert_eq!(shown(&k, "command_byte"), "0x61");
        assert_eq!(shown(&k, "translate"), "true");
        assert_eq!(shown(&k, "output_port"), "0x01");
        assert_eq!(shown(&k, "a20"), "false");
        assert_eq!(shown(&k, "output_buffer_next"), "empty");
    }

    #[test]
    fn inspecting_leaves_the_output_buffer_full() {
        let (mut k, _) = kbc();
        k.write(4, &[0xaa]);
        let port = I8042Port {
            controller: Arc::new(std::sync::Mutex::new(k)),
            offset: 4,
        };
        let tree = port.inspect();
        assert_eq!(
            tree.get("status"),
            Some(alcazar_core::Node::Value("0x1d".into()))
        );
        assert_eq!(
            tree.get("output_buffer_next"),
            Some(alcazar_core::Node::Value("0x55".into()))
        );
        assert_eq!(port.inspect(), tree);
        let mut k = alcazar_core::bus::lock(&port.controller);
        assert_eq!(read_data(&mut k), 0x55, "the byte is still there");
    }
}
