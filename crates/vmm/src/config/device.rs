//! Typed device configuration: one struct per device class, parsed and
//! validated when the config is read (a `[[device]]` table and a
//! command-line flag take the same path, [`DeviceSpec::parse`]), so a bad
//! key or value is reported before anything is downloaded or opened.
//! Relative paths are resolved against the config file's directory (the
//! working directory for flags).
//!
//! | class | keys |
//! |-------|------|
//! | `serial` | `port` (0x3f8), `irq` (4), `output`, `console` |
//! | `i8042` | |
//! | `system-control` | |
//! | `debug-exit` | `port` (0xf4), `size` (4) |
//! | `debugcon` | `port` (0xe9), `output` |
//! | `acpi-pm` | |
//! | `virtio-rng` | |
//! | `virtio-blk` | `path`, `readonly` (false) |
//! | `virtio-net` | `tap`, `host_ip` (`A.B.C.D[/N]`), `netmask`, `mac`; or `user` (true), `hostfwd` (list of `tcp:HOSTPORT-:GUESTPORT`); or `passt` (a socket path) |
//! | `virtio-console` | `output` (stdio) |
//!
//! Building the devices from these is [`crate::registry`]'s job.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use alcazar_devices::virtio::net::{parse_mac, DEFAULT_MAC};
use alcazar_devices::{debug_exit, debugcon};
use toml::{Table, Value};

use super::net::{HostFwd, NetBackendConfig, HOSTFWD_FIX};
use super::value::{opt_str, parse_console, show};
use super::ConsoleTarget;
use crate::error::ConfigError;

/// Where a device entry came from: error messages name it that way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// One of the standard PC devices.
    Default,
    /// The `index`th `[[device]]` table of the config file.
    File(usize),
    /// A command-line flag (`--disk`).
    Flag(String),
}

/// One device of the machine: its id and its typed configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceSpec {
    /// A unique name for this device (letters, digits, `-`, `_`, `.`).
    pub id: String,
    /// The class and its settings.
    pub config: DeviceConfig,
    /// Where the entry came from.
    pub origin: Origin,
}

/// A device class and its settings.
#[derive(Clone, Debug, PartialEq)]
pub enum DeviceConfig {
    /// A 16550A UART.
    Serial(SerialConfig),
    /// The 8042 keyboard controller (its reset line).
    I8042,
    /// System control port B (0x61).
    SystemControl,
    /// The isa-debug-exit compatible exit port.
    DebugExit(DebugExitConfig),
    /// The port 0xe9 debug console.
    Debugcon(DebugconConfig),
    /// ACPI PM1a event/control blocks and the PM timer.
    AcpiPm,
    /// A virtio entropy device on PCI.
    VirtioRng,
    /// A virtio block device on PCI.
    VirtioBlk(VirtioBlkConfig),
    /// A virtio network card on PCI.
    VirtioNet(VirtioNetConfig),
    /// A virtio console on PCI.
    VirtioConsole(VirtioConsoleConfig),
    /// An ATA disk on the machine's IDE controller.
    IdeDisk(VirtioBlkConfig),
    /// An ATAPI CD-ROM drive on the machine's IDE controller, with an ISO
    /// 9660 image in it or empty.
    IdeCdrom(IdeCdromConfig),
}

/// An `ide-cdrom` device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdeCdromConfig {
    /// The disc: an ISO 9660 image (read-only), or `None` for an empty
    /// drive.
    pub path: Option<PathBuf>,
}

/// A `serial` device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SerialConfig {
    /// First of its eight I/O ports.
    pub port: u16,
    /// The ISA interrupt line it raises.
    pub irq: u8,
    /// Where its output goes; `None`: the VM's `serial` target if it is
    /// the console UART, else nowhere.
    pub output: Option<ConsoleTarget>,
    /// Whether it is the guest console (its output watched for kernel
    /// panics, the terminal's keystrokes delivered to it). `None`: the
    /// first UART without `console = false` is, unless another says
    /// `console = true`.
    pub console: Option<bool>,
}

/// A `debug-exit` device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DebugExitConfig {
    /// Its first port.
    pub port: u16,
    /// How many ports it answers on (1, 2 or 4).
    pub size: u8,
}

/// A `debugcon` device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DebugconConfig {
    /// Its port.
    pub port: u16,
    /// Where its output goes; `None`: where the VM's `serial` goes.
    pub output: Option<ConsoleTarget>,
}

