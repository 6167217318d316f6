//! Tests of the system instructions.

use std::sync::Arc;

use alcazar_core::engine::VcpuExit;
use alcazar_core::hooks::HypercallArgs;
use alcazar_core::regs::Segment;
use iced_x86::code_asm::*;
use iced_x86::{Code, Instruction, MemoryOperand, Register};

use crate::fault::Fault;
use crate::flags;
use crate::interrupts::tests::*;
use crate::msr::index;
use crate::state::{cr0, cr4, efer, reg, seg, CodeSize};
use crate::testutil::*;
use crate::Cpu;

fn far(code: Code, sel: u16, off: u32) -> Instruction {
    Instruction::with_far_branch(code, sel, off).unwrap()
}

#[test]
fn syscall_and_sysret_round_trip_between_cpl3_and_cpl0() {
    let mut cpu = cpu64(&[]);
    long_tables(&mut cpu);
    to_user64(&mut cpu, 0x70000);
    cpu.s.efer |= efer::SCE;
    cpu.s.msr.star = 0x10 << 48 | 0x08 << 32;
    cpu.s.msr.lstar = HANDLER;
    cpu.s.msr.sfmask = flags::IF;
    cpu.s.flags.set_flag(flags::IF, true);
    let end = put(&cpu, CODE, 64, |a| {
        a.syscall().unwrap();
        a.nop().unwrap();
    });
    put(&cpu, HANDLER, 64, |a| {
        a.mov(rbx, rcx).unwrap();
        a.mov(rdx, r11).unwrap();
        a.mov(esi, cs).unwrap();
        a.pushfq().unwrap();
        a.pop(rdi).unwrap();
        a.sysretq().unwrap();
    });
    run_until(&mut cpu, end - 1, 100);
    assert_eq!(cpu.s.gpr[reg::RBX], CODE + 2, "RCX = return RIP");
    assert_ne!(cpu.s.gpr[reg::RDX] & flags::IF, 0, "R11 = RFLAGS");
    assert_eq!(cpu.s.gpr[reg::RSI], 0x08, "kernel CS from STAR[47:32]");
    assert_eq!(cpu.s.gpr[reg::RDI] & flags::IF, 0, "SFMASK cleared IF");
    assert_eq!(cpu.s.cpl, 3);
    assert_eq!(cpu.s.seg[seg::CS].selector, 0x23);
    assert_eq!(cpu.s.seg[seg::SS].selector, 0x1b);
    assert!(cpu.s.flags.test(flags::IF));
    assert_eq!(cpu.s.code_size(), CodeSize::Bits64);
}

#[test]
fn sysret_without_rex_w_returns_to_compatibility_mode() {
    let mut cpu = cpu64(&[]);
    cpu.s.efer |= efer::SCE;
    cpu.s.msr.star = 0x10 << 48 | 0x08 << 32;
    cpu.s.gpr[reg::RCX] = 0x1234_0000_5000;
    put(&cpu, CODE, 64, |a| a.sysret().unwrap());
    cpu.run_block(1).unwrap();
    assert_eq!(cpu.s.rip, 0x5000);
    assert_eq!(cpu.s.code_size(), CodeSize::Bits32);
    assert_eq!((cpu.s.seg[seg::CS].selector, cpu.s.cpl), (0x13, 3));
}

