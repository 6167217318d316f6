//! Tests of exception and interrupt delivery, and fixtures (GDT, IDT,
//! TSS in guest memory) the system-instruction tests share.

use std::sync::Arc;
use std::time::Duration;

use alcazar_core::engine::VcpuExit;
use alcazar_core::regs::Segment;
use alcazar_core::StopReason;
use iced_x86::code_asm::*;

use super::*;
use crate::state::reg;
use crate::testutil::*;

pub(crate) const GDT: u64 = 0x5000;
pub(crate) const IDT: u64 = 0x6000;
pub(crate) const TSS: u64 = 0x7000;
/// Where handlers are assembled.
pub(crate) const HANDLER: u64 = 0x20000;
/// RSP0 in the TSS.
pub(crate) const RSP0: u64 = 0x90000;
/// IST1 in the 64-bit TSS.
pub(crate) const IST1: u64 = 0x88000;

/// 64-bit kernel code, selector 0x08.
pub(crate) const CODE64_K: u64 = 0x00af_9b00_0000_ffff;
/// Kernel data, 0x10.
pub(crate) const DATA_K: u64 = 0x00cf_9300_0000_ffff;
/// User data (DPL 3), 0x18.
pub(crate) const DATA_U: u64 = 0x00cf_f300_0000_ffff;
/// 64-bit user code (DPL 3), 0x20.
pub(crate) const CODE64_U: u64 = 0x00af_fb00_0000_ffff;
/// 32-bit kernel code, 0x38.
pub(crate) const CODE32_K: u64 = 0x00cf_9b00_0000_ffff;
/// 32-bit user code (DPL 3), 0x40.
pub(crate) const CODE32_U: u64 = 0x00cf_fb00_0000_ffff;

/// Assembles `f` at `addr`, writes it to guest memory, returns its end.
pub(crate) fn put(cpu: &Cpu, addr: u64, bitness: u32, f: impl FnOnce(&mut CodeAssembler)) -> u64 {
    let mut a = CodeAssembler::new(bitness).unwrap();
    f(&mut a);
    let bytes = a.assemble(addr).unwrap();
    cpu.machine.memory.write(addr, &bytes).unwrap();
    addr + bytes.len() as u64
}

/// Writes GDT entries and points GDTR at them.
pub(crate) fn write_gdt(cpu: &mut Cpu, entries: &[u64]) {
    for (i, e) in entries.iter().enumerate() {
        cpu.machine
            .memory
            .write_u64(GDT + 8 * i as u64, *e)
            .unwrap();
    }
    cpu.s.gdtr.base = GDT;
    cpu.s.gdtr.limit = (entries.len() * 8 - 1) as u16;
}

/// A 16-byte IA-32e interrupt (or trap) gate.
pub(crate) fn gate64(offset: u64, dpl: u8, ist: u8, trap: bool) -> (u64, u64) {
    let kind: u64 = if trap { 0xf } else { 0xe };
    let lo = (offset & 0xffff)
        | 0x08 << 16
        | u64::from(ist) << 32
        | (0x80 | u64::from(dpl) << 5 | kind) << 40
        | ((offset >> 16) & 0xffff) << 48;
    (lo, offset >> 32)
}

/// Sets IDT entry `vector` (IA-32e mode).
pub(crate) fn set_gate64(cpu: &Cpu, vector: u8, offset: u64, dpl: u8, ist: u8) {
    let (lo, hi) = gate64(offset, dpl, ist, false);
    let at = IDT + 16 * u64::from(vector);
    cpu.machine.memory.write_u64(at, lo).unwrap();
    cpu.machine.memory.write_u64(at + 8, hi).unwrap();
}

