//! Model-specific registers: what RDMSR and WRMSR reach.
//!
//! Implements the MSRs of Intel SDM Vol. 4 (chapter 2, "Model-Specific
//! Registers") a plain 64-bit CPU needs: IA32_EFER (Vol. 3A §2.2.1), the
//! SYSCALL/SYSENTER MSRs (§5.8.7-§5.8.8), FS/GS bases and
//! IA32_KERNEL_GS_BASE, the time-stamp counter and IA32_TSC_AUX (§18.17),
//! IA32_PAT (§13.12), the MTRRs (§13.11: stored and returned, not applied:
//! the emu engine has no caches), IA32_APIC_BASE with its mode transitions,
//! the x2APIC registers (0x800-0x8ff) and IA32_TSC_DEADLINE (handed to the
//! CPU's [`crate::apic::LocalApic`]), IA32_MISC_ENABLE and a few
//! read-mostly identification MSRs. The VM's MSR hooks are asked first
//! and win; an MSR nobody implements raises #GP(0).
//!
//! **The TSC** counts host nanoseconds (a monotonic clock shared by every
//! vCPU of the process), i.e. it runs at a fixed, invariant 1 GHz
//! ([`TSC_HZ`], also advertised in CPUID leaves 0x15/0x16), plus a per-vCPU
//! offset that writes to IA32_TSC set. Host time rather than instructions
//! retired keeps the TSC consistent with the wall-clock devices (PIT, RTC)
//! a guest calibrates against; the price is that TSC values differ between
//! runs.

use std::sync::OnceLock;
use std::time::Instant;

use alcazar_core::engine::ExitKind;
use alcazar_core::GuestClock;

use crate::fault::Fault;
use crate::state::seg;
use crate::Cpu;

/// The TSC frequency: 1 GHz (one tick per host nanosecond).
pub const TSC_HZ: u64 = 1_000_000_000;

/// MSR indices (SDM Vol. 4 Table 2-2).
pub mod index {
    #![allow(missing_docs)]
    pub const TSC: u32 = 0x10;
    pub const TSC_ADJUST: u32 = 0x3b;
    pub const SPEC_CTRL: u32 = 0x48;
    pub const PRED_CMD: u32 = 0x49;
    pub const PLATFORM_ID: u32 = 0x17;
    pub const APIC_BASE: u32 = 0x1b;
    pub const TSC_DEADLINE: u32 = 0x6e0;
    pub const FEATURE_CONTROL: u32 = 0x3a;
    pub const BIOS_SIGN_ID: u32 = 0x8b;
    pub const PLATFORM_INFO: u32 = 0xce;
    pub const ARCH_CAPABILITIES: u32 = 0x10a;
    pub const MTRRCAP: u32 = 0xfe;
    pub const SYSENTER_CS: u32 = 0x174;
    pub const SYSENTER_ESP: u32 = 0x175;
    pub const SYSENTER_EIP: u32 = 0x176;
    pub const MISC_ENABLE: u32 = 0x1a0;
    pub const MTRR_PHYS_BASE0: u32 = 0x200;
    pub const MTRR_FIX64K_00000: u32 = 0x250;
    pub const MTRR_FIX16K_80000: u32 = 0x258;
    pub const MTRR_FIX16K_A0000: u32 = 0x259;
    pub const MTRR_FIX4K_C0000: u32 = 0x268;
    pub const MTRR_FIX4K_F8000: u32 = 0x26f;
    pub const PAT: u32 = 0x277;
    pub const MTRR_DEF_TYPE: u32 = 0x2ff;
    pub const EFER: u32 = 0xc000_0080;
    pub const STAR: u32 = 0xc000_0081;
    pub const LSTAR: u32 = 0xc000_0082;
    pub const CSTAR: u32 = 0xc000_0083;
    pub const SFMASK: u32 = 0xc000_0084;
    pub const FS_BASE: u32 = 0xc000_0100;
    pub const GS_BASE: u32 = 0xc000_0101;
    pub const KERNEL_GS_BASE: u32 = 0xc000_0102;
    pub const TSC_AUX: u32 = 0xc000_0103;
}

/// IA32_SPEC_CTRL bits a guest may set: IBRS (0), STIBP (1), SSBD (2).
const SPEC_CTRL_WRITABLE: u64 = 0b111;

