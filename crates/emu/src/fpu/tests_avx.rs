//! Known-answer tests of the XSAVE feature set and of the AVX
//! instructions the differential tester leaves out (gathers, faults that
//! depend on CR4/XCR0), run as instructions on a 64-bit CPU.

use iced_x86::code_asm::*;

use super::tests::{fault_of, run};
use super::*;
use crate::state::cr4;
use crate::testutil::DATA;

/// CR4.OSXSAVE on and XCR0 = x87 | SSE | AVX.
fn avx_on(cpu: &mut Cpu) {
    cpu.s.cr4 |= cr4::OSXSAVE;
    cpu.s.xcr0 = 7;
}

#[test]
fn vex_instructions_need_osxsave_and_the_avx_state_in_xcr0() {
    let code = |a: &mut CodeAssembler| a.vaddps(ymm0, ymm1, ymm2).unwrap();
    assert_eq!(fault_of(|_| {}, code), Some(Fault::InvalidOpcode));
    let sse_only = |cpu: &mut Cpu| {
        cpu.s.cr4 |= cr4::OSXSAVE;
        cpu.s.xcr0 = 3;
    };
    assert_eq!(fault_of(sse_only, code), Some(Fault::InvalidOpcode));
    let ts = |cpu: &mut Cpu| {
        avx_on(cpu);
        cpu.s.cr0 |= crate::state::cr0::TS;
    };
    assert_eq!(fault_of(ts, code), Some(Fault::DeviceNotAvailable));
    assert_eq!(fault_of(avx_on, code), None);
}

#[test]
fn a_vex_128_write_zeroes_the_upper_half_and_a_legacy_one_keeps_it() {
    let cpu = run(
        |cpu| {
            avx_on(cpu);
            cpu.s.fpu.ymm_hi = [u128::MAX; 16];
        },
        |a| {
            a.vpxor(xmm1, xmm1, xmm1).unwrap();
            a.pxor(xmm2, xmm2).unwrap();
        },
    );
    assert_eq!(cpu.s.fpu.ymm_hi[1], 0);
    assert_eq!(cpu.s.fpu.ymm_hi[2], u128::MAX);
}

#[test]
fn xsave_and_xrstor_carry_the_ymm_registers() {
    let cpu = run(
        |cpu| {
            avx_on(cpu);
            for i in 0..16 {
                cpu.s.fpu.xmm[i] = 0x1111 * (i as u128 + 1);
                cpu.s.fpu.ymm_hi[i] = 0x2222 << 64 | (i as u128 + 1);
            }
            cpu.s.gpr[crate::state::reg::RAX] = 7;
            cpu.s.gpr[crate::state::reg::RDX] = 0;
        },
        |a| {
            a.mov(rdi, DATA).unwrap();
            a.xsave64(ptr(rdi)).unwrap();
            a.vzeroall().unwrap();
            a.xrstor64(ptr(rdi)).unwrap();
        },
    );
    assert_eq!(cpu.s.fpu.ymm_hi[15], 0x2222 << 64 | 16);
    assert_eq!(cpu.s.fpu.xmm[3], 0x4444);
    // XSTATE_BV records x87 (power-on FCW is not FNINIT's), SSE and AVX.
    let bv = cpu.machine.memory.read_u64(DATA + 512).unwrap();
    assert_eq!(bv & 7, 7);
    assert_eq!(cpu.machine.memory.read_u64(DATA + 576).unwrap() as u128, 1);
}

#[test]
fn xsavec_writes_the_compacted_header_and_xrstor_reads_it() {
    let cpu = run(
        |cpu| {
            avx_on(cpu);
            cpu.s.fpu.ymm_hi[0] = 5;
            cpu.s.gpr[crate::state::reg::RAX] = 6;
            cpu.s.gpr[crate::state::reg::RDX] = 0;
        },
        |a| {
            a.mov(rdi, DATA).unwrap();
            a.xsavec64(ptr(rdi)).unwrap();
            a.vzeroupper().unwrap();
            a.xrstor64(ptr(rdi)).unwrap();
        },
    );
    // XCOMP_BV: compacted, SSE | AVX requested.
    assert_eq!(
        cpu.machine.memory.read_u64(DATA + 520).unwrap(),
        1 << 63 | 6
    );
    assert_eq!(cpu.s.fpu.ymm_hi[0], 5);
}

