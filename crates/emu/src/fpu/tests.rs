//! Known-answer tests of the FPU/SIMD units, from the SDM's definitions.

use iced_x86::code_asm::*;

use super::*;
use crate::state::cr4;
use crate::testutil::{assemble, cpu64, run_until, CODE, DATA};

/// Runs `f` in 64-bit mode with CR4.OSFXSR set, after `setup`.
pub(super) fn run(setup: impl FnOnce(&mut Cpu), f: impl FnOnce(&mut CodeAssembler)) -> Cpu {
    let code = assemble(64, f);
    let end = CODE + code.len() as u64;
    let mut cpu = cpu64(&code);
    cpu.s.cr4 |= cr4::OSFXSR | cr4::OSXMMEXCPT;
    setup(&mut cpu);
    run_until(&mut cpu, end, 10_000);
    cpu
}

/// Runs one instruction and returns the fault it raised, if any.
pub(super) fn fault_of(
    setup: impl FnOnce(&mut Cpu),
    f: impl FnOnce(&mut CodeAssembler),
) -> Option<Fault> {
    let code = assemble(64, f);
    let mut cpu = cpu64(&code);
    cpu.s.cr4 |= cr4::OSFXSR | cr4::OSXMMEXCPT;
    setup(&mut cpu);
    cpu.run_block(1).err()
}

fn xmm(lanes: [u32; 4]) -> u128 {
    lanes
        .iter()
        .enumerate()
        .fold(0u128, |acc, (i, &l)| acc | u128::from(l) << (32 * i))
}

#[test]
fn pcmpeqb_and_pmovmskb_find_a_zero_byte() {
    let cpu = run(
        |c| c.s.fpu.xmm[1] = u128::from_le_bytes(*b"hello\0world!!!!!"),
        |a| {
            a.pxor(xmm0, xmm0).unwrap();
            a.pcmpeqb(xmm0, xmm1).unwrap();
            a.pmovmskb(eax, xmm0).unwrap();
            a.bsf(ecx, eax).unwrap();
        },
    );
    assert_eq!(cpu.s.gpr[0], 1 << 5);
    assert_eq!(cpu.s.gpr[1], 5);
}

#[test]
fn saturating_adds_clamp_at_the_lane_limits() {
    let cpu = run(
        |c| {
            c.s.fpu.xmm[0] = 0x7ff0_8000_00ff_fff0;
            c.s.fpu.xmm[1] = 0x0020_8000_0001_0020;
            c.s.fpu.xmm[2] = c.s.fpu.xmm[0];
        },
        |a| {
            a.paddsw(xmm0, xmm1).unwrap();
            a.paddusw(xmm2, xmm1).unwrap();
        },
    );
    // Signed: 0x7ff0+0x20 -> 0x7fff; 0x8000+0x8000 -> 0x8000;
    // 0x00ff+0x0001 = 0x0100; 0xfff0(-16)+0x20 = 0x0010.
    assert_eq!(cpu.s.fpu.xmm[0], 0x7fff_8000_0100_0010);
    // Unsigned: 0x7ff0+0x20 = 0x8010; 0x8000+0x8000 -> 0xffff;
    // 0xfff0 + 0x20 -> 0xffff.
    assert_eq!(cpu.s.fpu.xmm[2], 0x8010_ffff_0100_ffff);
}

