//! A bzImage of boot protocol 2.06 without a 64-bit entry (the kit's
//! `bzimage-32` kernel file) boots through the 32-bit boot protocol on
//! both engines, given to the library as a user gives it: a kernel file
//! path and a command line. Its entry checks the state the protocol
//! promises and prints the command line it finds through the zero page.
//!
//! Without a usable /dev/kvm the kvm test prints `SKIPPED` and the
//! reason; with `ALCAZAR_REQUIRE_KVM=1` it fails instead.

use alcazar_vmm::config::{BootSource, ConsoleTarget, EngineChoice, VmConfig};
use alcazar_vmm::vm::Vm;

/// Boots the kit kernel on `engine` and checks its output and status.
fn boot_bzimage_32(engine: EngineChoice) {
    let kernel = alcazar_kit::bzimage_32bit_entry().expect("the kit kernel assembles");
    let dir = std::env::temp_dir().join(format!(
        "alcazar-bzimage32-{}-{engine:?}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bzImage");
    std::fs::write(&path, &kernel.image).unwrap();
    let serial = dir.join("serial.log");
    let config = VmConfig {
        name: "bzimage-32".into(),
        memory: 32 << 20,
        cpus: 1,
        engine,
        serial: ConsoleTarget::File(serial.clone()),
        ..VmConfig::new(BootSource::Linux {
            kernel: path,
            initrd: None,
            cmdline: kernel.cmdline.into(),
        })
    };
    let vm = Vm::create(&config).unwrap_or_else(|e| panic!("{engine:?}: {e}"));
    let reason = vm.run().unwrap_or_else(|e| panic!("{engine:?}: {e}"));
    let output = std::fs::read_to_string(&serial).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    let mut rest = output.as_str();
    for line in &kernel.expect.output {
        let at = rest
            .find(line)
            .unwrap_or_else(|| panic!("{engine:?}: expected {line:?}; COM1 said:\n{output}"));
        rest = &rest[at + line.len()..];
    }
    assert_eq!(
        reason.exit_status(),
        kernel.expect.status,
        "{engine:?}: COM1 said:\n{output}"
    );
}

#[test]
fn a_protocol_2_06_bzimage_boots_through_the_32_bit_entry_on_emu() {
    boot_bzimage_32(EngineChoice::Emu);
}

#[test]
fn a_protocol_2_06_bzimage_boots_through_the_32_bit_entry_on_kvm() {
    match alcazar_kvm::KvmEngine::new() {
        Ok(_) => boot_bzimage_32(EngineChoice::Kvm),
        Err(e) if std::env::var("ALCAZAR_REQUIRE_KVM").as_deref() == Ok("1") => {
            panic!("kvm required (ALCAZAR_REQUIRE_KVM=1) but unavailable: {e}")
        }
        Err(e) => {
            eprintln!("SKIPPED a_protocol_2_06_bzimage_boots_through_the_32_bit_entry_on_kvm: {e}")
        }
    }
}
