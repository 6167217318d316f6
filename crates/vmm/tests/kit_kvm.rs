//! Every tiny-guest kit program, run on the kvm engine: the UART output
//! must contain the program's expected lines in order, and the VM must end
//! with the expected exit status.
//!
//! Without a usable /dev/kvm these tests print `SKIPPED` and the reason;
//! with `ALCAZAR_REQUIRE_KVM=1` (set by CI) they fail instead.

use alcazar_kit::Expect;
use alcazar_vmm::config::EngineChoice;
mod common;
use common::kit::run_kit;

/// Whether the kvm engine can run here; says why not when it cannot.
fn kvm_available(test: &str) -> bool {
    match alcazar_kvm::KvmEngine::new() {
        Ok(_) => true,
        Err(e) if std::env::var("ALCAZAR_REQUIRE_KVM").as_deref() == Ok("1") => {
            panic!("{test}: kvm required (ALCAZAR_REQUIRE_KVM=1) but unavailable: {e}")
        }
        Err(e) => {
            eprintln!("SKIPPED {test}: {e}");
            false
        }
    }
}

/// Runs kit `program` on kvm and checks it against `expect` (the same
/// harness as the emu kit tests: `alcazar_vmm::kit`).
fn check(program: &str, cpus: u32, expect: &Expect) {
    if !kvm_available(program) {
        return;
    }
    let outcome =
        run_kit(program, cpus, EngineChoice::Kvm).unwrap_or_else(|e| panic!("{program}: {e}"));
    if let Err(why) = outcome.check(expect) {
        panic!("{program} on kvm: {why}");
    }
}

fn expect_of(program: &str) -> Expect {
    alcazar_kit::build(program)
        .expect("program exists")
        .expect("program assembles")
        .expect
}

#[test]
fn real_mode_hello_runs_on_kvm() {
    check("real-hello", 1, &expect_of("real-hello"));
}

#[test]
fn protected_mode_with_own_gdt_runs_on_kvm() {
    check("protected-hello", 1, &expect_of("protected-hello"));
}

#[test]
fn long_mode_with_own_page_tables_runs_on_kvm() {
    check("long-hello", 1, &expect_of("long-hello"));
}

#[test]
fn demo_walks_real_protected_long_and_powers_off_on_kvm() {
    check("demo", 1, &expect_of("demo"));
}

#[test]
fn two_vcpus_each_say_hello_on_kvm() {
    check("smp-hello", 2, &alcazar_kit::smp_expect(2));
}

#[test]
fn sweeping_every_port_and_unclaimed_mmio_leaves_the_vmm_standing() {
    check("port-sweep", 1, &expect_of("port-sweep"));
}

#[test]
fn page_faults_report_error_code_and_cr2_on_kvm() {
    check("fault-pf", 1, &expect_of("fault-pf"));
}

#[test]
fn general_protection_faults_report_their_error_code_on_kvm() {
    check("fault-gp", 1, &expect_of("fault-gp"));
}

#[test]
fn invalid_opcodes_raise_ud_on_kvm() {
    check("fault-ud", 1, &expect_of("fault-ud"));
}

#[test]
fn divide_errors_raise_de_on_kvm() {
    check("fault-de", 1, &expect_of("fault-de"));
}

#[test]
fn real_mode_int_round_trips_through_the_ivt_on_kvm() {
    check("int-roundtrip-real", 1, &expect_of("int-roundtrip-real"));
}

#[test]
fn the_local_apic_timer_ticks_periodically_through_hlt_on_kvm() {
    // KVM's in-kernel local APIC (split irqchip): the timer, the guest's
    // EOI, and HLT sleeping inside KVM_RUN until the next tick.
    check("apic-timer", 1, &expect_of("apic-timer"));
}

#[test]
fn the_bsp_starts_its_aps_with_init_and_startup_ipis_on_kvm() {
    // The APs wait for SIPI in KVM_MP_STATE_INIT_RECEIVED; KVM's local
    // APICs carry the INIT and STARTUP IPIs.
    check("smp-sipi", 2, &alcazar_kit::smp_sipi_expect(2));
    check("smp-sipi", 4, &alcazar_kit::smp_sipi_expect(4));
}

#[test]
fn pit_ticks_arrive_through_the_8259a_then_a_level_triggered_ioapic_pin_on_kvm() {
    // Our 8259A's vector injected with KVM_INTERRUPT through LINT0, then
    // our IOAPIC's message by KVM_SIGNAL_MSI, its EOI back through
    // KVM_EXIT_IOAPIC_EOI.
    check("isa-irq", 1, &expect_of("isa-irq"));
}

#[test]
fn a_polled_virtio_driver_gets_randomness_through_an_ioeventfd_on_kvm() {
    if !kvm_available("virtio-rng") {
        return;
    }
    let outcome = run_kit("virtio-rng", 1, EngineChoice::Kvm).expect("virtio-rng runs");
    if let Err(why) = outcome.check(&expect_of("virtio-rng")) {
        panic!("virtio-rng on kvm: {why}");
    }
    // The queue notification did not exit to the VMM: KVM signalled the
    // doorbell's eventfd and the device's I/O thread served the queue.
    let (name, values) = &outcome.pci[0];
    let value = |key: &str| {
        values
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("{name} has no {key}: {values:?}"))
    };
    assert_eq!(value("notifies_ioeventfd"), "1", "{values:?}");
    assert_eq!(value("notifies_mmio"), "0", "{values:?}");
}

// Not run on kvm, because this host's KVM (PVM backend) cannot run them;
// they are kept for the emu engine:
//
// * `int-roundtrip`: `int 0x40` at CPL 0 in 64-bit mode is emulated by
//   KVM's instruction emulator, which implements INT n only in real mode;
//   the vCPU stops with KVM_EXIT_INTERNAL_ERROR (emulation failure).
// * `syscall-sysret`: SYSRETQ does reach CPL 3, but a SYSCALL from CPL 3
//   jumps to IA32_LSTAR without leaving CPL 3 (PVM's user mode), so the
//   kernel entry's first instruction fetch from its supervisor-only page
//   faults (#PF, error code 0x5).
