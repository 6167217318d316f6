//! Segment-register instructions and far control transfers: MOV/PUSH/POP
//! Sreg, LDS/LES/LFS/LGS/LSS, JMP/CALL far (direct, and through 16-, 32-
//! and 64-bit call gates), RETF and IRET (SDM Vol. 2 for each; Vol. 3A
//! §5.8 "Privilege level checking when transferring program control
//! between code segments", §6.14 for IA-32e mode IRET, §20.3 for the
//! return to virtual-8086 mode).
//!
//! A far transfer validates everything and writes the stack before it
//! changes CS, CPL, SS or RSP, so a fault leaves them as they were.
//! Task switches (a TSS or task gate as the target, IRET with NT = 1
//! outside IA-32e mode) are not supported: #GP(selector), logged.

use alcazar_core::regs::Segment;
use iced_x86::{Code, Instruction, MemorySize, Mnemonic, OpKind};

use crate::exec::operand::{memory_operand, pop, push, read_op, seg_index, stack_op_size};
use crate::exec::operand::{write_op, write_reg};
use crate::fault::Fault;
use crate::flags::{self, mask, Flags};
use crate::interrupts::{legacy_stack, tss_read};
use crate::modes::in_64bit;
use crate::privilege::iopl;
use crate::segment::{
    check_stack_segment, descriptor_to_segment, err_code, is_code, is_conforming, is_null,
    load_segment, null_inaccessible_data_segments, null_segment, read_descriptor, set_accessed,
    sys, ty, v86_segment, Stack, StackCheck,
};
use crate::state::{reg, seg};
use crate::Cpu;

fn gp(code: u16) -> Fault {
    Fault::GeneralProtection(code)
}

/// MOV Sreg, r/m16 and MOV r/m, Sreg. Loading CS is #UD.
pub(super) fn mov_sreg(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    let to_sreg = insn.op_kind(0) == OpKind::Register && insn.op_register(0).is_segment_register();
    if to_sreg {
        let r = insn.op_register(0);
        if r == iced_x86::Register::CS {
            return Err(Fault::InvalidOpcode);
        }
        let sel = read_op(cpu, insn, 1)? as u16;
        load_segment(cpu, seg_index(r), sel)
    } else {
        let sel = cpu.s.seg[seg_index(insn.op_register(1))].selector;
        write_op(cpu, insn, 0, u64::from(sel))
    }
}

/// PUSH Sreg: the selector, zero-extended to the operand size.
pub(super) fn push_sreg(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    let sel = cpu.s.seg[seg_index(insn.op_register(0))].selector;
    push(cpu, stack_op_size(insn), u64::from(sel))
}

/// POP Sreg (POP CS does not exist: the decoder never produces it).
pub(super) fn pop_sreg(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    let r = insn.op_register(0);
    if r == iced_x86::Register::CS {
        return Err(Fault::InvalidOpcode);
    }
    let saved = cpu.s.gpr[reg::RSP];
    let sel = pop(cpu, stack_op_size(insn))? as u16;
    load_segment(cpu, seg_index(r), sel).inspect_err(|_| cpu.s.gpr[reg::RSP] = saved)
}

/// LDS/LES/LFS/LGS/LSS r, m16:16/32/64: the segment first (it may fault),
/// then the register.
pub(super) fn load_far_pointer(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    let index = match insn.mnemonic() {
        Mnemonic::Lds => seg::DS,
        Mnemonic::Les => seg::ES,
        Mnemonic::Lfs => seg::FS,
        Mnemonic::Lgs => seg::GS,
        _ => seg::SS,
    };
    let dst = insn.op_register(0);
    let size = dst.size() as u8;
    let (s, off) = memory_operand(cpu, insn);
    let offset = cpu.read(s, off, size)?;
    let sel = cpu.read(s, off.wrapping_add(u64::from(size)), 2)? as u16;
    load_segment(cpu, index, sel)?;
    write_reg(cpu, dst, offset);
    Ok(())
}

/// The selector, offset and operand size of a far JMP/CALL.
fn far_operand(cpu: &mut Cpu, insn: &Instruction) -> Result<(u16, u64, u8), Fault> {
    match insn.op_kind(0) {
        OpKind::FarBranch16 => Ok((
            insn.far_branch_selector(),
            u64::from(insn.far_branch16()),
            2,
        )),
        OpKind::FarBranch32 => Ok((
            insn.far_branch_selector(),
            u64::from(insn.far_branch32()),
            4,
        )),
        _ => {
            let size = match insn.memory_size() {
                MemorySize::SegPtr16 => 2,
                MemorySize::SegPtr32 => 4,
                _ => 8,
            };
            let (s, off) = memory_operand(cpu, insn);
            let offset = cpu.read(s, off, size)?;
            let sel = cpu.read(s, off.wrapping_add(u64::from(size)), 2)? as u16;
            Ok((sel, offset, size))
        }
    }
}

