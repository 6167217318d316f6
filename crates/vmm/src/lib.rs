//! # alcazar-vmm
//!
//! The embeddable VMM: turns a [`config::VmConfig`] into a running virtual
//! PC. [`vm::Vm::create`] allocates guest memory, creates the devices
//! through the [`registry`] of device classes, loads the boot image
//! ([`boot`]), picks an engine and creates the vCPUs; [`vm::Vm::run`] runs
//! one thread per vCPU until the machine stops and says why.
//!
//! ```no_run
//! use alcazar_vmm::config::VmConfig;
//! use alcazar_vmm::vm::Vm;
//!
//! let config = VmConfig::from_toml_str(r#"
//!     memory = "32M"
//!     [boot]
//!     kind = "kit"
//!     program = "real-hello"
//! "#).unwrap();
//! let vm = Vm::create(&config).unwrap();
//! let reason = vm.run().unwrap();
//! println!("guest stopped: {reason}");
//! ```

#![warn(missing_docs)]

pub mod api;
pub mod boot;
pub mod config;
pub mod console;
pub mod console_hub;
pub mod doorbell;
pub mod engine_select;
pub mod error;
pub mod firmware;
pub mod inspect;
pub mod kit;
pub mod lifecycle;
pub mod machine_tree;
pub mod pci;
pub mod platform;
pub mod registry;
pub mod sandbox;
pub mod telemetry;
pub mod vm;

pub use alcazar_devices::virtio::console::ConsoleInput;
pub use alcazar_devices::Uart16550;
pub use config::VmConfig;
pub use error::{ConfigError, VmmError};
pub use vm::Vm;
