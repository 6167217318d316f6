//! System instructions (Intel SDM Vol. 2 for each instruction, Vol. 3A
//! for the system architecture they touch).
//!
//! This module decides which handler runs (and declares each one's
//! [`super::LinkEffect`]) and implements the small ones: CPUID,
//! RDTSC/RDTSCP/RDPID, RDMSR/WRMSR, HLT, CLI/STI, STAC/CLAC and PUSHF/POPF with their
//! IOPL rules (Vol. 1 §3.4.3, Vol. 3A §20.2.7; the checks are in
//! [`crate::privilege`]), SWAPGS, XGETBV/XSETBV, VMCALL/VMMCALL as Alcazar
//! hypercalls, the cache and fence instructions (no-ops or host fences:
//! the emu engine has no caches), UD0/UD1/UD2. The submodules hold the
//! rest:
//!
//! * `far.rs`: MOV/PUSH/POP Sreg, LDS..LSS, far JMP/CALL (with call
//!   gates), RETF, IRET;
//! * `control.rs`: MOV to/from control and debug registers, LMSW, SMSW,
//!   CLTS, INVLPG, INVPCID (their effect on the mode and paging is in
//!   [`crate::modes`]);
//! * `tables.rs`: LGDT/LIDT/SGDT/SIDT, LLDT/SLDT/LTR/STR,
//!   LAR/LSL/VERR/VERW, ARPL;
//! * `software_int.rs`: INT n, INT3, INTO, INT1;
//! * `syscall.rs`: SYSCALL/SYSRET, SYSENTER/SYSEXIT.
//!
//! Debug registers are stored but breakpoints do not fire; task switches
//! (task gates, far transfers to a TSS) raise #GP and are logged.

mod control;
mod far;
mod software_int;
mod syscall;
mod tables;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_cr4;

use alcazar_core::engine::ExitKind;
use alcazar_core::hooks::{HypercallArgs, HYPERCALL_UNKNOWN};
use iced_x86::{Code, Instruction, Mnemonic, OpKind};

use super::operand::{pop, push, stack_op_size, write_reg};
use super::HandlerEntry;
use super::LinkEffect::{DropsLinks, KeepsLinks};
use crate::fault::Fault;
use crate::flags::{self, Flags};
use crate::modes::in_64bit;
use crate::privilege::{iopl, may_change_if, require_cpl0};
use crate::state::{cr4, reg, seg};
use crate::Cpu;

pub use crate::cpuid::cpuid_table;

