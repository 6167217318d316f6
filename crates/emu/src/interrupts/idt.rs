//! Protected-mode and IA-32e-mode delivery through the IDT (Intel SDM
//! Vol. 3A §6.10-§6.12 and §6.14, virtual-8086 mode §20.3.1.2).

use alcazar_core::regs::Segment;

use super::{set_rip, Event, Source};
use crate::fault::Fault;
use crate::flags;
use crate::segment::{
    self, check_stack_segment, descriptor_to_segment, err_code, is_code, is_conforming, is_null,
    null_segment, read_descriptor, sys, sys_linear, Stack, StackCheck,
};
use crate::state::{reg, seg};
use crate::Cpu;

/// Adds the EXT bit to the error code of a segment-related fault.
fn with_ext(f: Fault, ext: u16) -> Fault {
    match f {
        Fault::GeneralProtection(c) => Fault::GeneralProtection(c | ext),
        Fault::SegmentNotPresent(c) => Fault::SegmentNotPresent(c | ext),
        Fault::StackFault(c) => Fault::StackFault(c | ext),
        Fault::InvalidTss(c) => Fault::InvalidTss(c | ext),
        other => other,
    }
}

/// Reads `len` bytes at offset `off` of the current TSS; #TS(TR) if the
/// TSS is too short.
pub(crate) fn tss_read(cpu: &mut Cpu, off: u64, len: u8, ext: u16) -> Result<u64, Fault> {
    let tr = cpu.s.tr;
    if tr.unusable || off + u64::from(len) - 1 > u64::from(tr.limit) {
        return Err(Fault::InvalidTss(err_code(tr.selector) | ext));
    }
    let addr = sys_linear(cpu, tr.base.wrapping_add(off));
    cpu.read_system(addr, len)
}

/// A decoded IDT gate.
struct Gate {
    kind: u8,
    dpl: u8,
    present: bool,
    selector: u16,
    offset: u64,
    ist: u8,
}

fn read_gate(cpu: &mut Cpu, vector: u8, idt_err: u16) -> Result<Gate, Fault> {
    let long = cpu.s.long_mode();
    let size: u64 = if long { 16 } else { 8 };
    let off = u64::from(vector) * size;
    if off + size - 1 > u64::from(cpu.s.idtr.limit) {
        return Err(Fault::GeneralProtection(idt_err));
    }
    let addr = sys_linear(cpu, cpu.s.idtr.base.wrapping_add(off));
    let lo = cpu.read_system(addr, 8)?;
    let hi = if long {
        cpu.read_system(addr.wrapping_add(8), 8)?
    } else {
        0
    };
    if lo & (1 << 44) != 0 {
        // S = 1: a code/data descriptor is no gate.
        return Err(Fault::GeneralProtection(idt_err));
    }
    let kind = ((lo >> 40) & 0xf) as u8;
    let mut offset = (lo & 0xffff) | ((lo >> 32) & 0xffff_0000);
    if long {
        offset |= (hi & 0xffff_ffff) << 32;
    } else if kind == sys::INT_GATE16 || kind == sys::TRAP_GATE16 {
        offset &= 0xffff;
    }
    Ok(Gate {
        kind,
        dpl: ((lo >> 45) & 3) as u8,
        present: lo & (1 << 47) != 0,
        selector: (lo >> 16) as u16,
        offset,
        ist: if long { ((lo >> 32) & 7) as u8 } else { 0 },
    })
}

