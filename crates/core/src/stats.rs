//! Per-vCPU exit counters and times: the per-vCPU half of Alcazar's
//! telemetry (the bus keeps the per-port and per-device half).
//!
//! Each engine counts the events it sees by [`ExitKind`] and, where it can
//! measure it, the host time they took: the kvm engine the time from
//! `KVM_RUN` returning to the next entry and the time spent inside
//! `KVM_RUN`; the emu engine the time a halted vCPU sleeps. The emu engine
//! also counts retired instructions, the events it delivers through the
//! IDT by vector (SDM Vol. 3A §6.12 "Exception and interrupt handling"),
//! and its TLB flushes.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::engine::ExitKind;

/// The #PF vector (SDM Vol. 3A Table 6-1).
const PAGE_FAULT_VECTOR: usize = 14;

/// Exit counts and times of one vCPU, updated lock-free by its thread.
#[derive(Debug)]
pub struct VcpuStats {
    counts: [AtomicU64; ExitKind::ALL.len()],
    /// Host nanoseconds spent on each kind.
    times: [AtomicU64; ExitKind::ALL.len()],
    /// Host nanoseconds spent running the guest (inside `KVM_RUN`).
    guest_ns: AtomicU64,
    instructions: AtomicU64,
    /// Events delivered through the IDT/IVT, by vector (engines that
    /// deliver them themselves: emu).
    vectors: Box<[AtomicU64]>,
    tlb_flushes: AtomicU64,
    /// The [`Sleep`] the engine last reported, as its discriminant.
    sleep: std::sync::atomic::AtomicU8,
    /// Counters only one engine keeps (the emu translator's blocks, cache
    /// use, ...), as the engine last published them.
    engine: std::sync::Mutex<Vec<(String, u64)>>,
}

/// Why a vCPU sleeps, as its engine reports it (engines that cannot tell,
/// such as kvm with an in-kernel HLT, report nothing: [`Sleep::Awake`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Sleep {
    /// Running, or asleep for a reason the engine does not report.
    Awake = 0,
    /// HLT with RFLAGS.IF = 0: only an NMI, INIT or SMI wakes it (Intel
    /// SDM Vol. 2A, "HLT").
    HaltedInterruptsOff = 1,
    /// Waiting for INIT and a STARTUP IPI (an AP not started yet).
    WaitingForSipi = 2,
}

impl Default for VcpuStats {
    fn default() -> Self {
        VcpuStats {
            counts: Default::default(),
            times: Default::default(),
            guest_ns: AtomicU64::new(0),
            instructions: AtomicU64::new(0),
            vectors: (0..256).map(|_| AtomicU64::new(0)).collect(),
            tlb_flushes: AtomicU64::new(0),
            sleep: std::sync::atomic::AtomicU8::new(Sleep::Awake as u8),
            engine: std::sync::Mutex::new(Vec::new()),
        }
    }
}

impl VcpuStats {
    /// Publishes the engine's own counters (name, value), replacing the
    /// last set: for what only one engine counts (the emu engine's
    /// translator). Engines call it now and then, not per event.
    pub fn publish_engine_counters(&self, counters: Vec<(String, u64)>) {
        *self.engine.lock().unwrap_or_else(|p| p.into_inner()) = counters;
    }

