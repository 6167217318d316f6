//! Translating one decoded block ([`crate::code::Block`]) to host code.
//!
//! A translation has this shape:
//!
//! ```text
//! entry:    for each page of the block: is its CodePages word still the
//!           generation decoded?            else exit Stale
//! chained:  attention byte set?            else exit Attention
//!           budget -= instructions;        < 0: exit Budget
//!           the instructions, in order (native, glue, or a helper call)
//!           the fallthrough exit
//! stubs:    slow paths, side exits, chain stubs, lookup misses
//! ```
//!
//! Jumps from a block into a block on the same page go to `chained`: the
//! page was checked when the run entered it (a store to it from this vCPU
//! leaves translated code at once; another vCPU's store is seen at the
//! next entry, like cross-modifying code on real CPUs, which must
//! serialize before running the new code: SDM Vol. 3A §8.1.3).
//!
//! Each instruction is planned ([`Plan`]) before anything is emitted, so
//! the flag liveness pass ([`super::flags::live_after`]) sees the block.

use iced_x86::{Encoder, FlowControl, InstructionInfoFactory, Mnemonic};

use super::emit::{at, Alu, Asm, Cond, Label};
use super::flags::{live_after, FlagState, FlagUse, ARITH};
use super::frame::{off, Exit, BUDGET_XMM, JUMP_CACHE_ENTRIES, MAX_COUNT};
use super::glue::Glue;
use super::helpers::site_info;
use super::memory::{Access, PushValue};
use super::native::{self, Native};
use super::regs::{guest_gpr, home, host, CTX, T0, T1};
use crate::code::{Block, CodePages, Decoded, CODE_BIT};
use crate::exec::{self, LinkEffect};
use crate::mem::canonical;
use crate::state::reg;

/// How one decoded instruction is translated.
#[derive(Clone, Debug)]
pub(super) enum Plan {
    /// No effect (NOP, ENDBR64, prefetches).
    Skip,
    /// Runs as itself.
    Native(Native),
    /// LEA: the address computation without an access.
    Lea,
    /// PUSH r64, PUSH imm.
    Push(PushValue),
    /// POP r64.
    Pop(usize),
    /// JMP rel to a canonical target.
    Jmp(u64),
    /// Jcc rel (64-bit, canonical target).
    Jcc(Cond, u64),
    /// A CMP/TEST fused with the Jcc after it ([`Decoded::fused`]).
    CmpJcc(Native, Cond, u64),
    /// CALL rel32.
    Call(u64),
    /// RET, RET imm16.
    Ret(u16),
    /// JMP r/m64, CALL r/m64 (`call`), target in a register or memory.
    Indirect { call: bool },
    /// Runs in the interpreter; `always_exit`: leave translated code after.
    Helper { always_exit: bool },
}

/// Out-of-line code emitted after the block body.
enum Stub {
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
    /// A lookup miss at T1; for a non-canonical target the interpreter
    /// runs the branch `d` (after RSP moves back by `rsp_undo`).
    Miss {
        at: Label,
        check: Option<(*const Decoded, u64, i32)>,
    },
}

/// A finished translation.
pub(super) struct Translation {
    /// The code, to be placed at the address it was emitted for.
    pub code: Vec<u8>,
    /// Offset of the entry for chained jumps from the same page.
    pub chained: usize,
}

/// The translator's state for one block.
pub(super) struct Translator<'a> {
    pub(super) a: Asm,
    pub(super) user: bool,
    pub(super) flags: FlagState,
    glue: Glue,
    code: &'a CodePages,
    block: &'a Block,
    /// Cache offset the code starts at (patch sites are recorded as cache
    /// offsets).
    start: usize,
    /// Instructions charged to the budget so far: the end of the current
    /// segment (a segment ends after each side exit, so a taken side exit
    /// owes nothing back).
    charged: u32,
    /// Where the segments end (in retired instructions), in order.
    segments: Vec<u32>,
    /// Instructions retired before the current one.
    done: u32,
    stubs: Vec<Stub>,
    enc: &'a mut Encoder,
}

