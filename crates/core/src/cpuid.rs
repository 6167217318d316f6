//! The VM's CPUID policy: what the guest is told about its CPU.
//!
//! An engine starts from what it can actually provide (for kvm, KVM's
//! `KVM_GET_SUPPORTED_CPUID`; for emu, the features it implements) and
//! passes it through the [`CpuidPolicy`]: bits the VMM does not back are
//! cleared, the hypervisor bit is set, and each vCPU gets its own APIC ID.
//! Intel SDM Vol. 2A, "CPUID—CPU Identification".

/// The four output registers of `cpuid`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuidResult {
    /// EAX.
    pub eax: u32,
    /// EBX.
    pub ebx: u32,
    /// ECX.
    pub ecx: u32,
    /// EDX.
    pub edx: u32,
}

/// One leaf/subleaf of a CPUID table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuidEntry {
    /// EAX input.
    pub leaf: u32,
    /// ECX input (ignored unless `indexed`).
    pub subleaf: u32,
    /// Whether the leaf depends on ECX.
    pub indexed: bool,
    /// The answer.
    pub result: CpuidResult,
}

/// An output register of `cpuid`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuidReg {
    /// EAX.
    Eax,
    /// EBX.
    Ebx,
    /// ECX.
    Ecx,
    /// EDX.
    Edx,
}

impl CpuidResult {
    fn reg_mut(&mut self, reg: CpuidReg) -> &mut u32 {
        match reg {
            CpuidReg::Eax => &mut self.eax,
            CpuidReg::Ebx => &mut self.ebx,
            CpuidReg::Ecx => &mut self.ecx,
            CpuidReg::Edx => &mut self.edx,
        }
    }
}

/// A rule that clears and sets bits of one register of one leaf.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuidRule {
    /// Leaf the rule applies to.
    pub leaf: u32,
    /// Subleaf, or `None` for all of them.
    pub subleaf: Option<u32>,
    /// Register changed.
    pub reg: CpuidReg,
    /// Bits forced to 0.
    pub clear: u32,
    /// Bits forced to 1 (applied after `clear`).
    pub set: u32,
}

/// CPUID.1:ECX bit 31, "hypervisor present".
pub const LEAF1_ECX_HYPERVISOR: u32 = 1 << 31;
/// CPUID.1:ECX bit 21, x2APIC.
pub const LEAF1_ECX_X2APIC: u32 = 1 << 21;
/// CPUID.1:ECX bit 24, TSC deadline timer.
pub const LEAF1_ECX_TSC_DEADLINE: u32 = 1 << 24;

/// The rules that turn an engine's supported CPUID set into the guest's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuidPolicy {
    /// Rules applied in order.
    pub rules: Vec<CpuidRule>,
}

impl Default for CpuidPolicy {
    /// The default policy: announce a hypervisor; the per-vCPU topology
    /// fields are filled in by [`CpuidPolicy::apply`].
    fn default() -> Self {
        CpuidPolicy {
            rules: vec![CpuidRule {
                leaf: 1,
                subleaf: None,
                reg: CpuidReg::Ecx,
                clear: 0,
                set: LEAF1_ECX_HYPERVISOR,
            }],
        }
    }
}

impl CpuidPolicy {
    /// Applies the policy to `table` for vCPU `vcpu` of `vcpus`: every rule,
    /// then the APIC ID (leaf 1 EBX[31:24], leaf 0xB EDX) and the logical
    /// processor count.
    pub fn apply(&self, table: &mut [CpuidEntry], vcpu: u32, vcpus: u32) {
        for entry in table.iter_mut() {
            for rule in self.rules.iter().filter(|r| r.leaf == entry.leaf) {
                if rule.subleaf.is_some_and(|s| s != entry.subleaf) {
                    continue;
                }
                let reg = entry.result.reg_mut(rule.reg);
                *reg = (*reg & !rule.clear) | rule.set;
            }
            match entry.leaf {
                1 => {
                    let count = vcpus.min(255) << 16;
                    entry.result.ebx = (entry.result.ebx & 0x0000_ffff) | (vcpu << 24) | count;
                    if vcpus > 1 {
                        entry.result.edx |= 1 << 28; // HTT: the count field is valid
                    }
                }
                0xb | 0x1f => entry.result.edx = vcpu,
                _ => {}
            }
        }
    }

    /// Looks `leaf`/`subleaf` up in `table`, the way a CPU answers: a leaf
    /// past the highest basic or extended leaf answers like the highest
    /// basic leaf (Intel behaviour); a missing leaf answers zeros.
    pub fn lookup(table: &[CpuidEntry], leaf: u32, subleaf: u32) -> CpuidResult {
        let find = |leaf: u32| {
            table
                .iter()
                .find(|e| e.leaf == leaf && (!e.indexed || e.subleaf == subleaf))
                .map(|e| e.result)
        };
        let max_of = |base: u32| find(base).map(|r| r.eax).unwrap_or(0);
        let range_max = if leaf >= 0x8000_0000 {
            max_of(0x8000_0000)
        } else if leaf >= 0x4000_0000 {
            max_of(0x4000_0000)
        } else {
            max_of(0)
        };
        let hypervisor_range = (0x4000_0000..0x8000_0000).contains(&leaf);
        if leaf > range_max && !hypervisor_range {
            return find(max_of(0)).unwrap_or_default();
        }
        find(leaf).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(leaf: u32, r: CpuidResult) -> CpuidEntry {
        CpuidEntry {
            leaf,
            result: r,
            ..Default::default()
        }
    }

    #[test]
    fn policy_sets_hypervisor_bit_and_apic_id() {
        let mut t = vec![entry(
            1,
            CpuidResult {
                ebx: 0xff00_0800,
                ..Default::default()
            },
        )];
        CpuidPolicy::default().apply(&mut t, 3, 4);
        assert_ne!(t[0].result.ecx & LEAF1_ECX_HYPERVISOR, 0);
        assert_eq!(t[0].result.ebx >> 24, 3);
        assert_eq!((t[0].result.ebx >> 16) & 0xff, 4);
        assert_eq!(t[0].result.ebx & 0xffff, 0x0800);
    }

    #[test]
    fn leaves_past_the_maximum_answer_like_the_highest_basic_leaf() {
        let t = vec![
            entry(
                0,
                CpuidResult {
                    eax: 1,
                    ..Default::default()
                },
            ),
            entry(
                1,
                CpuidResult {
                    ecx: 0x55,
                    ..Default::default()
                },
            ),
            entry(
                0x8000_0000,
                CpuidResult {
                    eax: 0x8000_0001,
                    ..Default::default()
                },
            ),
        ];
        assert_eq!(CpuidPolicy::lookup(&t, 7, 0).ecx, 0x55);
        assert_eq!(CpuidPolicy::lookup(&t, 0x8000_0008, 0).ecx, 0x55);
        assert_eq!(
            CpuidPolicy::lookup(&t, 0x8000_0001, 0),
            CpuidResult::default()
        );
    }
}
