//! Operating modes (SDM Vol. 3A §2.2 "Modes of operation", §10.9 "Mode
//! switching", §10.8.5 "Initializing IA-32e mode"): what a write to CR0,
//! CR3, CR4 or IA32_EFER does to the mode, to paging and to the TLB.
//!
//! The CPU has four modes (IA-32e mode with two sub-modes), and the one it
//! is in follows from a few bits (the queries are `protected_mode`,
//! `v86_mode`, `long_mode` and `code_size` of [`crate::state::CpuState`]):
//!
//! | mode | CR0.PE | RFLAGS.VM | EFER.LMA | CS.L | CS.D |
//! | --- | --- | --- | --- | --- | --- |
//! | real-address | 0 | - | 0 | - | - |
//! | protected (16/32-bit) | 1 | 0 | 0 | - | 0/1 |
//! | virtual-8086 | 1 | 1 | 0 | - | - |
//! | IA-32e, compatibility | 1 | 0 | 1 | 0 | 0/1 |
//! | IA-32e, 64-bit | 1 | 0 | 1 | 1 | 0 |
//!
//! The transitions, and where each happens:
//!
//! * real -> protected: CR0.PE (MOV CR0, LMSW: `write_cr0`), then a far
//!   JMP loads a protected-mode CS (`exec/system/far.rs`);
//! * protected -> IA-32e: EFER.LME (`write_efer`) with CR4.PAE, then
//!   CR0.PG activates IA-32e mode and sets EFER.LMA (`write_cr0`); a far
//!   transfer to a CS with L = 1 enters 64-bit mode;
//! * IA-32e -> protected: clearing CR0.PG (from compatibility mode) clears
//!   EFER.LMA (`write_cr0`);
//! * into and out of virtual-8086 mode: IRET with VM = 1 in the popped
//!   RFLAGS (`exec/system/far.rs`), and an interrupt or exception taken in
//!   it (`interrupts/idt.rs`); task switches are not implemented;
//! * CPL, CS and SS change without reading a descriptor on SYSCALL/SYSRET
//!   and SYSENTER/SYSEXIT (`exec/system/syscall.rs`).
//!
//! TLB rules: a CR3 write drops non-global translations (with CR4.PCIDE
//! too, see `write_cr3`); a change of CR0.PG/WP/PE,
//! CR4.PGE/PAE/PSE/SMEP/SMAP or EFER.NXE, and clearing CR4.PCIDE, drop all
//! ([`crate::mmu`]).
//! Each such write ends the decoded block, and the instruction making it
//! drops the block links ([`crate::exec::LinkEffect`]).

use alcazar_core::cpuid::{CpuidPolicy, CpuidReg};

use crate::fault::Fault;
use crate::state::{cr0, cr4, efer, seg, CodeSize};
use crate::Cpu;

fn gp(code: u16) -> Fault {
    Fault::GeneralProtection(code)
}

/// Whether the CPU is in 64-bit mode.
pub(crate) fn in_64bit(cpu: &Cpu) -> bool {
    cpu.s.code_size() == CodeSize::Bits64
}

/// The CR0 bits that exist; writes to the others are ignored.
const CR0_BITS: u64 = cr0::PE
    | cr0::MP
    | cr0::EM
    | cr0::TS
    | cr0::ET
    | cr0::NE
    | cr0::WP
    | cr0::AM
    | cr0::NW
    | cr0::CD
    | cr0::PG;

/// Physical-address bits above the CPU's width.
const PHYS_RESERVED: u64 = !((1u64 << crate::mmu::PHYS_ADDR_BITS) - 1);

/// Writes control register `n` with the checks of SDM MOV CR.
pub(crate) fn write_cr(cpu: &mut Cpu, n: usize, v: u64) -> Result<(), Fault> {
    match n {
        0 => write_cr0(cpu, v)?,
        2 => cpu.s.cr2 = v,
        3 => write_cr3(cpu, v)?,
        4 => write_cr4(cpu, v)?,
        8 => {
            if v >> 4 != 0 {
                return Err(gp(0));
            }
            cpu.s.cr8 = v;
            if let Some(src) = cpu.irq.source() {
                src.set_tpr(v as u8);
            }
            // A lower priority may unmask a pending interrupt.
            cpu.irq.notify();
        }
        _ => return Err(Fault::InvalidOpcode),
    }
    // Paging or the mode may have changed under the decoded block.
    cpu.end_block = true;
    Ok(())
}

/// CR3 (SDM Vol. 3A §2.5, §4.10.4.1). In IA-32e mode bits above the
/// physical-address width are reserved, except that with CR4.PCIDE bit 63
/// of the source asks the CPU not to invalidate the TLB (it is never
/// stored), and bits 11:0 are the new PCID (§4.10.1).
///
/// The TLB is not tagged by PCID, so every load drops the non-global
/// translations, bit 63 or not: keeping them would let one address
/// space's translations serve another PCID's. That is allowed (a TLB may
/// drop any entry at any time, §4.10.4.4), and it makes every PCID rule
/// hold trivially: the TLB only ever holds translations for the current
/// PCID plus global ones. The cost is what a guest with PCIDs hoped to
/// save, which the emu engine never had.
fn write_cr3(cpu: &mut Cpu, v: u64) -> Result<(), Fault> {
    let v = if cpu.s.long_mode() {
        let v = if cpu.s.cr4 & cr4::PCIDE != 0 {
            v & !PCID_NO_FLUSH
        } else {
            v
        };
        if v & PHYS_RESERVED != 0 {
            return Err(gp(0));
        }
        v
    } else {
        v & 0xffff_ffff
    };
    cpu.s.cr3 = v;
    cpu.mmu.flush_non_global();
    Ok(())
}

