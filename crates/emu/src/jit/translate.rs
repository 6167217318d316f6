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

use iced_x86::{
    Code, Encoder, FlowControl, Instruction, InstructionInfoFactory, Mnemonic, Register,
};

use super::branch::Stub;
use super::emit::{at, Alu, Asm, Cond};
use super::flags::{live_after, FlagState, FlagUse, ARITH};
use super::frame::{off, Exit, BUDGET_XMM, MAX_COUNT};
use super::glue::Glue;
use super::helpers::site_info;
use super::memory::PushValue;
use super::native::{self, Native, HOST_XMM, HOST_YMM};
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
    /// DIV/IDIV behind a guard against #DE ([`super::arith`]).
    Divide(super::arith::Divide),
    /// Runs in the interpreter; `always_exit`: leave translated code after.
    Helper { always_exit: bool },
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
    /// The translation's mode allows SSE: the guest's XMM registers live in
    /// the frame while it runs.
    pub(super) sse: bool,
    pub(super) flags: FlagState,
    pub(super) glue: Glue,
    pub(super) code: &'a CodePages,
    pub(super) block: &'a Block,
    /// Cache offset the code starts at (patch sites are recorded as cache
    /// offsets).
    pub(super) start: usize,
    /// Instructions charged to the budget so far: the end of the current
    /// segment (a segment ends after each side exit, so a taken side exit
    /// owes nothing back).
    pub(super) charged: u32,
    /// Where the segments end (in retired instructions), in order.
    pub(super) segments: Vec<u32>,
    /// Instructions retired before the current one.
    pub(super) done: u32,
    pub(super) stubs: Vec<Stub>,
    pub(super) enc: &'a mut Encoder,
}

/// The frame home of guest XMM register `n` (16-byte aligned).
pub(super) fn xmm_home(n: u8) -> super::emit::Mem {
    at(CTX, (off::XMM + 16 * usize::from(n & 15)) as i32)
}

/// The frame home of bits 255:128 of guest YMM register `n`, as an
/// iced-x86 memory operand (for the VEX loads and stores).
fn ymm_hi_home(n: u8) -> iced_x86::MemoryOperand {
    iced_x86::MemoryOperand::with_base_displ(
        Register::R15,
        (off::YMM_HI + 16 * usize::from(n & 15)) as i64,
    )
}

/// [`xmm_home`] as an iced-x86 memory operand.
fn xmm_home_iced(n: u8) -> iced_x86::MemoryOperand {
    iced_x86::MemoryOperand::with_base_displ(
        Register::R15,
        (off::XMM + 16 * usize::from(n & 15)) as i64,
    )
}

/// The budget operand for `n` instructions.
pub(super) fn count(n: usize) -> super::emit::Mem {
    at(CTX, (off::COUNTS + 16 * n.min(MAX_COUNT)) as i32)
}