/// A `virtio-blk` device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VirtioBlkConfig {
    /// The raw disk image.
    pub path: PathBuf,
    /// Whether the guest may only read it.
    pub readonly: bool,
}

/// A `virtio-net` device, backed by a host TAP interface or by passt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VirtioNetConfig {
    /// What carries the frames; `tap` and `host_address` apply only to
    /// [`NetBackendConfig::Tap`].
    pub backend: NetBackendConfig,
    /// The TAP interface to attach to (created if missing); `None`: a new
    /// `alcazarN`.
    pub tap: Option<String>,
    /// The host end's address and prefix length, if the VMM sets it.
    pub host_address: Option<(Ipv4Addr, u8)>,
    /// The card's MAC address.
    pub mac: [u8; 6],
}

/// A `virtio-console` device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VirtioConsoleConfig {
    /// Where its output goes.
    pub output: ConsoleTarget,
}

/// A device class as a config names it.
#[derive(Debug)]
pub struct DeviceClass {
    /// The name used in `class = "..."`.
    pub name: &'static str,
    /// One line on what it is.
    pub description: &'static str,
    /// The keys its entries accept (besides `class` and `id`).
    pub keys: &'static [&'static str],
    parse: fn(&Entry<'_>) -> Result<DeviceConfig, ConfigError>,
}

/// Every device class, in the order defaults are created.
pub static CLASSES: &[DeviceClass] = &[
    DeviceClass {
        name: "serial",
        description: "16550A UART",
        keys: &["port", "irq", "output", "console"],
        parse: parse_serial,
    },
    DeviceClass {
        name: "i8042",
        description: "8042 keyboard controller (reset line)",
        keys: &[],
        parse: |_| Ok(DeviceConfig::I8042),
    },
    DeviceClass {
        name: "system-control",
        description: "system control port B (0x61)",
        keys: &[],
        parse: |_| Ok(DeviceConfig::SystemControl),
    },
    DeviceClass {
        name: "debug-exit",
        description: "isa-debug-exit compatible VM exit port",
        keys: &["port", "size"],
        parse: parse_debug_exit,
    },
    DeviceClass {
        name: "debugcon",
        description: "port 0xe9 debug console",
        keys: &["port", "output"],
        parse: parse_debugcon,
    },
    DeviceClass {
        name: "acpi-pm",
        description: "ACPI PM1a event/control blocks and PM timer",
        keys: &[],
        parse: |_| Ok(DeviceConfig::AcpiPm),
    },
    DeviceClass {
        name: "virtio-rng",
        description: "virtio entropy device on PCI (host /dev/urandom)",
        keys: &[],
        parse: |_| Ok(DeviceConfig::VirtioRng),
    },
    DeviceClass {
        name: "virtio-blk",
        description: "virtio block device on PCI (a raw disk image file)",
        keys: &["path", "readonly"],
        parse: parse_virtio_blk,
    },
    DeviceClass {
        name: "ide-disk",
        description: "ATA disk on the IDE controller (a raw disk image file)",
        keys: &["path", "readonly"],
        parse: |e| match parse_virtio_blk(e)? {
            DeviceConfig::VirtioBlk(c) => Ok(DeviceConfig::IdeDisk(c)),
            other => Ok(other),
        },
    },
    DeviceClass {
        name: "ide-cdrom",
        description: "ATAPI CD-ROM drive on the IDE controller (an ISO 9660 image, read-only)",
        keys: &["path"],
        parse: |e| {
            Ok(DeviceConfig::IdeCdrom(IdeCdromConfig {
                path: e
                    .string("path", "give the path of an ISO 9660 image")?
                    .filter(|p| !p.is_empty())
                    .map(|p| e.base.join(p)),
            }))
        },
    },
    DeviceClass {
        name: "virtio-net",
        description: "virtio network card on PCI, backed by a host TAP interface or by passt",
        keys: &[
            "tap", "host_ip", "netmask", "mac", "user", "hostfwd", "passt",
        ],
        parse: parse_virtio_net,
    },
    DeviceClass {
        name: "virtio-console",
        description: "virtio console on PCI (the guest's hvc0)",
        keys: &["output"],
        parse: parse_virtio_console,
    },
];

/// Looks a class up by name.
pub fn class(name: &str) -> Option<&'static DeviceClass> {
    CLASSES.iter().find(|c| c.name == name)
}

