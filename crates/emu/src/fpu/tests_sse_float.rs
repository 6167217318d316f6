//! Known-answer tests of SSE/SSE2 floating point (SDM Vol. 1 §4.8.3,
//! §11.5): rounding, NaN propagation, QNaN indefinite, DAZ/FTZ, flags and
//! unmasked exceptions.

use iced_x86::code_asm::*;

use super::tests::{fault_of, run};
use super::*;
use crate::flags::{CF, PF, ZF};

fn d(x: f64) -> u128 {
    u128::from(x.to_bits())
}

fn pair(lo: f64, hi: f64) -> u128 {
    d(lo) | d(hi) << 64
}

#[test]
fn addsd_rounds_by_mxcsr_rc_and_sets_pe() {
    // 1 + 2^-60 is inexact: nearest gives 1.0, up gives 1 + 2^-52.
    for (rc, want) in [(0u32, 1.0f64), (2, 1.0 + f64::EPSILON)] {
        let cpu = run(
            |c| {
                c.s.fpu.mxcsr = mxcsr::RESET | rc << mxcsr::RC_SHIFT;
                c.s.fpu.xmm[0] = pair(1.0, 7.0);
                c.s.fpu.xmm[1] = d(2f64.powi(-60));
            },
            |a| a.addsd(xmm0, xmm1).unwrap(),
        );
        assert_eq!(cpu.s.fpu.xmm[0], pair(want, 7.0), "rc {rc}");
        assert_eq!(cpu.s.fpu.mxcsr & 0x3f, mxcsr::PE);
    }
}

#[test]
fn nans_propagate_the_first_operand_quieted_and_invalid_gives_indefinite() {
    let snan = 0x7ff0_0000_0000_0001u64;
    let qnan = 0x7ff8_0000_0000_0002u64;
    let cpu = run(
        |c| {
            c.s.fpu.xmm[0] = u128::from(snan) | u128::from(1.0f64.to_bits()) << 64;
            c.s.fpu.xmm[1] = u128::from(qnan) | u128::from(qnan) << 64;
            c.s.fpu.xmm[2] = pair(f64::INFINITY, 0.0);
            c.s.fpu.xmm[3] = pair(f64::INFINITY, 0.0);
        },
        |a| {
            a.mulpd(xmm0, xmm1).unwrap();
            a.subpd(xmm2, xmm3).unwrap();
        },
    );
    assert_eq!(
        cpu.s.fpu.xmm[0],
        u128::from(snan | 1 << 51) | u128::from(qnan) << 64
    );
    assert_eq!(cpu.s.fpu.xmm[2] as u64, 0xfff8_0000_0000_0000, "inf - inf");
    assert_eq!(cpu.s.fpu.xmm[2] >> 64, 0);
    assert_eq!(cpu.s.fpu.mxcsr & 0x3f, mxcsr::IE);
}

#[test]
fn daz_and_ftz_flush_denormals() {
    let tiny = f64::from_bits(1);
    let cpu = run(
        |c| {
            c.s.fpu.mxcsr = mxcsr::RESET | mxcsr::DAZ | mxcsr::FZ;
            c.s.fpu.xmm[0] = d(tiny);
            c.s.fpu.xmm[1] = d(1.0);
            c.s.fpu.xmm[2] = d(f64::MIN_POSITIVE);
            c.s.fpu.xmm[3] = d(0.5);
        },
        |a| {
            a.addsd(xmm0, xmm1).unwrap();
            a.mulsd(xmm2, xmm3).unwrap();
        },
    );
    assert_eq!(cpu.s.fpu.xmm[0], d(1.0), "DAZ: no DE, exact");
    assert_eq!(cpu.s.fpu.xmm[2], 0, "FTZ");
    assert_eq!(cpu.s.fpu.mxcsr & 0x3f, mxcsr::UE | mxcsr::PE);
}

#[test]
fn sqrt_min_max_and_compare_follow_the_sdm() {
    let cpu = run(
        |c| {
            c.s.fpu.xmm[0] = pair(2.0, -4.0);
            c.s.fpu.xmm[1] = pair(0.0, -0.0);
            c.s.fpu.xmm[2] = pair(-0.0, f64::NAN);
            c.s.fpu.xmm[3] = pair(1.0, 1.0);
            c.s.fpu.xmm[4] = pair(2.0, f64::NAN);
        },
        |a| {
            a.sqrtpd(xmm0, xmm0).unwrap();
            a.minpd(xmm1, xmm2).unwrap();
            a.cmppd(xmm3, xmm4, 1).unwrap();
        },
    );
    assert_eq!(cpu.s.fpu.xmm[0] as u64, 2f64.sqrt().to_bits());
    assert_eq!((cpu.s.fpu.xmm[0] >> 64) as u64, 0xfff8_0000_0000_0000);
    // MIN of two zeros and of a NaN returns the second operand.
    assert_eq!(cpu.s.fpu.xmm[1] as u64, (-0.0f64).to_bits());
    assert!(f64::from_bits((cpu.s.fpu.xmm[1] >> 64) as u64).is_nan());
    assert_eq!(cpu.s.fpu.xmm[3], u128::from(u64::MAX));
    assert_eq!(cpu.s.fpu.mxcsr & 0x3f, mxcsr::IE | mxcsr::PE);
}