/// The handler for `insn`, if this module implements it, with its effect
/// on block links.
///
/// Most system instructions can change CS, the mode, CPL, paging or IF.
/// The few that cannot (CPUID, RDTSC, SGDT, the fences) are rare, and are
/// declared [`DropsLinks`] too: the conservative choice. STAC and CLAC
/// only change RFLAGS.AC, which is run often (around every copy to or from
/// user memory) and changes nothing links rely on: [`KeepsLinks`].
pub fn lookup(insn: &Instruction) -> Option<HandlerEntry> {
    use Mnemonic as M;
    Some(match insn.mnemonic() {
        M::Mov if is_sreg_mov(insn) => (far::mov_sreg, DropsLinks),
        M::Mov if is_cr_mov(insn) => (control::mov_cr, DropsLinks),
        M::Mov if is_dr_mov(insn) => (control::mov_dr, DropsLinks),
        M::Push if is_sreg_op(insn) => (far::push_sreg, DropsLinks),
        M::Pop if is_sreg_op(insn) => (far::pop_sreg, DropsLinks),
        M::Lds | M::Les | M::Lfs | M::Lgs | M::Lss => (far::load_far_pointer, DropsLinks),
        M::Jmp if is_far(insn) => (far::jmp_far, DropsLinks),
        M::Call if is_far(insn) => (far::call_far, DropsLinks),
        M::Retf => (far::retf, DropsLinks),
        M::Iret | M::Iretd | M::Iretq => (far::iret, DropsLinks),
        M::Int => (software_int::int_n, DropsLinks),
        M::Int3 => (software_int::int3, DropsLinks),
        M::Into => (software_int::into, DropsLinks),
        M::Int1 => (software_int::int1, DropsLinks),
        M::Syscall => (syscall::syscall, DropsLinks),
        M::Sysret | M::Sysretq => (syscall::sysret, DropsLinks),
        M::Sysenter => (syscall::sysenter, DropsLinks),
        M::Sysexit | M::Sysexitq => (syscall::sysexit, DropsLinks),
        M::Lgdt | M::Lidt => (tables::load_table, DropsLinks),
        M::Sgdt | M::Sidt => (tables::store_table, DropsLinks),
        M::Lldt => (tables::lldt, DropsLinks),
        M::Ltr => (tables::ltr, DropsLinks),
        M::Sldt | M::Str => (tables::store_selector, DropsLinks),
        M::Lmsw => (control::lmsw, DropsLinks),
        M::Smsw => (control::smsw, DropsLinks),
        M::Clts => (control::clts, DropsLinks),
        M::Invlpg => (control::invlpg, DropsLinks),
        M::Invpcid => (control::invpcid, DropsLinks),
        M::Lar | M::Lsl => (tables::lar_lsl, DropsLinks),
        M::Verr | M::Verw => (tables::verr_verw, DropsLinks),
        M::Arpl => (tables::arpl, DropsLinks),
        M::Cpuid => (cpuid, DropsLinks),
        M::Rdtsc | M::Rdtscp => (rdtsc, DropsLinks),
        M::Rdpid => (rdpid, DropsLinks),
        M::Rdmsr => (rdmsr, DropsLinks),
        M::Wrmsr => (wrmsr, DropsLinks),
        M::Hlt => (hlt, DropsLinks),
        M::Cli => (cli, DropsLinks),
        M::Sti => (sti, DropsLinks),
        M::Stac | M::Clac => (stac_clac, KeepsLinks),
        M::Pushf | M::Pushfd | M::Pushfq => (pushf, DropsLinks),
        M::Popf | M::Popfd | M::Popfq => (popf, DropsLinks),
        M::Swapgs => (swapgs, DropsLinks),
        M::Xgetbv => (xgetbv, DropsLinks),
        M::Xsetbv => (xsetbv, DropsLinks),
        M::Vmcall | M::Vmmcall => (vmcall, DropsLinks),
        M::Invd | M::Wbinvd => (invd, DropsLinks),
        M::Mfence => (mfence, DropsLinks),
        M::Lfence
        | M::Sfence
        | M::Clflush
        | M::Clflushopt
        | M::Prefetch
        | M::Prefetchw
        | M::Prefetchnta
        | M::Prefetcht0
        | M::Prefetcht1
        | M::Prefetcht2 => (nop, DropsLinks),
        M::Ud0 | M::Ud1 | M::Ud2 => (super::undefined, DropsLinks),
        _ => return None,
    })
}

fn is_sreg_op(insn: &Instruction) -> bool {
    insn.op_kind(0) == OpKind::Register && insn.op_register(0).is_segment_register()
}

fn is_sreg_mov(insn: &Instruction) -> bool {
    (0..insn.op_count())
        .any(|n| insn.op_kind(n) == OpKind::Register && insn.op_register(n).is_segment_register())
}

fn is_cr_mov(insn: &Instruction) -> bool {
    (0..insn.op_count()).any(|n| insn.op_kind(n) == OpKind::Register && insn.op_register(n).is_cr())
}

fn is_dr_mov(insn: &Instruction) -> bool {
    (0..insn.op_count()).any(|n| insn.op_kind(n) == OpKind::Register && insn.op_register(n).is_dr())
}

fn is_far(insn: &Instruction) -> bool {
    matches!(insn.op_kind(0), OpKind::FarBranch16 | OpKind::FarBranch32)
        || matches!(
            insn.code(),
            Code::Jmp_m1616
                | Code::Jmp_m1632
                | Code::Jmp_m1664
                | Code::Call_m1616
                | Code::Call_m1632
                | Code::Call_m1664
        )
}

/// Writes EDX:EAX (each zero-extended, as 32-bit register writes are).
fn write_edx_eax(cpu: &mut Cpu, v: u64) {
    cpu.s.write_gpr(reg::RAX, 4, false, v & 0xffff_ffff);
    cpu.s.write_gpr(reg::RDX, 4, false, v >> 32);
}

fn edx_eax(cpu: &Cpu) -> u64 {
    (cpu.s.gpr[reg::RDX] & 0xffff_ffff) << 32 | (cpu.s.gpr[reg::RAX] & 0xffff_ffff)
}

fn nop(_: &mut Cpu, _: &Instruction) -> Result<(), Fault> {
    Ok(())
}

fn mfence(_: &mut Cpu, _: &Instruction) -> Result<(), Fault> {
    std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
    Ok(())
}

