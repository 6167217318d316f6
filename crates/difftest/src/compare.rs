//! Compares the final states of the two engines, field by field, over
//! what is architecturally defined.

use iced_x86::{Code, Instruction, Mnemonic};

use crate::analysis::{fl, Tracker};
use crate::layout::{DATA, STACK};
use crate::state::{Ending, FinalState};

/// RFLAGS bits never compared: RF (a fault's frame has it set; the emu
/// engine reports the state before delivery) and the reserved bits above
/// ID.
pub const NEVER_COMPARED: u64 = fl::RF | !0x3f_ffff;

/// A part of the final state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Field {
    /// How the run ended (done, or which exception).
    Ending,
    /// A GPR by encoding index.
    Gpr(usize),
    /// RIP.
    Rip,
    /// RFLAGS (defined bits only).
    Rflags,
    /// A byte of guest memory (linear address).
    Mem(u64),
    /// An x87/SSE register: see [`FpuField`].
    Fpu(FpuField),
}

/// The x87/SSE registers compared; 128-bit registers in two halves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FpuField {
    /// FCW.
    Fcw,
    /// FSW without C0, C2, C3 (undefined after most instructions; the
    /// generator stores them with FNSTSW where they are defined).
    Fsw,
    /// The abridged tag byte.
    Ftw,
    /// MXCSR.
    Mxcsr,
    /// ST(i), low 64 bits (significand).
    StLo(usize),
    /// ST(i), sign and exponent.
    StHi(usize),
    /// XMMi, low 64 bits.
    XmmLo(usize),
    /// XMMi, high 64 bits.
    XmmHi(usize),
}

/// The FSW bits compared: all but C0, C2 and C3.
pub const FSW_COMPARED: u16 = !0x4500;

/// The differences between two x87/SSE states.
pub fn compare_fpu(kvm: &crate::state::FpuRegs, emu: &crate::state::FpuRegs) -> Vec<Diff> {
    let mut d = Vec::new();
    let mut check = |f: FpuField, a: u64, b: u64| {
        if a != b {
            d.push(Diff {
                field: Field::Fpu(f),
                kvm: a,
                emu: b,
            });
        }
    };
    check(FpuField::Fcw, kvm.fcw.into(), emu.fcw.into());
    check(
        FpuField::Fsw,
        (kvm.fsw & FSW_COMPARED).into(),
        (emu.fsw & FSW_COMPARED).into(),
    );
    check(FpuField::Ftw, kvm.ftw.into(), emu.ftw.into());
    check(FpuField::Mxcsr, kvm.mxcsr.into(), emu.mxcsr.into());
    for i in 0..8 {
        check(FpuField::StLo(i), kvm.st[i] as u64, emu.st[i] as u64);
        check(
            FpuField::StHi(i),
            (kvm.st[i] >> 64) as u64,
            (emu.st[i] >> 64) as u64,
        );
    }
    for i in 0..16 {
        check(FpuField::XmmLo(i), kvm.xmm[i] as u64, emu.xmm[i] as u64);
        check(
            FpuField::XmmHi(i),
            (kvm.xmm[i] >> 64) as u64,
            (emu.xmm[i] >> 64) as u64,
        );
    }
    d
}

/// One difference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Diff {
    /// Where.
    pub field: Field,
    /// The KVM value (a byte for memory; 0 for the ending).
    pub kvm: u64,
    /// The emu value.
    pub emu: u64,
}

/// What is compared for one case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Masks {
    /// RFLAGS bits compared.
    pub flags: u64,
    /// GPRs compared (bit per encoding index).
    pub gprs: u16,
}

impl Masks {
    /// Everything (for KVM against itself).
    pub fn all() -> Self {
        Masks {
            flags: !NEVER_COMPARED,
            gprs: u16::MAX,
        }
    }

