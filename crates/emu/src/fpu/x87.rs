//! x87 register formats and stack.

use iced_x86::Instruction;

use super::Tag;
use crate::exec::Handler;

/// The 80 bits of a double-extended value.
pub const MASK80: u128 = (1u128 << 80) - 1;

/// The tag a value gets when loaded (SDM Vol. 1 §8.1.7).
pub fn tag_of(v: u128) -> Tag {
    let exp = (v >> 64) as u16 & 0x7fff;
    let sig = v as u64;
    if exp == 0 {
        if sig == 0 {
            Tag::Zero
        } else {
            Tag::Special
        }
    } else if exp == 0x7fff || sig >> 63 == 0 {
        Tag::Special
    } else {
        Tag::Valid
    }
}

/// The handler for `insn`, if this module implements it.
pub fn lookup(_insn: &Instruction) -> Option<Handler> {
    None
}
