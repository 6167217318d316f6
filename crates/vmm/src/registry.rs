//! The device registry: builds each device of a [`DeviceSpec`] list and
//! says which bus ranges it claims — Palacios's `device_register` idea,
//! with the classes and their typed settings in [`crate::config::device`].
//! The core never knows a device by name.
//!
//! `virtio-net` attaches to the TAP interface `tap`, creating it if it
//! does not exist (no `tap`: a new `alcazarN`); with `host_ip` the host
//! end gets that address (prefix from `/N` or `netmask`, else /24) and is
//! brought up. Creating or addressing an interface needs `CAP_NET_ADMIN`.
//! With `user` it starts passt ([`crate::passt`]; it ends when the VM
//! stops) and with `passt` it connects to a running one; either way the
//! connection is shut down when the VM stops, so passt takes the next
//! client (the same VM after a reboot).
//!
//! The chipset ([`crate::platform`]: 8259A pair, IOAPIC, PIT, RTC) is not
//! in the registry: every PC has exactly one. Registry devices raise ISA
//! interrupts through it (`irq` keys name the ISA line).
//!
//! A device that the host must reach while the VM runs (a console that
//! takes keystrokes, the power button) hands back a [`HostHook`]; the VM
//! keeps the hooks, whatever device offers them.

use std::path::Path;
use std::sync::{Arc, Mutex};

use alcazar_core::bus::SharedDevice;
use alcazar_core::{layout, IoSpace, VmControl};
use alcazar_devices::passt::PasstStream;
use alcazar_devices::tap::Tap;
use alcazar_devices::virtio::block::{BlockError, VirtioBlock};
use alcazar_devices::virtio::console::VirtioConsole;
use alcazar_devices::virtio::net::VirtioNet;
use alcazar_devices::virtio::net_backend::{NetBackend, TapBackend};
use alcazar_devices::virtio::rng::VirtioRng;
use alcazar_devices::virtio::VirtioDevice;
use alcazar_devices::{acpi_pm, i8042, system_control};
use alcazar_devices::{AcpiPm, DebugCon, DebugExit, SystemControlB, Uart16550, I8042};

pub use crate::config::device::{class, default_devices, DeviceClass, CLASSES};
use crate::config::device::{
    DebugExitConfig, DebugconConfig, DeviceConfig, SerialConfig, VirtioBlkConfig,
    VirtioConsoleConfig, VirtioNetConfig,
};
use crate::config::net::NetBackendConfig;
use crate::config::{ConsoleTarget, DeviceSpec};
use crate::console::{sink_for, watched_sink_for, ConsoleInputTarget, ConsoleTail, SharedTerminal};
use crate::disk_lock::{DiskLock, DiskLockError};
use crate::error::ConfigError;
use crate::pci::PciBus;
use crate::platform::Chipset;

/// What a device constructor gets to work with.
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
    /// Where the guest console's output is remembered.
    pub tail: &'a Arc<ConsoleTail>,
    /// Where terminal-bound console output goes.
    pub terminal: &'a SharedTerminal,
    /// The VM's `serial` target: the console UART's output.
    pub serial: &'a ConsoleTarget,
}

/// Presses a machine's power button; returns whether the guest was told
/// (it enabled the button's event).
pub type PowerButton = Arc<dyn Fn() -> bool + Send + Sync>;

/// Something a device offers the host while the VM runs.
#[derive(Clone)]
pub enum HostHook {
    /// Where the terminal's keystrokes can go. The VM picks the virtio
    /// console over the console UART (a user who asked for `hvc0` types
    /// there).
    ConsoleInput(ConsoleInputTarget),
    /// The ACPI power button.
    PowerButton(PowerButton),
    /// The 8042 keyboard controller, for a VGA display's keyboard input.
    Keyboard(Arc<Mutex<I8042>>),
}

/// A device ready to be put on the bus.
#[derive(Default)]
pub struct BuiltDevice {
    /// The ranges it claims, each with the bus device answering there.
    pub ranges: Vec<(IoSpace, u64, u64, SharedDevice)>,
    /// What it offers the host.
    pub hooks: Vec<HostHook>,
    /// The PCI slot it was given, for a device on the PCI bus (a BIOS
    /// boot order names PCI devices by slot).
    pub pci_slot: Option<u8>,
}