    /// What `tracker` says is defined.
    pub fn from_tracker(tracker: &Tracker) -> Self {
        Masks {
            flags: !(NEVER_COMPARED | tracker.undefined_flags),
            gprs: !tracker.tainted,
        }
    }
}

/// Known ways the oracle differs from the architecture, or where the
/// architecture allows either result. Each is named in reports and
/// counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Quirk {
    /// Under PVM a user-mode #GP (and a page fault KVM decides to
    /// emulate, as for a read that runs from an unmapped page into
    /// non-canonical space) goes to KVM's instruction emulator, which
    /// reports #UD for instructions it cannot emulate (POPCNT,
    /// CMPXCHG16B, ...): KVM #UD where the CPU raised #GP or #PF. The
    /// oracle then says nothing about the instruction.
    PvmGpAsUd,
    /// CMPS reads its two operands in an unspecified order: with both
    /// bad, either fault may come first (this AMD host reads ES:rDI
    /// first).
    CmpsFaultOrder,
    /// PVM keeps part of the upper canonical half for itself: a user
    /// access there page-faults with P and RSVD set in the error code
    /// where the guest's page tables say "not present".
    PvmUpperHalf,
}

impl Quirk {
    /// A one-line explanation.
    pub fn describe(self) -> &'static str {
        match self {
            Quirk::PvmGpAsUd => {
                "PVM turns a user-mode #GP or #PF into #UD for instructions KVM cannot emulate"
            }
            Quirk::CmpsFaultOrder => "CMPS operand fault order is unspecified",
            Quirk::PvmUpperHalf => "PVM reports P|RSVD page faults in the upper half it reserves",
        }
    }
}

/// If the endings differ only in a way a known [`Quirk`] explains, which.
/// `at` is the instruction where both engines stopped.
pub fn quirk(kvm: &FinalState, emu: &FinalState, at: Option<&Instruction>) -> Option<Quirk> {
    let at = at?;
    if kvm.rip != emu.rip || kvm.ending == emu.ending {
        return None;
    }
    let (
        Ending::Exception {
            vector: kv,
            error_code: kcode,
            cr2: kcr2,
        },
        Ending::Exception {
            vector: ev,
            error_code: ecode,
            cr2: ecr2,
        },
    ) = (kvm.ending, emu.ending)
    else {
        return None;
    };
    const P: u32 = 1;
    const RSVD: u32 = 1 << 3;
    if kv == 14
        && ev == 14
        && kcr2 == ecr2
        && kcr2.is_some_and(|a| a >= 0xffff_8000_0000_0000)
        && kcode.is_some_and(|k| k & RSVD != 0)
        && kcode.map(|k| k & !(P | RSVD)) == ecode.map(|e| e & !P)
    {
        return Some(Quirk::PvmUpperHalf);
    }
    let valid = at.code() != Code::INVALID
        && !matches!(at.mnemonic(), Mnemonic::Ud0 | Mnemonic::Ud1 | Mnemonic::Ud2);
    if kv == 6 && matches!(ev, 13 | 14) && valid {
        return Some(Quirk::PvmGpAsUd);
    }
    if matches!(
        at.mnemonic(),
        Mnemonic::Cmpsb | Mnemonic::Cmpsw | Mnemonic::Cmpsd | Mnemonic::Cmpsq
    ) && matches!(kv, 13 | 14)
        && matches!(ev, 13 | 14)
    {
        return Some(Quirk::CmpsFaultOrder);
    }
    None
}

