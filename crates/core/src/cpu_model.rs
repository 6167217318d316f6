//! The guest CPU model a user picks: an x86-64 micro-architecture level
//! (the psABI's x86-64-v1, -v2, -v3) or everything the engine offers,
//! minus single features, turned into [`CpuidRule`]s that hide CPUID bits.
//!
//! The levels (System V x86-64 psABI, "Micro-architecture levels"):
//! - **v1**: the baseline (CMOV, CX8, FPU, FXSR, MMX, SSE, SSE2, SYSCALL);
//! - **v2**: v1 + CMPXCHG16B, LAHF/SAHF in 64-bit mode, POPCNT, SSE3,
//!   SSE4.1, SSE4.2, SSSE3;
//! - **v3**: v2 + AVX, AVX2, BMI1, BMI2, F16C, FMA, LZCNT, MOVBE, XSAVE
//!   (with OSXSAVE).
//!
//! ADX, RDRAND, RDSEED, FSGSBASE, AES-NI, PCLMULQDQ and the SHA
//! extensions belong to no level: only `max` has them.
//! The system features (PCID, SMEP, INVPCID, SMAP, UMIP) belong to no
//! level: only `max` offers them. Hiding PCID, SMEP, SMAP or UMIP does
//! change the emu engine's CPU: it refuses the feature's CR4 bit (#GP)
//! when CPUID does not offer it (its instructions, STAC/CLAC and INVPCID,
//! still run, like any hidden instruction).
//!
//! Removing a feature also removes those that need it (AVX needs XSAVE;
//! AVX2, FMA and F16C need AVX), so a guest never sees an impossible
//! combination.
//!
//! Hiding a bit changes what the guest is told, not what the CPU does: as
//! on hardware under KVM's CPUID masking, a hidden instruction still runs
//! if the guest executes it anyway.

use crate::cpuid::{CpuidReg, CpuidRule};

/// A micro-architecture level, or everything the engine implements.
/// Levels are ordered: each one includes those before it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum CpuLevel {
    /// x86-64-v1, the baseline.
    V1,
    /// x86-64-v2.
    V2,
    /// x86-64-v3.
    V3,
    /// Everything the engine implements (the default).
    #[default]
    Max,
}

impl CpuLevel {
    /// The level's name on the command line (`max`, `v1`, `v2`, `v3`).
    pub fn name(self) -> &'static str {
        match self {
            CpuLevel::Max => "max",
            CpuLevel::V1 => "v1",
            CpuLevel::V2 => "v2",
            CpuLevel::V3 => "v3",
        }
    }

    /// The level called `name` (`x86-64-` may precede `v1`..`v3`).
    pub fn from_name(name: &str) -> Option<CpuLevel> {
        match name.strip_prefix("x86-64-").unwrap_or(name) {
            "max" => Some(CpuLevel::Max),
            "v1" => Some(CpuLevel::V1),
            "v2" => Some(CpuLevel::V2),
            "v3" => Some(CpuLevel::V3),
            _ => None,
        }
    }

    /// The features above the level, which it hides.
    fn hidden(self) -> impl Iterator<Item = CpuFeature> {
        CpuFeature::ALL
            .into_iter()
            .filter(move |f| f.level() > self)
    }
}