/// GDT (null, 0x08 code64, 0x10 data, 0x18 user data, 0x20 user code64,
/// 0x28 TSS64, 0x38 code32, 0x40 user code32), an empty 256-entry IDT and
/// a TSS with RSP0 and IST1, for a CPU from [`cpu64`].
pub(crate) fn long_tables(cpu: &mut Cpu) {
    let tss_lo = 0x67 | (TSS & 0xff_ffff) << 16 | 0x89 << 40 | ((TSS >> 24) & 0xff) << 56;
    let tss_hi = TSS >> 32;
    write_gdt(
        cpu,
        &[
            0, CODE64_K, DATA_K, DATA_U, CODE64_U, tss_lo, tss_hi, CODE32_K, CODE32_U,
        ],
    );
    cpu.s.idtr.base = IDT;
    cpu.s.idtr.limit = 256 * 16 - 1;
    cpu.machine.memory.write(TSS, &[0; 0x68]).unwrap();
    cpu.machine
        .memory
        .write(TSS + 4, &RSP0.to_le_bytes())
        .unwrap();
    cpu.machine
        .memory
        .write(TSS + 0x24, &IST1.to_le_bytes())
        .unwrap();
    cpu.s.tr = Segment {
        base: TSS,
        limit: 0x67,
        selector: 0x28,
        type_: 0xb,
        present: true,
        ..Default::default()
    };
}

/// Sets the U/S bit on the identity map of [`cpu64`] (tables at 0x1000).
pub(crate) fn user_pages(cpu: &mut Cpu) {
    for addr in [0x1000u64, 0x2000] {
        let e = cpu.machine.memory.read_u64(addr).unwrap();
        cpu.machine.memory.write_u64(addr, e | 4).unwrap();
    }
    for i in 0..512u64 {
        let e = cpu.machine.memory.read_u64(0x3000 + 8 * i).unwrap();
        cpu.machine.memory.write_u64(0x3000 + 8 * i, e | 4).unwrap();
    }
    cpu.mmu.flush_all();
}

/// Switches a [`cpu64`] CPU to CPL 3 (CS 0x23, SS 0x1b) with RSP `rsp`.
pub(crate) fn to_user64(cpu: &mut Cpu, stack: u64) {
    user_pages(cpu);
    cpu.s.seg[seg::CS] = Segment {
        dpl: 3,
        ..Segment::code64(0x23)
    };
    cpu.s.seg[seg::SS] = Segment {
        dpl: 3,
        ..Segment::flat32(0x1b, false)
    };
    cpu.s.cpl = 3;
    cpu.s.gpr[reg::RSP] = stack;
}

fn len64(f: impl FnOnce(&mut CodeAssembler)) -> u64 {
    let mut a = CodeAssembler::new(64).unwrap();
    f(&mut a);
    a.assemble(CODE).unwrap().len() as u64
}

#[test]
fn a_page_fault_in_long_mode_sets_cr2_pushes_the_error_code_and_iretq_returns() {
    let mut cpu = cpu64(&[]);
    long_tables(&mut cpu);
    let faulting = |a: &mut CodeAssembler| a.mov(rsi, qword_ptr(0x4000_0000u64)).unwrap();
    let resume = CODE + len64(faulting);
    let end = put(&cpu, CODE, 64, |a| {
        faulting(a);
        a.mov(edx, 1u32).unwrap();
    });
    put(&cpu, HANDLER, 64, |a| {
        a.pop(rbx).unwrap();
        a.mov(rcx, cr2).unwrap();
        a.mov(rdi, rsp).unwrap();
        a.mov(qword_ptr(rsp), resume as i32).unwrap();
        a.iretq().unwrap();
    });
    set_gate64(&cpu, 14, HANDLER, 0, 0);
    run_until(&mut cpu, end, 100);
    assert_eq!(cpu.s.rip, end);
    assert_eq!(cpu.s.gpr[reg::RBX], 0, "not present, read, supervisor");
    assert_eq!(cpu.s.gpr[reg::RCX], 0x4000_0000);
    assert_eq!(cpu.s.cr2, 0x4000_0000);
    assert_eq!(cpu.s.gpr[reg::RDI], STACK - 40, "RIP CS RFLAGS RSP SS");
    assert_eq!(cpu.s.gpr[reg::RDX], 1);
    assert_eq!(cpu.s.gpr[reg::RSP], STACK);
}

#[test]
fn loading_a_bad_selector_delivers_gp_with_the_selector_as_error_code() {
    let mut cpu = cpu64(&[]);
    long_tables(&mut cpu);
    let end = put(&cpu, CODE, 64, |a| {
        a.mov(eax, 0x1233u32).unwrap();
        a.mov(ds, ax).unwrap();
    });
    put(&cpu, HANDLER, 64, |a| {
        a.pop(rbx).unwrap();
        a.hlt().unwrap();
    });
    set_gate64(&cpu, 13, HANDLER, 0, 0);
    run_until(&mut cpu, end, 100);
    assert!(cpu.s.halted);
    assert_eq!(cpu.s.gpr[reg::RBX], 0x1230);
}

