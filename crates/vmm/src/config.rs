//! The VM configuration: a TOML file, validated by hand so that every
//! error names the key, the bad value and the fix on one line.
//!
//! ```toml
//! name = "hello"          # letters, digits, '.', '_', '-'
//! memory = "256M"         # bytes with K/M/G/T suffix, or an integer in MiB;
//!                         # at most the host's RAM (MemTotal) and 1T
//! cpus = 1
//! engine = "auto"         # "kvm", "emu" or "auto"
//! serial = "stdio"        # COM1 output: "stdio", "file:PATH" or "none"
//! default_devices = true  # COM1, i8042, port 0x61, debug-exit, debugcon, ACPI PM
//!
//! [boot]
//! kind = "flat"           # a flat binary...
//! image = "guest.bin"     # (relative paths are relative to this file)
//! mode = "long"           # "real", "protected" or "long"
//! load_address = 0x10000
//! # kind = "kit"          # ...or a built-in kit program
//! # program = "demo"
//!
//! [[device]]              # more devices, or a default one (same id) reconfigured
//! class = "serial"
//! id = "com2"
//! port = 0x2f8
//! irq = 3
//! output = "file:com2.log"
//! ```

use std::path::{Path, PathBuf};

use toml::{Table, Value};

use crate::error::ConfigError;

/// Most vCPUs a VM may have.
pub const MAX_CPUS: u32 = 64;

/// Which engine to run the guest on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EngineChoice {
    /// kvm when the host has hardware virtualization, else emu.
    Auto,
    /// Always kvm.
    Kvm,
    /// Always emu.
    Emu,
}

/// Where a console device's output goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConsoleTarget {
    /// The VMM's standard output.
    Stdio,
    /// A file, created (truncated) when the guest first writes.
    File(PathBuf),
    /// Nowhere.
    None,
}

/// The CPU mode a flat binary starts in (see [`crate::boot`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlatMode {
    /// 16-bit real mode.
    Real,
    /// 32-bit protected mode, flat segments, paging off.
    Protected,
    /// 64-bit long mode, identity-mapped first 4 GiB.
    Long,
}

/// What the VM boots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BootSource {
    /// A built-in program of the tiny-guest kit.
    Kit {
        /// The program's name (`alcazar_kit::names()`).
        program: String,
    },
    /// A flat binary loaded at `load_address` and entered in `mode`.
    Flat {
        /// The image file.
        image: PathBuf,
        /// The start mode.
        mode: FlatMode,
        /// Where it is loaded and entered.
        load_address: u64,
    },
    /// A Linux kernel (bzImage), booted directly.
    Linux {
        /// The bzImage.
        kernel: PathBuf,
        /// The initial RAM disk, if any.
        initrd: Option<PathBuf>,
        /// The kernel command line.
        cmdline: String,
    },
}

/// One `[[device]]` entry.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceSpec {
    /// Position in the file (for error messages: `device[N]`).
    pub index: usize,
    /// The device class (`serial`, `i8042`, ...).
    pub class: String,
    /// A unique name for this device.
    pub id: String,
    /// The class-specific keys.
    pub params: Table,
    /// The command-line flag this entry came from (`--disk`), if it did
    /// not come from the file: error messages then name the flag.
    pub flag: Option<String>,
}

impl DeviceSpec {
    /// The key path of `key` in this entry, for error messages.
    pub fn key(&self, key: &str) -> String {
        match &self.flag {
            Some(flag) => format!("{flag} ({key})"),
            None => format!("device[{}].{key}", self.index),
        }
    }

    /// An entry made by command-line flag `flag`.
    pub fn from_flag(flag: &str, class: &str, id: &str, params: Table) -> Self {
        DeviceSpec {
            index: 0,
            class: class.into(),
            id: id.into(),
            params,
            flag: Some(flag.into()),
        }
    }
}

/// A whole VM configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct VmConfig {
    /// The VM's name.
    pub name: String,
    /// Guest RAM in bytes.
    pub memory: u64,
    /// Number of vCPUs.
    pub cpus: u32,
    /// Engine choice.
    pub engine: EngineChoice,
    /// COM1's output.
    pub serial: ConsoleTarget,
    /// What to boot.
    pub boot: BootSource,
    /// Whether the standard PC devices are created.
    pub default_devices: bool,
    /// Extra or reconfigured devices.
    pub devices: Vec<DeviceSpec>,
}