/// Plans `d` (64-bit code; `mode` says whether SSE and VEX instructions
/// may run natively).
fn plan(d: &Decoded, info: &mut InstructionInfoFactory, mode: super::Mode) -> Plan {
    let insn = &d.insn;
    let helper = |insn: &iced_x86::Instruction| Plan::Helper {
        always_exit: exec::lookup(insn).1 == LinkEffect::DropsLinks
            || !matches!(insn.flow_control(), FlowControl::Next),
    };
    if d.fused {
        let cc = Cond::from_iced(exec::fast::condition(d.ops.cc));
        return match (native::classify(insn, info, false, false), cc) {
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
    if let Some(div) = super::arith::divide(insn) {
        return Plan::Divide(div);
    }
    if insn.mnemonic() == Mnemonic::Lea
        && matches!(insn.op0_kind(), iced_x86::OpKind::Register)
        && !insn.has_lock_prefix()
        && reg0().is_some()
    {
        return Plan::Lea;
    }
    match native::classify(insn, info, mode.sse, mode.avx) {
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
    let plans: Vec<Plan> = block.insns.iter().map(|d| plan(d, info, mode)).collect();
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
        sse: mode.sse,
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
    pub(super) fn entry(&mut self) -> usize {
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
    pub(super) fn charge(&mut self) {
        let Some(&end) = self.segments.iter().find(|&&e| e > self.charged) else {
            return;
        };
        self.a
            .psubq(BUDGET_XMM, count((end - self.charged) as usize));
        self.charged = end;
    }

    /// The `info` word of a helper call for `d`.
    pub(super) fn info(&self, d: &Decoded, always_exit: bool) -> u64 {
        let xmm = self.sse && crate::fpu::lookup(&d.insn).is_some();
        site_info(self.done, self.charged, always_exit, xmm)
    }

    /// Budget to give back when leaving after `retired` more instructions.
    pub(super) fn adj(&self, retired: u32) -> i64 {
        i64::from(self.charged) - i64::from(self.done + retired)
    }

    /// Emits one instruction; returns whether the block ended with it.
    pub(super) fn insn(&mut self, d: &Decoded, p: &Plan, live: u32) -> Option<bool> {
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
            Plan::Divide(div) => {
                self.divide(d, *div, live)?;
                Some(false)
            }
            Plan::Helper { always_exit } => {
                self.helper(d, *always_exit)?;
                Some(*always_exit)
            }
        }
    }

    /// Runs `d` in the interpreter.
    pub(super) fn helper(&mut self, d: &Decoded, always_exit: bool) -> Option<()> {
        if !self.flags.save(&mut self.a) {
            return None;
        }
        self.call_helper(d, self.info(d, always_exit));
        self.flags.clobbered();
        Some(())
    }

    pub(super) fn call_helper(&mut self, d: *const Decoded, info: u64) {
        self.a.mov_imm64(T0, d as u64);
        self.a.mov_imm(T1, info);
        self.a.call_abs(self.glue.thunk);
    }

    /// A native instruction with its probe; `Some(false)` if the host
    /// cannot encode it (nothing emitted then).
    pub(super) fn native(&mut self, d: &Decoded, n: &Native, live: u32) -> Option<bool> {
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
            if x.load && n.vex {
                self.vex_load(x.host, x.guest)?;
            } else if x.load {
                self.a.movaps_load(x.host, xmm_home(x.guest));
            }
        }
        self.a.bytes(&code);
        code.clear();
        self.enc.set_buffer(code);
        if native::zero_extend_after(insn) {
            let (g, _) = guest_gpr(insn.op0_register())?;
            let r = match host(g) {
                Some(h) => h,
                None => n.temps.iter().find(|t| t.0 == g)?.1,
            };
            self.a.mov_rr(4, r, r);
        }
        for &(g, t, written) in &n.temps {
            if written {
                self.a.store(8, home(g), t);
            }
        }
        for x in &n.xmms {
            if x.store && n.vex {
                self.vex_store(x.guest, x.host)?;
            } else if x.store {
                self.a.movaps_store(xmm_home(x.guest), x.host);
            }
        }
        if n.vex {
            // Leave no dirty upper YMM state behind for the legacy SSE
            // code around (a transition penalty on many hosts).
            self.iced(Instruction::with(Code::VEX_Vzeroupper))?;
        }
        if u.writes != 0 {
            self.flags.written();
        }
        if let Some(resume) = slow {
            self.resume(resume, live);
        }
        Some(true)
    }

    /// Emits one instruction encoded by iced-x86 (no RIP-relative
    /// operand: the bytes do not depend on where they land).
    fn iced(&mut self, i: Instruction) -> Option<()> {
        let mut buf = self.enc.take_buffer();
        buf.clear();
        self.enc.set_buffer(buf);
        let encoded = self.enc.encode(&i, 0);
        let mut bytes = self.enc.take_buffer();
        if encoded.is_ok() {
            self.a.bytes(&bytes);
        }
        bytes.clear();
        self.enc.set_buffer(bytes);
        encoded.ok().map(|_| ())
    }

    /// Loads guest YMM register `guest` whole into host YMM `host`:
    /// `vmovdqu xmm, [xmm home]`, `vinserti128 ymm, ymm, [ymm_hi home], 1`.
    fn vex_load(&mut self, host: u8, guest: u8) -> Option<()> {
        let (x, y) = (
            *HOST_XMM.get(usize::from(host))?,
            *HOST_YMM.get(usize::from(host))?,
        );
        self.iced(
            Instruction::with2(Code::VEX_Vmovdqu_xmm_xmmm128, x, xmm_home_iced(guest)).ok()?,
        )?;
        self.iced(
            Instruction::with4(
                Code::VEX_Vinserti128_ymm_ymm_xmmm128_imm8,
                y,
                y,
                ymm_hi_home(guest),
                1u32,
            )
            .ok()?,
        )
    }

    /// Stores host YMM `host` whole into guest YMM register `guest`.
    fn vex_store(&mut self, guest: u8, host: u8) -> Option<()> {
        let (x, y) = (
            *HOST_XMM.get(usize::from(host))?,
            *HOST_YMM.get(usize::from(host))?,
        );
        self.iced(
            Instruction::with2(Code::VEX_Vmovdqu_xmmm128_xmm, xmm_home_iced(guest), x).ok()?,
        )?;
        self.iced(
            Instruction::with3(
                Code::VEX_Vextracti128_xmmm128_ymm_imm8,
                ymm_hi_home(guest),
                y,
                1u32,
            )
            .ok()?,
        )
    }

    /// LEA: T1 = the address, then into the destination at its size.
    pub(super) fn lea(&mut self, d: &Decoded) -> Option<()> {
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
}
