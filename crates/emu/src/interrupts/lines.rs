//! External interrupts, NMI and the HLT sleep of one vCPU.
//!
//! [`InterruptLines`] is the vCPU's INTR and NMI pins as other threads see
//! them (SDM Vol. 3A §6.3 "Sources of interrupts", §6.7 NMI blocking,
//! §6.8.3 the STI/MOV SS interrupt shadow). An interrupt controller (the
//! local APIC, [`crate::apic::LocalApic`]) implements [`InterruptSource`] and is
//! [`InterruptLines::connect`]ed; a simpler producer may latch one vector
//! with [`InterruptLines::set_external`] or raise an NMI. Either way the
//! producer calls [`InterruptLines::notify`] when something new may be
//! pending, which sets an "attention" flag the run loop checks with one
//! atomic load per block and wakes the vCPU if it sleeps in HLT.

use std::sync::atomic::{AtomicBool, AtomicU16, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::Instant;

use alcazar_core::engine::ExitKind;
use alcazar_core::stats::Sleep;

use super::{deliver, deliver_fault, Event, Source};
use crate::flags;
use crate::Cpu;

/// An interrupt controller as the CPU sees it (the local APIC implements
/// it). Calls come from the vCPU's thread.
pub trait InterruptSource: Send + Sync {
    /// Whether the controller asserts INTR: an interrupt it does not mask
    /// waits (RFLAGS.IF is the CPU's business).
    fn pending(&self) -> bool;
    /// The interrupt-acknowledge cycle, after [`InterruptSource::pending`]:
    /// the vector the CPU takes (for a local APIC: IRR -> ISR, the
    /// spurious vector if the request was masked in between, or the
    /// 8259A's vector for ExtINT), or `None` if nothing answered.
    fn acknowledge(&self) -> Option<u8>;
    /// The guest wrote CR8 (the APIC task priority, TPR bits 7:4).
    fn set_tpr(&self, _cr8: u8) {}
    /// CR8 as the controller tracks it (TPR bits 7:4), if it does.
    fn tpr(&self) -> Option<u8> {
        None
    }
}

/// The interrupt pins of one vCPU, shared with whatever drives them.
#[derive(Default)]
pub struct InterruptLines {
    /// Something may be pending: set by producers, cleared by the vCPU
    /// when it finds nothing to take.
    attention: AtomicBool,
    nmi: AtomicBool,
    /// An INIT or STARTUP IPI waits for the vCPU (wakes it from any sleep).
    startup: AtomicBool,
    /// A latched external vector: `0x100 | vector`, or 0.
    latch: AtomicU16,
    source: RwLock<Option<Arc<dyn InterruptSource>>>,
    /// A producer is connected: HLT sleeps instead of ending the run.
    wakeable: AtomicBool,
    /// NMIs are blocked until the next IRET (vCPU thread only).
    nmi_blocked: AtomicBool,
    kicker_registered: AtomicBool,
    sleep: Mutex<()>,
    wake: Condvar,
}

impl std::fmt::Debug for InterruptLines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InterruptLines")
            .field("attention", &self.attention.load(SeqCst))
            .field("nmi", &self.nmi.load(SeqCst))
            .field("latch", &self.latch.load(SeqCst))
            .field("wakeable", &self.wakeable.load(SeqCst))
            .finish_non_exhaustive()
    }
}

impl InterruptLines {
    /// Lines with nothing connected.
    pub fn new() -> Self {
        Self::default()
    }

    /// Connects an interrupt controller; from now on HLT waits for it.
    pub fn connect(&self, source: Arc<dyn InterruptSource>) {
        *self.source.write().unwrap_or_else(|p| p.into_inner()) = Some(source);
        self.wakeable.store(true, SeqCst);
        self.notify();
    }

