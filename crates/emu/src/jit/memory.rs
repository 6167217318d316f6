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

use std::mem::offset_of;

use iced_x86::{Instruction, Register};

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
    Read,
    /// Written (maybe also read): the write set.
    Write,
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

const _: () = assert!(std::mem::size_of::<TlbEntry>() == 32);
const _: () = assert!(TLB_ENTRIES == 1024);
/// `(address >> 7) & INDEX_MASK` is the entry's offset in its set.
const INDEX_MASK: i32 = ((TLB_ENTRIES - 1) * 32) as i32;

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
        a.jcc(Cond::A, slow);
        a.alu_rm(
            Alu::Add,
            8,
            T1,
            at_index(CTX, T0, tlb(access, self.user, offset_of!(TlbEntry, host))),
        );
        if access == Access::Write {
            a.load(
                8,
                T0,
                at_index(CTX, T0, tlb(access, self.user, offset_of!(TlbEntry, code))),
            );
            // CODE_BIT is bit 31 of the little-endian word: bit 7 of byte 3.
            const _: () = assert!(crate::code::CODE_BIT == 1 << 31);
            a.test_mi8(at(T0, 3), 0x80);
            a.jcc(Cond::Ne, slow);
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
