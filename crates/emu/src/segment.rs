//! Segment descriptors and segment-register loads.
//!
//! Implements Intel SDM Vol. 3A §3.4 (selectors, descriptor format), §3.5
//! (GDT/LDT, system descriptors, the 16-byte system descriptors of IA-32e
//! mode), §5.5-§5.7 (privilege checks when loading data and stack segment
//! registers) and the loads of Vol. 2 MOV/POP Sreg and LDS/LES/LFS/LGS/LSS:
//! real mode and virtual-8086 mode (base = selector << 4), null selectors,
//! type, privilege and present checks, the accessed bit.
//!
//! It also holds [`Stack`], a stack that far transfers and interrupt
//! delivery push to or pop from before it becomes SS:RSP, so that a fault
//! part-way leaves SS:RSP untouched.
//!
//! The instructions that load the descriptor-table registers (LGDT, LIDT,
//! LLDT, LTR) are in `exec/system/tables.rs`; far transfers through code
//! segments and call gates in `exec/system/far.rs`; the IDT and the TSS
//! are read by interrupt delivery (`interrupts/idt.rs`) and the TSS's I/O
//! permission bitmap by [`crate::privilege::check_io`].
//!
//! Every value here is guest-controlled; nothing may panic.

use alcazar_core::regs::Segment;

use crate::fault::Fault;
use crate::state::{reg, seg};
use crate::Cpu;

/// Descriptor bit 44, S: code/data (1) or system (0).
const DESC_S: u64 = 1 << 44;
/// Descriptor bit 40: the accessed bit of a code/data type.
const DESC_ACCESSED: u64 = 1 << 40;

/// System-descriptor types (SDM Vol. 3A Table 3-2).
pub mod sys {
    /// 16-bit TSS (available).
    pub const TSS16_AVAIL: u8 = 1;
    /// LDT.
    pub const LDT: u8 = 2;
    /// 16-bit TSS (busy).
    pub const TSS16_BUSY: u8 = 3;
    /// 16-bit call gate.
    pub const CALL_GATE16: u8 = 4;
    /// Task gate.
    pub const TASK_GATE: u8 = 5;
    /// 16-bit interrupt gate.
    pub const INT_GATE16: u8 = 6;
    /// 16-bit trap gate.
    pub const TRAP_GATE16: u8 = 7;
    /// 32-bit (or 64-bit) TSS, available.
    pub const TSS_AVAIL: u8 = 9;
    /// 32-bit (or 64-bit) TSS, busy.
    pub const TSS_BUSY: u8 = 0xb;
    /// 32-bit (or 64-bit) call gate.
    pub const CALL_GATE: u8 = 0xc;
    /// 32-bit (or 64-bit) interrupt gate.
    pub const INT_GATE: u8 = 0xe;
    /// 32-bit (or 64-bit) trap gate.
    pub const TRAP_GATE: u8 = 0xf;
}

/// Code/data type bits (SDM Vol. 3A Table 3-1).
pub mod ty {
    /// Accessed.
    pub const ACCESSED: u8 = 1;
    /// Data: writable; code: readable.
    pub const RW: u8 = 2;
    /// Data: expand-down; code: conforming.
    pub const DC: u8 = 4;
    /// Code segment.
    pub const CODE: u8 = 8;
}

/// Whether `sel` is a null selector (index 0 in the GDT, any RPL).
#[inline]
pub fn is_null(sel: u16) -> bool {
    sel & 0xfffc == 0
}

/// The error code that names `sel` (its index and TI bit, RPL cleared).
#[inline]
pub fn err_code(sel: u16) -> u16 {
    sel & 0xfffc
}

/// Whether `s` describes a code segment.
#[inline]
pub fn is_code(s: &Segment) -> bool {
    s.s && s.type_ & ty::CODE != 0
}

/// Whether `s` is conforming code.
#[inline]
pub fn is_conforming(s: &Segment) -> bool {
    is_code(s) && s.type_ & ty::DC != 0
}