impl Default for VmConfig {
    /// The built-in demo: the kit's `demo` program on 32 MiB and one vCPU.
    fn default() -> Self {
        VmConfig {
            name: "demo".into(),
            memory: 32 << 20,
            cpus: 1,
            engine: EngineChoice::Auto,
            serial: ConsoleTarget::Stdio,
            boot: BootSource::Kit {
                program: "demo".into(),
            },
            default_devices: true,
            devices: Vec::new(),
        }
    }
}

const TOP_KEYS: &[&str] = &[
    "name",
    "memory",
    "cpus",
    "engine",
    "serial",
    "default_devices",
    "boot",
    "device",
];

impl VmConfig {
    /// Reads and validates a config file. Relative paths inside it are
    /// taken relative to the file's directory.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new(
                "config",
                format!("\"{}\"", path.display()),
                format!("cannot read the file ({e})"),
                "give the path of an existing TOML file",
            )
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, base)
    }

    /// Parses and validates TOML text (relative paths are relative to the
    /// current directory).
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        Self::parse(text, Path::new("."))
    }

    fn parse(text: &str, base: &Path) -> Result<Self, ConfigError> {
        let table: Table = text
            .parse()
            .map_err(|e: toml::de::Error| syntax_error(text, &e))?;
        check_keys(&table, TOP_KEYS, "", "top-level keys")?;
        let d = VmConfig::default();
        let config = VmConfig {
            name: opt_str(&table, "name")?.map_or(Ok(d.name), |s| parse_name("name", &s))?,
            memory: match table.get("memory") {
                Some(v) => parse_memory_value("memory", v)?,
                None => d.memory,
            },
            cpus: match table.get("cpus") {
                Some(v) => parse_cpus_value("cpus", v)?,
                None => d.cpus,
            },
            engine: opt_str(&table, "engine")?
                .map_or(Ok(d.engine), |s| parse_engine("engine", &s))?,
            serial: opt_str(&table, "serial")?
                .map_or(Ok(d.serial), |s| parse_console("serial", &s, base))?,
            default_devices: opt_bool(&table, "default_devices")?.unwrap_or(true),
            boot: parse_boot(table.get("boot"), base)?,
            devices: parse_devices(table.get("device"))?,
        };
        Ok(config)
    }
}

fn syntax_error(text: &str, e: &toml::de::Error) -> ConfigError {
    let line = e
        .span()
        .map(|s| text[..s.start.min(text.len())].lines().count().max(1))
        .unwrap_or(1);
    ConfigError::new(
        "config",
        format!("line {line}"),
        format!("invalid TOML: {}", e.message().trim()),
        "fix the TOML syntax on that line",
    )
}

fn check_keys(table: &Table, known: &[&str], prefix: &str, what: &str) -> Result<(), ConfigError> {
    match table.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(ConfigError::new(
            format!("{prefix}{k}"),
            show(&table[k]),
            "unknown key",
            format!("the {what} are: {}", known.join(", ")),
        )),
        None => Ok(()),
    }
}

/// A value as the user would have written it.
pub fn show(v: &Value) -> String {
    match v {
        Value::Table(_) => "{...}".into(),
        Value::Array(_) => "[...]".into(),
        other => other.to_string(),
    }
}

fn opt_str(t: &Table, key: &str) -> Result<Option<String>, ConfigError> {
    match t.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(v) => Err(ConfigError::new(
            key,
            show(v),
            "must be a string",
            format!("quote it: {key} = \"...\""),
        )),
    }
}

fn opt_bool(t: &Table, key: &str) -> Result<Option<bool>, ConfigError> {
    match t.get(key) {
        None => Ok(None),
        Some(Value::Boolean(b)) => Ok(Some(*b)),
        Some(v) => Err(ConfigError::new(
            key,
            show(v),
            "must be true or false",
            format!("write {key} = true or {key} = false"),
        )),
    }
}

/// Parses a VM name.
pub fn parse_name(key: &str, s: &str) -> Result<String, ConfigError> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        && !s.starts_with('.');
    if ok {
        Ok(s.to_string())
    } else {
        Err(ConfigError::new(
            key,
            format!("\"{s}\""),
            "not a valid VM name",
            "use 1-64 letters, digits, '.', '_' or '-', not starting with '.'",
        ))
    }
}

