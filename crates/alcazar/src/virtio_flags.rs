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

/// The usage shown with a bad `--net` value.
const NET_USAGE: &str =
    "use user[,hostfwd=tcp:HOSTPORT-:GUESTPORT]...[,mac=MAC], passt=SOCKET[,mac=MAC], \
     tap=NAME[,mac=MAC] or tap[,host=A.B.C.D/N][,mac=MAC]";

/// Parses one `--net` value: the backend first (`user`, `passt=SOCKET`,
/// `tap=NAME` or `tap`), then `host=A.B.C.D/N` (tap), `hostfwd=..`
/// (user, repeatable) and `mac=..` in any order, comma-separated.
pub fn parse_net(text: &str) -> Result<Table, ConfigError> {
    let bad = |why: &str| ConfigError::new("--net", format!("\"{text}\""), why, NET_USAGE);
    let mut items = text.split(',');
    let mut params = Table::new();
    let first = items.next().unwrap_or_default();
    let backend = match first.split_once('=') {
        Some(("tap", name)) if !name.is_empty() => {
            params.insert("tap".into(), Value::String(name.into()));
            "tap"
        }
        Some(("passt", socket)) if !socket.is_empty() => {
            params.insert("passt".into(), Value::String(socket.into()));
            "passt"
        }
        None if first == "tap" => "tap",
        None if first == "user" => {
            params.insert("user".into(), Value::Boolean(true));
            "user"
        }
        _ => {
            return Err(bad(
                "the backend must come first: user, passt=SOCKET, tap or tap=NAME",
            ))
        }
    };
    let mut forwards = Vec::new();
    for item in items {
        let (key, value) = item
            .split_once('=')
            .ok_or_else(|| bad(&format!("\"{item}\" is not KEY=VALUE")))?;
        let key = match (key, backend) {
            ("host", "tap") => "host_ip",
            ("hostfwd", "user") => {
                forwards.push(Value::String(value.into()));
                continue;
            }
            ("mac", _) => "mac",
            ("host" | "hostfwd", _) => {
                return Err(bad(&format!("{key} does not go with {backend}")));
            }
            _ => return Err(bad(&format!("unknown option \"{key}\""))),
        };
        if params
            .insert(key.into(), Value::String(value.into()))
            .is_some()
        {
            return Err(bad(&format!("{key} is given twice")));
        }
    }
    if !forwards.is_empty() {
        params.insert("hostfwd".into(), Value::Array(forwards));
    }
    Ok(params)
}

/// The kernel parameter that tells the default guest's `/init` to
/// configure `eth0` by DHCP (added for cards backed by passt, which
/// serves DHCP; a TAP has no DHCP server, so TAP guests do not wait).
pub const DHCP_PARAMETER: &str = "alcazar.net=dhcp";

/// With a card backed by passt (`--net user`, `--net passt=`, or the
/// config's `user`/`passt`), tells a Linux guest's `/init` to run DHCP.
pub fn apply_net_cmdline(config: &mut VmConfig) {
    use alcazar_vmm::config::device::DeviceConfig;
    use alcazar_vmm::config::net::NetBackendConfig;
    let passt = config.devices.iter().any(
        |d| matches!(&d.config, DeviceConfig::VirtioNet(c) if c.backend != NetBackendConfig::Tap),
    );
    if let (true, BootSource::Linux { cmdline, .. }) = (passt, &mut config.boot) {
        if !cmdline.split_whitespace().any(|w| w == DHCP_PARAMETER) {
            cmdline.push(' ');
            cmdline.push_str(DHCP_PARAMETER);
        }
    }
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
        let t = parse_net("user,hostfwd=tcp:8080-:80,hostfwd=udp:53-:53").unwrap();
        assert_eq!(t.get("user").and_then(|v| v.as_bool()), Some(true));
        let fwd: Vec<&str> = t["hostfwd"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        assert_eq!(fwd, ["tcp:8080-:80", "udp:53-:53"]);
        let t = parse_net("passt=/run/passt.sock,mac=52:54:00:00:00:02").unwrap();
        assert_eq!(s(&t, "passt").as_deref(), Some("/run/passt.sock"));
    }

    #[test]
    fn bad_net_values_say_what_is_wrong() {
        for (text, why) in [
            ("usr", "backend must come first"),
            ("passt=", "backend must come first"),
            ("tap,hostfwd=tcp:1-:2", "hostfwd does not go with tap"),
            ("user,host=10.0.2.1/24", "host does not go with user"),
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
