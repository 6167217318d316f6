//! CMP/TEST fused with the 64-bit Jcc that follows it (SDM Vol. 2 "CMP",
//! "TEST", "Jcc"; the fusion is the emulator's, like the macro-fusion of
//! Intel cores, and is invisible to the guest).
//!
//! A compare-and-branch pair is the commonest two-instruction sequence in
//! branchy code. When a block has a register-only CMP or TEST (no memory
//! operand, so it cannot fault) directly followed by a specialized 64-bit
//! Jcc, [`fuse`] turns the pair into one [`Decoded`] that does both: it
//! records the compare's flags exactly as the CMP/TEST handler does, then
//! branches as the Jcc would. The pair retires as two instructions.
//!
//! The fused entry keeps the CMP/TEST's RIP, instruction and generic
//! handler, and its branch target is kept in `ops.mem.disp` (register
//! forms have no memory operand). Where a single instruction must run on
//! its own (an interrupt shadow), the run loop runs the generic handler
//! of the entry, which is the CMP/TEST alone (see `Cpu::run_insns`).

use iced_x86::{Instruction, Mnemonic};

use super::{condition, rd, Exec, Operands, IMM, REG};
use crate::code::Decoded;
use crate::fault::Fault;
use crate::flags::FlagOp;
use crate::Cpu;

/// Fuses `jcc` (a specialized 64-bit Jcc, whose decoded form is
/// `jcc_d`) into `prev` if `prev` is a register-only CMP/TEST with a
/// specialized handler, directly before it. Returns whether it did.
pub fn fuse(prev: &mut Decoded, jcc: &Instruction, jcc_d: &Decoded) -> bool {
    let insn = prev.insn;
    if prev.fused || !jcc_d.chains || insn.has_lock_prefix() {
        return false;
    }
    let test = match insn.mnemonic() {
        Mnemonic::Cmp => false,
        Mnemonic::Test => true,
        _ => return false,
    };
    let mut ops = Operands {
        imm: 0,
        mem: super::NO_MEM,
        r0: super::NO_REG,
        r1: super::NO_REG,
        cc: 0,
    };
    if super::select(&insn, 64, &mut ops).is_none() || ops != prev.ops {
        return false;
    }
    let Some(src) = register_form(&insn, &ops) else {
        return false;
    };
    let size = super::super::operand::op_size(&insn, 0);
    let Some(exec) = pick(test, src, size, jcc.condition_code() as u8) else {
        return false;
    };
    prev.exec = exec;
    prev.ops.mem.disp = jcc_d.ops.imm;
    prev.ops.cc = jcc_d.ops.cc;
    prev.next_rip = jcc_d.next_rip;
    prev.chains = true;
    prev.fused = true;
    true
}

/// REG or IMM if `insn` is `op r, r` or `op r, imm` (as resolved in `ops`).
fn register_form(insn: &Instruction, ops: &Operands) -> Option<u8> {
    use iced_x86::OpKind;
    if insn.op_count() != 2 || insn.op_kind(0) != OpKind::Register || ops.r0 == super::NO_REG {
        return None;
    }
    match insn.op_kind(1) {
        OpKind::Register if ops.r1 != super::NO_REG => Some(REG),
        OpKind::Memory | OpKind::Register => None,
        _ => Some(IMM),
    }
}

fn pick(test: bool, src: u8, size: u8, cc: u8) -> Option<Exec> {
    if !matches!(size, 1 | 2 | 4 | 8) || !(1..=16).contains(&cc) {
        return None;
    }
    macro_rules! by_cc {
        ($test:expr, $src:expr, $size:expr) => {
            match cc {
                1 => cmp_jcc::<$test, $src, $size, 1> as Exec,
                2 => cmp_jcc::<$test, $src, $size, 2>,
                3 => cmp_jcc::<$test, $src, $size, 3>,
                4 => cmp_jcc::<$test, $src, $size, 4>,
                5 => cmp_jcc::<$test, $src, $size, 5>,
                6 => cmp_jcc::<$test, $src, $size, 6>,
                7 => cmp_jcc::<$test, $src, $size, 7>,
                8 => cmp_jcc::<$test, $src, $size, 8>,
                9 => cmp_jcc::<$test, $src, $size, 9>,
                10 => cmp_jcc::<$test, $src, $size, 10>,
                11 => cmp_jcc::<$test, $src, $size, 11>,
                12 => cmp_jcc::<$test, $src, $size, 12>,
                13 => cmp_jcc::<$test, $src, $size, 13>,
                14 => cmp_jcc::<$test, $src, $size, 14>,
                15 => cmp_jcc::<$test, $src, $size, 15>,
                _ => cmp_jcc::<$test, $src, $size, 16>,
            }
        };
    }
    macro_rules! by_size {
        ($test:expr, $src:expr) => {
            match size {
                1 => by_cc!($test, $src, 1),
                2 => by_cc!($test, $src, 2),
                4 => by_cc!($test, $src, 4),
                _ => by_cc!($test, $src, 8),
            }
        };
    }
    Some(match (test, src) {
        (false, REG) => by_size!(false, REG),
        (false, _) => by_size!(false, IMM),
        (true, REG) => by_size!(true, REG),
        (true, _) => by_size!(true, IMM),
    })
}

/// CMP/TEST r, r/imm of `SIZE` bytes, then Jcc `CC` to `ops.mem.disp`.
fn cmp_jcc<const TEST: bool, const SRC: u8, const SIZE: u8, const CC: u8>(
    cpu: &mut Cpu,
    d: &Decoded,
) -> Result<(), Fault> {
    let a = rd::<SIZE>(cpu, d.ops.r0);
    let b = if SRC == REG {
        rd::<SIZE>(cpu, d.ops.r1)
    } else {
        d.ops.imm
    };
    if TEST {
        cpu.s
            .flags
            .set_result(FlagOp::Logic, SIZE, a, b, a & b, false);
    } else {
        cpu.s
            .flags
            .set_result(FlagOp::Sub, SIZE, a, b, a.wrapping_sub(b), false);
    }
    // The Jcc retires too.
    cpu.icount += 1;
    if cpu.s.flags.cond(condition(CC)) {
        cpu.next_rip = d.ops.mem.disp;
        cpu.end_block = true;
    }
    Ok(())
}