impl DeviceConfig {
    /// The class name (`serial`, `virtio-blk`, ...).
    pub fn class(&self) -> &'static str {
        match self {
            DeviceConfig::Serial(_) => "serial",
            DeviceConfig::I8042 => "i8042",
            DeviceConfig::SystemControl => "system-control",
            DeviceConfig::DebugExit(_) => "debug-exit",
            DeviceConfig::Debugcon(_) => "debugcon",
            DeviceConfig::AcpiPm => "acpi-pm",
            DeviceConfig::VirtioRng => "virtio-rng",
            DeviceConfig::VirtioBlk(_) => "virtio-blk",
            DeviceConfig::VirtioNet(_) => "virtio-net",
            DeviceConfig::VirtioConsole(_) => "virtio-console",
            DeviceConfig::IdeDisk(_) => "ide-disk",
            DeviceConfig::IdeCdrom(_) => "ide-cdrom",
        }
    }

    /// The output file this device writes, if it writes one.
    pub fn output_file(&self) -> Option<&Path> {
        let target = match self {
            DeviceConfig::Serial(c) => c.output.as_ref(),
            DeviceConfig::Debugcon(c) => c.output.as_ref(),
            DeviceConfig::VirtioConsole(c) => Some(&c.output),
            _ => None,
        };
        match target {
            Some(ConsoleTarget::File(p)) => Some(p),
            _ => None,
        }
    }
}

/// The standard PC devices, with the ids a `[[device]]` entry uses to
/// reconfigure one of them.
pub fn default_devices() -> Vec<DeviceSpec> {
    let spec = |id: &str, config| DeviceSpec {
        id: id.into(),
        config,
        origin: Origin::Default,
    };
    vec![
        spec(
            "com1",
            DeviceConfig::Serial(SerialConfig {
                port: 0x3f8,
                irq: 4,
                output: None,
                console: None,
            }),
        ),
        spec("i8042", DeviceConfig::I8042),
        spec("port61", DeviceConfig::SystemControl),
        spec(
            "debug-exit",
            DeviceConfig::DebugExit(DebugExitConfig {
                port: debug_exit::DEFAULT_PORT,
                size: debug_exit::DEFAULT_SIZE as u8,
            }),
        ),
        spec(
            "debugcon",
            DeviceConfig::Debugcon(DebugconConfig {
                port: debugcon::DEFAULT_PORT,
                output: None,
            }),
        ),
        spec("acpi-pm", DeviceConfig::AcpiPm),
    ]
}

/// Whether `id` can name a device: 1-64 ASCII letters, digits, `-`, `_`
/// or `.`, not starting with `.` (ids appear in the inspector's paths and
/// in log lines).
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

impl DeviceSpec {
    /// The key path of `key` in this entry, for error messages.
    pub fn key(&self, key: &str) -> String {
        key_of(&self.origin, &self.id, key)
    }

    /// The class name.
    pub fn class(&self) -> &'static str {
        self.config.class()
    }

    /// A device of class `class_name` with its default settings (what an
    /// entry with no keys gives).
    pub fn with_defaults(
        origin: Origin,
        class_name: &str,
        id: &str,
    ) -> Result<DeviceSpec, ConfigError> {
        Self::parse(origin, class_name, id, &Table::new(), Path::new("."))
    }

    /// Parses one device entry: class `class`, id `id`, the class's keys
    /// in `params`; relative paths are relative to `base`.
    pub fn parse(
        origin: Origin,
        class_name: &str,
        id: &str,
        params: &Table,
        base: &Path,
    ) -> Result<DeviceSpec, ConfigError> {
        let entry = Entry {
            origin: &origin,
            id,
            params,
            base,
        };
        let Some(class) = class(class_name) else {
            let known: Vec<&str> = CLASSES.iter().map(|c| c.name).collect();
            return Err(ConfigError::new(
                entry.key("class"),
                format!("\"{class_name}\""),
                "unknown device class",
                format!("known classes: {}", known.join(", ")),
            ));
        };
        if !valid_id(id) {
            return Err(ConfigError::new(
                entry.key("id"),
                format!("\"{id}\""),
                "not a valid device id",
                "use 1-64 letters, digits, '-', '_' or '.', not starting with '.'",
            ));
        }
        if let Some(k) = params.keys().find(|k| !class.keys.contains(&k.as_str())) {
            let known = if class.keys.is_empty() {
                "none".to_string()
            } else {
                class.keys.join(", ")
            };
            return Err(ConfigError::new(
                entry.key(k),
                show(&params[k]),
                format!("unknown key for a {} device", class.name),
                format!("keys it takes besides class and id: {known}"),
            ));
        }
        let config = (class.parse)(&entry)?;
        Ok(DeviceSpec {
            id: id.into(),
            config,
            origin,
        })
    }
}

