//! The architectural state of one emulated CPU: [`CpuState`], the register
//! names, and the queries of the current mode (Intel SDM Vol. 1 §3.4
//! "Basic program execution registers", Vol. 3A §2.4-§2.6 for the
//! system registers, §9.1.1 for the power-on values).
//!
//! Register layout follows the SDM: sixteen 64-bit GPRs (index order RAX,
//! RCX, RDX, RBX, RSP, RBP, RSI, RDI, R8..R15, the encoding order), RIP,
//! RFLAGS (lazy, see [`crate::flags`]), six segment registers with their
//! hidden descriptor caches, the system table registers, control, debug
//! and model-specific registers.

use alcazar_core::regs::{DescriptorTable, Segment};

use crate::flags::Flags;

/// Segment register indices, in the encoding order of `mov Sreg`.
pub mod seg {
    /// ES.
    pub const ES: usize = 0;
    /// CS.
    pub const CS: usize = 1;
    /// SS.
    pub const SS: usize = 2;
    /// DS.
    pub const DS: usize = 3;
    /// FS.
    pub const FS: usize = 4;
    /// GS.
    pub const GS: usize = 5;
}

/// GPR indices.
pub mod reg {
    #![allow(missing_docs)]
    pub const RAX: usize = 0;
    pub const RCX: usize = 1;
    pub const RDX: usize = 2;
    pub const RBX: usize = 3;
    pub const RSP: usize = 4;
    pub const RBP: usize = 5;
    pub const RSI: usize = 6;
    pub const RDI: usize = 7;
}

/// CR0 bits (SDM Vol. 3A §2.5).
pub mod cr0 {
    #![allow(missing_docs)]
    pub const PE: u64 = 1 << 0;
    pub const MP: u64 = 1 << 1;
    pub const EM: u64 = 1 << 2;
    pub const TS: u64 = 1 << 3;
    pub const ET: u64 = 1 << 4;
    pub const NE: u64 = 1 << 5;
    pub const WP: u64 = 1 << 16;
    pub const AM: u64 = 1 << 18;
    pub const NW: u64 = 1 << 29;
    pub const CD: u64 = 1 << 30;
    pub const PG: u64 = 1 << 31;
}

/// CR4 bits (SDM Vol. 3A §2.5).
pub mod cr4 {
    #![allow(missing_docs)]
    pub const VME: u64 = 1 << 0;
    pub const PVI: u64 = 1 << 1;
    pub const TSD: u64 = 1 << 2;
    pub const DE: u64 = 1 << 3;
    pub const PSE: u64 = 1 << 4;
    pub const PAE: u64 = 1 << 5;
    pub const MCE: u64 = 1 << 6;
    pub const PGE: u64 = 1 << 7;
    pub const PCE: u64 = 1 << 8;
    pub const OSFXSR: u64 = 1 << 9;
    pub const OSXMMEXCPT: u64 = 1 << 10;
    pub const UMIP: u64 = 1 << 11;
    pub const FSGSBASE: u64 = 1 << 16;
    pub const PCIDE: u64 = 1 << 17;
    pub const OSXSAVE: u64 = 1 << 18;
    pub const SMEP: u64 = 1 << 20;
    pub const SMAP: u64 = 1 << 21;
}

/// EFER bits (SDM Vol. 3A §2.2.1).
pub mod efer {
    #![allow(missing_docs)]
    pub const SCE: u64 = 1 << 0;
    pub const LME: u64 = 1 << 8;
    pub const LMA: u64 = 1 << 10;
    pub const NXE: u64 = 1 << 11;
}

/// The model-specific registers the emu engine implements itself (the
/// rest go to the VM's MSR hooks, or fault).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Msrs {
    pub star: u64,
    pub lstar: u64,
    pub cstar: u64,
    pub sfmask: u64,
    pub kernel_gs_base: u64,
    pub sysenter_cs: u64,
    pub sysenter_esp: u64,
    pub sysenter_eip: u64,
    pub tsc_aux: u64,
    pub pat: u64,
    pub apic_base: u64,
    pub misc_enable: u64,
    pub tsc_offset: u64,
    pub tsc_adjust: u64,
    pub spec_ctrl: u64,
    pub mtrr_def_type: u64,
}

