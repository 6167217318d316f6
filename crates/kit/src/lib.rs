//! Alcazar's tiny-guest kit: small x86 guest programs, assembled at build
//! time with iced-x86's `code_asm` and handed out as flat binaries.
//!
//! Each [`KitProgram`] is a byte image plus the contract for running it:
//! the VMM copies [`KitProgram::code`] to [`KitProgram::load_address`], puts
//! the vCPU in [`KitProgram::mode`] and starts executing at the first byte.
//! The program talks to the 16550 UART at [`COM1`] and ends the VM through
//! the debug-exit port ([`DEBUG_EXIT_PORT`]) or ACPI power-off
//! ([`PM1A_CNT_PORT`]). [`KitProgram::expect`] says what a test should see.
//!
//! # Start conventions (what the VMM must provide)
//!
//! * Common: interrupts off (IF=0), no IDT, `EDI`/`RDI` = vCPU index
//!   (0 = bootstrap CPU), `ESI`/`RSI` = vCPU count, identity-mapped RAM of at
//!   least 1 MiB, stack top of vCPU *i* at linear `0x9f000 - i * 0x1000`.
//! * [`FlatMode::Real`]: `CS = DS = ES = load_address >> 4`, `IP = 0`,
//!   `SS = 0x9000`, `SP = 0xf000 - i * 0x1000`.
//! * [`FlatMode::Protected`]: flat 32-bit protected mode, paging off; VMM GDT at
//!   0x500 with 0x08 = flat code, 0x10 = flat data; `EIP = load_address`.
//! * [`FlatMode::Long`]: 64-bit mode; VMM GDT at 0x500 with 0x08 = 64-bit code,
//!   0x10 = data; identity page tables for 0..4 GiB at 0x1000..0x7000;
//!   `RIP = load_address`.
//!
//! Programs never write below 0x8000 (the VMM's tables live there); they use
//! 0x20000..0x7ffff for their own data and their stack below 0x9f000.
//! Programs meant for one CPU park every vCPU whose index is not 0.
//!
//! # Example
//!
//! ```
//! let demo = alcazar_kit::build("demo").expect("known name").expect("assembles");
//! assert_eq!(demo.mode, alcazar_kit::FlatMode::Real);
//! assert_eq!(demo.expect.status, 0);
//! ```

mod arch;
mod bzimage;
mod cpu;
mod idt;
mod image;
mod paging;
mod programs;
mod uart;

pub use bzimage::{bzimage_32bit_entry, KitKernel, BZIMAGE_32_PROTOCOL};
pub use programs::smp::smp_expect;
pub use programs::smp_sipi::smp_sipi_expect;
pub use programs::ticker::COUNTER_ADDRESS as TICKER_COUNTER_ADDRESS;

/// The CPU mode the VMM puts the vCPU in before jumping to the program.
pub use alcazar_core::regs::FlatMode;

/// What a test expects from running a program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expect {
    /// Text that must appear in the UART output (substring), in order.
    pub output: Vec<&'static str>,
    /// Expected process exit status: for debug-exit, (value << 1) | 1; 0 for ACPI power-off.
    pub status: i32,
}

/// One assembled guest program together with how to start it and what it
/// should do.
#[derive(Clone, Debug)]
pub struct KitProgram {
    /// The registry name (`"real-hello"`, `"demo"`, ...).
    pub name: &'static str,
    /// One line saying what the program exercises.
    pub description: &'static str,
    /// The CPU mode the vCPU must be in at the first instruction.
    pub mode: FlatMode,
    /// Guest-physical address where [`KitProgram::code`] is copied and where
    /// execution starts (in real mode, through `CS = load_address >> 4`).
    pub load_address: u64,
    /// The flat image: code parts, padding and data, in load order.
    pub code: Vec<u8>,
    /// What a test should observe when the program runs on one vCPU.
    pub expect: Expect,
    /// The VMM must hold every vCPU but the first in the wait-for-SIPI
    /// state (no start at the entry): the program starts them itself with
    /// INIT and STARTUP IPIs through its local APIC. Only engines with
    /// local APICs (emu) can run such programs.
    pub aps_wait_for_sipi: bool,
    /// Device classes (of the VMM's registry) the program drives beyond
    /// the standard PC devices, e.g. `virtio-rng`: the VMM adds them.
    pub devices: Vec<&'static str>,
}

/// Where every kit program is loaded (and starts executing) by default.
pub const DEFAULT_LOAD_ADDRESS: u64 = 0x10000;
/// The debug-exit port: writing `v` ends the VM with status `(v << 1) | 1`.
pub const DEBUG_EXIT_PORT: u16 = 0xf4;
/// Base port of the first 16550 UART.
pub const COM1: u16 = 0x3f8;
/// Value written to debug-exit on success; the VM exits with status 0x21.
pub const KIT_PASS: u8 = 0x10;
/// Value written to debug-exit on failure; the VM exits with status 0x23.
pub const KIT_FAIL: u8 = 0x11;
/// The ACPI PM1a control register (16 bits wide); `SLP_EN | SLP_TYP=5`
/// (0x3400) written here powers the machine off.
pub const PM1A_CNT_PORT: u16 = 0x604;

/// The exit status a debug-exit write of `value` produces.
pub const fn debug_exit_status(value: u8) -> i32 {
    ((value as i32) << 1) | 1
}

/// Why a program could not be built. The programs are fixed, so any of these
/// is a bug in the kit (the unit tests build every program).
#[derive(Debug, thiserror::Error)]
pub enum KitError {
    /// iced-x86 rejected an instruction or failed to encode a block.
    #[error("assembler error: {0}")]
    Assemble(#[from] iced_x86::IcedError),
    /// Two pieces of an image overlap (a code part grew into the next one).
    #[error("{what} at image offset {offset:#x} ({len} bytes) overlaps an earlier piece")]
    Layout {
        /// Which piece was being placed.
        what: &'static str,
        /// Its image offset.
        offset: usize,
        /// Its length in bytes.
        len: usize,
    },
    /// An address does not fit the operand the program needs it in
    /// (for example a real-mode offset above 0xffff).
    #[error("{what}: address {address:#x} does not fit")]
    Address {
        /// Which address.
        what: &'static str,
        /// The address that did not fit.
        address: u64,
    },
}

/// Names of all programs, in registry order.
pub fn names() -> Vec<&'static str> {
    programs::REGISTRY.iter().map(|entry| entry.name).collect()
}

/// Builds the program called `name`.
///
/// Returns `None` for an unknown name, `Some(Err(..))` if a known program
/// fails to assemble (a kit bug), `Some(Ok(..))` otherwise.
pub fn build(name: &str) -> Option<Result<KitProgram, KitError>> {
    programs::find(name).map(|entry| entry.build().map(|built| built.program))
}

/// Builds every program, in registry order.
pub fn all() -> Result<Vec<KitProgram>, KitError> {
    programs::REGISTRY
        .iter()
        .map(|entry| entry.build().map(|built| built.program))
        .collect()
}
