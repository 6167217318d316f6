//! Embedding Alcazar's core in another Rust program, without the config
//! layer: build a `Machine` by hand, put an embedder-defined device on the
//! port bus, hook a hypercall and an MSR, run a small long-mode guest on
//! the kvm engine, and look at what the guest did.
//!
//! This is the example the project's docs point embedders at.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use alcazar_core::engine::{Engine, VcpuExit};
use alcazar_core::hooks::{HypercallArgs, MsrFault, MsrHook, HYPERCALL_PORT};
use alcazar_core::memory::{GuestMemory, MemoryMap};
use alcazar_core::{BusDevice, IoSpace, Machine};
use alcazar_kvm::KvmEngine;
use alcazar_vmm::boot::{self, BootImage};
use alcazar_vmm::config::FlatMode;
use iced_x86::code_asm::*;

/// An embedder's device: answers reads with a constant and records writes.
struct Answer {
    written: Vec<u8>,
}

impl BusDevice for Answer {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
        data[0] = 42;
    }
    fn write(&mut self, _offset: u64, data: &[u8]) {
        self.written.extend_from_slice(data);
    }
}

/// An embedder's MSR: a scratch register the guest can write and read.
struct ScratchMsr(AtomicU64);

impl MsrHook for ScratchMsr {
    fn read(&self, _vcpu: u32, _msr: u32) -> Result<u64, MsrFault> {
        Ok(self.0.load(Ordering::SeqCst))
    }
    fn write(&self, _vcpu: u32, _msr: u32, value: u64) -> Result<(), MsrFault> {
        self.0.store(value, Ordering::SeqCst);
        Ok(())
    }
}

const ANSWER_PORT: u16 = 0x700;
const SCRATCH_MSR: u32 = 0x4b56_4d77;

/// The guest: read the device, write it back plus one, make hypercall 7
/// with RBX = 20, write the result through the MSR hook, then `hlt`.
fn guest() -> Vec<u8> {
    let mut a = CodeAssembler::new(64).unwrap();
    a.mov(dx, ANSWER_PORT as u32).unwrap();
    a.in_(al, dx).unwrap();
    a.inc(al).unwrap();
    a.out(dx, al).unwrap();
    a.mov(eax, 7u32).unwrap();
    a.mov(ebx, 20u32).unwrap();
    a.out(HYPERCALL_PORT as u32, al).unwrap();
    a.mov(ecx, SCRATCH_MSR).unwrap();
    a.xor(edx, edx).unwrap();
    a.wrmsr().unwrap();
    a.hlt().unwrap();
    a.assemble(boot::DEFAULT_LOAD_ADDRESS).unwrap()
}

#[test]
fn an_embedder_drives_a_guest_through_its_own_device_and_hooks() {
    let engine = match KvmEngine::new() {
        Ok(e) => e,
        Err(e) if std::env::var("ALCAZAR_REQUIRE_KVM").as_deref() == Ok("1") => {
            panic!("kvm required: {e}")
        }
        Err(e) => return eprintln!("SKIPPED embedding example: {e}"),
    };

    // 1. Memory and the machine.
    let memory = GuestMemory::new(MemoryMap::pc(16 << 20).unwrap()).unwrap();
    let machine = Machine::new(memory, 1);

    // 2. The embedder's device and hooks.
    let answer = Arc::new(Mutex::new(Answer {
        written: Vec::new(),
    }));
    machine
        .bus
        .insert(
            IoSpace::Port,
            u64::from(ANSWER_PORT),
            1,
            "answer",
            answer.clone(),
        )
        .unwrap();
    let double = |_vcpu: u32, args: &HypercallArgs| args.a0 * 2;
    machine
        .hooks
        .register_hypercall(7, Arc::new(double))
        .unwrap();
    let scratch = Arc::new(ScratchMsr(AtomicU64::new(0)));
    machine
        .hooks
        .hook_msr(SCRATCH_MSR, scratch.clone())
        .unwrap();

    // 3. Load the guest, create the vCPU, run it until it halts.
    let image = BootImage {
        code: guest(),
        mode: FlatMode::Long,
        load_address: boot::DEFAULT_LOAD_ADDRESS,
        aps_wait_for_sipi: false,
    };
    boot::install(&machine.memory, &image, 1).unwrap();
    let machine = Arc::new(machine);
    let vm = engine.create_vm(machine.clone()).unwrap();
    let mut vcpu = vm.create_vcpu(0).unwrap();
    let (regs, sregs) = boot::vcpu_state(&image, 0, 1, vcpu.sregs().unwrap());
    vcpu.set_sregs(&sregs).unwrap();
    vcpu.set_regs(&regs).unwrap();
    assert_eq!(vcpu.run().unwrap(), VcpuExit::Halted);

    // 4. What the guest did.
    assert_eq!(answer.lock().unwrap().written, vec![43]);
    assert_eq!(
        scratch.0.load(Ordering::SeqCst),
        40,
        "hypercall result written through the MSR hook"
    );
    assert_eq!(vcpu.regs().unwrap().rax, 40);
    let stats = machine.vcpu_stats(0).snapshot();
    assert!(!stats.is_empty());
}
