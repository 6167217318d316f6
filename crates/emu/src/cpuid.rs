//! CPUID: what the emu engine tells a guest about its CPU (Intel SDM
//! Vol. 2A, "CPUID—CPU Identification").
//!
//! [`cpuid_table`] advertises exactly what the emu engine implements, as a
//! plain 64-bit "GenuineIntel" CPU (family 15, model 6, the generic
//! identity KVM's `kvm64` model uses): x87 FPU, MMX, FXSR, SSE, SSE2, SSE3,
//! SSSE3, SSE4.1 and SSE4.2 ([`crate::fpu`]; with CX16, LAHF/SAHF and
//! POPCNT, the x86-64-v2 level), XSAVE with XSAVEOPT and XSAVEC, AVX,
//! AVX2, FMA and F16C ([`crate::fpu::xsave`], [`crate::fpu::avx`]), BMI1,
//! BMI2 and ADX ([`crate::exec::bmi1`], [`crate::exec::bmi2`],
//! [`crate::exec::adx`]), RDRAND and RDSEED ([`crate::exec::random`]),
//! FSGSBASE ([`crate::exec::fsgsbase`]), AES-NI, PCLMULQDQ and the SHA
//! extensions ([`crate::fpu::aes`], [`crate::fpu::clmul`],
//! [`crate::fpu::sha`]), the
//! local APIC with x2APIC and the TSC-deadline timer
//! ([`crate::apic`]), and the system features SMEP, SMAP (with STAC/CLAC),
//! UMIP, PCID and INVPCID ([`crate::mmu`], [`crate::modes`]; their CR4 bits
//! are writable only while advertised). Not advertised until implemented:
//! MONITOR/MWAIT, AVX-512, XSAVES, PKU, MCE/MCA, MTRR (the MSRs
//! exist but are not applied),
//! and 1 GiB pages: the MMU walks them, but INVLPG (which drops
//! the 4 KiB slices of the surrounding 2 MiB) would not cover one.
//!
//! Leaves 0x15/0x16 give the TSC frequency: 1 GHz, from a 1 GHz "core
//! crystal" (also the local APIC timer's clock, as with KVM's APIC bus).
//! The local APIC (leaf 1 EDX.APIC), x2APIC (ECX bit 21) and the
//! TSC-deadline timer (ECX bit 24) are advertised when the CPU has a
//! [`crate::apic::LocalApic`] (every vCPU of an emu VM).
//! [`execute`] answers a `cpuid` at run time: the table (with the VM's
//! CPUID policy already applied), the few bits that follow CPU state
//! (OSXSAVE, the APIC enable, the topology leaf), then the VM's hooks.

use alcazar_core::cpuid::{CpuidEntry, CpuidPolicy, CpuidResult};

use crate::fpu::xsave;
use crate::state::cr4;
use crate::Cpu;

/// CPUID.1:EDX bits advertised.
mod edx1 {
    pub const FPU: u32 = 1 << 0;
    pub const DE: u32 = 1 << 2;
    pub const PSE: u32 = 1 << 3;
    pub const TSC: u32 = 1 << 4;
    pub const MSR: u32 = 1 << 5;
    pub const PAE: u32 = 1 << 6;
    pub const CX8: u32 = 1 << 8;
    pub const APIC: u32 = 1 << 9;
    pub const SEP: u32 = 1 << 11;
    pub const PGE: u32 = 1 << 13;
    pub const CMOV: u32 = 1 << 15;
    pub const PAT: u32 = 1 << 16;
    pub const PSE36: u32 = 1 << 17;
    pub const CLFSH: u32 = 1 << 19;
    pub const MMX: u32 = 1 << 23;
    pub const FXSR: u32 = 1 << 24;
    pub const SSE: u32 = 1 << 25;
    pub const SSE2: u32 = 1 << 26;
}

