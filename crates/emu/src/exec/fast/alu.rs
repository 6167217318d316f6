//! Specialized ALU handlers: ADD, ADC, SUB, SBB, AND, OR, XOR with a
//! register destination; CMP and TEST in every register/memory/immediate
//! form; INC/DEC of a register; SHL/SHR/SAR of a register by an
//! immediate or CL, ROL/ROR by an immediate; two-operand IMUL (SDM Vol. 2
//! pages of each). Each mirrors its generic handler in
//! [`crate::exec::alu`], [`crate::exec::shift`] and [`crate::exec::muldiv`].

use iced_x86::Mnemonic;

use super::{rd, sized, wr, Exec, Form, Operands, IMM, MEM, REG};
use crate::code::Decoded;
use crate::exec::alu::{compute, flag_op, ADC, ADD, AND, OR, SBB, SUB, XOR};
use crate::exec::shift::{rotate_flags, rotated, ROL, ROR};
use crate::fault::Fault;
use crate::flags::{sign_extend, FlagOp, CF, OF};
use crate::Cpu;

const SHL: u8 = 0;
const SHR: u8 = 1;
const SAR: u8 = 2;

/// The specialized handler for mnemonic `m` in form `f` with operand
/// size `size`, if there is one.
pub(crate) fn select(m: Mnemonic, f: Form, size: u8, _ops: &Operands) -> Option<Exec> {
    use Mnemonic as M;
    let op = match m {
        M::Add => ADD,
        M::Adc => ADC,
        M::Sub => SUB,
        M::Sbb => SBB,
        M::And => AND,
        M::Or => OR,
        M::Xor => XOR,
        M::Cmp => return compare(f, size, false),
        M::Test => return compare(f, size, true),
        M::Inc if f == Form::R => return Some(sized!(size, inc)),
        M::Dec if f == Form::R => return Some(sized!(size, dec)),
        M::Shl | M::Sal if f == Form::RI => return Some(sized!(size, shift, SHL, IMM)),
        M::Shr if f == Form::RI => return Some(sized!(size, shift, SHR, IMM)),
        M::Sar if f == Form::RI => return Some(sized!(size, shift, SAR, IMM)),
        // By CL: the second register operand can only be CL.
        M::Shl | M::Sal if f == Form::RR => return Some(sized!(size, shift, SHL, REG)),
        M::Shr if f == Form::RR => return Some(sized!(size, shift, SHR, REG)),
        M::Sar if f == Form::RR => return Some(sized!(size, shift, SAR, REG)),
        M::Rol if f == Form::RI => return Some(sized!(size, rotate, ROL)),
        M::Ror if f == Form::RI => return Some(sized!(size, rotate, ROR)),
        M::Imul if f == Form::RR && size > 1 => return Some(sized!(size, imul2, REG)),
        M::Imul if f == Form::RM && size > 1 => return Some(sized!(size, imul2, MEM)),
        _ => return None,
    };
    let src = match f {
        Form::RR => REG,
        Form::RI => IMM,
        Form::RM => MEM,
        _ => return None,
    };
    macro_rules! by_op {
        ($src:expr) => {
            match op {
                ADD => sized!(size, binop, ADD, $src),
                ADC => sized!(size, binop, ADC, $src),
                SUB => sized!(size, binop, SUB, $src),
                SBB => sized!(size, binop, SBB, $src),
                AND => sized!(size, binop, AND, $src),
                OR => sized!(size, binop, OR, $src),
                _ => sized!(size, binop, XOR, $src),
            }
        };
    }
    Some(match src {
        REG => by_op!(REG),
        IMM => by_op!(IMM),
        _ => by_op!(MEM),
    })
}

fn compare(f: Form, size: u8, test: bool) -> Option<Exec> {
    macro_rules! pick {
        ($h:ident) => {
            match f {
                Form::RR => sized!(size, $h, REG, REG),
                Form::RI => sized!(size, $h, REG, IMM),
                Form::RM => sized!(size, $h, REG, MEM),
                Form::MR => sized!(size, $h, MEM, REG),
                Form::MI => sized!(size, $h, MEM, IMM),
                Form::R => return None,
            }
        };
    }
    Some(if test { pick!(test_) } else { pick!(cmp) })
}

/// Operand `KIND`: `r` (register slot), the immediate or the memory
/// operand.
#[inline(always)]
fn operand<const KIND: u8, const SIZE: u8>(
    cpu: &mut Cpu,
    d: &Decoded,
    r: u8,
) -> Result<u64, Fault> {
    match KIND {
        REG => Ok(rd::<SIZE>(cpu, r)),
        IMM => Ok(d.ops.imm),
        _ => cpu.read_mem(&d.ops.mem),
    }
}

