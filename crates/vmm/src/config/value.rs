//! Parsers for the values a config (or a command-line flag) gives: sizes,
//! counts, names, engines, console targets, paths. Each returns a
//! [`ConfigError`] that names the key, the value and the fix on one line.

use std::path::{Path, PathBuf};

use toml::{Table, Value};

use super::{ConsoleTarget, EngineChoice, MAX_CPUS};
use crate::error::ConfigError;

/// A TOML syntax error as a one-line [`ConfigError`] naming the line.
pub(crate) fn syntax_error(text: &str, e: &toml::de::Error) -> ConfigError {
    let start = e.span().map_or(0, |s| s.start.min(text.len()));
    // Lines are counted by the newlines before the error: an error at the
    // start of a line is on that line.
    let before = text.get(..start).unwrap_or("");
    let line = before.matches('\n').count() + 1;
    let line_text = text.lines().nth(line - 1).unwrap_or("");
    // The key the line assigns, if it is a `key = value` line.
    let key = line_text
        .split_once('=')
        .map(|(k, _)| k.trim())
        .filter(|k| {
            !k.is_empty()
                && k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-.\"' ".contains(c))
        })
        .map(|k| k.trim_matches(['"', '\'']).to_string());
    ConfigError::new(
        key.unwrap_or_else(|| "config".into()),
        format!("line {line}"),
        format!("invalid TOML: {}", e.message().trim()),
        "fix the TOML syntax on that line",
    )
}

/// Refuses the first key of `table` not in `known`.
pub(crate) fn check_keys(
    table: &Table,
    known: &[&str],
    prefix: &str,
    what: &str,
) -> Result<(), ConfigError> {
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

/// An optional string value.
pub(crate) fn opt_str(t: &Table, key: &str) -> Result<Option<String>, ConfigError> {
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

/// An optional boolean value.
pub(crate) fn opt_bool(t: &Table, key: &str) -> Result<Option<bool>, ConfigError> {
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
pub(crate) fn parse_mem_total(meminfo: &str) -> Option<u64> {
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

/// A memory size given as a string or an integer (MiB).
pub(crate) fn parse_memory_value(key: &str, v: &Value) -> Result<u64, ConfigError> {
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

/// A vCPU count given as an integer.
pub(crate) fn parse_cpus_value(key: &str, v: &Value) -> Result<u32, ConfigError> {
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

/// Parses a console target: `stdio`, `none` or `file:PATH`. The file
/// must be one the VMM can write: a regular file (created at the first
/// byte if it does not exist, in an existing directory it may write), or
/// `/dev/null` or a terminal. Directories, `/proc` files and devices such
/// as `/dev/full` are refused here, before anything starts.
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
            check_output_file(key, s, &path)?;
            Ok(ConsoleTarget::File(path))
        }
    }
}

/// Whether `path` is on procfs, sysfs or another kernel interface file
/// system, whose "files" take writes as commands, or refuse them.
fn on_pseudo_file_system(path: &Path) -> bool {
    const PROC: i64 = 0x9fa0;
    const SYSFS: i64 = 0x6265_6572;
    const DEBUGFS: i64 = 0x6462_6720;
    const CGROUP2: i64 = 0x6367_7270;
    const SECURITYFS: i64 = 0x7363_6673;
    let Ok(c) = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str()))
    else {
        return false;
    };
    // SAFETY: an all-zero statfs is valid storage for statfs(2) to fill.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: statfs reads the NUL-terminated path we own and writes `fs`.
    if unsafe { libc::statfs(c.as_ptr(), &mut fs) } != 0 {
        return false;
    }
    #[allow(clippy::unnecessary_cast)] // f_type's width differs by target
    let kind = fs.f_type as i64;
    matches!(kind, PROC | SYSFS | DEBUGFS | CGROUP2 | SECURITYFS)
}

/// Whether the VMM can write console output to `path` (see
/// [`parse_console`]).
fn check_output_file(key: &str, shown: &str, path: &Path) -> Result<(), ConfigError> {
    use std::os::unix::fs::FileTypeExt;
    let refuse = |problem: String, fix: &str| {
        Err(ConfigError::new(
            key,
            format!("\"{shown}\""),
            problem,
            fix.to_string(),
        ))
    };
    match std::fs::metadata(path) {
        Ok(meta) => {
            let t = meta.file_type();
            if t.is_dir() {
                return refuse(
                    format!("{} is a directory", path.display()),
                    "give a file path, e.g. file:DIR/console.log",
                );
            }
            let terminal_or_null = t.is_char_device() && {
                let f = std::fs::OpenOptions::new().write(true).open(path);
                // SAFETY: isatty only inspects the open descriptor.
                f.as_ref()
                    .is_ok_and(|f| unsafe { libc::isatty(std::os::fd::AsRawFd::as_raw_fd(f)) == 1 })
                    || path == Path::new("/dev/null")
            };
            if !t.is_file() && !terminal_or_null {
                return refuse(
                    format!("{} is not a regular file", path.display()),
                    "give a regular file (or /dev/null, or a terminal)",
                );
            }
            if t.is_file() && on_pseudo_file_system(path) {
                return refuse(
                    format!(
                        "{} is a kernel interface file (/proc, /sys), not a file for output",
                        path.display()
                    ),
                    "give a regular file on a disk",
                );
            }
            if t.is_file() {
                if let Err(e) = std::fs::OpenOptions::new().append(true).open(path) {
                    return refuse(
                        format!("cannot write {}: {e}", path.display()),
                        "give a file you may write",
                    );
                }
            }
            Ok(())
        }
        Err(_) => {
            let dir = match path.parent() {
                Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
                _ => PathBuf::from("."),
            };
            if !dir.is_dir() {
                return refuse(
                    format!("directory {} does not exist", dir.display()),
                    "create the directory or choose another path",
                );
            }
            let c = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(dir.as_os_str()));
            // SAFETY: access(2) reads the NUL-terminated path we own.
            let writable = c.is_ok_and(|c| unsafe { libc::access(c.as_ptr(), libc::W_OK) } == 0);
            if !writable {
                return refuse(
                    format!("cannot create a file in {}", dir.display()),
                    "choose a directory you may write",
                );
            }
            Ok(())
        }
    }
}

