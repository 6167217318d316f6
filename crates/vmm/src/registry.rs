//! The device registry: device classes by name, Palacios's
//! `device_register` idea. A `[[device]]` entry names a class; the class's
//! constructor validates the entry's keys and returns the device with the
//! ranges it claims. The core never knows a device by name.
//!
//! | class | ports | keys |
//! |-------|-------|------|
//! | `serial` | 8 from `port` (0x3f8) | `port`, `irq` (4), `output` |
//! | `i8042` | 0x60, 0x64 | |
//! | `system-control` | 0x61 | |
//! | `debug-exit` | `size` from `port` (0xf4, 4) | `port`, `size` |
//! | `debugcon` | `port` (0xe9) | `port`, `output` |
//! | `acpi-pm` | 0x600..0x60c | |
//! | `virtio-rng` | PCI (BAR 0 in the PCI window) | |
//! | `virtio-blk` | PCI (BAR 0 in the PCI window) | `path`, `readonly` (false) |
//! | `virtio-net` | PCI | `tap` (interface name), `host_ip` (`A.B.C.D[/N]`), `netmask`, `mac` |
//! | `virtio-console` | PCI | `output` (stdio) |
//!
//! `virtio-net` attaches to the TAP interface `tap`, creating it if it
//! does not exist (no `tap`: a new `alcazarN`); with `host_ip` the host
//! end gets that address (prefix from `/N` or `netmask`, else /24) and is
//! brought up. Creating or addressing an interface needs `CAP_NET_ADMIN`.
//!
//! The chipset ([`crate::platform`]: 8259A pair, IOAPIC, PIT, RTC) is not
//! in the registry: every PC has exactly one. Registry devices raise ISA
//! interrupts through it (`irq` keys name the ISA line).

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use alcazar_core::bus::SharedDevice;
use alcazar_core::{IoSpace, VmControl};
use alcazar_devices::tap::Tap;
use alcazar_devices::virtio::block::{BlockError, VirtioBlock};
use alcazar_devices::virtio::console::{ConsoleInput, VirtioConsole};
use alcazar_devices::virtio::net::{parse_mac, VirtioNet, DEFAULT_MAC};
use alcazar_devices::virtio::rng::VirtioRng;
use alcazar_devices::virtio::VirtioDevice;
use alcazar_devices::{acpi_pm, debug_exit, debugcon, i8042, system_control};
use alcazar_devices::{AcpiPm, DebugCon, DebugExit, SystemControlB, Uart16550, I8042};
use toml::{Table, Value};

use crate::config::{parse_console, show, ConsoleTarget, DeviceSpec};
use crate::console::{sink_for, watched_sink_for, ConsoleTail};
use crate::error::ConfigError;
use crate::pci::PciBus;
use crate::platform::Chipset;

/// What a class constructor gets to work with.
pub struct BuildContext<'a> {
    /// The VM's stop switch (for devices that end the VM).
    pub control: &'a Arc<VmControl>,
    /// The VM's guest clock (for devices that keep time).
    pub clock: &'a Arc<alcazar_core::GuestClock>,
    /// The chipset: where ISA interrupt lines go, and the PIT port 0x61
    /// reads.
    pub chipset: &'a Chipset,
    /// The PCI bus, for PCI devices (virtio).
    pub pci: &'a PciBus,
    /// Where the guest console (COM1) output is remembered.
    pub tail: &'a Arc<ConsoleTail>,
    /// Where terminal-bound console output is kept for attach clients.
    pub hub: &'a Arc<crate::console_hub::ConsoleHub>,
    /// COM1's output (the `serial` key / `--serial` flag).
    pub serial: &'a ConsoleTarget,
    /// Directory relative output paths are resolved against.
    pub base: &'a Path,
}

/// Presses a machine's power button; returns whether the guest was told
/// (it enabled the button's event).
pub type PowerButton = Arc<dyn Fn() -> bool + Send + Sync>;

