//! The command line: verbs, flags, and how a VM's end becomes an exit
//! status.

use std::path::PathBuf;

use std::sync::Arc;

use alcazar_control::api::ApiVm;
use alcazar_control::hub::{ConsoleHub, HubTerminal};
use alcazar_core::StopReason;
use alcazar_vmm::config::{self, BootSource, VmConfig};
use alcazar_vmm::telemetry::Telemetry;
use alcazar_vmm::{registry, Vm, VmmError};
use clap::{Parser, Subcommand};

use crate::terminal;

/// Alcazar: an embeddable x86-64 virtual machine monitor.
#[derive(Debug, Parser)]
#[command(name = "alcazar", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a VM in the foreground (with no CONFIG, --kernel or --kit: the
    /// default Linux guest, fetched on first use).
    Run(Box<RunArgs>),
    /// List the tiny-guest kit's programs, or write one out as a flat binary.
    #[cfg(feature = "kit")]
    Kit(crate::kit::KitArgs),
    /// Measure engine speed on the kit's benchmark guests (guest MIPS).
    #[cfg(feature = "kit")]
    Bench(crate::bench::BenchArgs),
    /// List the device classes a config's [[device]] entries can use.
    Devices,
    /// Fetch, build and locate guest images (Debian's kernel + a busybox initramfs).
    Guest(crate::guest::GuestArgs),
    /// List the running VMs (name, state, engine, cpus, memory, uptime, pid).
    Ls,
    /// Pause a running VM: every vCPU stops and the guest clock stands still.
    Pause {
        /// The VM.
        name: String,
    },
    /// Resume a paused VM where it stopped.
    Resume {
        /// The VM.
        name: String,
    },
    /// Stop a VM: press its ACPI power button, and stop it anyway if the
    /// guest has not powered off within the timeout.
    Stop(crate::control::StopArgs),
    /// Reset a running VM: it is built again from its configuration and
    /// boots from the start (the console stays attached).
    Reboot {
        /// The VM.
        name: String,
    },
    /// Attach the terminal to a running VM's console (Ctrl-A D detaches).
    Console(crate::control::ConsoleArgs),
    /// Show a running VM's counters (exits, interrupts, device accesses).
    Telemetry(crate::control::TelemetryArgs),
    /// Show the machine's state as a tree (vCPUs, devices), or write a
    /// register of a paused VM.
    Inspect(crate::control::InspectArgs),
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// The VM's TOML config file.
    config: Option<PathBuf>,
    /// Engine: kvm, emu or auto.
    #[arg(long)]
    engine: Option<String>,
    /// Number of vCPUs.
    #[arg(long)]
    cpus: Option<String>,
    /// Guest memory, e.g. 256M or 2G.
    #[arg(long)]
    memory: Option<String>,
    /// COM1 output: stdio, file:PATH or none.
    #[arg(long)]
    serial: Option<String>,
    /// Boot this kit program instead of the config's boot source.
    #[cfg(feature = "kit")]
    #[arg(long, conflicts_with = "kernel")]
    kit: Option<String>,
    /// Boot this Linux kernel: a bzImage, or an ELF vmlinux with a PVH
    /// entry point (256 MiB of RAM unless --memory says otherwise).
    #[arg(long)]
    kernel: Option<PathBuf>,
    /// The initial RAM disk for --kernel (or for the config's kernel).
    #[arg(long)]
    initrd: Option<PathBuf>,
    /// The kernel command line (default: "console=ttyS0"; for the default
    /// guest "console=ttyS0 quiet cryptomgr.notests").
    #[arg(long)]
    cmdline: Option<String>,
    /// Run CMD in the Linux guest's shell, show its output, power off and
    /// exit with CMD's exit status.
    #[arg(long, value_name = "CMD")]
    exec: Option<String>,
    /// Which default Linux guest to boot when no kernel is given.
    #[arg(long, value_enum, default_value = "cloud")]
    guest: crate::guest::Flavor,
    /// Add a virtio entropy device (the guest's /dev/hwrng).
    #[arg(long)]
    rng: bool,
    /// Add a disk backed by a raw image file: virtio (the guest's
    /// /dev/vda, /dev/vdb, ... in flag order; ids disk0, disk1, ...) or,
    /// with `,if=ide`, an ATA disk on the IDE controller; `,readonly`
    /// makes it read-only. Repeatable.
    #[arg(long, value_name = "PATH[,readonly][,if=virtio|ide]")]
    disk: Vec<String>,
    /// A CD-ROM drive on the IDE controller (id cd0) holding this ISO 9660
    /// image; the BIOS boots it (implies --firmware seabios).
    #[arg(long, value_name = "ISO")]
    cdrom: Option<String>,
    /// Add a virtio network card (repeatable):
    /// user[,hostfwd=tcp:HOSTPORT-:GUESTPORT]... starts passt (no root;
    /// DHCP, DNS, outbound TCP/UDP/ICMP, the gateway reaches the host's
    /// loopback); passt=SOCKET connects to a running passt;
    /// tap=NAME[,mac=MAC] attaches to interface NAME (created if missing);
    /// tap[,host=A.B.C.D/N][,mac=MAC] creates alcazarN and gives the host
    /// end that address. Creating or addressing a tap needs root.
    #[arg(long, value_name = "SPEC")]
    net: Vec<String>,
    /// The console the terminal is attached to: serial (COM1, ttyS0) or
    /// virtio (a virtio console, hvc0, with a login prompt for root,
    /// no password; COM1's output then goes to --serial, default none).
    #[arg(long, value_enum, default_value = "serial")]
    console: crate::virtio_flags::ConsoleKind,
    /// Print the telemetry summary (exits, interrupts, device accesses and
    /// the time spent in each) when the VM stops; also times every device
    /// access for the live `alcazar telemetry` (costs some speed).
    #[arg(long)]
    telemetry: bool,
    /// The VM's name (default: the config's name, or the kit program's,
    /// or "linux"; with a -2, -3, ... suffix if another VM has it).
    #[arg(long)]
    name: Option<String>,
    /// Where the VM serves its HTTP/JSON API: a socket path, or "none"
    /// (default: $XDG_RUNTIME_DIR/alcazar/NAME.sock).
    #[arg(long, value_name = "PATH|none")]
    api_socket: Option<String>,
    /// Start the VM in the background and return; `alcazar console NAME`
    /// attaches to it, `alcazar stop NAME` stops it.
    #[arg(long, conflicts_with = "exec")]
    detach: bool,
    /// The firmware: seabios (a PC BIOS that boots the machine's disks
    /// and CD-ROMs) or none (the VMM loads the guest itself). Default:
    /// seabios with --cdrom or --boot, or when a --disk has a boot sector
    /// and no --kernel, --kit or --exec is given; else none.
    #[arg(long, value_name = "seabios|none")]
    firmware: Option<String>,
    /// Boot order for the BIOS, device ids separated by commas (disk0,
    /// the first --disk; cd0, the --cdrom; virtio or IDE disks); implies
    /// --firmware seabios.
    #[arg(long, value_name = "ID,...")]
    boot: Option<String>,
    /// Offer the BIOS boot menu (press Esc during the BIOS's start).
    #[arg(long)]
    boot_menu: bool,
    /// The screen of a BIOS boot: text (a VGA adapter whose text screen
    /// is drawn in this terminal, which becomes its keyboard; COM1's
    /// output then goes to --serial, default none) or none (the BIOS
    /// draws on COM1). Default: text when a BIOS boots with stdin and
    /// stdout on a terminal, else none.
    #[arg(long, value_name = "text|none")]
    display: Option<String>,
    /// The guest CPU: max (everything the engine implements: on emu,
    /// x86-64-v3 plus more), v1, v2 or v3 (the x86-64 levels), then
    /// features to hide, e.g. v3,-avx2 or max,-popcnt (features that need
    /// a hidden one go too).
    #[arg(long, value_name = "LEVEL[,-FEATURE]...")]
    cpu: Option<String>,
    /// The emu engine's tier: jit (hot code translated to host code; the
    /// default on x86-64) or interp (the interpreter alone).
    #[arg(long, value_name = "jit|interp")]
    emu_tier: Option<String>,
    /// Each vCPU's translated-code cache (emu engine, jit tier), e.g. 32M;
    /// flushed when full.
    #[arg(long, value_name = "SIZE")]
    emu_code_cache: Option<String>,
    /// When the guest reboots: restart (build the VM again and boot, as a
    /// PC does) or exit. Default: exit with --exec, else restart.
    #[arg(long, value_name = "restart|exit")]
    on_reboot: Option<String>,
    /// Run without the seccomp sandbox (for debugging: if the VMM dies of
    /// SIGSYS, a system call it made is missing from the allow-list).
    #[arg(long)]
    no_seccomp: bool,
}