fn memory_error(key: &str, shown: String, problem: &str) -> ConfigError {
    ConfigError::new(
        key,
        shown,
        problem.to_string(),
        "give a size between 1M and 1T, e.g. \"256M\" or \"2G\" (a bare number is MiB)",
    )
}

/// Parses a memory size: `"256M"`, `"2G"`, `"512MiB"`, `"1048576"` bytes
/// with suffix `B`... or a bare integer meaning MiB.
pub fn parse_memory(key: &str, s: &str) -> Result<u64, ConfigError> {
    let t = s.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, suffix) = t.split_at(digits_end);
    let shown = format!("\"{s}\"");
    let n: u64 = num
        .parse()
        .map_err(|_| memory_error(key, shown.clone(), "not a size"))?;
    let shift = match suffix.trim().to_ascii_uppercase().as_str() {
        "" | "M" | "MB" | "MIB" => 20,
        "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => return Err(memory_error(key, shown, "unknown size suffix")),
    };
    let bytes = n
        .checked_mul(1u64 << shift)
        .ok_or_else(|| memory_error(key, shown.clone(), "too large"))?;
    check_memory(key, shown, bytes)
}

fn check_memory(key: &str, shown: String, bytes: u64) -> Result<u64, ConfigError> {
    use alcazar_core::memory::{MAX_RAM, MIN_RAM};
    if bytes == 0 {
        return Err(memory_error(key, shown, "a guest needs memory"));
    }
    if !(MIN_RAM..=MAX_RAM).contains(&bytes) {
        return Err(memory_error(key, shown, "out of range"));
    }
    if !bytes.is_multiple_of(4096) {
        return Err(memory_error(key, shown, "not a multiple of 4 KiB"));
    }
    if let Some(host) = host_ram() {
        if bytes > host {
            return Err(ConfigError::new(
                key,
                shown,
                format!("more than the host's RAM ({} MiB)", host >> 20),
                format!(
                    "give at most {}M (a guest that used it all would get the VMM killed by the host)",
                    host >> 20
                ),
            ));
        }
    }
    Ok(bytes)
}

/// The host's physical RAM in bytes (`MemTotal` in `/proc/meminfo`), the
/// ceiling of a guest's memory; `None` where it cannot be read.
pub fn host_ram() -> Option<u64> {
    parse_mem_total(&std::fs::read_to_string("/proc/meminfo").ok()?)
}

/// `MemTotal` of a `/proc/meminfo` text, in bytes.
fn parse_mem_total(meminfo: &str) -> Option<u64> {
    let kib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse::<u64>()
        .ok()?;
    kib.checked_mul(1024)
}

fn parse_memory_value(key: &str, v: &Value) -> Result<u64, ConfigError> {
    match v {
        Value::String(s) => parse_memory(key, s),
        Value::Integer(n) if *n >= 0 => {
            let bytes = (*n as u64).saturating_mul(1 << 20);
            check_memory(key, n.to_string(), bytes)
        }
        other => Err(memory_error(key, show(other), "not a size")),
    }
}

/// Parses a vCPU count.
pub fn parse_cpus(key: &str, s: &str) -> Result<u32, ConfigError> {
    let n: i64 = s
        .trim()
        .parse()
        .map_err(|_| cpus_error(key, format!("\"{s}\"")))?;
    check_cpus(key, n)
}

fn cpus_error(key: &str, shown: String) -> ConfigError {
    ConfigError::new(
        key,
        shown,
        "not a valid vCPU count",
        format!("give a number from 1 to {MAX_CPUS}"),
    )
}

fn check_cpus(key: &str, n: i64) -> Result<u32, ConfigError> {
    if (1..=i64::from(MAX_CPUS)).contains(&n) {
        Ok(n as u32)
    } else {
        Err(cpus_error(key, n.to_string()))
    }
}

fn parse_cpus_value(key: &str, v: &Value) -> Result<u32, ConfigError> {
    match v {
        Value::Integer(n) => check_cpus(key, *n),
        other => Err(cpus_error(key, show(other))),
    }
}

