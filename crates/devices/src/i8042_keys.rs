//! Terminal input as PC keyboard scancodes: what a user types in the
//! host terminal becomes the key presses and releases an MF2 keyboard
//! would send to the [`crate::I8042`].
//!
//! A keyboard speaks scancode set 2 on its wire; the 8042 translates that
//! to set 1 for the guest when bit 6 of its command byte is set (the PC/AT
//! default, and what BIOSes and Linux expect). The translator here
//! therefore produces **set 2** make/break codes (`F0` before a break
//! code, `E0` before the extended keys), and [`crate::I8042::key_input`]
//! applies the controller's translation ([`set2_to_set1`]) or not, as the
//! guest's command byte says. References: IBM Personal System/2 Hardware
//! Interface Technical Reference, "Keyboard" (scan code set 2 table) and
//! "Keyboard Controller" (translation); for the terminal side, ECMA-48
//! (CSI, SS3) and the xterm control-sequence list (function keys).
//!
//! [`KeyTranslator::translate`] takes whole `read()` chunks from the
//! terminal and has no timeout: an `ESC` byte starts a sequence only if
//! more bytes follow it in the same chunk, so a chunk that ends in a bare
//! `ESC` is the Esc key. (A terminal writes a key's whole sequence at
//! once, so sequences are not split across reads in practice.) `ESC`
//! followed by an ordinary character is Alt plus that character, as
//! terminals send it. Input that no PC key produces (non-ASCII UTF-8,
//! unknown sequences) is dropped.

/// One key of the PC keyboard, by its codes in scancode sets 1 and 2
/// (PS/2 Technical Reference, "Keyboard", scan code tables).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Key {
    /// The set 2 code (without `E0`/`F0`).
    pub set2: u8,
    /// The set 1 make code (without `E0`).
    pub set1: u8,
    /// Whether the key sends an `E0` prefix (the grey cursor keys, the
    /// right Ctrl/Alt, ...).
    pub extended: bool,
}

const fn key(set1: u8, set2: u8) -> Key {
    Key {
        set2,
        set1,
        extended: false,
    }
}

const fn ext(set1: u8, set2: u8) -> Key {
    Key {
        set2,
        set1,
        extended: true,
    }
}

/// The keys the translator uses, named as on the keycaps.
#[allow(missing_docs)]
pub mod keys {
    use super::{ext, key, Key};

    pub const ESC: Key = key(0x01, 0x76);
    pub const BACKSPACE: Key = key(0x0e, 0x66);
    pub const TAB: Key = key(0x0f, 0x0d);
    pub const ENTER: Key = key(0x1c, 0x5a);
    pub const LCTRL: Key = key(0x1d, 0x14);
    pub const LSHIFT: Key = key(0x2a, 0x12);
    pub const RSHIFT: Key = key(0x36, 0x59);
    pub const LALT: Key = key(0x38, 0x11);
    pub const SPACE: Key = key(0x39, 0x29);
    pub const CAPS_LOCK: Key = key(0x3a, 0x58);
    pub const NUM_LOCK: Key = key(0x45, 0x77);
    pub const SCROLL_LOCK: Key = key(0x46, 0x7e);
    pub const F1: Key = key(0x3b, 0x05);
    pub const F2: Key = key(0x3c, 0x06);
    pub const F3: Key = key(0x3d, 0x04);
    pub const F4: Key = key(0x3e, 0x0c);
    pub const F5: Key = key(0x3f, 0x03);
    pub const F6: Key = key(0x40, 0x0b);
    pub const F7: Key = key(0x41, 0x83);
    pub const F8: Key = key(0x42, 0x0a);
    pub const F9: Key = key(0x43, 0x01);
    pub const F10: Key = key(0x44, 0x09);
    pub const F11: Key = key(0x57, 0x78);
    pub const F12: Key = key(0x58, 0x07);
    // Keypad (the cursor keys below share their codes, with E0).
    pub const KP_STAR: Key = key(0x37, 0x7c);
    pub const KP_7: Key = key(0x47, 0x6c);
    pub const KP_8: Key = key(0x48, 0x75);
    pub const KP_9: Key = key(0x49, 0x7d);
    pub const KP_MINUS: Key = key(0x4a, 0x7b);
    pub const KP_4: Key = key(0x4b, 0x6b);
    pub const KP_5: Key = key(0x4c, 0x73);
    pub const KP_6: Key = key(0x4d, 0x74);
    pub const KP_PLUS: Key = key(0x4e, 0x79);
    pub const KP_1: Key = key(0x4f, 0x69);
    pub const KP_2: Key = key(0x50, 0x72);
    pub const KP_3: Key = key(0x51, 0x7a);
    pub const KP_0: Key = key(0x52, 0x70);
    pub const KP_DOT: Key = key(0x53, 0x71);
    // The grey editing and cursor keys.
    pub const HOME: Key = ext(0x47, 0x6c);
    pub const UP: Key = ext(0x48, 0x75);
    pub const PAGE_UP: Key = ext(0x49, 0x7d);
    pub const LEFT: Key = ext(0x4b, 0x6b);
    pub const RIGHT: Key = ext(0x4d, 0x74);
    pub const END: Key = ext(0x4f, 0x69);
    pub const DOWN: Key = ext(0x50, 0x72);
    pub const PAGE_DOWN: Key = ext(0x51, 0x7a);
    pub const INSERT: Key = ext(0x52, 0x70);
    pub const DELETE: Key = ext(0x53, 0x71);
}

