//! `--cpu`: the guest CPU model. The default guest's `/proc/cpuinfo`
//! (what Linux read from CPUID, and kept after checking the CPU can use
//! it: AVX needs XSAVE and XCR0) shows exactly the features of the level
//! asked for, minus the ones removed and those that need them. The system
//! features (PCID, SMEP, INVPCID, SMAP, UMIP) are only in `max`.

mod common;

/// Watched flags as Linux names them, with the lowest x86-64 level that
/// includes each (4: only `max`).
const WATCHED: [(&str, u8); 28] = [
    ("pni", 2),
    ("pclmulqdq", 4),
    ("ssse3", 2),
    ("fma", 3),
    ("cx16", 2),
    ("pcid", 4),
    ("sse4_1", 2),
    ("sse4_2", 2),
    ("movbe", 3),
    ("popcnt", 2),
    ("aes", 4),
    ("xsave", 3),
    ("avx", 3),
    ("f16c", 3),
    ("rdrand", 4),
    ("lahf_lm", 2),
    ("abm", 3),
    ("fsgsbase", 4),
    ("bmi1", 3),
    ("avx2", 3),
    ("smep", 4),
    ("bmi2", 3),
    ("invpcid", 4),
    ("rdseed", 4),
    ("adx", 4),
    ("smap", 4),
    ("sha_ni", 4),
    ("umip", 4),
];

/// The watched flags of `level`, in `/proc/cpuinfo` order, without `out`.
fn expected(level: u8, out: &[&str]) -> Vec<String> {
    WATCHED
        .iter()
        .filter(|(f, l)| *l <= level && !out.contains(f))
        .map(|(f, _)| f.to_string())
        .collect()
}

/// The watched flags the guest sees with `--cpu model` (`None`: no flag).
fn flags_with(model: Option<&str>) -> Vec<String> {
    let mut args = vec!["run", "--engine", "emu"];
    if let Some(m) = model {
        args.extend(["--cpu", m]);
    }
    args.extend(["--exec", "echo FLAGS: $(grep -m1 '^flags' /proc/cpuinfo)"]);
    let lines = common::Guest::run_ok(&args);
    let line = lines
        .iter()
        .find_map(|l| l.trim().strip_prefix("FLAGS:"))
        .unwrap_or_else(|| panic!("no flags line in {lines:?}"));
    line.split_whitespace()
        .filter(|f| WATCHED.iter().any(|(w, _)| w == f))
        .map(String::from)
        .collect()
}

#[test]
fn each_level_shows_its_features_and_removed_ones_are_gone() {
    assert_eq!(flags_with(None), expected(4, &[]), "max");
    assert!(flags_with(Some("v1")).is_empty(), "v1 is the baseline");
    assert_eq!(
        flags_with(Some("x86-64-v2,-sse4_2")),
        expected(2, &["sse4_2"]),
        "v2 hides AVX and the rest of v3"
    );
    assert_eq!(flags_with(Some("v3,-avx2")), expected(3, &["avx2"]));
    assert_eq!(
        flags_with(Some("max,-xsave")),
        expected(4, &["xsave", "avx", "avx2", "fma", "f16c"]),
        "AVX and what builds on it need XSAVE"
    );
    assert_eq!(
        flags_with(Some("max,-smap")),
        expected(4, &["smap"]),
        "a system feature goes alone"
    );
}
