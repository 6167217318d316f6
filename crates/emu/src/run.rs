//! The run loop (SDM Vol. 3A §6.6 "Program or task restart", §6.9
//! "Priority among simultaneous exceptions and interrupts"): how a [`Cpu`]
//! runs decoded blocks, and where exceptions and external interrupts are
//! delivered.
//!
//! * [`Cpu::run`] loops over [`Cpu::run_slice`], which checks the stop
//!   flag, a pending exit and HLT, then runs up to a number of block
//!   steps;
//! * a block step ([`Cpu::step_chained`]) runs the block at CS:RIP
//!   ([`Cpu::run_insns`]: one indirect call per instruction), reruns it
//!   while it loops to itself, and follows the block links
//!   ([`crate::code::Link`]) to the next blocks while nothing needs
//!   attention;
//! * interrupts are taken only between block steps, and a fault unwinds
//!   to here and is delivered ([`Cpu::raise`]): so an instruction is
//!   never interrupted half-way, and a fault leaves RIP at the faulting
//!   instruction.
//!
//! A link stays valid only while the link epoch ([`Cpu::link_epoch`]) is
//! unchanged; see [`crate::exec::LinkEffect`] for which instructions end
//! it.

use std::sync::Arc;

use alcazar_core::engine::VcpuExit;

use crate::code::{Block, MAX_BLOCK_INSNS};
use crate::fault::Fault;
use crate::{exec, interrupts, Cpu};

/// Most times a looping block reruns itself without a lookup.
const MAX_CHAINED_RUNS: usize = 16;
/// Most blocks run one after another through links without returning to
/// the run loop.
const MAX_LINKED_BLOCKS: usize = 32;
/// Slices of [`Cpu::run`] between two publications of the translator's
/// counters to telemetry (a few times a second at full speed).
const SLICES_PER_PUBLISH: u32 = 4096;
/// Block steps ([`Cpu::step_chained`], each up to [`MAX_LINKED_BLOCKS`]
/// blocks) between checks of the stop flag.
const BLOCKS_PER_SLICE: usize = 256;

impl Cpu {
    /// Runs until the VM stops, the CPU halts, or a triple fault.
    pub fn run(&mut self) -> VcpuExit {
        // The state may have been changed from outside since the last run.
        self.ctx_epoch = self.ctx_epoch.wrapping_add(1);
        let mut slices = 0u32;
        loop {
            if let Some(exit) = self.run_slice(BLOCKS_PER_SLICE) {
                self.publish_counters();
                return exit;
            }
            slices = slices.wrapping_add(1);
            if slices.is_multiple_of(SLICES_PER_PUBLISH) {
                self.publish_counters();
            }
        }
    }

    /// Hands the translator's counters to the machine's telemetry.
    fn publish_counters(&self) {
        if self.jit.stats.entries > 0 || self.jit.stats.blocks_translated > 0 {
            self.machine
                .vcpu_stats(self.id)
                .publish_engine_counters(self.jit.counters());
        }
    }

    /// One round of [`Cpu::run`]'s loop: returns the exit if the run must
    /// end (a stop request, a pending [`Cpu::exit`], or HLT that nothing
    /// can wake), else runs up to `steps` block steps (each up to
    /// [`MAX_LINKED_BLOCKS`] linked blocks), delivering interrupts and
    /// faults in between, and returns `None`.
    ///
    /// For callers that need a bound on the work done (the `emu_exec`
    /// fuzz target): a loop over `run_slice` is `run`. A caller that
    /// changes [`Cpu::s`] between calls must not rely on blocks linked
    /// before the change; [`Cpu::run`] handles that on entry.
    pub fn run_slice(&mut self, steps: usize) -> Option<VcpuExit> {
        if self.machine.control.should_leave_run() {
            return Some(VcpuExit::Stopped);
        }
        if let Some(exit) = self.exit.take() {
            return Some(exit);
        }
        if self.s.halted {
            // Sleep until an interrupt may be deliverable; with no
            // interrupt source nothing can ever wake the vCPU.
            if !self.take_interrupt() && self.s.halted && !interrupts::wait_for_interrupt(self) {
                return Some(VcpuExit::Halted);
            }
            return None;
        }
        let before = self.icount;
        for _ in 0..steps {
            // An INIT may have put the CPU in wait-for-SIPI.
            if self.take_interrupt() && self.s.halted {
                break;
            }
            self.step_chained();
            // A stop or pause request ends the slice after this step: a
            // step in translated code may retire tens of thousands of
            // instructions, and with RFLAGS.IF = 0 translated code does
            // not poll for it.
            if self.exit.is_some() || self.s.halted || self.machine.control.should_leave_run() {
                break;
            }
        }
        let stats = self.machine.vcpu_stats(self.id);
        stats.add_instructions(self.icount - before);
        stats.set_tlb_flushes(self.mmu.flushes);
        None
    }

