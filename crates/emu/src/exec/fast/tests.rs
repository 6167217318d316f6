//! The specialized handlers against the generic ones: each case runs one
//! instruction both ways from the same state and compares everything.

use iced_x86::code_asm::*;
use iced_x86::{ConditionCode, Decoder, DecoderOptions};

use super::{decode, generic, select, Operands, NO_MEM, NO_REG};
use crate::fault::Fault;
use crate::flags::{CF, OF, ZF};
use crate::state::reg;
use crate::testutil::{assemble, cpu32, cpu64, CODE, DATA};
use crate::Cpu;

/// Distinct values in every byte of every GPR.
fn setup(cpu: &mut Cpu, flags: u64) {
    for (i, r) in cpu.s.gpr.iter_mut().enumerate() {
        *r = 0x8123_4567_89ab_cdefu64.rotate_left(i as u32 * 5) ^ (i as u64 * 0x1111);
    }
    cpu.s.gpr[reg::RDI] = DATA;
    cpu.s.gpr[reg::RSI] = DATA + 0x100;
    cpu.s.gpr[reg::RCX] = 3;
    cpu.s.flags.set(flags);
    let bytes: Vec<u8> = (0..0x200u32).map(|i| (i * 37 + 11) as u8).collect();
    cpu.machine.memory.write(DATA, &bytes).unwrap();
}

fn state(cpu: &Cpu) -> (Vec<u64>, u64, u64, Vec<u8>) {
    let mut mem = vec![0u8; 0x200];
    cpu.machine.memory.read(DATA, &mut mem).unwrap();
    (cpu.s.gpr.to_vec(), cpu.s.flags.get(), cpu.next_rip, mem)
}

/// Runs the first instruction of `f` through its specialized handler and
/// through the generic one (`bitness` 64 or 32), with RFLAGS = `flags`
/// and `tweak` applied to the state; asserts that a specialized handler
/// exists and that both agree. Returns the result.
fn compare_with(
    bitness: u32,
    flags: u64,
    tweak: impl Fn(&mut Cpu),
    f: impl FnOnce(&mut CodeAssembler),
) -> Result<(), Fault> {
    let code = assemble(bitness, f);
    let insn = Decoder::with_ip(bitness, &code, CODE, DecoderOptions::NONE).decode();
    let mut ops = Operands {
        imm: 0,
        mem: NO_MEM,
        r0: NO_REG,
        r1: NO_REG,
        cc: 0,
    };
    assert!(
        select(&insn, bitness, &mut ops).is_some(),
        "no specialized handler for {insn}"
    );
    let d = decode(&insn, bitness, CODE, CODE + insn.len() as u64);
    let new = |code: &[u8]| {
        if bitness == 64 {
            cpu64(code)
        } else {
            cpu32(code)
        }
    };
    let (mut fast, mut slow) = (new(&code), new(&code));
    for cpu in [&mut fast, &mut slow] {
        setup(cpu, flags);
        tweak(cpu);
        cpu.next_rip = d.next_rip;
    }
    let a = (d.exec)(&mut fast, &d);
    let b = generic(&mut slow, &d);
    assert_eq!(a, b, "{insn}: result");
    assert_eq!(state(&fast), state(&slow), "{insn}: state");
    a
}

fn compare(flags: u64, f: impl FnOnce(&mut CodeAssembler)) -> Result<(), Fault> {
    compare_with(64, flags, |_| {}, f)
}

#[test]
fn alu_register_forms_match_the_generic_handlers() {
    for flags in [0, CF, CF | ZF | OF] {
        compare(flags, |a| a.add(eax, ebx).unwrap()).unwrap();
        compare(flags, |a| a.add(al, bl).unwrap()).unwrap();
        compare(flags, |a| a.sub(r9w, r10w).unwrap()).unwrap();
        compare(flags, |a| a.adc(rax, rdx).unwrap()).unwrap();
        compare(flags, |a| a.sbb(sil, dil).unwrap()).unwrap();
        compare(flags, |a| a.and(r15d, -2).unwrap()).unwrap();
        compare(flags, |a| a.or(rbx, 0x7fff_ffff).unwrap()).unwrap();
        compare(flags, |a| a.xor(ecx, ecx).unwrap()).unwrap();
        compare(flags, |a| a.cmp(rcx, 3).unwrap()).unwrap();
        compare(flags, |a| a.cmp(dl, al).unwrap()).unwrap();
        compare(flags, |a| a.test(r8, r8).unwrap()).unwrap();
        compare(flags, |a| a.test(ax, 0x8000u32).unwrap()).unwrap();
        compare(flags, |a| a.inc(cx).unwrap()).unwrap();
        compare(flags, |a| a.dec(r14d).unwrap()).unwrap();
        compare(flags, |a| a.dec(bpl).unwrap()).unwrap();
    }
}

