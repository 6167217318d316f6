//! The kvm engine's split irqchip as the VMM sees it: created when the
//! platform asks for the APIC bus (before any vCPU), BIOS-like local APIC
//! state, and INIT/SIPI waiting only with local APICs.
//!
//! Without a usable /dev/kvm these tests print `SKIPPED`; with
//! `ALCAZAR_REQUIRE_KVM=1` they fail instead.

use std::sync::Arc;

use alcazar_core::engine::{Engine, EngineError, EngineVm};
use alcazar_core::memory::{GuestMemory, MemoryMap};
use alcazar_core::Machine;
use alcazar_kvm::KvmEngine;

/// A two-vCPU VM on kvm, or `None` (after saying why) when kvm is absent.
fn vm(test: &str) -> Option<Box<dyn EngineVm>> {
    let engine = match KvmEngine::new() {
        Ok(e) => e,
        Err(e) if std::env::var("ALCAZAR_REQUIRE_KVM").as_deref() == Ok("1") => {
            panic!("{test}: kvm required: {e}")
        }
        Err(e) => {
            eprintln!("SKIPPED {test}: {e}");
            return None;
        }
    };
    let memory = GuestMemory::new(MemoryMap::pc(16 << 20).expect("map")).expect("memory");
    let machine = Arc::new(Machine::new(memory, 2));
    Some(engine.create_vm(machine).expect("create_vm"))
}

#[test]
fn vcpus_created_after_the_apic_bus_have_enabled_apics_and_can_wait_for_sipi() {
    let Some(vm) = vm("apic bus first") else {
        return;
    };
    assert!(vm.apic_bus().is_some(), "the split irqchip is available");
    let bsp = vm.create_vcpu(0).expect("vCPU 0");
    let mut ap = vm.create_vcpu(1).expect("vCPU 1");
    // IA32_APIC_BASE: 0xfee00000, global enable (bit 11), BSP (bit 8).
    assert_eq!(bsp.sregs().expect("sregs").apic_base, 0xfee0_0900);
    assert_eq!(ap.sregs().expect("sregs").apic_base, 0xfee0_0800);
    ap.set_wait_for_sipi().expect("an AP can wait for SIPI");
}

#[test]
fn without_an_apic_bus_there_is_no_sipi_and_no_late_bus() {
    let Some(vm) = vm("no apic bus") else {
        return;
    };
    let mut ap = vm.create_vcpu(1).expect("vCPU 1");
    assert!(matches!(
        ap.set_wait_for_sipi(),
        Err(EngineError::Unsupported(_))
    ));
    assert!(
        vm.apic_bus().is_none(),
        "KVM takes the split irqchip only before the first vCPU"
    );
}