#[test]
fn ud2_raises_invalid_opcode_through_the_idt_without_an_error_code() {
    let mut cpu = cpu64(&[]);
    long_tables(&mut cpu);
    put(&cpu, CODE, 64, |a| {
        a.nop().unwrap();
        a.ud2().unwrap();
    });
    put(&cpu, HANDLER, 64, |a| {
        a.mov(rbx, qword_ptr(rsp)).unwrap();
        a.hlt().unwrap();
    });
    set_gate64(&cpu, 6, HANDLER, 0, 0);
    run_until(&mut cpu, 0, 100);
    assert!(cpu.s.halted);
    assert_eq!(cpu.s.gpr[reg::RBX], CODE + 1, "the saved RIP is the ud2");
}

#[test]
fn a_divide_by_zero_reaches_the_divide_error_handler() {
    let mut cpu = cpu64(&[]);
    long_tables(&mut cpu);
    put(&cpu, CODE, 64, |a| {
        a.xor(ecx, ecx).unwrap();
        a.div(ecx).unwrap();
    });
    put(&cpu, HANDLER, 64, |a| {
        a.mov(ebx, 0xdeu32).unwrap();
        a.hlt().unwrap();
    });
    set_gate64(&cpu, 0, HANDLER, 0, 0);
    run_until(&mut cpu, 0, 100);
    assert_eq!(cpu.s.gpr[reg::RBX], 0xde);
}

#[test]
fn int_n_round_trips_in_real_mode() {
    let code = assemble(16, |a| {
        a.int(0x21).unwrap();
        a.mov(cx, 1u32).unwrap();
        a.nop().unwrap();
    });
    let mut cpu = cpu16(&code);
    cpu.s.flags.set_flag(crate::flags::IF, true);
    // IVT[0x21] = 0000:0600.
    cpu.machine
        .memory
        .write(0x21 * 4, &[0x00, 0x06, 0, 0])
        .unwrap();
    let h = put(&cpu, 0x600, 16, |a| {
        a.mov(bx, 0x77u32).unwrap();
        a.iret().unwrap();
    });
    let _ = h;
    run_until(&mut cpu, code.len() as u64 - 1, 100);
    assert_eq!(cpu.s.gpr[reg::RBX], 0x77);
    assert_eq!(cpu.s.gpr[reg::RCX], 1);
    assert_eq!(cpu.s.gpr[reg::RSP], 0x7000);
    assert_eq!(cpu.s.seg[seg::CS].selector, 0x1000);
    assert!(cpu.s.flags.test(crate::flags::IF), "IRET restored IF");
}

#[test]
fn int_n_round_trips_in_long_mode() {
    let mut cpu = cpu64(&[]);
    long_tables(&mut cpu);
    let end = put(&cpu, CODE, 64, |a| {
        a.int(0x80).unwrap();
        a.mov(ecx, 1u32).unwrap();
    });
    put(&cpu, HANDLER, 64, |a| {
        a.mov(ebx, 0x80u32).unwrap();
        a.mov(rdx, qword_ptr(rsp)).unwrap();
        a.iretq().unwrap();
    });
    set_gate64(&cpu, 0x80, HANDLER, 0, 0);
    run_until(&mut cpu, end, 100);
    assert_eq!(cpu.s.gpr[reg::RBX], 0x80);
    assert_eq!(cpu.s.gpr[reg::RDX], CODE + 2, "INT n is a trap");
    assert_eq!(cpu.s.gpr[reg::RCX], 1);
    assert_eq!(cpu.s.gpr[reg::RSP], STACK);
}

