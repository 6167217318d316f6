//! SSE3 (SDM Vol. 1 §12.4; Vol. 2 for each instruction), the parts on XMM
//! registers (FISTTP, its x87 part, is in [`super::x87`]):
//!
//! | instruction | result |
//! |---|---|
//! | ADDSUBPS/ADDSUBPD | even lanes `a - b`, odd lanes `a + b` |
//! | HADDPS/HADDPD, HSUBPS/HSUBPD | sums/differences of adjacent lanes, the destination's pairs in the low lanes, the source's in the high |
//! | MOVSLDUP/MOVSHDUP | the source's even/odd singles, each twice |
//! | MOVDDUP | the source's low double, twice (a memory source is 8 bytes) |
//! | LDDQU | an unaligned 16-byte load |
//!
//! The arithmetic is the SSE lane arithmetic of [`super::sse_float`]:
//! MXCSR's rounding, DAZ/FTZ, NaN propagation and exception flags, with
//! no destination written when an unmasked exception is raised. MONITOR
//! and MWAIT are not implemented (CPUID.1:ECX.MONITOR stays clear).

use iced_x86::{Instruction, Mnemonic};
use rustc_apfloat::ieee::{Double, Single};

use super::access::{read_operand, xmm_index};
use super::check_sse;
use super::lanes::part;
use super::sse_float::{lane, Ctx, Op};
use crate::exec::HandlerEntry;
use crate::exec::LinkEffect::KeepsLinks;
use crate::fault::Fault;
use crate::Cpu;

/// The handler for `insn`, if it is an SSE3 instruction on XMM registers.
pub fn lookup(insn: &Instruction) -> Option<HandlerEntry> {
    use Mnemonic as M;
    Some(match insn.mnemonic() {
        M::Addsubps | M::Addsubpd | M::Haddps | M::Haddpd | M::Hsubps | M::Hsubpd => {
            (horizontal, KeepsLinks)
        }
        M::Movsldup | M::Movshdup | M::Movddup | M::Lddqu => (duplicate, KeepsLinks),
        _ => return None,
    })
}

/// The (operation, first operand, second operand) of each result lane of
/// `m` on destination `a` and source `b`, lanes of `bits` bits.
fn plan(m: Mnemonic, a: u128, b: u128, bits: u32) -> Vec<(Op, u128, u128)> {
    use Mnemonic as M;
    let lanes = 128 / bits;
    let op = if matches!(m, M::Haddps | M::Haddpd) {
        Op::Add
    } else {
        Op::Sub
    };
    (0..lanes)
        .map(|i| match m {
            M::Addsubps | M::Addsubpd => {
                let op = if i % 2 == 0 { Op::Sub } else { Op::Add };
                (op, part(a, bits, i), part(b, bits, i))
            }
            _ => {
                let (v, j) = if i < lanes / 2 {
                    (a, i)
                } else {
                    (b, i - lanes / 2)
                };
                (op, part(v, bits, 2 * j), part(v, bits, 2 * j + 1))
            }
        })
        .collect()
}

/// One 128-bit chunk of ADDSUB*, HADD* or HSUB* `m` on first source `a`
/// and second source `b`, every lane through the SSE lane arithmetic
/// with flags in `ctx`; `None` if `m` is not one of them.
pub fn horizontal_chunk(m: Mnemonic, a: u128, b: u128, ctx: &mut Ctx) -> Option<u128> {
    use Mnemonic as M;
    let double = match m {
        M::Addsubpd | M::Haddpd | M::Hsubpd => true,
        M::Addsubps | M::Haddps | M::Hsubps => false,
        _ => return None,
    };
    let bits = if double { 64 } else { 32 };
    let mut r = 0u128;
    for (i, (op, x, y)) in plan(m, a, b, bits).into_iter().enumerate() {
        let v = if double {
            lane::<Double>(op, x, y, ctx)
        } else {
            lane::<Single>(op, x, y, ctx)
        };
        r |= (v & ((1u128 << bits) - 1)) << (bits * i as u32);
    }
    Some(r)
}

/// ADDSUB*, HADD*, HSUB*: flags committed (or #XM/#UD raised) before the
/// destination is written.
fn horizontal(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    check_sse(cpu)?;
    let d = xmm_index(insn.op_register(0));
    let a = cpu.s.fpu.xmm[d];
    let b = read_operand(cpu, insn, 1)?;
    let mut ctx = Ctx::new(cpu.s.fpu.mxcsr);
    let r = horizontal_chunk(insn.mnemonic(), a, b, &mut ctx).unwrap_or(a);
    ctx.finish(cpu)?;
    cpu.s.fpu.xmm[d] = r;
    Ok(())
}

/// One 128-bit chunk of MOVSLDUP, MOVSHDUP or MOVDDUP of source `b`
/// (LDDQU and anything else: `b` as it is).
pub fn duplicate_chunk(m: Mnemonic, b: u128) -> u128 {
    match m {
        Mnemonic::Movsldup => {
            let (x, y) = (part(b, 32, 0), part(b, 32, 2));
            x | x << 32 | y << 64 | y << 96
        }
        Mnemonic::Movshdup => {
            let (x, y) = (part(b, 32, 1), part(b, 32, 3));
            x | x << 32 | y << 64 | y << 96
        }
        Mnemonic::Movddup => part(b, 64, 0) | part(b, 64, 0) << 64,
        _ => b,
    }
}

/// MOVSLDUP, MOVSHDUP, MOVDDUP, LDDQU.
fn duplicate(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    check_sse(cpu)?;
    let b = read_operand(cpu, insn, 1)?;
    let r = duplicate_chunk(insn.mnemonic(), b);
    cpu.s.fpu.xmm[xmm_index(insn.op_register(0))] = r;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::lanes::singles;
    use super::*;

    #[test]
    fn plans_pair_the_lanes_as_the_sdm_says() {
        let a = singles([1.0, 2.0, 3.0, 4.0]);
        let b = singles([10.0, 20.0, 30.0, 40.0]);
        let pairs: Vec<(bool, u32, u32)> = plan(Mnemonic::Haddps, a, b, 32)
            .into_iter()
            .map(|(op, x, y)| (op == Op::Add, x as u32, y as u32))
            .collect();
        let f = |x: f32| x.to_bits();
        assert_eq!(
            pairs,
            [
                (true, f(1.0), f(2.0)),
                (true, f(3.0), f(4.0)),
                (true, f(10.0), f(20.0)),
                (true, f(30.0), f(40.0))
            ]
        );
        let ops: Vec<bool> = plan(Mnemonic::Addsubps, a, b, 32)
            .into_iter()
            .map(|(op, _, _)| op == Op::Add)
            .collect();
        assert_eq!(ops, [false, true, false, true]);
    }
}