    /// The engine's counters as last published.
    pub fn engine_counters(&self) -> Vec<(String, u64)> {
        self.engine
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Records why the vCPU sleeps (or that it runs again).
    pub fn set_sleep(&self, sleep: Sleep) {
        self.sleep.store(sleep as u8, Ordering::Relaxed);
    }

    /// Why the vCPU sleeps, as last reported.
    pub fn sleep(&self) -> Sleep {
        match self.sleep.load(Ordering::Relaxed) {
            1 => Sleep::HaltedInterruptsOff,
            2 => Sleep::WaitingForSipi,
            _ => Sleep::Awake,
        }
    }

    /// Counts one exit of `kind`.
    pub fn count(&self, kind: ExitKind) {
        self.counts[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// The count of `kind` so far.
    pub fn get(&self, kind: ExitKind) -> u64 {
        self.counts[kind as usize].load(Ordering::Relaxed)
    }

    /// Adds `ns` host nanoseconds spent on an exit (or event) of `kind`.
    pub fn add_time(&self, kind: ExitKind, ns: u64) {
        self.times[kind as usize].fetch_add(ns, Ordering::Relaxed);
    }

    /// Host nanoseconds spent on exits of `kind` so far (0 where the
    /// engine does not measure it).
    pub fn time_ns(&self, kind: ExitKind) -> u64 {
        self.times[kind as usize].load(Ordering::Relaxed)
    }

    /// Adds `ns` host nanoseconds spent in the guest (the kvm engine: the
    /// time inside `KVM_RUN`, which includes KVM's in-kernel exits and, with
    /// its local APIC, a halted vCPU's sleep).
    pub fn add_guest_time(&self, ns: u64) {
        self.guest_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// Host nanoseconds spent in the guest so far (0 for engines that do
    /// not measure it).
    pub fn guest_time_ns(&self) -> u64 {
        self.guest_ns.load(Ordering::Relaxed)
    }

    /// Adds `n` retired guest instructions (engines that can count them:
    /// emu).
    pub fn add_instructions(&self, n: u64) {
        self.instructions.fetch_add(n, Ordering::Relaxed);
    }

    /// Guest instructions retired so far (0 for engines that cannot count).
    pub fn instructions(&self) -> u64 {
        self.instructions.load(Ordering::Relaxed)
    }

    /// Counts one exception, interrupt or NMI delivered at `vector`.
    pub fn count_vector(&self, vector: u8) {
        if let Some(c) = self.vectors.get(usize::from(vector)) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The vectors delivered so far with their counts (non-zero only).
    pub fn vectors(&self) -> Vec<(u8, u64)> {
        self.vectors
            .iter()
            .enumerate()
            .map(|(v, c)| (v as u8, c.load(Ordering::Relaxed)))
            .filter(|&(_, n)| n > 0)
            .collect()
    }

    /// Page faults (#PF, vector 14, SDM Vol. 3A §6.15 "Interrupt 14") the
    /// engine delivered to the guest: emu only, 0 elsewhere.
    pub fn page_faults(&self) -> u64 {
        self.vectors[PAGE_FAULT_VECTOR].load(Ordering::Relaxed)
    }

    /// Records the engine's count of TLB flushes so far (emu).
    pub fn set_tlb_flushes(&self, n: u64) {
        self.tlb_flushes.store(n, Ordering::Relaxed);
    }

    /// TLB flushes so far (0 for engines that do not report them).
    pub fn tlb_flushes(&self) -> u64 {
        self.tlb_flushes.load(Ordering::Relaxed)
    }

    /// Every non-zero count, in [`ExitKind::ALL`] order.
    pub fn snapshot(&self) -> Vec<(ExitKind, u64)> {
        ExitKind::ALL
            .iter()
            .map(|&k| (k, self.get(k)))
            .filter(|&(_, n)| n > 0)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_accumulate_per_kind() {
        let s = VcpuStats::default();
        s.count(ExitKind::PortIo);
        s.count(ExitKind::PortIo);
        s.count(ExitKind::Hlt);
        assert_eq!(
            s.snapshot(),
            vec![(ExitKind::PortIo, 2), (ExitKind::Hlt, 1)]
        );
    }

    #[test]
    fn vectors_are_counted_each() {
        let s = VcpuStats::default();
        s.count_vector(14);
        s.count_vector(14);
        s.count_vector(0xef);
        assert_eq!(s.vectors(), vec![(14, 2), (0xef, 1)]);
        assert_eq!(s.page_faults(), 2);
    }

    #[test]
    fn times_accumulate_per_kind_apart_from_counts() {
        let s = VcpuStats::default();
        s.add_time(ExitKind::Hlt, 1_500);
        s.add_time(ExitKind::Hlt, 500);
        s.add_time(ExitKind::Mmio, 7);
        s.add_guest_time(40);
        s.add_guest_time(2);
        assert_eq!(s.time_ns(ExitKind::Hlt), 2_000);
        assert_eq!(s.time_ns(ExitKind::Mmio), 7);
        assert_eq!(s.time_ns(ExitKind::PortIo), 0);
        assert_eq!(s.guest_time_ns(), 42);
        // Time is not a count.
        assert_eq!(s.get(ExitKind::Hlt), 0);
        assert!(s.snapshot().is_empty());
    }
}
