//! # alcazar-emu
//!
//! The emu engine: Alcazar's software x86-64 CPU. It runs anywhere, runs
//! the same guest the same way every time (with one vCPU), and can show
//! everything a guest does.
//!
//! How an instruction runs:
//!
//! 1. [`Cpu::run_block`] translates CS:RIP through the [`mmu::Mmu`] (a
//!    software TLB in front of the page walker) to a physical address.
//! 2. The [`code::BlockCache`] returns the decoded block at that address,
//!    or iced-x86 decodes one (once) and [`exec::fast::decode`] resolves
//!    the operands of common forms and picks a specialized handler (or the
//!    generic one from [`exec::handler_for`]) for each instruction.
//! 3. Each handler reads and writes operands through [`mem`] (segments,
//!    then the TLB, then host RAM or the MMIO bus) and records arithmetic
//!    flags lazily ([`flags`]).
//! 4. A fault unwinds to the run loop, which delivers it through the
//!    IVT/IDT ([`interrupts`]).
//!
//! vCPUs run one host thread each, like the kvm engine; decoded code is
//! per vCPU and kept coherent through [`code::CodePages`].

#![warn(missing_docs)]

pub mod apic;
pub mod code;
pub mod cpu;
pub mod cpuid;
pub mod debug;
pub mod exec;
pub mod fault;
pub mod flags;
pub mod fpu;
pub mod inspect;
pub mod interrupts;
pub mod mem;
pub mod mmu;
pub mod msr;
pub mod segment;
#[cfg(test)]
pub mod testutil;
mod vcpu;

use std::sync::{Arc, Mutex};

use alcazar_core::cpuid::CpuidEntry;
use alcazar_core::engine::{Engine, EngineError, EngineKind, EngineVm, Vcpu, VcpuExit};
use alcazar_core::Machine;
use iced_x86::{Decoder, DecoderOptions, FlowControl};

use crate::code::{Block, BlockCache, CodePages};
use crate::cpu::{seg, CpuState};
use crate::fault::Fault;
use crate::mmu::{AccessKind, Mmu};

/// Serializes locked read-modify-writes that cannot use a host atomic
/// (split across pages, or on MMIO) — the "split lock" of real CPUs.
pub(crate) static SPLIT_LOCK: Mutex<()> = Mutex::new(());

/// Most instructions in one decoded block.
const MAX_BLOCK_INSNS: usize = 64;
/// Most times a looping block reruns itself without a lookup.
const MAX_CHAINED_RUNS: usize = 16;
/// Most blocks run one after another through links without returning to
/// the run loop.
const MAX_LINKED_BLOCKS: usize = 32;
/// Block steps ([`Cpu::step_chained`], each up to [`MAX_LINKED_BLOCKS`]
/// blocks) between checks of the stop flag.
const BLOCKS_PER_SLICE: usize = 256;

/// The emu engine.
#[derive(Debug, Default)]
pub struct EmuEngine;

impl EmuEngine {
    /// The engine (always available).
    pub fn new() -> Self {
        EmuEngine
    }
}

impl Engine for EmuEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::Emu
    }

    fn create_vm(&self, machine: Arc<Machine>) -> Result<Box<dyn EngineVm>, EngineError> {
        let phys_end = machine
            .memory
            .map()
            .backed()
            .map(|e| e.end())
            .max()
            .unwrap_or(0);
        let code = Arc::new(CodePages::new(phys_end));
        machine.memory.set_dma_observer(code.clone());
        let apic_bus = apic::EmuApicBus::with_clock(machine.clock.clone());
        Ok(Box::new(EmuVm {
            machine,
            code,
            apic_bus,
        }))
    }
}

/// The emu engine's side of a VM.
#[derive(Debug)]
pub struct EmuVm {
    machine: Arc<Machine>,
    code: Arc<CodePages>,
    apic_bus: apic::EmuApicBus,
}

impl EngineVm for EmuVm {
    /// A vCPU with its local APIC on the VM's APIC bus, its timer
    /// registered with the machine's timer service.
    fn create_vcpu(&self, id: u32) -> Result<Box<dyn Vcpu>, EngineError> {
        let mut cpu = Cpu::new(id, self.machine.clone(), self.code.clone());
        let apic = apic::LocalApic::new(id, cpu.irq.clone(), &self.apic_bus);
        apic.set_timer_notifier(self.machine.timers.notifier());
        self.machine
            .timers
            .register(Arc::new(Mutex::new(apic::ApicTimerDevice::new(
                apic.clone(),
            ))));
        cpu.attach_apic(apic);
        Ok(Box::new(vcpu::EmuVcpu::new(cpu)))
    }