/// Runs the chosen verb; returns the process exit status.
pub fn dispatch(cli: Cli) -> u8 {
    match cli.command {
        Command::Run(args) => run(*args),
        #[cfg(feature = "kit")]
        Command::Kit(args) => crate::kit::command(args),
        #[cfg(feature = "kit")]
        Command::Bench(args) => crate::bench::run(args),
        Command::Guest(args) => crate::guest::command(args),
        Command::Ls => crate::control::ls(),
        Command::Pause { name } => crate::control::pause_resume(&name, true),
        Command::Resume { name } => crate::control::pause_resume(&name, false),
        Command::Stop(args) => crate::control::stop(&args),
        Command::Reboot { name } => crate::control::reboot(&name),
        Command::Console(args) => crate::control::console(&args),
        Command::Telemetry(args) => crate::control::telemetry(&args),
        Command::Inspect(args) => crate::control::inspect(&args),
        Command::Devices => {
            for c in registry::CLASSES {
                println!(
                    "{:<16} {}  (keys: {})",
                    c.name,
                    c.description,
                    if c.keys.is_empty() {
                        "-".to_string()
                    } else {
                        c.keys.join(", ")
                    }
                );
            }
            0
        }
    }
}

/// The longest kernel command line x86 Linux keeps (COMMAND_LINE_SIZE,
/// NUL excluded).
const EXEC_CMDLINE_MAX: usize = 2047;