    /// Runs one block (or one instruction inside an interrupt shadow) and
    /// delivers any fault it raised.
    pub fn step(&mut self) {
        let limit = if self.s.interrupt_shadow {
            1
        } else {
            MAX_BLOCK_INSNS
        };
        let shadow = self.s.interrupt_shadow;
        if let Err(fault) = self.run_block(limit) {
            self.raise(fault);
        }
        if shadow {
            self.s.interrupt_shadow = false;
        }
    }

    /// Like [`Cpu::step`], but a block that ends by branching to its own
    /// start (a loop) runs again without a lookup, a bounded number of
    /// times, while nothing else needs attention.
    ///
    /// Then, while nothing needs attention, it runs the blocks that follow
    /// through their links ([`crate::code::Link`]), looking up (and linking) only
    /// successors that are not linked yet.
    fn step_chained(&mut self) {
        if self.s.interrupt_shadow {
            return self.step();
        }
        let jit = self.jit_ready();
        if jit && (self.jit_enter_cached() || self.jit_enter_latest()) {
            return;
        }
        let (key, block) = match self.block_at_rip() {
            Ok(b) => b,
            Err(fault) => return self.raise(fault),
        };
        if jit {
            if let Some(entry) = self.jit_entry(&block) {
                self.cache.put_back(key, block);
                return self.jit_enter(entry);
            }
        }
        let result = self.run_looping(&block);
        let mut prev = Arc::as_ptr(&block);
        self.cache.put_back(key, block);
        if let Err(fault) = result {
            return self.raise(fault);
        }
        for _ in 0..MAX_LINKED_BLOCKS {
            if self.exit.is_some()
                || self.s.halted
                || self.s.interrupt_shadow
                || self.irq.attention()
            {
                return;
            }
            let epoch = self.link_epoch();
            let rip = self.s.rip;
            // SAFETY: `prev` is a block the cache's map holds: it was
            // current (looked up, or linked at the current epoch) when it
            // ran, and running blocks never touches the cache. Blocks only
            // leave the map in `BlockCache::insert`, which bumps the epoch;
            // `prev` is not used after an epoch change.
            let link = unsafe { &*prev }.link(self.exit_slot);
            let mut next = link.get(rip, epoch);
            if next.is_null() {
                let (key, b) = match self.block_at_rip() {
                    Ok(b) => b,
                    Err(fault) => return self.raise(fault),
                };
                next = Arc::as_ptr(&b);
                if self.link_epoch() == epoch {
                    // No block left the map (`prev` is alive) and no code
                    // changed (`next` is still valid).
                    link.set(rip, epoch, next);
                }
                self.cache.put_back(key, b);
            }
            // SAFETY: `next` was just looked up (the map holds it) or is
            // linked at the current epoch (the map holds it; see above).
            let b = unsafe { &*next };
            if self.jit.wants(b) && self.jit_ready() {
                // Hot or translated: the next step enters tier 1.
                return;
            }
            if let Err(fault) = self.run_looping(b) {
                return self.raise(fault);
            }
            prev = next;
        }
    }

    /// Runs `block` (at RIP), then reruns it while it loops back to its
    /// own start ([`Cpu::loops_back`]), a bounded number of times.
    #[inline(always)]
    fn run_looping(&mut self, block: &Block) -> Result<(), Fault> {
        let mut result = self.run_insns(block, MAX_BLOCK_INSNS);
        for _ in 0..MAX_CHAINED_RUNS {
            match result {
                Ok(true) if self.loops_back(block) => {}
                _ => break,
            }
            result = self.run_insns(block, MAX_BLOCK_INSNS);
        }
        result.map(|_| ())
    }

    /// The link epoch: a [`crate::code::Link`] made at another epoch is stale.
    /// Each part only grows, so the sum changes whenever any part does.
    #[inline(always)]
    fn link_epoch(&self) -> u64 {
        self.ctx_epoch
            .wrapping_add(self.mmu.epoch)
            .wrapping_add(self.cache.epoch)
            .wrapping_add(self.code.invalidations())
    }

    /// Whether `block`, having just ended with a specialized branch, can
    /// simply run again: it branched to its own start, its code is
    /// unchanged, and no interrupt, exit or stop request is pending.
    #[inline]
    fn loops_back(&self, block: &Block) -> bool {
        self.s.rip == block.rip
            && self.exit.is_none()
            && !self.irq.attention()
            && block.valid(&self.code)
    }