#[test]
fn an_interrupt_from_cpl3_switches_to_the_rsp0_stack_in_long_mode() {
    let mut cpu = cpu64(&[]);
    long_tables(&mut cpu);
    to_user64(&mut cpu, 0x70008);
    let end = put(&cpu, CODE, 64, |a| {
        a.int(0x80).unwrap();
        a.nop().unwrap();
    });
    put(&cpu, HANDLER, 64, |a| {
        a.mov(rax, rsp).unwrap();
        a.mov(rbx, qword_ptr(rsp + 8)).unwrap();
        a.mov(rcx, qword_ptr(rsp + 24)).unwrap();
        a.mov(rdx, qword_ptr(rsp + 32)).unwrap();
        a.mov(rsi, ss).unwrap();
        a.iretq().unwrap();
    });
    set_gate64(&cpu, 0x80, HANDLER, 3, 0);
    run_until(&mut cpu, end - 1, 100);
    assert_eq!(cpu.s.gpr[reg::RAX], RSP0 - 40);
    assert_eq!(cpu.s.gpr[reg::RBX], 0x23, "saved CS");
    assert_eq!(cpu.s.gpr[reg::RCX], 0x70008, "saved RSP");
    assert_eq!(cpu.s.gpr[reg::RDX], 0x1b, "saved SS");
    assert_eq!(cpu.s.gpr[reg::RSI], 0, "SS is null at CPL 0");
    assert_eq!(cpu.s.cpl, 3);
    assert_eq!(cpu.s.gpr[reg::RSP], 0x70008);
    assert_eq!(cpu.s.seg[seg::SS].selector, 0x1b);
}

#[test]
fn a_user_int_through_a_dpl0_gate_raises_gp_with_the_idt_error_code() {
    let mut cpu = cpu64(&[]);
    long_tables(&mut cpu);
    to_user64(&mut cpu, 0x70000);
    put(&cpu, CODE, 64, |a| a.int(0x80).unwrap());
    put(&cpu, HANDLER, 64, |a| {
        a.pop(rbx).unwrap();
        a.hlt().unwrap();
    });
    set_gate64(&cpu, 0x80, HANDLER + 0x100, 0, 0);
    set_gate64(&cpu, 13, HANDLER, 0, 0);
    run_until(&mut cpu, 0, 100);
    assert_eq!(cpu.s.gpr[reg::RBX], 0x80 * 8 + 2);
    assert_eq!(cpu.s.cpl, 0);
}

#[test]
fn an_ist_gate_uses_its_stack_aligned_to_16_bytes() {
    let mut cpu = cpu64(&[]);
    long_tables(&mut cpu);
    cpu.machine
        .memory
        .write(TSS + 0x24, &(IST1 + 8).to_le_bytes())
        .unwrap();
    put(&cpu, CODE, 64, |a| a.int3().unwrap());
    put(&cpu, HANDLER, 64, |a| {
        a.mov(rax, rsp).unwrap();
        a.hlt().unwrap();
    });
    set_gate64(&cpu, 3, HANDLER, 0, 1);
    run_until(&mut cpu, 0, 100);
    assert_eq!(cpu.s.gpr[reg::RAX], IST1 - 40);
}

#[test]
fn a_cpl3_interrupt_in_32_bit_protected_mode_switches_to_the_ss0_esp0_stack() {
    let mut cpu = cpu32(&[]);
    let tss_desc = 0x67 | (TSS & 0xff_ffff) << 16 | 0x89 << 40;
    write_gdt(
        &mut cpu,
        &[
            0,
            0x00cf_9b00_0000_ffff,
            0x00cf_9300_0000_ffff,
            0x00cf_fb00_0000_ffff,
            0x00cf_f300_0000_ffff,
            tss_desc,
        ],
    );
    cpu.machine.memory.write(TSS, &[0; 0x68]).unwrap();
    cpu.machine
        .memory
        .write(TSS + 4, &0x90000u32.to_le_bytes())
        .unwrap();
    cpu.machine
        .memory
        .write(TSS + 8, &0x10u16.to_le_bytes())
        .unwrap();
    cpu.s.tr = Segment {
        base: TSS,
        limit: 0x67,
        selector: 0x28,
        type_: 0xb,
        present: true,
        ..Default::default()
    };
    // 32-bit interrupt gate 0x80, DPL 3 -> 0x08:HANDLER.
    let gate = (HANDLER & 0xffff) | 0x08 << 16 | 0xee << 40 | (HANDLER >> 16) << 48;
    cpu.machine.memory.write_u64(IDT + 0x80 * 8, gate).unwrap();
    cpu.s.idtr.base = IDT;
    cpu.s.idtr.limit = 0x7ff;
    let user_code = Segment {
        dpl: 3,
        ..Segment::flat32(0x1b, true)
    };
    let user_data = Segment {
        dpl: 3,
        ..Segment::flat32(0x23, false)
    };
    cpu.s.seg[seg::CS] = user_code;
    for i in [seg::SS, seg::DS, seg::ES] {
        cpu.s.seg[i] = user_data;
    }
    cpu.s.cpl = 3;
    cpu.s.gpr[reg::RSP] = 0x70000;
    let end = put(&cpu, CODE, 32, |a| {
        a.int(0x80).unwrap();
        a.nop().unwrap();
    });
    put(&cpu, HANDLER, 32, |a| {
        a.mov(eax, esp).unwrap();
        a.mov(ebx, dword_ptr(esp + 4)).unwrap();
        a.mov(ecx, dword_ptr(esp + 16)).unwrap();
        a.mov(dx, ss).unwrap();
        a.iretd().unwrap();
    });
    cpu.s.rip = CODE;
    run_until(&mut cpu, end - 1, 100);
    assert_eq!(cpu.s.gpr[reg::RAX], 0x90000 - 20);
    assert_eq!(cpu.s.gpr[reg::RBX], 0x1b);
    assert_eq!(cpu.s.gpr[reg::RCX], 0x23);
    assert_eq!(cpu.s.gpr[reg::RDX] & 0xffff, 0x10);
    assert_eq!((cpu.s.cpl, cpu.s.gpr[reg::RSP]), (3, 0x70000));
    assert_eq!(cpu.s.seg[seg::DS].selector, 0x23, "DPL 3 data stays loaded");
}

