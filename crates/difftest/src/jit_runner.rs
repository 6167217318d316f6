//! Runs a program on the emu engine's translator (tier 1), as the
//! oracle's machine runs it: whole blocks, translated on their first run,
//! exceptions delivered through the IDT to the system image's ring-0
//! stubs, and the run ended by the `out` that KVM exits on.
//!
//! The interpreter's single-stepped run ([`EmuRunner`]) of the same case
//! comes first: it supplies the analysis (undefined flags, tainted
//! registers) that says what to compare, which the translator, running
//! whole blocks, cannot give per instruction.
//!
//! How a run ends, as under KVM: the final `out 0xf0` or an exception
//! stub's `out 0x80+vector` reaches a port device here, which asks the
//! vCPU to leave its run loop (the pause request, which translated code
//! polls at block entry). After the final `out` the code page holds
//! `jmp $`, so the translator spins in place until it sees the request; a
//! stub halts. The state is then read as the KVM runner reads it: the
//! registers, and for an exception the frame the CPU pushed on the ring-0
//! stack and the CR2 the page-fault stub saved.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};

use alcazar_core::memory::{GuestMemory, MemoryMap};
use alcazar_core::{BusDevice, IoSpace, Machine, VmControl};
use alcazar_emu::code::CodePages;
use alcazar_emu::{Cpu, EmuTier};

use crate::emu_runner::{save_fpu, user_state, EmuRun, EmuRunner};
use crate::layout::{self, Chunk};
use crate::state::{has_error_code, Ending, FinalState, InitState, Program, RSP};
use crate::Error;

/// Run-loop slices (64 block steps each) before a run counts as hung.
const MAX_SLICES: usize = 4000;

/// The ports the system image's code writes to end a run: the final
/// `out` and the exception stubs. A write records the port and asks the
/// vCPU to leave its run loop.
struct EndPorts {
    control: Arc<VmControl>,
    port: Arc<Mutex<Option<u16>>>,
    base: u16,
}

impl BusDevice for EndPorts {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0xff);
    }

    fn write(&mut self, offset: u64, _data: &[u8]) {
        let mut port = self.port.lock().unwrap_or_else(|p| p.into_inner());
        if port.is_none() {
            *port = Some(self.base + offset as u16);
            self.control.request_pause();
        }
    }
}

/// The translator's side.
pub struct JitRunner {
    reference: EmuRunner,
    machine: Arc<Machine>,
    cpu: Cpu,
    port: Arc<Mutex<Option<u16>>>,
    alignment_checks: bool,
    /// Instructions retired inside translated code over all runs.
    translated: u64,
    /// Instructions retired over all runs, both tiers.
    retired: u64,
}

impl std::fmt::Debug for JitRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JitRunner").finish_non_exhaustive()
    }
}

impl JitRunner {
    /// Builds the machine (the system image, the end ports) and a CPU on
    /// the translator, translating every block on its first run. `None`
    /// if this host cannot run translated code.
    pub fn new() -> Result<Option<Self>, Error> {
        if !EmuTier::jit_supported() {
            return Ok(None);
        }
        let memory = GuestMemory::new(MemoryMap::pc(layout::MEM_SIZE)?)?;
        for Chunk { addr, bytes } in layout::system_image()? {
            memory.write(addr, &bytes)?;
        }
        let machine = Arc::new(Machine::new(memory, 1));
        let port = Arc::new(Mutex::new(None));
        for (base, len) in [
            (layout::VECTOR_PORT_BASE, layout::VECTORS as u16),
            (layout::DONE_PORT, 1),
        ] {
            let dev = EndPorts {
                control: machine.control.clone(),
                port: port.clone(),
                base,
            };
            machine
                .bus
                .insert(
                    IoSpace::Port,
                    u64::from(base),
                    u64::from(len),
                    "end",
                    Arc::new(Mutex::new(dev)),
                )
                .map_err(|e| Error::Layout(e.to_string()))?;
        }
        let cpu = Self::fresh_cpu(&machine);
        Ok(Some(JitRunner {
            reference: EmuRunner::new()?,
            machine,
            cpu,
            port,
            alignment_checks: true,
            translated: 0,
            retired: 0,
        }))
    }

    fn fresh_cpu(machine: &Arc<Machine>) -> Cpu {
        let mut cpu = Cpu::new(
            0,
            machine.clone(),
            Arc::new(CodePages::new(layout::MEM_SIZE)),
        );
        cpu.jit.config.threshold = 0;
        cpu.set_tier(EmuTier::Jit);
        cpu
    }

    /// Whether misaligned user accesses with RFLAGS.AC = 1 raise #AC (see
    /// [`EmuRunner::set_alignment_checks`]).
    pub fn set_alignment_checks(&mut self, on: bool) {
        self.alignment_checks = on;
        self.reference.set_alignment_checks(on);
    }

