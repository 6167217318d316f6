//! `--cpu`: the guest CPU model. The default guest's `/proc/cpuinfo`
//! (what Linux read from CPUID) shows exactly the features of the level
//! asked for, minus the ones removed; the emu engine's default ("max")
//! is x86-64-v2 plus MOVBE and LZCNT.

mod common;

/// The x86-64-v2 features and the two beyond it, as Linux names them.
const WATCHED: [&str; 9] = [
    "pni", "ssse3", "cx16", "sse4_1", "sse4_2", "movbe", "popcnt", "lahf_lm", "abm",
];

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
        .filter(|f| WATCHED.contains(f))
        .map(String::from)
        .collect()
}

#[test]
fn each_level_shows_its_features_and_removed_ones_are_gone() {
    assert_eq!(flags_with(None), WATCHED, "max: v2 + movbe + lzcnt (abm)");
    assert!(flags_with(Some("v1")).is_empty(), "v1 is the baseline");
    assert_eq!(
        flags_with(Some("x86-64-v2,-sse4_2")),
        ["pni", "ssse3", "cx16", "sse4_1", "popcnt", "lahf_lm"]
    );
}
