//! The inspector's view of a kvm vCPU (`Documentation/virt/kvm/api.rst`):
//! the engine-neutral register tree plus what KVM keeps in the kernel,
//! with the emu engine's names where the two overlap:
//!
//! * `apic` — `KVM_GET_LAPIC`'s copy of the xAPIC register page, decoded
//!   by [`alcazar_core::regs::apic`] (only when the VM has KVM's local
//!   APICs, i.e. a split irqchip). KVM fills in the timer's current count
//!   at the moment of the call. This engine leaves `KVM_CAP_X2APIC_API`
//!   off, so in x2APIC mode too KVM reports the ID in bits 31:24 of the
//!   ID register (and only its low 8 bits).
//! * `mp_state` — `KVM_GET_MP_STATE`: the activity state (runnable,
//!   halted, waiting for INIT or SIPI). KVM first accepts a latched INIT
//!   or STARTUP, as its next `KVM_RUN` would.
//! * `events` — `KVM_GET_VCPU_EVENTS`: the exception, interrupt and NMI
//!   being injected or pending, NMI masking, the STI/MOV SS interrupt
//!   shadow, SMM and a pending triple fault.
//! * `msr` — one `KVM_GET_MSRS` per MSR of the list the emu engine shows;
//!   an MSR KVM refuses reads `unreadable`.
//! * `debug` — `KVM_GET_DEBUGREGS`; `fpu` — `KVM_GET_FPU` (FCW, FSW, the
//!   abridged tag word, TOP, MXCSR; on this project's PVM host a fresh
//!   vCPU reports MXCSR = 0 there, not the power-on 0x1F80).
//!
//! Each ioctl only reads; one that fails shows its error in its own
//! subtree and the rest of the tree is still built.

use alcazar_core::engine::EngineError;
use alcazar_core::inspect::Tree;
use alcazar_core::regs::apic::{inspect_local_apic, slot, LocalApicRegs, APIC_REGISTER_SLOTS};
use alcazar_core::regs::{Regs, SpecialRegs};
use kvm_bindings::{kvm_msr_entry, kvm_vcpu_events, Msrs};
use kvm_ioctls::VcpuFd;

/// The MSRs the inspector reads, by the emu engine's names (SDM Vol. 4
/// Table 2-2).
const MSRS: &[(&str, u32)] = &[
    ("efer", 0xc000_0080),
    ("star", 0xc000_0081),
    ("lstar", 0xc000_0082),
    ("cstar", 0xc000_0083),
    ("sfmask", 0xc000_0084),
    ("fs_base", 0xc000_0100),
    ("gs_base", 0xc000_0101),
    ("kernel_gs_base", 0xc000_0102),
    ("sysenter_cs", 0x174),
    ("sysenter_esp", 0x175),
    ("sysenter_eip", 0x176),
    ("tsc", 0x10),
    ("tsc_adjust", 0x3b),
    ("tsc_aux", 0xc000_0103),
    ("apic_base", 0x1b),
    ("pat", 0x277),
    ("misc_enable", 0x1a0),
    ("spec_ctrl", 0x48),
    ("mtrr_def_type", 0x2ff),
    ("tsc_deadline", 0x6e0),
];

/// IA32_TSC_DEADLINE.
const MSR_TSC_DEADLINE: u32 = 0x6e0;