/// A CPU feature `--cpu` can remove, with its CPUID bit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuFeature {
    /// SSE3 (CPUID.1:ECX.SSE3[bit 0], Linux's `pni`).
    Sse3,
    /// PCLMULQDQ, carry-less multiplication (CPUID.1:ECX[1]).
    Pclmulqdq,
    /// SSSE3 (CPUID.1:ECX[9]).
    Ssse3,
    /// CMPXCHG16B (CPUID.1:ECX[13]).
    Cx16,
    /// SSE4.1 (CPUID.1:ECX[19]).
    Sse4_1,
    /// SSE4.2 (CPUID.1:ECX[20]).
    Sse4_2,
    /// MOVBE (CPUID.1:ECX[22]).
    Movbe,
    /// POPCNT (CPUID.1:ECX[23]).
    Popcnt,
    /// AES-NI: AESENC, AESENCLAST, AESDEC, AESDECLAST, AESIMC,
    /// AESKEYGENASSIST (CPUID.1:ECX[25]).
    Aes,
    /// LAHF/SAHF in 64-bit mode (CPUID.80000001H:ECX[0]).
    LahfLm,
    /// LZCNT (CPUID.80000001H:ECX[5], ABM).
    Lzcnt,
    /// XSAVE and the XCR0 register (CPUID.1:ECX[26]).
    Xsave,
    /// AVX (CPUID.1:ECX[28]).
    Avx,
    /// FMA (CPUID.1:ECX[12]).
    Fma,
    /// F16C (CPUID.1:ECX[29]).
    F16c,
    /// AVX2 (CPUID.(EAX=7,ECX=0):EBX[5]).
    Avx2,
    /// RDRAND (CPUID.1:ECX[30]).
    Rdrand,
    /// RDFSBASE/RDGSBASE/WRFSBASE/WRGSBASE and CR4.FSGSBASE
    /// (CPUID.(EAX=7,ECX=0):EBX[0]).
    Fsgsbase,
    /// BMI1: ANDN, BEXTR, BLSI, BLSMSK, BLSR, TZCNT
    /// (CPUID.(EAX=7,ECX=0):EBX[3]).
    Bmi1,
    /// BMI2: BZHI, MULX, PDEP, PEXT, RORX, SARX, SHLX, SHRX
    /// (CPUID.(EAX=7,ECX=0):EBX[8]).
    Bmi2,
    /// RDSEED (CPUID.(EAX=7,ECX=0):EBX[18]).
    Rdseed,
    /// ADCX and ADOX (CPUID.(EAX=7,ECX=0):EBX[19]).
    Adx,
    /// The SHA extensions: SHA1RNDS4, SHA1NEXTE, SHA1MSG1, SHA1MSG2,
    /// SHA256RNDS2, SHA256MSG1, SHA256MSG2 (CPUID.(EAX=7,ECX=0):EBX[29],
    /// Linux's `sha_ni`).
    Sha,
    /// PCID, process-context identifiers (CPUID.1:ECX[17]); CR4.PCIDE.
    Pcid,
    /// SMEP, supervisor-mode execution prevention
    /// (CPUID.(EAX=7,ECX=0):EBX[7]); CR4.SMEP.
    Smep,
    /// INVPCID (CPUID.(EAX=7,ECX=0):EBX[10]).
    Invpcid,
    /// SMAP, supervisor-mode access prevention, with STAC/CLAC
    /// (CPUID.(EAX=7,ECX=0):EBX[20]); CR4.SMAP.
    Smap,
    /// UMIP, user-mode instruction prevention
    /// (CPUID.(EAX=7,ECX=0):ECX[2]); CR4.UMIP.
    Umip,
}

impl CpuFeature {
    /// Every feature, in CPUID order.
    pub const ALL: [CpuFeature; 28] = [
        CpuFeature::Sse3,
        CpuFeature::Pclmulqdq,
        CpuFeature::Ssse3,
        CpuFeature::Cx16,
        CpuFeature::Sse4_1,
        CpuFeature::Sse4_2,
        CpuFeature::Movbe,
        CpuFeature::Popcnt,
        CpuFeature::Aes,
        CpuFeature::LahfLm,
        CpuFeature::Lzcnt,
        CpuFeature::Xsave,
        CpuFeature::Avx,
        CpuFeature::Fma,
        CpuFeature::F16c,
        CpuFeature::Rdrand,
        CpuFeature::Fsgsbase,
        CpuFeature::Bmi1,
        CpuFeature::Avx2,
        CpuFeature::Bmi2,
        CpuFeature::Rdseed,
        CpuFeature::Adx,
        CpuFeature::Sha,
        CpuFeature::Pcid,
        CpuFeature::Smep,
        CpuFeature::Invpcid,
        CpuFeature::Smap,
        CpuFeature::Umip,
    ];