/// IA32_ARCH_CAPABILITIES (SDM Vol. 4 Table 2-2): the software CPU does
/// not speculate, so it declares itself immune to the speculative-execution
/// and data-sampling attacks the bits name (and guests skip mitigations
/// such as page-table isolation, which would flush the TLB on every
/// system call, or retpolines, which turn every indirect branch into a
/// return): RDCL_NO (0), IBRS_ALL (1, "enhanced IBRS": IBRS set once
/// protects everything), SKIP_L1DFL_VMENTRY (3), SSB_NO (4), MDS_NO
/// (5), IF_PSCHANGE_MC_NO (6), TAA_NO (8), SBDR_SSDP_NO (13), FBSDP_NO
/// (14), PSDP_NO (15), BHI_NO (20), PBRSB_NO (24), GDS_NO (26), RFDS_NO
/// (27).
pub const ARCH_CAPABILITIES_VALUE: u64 = 1
    | 1 << 1
    | 1 << 3
    | 1 << 4
    | 1 << 5
    | 1 << 6
    | 1 << 8
    | 1 << 13
    | 1 << 14
    | 1 << 15
    | 1 << 20
    | 1 << 24
    | 1 << 26
    | 1 << 27;

/// IA32_MISC_ENABLE at reset: fast strings enabled (bit 0), branch trace
/// storage (bit 11) and PEBS (bit 12) unavailable.
pub const MISC_ENABLE_RESET: u64 = 1 | 1 << 11 | 1 << 12;

/// Number of variable-range MTRR pairs (MTRRcap.VCNT).
pub const MTRR_VARIABLE: usize = 8;
/// MTRRcap: VCNT = 8, FIX = 1, WC = 1 (no SMRR).
const MTRRCAP_VALUE: u64 = MTRR_VARIABLE as u64 | 1 << 8 | 1 << 10;

/// The MTRRs of one vCPU (stored and returned only).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mtrrs {
    /// IA32_MTRR_FIX64K_00000, FIX16K_80000/A0000, FIX4K_C0000..F8000.
    pub fixed: [u64; 11],
    /// IA32_MTRR_PHYSBASEn / PHYSMASKn, interleaved as in the MSR space.
    pub variable: [u64; 2 * MTRR_VARIABLE],
}

/// The instant the TSC clock counts from (its first use in the process).
pub fn tsc_epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// The clock the TSC counts: nanoseconds of the VM's guest clock since
/// [`tsc_epoch`] (1 GHz; it stands still while the VM is paused).
pub fn guest_tsc(clock: &GuestClock) -> u64 {
    crate::apic::timer::instant_to_ns(clock.now())
}

/// The TSC as vCPU `cpu` reads it.
pub fn read_tsc(cpu: &Cpu) -> u64 {
    guest_tsc(&cpu.machine.clock).wrapping_add(cpu.s.msr.tsc_offset)
}

/// Physical-address bits above the CPU's width (reserved in MTRRs etc.).
const PHYS_RESERVED: u64 = !((1u64 << crate::mmu::PHYS_ADDR_BITS) - 1);

fn gp() -> Fault {
    Fault::GeneralProtection(0)
}

fn canonical(v: u64) -> Result<u64, Fault> {
    if crate::mem::canonical(v) {
        Ok(v)
    } else {
        Err(gp())
    }
}

/// Whether `t` is a valid memory type for PAT entries (UC, WC, WT, WP, WB,
/// UC-).
fn pat_type_ok(t: u64) -> bool {
    matches!(t, 0 | 1 | 4 | 5 | 6 | 7)
}

/// Whether `t` is a valid MTRR memory type (UC, WC, WT, WP, WB).
fn mtrr_type_ok(t: u64) -> bool {
    matches!(t, 0 | 1 | 4 | 5 | 6)
}

fn fixed_slot(msr: u32) -> Option<usize> {
    use index::*;
    match msr {
        MTRR_FIX64K_00000 => Some(0),
        MTRR_FIX16K_80000 => Some(1),
        MTRR_FIX16K_A0000 => Some(2),
        MTRR_FIX4K_C0000..=MTRR_FIX4K_F8000 => Some(3 + (msr - MTRR_FIX4K_C0000) as usize),
        _ => None,
    }
}

fn variable_slot(msr: u32) -> Option<usize> {
    let i = msr.checked_sub(index::MTRR_PHYS_BASE0)? as usize;
    (i < 2 * MTRR_VARIABLE).then_some(i)
}