/// The tree of a kvm vCPU: the register tree of `regs` and `sregs`, then
/// `apic` (with `has_lapic`), `mp_state`, `events`, `msr`, `debug`, `fpu`.
pub(crate) fn inspect_vcpu(
    fd: &VcpuFd,
    has_lapic: bool,
    regs: Result<Regs, EngineError>,
    sregs: Result<SpecialRegs, EngineError>,
) -> Tree {
    let apic_base = sregs.as_ref().ok().map(|s| s.apic_base);
    let mut t = alcazar_core::regs::inspect_registers(regs, sregs);
    let msrs: Vec<(&str, u32, Option<u64>)> = MSRS
        .iter()
        .map(|&(name, index)| (name, index, read_msr(fd, index)))
        .collect();
    if has_lapic {
        let deadline = msrs
            .iter()
            .find(|m| m.1 == MSR_TSC_DEADLINE)
            .and_then(|m| m.2);
        match (fd.get_lapic(), apic_base) {
            (Ok(lapic), Some(base)) => {
                t.child(
                    "apic",
                    inspect_local_apic(&lapic_regs(&lapic, base, deadline)),
                );
            }
            (Ok(_), None) => {
                t.value(
                    "apic",
                    "unreadable: no IA32_APIC_BASE (KVM_GET_SREGS failed)",
                );
            }
            (Err(e), _) => {
                t.value("apic", format!("unreadable: KVM_GET_LAPIC: {e}"));
            }
        }
    }
    match fd.get_mp_state() {
        Ok(s) => t.value("mp_state", mp_state_name(s.mp_state)),
        Err(e) => t.value("mp_state", format!("unreadable: KVM_GET_MP_STATE: {e}")),
    };
    match fd.get_vcpu_events() {
        Ok(ev) => t.child("events", events(&ev)),
        Err(e) => t.value("events", format!("unreadable: KVM_GET_VCPU_EVENTS: {e}")),
    };
    let mut m = Tree::new();
    for (name, _, value) in msrs {
        match value {
            Some(v) => m.hex(name, v, 16),
            None => m.value(name, "unreadable"),
        };
    }
    t.child("msr", m);
    match fd.get_debug_regs() {
        Ok(d) => {
            let mut dt = Tree::new();
            for (i, v) in d.db.iter().enumerate() {
                dt.hex(format!("dr{i}"), *v, 16);
            }
            dt.hex("dr6", d.dr6, 16).hex("dr7", d.dr7, 16);
            t.child("debug", dt)
        }
        Err(e) => t.value("debug", format!("unreadable: KVM_GET_DEBUGREGS: {e}")),
    };
    match fd.get_fpu() {
        Ok(f) => {
            let mut ft = Tree::new();
            ft.hex("fcw", f.fcw.into(), 4)
                .hex("fsw", f.fsw.into(), 4)
                .hex("ftw_abridged", f.ftwx.into(), 2)
                .value("top", (f.fsw >> 11) & 7)
                .hex("fop", f.last_opcode.into(), 3)
                .hex("fip", f.last_ip, 16)
                .hex("fdp", f.last_dp, 16)
                .hex("mxcsr", f.mxcsr.into(), 8);
            t.child("fpu", ft)
        }
        Err(e) => t.value("fpu", format!("unreadable: KVM_GET_FPU: {e}")),
    };
    t
}

/// One MSR through `KVM_GET_MSRS`, which answers how many of the entries
/// it read: `None` unless it read this one.
pub(crate) fn read_msr(fd: &VcpuFd, index: u32) -> Option<u64> {
    let mut msrs = Msrs::from_entries(&[kvm_msr_entry {
        index,
        ..Default::default()
    }])
    .ok()?;
    match fd.get_msrs(&mut msrs) {
        Ok(1) => msrs.as_slice().first().map(|e| e.data),
        _ => None,
    }
}

/// The register page of `KVM_GET_LAPIC` as [`LocalApicRegs`]: each
/// register the little-endian dword at offset `slot * 16`.
fn lapic_regs(
    lapic: &kvm_bindings::kvm_lapic_state,
    base: u64,
    tsc_deadline: Option<u64>,
) -> LocalApicRegs {
    let mut regs = [0u32; APIC_REGISTER_SLOTS];
    for (i, r) in regs.iter_mut().enumerate() {
        let at = i * 16;
        let mut bytes = [0u8; 4];
        for (k, b) in bytes.iter_mut().enumerate() {
            *b = lapic.regs.get(at + k).map_or(0, |&c| c as u8);
        }
        *r = u32::from_le_bytes(bytes);
    }
    LocalApicRegs {
        base,
        id: regs[slot::ID] >> 24,
        regs,
        tsc_deadline,
    }
}

/// KVM's names for its MP states (api.rst, `KVM_GET_MP_STATE`).
fn mp_state_name(state: u32) -> String {
    use kvm_bindings::*;
    let name = match state {
        KVM_MP_STATE_RUNNABLE => "runnable",
        KVM_MP_STATE_UNINITIALIZED => "uninitialized (waiting for INIT)",
        KVM_MP_STATE_INIT_RECEIVED => "INIT received (waiting for SIPI)",
        KVM_MP_STATE_HALTED => "halted",
        KVM_MP_STATE_SIPI_RECEIVED => "SIPI received",
        KVM_MP_STATE_STOPPED => "stopped",
        KVM_MP_STATE_CHECK_STOP => "check-stop",
        KVM_MP_STATE_OPERATING => "operating",
        KVM_MP_STATE_LOAD => "load",
        KVM_MP_STATE_AP_RESET_HOLD => "AP reset hold",
        KVM_MP_STATE_SUSPENDED => "suspended",
        other => return format!("unknown ({other})"),
    };
    name.to_string()
}

