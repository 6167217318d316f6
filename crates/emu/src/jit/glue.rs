//! The shared glue at the start of every code cache: the trampoline that
//! enters translated code from Rust, the epilogue every exit goes through,
//! the thunk through which translated code calls the interpreter
//! ([`super::helpers::run_insn`]), and the routines that look in the TLB's
//! AC sets for supervisor probes that missed ([`super::memory`]).
//!
//! The host ABI is System V AMD64: RBX, RBP, R12-R15 are callee-saved,
//! RSP is 16-byte aligned at a call, DF is clear. Translated code keeps
//! guest values in callee-saved and caller-saved registers alike
//! ([`super::regs`]), so the thunk stores every mapped guest register in
//! the frame before calling Rust and reloads them after (the interpreter
//! reads and writes them there anyway), and the budget register
//! ([`super::frame::BUDGET_XMM`]).

use super::cache::CodeCache;
use super::emit::{at, Asm, Reg};
use super::frame::{off, BUDGET_XMM};
use super::memory::{emit_ac_probe_routine, Access, AC_PROBE_SIZES};
use super::regs::{home, mapped, CTX, T0, T1};

/// Addresses of the glue in one code cache.
#[derive(Clone, Copy, Debug)]
pub struct Glue {
    /// `extern "sysv64" fn(frame: *mut Frame, entry: u64)`: loads the
    /// guest registers from the frame and jumps to `entry`.
    pub enter: u64,
    /// Stores the mapped guest registers in the frame and returns from
    /// `enter` (exit stubs jump here with the exit fields set).
    pub epilogue: u64,
    /// Called with T0 = `&Decoded` and T1 = the site's info: runs the
    /// instruction in the interpreter; returns to the caller, or leaves
    /// through `epilogue_nosave` if the helper asks to.
    pub thunk: u64,
    /// The routines that look for a supervisor access in the TLB's AC sets
    /// after a probe missed, by [`super::memory::Access`] and operand size
    /// ([`super::memory::AC_PROBE_SIZES`]): see
    /// [`super::memory::emit_ac_probe_routine`].
    pub ac_probe: [[u64; AC_PROBE_SIZES.len()]; 2],
}

/// Callee-saved host registers, in push order.
const SAVED: [Reg; 6] = [Reg::RBX, Reg::RBP, Reg::R12, Reg::R13, Reg::R14, Reg::R15];

fn store_guest_regs(a: &mut Asm) {
    for (g, h) in mapped() {
        a.store(8, home(g), h);
    }
}

fn load_guest_regs(a: &mut Asm) {
    for (g, h) in mapped() {
        a.load(8, h, home(g));
    }
}

/// Emits the glue into an empty `cache` and seals it there.
pub fn emit(cache: &mut CodeCache) -> Option<Glue> {
    let mut a = Asm::new(cache.next_addr());
    let budget = at(CTX, off::BUDGET as i32);

    // enter(frame = RDI, entry = RSI). On entry RSP = 8 mod 16; six
    // pushes and 8 bytes of padding make it 0 mod 16 for translated code.
    let enter = a.here();
    for r in SAVED {
        a.push(r);
    }
    a.alu_ri(super::emit::Alu::Sub, 8, Reg::RSP, 8);
    a.store(8, at(Reg::RDI, off::HOST_RSP as i32), Reg::RSP);
    a.mov_rr(8, CTX, Reg::RDI);
    a.mov_rr(8, T0, Reg::RSI);
    a.movq_load(BUDGET_XMM, budget);
    load_guest_regs(&mut a);
    a.jmp_r(T0);

    let epilogue = a.here();
    store_guest_regs(&mut a);
    a.movq_store(budget, BUDGET_XMM);
    let epilogue_nosave = a.here();
    a.load(8, Reg::RSP, at(CTX, off::HOST_RSP as i32));
    a.alu_ri(super::emit::Alu::Add, 8, Reg::RSP, 8);
    for r in SAVED.iter().rev() {
        a.pop(*r);
    }
    a.ret();

    // The thunk: RSP = 8 mod 16 here (called from aligned code).
    let thunk = a.here();
    store_guest_regs(&mut a);
    a.movq_store(budget, BUDGET_XMM);
    a.mov_rr(8, Reg::RDI, CTX);
    a.mov_rr(8, Reg::RSI, T0);
    a.mov_rr(8, Reg::RDX, T1);
    a.alu_ri(super::emit::Alu::Sub, 8, Reg::RSP, 8);
    a.mov_imm64(Reg::RAX, super::helpers::run_insn as *const () as u64);
    a.call_r(Reg::RAX);
    a.alu_ri(super::emit::Alu::Add, 8, Reg::RSP, 8);
    a.movq_load(BUDGET_XMM, budget);
    a.test_rr(4, Reg::RAX, Reg::RAX);
    a.jcc_abs(super::emit::Cond::Ne, epilogue_nosave);
    load_guest_regs(&mut a);
    a.ret();

    let mut ac_probe = [[0; AC_PROBE_SIZES.len()]; 2];
    for (access, routines) in [Access::Read, Access::Write].into_iter().zip(&mut ac_probe) {
        for (size, routine) in AC_PROBE_SIZES.into_iter().zip(routines.iter_mut()) {
            *routine = a.here();
            emit_ac_probe_routine(&mut a, access, size);
        }
    }

    let code = a.finish()?;
    cache.push(&code)?;
    cache.seal_glue();
    Some(Glue {
        enter,
        epilogue,
        thunk,
        ac_probe,
    })
}