/// Real mode or virtual-8086 mode: segment arithmetic only.
fn real_like(cpu: &Cpu) -> bool {
    !cpu.s.protected_mode() || cpu.s.v86_mode()
}

/// A far transfer in real or virtual-8086 mode: CS = sel, base sel << 4.
fn real_far(cpu: &mut Cpu, sel: u16, off: u64) -> Result<(), Fault> {
    if off > u64::from(cpu.s.seg[seg::CS].limit) {
        return Err(gp(0));
    }
    if cpu.s.v86_mode() {
        cpu.s.seg[seg::CS] = v86_segment(sel, true);
    } else {
        let cs = &mut cpu.s.seg[seg::CS];
        cs.selector = sel;
        cs.base = u64::from(sel) << 4;
    }
    cpu.next_rip = off;
    cpu.end_block = true;
    Ok(())
}

/// Whether `off` is a valid RIP in code segment `d` (canonical for a
/// 64-bit segment in IA-32e mode, else within the limit).
fn offset_ok(cpu: &Cpu, d: &Segment, off: u64) -> bool {
    if cpu.s.long_mode() && d.l {
        crate::mem::canonical(off)
    } else {
        off <= u64::from(d.limit)
    }
}

/// Loads CS with the validated descriptor `d` at privilege `cpl` and
/// jumps to `rip`; the decoder's bitness may change, so the block ends.
fn enter_cs(cpu: &mut Cpu, sel: u16, lo: u64, d: Segment, cpl: u8, rip: u64) -> Result<(), Fault> {
    set_accessed(cpu, sel, lo)?;
    cpu.s.seg[seg::CS] = Segment {
        selector: (sel & !3) | u16::from(cpl),
        type_: d.type_ | ty::ACCESSED,
        ..d
    };
    cpu.s.cpl = cpl;
    cpu.next_rip = rip;
    cpu.end_block = true;
    Ok(())
}

/// Checks for a code segment reached directly by JMP/CALL (SDM Vol. 3A
/// §5.8.1): conforming needs DPL <= CPL, non-conforming RPL <= CPL and
/// DPL = CPL; present; not L and D both set.
fn check_direct_code(cpu: &Cpu, sel: u16, d: &Segment) -> Result<(), Fault> {
    let err = err_code(sel);
    let cpl = cpu.s.cpl;
    let rpl = (sel & 3) as u8;
    if !is_code(d) {
        return Err(gp(err));
    }
    if is_conforming(d) {
        if d.dpl > cpl {
            return Err(gp(err));
        }
    } else if rpl > cpl || d.dpl != cpl {
        return Err(gp(err));
    }
    if !d.present {
        return Err(Fault::SegmentNotPresent(err));
    }
    if cpu.s.long_mode() && d.l && d.db {
        return Err(gp(err));
    }
    Ok(())
}

/// The code segment RETF/IRET return to (SDM RET, IRET): RPL >= CPL;
/// conforming needs DPL <= RPL, non-conforming DPL = RPL; present.
fn check_return_code(cpu: &mut Cpu, sel: u16) -> Result<(Segment, u64), Fault> {
    if is_null(sel) {
        return Err(gp(0));
    }
    let err = err_code(sel);
    let (lo, hi) = read_descriptor(cpu, sel)?;
    let d = descriptor_to_segment(sel, lo, hi);
    let rpl = (sel & 3) as u8;
    if !is_code(&d) || rpl < cpu.s.cpl {
        return Err(gp(err));
    }
    if is_conforming(&d) {
        if d.dpl > rpl {
            return Err(gp(err));
        }
    } else if d.dpl != rpl {
        return Err(gp(err));
    }
    if !d.present {
        return Err(Fault::SegmentNotPresent(err));
    }
    if cpu.s.long_mode() && d.l && d.db {
        return Err(gp(err));
    }
    Ok((d, lo))
}

pub(super) fn jmp_far(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    let (sel, off, size) = far_operand(cpu, insn)?;
    let off = off & mask(size);
    if real_like(cpu) {
        return real_far(cpu, sel, off);
    }
    far_protected(cpu, sel, off, size, None)
}