/// Parses an engine name.
pub fn parse_engine(key: &str, s: &str) -> Result<EngineChoice, ConfigError> {
    match s {
        "auto" => Ok(EngineChoice::Auto),
        "kvm" => Ok(EngineChoice::Kvm),
        "emu" => Ok(EngineChoice::Emu),
        _ => Err(ConfigError::new(
            key,
            format!("\"{s}\""),
            "unknown engine",
            "use \"kvm\", \"emu\" or \"auto\"",
        )),
    }
}

/// Parses a console target: `stdio`, `none` or `file:PATH`. A file's
/// directory must exist (the file itself is created on first output).
pub fn parse_console(key: &str, s: &str, base: &Path) -> Result<ConsoleTarget, ConfigError> {
    let bad = |problem: &str| {
        ConfigError::new(
            key,
            format!("\"{s}\""),
            problem.to_string(),
            "use \"stdio\", \"none\" or \"file:PATH\"",
        )
    };
    match s {
        "stdio" => Ok(ConsoleTarget::Stdio),
        "none" => Ok(ConsoleTarget::None),
        _ => {
            let path = s
                .strip_prefix("file:")
                .ok_or_else(|| bad("unknown console target"))?;
            if path.is_empty() {
                return Err(bad("empty file path"));
            }
            let path = base.join(path);
            let dir = match path.parent() {
                Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
                _ => PathBuf::from("."),
            };
            if !dir.is_dir() {
                return Err(ConfigError::new(
                    key,
                    format!("\"{s}\""),
                    format!("directory {} does not exist", dir.display()),
                    "create the directory or choose another path",
                ));
            }
            Ok(ConsoleTarget::File(path))
        }
    }
}

fn parse_boot(v: Option<&Value>, base: &Path) -> Result<BootSource, ConfigError> {
    let Some(v) = v else {
        return Ok(VmConfig::default().boot);
    };
    let Value::Table(t) = v else {
        return Err(ConfigError::new(
            "boot",
            show(v),
            "must be a table",
            "write a [boot] section",
        ));
    };
    let kind = opt_str(t, "kind")?.unwrap_or_else(|| "flat".into());
    match kind.as_str() {
        "kit" => parse_kit_boot(t),
        "flat" => parse_flat_boot(t, base),
        "linux" => parse_linux_boot(t, base),
        other => Err(ConfigError::new(
            "boot.kind",
            format!("\"{other}\""),
            "unknown boot kind",
            "use \"linux\" (a bzImage), \"flat\" (a flat binary) or \"kit\" (a built-in kit program)",
        )),
    }
}

fn parse_kit_boot(t: &Table) -> Result<BootSource, ConfigError> {
    check_keys(t, &["kind", "program"], "boot.", "keys of a kit boot")?;
    let program = opt_str(t, "program")?.unwrap_or_else(|| "demo".into());
    let names = alcazar_kit::names();
    if !names.contains(&program.as_str()) {
        return Err(ConfigError::new(
            "boot.program",
            format!("\"{program}\""),
            "no such kit program",
            format!("choose one of: {}", names.join(", ")),
        ));
    }
    Ok(BootSource::Kit { program })
}

fn parse_linux_boot(t: &Table, base: &Path) -> Result<BootSource, ConfigError> {
    check_keys(
        t,
        &["kind", "kernel", "initrd", "cmdline"],
        "boot.",
        "keys of a linux boot",
    )?;
    let kernel = opt_str(t, "kernel")?.ok_or_else(|| {
        ConfigError::new(
            "boot.kernel",
            "(missing)",
            "a linux boot needs a kernel",
            "add kernel = \"PATH\" (a bzImage) to [boot]",
        )
    })?;
    let initrd = opt_str(t, "initrd")?;
    let cmdline =
        opt_str(t, "cmdline")?.unwrap_or_else(|| crate::boot::linux::DEFAULT_CMDLINE.to_string());
    Ok(BootSource::Linux {
        kernel: existing_file("boot.kernel", &kernel, base)?,
        initrd: initrd
            .map(|i| existing_file("boot.initrd", &i, base))
            .transpose()?,
        cmdline,
    })
}

/// `path` (relative to `base`) if it names an existing file.
pub fn existing_file(key: &str, path: &str, base: &Path) -> Result<PathBuf, ConfigError> {
    let full = base.join(path);
    if full.is_file() {
        Ok(full)
    } else {
        Err(ConfigError::new(
            key,
            format!("\"{path}\""),
            format!("file {} not found", full.display()),
            "give the path of an existing file",
        ))
    }
}