/// Every difference between `kvm` and `emu` within `masks`; endings that
/// differ only by `quirk` count as equal.
pub fn compare(
    kvm: &FinalState,
    emu: &FinalState,
    masks: Masks,
    quirk: Option<Quirk>,
) -> Vec<Diff> {
    let mut diffs = Vec::new();
    if kvm.ending != emu.ending && quirk.is_none() {
        diffs.push(Diff {
            field: Field::Ending,
            kvm: 0,
            emu: 0,
        });
    }
    for i in 0..16 {
        if masks.gprs & (1 << i) != 0 && kvm.gpr[i] != emu.gpr[i] {
            diffs.push(Diff {
                field: Field::Gpr(i),
                kvm: kvm.gpr[i],
                emu: emu.gpr[i],
            });
        }
    }
    if kvm.rip != emu.rip {
        diffs.push(Diff {
            field: Field::Rip,
            kvm: kvm.rip,
            emu: emu.rip,
        });
    }
    if (kvm.rflags ^ emu.rflags) & masks.flags != 0 {
        diffs.push(Diff {
            field: Field::Rflags,
            kvm: kvm.rflags,
            emu: emu.rflags,
        });
    }
    diffs.extend(compare_fpu(&kvm.fpu, &emu.fpu));
    for (base, a, b) in [
        (DATA, &kvm.data, &emu.data),
        (STACK, &kvm.stack, &emu.stack),
    ] {
        if a == b {
            continue;
        }
        for (off, (x, y)) in a.iter().zip(b.iter()).enumerate() {
            if x != y {
                diffs.push(Diff {
                    field: Field::Mem(base + off as u64),
                    kvm: u64::from(*x),
                    emu: u64::from(*y),
                });
            }
        }
    }
    diffs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::InitState;

    fn state() -> FinalState {
        let i = InitState::zeroed();
        FinalState {
            gpr: i.gpr,
            rip: 0x10000,
            rflags: 0x202,
            ending: Ending::Done,
            data: i.data,
            stack: i.stack,
            retired: 0,
            note: None,
            fpu: Default::default(),
        }
    }

    /// Found by a long run: `popcnt r10d, [r14]` reading from
    /// 0x7fffffffffff (unmapped, and running into non-canonical space)
    /// page-faults on emu; PVM's KVM says #UD, as it cannot emulate POPCNT.
    #[test]
    fn kvm_ud_for_a_faulting_popcnt_is_the_pvm_quirk() {
        let popcnt =
            iced_x86::Decoder::with_ip(64, &[0xf3, 0x45, 0x0f, 0xb8, 0x16], 0x1000a, 0).decode();
        let at = |vector, error_code, cr2| FinalState {
            rip: 0x1000a,
            ending: Ending::Exception {
                vector,
                error_code,
                cr2,
            },
            ..state()
        };
        let kvm = at(6, None, None);
        let pf = at(14, Some(4), Some(0x7fff_ffff_ffff));
        assert_eq!(quirk(&kvm, &pf, Some(&popcnt)), Some(Quirk::PvmGpAsUd));
        assert_eq!(
            quirk(&kvm, &at(13, Some(0), None), Some(&popcnt)),
            Some(Quirk::PvmGpAsUd)
        );
        // A #DE is no emulator refusal: still a mismatch.
        assert_eq!(quirk(&kvm, &at(0, None, None), Some(&popcnt)), None);
    }

    #[test]
    fn identical_states_have_no_diffs() {
        assert!(compare(&state(), &state(), Masks::all(), None).is_empty());
    }

    #[test]
    fn undefined_flags_and_tainted_registers_are_not_compared() {
        let a = state();
        let mut b = state();
        b.rflags |= fl::OF | fl::RF;
        b.gpr[3] = 7;
        let masks = Masks {
            flags: !(NEVER_COMPARED | fl::OF),
            gprs: !(1 << 3),
        };
        assert!(compare(&a, &b, masks, None).is_empty());
        let diffs = compare(&a, &b, Masks::all(), None);
        assert_eq!(diffs.len(), 2);
    }

    #[test]
    fn memory_differences_are_reported_per_byte() {
        let a = state();
        let mut b = state();
        b.data[5] = 1;
        b.stack[0] = 2;
        let d = compare(&a, &b, Masks::all(), None);
        assert_eq!(d[0].field, Field::Mem(DATA + 5));
        assert_eq!(d[1].field, Field::Mem(STACK));
    }
}