pub(super) fn call_far(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    let (sel, off, size) = far_operand(cpu, insn)?;
    let off = off & mask(size);
    let ret = cpu.next_rip;
    if real_like(cpu) {
        let mut st = Stack::current(cpu);
        st.push(cpu, size, u64::from(cpu.s.seg[seg::CS].selector))?;
        st.push(cpu, size, ret)?;
        real_far(cpu, sel, off)?;
        st.commit(cpu);
        return Ok(());
    }
    far_protected(cpu, sel, off, size, Some(ret))
}

/// A protected-mode far JMP (`call` = None) or CALL (`call` = the return
/// RIP) to `sel:off`.
fn far_protected(
    cpu: &mut Cpu,
    sel: u16,
    off: u64,
    size: u8,
    call: Option<u64>,
) -> Result<(), Fault> {
    if is_null(sel) {
        return Err(gp(0));
    }
    let (lo, hi) = read_descriptor(cpu, sel)?;
    let d = descriptor_to_segment(sel, lo, hi);
    if !d.s {
        return match d.type_ {
            sys::CALL_GATE => call_gate(cpu, sel, lo, hi, call),
            sys::CALL_GATE16 if !cpu.s.long_mode() => call_gate(cpu, sel, lo, hi, call),
            t => {
                if matches!(t, sys::TASK_GATE | sys::TSS_AVAIL | sys::TSS16_AVAIL) {
                    tracing::warn!(vcpu = cpu.id, sel, "task switches are not supported");
                }
                Err(gp(err_code(sel)))
            }
        };
    }
    check_direct_code(cpu, sel, &d)?;
    if !offset_ok(cpu, &d, off) {
        return Err(gp(0));
    }
    let cpl = cpu.s.cpl;
    match call {
        None => enter_cs(cpu, sel, lo, d, cpl, off),
        Some(ret) => {
            let mut st = Stack::current(cpu);
            st.push(cpu, size, u64::from(cpu.s.seg[seg::CS].selector))?;
            st.push(cpu, size, ret)?;
            enter_cs(cpu, sel, lo, d, cpl, off)?;
            st.commit(cpu);
            Ok(())
        }
    }
}

/// JMP/CALL through a call gate (SDM Vol. 3A §5.8.6, §5.8.3.1 for IA-32e
/// mode): CALL to a more privileged non-conforming segment switches to
/// the stack in the TSS and (legacy gates) copies the parameters.
fn call_gate(
    cpu: &mut Cpu,
    gate_sel: u16,
    lo: u64,
    hi: u64,
    call: Option<u64>,
) -> Result<(), Fault> {
    let long = cpu.s.long_mode();
    let gerr = err_code(gate_sel);
    let gate_type = ((lo >> 40) & 0xf) as u8;
    let gate_dpl = ((lo >> 45) & 3) as u8;
    let cpl = cpu.s.cpl;
    if gate_dpl < cpl || (gate_sel & 3) as u8 > gate_dpl {
        return Err(gp(gerr));
    }
    if lo & (1 << 47) == 0 {
        return Err(Fault::SegmentNotPresent(gerr));
    }
    // The upper half of a 64-bit gate must have type 0 there.
    if long && (hi >> 40) & 0x1f != 0 {
        return Err(gp(gerr));
    }
    let width: u8 = if long {
        8
    } else if gate_type == sys::CALL_GATE {
        4
    } else {
        2
    };
    let mut offset = (lo & 0xffff) | ((lo >> 32) & 0xffff_0000);
    if long {
        offset |= (hi & 0xffff_ffff) << 32;
    } else if width == 2 {
        offset &= 0xffff;
    }
    let params = ((lo >> 32) & 0x1f) as u8;
    let tsel = (lo >> 16) as u16;
    if is_null(tsel) {
        return Err(gp(0));
    }
    let terr = err_code(tsel);
    let (tlo, thi) = read_descriptor(cpu, tsel)?;
    let t = descriptor_to_segment(tsel, tlo, thi);
    if !is_code(&t) || t.dpl > cpl {
        return Err(gp(terr));
    }
    if call.is_none() && !is_conforming(&t) && t.dpl != cpl {
        return Err(gp(terr));
    }
    if !t.present {
        return Err(Fault::SegmentNotPresent(terr));
    }
    if long && (!t.l || t.db) {
        return Err(gp(terr));
    }
    if !offset_ok(cpu, &t, offset) {
        return Err(gp(0));
    }
    let Some(ret) = call else {
        return enter_cs(cpu, tsel, tlo, t, cpl, offset);
    };
    let old_cs = u64::from(cpu.s.seg[seg::CS].selector);
    if is_conforming(&t) || t.dpl == cpl {
        let mut st = Stack::current(cpu);
        st.push(cpu, width, old_cs)?;
        st.push(cpu, width, ret)?;
        enter_cs(cpu, tsel, tlo, t, cpl, offset)?;
        st.commit(cpu);
        return Ok(());
    }
    // To an inner privilege level: a new stack from the TSS.
    let new_cpl = t.dpl;
    let old = Stack::current(cpu);
    let old_ss = u64::from(cpu.s.seg[seg::SS].selector);
    let (mut st, new_ss) = if long {
        let rsp = tss_read(cpu, 4 + 8 * u64::from(new_cpl), 8, 0)?;
        let st = Stack {
            seg: Segment::default(),
            sp: rsp,
            size: 8,
            user: false,
            err: 0,
        };
        (st, null_segment(u16::from(new_cpl), new_cpl))
    } else {
        let (ss_sel, sp) = legacy_stack(cpu, new_cpl, 0)?;
        let ss = check_stack_segment(cpu, ss_sel, new_cpl, false, StackCheck::Ts)?;
        (Stack::new(ss, sp, new_cpl, false, err_code(ss_sel)), ss)
    };
    st.push(cpu, width, old_ss)?;
    st.push(cpu, width, old.sp)?;
    if !long {
        for i in (0..u64::from(params)).rev() {
            let v = old.peek(cpu, i * u64::from(width), width)?;
            st.push(cpu, width, v)?;
        }
    }
    st.push(cpu, width, old_cs)?;
    st.push(cpu, width, ret)?;
    enter_cs(cpu, tsel, tlo, t, new_cpl, offset)?;
    cpu.s.seg[seg::SS] = new_ss;
    st.commit(cpu);
    Ok(())
}