/// RAM of the default Linux guest, of a `--kernel` boot and of a BIOS
/// boot (an installer needs room) unless `--memory` says otherwise.
const DEFAULT_GUEST_MEMORY: u64 = 256 << 20;
/// The default guest's command line: the console on COM1, few messages,
/// and no crypto self-tests at boot (`cryptomgr.notests`: they check the
/// kernel's C crypto code against known answers, about 40% of the boot's
/// instructions on a software CPU).
const DEFAULT_GUEST_CMDLINE: &str = "console=ttyS0 quiet cryptomgr.notests";

/// The default Linux guest (fetched and cached on first use) as the
/// boot source of `config`; its RAM unless `--memory` was given.
fn use_default_guest(args: &RunArgs, config: &mut VmConfig) -> anyhow::Result<()> {
    let image = crate::guest::ensure(args.guest, true)?;
    config.name = "linux".into();
    if args.memory.is_none() {
        config.memory = DEFAULT_GUEST_MEMORY;
    }
    config.boot = BootSource::Linux {
        kernel: image.kernel,
        initrd: Some(image.initrd),
        cmdline: DEFAULT_GUEST_CMDLINE.into(),
    };
    Ok(())
}

/// Whether nothing says what to boot, so the default guest boots.
fn wants_default_guest(args: &RunArgs) -> bool {
    args.config.is_none()
        && kit_flag(args).is_none()
        && args.kernel.is_none()
        && !wants_firmware(args)
}

/// Whether the BIOS boots the machine: `--firmware seabios`; or, without
/// `--firmware none`, `--boot`, `--cdrom`, or a `--disk` with a boot
/// sector when nothing else says what to boot (no config, `--kernel`,
/// `--kit` or `--exec`).
fn wants_firmware(args: &RunArgs) -> bool {
    match args.firmware.as_deref() {
        Some("seabios") => true,
        Some(_) => false,
        None => {
            args.boot.is_some()
                || args.cdrom.is_some()
                || (args.config.is_none()
                    && args.kernel.is_none()
                    && kit_flag(args).is_none()
                    && args.exec.is_none()
                    && args.disk.iter().any(|d| disk_has_boot_sector(d)))
        }
    }
}

/// Whether a person is at the controls: stdin and stdout are terminals.
fn on_a_terminal() -> bool {
    use std::io::IsTerminal;
    std::io::stdin().is_terminal() && std::io::stdout().is_terminal()
}

/// Whether the image a `--disk` value names starts with a sector a BIOS
/// would boot: the signature 55h AAh at bytes 510-511 (an MBR or a
/// volume boot record). An image that cannot be read is not bootable
/// here; opening it later says why.
fn disk_has_boot_sector(value: &str) -> bool {
    use std::io::Read;
    let Ok(spec) = disk_spec(0, value) else {
        return false;
    };
    let path = match &spec.config {
        config::DeviceConfig::VirtioBlk(c) | config::DeviceConfig::IdeDisk(c) => &c.path,
        _ => return false,
    };
    let mut sector = [0u8; 512];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut sector))
        .is_ok_and(|()| sector[510..] == [0x55, 0xaa])
}