/// `KVM_GET_VCPU_EVENTS` by name (api.rst, `KVM_GET_VCPU_EVENTS`).
fn events(ev: &kvm_vcpu_events) -> Tree {
    use kvm_bindings::*;
    let mut t = Tree::new();
    let x = &ev.exception;
    t.value("exception_injected", x.injected != 0)
        .value("exception_pending", x.pending != 0)
        .hex("exception_vector", x.nr.into(), 2);
    if x.has_error_code != 0 {
        t.hex("exception_error_code", x.error_code.into(), 8);
    } else {
        t.value("exception_error_code", "none");
    }
    if ev.flags & KVM_VCPUEVENT_VALID_PAYLOAD != 0 && ev.exception_has_payload != 0 {
        t.hex("exception_payload", ev.exception_payload, 16);
    }
    let i = &ev.interrupt;
    t.value("interrupt_injected", i.injected != 0)
        .hex("interrupt_vector", i.nr.into(), 2)
        .value("interrupt_soft", i.soft != 0);
    if ev.flags & KVM_VCPUEVENT_VALID_SHADOW != 0 {
        let shadow = u32::from(i.shadow);
        let name = match (
            shadow & KVM_X86_SHADOW_INT_STI != 0,
            shadow & KVM_X86_SHADOW_INT_MOV_SS != 0,
        ) {
            (false, false) => "none",
            (true, false) => "STI",
            (false, true) => "MOV SS",
            (true, true) => "STI, MOV SS",
        };
        t.value("interrupt_shadow", name);
    }
    t.value("nmi_injected", ev.nmi.injected != 0);
    if ev.flags & KVM_VCPUEVENT_VALID_NMI_PENDING != 0 {
        t.value("nmi_pending", ev.nmi.pending != 0);
    }
    t.value("nmi_masked", ev.nmi.masked != 0);
    if ev.flags & KVM_VCPUEVENT_VALID_SIPI_VECTOR != 0 {
        t.hex("sipi_vector", ev.sipi_vector.into(), 2);
    }
    if ev.flags & KVM_VCPUEVENT_VALID_SMM != 0 {
        t.value("smm", ev.smi.smm != 0)
            .value("smi_pending", ev.smi.pending != 0)
            .value("latched_init", ev.smi.latched_init != 0);
    }
    if ev.flags & KVM_VCPUEVENT_VALID_TRIPLE_FAULT != 0 {
        t.value("triple_fault_pending", ev.triple_fault.pending != 0);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_named_and_flag_gated() {
        let mut ev = kvm_vcpu_events::default();
        ev.exception.pending = 1;
        ev.exception.nr = 14;
        ev.exception.has_error_code = 1;
        ev.exception.error_code = 2;
        ev.interrupt.shadow = kvm_bindings::KVM_X86_SHADOW_INT_STI as u8;
        ev.flags = kvm_bindings::KVM_VCPUEVENT_VALID_SHADOW;
        let t = events(&ev);
        let v = |p: &str| t.get(p).map(|n| n.flatten("")[0].1.clone());
        assert_eq!(v("exception_vector").as_deref(), Some("0x0e"));
        assert_eq!(v("exception_error_code").as_deref(), Some("0x00000002"));
        assert_eq!(v("interrupt_shadow").as_deref(), Some("STI"));
        assert_eq!(v("nmi_pending"), None, "not valid without its flag");
    }

    #[test]
    fn an_msr_kvm_refuses_reads_as_none_and_the_others_still_read() {
        let kvm = match kvm_ioctls::Kvm::new() {
            Ok(k) => k,
            Err(e) if std::env::var("ALCAZAR_REQUIRE_KVM").as_deref() == Ok("1") => {
                panic!("kvm required: {e}")
            }
            Err(e) => {
                eprintln!("SKIPPED an_msr_kvm_refuses_reads_as_none: {e}");
                return;
            }
        };
        let vm = kvm.create_vm().expect("KVM_CREATE_VM");
        let fd = vm.create_vcpu(0).expect("KVM_CREATE_VCPU");
        // 0x0bad is no MSR of SDM Vol. 4: KVM reads none of it.
        assert_eq!(read_msr(&fd, 0x0bad), None);
        assert_eq!(read_msr(&fd, 0x277), Some(0x0007_0406_0007_0406));
        let t = inspect_vcpu(
            &fd,
            false,
            Err(EngineError::Unsupported("test")),
            Err(EngineError::Unsupported("test")),
        );
        assert_eq!(
            t.get("msr/pat").map(|n| n.flatten("")[0].1.clone()),
            Some("0x0007040600070406".into())
        );
        assert!(t.get("regs").is_some() && t.get("apic").is_none());
    }

    #[test]
    fn the_lapic_page_is_read_little_endian_per_16_byte_slot() {
        let mut lapic = kvm_bindings::kvm_lapic_state::default();
        lapic.regs[0x20..0x24].copy_from_slice(&[0, 0, 0, 2].map(|b: u8| b as _));
        lapic.regs[0x30..0x34].copy_from_slice(&[0x14, 0, 5, 0].map(|b: u8| b as _));
        let r = lapic_regs(&lapic, 0xfee0_0800, None);
        assert_eq!(r.id, 2);
        assert_eq!(r.regs[slot::VERSION], 0x0005_0014);
        assert_eq!(mp_state_name(3), "halted");
        assert_eq!(mp_state_name(99), "unknown (99)");
    }
}