/// A device ready to be put on the bus.
#[derive(Default)]
pub struct BuiltDevice {
    /// The ranges it claims, each with the bus device answering there.
    pub ranges: Vec<(IoSpace, u64, u64, SharedDevice)>,
    /// Set for UARTs: where host input goes.
    pub uart: Option<Arc<Mutex<Uart16550>>>,
    /// Set for virtio consoles: where host input goes.
    pub console: Option<ConsoleInput>,
    /// Set for the ACPI PM block: the power button.
    pub power_button: Option<PowerButton>,
}

impl BuiltDevice {
    fn one(space: IoSpace, base: u64, len: u64, dev: SharedDevice) -> Self {
        BuiltDevice {
            ranges: vec![(space, base, len, dev)],
            ..Default::default()
        }
    }
}

type Constructor = fn(&DeviceSpec, &BuildContext<'_>) -> Result<BuiltDevice, ConfigError>;

/// A device class.
pub struct DeviceClass {
    /// The name used in `class = "..."`.
    pub name: &'static str,
    /// One line on what it is.
    pub description: &'static str,
    /// The keys its entries accept (besides `class` and `id`).
    pub keys: &'static [&'static str],
    constructor: Constructor,
}

/// Every device class, in the order defaults are created.
pub static CLASSES: &[DeviceClass] = &[
    DeviceClass {
        name: "serial",
        description: "16550A UART",
        keys: &["port", "irq", "output"],
        constructor: build_serial,
    },
    DeviceClass {
        name: "i8042",
        description: "8042 keyboard controller (reset line)",
        keys: &[],
        constructor: build_i8042,
    },
    DeviceClass {
        name: "system-control",
        description: "system control port B (0x61)",
        keys: &[],
        constructor: build_system_control,
    },
    DeviceClass {
        name: "debug-exit",
        description: "isa-debug-exit compatible VM exit port",
        keys: &["port", "size"],
        constructor: build_debug_exit,
    },
    DeviceClass {
        name: "debugcon",
        description: "port 0xe9 debug console",
        keys: &["port", "output"],
        constructor: build_debugcon,
    },
    DeviceClass {
        name: "acpi-pm",
        description: "ACPI PM1a event/control blocks and PM timer",
        keys: &[],
        constructor: build_acpi_pm,
    },
    DeviceClass {
        name: "virtio-rng",
        description: "virtio entropy device on PCI (host /dev/urandom)",
        keys: &[],
        constructor: build_virtio_rng,
    },
    DeviceClass {
        name: "virtio-blk",
        description: "virtio block device on PCI (a raw disk image file)",
        keys: &["path", "readonly"],
        constructor: build_virtio_blk,
    },
    DeviceClass {
        name: "virtio-net",
        description: "virtio network card on PCI, backed by a host TAP interface",
        keys: &["tap", "host_ip", "netmask", "mac"],
        constructor: build_virtio_net,
    },
    DeviceClass {
        name: "virtio-console",
        description: "virtio console on PCI (the guest's hvc0)",
        keys: &["output"],
        constructor: build_virtio_console,
    },
];

/// Looks a class up by name.
pub fn class(name: &str) -> Option<&'static DeviceClass> {
    CLASSES.iter().find(|c| c.name == name)
}

/// The standard PC devices, with the ids a `[[device]]` entry uses to
/// reconfigure one of them.
pub fn default_specs() -> Vec<DeviceSpec> {
    [
        ("serial", "com1"),
        ("i8042", "i8042"),
        ("system-control", "port61"),
        ("debug-exit", "debug-exit"),
        ("debugcon", "debugcon"),
        ("acpi-pm", "acpi-pm"),
    ]
    .into_iter()
    .map(|(class, id)| DeviceSpec {
        flag: None,
        index: 0,
        class: class.into(),
        id: id.into(),
        params: Table::new(),
    })
    .collect()
}

impl DeviceClass {
    /// Validates `spec`'s keys and builds the device.
    pub fn build(
        &self,
        spec: &DeviceSpec,
        ctx: &BuildContext<'_>,
    ) -> Result<BuiltDevice, ConfigError> {
        if let Some(k) = spec
            .params
            .keys()
            .find(|k| !self.keys.contains(&k.as_str()))
        {
            let known = if self.keys.is_empty() {
                "none".to_string()
            } else {
                self.keys.join(", ")
            };
            return Err(ConfigError::new(
                spec.key(k),
                show(&spec.params[k]),
                format!("unknown key for a {} device", self.name),
                format!("keys it takes besides class and id: {known}"),
            ));
        }
        (self.constructor)(spec, ctx)
    }
}