/// `--firmware`, `--boot` and `--boot-menu` as the boot source of
/// `config` (SeaBIOS, fetched on first use).
fn apply_firmware_args(args: &RunArgs, config: &mut VmConfig) -> Result<(), Failure> {
    check_firmware_flags(args)?;
    if !wants_firmware(args) {
        return Ok(());
    }
    let order: Vec<String> = args
        .boot
        .as_deref()
        .map(|b| {
            b.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    let seabios = crate::guest::firmware::seabios(true).map_err(Failure::Guest)?;
    let text = config.display == alcazar_vmm::config::Display::Text;
    config.boot = BootSource::Firmware {
        bios: seabios.bios,
        vga_bios: text.then_some(seabios.vga_bios),
        order,
        menu: args.boot_menu,
    };
    if config.name == alcazar_vmm::config::DEFAULT_NAME {
        config.name = "pc".into();
    }
    if args.memory.is_none() && args.config.is_none() {
        config.memory = DEFAULT_GUEST_MEMORY;
    }
    Ok(())
}

/// The firmware flags' own checks, before anything is fetched.
fn check_firmware_flags(args: &RunArgs) -> Result<(), Failure> {
    if let Some(f) = args.firmware.as_deref() {
        if f != "seabios" && f != "none" {
            return Err(alcazar_vmm::ConfigError::new(
                "--firmware",
                format!("\"{f}\""),
                "unknown firmware",
                "use seabios (a PC BIOS) or none (the VMM loads the guest)",
            )
            .into());
        }
    }
    if !wants_firmware(args) {
        if args.boot.is_some() || args.boot_menu {
            return Err(alcazar_vmm::ConfigError::new(
                if args.boot.is_some() {
                    "--boot"
                } else {
                    "--boot-menu"
                },
                "",
                "only a BIOS has a boot order or a boot menu",
                "drop --firmware none",
            )
            .into());
        }
        return Ok(());
    }
    if args.kernel.is_some() || kit_flag(args).is_some() {
        return Err(alcazar_vmm::ConfigError::new(
            "--firmware",
            "\"seabios\"",
            "the BIOS boots from disks, not a kernel or kit program given here",
            "drop --kernel/--kit, or use --firmware none",
        )
        .into());
    }
    Ok(())
}

/// Why `run` could not start a VM.
enum Failure {
    /// The VMM refused the configuration or failed.
    Vmm(VmmError),
    /// The default guest could not be fetched.
    Guest(anyhow::Error),
}

impl From<VmmError> for Failure {
    fn from(e: VmmError) -> Self {
        Failure::Vmm(e)
    }
}

impl From<alcazar_vmm::ConfigError> for Failure {
    fn from(e: alcazar_vmm::ConfigError) -> Self {
        Failure::Vmm(e.into())
    }
}

impl Failure {
    fn report(&self) -> u8 {
        match self {
            Failure::Vmm(e) => fail(e),
            Failure::Guest(e) => {
                eprintln!("alcazar: cannot get the default guest: {e:#}");
                1
            }
        }
    }
}

/// The boot kinds a config file may name.
fn boot_kinds() -> config::BootKinds {
    #[cfg(feature = "kit")]
    return crate::kit::boot_kinds();
    #[cfg(not(feature = "kit"))]
    return config::BootKinds::default();
}

/// Whether `--kit` was given.
fn kit_flag(args: &RunArgs) -> Option<&str> {
    #[cfg(feature = "kit")]
    return args.kit.as_deref();
    #[cfg(not(feature = "kit"))]
    {
        let _ = args;
        None
    }
}

fn config_from_args(args: &RunArgs) -> Result<VmConfig, Failure> {
    if args.exec.as_deref().is_some_and(|c| c.trim().is_empty()) {
        return Err(alcazar_vmm::ConfigError::new(
            "--exec",
            "\"\"",
            "an empty command",
            "give a command to run, or drop --exec for an interactive shell",
        )
        .into());
    }
    let mut config = match &args.config {
        Some(path) => VmConfig::from_file_with(path, &boot_kinds())?,
        // A placeholder boot: --kit, --kernel or the default guest
        // replaces it below.
        None => VmConfig::new(BootSource::Linux {
            kernel: PathBuf::new(),
            initrd: None,
            cmdline: String::new(),
        }),
    };
    let here = std::path::Path::new(".");
    if let Some(e) = &args.engine {
        config.engine = config::parse_engine("--engine", e)?;
    }
    if let Some(c) = &args.cpus {
        config.cpus = config::parse_cpus("--cpus", c)?;
    }
    if let Some(m) = &args.memory {
        config.memory = config::parse_memory("--memory", m)?;
    }
    if let Some(s) = &args.serial {
        config.serial = config::parse_console("--serial", s, here)?;
    }
    if let Some(d) = &args.display {
        config.display = config::parse_display("--display", d)?;
    } else if args.config.is_none() && wants_firmware(args) && on_a_terminal() {
        // A person at a terminal booting firmware sees the PC's screen,
        // as an installer or a boot menu expects.
        config.display = alcazar_vmm::config::Display::Text;
    }
    if config.display == alcazar_vmm::config::Display::Text && args.serial.is_none() {
        config.serial = config::ConsoleTarget::None;
    }
    if let Some(t) = &args.emu_tier {
        config.emu.tier = config::parse_emu_tier("--emu-tier", t)?;
    }
    if let Some(c) = &args.cpu {
        config.cpu = config::parse_cpu("--cpu", c)?;
    }
    if let Some(c) = &args.emu_code_cache {
        config.emu.code_cache = config::parse_code_cache("--emu-code-cache", c)?;
    }
    if let Some(r) = &args.on_reboot {
        config.on_reboot = Some(config::parse_reboot_action("--on-reboot", r)?);
    }
    #[cfg(feature = "kit")]
    if let Some(k) = kit_flag(args) {
        config.boot = crate::kit::boot_source("--kit", k)?;
        if args.config.is_none() {
            config.name = k.to_string();
        }
        config.devices.extend(crate::kit::devices(k)?);
    }
    if args.rng {
        config.devices.push(config::DeviceSpec::parse(
            config::Origin::Flag("--rng".into()),
            "virtio-rng",
            "rng0",
            &Default::default(),
            here,
        )?);
    }
    for (n, d) in args.disk.iter().enumerate() {
        config.devices.push(disk_spec(n, d)?);
    }
    if let Some(iso) = &args.cdrom {
        config.devices.push(cdrom_spec(iso)?);
    }
    crate::virtio_flags::apply(&args.net, args.console, args.serial.is_some(), &mut config)?;
    // Flags are checked first: a typo must not cost a download.
    check_linux_flags(args, &config)?;
    check_firmware_flags(args)?;
    if wants_default_guest(args) {
        use_default_guest(args, &mut config).map_err(Failure::Guest)?;
    }
    apply_firmware_args(args, &mut config)?;
    apply_linux_args(args, &mut config)?;
    crate::virtio_flags::apply_cmdline(args.console, &mut config);
    crate::virtio_flags::apply_net_cmdline(&mut config);
    if let Some(cmd) = &args.exec {
        let parameter = crate::guest::exec_parameter(cmd);
        // x86 Linux keeps at most COMMAND_LINE_SIZE (2048) bytes of its
        // command line, NUL included; the command travels in base64.
        let room = EXEC_CMDLINE_MAX.saturating_sub(match &config.boot {
            BootSource::Linux { cmdline, .. } => cmdline.len() + 1,
            _ => 0,
        });
        if parameter.len() > room {
            return Err(alcazar_vmm::ConfigError::new(
                "--exec",
                format!("({} bytes)", cmd.len()),
                format!(
                    "the command takes {} bytes of the kernel command line in base64, {room} are left",
                    parameter.len()
                ),
                "shorten the command, or put it in a script on a disk image",
            )
            .into());
        }
        match &mut config.boot {
            BootSource::Linux { cmdline, .. } => {
                cmdline.push(' ');
                cmdline.push_str(&parameter);
            }
            _ => {
                return Err(alcazar_vmm::ConfigError::new(
                    "--exec",
                    format!("\"{cmd}\""),
                    "only a Linux guest runs commands",
                    "boot a Linux kernel with the busybox initramfs of `alcazar guest fetch` (drop --kit)",
                )
                .into())
            }
        }
    }
    Ok(config)
}

/// One `--disk PATH[,readonly]` flag as a `virtio-blk` entry with id
/// `diskN`.
fn disk_spec(n: usize, value: &str) -> Result<config::DeviceSpec, VmmError> {
    const USAGE: &str = "use --disk PATH[,readonly][,if=virtio|ide]";
    // Options follow the path: PATH,readonly,if=ide. The path may hold
    // commas when an option follows it (`dir/b,c.img,readonly`).
    let mut parts: Vec<&str> = value.split(',').collect();
    let mut readonly = false;
    let mut class = "virtio-blk";
    let mut options = 0;
    while parts.len() > 1 {
        match parts.last().copied() {
            Some("readonly") => readonly = true,
            Some("if=ide") => class = "ide-disk",
            Some("if=virtio") => class = "virtio-blk",
            _ => break,
        }
        parts.pop();
        options += 1;
    }
    let path = parts.join(",");
    if let Some(opt) = parts
        .last()
        .filter(|_| parts.len() > 1)
        .filter(|o| options == 0 || o.starts_with("if="))
    {
        return Err(alcazar_vmm::ConfigError::new(
            "--disk",
            format!("\"{value}\""),
            format!("unknown option \"{opt}\""),
            USAGE,
        )
        .into());
    }
    if path.is_empty() {
        return Err(alcazar_vmm::ConfigError::new(
            "--disk",
            format!("\"{value}\""),
            "no image path",
            USAGE,
        )
        .into());
    }
    let mut params = toml::Table::new();
    params.insert("path".into(), toml::Value::String(path));
    params.insert("readonly".into(), toml::Value::Boolean(readonly));
    Ok(config::DeviceSpec::parse(
        config::Origin::Flag("--disk".into()),
        class,
        &format!("disk{n}"),
        &params,
        std::path::Path::new("."),
    )?)
}

/// `--cdrom ISO`: an IDE CD-ROM drive (id `cd0`) with the image in it.
fn cdrom_spec(value: &str) -> Result<config::DeviceSpec, VmmError> {
    let mut params = toml::Table::new();
    params.insert("path".into(), toml::Value::String(value.into()));
    Ok(config::DeviceSpec::parse(
        config::Origin::Flag("--cdrom".into()),
        "ide-cdrom",
        "cd0",
        &params,
        std::path::Path::new("."),
    )?)
}

/// `--kernel`, `--initrd` and `--cmdline`: a Linux boot, or changes to
/// the config's.
fn apply_linux_args(args: &RunArgs, config: &mut VmConfig) -> Result<(), VmmError> {
    let here = std::path::Path::new(".");
    let path =
        |key: &str, p: &std::path::Path| config::existing_file(key, &p.to_string_lossy(), here);
    if let Some(k) = &args.kernel {
        let kernel = path("--kernel", k)?;
        let cmdline = match &config.boot {
            BootSource::Linux { cmdline, .. } => cmdline.clone(),
            _ => alcazar_vmm::boot::linux::DEFAULT_CMDLINE.to_string(),
        };
        if args.config.is_none() {
            config.name = "linux".into();
            if args.memory.is_none() {
                config.memory = DEFAULT_GUEST_MEMORY;
            }
        }
        config.boot = BootSource::Linux {
            kernel,
            initrd: None,
            cmdline,
        };
    }
    if let BootSource::Linux {
        initrd, cmdline, ..
    } = &mut config.boot
    {
        if let Some(i) = &args.initrd {
            *initrd = Some(path("--initrd", i)?);
        }
        if let Some(c) = &args.cmdline {
            *cmdline = c.clone();
        }
    }
    Ok(())
}

/// `--initrd` and `--cmdline` need a Linux boot: `--kernel`, a config's
/// Linux boot, or the default guest (both filled in later).
fn check_linux_flags(args: &RunArgs, config: &VmConfig) -> Result<(), VmmError> {
    let is_linux = wants_default_guest(args)
        || args.kernel.is_some()
        || matches!(config.boot, BootSource::Linux { .. });
    for (flag, given) in [
        ("--initrd", args.initrd.is_some()),
        ("--cmdline", args.cmdline.is_some()),
    ] {
        if given && !is_linux {
            return Err(alcazar_vmm::ConfigError::new(
                flag,
                "(given)",
                "only a Linux boot takes it",
                "add --kernel PATH, or use a config whose [boot] kind is \"linux\"",
            )
            .into());
        }
    }
    Ok(())
}

fn fail_launch(e: &crate::launch::LaunchError) -> u8 {
    eprintln!("alcazar: {e}");
    e.status()
}

fn fail(e: &VmmError) -> u8 {
    eprintln!("alcazar: {e}");
    if e.is_usage() {
        2
    } else {
        1
    }
}

fn run(args: RunArgs) -> u8 {
    let mut config = match config_from_args(&args) {
        Ok(c) => c,
        Err(e) => return e.report(),
    };
    let api = match crate::launch::api_socket(&args.name, args.api_socket.as_deref(), &mut config) {
        Ok(a) => a,
        Err(e) => return fail_launch(&e),
    };
    let auto_named = args.name.is_none() && args.api_socket.is_none();
    if args.detach {
        return crate::launch::detach(&mut config, api, auto_named);
    }
    let signals = crate::signals::watch();
    let listener = match api.map(|p| crate::launch::listen(p, auto_named, &mut config)) {
        Some(Err(e)) => return fail_launch(&e),
        Some(Ok(l)) => Some(l),
        None => None,
    };
    let hub = Arc::new(ConsoleHub::new());
    // Every VM this process runs (a reboot builds a new one) writes its
    // terminal output into the same hub: attached consoles stay attached.
    let terminal: alcazar_vmm::console::SharedTerminal = Arc::new(HubTerminal::new(hub.clone()));
    // passt for `--net user` runs as long as this process runs VMs (a
    // reboot reconnects), and ends when this is dropped.
    let _passt = match alcazar_vmm::passt::start_user_networks(&mut config) {
        Ok(p) => p,
        Err(e) => return fail(&e.into()),
    };
    let mut vm = match Vm::create_with_terminal(&config, terminal.clone()) {
        Ok(vm) => vm,
        Err(e) => return fail(&e),
    };
    let (engine, why) = vm.engine();
    eprintln!(
        "alcazar: running \"{}\" on the {engine} engine ({why}); Ctrl-A X quits",
        vm.name()
    );
    let current = ApiVm::new(vm.handle(), hub.clone());
    let _ = signals.set(current.clone());
    let _server = match listener.map(|l| l.serve(current.clone())) {
        Some(Err(e)) => return fail_launch(&e.into()),
        Some(Ok(s)) => Some(s),
        None => None,
    };
    let on_hvc0 = args.console == crate::virtio_flags::ConsoleKind::Virtio;
    let interactive = on_hvc0
        || config.serial == config::ConsoleTarget::Stdio
        || config.display == alcazar_vmm::config::Display::Text;
    let _term = interactive.then(terminal::RawMode::enter).flatten();
    terminal::spawn_input(current.clone(), interactive);
    // Everything is open: from here on only the calls a running VMM makes.
    if !args.no_seccomp {
        let needs = alcazar_control::sandbox::Needs {
            api_socket: _server.is_some(),
            ..alcazar_control::sandbox::Needs::of(&config)
        };
        let violation = alcazar_control::sandbox::Violation::from_env();
        if let Err(e) = alcazar_control::sandbox::install(needs, violation) {
            eprintln!("alcazar: {e}");
            return 1;
        }
    }
    let (reason, handle, tail) = loop {
        // Timing every device access costs the emu engine's port I/O
        // about half again: only when telemetry was asked for.
        vm.machine().bus.set_timing(args.telemetry);
        let tail = vm.console_tail();
        let running = match vm.start() {
            Ok(r) => r,
            Err(e) => return fail(&e),
        };
        let handle = running.handle();
        current.set(handle.clone());
        if args.exec.is_some() {
            end_when_halted_for_good(handle.clone());
        }
        let reason = running.wait();
        let restart = handle.reboot_requested()
            || config.on_reboot.unwrap_or(if args.exec.is_some() {
                config::RebootAction::Exit
            } else {
                config::RebootAction::Restart
            }) == config::RebootAction::Restart;
        if reason != StopReason::Reset || !restart {
            // Attached console clients read what is left, then end.
            hub.end();
            break (reason, handle, tail);
        }
        // A reboot (the guest's, or one asked through the API): the same
        // machine, built again.
        tracing::info!("rebooting");
        hub.reopen();
        vm = match Vm::create_with_terminal(&config, terminal.clone()) {
            Ok(vm) => vm,
            Err(e) => return fail(&e),
        };
    };
    drop(_term);
    if args.telemetry {
        eprint!("{}", Telemetry::collect(handle.machine()).summary());
    }
    if matches!(
        reason,
        StopReason::GuestPanic(_) | StopReason::TripleFault { .. } | StopReason::Error(_)
    ) {
        print_tail(&tail);
    }
    if args.exec.is_some() {
        return exec_status(&reason);
    }
    report(&reason)
}

/// How long every vCPU must stay halted with interrupts off before an
/// `--exec` run gives up on the guest.
const HALTED_FOR_GOOD: std::time::Duration = std::time::Duration::from_secs(2);

/// For `--exec` runs: stops the VM when every vCPU has halted with
/// interrupts off (`halt -f`, a guest that crashed that way) and stayed
/// so for [`HALTED_FOR_GOOD`], instead of waiting for ever.
fn end_when_halted_for_good(handle: alcazar_vmm::vm::VmHandle) {
    use alcazar_vmm::lifecycle::VmState;
    let watch = move || {
        let mut since: Option<std::time::Instant> = None;
        loop {
            std::thread::sleep(std::time::Duration::from_millis(100));
            match handle.state() {
                VmState::Stopped => return,
                VmState::Halted => {
                    let t = *since.get_or_insert_with(std::time::Instant::now);
                    if t.elapsed() >= HALTED_FOR_GOOD {
                        eprintln!(
                            "alcazar: the guest halted every vCPU with interrupts off (as `halt -f` does); nothing can wake it, so the VM is stopped"
                        );
                        handle.stop(StopReason::Halted);
                        return;
                    }
                }
                _ => since = None,
            }
        }
    };
    if let Err(e) = std::thread::Builder::new()
        .name("halt-watch".into())
        .spawn(watch)
    {
        tracing::warn!("no halt watch: {e}");
    }
}

/// The guest console's last lines, for a VM that ended badly.
fn print_tail(tail: &alcazar_vmm::console::ConsoleTail) {
    let lines = tail.last_lines(20);
    if lines.is_empty() {
        return;
    }
    eprintln!("alcazar: the guest console's last lines:");
    for l in lines {
        eprintln!("  | {l}");
    }
}

/// The exit status of `run --exec`: the guest's `/init` writes the
/// command's status (0-255) to the debug-exit port, so it is the value
/// written, not the isa-debug-exit encoding.
fn exec_status(reason: &StopReason) -> u8 {
    match reason {
        StopReason::DebugExit(v) => (*v & 0xff) as u8,
        other => {
            eprintln!("alcazar: the command did not report its exit status: {other}");
            match other.exit_status() {
                0 => 1,
                s => s.clamp(1, 255) as u8,
            }
        }
    }
}

fn report(reason: &StopReason) -> u8 {
    let status = reason.exit_status();
    match reason {
        StopReason::Error(_) | StopReason::TripleFault { .. } | StopReason::GuestPanic(_) => {
            eprintln!("alcazar: {reason}")
        }
        _ => eprintln!("alcazar: {reason} (exit status {status})"),
    }
    status.clamp(0, 255) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blk(d: &config::DeviceSpec) -> &config::device::VirtioBlkConfig {
        match &d.config {
            config::DeviceConfig::VirtioBlk(c) => c,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn disk_flags_become_virtio_blk_entries() {
        let d = disk_spec(0, "a.img").unwrap();
        assert_eq!((d.class(), d.id.as_str()), ("virtio-blk", "disk0"));
        assert_eq!(blk(&d).path, std::path::Path::new("./a.img"));
        assert!(!blk(&d).readonly);
        assert_eq!(d.key("path"), "--disk (path)");
        let d = disk_spec(1, "dir/b,c.img,readonly").unwrap();
        assert_eq!(d.id, "disk1");
        assert_eq!(blk(&d).path, std::path::Path::new("./dir/b,c.img"));
        assert!(blk(&d).readonly);
        let d = disk_spec(2, "c.img,if=ide,readonly").unwrap();
        assert_eq!((d.class(), d.id.as_str()), ("ide-disk", "disk2"));
        for bad in [
            "a.img,ro",
            ",readonly",
            "",
            "a.img,if=scsi",
            "a.img,if=scsi,readonly",
        ] {
            let e = disk_spec(0, bad).unwrap_err().to_string();
            assert!(
                e.contains("--disk PATH[,readonly][,if=virtio|ide]"),
                "{bad}: {e}"
            );
        }
    }
}