/// The code size the CPU decodes in, from CS and EFER.LMA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodeSize {
    /// Real mode, virtual-8086 or a 16-bit code segment.
    Bits16,
    /// A 32-bit code segment (protected or compatibility mode).
    Bits32,
    /// 64-bit mode.
    Bits64,
}

impl CodeSize {
    /// The bitness iced-x86 decodes with.
    pub fn bitness(self) -> u32 {
        match self {
            CodeSize::Bits16 => 16,
            CodeSize::Bits32 => 32,
            CodeSize::Bits64 => 64,
        }
    }
}

/// Everything architectural about one CPU.
#[derive(Clone, Debug)]
pub struct CpuState {
    /// RAX..R15 in encoding order.
    pub gpr: [u64; 16],
    /// Instruction pointer (an offset in CS).
    pub rip: u64,
    /// RFLAGS.
    pub flags: Flags,
    /// ES, CS, SS, DS, FS, GS with hidden parts.
    pub seg: [Segment; 6],
    /// LDTR.
    pub ldtr: Segment,
    /// TR.
    pub tr: Segment,
    /// GDTR.
    pub gdtr: DescriptorTable,
    /// IDTR.
    pub idtr: DescriptorTable,
    /// CR0.
    pub cr0: u64,
    /// CR2: the last page-fault address.
    pub cr2: u64,
    /// CR3: the paging root.
    pub cr3: u64,
    /// CR4.
    pub cr4: u64,
    /// CR8: task priority (mirrors the local APIC TPR).
    pub cr8: u64,
    /// EFER.
    pub efer: u64,
    /// XCR0.
    pub xcr0: u64,
    /// DR0-DR7 (DR4/5 alias DR6/7).
    pub dr: [u64; 8],
    /// Model-specific registers kept here.
    pub msr: Msrs,
    /// Current privilege level (CS.RPL in protected mode, 0 in real mode,
    /// 3 in virtual-8086 mode).
    pub cpl: u8,
    /// `hlt` executed; waiting for an interrupt.
    pub halted: bool,
    /// Interrupts are inhibited for one instruction (after `sti` or a load
    /// of SS): SDM Vol. 3A §6.8.3.
    pub interrupt_shadow: bool,
    /// x87, MMX and SSE state ([`crate::fpu`]).
    pub fpu: crate::fpu::FpuState,
    /// The wait-for-SIPI activity state after an INIT (SDM Vol. 3A
    /// §9.1.1); `halted` is set too, so the run loop sleeps.
    pub wait_for_sipi: bool,
}

impl Default for CpuState {
    /// The power-on state (SDM Vol. 3A §9.1.1, Table 9-1): real mode,
    /// CS.base = 0xffff0000, IP = 0xfff0.
    fn default() -> Self {
        let mut seg = [Segment::real_mode(0, false); 6];
        seg[seg::CS] = Segment {
            base: 0xffff_0000,
            selector: 0xf000,
            ..Segment::real_mode(0, true)
        };
        CpuState {
            gpr: [0; 16],
            rip: 0xfff0,
            flags: Flags::default(),
            seg,
            ldtr: Segment {
                type_: 2,
                present: true,
                limit: 0xffff,
                ..Default::default()
            },
            tr: Segment {
                type_: 3,
                present: true,
                limit: 0xffff,
                ..Default::default()
            },
            gdtr: DescriptorTable {
                base: 0,
                limit: 0xffff,
            },
            idtr: DescriptorTable {
                base: 0,
                limit: 0xffff,
            },
            cr0: cr0::ET | cr0::CD | cr0::NW,
            cr2: 0,
            cr3: 0,
            cr4: 0,
            cr8: 0,
            efer: 0,
            xcr0: 1,
            dr: [0, 0, 0, 0, 0, 0, 0xffff_0ff0, 0x400],
            msr: Msrs {
                pat: 0x0007_0406_0007_0406,
                apic_base: 0xfee0_0900,
                ..Default::default()
            },
            cpl: 0,
            halted: false,
            interrupt_shadow: false,
            fpu: crate::fpu::FpuState::default(),
            wait_for_sipi: false,
        }
    }
}