/// Delivers `ev` through the IDT (protected mode, virtual-8086 mode or
/// IA-32e mode).
pub(super) fn deliver_protected(cpu: &mut Cpu, ev: Event) -> Result<(), Fault> {
    let ext = u16::from(ev.source != Source::Software);
    let idt_err = u16::from(ev.vector) * 8 + 2 + ext;
    let long = cpu.s.long_mode();
    let cpl = cpu.s.cpl;
    let gate = read_gate(cpu, ev.vector, idt_err)?;
    let valid = if long {
        matches!(gate.kind, sys::INT_GATE | sys::TRAP_GATE)
    } else {
        matches!(
            gate.kind,
            sys::TASK_GATE | sys::INT_GATE16 | sys::TRAP_GATE16 | sys::INT_GATE | sys::TRAP_GATE
        )
    };
    if !valid {
        return Err(Fault::GeneralProtection(idt_err));
    }
    if ev.source == Source::Software && gate.dpl < cpl {
        return Err(Fault::GeneralProtection(idt_err));
    }
    if !gate.present {
        return Err(Fault::SegmentNotPresent(idt_err));
    }
    if gate.kind == sys::TASK_GATE {
        tracing::warn!(
            vcpu = cpu.id,
            vector = ev.vector,
            "task gates are not supported"
        );
        return Err(Fault::GeneralProtection(idt_err));
    }

    // The handler's code segment.
    if is_null(gate.selector) {
        return Err(Fault::GeneralProtection(ext));
    }
    let cs_err = err_code(gate.selector) | ext;
    let (lo, hi) = read_descriptor(cpu, gate.selector).map_err(|f| with_ext(f, ext))?;
    let cs = descriptor_to_segment(gate.selector, lo, hi);
    if !is_code(&cs) || cs.dpl > cpl {
        return Err(Fault::GeneralProtection(cs_err));
    }
    if !cs.present {
        return Err(Fault::SegmentNotPresent(cs_err));
    }
    if long && (!cs.l || cs.db) {
        return Err(Fault::GeneralProtection(cs_err));
    }
    let v86 = cpu.s.v86_mode();
    let new_cpl = if is_conforming(&cs) { cpl } else { cs.dpl };
    if v86 && new_cpl != 0 {
        return Err(Fault::GeneralProtection(cs_err));
    }
    let target_ok = if long {
        crate::mem::canonical(gate.offset)
    } else {
        gate.offset <= u64::from(cs.limit)
    };
    if !target_ok {
        return Err(Fault::GeneralProtection(ext));
    }

    let old_ss = cpu.s.seg[seg::SS].selector;
    let old_rsp = cpu.s.gpr[reg::RSP];
    let rflags = cpu.s.flags.get();
    let old_cs = cpu.s.seg[seg::CS].selector;
    let (mut st, new_ss, width) = if long {
        let rsp = if gate.ist != 0 {
            tss_read(cpu, 0x24 + 8 * u64::from(gate.ist - 1), 8, ext)?
        } else if new_cpl < cpl {
            tss_read(cpu, 4 + 8 * u64::from(new_cpl), 8, ext)?
        } else {
            old_rsp
        };
        let ss = (new_cpl < cpl).then(|| null_segment(u16::from(new_cpl), new_cpl));
        let st = Stack {
            seg: Segment::default(),
            sp: rsp & !0xf,
            size: 8,
            user: new_cpl == 3,
            err: 0,
        };
        (st, ss, 8u8)
    } else {
        let width = if gate.kind & 8 != 0 { 4 } else { 2 };
        if new_cpl < cpl {
            let (ss_sel, sp) = legacy_stack(cpu, new_cpl, ext)?;
            let ss = check_stack_segment(cpu, ss_sel, new_cpl, false, StackCheck::Ts)
                .map_err(|f| with_ext(f, ext))?;
            let st = Stack::new(ss, sp, new_cpl, false, err_code(ss_sel) | ext);
            (st, Some(ss), width)
        } else {
            let mut st = Stack::current(cpu);
            st.err = ext;
            (st, None, width)
        }
    };
    if v86 {
        for i in [seg::GS, seg::FS, seg::DS, seg::ES] {
            let sel = cpu.s.seg[i].selector;
            st.push(cpu, width, u64::from(sel))?;
        }
    }
    if long || new_ss.is_some() {
        st.push(cpu, width, u64::from(old_ss))?;
        st.push(cpu, width, old_rsp)?;
    }
    st.push(cpu, width, rflags)?;
    st.push(cpu, width, u64::from(old_cs))?;
    st.push(cpu, width, ev.return_rip)?;
    if let Some(code) = ev.error {
        st.push(cpu, width, u64::from(code))?;
    }
    segment::set_accessed(cpu, gate.selector, lo)?;

    // Commit.
    if let Some(ss) = new_ss {
        cpu.s.seg[seg::SS] = ss;
    }
    cpu.s.seg[seg::CS] = Segment {
        selector: (gate.selector & !3) | u16::from(new_cpl),
        type_: cs.type_ | segment::ty::ACCESSED,
        ..cs
    };
    cpu.s.cpl = new_cpl;
    st.commit(cpu);
    if v86 {
        for i in [seg::ES, seg::DS, seg::FS, seg::GS] {
            cpu.s.seg[i] = null_segment(0, 0);
        }
    }
    for bit in [flags::TF, flags::NT, flags::RF, flags::VM] {
        cpu.s.flags.set_flag(bit, false);
    }
    if matches!(gate.kind, sys::INT_GATE | sys::INT_GATE16) {
        cpu.s.flags.set_flag(flags::IF, false);
    }
    set_rip(cpu, gate.offset);
    Ok(())
}

/// SS:ESP for privilege level `cpl` from a 32-bit or 16-bit TSS.
pub(crate) fn legacy_stack(cpu: &mut Cpu, cpl: u8, ext: u16) -> Result<(u16, u64), Fault> {
    let n = u64::from(cpl);
    if matches!(cpu.s.tr.type_, sys::TSS16_AVAIL | sys::TSS16_BUSY) {
        let sp = tss_read(cpu, 2 + 4 * n, 2, ext)?;
        let ss = tss_read(cpu, 4 + 4 * n, 2, ext)?;
        Ok((ss as u16, sp))
    } else {
        let sp = tss_read(cpu, 4 + 8 * n, 4, ext)?;
        let ss = tss_read(cpu, 8 + 8 * n, 2, ext)?;
        Ok((ss as u16, sp))
    }
}
