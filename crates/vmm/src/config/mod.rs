//! The VM configuration: a typed [`VmConfig`], read from a TOML file (or
//! built by a program), validated completely when it is read — before
//! anything is downloaded, opened or created — so that every error names
//! the key, the bad value and the fix on one line.
//!
//! ```toml
//! name = "hello"          # letters, digits, '.', '_', '-'
//! memory = "256M"         # bytes with K/M/G/T suffix, or an integer in MiB;
//!                         # at most the host's RAM (MemTotal) and 1T
//! cpus = 1
//! engine = "auto"         # "kvm", "emu" or "auto"
//! serial = "stdio"        # the console UART's output: "stdio", "file:PATH" or "none"
//! default_devices = true  # COM1, i8042, port 0x61, debug-exit, debugcon, ACPI PM
//! on_reboot = "restart"   # when the guest reboots: "restart" or "exit"
//! emu_tier = "jit"        # emu engine: "jit" (translate hot code) or "interp"
//! emu_code_cache = "32M"  # emu engine: each vCPU's translated-code cache
//! display = "text"        # a BIOS boot's VGA text screen in the terminal, or "none"
//! cpu = "v2,-sse4_2"      # the guest CPU: "max" (all the engine offers), "v1", "v2"
//!                         # (x86-64 levels), minus features: ",-sse4_2,-popcnt"
//!
//! [boot]
//! kind = "flat"           # a flat binary...
//! image = "guest.bin"     # (relative paths are relative to this file)
//! mode = "long"           # "real", "protected" or "long"
//! load_address = 0x10000
//! # kind = "linux"        # ...or a Linux kernel: kernel, initrd, cmdline
//! # kind = "firmware"     # ...or a PC BIOS: bios, vga_bios, order = ["cd0"], menu
//!
//! [[device]]              # more devices, or a default one (same id) reconfigured
//! class = "serial"
//! id = "com2"
//! port = 0x2f8
//! irq = 3
//! output = "file:com2.log"
//! ```
//!
//! Devices are typed per class ([`device::DeviceConfig`]); a program that
//! embeds the library may add boot kinds of its own ([`BootKinds`]: the
//! `alcazar` command adds `kind = "kit"`, its built-in test guests).

pub mod device;
pub mod net;
pub mod value;

use std::path::{Path, PathBuf};

use toml::{Table, Value};

pub use device::{DeviceConfig, DeviceSpec, Origin};
use value::{check_keys, opt_bool, opt_str, parse_cpus_value, parse_memory_value, syntax_error};
pub use value::{
    existing_file, host_ram, parse_code_cache, parse_console, parse_cpus, parse_engine,
    parse_memory, parse_name, show,
};

use crate::error::ConfigError;

/// Most vCPUs a VM may have.
pub const MAX_CPUS: u32 = 64;

/// Most bytes a config file may have: a VM description is a page or two
/// (a path like `/dev/zero` must not be read without end).
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

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

/// What happens when the guest resets the machine (`reboot` in Linux,
/// the 8042's reset line, port 0xcf9): the VM stops with
/// `StopReason::Reset`, and its runner either builds it again or ends.
/// (The library stops the VM either way; the `alcazar` command acts on
/// this.)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RebootAction {
    /// Build the VM again from its config and boot it: what a PC does.
    Restart,
    /// End, reporting the reset.
    Exit,
}

/// Where a console device's output goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConsoleTarget {
    /// The host program's terminal ([`crate::console::HostTerminal`]).
    Stdio,
    /// A file, created (truncated) when the guest first writes.
    File(PathBuf),
    /// Nowhere.
    None,
}

pub use alcazar_core::regs::FlatMode;

/// Where a flat binary's bytes come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FlatImage {
    /// A file, read when the VM is created.
    File(PathBuf),
    /// Bytes the embedder already has (an assembled test guest).
    Bytes(Vec<u8>),
}