/// The frame home of guest XMM register `n` (16-byte aligned).
fn xmm_home(n: u8) -> super::emit::Mem {
    at(CTX, (off::XMM + 16 * usize::from(n & 15)) as i32)
}

/// The budget operand for `n` instructions.
fn count(n: usize) -> super::emit::Mem {
    at(CTX, (off::COUNTS + 16 * n.min(MAX_COUNT)) as i32)
}

/// Plans `d` (64-bit code; `sse`: SSE instructions may run natively).
fn plan(d: &Decoded, info: &mut InstructionInfoFactory, sse: bool) -> Plan {
    let insn = &d.insn;
    let helper = |insn: &iced_x86::Instruction| Plan::Helper {
        always_exit: exec::lookup(insn).1 == LinkEffect::DropsLinks
            || !matches!(insn.flow_control(), FlowControl::Next),
    };
    if d.fused {
        let cc = Cond::from_iced(exec::fast::condition(d.ops.cc));
        return match (native::classify(insn, info, false), cc) {
            (Some(n), Some(cc)) if n.mem.is_none() => Plan::CmpJcc(n, cc, d.ops.mem.disp),
            _ => Plan::Helper { always_exit: true },
        };
    }
    if native::is_skipped(insn) {
        return Plan::Skip;
    }
    use iced_x86::Code as C;
    let reg0 = || guest_gpr(insn.op0_register()).map(|(g, _)| g);
    match insn.code() {
        C::Push_r64 => {
            return reg0().map_or_else(|| helper(insn), |g| Plan::Push(PushValue::Reg(g)))
        }
        C::Pop_r64 => return reg0().map_or_else(|| helper(insn), Plan::Pop),
        C::Pushq_imm8 | C::Pushq_imm32 => return Plan::Push(PushValue::Imm(insn.immediate(0))),
        C::Call_rel32_64 if canonical(insn.near_branch_target()) => {
            return Plan::Call(insn.near_branch_target())
        }
        C::Retnq => return Plan::Ret(0),
        C::Retnq_imm16 => return Plan::Ret(insn.immediate16()),
        C::Jmp_rel8_64 | C::Jmp_rel32_64 if canonical(insn.near_branch_target()) => {
            return Plan::Jmp(insn.near_branch_target())
        }
        C::Jmp_rm64 | C::Call_rm64 => {
            let ok = match insn.op0_kind() {
                iced_x86::OpKind::Register => reg0().is_some(),
                iced_x86::OpKind::Memory => insn.memory_size().size() == 8,
                _ => false,
            };
            if ok && !insn.has_lock_prefix() {
                return Plan::Indirect {
                    call: insn.code() == C::Call_rm64,
                };
            }
            return helper(insn);
        }
        _ => {}
    }
    if insn.flow_control() == FlowControl::ConditionalBranch
        && exec::fast::flow::is_fast_jcc(insn, 64)
    {
        if let Some(cc) = Cond::from_iced(insn.condition_code()) {
            return Plan::Jcc(cc, insn.near_branch_target());
        }
    }
    if insn.mnemonic() == Mnemonic::Lea
        && matches!(insn.op0_kind(), iced_x86::OpKind::Register)
        && !insn.has_lock_prefix()
        && reg0().is_some()
    {
        return Plan::Lea;
    }
    match native::classify(insn, info, sse) {
        Some(n) => Plan::Native(n),
        None => helper(insn),
    }
}

/// How a planned instruction uses the flags.
fn flag_use(p: &Plan, d: &Decoded) -> FlagUse {
    match p {
        Plan::Skip | Plan::Lea => FlagUse::default(),
        Plan::Native(n) => FlagUse::native(&d.insn, n.mem.is_some()),
        Plan::Jcc(..) => FlagUse {
            reads: ARITH,
            glue: true,
            ..FlagUse::default()
        },
        Plan::CmpJcc(..) => FlagUse {
            writes: ARITH,
            ..FlagUse::default()
        },
        _ => FlagUse::glue(),
    }
}

