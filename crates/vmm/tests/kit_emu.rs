//! Every tiny-guest kit program on the emu engine: the same programs and
//! the same expectations as on kvm (`kit_kvm.rs`), unchanged.

use alcazar_vmm::config::EngineChoice;
mod common;
use common::kit::run_kit;

fn check(program: &str, cpus: u32) {
    let expect = if program == "smp-hello" {
        alcazar_kit::smp_expect(cpus)
    } else if program == "smp-sipi" {
        alcazar_kit::smp_sipi_expect(cpus)
    } else {
        alcazar_kit::build(program)
            .expect("program exists")
            .expect("program assembles")
            .expect
    };
    let outcome =
        run_kit(program, cpus, EngineChoice::Emu).unwrap_or_else(|e| panic!("{program}: {e}"));
    if let Err(why) = outcome.check(&expect) {
        panic!("{program} on emu: {why}");
    }
}

#[test]
fn real_mode_hello_runs_on_emu() {
    check("real-hello", 1);
}

#[test]
fn protected_mode_with_own_gdt_runs_on_emu() {
    check("protected-hello", 1);
}

#[test]
fn long_mode_with_own_page_tables_runs_on_emu() {
    check("long-hello", 1);
}

#[test]
fn demo_walks_real_protected_long_and_powers_off_on_emu() {
    check("demo", 1);
}

#[test]
fn two_vcpus_each_say_hello_on_emu() {
    check("smp-hello", 2);
}

#[test]
fn sweeping_every_port_and_unclaimed_mmio_leaves_the_vmm_standing_on_emu() {
    check("port-sweep", 1);
}

#[test]
fn benchmark_guests_compute_the_right_results_on_emu() {
    for program in ["bench-sieve", "bench-memcpy", "bench-interp"] {
        check(program, 1);
    }
}

#[test]
fn page_faults_report_cr2_and_error_code_on_emu() {
    check("fault-pf", 1);
}

#[test]
fn bad_selectors_and_non_canonical_addresses_raise_gp_on_emu() {
    check("fault-gp", 1);
}

#[test]
fn invalid_opcodes_raise_ud_on_emu() {
    check("fault-ud", 1);
}

#[test]
fn division_errors_raise_de_on_emu() {
    check("fault-de", 1);
}

#[test]
fn software_interrupts_round_trip_in_real_mode_on_emu() {
    check("int-roundtrip-real", 1);
}

#[test]
fn software_interrupts_round_trip_in_long_mode_on_emu() {
    // Cannot run on this host's kvm (PVM's emulator implements INT n only
    // in real mode); see kit_kvm.rs.
    check("int-roundtrip", 1);
}

#[test]
fn the_local_apic_timer_ticks_periodically_through_hlt_on_emu() {
    check("apic-timer", 1);
}

#[test]
fn pit_ticks_arrive_through_the_8259a_then_a_level_triggered_ioapic_pin_on_emu() {
    check("isa-irq", 1);
}

#[test]
fn the_bsp_starts_aps_with_init_and_startup_ipis_on_emu() {
    // Four vCPUs: three APs wait for SIPI.
    check("smp-sipi", 4);
    check("smp-sipi", 2);
}

#[test]
fn syscall_and_sysret_cross_privilege_levels_on_emu() {
    // Cannot run on this host's kvm (PVM keeps `syscall` at CPL 3); see
    // kit_kvm.rs.
    check("syscall-sysret", 1);
}

#[test]
fn a_polled_virtio_driver_gets_randomness_from_virtio_rng_on_emu() {
    // No ioeventfds on emu: the notify write calls the device directly.
    check("virtio-rng", 1);
}
