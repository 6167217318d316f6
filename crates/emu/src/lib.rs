//! # alcazar-emu
//!
//! The emu engine: Alcazar's software x86-64 CPU. It runs anywhere, runs
//! the same guest the same way every time (with one vCPU), and can show
//! everything a guest does.
//!
//! How an instruction runs:
//!
//! 1. [`Cpu::run_block`] translates CS:RIP through the [`mmu::Mmu`] (a
//!    software TLB in front of the page walker) to a physical address.
//! 2. The [`code::BlockCache`] returns the decoded block at that address,
//!    or iced-x86 decodes one (once) and [`exec::fast::decode`] resolves
//!    the operands of common forms and picks a specialized handler (or the
//!    generic one from [`exec::lookup`]) for each instruction.
//! 3. Each handler reads and writes operands through [`mem`] (segments,
//!    then the TLB, then host RAM or the MMIO bus) and records arithmetic
//!    flags lazily ([`flags`]).
//! 4. A fault unwinds to the run loop, which delivers it through the
//!    IVT/IDT ([`interrupts`]).
//!
//! vCPUs run one host thread each, like the kvm engine; decoded code is
//! per vCPU and kept coherent through [`code::CodePages`].

#![warn(missing_docs)]

pub mod apic;
pub mod code;
pub mod cpu;
pub mod cpuid;
pub mod debug;
mod engine;
pub mod exec;
pub mod fault;
pub mod flags;
pub mod fpu;
pub mod inspect;
pub mod interrupts;
pub mod mem;
pub mod mmu;
pub mod modes;
pub mod msr;
pub mod privilege;
mod run;
pub mod segment;
pub mod state;
#[cfg(test)]
pub mod testutil;
mod vcpu;

pub use cpu::Cpu;
pub use engine::{EmuEngine, EmuVm};