/// A system-structure linear address: 32 bits outside IA-32e mode.
#[inline]
pub fn sys_linear(cpu: &Cpu, addr: u64) -> u64 {
    if cpu.s.long_mode() {
        addr
    } else {
        addr & 0xffff_ffff
    }
}

/// The linear address of the `len`-byte descriptor named by `selector`
/// (GDT or LDT by its TI bit). #GP(selector) if it lies past the table's
/// limit or the LDT is unusable.
pub fn descriptor_address(cpu: &Cpu, selector: u16, len: u64) -> Result<u64, Fault> {
    let gp = Fault::GeneralProtection(err_code(selector));
    let (base, limit) = if selector & 4 != 0 {
        let l = &cpu.s.ldtr;
        if l.unusable || !l.present {
            return Err(gp);
        }
        (l.base, u64::from(l.limit))
    } else {
        (cpu.s.gdtr.base, u64::from(cpu.s.gdtr.limit))
    };
    let off = u64::from(selector & 0xfff8);
    if off + len - 1 > limit {
        return Err(gp);
    }
    Ok(sys_linear(cpu, base.wrapping_add(off)))
}

/// Whether a descriptor with low half `lo` is a system descriptor that
/// takes 16 bytes in IA-32e mode (LDT, TSS, call gate).
fn is_wide(cpu: &Cpu, lo: u64) -> bool {
    let t = ((lo >> 40) & 0xf) as u8;
    cpu.s.long_mode()
        && lo & DESC_S == 0
        && matches!(
            t,
            sys::LDT | sys::TSS_AVAIL | sys::TSS_BUSY | sys::CALL_GATE
        )
}

/// Reads the descriptor named by `selector`: the low 8 bytes and, for the
/// 16-byte system descriptors of IA-32e mode, the high 8 (else 0).
/// Descriptor-table reads are supervisor accesses.
pub fn read_descriptor(cpu: &mut Cpu, selector: u16) -> Result<(u64, u64), Fault> {
    let addr = descriptor_address(cpu, selector, 8)?;
    let lo = cpu.read_system(addr, 8)?;
    if !is_wide(cpu, lo) {
        return Ok((lo, 0));
    }
    let addr = descriptor_address(cpu, selector, 16)?;
    let hi = cpu.read_system(addr.wrapping_add(8), 8)?;
    Ok((lo, hi))
}

/// The segment-register contents (visible selector and hidden part) a
/// descriptor loads as. For system descriptors `hi` supplies base bits
/// 63:32 (IA-32e mode); pass 0 otherwise.
pub fn descriptor_to_segment(selector: u16, lo: u64, hi: u64) -> Segment {
    let g = lo & (1 << 55) != 0;
    let raw_limit = ((lo & 0xffff) | ((lo >> 32) & 0xf_0000)) as u32;
    let limit = if g {
        (raw_limit << 12) | 0xfff
    } else {
        raw_limit
    };
    let s = lo & DESC_S != 0;
    let mut base = ((lo >> 16) & 0xff_ffff) | ((lo >> 32) & 0xff00_0000);
    if !s {
        base |= (hi & 0xffff_ffff) << 32;
    }
    Segment {
        base,
        limit,
        selector,
        type_: ((lo >> 40) & 0xf) as u8,
        present: lo & (1 << 47) != 0,
        dpl: ((lo >> 45) & 3) as u8,
        db: lo & (1 << 54) != 0,
        s,
        l: lo & (1 << 53) != 0,
        g,
        avl: lo & (1 << 52) != 0,
        unusable: false,
    }
}

