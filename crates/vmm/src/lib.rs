//! # alcazar-vmm
//!
//! The embeddable VMM: turns a [`config::VmConfig`] into a running virtual
//! PC. [`vm::Vm::create`] allocates guest memory, creates the devices
//! through the [`registry`] of device classes, loads the boot image
//! ([`boot`]), picks an engine and creates the vCPUs; [`vm::Vm::start`]
//! runs one thread per vCPU and returns a [`vm::RunningVm`] whose
//! [`vm::VmHandle`] pauses, resumes, inspects and stops it from any
//! thread.
//!
//! The host interface is narrow: guest memory and the buses live in the
//! [`alcazar_core::Machine`] (where an embedder adds its own devices and
//! MSR/CPUID/hypercall hooks), console output for the terminal goes to a
//! [`console::HostTerminal`] the embedder may supply, and the rest —
//! threads, time, files — is the host's standard library. Serving the VM
//! to other processes (an HTTP API, attach clients, metrics formats, a
//! seccomp policy) is not the library's business: `alcazar-control` does
//! that for the `alcazar` command.
//!
//! ```no_run
//! use alcazar_vmm::config::{BootSource, FlatImage, FlatMode, VmConfig};
//! use alcazar_vmm::vm::Vm;
//!
//! // A real-mode guest that writes 'A' to COM1 and halts: mov dx, 0x3f8;
//! // mov al, 'A'; out dx, al; hlt.
//! let code = vec![0xba, 0xf8, 0x03, 0xb0, b'A', 0xee, 0xf4];
//! let config = VmConfig::new(BootSource::Flat {
//!     image: FlatImage::Bytes(code),
//!     mode: FlatMode::Real,
//!     load_address: 0x10000,
//!     aps_wait_for_sipi: false,
//! });
//! let vm = Vm::create(&config).unwrap();
//! let reason = vm.run().unwrap();
//! println!("guest stopped: {reason}");
//! ```
//!
//! A TOML file describes the same ([`config`]; `VmConfig::from_file`).

pub mod boot;
pub mod config;
pub mod console;
pub mod disk_lock;
mod doorbell;
mod engine_select;
pub mod error;
mod firmware;
pub mod ide;
pub mod inspect;
pub mod lifecycle;
pub mod machine_tree;
pub mod passt;
pub mod pci;
pub mod platform;
pub mod registry;
pub mod telemetry;
pub mod vm;

pub use alcazar_devices::virtio::console::ConsoleInput;
pub use alcazar_devices::Uart16550;
pub use config::VmConfig;
pub use error::{ConfigError, VmmError};
pub use vm::Vm;
