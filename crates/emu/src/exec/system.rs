//! (Being written.)

use iced_x86::Instruction;

use super::Handler;

/// The handler for `insn`, if this module implements it.
pub fn lookup(_insn: &Instruction) -> Option<Handler> {
    None
}

/// The CPUID table the emu engine advertises (before the VM's policy).
pub fn cpuid_table() -> Vec<alcazar_core::cpuid::CpuidEntry> {
    Vec::new()
}
