//! The guest's time-stamp counter across a pause.
//!
//! Under KVM the guest's TSC is the host's plus a per-vCPU offset (no TSC
//! scaling on these hosts: `KVM_CAP_TSC_CONTROL` is absent), so it keeps
//! counting while the VMM holds the vCPU out of `KVM_RUN`. At the pause
//! the guest's TSC (IA32_TIME_STAMP_COUNTER, MSR 0x10, SDM Vol. 3B
//! §18.17) is saved; at the resume the offset is set so that the guest's
//! TSC reads that value again: `offset = saved - host TSC now`, through
//! the vCPU attribute `KVM_VCPU_TSC_OFFSET` (Linux 5.16+).
//!
//! On this project's PVM hosts KVM accepts the attribute but the guest's
//! TSC is not offset (PVM runs guest RDTSC natively), so there the TSC
//! still counts through a pause; on VT-x and SVM hosts the offset is
//! what the hardware adds.
//!
//! Writing the MSR back instead is not enough: KVM takes a host write
//! within a second of the value it expects for an attempt to keep vCPUs
//! in sync and keeps the old offset, so short pauses would be ignored.
//! It is the fallback for kernels without the attribute.

use kvm_bindings::{kvm_device_attr, kvm_msr_entry, Msrs, KVM_VCPU_TSC_CTRL, KVM_VCPU_TSC_OFFSET};
use kvm_ioctls::VcpuFd;
use vmm_sys_util::ioctl::ioctl_with_ref;

/// The vCPU device-attribute ioctls, which kvm-ioctls wraps on arm64 only
/// (api.rst §4.81: KVM_HAS/SET_DEVICE_ATTR on a vCPU fd).
mod ioctls {
    use kvm_bindings::kvm_device_attr;
    vmm_sys_util::ioctl_iow_nr!(
        KVM_SET_DEVICE_ATTR,
        kvm_bindings::KVMIO,
        0xe1,
        kvm_device_attr
    );
    vmm_sys_util::ioctl_iow_nr!(
        KVM_HAS_DEVICE_ATTR,
        kvm_bindings::KVMIO,
        0xe3,
        kvm_device_attr
    );
}

/// `KVM_HAS_DEVICE_ATTR` then `KVM_SET_DEVICE_ATTR` for `attr`.
fn set_vcpu_attr(fd: &VcpuFd, attr: &kvm_device_attr) -> Result<(), String> {
    for (name, ioctl) in [
        ("KVM_HAS_DEVICE_ATTR", ioctls::KVM_HAS_DEVICE_ATTR()),
        ("KVM_SET_DEVICE_ATTR", ioctls::KVM_SET_DEVICE_ATTR()),
    ] {
        // SAFETY: both ioctls read one kvm_device_attr from the pointer (a
        // live reference) and, for SET, the u64 its `addr` points at (a
        // live local of the caller); `fd` is this vCPU's open fd.
        let ret = unsafe { ioctl_with_ref(fd, ioctl, attr) };
        if ret < 0 {
            return Err(format!("{name}: {}", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// IA32_TIME_STAMP_COUNTER.
pub const MSR_IA32_TSC: u32 = 0x10;

/// The guest's TSC now, if KVM reads it.
pub fn read(fd: &VcpuFd) -> Option<u64> {
    crate::inspect::read_msr(fd, MSR_IA32_TSC)
}

/// The host's TSC.
fn host_tsc() -> u64 {
    // SAFETY: RDTSC has no memory effects; every x86-64 CPU has it (and
    // KVM hosts expose it to user space).
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Makes the guest's TSC read `value` now.
pub fn restore(fd: &VcpuFd, value: u64) -> Result<(), String> {
    let offset = value.wrapping_sub(host_tsc());
    let attr = kvm_device_attr {
        flags: 0,
        group: KVM_VCPU_TSC_CTRL,
        attr: u64::from(KVM_VCPU_TSC_OFFSET),
        addr: &offset as *const u64 as u64,
    };
    let why = match set_vcpu_attr(fd, &attr) {
        Ok(()) => return Ok(()),
        Err(why) => why,
    };
    tracing::debug!("KVM_VCPU_TSC_OFFSET unavailable ({why}); writing IA32_TSC");
    let msrs = Msrs::from_entries(&[kvm_msr_entry {
        index: MSR_IA32_TSC,
        data: value,
        ..Default::default()
    }])
    .map_err(|e| format!("{e:?}"))?;
    match fd.set_msrs(&msrs) {
        Ok(1) => Ok(()),
        Ok(n) => Err(format!("KVM_SET_MSRS wrote {n} of 1 MSRs")),
        Err(e) => Err(format!("KVM_SET_MSRS: {e}")),
    }
}