/// RDMSR of `msr`: the VM's hooks first, then the emu engine's own MSRs;
/// anything else is #GP(0).
pub fn read_msr(cpu: &mut Cpu, msr: u32) -> Result<u64, Fault> {
    cpu.machine.vcpu_stats(cpu.id).count(ExitKind::Msr);
    if let Some(r) = cpu.machine.hooks.msr_read(cpu.id, msr) {
        return r.map_err(|_| gp());
    }
    use index::*;
    let m = &cpu.s.msr;
    Ok(match msr {
        EFER => cpu.s.efer,
        STAR => m.star,
        LSTAR => m.lstar,
        CSTAR => m.cstar,
        SFMASK => m.sfmask,
        FS_BASE => cpu.s.seg[seg::FS].base,
        GS_BASE => cpu.s.seg[seg::GS].base,
        KERNEL_GS_BASE => m.kernel_gs_base,
        SYSENTER_CS => m.sysenter_cs,
        SYSENTER_ESP => m.sysenter_esp,
        SYSENTER_EIP => m.sysenter_eip,
        TSC => read_tsc(cpu),
        TSC_ADJUST => m.tsc_adjust,
        SPEC_CTRL => m.spec_ctrl,
        TSC_AUX => m.tsc_aux,
        PAT => m.pat,
        APIC_BASE => m.apic_base,
        TSC_DEADLINE => match &cpu.apic {
            Some(apic) => apic.read_tsc_deadline(),
            None => return Err(gp()),
        },
        crate::apic::X2APIC_MSR_FIRST..=crate::apic::X2APIC_MSR_LAST => match &cpu.apic {
            Some(apic) => apic.msr_read(msr).map_err(|_| gp())?,
            None => return Err(gp()),
        },
        MISC_ENABLE => m.misc_enable,
        MTRRCAP => MTRRCAP_VALUE,
        MTRR_DEF_TYPE => m.mtrr_def_type,
        PLATFORM_ID | BIOS_SIGN_ID => 0,
        ARCH_CAPABILITIES => ARCH_CAPABILITIES_VALUE,
        // Maximum non-turbo ratio 10 with a 100 MHz bus: 1 GHz.
        PLATFORM_INFO => 10 << 8,
        // Locked, VMX off: the guest leaves it alone.
        FEATURE_CONTROL => 1,
        _ => {
            if let Some(i) = fixed_slot(msr) {
                cpu.mtrr.fixed[i]
            } else if let Some(i) = variable_slot(msr) {
                cpu.mtrr.variable[i]
            } else {
                tracing::debug!(vcpu = cpu.id, msr, "rdmsr of an unknown MSR: #GP");
                return Err(gp());
            }
        }
    })
}

