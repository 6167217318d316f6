//! Per-vCPU exit counters, the seed of Alcazar's telemetry.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::engine::ExitKind;

/// Exit counts of one vCPU, updated lock-free by its thread.
#[derive(Debug)]
pub struct VcpuStats {
    counts: [AtomicU64; ExitKind::ALL.len()],
    instructions: AtomicU64,
    /// Events delivered through the IDT/IVT, by vector (engines that
    /// deliver them themselves: emu).
    vectors: Box<[AtomicU64]>,
    tlb_flushes: AtomicU64,
}

impl Default for VcpuStats {
    fn default() -> Self {
        VcpuStats {
            counts: Default::default(),
            instructions: AtomicU64::new(0),
            vectors: (0..256).map(|_| AtomicU64::new(0)).collect(),
            tlb_flushes: AtomicU64::new(0),
        }
    }
}

impl VcpuStats {
    /// Counts one exit of `kind`.
    pub fn count(&self, kind: ExitKind) {
        self.counts[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// The count of `kind` so far.
    pub fn get(&self, kind: ExitKind) -> u64 {
        self.counts[kind as usize].load(Ordering::Relaxed)
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
    }
}
