//! CPUID for kvm vCPUs: KVM's supported set, through the VM's policy and
//! CPUID hooks, installed with `KVM_SET_CPUID2`.
//!
//! KVM answers `cpuid` inside the kernel, so hooks run here, once per vCPU,
//! for every leaf in the table (see [`alcazar_core::hooks`]).

use alcazar_core::cpuid::{CpuidEntry, CpuidResult};
use alcazar_core::engine::EngineError;
use alcazar_core::Machine;
use kvm_bindings::{kvm_cpuid_entry2, CpuId, KVM_CPUID_FLAG_SIGNIFCANT_INDEX};

/// Converts KVM's table to the core's.
pub fn from_kvm(cpuid: &CpuId) -> Vec<CpuidEntry> {
    cpuid
        .as_slice()
        .iter()
        .map(|e| CpuidEntry {
            leaf: e.function,
            subleaf: e.index,
            indexed: e.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX != 0,
            result: CpuidResult {
                eax: e.eax,
                ebx: e.ebx,
                ecx: e.ecx,
                edx: e.edx,
            },
        })
        .collect()
}

/// Converts the core's table to KVM's.
pub fn to_kvm(table: &[CpuidEntry]) -> Result<CpuId, EngineError> {
    let entries: Vec<kvm_cpuid_entry2> = table
        .iter()
        .map(|e| kvm_cpuid_entry2 {
            function: e.leaf,
            index: e.subleaf,
            flags: if e.indexed {
                KVM_CPUID_FLAG_SIGNIFCANT_INDEX
            } else {
                0
            },
            eax: e.result.eax,
            ebx: e.result.ebx,
            ecx: e.result.ecx,
            edx: e.result.edx,
            ..Default::default()
        })
        .collect();
    CpuId::from_entries(&entries).map_err(|_| EngineError::Guest {
        vcpu: 0,
        what: format!(
            "CPUID table of {} entries is too large for KVM",
            entries.len()
        ),
    })
}

/// The table vCPU `id` gets: supported set, policy, then hooks.
pub fn vcpu_table(supported: &[CpuidEntry], machine: &Machine, id: u32) -> Vec<CpuidEntry> {
    let mut table = supported.to_vec();
    machine.cpuid.apply(&mut table, id, machine.vcpu_count());
    for e in table.iter_mut() {
        machine.hooks.cpuid(id, e.leaf, e.subleaf, &mut e.result);
    }
    table
}