#[test]
fn a_gp_whose_gate_is_not_present_escalates_to_a_double_fault() {
    let mut cpu = cpu64(&[]);
    long_tables(&mut cpu);
    put(&cpu, CODE, 64, |a| {
        a.mov(eax, 0x1234u32).unwrap();
        a.mov(ds, ax).unwrap();
    });
    put(&cpu, HANDLER, 64, |a| {
        a.pop(rbx).unwrap();
        a.mov(ecx, 0xdfu32).unwrap();
        a.hlt().unwrap();
    });
    set_gate64(&cpu, 8, HANDLER, 0, 1);
    // Vector 13: a gate with P = 0 -> #NP during delivery of #GP.
    let (lo, hi) = gate64(HANDLER, 0, 0, false);
    cpu.machine
        .memory
        .write_u64(IDT + 13 * 16, lo & !(1 << 47))
        .unwrap();
    cpu.machine.memory.write_u64(IDT + 13 * 16 + 8, hi).unwrap();
    cpu.s.gpr[reg::RBX] = 0x55;
    run_until(&mut cpu, 0, 100);
    assert_eq!(cpu.s.gpr[reg::RCX], 0xdf);
    assert_eq!(cpu.s.gpr[reg::RBX], 0, "#DF pushes error code 0");
}

#[test]
fn a_page_fault_while_delivering_a_page_fault_is_a_double_fault() {
    let mut cpu = cpu64(&[]);
    long_tables(&mut cpu);
    cpu.s.gpr[reg::RSP] = 0x4000_1000;
    put(&cpu, CODE, 64, |a| a.push(rax).unwrap());
    put(&cpu, HANDLER, 64, |a| {
        a.mov(rcx, cr2).unwrap();
        a.mov(rdx, rsp).unwrap();
        a.hlt().unwrap();
    });
    set_gate64(&cpu, 14, HANDLER + 0x100, 0, 0);
    set_gate64(&cpu, 8, HANDLER, 0, 1);
    run_until(&mut cpu, 0, 100);
    assert_eq!(cpu.s.gpr[reg::RCX], 0x4000_0ff8);
    assert_eq!(cpu.s.gpr[reg::RDX], IST1 - 48);
}

#[test]
fn a_fault_while_delivering_a_double_fault_shuts_the_vcpu_down() {
    let mut cpu = cpu64(&[]);
    long_tables(&mut cpu);
    cpu.s.idtr.limit = 0;
    put(&cpu, CODE, 64, |a| a.ud2().unwrap());
    assert_eq!(cpu.run(), VcpuExit::Shutdown);
    assert_eq!(
        cpu.machine
            .vcpu_stats(0)
            .get(alcazar_core::engine::ExitKind::Shutdown),
        1
    );
}

