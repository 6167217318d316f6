//! Branches, exits and out-of-line code of a translation: direct and
//! conditional branches (chained, [`super::chain`]), indirect branches and
//! returns (the lookup cache), the polls that bound a run, slow paths into
//! the interpreter, and the stubs that leave translated code (emulator
//! machinery; SDM Vol. 1 §6.3 for the branches themselves).

use super::emit::{at, Alu, Cond, Label};
use super::flags::FlagState;
use super::frame::{off, Exit, BUDGET_XMM, JUMP_CACHE_ENTRIES};
use super::memory::{Access, PushValue};
use super::regs::{guest_gpr, home, host, CTX, T0, T1};
use super::translate::{count, Translator};
use crate::code::Decoded;
use crate::state::reg;

/// Out-of-line code emitted after the block body.
pub(super) enum Stub {
    /// Leave translated code: budget += `adj`, continue at `rip`.
    Exit {
        at: Label,
        rip: u64,
        reason: Exit,
        adj: i64,
    },
    /// The interpreter runs `d`, then the block goes on at `resume`.
    Slow {
        at: Label,
        d: *const Decoded,
        info: u64,
        restore: bool,
        resume: Option<Label>,
    },
    /// A taken side exit: save the flags if needed, account, go.
    SideExit {
        at: Label,
        target: u64,
        from: u64,
        adj: i64,
        save: bool,
    },
    /// A direct branch to this page not linked yet: a patchable jump.
    Chain { at: Label, rip: u64, field: usize },
    /// Leave for the guest RIP in T1.
    ExitT1 { at: Label, reason: Exit },
    /// A supervisor probe's miss: look in the TLB's AC sets if SMAP lets
    /// the access through with RFLAGS.AC (`memory.rs`), continuing at `hit`
    /// or `slow`.
    AcProbe {
        at: Label,
        hit: Label,
        slow: Label,
        access: Access,
        size: u8,
    },
    /// A lookup miss at T1; for a non-canonical target the interpreter
    /// runs the branch `d` (after RSP moves back by `rsp_undo`).
    Miss {
        at: Label,
        check: Option<(*const Decoded, u64, i32)>,
    },
}