    /// Instructions retired inside translated code, and in all, over every
    /// run so far: a test checks that the translator, not the interpreter
    /// it falls back to, did the work.
    pub fn instructions(&self) -> (u64, u64) {
        (self.translated, self.retired)
    }

    /// Runs `prog` from `init` on the translator (after the interpreter,
    /// for the analysis).
    pub fn run(&mut self, prog: &Program, init: &InitState) -> Result<EmuRun, Error> {
        let reference = self.reference.run(prog, init)?;
        self.load(prog, init)?;
        let cpu = &mut self.cpu;
        let translated_before = cpu.jit.stats.instructions;
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            for _ in 0..MAX_SLICES {
                if cpu.run_slice(64).is_some() {
                    return true;
                }
            }
            false
        }));
        self.translated += self
            .cpu
            .jit
            .stats
            .instructions
            .saturating_sub(translated_before);
        self.retired += self.cpu.icount;
        let port = self.port.lock().unwrap_or_else(|p| p.into_inner()).take();
        self.machine.control.clear_pause();
        let state = match (outcome, port) {
            (Ok(_), Some(port)) => self.read_state(prog, port)?,
            (Ok(_), None) => self.stopped_as(Ending::StepLimit, None)?,
            (Err(p), _) => {
                let text = p
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "panic".into());
                let state = self.stopped_as(Ending::Panic, Some(text))?;
                self.cpu = Self::fresh_cpu(&self.machine);
                state
            }
        };
        Ok(EmuRun {
            state,
            tracker: reference.tracker,
        })
    }

    /// Loads the user pages ([`layout::code_image`]) and the
    /// CPL-3 start state; forgets the last case's translations.
    fn load(&mut self, prog: &Program, init: &InitState) -> Result<(), Error> {
        let code = layout::code_image(prog);
        let mem = &self.machine.memory;
        mem.write(layout::CODE, &code)?;
        mem.write(layout::DATA, &init.data)?;
        mem.write(layout::STACK, &init.stack)?;
        // The stubs' stack and the page-fault stub's CR2 slot start clean.
        mem.write(layout::KDATA, &[0u8; 8])?;
        self.cpu.code.note_write(layout::CODE);
        self.cpu.mmu.flush_all();
        self.cpu.s = user_state(init, self.alignment_checks);
        self.cpu.exit = None;
        self.cpu.end_block = false;
        self.cpu.icount = 0;
        self.machine.control.clear_pause();
        Ok(())
    }

    /// The state after the `out` to `port`, as the KVM runner reads it.
    fn read_state(&self, prog: &Program, port: u16) -> Result<FinalState, Error> {
        let s = &self.cpu.s;
        let mut gpr = s.gpr;
        let mem = &self.machine.memory;
        let read_u64 = |addr: u64| -> Result<u64, Error> {
            let mut b = [0u8; 8];
            mem.read(addr, &mut b)?;
            Ok(u64::from_le_bytes(b))
        };
        let (rip, rflags, ending) = if port == layout::DONE_PORT {
            (prog.end_rip, s.flags.get(), Ending::Done)
        } else {
            let vector = port
                .checked_sub(layout::VECTOR_PORT_BASE)
                .filter(|v| u64::from(*v) < layout::VECTORS)
                .ok_or(Error::UnexpectedExit(format!("out to port {port:#x}")))?
                as u8;
            let rsp = s.gpr[RSP];
            let mut frame = rsp;
            let error_code = if has_error_code(vector) {
                frame += 8;
                Some(read_u64(rsp)? as u32)
            } else {
                None
            };
            let cr2 = if vector == 14 {
                Some(read_u64(layout::CR2_SLOT)?)
            } else {
                None
            };
            gpr[RSP] = read_u64(frame + 24)?;
            let ending = Ending::Exception {
                vector,
                error_code,
                cr2,
            };
            (read_u64(frame)?, read_u64(frame + 16)?, ending)
        };
        self.final_state(gpr, rip, rflags, ending, None)
    }

    /// The state of a run that did not end at a port.
    fn stopped_as(&self, ending: Ending, note: Option<String>) -> Result<FinalState, Error> {
        let s = &self.cpu.s;
        self.final_state(s.gpr, s.rip, s.flags.get(), ending, note)
    }

    fn final_state(
        &self,
        gpr: [u64; 16],
        rip: u64,
        rflags: u64,
        ending: Ending,
        note: Option<String>,
    ) -> Result<FinalState, Error> {
        let mut data = vec![0; layout::DATA_SIZE as usize];
        self.machine.memory.read(layout::DATA, &mut data)?;
        let mut stack = vec![0; layout::STACK_SIZE as usize];
        self.machine.memory.read(layout::STACK, &mut stack)?;
        Ok(FinalState {
            gpr,
            rip,
            rflags,
            ending,
            data,
            stack,
            retired: self.cpu.icount,
            note,
            fpu: save_fpu(&self.cpu.s.fpu),
        })
    }
}