/// The typewriter keys: (unshifted char, shifted char, set 1, set 2).
const TYPEWRITER: [(u8, u8, u8, u8); 47] = [
    (b'1', b'!', 0x02, 0x16),
    (b'2', b'@', 0x03, 0x1e),
    (b'3', b'#', 0x04, 0x26),
    (b'4', b'$', 0x05, 0x25),
    (b'5', b'%', 0x06, 0x2e),
    (b'6', b'^', 0x07, 0x36),
    (b'7', b'&', 0x08, 0x3d),
    (b'8', b'*', 0x09, 0x3e),
    (b'9', b'(', 0x0a, 0x46),
    (b'0', b')', 0x0b, 0x45),
    (b'-', b'_', 0x0c, 0x4e),
    (b'=', b'+', 0x0d, 0x55),
    (b'q', b'Q', 0x10, 0x15),
    (b'w', b'W', 0x11, 0x1d),
    (b'e', b'E', 0x12, 0x24),
    (b'r', b'R', 0x13, 0x2d),
    (b't', b'T', 0x14, 0x2c),
    (b'y', b'Y', 0x15, 0x35),
    (b'u', b'U', 0x16, 0x3c),
    (b'i', b'I', 0x17, 0x43),
    (b'o', b'O', 0x18, 0x44),
    (b'p', b'P', 0x19, 0x4d),
    (b'[', b'{', 0x1a, 0x54),
    (b']', b'}', 0x1b, 0x5b),
    (b'a', b'A', 0x1e, 0x1c),
    (b's', b'S', 0x1f, 0x1b),
    (b'd', b'D', 0x20, 0x23),
    (b'f', b'F', 0x21, 0x2b),
    (b'g', b'G', 0x22, 0x34),
    (b'h', b'H', 0x23, 0x33),
    (b'j', b'J', 0x24, 0x3b),
    (b'k', b'K', 0x25, 0x42),
    (b'l', b'L', 0x26, 0x4b),
    (b';', b':', 0x27, 0x4c),
    (b'\'', b'"', 0x28, 0x52),
    (b'`', b'~', 0x29, 0x0e),
    (b'\\', b'|', 0x2b, 0x5d),
    (b'z', b'Z', 0x2c, 0x1a),
    (b'x', b'X', 0x2d, 0x22),
    (b'c', b'C', 0x2e, 0x21),
    (b'v', b'V', 0x2f, 0x2a),
    (b'b', b'B', 0x30, 0x32),
    (b'n', b'N', 0x31, 0x31),
    (b'm', b'M', 0x32, 0x3a),
    (b',', b'<', 0x33, 0x41),
    (b'.', b'>', 0x34, 0x49),
    (b'/', b'?', 0x35, 0x4a),
];