fn parse_flat_boot(t: &Table, base: &Path) -> Result<BootSource, ConfigError> {
    check_keys(
        t,
        &["kind", "image", "mode", "load_address"],
        "boot.",
        "keys of a flat boot",
    )?;
    let image = opt_str(t, "image")?.ok_or_else(|| {
        ConfigError::new(
            "boot.image",
            "(missing)",
            "a flat boot needs an image",
            "add image = \"PATH\" to [boot]",
        )
    })?;
    let path = base.join(&image);
    if !path.is_file() {
        return Err(ConfigError::new(
            "boot.image",
            format!("\"{image}\""),
            format!("file {} not found", path.display()),
            "give the path of an existing flat binary",
        ));
    }
    let mode = match opt_str(t, "mode")?.as_deref() {
        None | Some("real") => FlatMode::Real,
        Some("protected") => FlatMode::Protected,
        Some("long") => FlatMode::Long,
        Some(other) => {
            return Err(ConfigError::new(
                "boot.mode",
                format!("\"{other}\""),
                "unknown CPU mode",
                "use \"real\", \"protected\" or \"long\"",
            ))
        }
    };
    let load_address = match t.get("load_address") {
        None => crate::boot::DEFAULT_LOAD_ADDRESS,
        Some(Value::Integer(n)) if *n >= 0 => *n as u64,
        Some(v) => {
            return Err(ConfigError::new(
                "boot.load_address",
                show(v),
                "must be a non-negative integer",
                "write e.g. load_address = 0x10000",
            ))
        }
    };
    Ok(BootSource::Flat {
        image: path,
        mode,
        load_address,
    })
}

