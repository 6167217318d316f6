//! The kvm engine's exit telemetry: each exit is counted and timed by
//! kind, and the time inside `KVM_RUN` is the vCPU's guest time.
//!
//! Without a usable /dev/kvm the test prints `SKIPPED`; with
//! `ALCAZAR_REQUIRE_KVM=1` it fails instead.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use alcazar_core::engine::{Engine, ExitKind, VcpuExit};
use alcazar_core::memory::{GuestMemory, MemoryMap};
use alcazar_core::{BusDevice, IoSpace, Machine};
use alcazar_kvm::KvmEngine;

/// A port device whose writes take a millisecond.
struct Slow;

impl BusDevice for Slow {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }
    fn write(&mut self, _offset: u64, _data: &[u8]) {
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn port_io_exits_are_counted_and_timed_and_guest_time_accrues() {
    let engine = match KvmEngine::new() {
        Ok(e) => e,
        Err(e) if std::env::var("ALCAZAR_REQUIRE_KVM").as_deref() == Ok("1") => {
            panic!("kvm required: {e}")
        }
        Err(e) => {
            eprintln!("SKIPPED exit telemetry: {e}");
            return;
        }
    };
    let memory = GuestMemory::new(MemoryMap::pc(16 << 20).expect("map")).expect("memory");
    let machine = Arc::new(Machine::new(memory, 1));
    machine
        .bus
        .insert(IoSpace::Port, 0x80, 1, "slow", Arc::new(Mutex::new(Slow)))
        .expect("port 0x80");
    // Real mode at 0000:1000: three `out 0x80, al`, then `hlt`.
    let code = [0xb0, 0x01, 0xe6, 0x80, 0xe6, 0x80, 0xe6, 0x80, 0xf4];
    machine.memory.write(0x1000, &code).expect("code");
    let vm = engine.create_vm(machine.clone()).expect("create_vm");
    let mut vcpu = vm.create_vcpu(0).expect("vCPU 0");
    let mut sregs = vcpu.sregs().expect("sregs");
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    vcpu.set_sregs(&sregs).expect("set_sregs");
    let mut regs = vcpu.regs().expect("regs");
    regs.rip = 0x1000;
    vcpu.set_regs(&regs).expect("set_regs");
    assert_eq!(vcpu.run().expect("run"), VcpuExit::Halted);
    let stats = machine.vcpu_stats(0);
    assert_eq!(stats.get(ExitKind::PortIo), 3);
    assert_eq!(stats.get(ExitKind::Hlt), 1);
    // Each exit's handling included the device's millisecond.
    let port_ns = stats.time_ns(ExitKind::PortIo);
    assert!(port_ns >= 3_000_000, "{port_ns} ns");
    assert!(port_ns < 10_000_000_000, "{port_ns} ns");
    assert!(stats.guest_time_ns() > 0);
}
