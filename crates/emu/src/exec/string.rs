//! String instructions: MOVS, CMPS, SCAS, LODS, STOS in byte, word,
//! dword and qword forms, with REP/REPE/REPNE (SDM Vol. 1 §7.3.9, Vol. 2
//! "MOVS", "CMPS", "SCAS", "LODS", "STOS", "REP/REPE/REPZ/REPNE/REPNZ").
//! INS/OUTS are I/O instructions (see [`super::io`]).
//!
//! The address size (SI/DI/CX, ESI/EDI/ECX or RSI/RDI/RCX) comes from
//! the instruction's string operand kinds; the source segment may be
//! overridden, the destination is always ES. DF selects the direction.
//!
//! A repeated instruction runs at most [`REP_CHUNK`] iterations per call.
//! If the count is not exhausted it ends the block and leaves RIP on
//! itself, so the run loop checks interrupts and the stop flag before it
//! continues. rCX, rSI and rDI are written back after every chunk and on
//! a fault, so a fault part-way leaves them describing the progress (and
//! RIP at the instruction), as on hardware.

use iced_x86::{Code, Instruction, Mnemonic, OpKind};

use super::operand::seg_index;
use super::HandlerEntry;
use super::LinkEffect::KeepsLinks;
use crate::fault::Fault;
use crate::flags::{mask, FlagOp, DF};
use crate::mmu::{AccessKind, Translation};
use crate::state::{reg, seg};
use crate::Cpu;

/// Most iterations a REP string instruction runs before yielding to the
/// run loop.
pub const REP_CHUNK: u32 = 4096;

const MOVS: u8 = 0;
const CMPS: u8 = 1;
const SCAS: u8 = 2;
const LODS: u8 = 3;
const STOS: u8 = 4;

/// The handler for `insn`, if this module implements it, with its effect
/// on block links.
pub fn lookup(insn: &Instruction) -> Option<HandlerEntry> {
    use Mnemonic as M;
    Some(match insn.mnemonic() {
        M::Movsb | M::Movsw | M::Movsq => (string::<MOVS>, KeepsLinks),
        M::Movsd if insn.code() == Code::Movsd_m32_m32 => (string::<MOVS>, KeepsLinks),
        M::Cmpsb | M::Cmpsw | M::Cmpsq => (string::<CMPS>, KeepsLinks),
        M::Cmpsd if insn.code() == Code::Cmpsd_m32_m32 => (string::<CMPS>, KeepsLinks),
        M::Scasb | M::Scasw | M::Scasd | M::Scasq => (string::<SCAS>, KeepsLinks),
        M::Lodsb | M::Lodsw | M::Lodsd | M::Lodsq => (string::<LODS>, KeepsLinks),
        M::Stosb | M::Stosw | M::Stosd | M::Stosq => (string::<STOS>, KeepsLinks),
        _ => return None,
    })
}

/// The address size of a string instruction, from its operand kinds.
#[inline]
pub fn string_address_size(insn: &Instruction) -> u8 {
    for n in 0..insn.op_count() {
        match insn.op_kind(n) {
            OpKind::MemorySegSI | OpKind::MemoryESDI => return 2,
            OpKind::MemorySegESI | OpKind::MemoryESEDI => return 4,
            OpKind::MemorySegRSI | OpKind::MemoryESRDI => return 8,
            _ => {}
        }
    }
    8
}

/// One iteration at `src:si` and `ES:di`: moves, loads into or stores
/// from `acc`, or records the two compared values in `last`.
#[inline(always)]
fn iteration<const OP: u8>(
    cpu: &mut Cpu,
    size: u8,
    src: usize,
    si: u64,
    di: u64,
    acc: &mut u64,
    last: &mut (u64, u64),
) -> Result<(), Fault> {
    match OP {
        MOVS => {
            let v = cpu.read(src, si, size)?;
            cpu.write(seg::ES, di, size, v)?;
        }
        CMPS => {
            // ES:rDI is read first, as on the AMD hosts the differential
            // tester checks against (the order decides which of two
            // faulting operands is reported; the SDM leaves it open).
            let dst = cpu.read(seg::ES, di, size)?;
            *last = (cpu.read(src, si, size)?, dst);
        }
        SCAS => *last = (*acc, cpu.read(seg::ES, di, size)?),
        LODS => *acc = cpu.read(src, si, size)?,
        _ => cpu.write(seg::ES, di, size, *acc)?,
    }
    Ok(())
}

/// `t` moved `by` bytes further within its page.
#[inline(always)]
fn within(t: Translation, by: u64) -> Translation {
    Translation {
        phys: t.phys + by,
        host: t.host.map(|p| p.wrapping_add(by as usize)),
    }
}