fn parse_devices(v: Option<&Value>) -> Result<Vec<DeviceSpec>, ConfigError> {
    let Some(v) = v else { return Ok(Vec::new()) };
    let Value::Array(items) = v else {
        return Err(ConfigError::new(
            "device",
            show(v),
            "must be a list of tables",
            "write each device as a [[device]] section",
        ));
    };
    let mut specs: Vec<DeviceSpec> = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let Value::Table(t) = item else {
            return Err(ConfigError::new(
                format!("device[{index}]"),
                show(item),
                "must be a table",
                "write each device as a [[device]] section",
            ));
        };
        let class = opt_str(t, "class")
            .map_err(|e| ConfigError {
                key: format!("device[{index}].class"),
                ..e
            })?
            .ok_or_else(|| {
                ConfigError::new(
                    format!("device[{index}].class"),
                    "(missing)",
                    "every device needs a class",
                    "add class = \"serial\" (or another class)",
                )
            })?;
        let id = opt_str(t, "id")
            .map_err(|e| ConfigError {
                key: format!("device[{index}].id"),
                ..e
            })?
            .unwrap_or_else(|| format!("{class}{index}"));
        if specs.iter().any(|s| s.id == id) {
            return Err(ConfigError::new(
                format!("device[{index}].id"),
                format!("\"{id}\""),
                "a device with this id already exists",
                "give every device its own id",
            ));
        }
        let mut params = t.clone();
        params.remove("class");
        params.remove("id");
        specs.push(DeviceSpec {
            flag: None,
            index,
            class,
            id,
            params,
        });
    }
    Ok(specs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_and_without_suffixes() {
        assert_eq!(parse_memory("m", "256M").unwrap(), 256 << 20);
        assert_eq!(parse_memory("m", "2G").unwrap(), 2 << 30);
        assert_eq!(parse_memory("m", "64").unwrap(), 64 << 20);
        assert_eq!(parse_memory("m", "1024KiB").unwrap(), 1 << 20);
        assert!(parse_memory("m", "12Q").is_err());
        assert!(parse_memory("m", "").is_err());
        assert!(parse_memory("m", "99999999999T").is_err());
    }

    #[test]
    fn memory_above_the_hosts_ram_is_refused() {
        let meminfo = "MemTotal:       24583716 kB\nMemFree:        1 kB\n";
        assert_eq!(parse_mem_total(meminfo), Some(24_583_716 * 1024));
        assert_eq!(parse_mem_total("MemFree: 1 kB\n"), None);
        let Some(host) = host_ram() else { return };
        let over = format!("{}M", (host >> 20) + 1);
        let e = parse_memory("--memory", &over).unwrap_err();
        assert!(e.problem.contains("more than the host's RAM"), "{e}");
        assert!(!e.to_string().contains('\n'), "one line: {e}");
        assert!(parse_memory("--memory", &format!("{}M", host >> 21)).is_ok());
    }

    #[test]
    fn zero_memory_names_the_key_and_the_fix() {
        let e = VmConfig::from_toml_str("memory = 0").unwrap_err();
        assert_eq!(e.key, "memory");
        assert_eq!(e.value, "0");
        assert!(e.to_string().contains("256M"), "{e}");
        let e = VmConfig::from_toml_str("memory = \"0M\"").unwrap_err();
        assert_eq!(e.problem, "a guest needs memory");
    }

    #[test]
    fn unknown_keys_are_rejected_with_the_known_ones() {
        let e = VmConfig::from_toml_str("memroy = \"1G\"").unwrap_err();
        assert_eq!(e.key, "memroy");
        assert!(e.fix.contains("memory"));
    }

    #[test]
    fn syntax_errors_give_the_line() {
        let e = VmConfig::from_toml_str("name = \"a\"\ncpus = = 2\n").unwrap_err();
        assert_eq!(e.value, "line 2");
        assert!(!e.to_string().contains('\n'), "one line: {e}");
    }

    #[test]
    fn missing_boot_image_is_named() {
        let e = VmConfig::from_toml_str("[boot]\nimage = \"/nonexistent/x.bin\"").unwrap_err();
        assert_eq!(e.key, "boot.image");
        assert!(e.problem.contains("not found"));
    }

    #[test]
    fn devices_keep_their_class_specific_keys() {
        let c = VmConfig::from_toml_str(
            "[[device]]\nclass = \"serial\"\nid = \"com2\"\nport = 0x2f8\n[[device]]\nclass = \"i8042\"\n",
        )
        .unwrap();
        assert_eq!(c.devices.len(), 2);
        assert_eq!(
            c.devices[0].params.get("port").and_then(|v| v.as_integer()),
            Some(0x2f8)
        );
        assert_eq!(c.devices[1].id, "i80421");
    }

    #[test]
    fn duplicate_device_ids_are_rejected() {
        let e = VmConfig::from_toml_str("[[device]]\nclass = \"serial\"\nid = \"a\"\n[[device]]\nclass = \"serial\"\nid = \"a\"\n").unwrap_err();
        assert_eq!(e.key, "device[1].id");
    }

    #[test]
    fn cpus_and_engine_are_checked() {
        assert_eq!(VmConfig::from_toml_str("cpus = 0").unwrap_err().key, "cpus");
        assert_eq!(
            VmConfig::from_toml_str("cpus = 65").unwrap_err().key,
            "cpus"
        );
        assert_eq!(
            VmConfig::from_toml_str("engine = \"xen\"").unwrap_err().key,
            "engine"
        );
        let c = VmConfig::from_toml_str("cpus = 2\nengine = \"kvm\"").unwrap();
        assert_eq!((c.cpus, c.engine), (2, EngineChoice::Kvm));
    }

    #[test]
    fn kit_programs_are_checked_against_the_kit() {
        let e = VmConfig::from_toml_str("[boot]\nkind = \"kit\"\nprogram = \"nope\"").unwrap_err();
        assert!(e.fix.contains("demo"), "{e}");
    }

    #[test]
    fn errors_with_newlines_in_the_value_stay_on_one_line() {
        // The `config` fuzz target's one-line check: a quoted TOML string
        // (or a command-line argument) with a newline made a two-line
        // error.
        let e = VmConfig::from_toml_str("name = \"a\\nb\"").unwrap_err();
        assert!(!e.to_string().contains('\n'), "{e}");
        assert!(e.to_string().contains("a\\nb"), "{e}");
        let e = parse_memory("--memory", "12\r\nX").unwrap_err();
        assert!(!e.to_string().contains(['\n', '\r']), "{e}");
        let e = VmConfig::from_toml_str("\"x\\ny\" = 1").unwrap_err();
        assert!(!e.to_string().contains('\n'), "{e}");
    }
}