/// The other single (non-`E0`) keys, for the translation table.
const OTHER_KEYS: [Key; 38] = [
    keys::ESC,
    keys::BACKSPACE,
    keys::TAB,
    keys::ENTER,
    keys::LCTRL,
    keys::LSHIFT,
    keys::RSHIFT,
    keys::LALT,
    keys::SPACE,
    keys::CAPS_LOCK,
    keys::NUM_LOCK,
    keys::SCROLL_LOCK,
    keys::F1,
    keys::F2,
    keys::F3,
    keys::F4,
    keys::F5,
    keys::F6,
    keys::F7,
    keys::F8,
    keys::F9,
    keys::F10,
    keys::F11,
    keys::F12,
    keys::KP_STAR,
    keys::KP_7,
    keys::KP_8,
    keys::KP_9,
    keys::KP_MINUS,
    keys::KP_4,
    keys::KP_5,
    keys::KP_6,
    keys::KP_PLUS,
    keys::KP_1,
    keys::KP_2,
    keys::KP_3,
    keys::KP_0,
    keys::KP_DOT,
];

/// The 8042's set 2 → set 1 translation of one code byte (break prefix
/// `F0` handled by the caller: it sets bit 7 of the next translated
/// byte). Models the translation table of the PS/2 Technical Reference's
/// keyboard controller chapter for the keys of an MF2 keyboard; `E0`/`E1`
/// prefixes and codes no key sends pass through unchanged.
pub fn set2_to_set1(code: u8) -> u8 {
    if let Some(&(_, _, s1, _)) = TYPEWRITER.iter().find(|t| t.3 == code) {
        return s1;
    }
    // The extended keys share their second byte with a keypad key, and
    // right Ctrl/Alt, keypad Enter and keypad / with their left/main
    // twins, so the single-byte keys cover the MF2 codes (Print Screen's
    // and Pause's odd sequences aside).
    OTHER_KEYS
        .iter()
        .find(|k| k.set2 == code)
        .map_or(code, |k| k.set1)
}

/// Modifier keys held around a key press.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Mods {
    shift: bool,
    ctrl: bool,
    alt: bool,
}

/// Turns terminal input into set 2 scancodes (see the module doc).
#[derive(Clone, Debug, Default)]
pub struct KeyTranslator {
    _private: (),
}

impl KeyTranslator {
    /// A translator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Translates one chunk of terminal input (a whole `read()`) to set 2
    /// make/break codes, appended to `out`. A trailing lone `ESC` is the
    /// Esc key.
    pub fn translate(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        let mut i = 0;
        while i < chunk.len() {
            let b = chunk[i];
            i += 1;
            if b != 0x1b {
                if b < 0x80 {
                    char_key(b, Mods::default(), out);
                } else {
                    // Non-ASCII UTF-8: skip the whole sequence.
                    while chunk.get(i).is_some_and(|&c| c & 0xc0 == 0x80) {
                        i += 1;
                    }
                }
                continue;
            }
            match chunk.get(i) {
                None => press(keys::ESC, Mods::default(), out),
                Some(b'[') => i = csi(chunk, i + 1, out),
                Some(b'O') if i + 1 < chunk.len() => i = ss3(chunk, i + 1, out),
                Some(0x1b) => press(keys::ESC, Mods::default(), out),
                Some(&c) if c < 0x80 => {
                    i += 1;
                    char_key(
                        c,
                        Mods {
                            alt: true,
                            ..Mods::default()
                        },
                        out,
                    );
                }
                Some(_) => press(keys::ESC, Mods::default(), out),
            }
        }
    }

    /// Convenience: [`KeyTranslator::translate`] into a new vector.
    pub fn translate_to_vec(&mut self, chunk: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        self.translate(chunk, &mut out);
        out
    }
}

fn make(k: Key, out: &mut Vec<u8>) {
    if k.extended {
        out.push(0xe0);
    }
    out.push(k.set2);
}

fn brk(k: Key, out: &mut Vec<u8>) {
    if k.extended {
        out.push(0xe0);
    }
    out.push(0xf0);
    out.push(k.set2);
}

/// Presses and releases `k` with the modifiers held around it.
fn press(k: Key, m: Mods, out: &mut Vec<u8>) {
    let held: [(bool, Key); 3] = [
        (m.ctrl, keys::LCTRL),
        (m.alt, keys::LALT),
        (m.shift, keys::LSHIFT),
    ];
    for &(on, mk) in &held {
        if on {
            make(mk, out);
        }
    }
    make(k, out);
    brk(k, out);
    for &(on, mk) in held.iter().rev() {
        if on {
            brk(mk, out);
        }
    }
}

