//! Privilege: the checks that depend on the current privilege level (CPL)
//! and the I/O privilege level (RFLAGS.IOPL) (SDM Vol. 3A §5.5 "Privilege
//! levels", §5.9 "Privileged instructions", §20.2.7 "Sensitive
//! instructions" of virtual-8086 mode; Vol. 1 "I/O privilege level" and
//! "I/O permission bit map" in the chapter on input/output).
//!
//! CPL itself is [`crate::state::CpuState::cpl`]: the DPL of the code
//! segment loaded last (0 in real mode, 3 in virtual-8086 mode). The
//! checks of descriptor privilege (DPL against CPL and RPL) are made where
//! descriptors are loaded: data and stack segments in [`crate::segment`],
//! code segments and call gates by far transfers (`exec/system/far.rs`,
//! SDM Vol. 3A §5.8), interrupt gates in `interrupts/idt.rs`.

use crate::fault::Fault;
use crate::flags;
use crate::segment::sys;
use crate::Cpu;

/// #GP(0) unless the CPU runs at CPL 0 (any CPL is 0 in real mode).
pub(crate) fn require_cpl0(cpu: &Cpu) -> Result<(), Fault> {
    if cpu.s.cpl == 0 && !cpu.s.v86_mode() {
        Ok(())
    } else {
        Err(Fault::GeneralProtection(0))
    }
}

/// #GP(0) for SGDT, SIDT, SLDT, SMSW and STR at CPL > 0 when CR4.UMIP is
/// set (SDM Vol. 3A §2.5, "User-Mode Instruction Prevention").
pub(crate) fn check_umip(cpu: &Cpu) -> Result<(), Fault> {
    if cpu.s.cr4 & crate::state::cr4::UMIP != 0 && (cpu.s.cpl > 0 || cpu.s.v86_mode()) {
        Err(Fault::GeneralProtection(0))
    } else {
        Ok(())
    }
}

/// RFLAGS.IOPL.
pub(crate) fn iopl(cpu: &Cpu) -> u8 {
    ((cpu.s.flags.get() & flags::IOPL) >> 12) as u8
}

/// Whether CLI/STI/POPF may change IF: always in real mode, CPL <= IOPL in
/// protected mode, IOPL = 3 in virtual-8086 mode (no VME/PVI).
pub(crate) fn may_change_if(cpu: &Cpu) -> bool {
    if !cpu.s.protected_mode() {
        true
    } else if cpu.s.v86_mode() {
        iopl(cpu) == 3
    } else {
        cpu.s.cpl <= iopl(cpu)
    }
}

/// #GP(0) unless `size` bytes at `port` may be accessed at the current
/// privilege (IOPL, then the TSS I/O permission bitmap).
pub fn check_io(cpu: &mut Cpu, port: u16, size: u8) -> Result<(), Fault> {
    if !cpu.s.protected_mode() {
        return Ok(());
    }
    let iopl = ((cpu.s.flags.get() & flags::IOPL) >> 12) as u8;
    if !cpu.s.v86_mode() && cpu.s.cpl <= iopl {
        return Ok(());
    }
    let gp = Fault::GeneralProtection(0);
    let tr = cpu.s.tr;
    let limit = u64::from(tr.limit);
    if tr.unusable || !matches!(tr.type_, sys::TSS_AVAIL | sys::TSS_BUSY) || limit < 103 {
        return Err(gp);
    }
    let wide = cpu.s.long_mode();
    let lin = |off: u64| {
        let a = tr.base.wrapping_add(off);
        if wide {
            a
        } else {
            a & 0xffff_ffff
        }
    };
    let map_base = cpu.read_system(lin(102), 2)?;
    let off = map_base + u64::from(port / 8);
    if off + 1 > limit {
        return Err(gp);
    }
    let bits = cpu.read_system(lin(off), 2)?;
    let want = ((1u64 << size) - 1) << (port & 7);
    if bits & want != 0 {
        return Err(gp);
    }
    Ok(())
}
