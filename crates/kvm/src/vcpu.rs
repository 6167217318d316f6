//! The kvm vCPU and its run loop.
//!
//! Each pass enters the guest with `KVM_RUN` and handles one exit:
//!
//! | exit | handled by |
//! |------|------------|
//! | `KVM_EXIT_IO` | the machine's port bus; `out` to [`HYPERCALL_PORT`] is a hypercall |
//! | `KVM_EXIT_MMIO` | the machine's MMIO bus |
//! | `KVM_EXIT_X86_RDMSR` / `WRMSR` | the MSR hooks (only hooked MSRs exit) |
//! | `KVM_EXIT_HLT` | only without local APICs: [`VcpuExit::Halted`] |
//! | `KVM_EXIT_IRQ_WINDOW_OPEN` | the BSP can take the 8259A's vector now |
//! | `KVM_EXIT_IOAPIC_EOI` | a level-triggered EOI, to the IOAPIC |
//! | `KVM_EXIT_SHUTDOWN` | triple fault: [`VcpuExit::Shutdown`] |
//! | `EINTR` | a kick: check whether the VM is stopping |
//!
//! Every exit is counted in the machine's per-vCPU statistics, with the
//! host time from `KVM_RUN` returning to the end of its handling; the time
//! inside `KVM_RUN` is the vCPU's guest time.
//!
//! With a split irqchip ([`crate::irqchip`]) the local APIC is KVM's: HLT
//! sleeps inside `KVM_RUN` until an interrupt (or a kick), so it never
//! exits; an AP in wait-for-SIPI also sleeps there until KVM's APIC gets
//! INIT and STARTUP. Before each entry the BSP injects the 8259A's vector
//! if one is pending.

use std::sync::Arc;
use std::time::{Duration, Instant};

use alcazar_core::engine::{EngineError, ExitKind, Vcpu, VcpuExit};
use alcazar_core::hooks::{HypercallArgs, HYPERCALL_PORT};
use alcazar_core::regs::{Regs, SpecialRegs};
use alcazar_core::stats::VcpuStats;
use alcazar_core::{IoSpace, Machine};
use kvm_bindings::kvm_run;
use kvm_ioctls::{VcpuExit as KvmExit, VcpuFd};

use crate::irqchip::IrqChip;
use crate::kick::{self, RunGuard, Target};
use crate::regs::{regs_from_kvm, regs_to_kvm, sregs_from_kvm, sregs_to_kvm};

/// A vCPU of the kvm engine.
pub struct KvmVcpu {
    id: u32,
    fd: VcpuFd,
    machine: Arc<Machine>,
    target: Target,
    kicker_registered: bool,
    /// The split irqchip, if the VM has one.
    irq: Option<Arc<IrqChip>>,
    /// The guest's TSC when the VM paused ([`Vcpu::freeze_clock`]).
    frozen_tsc: Option<u64>,
}

impl std::fmt::Debug for KvmVcpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvmVcpu")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// What one exit asks the loop to do next.
enum Next {
    Continue,
    Return(VcpuExit),
}

impl KvmVcpu {
    pub(crate) fn new(
        id: u32,
        fd: VcpuFd,
        machine: Arc<Machine>,
        irq: Option<Arc<IrqChip>>,
    ) -> Self {
        let target = match &irq {
            Some(chip) => chip.vcpu_target(id),
            None => Target::default(),
        };
        KvmVcpu {
            id,
            fd,
            machine,
            target,
            kicker_registered: false,
            irq,
            frozen_tsc: None,
        }
    }

    fn guest_error(&self, what: String) -> EngineError {
        EngineError::Guest {
            vcpu: self.id,
            what,
        }
    }

    fn register_kicker(&mut self) -> Result<(), EngineError> {
        if self.kicker_registered {
            return Ok(());
        }
        kick::install_handler().map_err(|source| EngineError::Host {
            what: "installing the vCPU kick signal handler",
            source,
        })?;
        let target = self.target.clone();
        self.machine
            .control
            .add_kicker(Box::new(move || target.kick()));
        self.kicker_registered = true;
        Ok(())
    }

    /// An Alcazar hypercall: `out HYPERCALL_PORT, al` with the number in
    /// RAX and arguments in RBX, RCX, RDX, RSI; the result goes to RAX.
    /// KVM has already moved RIP past the `out`.
    fn hypercall(&mut self) -> Result<(), EngineError> {
        let mut regs = self
            .fd
            .get_regs()
            .map_err(|e| EngineError::host("KVM_GET_REGS", e.errno()))?;
        let args = HypercallArgs {
            a0: regs.rbx,
            a1: regs.rcx,
            a2: regs.rdx,
            a3: regs.rsi,
        };
        regs.rax = self.machine.hooks.hypercall(self.id, regs.rax, &args);
        self.fd
            .set_regs(&regs)
            .map_err(|e| EngineError::host("KVM_SET_REGS", e.errno()))
    }