/// The key an ASCII byte comes from, and whether Shift or Ctrl made it.
fn char_key(b: u8, mut m: Mods, out: &mut Vec<u8>) {
    let k = match b {
        b'\r' | b'\n' => keys::ENTER,
        b'\t' => keys::TAB,
        0x08 | 0x7f => keys::BACKSPACE,
        0x1b => keys::ESC,
        b' ' => keys::SPACE,
        0x00 => {
            m.ctrl = true;
            key(0x03, 0x1e) // Ctrl-@ is Ctrl-2
        }
        0x01..=0x1a => {
            m.ctrl = true;
            return char_key(b'a' + b - 1, m, out);
        }
        0x1c..=0x1f => {
            m.ctrl = true;
            let base = [b'\\', b']', b'6', b'-'][usize::from(b - 0x1c)];
            return char_key(base, m, out);
        }
        _ => match TYPEWRITER.iter().find(|t| t.0 == b || t.1 == b) {
            Some(&(lower, _, s1, s2)) => {
                m.shift |= lower != b;
                key(s1, s2)
            }
            None => return,
        },
    };
    press(k, m, out);
}

/// xterm's modifier parameter (1 + shift·1 + alt·2 + ctrl·4).
fn mods_param(p: Option<u32>) -> Mods {
    let v = p.unwrap_or(1).saturating_sub(1);
    Mods {
        shift: v & 1 != 0,
        alt: v & 2 != 0,
        ctrl: v & 4 != 0,
    }
}

/// Parses `CSI params final` starting after `ESC [` at `i`; returns the
/// index after the sequence. An unterminated sequence is dropped.
fn csi(chunk: &[u8], mut i: usize, out: &mut Vec<u8>) -> usize {
    // The Linux console's F1-F5: ESC [ [ A..E.
    if chunk.get(i) == Some(&b'[') {
        if let Some(&c) = chunk.get(i + 1) {
            let f = [keys::F1, keys::F2, keys::F3, keys::F4, keys::F5];
            if let Some(&k) = c.checked_sub(b'A').and_then(|n| f.get(usize::from(n))) {
                press(k, Mods::default(), out);
            }
            return i + 2;
        }
        return i + 1;
    }
    let mut params: [Option<u32>; 2] = [None, None];
    let mut n = 0;
    while let Some(&c) = chunk.get(i) {
        i += 1;
        match c {
            b'0'..=b'9' => {
                if let Some(p) = params.get_mut(n) {
                    let v = p.unwrap_or(0);
                    *p = Some(v.saturating_mul(10).saturating_add(u32::from(c - b'0')));
                }
            }
            b';' => n += 1,
            0x40..=0x7e => {
                let m = mods_param(params[1]);
                let k = match c {
                    b'A' => Some(keys::UP),
                    b'B' => Some(keys::DOWN),
                    b'C' => Some(keys::RIGHT),
                    b'D' => Some(keys::LEFT),
                    b'H' => Some(keys::HOME),
                    b'F' => Some(keys::END),
                    b'P' => Some(keys::F1),
                    b'Q' => Some(keys::F2),
                    b'R' => Some(keys::F3),
                    b'S' => Some(keys::F4),
                    b'~' => tilde_key(params[0].unwrap_or(0)),
                    _ => None,
                };
                if let Some(k) = k {
                    press(k, m, out);
                }
                return i;
            }
            // Intermediate or private bytes: keep scanning for the final.
            0x20..=0x3f => {}
            _ => return i - 1,
        }
    }
    i
}

/// The keys of `CSI n ~` (VT220 editing keys and xterm function keys).
fn tilde_key(n: u32) -> Option<Key> {
    Some(match n {
        1 | 7 => keys::HOME,
        2 => keys::INSERT,
        3 => keys::DELETE,
        4 | 8 => keys::END,
        5 => keys::PAGE_UP,
        6 => keys::PAGE_DOWN,
        11 => keys::F1,
        12 => keys::F2,
        13 => keys::F3,
        14 => keys::F4,
        15 => keys::F5,
        17 => keys::F6,
        18 => keys::F7,
        19 => keys::F8,
        20 => keys::F9,
        21 => keys::F10,
        23 => keys::F11,
        24 => keys::F12,
        _ => return None,
    })
}