/// WRMSR of `value` to `msr`, with the reserved-bit checks of SDM Vol. 4.
pub fn write_msr(cpu: &mut Cpu, msr: u32, value: u64) -> Result<(), Fault> {
    cpu.machine.vcpu_stats(cpu.id).count(ExitKind::Msr);
    if let Some(r) = cpu.machine.hooks.msr_write(cpu.id, msr, value) {
        return r.map_err(|_| gp());
    }
    use index::*;
    match msr {
        EFER => crate::modes::write_efer(cpu, value)?,
        STAR => cpu.s.msr.star = value,
        LSTAR => cpu.s.msr.lstar = canonical(value)?,
        CSTAR => cpu.s.msr.cstar = canonical(value)?,
        SFMASK if value >> 32 == 0 => cpu.s.msr.sfmask = value,
        FS_BASE => cpu.s.seg[seg::FS].base = canonical(value)?,
        GS_BASE => cpu.s.seg[seg::GS].base = canonical(value)?,
        KERNEL_GS_BASE => cpu.s.msr.kernel_gs_base = canonical(value)?,
        SYSENTER_CS => cpu.s.msr.sysenter_cs = value & 0xffff_ffff,
        SYSENTER_ESP => cpu.s.msr.sysenter_esp = canonical(value)?,
        SYSENTER_EIP => cpu.s.msr.sysenter_eip = canonical(value)?,
        TSC => {
            // SDM Vol. 3B §17.17.3: a write to the TSC moves TSC_ADJUST by
            // the same amount.
            let delta = value.wrapping_sub(read_tsc(cpu));
            let m = &mut cpu.s.msr;
            m.tsc_offset = m.tsc_offset.wrapping_add(delta);
            m.tsc_adjust = m.tsc_adjust.wrapping_add(delta);
        }
        TSC_ADJUST => {
            // ... and a write to TSC_ADJUST moves the TSC.
            let m = &mut cpu.s.msr;
            m.tsc_offset = m.tsc_offset.wrapping_add(value.wrapping_sub(m.tsc_adjust));
            m.tsc_adjust = value;
        }
        // IBRS, STIBP, SSBD: stored; without speculation they change
        // nothing.
        SPEC_CTRL if value & !SPEC_CTRL_WRITABLE == 0 => cpu.s.msr.spec_ctrl = value,
        // IBPB: an empty barrier for a CPU that does not predict.
        PRED_CMD if value & !1 == 0 => {}
        TSC_AUX if value >> 32 == 0 => cpu.s.msr.tsc_aux = value,
        PAT if (0..8).all(|i| pat_type_ok((value >> (8 * i)) & 0xff)) => {
            cpu.s.msr.pat = value;
        }
        APIC_BASE if cpu.apic.is_some() => write_apic_base(cpu, value)?,
        TSC_DEADLINE => match &cpu.apic {
            Some(apic) => apic.write_tsc_deadline(value, cpu.s.msr.tsc_offset),
            None => return Err(gp()),
        },
        crate::apic::X2APIC_MSR_FIRST..=crate::apic::X2APIC_MSR_LAST => match &cpu.apic {
            Some(apic) => apic.msr_write(msr, value).map_err(|_| gp())?,
            None => return Err(gp()),
        },
        APIC_BASE => {
            // No local APIC: BSP (bit 8) is read-only; EXTD is reserved.
            let writable = (1 << 11) | (!PHYS_RESERVED & !0xfff);
            if value & !(writable | 1 << 8) != 0 {
                return Err(gp());
            }
            let bsp = cpu.s.msr.apic_base & (1 << 8);
            cpu.s.msr.apic_base = (value & writable) | bsp;
        }
        MISC_ENABLE => cpu.s.msr.misc_enable = value,
        MTRR_DEF_TYPE if value & !0xcff == 0 && mtrr_type_ok(value & 0xff) => {
            cpu.s.msr.mtrr_def_type = value;
        }
        BIOS_SIGN_ID => {}
        _ => {
            if let Some(i) = fixed_slot(msr) {
                if !(0..8).all(|b| mtrr_type_ok((value >> (8 * b)) & 0xff)) {
                    return Err(gp());
                }
                cpu.mtrr.fixed[i] = value;
            } else if let Some(i) = variable_slot(msr) {
                // PHYSBASE: type in 7:0, bits 11:8 reserved; PHYSMASK:
                // valid bit 11, bits 10:0 reserved.
                let bad = if i % 2 == 0 {
                    value & 0xf00 != 0 || !mtrr_type_ok(value & 0xff)
                } else {
                    value & 0x7ff != 0
                };
                if bad || value & PHYS_RESERVED != 0 {
                    return Err(gp());
                }
                cpu.mtrr.variable[i] = value;
            } else {
                tracing::debug!(vcpu = cpu.id, msr, value, "wrmsr: #GP");
                return Err(gp());
            }
        }
    }
    Ok(())
}