fn key_of(origin: &Origin, id: &str, key: &str) -> String {
    match origin {
        Origin::Flag(flag) => format!("{flag} ({key})"),
        Origin::File(index) => format!("device[{index}].{key}"),
        Origin::Default => format!("device \"{id}\" ({key})"),
    }
}

/// One entry being parsed.
struct Entry<'a> {
    origin: &'a Origin,
    id: &'a str,
    params: &'a Table,
    base: &'a Path,
}

impl Entry<'_> {
    fn key(&self, key: &str) -> String {
        key_of(self.origin, self.id, key)
    }

    fn int(
        &self,
        key: &str,
        default: u64,
        range: std::ops::RangeInclusive<u64>,
        fix: &str,
    ) -> Result<u64, ConfigError> {
        match self.params.get(key) {
            None => Ok(default),
            Some(Value::Integer(n)) if *n >= 0 && range.contains(&(*n as u64)) => Ok(*n as u64),
            Some(v) => Err(ConfigError::new(
                self.key(key),
                show(v),
                "out of range",
                fix.to_string(),
            )),
        }
    }

    fn port(&self, default: u16, width: u64) -> Result<u16, ConfigError> {
        let max = 0x1_0000 - width;
        let fix = format!("give an I/O port from 0 to {max:#x}");
        Ok(self.int("port", u64::from(default), 0..=max, &fix)? as u16)
    }

    fn string(&self, key: &str, fix: &str) -> Result<Option<&str>, ConfigError> {
        match self.params.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(ConfigError::new(
                self.key(key),
                show(v),
                "must be a string",
                fix.to_string(),
            )),
        }
    }

    fn boolean(&self, key: &str) -> Result<Option<bool>, ConfigError> {
        match self.params.get(key) {
            None => Ok(None),
            Some(Value::Boolean(b)) => Ok(Some(*b)),
            Some(v) => Err(ConfigError::new(
                self.key(key),
                show(v),
                "must be a boolean",
                format!("use {key} = true or {key} = false"),
            )),
        }
    }

    fn output(&self) -> Result<Option<ConsoleTarget>, ConfigError> {
        self.string("output", "use \"stdio\", \"none\" or \"file:PATH\"")?
            .map(|s| parse_console(&self.key("output"), s, self.base))
            .transpose()
    }
}

fn parse_serial(e: &Entry<'_>) -> Result<DeviceConfig, ConfigError> {
    Ok(DeviceConfig::Serial(SerialConfig {
        port: e.port(0x3f8, 8)?,
        irq: e.int("irq", 4, 0..=15, "give an ISA IRQ from 0 to 15")? as u8,
        output: e.output()?,
        console: e.boolean("console")?,
    }))
}

fn parse_debug_exit(e: &Entry<'_>) -> Result<DeviceConfig, ConfigError> {
    let fix = "give a size of 1, 2 or 4 ports";
    let size = e.int("size", u64::from(debug_exit::DEFAULT_SIZE), 1..=4, fix)?;
    if size == 3 {
        return Err(ConfigError::new(e.key("size"), 3, "out of range", fix));
    }
    Ok(DeviceConfig::DebugExit(DebugExitConfig {
        port: e.port(debug_exit::DEFAULT_PORT, size)?,
        size: size as u8,
    }))
}

fn parse_debugcon(e: &Entry<'_>) -> Result<DeviceConfig, ConfigError> {
    Ok(DeviceConfig::Debugcon(DebugconConfig {
        port: e.port(debugcon::DEFAULT_PORT, 1)?,
        output: e.output()?,
    }))
}

fn parse_virtio_blk(e: &Entry<'_>) -> Result<DeviceConfig, ConfigError> {
    let path = e
        .string("path", "give the path of a raw disk image")?
        .filter(|p| !p.is_empty())
        .ok_or_else(|| {
            ConfigError::new(
                e.key("path"),
                "(missing)",
                "a virtio-blk device needs a disk image",
                "add path = \"IMAGE\" (a raw image whose size is a multiple of 512 bytes)",
            )
        })?;
    Ok(DeviceConfig::VirtioBlk(VirtioBlkConfig {
        path: e.base.join(path),
        readonly: e.boolean("readonly")?.unwrap_or(false),
    }))
}