    fn apic_bus(&self) -> Option<Arc<dyn alcazar_core::irq::ApicBus>> {
        Some(Arc::new(self.apic_bus.clone()))
    }
}

/// One emulated CPU: architectural state plus the machinery that runs it.
pub struct Cpu {
    /// The vCPU index.
    pub id: u32,
    /// Architectural state.
    pub s: CpuState,
    /// Address translation and the TLB.
    pub mmu: Mmu,
    /// The machine: memory, bus, hooks, control.
    pub machine: Arc<Machine>,
    /// Code-page generations shared by all vCPUs.
    pub code: Arc<CodePages>,
    /// This vCPU's decoded blocks.
    pub cache: BlockCache,
    /// The CPUID table (policy applied; hooks run per query).
    pub cpuid: Vec<CpuidEntry>,
    /// Instructions retired.
    pub icount: u64,
    /// RIP of the instruction after the one executing; branches set it.
    pub next_rip: u64,
    /// Set by a handler to end the current block after it (mode changes,
    /// stores into code, `sti`).
    pub end_block: bool,
    /// Set by a handler for an event the run loop must return
    /// ([`VcpuExit::Shutdown`] after a triple fault).
    pub exit: Option<VcpuExit>,
    /// The interrupt pins (INTR, NMI) other threads drive.
    pub irq: Arc<interrupts::InterruptLines>,
    /// The local APIC, if the CPU has one (every vCPU an [`EmuVm`]
    /// creates; bare CPUs of unit tests have none).
    pub apic: Option<Arc<apic::LocalApic>>,
    /// The MTRRs (stored for RDMSR/WRMSR; the emu engine has no caches).
    pub mtrr: msr::Mtrrs,
    /// Bumped by generic instructions, fault and interrupt delivery and
    /// each entry into [`Cpu::run`] (part of [`Cpu::link_epoch`]).
    pub(crate) ctx_epoch: u64,
    /// How the last block run ended: instructions run, times two, plus
    /// one if a taken side exit ended it (picks its [`code::Link`]).
    exit_slot: usize,
}

impl std::fmt::Debug for Cpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cpu")
            .field("id", &self.id)
            .field("rip", &self.s.rip)
            .field("icount", &self.icount)
            .finish_non_exhaustive()
    }
}

impl Cpu {
    /// A CPU in its power-on state.
    pub fn new(id: u32, machine: Arc<Machine>, code: Arc<CodePages>) -> Self {
        let mmu = Mmu::new(&machine.memory.host_regions());
        let mut cpuid = exec::system::cpuid_table();
        machine.cpuid.apply(&mut cpuid, id, machine.vcpu_count());
        let mut s = CpuState::default();
        s.msr.apic_base = 0xfee0_0000 | (1 << 11) | if id == 0 { 1 << 8 } else { 0 };
        s.msr.misc_enable = msr::MISC_ENABLE_RESET;
        Cpu {
            id,
            s,
            mmu,
            machine,
            code,
            cache: BlockCache::default(),
            cpuid,
            icount: 0,
            next_rip: 0,
            end_block: false,
            exit: None,
            irq: Arc::new(interrupts::InterruptLines::new()),
            apic: None,
            mtrr: msr::Mtrrs::default(),
            ctx_epoch: 0,
            exit_slot: 0,
        }
    }