    /// The lowest level that includes it ([`CpuLevel::Max`]: none does).
    pub fn level(self) -> CpuLevel {
        use CpuFeature::*;
        match self {
            Sse3 | Ssse3 | Cx16 | Sse4_1 | Sse4_2 | Popcnt | LahfLm => CpuLevel::V2,
            Movbe | Lzcnt | Xsave | Avx | Fma | F16c | Avx2 | Bmi1 | Bmi2 => CpuLevel::V3,
            Rdrand | Fsgsbase | Rdseed | Adx | Pclmulqdq | Aes | Sha | Pcid | Smep | Invpcid
            | Smap | Umip => CpuLevel::Max,
        }
    }

    /// The features it needs: removing one of them removes it too.
    pub fn needs(self) -> &'static [CpuFeature] {
        use CpuFeature::*;
        match self {
            Avx => &[Xsave],
            Fma | F16c | Avx2 => &[Avx],
            _ => &[],
        }
    }

    /// The name Linux's `/proc/cpuinfo` gives it, which `--cpu` takes.
    pub fn name(self) -> &'static str {
        match self {
            CpuFeature::Sse3 => "sse3",
            CpuFeature::Ssse3 => "ssse3",
            CpuFeature::Cx16 => "cx16",
            CpuFeature::Sse4_1 => "sse4_1",
            CpuFeature::Sse4_2 => "sse4_2",
            CpuFeature::Movbe => "movbe",
            CpuFeature::Popcnt => "popcnt",
            CpuFeature::LahfLm => "lahf_lm",
            CpuFeature::Lzcnt => "lzcnt",
            CpuFeature::Xsave => "xsave",
            CpuFeature::Avx => "avx",
            CpuFeature::Fma => "fma",
            CpuFeature::F16c => "f16c",
            CpuFeature::Avx2 => "avx2",
            CpuFeature::Rdrand => "rdrand",
            CpuFeature::Fsgsbase => "fsgsbase",
            CpuFeature::Bmi1 => "bmi1",
            CpuFeature::Bmi2 => "bmi2",
            CpuFeature::Rdseed => "rdseed",
            CpuFeature::Adx => "adx",
            CpuFeature::Pclmulqdq => "pclmulqdq",
            CpuFeature::Aes => "aes",
            CpuFeature::Sha => "sha_ni",
            CpuFeature::Pcid => "pcid",
            CpuFeature::Smep => "smep",
            CpuFeature::Invpcid => "invpcid",
            CpuFeature::Smap => "smap",
            CpuFeature::Umip => "umip",
        }
    }

    /// The feature called `name` (Linux's `pni` is SSE3 and `abm` is
    /// LZCNT; `-` and `.` may stand for `_`: `sse4.2`).
    pub fn from_name(name: &str) -> Option<CpuFeature> {
        let name = name.replace(['-', '.'], "_");
        match name.as_str() {
            "pni" => return Some(CpuFeature::Sse3),
            "abm" => return Some(CpuFeature::Lzcnt),
            _ => {}
        }
        CpuFeature::ALL.into_iter().find(|f| f.name() == name)
    }

    /// Its CPUID leaf, register and bit.
    pub fn cpuid_bit(self) -> (u32, CpuidReg, u32) {
        match self {
            CpuFeature::Sse3 => (1, CpuidReg::Ecx, 1 << 0),
            CpuFeature::Ssse3 => (1, CpuidReg::Ecx, 1 << 9),
            CpuFeature::Cx16 => (1, CpuidReg::Ecx, 1 << 13),
            CpuFeature::Sse4_1 => (1, CpuidReg::Ecx, 1 << 19),
            CpuFeature::Sse4_2 => (1, CpuidReg::Ecx, 1 << 20),
            CpuFeature::Movbe => (1, CpuidReg::Ecx, 1 << 22),
            CpuFeature::Popcnt => (1, CpuidReg::Ecx, 1 << 23),
            CpuFeature::LahfLm => (0x8000_0001, CpuidReg::Ecx, 1 << 0),
            CpuFeature::Lzcnt => (0x8000_0001, CpuidReg::Ecx, 1 << 5),
            CpuFeature::Xsave => (1, CpuidReg::Ecx, 1 << 26),
            CpuFeature::Avx => (1, CpuidReg::Ecx, 1 << 28),
            CpuFeature::Fma => (1, CpuidReg::Ecx, 1 << 12),
            CpuFeature::F16c => (1, CpuidReg::Ecx, 1 << 29),
            CpuFeature::Avx2 => (7, CpuidReg::Ebx, 1 << 5),
            CpuFeature::Rdrand => (1, CpuidReg::Ecx, 1 << 30),
            CpuFeature::Fsgsbase => (7, CpuidReg::Ebx, 1 << 0),
            CpuFeature::Bmi1 => (7, CpuidReg::Ebx, 1 << 3),
            CpuFeature::Bmi2 => (7, CpuidReg::Ebx, 1 << 8),
            CpuFeature::Rdseed => (7, CpuidReg::Ebx, 1 << 18),
            CpuFeature::Adx => (7, CpuidReg::Ebx, 1 << 19),
            CpuFeature::Pclmulqdq => (1, CpuidReg::Ecx, 1 << 1),
            CpuFeature::Aes => (1, CpuidReg::Ecx, 1 << 25),
            CpuFeature::Sha => (7, CpuidReg::Ebx, 1 << 29),
            CpuFeature::Pcid => (1, CpuidReg::Ecx, 1 << 17),
            CpuFeature::Smep => (7, CpuidReg::Ebx, 1 << 7),
            CpuFeature::Invpcid => (7, CpuidReg::Ebx, 1 << 10),
            CpuFeature::Smap => (7, CpuidReg::Ebx, 1 << 20),
            CpuFeature::Umip => (7, CpuidReg::Ecx, 1 << 2),
        }
    }
}

