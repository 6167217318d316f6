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
//! That is tier 0. Tier 1, [`jit`], translates the blocks the interpreter
//! runs most into host code (x86-64 hosts, 64-bit guest code); the run
//! loop enters it instead of step 2 when the block at RIP has a
//! translation ([`EmuTier`] chooses).
//!
//! vCPUs run one host thread each, like the kvm engine; decoded code is
//! per vCPU and kept coherent through [`code::CodePages`].
//!
//! ## Where each concept lives
//!
//! | concept (Intel SDM) | file |
//! | --- | --- |
//! | the CPU: state plus machinery ([`Cpu`]) | `cpu.rs` |
//! | architectural registers ([`state::CpuState`]; Vol. 1 §3.4, Vol. 3A §2.5) | `state.rs` |
//! | the run loop: blocks, slices, delivery between blocks | `run.rs` |
//! | decoded blocks, their cache and links; the block decoder; self-modifying code | `code.rs`, `code/cache.rs`, `code/decode.rs` |
//! | choosing a handler, and its effect on block links ([`exec::LinkEffect`]) | `exec/mod.rs` |
//! | instruction handlers: data, ALU, shifts, mul/div, bits, BMI1/BMI2/ADX, RDRAND/RDSEED, FSGSBASE, strings, near branches, port I/O | `exec/*.rs` |
//! | fast paths for the hottest forms | `exec/fast/` |
//! | system instructions | `exec/system.rs` and `exec/system/` |
//! | operating modes: CR0/CR4/EFER writes, IA-32e activation (Vol. 3A §2.2, §10.8.5) | `modes.rs` |
//! | privilege: CPL, IOPL, the I/O permission bitmap (Vol. 3A §5.5, §5.9) | `privilege.rs` |
//! | segmentation: descriptors, GDT/LDT, segment loads (Vol. 3A ch. 3, §5.5-§5.7) | `segment.rs` |
//! | descriptor-table instructions: LGDT, LIDT, LLDT, LTR, LAR, LSL... | `exec/system/tables.rs` |
//! | control and debug registers: MOV CR/DR, LMSW, CLTS, INVLPG | `exec/system/control.rs` |
//! | far transfers, call gates, IRET, MOV Sreg (Vol. 3A §5.8) | `exec/system/far.rs` |
//! | system calls: SYSCALL/SYSRET, SYSENTER/SYSEXIT (Vol. 3A §5.8.7-§5.8.8) | `exec/system/syscall.rs` |
//! | software interrupts: INT n, INT3, INTO, INT1 | `exec/system/software_int.rs` |
//! | exceptions: the [`fault::Fault`] type (Vol. 3A §6.3) | `fault.rs` |
//! | interrupt and exception delivery: IVT, IDT, #DF, triple fault (Vol. 3A ch. 6) | `interrupts.rs`, `interrupts/idt.rs` |
//! | interrupt pins, NMI, HLT (Vol. 3A §6.7, §6.8.3) | `interrupts/lines.rs` |
//! | paging: the software TLB (Vol. 3A §4.10) | `mmu.rs` |
//! | paging: the page walk (Vol. 3A ch. 4) | `mmu/walk.rs` |
//! | memory accesses: segment checks, then the TLB, RAM or MMIO | `mem.rs` |
//! | lazy arithmetic flags (Vol. 1 §3.4.3) | `flags.rs` |
//! | model-specific registers (Vol. 4) | `msr.rs` |
//! | CPUID (Vol. 2A "CPUID") | `cpuid.rs` |
//! | the local APIC, its timer, IPIs, INIT/SIPI (Vol. 3A, the APIC chapter) | `apic/` |
//! | x87, MMX, SSE/SSE2 (Vol. 1 ch. 8-11) | `fpu/` |
//! | the `Engine`/`Vcpu` traits of the rest of Alcazar | `engine.rs`, `vcpu.rs` |
//! | the inspector's view | `inspect.rs`, `apic/inspect.rs` |
//! | tier 1: the binary translator ([`jit`]; its module doc has the file map) | `jit/` |
//!
//! ## Where `impl Cpu` lives
//!
//! [`Cpu`] is one struct whose methods are spread over the files of the
//! concepts they implement:
//!
//! * `cpu.rs`: the structure and [`Cpu::new`] (the power-on state);
//! * `run.rs`: [`Cpu::run`], [`Cpu::run_slice`], [`Cpu::step`],
//!   [`Cpu::run_block`], [`Cpu::raise`] and the block chaining behind them;
//! * `code/decode.rs`: fetching and decoding the block at CS:RIP;
//! * `mem.rs`: [`Cpu::linear`], [`Cpu::translate`], [`Cpu::read`],
//!   [`Cpu::write`] and the other memory accesses;
//! * `exec/fast/mod.rs`: [`Cpu::read_mem`] and [`Cpu::write_mem`], the
//!   fast paths' pre-decoded memory operands;
//! * `apic/startup.rs`: attaching the local APIC, INIT and STARTUP.
//!
//! Instruction handlers are free functions `fn(&mut Cpu, &Instruction)`
//! ([`exec::Handler`]), each in the file of its instruction group.

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
pub mod jit;
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
pub use jit::{EmuTier, JitConfig};
