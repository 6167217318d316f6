//! Guest memory accesses in translated code: effective addresses, the
//! inline probe of the software TLB, and the stack instructions built on
//! them (SDM Vol. 1 §3.7.5 "Specifying an offset", §6.2 "Stacks"; Vol.
//! 3A §3.4.4 on segments in 64-bit mode).
//!
//! Translated code runs 64-bit code only: CS, DS, ES and SS have base 0,
//! FS and GS add their base (kept in the frame), and there are no limits.
//! An access is a probe of the TLB entries [`crate::mmu::Mmu`] filled,
//! for the access kind and the privilege the block was translated for:
//!
//! ```text
//!     mov  t0, t1            ; t1 = linear address
//!     shr  t0, 7
//!     and  t0d, 0x7fe0       ; index * 32 (the entry size)
//!     sub  t1, [ctx + t0 + set + tag]
//!     cmp  t1, 0x1000 - size ; inside the entry's page, not crossing it?
//!     ja   slow
//!     add  t1, [ctx + t0 + set + host]
//! ```
//!
//! `address - tag` is below `0x1000 - size + 1` exactly when the entry maps
//! the address's page to RAM and the access does not run into the next
//! page: empty and MMIO entries carry tags of other indexes (see
//! [`crate::mmu::TlbEntry`]), and non-canonical addresses match nothing.
//! A store also tests the code bit of the page's [`crate::code::CodePages`]
//! word (code may have been decoded there after the write entry was made),
//! and a locked access or a 16-byte SSE operand its alignment. Everything else (a miss, MMIO,
//! crossing, a code page, a fault) is the slow path: the interpreter runs
//! the whole instruction ([`super::helpers`]).
//!
//! Supervisor code gets a second look on a miss, out of line: under
//! CR4.SMAP, an explicit access to a user-mode page with RFLAGS.AC = 1 (a
//! kernel copying from or to user memory between STAC and CLAC) is cached
//! only in the TLB's [`crate::mmu::AC_SETS`], never in the supervisor sets
//! (which every supervisor access may use). If the frame's
//! [`Frame::smap_ac`](super::frame::Frame::smap_ac) says AC applies now,
//! the probe is repeated there (the linear address comes back by adding
//! the first entry's tag again), by a routine in the glue the miss calls
//! (a copy per site made translations a third larger); otherwise, or on a
//! second miss, the slow path runs. Without it each such access ran in the interpreter, which
//! made a 512-byte `read` from `/dev/zero` take 60 % longer under SMAP.

use std::mem::offset_of;

use iced_x86::{Instruction, Register};

use super::branch::Stub;
use super::emit::{at, at_index, Alu, Cond, Label, Mem, Reg, Shift};
use super::frame::off;
use super::regs::{guest_gpr, home, host, CTX, T0, T1};
use super::translate::Translator;
use crate::mmu::{TlbEntry, TlbTable, TLB_ENTRIES};
use crate::state::reg;

/// How an instruction touches its memory operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Read only: the read set of the TLB.
    Read = 0,
    /// Written (maybe also read): the write set.
    Write = 1,
}

/// The displacement of field `field` of TLB set `kind * 2 + user` from
/// [`CTX`].
fn tlb(access: Access, user: bool, field: usize) -> i32 {
    let set = match access {
        Access::Read => 0,
        Access::Write => 2,
    } + usize::from(user);
    (offset_of!(TlbTable, sets) + set * TLB_ENTRIES * std::mem::size_of::<TlbEntry>() + field)
        as i32
}

/// The displacement of field `field` of the [`crate::mmu::AC_SETS`] set
/// for `access` from [`CTX`].
fn ac_tlb(access: Access, field: usize) -> i32 {
    let set = crate::mmu::AC_SETS
        + match access {
            Access::Read => crate::mmu::AccessKind::Read as usize,
            Access::Write => crate::mmu::AccessKind::Write as usize,
        };
    (offset_of!(TlbTable, sets) + set * TLB_ENTRIES * std::mem::size_of::<TlbEntry>() + field)
        as i32
}

const _: () = assert!(std::mem::size_of::<TlbEntry>() == 32);
const _: () = assert!(TLB_ENTRIES == 1024);
/// `(address >> 7) & INDEX_MASK` is the entry's offset in its set.
const INDEX_MASK: i32 = ((TLB_ENTRIES - 1) * 32) as i32;

/// The operand sizes the glue has an AC-set probe routine for, in the
/// order of [`super::glue::Glue::ac_probe`].
pub(super) const AC_PROBE_SIZES: [u8; 6] = [1, 2, 4, 8, 16, 32];

/// The index of `size` in [`AC_PROBE_SIZES`].
fn ac_probe_class(size: u8) -> Option<usize> {
    AC_PROBE_SIZES.iter().position(|&s| s == size)
}