/// IA32_APIC_BASE of a CPU with a local APIC: the physical-address width
/// here, the rest of the rules (reserved bits, mode transitions of SDM
/// Vol. 3A §10.12.5) in [`crate::apic::LocalApic::set_base`].
fn write_apic_base(cpu: &mut Cpu, value: u64) -> Result<(), Fault> {
    if value & PHYS_RESERVED != 0 {
        return Err(gp());
    }
    if let Some(apic) = &cpu.apic {
        apic.set_base(value, true).map_err(|_| gp())?;
    }
    cpu.refresh_apic_page();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::efer;
    use crate::testutil::*;
    use alcazar_core::hooks::{MsrFault, MsrHook};
    use std::sync::Arc;

    struct Fixed;
    impl MsrHook for Fixed {
        fn read(&self, _: u32, _: u32) -> Result<u64, MsrFault> {
            Ok(0x1234)
        }
        fn write(&self, _: u32, _: u32, _: u64) -> Result<(), MsrFault> {
            Err(MsrFault)
        }
    }

    #[test]
    fn efer_lma_is_read_only_and_lme_is_locked_while_paging() {
        let mut cpu = cpu64(&[]);
        assert_eq!(write_msr(&mut cpu, index::EFER, efer::NXE), Err(gp()));
        let v = read_msr(&mut cpu, index::EFER).unwrap();
        assert_ne!(v & efer::LMA, 0);
        write_msr(&mut cpu, index::EFER, v | efer::SCE).unwrap();
        assert_ne!(cpu.s.efer & efer::SCE, 0);
        assert_eq!(write_msr(&mut cpu, index::EFER, 1 << 3), Err(gp()));
    }

    #[test]
    fn hooked_msrs_win_and_unknown_msrs_fault() {
        let mut cpu = cpu64(&[]);
        cpu.machine
            .hooks
            .hook_msr(index::STAR, Arc::new(Fixed))
            .unwrap();
        assert_eq!(read_msr(&mut cpu, index::STAR), Ok(0x1234));
        assert_eq!(write_msr(&mut cpu, index::STAR, 1), Err(gp()));
        assert_eq!(read_msr(&mut cpu, 0xdead_beef), Err(gp()));
        assert_eq!(
            cpu.machine.vcpu_stats(0).get(ExitKind::Msr),
            3,
            "every access is counted"
        );
    }

    #[test]
    fn bases_must_be_canonical_and_mtrrs_round_trip() {
        let mut cpu = cpu64(&[]);
        assert_eq!(
            write_msr(&mut cpu, index::GS_BASE, 0x8000_0000_0000),
            Err(gp())
        );
        write_msr(&mut cpu, index::GS_BASE, 0xffff_8000_0000_1000).unwrap();
        assert_eq!(cpu.s.seg[seg::GS].base, 0xffff_8000_0000_1000);
        write_msr(&mut cpu, 0x201, 0xff_f000_0800).unwrap();
        assert_eq!(read_msr(&mut cpu, 0x201), Ok(0xff_f000_0800));
        write_msr(&mut cpu, index::MTRR_FIX4K_F8000, 0x0606_0606_0606_0606).unwrap();
        assert_eq!(
            read_msr(&mut cpu, index::MTRR_FIX4K_F8000),
            Ok(0x0606_0606_0606_0606)
        );
        assert_eq!(write_msr(&mut cpu, index::PAT, 0x02), Err(gp()));
    }

    #[test]
    fn tsc_writes_move_the_counter() {
        let mut cpu = cpu64(&[]);
        write_msr(&mut cpu, index::TSC, 1 << 40).unwrap();
        let t = read_msr(&mut cpu, index::TSC).unwrap();
        assert!((1 << 40..(1 << 40) + TSC_HZ * 10).contains(&t));
    }

    #[test]
    fn tsc_adjust_follows_tsc_writes_and_moves_the_tsc() {
        let mut cpu = cpu64(&[]);
        let before = read_msr(&mut cpu, index::TSC).unwrap();
        write_msr(&mut cpu, index::TSC_ADJUST, 1 << 40).unwrap();
        let after = read_msr(&mut cpu, index::TSC).unwrap();
        assert!((before + (1 << 40)..before + (1 << 40) + TSC_HZ * 10).contains(&after));
        write_msr(&mut cpu, index::TSC, 0).unwrap();
        let adjust = read_msr(&mut cpu, index::TSC_ADJUST).unwrap() as i64;
        // Writing 0 to the TSC moved it back by about `after`.
        assert!(
            (-(after as i64) - TSC_HZ as i64 * 10..=-(after as i64) + (1 << 40)).contains(&adjust)
        );
    }

    #[test]
    fn speculation_controls_take_their_bits_and_refuse_others() {
        let mut cpu = cpu64(&[]);
        write_msr(&mut cpu, index::SPEC_CTRL, 0b101).unwrap();
        assert_eq!(read_msr(&mut cpu, index::SPEC_CTRL).unwrap(), 0b101);
        assert!(write_msr(&mut cpu, index::SPEC_CTRL, 1 << 8).is_err());
        write_msr(&mut cpu, index::PRED_CMD, 1).unwrap();
        assert!(write_msr(&mut cpu, index::PRED_CMD, 2).is_err());
        assert!(read_msr(&mut cpu, index::PRED_CMD).is_err(), "write-only");
    }
}