/// What the VM boots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BootSource {
    /// A flat binary loaded at `load_address` and entered in `mode`.
    Flat {
        /// The image.
        image: FlatImage,
        /// The start mode.
        mode: FlatMode,
        /// Where it is loaded and entered.
        load_address: u64,
        /// Application processors do not start at the entry: they wait
        /// for INIT and a STARTUP IPI from the BSP (the MP initialization
        /// protocol of a real PC). Off: every vCPU starts at the entry.
        aps_wait_for_sipi: bool,
    },
    /// A PC BIOS (SeaBIOS) started at the reset vector, which boots the
    /// machine's disks and CD-ROMs as a PC does.
    Firmware {
        /// The BIOS image (SeaBIOS's `bios-256k.bin`): 64 KiB to 16 MiB, a
        /// multiple of 64 KiB, mapped as ROM at the top of 4 GiB.
        bios: PathBuf,
        /// A VGA BIOS the BIOS runs as an option ROM (`vgabios-isavga.bin`),
        /// if the machine has a VGA adapter.
        vga_bios: Option<PathBuf>,
        /// Device ids to boot from, in order (`cd0`, `disk0`, ...); empty:
        /// the BIOS's own order.
        order: Vec<String>,
        /// Whether the BIOS offers its boot menu (press Esc).
        menu: bool,
    },
    /// A Linux kernel (bzImage), booted directly.
    Linux {
        /// The kernel: a bzImage or an ELF `vmlinux`.
        kernel: PathBuf,
        /// The initial RAM disk, if any.
        initrd: Option<PathBuf>,
        /// The kernel command line.
        cmdline: String,
    },
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
    /// The console UART's output (COM1 unless a `serial` device says
    /// `console = true`).
    pub serial: ConsoleTarget,
    /// What to boot.
    pub boot: BootSource,
    /// Whether the standard PC devices are created.
    pub default_devices: bool,
    /// Extra or reconfigured devices.
    pub devices: Vec<DeviceSpec>,
    /// What the runner does when the guest resets the machine; `None`:
    /// the runner's default (`alcazar`: exit with `--exec`, else restart).
    pub on_reboot: Option<RebootAction>,
    /// The emu engine's settings (ignored by kvm).
    pub emu: EmuSettings,
    /// The display adapter (a BIOS boot only).
    pub display: Display,
    /// The guest CPU model: what CPUID offers (both engines).
    pub cpu: alcazar_core::cpu_model::CpuModel,
}

/// What the machine has for a screen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Display {
    /// None: a BIOS draws its screen on the console UART.
    #[default]
    None,
    /// A VGA adapter whose text screen is drawn in the terminal (ANSI
    /// colours and cursor), with the terminal's keys as a PC keyboard's.
    Text,
}

/// Parses `text` or `none`.
pub fn parse_display(key: &str, s: &str) -> Result<Display, ConfigError> {
    match s {
        "text" => Ok(Display::Text),
        "none" => Ok(Display::None),
        _ => Err(ConfigError::new(
            key,
            format!("\"{s}\""),
            "unknown display",
            "use text (a VGA text screen in the terminal) or none",
        )),
    }
}

/// Parses a CPU model: a level (`max`, `v1`, `v2`, `v3`, also written
/// `x86-64-v2`) and features to remove (`v2,-sse4_2,-popcnt`).
pub fn parse_cpu(key: &str, s: &str) -> Result<alcazar_core::cpu_model::CpuModel, ConfigError> {
    use alcazar_core::cpu_model::{CpuFeature, CpuLevel, CpuModel};
    let mut parts = s.split(',').map(str::trim);
    let level_name = parts.next().unwrap_or("");
    let Some(level) = CpuLevel::from_name(level_name) else {
        return Err(ConfigError::new(
            key,
            format!("\"{s}\""),
            format!("unknown CPU level \"{level_name}\""),
            "use max, v1, v2 or v3, then features to remove: v2,-sse4_2",
        ));
    };
    let mut removed = Vec::new();
    for part in parts {
        let feature = part
            .strip_prefix('-')
            .and_then(CpuFeature::from_name)
            .ok_or_else(|| {
                let names: Vec<&str> = CpuFeature::ALL.iter().map(|f| f.name()).collect();
                ConfigError::new(
                    key,
                    format!("\"{s}\""),
                    format!("\"{part}\" is not a feature to remove"),
                    format!("write -NAME with NAME one of {}", names.join(", ")),
                )
            })?;
        if !removed.contains(&feature) {
            removed.push(feature);
        }
    }
    Ok(CpuModel { level, removed })
}

/// How the emu engine runs guest code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EmuSettings {
    /// Interpreter only, or hot code translated (the default where the
    /// host can run translated code: x86-64).
    pub tier: alcazar_emu::EmuTier,
    /// Bytes of each vCPU's translated-code cache (flushed when full).
    pub code_cache: usize,
}

impl Default for EmuSettings {
    fn default() -> Self {
        EmuSettings {
            tier: alcazar_emu::EmuTier::host_default(),
            code_cache: alcazar_emu::JitConfig::default().cache_bytes,
        }
    }
}