/// CPUID.1:ECX bits.
mod ecx1 {
    pub const SSE3: u32 = 1 << 0;
    pub const PCLMULQDQ: u32 = 1 << 1;
    pub const SSSE3: u32 = 1 << 9;
    pub const SSE4_1: u32 = 1 << 19;
    pub const SSE4_2: u32 = 1 << 20;
    pub const CX16: u32 = 1 << 13;
    pub const PCID: u32 = 1 << 17;
    pub const X2APIC: u32 = 1 << 21;
    pub const TSC_DEADLINE: u32 = 1 << 24;
    pub const MOVBE: u32 = 1 << 22;
    pub const POPCNT: u32 = 1 << 23;
    pub const AES: u32 = 1 << 25;
    pub const FMA: u32 = 1 << 12;
    pub const XSAVE: u32 = 1 << 26;
    pub const OSXSAVE: u32 = 1 << 27;
    pub const AVX: u32 = 1 << 28;
    pub const F16C: u32 = 1 << 29;
    pub const RDRAND: u32 = 1 << 30;
}

/// CPUID.(EAX=7,ECX=0):EBX bits.
mod ebx7 {
    pub const FSGSBASE: u32 = 1 << 0;
    pub const TSC_ADJUST: u32 = 1 << 1;
    pub const BMI1: u32 = 1 << 3;
    pub const AVX2: u32 = 1 << 5;
    pub const BMI2: u32 = 1 << 8;
    pub const RDSEED: u32 = 1 << 18;
    pub const ADX: u32 = 1 << 19;
    pub const SHA: u32 = 1 << 29;
    pub const SMEP: u32 = 1 << 7;
    pub const INVPCID: u32 = 1 << 10;
    pub const SMAP: u32 = 1 << 20;
}

/// CPUID.(EAX=7,ECX=0):ECX bits.
mod ecx7 {
    pub const UMIP: u32 = 1 << 2;
    pub const RDPID: u32 = 1 << 22;
}

/// CPUID.(EAX=0DH,ECX=1):EAX bits: the XSAVE instructions beyond XSAVE.
mod eax_d1 {
    pub const XSAVEOPT: u32 = 1 << 0;
    pub const XSAVEC: u32 = 1 << 1;
}

/// The highest basic leaf.
const MAX_BASIC: u32 = 0x16;
/// The highest extended leaf.
const MAX_EXTENDED: u32 = 0x8000_0008;
/// Family 15, model 6, stepping 1.
const SIGNATURE: u32 = 0x0000_0f61;
/// The brand string of leaves 0x80000002-4 (48 bytes, NUL-padded).
const BRAND: &[u8] = b"Alcazar emu x86-64 CPU @ 1.00GHz";

fn entry(leaf: u32, eax: u32, ebx: u32, ecx: u32, edx: u32) -> CpuidEntry {
    CpuidEntry {
        leaf,
        subleaf: 0,
        indexed: false,
        result: CpuidResult { eax, ebx, ecx, edx },
    }
}

fn indexed(mut e: CpuidEntry, subleaf: u32) -> CpuidEntry {
    e.subleaf = subleaf;
    e.indexed = true;
    e
}

/// Four little-endian bytes of `s` at `at` (zero past its end).
fn le32(s: &[u8], at: usize) -> u32 {
    let b = |i: usize| u32::from(s.get(at + i).copied().unwrap_or(0));
    b(0) | b(1) << 8 | b(2) << 16 | b(3) << 24
}