/// `path` (relative to `base`) if it names an existing file.
pub fn existing_file(key: &str, path: &str, base: &Path) -> Result<PathBuf, ConfigError> {
    let full = base.join(path);
    let problem = match std::fs::metadata(&full) {
        Ok(m) if m.is_file() => return Ok(full),
        Ok(m) if m.is_dir() => format!("{} is a directory", full.display()),
        Ok(_) => format!("{} is not a regular file", full.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            format!("file {} not found", full.display())
        }
        Err(e) => format!("cannot read {}: {e}", full.display()),
    };
    Err(ConfigError::new(
        key,
        format!("\"{path}\""),
        problem,
        "give the path of an existing file",
    ))
}

/// Reads the text file at `path`, refusing one longer than `max` bytes
/// (checked on the open file, so `/dev/zero` or a growing file cannot be
/// read without end) or one that is not a regular file. The error is the
/// problem, for a [`ConfigError`].
pub(crate) fn read_bounded(path: &Path, max: u64) -> Result<String, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read the file ({e})"))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot read the file ({e})"))?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    let mut text = String::new();
    file.take(max + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read the file ({e})"))?;
    if text.len() as u64 > max {
        return Err(format!("larger than {} KiB: not a VM config", max >> 10));
    }
    Ok(text)
}

/// The smallest and largest translated-code cache a vCPU may have.
const CODE_CACHE_RANGE: std::ops::RangeInclusive<u64> = (1 << 20)..=(1 << 30);

/// Parses the size of the emu engine's translated-code cache per vCPU
/// (`"32M"`, a bare number is MiB), 1 MiB to 1 GiB.
pub fn parse_code_cache(key: &str, s: &str) -> Result<usize, ConfigError> {
    let t = s.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, suffix) = t.split_at(digits_end);
    let bad = |problem: &str| {
        ConfigError::new(
            key,
            format!("\"{s}\""),
            problem.to_string(),
            "give a size from 1M to 1G, e.g. \"32M\"",
        )
    };
    let n: u64 = num.parse().map_err(|_| bad("not a size"))?;
    let shift = match suffix.trim().to_ascii_uppercase().as_str() {
        "" | "M" | "MB" | "MIB" => 20,
        "K" | "KB" | "KIB" => 10,
        "G" | "GB" | "GIB" => 30,
        _ => return Err(bad("unknown size suffix")),
    };
    let bytes = n.checked_mul(1 << shift).ok_or_else(|| bad("too large"))?;
    if !CODE_CACHE_RANGE.contains(&bytes) {
        return Err(bad("out of range"));
    }
    Ok(bytes as usize)
}

/// A code-cache size given as a string or an integer (MiB).
pub(crate) fn parse_code_cache_value(key: &str, v: &Value) -> Result<usize, ConfigError> {
    match v {
        Value::String(s) => parse_code_cache(key, s),
        Value::Integer(n) => parse_code_cache(key, &n.to_string()),
        other => Err(ConfigError::new(
            key,
            show(other),
            "not a size",
            "give a size from 1M to 1G, e.g. \"32M\"",
        )),
    }
}