fn int_param(
    spec: &DeviceSpec,
    key: &str,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
    fix: &str,
) -> Result<u64, ConfigError> {
    match spec.params.get(key) {
        None => Ok(default),
        Some(Value::Integer(n)) if *n >= 0 && range.contains(&(*n as u64)) => Ok(*n as u64),
        Some(v) => Err(ConfigError::new(
            spec.key(key),
            show(v),
            "out of range",
            fix.to_string(),
        )),
    }
}

fn port_param(spec: &DeviceSpec, default: u16, width: u64) -> Result<u64, ConfigError> {
    let max = 0x1_0000 - width;
    int_param(
        spec,
        "port",
        u64::from(default),
        0..=max,
        &format!("give an I/O port from 0 to {max:#x}"),
    )
}

fn output_param(
    spec: &DeviceSpec,
    ctx: &BuildContext<'_>,
    default: &ConsoleTarget,
) -> Result<ConsoleTarget, ConfigError> {
    match spec.params.get("output") {
        None => Ok(default.clone()),
        Some(Value::String(s)) => parse_console(&spec.key("output"), s, ctx.base),
        Some(v) => Err(ConfigError::new(
            spec.key("output"),
            show(v),
            "must be a string",
            "use \"stdio\", \"none\" or \"file:PATH\"",
        )),
    }
}

fn build_serial(spec: &DeviceSpec, ctx: &BuildContext<'_>) -> Result<BuiltDevice, ConfigError> {
    let port = port_param(spec, 0x3f8, 8)?;
    let irq = int_param(spec, "irq", 4, 0..=15, "give an ISA IRQ from 0 to 15")? as u8;
    let default_out = if spec.id == "com1" {
        ctx.serial.clone()
    } else {
        ConsoleTarget::None
    };
    let output = output_param(spec, ctx, &default_out)?;
    let sink = if spec.id == "com1" {
        watched_sink_for(&output, ctx.tail, ctx.hub)
    } else {
        sink_for(&output, ctx.hub)
    };
    let uart = Arc::new(Mutex::new(Uart16550::new(sink, ctx.chipset.isa_irq(irq))));
    Ok(BuiltDevice {
        ranges: vec![(IoSpace::Port, port, 8, uart.clone())],
        uart: Some(uart),
        ..Default::default()
    })
}

fn build_i8042(_: &DeviceSpec, ctx: &BuildContext<'_>) -> Result<BuiltDevice, ConfigError> {
    let controller = Arc::new(Mutex::new(I8042::new(
        ctx.chipset.isa_irq(1),
        ctx.control.clone(),
    )));
    let ranges = I8042::PORTS
        .iter()
        .map(|&(port, len)| {
            let adapter = i8042::I8042Port {
                controller: controller.clone(),
                offset: u64::from(port - i8042::DATA_PORT),
            };
            let dev: SharedDevice = Arc::new(Mutex::new(adapter));
            (IoSpace::Port, u64::from(port), u64::from(len), dev)
        })
        .collect();
    Ok(BuiltDevice {
        ranges,
        ..Default::default()
    })
}

fn build_system_control(
    _: &DeviceSpec,
    ctx: &BuildContext<'_>,
) -> Result<BuiltDevice, ConfigError> {
    let dev = Arc::new(Mutex::new(SystemControlB::with_pit(
        ctx.chipset.pit.clone(),
    )));
    Ok(BuiltDevice::one(
        IoSpace::Port,
        u64::from(system_control::PORT),
        1,
        dev,
    ))
}

fn build_debug_exit(spec: &DeviceSpec, ctx: &BuildContext<'_>) -> Result<BuiltDevice, ConfigError> {
    let size = int_param(
        spec,
        "size",
        u64::from(debug_exit::DEFAULT_SIZE),
        1..=4,
        "give a size of 1, 2 or 4 ports",
    )?;
    if size == 3 {
        return Err(ConfigError::new(
            spec.key("size"),
            3,
            "out of range",
            "give a size of 1, 2 or 4 ports",
        ));
    }
    let port = port_param(spec, debug_exit::DEFAULT_PORT, size)?;
    let dev = Arc::new(Mutex::new(DebugExit::new(ctx.control.clone())));
    Ok(BuiltDevice::one(IoSpace::Port, port, size, dev))
}