/// The name a VM gets when nothing names it.
pub const DEFAULT_NAME: &str = "vm";
/// The memory a VM gets when nothing sizes it.
pub const DEFAULT_MEMORY: u64 = 32 << 20;

impl VmConfig {
    /// A VM that boots `boot`, with the defaults for everything else:
    /// [`DEFAULT_NAME`], [`DEFAULT_MEMORY`], one vCPU, the engine chosen
    /// automatically, the console on the terminal, the standard devices.
    pub fn new(boot: BootSource) -> Self {
        VmConfig {
            name: DEFAULT_NAME.into(),
            memory: DEFAULT_MEMORY,
            cpus: 1,
            engine: EngineChoice::Auto,
            serial: ConsoleTarget::Stdio,
            boot,
            default_devices: true,
            devices: Vec::new(),
            on_reboot: None,
            emu: EmuSettings::default(),
            display: Display::None,
            cpu: alcazar_core::cpu_model::CpuModel::default(),
        }
    }
}

/// Parses the `[boot]` table of one boot kind; paths are relative to the
/// directory given.
pub type BootParser = fn(&Table, &Path) -> Result<BootSource, ConfigError>;

/// The boot kinds a config may name in `[boot] kind`, and what boots when
/// it has no `[boot]` section. The library knows `flat` and `linux`; an
/// embedder adds its own with [`BootKinds::with`].
#[derive(Clone)]
pub struct BootKinds {
    kinds: Vec<(&'static str, &'static str, BootParser)>,
    default: Option<fn() -> Result<BootSource, ConfigError>>,
}

impl std::fmt::Debug for BootKinds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.kinds.iter().map(|k| k.0).collect();
        f.debug_struct("BootKinds").field("kinds", &names).finish()
    }
}

impl Default for BootKinds {
    fn default() -> Self {
        BootKinds {
            kinds: vec![
                ("linux", "a bzImage", parse_linux_boot as BootParser),
                ("flat", "a flat binary", parse_flat_boot as BootParser),
                ("firmware", "a PC BIOS", parse_firmware_boot as BootParser),
            ],
            default: None,
        }
    }
}

impl BootKinds {
    /// Adds boot kind `name` (described as `what` in error messages).
    pub fn with(mut self, name: &'static str, what: &'static str, parse: BootParser) -> Self {
        self.kinds.push((name, what, parse));
        self
    }

    /// What a config without `[boot]` boots (without it, such a config is
    /// refused).
    pub fn with_default(mut self, default: fn() -> Result<BootSource, ConfigError>) -> Self {
        self.default = Some(default);
        self
    }