/// Sets RSP after SS (and CS) changed: its width follows the new stack.
fn set_stack_pointer(cpu: &mut Cpu, sp: u64) {
    let size = cpu.s.stack_size();
    cpu.s.write_gpr(reg::RSP, size, false, sp);
}

/// RETF [imm16]: same privilege, or to an outer level popping SS:RSP.
pub(super) fn retf(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    let size: u8 = match insn.code() {
        Code::Retfw | Code::Retfw_imm16 => 2,
        Code::Retfd | Code::Retfd_imm16 => 4,
        _ => 8,
    };
    let imm = if insn.op_count() > 0 {
        u64::from(insn.immediate16())
    } else {
        0
    };
    let mut st = Stack::current(cpu);
    let off = st.pop(cpu, size)? & mask(size);
    let sel = st.pop(cpu, size)? as u16;
    if real_like(cpu) {
        st.skip(imm);
        real_far(cpu, sel, off)?;
        st.commit(cpu);
        return Ok(());
    }
    let (d, lo) = check_return_code(cpu, sel)?;
    let rpl = (sel & 3) as u8;
    if !offset_ok(cpu, &d, off) {
        return Err(gp(0));
    }
    st.skip(imm);
    if rpl == cpu.s.cpl {
        enter_cs(cpu, sel, lo, d, rpl, off)?;
        st.commit(cpu);
        return Ok(());
    }
    let sp = st.pop(cpu, size)?;
    let ss_sel = st.pop(cpu, size)? as u16;
    let to64 = cpu.s.long_mode() && d.l;
    let ss = check_stack_segment(cpu, ss_sel, rpl, to64, StackCheck::Gp)?;
    enter_cs(cpu, sel, lo, d, rpl, off)?;
    cpu.s.seg[seg::SS] = ss;
    set_stack_pointer(cpu, sp.wrapping_add(imm));
    null_inaccessible_data_segments(cpu);
    Ok(())
}

/// The RFLAGS an IRET in protected mode produces from the popped `v`
/// (SDM IRET): IF only if CPL <= IOPL, IOPL/VIF/VIP only at CPL 0, VM
/// never (that is the virtual-8086 return).
fn iret_flags(cpu: &Cpu, v: u64, size: u8) -> u64 {
    let old = cpu.s.flags.get();
    let iopl = (old & flags::IOPL) >> 12;
    let cpl = u64::from(cpu.s.cpl);
    let mut m = flags::ARITH | flags::TF | flags::DF | flags::NT;
    if size >= 4 {
        m |= flags::RF | flags::AC | flags::ID;
    }
    if cpl <= iopl {
        m |= flags::IF;
    }
    if cpl == 0 {
        m |= flags::IOPL;
        if size >= 4 {
            m |= flags::VIF | flags::VIP;
        }
    }
    (old & !m) | (v & m)
}