/// Translates `block` for `mode`, as code that will run at cache
/// offset `start` (host address `base`). `None` if it cannot be (the
/// block then stays with the interpreter).
#[allow(clippy::too_many_arguments)]
pub(super) fn translate(
    block: &Block,
    mode: super::Mode,
    code: &CodePages,
    glue: Glue,
    start: usize,
    base: u64,
    enc: &mut Encoder,
    info: &mut InstructionInfoFactory,
) -> Option<Translation> {
    let plans: Vec<Plan> = block
        .insns
        .iter()
        .map(|d| plan(d, info, mode.sse))
        .collect();
    // Not worth it: the first instruction leaves translated code at once.
    if let Some(Plan::Helper { always_exit: true }) = plans.first() {
        return None;
    }
    let uses: Vec<FlagUse> = plans
        .iter()
        .zip(&block.insns)
        .map(|(p, d)| flag_use(p, d))
        .collect();
    let live = live_after(&uses);
    let mut segments = Vec::new();
    let mut n = 0;
    for (i, (d, p)) in block.insns.iter().zip(&plans).enumerate() {
        n += 1 + u32::from(d.fused);
        if matches!(p, Plan::Jcc(..) | Plan::CmpJcc(..)) && i + 1 < block.insns.len() {
            segments.push(n);
        }
    }
    segments.push(n);
    let mut t = Translator {
        a: Asm::new(base),
        user: mode.user,
        flags: FlagState::at_entry(),
        glue,
        code,
        block,
        start,
        charged: 0,
        segments,
        done: 0,
        stubs: Vec::new(),
        enc,
    };
    let chained = t.entry();
    let mut ended = false;
    for ((d, p), live) in block.insns.iter().zip(&plans).zip(&live) {
        ended = t.insn(d, p, *live)?;
        t.done += 1 + u32::from(d.fused);
        if ended {
            break;
        }
    }
    if !ended {
        let last = block.insns.last()?;
        if !t.flags.save(&mut t.a) {
            return None;
        }
        t.goto(last.next_rip, last.rip);
    }
    t.emit_stubs()?;
    Some(Translation {
        code: t.a.finish()?,
        chained,
    })
}