fn binop<const OP: u8, const SRC: u8, const SIZE: u8>(
    cpu: &mut Cpu,
    d: &Decoded,
) -> Result<(), Fault> {
    let src = operand::<SRC, SIZE>(cpu, d, d.ops.r1)?;
    let carry = (OP == ADC || OP == SBB) && cpu.s.flags.cf();
    let old = rd::<SIZE>(cpu, d.ops.r0);
    let res = compute::<OP>(old, src, carry);
    wr::<SIZE>(cpu, d.ops.r0, res);
    cpu.s
        .flags
        .set_result(flag_op::<OP>(), SIZE, old, src, res, carry);
    Ok(())
}

fn cmp<const DST: u8, const SRC: u8, const SIZE: u8>(
    cpu: &mut Cpu,
    d: &Decoded,
) -> Result<(), Fault> {
    let a = operand::<DST, SIZE>(cpu, d, d.ops.r0)?;
    let b = operand::<SRC, SIZE>(cpu, d, d.ops.r1)?;
    cpu.s
        .flags
        .set_result(FlagOp::Sub, SIZE, a, b, a.wrapping_sub(b), false);
    Ok(())
}

fn test_<const DST: u8, const SRC: u8, const SIZE: u8>(
    cpu: &mut Cpu,
    d: &Decoded,
) -> Result<(), Fault> {
    let a = operand::<DST, SIZE>(cpu, d, d.ops.r0)?;
    let b = operand::<SRC, SIZE>(cpu, d, d.ops.r1)?;
    cpu.s
        .flags
        .set_result(FlagOp::Logic, SIZE, a, b, a & b, false);
    Ok(())
}

fn inc<const SIZE: u8>(cpu: &mut Cpu, d: &Decoded) -> Result<(), Fault> {
    let old = rd::<SIZE>(cpu, d.ops.r0);
    let res = old.wrapping_add(1);
    wr::<SIZE>(cpu, d.ops.r0, res);
    cpu.s
        .flags
        .set_result(FlagOp::Inc, SIZE, old, 1, res, false);
    Ok(())
}

fn dec<const SIZE: u8>(cpu: &mut Cpu, d: &Decoded) -> Result<(), Fault> {
    let old = rd::<SIZE>(cpu, d.ops.r0);
    let res = old.wrapping_sub(1);
    wr::<SIZE>(cpu, d.ops.r0, res);
    cpu.s
        .flags
        .set_result(FlagOp::Dec, SIZE, old, 1, res, false);
    Ok(())
}

fn shift<const OP: u8, const SRC: u8, const SIZE: u8>(
    cpu: &mut Cpu,
    d: &Decoded,
) -> Result<(), Fault> {
    let count = if SRC == IMM {
        d.ops.imm
    } else {
        cpu.s.gpr[usize::from(d.ops.r1 & 15)]
    };
    let c = (count as u32) & if SIZE == 8 { 0x3f } else { 0x1f };
    let old = rd::<SIZE>(cpu, d.ops.r0);
    if c == 0 {
        // No flags change, but a 32-bit destination is still written.
        wr::<SIZE>(cpu, d.ops.r0, old);
        return Ok(());
    }
    let (res, op) = match OP {
        SHL => (old << c, FlagOp::Shl),
        SHR => (old >> c, FlagOp::Shr),
        _ => (((sign_extend(old, SIZE) as i64) >> c) as u64, FlagOp::Sar),
    };
    wr::<SIZE>(cpu, d.ops.r0, res);
    cpu.s
        .flags
        .set_result(op, SIZE, old, u64::from(c), res, false);
    Ok(())
}

/// ROL/ROR r, imm8: only CF and OF change (and only for a non-zero
/// masked count); the other flags keep their lazy record.
fn rotate<const OP: u8, const SIZE: u8>(cpu: &mut Cpu, d: &Decoded) -> Result<(), Fault> {
    let c = (d.ops.imm as u32) & if SIZE == 8 { 0x3f } else { 0x1f };
    let old = rd::<SIZE>(cpu, d.ops.r0);
    if c == 0 {
        wr::<SIZE>(cpu, d.ops.r0, old);
        return Ok(());
    }
    let (res, cf) = rotated::<OP>(old, c, SIZE, false);
    wr::<SIZE>(cpu, d.ops.r0, res);
    cpu.s
        .flags
        .set_arith(CF | OF, rotate_flags::<OP>(res, cf, SIZE));
    Ok(())
}

/// IMUL r, r/m (two operands): the truncated signed product, CF = OF =
/// "the product did not fit".
fn imul2<const SRC: u8, const SIZE: u8>(cpu: &mut Cpu, d: &Decoded) -> Result<(), Fault> {
    let b = if SRC == MEM {
        cpu.read_mem(&d.ops.mem)?
    } else {
        rd::<SIZE>(cpu, d.ops.r1)
    };
    let a = rd::<SIZE>(cpu, d.ops.r0);
    let (lo, overflow) = crate::exec::muldiv::imul_trunc(a, b, SIZE);
    wr::<SIZE>(cpu, d.ops.r0, lo);
    crate::exec::muldiv::mul_flags(cpu, SIZE, lo, overflow);
    Ok(())
}