    /// One pass of the loop: enter the guest, handle the exit. The time
    /// inside `KVM_RUN` is guest time; the time from its return to the end
    /// of the exit's handling (the loop enters again right after) is
    /// charged to the exit's kind.
    fn step(&mut self, run: *const kvm_run) -> Result<Next, EngineError> {
        let machine = self.machine.clone();
        let stats = machine.vcpu_stats(self.id);
        let (bus, hooks) = (&machine.bus, &machine.hooks);
        if let (Some(chip), 0) = (&self.irq, self.id) {
            chip.before_entry(&mut self.fd)?;
        }
        let entered = Instant::now();
        let result = self.fd.run();
        let mut timer = ExitTimer::new(stats, entered);
        match result {
            Ok(KvmExit::IoOut(port, data)) => {
                timer.count(ExitKind::PortIo);
                if port == HYPERCALL_PORT {
                    timer.count(ExitKind::Hypercall);
                    self.hypercall()?;
                } else {
                    let size = io_size(run, data.len());
                    for chunk in data.chunks(size) {
                        bus.write(IoSpace::Port, u64::from(port), chunk);
                    }
                }
            }
            Ok(KvmExit::IoIn(port, data)) => {
                timer.count(ExitKind::PortIo);
                let size = io_size(run, data.len());
                for chunk in data.chunks_mut(size) {
                    bus.read(IoSpace::Port, u64::from(port), chunk);
                }
            }
            Ok(KvmExit::MmioRead(addr, data)) => {
                timer.count(ExitKind::Mmio);
                bus.read(IoSpace::Mmio, addr, data);
            }
            Ok(KvmExit::MmioWrite(addr, data)) => {
                timer.count(ExitKind::Mmio);
                bus.write(IoSpace::Mmio, addr, data);
            }
            Ok(KvmExit::X86Rdmsr(exit)) => {
                timer.count(ExitKind::Msr);
                match hooks.msr_read(self.id, exit.index) {
                    Some(Ok(v)) => *exit.data = v,
                    _ => *exit.error = 1,
                }
            }
            Ok(KvmExit::X86Wrmsr(exit)) => {
                timer.count(ExitKind::Msr);
                if !matches!(
                    hooks.msr_write(self.id, exit.index, exit.data),
                    Some(Ok(()))
                ) {
                    *exit.error = 1;
                }
            }
            Ok(KvmExit::IrqWindowOpen) => timer.count(ExitKind::Other),
            Ok(KvmExit::IoapicEoi(vector)) => {
                timer.count(ExitKind::Other);
                if let Some(chip) = &self.irq {
                    chip.ioapic_eoi(vector);
                }
            }
            Ok(KvmExit::Hlt) => {
                timer.count(ExitKind::Hlt);
                return Ok(Next::Return(VcpuExit::Halted));
            }
            Ok(KvmExit::Shutdown) => {
                timer.count(ExitKind::Shutdown);
                return Ok(Next::Return(VcpuExit::Shutdown));
            }
            Ok(KvmExit::FailEntry(reason, cpu)) => {
                return Err(self.guest_error(format!(
                    "KVM could not enter the guest (hardware reason {reason:#x}, host cpu {cpu})"
                )));
            }
            Ok(KvmExit::InternalError) => {
                return Err(self.guest_error("KVM internal error (emulation failure)".into()));
            }
            Ok(other) => {
                timer.count(ExitKind::Other);
                let what = format!("unexpected KVM exit {other:?}");
                return Err(EngineError::Guest {
                    vcpu: self.id,
                    what,
                });
            }
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                timer.count(ExitKind::Interrupted);
                self.fd.set_kvm_immediate_exit(0);
            }
            Err(e) => return Err(EngineError::host("KVM_RUN", e.errno())),
        }
        Ok(Next::Continue)
    }
}

/// Counts one exit and, when dropped (however the handling ends), charges
/// the time since `KVM_RUN` returned to the last kind counted: a hypercall,
/// counted as port I/O and then as a hypercall, is timed as a hypercall.
struct ExitTimer<'a> {
    stats: &'a VcpuStats,
    exited: Instant,
    kind: Option<ExitKind>,
}

impl<'a> ExitTimer<'a> {
    /// An exit that left `KVM_RUN` (entered at `entered`) just now; the
    /// time inside is added to the guest time.
    fn new(stats: &'a VcpuStats, entered: Instant) -> Self {
        let exited = Instant::now();
        stats.add_guest_time(nanos(exited - entered));
        ExitTimer {
            stats,
            exited,
            kind: None,
        }
    }

    fn count(&mut self, kind: ExitKind) {
        self.stats.count(kind);
        self.kind = Some(kind);
    }
}

impl Drop for ExitTimer<'_> {
    fn drop(&mut self) {
        if let Some(kind) = self.kind {
            self.stats.add_time(kind, nanos(self.exited.elapsed()));
        }
    }
}

