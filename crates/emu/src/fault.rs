//! Architectural exceptions (Intel SDM Vol. 3A §6.3, Table 6-1).
//!
//! An instruction handler that cannot complete returns `Err(Fault)`; the
//! run loop leaves RIP at the faulting instruction (faults) or after it
//! (traps) and delivers the exception through the IVT/IDT.

/// An exception raised by an instruction, with its error code where the
/// architecture defines one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// #DE, vector 0: divide error.
    DivideError,
    /// #DB, vector 1: debug (as a fault).
    Debug,
    /// #BP, vector 3: breakpoint (a trap; RIP is after `int3`).
    Breakpoint,
    /// #OF, vector 4: overflow (`into`, a trap).
    Overflow,
    /// #BR, vector 5: bound range exceeded.
    BoundRange,
    /// #UD, vector 6: invalid opcode.
    InvalidOpcode,
    /// #NM, vector 7: device not available (x87/SSE with CR0.TS or EM).
    DeviceNotAvailable,
    /// #DF, vector 8: double fault (error code 0).
    DoubleFault,
    /// #TS, vector 10: invalid TSS.
    InvalidTss(u16),
    /// #NP, vector 11: segment not present.
    SegmentNotPresent(u16),
    /// #SS, vector 12: stack-segment fault.
    StackFault(u16),
    /// #GP, vector 13: general protection.
    GeneralProtection(u16),
    /// #PF, vector 14: page fault, with the linear address (CR2) and the
    /// error code (P, W/R, U/S, RSVD, I/D bits).
    PageFault {
        /// The faulting linear address.
        addr: u64,
        /// The page-fault error code.
        code: u32,
    },
    /// #MF, vector 16: x87 floating-point error.
    X87Error,
    /// #AC, vector 17: alignment check (error code 0).
    AlignmentCheck,
    /// #XM, vector 19: SIMD floating-point exception.
    SimdError,
}

impl Fault {
    /// The exception vector.
    pub fn vector(self) -> u8 {
        match self {
            Fault::DivideError => 0,
            Fault::Debug => 1,
            Fault::Breakpoint => 3,
            Fault::Overflow => 4,
            Fault::BoundRange => 5,
            Fault::InvalidOpcode => 6,
            Fault::DeviceNotAvailable => 7,
            Fault::DoubleFault => 8,
            Fault::InvalidTss(_) => 10,
            Fault::SegmentNotPresent(_) => 11,
            Fault::StackFault(_) => 12,
            Fault::GeneralProtection(_) => 13,
            Fault::PageFault { .. } => 14,
            Fault::X87Error => 16,
            Fault::AlignmentCheck => 17,
            Fault::SimdError => 19,
        }
    }

    /// The error code pushed on delivery, if the vector has one.
    pub fn error_code(self) -> Option<u32> {
        match self {
            Fault::DoubleFault | Fault::AlignmentCheck => Some(0),
            Fault::InvalidTss(e)
            | Fault::SegmentNotPresent(e)
            | Fault::StackFault(e)
            | Fault::GeneralProtection(e) => Some(u32::from(e)),
            Fault::PageFault { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Whether the exception is a trap (reported after the instruction).
    pub fn is_trap(self) -> bool {
        matches!(self, Fault::Breakpoint | Fault::Overflow)
    }

    /// The "contributory" class of SDM Table 6-4, which decides when a
    /// second fault during delivery becomes a double fault.
    pub fn class(self) -> FaultClass {
        match self {
            Fault::DivideError
            | Fault::InvalidTss(_)
            | Fault::SegmentNotPresent(_)
            | Fault::StackFault(_)
            | Fault::GeneralProtection(_) => FaultClass::Contributory,
            Fault::PageFault { .. } => FaultClass::PageFault,
            Fault::DoubleFault => FaultClass::DoubleFault,
            _ => FaultClass::Benign,
        }
    }
}

/// Exception classes for double-fault detection (SDM Vol. 3A Table 6-4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultClass {
    /// Everything else.
    Benign,
    /// #DE, #TS, #NP, #SS, #GP.
    Contributory,
    /// #PF.
    PageFault,
    /// #DF itself.
    DoubleFault,
}

/// Page-fault error code bits (SDM Vol. 3A §4.7).
pub mod pf {
    /// The fault was a protection violation (page present).
    pub const PRESENT: u32 = 1 << 0;
    /// The access was a write.
    pub const WRITE: u32 = 1 << 1;
    /// The access was made in user mode (CPL 3).
    pub const USER: u32 = 1 << 2;
    /// A reserved bit was set in a paging-structure entry.
    pub const RSVD: u32 = 1 << 3;
    /// The access was an instruction fetch (with NX enabled).
    pub const FETCH: u32 = 1 << 4;
}