    /// Runs until the VM stops, the CPU halts, or a triple fault.
    pub fn run(&mut self) -> VcpuExit {
        // The state may have been changed from outside since the last run.
        self.ctx_epoch = self.ctx_epoch.wrapping_add(1);
        loop {
            if let Some(exit) = self.run_slice(BLOCKS_PER_SLICE) {
                return exit;
            }
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
            if self.exit.is_some() || self.s.halted {
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
    /// through their links ([`code::Link`]), looking up (and linking) only
    /// successors that are not linked yet.
    fn step_chained(&mut self) {
        if self.s.interrupt_shadow {
            return self.step();
        }
        let (key, block) = match self.block_at_rip() {
            Ok(b) => b,
            Err(fault) => return self.raise(fault),
        };
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

    /// The link epoch: a [`code::Link`] made at another epoch is stale.
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

    /// The decoded block at CS:RIP (with its cache key), from the cache or
    /// freshly decoded. Hand it back with [`BlockCache::put_back`].
    #[inline(always)]
    fn block_at_rip(&mut self) -> Result<(u64, Arc<Block>), Fault> {
        let lin = self.linear(seg::CS, self.s.rip, 1, AccessKind::Fetch)?;
        let user = self.user();
        let t = self.translate(lin, AccessKind::Fetch, user)?;
        let bitness = self.s.code_size().bitness();
        let key = BlockCache::key(t.phys, bitness);
        if let Some(b) = self.cache.take(key, self.s.rip, &self.code) {
            return Ok((key, b));
        }
        let block = Arc::new(self.decode_block(lin, t.phys, bitness)?);
        self.cache.insert(key, block.clone());
        Ok((key, block))
    }

    /// Decodes from linear `lin` (physical `phys`) until a control
    /// transfer, a page boundary or [`MAX_BLOCK_INSNS`].
    fn decode_block(&mut self, lin: u64, phys: u64, bitness: u32) -> Result<Block, Fault> {
        let page_left = 0x1000 - (lin & 0xfff) as usize;
        let mut bytes = self.fetch_bytes(phys, page_left);
        let mut pages = [(phys & !0xfff, 0u32), (0, 0)];
        let mut page_count = 1u8;
        // An instruction may run into the next page: fetch up to 15 more
        // bytes from it if it is mapped (if not, the decoder sees a short
        // buffer and the fault is raised when that instruction runs).
        if page_left < 15 + MAX_BLOCK_INSNS * 15 {
            let next_lin = lin.wrapping_add(page_left as u64);
            if let Ok(next) = self.translate(next_lin, AccessKind::Fetch, self.user()) {
                bytes.extend(self.fetch_bytes(next.phys, 15));
                pages[1] = (next.phys & !0xfff, 0);
                page_count = 2;
            }
        }
        for p in pages.iter_mut().take(page_count as usize) {
            p.1 = self.code.mark_code(p.0);
        }
        let mut decoder = Decoder::with_ip(bitness, &bytes, self.s.rip, DecoderOptions::NONE);
        let mut insns = Vec::with_capacity(16);
        let ip_mask = match bitness {
            64 => u64::MAX,
            32 => 0xffff_ffff,
            _ => 0xffff,
        };
        let mut rip = self.s.rip;
        let mut offset = 0usize;
        while decoder.can_decode() && insns.len() < MAX_BLOCK_INSNS {
            let insn = decoder.decode();
            let len = insn.len();
            if insn.is_invalid() && offset + 15 > bytes.len() && page_count == 1 {
                // Ran off the page into an unmapped one: fetch the next
                // page so the CPU raises the page fault at that address.
                if insns.is_empty() {
                    let next = lin.wrapping_add(page_left as u64);
                    self.translate(next, AccessKind::Fetch, self.user())?;
                }
                break;
            }
            let next_rip = rip.wrapping_add(len as u64) & ip_mask;
            let d = exec::fast::decode(&insn, bitness, rip, next_rip);
            let fused = bitness == 64
                && exec::fast::flow::is_fast_jcc(&insn, bitness)
                && insns
                    .last_mut()
                    .is_some_and(|p| exec::fast::fused::fuse(p, &insn, &d));
            if !fused {
                insns.push(d);
            }
            rip = next_rip;
            offset += len;
            let goes_on = match insn.flow_control() {
                FlowControl::Next => true,
                // Specialized Jcc's end the block when taken.
                FlowControl::ConditionalBranch => exec::fast::flow::is_fast_jcc(&insn, bitness),
                _ => false,
            };
            if !goes_on || offset >= page_left || insn.is_invalid() {
                break;
            }
        }
        Ok(Block {
            insns,
            pages,
            page_count,
            rip: self.s.rip,
            ip_mask,
            links: Default::default(),
        })
    }

    /// Copies up to `len` code bytes from physical `phys` (RAM/ROM only).
    ///
    /// Code is not fetched from MMIO or from addresses with nothing
    /// behind them: such a page reads as all ones, the value of a read
    /// nothing claims (PCI Local Bus 3.0 §3.3.3.1, master abort), and
    /// `FF FF` is no instruction (group 5 /7, SDM Vol. 2 Table A-6), so
    /// the CPU raises #UD there. (An empty block would run nothing and
    /// leave RIP where the last instruction run put it.)
    fn fetch_bytes(&self, phys: u64, len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        match self.machine.memory.read(phys, &mut out) {
            Ok(()) => out,
            Err(_) => {
                // The range may end early (RAM end): take what exists.
                let mut n = 0;
                while n < len
                    && self
                        .machine
                        .memory
                        .read(phys + n as u64, &mut out[n..n + 1])
                        .is_ok()
                {
                    n += 1;
                }
                if n == 0 {
                    return vec![0xff; len];
                }
                out.truncate(n);
                out
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use alcazar_core::engine::VcpuExit;
    use iced_x86::code_asm::*;

    use crate::cpu::reg;
    use crate::fault::Fault;
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