    fn parse(&self, v: Option<&Value>, base: &Path) -> Result<BootSource, ConfigError> {
        let Some(v) = v else {
            return match self.default {
                Some(default) => default(),
                None => Err(ConfigError::new(
                    "boot",
                    "(missing)",
                    "the config does not say what to boot",
                    "add a [boot] section, e.g. kind = \"linux\" with kernel = \"PATH\"",
                )),
            };
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
        match self.kinds.iter().find(|k| k.0 == kind) {
            Some((_, _, parse)) => parse(t, base),
            None => {
                let known: Vec<String> = self
                    .kinds
                    .iter()
                    .map(|(n, what, _)| format!("\"{n}\" ({what})"))
                    .collect();
                Err(ConfigError::new(
                    "boot.kind",
                    format!("\"{kind}\""),
                    "unknown boot kind",
                    format!("use {}", known.join(", ")),
                ))
            }
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
    "on_reboot",
    "emu_tier",
    "emu_code_cache",
    "display",
    "cpu",
];

impl VmConfig {
    /// Reads and validates a config file with the library's boot kinds.
    /// Relative paths inside it are taken relative to the file's
    /// directory.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        Self::from_file_with(path, &BootKinds::default())
    }

    /// Reads and validates a config file whose `[boot]` may name any of
    /// `kinds`. The file is read up to [`MAX_CONFIG_BYTES`]. Without a
    /// `name`, the VM is named after the file (`web.toml`: `web`).
    pub fn from_file_with(path: &Path, kinds: &BootKinds) -> Result<Self, ConfigError> {
        let text = value::read_bounded(path, MAX_CONFIG_BYTES).map_err(|why| {
            ConfigError::new(
                "config",
                format!("\"{}\"", path.display()),
                why,
                "give the path of an existing TOML file",
            )
        })?;
        let base = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let mut config = Self::parse(&text, base, kinds)?;
        // A file without `name` names the VM after itself (`web.toml`:
        // "web"), if that is a valid name.
        let named = text.parse::<Table>().is_ok_and(|t| t.contains_key("name"));
        if !named {
            if let Some(stem) = path.file_stem().and_then(|s| s.to_str()) {
                if let Ok(name) = parse_name("name", stem) {
                    config.name = name;
                }
            }
        }
        Ok(config)
    }

    /// Parses and validates TOML text with the library's boot kinds
    /// (relative paths are relative to the current directory).
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        Self::parse(text, Path::new("."), &BootKinds::default())
    }

    /// Parses and validates TOML text; relative paths are relative to
    /// `base`, and `[boot]` may name any of `kinds`.
    pub fn parse(text: &str, base: &Path, kinds: &BootKinds) -> Result<Self, ConfigError> {
        let table: Table = text
            .parse()
            .map_err(|e: toml::de::Error| syntax_error(text, &e))?;
        check_keys(&table, TOP_KEYS, "", "top-level keys")?;
        let name = match opt_str(&table, "name")? {
            Some(s) => parse_name("name", &s)?,
            None => DEFAULT_NAME.into(),
        };
        let memory = match table.get("memory") {
            Some(v) => parse_memory_value("memory", v)?,
            None => DEFAULT_MEMORY,
        };
        let cpus = match table.get("cpus") {
            Some(v) => parse_cpus_value("cpus", v)?,
            None => 1,
        };
        let engine = match opt_str(&table, "engine")? {
            Some(s) => parse_engine("engine", &s)?,
            None => EngineChoice::Auto,
        };
        let serial = match opt_str(&table, "serial")? {
            Some(s) => parse_console("serial", &s, base)?,
            None => ConsoleTarget::Stdio,
        };
        let default_devices = opt_bool(&table, "default_devices")?.unwrap_or(true);
        let on_reboot = opt_str(&table, "on_reboot")?
            .map(|s| parse_reboot_action("on_reboot", &s))
            .transpose()?;
        let mut emu = EmuSettings::default();
        if let Some(t) = opt_str(&table, "emu_tier")? {
            emu.tier = parse_emu_tier("emu_tier", &t)?;
        }
        if let Some(v) = table.get("emu_code_cache") {
            emu.code_cache = value::parse_code_cache_value("emu_code_cache", v)?;
        }
        let display = opt_str(&table, "display")?
            .map(|s| parse_display("display", &s))
            .transpose()?
            .unwrap_or_default();
        let cpu = opt_str(&table, "cpu")?
            .map(|s| parse_cpu("cpu", &s))
            .transpose()?
            .unwrap_or_default();
        let boot = kinds.parse(table.get("boot"), base)?;
        let devices = device::parse_devices(table.get("device"), base)?;
        let config = VmConfig {
            name,
            memory,
            cpus,
            engine,
            serial,
            boot,
            default_devices,
            devices,
            on_reboot,
            emu,
            display,
            cpu,
        };
        Ok(config)
    }
}

/// Parses an emu tier: `jit` (hot code translated) or `interp` (the
/// interpreter alone).
pub fn parse_emu_tier(key: &str, s: &str) -> Result<alcazar_emu::EmuTier, ConfigError> {
    match s {
        "jit" if alcazar_emu::EmuTier::jit_supported() => Ok(alcazar_emu::EmuTier::Jit),
        "jit" => Err(ConfigError::new(
            key,
            "\"jit\"",
            "this host cannot run translated code (it needs x86-64 with LAHF/SAHF)",
            "use \"interp\"",
        )),
        "interp" => Ok(alcazar_emu::EmuTier::Interp),
        _ => Err(ConfigError::new(
            key,
            format!("\"{s}\""),
            "unknown emu tier",
            "use \"jit\" (translate hot code) or \"interp\" (the interpreter alone)",
        )),
    }
}

/// Parses `restart` or `exit`.
pub fn parse_reboot_action(key: &str, s: &str) -> Result<RebootAction, ConfigError> {
    match s {
        "restart" => Ok(RebootAction::Restart),
        "exit" => Ok(RebootAction::Exit),
        _ => Err(ConfigError::new(
            key,
            format!("\"{s}\""),
            "unknown reboot action",
            "use \"restart\" (boot again) or \"exit\"",
        )),
    }
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

fn parse_firmware_boot(t: &Table, base: &Path) -> Result<BootSource, ConfigError> {
    check_keys(
        t,
        &["kind", "bios", "vga_bios", "order", "menu"],
        "boot.",
        "keys of a firmware boot",
    )?;
    let bios = opt_str(t, "bios")?.ok_or_else(|| {
        ConfigError::new(
            "boot.bios",
            "(missing)",
            "a firmware boot needs a BIOS image",
            "add bios = \"PATH\" (SeaBIOS's bios-256k.bin; `alcazar guest fetch` gets it)",
        )
    })?;
    let order = match t.get("order") {
        None => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                other => Err(ConfigError::new(
                    "boot.order",
                    show(other),
                    "not a device id",
                    "list device ids, e.g. order = [\"cd0\", \"disk0\"]",
                )),
            })
            .collect::<Result<_, _>>()?,
        Some(other) => {
            return Err(ConfigError::new(
                "boot.order",
                show(other),
                "not a list",
                "list device ids, e.g. order = [\"cd0\", \"disk0\"]",
            ))
        }
    };
    Ok(BootSource::Firmware {
        bios: existing_file("boot.bios", &bios, base)?,
        vga_bios: opt_str(t, "vga_bios")?
            .map(|p| existing_file("boot.vga_bios", &p, base))
            .transpose()?,
        order,
        menu: opt_bool(t, "menu")?.unwrap_or(false),
    })
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
        image: FlatImage::File(path),
        mode,
        load_address,
        aps_wait_for_sipi: false,
    })
}

