//! Choosing the engine: `kvm`, `emu`, or `auto`.

use alcazar_core::engine::Engine;
use alcazar_emu::EmuEngine;
use alcazar_kvm::KvmEngine;

use crate::config::EngineChoice;
use crate::error::VmmError;

/// Whether the host CPU advertises hardware virtualization (`vmx` or
/// `svm` in /proc/cpuinfo).
pub fn host_has_hw_virt() -> bool {
    std::fs::read_to_string("/proc/cpuinfo")
        .map(|s| {
            s.lines()
                .filter(|l| l.starts_with("flags"))
                .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"))
        })
        .unwrap_or(false)
}

/// An engine and a sentence on why it was chosen.
pub struct Selected {
    /// The engine.
    pub engine: Box<dyn Engine>,
    /// Why this one.
    pub why: String,
}

/// Creates the engine `choice` asks for.
pub fn select(choice: EngineChoice) -> Result<Selected, VmmError> {
    match choice {
        EngineChoice::Kvm => Ok(Selected {
            engine: Box::new(KvmEngine::new()?),
            why: "requested".into(),
        }),
        EngineChoice::Emu => Ok(Selected {
            engine: Box::new(EmuEngine::new()),
            why: "requested".into(),
        }),
        EngineChoice::Auto => Ok(auto()),
    }
}

/// `auto`: kvm only when the CPU has VT-x/SVM and `/dev/kvm` opens (KVM
/// without hardware support, like the PVM backend, emulates guest kernel
/// code far slower than the emu engine runs it); emu otherwise.
fn auto() -> Selected {
    if !host_has_hw_virt() {
        return Selected {
            engine: Box::new(EmuEngine::new()),
            why: "auto: the host CPU has no VT-x/SVM".into(),
        };
    }
    match KvmEngine::new() {
        Ok(kvm) => Selected {
            engine: Box::new(kvm),
            why: "auto: VT-x/SVM present and /dev/kvm opens".into(),
        },
        Err(e) => Selected {
            engine: Box::new(EmuEngine::new()),
            why: format!("auto: VT-x/SVM present but {e}"),
        },
    }
}