/// INVD/WBINVD: privileged; no caches to flush.
fn invd(cpu: &mut Cpu, _: &Instruction) -> Result<(), Fault> {
    require_cpl0(cpu)
}

fn cpuid(cpu: &mut Cpu, _: &Instruction) -> Result<(), Fault> {
    cpu.machine.vcpu_stats(cpu.id).count(ExitKind::Cpuid);
    let leaf = cpu.s.gpr[reg::RAX] as u32;
    let subleaf = cpu.s.gpr[reg::RCX] as u32;
    let r = crate::cpuid::execute(cpu, leaf, subleaf);
    cpu.s.write_gpr(reg::RAX, 4, false, u64::from(r.eax));
    cpu.s.write_gpr(reg::RBX, 4, false, u64::from(r.ebx));
    cpu.s.write_gpr(reg::RCX, 4, false, u64::from(r.ecx));
    cpu.s.write_gpr(reg::RDX, 4, false, u64::from(r.edx));
    Ok(())
}

/// RDTSC/RDTSCP: #GP(0) with CR4.TSD at CPL > 0 (see [`crate::msr`] for
/// the clock).
fn rdtsc(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    if cpu.s.cr4 & cr4::TSD != 0 && cpu.s.cpl > 0 && cpu.s.protected_mode() {
        return Err(Fault::GeneralProtection(0));
    }
    let tsc = crate::msr::read_tsc(cpu);
    write_edx_eax(cpu, tsc);
    if insn.mnemonic() == Mnemonic::Rdtscp {
        let aux = cpu.s.msr.tsc_aux & 0xffff_ffff;
        cpu.s.write_gpr(reg::RCX, 4, false, aux);
    }
    Ok(())
}

fn rdpid(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    let aux = cpu.s.msr.tsc_aux;
    write_reg(cpu, insn.op_register(0), aux);
    Ok(())
}

fn rdmsr(cpu: &mut Cpu, _: &Instruction) -> Result<(), Fault> {
    require_cpl0(cpu)?;
    let v = crate::msr::read_msr(cpu, cpu.s.gpr[reg::RCX] as u32)?;
    write_edx_eax(cpu, v);
    Ok(())
}

fn wrmsr(cpu: &mut Cpu, _: &Instruction) -> Result<(), Fault> {
    require_cpl0(cpu)?;
    let v = edx_eax(cpu);
    crate::msr::write_msr(cpu, cpu.s.gpr[reg::RCX] as u32, v)?;
    // EFER, FS/GS bases and the like may change how code runs.
    cpu.end_block = true;
    Ok(())
}

/// HLT: privileged; the run loop sleeps until an interrupt (or returns
/// `Halted` when nothing can wake the vCPU).
fn hlt(cpu: &mut Cpu, _: &Instruction) -> Result<(), Fault> {
    require_cpl0(cpu)?;
    cpu.machine.vcpu_stats(cpu.id).count(ExitKind::Hlt);
    cpu.s.halted = true;
    cpu.end_block = true;
    Ok(())
}

fn cli(cpu: &mut Cpu, _: &Instruction) -> Result<(), Fault> {
    if !may_change_if(cpu) {
        return Err(Fault::GeneralProtection(0));
    }
    cpu.s.flags.set_flag(flags::IF, false);
    Ok(())
}

/// STI: interrupts stay blocked until after the next instruction.
fn sti(cpu: &mut Cpu, _: &Instruction) -> Result<(), Fault> {
    if !may_change_if(cpu) {
        return Err(Fault::GeneralProtection(0));
    }
    if !cpu.s.flags.test(flags::IF) {
        cpu.s.flags.set_flag(flags::IF, true);
        cpu.s.interrupt_shadow = true;
    }
    cpu.end_block = true;
    Ok(())
}

/// STAC/CLAC (SDM Vol. 2 STAC, CLAC): set or clear RFLAGS.AC, which lets
/// explicit supervisor accesses reach user-mode pages under CR4.SMAP
/// ([`crate::mmu::Privilege`]); #UD at CPL > 0. They change no link
/// (translated code never uses the TLB entries AC opens, see
/// [`crate::mmu`]).
fn stac_clac(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    if cpu.s.cpl > 0 || cpu.s.v86_mode() {
        return Err(Fault::InvalidOpcode);
    }
    cpu.s
        .flags
        .set_flag(flags::AC, insn.mnemonic() == Mnemonic::Stac);
    Ok(())
}