#[test]
fn packs_unpacks_and_shuffles_move_lanes_as_the_sdm_draws_them() {
    let cpu = run(
        |c| {
            c.s.fpu.xmm[0] = xmm([0x0001_ff80, 0x7fff_0100, 0, 0]);
            c.s.fpu.xmm[1] = xmm([1, 2, 3, 4]);
            c.s.fpu.xmm[3] = xmm([0x1111_1111, 0x2222_2222, 0x3333_3333, 0x4444_4444]);
        },
        |a| {
            a.packuswb(xmm0, xmm0).unwrap();
            a.pshufd(xmm2, xmm1, 0x1b).unwrap();
            a.punpckldq(xmm3, xmm1).unwrap();
            a.pslldq(xmm1, 4).unwrap();
        },
    );
    // Words 0xff80 (neg) -> 0, 0x0001 -> 1, 0x0100 -> 0xff, 0x7fff -> 0xff.
    assert_eq!(cpu.s.fpu.xmm[0] as u32, 0xffff_0100);
    assert_eq!(cpu.s.fpu.xmm[2], xmm([4, 3, 2, 1]));
    assert_eq!(cpu.s.fpu.xmm[3], xmm([0x1111_1111, 1, 0x2222_2222, 2]));
    assert_eq!(cpu.s.fpu.xmm[1], xmm([0, 1, 2, 3]));
}

#[test]
fn shifts_by_register_count_clear_or_sign_fill_past_the_width() {
    let cpu = run(
        |c| {
            c.s.fpu.xmm[0] = xmm([0x8000_0000, 0x4000_0000, 0, 0]);
            c.s.fpu.xmm[1] = xmm([0x8000_0000, 1, 0, 0]);
            c.s.fpu.xmm[2] = 40;
        },
        |a| {
            a.psrad(xmm0, xmm2).unwrap();
            a.psrld(xmm1, xmm2).unwrap();
        },
    );
    assert_eq!(cpu.s.fpu.xmm[0], xmm([0xffff_ffff, 0, 0, 0]));
    assert_eq!(cpu.s.fpu.xmm[1], 0);
}

#[test]
fn movdqa_faults_on_misalignment_and_movdqu_does_not() {
    assert_eq!(
        fault_of(|_| {}, |a| a.movdqa(xmm0, xmmword_ptr(DATA + 8)).unwrap()),
        Some(Fault::GeneralProtection(0))
    );
    assert_eq!(
        fault_of(|_| {}, |a| a.movdqu(xmm0, xmmword_ptr(DATA + 8)).unwrap()),
        None
    );
}

#[test]
fn sse_checks_cr0_and_cr4_before_anything_else() {
    let op = |a: &mut CodeAssembler| a.pxor(xmm0, xmm1).unwrap();
    assert_eq!(
        fault_of(|c| c.s.cr4 &= !cr4::OSFXSR, op),
        Some(Fault::InvalidOpcode)
    );
    assert_eq!(
        fault_of(|c| c.s.cr0 |= cr0::EM, op),
        Some(Fault::InvalidOpcode)
    );
    assert_eq!(
        fault_of(|c| c.s.cr0 |= cr0::TS, op),
        Some(Fault::DeviceNotAvailable)
    );
}

#[test]
fn a_16_byte_store_across_a_missing_page_writes_nothing() {
    let code = assemble(64, |a| a.movdqu(xmmword_ptr(rbx), xmm0).unwrap());
    let mut cpu = cpu64(&code);
    cpu.s.cr4 |= cr4::OSFXSR;
    cpu.s.fpu.xmm[0] = u128::MAX;
    // Map the page at 0x4000_0000 - 0x1000 as the last present 2 MiB page
    // end: 1 GiB is the limit of the test's identity map.
    cpu.s.gpr[3] = (1 << 30) - 8;
    let r = cpu.run_block(1);
    assert!(matches!(r, Err(Fault::PageFault { addr, .. }) if addr == 1 << 30));
    let mut b = [0u8; 8];
    cpu.machine.memory.read((1 << 30) - 8, &mut b).ok();
    assert_eq!(b, [0; 8]);
}

