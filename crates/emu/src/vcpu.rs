//! The emu vCPU as the rest of Alcazar sees it: the [`Vcpu`] trait over a
//! [`Cpu`] (Alcazar's glue, no SDM section; the register sets it moves
//! are those of [`crate::state`]).

use alcazar_core::engine::{EngineError, Vcpu, VcpuExit};
use alcazar_core::inspect::Tree;
use alcazar_core::regs::{Regs, SpecialRegs};

use crate::state::{reg, seg};
use crate::Cpu;

/// An emu vCPU.
pub struct EmuVcpu {
    cpu: Cpu,
}

impl EmuVcpu {
    pub(crate) fn new(cpu: Cpu) -> Self {
        EmuVcpu { cpu }
    }

    /// The CPU inside (tests).
    #[cfg(test)]
    pub(crate) fn cpu(&self) -> &Cpu {
        &self.cpu
    }
}

const GPR_ORDER: [usize; 16] = [
    reg::RAX,
    reg::RBX,
    reg::RCX,
    reg::RDX,
    reg::RSI,
    reg::RDI,
    reg::RSP,
    reg::RBP,
    8,
    9,
    10,
    11,
    12,
    13,
    14,
    15,
];

impl Vcpu for EmuVcpu {
    fn id(&self) -> u32 {
        self.cpu.id
    }

    fn regs(&self) -> Result<Regs, EngineError> {
        let g = |i: usize| self.cpu.s.gpr[GPR_ORDER[i]];
        Ok(Regs {
            rax: g(0),
            rbx: g(1),
            rcx: g(2),
            rdx: g(3),
            rsi: g(4),
            rdi: g(5),
            rsp: g(6),
            rbp: g(7),
            r8: g(8),
            r9: g(9),
            r10: g(10),
            r11: g(11),
            r12: g(12),
            r13: g(13),
            r14: g(14),
            r15: g(15),
            rip: self.cpu.s.rip,
            rflags: self.cpu.s.flags.get(),
        })
    }

    fn set_regs(&mut self, r: &Regs) -> Result<(), EngineError> {
        let values = [
            r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rsp, r.rbp, r.r8, r.r9, r.r10, r.r11,
            r.r12, r.r13, r.r14, r.r15,
        ];
        for (i, v) in values.into_iter().enumerate() {
            self.cpu.s.gpr[GPR_ORDER[i]] = v;
        }
        self.cpu.s.rip = r.rip;
        self.cpu.s.flags.set(r.rflags);
        Ok(())
    }

    fn sregs(&self) -> Result<SpecialRegs, EngineError> {
        let s = &self.cpu.s;
        Ok(SpecialRegs {
            cs: s.seg[seg::CS],
            ds: s.seg[seg::DS],
            es: s.seg[seg::ES],
            fs: s.seg[seg::FS],
            gs: s.seg[seg::GS],
            ss: s.seg[seg::SS],
            tr: s.tr,
            ldt: s.ldtr,
            gdt: s.gdtr,
            idt: s.idtr,
            cr0: s.cr0,
            cr2: s.cr2,
            cr3: s.cr3,
            cr4: s.cr4,
            cr8: s.cr8,
            efer: s.efer,
            apic_base: s.msr.apic_base,
        })
    }

    fn set_sregs(&mut self, r: &SpecialRegs) -> Result<(), EngineError> {
        let s = &mut self.cpu.s;
        s.seg[seg::CS] = r.cs;
        s.seg[seg::DS] = r.ds;
        s.seg[seg::ES] = r.es;
        s.seg[seg::FS] = r.fs;
        s.seg[seg::GS] = r.gs;
        s.seg[seg::SS] = r.ss;
        s.tr = r.tr;
        s.ldtr = r.ldt;
        s.gdtr = r.gdt;
        s.idtr = r.idt;
        s.cr0 = r.cr0;
        s.cr2 = r.cr2;
        s.cr3 = r.cr3;
        s.cr4 = r.cr4;
        s.cr8 = r.cr8;
        s.efer = r.efer;
        s.msr.apic_base = r.apic_base;
        s.cpl = if s.cr0 & crate::state::cr0::PE == 0 {
            0
        } else {
            r.cs.dpl.min(3)
        };
        if let Some(apic) = &self.cpu.apic {
            // A state load, not a WRMSR: no transition checks.
            let _ = apic.set_base(r.apic_base, false);
        }
        self.cpu.refresh_apic_page();
        self.cpu.mmu.flush_all();
        Ok(())
    }

    /// The register tree plus the local APIC, activity state, MSRs, debug
    /// and FPU registers, TLB and code cache ([`crate::inspect`]).
    fn inspect(&self) -> Tree {
        crate::inspect::inspect_cpu(
            &self.cpu,
            alcazar_core::regs::inspect_registers(self.regs(), self.sregs()),
        )
    }

    fn run(&mut self) -> Result<VcpuExit, EngineError> {
        Ok(self.cpu.run())
    }

    /// [`Cpu::reset`]: RESET in place (a wake from ACPI S3).
    fn reset(&mut self) -> Result<(), EngineError> {
        self.cpu.reset();
        Ok(())
    }

    fn set_wait_for_sipi(&mut self) -> Result<(), EngineError> {
        if self.cpu.enter_wait_for_sipi() {
            Ok(())
        } else {
            Err(EngineError::Unsupported(
                "INIT/SIPI on a vCPU without a local APIC",
            ))
        }
    }
}