/// The CPUID table of the emu engine, before the VM's policy.
pub fn cpuid_table() -> Vec<CpuidEntry> {
    let vendor = b"GenuineIntel";
    let (genu, inei, ntel) = (le32(vendor, 0), le32(vendor, 4), le32(vendor, 8));
    use edx1::*;
    let leaf1_edx = FPU
        | DE
        | PSE
        | TSC
        | MSR
        | PAE
        | CX8
        | APIC
        | SEP
        | PGE
        | CMOV
        | PAT
        | PSE36
        | CLFSH
        | MMX
        | FXSR
        | SSE
        | SSE2;
    let leaf1_ecx = ecx1::SSE3
        | ecx1::SSSE3
        | ecx1::SSE4_1
        | ecx1::SSE4_2
        | ecx1::CX16
        | ecx1::PCID
        | ecx1::X2APIC
        | ecx1::MOVBE
        | ecx1::POPCNT
        | ecx1::TSC_DEADLINE
        | ecx1::XSAVE
        | ecx1::AVX
        | ecx1::FMA
        | ecx1::F16C
        | ecx1::RDRAND
        | ecx1::PCLMULQDQ
        | ecx1::AES;
    let leaf7_ebx = ebx7::FSGSBASE
        | ebx7::TSC_ADJUST
        | ebx7::BMI1
        | ebx7::AVX2
        | ebx7::BMI2
        | ebx7::RDSEED
        | ebx7::ADX
        | ebx7::SHA
        | ebx7::SMEP
        | ebx7::INVPCID
        | ebx7::SMAP;
    let xsave_max = xsave::area_size(xsave::XCR0_SUPPORTED);
    // EBX: CLFLUSH line size 8 * 8 = 64 bytes; the policy fills the APIC
    // ID and logical processor count.
    let mut t = vec![
        entry(0, MAX_BASIC, genu, ntel, inei),
        entry(1, SIGNATURE, 8 << 8, leaf1_ecx, leaf1_edx),
        // Leaf 7: EBX: FSGSBASE, IA32_TSC_ADJUST, BMI1, AVX2, SMEP, BMI2,
        // INVPCID, RDSEED, ADX, SMAP, SHA. ECX: UMIP, RDPID. EDX:
        // IBRS/IBPB (26), STIBP (27), IA32_ARCH_CAPABILITIES (29), SSBD
        // (31) — the speculation controls are accepted and change nothing.
        indexed(
            entry(
                7,
                0,
                leaf7_ebx,
                ecx7::UMIP | ecx7::RDPID,
                1 << 26 | 1 << 27 | 1 << 29 | 1 << 31,
            ),
            0,
        ),
        // Topology: level 0 = SMT (1 thread per core), level 1 = core
        // (the count is filled in by `execute`).
        indexed(entry(0xb, 0, 1, 0x100, 0), 0),
        indexed(entry(0xb, 0, 1, 0x201, 0), 1),
        // XSAVE (SDM Vol. 1 §13.2): the supported XCR0 bits and area
        // sizes (EBX follows XCR0: `execute`), the instructions beyond
        // XSAVE, and where the AVX component sits.
        indexed(
            entry(0xd, xsave::XCR0_SUPPORTED as u32, xsave_max, xsave_max, 0),
            0,
        ),
        indexed(entry(0xd, eax_d1::XSAVEOPT | eax_d1::XSAVEC, 0, 0, 0), 1),
        indexed(
            entry(0xd, xsave::AVX_SIZE as u32, xsave::AVX_OFFSET as u32, 0, 0),
            2,
        ),
        // TSC = crystal * EBX / EAX = 1 GHz.
        entry(0x15, 1, 1, 1_000_000_000, 0),
        entry(0x16, 1000, 1000, 1000, 0),
        entry(0x8000_0000, MAX_EXTENDED, 0, 0, 0),
        // ECX: LAHF/SAHF in 64-bit mode, LZCNT (ABM). EDX: SYSCALL, NX,
        // RDTSCP, LM.
        entry(
            0x8000_0001,
            0,
            0,
            1 | 1 << 5,
            1 << 11 | 1 << 20 | 1 << 27 | 1 << 29,
        ),
    ];
    for (i, leaf) in (0x8000_0002..=0x8000_0004u32).enumerate() {
        let at = i * 16;
        t.push(entry(
            leaf,
            le32(BRAND, at),
            le32(BRAND, at + 4),
            le32(BRAND, at + 8),
            le32(BRAND, at + 12),
        ));
    }
    // Invariant TSC; 40 physical and 48 linear address bits.
    t.push(entry(0x8000_0007, 0, 0, 0, 1 << 8));
    t.push(entry(
        0x8000_0008,
        48 << 8 | crate::mmu::PHYS_ADDR_BITS,
        0,
        0,
        0,
    ));
    t
}