/// The fast path of forward REP MOVS/STOS: up to `max` elements that lie
/// in one page of the destination (and of the source), after checking the
/// segments and translating each page once. Returns how many elements it
/// moved; 0 when it does not apply (too few elements, an element crosses a
/// page, or any check fails), leaving the caller's element-by-element path
/// to do the work and raise the fault at the exact element.
#[inline]
#[allow(clippy::too_many_arguments)]
fn fast_run<const OP: u8>(
    cpu: &mut Cpu,
    size: u8,
    src: usize,
    si: u64,
    di: u64,
    amask: u64,
    acc: u64,
    max: u64,
) -> u64 {
    let sz = u64::from(size);
    // Stay below an address-size wrap of the offsets.
    let mut n = max.min((amask - di) / sz);
    let Ok(ld) = cpu.linear(seg::ES, di, size, AccessKind::Write) else {
        return 0;
    };
    n = n.min((0x1000 - (ld & 0xfff)) / sz);
    let mut ls = 0;
    if OP == MOVS {
        n = n.min((amask - si) / sz);
        let Ok(l) = cpu.linear(src, si, size, AccessKind::Read) else {
            return 0;
        };
        ls = l;
        n = n.min((0x1000 - (ls & 0xfff)) / sz);
    }
    if n < 2 {
        return 0;
    }
    // Segment limits bound a contiguous range: checking the last element
    // as well covers every element in between.
    let last = (n - 1) * sz;
    if cpu
        .linear(seg::ES, di + last, size, AccessKind::Write)
        .is_err()
        || (OP == MOVS && cpu.linear(src, si + last, size, AccessKind::Read).is_err())
    {
        return 0;
    }
    let user = cpu.user();
    let Ok(td) = cpu.translate(ld, AccessKind::Write, user) else {
        return 0;
    };
    if OP == MOVS {
        let Ok(ts) = cpu.translate(ls, AccessKind::Read, user) else {
            return 0;
        };
        for i in 0..n {
            let v = cpu.read_phys_at(within(ts, i * sz), size);
            cpu.write_phys_at(within(td, i * sz), size, v);
        }
    } else {
        for i in 0..n {
            cpu.write_phys_at(within(td, i * sz), size, acc);
        }
    }
    n
}