impl Translator<'_> {
    /// The entry: the code-page checks (the entry the run loop and the
    /// lookup cache use), then the chained entry, which charges the first
    /// segment to the budget. Returns the chained entry's offset.
    fn entry(&mut self) -> usize {
        let rip = self.block.rip;
        let stale = self.a.label();
        for &(page, generation) in &self.block.pages[..usize::from(self.block.page_count)] {
            self.a.mov_imm64(T0, self.code.word(page) as u64);
            self.a
                .alu_mi(Alu::Cmp, 4, at(T0, 0), (generation | CODE_BIT) as i32);
            self.a.jcc(Cond::Ne, stale);
        }
        self.stubs.push(Stub::Exit {
            at: stale,
            rip,
            reason: Exit::Stale,
            adj: 0,
        });
        let chained = self.a.len();
        self.charge();
        chained
    }

    /// Charges the next segment to the budget (`PSUBQ` leaves RFLAGS
    /// alone).
    fn charge(&mut self) {
        let Some(&end) = self.segments.iter().find(|&&e| e > self.charged) else {
            return;
        };
        self.a
            .psubq(BUDGET_XMM, count((end - self.charged) as usize));
        self.charged = end;
    }

    /// Before a branch that may close a loop (backward, or indirect): leave
    /// if the attention byte is set or the budget ran out, continuing at
    /// `target` (or the guest RIP in T1). Every cycle of linked blocks has
    /// such a branch, so runs stay bounded and interrupts get in. The
    /// flags must be in the image.
    fn poll(&mut self, target: Option<u64>) {
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

    /// The `info` word of a helper call for `d`.
    fn info(&self, always_exit: bool) -> u64 {
        site_info(self.done, self.charged, always_exit)
    }

    /// Budget to give back when leaving after `retired` more instructions.
    fn adj(&self, retired: u32) -> i64 {
        i64::from(self.charged) - i64::from(self.done + retired)
    }

    /// A slow path for `d` resuming at a fresh label (bound by the caller
    /// with [`Translator::resume`]).
    fn slow(&mut self, d: &Decoded) -> (Label, Label) {
        let at = self.a.label();
        let resume = self.a.label();
        self.stubs.push(Stub::Slow {
            at,
            d,
            info: self.info(false),
            restore: false,
            resume: Some(resume),
        });
        (at, resume)
    }

    /// A slow path for a branch `d`: the interpreter runs it and it
    /// always leaves translated code.
    fn slow_exit(&mut self, d: &Decoded) -> Label {
        let at = self.a.label();
        self.stubs.push(Stub::Slow {
            at,
            d,
            info: self.info(true),
            restore: false,
            resume: None,
        });
        at
    }

    /// Binds `resume` after a fast path; the slow path restores the host
    /// flags where the fast path has them and they are live.
    fn resume(&mut self, resume: Label, live: u32) {
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

    /// Emits one instruction; returns whether the block ended with it.
    fn insn(&mut self, d: &Decoded, p: &Plan, live: u32) -> Option<bool> {
        match p {
            Plan::Skip => Some(false),
            Plan::Native(n) => {
                if !self.native(d, n, live)? {
                    self.helper(d, false)?;
                }
                Some(false)
            }
            Plan::Lea => {
                self.lea(d)?;
                Some(false)
            }
            Plan::Push(v) => {
                let (slow, resume) = self.slow(d);
                self.emit_push(*v, slow)?;
                self.resume(resume, live);
                Some(false)
            }
            Plan::Pop(g) => {
                let (slow, resume) = self.slow(d);
                self.emit_pop(*g, slow)?;
                self.resume(resume, live);
                Some(false)
            }
            Plan::Jcc(cc, target) => self.jcc(*cc, *target, d),
            Plan::CmpJcc(n, cc, target) => {
                if !self.native(d, n, live)? {
                    return None;
                }
                // The pair retires as two: the Jcc is the second.
                self.done += 1;
                let ended = self.jcc(*cc, *target, d);
                self.done -= 1;
                ended
            }
            Plan::Jmp(target) => {
                if !self.flags.save(&mut self.a) {
                    return None;
                }
                self.goto(*target, d.rip);
                Some(true)
            }
            Plan::Call(target) => {
                let slow = self.slow_exit(d);
                self.emit_push(PushValue::Imm(d.next_rip), slow)?;
                self.goto(*target, d.rip);
                Some(true)
            }
            Plan::Ret(imm) => {
                let slow = self.slow_exit(d);
                self.emit_stack_top(slow)?;
                self.a.load(8, T1, at(T1, 0));
                let rsp = host(reg::RSP)?;
                let pop = 8 + i32::from(*imm);
                self.a.lea(8, rsp, at(rsp, pop));
                self.lookup(Some((d, -pop)));
                Some(true)
            }
            Plan::Indirect { call } => {
                self.indirect(d, *call)?;
                Some(true)
            }
            Plan::Helper { always_exit } => {
                self.helper(d, *always_exit)?;
                Some(*always_exit)
            }
        }
    }

    /// Runs `d` in the interpreter.
    fn helper(&mut self, d: &Decoded, always_exit: bool) -> Option<()> {
        if !self.flags.save(&mut self.a) {
            return None;
        }
        self.call_helper(d, self.info(always_exit));
        self.flags.clobbered();
        Some(())
    }

    fn call_helper(&mut self, d: *const Decoded, info: u64) {
        self.a.mov_imm64(T0, d as u64);
        self.a.mov_imm(T1, info);
        self.a.call_abs(self.glue.thunk);
    }

    /// A native instruction with its probe; `Some(false)` if the host
    /// cannot encode it (nothing emitted then).
    fn native(&mut self, d: &Decoded, n: &Native, live: u32) -> Option<bool> {
        let insn = &d.insn;
        let u = FlagUse::native(insn, n.mem.is_some());
        // Encode first (for an address that does not matter: the result
        // has no relative operand) to know the host can run it.
        if native::encode(self.enc, insn, n, 0).is_none() {
            return Some(false);
        }
        let mut code = self.enc.take_buffer();
        let slow = match n.mem {
            Some(m) => {
                let (slow, resume) = self.slow(d);
                self.emit_access(insn, m.access, m.size, m.align, slow)?;
                Some(resume)
            }
            None => None,
        };
        if u.needs_host(live) && !self.flags.restore(&mut self.a) {
            return None;
        }
        for &(g, t, _) in &n.temps {
            self.a.load(8, t, home(g));
        }
        for x in &n.xmms {
            if x.load {
                self.a.movaps_load(x.host, xmm_home(x.guest));
            }
        }
        self.a.bytes(&code);
        code.clear();
        self.enc.set_buffer(code);
        for &(g, t, written) in &n.temps {
            if written {
                self.a.store(8, home(g), t);
            }
        }
        for x in &n.xmms {
            if x.store {
                self.a.movaps_store(xmm_home(x.guest), x.host);
            }
        }
        if u.writes != 0 {
            self.flags.written();
        }
        if let Some(resume) = slow {
            self.resume(resume, live);
        }
        Some(true)
    }

    /// LEA: T1 = the address, then into the destination at its size.
    fn lea(&mut self, d: &Decoded) -> Option<()> {
        let insn = &d.insn;
        let (g, _) = guest_gpr(insn.op0_register())?;
        let size = insn.op0_register().size() as u8;
        self.emit_ea(insn, false)?;
        match host(g) {
            Some(h) => self.a.mov_rr(size, h, T1),
            None => {
                if size == 4 {
                    self.a.mov_rr(4, T1, T1);
                }
                self.a.store(if size == 2 { 2 } else { 8 }, home(g), T1);
            }
        }
        Some(())
    }

    /// A Jcc (after its CMP/TEST for a fused pair; `done` counts the pair's
    /// first instruction).
    fn jcc(&mut self, cc: Cond, target: u64, d: &Decoded) -> Option<bool> {
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
    fn indirect(&mut self, d: &Decoded, call: bool) -> Option<()> {
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
    fn emit_stubs(&mut self) -> Option<()> {
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
    fn jump_cache(&self) -> usize {
        off::JUMP_CACHE
            + usize::from(self.user)
                * JUMP_CACHE_ENTRIES
                * std::mem::size_of::<super::frame::JumpEntry>()
    }

    /// Budget += `adj` (instructions charged at the entry but not run).
    fn give_back(&mut self, adj: i64) {
        if adj > 0 {
            self.a.paddq(BUDGET_XMM, count(adj as usize));
        }
    }

    fn store_exit_rip(&mut self, rip: u64) {
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
    fn exit(&mut self, rip: u64, reason: Exit, adj: i64) {
        self.give_back(adj);
        self.store_exit_rip(rip);
        self.a
            .store_imm(8, at(CTX, off::EXIT_REASON as i32), reason as i32);
        self.a.jmp_abs(self.glue.epilogue);
    }

    /// Leaves translated code for the guest RIP in T1.
    fn exit_t1(&mut self, reason: Exit) {
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
    fn lookup(&mut self, check: Option<(&Decoded, i32)>) {
        const N: usize = JUMP_CACHE_ENTRIES;
        self.poll(None);
        let miss = self.a.label();
        // T0 = jump_index(T1) * 16.
        self.a.mov_rr(4, T0, T1);
        self.a.shift_ri(super::emit::Shift::Shl, 4, T0, 4);
        self.a.alu_rr(Alu::Xor, 4, T0, T1);
        self.a.alu_ri(Alu::And, 4, T0, ((N - 1) << 4) as i32);
        self.a.alu_rm(
            Alu::Cmp,
            8,
            T1,
            super::emit::at_index(CTX, T0, self.jump_cache() as i32),
        );
        self.a.jcc(Cond::Ne, miss);
        self.a.jmp_m(super::emit::at_index(
            CTX,
            T0,
            (self.jump_cache() + 8) as i32,
        ));
        let check = check.map(|(d, undo)| (d as *const Decoded, self.info(true), undo));
        self.stubs.push(Stub::Miss { at: miss, check });
    }
}