fn parse_virtio_net(e: &Entry<'_>) -> Result<DeviceConfig, ConfigError> {
    let mac = match e.string("mac", "give a MAC like \"52:54:00:12:34:56\"")? {
        None => DEFAULT_MAC,
        Some(m) => parse_mac(m).ok_or_else(|| {
            ConfigError::new(
                e.key("mac"),
                format!("\"{m}\""),
                "not a unicast MAC address",
                "give six hex bytes like \"52:54:00:12:34:56\" (first byte even)",
            )
        })?,
    };
    Ok(DeviceConfig::VirtioNet(VirtioNetConfig {
        backend: net_backend(e)?,
        tap: e
            .string("tap", "give an interface name like \"tap0\"")?
            .map(str::to_string),
        host_address: host_address(e)?,
        mac,
    }))
}

/// The card's backend from `user`, `hostfwd` and `passt`; TAP keys go
/// with neither.
fn net_backend(e: &Entry<'_>) -> Result<NetBackendConfig, ConfigError> {
    let user = e.boolean("user")?.unwrap_or(false);
    let passt = e.string("passt", "give the path of passt's socket")?;
    let hostfwd = hostfwds(e)?;
    let tap_key = ["tap", "host_ip", "netmask"]
        .into_iter()
        .find(|k| e.params.contains_key(*k));
    let conflict = |key: &str, why: &str, fix: &str| {
        ConfigError::new(e.key(key), show(&e.params[key]), why, fix)
    };
    if user && passt.is_some() {
        return Err(conflict(
            "passt",
            "user networking starts its own passt",
            "give user or passt, not both",
        ));
    }
    if !hostfwd.is_empty() && !user {
        return Err(conflict(
            "hostfwd",
            "port forwards need user networking",
            "add user (--net user,hostfwd=...), or set the forwards on your own passt with -t",
        ));
    }
    if let (Some(k), true) = (tap_key, user || passt.is_some()) {
        return Err(conflict(
            k,
            "a TAP setting on a card backed by passt",
            "drop the TAP settings, or use a TAP instead of passt",
        ));
    }
    Ok(match passt {
        Some(p) => NetBackendConfig::Passt {
            socket: e.base.join(p),
        },
        None if user => NetBackendConfig::User { hostfwd },
        None => NetBackendConfig::Tap,
    })
}

/// `hostfwd`: one forward (a string) or a list of them.
fn hostfwds(e: &Entry<'_>) -> Result<Vec<HostFwd>, ConfigError> {
    let one = |v: &Value| match v {
        Value::String(s) => HostFwd::parse(s).map_err(|why| {
            ConfigError::new(e.key("hostfwd"), format!("\"{s}\""), why, HOSTFWD_FIX)
        }),
        other => Err(ConfigError::new(
            e.key("hostfwd"),
            show(other),
            "must be a string or a list of strings",
            HOSTFWD_FIX,
        )),
    };
    match e.params.get("hostfwd") {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => items.iter().map(one).collect(),
        Some(v) => Ok(vec![one(v)?]),
    }
}

fn parse_virtio_console(e: &Entry<'_>) -> Result<DeviceConfig, ConfigError> {
    Ok(DeviceConfig::VirtioConsole(VirtioConsoleConfig {
        output: e.output()?.unwrap_or(ConsoleTarget::Stdio),
    }))
}

/// The host end's address and prefix length from `host_ip`
/// (`A.B.C.D` or `A.B.C.D/N`) and `netmask` (`A.B.C.D`, contiguous).
fn host_address(e: &Entry<'_>) -> Result<Option<(Ipv4Addr, u8)>, ConfigError> {
    let ip_fix = "give an IPv4 address like \"10.0.2.1/24\"";
    let Some(text) = e.string("host_ip", ip_fix)? else {
        if let Some(v) = e.params.get("netmask") {
            return Err(ConfigError::new(
                e.key("netmask"),
                show(v),
                "a netmask needs an address",
                "add host_ip, or drop netmask",
            ));
        }
        return Ok(None);
    };
    let bad = |why: &str| ConfigError::new(e.key("host_ip"), format!("\"{text}\""), why, ip_fix);
    let (addr, prefix) = match text.split_once('/') {
        Some((a, p)) => (
            a,
            Some(
                p.parse::<u8>()
                    .ok()
                    .filter(|&p| p <= 32)
                    .ok_or_else(|| bad("bad prefix length"))?,
            ),
        ),
        None => (text, None),
    };
    let addr: Ipv4Addr = addr.parse().map_err(|_| bad("not an IPv4 address"))?;
    let mask_fix = "give a netmask like \"255.255.255.0\"";
    let from_mask = match e.string("netmask", mask_fix)? {
        None => None,
        Some(m) => {
            let bad_mask = || {
                ConfigError::new(
                    e.key("netmask"),
                    format!("\"{m}\""),
                    "not a contiguous IPv4 netmask",
                    mask_fix,
                )
            };
            let bits = u32::from(m.parse::<Ipv4Addr>().map_err(|_| bad_mask())?);
            let len = bits.leading_ones();
            if bits.checked_shl(len).unwrap_or(0) != 0 {
                return Err(bad_mask());
            }
            Some(len as u8)
        }
    };
    if let (Some(p), Some(m)) = (prefix, from_mask) {
        if p != m {
            return Err(bad("the prefix length and netmask disagree"));
        }
    }
    Ok(Some((addr, prefix.or(from_mask).unwrap_or(24))))
}

