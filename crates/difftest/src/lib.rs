//! # alcazar-difftest
//!
//! Differential testing of the emu engine against KVM. On this project's
//! hosts `/dev/kvm` is KVM's PVM backend, which runs guest ring-3 code
//! natively on the real CPU: user-mode instruction sequences run under KVM
//! are a perfect oracle for the emu engine's user-mode semantics.
//!
//! * [`gen`] makes random instruction sequences per instruction [`Class`];
//! * [`kvm_runner`] runs one at CPL 3 under KVM, [`emu_runner`] on the emu
//!   engine (one instruction at a time, feeding [`analysis`], which tracks
//!   which flags and registers are architecturally undefined);
//! * [`compare`] diffs the final states, [`shrink`] minimizes a mismatch,
//!   [`report`] prints it; [`harness`] drives batches of cases;
//!   [`selftest`] checks the harness itself.
//!
//! The guest is described in [`layout`]: identity-mapped pages, 64-bit
//! DPL-3 segments, RFLAGS.IOPL = 0 (PVM keeps it 0 at CPL 3), and a TSS
//! I/O permission bitmap that lets the final `out` through, so a finished
//! sequence returns to the host without any ring-0 guest code.
//!
//! Sequences never contain what PVM cannot run natively or what leaks the
//! host (CPUID, RDTSC, `syscall`, `int 0x80`, privileged instructions).
//! The `sse`, `ssefloat` and `x87` classes start from a random x87/SSE
//! state (loaded with KVM_SET_XSAVE: KVM_GET_FPU reads MXCSR back as 0
//! under PVM) and compare FCW, FSW (but C0/C2/C3), the abridged tags,
//! ST0-7, XMM0-15 and MXCSR; see [`gen::simd`] for what they leave out.
//!
//! ## Where the oracle is not the architecture
//!
//! Measured on this project's hosts (AMD EPYC, PVM) and handled here:
//! * RFLAGS.IOPL set through `KVM_SET_REGS` does not stick at CPL 3 (it
//!   reads back 0), so both engines run with IOPL 0 and the TSS I/O bitmap
//!   opens the one port the final `out` uses;
//! * user code runs with the host's CR0.AM: whether RFLAGS.AC = 1 makes a
//!   misaligned access raise #AC is probed at start-up and the emu runner
//!   follows it ([`host::HostFacts`], with the other host-dependent facts);
//! * RFLAGS.NT set by POPF is sometimes cleared when a host interrupt lands
//!   in guest user code: POPF values never set NT;
//! * a user-mode #GP goes through KVM's instruction emulator, which
//!   reports #UD for instructions it cannot emulate and, for instructions
//!   with two memory operands, may fault on the other operand first;
//!   PVM reserves part of the upper canonical half (#PF with P|RSVD);
//!   MOVSXD r16 reads four bytes. See [`compare::Quirk`] and
//!   [`gen::tables`].
//!
//! ## Running it
//!
//! `cargo run -p alcazar-difftest -- --count 100000` (see `--help`);
//! `cargo test -p alcazar-difftest` runs 110,000 cases of every class.

pub mod analysis;
pub mod compare;
pub mod emu_runner;
pub mod gen;
pub mod harness;
pub mod host;
pub mod jit_runner;
pub mod kvm_runner;
pub mod layout;
pub mod report;
pub mod rng;
pub mod selftest;
pub mod shrink;
pub mod state;

pub use gen::Class;

/// Everything that can go wrong in the harness itself (a mismatch is not
/// an error: it is a result).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `/dev/kvm` could not be opened or used.
    #[error("KVM unavailable: {0}")]
    KvmUnavailable(String),
    /// A KVM ioctl failed.
    #[error("{op} failed: errno {errno}")]
    Kvm {
        /// The ioctl.
        op: &'static str,
        /// The errno.
        errno: i32,
    },
    /// The vCPU exited for a reason the harness does not expect.
    #[error("unexpected KVM exit: {0}")]
    UnexpectedExit(String),
    /// Guest memory could not be set up or accessed.
    #[error("guest memory: {0}")]
    Memory(#[from] alcazar_core::MemoryError),
    /// iced-x86 could not assemble something.
    #[error("assembler: {0}")]
    Asm(#[from] iced_x86::IcedError),
    /// The fixed guest layout is inconsistent.
    #[error("layout: {0}")]
    Layout(String),
    /// A command-line argument is wrong.
    #[error("usage: {0}")]
    Usage(String),
}