    /// Delivers a pending external interrupt if one is deliverable now.
    fn take_interrupt(&mut self) -> bool {
        let taken = interrupts::take_pending(self);
        if taken {
            self.ctx_epoch = self.ctx_epoch.wrapping_add(1);
        }
        taken
    }

    /// Delivers `fault`; a fault during delivery escalates (#DF, then a
    /// triple fault, which ends the run with [`VcpuExit::Shutdown`]).
    pub fn raise(&mut self, fault: Fault) {
        self.ctx_epoch = self.ctx_epoch.wrapping_add(1);
        interrupts::deliver_fault(self, fault);
    }

    /// Runs up to `limit` instructions of the block at CS:RIP.
    pub fn run_block(&mut self, limit: usize) -> Result<(), Fault> {
        let (key, block) = self.block_at_rip()?;
        let result = self.run_insns(&block, limit);
        self.cache.put_back(key, block);
        result.map(|_| ())
    }

    /// Runs up to `limit` instructions of `block` (which starts at RIP).
    ///
    /// Specialized handlers do not need RIP, so it is only written back
    /// when the block ends or faults, and before a generic handler runs
    /// ([`exec::fast::generic`]); each instruction's next RIP is set
    /// before it runs (branches overwrite it).
    ///
    /// Returns whether the last instruction run was a specialized branch
    /// (after which the block may chain to itself).
    #[inline]
    fn run_insns(&mut self, block: &Block, limit: usize) -> Result<bool, Fault> {
        let mut done = 0u64;
        let mut taken = false;
        let mut result = Ok(false);
        for d in block.insns.iter().take(limit) {
            self.next_rip = d.next_rip;
            let r = if limit == 1 && d.fused {
                // One instruction only: the CMP/TEST without its Jcc.
                self.next_rip = d.insn.next_ip() & block.ip_mask;
                exec::fast::generic(self, d)
            } else {
                (d.exec)(self, d)
            };
            if let Err(fault) = r {
                self.s.rip = d.rip;
                result = Err(fault);
                break;
            }
            done += 1;
            if self.end_block {
                self.end_block = false;
                taken = true;
                result = Ok(d.chains);
                break;
            }
            result = Ok(d.chains);
        }
        if result.is_ok() {
            self.s.rip = self.next_rip;
        }
        self.icount += done;
        self.exit_slot = (done as usize) << 1 | usize::from(taken);
        result
    }
}

#[cfg(test)]
mod tests {
    use alcazar_core::engine::VcpuExit;
    use iced_x86::code_asm::*;

    use crate::fault::Fault;
    use crate::state::reg;
    use crate::testutil::{assemble, cpu64};

    #[test]
    fn run_slice_returns_inside_a_long_loop_and_reports_the_exit_at_its_end() {
        let code = assemble(64, |a| {
            let mut top = a.create_label();
            a.set_label(&mut top).unwrap();
            a.inc(rax).unwrap();
            a.cmp(rax, 1_000_000).unwrap();
            a.jne(top).unwrap();
            a.hlt().unwrap();
        });
        let mut cpu = cpu64(&code);
        assert_eq!(cpu.run_slice(1), None);
        let first = cpu.icount;
        assert!(first > 0 && first < 1_000_000, "one slice ran {first}");
        let mut slices = 1;
        let exit = loop {
            if let Some(exit) = cpu.run_slice(1) {
                break exit;
            }
            slices += 1;
        };
        assert_eq!(exit, VcpuExit::Halted);
        assert_eq!(cpu.s.gpr[reg::RAX], 1_000_000);
        assert!(slices > 1);
    }

    #[test]
    fn code_outside_ram_raises_invalid_opcode_instead_of_spinning() {
        // 512 MiB is mapped by cpu64's identity paging but beyond its
        // 16 MiB of RAM: nothing is there. (Found by the emu_exec fuzz
        // target's set-up: the jump used to leave RIP there for ever,
        // no instruction retired and no fault raised.)
        let code = assemble(64, |a| {
            a.mov(rax, 0x2000_0000u64).unwrap();
            a.jmp(rax).unwrap();
        });
        let mut cpu = cpu64(&code);
        cpu.run_block(2).unwrap();
        assert_eq!(cpu.s.rip, 0x2000_0000);
        assert_eq!(cpu.run_block(1), Err(Fault::InvalidOpcode));
        assert_eq!(cpu.s.rip, 0x2000_0000, "the fault's RIP is the fetch's");
    }
}