/// Parses `SS3 final` (`ESC O x`: F1-F4, and the cursor keys in
/// application mode) starting at the final byte `i`.
fn ss3(chunk: &[u8], i: usize, out: &mut Vec<u8>) -> usize {
    let mut i = i;
    // xterm may put a modifier digit before the final (ESC O 5 P).
    let mut m = Mods::default();
    if let Some(&d @ b'2'..=b'9') = chunk.get(i) {
        m = mods_param(Some(u32::from(d - b'0')));
        i += 1;
    }
    let Some(&c) = chunk.get(i) else { return i };
    let k = match c {
        b'P' => Some(keys::F1),
        b'Q' => Some(keys::F2),
        b'R' => Some(keys::F3),
        b'S' => Some(keys::F4),
        b'A' => Some(keys::UP),
        b'B' => Some(keys::DOWN),
        b'C' => Some(keys::RIGHT),
        b'D' => Some(keys::LEFT),
        b'H' => Some(keys::HOME),
        b'F' => Some(keys::END),
        b'M' => Some(keys::ENTER),
        _ => None,
    };
    if let Some(k) = k {
        press(k, m, out);
    }
    i + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(input: &[u8]) -> Vec<u8> {
        KeyTranslator::new().translate_to_vec(input)
    }

    #[test]
    fn lowercase_letter_is_make_then_break() {
        assert_eq!(t(b"a"), [0x1c, 0xf0, 0x1c]);
    }

    #[test]
    fn uppercase_letter_is_wrapped_in_shift() {
        assert_eq!(t(b"A"), [0x12, 0x1c, 0xf0, 0x1c, 0xf0, 0x12]);
        assert_eq!(t(b"!"), [0x12, 0x16, 0xf0, 0x16, 0xf0, 0x12]);
    }

    #[test]
    fn enter_backspace_tab() {
        assert_eq!(t(b"\r"), [0x5a, 0xf0, 0x5a]);
        assert_eq!(t(b"\x7f"), [0x66, 0xf0, 0x66]);
        assert_eq!(t(b"\t"), [0x0d, 0xf0, 0x0d]);
    }

    #[test]
    fn arrows_are_extended() {
        assert_eq!(t(b"\x1b[A"), [0xe0, 0x75, 0xe0, 0xf0, 0x75]);
        assert_eq!(t(b"\x1bOB"), [0xe0, 0x72, 0xe0, 0xf0, 0x72]);
        assert_eq!(t(b"\x1b[3~"), [0xe0, 0x71, 0xe0, 0xf0, 0x71]);
    }

    #[test]
    fn f1_in_both_forms() {
        assert_eq!(t(b"\x1bOP"), [0x05, 0xf0, 0x05]);
        assert_eq!(t(b"\x1b[11~"), [0x05, 0xf0, 0x05]);
        assert_eq!(t(b"\x1b[[A"), [0x05, 0xf0, 0x05]);
        assert_eq!(t(b"\x1b[18~"), [0x83, 0xf0, 0x83]);
    }

    #[test]
    fn ctrl_c_is_wrapped_in_ctrl() {
        assert_eq!(t(b"\x03"), [0x14, 0x21, 0xf0, 0x21, 0xf0, 0x14]);
    }

    #[test]
    fn bare_escape_differs_from_a_sequence() {
        assert_eq!(t(b"\x1b"), [0x76, 0xf0, 0x76]);
        assert_eq!(t(b"\x1b\x1b"), [0x76, 0xf0, 0x76, 0x76, 0xf0, 0x76]);
        assert_ne!(t(b"\x1b[A"), t(b"\x1b"));
        // Alt-x: ESC then an ordinary character.
        assert_eq!(t(b"\x1bx"), [0x11, 0x22, 0xf0, 0x22, 0xf0, 0x11]);
    }

    #[test]
    fn modified_cursor_keys_and_junk() {
        // Ctrl-Up.
        assert_eq!(
            t(b"\x1b[1;5A"),
            [0x14, 0xe0, 0x75, 0xe0, 0xf0, 0x75, 0xf0, 0x14]
        );
        assert!(t(b"\x1b[99~").is_empty());
        assert!(t("é".as_bytes()).is_empty());
        assert_eq!(t(b"\x1b[").len(), 0);
    }

    #[test]
    fn translation_to_set1() {
        assert_eq!(set2_to_set1(0x1c), 0x1e); // A
        assert_eq!(set2_to_set1(0x76), 0x01); // Esc
        assert_eq!(set2_to_set1(0x75), 0x48); // keypad 8 / Up
        assert_eq!(set2_to_set1(0x83), 0x41); // F7
        assert_eq!(set2_to_set1(0xe0), 0xe0);
    }
}