#[test]
fn shifts_by_an_immediate_match_including_zero_and_masked_counts() {
    for flags in [0, CF | OF] {
        compare(flags, |a| a.shl(eax, 0).unwrap()).unwrap();
        compare(flags, |a| a.shr(r8, 7).unwrap()).unwrap();
        compare(flags, |a| a.sar(bx, 15).unwrap()).unwrap();
        compare(flags, |a| a.sar(bl, 33).unwrap()).unwrap();
        compare(flags, |a| a.shl(rdx, 1).unwrap()).unwrap();
        compare(flags, |a| a.shr(esi, 32).unwrap()).unwrap();
    }
}

#[test]
fn memory_forms_match_and_fault_alike() {
    compare(0, |a| a.add(rax, qword_ptr(rdi + rcx * 8)).unwrap()).unwrap();
    compare(0, |a| a.and(r8b, byte_ptr(rsi - 1)).unwrap()).unwrap();
    compare(0, |a| a.cmp(byte_ptr(rdi + rbx), 0).unwrap()).unwrap_err();
    compare(0, |a| a.cmp(byte_ptr(rdi + rcx), 0).unwrap()).unwrap();
    compare(0, |a| a.cmp(dword_ptr(rsi), eax).unwrap()).unwrap();
    compare(0, |a| a.test(word_ptr(rdi + 6), 0x8001).unwrap()).unwrap();
    compare(0, |a| a.mov(qword_ptr(rdi + rcx * 8), rax).unwrap()).unwrap();
    compare(0, |a| a.mov(byte_ptr(rdi + rcx), 1).unwrap()).unwrap();
    compare(0, |a| a.mov(word_ptr(rsi + 0x10), -1).unwrap()).unwrap();
    compare(0, |a| a.mov(r11d, dword_ptr(rsi + rcx * 4)).unwrap()).unwrap();
    compare(0, |a| a.mov(dl, byte_ptr(rdi + 0x33)).unwrap()).unwrap();
    compare(0, |a| a.movzx(eax, byte_ptr(rdi + rcx)).unwrap()).unwrap();
    compare(0, |a| a.movzx(r9, word_ptr(rdi)).unwrap()).unwrap();
    compare(0, |a| a.movsx(rbx, word_ptr(rsi + 1)).unwrap()).unwrap();
    compare(0, |a| a.movsx(cx, byte_ptr(rdi + 0x80)).unwrap()).unwrap();
    compare(0, |a| a.movsxd(rdx, dword_ptr(rsi + 4)).unwrap()).unwrap();
    // Non-canonical: #GP(0); through SS (RSP/RBP base): #SS(0).
    let gp = compare(0, |a| a.mov(rax, qword_ptr(rbx)).unwrap());
    assert_eq!(gp, Err(Fault::GeneralProtection(0)));
    let stack = compare(0, |a| a.mov(qword_ptr(rbp), rax).unwrap());
    assert_eq!(stack, Err(Fault::StackFault(0)));
    // Beyond the 1 GiB identity map: #PF, and nothing is written.
    let far = |c: &mut Cpu| c.s.gpr[reg::RDI] = 0x4000_0000;
    let pf = compare_with(64, 0, far, |a| a.mov(byte_ptr(rdi), 1).unwrap());
    assert!(matches!(pf, Err(Fault::PageFault { .. })));
    compare_with(64, 0, far, |a| a.movzx(eax, byte_ptr(rdi + 4)).unwrap()).unwrap_err();
    // FS has a base of its own.
    let fs_base = |c: &mut Cpu| c.s.seg[crate::state::seg::FS].base = DATA;
    compare_with(64, 0, fs_base, |a| a.mov(eax, dword_ptr(rcx).fs()).unwrap()).unwrap();
}