/// Parses the `[[device]]` array; relative paths are relative to `base`.
pub(crate) fn parse_devices(
    v: Option<&Value>,
    base: &Path,
) -> Result<Vec<DeviceSpec>, ConfigError> {
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
        specs.push(DeviceSpec::parse(
            Origin::File(index),
            &class,
            &id,
            &params,
            base,
        )?);
    }
    Ok(specs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(params: &[(&str, &str)]) -> Result<DeviceSpec, String> {
        let mut t = Table::new();
        for (k, v) in params {
            t.insert((*k).into(), Value::String((*v).into()));
        }
        DeviceSpec::parse(
            Origin::Flag("--net".into()),
            "virtio-net",
            "net0",
            &t,
            Path::new("."),
        )
        .map_err(|e| e.to_string())
    }

    #[test]
    fn host_addresses_take_a_prefix_or_a_netmask() {
        let a = |p: &[(&str, &str)]| {
            net(p).map(|s| match s.config {
                DeviceConfig::VirtioNet(c) => c.host_address,
                other => panic!("{other:?}"),
            })
        };
        let ip = Ipv4Addr::new(10, 0, 2, 1);
        assert_eq!(a(&[]), Ok(None));
        assert_eq!(a(&[("host_ip", "10.0.2.1")]), Ok(Some((ip, 24))));
        assert_eq!(a(&[("host_ip", "10.0.2.1/16")]), Ok(Some((ip, 16))));
        let masked = [("host_ip", "10.0.2.1"), ("netmask", "255.255.255.128")];
        assert_eq!(a(&masked), Ok(Some((ip, 25))));
        for (params, why) in [
            (&[("host_ip", "10.0.2.300")][..], "not an IPv4 address"),
            (&[("host_ip", "10.0.2.1/33")][..], "bad prefix length"),
            (
                &[("host_ip", "10.0.2.1"), ("netmask", "255.0.255.0")][..],
                "contiguous",
            ),
            (
                &[("host_ip", "10.0.2.1/8"), ("netmask", "255.255.0.0")][..],
                "disagree",
            ),
            (&[("netmask", "255.255.0.0")][..], "needs an address"),
        ] {
            let e = a(params).unwrap_err();
            assert!(e.contains(why), "{params:?}: {e}");
            assert!(e.contains("--net"), "{e}");
        }
    }

    #[test]
    fn a_typo_in_a_device_key_is_reported_when_the_config_is_read() {
        let e = crate::config::VmConfig::from_toml_str(
            "[boot]\nimage = \"Cargo.toml\"\n[[device]]\nclass = \"serial\"\nprot = 0x2f8\n",
        )
        .unwrap_err();
        assert_eq!(e.key, "device[0].prot", "{e}");
        assert!(e.fix.contains("port"), "{e}");
    }

    #[test]
    fn disk_paths_are_relative_to_the_config_file() {
        let dir = std::env::temp_dir().join(format!("alcazar-devcfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = dir.join("vm.toml");
        std::fs::write(&cfg, "[boot]\nimage = \"vm.toml\"\n[[device]]\nclass = \"virtio-blk\"\npath = \"disk.img\"\n").unwrap();
        let c = crate::config::VmConfig::from_file(&cfg).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        match &c.devices[0].config {
            DeviceConfig::VirtioBlk(b) => assert_eq!(b.path, dir.join("disk.img")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_ids_are_refused() {
        for id in ["", "a/../b", "é", ".hidden"] {
            let e = DeviceSpec::parse(Origin::File(0), "i8042", id, &Table::new(), Path::new("."))
                .unwrap_err();
            assert_eq!(e.problem, "not a valid device id", "{id:?}");
        }
    }
}