    /// The connected controller, if any.
    pub fn source(&self) -> Option<Arc<dyn InterruptSource>> {
        self.source
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Raises an NMI (edge: taken once, unless NMIs are blocked, in which
    /// case it waits for the IRET that unblocks them).
    pub fn raise_nmi(&self) {
        self.nmi.store(true, SeqCst);
        self.wakeable.store(true, SeqCst);
        self.notify();
    }

    /// An INIT or STARTUP IPI arrived: the vCPU asks its local APIC what
    /// to do before its next block, and wakes from HLT or wait-for-SIPI.
    pub fn raise_startup(&self) {
        self.startup.store(true, SeqCst);
        self.wakeable.store(true, SeqCst);
        self.notify();
    }

    /// Latches external interrupt `vector` (taken once, when RFLAGS.IF
    /// allows), or withdraws the latched one with `None`. For producers
    /// without an [`InterruptSource`]; the latch is checked first.
    pub fn set_external(&self, vector: Option<u8>) {
        self.latch
            .store(vector.map_or(0, |v| 0x100 | u16::from(v)), SeqCst);
        self.wakeable.store(true, SeqCst);
        if vector.is_some() {
            self.notify();
        }
    }

    /// Tells the vCPU something may be pending now: it checks before its
    /// next block and wakes from HLT. Controllers call this whenever they
    /// get a new request (or a mask is lifted).
    pub fn notify(&self) {
        self.attention.store(true, SeqCst);
        self.kick();
    }

    /// Wakes the vCPU from HLT without making anything pending (used when
    /// the VM is stopping).
    pub fn kick(&self) {
        let _guard = self.sleep.lock().unwrap_or_else(|p| p.into_inner());
        self.wake.notify_all();
    }

    /// A processor reset: drops a pending NMI, INIT/STARTUP and latched
    /// vector, and unblocks NMIs (SDM Vol. 3A §10.1.1: nothing survives
    /// RESET). The connected controller stays connected.
    pub fn reset(&self) {
        self.nmi.store(false, SeqCst);
        self.nmi_blocked.store(false, SeqCst);
        self.startup.store(false, SeqCst);
        self.latch.store(0, SeqCst);
        self.attention.store(false, SeqCst);
    }

    /// Whether anything can ever wake this vCPU from HLT.
    pub fn can_wake(&self) -> bool {
        self.wakeable.load(SeqCst)
    }

    /// Whether an NMI is pending.
    pub fn nmi_pending(&self) -> bool {
        self.nmi.load(SeqCst)
    }

    /// Whether NMIs are blocked (between NMI delivery and the next IRET).
    pub fn nmi_blocked(&self) -> bool {
        self.nmi_blocked.load(SeqCst)
    }

    /// IRET: NMIs are deliverable again (SDM Vol. 3A §6.7.1).
    pub fn unblock_nmi(&self) {
        if self.nmi_blocked.swap(false, SeqCst) && self.nmi.load(SeqCst) {
            self.attention.store(true, SeqCst);
        }
    }

    /// The attention flag's address (a byte, 0 or 1), which translated
    /// code polls at every block entry ([`crate::jit`]).
    pub(crate) fn attention_ptr(&self) -> *const u8 {
        self.attention.as_ptr().cast_const().cast()
    }

    #[inline]
    pub(crate) fn attention(&self) -> bool {
        self.attention.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn take_latch(&self) -> Option<u8> {
        let v = self.latch.swap(0, SeqCst);
        (v & 0x100 != 0).then_some(v as u8)
    }
}

/// Delivers a pending NMI (unless blocked) or external interrupt (when
/// RFLAGS.IF = 1 and no interrupt shadow), waking the vCPU from HLT, or
/// acts on an INIT / STARTUP IPI. Returns whether the CPU state changed. The common case, nothing pending, is
/// one relaxed atomic load.
#[inline]
pub fn take_pending(cpu: &mut Cpu) -> bool {
    if !cpu.irq.attention() || cpu.s.interrupt_shadow {
        return false;
    }
    take_pending_slow(cpu)
}

#[inline(never)]
fn take_pending_slow(cpu: &mut Cpu) -> bool {
    let lines = cpu.irq.clone();
    if lines.startup.swap(false, SeqCst) {
        // INIT / STARTUP: the CPU state changed; look again next time.
        crate::apic::startup::handle(cpu);
        lines.attention.store(true, SeqCst);
        return true;
    }
    if cpu.s.wait_for_sipi {
        // INIT state: INTR and NMI are held until a STARTUP.
        return false;
    }
    if lines.nmi.load(SeqCst) && !lines.nmi_blocked.load(SeqCst) {
        lines.nmi.store(false, SeqCst);
        lines.nmi_blocked.store(true, SeqCst);
        take(cpu, 2);
        // An external interrupt may still be pending.
        lines.attention.store(true, SeqCst);
        return true;
    }
    if !cpu.s.flags.test(flags::IF) {
        // Keep the run loop looking (and its blocks unlinked) only while
        // something waits for IF = 1. Clear first, then look: a producer
        // that raises a request after the look sets the flag again.
        lines.attention.store(false, SeqCst);
        let waiting = lines.latch.load(SeqCst) != 0
            || lines.nmi.load(SeqCst)
            || lines.source().is_some_and(|src| src.pending());
        if waiting {
            lines.attention.store(true, SeqCst);
        }
        return false;
    }
    lines.attention.store(false, SeqCst);
    let vector = lines.take_latch().or_else(|| {
        let src = lines.source()?;
        if !src.pending() {
            return None;
        }
        src.acknowledge()
    });
    match vector {
        Some(v) => {
            take(cpu, v);
            // More may be pending: look again before the next block.
            lines.attention.store(true, SeqCst);
            true
        }
        None => {
            if lines.nmi.load(SeqCst) {
                lines.attention.store(true, SeqCst);
            }
            false
        }
    }
}

/// Delivers external event `vector` at the current RIP.
fn take(cpu: &mut Cpu, vector: u8) {
    cpu.s.halted = false;
    let ev = Event {
        vector,
        error: None,
        source: Source::External,
        return_rip: cpu.s.rip,
    };
    if let Err(fault) = deliver(cpu, ev) {
        // An interrupt is benign for Table 6-5: handle the fault serially.
        deliver_fault(cpu, fault);
    }
    cpu.end_block = false;
}

/// HLT with nothing deliverable (or the wait-for-SIPI state): sleeps (no
/// spinning) until an NMI, an INIT or STARTUP IPI or, with RFLAGS.IF = 1,
/// an external interrupt may be pending, or the VM is asked to stop. In
/// wait-for-SIPI only INIT, STARTUP and a stop wake it. The time asleep is
/// charged to [`ExitKind::Hlt`] in the vCPU's statistics. Returns `false` at once if nothing can ever wake this
/// vCPU (no producer connected), so the run loop reports
/// [`alcazar_core::engine::VcpuExit::Halted`].
pub fn wait_for_interrupt(cpu: &mut Cpu) -> bool {
    let lines = cpu.irq.clone();
    if !lines.can_wake() {
        return false;
    }
    if !lines.kicker_registered.swap(true, SeqCst) {
        let l = lines.clone();
        cpu.machine.control.add_kicker(Box::new(move || l.kick()));
    }
    // In wait-for-SIPI only INIT/STARTUP (and a stop) wake the vCPU.
    let running = !cpu.s.wait_for_sipi;
    let want_external = running && cpu.s.flags.test(flags::IF);
    let control = cpu.machine.control.clone();
    let slept = Instant::now();
    let stats = cpu.machine.vcpu_stats(cpu.id);
    stats.set_sleep(if !running {
        Sleep::WaitingForSipi
    } else if !want_external {
        Sleep::HaltedInterruptsOff
    } else {
        Sleep::Awake
    });
    let mut guard = lines.sleep.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        let nmi = running && lines.nmi.load(SeqCst) && !lines.nmi_blocked.load(SeqCst);
        let startup = lines.startup.load(SeqCst);
        if control.should_leave_run()
            || nmi
            || startup
            || (want_external && lines.attention.load(SeqCst))
        {
            drop(guard);
            stats.set_sleep(Sleep::Awake);
            // Telemetry: the host time this halted vCPU slept.
            let ns = u64::try_from(slept.elapsed().as_nanos()).unwrap_or(u64::MAX);
            cpu.machine.vcpu_stats(cpu.id).add_time(ExitKind::Hlt, ns);
            return true;
        }
        guard = lines.wake.wait(guard).unwrap_or_else(|p| p.into_inner());
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::testutil::cpu64;

    #[test]
    fn the_hlt_sleep_is_charged_to_hlt_time() {
        let mut cpu = cpu64(&[]);
        cpu.s.flags.set_flag(flags::IF, true);
        cpu.irq.set_external(None);
        let lines = cpu.irq.clone();
        let waker = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            lines.set_external(Some(0x30));
        });
        assert!(wait_for_interrupt(&mut cpu));
        waker.join().unwrap();
        let stats = cpu.machine.vcpu_stats(cpu.id);
        let ns = stats.time_ns(ExitKind::Hlt);
        assert!(ns >= 20_000_000, "{ns} ns");
        assert!(ns < 10_000_000_000, "{ns} ns");
        // Nothing can wake a vCPU without producers: no sleep, no time.
        let mut alone = cpu64(&[]);
        assert!(!wait_for_interrupt(&mut alone));
        assert_eq!(alone.machine.vcpu_stats(0).time_ns(ExitKind::Hlt), 0);
    }
}
