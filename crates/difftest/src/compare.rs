//! Compares the final states of the two engines, field by field, over
//! what is architecturally defined.

use iced_x86::{Code, Instruction, Mnemonic, OpKind, Register};

use crate::analysis::{fl, Tracker};
use crate::host::HostFacts;
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
    /// YMMi bits 191:128.
    YmmLo(usize),
    /// YMMi bits 255:192.
    YmmHi(usize),
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
        check(
            FpuField::YmmLo(i),
            kvm.ymm_hi[i] as u64,
            emu.ymm_hi[i] as u64,
        );
        check(
            FpuField::YmmHi(i),
            (kvm.ymm_hi[i] >> 64) as u64,
            (emu.ymm_hi[i] >> 64) as u64,
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
    /// An instruction with two memory operands, both of which fault:
    /// which is checked first is left open by the SDM (and where the CPU
    /// raised #GP, PVM re-executes the instruction in KVM's emulator,
    /// whose order and checks depend on the host kernel). Accepted only
    /// when the oracle's fault is one that one of the operands really
    /// raises (its address, alignment or page).
    OperandFaultOrder,
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
            Quirk::OperandFaultOrder => {
                "the oracle faulted on the other memory operand (the order is unspecified)"
            }
            Quirk::PvmUpperHalf => "PVM reports P|RSVD page faults in the upper half it reserves",
        }
    }
}

/// The linear address and size of each memory operand of `at` (the
/// implicit stack access included), from the registers in `regs` (which a
/// faulting instruction leaves as they were). Segment bases are zero in
/// the runners' 64-bit user state.
fn memory_operands(at: &Instruction, regs: &FinalState) -> Vec<(u64, u64)> {
    let reg = |r: Register, _: usize, _: usize| -> Option<u64> {
        if r.is_segment_register() {
            return Some(0);
        }
        let full = r.full_register();
        if matches!(full, Register::RIP) {
            return Some(at.next_ip());
        }
        let index = full.number().checked_sub(Register::RAX.number())?;
        let v = *regs.gpr.get(index)?;
        Some(match r.size() {
            4 => v & 0xffff_ffff,
            2 => v & 0xffff,
            _ => v,
        })
    };
    let size = at.memory_size().size() as u64;
    let mut out: Vec<(u64, u64)> = (0..at.op_count())
        .filter(|&i| {
            matches!(
                at.op_kind(i),
                OpKind::Memory
                    | OpKind::MemorySegSI
                    | OpKind::MemorySegESI
                    | OpKind::MemorySegRSI
                    | OpKind::MemoryESDI
                    | OpKind::MemoryESEDI
                    | OpKind::MemoryESRDI
            )
        })
        .filter_map(|i| Some((at.virtual_address(i, 0, reg)?, size)))
        .collect();
    let inc = at.stack_pointer_increment();
    if inc != 0 {
        let rsp = regs.gpr[crate::state::RSP];
        let addr = if inc < 0 {
            rsp.wrapping_sub(u64::from(inc.unsigned_abs()))
        } else {
            rsp
        };
        out.push((addr, u64::from(inc.unsigned_abs())));
    }
    out
}

/// Whether the fault `vector` (with `cr2`) is one that the operand at
/// `addr` of `size` bytes raises: a non-canonical address (#GP), a
/// misaligned one with RFLAGS.AC (#AC), or a page fault inside it (#PF).
fn operand_raises(addr: u64, size: u64, vector: u8, cr2: Option<u64>, rflags: u64) -> bool {
    let canonical = |a: u64| ((a as i64) << 16 >> 16) as u64 == a;
    let last = addr.wrapping_add(size.max(1) - 1);
    match vector {
        13 => !canonical(addr) || !canonical(last),
        17 => rflags & fl::AC != 0 && size > 1 && !addr.is_multiple_of(size),
        14 => cr2.is_some_and(|c| c.wrapping_sub(addr) < size.max(1)),
        _ => false,
    }
}

/// If the endings differ only in a way a known [`Quirk`] explains on a
/// host that behaves as `host` says, which. `at` is the instruction where
/// both engines stopped.
pub fn quirk(
    kvm: &FinalState,
    emu: &FinalState,
    at: Option<&Instruction>,
    host: &HostFacts,
) -> Option<Quirk> {
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
    if host.gp_reemulated && kv == 6 && matches!(ev, 13 | 14) && valid {
        return Some(Quirk::PvmGpAsUd);
    }
    if matches!(kv, 13 | 14 | 17) && matches!(ev, 13 | 14 | 17) {
        let operands = memory_operands(at, kvm);
        if operands.len() >= 2
            && operands
                .iter()
                .any(|&(addr, size)| operand_raises(addr, size, kv, kcr2, kvm.rflags))
        {
            return Some(Quirk::OperandFaultOrder);
        }
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
        assert_eq!(
            quirk(&kvm, &pf, Some(&popcnt), &AMD),
            Some(Quirk::PvmGpAsUd)
        );
        assert_eq!(
            quirk(&kvm, &at(13, Some(0), None), Some(&popcnt), &AMD),
            Some(Quirk::PvmGpAsUd)
        );
        // A #DE is no emulator refusal: still a mismatch.
        assert_eq!(quirk(&kvm, &at(0, None, None), Some(&popcnt), &AMD), None);
    }

    const AMD: HostFacts = HostFacts::MEASURED_ON_AMD_PVM;

    /// A clean clone's CI on a newer host kernel: `cmpsd` with a misaligned
    /// (unmapped) DS:rSI, a non-canonical ES:rDI and RFLAGS.AC set. The
    /// CPU checks ES:rDI first and raises #GP (emu agrees); PVM hands the
    /// #GP to KVM's emulator, which read DS:rSI first and, on that kernel,
    /// checked its alignment: #AC. On this project's other hosts the
    /// emulator reports the #PF on DS:rSI instead.
    #[test]
    fn a_fault_of_the_other_memory_operand_is_accepted_only_if_that_operand_raises_it() {
        let cmpsd = iced_x86::Decoder::with_ip(64, &[0xa7], 0x10010, 0).decode();
        let at = |vector, error_code, cr2| FinalState {
            rip: 0x10010,
            ending: Ending::Exception {
                vector,
                error_code,
                cr2,
            },
            ..state()
        };
        let mut gp = at(13, Some(0), None);
        gp.gpr[6] = 1;
        gp.gpr[7] = 0x3766_90d8_9c30_31f1;
        gp.rflags |= fl::AC;
        for mut kvm in [at(17, Some(0), None), at(14, Some(4), Some(1))] {
            kvm.gpr = gp.gpr;
            kvm.rflags = gp.rflags;
            assert_eq!(
                quirk(&kvm, &gp, Some(&cmpsd), &AMD),
                Some(Quirk::OperandFaultOrder)
            );
        }
        // A fault neither operand raises is a mismatch: a #PF elsewhere,
        // or an #AC for an aligned DS:rSI.
        assert_eq!(
            quirk(&at(14, Some(4), Some(0x5000)), &gp, Some(&cmpsd), &AMD),
            None
        );
        let mut aligned = at(17, Some(0), None);
        aligned.gpr[6] = 0x20000;
        assert_eq!(quirk(&aligned, &gp, Some(&cmpsd), &AMD), None);
        // One memory operand: nothing to choose between.
        let load = iced_x86::Decoder::with_ip(64, &[0x8b, 0x06], 0x10010, 0).decode();
        assert_eq!(quirk(&at(17, Some(0), None), &gp, Some(&load), &AMD), None);
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