#[test]
fn register_moves_extensions_and_lea_match() {
    compare(0, |a| a.mov(eax, ebx).unwrap()).unwrap();
    compare(0, |a| a.mov(r12w, dx).unwrap()).unwrap();
    compare(0, |a| a.mov(sil, r9b).unwrap()).unwrap();
    compare(0, |a| a.mov(rax, 0x1234_5678_9abc_def0u64).unwrap()).unwrap();
    compare(0, |a| a.mov(ebx, 7).unwrap()).unwrap();
    compare(0, |a| a.movzx(ecx, dl).unwrap()).unwrap();
    compare(0, |a| a.movsx(rax, r10w).unwrap()).unwrap();
    compare(0, |a| a.movsxd(r8, r15d).unwrap()).unwrap();
    compare(0, |a| a.lea(rax, ptr(rax + rax * 2)).unwrap()).unwrap();
    compare(0, |a| a.lea(eax, ptr(rbx + rcx * 4 + 8)).unwrap()).unwrap();
    compare(0, |a| a.lea(r9d, ptr(ebx + ecx * 8 - 1)).unwrap()).unwrap();
    compare(0, |a| a.lea(dx, ptr(rsi + 0x7fff)).unwrap()).unwrap();
}

#[test]
fn high_byte_registers_and_lock_stay_generic() {
    let code = assemble(64, |a| {
        a.add(ah, bl).unwrap();
        a.lock().add(qword_ptr(rdi), rax).unwrap();
        a.mov(es, ax).unwrap();
    });
    let mut dec = Decoder::with_ip(64, &code, CODE, DecoderOptions::NONE);
    for _ in 0..3 {
        let insn = dec.decode();
        let mut ops = Operands {
            imm: 0,
            mem: NO_MEM,
            r0: NO_REG,
            r1: NO_REG,
            cc: 0,
        };
        assert!(select(&insn, 64, &mut ops).is_none(), "{insn}");
    }
}

#[test]
fn branches_match_taken_and_not_taken() {
    for flags in [0, CF, ZF, OF, CF | ZF] {
        compare(flags, |a| {
            let mut l = a.create_label();
            a.jb(l).unwrap();
            a.set_label(&mut l).unwrap();
            a.nop().unwrap();
        })
        .unwrap();
        compare(flags, |a| {
            let mut l = a.create_label();
            a.set_label(&mut l).unwrap();
            a.jg(l).unwrap();
        })
        .unwrap();
        compare(flags, |a| {
            let mut l = a.create_label();
            a.set_label(&mut l).unwrap();
            a.jmp(l).unwrap();
        })
        .unwrap();
        // 32-bit mode: the target is checked against CS at run time.
        compare_with(32, flags, |_| {}, |a| a.jbe(0x10000u64).unwrap()).unwrap();
        compare_with(32, flags, |_| {}, |a| a.add(eax, dword_ptr(edi)).unwrap()).unwrap();
    }
}

#[test]
fn condition_codes_round_trip_through_u8() {
    for cc in (0..=16u8).map(super::condition) {
        assert_eq!(super::condition(cc as u8), cc);
    }
    assert_eq!(super::condition(ConditionCode::g as u8), ConditionCode::g);
}

/// Runs `cmp; jcc` (the first two instructions of `f`) fused and as two
/// specialized instructions; asserts that the pair fuses and that both
/// ways agree (registers, flags, next RIP, block end, instruction count).
fn compare_fused(setup_regs: impl Fn(&mut Cpu), f: impl FnOnce(&mut CodeAssembler)) {
    let code = assemble(64, f);
    let mut dec = Decoder::with_ip(64, &code, CODE, DecoderOptions::NONE);
    let (i1, i2) = (dec.decode(), dec.decode());
    let d1 = decode(&i1, 64, CODE, i1.next_ip());
    let d2 = decode(&i2, 64, i1.next_ip(), i2.next_ip());
    let mut fused = d1;
    assert!(super::fused::fuse(&mut fused, &i2, &d2), "{i1}; {i2}");
    let (mut a, mut b) = (cpu64(&code), cpu64(&code));
    for cpu in [&mut a, &mut b] {
        setup(cpu, 0);
        setup_regs(cpu);
    }
    a.next_rip = fused.next_rip;
    (fused.exec)(&mut a, &fused).unwrap();
    b.next_rip = d1.next_rip;
    (d1.exec)(&mut b, &d1).unwrap();
    b.icount += 1;
    b.next_rip = d2.next_rip;
    (d2.exec)(&mut b, &d2).unwrap();
    let s = |c: &Cpu| (state(c), c.end_block, c.icount);
    assert_eq!(s(&a), s(&b), "{i1}; {i2}");
}