#[test]
fn double_fault_escalation_follows_table_6_5() {
    let gp = Fault::GeneralProtection(0);
    let pf = Fault::PageFault { addr: 0, code: 0 };
    assert_eq!(
        escalate(gp, Fault::SegmentNotPresent(8)),
        Fault::DoubleFault
    );
    assert_eq!(escalate(pf, pf), Fault::DoubleFault);
    assert_eq!(escalate(pf, gp), Fault::DoubleFault);
    assert_eq!(escalate(gp, pf), pf, "contributory then #PF: serially");
    assert_eq!(escalate(Fault::InvalidOpcode, gp), gp, "benign first");
}

#[test]
fn an_nmi_is_blocked_until_the_next_iret() {
    let mut cpu = cpu64(&[]);
    long_tables(&mut cpu);
    put(&cpu, CODE, 64, |a| a.nop().unwrap());
    put(&cpu, HANDLER, 64, |a| {
        a.inc(ebx).unwrap();
        a.iretq().unwrap();
    });
    set_gate64(&cpu, 2, HANDLER, 0, 0);
    let lines = cpu.irq.clone();
    lines.raise_nmi();
    assert!(take_pending(&mut cpu), "NMIs ignore IF");
    assert_eq!(cpu.s.rip, HANDLER);
    lines.raise_nmi();
    assert!(!take_pending(&mut cpu), "blocked while the handler runs");
    run_until(&mut cpu, CODE, 10);
    assert_eq!(cpu.s.gpr[reg::RBX], 1);
    assert!(!lines.nmi_blocked());
    assert!(take_pending(&mut cpu), "the second NMI after IRET");
}

#[test]
fn external_interrupts_wait_for_if_and_the_sti_shadow() {
    let mut cpu = cpu64(&[]);
    long_tables(&mut cpu);
    put(&cpu, CODE, 64, |a| {
        a.sti().unwrap();
        a.nop().unwrap();
        a.nop().unwrap();
    });
    put(&cpu, HANDLER, 64, |a| a.hlt().unwrap());
    set_gate64(&cpu, 0x30, HANDLER, 0, 0);
    cpu.irq.set_external(Some(0x30));
    assert!(!take_pending(&mut cpu), "IF = 0");
    cpu.step(); // sti (ends the block)
    assert!(cpu.s.interrupt_shadow);
    assert!(!take_pending(&mut cpu), "the STI shadow");
    cpu.step(); // one instruction in the shadow
    assert_eq!(cpu.s.rip, CODE + 2);
    assert!(take_pending(&mut cpu));
    assert_eq!(cpu.s.rip, HANDLER);
    assert!(
        !cpu.s.flags.test(crate::flags::IF),
        "interrupt gate clears IF"
    );
    assert!(!take_pending(&mut cpu), "the latch was consumed");
}

#[test]
fn hlt_with_nothing_to_wake_the_vcpu_returns_halted() {
    let mut cpu = cpu64(&[]);
    put(&cpu, CODE, 64, |a| a.hlt().unwrap());
    assert_eq!(cpu.run(), VcpuExit::Halted);
    assert!(cpu.s.halted);
}

/// An interrupt controller with one pending vector.
struct OneShot(std::sync::Mutex<Option<u8>>);

impl InterruptSource for OneShot {
    fn pending(&self) -> bool {
        self.0.lock().unwrap().is_some()
    }
    fn acknowledge(&self) -> Option<u8> {
        self.0.lock().unwrap().take()
    }
}

#[test]
fn hlt_sleeps_until_a_connected_source_raises_an_interrupt() {
    let mut cpu = cpu64(&[]);
    long_tables(&mut cpu);
    put(&cpu, CODE, 64, |a| {
        let mut park = a.create_label();
        a.sti().unwrap();
        a.hlt().unwrap();
        a.mov(dword_ptr(DATA), 1u32).unwrap();
        a.cli().unwrap();
        a.set_label(&mut park).unwrap();
        a.hlt().unwrap();
        a.jmp(park).unwrap();
    });
    put(&cpu, HANDLER, 64, |a| {
        a.mov(dword_ptr(DATA + 8), 0x40u32).unwrap();
        a.iretq().unwrap();
    });
    set_gate64(&cpu, 0x40, HANDLER, 0, 0);
    let source = Arc::new(OneShot(std::sync::Mutex::new(None)));
    cpu.irq.connect(source.clone());
    let lines = cpu.irq.clone();
    let machine = cpu.machine.clone();
    let producer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(30));
        *source.0.lock().unwrap() = Some(0x40);
        lines.notify();
        for _ in 0..400 {
            if machine.memory.read_u64(DATA).unwrap() & 0xffff_ffff == 1 {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        // The vCPU now sleeps with IF = 0: only a stop wakes it.
        std::thread::sleep(Duration::from_millis(20));
        machine.control.request_stop(StopReason::UserQuit);
    });
    assert_eq!(cpu.run(), VcpuExit::Stopped);
    producer.join().unwrap();
    assert_eq!(cpu.machine.memory.read_u64(DATA + 8).unwrap(), 0x40);
    assert_eq!(cpu.machine.memory.read_u64(DATA).unwrap(), 1);
}