/// Emits the glue routine that gives a supervisor probe for `access` of
/// `size` bytes its second look, in the AC set. Called with T0 = the
/// entry's offset in its set and T1 = address - the supervisor entry's
/// tag (as the probe left them); returns with ZF = 1 and the host address
/// in T1 if the frame says SMAP lets explicit accesses through with
/// RFLAGS.AC now and the AC set maps the address (with, for a store, no
/// decoded code on the page); with ZF = 0 otherwise. Clobbers T0.
pub(super) fn emit_ac_probe_routine(a: &mut super::emit::Asm, access: Access, size: u8) {
    let miss = a.label();
    a.cmp_mi8(at(CTX, off::SMAP_AC as i32), 0);
    a.jcc(Cond::E, miss);
    // Back to the linear address, then the AC set's entry.
    a.alu_rm(
        Alu::Add,
        8,
        T1,
        at_index(CTX, T0, tlb(access, false, offset_of!(TlbEntry, tag))),
    );
    a.alu_rm(
        Alu::Sub,
        8,
        T1,
        at_index(CTX, T0, ac_tlb(access, offset_of!(TlbEntry, tag))),
    );
    a.alu_ri(Alu::Cmp, 8, T1, 0x1000 - i32::from(size));
    a.jcc(Cond::A, miss);
    a.alu_rm(
        Alu::Add,
        8,
        T1,
        at_index(CTX, T0, ac_tlb(access, offset_of!(TlbEntry, host))),
    );
    if access == Access::Write {
        emit_code_test(a, ac_tlb(access, offset_of!(TlbEntry, code)), miss);
    }
    a.alu_rr(Alu::Cmp, 8, T0, T0); // ZF = 1
    a.ret();
    a.bind(miss);
    a.test_rr(8, super::emit::Reg::RSP, super::emit::Reg::RSP); // ZF = 0
    a.ret();
}

/// A store's test of the code bit of the page's [`crate::code::CodePages`]
/// word, whose address is the TLB entry field at `code` (from [`CTX`], T0
/// the entry's offset): set, the store goes to `slow`. Clobbers T0.
fn emit_code_test(a: &mut super::emit::Asm, code: i32, slow: Label) {
    a.load(8, T0, at_index(CTX, T0, code));
    // CODE_BIT is bit 31 of the little-endian word: bit 7 of byte 3.
    const _: () = assert!(crate::code::CODE_BIT == 1 << 31);
    a.test_mi8(at(T0, 3), 0x80);
    a.jcc(Cond::Ne, slow);
}

/// A guest register as an emitter register: its host register, or the
/// scratch register `spill` loaded from its frame home.
fn reg_or_load(t: &mut Translator, g: usize, spill: Reg) -> Reg {
    match host(g) {
        Some(h) => h,
        None => {
            t.a.load(8, spill, home(g));
            spill
        }
    }
}

