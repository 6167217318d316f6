//! Placeholder.

use iced_x86::Instruction;

use crate::exec::Handler;

/// The handler for `insn`, if this module implements it.
pub fn lookup(_insn: &Instruction) -> Option<Handler> {
    None
}