/// `d` in whole nanoseconds, saturating.
fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The access size of the pending `KVM_EXIT_IO`, so that a string I/O
/// exit (`rep outsb`: `count` accesses in one exit) is split correctly.
fn io_size(run: *const kvm_run, len: usize) -> usize {
    // SAFETY: `run` points at this vCPU's mmap'd kvm_run page, valid for
    // the vCPU's lifetime; the exit reason is KVM_EXIT_IO, so the `io`
    // member of the union is the one the kernel filled in. This reads
    // plain integers and does not overlap the data area borrowed by the
    // exit.
    let size = unsafe { (*run).__bindgen_anon_1.io.size } as usize;
    if matches!(size, 1 | 2 | 4) && len.is_multiple_of(size) {
        size
    } else {
        len.clamp(1, 4)
    }
}

impl Vcpu for KvmVcpu {
    fn id(&self) -> u32 {
        self.id
    }

    fn regs(&self) -> Result<Regs, EngineError> {
        let r = self
            .fd
            .get_regs()
            .map_err(|e| EngineError::host("KVM_GET_REGS", e.errno()))?;
        Ok(regs_from_kvm(&r))
    }

    fn set_regs(&mut self, regs: &Regs) -> Result<(), EngineError> {
        self.fd
            .set_regs(&regs_to_kvm(regs))
            .map_err(|e| EngineError::host("KVM_SET_REGS", e.errno()))
    }

    fn sregs(&self) -> Result<SpecialRegs, EngineError> {
        let s = self
            .fd
            .get_sregs()
            .map_err(|e| EngineError::host("KVM_GET_SREGS", e.errno()))?;
        Ok(sregs_from_kvm(&s))
    }

    fn set_sregs(&mut self, sregs: &SpecialRegs) -> Result<(), EngineError> {
        let base = self
            .fd
            .get_sregs()
            .map_err(|e| EngineError::host("KVM_GET_SREGS", e.errno()))?;
        self.fd
            .set_sregs(&sregs_to_kvm(sregs, &base))
            .map_err(|e| EngineError::host("KVM_SET_SREGS", e.errno()))
    }

    /// The register tree plus KVM's local APIC, MP state, pending events,
    /// MSRs, debug and FPU registers ([`crate::inspect`]).
    fn inspect(&self) -> alcazar_core::inspect::Tree {
        let has_lapic = self.irq.is_some();
        crate::inspect::inspect_vcpu(&self.fd, has_lapic, self.regs(), self.sregs())
    }

    /// Saves the guest's TSC (IA32_TIME_STAMP_COUNTER): the hardware's
    /// keeps counting while the VM is paused.
    fn freeze_clock(&mut self) {
        self.frozen_tsc = crate::tsc::read(&self.fd);
    }

    /// Writes the saved TSC back; KVM moves the vCPU's TSC offset so the
    /// guest goes on from the value it had at the pause.
    fn thaw_clock(&mut self) {
        if let Some(tsc) = self.frozen_tsc.take() {
            if let Err(e) = crate::tsc::restore(&self.fd, tsc) {
                tracing::warn!(
                    vcpu = self.id,
                    "the TSC could not be restored after a pause: {e}"
                );
            }
        }
    }

    fn run(&mut self) -> Result<VcpuExit, EngineError> {
        self.register_kicker()?;
        let run: *mut kvm_run = self.fd.get_kvm_run();
        let _guard = RunGuard::enter(&self.target, run);
        loop {
            if self.machine.control.should_leave_run() {
                return Ok(VcpuExit::Stopped);
            }
            if let Next::Return(exit) = self.step(run)? {
                return Ok(exit);
            }
        }
    }

    /// `KVM_SET_MP_STATE(KVM_MP_STATE_INIT_RECEIVED)`: KVM's local APIC
    /// holds the vCPU until a STARTUP IPI (an INIT first resets it, as
    /// the hardware does), then starts it in real mode at vector << 12.
    fn set_wait_for_sipi(&mut self) -> Result<(), EngineError> {
        if self.irq.is_none() {
            return Err(EngineError::Unsupported(
                "INIT/SIPI on a kvm VM without local APICs (no split irqchip)",
            ));
        }
        let state = kvm_bindings::kvm_mp_state {
            mp_state: kvm_bindings::KVM_MP_STATE_INIT_RECEIVED,
        };
        self.fd
            .set_mp_state(state)
            .map_err(|e| EngineError::host("KVM_SET_MP_STATE", e.errno()))?;
        let now = self
            .fd
            .get_mp_state()
            .map_err(|e| EngineError::host("KVM_GET_MP_STATE", e.errno()))?;
        if now.mp_state != kvm_bindings::KVM_MP_STATE_INIT_RECEIVED {
            return Err(self.guest_error(format!(
                "KVM left the vCPU in MP state {} instead of INIT_RECEIVED",
                now.mp_state
            )));
        }
        Ok(())
    }
}
