//! General-purpose registers by index and size, and conversions between
//! iced-x86's [`Register`] and the encoding-order index used everywhere
//! else (RAX = 0 .. R15 = 15).

use iced_x86::Register;

/// 64-bit GPRs in encoding order.
pub const R64: [Register; 16] = [
    Register::RAX,
    Register::RCX,
    Register::RDX,
    Register::RBX,
    Register::RSP,
    Register::RBP,
    Register::RSI,
    Register::RDI,
    Register::R8,
    Register::R9,
    Register::R10,
    Register::R11,
    Register::R12,
    Register::R13,
    Register::R14,
    Register::R15,
];

/// 32-bit GPRs in encoding order.
pub const R32: [Register; 16] = [
    Register::EAX,
    Register::ECX,
    Register::EDX,
    Register::EBX,
    Register::ESP,
    Register::EBP,
    Register::ESI,
    Register::EDI,
    Register::R8D,
    Register::R9D,
    Register::R10D,
    Register::R11D,
    Register::R12D,
    Register::R13D,
    Register::R14D,
    Register::R15D,
];

/// 16-bit GPRs in encoding order.
pub const R16: [Register; 16] = [
    Register::AX,
    Register::CX,
    Register::DX,
    Register::BX,
    Register::SP,
    Register::BP,
    Register::SI,
    Register::DI,
    Register::R8W,
    Register::R9W,
    Register::R10W,
    Register::R11W,
    Register::R12W,
    Register::R13W,
    Register::R14W,
    Register::R15W,
];

/// Low-byte registers in encoding order (SPL..DIL need a REX prefix).
pub const R8: [Register; 16] = [
    Register::AL,
    Register::CL,
    Register::DL,
    Register::BL,
    Register::SPL,
    Register::BPL,
    Register::SIL,
    Register::DIL,
    Register::R8L,
    Register::R9L,
    Register::R10L,
    Register::R11L,
    Register::R12L,
    Register::R13L,
    Register::R14L,
    Register::R15L,
];

/// AH, CH, DH, BH: bits 8..15 of RAX, RCX, RDX, RBX.
pub const HIGH8: [Register; 4] = [Register::AH, Register::CH, Register::DH, Register::BH];

/// Index of RAX, RCX, RDX, RBX, RSP in encoding order.
pub const RAX: usize = 0;
/// RCX.
pub const RCX: usize = 1;
/// RDX.
pub const RDX: usize = 2;
/// RBX.
pub const RBX: usize = 3;
/// RSP.
pub const RSP: usize = 4;
/// RBP.
pub const RBP: usize = 5;
/// RSI.
pub const RSI: usize = 6;
/// RDI.
pub const RDI: usize = 7;

/// The register with encoding index `index` and `size` bytes (1, 2, 4, 8).
pub fn sized(index: usize, size: u32) -> Register {
    let i = index & 15;
    match size {
        1 => R8[i],
        2 => R16[i],
        4 => R32[i],
        _ => R64[i],
    }
}

/// The encoding-order index of a GPR's full register (AH maps to RAX),
/// or `None` for a register that is not a GPR.
pub fn index_of(r: Register) -> Option<usize> {
    if !r.is_gpr() {
        return None;
    }
    if let Some(n) = HIGH8.iter().position(|&h| h == r) {
        return Some(n);
    }
    R64.iter().position(|&f| f == r.full_register())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_round_trip_for_every_size() {
        for i in 0..16 {
            for size in [1, 2, 4, 8] {
                assert_eq!(index_of(sized(i, size)), Some(i));
            }
        }
        assert_eq!(index_of(Register::BH), Some(RBX));
        assert_eq!(index_of(Register::XMM0), None);
    }
}