fn string<const OP: u8>(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    let size = insn.memory_size().size() as u8;
    let asize = string_address_size(insn);
    let amask = mask(asize);
    let src = seg_index(insn.memory_segment());
    let delta = if cpu.s.flags.test(DF) {
        u64::from(size).wrapping_neg()
    } else {
        u64::from(size)
    };
    let uses_si = matches!(OP, MOVS | CMPS | LODS);
    let uses_di = OP != LODS;
    let mut si = cpu.s.read_gpr(reg::RSI, asize, false);
    let mut di = cpu.s.read_gpr(reg::RDI, asize, false);
    let mut acc = cpu.s.read_gpr(reg::RAX, size, false);
    let rep = insn.has_rep_prefix() || insn.has_repne_prefix();
    // CMPS/SCAS: F3 repeats while equal, F2 while not equal.
    let until_equal = insn.has_repne_prefix();

    let mut cx = if rep {
        cpu.s.read_gpr(reg::RCX, asize, false)
    } else {
        1
    };
    let mut done = 0u32;
    let mut last = (0u64, 0u64);
    let mut finished = false;
    let mut result = Ok(());
    let fast = rep && (OP == MOVS || OP == STOS) && delta == u64::from(size);
    loop {
        if cx == 0 {
            finished = true;
            break;
        }
        if done == REP_CHUNK {
            break;
        }
        if fast {
            let max = cx.min(u64::from(REP_CHUNK - done));
            let n = fast_run::<OP>(cpu, size, src, si, di, amask, acc, max);
            if n > 0 {
                let bytes = n * u64::from(size);
                si = si.wrapping_add(bytes) & amask;
                di = di.wrapping_add(bytes) & amask;
                cx -= n;
                done += n as u32;
                continue;
            }
        }
        let step = iteration::<OP>(cpu, size, src, si, di, &mut acc, &mut last);
        if let Err(e) = step {
            result = Err(e);
            break;
        }
        si = si.wrapping_add(delta) & amask;
        di = di.wrapping_add(delta) & amask;
        cx = cx.wrapping_sub(1);
        done += 1;
        if (OP == CMPS || OP == SCAS) && rep && ((last.0 == last.1) == until_equal) {
            finished = true;
            break;
        }
    }
    if done > 0 {
        if uses_si {
            cpu.s.write_gpr(reg::RSI, asize, false, si);
        }
        if uses_di {
            cpu.s.write_gpr(reg::RDI, asize, false, di);
        }
        if rep {
            cpu.s.write_gpr(reg::RCX, asize, false, cx);
        }
        match OP {
            LODS => cpu.s.write_gpr(reg::RAX, size, false, acc),
            CMPS | SCAS => {
                let (a, b) = last;
                cpu.s
                    .flags
                    .set_result(FlagOp::Sub, size, a, b, a.wrapping_sub(b), false);
            }
            _ => {}
        }
    }
    result?;
    if !finished {
        // Not done: run this instruction again after the run loop has
        // had a chance to deliver interrupts.
        cpu.next_rip = cpu.s.rip;
        cpu.end_block = true;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use iced_x86::code_asm::*;

    use super::REP_CHUNK;
    use crate::fault::Fault;
    use crate::flags::{ARITH, CF, PF, SF, ZF};
    use crate::state::{reg, seg};
    use crate::testutil::{assemble, cpu16, cpu32, cpu64, run_until, CODE, DATA};
    use crate::Cpu;

    /// Runs 64-bit code after `setup` prepared the CPU and memory.
    fn run_with(f: impl FnOnce(&mut CodeAssembler), setup: impl FnOnce(&mut Cpu)) -> Cpu {
        let code = assemble(64, f);
        let mut cpu = cpu64(&code);
        setup(&mut cpu);
        run_until(&mut cpu, CODE + code.len() as u64, 100_000);
        cpu
    }

    fn bytes(cpu: &Cpu, at: u64, n: usize) -> Vec<u8> {
        let mut v = vec![0; n];
        cpu.machine.memory.read(at, &mut v).unwrap();
        v
    }

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + 1) as u8).collect()
    }

    #[test]
    fn rep_movsb_copies_forward() {
        let cpu = run_with(
            |a| {
                a.mov(rsi, DATA).unwrap();
                a.mov(rdi, DATA + 0x1000).unwrap();
                a.mov(ecx, 300u32).unwrap();
                a.rep().movsb().unwrap();
            },
            |cpu| cpu.machine.memory.write(DATA, &pattern(300)).unwrap(),
        );
        assert_eq!(bytes(&cpu, DATA + 0x1000, 300), pattern(300));
        assert_eq!(cpu.s.gpr[reg::RCX], 0);
        assert_eq!(cpu.s.gpr[reg::RSI], DATA + 300);
        assert_eq!(cpu.s.gpr[reg::RDI], DATA + 0x1000 + 300);
    }

    #[test]
    fn overlapping_forward_movs_repeats_the_pattern_element_by_element() {
        let cpu = run_with(
            |a| {
                a.mov(rsi, DATA).unwrap();
                a.mov(rdi, DATA + 2).unwrap();
                a.mov(ecx, 5000u32).unwrap();
                a.rep().movsw().unwrap();
            },
            |cpu| cpu.machine.memory.write(DATA, &[0xab, 0xcd]).unwrap(),
        );
        let out = bytes(&cpu, DATA, 10002);
        assert!(out.chunks(2).all(|c| c == [0xab, 0xcd]));
        assert_eq!(bytes(&cpu, DATA + 10002, 1), [0]);
    }

    #[test]
    fn unaligned_rep_movsd_crosses_pages() {
        let src = pattern(4 * 3000);
        let cpu = run_with(
            |a| {
                a.mov(rsi, DATA + 0x1001).unwrap();
                a.mov(rdi, DATA + 0x8ffe).unwrap();
                a.mov(ecx, 3000u32).unwrap();
                a.rep().movsd().unwrap();
            },
            |cpu| cpu.machine.memory.write(DATA + 0x1001, &src).unwrap(),
        );
        assert_eq!(bytes(&cpu, DATA + 0x8ffe, src.len()), src);
        assert_eq!(cpu.s.gpr[reg::RDI], DATA + 0x8ffe + 12000);
    }

    #[test]
    fn rep_movsb_copies_backwards_with_df_set() {
        // Overlapping move up by 4: copying from the end keeps the data.
        let cpu = run_with(
            |a| {
                a.std().unwrap();
                a.mov(rsi, DATA + 99).unwrap();
                a.mov(rdi, DATA + 103).unwrap();
                a.mov(ecx, 100u32).unwrap();
                a.rep().movsb().unwrap();
                a.cld().unwrap();
            },
            |cpu| cpu.machine.memory.write(DATA, &pattern(100)).unwrap(),
        );
        assert_eq!(bytes(&cpu, DATA + 4, 100), pattern(100));
        assert_eq!(cpu.s.gpr[reg::RSI], DATA - 1);
        assert_eq!(cpu.s.gpr[reg::RDI], DATA + 3);
    }

    #[test]
    fn rep_stosq_longer_than_a_chunk_runs_in_pieces() {
        let n = u64::from(REP_CHUNK) * 2 + 5;
        let code = assemble(64, |a| {
            a.mov(rdi, DATA).unwrap();
            a.mov(rcx, n).unwrap();
            a.mov(rax, 0x0102_0304_0506_0708u64).unwrap();
            a.rep().stosq().unwrap();
        });
        let mut cpu = cpu64(&code);
        let steps = run_until(&mut cpu, CODE + code.len() as u64, 100);
        assert_eq!(steps, 3 + 3, "three chunks, each retired separately");
        assert_eq!(cpu.s.gpr[reg::RCX], 0);
        assert_eq!(cpu.s.gpr[reg::RDI], DATA + n * 8);
        let m = &cpu.machine.memory;
        assert_eq!(
            m.read_u64(DATA + (n - 1) * 8).unwrap(),
            0x0102_0304_0506_0708
        );
        assert_eq!(m.read_u64(DATA + n * 8).unwrap(), 0);
    }

    #[test]
    fn repe_cmpsb_stops_at_the_first_difference() {
        let cpu = run_with(
            |a| {
                a.mov(rsi, DATA).unwrap();
                a.mov(rdi, DATA + 0x100).unwrap();
                a.mov(ecx, 10u32).unwrap();
                a.repe().cmpsb().unwrap();
            },
            |cpu| {
                cpu.machine.memory.write(DATA, b"abcdefghij").unwrap();
                cpu.machine
                    .memory
                    .write(DATA + 0x100, b"abcdEfghij")
                    .unwrap();
            },
        );
        assert_eq!(cpu.s.gpr[reg::RCX], 5);
        assert_eq!(cpu.s.gpr[reg::RSI], DATA + 5);
        assert_eq!(cpu.s.gpr[reg::RDI], DATA + 0x105);
        // 'e' - 'E' = 0x20
        assert_eq!(cpu.s.flags.get() & ARITH, 0);
    }

    #[test]
    fn repne_scasb_finds_a_byte() {
        let cpu = run_with(
            |a| {
                a.mov(rdi, DATA).unwrap();
                a.mov(rcx, -1i64).unwrap();
                a.xor(eax, eax).unwrap();
                a.repne().scasb().unwrap();
                a.not(rcx).unwrap();
                a.dec(rcx).unwrap();
            },
            |cpu| cpu.machine.memory.write(DATA, b"hello, world\0").unwrap(),
        );
        assert_eq!(cpu.s.gpr[reg::RCX], 12, "strlen");
        assert_eq!(cpu.s.gpr[reg::RDI], DATA + 13);
    }

    #[test]
    fn cmps_and_scas_without_rep_compare_once() {
        let cpu = run_with(
            |a| {
                a.mov(rsi, DATA).unwrap();
                a.mov(rdi, DATA + 8).unwrap();
                a.cmpsd().unwrap();
                a.mov(ebx, eax).unwrap();
            },
            |cpu| {
                cpu.machine.memory.write_u64(DATA, 1).unwrap();
                cpu.machine.memory.write_u64(DATA + 8, 2).unwrap();
            },
        );
        assert_eq!(cpu.s.flags.get() & ARITH, CF | SF | PF | crate::flags::AF);
        assert_eq!(cpu.s.gpr[reg::RSI], DATA + 4);
        assert_eq!(cpu.s.gpr[reg::RDI], DATA + 12);
        let cpu = run_with(
            |a| {
                a.mov(rdi, DATA).unwrap();
                a.mov(ax, 0x1234u32).unwrap();
                a.scasw().unwrap();
            },
            |cpu| cpu.machine.memory.write_u64(DATA, 0x1234).unwrap(),
        );
        assert_eq!(cpu.s.flags.get() & ZF, ZF);
        assert_eq!(cpu.s.gpr[reg::RDI], DATA + 2);
    }

    #[test]
    fn lods_loads_the_accumulator_in_either_direction() {
        let cpu = run_with(
            |a| {
                a.mov(rax, -1i64).unwrap();
                a.mov(rsi, DATA).unwrap();
                a.lodsd().unwrap();
                a.mov(rbx, rax).unwrap();
                a.std().unwrap();
                a.lodsw().unwrap();
            },
            |cpu| {
                cpu.machine
                    .memory
                    .write_u64(DATA, 0x5566_7788_1122_3344)
                    .unwrap()
            },
        );
        assert_eq!(cpu.s.gpr[reg::RBX], 0x1122_3344);
        assert_eq!(cpu.s.gpr[reg::RAX], 0x1122_7788);
        assert_eq!(cpu.s.gpr[reg::RSI], DATA + 2);
    }

    #[test]
    fn rep_with_a_zero_count_does_nothing() {
        let cpu = run_with(
            |a| {
                a.stc().unwrap();
                a.mov(rdi, DATA).unwrap();
                a.xor(ecx, ecx).unwrap();
                a.stc().unwrap();
                a.repe().scasb().unwrap();
                a.rep().stosb().unwrap();
            },
            |_| {},
        );
        assert_eq!(cpu.s.gpr[reg::RDI], DATA);
        assert_eq!(cpu.s.flags.get() & CF, CF);
    }

    #[test]
    fn address_size_prefix_selects_esi_edi_ecx() {
        let cpu = run_with(
            |a| {
                a.mov(rsi, 0xffff_ffff_0000_0000u64 + DATA).unwrap();
                a.mov(rdi, 0x1234_5678_0000_0000u64 + DATA + 0x100).unwrap();
                a.mov(rcx, 0x1_0000_0004u64).unwrap();
                a.db(&[0x67, 0xf3, 0xa4]).unwrap(); // rep movsb [edi], [esi]
            },
            |cpu| cpu.machine.memory.write(DATA, b"wxyz").unwrap(),
        );
        assert_eq!(bytes(&cpu, DATA + 0x100, 4), b"wxyz");
        assert_eq!(cpu.s.gpr[reg::RSI], DATA + 4, "32-bit writes zero-extend");
        assert_eq!(cpu.s.gpr[reg::RDI], DATA + 0x104);
        assert_eq!(cpu.s.gpr[reg::RCX], 0);
    }

    #[test]
    fn a_source_segment_override_is_honoured() {
        let cpu = run_with(
            |a| {
                a.mov(esi, 0x10u32).unwrap();
                a.mov(rdi, DATA + 0x200).unwrap();
                a.db(&[0x64, 0x48, 0xa5]).unwrap(); // movsq qword [rdi], fs:[rsi]
            },
            |cpu| {
                cpu.s.seg[seg::FS].base = DATA;
                cpu.machine.memory.write_u64(DATA + 0x10, 0xfeed).unwrap();
            },
        );
        assert_eq!(cpu.machine.memory.read_u64(DATA + 0x200).unwrap(), 0xfeed);
    }

    #[test]
    fn sixteen_bit_string_addresses_wrap_within_the_segment() {
        let code = assemble(16, |a| {
            a.mov(di, 0xffffu32).unwrap();
            a.mov(cx, 2u32).unwrap();
            a.mov(al, 0xaau32).unwrap();
            a.rep().stosb().unwrap();
        });
        let mut cpu = cpu16(&code);
        cpu.s.seg[seg::ES].base = 0x20000;
        cpu.s.seg[seg::ES].selector = 0x2000;
        run_until(&mut cpu, code.len() as u64, 100);
        let m = &cpu.machine.memory;
        let mut b = [0u8; 1];
        m.read(0x2ffff, &mut b).unwrap();
        assert_eq!(b[0], 0xaa);
        m.read(0x20000, &mut b).unwrap();
        assert_eq!(b[0], 0xaa);
        assert_eq!(cpu.s.gpr[reg::RDI] & 0xffff, 1);
        assert_eq!(cpu.s.gpr[reg::RCX] & 0xffff, 0);
    }

    #[test]
    fn a_fault_part_way_leaves_the_progress_in_the_registers() {
        let code = assemble(32, |a| {
            a.rep().stosb().unwrap();
        });
        let mut cpu = cpu32(&code);
        cpu.s.seg[seg::ES].limit = (DATA + 7) as u32;
        cpu.s.gpr[reg::RDI] = DATA;
        cpu.s.gpr[reg::RCX] = 16;
        cpu.s.gpr[reg::RAX] = 0x55;
        assert_eq!(cpu.run_block(1), Err(Fault::GeneralProtection(0)));
        assert_eq!(cpu.s.gpr[reg::RCX], 8);
        assert_eq!(cpu.s.gpr[reg::RDI], DATA + 8);
        assert_eq!(cpu.s.rip, CODE, "RIP stays on the instruction");
        assert_eq!(
            cpu.machine.memory.read_u64(DATA).unwrap(),
            0x5555_5555_5555_5555
        );
    }
}
