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
        EngineChoice::Auto => {
            let kvm = KvmEngine::new()?;
            let why = if host_has_hw_virt() {
                "auto: /dev/kvm opens and the CPU has VT-x/SVM".to_string()
            } else {
                "auto: /dev/kvm opens but the CPU has no VT-x/SVM (KVM emulates guest kernel code); the emu engine is not built yet".to_string()
            };
            Ok(Selected {
                engine: Box::new(kvm),
                why,
            })
        }
    }
}
