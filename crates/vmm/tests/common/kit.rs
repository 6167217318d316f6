//! Running tiny-guest kit programs and checking them against their
//! expectations: the harness behind the kit tests on both engines. The kit
//! is a dev-dependency of the library: a program is assembled here and
//! handed to the VM as a flat image.

use std::path::PathBuf;

use alcazar_kit::Expect;

use alcazar_devices::pci::PciDevice;

use alcazar_vmm::config::{
    BootSource, ConsoleTarget, DeviceSpec, EngineChoice, FlatImage, Origin, VmConfig,
};
use alcazar_vmm::error::VmmError;
use alcazar_vmm::vm::Vm;

/// Kit `program`, assembled, as a flat boot source.
pub fn kit_boot(program: &str) -> BootSource {
    let kit = alcazar_kit::build(program)
        .unwrap_or_else(|| panic!("no kit program {program}"))
        .unwrap_or_else(|e| panic!("kit program {program}: {e}"));
    BootSource::Flat {
        image: FlatImage::Bytes(kit.code),
        mode: kit.mode,
        load_address: kit.load_address,
        aps_wait_for_sipi: kit.aps_wait_for_sipi,
    }
}

/// What a kit program did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KitOutcome {
    /// The process exit status its stop reason maps to.
    pub status: i32,
    /// Everything it wrote to COM1.
    pub output: String,
    /// What each PCI device's inspector said when the VM stopped
    /// (name, then named values).
    pub pci: Vec<(String, Vec<(String, String)>)>,
}

impl KitOutcome {
    /// Checks the outcome against `expect`: every expected line in order,
    /// and the exit status. Returns a description of the first difference.
    pub fn check(&self, expect: &Expect) -> Result<(), String> {
        let mut rest = self.output.as_str();
        for line in &expect.output {
            let at = rest.find(line).ok_or_else(|| {
                format!(
                    "expected {line:?} (in order); COM1 output was:\n{}",
                    self.output
                )
            })?;
            rest = &rest[at + line.len()..];
        }
        if self.status != expect.status {
            return Err(format!(
                "exit status {} (expected {}); COM1 output was:\n{}",
                self.status, expect.status, self.output
            ));
        }
        Ok(())
    }
}

fn scratch_file(name: &str) -> Result<PathBuf, VmmError> {
    let dir = std::env::temp_dir().join(format!("alcazar-kit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|source| VmmError::Io {
        what: format!("creating {}", dir.display()),
        source,
    })?;
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    Ok(path)
}

/// Runs kit `program` on `cpus` vCPUs of `engine` with 32 MiB of RAM and
/// returns its exit status and COM1 output.
pub fn run_kit(program: &str, cpus: u32, engine: EngineChoice) -> Result<KitOutcome, VmmError> {
    let tag = format!(
        "{program}-{cpus}-{engine:?}-{:?}.log",
        std::thread::current().id()
    );
    let out = scratch_file(&tag.replace(['(', ')'], ""))?;
    let config = VmConfig {
        name: program.into(),
        memory: 32 << 20,
        cpus,
        engine,
        serial: ConsoleTarget::File(out.clone()),
        devices: kit_devices(program),
        ..VmConfig::new(kit_boot(program))
    };
    let vm = Vm::create(&config)?;
    let devices = vm.pci().virtio_devices();
    let reason = vm.run()?;
    let output = std::fs::read_to_string(&out).unwrap_or_default();
    let _ = std::fs::remove_file(&out);
    let pci = devices
        .iter()
        .map(|(_, d)| {
            let d = d.lock().unwrap_or_else(|p| p.into_inner());
            (d.name(), d.inspect())
        })
        .collect();
    Ok(KitOutcome {
        status: reason.exit_status(),
        output,
        pci,
    })
}

/// The `[[device]]` entries kit `program` needs beyond the standard PC
/// devices (say, the virtio device a driver program drives).
pub fn kit_devices(program: &str) -> Vec<DeviceSpec> {
    let Some(Ok(built)) = alcazar_kit::build(program) else {
        return Vec::new();
    };
    built
        .devices
        .iter()
        .map(|class| {
            DeviceSpec::with_defaults(Origin::Flag("--kit".into()), class, class)
                .unwrap_or_else(|e| panic!("{e}"))
        })
        .collect()
}