impl BuiltDevice {
    fn one(space: IoSpace, base: u64, len: u64, dev: SharedDevice) -> Self {
        BuiltDevice {
            ranges: vec![(space, base, len, dev)],
            ..Default::default()
        }
    }
}

/// The index in `specs` of the UART that is the guest console: the one
/// that says `console = true`, else the first that does not say `false`.
pub fn console_uart(specs: &[DeviceSpec]) -> Option<usize> {
    let uarts = || {
        specs
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match &s.config {
                DeviceConfig::Serial(c) => Some((i, c.console)),
                _ => None,
            })
    };
    uarts()
        .find(|(_, c)| *c == Some(true))
        .or_else(|| uarts().find(|(_, c)| *c != Some(false)))
        .map(|(i, _)| i)
}

/// Builds the device `spec` describes; `is_console` says whether it is
/// the guest console UART ([`console_uart`]).
pub fn build(
    spec: &DeviceSpec,
    is_console: bool,
    ctx: &BuildContext<'_>,
) -> Result<BuiltDevice, ConfigError> {
    match &spec.config {
        DeviceConfig::Serial(c) => Ok(build_serial(c, is_console, ctx)),
        DeviceConfig::I8042 => Ok(build_i8042(ctx)),
        DeviceConfig::SystemControl => Ok(build_system_control(ctx)),
        DeviceConfig::DebugExit(c) => Ok(build_debug_exit(c, ctx)),
        DeviceConfig::Debugcon(c) => Ok(build_debugcon(c, ctx)),
        DeviceConfig::AcpiPm => Ok(build_acpi_pm(ctx)),
        DeviceConfig::VirtioRng => build_virtio_rng(spec, ctx),
        DeviceConfig::VirtioBlk(c) => build_virtio_blk(spec, c, ctx),
        DeviceConfig::VirtioNet(c) => build_virtio_net(spec, c, ctx),
        DeviceConfig::VirtioConsole(c) => build_virtio_console(spec, c, ctx),
        // IDE drives share one controller, which the machine builds once
        // it knows them all (crate::ide).
        DeviceConfig::IdeDisk(_) | DeviceConfig::IdeCdrom(_) => Ok(BuiltDevice::default()),
    }
}

fn build_serial(c: &SerialConfig, is_console: bool, ctx: &BuildContext<'_>) -> BuiltDevice {
    let output = match (&c.output, is_console) {
        (Some(o), _) => o.clone(),
        (None, true) => ctx.serial.clone(),
        (None, false) => ConsoleTarget::None,
    };
    let sink = if is_console {
        watched_sink_for(&output, ctx.tail, ctx.terminal)
    } else {
        sink_for(&output, ctx.terminal)
    };
    let uart = Arc::new(Mutex::new(Uart16550::new(sink, ctx.chipset.isa_irq(c.irq))));
    BuiltDevice {
        ranges: vec![(IoSpace::Port, u64::from(c.port), 8, uart.clone())],
        hooks: if is_console {
            vec![HostHook::ConsoleInput(ConsoleInputTarget::Uart(uart))]
        } else {
            Vec::new()
        },
        pci_slot: None,
    }
}

