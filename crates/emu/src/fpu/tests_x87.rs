//! Known-answer tests of the x87 unit (SDM Vol. 1 chapter 8).

use iced_x86::code_asm::*;

use super::tests::{fault_of, run};
use super::*;
use crate::flags::{CF, PF, ZF};
use crate::testutil::DATA;

#[test]
fn fld_arith_and_fstp_compute_in_extended_precision() {
    let cpu = run(
        |c| c.machine.memory.write(DATA, &3i32.to_le_bytes()).unwrap(),
        |a| {
            a.fninit().unwrap();
            a.fld1().unwrap();
            a.fild(dword_ptr(DATA)).unwrap();
            a.fdivp(st1, st0).unwrap();
            a.fld(st0).unwrap();
            a.fstp(qword_ptr(DATA + 8)).unwrap();
            a.fldpi().unwrap();
            a.fsqrt().unwrap();
        },
    );
    let third = cpu.machine.memory.read_u64(DATA + 8).unwrap();
    assert_eq!(f64::from_bits(third), 1.0 / 3.0);
    assert_eq!(cpu.s.fpu.st(1), 0x3ffd_aaaa_aaaa_aaaa_aaab);
    // sqrt(pi) = 1.7724538509055160272981674833411...
    assert_eq!(cpu.s.fpu.st(0), 0x3fff_e2df_c48d_a77b_553d);
    assert_eq!(cpu.s.fpu.fsw & 0x3f, fsw::PE);
}

#[test]
fn the_ninth_push_overflows_the_stack_into_the_indefinite() {
    let cpu = run(
        |_| {},
        |a| {
            a.fninit().unwrap();
            for _ in 0..9 {
                a.fldz().unwrap();
            }
        },
    );
    let f = &cpu.s.fpu;
    assert_eq!(
        f.fsw & (fsw::IE | fsw::SF | fsw::C1),
        fsw::IE | fsw::SF | fsw::C1
    );
    assert_eq!(f.st(0), 0xffff_c000_0000_0000_0000);
    assert_eq!(f.top(), 7);
}

#[test]
fn fistp_of_an_out_of_range_value_stores_the_integer_indefinite() {
    let cpu = run(
        |c| {
            c.machine
                .memory
                .write(DATA, &1e6f64.to_bits().to_le_bytes())
                .unwrap()
        },
        |a| {
            a.fninit().unwrap();
            a.fld(qword_ptr(DATA)).unwrap();
            a.fistp(word_ptr(DATA + 8)).unwrap();
            a.fld(qword_ptr(DATA)).unwrap();
            a.fistp(dword_ptr(DATA + 12)).unwrap();
        },
    );
    assert_eq!(
        cpu.machine.memory.read_u64(DATA + 8).unwrap(),
        1_000_000 << 32 | 0x8000
    );
    assert_eq!(cpu.s.fpu.fsw & fsw::IE, fsw::IE);
    assert_eq!(cpu.s.fpu.ftw, 0xffff);
}

#[test]
fn fcomi_fucompp_and_fxam_report_the_comparison() {
    let cpu = run(
        |_| {},
        |a| {
            a.fninit().unwrap();
            a.fld1().unwrap();
            a.fldz().unwrap();
            a.fcomi(st0, st1).unwrap();
            a.fxam().unwrap();
            a.fucompp().unwrap();
            a.fnstsw(ax).unwrap();
        },
    );
    assert_eq!(cpu.s.flags.get() & (ZF | PF | CF), CF, "0 < 1");
    // FUCOMPP compared ST(0)=0 with ST(1)=1: C0; the stack is empty.
    assert_eq!(cpu.s.gpr[0] & 0x4700, 0x0100);
    assert_eq!(cpu.s.fpu.ftw, 0xffff);
}

#[test]
fn an_unmasked_zero_divide_is_reported_by_the_next_waiting_instruction() {
    let setup = |c: &mut Cpu| {
        c.s.fpu.finit();
        c.s.fpu.fcw = 0x037b; // ZM clear
    };
    let cpu = run(setup, |a| {
        a.fld1().unwrap();
        a.fldz().unwrap();
        a.fdivp(st1, st0).unwrap();
    });
    assert_eq!(
        cpu.s.fpu.fsw & (fsw::ZE | fsw::ES | fsw::B),
        fsw::ZE | fsw::ES | fsw::B
    );
    assert_eq!(
        cpu.s.fpu.st(1),
        0x3fff_8000_0000_0000_0000,
        "destination unchanged"
    );
    assert_eq!(cpu.s.fpu.top(), 6, "no pop");
    assert_eq!(
        fault_of(
            |c| {
                setup(c);
                c.s.fpu.fsw |= fsw::ZE | fsw::ES;
            },
            |a| a.wait().unwrap()
        ),
        Some(Fault::X87Error)
    );
    assert_eq!(
        fault_of(|c| c.s.cr0 |= crate::state::cr0::TS, |a| a.fld1().unwrap()),
        Some(Fault::DeviceNotAvailable)
    );
}

#[test]
fn fnsave_and_frstor_round_trip_the_state_and_fnsave_reinitializes() {
    let cpu = run(
        |_| {},
        |a| {
            a.fninit().unwrap();
            a.fldpi().unwrap();
            a.fld1().unwrap();
            a.fnsave(ptr(DATA)).unwrap();
            a.fnstcw(word_ptr(DATA + 200)).unwrap();
            a.frstor(ptr(DATA)).unwrap();
        },
    );
    assert_eq!(
        cpu.machine.memory.read_u64(DATA + 200).unwrap() & 0xffff,
        0x37f
    );
    assert_eq!(cpu.s.fpu.top(), 6);
    assert_eq!(cpu.s.fpu.st(0), 0x3fff_8000_0000_0000_0000);
    assert_eq!(cpu.s.fpu.st(1), 0x4000_c90f_daa2_2168_c235);
    // The 32-bit protected-mode image: FCW, FSW, FTW (ST0, ST1 valid).
    let mut b = [0u8; 12];
    cpu.machine.memory.read(DATA, &mut b).unwrap();
    assert_eq!(
        u32::from_le_bytes([b[8], b[9], b[10], b[11]]) & 0xffff,
        0x0fff
    );
}

#[test]
fn fprem_gives_the_remainder_and_the_low_quotient_bits() {
    let cpu = run(
        |c| {
            c.machine
                .memory
                .write(DATA, &7.0f64.to_bits().to_le_bytes())
                .unwrap();
            c.machine
                .memory
                .write(DATA + 8, &2.0f64.to_bits().to_le_bytes())
                .unwrap();
        },
        |a| {
            a.fninit().unwrap();
            a.fld(qword_ptr(DATA + 8)).unwrap();
            a.fld(qword_ptr(DATA)).unwrap();
            a.fprem().unwrap();
        },
    );
    // 7 = 3 * 2 + 1: Q = 3 -> C1 = 1 (Q0), C3 = 1 (Q1), C0 = 0 (Q2).
    assert_eq!(cpu.s.fpu.st(0), 0x3fff_8000_0000_0000_0000);
    assert_eq!(cpu.s.fpu.fsw & 0x4700, fsw::C1 | fsw::C3);
}
