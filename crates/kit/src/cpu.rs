//! Emitters for CPU setup steps several programs share: segment reloads,
//! per-vCPU stacks and GDTs.

use iced_x86::code_asm::*;

use crate::arch::{gdtr, pseudo_descriptor64};
use crate::image::{addr32, Asm, DataArea};
use crate::KitError;

/// Top of vCPU 0's stack; vCPU *i* uses `STACK_TOP - i * STACK_STRIDE`.
pub(crate) const STACK_TOP: u32 = 0x9f000;
/// log2 of the stack bytes each vCPU gets (4 KiB).
pub(crate) const STACK_STRIDE_SHIFT: u32 = 12;

/// Loads DS, ES, FS, GS and SS with `selector`. A segment register cannot be
/// loaded from an immediate, hence the trip through AX. Loading a selector
/// makes the CPU read its descriptor from the current GDT into the hidden
/// part of the register (SDM 3.4.3), which is what proves a new GDT works.
pub(crate) fn load_data_segments(a: &mut CodeAssembler, selector: u32) -> Asm {
    a.mov(ax, selector)?;
    a.mov(ds, ax)?;
    a.mov(es, ax)?;
    a.mov(fs, ax)?;
    a.mov(gs, ax)?;
    a.mov(ss, ax)?;
    Ok(())
}

/// Points the stack pointer at this vCPU's stack top,
/// `STACK_TOP - EDI * 0x1000`, instead of trusting the VMM to have set it.
/// Clobbers EAX/RAX. 32- and 64-bit code only.
pub(crate) fn set_stack(a: &mut CodeAssembler) -> Asm {
    a.mov(eax, edi)?;
    a.shl(eax, STACK_STRIDE_SHIFT)?;
    // Writing a 32-bit register zero-extends into the 64-bit one, so this
    // pair also sets RSP/RAX correctly in 64-bit mode.
    a.mov(esp, STACK_TOP)?;
    if a.bitness() == 64 {
        a.sub(rsp, rax)?;
    } else {
        a.sub(esp, eax)?;
    }
    Ok(())
}

/// Appends a GDT with `entries` and the pseudo-descriptor pointing at it to
/// `data`, for an image loaded at `load`. Returns the pseudo-descriptor's
/// image offset (the operand of `lgdt`).
pub(crate) fn push_gdt(data: &mut DataArea, load: u64, entries: &[u64]) -> Result<usize, KitError> {
    // The GDT base should be 8-byte aligned for best performance (SDM 3.5.1);
    // push_qwords aligns it.
    let table = data.push_qwords(entries);
    let base = addr32("GDT base", load + table as u64)?;
    data.align(2);
    Ok(data.push_bytes(&gdtr(base, entries.len())))
}

/// Like [`push_gdt`], for code that runs `lgdt` in 64-bit mode, where the
/// pseudo-descriptor holds a 64-bit base (10 bytes; SDM 3.5.1). Returns the
/// pseudo-descriptor's image offset.
pub(crate) fn push_gdt64(data: &mut DataArea, load: u64, entries: &[u64]) -> usize {
    let table = data.push_qwords(entries);
    data.align(2);
    data.push_bytes(&pseudo_descriptor64(load + table as u64, entries.len() * 8))
}

/// Activates IA-32e mode from 32-bit protected mode with paging off
/// (SDM Vol. 3A 10.8.5, "Initializing IA-32e FlatMode"), using the 4-level
/// tables whose PML4 is at `pml4`. Afterwards the CPU is in compatibility
/// mode; a far jump to a code segment with L=1 enters 64-bit mode.
/// Clobbers EAX, ECX, EDX.
pub(crate) fn enable_ia32e(a: &mut CodeAssembler, pml4: u32) -> Asm {
    use crate::arch::{CR0_PG, CR4_PAE, EFER_LME, MSR_EFER};
    // 1. CR4.PAE: 4-level paging needs 64-bit table entries.
    a.mov(eax, cr4)?;
    a.or(eax, CR4_PAE)?;
    a.mov(cr4, eax)?;
    // 2. CR3 = physical address of the PML4.
    a.mov(eax, pml4)?;
    a.mov(cr3, eax)?;
    // 3. IA32_EFER.LME = 1 (read-modify-write: EDX:EAX <-> MSR[ECX]).
    a.mov(ecx, MSR_EFER)?;
    a.rdmsr()?;
    a.or(eax, EFER_LME)?;
    a.wrmsr()?;
    // 4. CR0.PG = 1 activates IA-32e mode (EFER.LMA becomes 1).
    a.mov(eax, cr0)?;
    a.or(eax, CR0_PG)?;
    a.mov(cr0, eax)?;
    Ok(())
}