fn build_i8042(ctx: &BuildContext<'_>) -> BuiltDevice {
    let controller = Arc::new(Mutex::new(I8042::new(
        ctx.chipset.isa_irq(layout::KEYBOARD_ISA_IRQ),
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
    BuiltDevice {
        ranges,
        hooks: vec![HostHook::Keyboard(controller)],
        pci_slot: None,
    }
}

fn build_system_control(ctx: &BuildContext<'_>) -> BuiltDevice {
    let dev = Arc::new(Mutex::new(SystemControlB::with_pit(
        ctx.chipset.pit.clone(),
    )));
    BuiltDevice::one(IoSpace::Port, u64::from(system_control::PORT), 1, dev)
}

fn build_debug_exit(c: &DebugExitConfig, ctx: &BuildContext<'_>) -> BuiltDevice {
    let dev = Arc::new(Mutex::new(DebugExit::new(ctx.control.clone())));
    BuiltDevice::one(IoSpace::Port, u64::from(c.port), u64::from(c.size), dev)
}

fn build_debugcon(c: &DebugconConfig, ctx: &BuildContext<'_>) -> BuiltDevice {
    let output = c.output.as_ref().unwrap_or(ctx.serial);
    let dev = Arc::new(Mutex::new(DebugCon::new(sink_for(output, ctx.terminal))));
    BuiltDevice::one(IoSpace::Port, u64::from(c.port), 1, dev)
}

fn build_acpi_pm(ctx: &BuildContext<'_>) -> BuiltDevice {
    let dev = Arc::new(Mutex::new(AcpiPm::new(
        ctx.chipset.isa_irq(layout::SCI_ISA_IRQ),
        ctx.control.clone(),
        ctx.clock.clone(),
    )));
    // The RTC's alarm output sets RTC_STS, so a wake alarm ends S3.
    alcazar_core::bus::lock(&ctx.chipset.rtc).set_alarm_output(AcpiPm::rtc_alarm_line(&dev));
    let button = dev.clone();
    BuiltDevice {
        hooks: vec![HostHook::PowerButton(Arc::new(move || {
            alcazar_core::bus::lock(&button).press_power_button()
        }))],
        ..BuiltDevice::one(
            IoSpace::Port,
            u64::from(layout::ACPI_PM_BASE_PORT),
            u64::from(acpi_pm::PORT_COUNT),
            dev,
        )
    }
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

/// Takes the image lock for disk `spec` (exclusive, or shared when
/// `readonly`) and holds it until the VM stops (a reboot builds the VM
/// again and takes it again); a conflict is one error naming the fix.
pub(crate) fn lock_disk(
    spec: &DeviceSpec,
    path: &std::path::Path,
    readonly: bool,
    control: &Arc<VmControl>,
) -> Result<(), ConfigError> {
    let lock = DiskLock::acquire(path, readonly).map_err(|e| {
        let fix = match &e {
            DiskLockError::InUse { .. } if !readonly => {
                "stop the other user, or add readonly (read-only images may be shared)"
            }
            DiskLockError::InUse { .. } => "stop the VM that writes it",
            DiskLockError::Open { .. } if readonly => "give an existing, readable disk image",
            DiskLockError::Open { .. } => {
                "give an existing disk image you may write, or make it read-only"
            }
            DiskLockError::Lock { .. } => "put the image on a file system with file locks",
        };
        ConfigError::new(
            spec.key("path"),
            format!("\"{}\"", path.display()),
            e.to_string(),
            fix,
        )
    })?;
    let held = std::sync::Mutex::new(Some(lock));
    control.on_stop(Box::new(move || {
        held.lock().unwrap_or_else(|p| p.into_inner()).take();
    }));
    Ok(())
}

fn build_virtio_blk(
    spec: &DeviceSpec,
    c: &VirtioBlkConfig,
    ctx: &BuildContext<'_>,
) -> Result<BuiltDevice, ConfigError> {
    let (path, readonly) = (&c.path, c.readonly);
    {
        use std::os::unix::fs::FileTypeExt;
        let kind = std::fs::metadata(path).ok().map(|m| m.file_type());
        let what = match kind {
            Some(t) if t.is_file() || t.is_block_device() => None,
            Some(t) if t.is_dir() => Some("a directory"),
            Some(_) => Some("not a regular file or a block device"),
            None => None, // the open below says why
        };
        if let Some(what) = what {
            return Err(ConfigError::new(
                spec.key("path"),
                format!("\"{}\"", path.display()),
                what,
                "give a raw disk image file (e.g. made with `truncate -s 64M disk.img`)",
            ));
        }
    }
    // Lock first: a conflict must not depend on the image's size.
    lock_disk(spec, path, readonly, ctx.control)?;
    let mut disk = VirtioBlock::new(path, readonly).map_err(|e| {
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

fn build_virtio_net(
    spec: &DeviceSpec,
    c: &VirtioNetConfig,
    ctx: &BuildContext<'_>,
) -> Result<BuiltDevice, ConfigError> {
    let backend: Arc<dyn NetBackend> = match &c.backend {
        NetBackendConfig::Tap => open_tap(spec, c)?,
        NetBackendConfig::User { hostfwd } => {
            let process = crate::passt::PasstProcess::start(hostfwd)
                .map_err(|e| crate::passt::config_error(spec, &e))?;
            let stream = connect_passt(spec, process.socket(), ctx)?;
            // Ends with the VM (or with the control, if the VM is never
            // built).
            let held = Mutex::new(Some(process));
            ctx.control.on_stop(Box::new(move || {
                held.lock().unwrap_or_else(|p| p.into_inner()).take();
            }));
            stream
        }
        NetBackendConfig::Passt { socket } => connect_passt(spec, socket, ctx)?,
    };
    let net = VirtioNet::new(backend, c.mac, ctx.control.clone());
    add_pci(spec, ctx, Box::new(net))
}

/// Connects to passt at `socket`; the connection is shut down when the
/// VM stops.
fn connect_passt(
    spec: &DeviceSpec,
    socket: &Path,
    ctx: &BuildContext<'_>,
) -> Result<Arc<dyn NetBackend>, ConfigError> {
    let fd = crate::passt::connect(socket).map_err(|e| crate::passt::config_error(spec, &e))?;
    let stream = PasstStream::new(fd).map_err(|e| {
        ConfigError::new(
            spec.key("passt"),
            format!("{socket:?}"),
            e.to_string(),
            "give passt's socket",
        )
    })?;
    tracing::info!(?socket, "virtio-net on passt");
    let stream = Arc::new(stream);
    let weak = Arc::downgrade(&stream);
    ctx.control.on_stop(Box::new(move || {
        if let Some(s) = weak.upgrade() {
            s.close();
        }
    }));
    Ok(stream)
}

/// Opens (or creates and addresses) the card's TAP interface.
fn open_tap(spec: &DeviceSpec, c: &VirtioNetConfig) -> Result<Arc<dyn NetBackend>, ConfigError> {
    let (name, address) = (c.tap.as_deref(), c.host_address);
    let (key, shown) = match name {
        Some(n) => ("tap", format!("\"{n}\"")),
        None => ("class", "\"virtio-net\"".to_string()),
    };
    // An existing interface that is not a TAP (`lo`, `eth0`) cannot be
    // attached to, whoever asks.
    if let Some(n) = name {
        let sys = Path::new("/sys/class/net").join(n);
        if !n.contains('/') && sys.exists() && !sys.join("tun_flags").exists() {
            return Err(ConfigError::new(
                spec.key(key),
                shown,
                format!("interface {n} exists and is not a TAP"),
                "give the name of a TAP interface, or a new name for one the VMM creates",
            ));
        }
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let host_error = |e: &dyn std::fmt::Display| {
        let fix = if root {
            "check that /dev/net/tun exists (`modprobe tun`) and that the name is free or a TAP's"
        } else {
            "run as root (CAP_NET_ADMIN), or attach with tap=NAME to a tap made for you by \
             `ip tuntap add NAME mode tap user $USER` (needs /dev/net/tun mode 0666)"
        };
        ConfigError::new(spec.key(key), shown.clone(), e.to_string(), fix)
    };
    let tap = Tap::open(name.unwrap_or("alcazar%d")).map_err(|e| host_error(&e))?;
    match address {
        Some((addr, prefix)) => tap.set_ipv4(addr, prefix),
        None if name.is_none() => tap.set_up(),
        None => Ok(()),
    }
    .map_err(|e| host_error(&e))?;
    tracing::info!(interface = tap.name(), ?address, "virtio-net on a TAP");
    let backend = TapBackend::new(tap.into_fd()).map_err(|e| host_error(&e))?;
    Ok(Arc::new(backend))
}

fn build_virtio_console(
    spec: &DeviceSpec,
    c: &VirtioConsoleConfig,
    ctx: &BuildContext<'_>,
) -> Result<BuiltDevice, ConfigError> {
    let console = VirtioConsole::new(sink_for(&c.output, ctx.terminal));
    let input = console.input();
    let mut built = add_pci(spec, ctx, Box::new(console))?;
    built
        .hooks
        .push(HostHook::ConsoleInput(ConsoleInputTarget::Virtio(input)));
    Ok(built)
}

/// Puts a virtio device on the PCI bus; a full bus is the config's fault.
fn add_pci(
    spec: &DeviceSpec,
    ctx: &BuildContext<'_>,
    device: Box<dyn VirtioDevice>,
) -> Result<BuiltDevice, ConfigError> {
    let slot = ctx.pci.add_virtio(device).map_err(|e| {
        ConfigError::new(
            spec.key("class"),
            format!("\"{}\"", spec.class()),
            e.to_string(),
            "remove some PCI devices (31 slots, 512 MiB of BAR space)",
        )
    })?;
    Ok(BuiltDevice {
        pci_slot: Some(slot),
        ..Default::default()
    })
}
