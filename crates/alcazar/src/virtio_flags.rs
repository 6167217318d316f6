//! The `alcazar run` flags for the virtio network card and console:
//! `--net` turns into a `virtio-net` device entry, `--console virtio` into
//! a `virtio-console` entry with the terminal on it.

use alcazar_vmm::config::{BootSource, ConsoleTarget, DeviceSpec, Origin, VmConfig};
use alcazar_vmm::ConfigError;
use toml::{Table, Value};

/// Which guest console the terminal is attached to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ConsoleKind {
    /// COM1, the guest's ttyS0 (kernel messages and a shell).
    Serial,
    /// A virtio console, the guest's hvc0 (a login prompt); COM1's output
    /// goes to --serial (default: none).
    Virtio,
}

/// The kernel parameter that tells the guest's `/init` its console is
/// hvc0 (the marker, `--exec` and the login go there).
pub const HVC0_PARAMETER: &str = "alcazar.console=hvc0";

/// Parses one `--net` value: `tap=NAME` or `tap`, then `host=A.B.C.D/N`
/// and `mac=..` in any order, comma-separated.
pub fn parse_net(text: &str) -> Result<Table, ConfigError> {
    let bad = |why: &str| {
        ConfigError::new(
            "--net",
            format!("\"{text}\""),
            why,
            "use tap=NAME[,mac=MAC] or tap[,host=A.B.C.D/N][,mac=MAC]",
        )
    };
    let mut items = text.split(',');
    let mut params = Table::new();
    match items.next().map(|i| i.split_once('=')) {
        Some(Some(("tap", name))) if !name.is_empty() => {
            params.insert("tap".into(), Value::String(name.into()));
        }
        Some(None) if text.split(',').next() == Some("tap") => {}
        _ => return Err(bad("the backend must come first: tap or tap=NAME")),
    }
    for item in items {
        let (key, value) = item
            .split_once('=')
            .ok_or_else(|| bad(&format!("\"{item}\" is not KEY=VALUE")))?;
        let key = match key {
            "host" => "host_ip",
            "mac" => "mac",
            _ => return Err(bad(&format!("unknown option \"{key}\""))),
        };
        if params
            .insert(key.into(), Value::String(value.into()))
            .is_some()
        {
            return Err(bad(&format!("{key} is given twice")));
        }
    }
    Ok(params)
}

/// Adds the devices `--net` and `--console` ask for to `config`.
pub fn apply(
    nets: &[String],
    console: ConsoleKind,
    serial_given: bool,
    config: &mut VmConfig,
) -> Result<(), ConfigError> {
    for (i, text) in nets.iter().enumerate() {
        let params = parse_net(text)?;
        let id = format!("net{i}");
        config
            .devices
            .push(flag_device("--net", "virtio-net", &id, &params)?);
    }
    if console == ConsoleKind::Virtio {
        let spec = flag_device("--console", "virtio-console", "hvc0", &Table::new())?;
        config.devices.push(spec);
        if !serial_given {
            config.serial = ConsoleTarget::None;
        }
    }
    Ok(())
}

/// The device entry flag `flag` asks for: the same parser as a config
/// file's `[[device]]` table.
fn flag_device(
    flag: &str,
    class: &str,
    id: &str,
    params: &Table,
) -> Result<DeviceSpec, ConfigError> {
    DeviceSpec::parse(
        Origin::Flag(flag.into()),
        class,
        id,
        params,
        std::path::Path::new("."),
    )
}

/// With `--console virtio`, tells a Linux guest's `/init` about it.
pub fn apply_cmdline(console: ConsoleKind, config: &mut VmConfig) {
    if console != ConsoleKind::Virtio {
        return;
    }
    if let BootSource::Linux { cmdline, .. } = &mut config.boot {
        cmdline.push(' ');
        cmdline.push_str(HVC0_PARAMETER);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(t: &Table, k: &str) -> Option<String> {
        t.get(k).and_then(|v| v.as_str()).map(str::to_string)
    }

    #[test]
    fn net_values_become_device_keys() {
        let t = parse_net("tap=tap0,mac=52:54:00:00:00:01").unwrap();
        assert_eq!(s(&t, "tap").as_deref(), Some("tap0"));
        assert_eq!(s(&t, "mac").as_deref(), Some("52:54:00:00:00:01"));
        let t = parse_net("tap,host=10.0.2.1/24").unwrap();
        assert_eq!(s(&t, "tap"), None);
        assert_eq!(s(&t, "host_ip").as_deref(), Some("10.0.2.1/24"));
        assert!(parse_net("tap").unwrap().is_empty());
    }

    #[test]
    fn bad_net_values_say_what_is_wrong() {
        for (text, why) in [
            ("user", "backend must come first"),
            ("tap=", "backend must come first"),
            ("host=1.2.3.4,tap", "backend must come first"),
            ("tap,speed=10", "unknown option \"speed\""),
            ("tap,mac", "not KEY=VALUE"),
            (
                "tap,mac=52:54:00:00:00:01,mac=52:54:00:00:00:02",
                "given twice",
            ),
        ] {
            let e = parse_net(text).unwrap_err().to_string();
            assert!(e.contains(why), "{text}: {e}");
            assert!(e.contains("--net"), "{e}");
        }
    }
}