#[test]
fn lgdt_and_a_far_jump_reload_cs_in_protected_mode() {
    let mut cpu = cpu32(&[]);
    let gdt = [
        0u64,
        CODE32_K,
        DATA_K,
        // 0x18: 32-bit code with base CODE.
        0x00cf_9b01_0000_ffff,
    ];
    for (i, e) in gdt.iter().enumerate() {
        cpu.machine
            .memory
            .write_u64(GDT + 8 * i as u64, *e)
            .unwrap();
    }
    let gdtr = DATA;
    cpu.machine.memory.write(gdtr, &[31, 0]).unwrap();
    cpu.machine
        .memory
        .write(gdtr + 2, &(GDT as u32).to_le_bytes())
        .unwrap();
    let target = 0x100u32;
    put(&cpu, CODE, 32, |a| {
        a.lgdt(dword_ptr(gdtr)).unwrap();
        a.add_instruction(far(Code::Jmp_ptr1632, 0x18, target))
            .unwrap();
    });
    let end = put(&cpu, CODE + u64::from(target), 32, |a| {
        a.mov(eax, 0x10u32).unwrap();
        a.mov(ds, ax).unwrap();
        a.hlt().unwrap();
    });
    run_until(&mut cpu, 0xffff, 100);
    assert!(cpu.s.halted);
    assert_eq!((cpu.s.gdtr.base, cpu.s.gdtr.limit), (GDT, 31));
    let code_seg = cpu.s.seg[seg::CS];
    assert_eq!((code_seg.selector, code_seg.base), (0x18, CODE));
    assert_eq!(cpu.s.rip, end - CODE);
    let accessed = cpu.machine.memory.read_u64(GDT + 0x18).unwrap();
    assert_ne!(accessed & (1 << 40), 0);
}

#[test]
fn real_mode_walks_to_protected_mode_and_then_to_long_mode() {
    const PART32: u64 = CODE + 0x400;
    const PART64: u64 = CODE + 0x800;
    const TABLES: u64 = CODE + 0xc00;
    const PML4: u32 = 0x40000;
    let mut cpu = cpu16(&[]);
    let gdt = [0u64, CODE32_K, DATA_K, CODE64_K];
    for (i, e) in gdt.iter().enumerate() {
        cpu.machine
            .memory
            .write_u64(TABLES + 8 * i as u64, *e & !(1 << 40))
            .unwrap();
    }
    let gdtr = TABLES + 0x40;
    cpu.machine.memory.write(gdtr, &[31, 0]).unwrap();
    cpu.machine
        .memory
        .write(gdtr + 2, &(TABLES as u32).to_le_bytes())
        .unwrap();
    put(&cpu, 0, 16, |_| {});
    // The 16-bit part runs with CS = 0x1000, IP = 0.
    let mut a = CodeAssembler::new(16).unwrap();
    a.cli().unwrap();
    a.mov(ax, cs).unwrap();
    a.mov(ds, ax).unwrap();
    let op = MemoryOperand::with_displ(gdtr - CODE, 2);
    a.add_instruction(Instruction::with1(Code::Lgdt_m1632, op).unwrap())
        .unwrap();
    a.mov(eax, cr0).unwrap();
    a.or(eax, 1).unwrap();
    a.mov(cr0, eax).unwrap();
    a.add_instruction(far(Code::Jmp_ptr1632, 0x08, PART32 as u32))
        .unwrap();
    let bytes = a.assemble(0).unwrap();
    cpu.machine.memory.write(CODE, &bytes).unwrap();
    put(&cpu, PART32, 32, |a| {
        a.mov(ax, 0x10).unwrap();
        a.mov(ds, ax).unwrap();
        a.mov(es, ax).unwrap();
        a.mov(ss, ax).unwrap();
        a.mov(esp, 0x9f000).unwrap();
        a.mov(dword_ptr(PML4), PML4 + 0x1003).unwrap();
        a.mov(dword_ptr(PML4 + 0x1000), PML4 + 0x2003).unwrap();
        a.mov(dword_ptr(PML4 + 0x2000), 0x83u32).unwrap();
        a.mov(eax, cr4).unwrap();
        a.or(eax, 0x20).unwrap();
        a.mov(cr4, eax).unwrap();
        a.mov(eax, PML4).unwrap();
        a.mov(cr3, eax).unwrap();
        a.mov(ecx, 0xc000_0080u32).unwrap();
        a.rdmsr().unwrap();
        a.or(eax, 0x100).unwrap();
        a.wrmsr().unwrap();
        a.mov(eax, cr0).unwrap();
        a.or(eax, 0x8000_0000u32 as i32).unwrap();
        a.mov(cr0, eax).unwrap();
        a.add_instruction(far(Code::Jmp_ptr1632, 0x18, PART64 as u32))
            .unwrap();
    });
    put(&cpu, PART64, 64, |a| {
        a.mov(rax, 0x1122_3344_5566_7788u64).unwrap();
        a.push(rax).unwrap();
        a.pop(rbx).unwrap();
        a.hlt().unwrap();
    });
    assert_eq!(cpu.run(), VcpuExit::Halted);
    assert_eq!(cpu.s.gpr[reg::RBX], 0x1122_3344_5566_7788);
    assert_eq!(cpu.s.code_size(), CodeSize::Bits64);
    assert_ne!(cpu.s.efer & efer::LMA, 0);
    assert_eq!(cpu.s.seg[seg::CS].selector, 0x18);
    assert_eq!(cpu.s.gpr[reg::RSP], 0x9f000);
}