fn build_debugcon(spec: &DeviceSpec, ctx: &BuildContext<'_>) -> Result<BuiltDevice, ConfigError> {
    let port = port_param(spec, debugcon::DEFAULT_PORT, 1)?;
    let output = output_param(spec, ctx, ctx.serial)?;
    let dev = Arc::new(Mutex::new(DebugCon::new(sink_for(&output, ctx.hub))));
    Ok(BuiltDevice::one(IoSpace::Port, port, 1, dev))
}

fn build_acpi_pm(_: &DeviceSpec, ctx: &BuildContext<'_>) -> Result<BuiltDevice, ConfigError> {
    let dev = Arc::new(Mutex::new(AcpiPm::new(
        ctx.chipset.isa_irq(acpi_pm::SCI_IRQ),
        ctx.control.clone(),
        ctx.clock.clone(),
    )));
    let button = dev.clone();
    Ok(BuiltDevice {
        power_button: Some(Arc::new(move || {
            alcazar_core::bus::lock(&button).press_power_button()
        })),
        ..BuiltDevice::one(
            IoSpace::Port,
            u64::from(acpi_pm::BASE_PORT),
            u64::from(acpi_pm::PORT_COUNT),
            dev,
        )
    })
}

fn build_virtio_rng(spec: &DeviceSpec, ctx: &BuildContext<'_>) -> Result<BuiltDevice, ConfigError> {
    let rng = VirtioRng::new().map_err(|e| {
        ConfigError::new(
            spec.key("class"),
            "\"virtio-rng\"",
            format!("cannot open /dev/urandom: {e}"),
            "run on a host with /dev/urandom",
        )
    })?;
    add_pci(spec, ctx, Box::new(rng))
}

fn build_virtio_blk(spec: &DeviceSpec, ctx: &BuildContext<'_>) -> Result<BuiltDevice, ConfigError> {
    let path = string_param(spec, "path", "give the path of a raw disk image")?
        .map(|p| ctx.base.join(p))
        .ok_or_else(|| {
            ConfigError::new(
                spec.key("path"),
                "(missing)",
                "a virtio-blk device needs a disk image",
                "add path = \"IMAGE\" (a raw image whose size is a multiple of 512 bytes)",
            )
        })?;
    let readonly = match spec.params.get("readonly") {
        None => false,
        Some(Value::Boolean(b)) => *b,
        Some(v) => {
            return Err(ConfigError::new(
                spec.key("readonly"),
                show(v),
                "must be a boolean",
                "use readonly = true or readonly = false",
            ))
        }
    };
    let mut disk = VirtioBlock::new(&path, readonly).map_err(|e| {
        let shown = path.display();
        let fix = match &e {
            BlockError::Open { .. } if readonly => "give an existing, readable disk image".into(),
            BlockError::Open { .. } => {
                "give an existing disk image you may write, or make it read-only".into()
            }
            BlockError::NotSectorMultiple { rounded, .. } => {
                format!("resize it to whole sectors, e.g. `truncate -s {rounded} {shown}`")
            }
            BlockError::Empty(_) => format!("give it a size, e.g. `truncate -s 64M {shown}`"),
        };
        ConfigError::new(spec.key("path"), format!("\"{shown}\""), e.to_string(), fix)
    })?;
    disk.set_id(&spec.id);
    add_pci(spec, ctx, Box::new(disk))
}

fn string_param<'a>(
    spec: &'a DeviceSpec,
    key: &str,
    fix: &str,
) -> Result<Option<&'a str>, ConfigError> {
    match spec.params.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(v) => Err(ConfigError::new(
            spec.key(key),
            show(v),
            "must be a string",
            fix.to_string(),
        )),
    }
}