#[test]
fn fused_compare_and_branch_matches_the_pair() {
    type Jcc = fn(&mut CodeAssembler, u64) -> Result<(), IcedError>;
    let jccs: [Jcc; 16] = [
        CodeAssembler::jo,
        CodeAssembler::jno,
        CodeAssembler::jb,
        CodeAssembler::jae,
        CodeAssembler::je,
        CodeAssembler::jne,
        CodeAssembler::jbe,
        CodeAssembler::ja,
        CodeAssembler::js,
        CodeAssembler::jns,
        CodeAssembler::jp,
        CodeAssembler::jnp,
        CodeAssembler::jl,
        CodeAssembler::jge,
        CodeAssembler::jle,
        CodeAssembler::jg,
    ];
    let values = [
        0u64,
        1,
        3,
        0x7f,
        0x80,
        0xffff_ffff,
        0x8000_0000_0000_0000,
        u64::MAX,
    ];
    for jcc in jccs {
        for &x in &values {
            for &y in &values {
                let regs = |c: &mut Cpu| {
                    c.s.gpr[reg::RAX] = x;
                    c.s.gpr[reg::RBX] = y;
                };
                let target = CODE + 0x100;
                compare_fused(regs, |a| {
                    a.cmp(eax, ebx).unwrap();
                    jcc(a, target).unwrap();
                });
                compare_fused(regs, |a| {
                    a.cmp(rax, 3).unwrap();
                    jcc(a, target).unwrap();
                });
                compare_fused(regs, |a| {
                    a.cmp(al, bl).unwrap();
                    jcc(a, target).unwrap();
                });
                compare_fused(regs, |a| {
                    a.test(rax, rbx).unwrap();
                    jcc(a, target).unwrap();
                });
                compare_fused(regs, |a| {
                    a.test(bx, 0x8001).unwrap();
                    jcc(a, target).unwrap();
                });
            }
        }
    }
}

#[test]
fn two_operand_imul_matches_in_every_size_with_and_without_overflow() {
    for flags in [0, CF | OF | ZF] {
        compare(flags, |a| a.imul_2(eax, ebx).unwrap()).unwrap();
        compare(flags, |a| a.imul_2(rdx, r9).unwrap()).unwrap();
        compare(flags, |a| a.imul_2(si, cx).unwrap()).unwrap();
        compare(flags, |a| a.imul_2(r10, qword_ptr(rdi + 8)).unwrap()).unwrap();
        compare(flags, |a| a.imul_2(ecx, dword_ptr(rsi)).unwrap()).unwrap();
        // 3 * 3: fits, CF = OF = 0.
        compare_with(
            64,
            flags,
            |c| c.s.gpr[reg::RAX] = 3,
            |a| a.imul_2(rax, rcx).unwrap(),
        )
        .unwrap();
    }
}

#[test]
fn rotates_by_an_immediate_match_in_every_size() {
    for flags in [0, CF | OF, ZF] {
        compare(flags, |a| a.rol(eax, 0).unwrap()).unwrap();
        compare(flags, |a| a.rol(eax, 1).unwrap()).unwrap();
        compare(flags, |a| a.ror(r8, 13).unwrap()).unwrap();
        compare(flags, |a| a.rol(bx, 17).unwrap()).unwrap();
        compare(flags, |a| a.ror(bl, 8).unwrap()).unwrap();
        compare(flags, |a| a.ror(dil, 33).unwrap()).unwrap();
        compare(flags, |a| a.rol(rdx, 63).unwrap()).unwrap();
    }
}

