//! Specialized data-movement handlers: MOV between GPRs, immediates and
//! memory; MOVZX/MOVSX/MOVSXD; LEA (SDM Vol. 2 pages of each). Each mirrors
//! its generic handler in [`crate::exec::data`].

use iced_x86::{Instruction, Mnemonic};

use super::{ea, rd, sized, wr, Exec, Form};
use crate::code::Decoded;
use crate::fault::Fault;
use crate::flags::sign_extend;
use crate::Cpu;

/// The specialized handler for mnemonic `m` in form `f` with destination
/// size `size`, if there is one.
pub(crate) fn select(insn: &Instruction, m: Mnemonic, f: Form, size: u8) -> Option<Exec> {
    use Mnemonic as M;
    Some(match (m, f) {
        (M::Mov, Form::RR) => sized!(size, mov_rr),
        (M::Mov, Form::RI) => sized!(size, mov_ri),
        (M::Mov, Form::RM) => sized!(size, mov_rm),
        (M::Mov, Form::MR) => sized!(size, mov_mr),
        (M::Mov, Form::MI) => sized!(size, mov_mi),
        (M::Movzx | M::Movsx | M::Movsxd, Form::RR | Form::RM) => {
            let signed = m != M::Movzx;
            let src = crate::exec::operand::op_size(insn, 1);
            let mem = f == Form::RM;
            macro_rules! ext {
                ($signed:expr, $src:expr) => {
                    match (mem, size) {
                        (false, 2) => movx::<$signed, $src, false, 2> as Exec,
                        (false, 4) => movx::<$signed, $src, false, 4>,
                        (false, _) => movx::<$signed, $src, false, 8>,
                        (true, 2) => movx::<$signed, $src, true, 2>,
                        (true, 4) => movx::<$signed, $src, true, 4>,
                        (true, _) => movx::<$signed, $src, true, 8>,
                    }
                };
            }
            match (signed, src) {
                (false, 1) => ext!(false, 1),
                (false, 2) => ext!(false, 2),
                (true, 1) => ext!(true, 1),
                (true, 2) => ext!(true, 2),
                (true, 4) => ext!(true, 4),
                _ => return None,
            }
        }
        (M::Lea, Form::RM) if size >= 2 => sized!(size, lea),
        _ => return None,
    })
}

fn mov_rr<const SIZE: u8>(cpu: &mut Cpu, d: &Decoded) -> Result<(), Fault> {
    let v = rd::<SIZE>(cpu, d.ops.r1);
    wr::<SIZE>(cpu, d.ops.r0, v);
    Ok(())
}

fn mov_ri<const SIZE: u8>(cpu: &mut Cpu, d: &Decoded) -> Result<(), Fault> {
    wr::<SIZE>(cpu, d.ops.r0, d.ops.imm);
    Ok(())
}

fn mov_rm<const SIZE: u8>(cpu: &mut Cpu, d: &Decoded) -> Result<(), Fault> {
    let v = cpu.read_mem(&d.ops.mem)?;
    wr::<SIZE>(cpu, d.ops.r0, v);
    Ok(())
}

fn mov_mr<const SIZE: u8>(cpu: &mut Cpu, d: &Decoded) -> Result<(), Fault> {
    let v = rd::<SIZE>(cpu, d.ops.r1);
    cpu.write_mem(&d.ops.mem, v)
}

fn mov_mi<const SIZE: u8>(cpu: &mut Cpu, d: &Decoded) -> Result<(), Fault> {
    cpu.write_mem(&d.ops.mem, d.ops.imm)
}

fn movx<const SIGNED: bool, const SRC: u8, const MEM: bool, const SIZE: u8>(
    cpu: &mut Cpu,
    d: &Decoded,
) -> Result<(), Fault> {
    let v = if MEM {
        cpu.read_mem(&d.ops.mem)?
    } else {
        rd::<SRC>(cpu, d.ops.r1)
    };
    let v = if SIGNED { sign_extend(v, SRC) } else { v };
    wr::<SIZE>(cpu, d.ops.r0, v);
    Ok(())
}

fn lea<const SIZE: u8>(cpu: &mut Cpu, d: &Decoded) -> Result<(), Fault> {
    let a = ea(cpu, &d.ops.mem);
    wr::<SIZE>(cpu, d.ops.r0, a);
    Ok(())
}