/// Answers `cpuid` with EAX = `leaf`, ECX = `subleaf` for `cpu`.
pub fn execute(cpu: &Cpu, leaf: u32, subleaf: u32) -> CpuidResult {
    let mut r = CpuidPolicy::lookup(&cpu.cpuid, leaf, subleaf);
    match leaf {
        1 => {
            r.ecx &= !ecx1::OSXSAVE;
            if r.ecx & ecx1::XSAVE != 0 && cpu.s.cr4 & cr4::OSXSAVE != 0 {
                r.ecx |= ecx1::OSXSAVE;
            }
            if cpu.apic.is_none() {
                r.ecx &= !(ecx1::X2APIC | ecx1::TSC_DEADLINE);
            }
            if cpu.apic.is_none() || cpu.s.msr.apic_base & (1 << 11) == 0 {
                r.edx &= !edx1::APIC;
            }
        }
        0xd if subleaf <= 1 && r.eax | r.ebx != 0 => {
            // The size of the area for what XCR0 enables now.
            r.ebx = xsave::area_size(cpu.s.xcr0);
        }
        0xb => {
            let vcpus = cpu.machine.vcpu_count().max(1);
            let shift = 32 - (vcpus - 1).leading_zeros();
            match subleaf {
                0 => {}
                1 => {
                    r.eax = shift;
                    r.ebx = vcpus;
                }
                _ => {
                    r.eax = 0;
                    r.ebx = 0;
                }
            }
            r.ecx = (r.ecx & !0xff) | (subleaf & 0xff);
            r.edx = cpu.id;
        }
        _ => {}
    }
    cpu.machine.hooks.cpuid(cpu.id, leaf, subleaf, &mut r);
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::cpu64;

    #[test]
    fn the_vendor_is_genuine_intel_and_long_mode_is_advertised() {
        let cpu = cpu64(&[]);
        let r = execute(&cpu, 0, 0);
        let mut v = Vec::new();
        for x in [r.ebx, r.edx, r.ecx] {
            v.extend_from_slice(&x.to_le_bytes());
        }
        assert_eq!(&v, b"GenuineIntel");
        let ext = execute(&cpu, 0x8000_0001, 0);
        assert_ne!(ext.edx & (1 << 29), 0);
        let one = execute(&cpu, 1, 0);
        assert_ne!(one.ecx & (1 << 31), 0, "the policy sets the hypervisor bit");
        let fpu_sse = edx1::FPU | edx1::MMX | edx1::FXSR | edx1::SSE | edx1::SSE2;
        assert_eq!(one.edx & fpu_sse, fpu_sse);
        let v2 = ecx1::SSE3 | ecx1::SSSE3 | ecx1::CX16 | ecx1::SSE4_1 | ecx1::SSE4_2 | ecx1::POPCNT;
        assert_eq!(one.ecx & v2, v2, "x86-64-v2's leaf 1 features");
        let v3 = ecx1::XSAVE | ecx1::AVX | ecx1::FMA | ecx1::F16C | ecx1::MOVBE;
        assert_eq!(one.ecx & v3, v3, "x86-64-v3's leaf 1 features");
        assert_ne!(execute(&cpu, 7, 0).ebx & ebx7::AVX2, 0);
        let bmi = ebx7::BMI1 | ebx7::BMI2;
        assert_eq!(execute(&cpu, 7, 0).ebx & bmi, bmi, "x86-64-v3's BMI1/BMI2");
    }

    #[test]
    fn the_bit_manipulation_random_and_base_instructions_are_advertised() {
        let cpu = cpu64(&[]);
        assert_ne!(execute(&cpu, 1, 0).ecx & ecx1::RDRAND, 0);
        let more = ebx7::FSGSBASE | ebx7::ADX | ebx7::RDSEED;
        assert_eq!(execute(&cpu, 7, 0).ebx & more, more);
    }

    #[test]
    fn aes_pclmulqdq_and_sha_are_advertised() {
        let cpu = cpu64(&[]);
        let crypto = ecx1::AES | ecx1::PCLMULQDQ;
        assert_eq!(execute(&cpu, 1, 0).ecx & crypto, crypto);
        assert_ne!(execute(&cpu, 7, 0).ebx & ebx7::SHA, 0);
    }

    #[test]
    fn the_brand_string_and_address_sizes_are_reported() {
        let cpu = cpu64(&[]);
        let mut s = Vec::new();
        for leaf in 0x8000_0002..=0x8000_0004 {
            let r = execute(&cpu, leaf, 0);
            for x in [r.eax, r.ebx, r.ecx, r.edx] {
                s.extend_from_slice(&x.to_le_bytes());
            }
        }
        assert!(s.starts_with(BRAND));
        assert_eq!(execute(&cpu, 0x8000_0008, 0).eax, 0x3028);
    }

    #[test]
    fn the_topology_leaf_counts_the_vcpus() {
        let cpu = cpu64(&[]);
        let r = execute(&cpu, 0xb, 1);
        assert_eq!((r.ebx, r.ecx & 0xff, (r.ecx >> 8) & 0xff), (1, 1, 2));
        assert_eq!(execute(&cpu, 0xb, 2).ecx, 2, "level 2 is invalid");
    }
}
