//! The inspector's root: the whole machine as one [`Tree`].
//!
//! ```text
//! vm/       name, state, engine, cpus, memory, uptime, guest clock,
//!           ACPI S3 suspends and wakes
//! cpu0/     regs, segments, tables, control, and what the engine adds
//! cpu1/ ...
//! devices/  one subtree per device on the bus: its ranges and registers
//!           (virtio devices under pci-config/functions/00:0N.0/device)
//! memory/   the memory map
//! ```
//!
//! vCPU state belongs to the vCPU threads and is published when they park
//! (see [`crate::lifecycle`]), so reading the tree of a running VM pauses
//! it for the moment of the read and resumes it; the guest clock is
//! frozen meanwhile, so the guest cannot tell.

use alcazar_core::Tree;

use crate::inspect;
use crate::lifecycle::LifecycleError;
use crate::vm::VmHandle;

/// The machine's tree. The vCPUs of a running VM are held parked for
/// the read ([`crate::lifecycle::Lifecycle::hold`]); the VM stays
/// `running` in its state.
pub fn vm_tree(vm: &VmHandle) -> Result<Tree, LifecycleError> {
    let _hold = vm.lifecycle().hold()?;
    Ok(collect(vm))
}

fn collect(vm: &VmHandle) -> Tree {
    let mut root = Tree::new();
    root.child("vm", vm_info(vm));
    for (id, snapshot) in vm.lifecycle().snapshots().into_iter().enumerate() {
        let mut cpu = snapshot.unwrap_or_default();
        if cpu.is_empty() {
            cpu.value("state", "never parked (no snapshot yet)");
        }
        root.child(format!("cpu{id}"), cpu);
    }
    root.child("devices", inspect::devices_tree(vm.machine()));
    root.child("memory", inspect::memory_tree(vm.machine()));
    root
}

fn vm_info(vm: &VmHandle) -> Tree {
    let mut t = Tree::new();
    t.value("name", vm.name())
        .value("state", vm.state())
        .value("engine", vm.engine())
        .value("cpus", vm.cpus())
        .value("memory_bytes", vm.memory())
        .value(
            "uptime_seconds",
            format!("{:.3}", vm.uptime().as_secs_f64()),
        )
        .value(
            "guest_clock_paused_seconds",
            format!("{:.3}", vm.machine().clock.paused_total().as_secs_f64()),
        );
    let (suspends, wakes) = vm.machine().control.sleep_counts();
    let mut sleep = Tree::new();
    sleep
        .value("allowed", vm.machine().control.suspend_allowed())
        .value("suspends", suspends)
        .value("wakes", wakes);
    t.child("acpi_s3", sleep);
    if let Some(reason) = vm.stop_reason() {
        t.value("stop_reason", reason);
    }
    t
}
