//! What a case is made of (a program and an initial state) and what a run
//! produces (a final state), shared by both runners, the comparison and
//! the shrinker.

use iced_x86::Instruction;

use crate::layout::{DATA_SIZE, STACK_SIZE};

/// GPR names in encoding order (the order of every `[u64; 16]` here).
pub const GPR_NAMES: [&str; 16] = [
    "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13",
    "r14", "r15",
];

/// Index of RSP in a GPR array.
pub const RSP: usize = 4;

/// x87, MMX, SSE and AVX state as XSAVE lays it out (SDM Vol. 1 §10.5.1, §13.4):
/// what both runners load before a run and read back after it. FOP and
/// the last instruction/data pointers are not part of it (the emu engine
/// does not track FOP, and the pointers differ between engines' views).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FpuRegs {
    /// FCW.
    pub fcw: u16,
    /// FSW (TOP included).
    pub fsw: u16,
    /// The abridged tag byte (bit i: physical register i in use).
    pub ftw: u8,
    /// ST(0)..ST(7) in stack order, 80 bits each.
    pub st: [u128; 8],
    /// XMM0..XMM15.
    pub xmm: [u128; 16],
    /// Bits 255:128 of YMM0..YMM15 (the XSAVE AVX component).
    pub ymm_hi: [u128; 16],
    /// MXCSR.
    pub mxcsr: u32,
}

impl Default for FpuRegs {
    /// The state after FNINIT with MXCSR at its reset value.
    fn default() -> Self {
        FpuRegs {
            fcw: 0x37f,
            fsw: 0,
            ftw: 0,
            st: [0; 8],
            xmm: [0; 16],
            ymm_hi: [0; 16],
            mxcsr: 0x1f80,
        }
    }
}

/// The state a sequence starts from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitState {
    /// RAX..R15 (RSP is always [`crate::layout::STACK_INIT`]).
    pub gpr: [u64; 16],
    /// RFLAGS (IOPL = 3 and IF = 1 are forced by the runners).
    pub rflags: u64,
    /// The two data pages.
    pub data: Vec<u8>,
    /// The stack page.
    pub stack: Vec<u8>,
    /// x87/SSE registers.
    pub fpu: FpuRegs,
}

impl InitState {
    /// All registers zero, flags clear, memory zero.
    pub fn zeroed() -> Self {
        let mut gpr = [0; 16];
        gpr[RSP] = crate::layout::STACK_INIT;
        InitState {
            gpr,
            rflags: 0,
            data: vec![0; DATA_SIZE as usize],
            stack: vec![0; STACK_SIZE as usize],
            fpu: FpuRegs::default(),
        }
    }
}

/// An assembled sequence, ready to load at [`crate::layout::CODE`].
#[derive(Clone, Debug)]
pub struct Program {
    /// Machine code (the sequence, then the final `out`).
    pub bytes: Vec<u8>,
    /// Address of the final `out`: reaching it means "done".
    pub end_rip: u64,
    /// Every instruction with its address, in order (the final `out`
    /// included).
    pub insns: Vec<Instruction>,
}

impl Program {
    /// The instruction at `rip`, if one starts there.
    pub fn insn_at(&self, rip: u64) -> Option<&Instruction> {
        self.insns
            .binary_search_by_key(&rip, |i| i.ip())
            .ok()
            .map(|n| &self.insns[n])
    }
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// The final `out` was reached.
    Done,
    /// An exception was raised (and would have been delivered).
    Exception {
        /// The vector.
        vector: u8,
        /// The error code, for vectors that push one.
        error_code: Option<u32>,
        /// CR2, for page faults.
        cr2: Option<u64>,
    },
    /// The emu engine ran too many instructions without finishing.
    StepLimit,
    /// The emu engine panicked.
    Panic,
}

impl std::fmt::Display for Ending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Ending::Done => write!(f, "done"),
            Ending::Exception {
                vector,
                error_code,
                cr2,
            } => {
                write!(f, "exception {} (vector {vector})", vector_name(vector))?;
                if let Some(e) = error_code {
                    write!(f, " error code {e:#x}")?;
                }
                if let Some(a) = cr2 {
                    write!(f, " cr2 {a:#x}")?;
                }
                Ok(())
            }
            Ending::StepLimit => write!(f, "step limit reached"),
            Ending::Panic => write!(f, "emu panicked"),
        }
    }
}

/// The mnemonic of an exception vector ("#DE", "#PF", ...).
pub fn vector_name(v: u8) -> &'static str {
    match v {
        0 => "#DE",
        1 => "#DB",
        3 => "#BP",
        4 => "#OF",
        5 => "#BR",
        6 => "#UD",
        7 => "#NM",
        8 => "#DF",
        10 => "#TS",
        11 => "#NP",
        12 => "#SS",
        13 => "#GP",
        14 => "#PF",
        16 => "#MF",
        17 => "#AC",
        18 => "#MC",
        19 => "#XM",
        _ => "#??",
    }
}

/// Whether vector `v` pushes an error code.
pub fn has_error_code(v: u8) -> bool {
    matches!(v, 8 | 10..=14 | 17 | 21 | 29 | 30)
}

/// The state after a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FinalState {
    /// RAX..R15 (RSP is the user RSP, also after an exception).
    pub gpr: [u64; 16],
    /// RIP: the final `out`, or the faulting instruction.
    pub rip: u64,
    /// RFLAGS.
    pub rflags: u64,
    /// How it ended.
    pub ending: Ending,
    /// The two data pages.
    pub data: Vec<u8>,
    /// The stack page.
    pub stack: Vec<u8>,
    /// Instructions retired (emu only; 0 for kvm).
    pub retired: u64,
    /// A message from the engine (the panic text), if any.
    pub note: Option<String>,
    /// x87/SSE registers.
    pub fpu: FpuRegs,
}

impl Program {
    /// A program from machine code at [`crate::layout::CODE`] whose last
    /// instruction is the final `out`.
    pub fn from_code(bytes: Vec<u8>) -> Self {
        let mut decoder = iced_x86::Decoder::with_ip(
            64,
            &bytes,
            crate::layout::CODE,
            iced_x86::DecoderOptions::NONE,
        );
        let insns: Vec<Instruction> = decoder.iter().collect();
        let end_rip = insns.last().map_or(crate::layout::CODE, |i| i.ip());
        Program {
            bytes,
            end_rip,
            insns,
        }
    }
}
