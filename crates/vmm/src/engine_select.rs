//! Choosing the engine: `kvm`, `emu`, or `auto`.

use alcazar_core::engine::Engine;
use alcazar_emu::EmuEngine;
use alcazar_kvm::KvmEngine;

use crate::config::{EmuSettings, EngineChoice};
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

/// The emu engine with `settings`.
fn emu(settings: &EmuSettings) -> EmuEngine {
    let mut e = EmuEngine::with_tier(settings.tier);
    e.set_jit_config(alcazar_emu::JitConfig {
        cache_bytes: settings.code_cache,
        ..alcazar_emu::JitConfig::default()
    });
    e
}

/// The emu tier in words, for the start line.
fn tier_words(settings: &EmuSettings) -> &'static str {
    match settings.tier {
        alcazar_emu::EmuTier::Jit => "hot code translated",
        alcazar_emu::EmuTier::Interp => "interpreter only",
    }
}

/// Creates the engine `choice` asks for (an emu engine with `settings`).
pub fn select(choice: EngineChoice, settings: &EmuSettings) -> Result<Selected, VmmError> {
    match choice {
        EngineChoice::Kvm => Ok(Selected {
            engine: Box::new(KvmEngine::new()?),
            why: "requested".into(),
        }),
        EngineChoice::Emu => Ok(Selected {
            engine: Box::new(emu(settings)),
            why: format!("requested; {}", tier_words(settings)),
        }),
        EngineChoice::Auto => Ok(auto(settings)),
    }
}

/// `auto`: kvm only when the CPU has VT-x/SVM and `/dev/kvm` opens (KVM
/// without hardware support, like the PVM backend, emulates guest kernel
/// code far slower than the emu engine runs it); emu otherwise.
fn auto(settings: &EmuSettings) -> Selected {
    if !host_has_hw_virt() {
        return Selected {
            engine: Box::new(emu(settings)),
            why: format!(
                "auto: the host CPU has no VT-x/SVM; {}",
                tier_words(settings)
            ),
        };
    }
    match KvmEngine::new() {
        Ok(kvm) => Selected {
            engine: Box::new(kvm),
            why: "auto: VT-x/SVM present and /dev/kvm opens".into(),
        },
        Err(e) => Selected {
            engine: Box::new(emu(settings)),
            why: format!("auto: VT-x/SVM present but {e}"),
        },
    }
}