#[test]
fn stack_instructions_match_and_fault_alike() {
    let stack = |cpu: &mut Cpu| {
        cpu.s.gpr[reg::RSP] = DATA + 0x100;
        let ret = 0xffff_ffff_8100_1234u64.to_le_bytes();
        cpu.machine.memory.write(DATA + 0x100, &ret).unwrap();
    };
    compare_with(64, 0, stack, |a| a.push(rbx).unwrap()).unwrap();
    compare_with(64, 0, stack, |a| a.push(rsp).unwrap()).unwrap();
    compare_with(64, 0, stack, |a| a.push(-5).unwrap()).unwrap();
    compare_with(64, 0, stack, |a| a.push(0x1234_5678).unwrap()).unwrap();
    compare_with(64, 0, stack, |a| a.pop(r12).unwrap()).unwrap();
    compare_with(64, 0, stack, |a| a.pop(rsp).unwrap()).unwrap();
    compare_with(64, 0, stack, |a| a.ret().unwrap()).unwrap();
    compare_with(64, 0, stack, |a| {
        let mut l = a.create_label();
        a.call(l).unwrap();
        a.set_label(&mut l).unwrap();
        a.nop().unwrap();
    })
    .unwrap();
    // A non-canonical stack pointer: #SS, RSP unchanged.
    let wild = |cpu: &mut Cpu| cpu.s.gpr[reg::RSP] = 0x8000_0000_0000_0010;
    assert!(compare_with(64, 0, wild, |a| a.push(rax).unwrap()).is_err());
    assert!(compare_with(64, 0, wild, |a| a.pop(rax).unwrap()).is_err());
    // A non-canonical return address: the #GP comes from the generic path.
    let bad_ret = |cpu: &mut Cpu| {
        cpu.s.gpr[reg::RSP] = DATA + 0x100;
        let ret = 0x8000_0000_0000_0000u64.to_le_bytes();
        cpu.machine.memory.write(DATA + 0x100, &ret).unwrap();
    };
    assert!(compare_with(64, 0, bad_ret, |a| a.ret().unwrap()).is_err());
}

#[test]
fn nops_cmov_setcc_not_neg_and_bswap_match() {
    for flags in [0, CF, ZF, CF | ZF | OF] {
        compare(flags, |a| a.nop().unwrap()).unwrap();
        compare(flags, |a| a.nop_1(dword_ptr(rax + rax * 1 + 0)).unwrap()).unwrap();
        compare(flags, |a| a.cmovae(eax, ebx).unwrap()).unwrap();
        compare(flags, |a| a.cmovb(r9, r10).unwrap()).unwrap();
        compare(flags, |a| a.cmove(cx, dx).unwrap()).unwrap();
        compare(flags, |a| a.cmovne(esi, dword_ptr(rdi + 8)).unwrap()).unwrap();
        compare(flags, |a| a.cmovs(rax, qword_ptr(rsi)).unwrap()).unwrap();
        compare(flags, |a| a.setb(al).unwrap()).unwrap();
        compare(flags, |a| a.setne(r11b).unwrap()).unwrap();
        compare(flags, |a| a.sete(byte_ptr(rdi + 3)).unwrap()).unwrap();
        compare(flags, |a| a.not(r8d).unwrap()).unwrap();
        compare(flags, |a| a.not(bl).unwrap()).unwrap();
        compare(flags, |a| a.neg(rdx).unwrap()).unwrap();
        compare(flags, |a| a.neg(si).unwrap()).unwrap();
        compare(flags, |a| a.bswap(eax).unwrap()).unwrap();
        compare(flags, |a| a.bswap(r13).unwrap()).unwrap();
    }
    // NEG of zero clears CF.
    let zero = |cpu: &mut Cpu| cpu.s.gpr[reg::RDX] = 0;
    compare_with(64, CF, zero, |a| a.neg(rdx).unwrap()).unwrap();
    // A CMOV whose condition is false still faults on its memory source.
    let wild = |cpu: &mut Cpu| cpu.s.gpr[reg::RSI] = 0x8000_0000_0000_0000;
    assert!(compare_with(64, 0, wild, |a| a.cmovb(rax, qword_ptr(rsi)).unwrap()).is_err());
}