#[cfg(test)]
mod tests {
    use super::value::parse_mem_total;
    use super::*;

    /// A `[boot]` section that parses: this crate's manifest as a flat
    /// image (tests run in the crate's directory).
    const BOOT: &str = "\n[boot]\nimage = \"Cargo.toml\"\n";

    fn with_boot(top: &str) -> Result<VmConfig, ConfigError> {
        VmConfig::from_toml_str(&format!("{top}{BOOT}"))
    }

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
        let c = with_boot(
            "[[device]]\nclass = \"serial\"\nid = \"com2\"\nport = 0x2f8\n[[device]]\nclass = \"i8042\"\n",
        )
        .unwrap();
        assert_eq!(c.devices.len(), 2);
        match &c.devices[0].config {
            DeviceConfig::Serial(s) => assert_eq!((s.port, s.irq), (0x2f8, 4)),
            other => panic!("{other:?}"),
        }
        assert_eq!(c.devices[1].id, "i80421");
    }

    #[test]
    fn duplicate_device_ids_are_rejected() {
        let e = with_boot("[[device]]\nclass = \"serial\"\nid = \"a\"\n[[device]]\nclass = \"serial\"\nid = \"a\"\n").unwrap_err();
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
        let c = with_boot("cpus = 2\nengine = \"kvm\"").unwrap();
        assert_eq!((c.cpus, c.engine), (2, EngineChoice::Kvm));
    }

    #[test]
    fn unknown_boot_kinds_name_the_known_ones() {
        let e = VmConfig::from_toml_str("[boot]\nkind = \"kit\"\nprogram = \"demo\"").unwrap_err();
        assert_eq!(e.key, "boot.kind");
        assert!(
            e.fix.contains("\"linux\"") && e.fix.contains("\"flat\""),
            "{e}"
        );
        fn test_kind(_: &Table, _: &Path) -> Result<BootSource, ConfigError> {
            Ok(BootSource::Flat {
                image: FlatImage::Bytes(vec![0xf4]),
                mode: FlatMode::Real,
                load_address: 0x10000,
                aps_wait_for_sipi: false,
            })
        }
        let kinds = BootKinds::default().with("test", "a test guest", test_kind);
        let c = VmConfig::parse("[boot]\nkind = \"test\"", Path::new("."), &kinds).unwrap();
        assert!(matches!(
            c.boot,
            BootSource::Flat {
                image: FlatImage::Bytes(_),
                ..
            }
        ));
    }

    #[test]
    fn a_config_without_boot_is_refused_unless_a_default_is_given() {
        let e = VmConfig::from_toml_str("memory = \"64M\"").unwrap_err();
        assert_eq!(e.key, "boot");
        let kinds = BootKinds::default().with_default(|| {
            Ok(BootSource::Flat {
                image: FlatImage::Bytes(vec![0xf4]),
                mode: FlatMode::Real,
                load_address: 0x10000,
                aps_wait_for_sipi: false,
            })
        });
        let c = VmConfig::parse("memory = \"64M\"", Path::new("."), &kinds).unwrap();
        assert_eq!((c.name.as_str(), c.memory), (DEFAULT_NAME, 64 << 20));
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
