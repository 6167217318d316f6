//! The one helper ABI: translated code runs an instruction in the
//! interpreter (tier 0) through [`run_insn`].
//!
//! Translated code calls it (through the glue's thunk, which has stored
//! the mapped guest registers in the frame) for:
//!
//! * instructions it does not emit natively (system and rare ones, string
//!   instructions, x87/SSE, division...): the interpreter's handler runs
//!   with the architectural state exactly as the interpreter would have
//!   it, so its result is the reference by construction;
//! * the slow path of every inline memory access (a TLB miss, MMIO, a
//!   page-crossing or misaligned locked access, a store to a page with
//!   decoded code): the whole instruction runs in the interpreter, which
//!   walks the page tables, reaches devices, splits accesses, invalidates
//!   code and raises faults as it always does.
//!
//! The guest state moves through the frame: GPRs in [`Frame::gpr`], XMM
//! registers in [`Frame::xmm`], the
//! arithmetic flags as the image in [`Frame::flags`] (current at every
//! call site, see [`super::flags`]). The helper returns 0 to go on with
//! the next instruction, or 1 after setting the frame's exit fields: when
//! the instruction branched, asked to end the block (a store into code, a
//! mode change, an unfinished REP), must drop block links (it changed
//! something translated code assumes: see [`crate::exec::LinkEffect`]),
//! halted or stopped the CPU, or faulted (the fault waits in the
//! [`super::Jit`] for the run loop to deliver; RIP is the instruction's,
//! and its registers and flags are as of its start).

use super::frame::{flags_to_image, image_to_flags, Exit, Frame};
use crate::code::Decoded;
use crate::flags::ARITH;

/// Bits of the `info` word a call site passes.
pub mod info {
    /// Instructions the block retired before this one (bits 0-15).
    pub const DONE_SHIFT: u32 = 0;
    /// Instructions the whole block retires (bits 16-31).
    pub const TOTAL_SHIFT: u32 = 16;
    /// Always leave translated code after this instruction (bit 32).
    pub const ALWAYS_EXIT: u64 = 1 << 32;
    /// The instruction may use the XMM registers, which must move between
    /// the frame and the CPU state around it (bit 33).
    pub const XMM: u64 = 1 << 33;
}

/// Packs a call site's `info`.
pub fn site_info(done: u32, total: u32, always_exit: bool, xmm: bool) -> u64 {
    u64::from(done & 0xffff) << info::DONE_SHIFT
        | u64::from(total & 0xffff) << info::TOTAL_SHIFT
        | if always_exit { info::ALWAYS_EXIT } else { 0 }
        | if xmm { info::XMM } else { 0 }
}

/// Runs the instruction `d` in the interpreter for translated code.
///
/// # Safety
/// Called only by the glue's thunk: `frame` is the running vCPU's frame,
/// whose `cpu` points at its [`crate::Cpu`] (alive, and not otherwise
/// referenced while translated code runs: the run loop that entered it
/// only holds the raw pointers it passed); `d` points into a block the
/// translator keeps alive while the code calling this exists.
pub(super) unsafe extern "sysv64" fn run_insn(
    frame: *mut Frame,
    d: *const Decoded,
    info: u64,
) -> u64 {
    let done = ((info >> info::DONE_SHIFT) & 0xffff) as i64;
    let total = ((info >> info::TOTAL_SHIFT) & 0xffff) as i64;
    // SAFETY: see the function's contract. Frame fields are read through
    // the raw pointer before the CPU is borrowed and written after its
    // last use, so the two never overlap in time.
    let (gpr, image, cpu) = unsafe { ((*frame).gpr, (*frame).flags, (*frame).cpu) };
    let (xmm, ymm_hi) = if info & info::XMM != 0 {
        // SAFETY: as above (two 256-byte copies, only for SSE, AVX and
        // FPU instructions).
        unsafe { ((*frame).xmm, (*frame).ymm_hi) }
    } else {
        ([0; 16], [0; 16])
    };
    // SAFETY: as above.
    let (cpu, d) = unsafe { (&mut *cpu, &*d) };

    let sync_xmm = info & info::XMM != 0;
    cpu.s.gpr = gpr;
    if sync_xmm {
        cpu.s.fpu.xmm = xmm;
        cpu.s.fpu.ymm_hi = ymm_hi;
    }
    cpu.s.flags.set_arith(ARITH, image_to_flags(image));
    cpu.s.rip = d.rip;
    cpu.next_rip = d.next_rip;
    cpu.end_block = false;
    // The translated block counts retired instructions itself.
    let icount = cpu.icount;
    let result = (d.exec)(cpu, d);
    cpu.icount = icount;
    cpu.jit.stats.count_fallback(d.insn.mnemonic());

    let retired = 1 + i64::from(d.fused);
    let exit = match result {
        Err(fault) => {
            cpu.s.rip = d.rip;
            cpu.jit.fault = Some(fault);
            Some((d.rip, total - done))
        }
        Ok(()) => {
            let leave = info & info::ALWAYS_EXIT != 0
                || cpu.end_block
                || cpu.next_rip != d.next_rip
                || cpu.exit.is_some()
                || cpu.s.halted;
            cpu.end_block = false;
            leave.then_some((cpu.next_rip, total - done - retired))
        }
    };
    let (gpr, image, xmm, ymm_hi) = (
        cpu.s.gpr,
        flags_to_image(cpu.s.flags.get()),
        cpu.s.fpu.xmm,
        cpu.s.fpu.ymm_hi,
    );
    // The instruction may have changed RFLAGS.AC, CR4.SMAP or CPL.
    let smap_ac = u64::from(crate::mmu::ac_sets_in_use(&cpu.s));
    // SAFETY: the CPU borrow ends above; see the function's contract.
    unsafe {
        (*frame).gpr = gpr;
        (*frame).smap_ac = smap_ac;
        if sync_xmm {
            (*frame).xmm = xmm;
            (*frame).ymm_hi = ymm_hi;
        }
        (*frame).flags = image;
        match exit {
            Some((rip, unretired)) => {
                (*frame).exit_rip = rip;
                (*frame).exit_reason = Exit::Helper as u64;
                (*frame).budget += unretired;
                1
            }
            None => 0,
        }
    }
}
