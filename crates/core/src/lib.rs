//! # alcazar-core
//!
//! The embeddable heart of Alcazar: everything a virtual PC needs that is
//! neither a particular device nor a particular execution engine.
//!
//! * [`memory`] — guest physical memory (on `vm-memory`) and the memory map
//!   (RAM, ROM, the MMIO hole below 4 GiB).
//! * [`bus`] — the port-I/O and MMIO buses that route guest accesses to
//!   [`bus::BusDevice`]s.
//! * [`hooks`] — MSR, CPUID and hypercall hooks in the spirit of Palacios's
//!   `v3_hook_msr`, `v3_hook_cpuid` and `v3_register_hypercall`.
//! * [`engine`] — the [`engine::Engine`] / [`engine::Vcpu`] traits both
//!   execution engines (kvm, emu) implement, and the shared exit vocabulary.
//! * [`control`] — how a running VM is asked to stop (or pause) and why it
//!   stopped.
//! * [`clock`] — the guest's clock, which stands still while the VM is paused.
//! * [`inspect`] — the inspector's tree of named values.
//! * [`irq`] — interrupt lines, interrupt messages and the APIC bus.
//! * [`timer`] — time-driven devices and the thread that ticks them.
//! * [`machine`] — the bundle of the above that an engine runs against.
//!
//! The core knows no device by name: devices live in `alcazar-devices` and
//! are plugged into the [`bus::Bus`] by whoever assembles the machine.

pub mod bus;
pub mod clock;
pub mod control;
pub mod cpu_model;
pub mod cpuid;
pub mod engine;
pub mod hooks;
pub mod inspect;
pub mod irq;
pub mod layout;
pub mod machine;
pub mod memory;
pub mod regs;
pub mod stats;
pub mod timer;

pub use bus::{AccessWidth, Bus, BusDevice, BusError, IoSpace};
pub use clock::GuestClock;
pub use control::{StopReason, VmControl};
pub use engine::{Engine, EngineError, EngineKind, EngineVm, IoEvents, Vcpu};
pub use hooks::Hooks;
pub use inspect::{Node, Tree};
pub use machine::Machine;
pub use memory::{DmaMemory, GuestMemory, MemoryError, MemoryMap};