impl CpuState {
    /// Whether long mode is active (EFER.LMA).
    #[inline]
    pub fn long_mode(&self) -> bool {
        self.efer & efer::LMA != 0
    }

    /// Whether protected mode is on (CR0.PE).
    #[inline]
    pub fn protected_mode(&self) -> bool {
        self.cr0 & cr0::PE != 0
    }

    /// Whether the CPU is in virtual-8086 mode (RFLAGS.VM).
    #[inline]
    pub fn v86_mode(&self) -> bool {
        self.flags.test(crate::flags::VM)
    }

    /// The current code size.
    #[inline]
    pub fn code_size(&self) -> CodeSize {
        let cs = &self.seg[seg::CS];
        if self.long_mode() && cs.l {
            CodeSize::Bits64
        } else if self.protected_mode() && !self.v86_mode() && cs.db {
            CodeSize::Bits32
        } else {
            CodeSize::Bits16
        }
    }

    /// The stack's address size in bytes (8 in 64-bit mode, else SS.B).
    #[inline]
    pub fn stack_size(&self) -> u8 {
        match self.code_size() {
            CodeSize::Bits64 => 8,
            _ if self.seg[seg::SS].db && self.protected_mode() && !self.v86_mode() => 4,
            _ => 2,
        }
    }

    /// Reads a GPR as `size` bytes (1, 2, 4, 8; `high8` for AH..BH).
    #[inline]
    pub fn read_gpr(&self, index: usize, size: u8, high8: bool) -> u64 {
        let v = self.gpr[index & 15];
        match (size, high8) {
            (1, true) => (v >> 8) & 0xff,
            (1, false) => v & 0xff,
            (2, _) => v & 0xffff,
            (4, _) => v & 0xffff_ffff,
            _ => v,
        }
    }

    /// Writes a GPR with x86-64 semantics: 8- and 16-bit writes merge,
    /// 32-bit writes zero-extend, 64-bit writes replace.
    #[inline]
    pub fn write_gpr(&mut self, index: usize, size: u8, high8: bool, value: u64) {
        let r = &mut self.gpr[index & 15];
        *r = match (size, high8) {
            (1, true) => (*r & !0xff00) | ((value & 0xff) << 8),
            (1, false) => (*r & !0xff) | (value & 0xff),
            (2, _) => (*r & !0xffff) | (value & 0xffff),
            (4, _) => value & 0xffff_ffff,
            _ => value,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_register_writes_follow_x86_64_rules() {
        let mut c = CpuState::default();
        c.gpr[reg::RAX] = 0x1122_3344_5566_7788;
        c.write_gpr(reg::RAX, 1, true, 0xaa);
        assert_eq!(c.gpr[0], 0x1122_3344_5566_aa88);
        c.write_gpr(reg::RAX, 2, false, 0xbbcc);
        assert_eq!(c.gpr[0], 0x1122_3344_5566_bbcc);
        c.write_gpr(reg::RAX, 4, false, 0xdead_beef);
        assert_eq!(c.gpr[0], 0xdead_beef);
        assert_eq!(c.read_gpr(reg::RAX, 1, true), 0xbe);
    }

    #[test]
    fn power_on_state_is_real_mode_at_the_reset_vector() {
        let c = CpuState::default();
        assert_eq!(c.code_size(), CodeSize::Bits16);
        assert_eq!(c.seg[seg::CS].base + c.rip, 0xffff_fff0);
    }
}