#[test]
fn paging_with_lme_but_without_pae_raises_gp() {
    let code = assemble(32, |a| {
        a.mov(eax, cr0).unwrap();
        a.or(eax, 0x8000_0000u32 as i32).unwrap();
        a.mov(cr0, eax).unwrap();
    });
    let mut cpu = cpu32(&code);
    cpu.s.efer = efer::LME;
    cpu.run_block(2).unwrap();
    assert_eq!(cpu.run_block(1), Err(Fault::GeneralProtection(0)));
    assert_eq!(cpu.s.cr0 & cr0::PG, 0);
    // Unsupported CR4 bits (VME) fault too.
    let code = assemble(32, |a| {
        a.mov(eax, 1u32).unwrap();
        a.mov(cr4, eax).unwrap();
    });
    let mut cpu = cpu32(&code);
    cpu.run_block(1).unwrap();
    assert_eq!(cpu.run_block(1), Err(Fault::GeneralProtection(0)));
}

#[test]
fn cpuid_rdmsr_wrmsr_and_rdtsc_work_at_cpl0() {
    let cpu = run64(|a| {
        a.xor(eax, eax).unwrap();
        a.cpuid().unwrap();
        a.mov(r8d, ebx).unwrap();
        a.mov(ecx, index::STAR).unwrap();
        a.mov(eax, 0x11u32).unwrap();
        a.mov(edx, 0x22u32).unwrap();
        a.wrmsr().unwrap();
        a.xor(eax, eax).unwrap();
        a.xor(edx, edx).unwrap();
        a.rdmsr().unwrap();
        a.mov(r9d, eax).unwrap();
        a.mov(r10d, edx).unwrap();
        a.rdtsc().unwrap();
        a.mov(esi, eax).unwrap();
        a.mov(edi, edx).unwrap();
        a.rdtsc().unwrap();
    });
    assert_eq!(&(cpu.s.gpr[8] as u32).to_le_bytes(), b"Genu");
    assert_eq!((cpu.s.gpr[9], cpu.s.gpr[10]), (0x11, 0x22));
    assert_eq!(cpu.s.msr.star, 0x22_0000_0011);
    let t0 = cpu.s.gpr[reg::RDI] << 32 | cpu.s.gpr[reg::RSI];
    let t1 = cpu.s.gpr[reg::RDX] << 32 | cpu.s.gpr[reg::RAX];
    assert!(t1 >= t0, "the TSC never goes back");
}

#[test]
fn privileged_instructions_fault_at_cpl3() {
    for f in [
        (|a: &mut CodeAssembler| a.cli().unwrap()) as fn(&mut CodeAssembler),
        |a| a.hlt().unwrap(),
        |a| a.rdmsr().unwrap(),
        |a| a.mov(rax, cr0).unwrap(),
        |a| a.lgdt(qword_ptr(DATA)).unwrap(),
        |a| a.swapgs().unwrap(),
    ] {
        let mut cpu = cpu64(&[]);
        long_tables(&mut cpu);
        to_user64(&mut cpu, 0x70000);
        put(&cpu, CODE, 64, f);
        assert_eq!(cpu.run_block(1), Err(Fault::GeneralProtection(0)));
    }
    let mut cpu = cpu64(&[]);
    to_user64(&mut cpu, 0x70000);
    cpu.s.cr4 |= cr4::TSD;
    put(&cpu, CODE, 64, |a| a.rdtsc().unwrap());
    assert_eq!(cpu.run_block(1), Err(Fault::GeneralProtection(0)));
}

