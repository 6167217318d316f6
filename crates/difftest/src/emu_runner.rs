//! Runs a program on the emu engine, one instruction at a time.
//!
//! The machine and the [`Cpu`] are built once; before each run the user
//! pages are rewritten, the decoded-block cache and the TLB dropped, and
//! the architectural state set to the same CPL-3 state the KVM runner
//! uses. The run stops when RIP reaches the final `out` (which is not
//! executed), when an instruction returns a fault (not delivered: its
//! vector is the result), after a step limit, or if the engine panics.
//! Every instruction is shown to an [`crate::analysis::Tracker`] before it runs.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use alcazar_core::memory::{GuestMemory, MemoryMap};
use alcazar_core::regs::{DescriptorTable, Segment};
use alcazar_core::Machine;
use alcazar_emu::code::{BlockCache, CodePages};
use alcazar_emu::cpu::{seg, CpuState};
use alcazar_emu::fault::Fault;
use alcazar_emu::Cpu;
use iced_x86::{Decoder, DecoderOptions, Instruction};

use crate::analysis::Tracker;
use crate::kvm_runner::FORCED_FLAGS;
use crate::layout::{self, Chunk};
use crate::state::{Ending, FinalState, FpuRegs, InitState, Program, RSP};
use crate::Error;
use alcazar_emu::fpu::FpuState;

/// Instructions the emu engine may run before the run counts as hung
/// (REP iterations may count one by one).
pub const MAX_STEPS: usize = 100_000;

/// The emu side.
pub struct EmuRunner {
    machine: Arc<Machine>,
    cpu: Cpu,
    alignment_checks: bool,
}

impl std::fmt::Debug for EmuRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmuRunner").finish_non_exhaustive()
    }
}

/// The result of an emu run: the final state and what the tracker found.
#[derive(Debug)]
pub struct EmuRun {
    /// The final state.
    pub state: FinalState,
    /// Undefined flags and registers, and whether the case is
    /// indeterminate.
    pub tracker: Tracker,
}

/// A flat 4 GiB user segment.
fn user_segment(selector: u16, code: bool) -> Segment {
    Segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_: if code { 0xb } else { 0x3 },
        present: true,
        dpl: 3,
        db: !code,
        s: true,
        l: code,
        g: true,
        avl: false,
        unusable: false,
    }
}

/// The CPL-3 state a run starts in (the same as the KVM runner's), with
/// CR0.AM as the oracle showed it behaves (`alignment_checks`).
pub fn user_state(init: &InitState, alignment_checks: bool) -> CpuState {
    let am = 1 << 18;
    let mut s = CpuState {
        gpr: init.gpr,
        rip: layout::CODE,
        cpl: 3,
        cr0: if alignment_checks {
            layout::CR0 | am
        } else {
            layout::CR0 & !am
        },
        cr3: layout::PML4,
        cr4: layout::CR4,
        xcr0: layout::XCR0,
        efer: layout::EFER,
        ..CpuState::default()
    };
    s.gpr[RSP] = layout::STACK_INIT;
    s.flags.set(init.rflags | FORCED_FLAGS);
    load_fpu(&mut s.fpu, &init.fpu);
    s.seg[seg::CS] = user_segment(layout::USER_CS, true);
    for i in [seg::DS, seg::ES, seg::SS, seg::FS, seg::GS] {
        s.seg[i] = user_segment(layout::USER_DS, false);
    }
    s.tr = Segment {
        base: layout::TSS,
        limit: layout::TSS_LIMIT,
        selector: layout::TSS_SEL,
        type_: 0xb,
        present: true,
        ..Segment::default()
    };
    s.ldtr = Segment {
        type_: 2,
        unusable: true,
        ..Segment::default()
    };
    s.gdtr = DescriptorTable {
        base: layout::GDT,
        limit: layout::GDT_LIMIT,
    };
    s.idtr = DescriptorTable {
        base: layout::IDT,
        limit: layout::IDT_LIMIT,
    };
    s
}

/// Loads the emu engine's x87/SSE state from `f`, as FXRSTOR would.
pub fn load_fpu(d: &mut FpuState, f: &FpuRegs) {
    d.fcw = f.fcw;
    d.fsw = f.fsw;
    d.mxcsr = f.mxcsr;
    d.xmm = f.xmm;
    d.ymm_hi = f.ymm_hi;
    let top = d.top();
    for (i, v) in f.st.iter().enumerate() {
        d.st[(top + i) & 7] = v & ((1u128 << 80) - 1);
    }
    d.set_abridged_tag(f.ftw);
}

/// The FXSAVE view of the emu engine's x87/SSE state.
pub fn save_fpu(s: &FpuState) -> FpuRegs {
    let mut st = [0u128; 8];
    for (i, v) in st.iter_mut().enumerate() {
        *v = s.st(i);
    }
    FpuRegs {
        fcw: s.fcw,
        fsw: s.fsw,
        ftw: s.abridged_tag(),
        st,
        xmm: s.xmm,
        ymm_hi: s.ymm_hi,
        mxcsr: s.mxcsr,
    }
}