/// Like [`read_descriptor`], but a selector outside its table yields
/// `None` instead of #GP (LAR, LSL, VERR, VERW). Null selectors too.
pub fn probe_descriptor(cpu: &mut Cpu, selector: u16) -> Result<Option<(u64, u64)>, Fault> {
    if is_null(selector) {
        return Ok(None);
    }
    let Ok(addr) = descriptor_address(cpu, selector, 8) else {
        return Ok(None);
    };
    let lo = cpu.read_system(addr, 8)?;
    if !is_wide(cpu, lo) {
        return Ok(Some((lo, 0)));
    }
    if descriptor_address(cpu, selector, 16).is_err() {
        return Ok(None);
    }
    let hi = cpu.read_system(addr.wrapping_add(8), 8)?;
    Ok(Some((lo, hi)))
}

/// Sets the accessed bit of the code/data descriptor named by `selector`
/// (whose low half is `lo`) if it is clear, as the CPU does on a load.
pub fn set_accessed(cpu: &mut Cpu, selector: u16, lo: u64) -> Result<(), Fault> {
    if lo & DESC_S == 0 || lo & DESC_ACCESSED != 0 {
        return Ok(());
    }
    let addr = descriptor_address(cpu, selector, 8)?;
    let byte = ((lo >> 40) & 0xff) | 1;
    cpu.write_system(addr.wrapping_add(5), 1, byte)
}

/// A null (unusable) segment register holding `selector`.
pub fn null_segment(selector: u16, dpl: u8) -> Segment {
    Segment {
        selector,
        dpl,
        unusable: true,
        ..Default::default()
    }
}

/// The segment a virtual-8086 mode load produces (SDM Vol. 3A §20.1.1):
/// base = selector << 4, 64 KiB, DPL 3, read/write (or code) accessed.
pub fn v86_segment(selector: u16, code: bool) -> Segment {
    Segment {
        dpl: 3,
        type_: if code { 0xb } else { 0x3 },
        ..Segment::real_mode(selector, code)
    }
}

/// How a stack-segment check reports a bad selector: #GP for MOV/POP SS,
/// RETF and IRET; #TS for a stack taken from the TSS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StackCheck {
    /// #GP(selector).
    Gp,
    /// #TS(selector).
    Ts,
}

/// Validates `selector` as the stack segment for privilege level `cpl`
/// (SDM MOV: RPL = DPL = CPL, writable data, present) and returns what SS
/// would hold; sets the descriptor's accessed bit. `null_ok` allows a null
/// selector (64-bit mode at CPL < 3), which yields an unusable SS.
pub fn check_stack_segment(
    cpu: &mut Cpu,
    selector: u16,
    cpl: u8,
    null_ok: bool,
    kind: StackCheck,
) -> Result<Segment, Fault> {
    let bad = |code: u16| match kind {
        StackCheck::Gp => Fault::GeneralProtection(code),
        StackCheck::Ts => Fault::InvalidTss(code),
    };
    if is_null(selector) {
        if null_ok && cpl < 3 && u8::try_from(selector & 3).ok() == Some(cpl) {
            return Ok(null_segment(selector, cpl));
        }
        return Err(bad(0));
    }
    let err = err_code(selector);
    if (selector & 3) as u8 != cpl {
        return Err(bad(err));
    }
    let (lo, hi) = read_descriptor(cpu, selector)?;
    let s = descriptor_to_segment(selector, lo, hi);
    if !s.s || is_code(&s) || s.type_ & ty::RW == 0 || s.dpl != cpl {
        return Err(bad(err));
    }
    if !s.present {
        return Err(Fault::StackFault(err));
    }
    set_accessed(cpu, selector, lo)?;
    Ok(Segment {
        type_: s.type_ | ty::ACCESSED,
        ..s
    })
}