#[test]
fn popf_at_cpl3_keeps_if_and_iopl() {
    let mut cpu = cpu64(&[]);
    long_tables(&mut cpu);
    to_user64(&mut cpu, 0x70000);
    cpu.s.flags.set_flag(flags::IF, true);
    let end = put(&cpu, CODE, 64, |a| {
        a.push(0x3001).unwrap(); // IOPL 3 + CF, IF clear
        a.popfq().unwrap();
        a.nop().unwrap();
    });
    run_until(&mut cpu, end - 1, 10);
    let f = cpu.s.flags.get();
    assert_eq!(
        f & (flags::IF | flags::IOPL | flags::CF),
        flags::IF | flags::CF
    );
}

#[test]
fn retf_to_an_outer_privilege_level_pops_ss_and_rsp() {
    let mut cpu = cpu64(&[]);
    long_tables(&mut cpu);
    user_pages(&mut cpu);
    let target = CODE + 0x100;
    put(&cpu, CODE, 64, |a| {
        a.push(0x1b).unwrap();
        a.push(0x70000).unwrap();
        a.push(0x23).unwrap();
        a.push(target as i32).unwrap();
        a.add_instruction(Instruction::with(Code::Retfq)).unwrap();
    });
    put(&cpu, target, 64, |a| a.nop().unwrap());
    cpu.s.seg[seg::DS] = Segment::flat32(0x10, false);
    run_until(&mut cpu, target, 10);
    assert_eq!(cpu.s.rip, target);
    assert_eq!(cpu.s.cpl, 3);
    assert_eq!(cpu.s.gpr[reg::RSP], 0x70000);
    assert_eq!(cpu.s.seg[seg::SS].selector, 0x1b);
    assert!(cpu.s.seg[seg::DS].unusable, "DPL 0 data is nulled");
}

#[test]
fn a_64_bit_call_gate_enters_ring_0_and_retf_returns() {
    let mut cpu = cpu64(&[]);
    long_tables(&mut cpu);
    // GDT slots 9-10 (selector 0x48): a 64-bit call gate, DPL 3, to
    // 0x08:HANDLER.
    let (lo, hi) = gate64(HANDLER, 3, 0, false);
    let lo = (lo & !(0xf << 40)) | 0xc << 40;
    cpu.machine.memory.write_u64(GDT + 0x48, lo).unwrap();
    cpu.machine.memory.write_u64(GDT + 0x50, hi).unwrap();
    cpu.s.gdtr.limit = 0x57;
    to_user64(&mut cpu, 0x70000);
    cpu.machine.memory.write(DATA + 8, &[0x4b, 0]).unwrap();
    let end = put(&cpu, CODE, 64, |a| {
        let m = MemoryOperand::with_displ(DATA, 8);
        a.add_instruction(Instruction::with1(Code::Call_m1664, m).unwrap())
            .unwrap();
        a.nop().unwrap();
    });
    put(&cpu, HANDLER, 64, |a| {
        a.mov(rax, rsp).unwrap();
        a.mov(rbx, qword_ptr(rsp + 8)).unwrap();
        a.add_instruction(Instruction::with(Code::Retfq)).unwrap();
    });
    run_until(&mut cpu, end - 1, 20);
    assert_eq!(cpu.s.gpr[reg::RAX], RSP0 - 32);
    assert_eq!(cpu.s.gpr[reg::RBX], 0x23);
    assert_eq!((cpu.s.cpl, cpu.s.gpr[reg::RSP]), (3, 0x70000));
}