/// The host end's address and prefix length from `host_ip`
/// (`A.B.C.D` or `A.B.C.D/N`) and `netmask` (`A.B.C.D`, contiguous).
fn host_address(spec: &DeviceSpec) -> Result<Option<(Ipv4Addr, u8)>, ConfigError> {
    let ip_fix = "give an IPv4 address like \"10.0.2.1/24\"";
    let Some(text) = string_param(spec, "host_ip", ip_fix)? else {
        if let Some(v) = spec.params.get("netmask") {
            return Err(ConfigError::new(
                spec.key("netmask"),
                show(v),
                "a netmask needs an address",
                "add host_ip, or drop netmask",
            ));
        }
        return Ok(None);
    };
    let bad = |why: &str| ConfigError::new(spec.key("host_ip"), format!("\"{text}\""), why, ip_fix);
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
    let from_mask = match string_param(spec, "netmask", mask_fix)? {
        None => None,
        Some(m) => {
            let bad_mask = || {
                ConfigError::new(
                    spec.key("netmask"),
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

fn build_virtio_net(spec: &DeviceSpec, ctx: &BuildContext<'_>) -> Result<BuiltDevice, ConfigError> {
    let mac = match string_param(spec, "mac", "give a MAC like \"52:54:00:12:34:56\"")? {
        None => DEFAULT_MAC,
        Some(m) => parse_mac(m).ok_or_else(|| {
            ConfigError::new(
                spec.key("mac"),
                format!("\"{m}\""),
                "not a unicast MAC address",
                "give six hex bytes like \"52:54:00:12:34:56\" (first byte even)",
            )
        })?,
    };
    let name = string_param(spec, "tap", "give an interface name like \"tap0\"")?;
    let address = host_address(spec)?;
    let (key, shown) = match name {
        Some(n) => ("tap", format!("\"{n}\"")),
        None => ("class", "\"virtio-net\"".to_string()),
    };
    let host_error = |e: &dyn std::fmt::Display| {
        ConfigError::new(
            spec.key(key),
            shown.clone(),
            e.to_string(),
            "run as root (CAP_NET_ADMIN), or attach with tap=NAME to a tap made for you by \
             `ip tuntap add NAME mode tap user $USER` (needs /dev/net/tun mode 0666)",
        )
    };
    let tap = Tap::open(name.unwrap_or("alcazar%d")).map_err(|e| host_error(&e))?;
    match address {
        Some((addr, prefix)) => tap.set_ipv4(addr, prefix),
        None if name.is_none() => tap.set_up(),
        None => Ok(()),
    }
    .map_err(|e| host_error(&e))?;
    tracing::info!(interface = tap.name(), ?address, "virtio-net on a TAP");
    let net =
        VirtioNet::new(tap.into_fd(), mac, ctx.control.clone()).map_err(|e| host_error(&e))?;
    add_pci(spec, ctx, Box::new(net))
}

fn build_virtio_console(
    spec: &DeviceSpec,
    ctx: &BuildContext<'_>,
) -> Result<BuiltDevice, ConfigError> {
    let output = output_param(spec, ctx, &ConsoleTarget::Stdio)?;
    let console = VirtioConsole::new(sink_for(&output, ctx.hub));
    let input = console.input();
    let mut built = add_pci(spec, ctx, Box::new(console))?;
    built.console = Some(input);
    Ok(built)
}

/// Puts a virtio device on the PCI bus; a full bus is the config's fault.
fn add_pci(
    spec: &DeviceSpec,
    ctx: &BuildContext<'_>,
    device: Box<dyn VirtioDevice>,
) -> Result<BuiltDevice, ConfigError> {
    ctx.pci.add_virtio(device).map_err(|e| {
        ConfigError::new(
            spec.key("class"),
            format!("\"{}\"", spec.class),
            e.to_string(),
            "remove some PCI devices (31 slots, 512 MiB of BAR space)",
        )
    })?;
    Ok(BuiltDevice::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(params: &[(&str, &str)]) -> DeviceSpec {
        let mut t = Table::new();
        for (k, v) in params {
            t.insert((*k).into(), Value::String((*v).into()));
        }
        DeviceSpec::from_flag("--net", "virtio-net", "net0", t)
    }

    #[test]
    fn host_addresses_take_a_prefix_or_a_netmask() {
        let a = |p: &[(&str, &str)]| host_address(&spec(p)).map_err(|e| e.to_string());
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
}