impl Translator<'_> {
    /// Before a branch that may close a loop (backward, or indirect): leave
    /// if the attention byte is set or the budget ran out, continuing at
    /// `target` (or the guest RIP in T1). Every cycle of linked blocks has
    /// such a branch, so runs stay bounded and interrupts get in. The
    /// flags must be in the image.
    pub(super) fn poll(&mut self, target: Option<u64>) {
        let attention = self.a.label();
        let budget = self.a.label();
        self.a.load(8, T0, at(CTX, off::ATTENTION as i32));
        self.a.cmp_mi8(at(T0, 0), 0);
        self.a.jcc(Cond::Ne, attention);
        self.a.movmskpd(T0, BUDGET_XMM);
        self.a.test_ri8(T0, 1);
        self.a.jcc(Cond::Ne, budget);
        for (at, reason) in [(attention, Exit::Attention), (budget, Exit::Budget)] {
            self.stubs.push(match target {
                Some(rip) => Stub::Exit {
                    at,
                    rip,
                    reason,
                    adj: 0,
                },
                None => Stub::ExitT1 { at, reason },
            });
        }
    }

    /// A slow path for `d` resuming at a fresh label (bound by the caller
    /// with [`Translator::resume`]).
    pub(super) fn slow(&mut self, d: &Decoded) -> (Label, Label) {
        let at = self.a.label();
        let resume = self.a.label();
        self.stubs.push(Stub::Slow {
            at,
            d,
            info: self.info(d, false),
            restore: false,
            resume: Some(resume),
        });
        (at, resume)
    }

    /// A slow path for a branch `d`: the interpreter runs it and it
    /// always leaves translated code.
    pub(super) fn slow_exit(&mut self, d: &Decoded) -> Label {
        let at = self.a.label();
        self.stubs.push(Stub::Slow {
            at,
            d,
            info: self.info(d, true),
            restore: false,
            resume: None,
        });
        at
    }

    /// Binds `resume` after a fast path; the slow path restores the host
    /// flags where the fast path has them and they are live.
    pub(super) fn resume(&mut self, resume: Label, live: u32) {
        self.a.bind(resume);
        let restore = self.flags.host_valid && live != 0;
        for s in self.stubs.iter_mut().rev() {
            if let Stub::Slow {
                resume: Some(r),
                restore: rs,
                ..
            } = s
            {
                if *r == resume {
                    *rs = restore;
                    break;
                }
            }
        }
        let slow = FlagState {
            host_valid: restore,
            clean: true,
        };
        self.flags = self.flags.meet(slow);
    }

    /// A Jcc (after its CMP/TEST for a fused pair; `done` counts the pair's
    /// first instruction).
    pub(super) fn jcc(&mut self, cc: Cond, target: u64, d: &Decoded) -> Option<bool> {
        if !self.flags.restore(&mut self.a) {
            return None;
        }
        let last = std::ptr::eq(d, self.block.insns.last()?);
        if last && !self.flags.save(&mut self.a) {
            return None;
        }
        let taken = self.a.label();
        self.a.jcc(cc, taken);
        self.stubs.push(Stub::SideExit {
            at: taken,
            target,
            from: d.rip,
            adj: self.adj(1),
            save: !self.flags.clean,
        });
        if last {
            let adj = self.adj(1);
            self.give_back(adj);
            self.goto(d.next_rip, d.rip);
        } else {
            self.charge();
        }
        Some(last)
    }

    /// JMP/CALL r/m64: T1 = the target; a call then pushes the return
    /// address (the target waits in the frame's scratch slot).
    pub(super) fn indirect(&mut self, d: &Decoded, call: bool) -> Option<()> {
        let insn = &d.insn;
        let slow = self.slow_exit(d);
        if !self.flags.save(&mut self.a) {
            return None;
        }
        if insn.op0_kind() == iced_x86::OpKind::Memory {
            self.emit_ea(insn, true)?;
            self.emit_probe(Access::Read, 8, 0, slow);
            self.a.load(8, T1, at(T1, 0));
        } else {
            let (g, _) = guest_gpr(insn.op0_register())?;
            match host(g) {
                Some(h) => self.a.mov_rr(8, T1, h),
                None => self.a.load(8, T1, home(g)),
            }
        }
        self.flags.clobbered();
        let mut undo = 0;
        if call {
            self.a.store(8, at(CTX, off::SCRATCH as i32), T1);
            self.emit_push(PushValue::Imm(d.next_rip), slow)?;
            self.a.load(8, T1, at(CTX, off::SCRATCH as i32));
            undo = 8;
        }
        self.lookup(Some((d, undo)));
        Some(())
    }

    /// Emits the out-of-line stubs (which may add more).
    pub(super) fn emit_stubs(&mut self) -> Option<()> {
        while let Some(s) = self.stubs.pop() {
            match s {
                Stub::Exit {
                    at: l,
                    rip,
                    reason,
                    adj,
                } => {
                    self.a.bind(l);
                    self.exit(rip, reason, adj);
                }
                Stub::Slow {
                    at: l,
                    d,
                    info,
                    restore,
                    resume,
                } => {
                    self.a.bind(l);
                    self.call_helper(d, info);
                    match resume {
                        Some(r) => {
                            if restore {
                                super::flags::emit_restore(&mut self.a);
                            }
                            self.a.jmp(r);
                        }
                        None => self.a.int3(),
                    }
                }
                Stub::SideExit {
                    at: l,
                    target,
                    from,
                    adj,
                    save,
                } => {
                    self.a.bind(l);
                    if save {
                        super::flags::emit_save(&mut self.a);
                    }
                    self.give_back(adj);
                    self.goto(target, from);
                }
                Stub::Chain { at: l, rip, field } => {
                    self.a.bind(l);
                    self.store_exit_rip(rip);
                    self.a
                        .store_imm(8, at(CTX, off::EXIT_PATCH as i32), field as i32);
                    self.a
                        .store_imm(8, at(CTX, off::EXIT_REASON as i32), Exit::Chain as i32);
                    self.a.jmp_abs(self.glue.epilogue);
                }
                Stub::AcProbe {
                    at: l,
                    hit,
                    slow,
                    access,
                    size,
                } => {
                    self.a.bind(l);
                    self.emit_ac_probe(access, size, hit, slow);
                }
                Stub::ExitT1 { at: l, reason } => {
                    self.a.bind(l);
                    self.exit_t1(reason);
                }
                Stub::Miss { at: l, check } => {
                    self.a.bind(l);
                    if let Some((d, info, undo)) = check {
                        // Non-canonical: bits 63:47 not all equal.
                        let bad = self.a.label();
                        self.a.mov_rr(8, T0, T1);
                        self.a.shift_ri(super::emit::Shift::Sar, 8, T0, 47);
                        self.a.alu_ri(Alu::Add, 8, T0, 1);
                        self.a.alu_ri(Alu::Cmp, 8, T0, 1);
                        self.a.jcc(Cond::A, bad);
                        self.exit_t1(Exit::Indirect);
                        self.a.bind(bad);
                        if undo != 0 {
                            let rsp = host(reg::RSP)?;
                            self.a.lea(8, rsp, at(rsp, undo));
                        }
                        self.call_helper(d, info);
                        self.a.int3();
                    } else {
                        self.exit_t1(Exit::Indirect);
                    }
                }
            }
        }
        Some(())
    }

    /// The offset of this privilege's lookup cache in the frame.
    pub(super) fn jump_cache(&self) -> usize {
        off::JUMP_CACHE
            + usize::from(self.user)
                * JUMP_CACHE_ENTRIES
                * std::mem::size_of::<super::frame::JumpEntry>()
    }

    /// Budget += `adj` (instructions charged at the entry but not run).
    pub(super) fn give_back(&mut self, adj: i64) {
        if adj > 0 {
            self.a.paddq(BUDGET_XMM, count(adj as usize));
        }
    }

    pub(super) fn store_exit_rip(&mut self, rip: u64) {
        match i32::try_from(rip as i64) {
            Ok(v) => self.a.store_imm(8, at(CTX, off::EXIT_RIP as i32), v),
            Err(_) => {
                self.a.mov_imm(T0, rip);
                self.a.store(8, at(CTX, off::EXIT_RIP as i32), T0);
            }
        }
    }

    /// Leaves translated code (flags in the image): budget += `adj`,
    /// continue at `rip`.
    pub(super) fn exit(&mut self, rip: u64, reason: Exit, adj: i64) {
        self.give_back(adj);
        self.store_exit_rip(rip);
        self.a
            .store_imm(8, at(CTX, off::EXIT_REASON as i32), reason as i32);
        self.a.jmp_abs(self.glue.epilogue);
    }

    /// Leaves translated code for the guest RIP in T1.
    pub(super) fn exit_t1(&mut self, reason: Exit) {
        self.a.store(8, at(CTX, off::EXIT_RIP as i32), T1);
        self.a
            .store_imm(8, at(CTX, off::EXIT_REASON as i32), reason as i32);
        self.a.jmp_abs(self.glue.epilogue);
    }

    /// Continues at guest `target` from the branch at `from` (flags in the
    /// image, budget settled): a patchable jump on this page, else the
    /// lookup cache.
    pub(super) fn goto(&mut self, target: u64, from: u64) {
        if target & !0xfff == self.block.rip & !0xfff {
            if target <= from {
                self.poll(Some(target));
            }
            let stub = self.a.label();
            let field = self.start + self.a.len() + 1;
            self.a.jmp(stub);
            self.stubs.push(Stub::Chain {
                at: stub,
                rip: target,
                field,
            });
        } else {
            self.a.mov_imm(T1, target);
            self.lookup(None);
        }
    }

    /// Jumps to the translation of the guest RIP in T1 through the lookup
    /// cache. `check`: a branch whose non-canonical target faults in the
    /// interpreter (with how far to move RSP back first).
    pub(super) fn lookup(&mut self, check: Option<(&Decoded, i32)>) {
        self.poll(None);
        let miss = self.a.label();
        // T0 = jump_set(T1) * 32, then the two ways.
        self.a.imul_ri(4, T0, T1, super::frame::JUMP_HASH as i32);
        self.a.shift_ri(
            super::emit::Shift::Shr,
            4,
            T0,
            (27 - super::frame::JUMP_BITS) as u8,
        );
        self.a
            .alu_ri(Alu::And, 4, T0, ((super::frame::JUMP_SETS - 1) << 5) as i32);
        let jc = self.jump_cache() as i32;
        let second = self.a.label();
        self.a
            .alu_rm(Alu::Cmp, 8, T1, super::emit::at_index(CTX, T0, jc));
        self.a.jcc(Cond::Ne, second);
        self.a.jmp_m(super::emit::at_index(CTX, T0, jc + 8));
        self.a.bind(second);
        self.a
            .alu_rm(Alu::Cmp, 8, T1, super::emit::at_index(CTX, T0, jc + 16));
        self.a.jcc(Cond::Ne, miss);
        self.a.jmp_m(super::emit::at_index(CTX, T0, jc + 24));
        let check = check.map(|(d, undo)| (d as *const Decoded, self.info(d, true), undo));
        self.stubs.push(Stub::Miss { at: miss, check });
    }
}