/// What `--cpu` (config `cpu`) asks for: a level and features removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CpuModel {
    /// The level.
    pub level: CpuLevel,
    /// Features hidden besides the level's.
    pub removed: Vec<CpuFeature>,
}

impl CpuModel {
    /// Every feature the model hides: the level's, the removed ones, and
    /// those that need a hidden one.
    pub fn hidden(&self) -> Vec<CpuFeature> {
        let mut hidden: Vec<CpuFeature> = self.level.hidden().chain(self.removed.clone()).collect();
        // Features needing a hidden one, until nothing changes (the
        // dependency chains are short).
        loop {
            let more: Vec<CpuFeature> = CpuFeature::ALL
                .into_iter()
                .filter(|f| !hidden.contains(f) && f.needs().iter().any(|n| hidden.contains(n)))
                .collect();
            if more.is_empty() {
                return hidden;
            }
            hidden.extend(more);
        }
    }

    /// The CPUID rules that hide what the model leaves out. Hiding AVX
    /// also takes its state component out of CPUID.(EAX=0DH,ECX=0):EAX,
    /// so a guest cannot enable it in XCR0.
    pub fn rules(&self) -> Vec<CpuidRule> {
        let mut rules = Vec::new();
        for f in self.hidden() {
            let (leaf, reg, bit) = f.cpuid_bit();
            let subleaf = (leaf == 7).then_some(0);
            rules.push(CpuidRule {
                leaf,
                subleaf,
                reg,
                clear: bit,
                set: 0,
            });
            if f == CpuFeature::Avx {
                rules.push(CpuidRule {
                    leaf: 0xd,
                    subleaf: Some(0),
                    reg: CpuidReg::Eax,
                    clear: 1 << 2,
                    set: 0,
                });
            }
        }
        rules
    }