/// Bit 63 of a MOV to CR3 with CR4.PCIDE: keep the PCID's translations.
const PCID_NO_FLUSH: u64 = 1 << 63;

/// CR0 (SDM Vol. 3A §2.5, §10.8.5): PG needs PE; NW needs CD; setting PG
/// with EFER.LME activates IA-32e mode (needs CR4.PAE and CS.L = 0);
/// clearing PG leaves it (not from 64-bit code, nor with CR4.PCIDE).
pub(crate) fn write_cr0(cpu: &mut Cpu, v: u64) -> Result<(), Fault> {
    if v >> 32 != 0 {
        return Err(gp(0));
    }
    let v = (v & CR0_BITS) | cr0::ET;
    if (v & cr0::PG != 0 && v & cr0::PE == 0) || (v & cr0::NW != 0 && v & cr0::CD == 0) {
        return Err(gp(0));
    }
    let old = cpu.s.cr0;
    let mut efer = cpu.s.efer;
    if v & cr0::PG != 0 && old & cr0::PG == 0 && efer & efer::LME != 0 {
        if cpu.s.cr4 & cr4::PAE == 0 || cpu.s.seg[seg::CS].l {
            return Err(gp(0));
        }
        efer |= efer::LMA;
    }
    if v & cr0::PG == 0 && old & cr0::PG != 0 && cpu.s.long_mode() {
        if in_64bit(cpu) || cpu.s.cr4 & cr4::PCIDE != 0 {
            return Err(gp(0));
        }
        efer &= !efer::LMA;
    }
    cpu.s.cr0 = v;
    cpu.s.efer = efer;
    if (old ^ v) & (cr0::PG | cr0::WP | cr0::PE) != 0 {
        cpu.mmu.flush_all();
    }
    if v & cr0::PE == 0 {
        cpu.s.cpl = 0;
    }
    Ok(())
}

/// CR4 (SDM Vol. 3A §2.5): only implemented features may be enabled (no
/// VME/PVI), and of those the ones CPUID offers may (OSXSAVE with XSAVE,
/// FSGSBASE, SMEP, SMAP, UMIP, PCIDE: a feature the VM's CPU model hides
/// is a reserved bit); PAE cannot be cleared in IA-32e mode; PCIDE can be
/// set only in IA-32e mode with CR3 bits 11:0 = 0 (§4.10.1). Changing PGE,
/// PAE, PSE, SMEP or SMAP (TLB entries hold permission decisions made
/// under them) or clearing PCIDE drops every translation.
fn write_cr4(cpu: &mut Cpu, v: u64) -> Result<(), Fault> {
    let mut allowed = cr4::TSD
        | cr4::DE
        | cr4::PSE
        | cr4::PAE
        | cr4::MCE
        | cr4::PGE
        | cr4::PCE
        | cr4::OSFXSR
        | cr4::OSXMMEXCPT;
    for (leaf, reg, bit, cr4_bit) in CR4_FEATURES {
        let r = CpuidPolicy::lookup(&cpu.cpuid, leaf, 0);
        let value = match reg {
            CpuidReg::Eax => r.eax,
            CpuidReg::Ebx => r.ebx,
            CpuidReg::Ecx => r.ecx,
            CpuidReg::Edx => r.edx,
        };
        if value & bit != 0 {
            allowed |= cr4_bit;
        }
    }
    // FSGSBASE only with CPUID.(EAX=7,ECX=0):EBX.FSGSBASE[bit 0].
    if alcazar_core::cpuid::CpuidPolicy::lookup(&cpu.cpuid, 7, 0).ebx & 1 != 0 {
        allowed |= cr4::FSGSBASE;
    }
    if v & !allowed != 0 || (cpu.s.long_mode() && v & cr4::PAE == 0) {
        return Err(gp(0));
    }
    let old = cpu.s.cr4;
    if v & !old & cr4::PCIDE != 0 && (!cpu.s.long_mode() || cpu.s.cr3 & 0xfff != 0) {
        return Err(gp(0));
    }
    cpu.s.cr4 = v;
    let flushing = cr4::PGE | cr4::PAE | cr4::PSE | cr4::SMEP | cr4::SMAP;
    if (old ^ v) & flushing != 0 || old & !v & cr4::PCIDE != 0 {
        cpu.mmu.flush_all();
    }
    Ok(())
}

/// The CR4 bits that exist only when CPUID offers their feature: leaf
/// (subleaf 0), register, bit, and the CR4 bit.
const CR4_FEATURES: [(u32, CpuidReg, u32, u64); 5] = [
    (1, CpuidReg::Ecx, 1 << 26, cr4::OSXSAVE),
    (1, CpuidReg::Ecx, 1 << 17, cr4::PCIDE),
    (7, CpuidReg::Ebx, 1 << 7, cr4::SMEP),
    (7, CpuidReg::Ebx, 1 << 20, cr4::SMAP),
    (7, CpuidReg::Ecx, 1 << 2, cr4::UMIP),
];

/// IA32_EFER: SCE, LME and NXE are writable; LMA is read-only; changing
/// LME while paging is on is #GP(0) (SDM Vol. 3A §10.8.5).
pub(crate) fn write_efer(cpu: &mut Cpu, value: u64) -> Result<(), Fault> {
    let writable = efer::SCE | efer::LME | efer::NXE;
    if value & !(writable | efer::LMA) != 0 {
        return Err(gp(0));
    }
    let old = cpu.s.efer;
    if (old ^ value) & efer::LME != 0 && cpu.s.cr0 & cr0::PG != 0 {
        return Err(gp(0));
    }
    cpu.s.efer = (value & writable) | (old & efer::LMA);
    if (old ^ value) & efer::NXE != 0 {
        cpu.mmu.flush_all();
    }
    Ok(())
}