/// Validates `selector` for DS, ES, FS or GS at the current CPL (SDM
/// MOV): readable data or readable code; DPL >= max(CPL, RPL) unless
/// conforming code; present. A null selector yields an unusable register
/// (Intel clears the base too).
pub fn check_data_segment(cpu: &mut Cpu, selector: u16) -> Result<Segment, Fault> {
    if is_null(selector) {
        return Ok(null_segment(selector, 0));
    }
    let err = err_code(selector);
    let (lo, hi) = read_descriptor(cpu, selector)?;
    let s = descriptor_to_segment(selector, lo, hi);
    let readable = s.s && (!is_code(&s) || s.type_ & ty::RW != 0);
    if !readable {
        return Err(Fault::GeneralProtection(err));
    }
    let rpl = (selector & 3) as u8;
    if !is_conforming(&s) && (rpl > s.dpl || cpu.s.cpl > s.dpl) {
        return Err(Fault::GeneralProtection(err));
    }
    if !s.present {
        return Err(Fault::SegmentNotPresent(err));
    }
    set_accessed(cpu, selector, lo)?;
    Ok(Segment {
        type_: s.type_ | ty::ACCESSED,
        ..s
    })
}

/// Loads segment register `seg_index` (not CS) with `selector`: MOV/POP
/// Sreg and LDS/LES/LFS/LGS/LSS. Loading SS inhibits interrupts for one
/// instruction (SDM Vol. 3A §6.8.3).
pub fn load_segment(cpu: &mut Cpu, seg_index: usize, selector: u16) -> Result<(), Fault> {
    if seg_index == seg::CS || seg_index > seg::GS {
        return Err(Fault::InvalidOpcode);
    }
    if !cpu.s.protected_mode() {
        // Real mode: only the selector and base change; the cached limit
        // and attributes stay (which is what "unreal mode" relies on).
        let s = &mut cpu.s.seg[seg_index];
        s.selector = selector;
        s.base = u64::from(selector) << 4;
        s.unusable = false;
        s.present = true;
    } else if cpu.s.v86_mode() {
        cpu.s.seg[seg_index] = v86_segment(selector, false);
    } else if seg_index == seg::SS {
        let null_ok = cpu.s.code_size() == crate::state::CodeSize::Bits64;
        let cpl = cpu.s.cpl;
        cpu.s.seg[seg::SS] = check_stack_segment(cpu, selector, cpl, null_ok, StackCheck::Gp)?;
    } else {
        cpu.s.seg[seg_index] = check_data_segment(cpu, selector)?;
    }
    if seg_index == seg::SS {
        cpu.s.interrupt_shadow = true;
        cpu.end_block = true;
    }
    Ok(())
}

/// After a return to an outer privilege level (RETF, IRET): DS, ES, FS and
/// GS that the new CPL may not use are nulled (SDM RET, IRET).
pub fn null_inaccessible_data_segments(cpu: &mut Cpu) {
    let cpl = cpu.s.cpl;
    for i in [seg::ES, seg::DS, seg::FS, seg::GS] {
        let s = &cpu.s.seg[i];
        let data_or_nonconforming = !is_code(s) || !is_conforming(s);
        if !s.unusable && s.dpl < cpl && data_or_nonconforming {
            let sel = s.selector;
            cpu.s.seg[i] = null_segment(sel & 0xfffc, 0);
        }
    }
}

/// A stack that far transfers and interrupt delivery push to or pop from
/// before it becomes SS:RSP (or that stays the current one); nothing is
/// committed until [`Stack::commit`].
#[derive(Clone, Copy, Debug)]
pub struct Stack {
    /// The stack segment.
    pub seg: Segment,
    /// The stack pointer.
    pub sp: u64,
    /// Address size in bytes: 2, 4, or 8 (64-bit mode: no segmentation).
    pub size: u8,
    /// Accesses are made with user privilege.
    pub user: bool,
    /// Error code of the #SS raised on a limit violation.
    pub err: u16,
}

impl Stack {
    /// The current SS:RSP.
    pub fn current(cpu: &Cpu) -> Stack {
        let size = cpu.s.stack_size();
        Stack {
            seg: cpu.s.seg[seg::SS],
            sp: cpu.s.read_gpr(reg::RSP, size, false),
            size,
            user: cpu.user(),
            err: 0,
        }
    }

