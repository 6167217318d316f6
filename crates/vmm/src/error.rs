//! The VMM's error types.

use alcazar_core::{BusError, EngineError, MemoryError};

pub use crate::firmware::FirmwareError;

/// A problem with the configuration: which key, what value, and what to
/// do about it. Displayed on one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key} = {value}: {problem}; {fix}")]
pub struct ConfigError {
    /// The key, as a path (`memory`, `device[2].class`, `boot.image`).
    pub key: String,
    /// The offending value as the user wrote it (or `(missing)`).
    pub value: String,
    /// What is wrong.
    pub problem: String,
    /// How to fix it.
    pub fix: String,
}

impl ConfigError {
    /// A config error for `key` with `value`.
    pub fn new(
        key: impl Into<String>,
        value: impl std::fmt::Display,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        ConfigError {
            key: one_line(key.into()),
            value: one_line(value.to_string()),
            problem: one_line(problem.into()),
            fix: one_line(fix.into()),
        }
    }
}

/// `s` with its control characters (a newline in a quoted TOML string
/// or a command-line argument) escaped, so the error stays on one line.
fn one_line(s: String) -> String {
    if !s.contains(char::is_control) {
        return s;
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Everything that can go wrong creating or running a VM.
#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    /// The configuration is invalid.
    #[error("config error: {0}")]
    Config(#[from] ConfigError),
    /// Guest memory could not be set up.
    #[error("guest memory: {0}")]
    Memory(#[from] MemoryError),
    /// The device layout is inconsistent.
    #[error("device layout: {0}")]
    Bus(#[from] BusError),
    /// The Linux kernel or initrd cannot be booted.
    #[error("boot: {0}")]
    Boot(#[from] crate::boot::linux::LinuxBootError),
    /// The firmware tables do not fit or cannot describe the machine.
    #[error("firmware tables: {0}")]
    Firmware(#[from] FirmwareError),
    /// The PCI bus cannot take a device.
    #[error("PCI: {0}")]
    Pci(String),
    /// The engine failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// A host I/O operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What the VMM was doing.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
}

impl VmmError {
    /// Whether the error is the user's input (exit status 2) rather than a
    /// failure while running (exit status 1).
    pub fn is_usage(&self) -> bool {
        matches!(self, VmmError::Config(_) | VmmError::Boot(_))
    }
}