#[test]
fn kit_style_int_roundtrip_counts_one_call() {
    let mut cpu = cpu64(&[]);
    long_tables(&mut cpu);
    const COUNTER: u64 = 0x21000;
    put(&cpu, HANDLER, 64, |a| {
        a.inc(qword_ptr(COUNTER)).unwrap();
        a.pushfq().unwrap();
        a.pop(qword_ptr(COUNTER + 8)).unwrap();
        a.push(qword_ptr(rsp)).unwrap();
        a.pop(qword_ptr(COUNTER + 16)).unwrap();
        a.push(qword_ptr(rsp + 8)).unwrap();
        a.pop(qword_ptr(COUNTER + 24)).unwrap();
        a.mov(ebx, 0xb0a7u32).unwrap();
        a.iretq().unwrap();
    });
    set_gate64(&cpu, 0x40, HANDLER, 0, 0);
    let end = put(&cpu, CODE, 64, |a| {
        a.mov(qword_ptr(COUNTER), 0).unwrap();
        a.xor(ebx, ebx).unwrap();
        a.mov(r12, rsp).unwrap();
        a.sti().unwrap();
        a.int(0x40).unwrap();
        a.pushfq().unwrap();
        a.pop(r13).unwrap();
        a.cli().unwrap();
    });
    assert_eq!(run_until(&mut cpu, end, 100), 17);
    assert_eq!(cpu.machine.memory.read_u64(COUNTER).unwrap(), 1);
    assert_eq!(cpu.s.gpr[reg::RBX], 0xb0a7);
    assert_eq!(cpu.machine.memory.read_u64(COUNTER + 24).unwrap(), 8);
}

#[test]
fn garbage_tables_selectors_and_stacks_never_panic_the_host() {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..300 {
        let mut cpu = if round % 2 == 0 {
            cpu64(&[])
        } else {
            cpu32(&[])
        };
        long_tables(&mut cpu);
        for addr in (GDT..GDT + 0x80).chain(IDT..IDT + 0x1000).step_by(8) {
            let v = next();
            cpu.machine.memory.write_u64(addr, v).unwrap();
        }
        for addr in (TSS..TSS + 0x68)
            .chain(STACK - 0x40..STACK + 0x40)
            .step_by(8)
        {
            let v = next();
            cpu.machine.memory.write_u64(addr, v).unwrap();
        }
        cpu.s.cpl = (next() % 4) as u8;
        cpu.s.gdtr.limit = next() as u16;
        for i in [seg::ES, seg::SS, seg::DS, seg::FS, seg::GS] {
            let _ = crate::segment::load_segment(&mut cpu, i, next() as u16);
        }
        let code: Vec<u8> = match next() % 6 {
            0 => vec![0x48, 0xcf],                                   // iretq
            1 => vec![0xcf],                                         // iret
            2 => vec![0x48, 0xcb],                                   // retfq
            3 => vec![0xcd, next() as u8],                           // int n
            4 => vec![0xea, 1, 2, 3, 4, next() as u8, next() as u8], // jmp far (32-bit)
            _ => vec![0xff, 0x1c, 0x24],                             // call far [rsp] / [esp]
        };
        cpu.machine.memory.write(CODE, &code).unwrap();
        cpu.s.rip = CODE;
        cpu.s.flags.set(next() & 0x3f_7fd5);
        for _ in 0..4 {
            cpu.step();
            if cpu.exit.is_some() {
                break;
            }
        }
        deliver_fault(
            &mut cpu,
            Fault::PageFault {
                addr: next(),
                code: 2,
            },
        );
        let lines = cpu.irq.clone();
        lines.raise_nmi();
        lines.set_external(Some(next() as u8));
        cpu.s.interrupt_shadow = false;
        take_pending(&mut cpu);
        take_pending(&mut cpu);
    }
}