/// IRET/IRETD/IRETQ.
pub(super) fn iret(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    let size: u8 = match insn.code() {
        Code::Iretw => 2,
        Code::Iretd => 4,
        _ => 8,
    };
    if !cpu.s.protected_mode() {
        return iret_real(cpu, size);
    }
    if cpu.s.v86_mode() {
        if iopl(cpu) < 3 {
            return Err(gp(0));
        }
        return iret_real(cpu, size);
    }
    let long = cpu.s.long_mode();
    if cpu.s.flags.test(flags::NT) {
        if !long {
            tracing::warn!(
                vcpu = cpu.id,
                "IRET with NT=1 (task return) is not supported"
            );
        }
        return Err(gp(0));
    }
    let mut st = Stack::current(cpu);
    let rip = st.pop(cpu, size)? & mask(size);
    let sel = st.pop(cpu, size)? as u16;
    let fl = st.pop(cpu, size)?;
    if !long && size == 4 && fl & flags::VM != 0 && cpu.s.cpl == 0 {
        return iret_to_v86(cpu, st, rip, sel, fl);
    }
    let (d, lo) = check_return_code(cpu, sel)?;
    let rpl = (sel & 3) as u8;
    let old_cpl = cpu.s.cpl;
    let new_stack = if rpl > old_cpl || in_64bit(cpu) {
        let sp = st.pop(cpu, size)?;
        let ss_sel = st.pop(cpu, size)? as u16;
        let to64 = long && d.l;
        let ss = check_stack_segment(cpu, ss_sel, rpl, to64, StackCheck::Gp)?;
        Some((ss, sp))
    } else {
        None
    };
    if !offset_ok(cpu, &d, rip) {
        return Err(gp(0));
    }
    let new_flags = if size == 2 {
        let f = iret_flags(cpu, fl, 2);
        (cpu.s.flags.get() & !0xffff) | (f & 0xffff)
    } else {
        iret_flags(cpu, fl, size)
    };
    enter_cs(cpu, sel, lo, d, rpl, rip)?;
    match new_stack {
        Some((ss, sp)) => {
            cpu.s.seg[seg::SS] = ss;
            set_stack_pointer(cpu, sp);
        }
        None => st.commit(cpu),
    }
    cpu.s.flags = Flags::from_bits(new_flags);
    if rpl > old_cpl {
        null_inaccessible_data_segments(cpu);
    }
    cpu.irq.unblock_nmi();
    Ok(())
}

/// IRET in real mode, or in virtual-8086 mode with IOPL = 3 (which keeps
/// IOPL).
fn iret_real(cpu: &mut Cpu, size: u8) -> Result<(), Fault> {
    let mut st = Stack::current(cpu);
    let ip = st.pop(cpu, size)? & mask(size);
    let cs = st.pop(cpu, size)? as u16;
    let fl = st.pop(cpu, size)?;
    let old = cpu.s.flags.get();
    let mut new = if size == 2 {
        (old & !0xffff) | (fl & 0xffff)
    } else {
        // VM, VIF, VIP are kept (SDM IRET, real-address mode).
        (fl & 0x0025_7fd5) | (old & 0x001a_0000)
    };
    if cpu.s.v86_mode() {
        new = (new & !flags::IOPL) | (old & flags::IOPL);
    }
    real_far(cpu, cs, ip)?;
    st.commit(cpu);
    cpu.s.flags = Flags::from_bits(new);
    cpu.irq.unblock_nmi();
    Ok(())
}

/// IRETD at CPL 0 with VM = 1 in the popped EFLAGS: return to
/// virtual-8086 mode, popping ESP, SS, ES, DS, FS, GS (SDM Vol. 3A §20.3).
fn iret_to_v86(cpu: &mut Cpu, mut st: Stack, rip: u64, cs: u16, fl: u64) -> Result<(), Fault> {
    let esp = st.pop(cpu, 4)?;
    let mut sels = [0u16; 5];
    for s in sels.iter_mut() {
        *s = st.pop(cpu, 4)? as u16;
    }
    let [ss, es, ds, fs, gs] = sels;
    cpu.s.flags = Flags::from_bits(fl);
    cpu.s.seg[seg::CS] = v86_segment(cs, true);
    for (i, sel) in [
        (seg::SS, ss),
        (seg::ES, es),
        (seg::DS, ds),
        (seg::FS, fs),
        (seg::GS, gs),
    ] {
        cpu.s.seg[i] = v86_segment(sel, false);
    }
    cpu.s.cpl = 3;
    cpu.s.write_gpr(reg::RSP, 4, false, esp);
    cpu.next_rip = rip & 0xffff;
    cpu.end_block = true;
    cpu.irq.unblock_nmi();
    Ok(())
}