    /// The model as `--cpu` writes it (`v2,-sse4_2`).
    pub fn describe(&self) -> String {
        let mut s = self.level.name().to_string();
        for f in &self.removed {
            s.push_str(",-");
            s.push_str(f.name());
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpuid::{CpuidEntry, CpuidPolicy, CpuidResult};

    #[test]
    fn v1_hides_the_v2_features_and_a_removed_one_goes_too() {
        let mut table = vec![
            CpuidEntry {
                leaf: 1,
                result: CpuidResult {
                    ecx: 0x00d8_2201,
                    ..Default::default()
                },
                ..Default::default()
            },
            CpuidEntry {
                leaf: 0x8000_0001,
                result: CpuidResult {
                    ecx: 0x21,
                    ..Default::default()
                },
                ..Default::default()
            },
        ];
        let v1 = CpuModel {
            level: CpuLevel::V1,
            removed: vec![],
        };
        let policy = CpuidPolicy { rules: v1.rules() };
        policy.apply(&mut table, 0, 1);
        assert_eq!(table[0].result.ecx & 0x00d8_2201, 0);
        assert_eq!(table[1].result.ecx, 0);
        let v2 = CpuModel {
            level: CpuLevel::V2,
            removed: vec![CpuFeature::Sse4_2],
        };
        assert_eq!(v2.describe(), "v2,-sse4_2");
        // MOVBE, LZCNT, XSAVE, AVX (and its XCR0 bit), FMA, F16C, AVX2,
        // BMI1, BMI2; RDRAND, FSGSBASE, RDSEED, ADX, PCLMULQDQ, AES, SHA
        // and the five system features (no level has them); and SSE4.2.
        assert_eq!(v2.rules().len(), 23);
    }

    #[test]
    fn removing_a_feature_removes_what_needs_it() {
        let model = CpuModel {
            level: CpuLevel::Max,
            removed: vec![CpuFeature::Xsave],
        };
        let hidden = model.hidden();
        for f in [
            CpuFeature::Avx,
            CpuFeature::Avx2,
            CpuFeature::Fma,
            CpuFeature::F16c,
        ] {
            assert!(hidden.contains(&f), "{f:?}");
        }
        let v3 = CpuModel {
            level: CpuLevel::V3,
            removed: vec![CpuFeature::Avx2],
        };
        let hidden = v3.hidden();
        assert_eq!(hidden.len(), 13, "{hidden:?}");
        for f in [
            CpuFeature::Pclmulqdq,
            CpuFeature::Aes,
            CpuFeature::Rdrand,
            CpuFeature::Fsgsbase,
            CpuFeature::Rdseed,
            CpuFeature::Adx,
            CpuFeature::Sha,
            CpuFeature::Pcid,
            CpuFeature::Smep,
            CpuFeature::Invpcid,
            CpuFeature::Smap,
            CpuFeature::Umip,
            CpuFeature::Avx2,
        ] {
            assert!(hidden.contains(&f), "{f:?}");
        }
        let v3 = CpuModel {
            level: CpuLevel::V3,
            removed: vec![],
        };
        assert!(!v3.hidden().contains(&CpuFeature::Bmi1));
        assert!(!v3.hidden().contains(&CpuFeature::Bmi2));
    }

    #[test]
    fn the_crypto_extensions_are_only_in_max_and_removable() {
        for f in [CpuFeature::Aes, CpuFeature::Pclmulqdq, CpuFeature::Sha] {
            assert_eq!(f.level(), CpuLevel::Max, "{f:?}");
        }
        assert_eq!(CpuFeature::from_name("sha_ni"), Some(CpuFeature::Sha));
        let model = CpuModel {
            level: CpuLevel::Max,
            removed: vec![CpuFeature::Aes],
        };
        assert_eq!(model.describe(), "max,-aes");
        let rules = model.rules();
        assert_eq!(rules.len(), 1);
        assert_eq!((rules[0].leaf, rules[0].clear), (1, 1 << 25));
        let sha = CpuModel {
            level: CpuLevel::Max,
            removed: vec![CpuFeature::Sha],
        }
        .rules();
        assert_eq!(
            (sha[0].leaf, sha[0].subleaf, sha[0].clear),
            (7, Some(0), 1 << 29)
        );
    }

    #[test]
    fn names_round_trip() {
        for f in CpuFeature::ALL {
            assert_eq!(CpuFeature::from_name(f.name()), Some(f));
        }
        assert_eq!(CpuFeature::from_name("sse4.2"), Some(CpuFeature::Sse4_2));
        assert_eq!(CpuFeature::from_name("pni"), Some(CpuFeature::Sse3));
        assert_eq!(CpuLevel::from_name("x86-64-v2"), Some(CpuLevel::V2));
        assert_eq!(CpuLevel::from_name("v4"), None);
    }
}
