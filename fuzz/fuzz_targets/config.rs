//! Fuzzes the configuration a user writes: arbitrary text through
//! `VmConfig::from_toml_str` (TOML syntax, every key, `[boot]` and
//! `[[device]]` tables), and through the command-line parsers of
//! `crates/vmm/src/config/value.rs` (`parse_name`, `parse_memory`,
//! `parse_cpus`, `parse_engine`, `parse_console`, `existing_file`).
//!
//! Asserts, whatever the text: no panic; every error displays as one
//! line (no CR or LF, whatever the user's value held), as the CLI prints
//! it; accepted values are in their documented ranges (memory within
//! `MIN_RAM..=MAX_RAM`, 1 to `MAX_CPUS` vCPUs).
//!
//! Input: a selector byte, then the text (lossily UTF-8).

#![no_main]

use std::path::Path;

use alcazar_core::memory::{MAX_RAM, MIN_RAM};
use alcazar_vmm::config::{
    existing_file, parse_console, parse_cpus, parse_engine, parse_memory, parse_name, MAX_CPUS,
};
use alcazar_vmm::{ConfigError, VmConfig};
use libfuzzer_sys::fuzz_target;

fn one_line(e: &ConfigError) {
    let text = e.to_string();
    assert!(
        !text.contains(['\n', '\r']),
        "a config error spans lines: {text:?}"
    );
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let base = Path::new("/nonexistent-alcazar-fuzz");
    match which % 8 {
        0 | 1 | 2 => match VmConfig::from_toml_str(&text) {
            Ok(c) => {
                assert!(
                    (MIN_RAM..=MAX_RAM).contains(&c.memory),
                    "memory {}",
                    c.memory
                );
                assert!((1..=MAX_CPUS).contains(&c.cpus), "{} vCPUs", c.cpus);
            }
            Err(e) => one_line(&e),
        },
        3 => match parse_memory("--memory", &text) {
            Ok(m) => assert!((MIN_RAM..=MAX_RAM).contains(&m), "memory {m}"),
            Err(e) => one_line(&e),
        },
        4 => match parse_cpus("--cpus", &text) {
            Ok(n) => assert!((1..=MAX_CPUS).contains(&n), "{n} vCPUs"),
            Err(e) => one_line(&e),
        },
        5 => {
            if let Err(e) = parse_engine("--engine", &text) {
                one_line(&e);
            }
        }
        6 => {
            if let Err(e) = parse_console("--serial", &text, base) {
                one_line(&e);
            }
        }
        _ => {
            if let Err(e) = parse_name("--name", &text) {
                one_line(&e);
            }
            if let Err(e) = existing_file("--kernel", &text, base) {
                one_line(&e);
            }
        }
    }
});