impl Translator<'_> {
    /// T1 = the effective address (offset) of `insn`'s memory operand, and
    /// with `segments` its linear address (FS/GS base added). Only
    /// `LEA` passes `segments = false`. Uses T0. `None` for forms this
    /// does not handle.
    pub(super) fn emit_ea(&mut self, insn: &Instruction, segments: bool) -> Option<()> {
        let base = insn.memory_base();
        let index = insn.memory_index();
        let disp = insn.memory_displacement64();
        let addr32 = crate::exec::operand::address_size(insn) == 4;
        if matches!(base, Register::RIP | Register::EIP) {
            self.a.mov_imm(T1, disp);
        } else if base == Register::None && index == Register::None {
            // An absolute address (moffs or [disp32]).
            self.a.mov_imm(T1, disp);
        } else {
            let b = match base {
                Register::None => None,
                r => Some(reg_or_load(self, guest_gpr(r)?.0, T1)),
            };
            let i = match index {
                Register::None => None,
                r => Some((
                    reg_or_load(self, guest_gpr(r)?.0, T0),
                    insn.memory_index_scale().trailing_zeros() as u8,
                )),
            };
            let m = Mem {
                base: b,
                index: i,
                disp: disp as i32,
            };
            let size = if addr32 { 4 } else { 8 };
            if !addr32 && i32::try_from(disp as i64).is_err() {
                return None;
            }
            self.a.lea(size, T1, m);
        }
        if segments {
            let s = insn.memory_segment();
            if matches!(s, Register::FS | Register::GS) {
                let which = usize::from(s == Register::GS);
                self.a
                    .alu_rm(Alu::Add, 8, T1, at(CTX, (off::SEG_BASE + 8 * which) as i32));
            }
        }
        Some(())
    }

    /// The probe: T1 = linear address on entry, the host address on a hit;
    /// jumps to `slow` otherwise (also if `address & align` is not 0: a
    /// misaligned locked access, or an SSE operand that must be aligned).
    /// Clobbers T0 and RFLAGS.
    pub(super) fn emit_probe(&mut self, access: Access, size: u8, align: u8, slow: Label) {
        // Supervisor code looks in the AC sets on a miss (see above).
        let miss = if self.user { slow } else { self.a.label() };
        let a = &mut self.a;
        if align != 0 {
            a.test_ri8(T1, align);
            a.jcc(Cond::Ne, slow);
        }
        a.mov_rr(8, T0, T1);
        a.shift_ri(Shift::Shr, 8, T0, 7);
        a.alu_ri(Alu::And, 4, T0, INDEX_MASK);
        a.alu_rm(
            Alu::Sub,
            8,
            T1,
            at_index(CTX, T0, tlb(access, self.user, offset_of!(TlbEntry, tag))),
        );
        a.alu_ri(Alu::Cmp, 8, T1, 0x1000 - i32::from(size));
        a.jcc(Cond::A, miss);
        a.alu_rm(
            Alu::Add,
            8,
            T1,
            at_index(CTX, T0, tlb(access, self.user, offset_of!(TlbEntry, host))),
        );
        if access == Access::Write {
            let code = tlb(access, self.user, offset_of!(TlbEntry, code));
            emit_code_test(a, code, slow);
        }
        if !self.user {
            let hit = self.a.label();
            self.a.bind(hit);
            self.stubs.push(Stub::AcProbe {
                at: miss,
                hit,
                slow,
                access,
                size,
            });
        }
    }

    /// The out-of-line second look of a supervisor probe that missed:
    /// call the glue's routine for `access` and `size`
    /// ([`emit_ac_probe_routine`]), then continue at `hit` or `slow`.
    pub(super) fn emit_ac_probe(&mut self, access: Access, size: u8, hit: Label, slow: Label) {
        match ac_probe_class(size) {
            Some(class) => {
                self.a.call_abs(self.glue.ac_probe[access as usize][class]);
                self.a.jcc(Cond::E, hit);
                self.a.jmp(slow);
            }
            None => self.a.jmp(slow),
        }
    }

    /// Saves the flags, computes the operand's linear address and probes
    /// it: on the fast path T1 is the host address afterwards.
    pub(super) fn emit_access(
        &mut self,
        insn: &Instruction,
        access: Access,
        size: u8,
        align: u8,
        slow: Label,
    ) -> Option<()> {
        if !self.flags.save(&mut self.a) {
            return None;
        }
        self.emit_ea(insn, true)?;
        self.emit_probe(access, size, align, slow);
        self.flags.clobbered();
        Some(())
    }

    /// PUSH of `value` (a register or an immediate): probe RSP - 8 for a
    /// write, store, then move RSP. A miss runs the instruction `slow`.
    pub(super) fn emit_push(&mut self, value: PushValue, slow: Label) -> Option<()> {
        if !self.flags.save(&mut self.a) {
            return None;
        }
        let rsp = host(reg::RSP)?;
        self.a.lea(8, T1, at(rsp, -8));
        self.emit_probe(Access::Write, 8, 0, slow);
        self.flags.clobbered();
        match value {
            PushValue::Reg(g) => {
                let r = reg_or_load(self, g, T0);
                self.a.store(8, at(T1, 0), r);
            }
            PushValue::Imm(v) => match i32::try_from(v as i64) {
                Ok(imm) => self.a.store_imm(8, at(T1, 0), imm),
                Err(_) => {
                    self.a.mov_imm(T0, v);
                    self.a.store(8, at(T1, 0), T0);
                }
            },
        }
        self.a.lea(8, rsp, at(rsp, -8));
        Some(())
    }

    /// Probes the qword at RSP for a read: T1 = its host address on the
    /// fast path.
    pub(super) fn emit_stack_top(&mut self, slow: Label) -> Option<()> {
        if !self.flags.save(&mut self.a) {
            return None;
        }
        let rsp = host(reg::RSP)?;
        self.a.mov_rr(8, T1, rsp);
        self.emit_probe(Access::Read, 8, 0, slow);
        self.flags.clobbered();
        Some(())
    }

    /// POP r64: read the top, move RSP, then write the register (POP RSP
    /// keeps the value read).
    pub(super) fn emit_pop(&mut self, g: usize, slow: Label) -> Option<()> {
        self.emit_stack_top(slow)?;
        let rsp = host(reg::RSP)?;
        match host(g) {
            Some(h) if g == reg::RSP => self.a.load(8, h, at(T1, 0)),
            Some(h) => {
                self.a.load(8, h, at(T1, 0));
                self.a.lea(8, rsp, at(rsp, 8));
            }
            None => {
                self.a.load(8, T0, at(T1, 0));
                self.a.store(8, home(g), T0);
                self.a.lea(8, rsp, at(rsp, 8));
            }
        }
        Some(())
    }
}

/// What a PUSH pushes.
#[derive(Clone, Copy, Debug)]
pub enum PushValue {
    /// Guest GPR `n` (its value before the push).
    Reg(usize),
    /// A constant (a return address, an immediate).
    Imm(u64),
}