#[test]
fn fxsave_writes_the_sdm_layout_and_fxrstor_reads_it_back() {
    let cpu = run(
        |c| {
            c.s.fpu.finit();
            c.s.fpu.fcw = 0x027f;
            c.s.fpu.mxcsr = 0x1fa0;
            c.s.fpu.xmm[15] = 0x0123_4567_89ab_cdef_0011_2233_4455_6677;
            // ST(0) = 1.0 at physical register 7.
            c.s.fpu.set_top(7);
            c.s.fpu.set_st(0, 0x3fff_8000_0000_0000_0000);
        },
        |a| {
            a.fxsave64(zmmword_ptr(DATA)).unwrap();
            a.fninit().unwrap();
            a.xorps(xmm15, xmm15).unwrap();
            a.fxrstor64(zmmword_ptr(DATA)).unwrap();
        },
    );
    let mut b = [0u8; 512];
    cpu.machine.memory.read(DATA, &mut b).unwrap();
    assert_eq!(&b[0..2], &0x027fu16.to_le_bytes());
    assert_eq!(&b[2..4], &(7u16 << 11).to_le_bytes());
    assert_eq!(b[4], 0x80, "abridged tag: only R7 is in use");
    assert_eq!(&b[24..28], &0x1fa0u32.to_le_bytes());
    assert_eq!(&b[28..32], &0xffffu32.to_le_bytes(), "MXCSR_MASK");
    assert_eq!(&b[32..42], &[0, 0, 0, 0, 0, 0, 0, 0x80, 0xff, 0x3f]);
    assert_eq!(&b[400..416], &cpu.s.fpu.xmm[15].to_le_bytes());
    assert_eq!(cpu.s.fpu.xmm[15], 0x0123_4567_89ab_cdef_0011_2233_4455_6677);
    assert_eq!(
        (cpu.s.fpu.fcw, cpu.s.fpu.top(), cpu.s.fpu.ftw),
        (0x027f, 7, 0x3fff)
    );
}

#[test]
fn fxrstor_rejects_reserved_mxcsr_bits_and_misalignment() {
    assert_eq!(
        fault_of(
            |c| c
                .machine
                .memory
                .write(DATA + 24, &0x1_0000u32.to_le_bytes())
                .unwrap(),
            |a| a.fxrstor64(zmmword_ptr(DATA)).unwrap()
        ),
        Some(Fault::GeneralProtection(0))
    );
    assert_eq!(
        fault_of(|_| {}, |a| a.fxsave(zmmword_ptr(DATA + 8)).unwrap()),
        Some(Fault::GeneralProtection(0))
    );
}

#[test]
fn fninit_fnstcw_and_ldmxcsr_set_the_sdm_values() {
    let cpu = run(
        |c| {
            c.machine
                .memory
                .write(DATA, &0x9fc0u32.to_le_bytes())
                .unwrap()
        },
        |a| {
            a.fninit().unwrap();
            a.fnstcw(word_ptr(DATA + 8)).unwrap();
            a.fnstsw(ax).unwrap();
            a.ldmxcsr(dword_ptr(DATA)).unwrap();
            a.stmxcsr(dword_ptr(DATA + 12)).unwrap();
        },
    );
    assert_eq!(
        cpu.machine.memory.read_u64(DATA + 8).unwrap(),
        0x9fc0_0000_037f
    );
    assert_eq!(cpu.s.gpr[0] & 0xffff, 0);
    assert_eq!(cpu.s.fpu.mxcsr, 0x9fc0);
}

#[test]
fn mmx_forms_share_the_integer_code_and_alias_the_x87_registers() {
    let cpu = run(
        |c| c.s.fpu.finit(),
        |a| {
            a.mov(rax, 0x0102_0304_0506_0708u64).unwrap();
            a.movq(mm1, rax).unwrap();
            a.paddb(mm1, mm1).unwrap();
            a.movq(rbx, mm1).unwrap();
        },
    );
    assert_eq!(cpu.s.gpr[3], 0x0204_0608_0a0c_0e10);
    assert_eq!(cpu.s.fpu.st[1] >> 64, 0xffff);
    assert_eq!((cpu.s.fpu.ftw, cpu.s.fpu.top()), (0, 0));
}
