//! The inspector's view of kvm vCPUs: registers, KVM's local APIC, MP
//! state, events and MSRs, read from small VMs.
//!
//! Without a usable /dev/kvm these tests print `SKIPPED`; with
//! `ALCAZAR_REQUIRE_KVM=1` they fail instead.

use std::sync::Arc;

use alcazar_core::engine::{Engine, EngineVm, VcpuExit};
use alcazar_core::inspect::{Node, Tree};
use alcazar_core::memory::{GuestMemory, MemoryMap};
use alcazar_core::regs::Segment;
use alcazar_core::Machine;
use alcazar_kvm::KvmEngine;

/// A two-vCPU VM on kvm and its machine, or `None` (after saying why)
/// when kvm is absent.
fn vm(test: &str) -> Option<(Box<dyn EngineVm>, Arc<Machine>)> {
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
    let vm = engine.create_vm(machine.clone()).expect("create_vm");
    Some((vm, machine))
}

fn value(t: &Tree, path: &str) -> String {
    match t.get(path) {
        Some(Node::Value(v)) => v,
        other => panic!("{path}: {other:?}\n{:#?}", t.flatten("")),
    }
}

#[test]
fn kvm_local_apics_show_their_ids_and_bios_state() {
    let Some((vm, _machine)) = vm("inspect with local APICs") else {
        return;
    };
    assert!(vm.apic_bus().is_some(), "the split irqchip is available");
    let mut bsp = vm.create_vcpu(0).expect("vCPU 0");
    let ap = vm.create_vcpu(1).expect("vCPU 1");
    let mut regs = bsp.regs().expect("regs");
    regs.rip = 0x1234;
    regs.rax = 0xabcd;
    bsp.set_regs(&regs).expect("set_regs");

    let t = bsp.inspect();
    assert_eq!(value(&t, "regs/rip"), "0x0000000000001234");
    assert_eq!(value(&t, "regs/rax"), "0x000000000000abcd");
    assert_eq!(value(&t, "mode"), "real");
    assert_eq!(value(&t, "apic/id"), "0");
    assert_eq!(value(&t, "apic/mode"), "xAPIC");
    assert_eq!(value(&t, "apic/bsp"), "true");
    assert_eq!(value(&t, "apic/lvt/lint0/delivery"), "ExtINT");
    assert_eq!(value(&t, "apic/lvt/lint0/masked"), "false");
    assert_eq!(value(&t, "apic/lvt/lint1/delivery"), "NMI");
    assert_eq!(value(&t, "apic/isr"), "none");
    assert_eq!(value(&t, "mp_state"), "runnable");
    assert_eq!(value(&t, "msr/apic_base"), "0x00000000fee00900");
    assert_eq!(value(&t, "events/nmi_injected"), "false");

    // A second read shows the same APIC (but for the running timer count).
    let again = bsp.inspect();
    let apic = |t: &Tree| match t.get("apic") {
        Some(node) => node.flatten("apic"),
        None => panic!("no apic"),
    };
    assert_eq!(apic(&t), apic(&again));

    let t = ap.inspect();
    assert_eq!(value(&t, "apic/id"), "1");
    assert_eq!(value(&t, "apic/bsp"), "false");
    assert_eq!(value(&t, "apic/lvt/lint0/masked"), "true");
    assert_eq!(value(&t, "msr/apic_base"), "0x00000000fee00800");
}

#[test]
fn a_halted_guest_without_local_apics_shows_what_it_ran() {
    let Some((vm, machine)) = vm("inspect without local APICs") else {
        return;
    };
    // mov eax, 0x1234abcd; hlt (real mode, at 0:0x1000).
    let code = [0x66, 0xb8, 0xcd, 0xab, 0x34, 0x12, 0xf4];
    machine.memory.write(0x1000, &code).expect("code");
    let mut vcpu = vm.create_vcpu(0).expect("vCPU 0");
    let mut sregs = vcpu.sregs().expect("sregs");
    sregs.cs = Segment::real_mode(0, true);
    vcpu.set_sregs(&sregs).expect("set_sregs");
    let mut regs = vcpu.regs().expect("regs");
    regs.rip = 0x1000;
    vcpu.set_regs(&regs).expect("set_regs");
    assert_eq!(vcpu.run().expect("run"), VcpuExit::Halted);

    let t = vcpu.inspect();
    assert_eq!(value(&t, "regs/rax"), "0x000000001234abcd");
    assert_eq!(value(&t, "regs/rip"), "0x0000000000001007");
    assert_eq!(value(&t, "cpl"), "0");
    assert!(
        t.get("apic").is_none(),
        "no local APIC without a split irqchip"
    );
    assert_eq!(value(&t, "msr/efer"), "0x0000000000000000");
    assert!(value(&t, "msr/tsc").starts_with("0x"));
    assert!(t.get("mp_state").is_some() && t.get("events/nmi_masked").is_some());
    // Whatever KVM reports: here FCW 0x037f, and MXCSR 0 on the PVM host.
    assert!(value(&t, "fpu/fcw").starts_with("0x"));
    assert_eq!(value(&t, "debug/dr7"), "0x0000000000000400");
    // Reading twice gives the same registers.
    assert_eq!(t.get("regs"), vcpu.inspect().get("regs"));
}