#[test]
fn comisd_sets_zf_pf_cf() {
    for (x, y, want) in [
        (1.0, 2.0, CF),
        (2.0, 1.0, 0),
        (1.0, 1.0, ZF),
        (f64::NAN, 1.0, ZF | PF | CF),
    ] {
        let cpu = run(
            |c| {
                c.s.fpu.xmm[0] = d(x);
                c.s.fpu.xmm[1] = d(y);
            },
            |a| a.ucomisd(xmm0, xmm1).unwrap(),
        );
        assert_eq!(cpu.s.flags.get() & (ZF | PF | CF), want, "{x} vs {y}");
        assert_eq!(cpu.s.fpu.mxcsr & mxcsr::IE, 0, "QNaN is quiet for UCOMISD");
    }
}

#[test]
fn conversions_round_saturate_to_indefinite_and_narrow() {
    let cpu = run(
        |c| {
            c.s.fpu.xmm[0] = d(-2.5);
            c.s.fpu.xmm[1] = d(1e20);
            c.s.fpu.xmm[2] = d(1.0 + f64::EPSILON);
        },
        |a| {
            a.cvtsd2si(eax, xmm0).unwrap();
            a.cvttsd2si(rbx, xmm0).unwrap();
            a.cvtsd2si(ecx, xmm1).unwrap();
            a.cvtsd2ss(xmm3, xmm2).unwrap();
            a.mov(edx, 7u32).unwrap();
            a.cvtsi2sd(xmm4, edx).unwrap();
        },
    );
    assert_eq!(cpu.s.gpr[0], (-2i32) as u32 as u64, "ties to even");
    assert_eq!(cpu.s.gpr[3], (-2i64) as u64);
    assert_eq!(cpu.s.gpr[1], 0x8000_0000);
    assert_eq!(cpu.s.fpu.xmm[3] as u32, 1.0f32.to_bits());
    assert_eq!(cpu.s.fpu.xmm[4] as u64, 7.0f64.to_bits());
    assert_eq!(cpu.s.fpu.mxcsr & 0x3f, mxcsr::IE | mxcsr::PE);
}

#[test]
fn an_unmasked_exception_raises_xm_and_leaves_the_destination() {
    let setup = |c: &mut Cpu| {
        c.s.fpu.mxcsr = mxcsr::RESET & !(1 << (mxcsr::MASK_SHIFT + 2));
        c.s.fpu.xmm[0] = d(1.0);
        c.s.fpu.xmm[1] = d(0.0);
    };
    assert_eq!(
        fault_of(setup, |a| a.divsd(xmm0, xmm1).unwrap()),
        Some(Fault::SimdError)
    );
    let cpu = run(
        |c| {
            setup(c);
            c.s.cr4 &= !crate::state::cr4::OSXMMEXCPT;
        },
        |a| a.divsd(xmm0, xmm1).unwrap(),
    );
    assert_eq!(cpu.s.fpu.xmm[0], d(1.0));
    assert_eq!(cpu.s.fpu.mxcsr & 0x3f, mxcsr::ZE);
}

#[test]
fn shufps_and_unpcklps_pick_lanes() {
    let cpu = run(
        |c| {
            c.s.fpu.xmm[0] = 0x3333_3333_2222_2222_1111_1111_0000_0000;
            c.s.fpu.xmm[1] = 0x7777_7777_6666_6666_5555_5555_4444_4444;
            c.s.fpu.xmm[2] = c.s.fpu.xmm[0];
        },
        |a| {
            a.shufps(xmm0, xmm1, 0b00_11_01_10).unwrap();
            a.unpcklps(xmm2, xmm1).unwrap();
        },
    );
    assert_eq!(cpu.s.fpu.xmm[0], 0x4444_4444_7777_7777_1111_1111_2222_2222);
    assert_eq!(cpu.s.fpu.xmm[2], 0x5555_5555_1111_1111_4444_4444_0000_0000);
}

#[test]
fn sqrt_of_negative_denormal_is_invalid_without_denormal() {
    let cpu = run(
        |c| {
            c.s.fpu.mxcsr = 0xbcac;
            c.s.fpu.xmm[6] = 0x800fffffffffffffbff0000000000000;
        },
        |a| a.sqrtps(xmm10, xmm6).unwrap(),
    );
    assert_eq!(cpu.s.fpu.xmm[10], 0xffc00000_ffffffff_ffc00000_00000000);
    assert_eq!(cpu.s.fpu.mxcsr, 0xbcad);
}