#[test]
fn iretq_can_return_to_compatibility_mode_at_cpl3() {
    let mut cpu = cpu64(&[]);
    long_tables(&mut cpu);
    user_pages(&mut cpu);
    put(&cpu, CODE, 64, |a| {
        a.push(0x1b).unwrap();
        a.push(0x7_0000).unwrap();
        a.push(0x202).unwrap();
        a.push(0x43).unwrap();
        a.push(0x3_0000).unwrap();
        a.iretq().unwrap();
    });
    put(&cpu, 0x3_0000, 32, |a| a.nop().unwrap());
    run_until(&mut cpu, 0x3_0000, 10);
    assert_eq!(cpu.s.code_size(), CodeSize::Bits32);
    assert_eq!((cpu.s.cpl, cpu.s.gpr[reg::RSP]), (3, 0x7_0000));
    assert!(cpu.s.flags.test(flags::IF));
}

#[test]
fn sysenter_and_sysexit_round_trip_in_protected_mode() {
    let mut cpu = cpu32(&[]);
    cpu.s.msr.sysenter_cs = 0x08;
    cpu.s.msr.sysenter_esp = 0x90000;
    cpu.s.msr.sysenter_eip = HANDLER;
    cpu.s.seg[seg::CS] = Segment {
        dpl: 3,
        ..Segment::flat32(0x1b, true)
    };
    cpu.s.seg[seg::SS] = Segment {
        dpl: 3,
        ..Segment::flat32(0x23, false)
    };
    cpu.s.cpl = 3;
    let user = |a: &mut CodeAssembler, back: u32| {
        a.mov(ecx, esp).unwrap();
        a.mov(edx, back).unwrap();
        a.sysenter().unwrap();
    };
    let back = put(&cpu, CODE, 32, |a| user(a, 0));
    put(&cpu, CODE, 32, |a| user(a, back as u32));
    let end = put(&cpu, back, 32, |a| a.nop().unwrap());
    put(&cpu, HANDLER, 32, |a| {
        a.mov(ebx, esp).unwrap();
        a.mov(esi, cs).unwrap();
        a.sysexit().unwrap();
    });
    run_until(&mut cpu, end - 1, 20);
    assert_eq!(cpu.s.gpr[reg::RBX], 0x90000);
    assert_eq!(cpu.s.gpr[reg::RSI], 0x08);
    assert_eq!((cpu.s.cpl, cpu.s.gpr[reg::RSP]), (3, STACK));
    assert_eq!(cpu.s.seg[seg::CS].selector, 0x1b);
}

#[test]
fn ltr_marks_the_tss_busy_and_str_reads_it() {
    let mut cpu = cpu64(&[]);
    long_tables(&mut cpu);
    let end = put(&cpu, CODE, 64, |a| {
        a.mov(eax, 0x28u32).unwrap();
        a.ltr(ax).unwrap();
        a.str(ebx).unwrap();
        a.nop().unwrap();
    });
    run_until(&mut cpu, end - 1, 10);
    assert_eq!(cpu.s.gpr[reg::RBX], 0x28);
    assert_eq!(cpu.s.tr.type_, 0xb);
    assert_eq!(cpu.s.tr.base, TSS);
    let desc = cpu.machine.memory.read_u64(GDT + 0x28).unwrap();
    assert_eq!((desc >> 40) & 0xf, 0xb);
    // A second LTR of the now busy TSS faults.
    cpu.s.rip = CODE;
    cpu.run_block(1).unwrap();
    assert_eq!(cpu.run_block(1), Err(Fault::GeneralProtection(0x28)));
}

#[test]
fn lar_lsl_verr_and_verw_inspect_descriptors() {
    let mut cpu = cpu64(&[]);
    long_tables(&mut cpu);
    let end = put(&cpu, CODE, 64, |a| {
        a.mov(eax, 0x10u32).unwrap();
        a.lar(ebx, eax).unwrap();
        a.lsl(ecx, eax).unwrap();
        a.verw(ax).unwrap();
        a.setz(dl).unwrap();
        a.mov(eax, 0x08u32).unwrap();
        a.verw(ax).unwrap();
        a.setz(dh).unwrap();
        a.mov(eax, 0x1000u32).unwrap();
        a.lsl(esi, eax).unwrap();
        a.setz(al).unwrap();
    });
    cpu.s.gpr[reg::RSI] = 0x55;
    run_until(&mut cpu, end, 20);
    assert_eq!(cpu.s.gpr[reg::RBX], 0x00cf_9300);
    assert_eq!(cpu.s.gpr[reg::RCX], 0xffff_ffff);
    assert_eq!(
        cpu.s.gpr[reg::RDX] & 0xffff,
        0x0001,
        "data writable, code not"
    );
    assert_eq!(cpu.s.gpr[reg::RSI], 0x55, "past the GDT: unchanged");
    assert_eq!(cpu.s.gpr[reg::RAX] & 0xff, 0, "... and ZF = 0");
}