    /// A stack that is not SS yet: `seg` with `sp`, accessed at `cpl`.
    /// `long64` selects 64-bit addressing (no limit checks).
    pub fn new(seg: Segment, sp: u64, cpl: u8, long64: bool, err: u16) -> Stack {
        let size = if long64 {
            8
        } else if seg.db {
            4
        } else {
            2
        };
        Stack {
            seg,
            sp: sp & crate::flags::mask(size),
            size,
            user: cpl == 3,
            err,
        }
    }

    fn linear(&self, off: u64, len: u8) -> Result<u64, Fault> {
        let fault = Fault::StackFault(self.err);
        if self.size == 8 {
            return if crate::mem::canonical(off) {
                Ok(off)
            } else {
                Err(fault)
            };
        }
        let s = &self.seg;
        if s.unusable || !s.present {
            return Err(fault);
        }
        let last = off.wrapping_add(u64::from(len) - 1);
        let ok = if s.type_ & 0xc == 0x4 {
            let upper = if s.db { 0xffff_ffff } else { 0xffff };
            off > u64::from(s.limit) && last <= upper && last >= off
        } else {
            last <= u64::from(s.limit) && last >= off
        };
        if !ok {
            return Err(fault);
        }
        Ok(s.base.wrapping_add(off) & 0xffff_ffff)
    }

    /// Pushes `len` bytes of `value`.
    pub fn push(&mut self, cpu: &mut Cpu, len: u8, value: u64) -> Result<(), Fault> {
        let sp = self.sp.wrapping_sub(u64::from(len)) & crate::flags::mask(self.size);
        let lin = self.linear(sp, len)?;
        cpu.write_lin(lin, len, value, self.user)?;
        self.sp = sp;
        Ok(())
    }

    /// Pops `len` bytes.
    pub fn pop(&mut self, cpu: &mut Cpu, len: u8) -> Result<u64, Fault> {
        let lin = self.linear(self.sp, len)?;
        let v = cpu.read_lin(lin, len, self.user)?;
        self.skip(u64::from(len));
        Ok(v)
    }

    /// Reads `len` bytes `offset` bytes above the stack pointer.
    pub fn peek(&self, cpu: &mut Cpu, offset: u64, len: u8) -> Result<u64, Fault> {
        let off = self.sp.wrapping_add(offset) & crate::flags::mask(self.size);
        let lin = self.linear(off, len)?;
        cpu.read_lin(lin, len, self.user)
    }

    /// Releases `n` bytes (RETF imm16).
    pub fn skip(&mut self, n: u64) {
        self.sp = self.sp.wrapping_add(n) & crate::flags::mask(self.size);
    }

