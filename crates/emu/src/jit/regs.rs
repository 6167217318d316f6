//! Where guest GPRs live while translated code runs.
//!
//! The host has sixteen GPRs and so does the guest, but translated code
//! needs four host registers of its own: RSP (the host stack, used by
//! calls into Rust; a signal may arrive at any time, so it must always be
//! a valid stack), [`CTX`] (the frame and TLB base), and two scratch
//! registers [`T0`] and [`T1`] for addresses, TLB indexes and operands.
//! So twelve guest registers have a host register and four live in the
//! frame ([`super::frame::Frame::gpr`]):
//!
//! * RAX, RCX, RDX, RBX, RBP, RSI, RDI and R8 map to themselves, so the
//!   instructions with implicit operands (MUL/DIV and CDQ on RAX/RDX,
//!   shifts by CL, LAHF/SAHF on AH, CMPXCHG on RAX) run unchanged, and so
//!   do the high-byte registers AH..BH;
//! * guest RSP lives in host R9, R12 in R10, R13 in R11 and R14 in R12:
//!   stack instructions are rewritten anyway (their accesses go through
//!   the TLB), and other instructions are re-encoded with the host
//!   register;
//! * guest R9, R10, R11 and R15 live in the frame: an instruction using
//!   them loads them into a scratch register and stores them back.
//!
//! Why these four: they were the least used in the code translated during
//! a Linux boot and a busybox workload (counting register operands in
//! every translated block: RAX 100 k, RDX 43 k, RBX 40 k, RDI 37 k, RSI
//! 27 k, RCX 25 k, RSP 22 k, RBP 21 k, R12 18 k, R13 14 k, R14 12 k, R8
//! 10 k, R15 9.8 k, R9 6.8 k, R10 4.3 k, R11 3.3 k), and none has an
//! implicit role.

use iced_x86::Register;

use super::emit::{at, Mem, Reg};
use super::frame::off;

/// The frame and TLB base register.
pub const CTX: Reg = Reg::R15;
/// Scratch: TLB index, spilled operands, flag save/restore.
pub const T0: Reg = Reg::R13;
/// Scratch: effective addresses and host pointers.
pub const T1: Reg = Reg::R14;

/// The host register of guest GPR `g` (0-15), or `None` if it lives in
/// the frame.
pub const fn host(g: usize) -> Option<Reg> {
    match g {
        0..=3 | 5..=8 => Some(Reg(g as u8)),
        4 => Some(Reg::R9),
        12 => Some(Reg::R10),
        13 => Some(Reg::R11),
        14 => Some(Reg::R12),
        _ => None,
    }
}

/// The guest GPRs that have a host register, with it.
pub fn mapped() -> impl Iterator<Item = (usize, Reg)> {
    (0..16).filter_map(|g| host(g).map(|h| (g, h)))
}

/// The frame home of guest GPR `g`.
pub fn home(g: usize) -> Mem {
    at(CTX, (off::GPR + 8 * g) as i32)
}

/// The guest GPR number (0-15) of an iced GPR, and whether it is one of
/// AH, CH, DH, BH; `None` for anything that is not a GPR.
pub fn guest_gpr(r: Register) -> Option<(usize, bool)> {
    if !r.is_gpr() {
        return None;
    }
    let high8 = matches!(r, Register::AH | Register::CH | Register::DH | Register::BH);
    let n = if high8 {
        r.number() - 4
    } else {
        r.full_register().number()
    };
    Some((n & 15, high8))
}

const GPR64: [Register; 16] = [
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
const GPR32: [Register; 16] = [
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
const GPR16: [Register; 16] = [
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
const GPR8: [Register; 16] = [
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

/// The iced register for host register `h` with the size of `like` (a
/// GPR; AH..BH stay themselves, which only identity-mapped registers
/// have).
pub fn iced_reg(h: Reg, like: Register) -> Register {
    let n = usize::from(h.0 & 15);
    if matches!(
        like,
        Register::AH | Register::CH | Register::DH | Register::BH
    ) {
        return like;
    }
    match like.size() {
        8 => GPR64[n],
        4 => GPR32[n],
        2 => GPR16[n],
        _ => GPR8[n],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twelve_guest_registers_have_distinct_host_registers_outside_the_reserved_ones() {
        let hosts: Vec<Reg> = mapped().map(|(_, h)| h).collect();
        assert_eq!(hosts.len(), 12);
        for (i, h) in hosts.iter().enumerate() {
            assert!(![Reg::RSP, CTX, T0, T1].contains(h));
            assert!(!hosts[..i].contains(h));
        }
        assert_eq!(guest_gpr(Register::AH), Some((0, true)));
        assert_eq!(guest_gpr(Register::R13D), Some((13, false)));
        assert_eq!(iced_reg(Reg::R9, Register::ESP), Register::R9D);
        assert_eq!(iced_reg(Reg::R13, Register::CL), Register::R13L);
    }
}