/// PUSHF: the pushed image has VM and RF clear; #GP(0) in virtual-8086
/// mode with IOPL < 3.
fn pushf(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    if cpu.s.v86_mode() && iopl(cpu) < 3 {
        return Err(Fault::GeneralProtection(0));
    }
    let v = cpu.s.flags.get() & !(flags::VM | flags::RF);
    push(cpu, stack_op_size(insn), v)
}

/// POPF (SDM POPF): which bits may change depends on CPL and IOPL; VM,
/// VIF and VIP never change, RF is cleared (32/64-bit forms).
fn popf(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    let v86 = cpu.s.v86_mode();
    if v86 && iopl(cpu) < 3 {
        return Err(Fault::GeneralProtection(0));
    }
    let size = stack_op_size(insn);
    let v = pop(cpu, size)?;
    let old = cpu.s.flags.get();
    let mut mask = flags::ARITH | flags::TF | flags::DF | flags::NT;
    if size >= 4 {
        mask |= flags::AC | flags::ID;
    }
    if cpu.s.cpl == 0 && !v86 {
        mask |= flags::IOPL;
    }
    if may_change_if(cpu) {
        mask |= flags::IF;
    }
    let mut new = (old & !mask) | (v & mask);
    if size >= 4 {
        new &= !flags::RF;
    }
    cpu.s.flags = Flags::from_bits(new);
    // IF or TF may have changed: let the run loop look.
    cpu.end_block = true;
    Ok(())
}

/// SWAPGS: 64-bit mode, CPL 0; exchanges GS.base and IA32_KERNEL_GS_BASE.
fn swapgs(cpu: &mut Cpu, _: &Instruction) -> Result<(), Fault> {
    if !in_64bit(cpu) {
        return Err(Fault::InvalidOpcode);
    }
    require_cpl0(cpu)?;
    std::mem::swap(&mut cpu.s.seg[seg::GS].base, &mut cpu.s.msr.kernel_gs_base);
    Ok(())
}

fn xgetbv(cpu: &mut Cpu, _: &Instruction) -> Result<(), Fault> {
    if cpu.s.cr4 & cr4::OSXSAVE == 0 {
        return Err(Fault::InvalidOpcode);
    }
    if cpu.s.gpr[reg::RCX] as u32 != 0 {
        return Err(Fault::GeneralProtection(0));
    }
    write_edx_eax(cpu, cpu.s.xcr0);
    Ok(())
}

fn xsetbv(cpu: &mut Cpu, _: &Instruction) -> Result<(), Fault> {
    if cpu.s.cr4 & cr4::OSXSAVE == 0 {
        return Err(Fault::InvalidOpcode);
    }
    require_cpl0(cpu)?;
    let v = edx_eax(cpu);
    // Only what CPUID.(EAX=0DH,ECX=0):EAX offers (the VM's CPU model may
    // hide AVX).
    let offered = u64::from(alcazar_core::cpuid::CpuidPolicy::lookup(&cpu.cpuid, 0xd, 0).eax);
    if cpu.s.gpr[reg::RCX] as u32 != 0 || !crate::fpu::xsave::valid_xcr0(v) || v & !offered != 0 {
        return Err(Fault::GeneralProtection(0));
    }
    cpu.s.xcr0 = v;
    Ok(())
}

/// VMCALL/VMMCALL: an Alcazar hypercall (see [`hypercall`]).
fn vmcall(cpu: &mut Cpu, _: &Instruction) -> Result<(), Fault> {
    hypercall(cpu);
    Ok(())
}

/// Performs an Alcazar hypercall: number in RAX, arguments in RBX, RCX,
/// RDX, RSI, result in RAX (`alcazar_core::hooks`). Only CPL 0 may call
/// (like KVM's hypercalls); other levels get [`HYPERCALL_UNKNOWN`]. The
/// block ends so a stop the hypercall requested is noticed at once.
pub(crate) fn hypercall(cpu: &mut Cpu) {
    cpu.machine.vcpu_stats(cpu.id).count(ExitKind::Hypercall);
    let g = &cpu.s.gpr;
    let args = HypercallArgs {
        a0: g[reg::RBX],
        a1: g[reg::RCX],
        a2: g[reg::RDX],
        a3: g[reg::RSI],
    };
    let nr = g[reg::RAX];
    cpu.s.gpr[reg::RAX] = if cpu.s.cpl == 0 {
        cpu.machine.hooks.hypercall(cpu.id, nr, &args)
    } else {
        HYPERCALL_UNKNOWN
    };
    cpu.end_block = true;
}