    /// Makes this stack's pointer RSP (SS is the caller's business).
    pub fn commit(&self, cpu: &mut Cpu) {
        cpu.s.write_gpr(reg::RSP, self.size, false, self.sp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use iced_x86::code_asm::*;

    const GDT: u64 = 0x3000;

    fn with_gdt(cpu: &mut Cpu, entries: &[u64]) {
        for (i, e) in entries.iter().enumerate() {
            cpu.machine
                .memory
                .write_u64(GDT + 8 * i as u64, *e)
                .unwrap();
        }
        cpu.s.gdtr.base = GDT;
        cpu.s.gdtr.limit = (entries.len() * 8 - 1) as u16;
    }

    const FLAT_CODE: u64 = 0x00cf_9a00_0000_ffff;
    const FLAT_DATA: u64 = 0x00cf_9200_0000_ffff;

    #[test]
    fn descriptors_decode_base_limit_and_attributes() {
        let s = descriptor_to_segment(0x10, 0x12cf_9234_5678_ffff, 0);
        assert_eq!(s.base, 0x1234_5678);
        assert_eq!(s.limit, 0xffff_ffff);
        assert!(s.present && s.s && s.db && s.g && !s.l);
        assert_eq!((s.type_, s.dpl), (2, 0));
        // A 64-bit TSS descriptor takes base bits 63:32 from the high half.
        let t = descriptor_to_segment(0x28, 0x0000_8900_1000_0067, 0xffff_8000);
        assert_eq!(t.base, 0xffff_8000_0000_1000);
        assert_eq!((t.type_, t.limit, t.s), (9, 0x67, false));
    }

    #[test]
    fn loading_a_data_selector_reads_the_gdt_and_sets_accessed() {
        let code = assemble(32, |a| {
            a.mov(ax, 0x10u32).unwrap();
            a.mov(es, ax).unwrap();
            a.nop().unwrap();
        });
        let mut cpu = cpu32(&code);
        with_gdt(&mut cpu, &[0, FLAT_CODE, 0x0040_9201_0000_00ff]);
        run_until(&mut cpu, CODE + code.len() as u64 - 1, 10);
        let e = cpu.s.seg[seg::ES];
        assert_eq!((e.selector, e.base, e.limit), (0x10, 0x10000, 0xff));
        let desc = cpu.machine.memory.read_u64(GDT + 0x10).unwrap();
        assert_ne!(desc & DESC_ACCESSED, 0);
    }

    #[test]
    fn a_selector_past_the_gdt_limit_raises_gp_with_the_selector() {
        let code = assemble(32, |a| {
            a.mov(ax, 0x18u32).unwrap();
            a.mov(ds, ax).unwrap();
        });
        let mut cpu = cpu32(&code);
        with_gdt(&mut cpu, &[0, FLAT_CODE, FLAT_DATA]);
        cpu.run_block(1).unwrap();
        assert_eq!(
            cpu.run_block(1),
            Err(Fault::GeneralProtection(0x18)),
            "index 3 is past a 3-entry GDT"
        );
    }

    #[test]
    fn stack_segment_rules_reject_read_only_data_and_null() {
        let mut cpu = cpu32(&[]);
        // 0x10: read-only data; 0x18: writable data.
        with_gdt(&mut cpu, &[0, FLAT_CODE, 0x00cf_9000_0000_ffff, FLAT_DATA]);
        assert_eq!(
            load_segment(&mut cpu, seg::SS, 0x10),
            Err(Fault::GeneralProtection(0x10))
        );
        assert_eq!(
            load_segment(&mut cpu, seg::SS, 0),
            Err(Fault::GeneralProtection(0))
        );
        assert!(!cpu.s.interrupt_shadow);
        load_segment(&mut cpu, seg::SS, 0x18).unwrap();
        assert!(cpu.s.interrupt_shadow, "a load of SS blocks interrupts");
        load_segment(&mut cpu, seg::DS, 0).unwrap();
        assert!(cpu.s.seg[seg::DS].unusable, "null DS is allowed");
    }

    #[test]
    fn a_not_present_data_segment_raises_np() {
        let mut cpu = cpu32(&[]);
        with_gdt(&mut cpu, &[0, FLAT_CODE, FLAT_DATA & !(1 << 47)]);
        assert_eq!(
            load_segment(&mut cpu, seg::DS, 0x10),
            Err(Fault::SegmentNotPresent(0x10))
        );
        // RPL 3 > DPL 0 is a privilege violation.
        with_gdt(&mut cpu, &[0, FLAT_CODE, FLAT_DATA]);
        assert_eq!(
            load_segment(&mut cpu, seg::DS, 0x13),
            Err(Fault::GeneralProtection(0x10))
        );
    }

    #[test]
    fn real_mode_loads_keep_the_cached_limit() {
        let mut cpu = cpu16(&[]);
        cpu.s.seg[seg::DS].limit = 0xffff_ffff;
        load_segment(&mut cpu, seg::DS, 0x1234).unwrap();
        let d = cpu.s.seg[seg::DS];
        assert_eq!((d.base, d.limit), (0x12340, 0xffff_ffff));
    }

    #[test]
    fn null_ss_is_allowed_in_64_bit_mode_at_cpl_0() {
        let mut cpu = cpu64(&[]);
        load_segment(&mut cpu, seg::SS, 0).unwrap();
        assert!(cpu.s.seg[seg::SS].unusable);
        assert!(cpu.s.interrupt_shadow);
    }
}