/// The text of a panic payload.
fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic".to_string()
    }
}

impl EmuRunner {
    /// Builds the machine (2 MiB of RAM with the system image) and a CPU.
    pub fn new() -> Result<Self, Error> {
        let memory = GuestMemory::new(MemoryMap::pc(layout::MEM_SIZE)?)?;
        for Chunk { addr, bytes } in layout::system_image()? {
            memory.write(addr, &bytes)?;
        }
        let machine = Arc::new(Machine::new(memory, 1));
        let cpu = Self::fresh_cpu(&machine);
        Ok(EmuRunner {
            machine,
            cpu,
            alignment_checks: true,
        })
    }

    /// Whether misaligned user accesses with RFLAGS.AC = 1 raise #AC
    /// (CR0.AM), as [`crate::host::HostFacts::alignment_checks`] measured
    /// on the oracle. On by default.
    pub fn set_alignment_checks(&mut self, on: bool) {
        self.alignment_checks = on;
    }

    fn fresh_cpu(machine: &Arc<Machine>) -> Cpu {
        Cpu::new(
            0,
            machine.clone(),
            Arc::new(CodePages::new(layout::MEM_SIZE)),
        )
    }

    fn load(&mut self, prog: &Program, init: &InitState) -> Result<(), Error> {
        let code = layout::code_image(prog);
        let mem = &self.machine.memory;
        mem.write(layout::CODE, &code)?;
        mem.write(layout::DATA, &init.data)?;
        mem.write(layout::STACK, &init.stack)?;
        self.cpu.code.note_write(layout::CODE);
        self.cpu.cache = BlockCache::default();
        self.cpu.mmu.flush_all();
        self.cpu.s = user_state(init, self.alignment_checks);
        self.cpu.exit = None;
        self.cpu.end_block = false;
        self.cpu.icount = 0;
        Ok(())
    }

    /// The instruction at `rip`: from the program, or decoded from the
    /// code page if execution went somewhere unexpected.
    fn insn_at(prog: &Program, rip: u64) -> Option<Instruction> {
        if let Some(i) = prog.insn_at(rip) {
            return Some(*i);
        }
        let off = rip.checked_sub(layout::CODE)? as usize;
        let bytes = prog.bytes.get(off..)?;
        let mut d = Decoder::with_ip(64, bytes, rip, DecoderOptions::NONE);
        d.can_decode().then(|| d.decode())
    }

    /// Runs `prog` from `init`.
    pub fn run(&mut self, prog: &Program, init: &InitState) -> Result<EmuRun, Error> {
        self.load(prog, init)?;
        let mut tracker = Tracker::new();
        let machine = self.machine.clone();
        let cpu = &mut self.cpu;
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            for _ in 0..MAX_STEPS {
                if cpu.s.rip == prog.end_rip {
                    return Ok(());
                }
                let pending = Self::insn_at(prog, cpu.s.rip).map(|insn| {
                    tracker.before(&insn, &cpu.s.gpr, |addr, size| {
                        let mut buf = [0u8; 8];
                        let size = size.min(8);
                        machine.memory.read(addr, &mut buf[..size]).ok()?;
                        Some(u64::from_le_bytes(buf))
                    })
                });
                cpu.run_block(1).map_err(Some)?;
                if let Some(p) = pending {
                    tracker.retire(p);
                }
            }
            Err(None)
        }));
        let (ending, note) = match outcome {
            Ok(Ok(())) => (Ending::Done, None),
            Ok(Err(Some(f))) => (fault_ending(f), None),
            Ok(Err(None)) => (Ending::StepLimit, None),
            Err(p) => {
                let text = panic_text(p.as_ref());
                self.cpu = Self::fresh_cpu(&self.machine);
                self.cpu.s = user_state(init, self.alignment_checks);
                (Ending::Panic, Some(text))
            }
        };
        let s = &self.cpu.s;
        let mut data = vec![0; layout::DATA_SIZE as usize];
        self.machine.memory.read(layout::DATA, &mut data)?;
        let mut stack = vec![0; layout::STACK_SIZE as usize];
        self.machine.memory.read(layout::STACK, &mut stack)?;
        Ok(EmuRun {
            state: FinalState {
                gpr: s.gpr,
                rip: s.rip,
                rflags: s.flags.get(),
                ending,
                data,
                stack,
                retired: self.cpu.icount,
                note,
                fpu: save_fpu(&s.fpu),
            },
            tracker,
        })
    }
}

/// The ending for a fault returned by an instruction.
fn fault_ending(f: Fault) -> Ending {
    Ending::Exception {
        vector: f.vector(),
        error_code: f.error_code(),
        cr2: match f {
            Fault::PageFault { addr, .. } => Some(addr),
            _ => None,
        },
    }
}