#[test]
fn vmcall_is_an_alcazar_hypercall() {
    let mut cpu = cpu64(&[]);
    let twice = |_: u32, a: &HypercallArgs| a.a0 * 2 + a.a3;
    cpu.machine
        .hooks
        .register_hypercall(5, Arc::new(twice))
        .unwrap();
    let end = put(&cpu, CODE, 64, |a| {
        a.mov(eax, 5u32).unwrap();
        a.mov(ebx, 20u32).unwrap();
        a.mov(esi, 2u32).unwrap();
        a.vmcall().unwrap();
        a.mov(rdi, rax).unwrap();
        a.mov(eax, 6u32).unwrap();
        a.vmcall().unwrap();
    });
    run_until(&mut cpu, end, 20);
    assert_eq!(cpu.s.gpr[reg::RDI], 42);
    assert_eq!(cpu.s.gpr[reg::RAX], u64::MAX, "unknown numbers return -1");
}

#[test]
fn swapgs_exchanges_the_gs_bases() {
    let mut cpu = cpu64(&[]);
    cpu.s.msr.kernel_gs_base = 0xffff_8000_0000_0000;
    cpu.s.seg[seg::GS].base = 0x1000;
    let end = put(&cpu, CODE, 64, |a| a.swapgs().unwrap());
    run_until(&mut cpu, end, 10);
    assert_eq!(cpu.s.seg[seg::GS].base, 0xffff_8000_0000_0000);
    assert_eq!(cpu.s.msr.kernel_gs_base, 0x1000);
}

#[test]
fn debug_registers_4_and_5_alias_6_and_7_unless_cr4_de() {
    let mut cpu = cpu64(&[]);
    let end = put(&cpu, CODE, 64, |a| {
        a.mov(eax, 0x1u32).unwrap();
        a.mov(dr5, rax).unwrap();
        a.mov(rbx, dr7).unwrap();
    });
    run_until(&mut cpu, end, 10);
    assert_eq!(cpu.s.gpr[reg::RBX], 0x401);
    cpu.s.cr4 |= cr4::DE;
    cpu.s.rip = CODE;
    cpu.run_block(1).unwrap();
    assert_eq!(cpu.run_block(1), Err(Fault::InvalidOpcode));
}

#[test]
fn xgetbv_needs_cr4_osxsave_and_ud2_is_undefined() {
    let mut cpu = cpu64(&[]);
    put(&cpu, CODE, 64, |a| a.xgetbv().unwrap());
    assert_eq!(cpu.run_block(1), Err(Fault::InvalidOpcode));
    let mut cpu = cpu64(&[]);
    put(&cpu, CODE, 64, |a| a.ud2().unwrap());
    assert_eq!(cpu.run_block(1), Err(Fault::InvalidOpcode));
}

#[test]
fn mov_ss_and_pop_ss_load_through_the_gdt_in_32_bit_mode() {
    let mut cpu: Cpu = cpu32(&[]);
    write_gdt(&mut cpu, &[0, CODE32_K, DATA_K]);
    let end = put(&cpu, CODE, 32, |a| {
        a.push(0x10).unwrap();
        a.pop(ss).unwrap();
        a.mov(bx, ss).unwrap();
        a.push(es).unwrap();
        a.pop(eax).unwrap();
    });
    run_until(&mut cpu, end, 10);
    assert_eq!(cpu.s.gpr[reg::RBX] & 0xffff, 0x10);
    assert_eq!(cpu.s.gpr[reg::RAX], 0x10);
    assert_eq!(cpu.s.gpr[reg::RSP], STACK);
    let _ = Register::None;
}