#[test]
fn xrstor_of_a_component_absent_from_xstate_bv_initializes_it() {
    let cpu = run(
        |cpu| {
            avx_on(cpu);
            cpu.s.fpu.ymm_hi[4] = 9;
            cpu.s.gpr[crate::state::reg::RAX] = 4;
            cpu.s.gpr[crate::state::reg::RDX] = 0;
        },
        |a| {
            // An all-zero area: XSTATE_BV = 0, standard format.
            a.mov(rdi, DATA).unwrap();
            a.xrstor64(ptr(rdi)).unwrap();
        },
    );
    assert_eq!(cpu.s.fpu.ymm_hi[4], 0);
}

#[test]
fn xrstor_refuses_a_misaligned_area_and_reserved_header_bits() {
    let misaligned = |a: &mut CodeAssembler| {
        a.mov(rdi, DATA + 16).unwrap();
        a.xrstor64(ptr(rdi)).unwrap();
    };
    // Two instructions: run the MOV, then check the XRSTOR.
    let code = crate::testutil::assemble(64, misaligned);
    let mut c = crate::testutil::cpu64(&code);
    avx_on(&mut c);
    c.run_block(1).unwrap();
    assert_eq!(c.run_block(1).err(), Some(Fault::GeneralProtection(0)));
    let mut c = crate::testutil::cpu64(&crate::testutil::assemble(64, |a| {
        a.mov(rdi, DATA).unwrap();
        a.xrstor64(ptr(rdi)).unwrap();
    }));
    avx_on(&mut c);
    c.s.gpr[crate::state::reg::RAX] = 7;
    // XSTATE_BV bit 5 is not in XCR0.
    c.machine.memory.write_u64(DATA + 512, 1 << 5).unwrap();
    c.run_block(1).unwrap();
    assert_eq!(c.run_block(1).err(), Some(Fault::GeneralProtection(0)));
}

#[test]
fn a_gather_loads_the_selected_elements_and_clears_the_mask() {
    let cpu = run(
        |cpu| {
            avx_on(cpu);
            // Indices 0, 3, 1, 2 (dwords); mask: elements 0, 1, 3.
            cpu.s.fpu.xmm[1] = 2u128 << 96 | 1u128 << 64 | 3u128 << 32;
            cpu.s.fpu.xmm[2] = 1u128 << 127 | 1u128 << 63 | 1u128 << 31;
            cpu.s.fpu.xmm[0] = 0xeeee_eeee_u128 << 64;
        },
        |a| {
            a.mov(rsi, DATA).unwrap();
            a.mov(dword_ptr(rsi), 10u32).unwrap();
            a.mov(dword_ptr(rsi + 4), 11u32).unwrap();
            a.mov(dword_ptr(rsi + 8), 12u32).unwrap();
            a.mov(dword_ptr(rsi + 12), 13u32).unwrap();
            a.vpgatherdd_3(xmm0, dword_ptr(rsi + xmm1 * 4), xmm2)
                .unwrap();
        },
    );
    let r = cpu.s.fpu.xmm[0];
    let e = |i: u32| (r >> (32 * i)) as u32;
    assert_eq!([e(0), e(1), e(2), e(3)], [10, 13, 0xeeee_eeee, 12]);
    assert_eq!(cpu.s.fpu.xmm[2], 0, "the mask ends all clear");
}

#[test]
fn a_gather_with_the_same_register_twice_is_undefined() {
    let same = |a: &mut CodeAssembler| {
        a.vpgatherdd_3(xmm1, dword_ptr(rsi + xmm1 * 4), xmm2)
            .unwrap();
    };
    assert_eq!(fault_of(avx_on, same), Some(Fault::InvalidOpcode));
}
