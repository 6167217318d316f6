//! Per-vCPU exit counters, the seed of Alcazar's telemetry.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::engine::ExitKind;

/// Exit counts of one vCPU, updated lock-free by its thread.
#[derive(Debug, Default)]
pub struct VcpuStats {
    counts: [AtomicU64; ExitKind::ALL.len()],
    instructions: AtomicU64,
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
}