#[test]
fn memory_destination_alu_inc_dec_and_shifts_by_cl_match() {
    for flags in [0, CF, CF | ZF | OF] {
        compare(flags, |a| a.add(dword_ptr(rdi + 4), eax).unwrap()).unwrap();
        compare(flags, |a| a.add(qword_ptr(rdi), r9).unwrap()).unwrap();
        compare(flags, |a| a.sub(dword_ptr(rdi + 8), 5).unwrap()).unwrap();
        compare(flags, |a| a.adc(word_ptr(rsi + 2), cx).unwrap()).unwrap();
        compare(flags, |a| a.sbb(byte_ptr(rsi), 0x7f).unwrap()).unwrap();
        compare(flags, |a| a.and(qword_ptr(rdi + rcx * 8), -16).unwrap()).unwrap();
        compare(flags, |a| a.or(byte_ptr(rdi + 1), 0x80).unwrap()).unwrap();
        compare(flags, |a| a.xor(dword_ptr(rsi + 12), edx).unwrap()).unwrap();
        compare(flags, |a| a.inc(dword_ptr(rdi)).unwrap()).unwrap();
        compare(flags, |a| a.dec(qword_ptr(rsi + 16)).unwrap()).unwrap();
        compare(flags, |a| a.inc(byte_ptr(rsi + 5)).unwrap()).unwrap();
        compare(flags, |a| a.shl(rax, cl).unwrap()).unwrap();
        compare(flags, |a| a.shr(r10d, cl).unwrap()).unwrap();
        compare(flags, |a| a.sar(bx, cl).unwrap()).unwrap();
    }
    let counts = [0u64, 1, 31, 32, 63, 64, 0xff];
    for c in counts {
        let set = move |cpu: &mut Cpu| cpu.s.gpr[reg::RCX] = c;
        compare_with(64, CF, set, |a| a.shl(rdx, cl).unwrap()).unwrap();
        compare_with(64, OF, set, |a| a.shr(esi, cl).unwrap()).unwrap();
        compare_with(64, 0, set, |a| a.sar(r8b, cl).unwrap()).unwrap();
    }
    // Faults: a non-canonical destination.
    let wild = |cpu: &mut Cpu| cpu.s.gpr[reg::RDI] = 0x8000_0000_0000_0000;
    assert!(compare_with(64, 0, wild, |a| a.add(dword_ptr(rdi), eax).unwrap()).is_err());
    assert!(compare_with(64, 0, wild, |a| a.inc(qword_ptr(rdi)).unwrap()).is_err());
}

#[test]
fn indirect_calls_and_jumps_match() {
    let setup = |cpu: &mut Cpu| {
        cpu.s.gpr[reg::RSP] = DATA + 0x100;
        cpu.s.gpr[reg::RAX] = 0xffff_ffff_8100_4000;
        let target = 0xffff_ffff_8100_5678u64.to_le_bytes();
        cpu.machine.memory.write(DATA + 0x40, &target).unwrap();
    };
    compare_with(64, 0, setup, |a| a.call(rax).unwrap()).unwrap();
    compare_with(64, 0, setup, |a| a.jmp(rax).unwrap()).unwrap();
    compare_with(64, 0, setup, |a| a.call(qword_ptr(rdi + 0x40)).unwrap()).unwrap();
    compare_with(64, 0, setup, |a| a.jmp(qword_ptr(rdi + 0x40)).unwrap()).unwrap();
    let bad = |cpu: &mut Cpu| {
        cpu.s.gpr[reg::RSP] = DATA + 0x100;
        cpu.s.gpr[reg::RAX] = 0x8000_0000_0000_0000;
    };
    assert!(compare_with(64, 0, bad, |a| a.call(rax).unwrap()).is_err());
    assert!(compare_with(64, 0, bad, |a| a.jmp(rax).unwrap()).is_err());
}

/// A store through the inline fast path ([`Cpu::write_mem`]) into a page
/// whose write TLB entry was made before code was decoded there still
/// invalidates that code: the second call runs the patched function.
#[test]
fn a_fast_store_invalidates_code_decoded_after_its_tlb_entry() {
    const F: u64 = CODE + 0x2000;
    let function = assemble(64, |a| {
        a.mov(eax, 1u32).unwrap();
        a.ret().unwrap();
    });
    let code = assemble(64, |a| {
        // A write entry for F's page while it holds no decoded code.
        a.mov(rdi, F).unwrap();
        a.mov(dword_ptr(rdi + 0x800), 0u32).unwrap();
        a.call(rdi).unwrap(); // decodes F: `mov eax, 1`
        a.mov(ebx, eax).unwrap();
        a.mov(byte_ptr(rdi + 1), 2u32).unwrap(); // now `mov eax, 2`
        a.call(rdi).unwrap();
        a.hlt().unwrap();
    });
    for single_steps in [true, false] {
        let mut cpu = cpu64(&code);
        cpu.machine.memory.write(F, &function).unwrap();
        if single_steps {
            crate::testutil::run_until(&mut cpu, CODE + code.len() as u64 - 1, 1000);
        } else {
            for _ in 0..100 {
                if cpu.s.halted || cpu.s.rip == CODE + code.len() as u64 - 1 {
                    break;
                }
                cpu.step();
            }
        }
        assert_eq!(cpu.s.gpr[reg::RBX], 1, "the first call ran the original");
        assert_eq!(cpu.s.gpr[reg::RAX], 2, "the second ran the patched code");
    }
}
