//! A VM's life: create it from a config, run it until it stops.
//!
//! [`Vm::create`] does all the fallible set-up — memory, devices, boot
//! image, engine, vCPUs — before any guest code runs, so a bad config fails
//! early and leaves nothing behind. [`Vm::run`] starts one host thread per
//! vCPU, each running [`vcpu_loop`], and waits for the machine's stop
//! reason.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use alcazar_core::engine::{EngineKind, EngineVm, Vcpu, VcpuExit};
use alcazar_core::memory::{GuestMemory, MemoryMap};
use alcazar_core::{BusError, Machine, StopReason};

use crate::boot;
use crate::config::{DeviceSpec, VmConfig};
use crate::console::{ConsoleInputTarget, ConsoleTail, SharedTerminal, Stdout};
use crate::engine_select;
use crate::error::{ConfigError, VmmError};
use crate::firmware;
use crate::lifecycle::{Lifecycle, LifecycleError, VmState};
use crate::pci::PciBus;
use crate::platform::Chipset;
use crate::registry::{self, BuildContext, HostHook, PowerButton};
use alcazar_devices::pci::HostBridgeKind;

/// A created (not yet running) VM.
pub struct Vm {
    name: String,
    machine: Arc<Machine>,
    // Kept alive while the vCPUs run: it owns the engine's VM handle.
    _engine_vm: Box<dyn EngineVm>,
    vcpus: Vec<Box<dyn Vcpu>>,
    engine: EngineKind,
    engine_why: String,
    chipset: Chipset,
    pci: PciBus,
    tail: Arc<ConsoleTail>,
    shared: Arc<Shared>,
}

/// What a [`VmHandle`] reaches: everything about a VM that outlives the
/// move of its vCPUs into their threads.
struct Shared {
    name: String,
    engine: EngineKind,
    memory: u64,
    machine: Arc<Machine>,
    lifecycle: Lifecycle,
    console_input: Option<ConsoleInputTarget>,
    power_button: Option<PowerButton>,
    reboot: AtomicBool,
    /// The VGA adapter and the terminal its screen is drawn in.
    display: Option<(Arc<std::sync::Mutex<alcazar_devices::Vga>>, SharedTerminal)>,
}

impl std::fmt::Debug for Vm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vm")
            .field("name", &self.name)
            .field("engine", &self.engine)
            .field("vcpus", &self.vcpus.len())
            .finish_non_exhaustive()
    }
}

impl Vm {
    /// Builds the machine `config` describes, ready to run; console output
    /// for the terminal goes to the process's standard output.
    pub fn create(config: &VmConfig) -> Result<Vm, VmmError> {
        Self::create_with_terminal(config, Arc::new(Stdout))
    }

    /// Like [`Vm::create`], with terminal-bound console output
    /// ([`crate::config::ConsoleTarget::Stdio`]) going to `terminal`.
    pub fn create_with_terminal(
        config: &VmConfig,
        terminal: SharedTerminal,
    ) -> Result<Vm, VmmError> {
        let specs = device_specs(config)?;
        let payload = boot::load(&config.boot, config.memory)?;
        let (map, bridge) = match &payload {
            boot::Payload::Bios(image) => (
                MemoryMap::pc_firmware(config.memory, image.rom.len() as u64)?,
                HostBridgeKind::I440fx,
            ),
            _ => (MemoryMap::pc(config.memory)?, HostBridgeKind::Generic),
        };
        let memory = GuestMemory::new(map)?;
        let selected = engine_select::select(config.engine, &config.emu)?;
        let mut machine = Machine::new(memory, config.cpus);
        machine.cpuid.rules.extend(config.cpu.rules());
        let machine = Arc::new(machine);
        let engine_vm = selected.engine.create_vm(machine.clone())?;
        let chipset = Chipset::new(&machine, engine_vm.apic_bus())?;
        let tail = Arc::new(ConsoleTail::new(machine.control.clone()));
        let pci = PciBus::new(&machine, &chipset, engine_vm.io_events(), bridge)?;
        let consoles = add_devices(&machine, &chipset, &pci, &tail, &terminal, &specs, config)?;
        let ide = crate::ide::build(&machine, &chipset, &pci, &specs)?;
        let mut platform = firmware::Platform::describe(
            config.cpus,
            &engine_vm.cpuid_table(),
            chipset.ioapic_id(),
            &specs,
        );
        // ACPI S3 needs the PM block and an engine that can reset its
        // vCPUs for the wake (emu); under kvm `\_S3_` is not declared
        // and a write of SLP_TYP_S3 is ignored like any unsupported state.
        platform.s3 = engine_vm.can_reset_vcpus()
            && specs
                .iter()
                .any(|s| matches!(s.config, crate::config::DeviceConfig::AcpiPm));
        machine.control.allow_suspend(platform.s3);
        // The tables describe the machine as built, so they are written
        // after every device is in place.
        let rsdp = if payload.needs_firmware_tables() {
            Some(firmware::install(&machine.memory, &platform)?)
        } else {
            None
        };
        let vga = match (&payload, config.display) {
            (boot::Payload::Bios(image), crate::config::Display::Text) => {
                if image.vga_bios.is_none() {
                    return Err(ConfigError::new(
                        "boot.vga_bios",
                        "(missing)",
                        "a VGA text screen needs a VGA BIOS to set it up",
                        "add vga_bios = \"PATH\" (SeaBIOS's vgabios-isavga.bin) to [boot]",
                    )
                    .into());
                }
                Some(add_vga(&machine)?)
            }
            (_, crate::config::Display::Text) => {
                return Err(ConfigError::new(
                    "display",
                    "\"text\"",
                    "only a BIOS boot has a VGA text screen",
                    "add --firmware seabios (or --cdrom), or drop --display text",
                )
                .into())
            }
            _ => None,
        };
        if let boot::Payload::Bios(image) = &payload {
            add_fw_cfg(
                &machine,
                &platform,
                config,
                image,
                &specs,
                BootDrives {
                    ide: ide.as_ref(),
                    pci_slots: &consoles.pci_slots,
                },
                vga.is_some(),
            )?;
        }
        let start = payload.install(&machine.memory, config.cpus, rsdp)?;
        let mut vcpus = Vec::new();
        for id in 0..config.cpus {
            let mut vcpu = engine_vm.create_vcpu(id)?;
            start.prepare(vcpu.as_mut(), config.cpus)?;
            vcpus.push(vcpu);
        }
        tracing::info!(name = %config.name, engine = %selected.engine.kind(), why = %selected.why, "VM created");
        // The terminal's keystrokes go to the virtio console when there is
        // one (`--console virtio`), else to the console UART.
        // With a VGA screen the terminal's keys are a PC keyboard's.
        let keyboard = consoles
            .keyboard
            .clone()
            .filter(|_| vga.is_some())
            .map(|k| {
                ConsoleInputTarget::Keyboard(
                    k,
                    Arc::new(std::sync::Mutex::new(alcazar_devices::KeyTranslator::new())),
                )
            });
        let console_input = keyboard
            .or(consoles.virtio.clone())
            .or(consoles.uart.clone());
        let shared = Arc::new(Shared {
            name: config.name.clone(),
            engine: selected.engine.kind(),
            memory: config.memory,
            machine: machine.clone(),
            lifecycle: Lifecycle::new(
                machine.control.clone(),
                machine.clock.clone(),
                machine.timers.clone(),
                config.cpus,
            ),
            console_input,
            power_button: consoles.power_button,
            reboot: AtomicBool::new(false),
            display: vga.map(|v| (v, terminal.clone())),
        });
        Ok(Vm {
            name: config.name.clone(),
            engine: selected.engine.kind(),
            engine_why: selected.why,
            machine,
            _engine_vm: engine_vm,
            vcpus,
            chipset,
            pci,
            tail,
            shared,
        })
    }

    /// The VM's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The engine running the guest, and why it was chosen.
    pub fn engine(&self) -> (EngineKind, &str) {
        (self.engine, &self.engine_why)
    }

    /// The machine: memory, bus, hooks, stop control, counters.
    pub fn machine(&self) -> &Arc<Machine> {
        &self.machine
    }

    /// Where the terminal's keystrokes go: the first virtio console (the
    /// guest's `hvc0`) if the machine has one, else the console UART.
    pub fn console_input(&self) -> Option<ConsoleInputTarget> {
        self.shared.console_input.clone()
    }

    /// The last lines of the guest console (the console UART).
    pub fn console_tail(&self) -> Arc<ConsoleTail> {
        self.tail.clone()
    }

    /// The chipset: interrupt controllers, PIT, RTC.
    pub fn chipset(&self) -> &Chipset {
        &self.chipset
    }

    /// The PCI bus.
    pub fn pci(&self) -> &PciBus {
        &self.pci
    }

    /// A handle to control and observe the VM once it runs (pause,
    /// resume, stop, inspect, telemetry, console).
    pub fn handle(&self) -> VmHandle {
        VmHandle(self.shared.clone())
    }

    /// Runs every vCPU on its own thread until the machine stops; returns
    /// why it stopped.
    pub fn run(self) -> Result<StopReason, VmmError> {
        Ok(self.start()?.wait())
    }

    /// Starts the timer thread and one thread per vCPU, and returns at
    /// once; [`RunningVm::wait`] waits for the end.
    pub fn start(self) -> Result<RunningVm, VmmError> {
        let shared = self.shared.clone();
        let mut threads = Vec::new();
        threads.push(self.start_timer_thread()?);
        if let Some((vga, terminal)) = shared.display.clone() {
            let control = self.machine.control.clone();
            threads.push(
                std::thread::Builder::new()
                    .name("display".into())
                    .spawn(move || run_display(vga, terminal, control))
                    .map_err(|source| VmmError::Io {
                        what: "starting the display thread".into(),
                        source,
                    })?,
            );
        }
        shared.lifecycle.started();
        let halted = Arc::new(AtomicU32::new(0));
        for vcpu in self.vcpus {
            let mine = shared.clone();
            let halted = halted.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("vcpu{}", vcpu.id()))
                .spawn(move || {
                    let shared = mine;
                    let machine = &shared.machine;
                    // A bug in an engine or device must end this VM with an
                    // error, not leave the other threads waiting forever.
                    let run = std::panic::AssertUnwindSafe(|| {
                        vcpu_loop(vcpu, machine, &shared.lifecycle, &halted)
                    });
                    if std::panic::catch_unwind(run).is_err() {
                        machine.control.request_stop(StopReason::Error(
                            "a vCPU thread panicked (a VMM bug; see the message above)".into(),
                        ));
                    }
                });
            match spawned {
                Ok(t) => threads.push(t),
                Err(source) => {
                    // Nothing half-started: end the threads already running.
                    shared
                        .machine
                        .control
                        .request_stop(StopReason::Error("cannot start a vCPU thread".into()));
                    for t in threads {
                        let _ = t.join();
                    }
                    shared.lifecycle.stopped();
                    return Err(VmmError::Io {
                        what: "starting a vCPU thread".into(),
                        source,
                    });
                }
            }
        }
        Ok(RunningVm {
            handle: VmHandle(shared),
            threads,
            _engine_vm: self._engine_vm,
        })
    }
}

impl Vm {
    /// Starts the thread that drives the machine's timers
    /// ([`alcazar_core::timer::Timers::run`]) until the VM stops.
    fn start_timer_thread(&self) -> Result<std::thread::JoinHandle<()>, VmmError> {
        let timers = self.machine.timers.clone();
        let stopper = timers.clone();
        self.machine
            .control
            .on_stop(Box::new(move || stopper.stop()));
        std::thread::Builder::new()
            .name("timers".into())
            .spawn(move || timers.run())
            .map_err(|source| VmmError::Io {
                what: "starting the timer thread".into(),
                source,
            })
    }
}

/// A VM whose threads run; [`RunningVm::wait`] ends with it.
pub struct RunningVm {
    handle: VmHandle,
    threads: Vec<std::thread::JoinHandle<()>>,
    // The engine's VM handle lives until every vCPU thread has ended.
    _engine_vm: Box<dyn EngineVm>,
}

impl std::fmt::Debug for RunningVm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningVm")
            .field("name", &self.handle.name())
            .finish_non_exhaustive()
    }
}

impl RunningVm {
    /// The VM's control handle.
    pub fn handle(&self) -> VmHandle {
        self.handle.clone()
    }

    /// Waits until the VM stops (the guest ends it, or a handle's `stop`)
    /// and every thread has ended; returns why it stopped.
    pub fn wait(self) -> StopReason {
        let shared = &self.handle.0;
        let reason = shared.machine.control.wait();
        for t in self.threads {
            if t.join().is_err() {
                tracing::error!("a VM thread panicked");
            }
        }
        shared.lifecycle.stopped();
        reason
    }
}

/// A handle on a VM for whoever controls it while it runs: the embedder,
/// the API server. Cheap to clone; every method may be called from any
/// thread.
#[derive(Clone)]
pub struct VmHandle(Arc<Shared>);

impl std::fmt::Debug for VmHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VmHandle")
            .field("name", &self.0.name)
            .field("state", &self.state())
            .finish()
    }
}

/// How often [`VmHandle::shutdown`] presses the power button of a VM it
/// woke from ACPI S3, until the guest powers off.
pub const SHUTDOWN_PRESS_PERIOD: Duration = Duration::from_secs(2);

/// How [`VmHandle::shutdown`] ended the VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shutdown {
    /// The guest powered off after the power button (or had already
    /// stopped).
    Clean,
    /// The guest did not power off in time (or ignores the button): the
    /// VMM stopped it.
    Forced,
}

impl VmHandle {
    /// The VM's name.
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// The engine running it.
    pub fn engine(&self) -> EngineKind {
        self.0.engine
    }

    /// Guest RAM in bytes.
    pub fn memory(&self) -> u64 {
        self.0.memory
    }

    /// Number of vCPUs.
    pub fn cpus(&self) -> u32 {
        self.0.machine.vcpu_count()
    }

    /// The machine (memory, bus, counters).
    pub fn machine(&self) -> &Arc<Machine> {
        &self.0.machine
    }

    /// The VM's state: [`VmState::Halted`] while it runs but every vCPU
    /// has halted with interrupts off (or waits for a STARTUP IPI), at
    /// least one of them halted.
    pub fn state(&self) -> VmState {
        use alcazar_core::stats::Sleep;
        let state = self.0.lifecycle.state();
        let sleeps: Vec<Sleep> = self.0.machine.stats.iter().map(|s| s.sleep()).collect();
        let halted = sleeps.contains(&Sleep::HaltedInterruptsOff)
            && sleeps
                .iter()
                .all(|s| matches!(s, Sleep::HaltedInterruptsOff | Sleep::WaitingForSipi));
        if state == VmState::Running && halted {
            VmState::Halted
        } else {
            state
        }
    }

    /// Wall time since the VM started.
    pub fn uptime(&self) -> Duration {
        self.0.lifecycle.uptime()
    }

    /// Why the VM stopped, once it has.
    pub fn stop_reason(&self) -> Option<StopReason> {
        self.0.machine.control.reason()
    }

    /// The lifecycle: pause, resume, register writes, vCPU snapshots.
    pub fn lifecycle(&self) -> &Lifecycle {
        &self.0.lifecycle
    }

    /// Pauses every vCPU and the guest clock (see [`Lifecycle::pause`]).
    pub fn pause(&self) -> Result<(), LifecycleError> {
        self.0.lifecycle.pause()
    }

    /// Resumes a paused VM (see [`Lifecycle::resume`]). A suspended VM
    /// (ACPI S3) is woken the way a PC is, by its power button; an OS
    /// that woke from the button does not power off (Linux clears the
    /// event on the way back).
    pub fn resume(&self) -> Result<(), LifecycleError> {
        if self.state() == VmState::Suspended {
            tracing::info!("waking the suspended VM with the power button");
            return if self.press_power_button() {
                Ok(())
            } else {
                Err(LifecycleError::WrongState {
                    state: VmState::Suspended,
                    action: "wake (it has no ACPI power button)",
                })
            };
        }
        self.0.lifecycle.resume()
    }

    /// Stops the VM at once (`reason`, e.g. [`StopReason::UserQuit`]).
    pub fn stop(&self, reason: StopReason) {
        // A paused VM's threads are parked: the stop releases them.
        self.0.machine.control.request_stop(reason);
    }

    /// Presses the ACPI power button; returns whether the guest had
    /// enabled its event (an OS that listens powers off).
    pub fn press_power_button(&self) -> bool {
        self.0.power_button.as_ref().is_some_and(|press| press())
    }

    /// Ends the VM cleanly if it cooperates: resumes it if paused, presses
    /// the power button, waits up to `timeout` for the guest to power
    /// off, and stops it otherwise. A suspended VM is woken by a first
    /// press (as on a PC, a press while asleep only wakes), then pressed
    /// again every [`SHUTDOWN_PRESS_PERIOD`] until it powers off: the OS
    /// ignores presses until it has finished resuming.
    pub fn shutdown(&self, timeout: Duration) -> Shutdown {
        let control = &self.0.machine.control;
        if control.should_stop() {
            return Shutdown::Clean;
        }
        if self.state() == VmState::Paused {
            let _ = self.resume();
        }
        let deadline = std::time::Instant::now() + timeout;
        let asleep = self.state() == VmState::Suspended;
        if self.press_power_button() {
            loop {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                let wait = if asleep {
                    left.min(SHUTDOWN_PRESS_PERIOD)
                } else {
                    left
                };
                if control.wait_timeout(wait).is_some() {
                    return Shutdown::Clean;
                }
                if left <= wait {
                    break;
                }
                if self.state() != VmState::Suspended {
                    self.press_power_button();
                }
            }
        }
        self.stop(StopReason::UserQuit);
        Shutdown::Forced
    }

    /// Asks for a hard reset: the VM stops with [`StopReason::Reset`] and
    /// [`VmHandle::reboot_requested`] tells its runner to build it again.
    pub fn reboot(&self) {
        self.0.reboot.store(true, Ordering::SeqCst);
        self.stop(StopReason::Reset);
    }

    /// Whether the VM stopped because [`VmHandle::reboot`] asked for it.
    pub fn reboot_requested(&self) -> bool {
        self.0.reboot.load(Ordering::SeqCst)
    }

    /// Where console input goes (the virtio console if there is one, else
    /// COM1).
    pub fn console_input(&self) -> Option<&ConsoleInputTarget> {
        self.0.console_input.as_ref()
    }

    /// Types `bytes` on the guest console (blocks until the device took
    /// them, or the VM stops).
    pub fn console_write(&self, bytes: &[u8]) {
        if let Some(target) = &self.0.console_input {
            target.deliver(&self.0.machine.control, bytes);
        }
    }
}

/// The life of one vCPU thread: run until the VM stops, park while it is
/// paused, and turn the events only the VMM can act on into stop reasons.
pub fn vcpu_loop(
    mut vcpu: Box<dyn Vcpu>,
    machine: &Machine,
    lifecycle: &Lifecycle,
    halted: &AtomicU32,
) {
    let control = &machine.control;
    let id = vcpu.id();
    loop {
        match vcpu.run() {
            Ok(VcpuExit::Stopped) => {
                if control.should_stop() {
                    return;
                }
                if control.suspend_requested() {
                    match lifecycle.suspend(vcpu.as_mut()) {
                        Ok(true) if id == 0 => {
                            if let Err(why) = start_at_waking_vector(vcpu.as_mut(), &machine.memory)
                            {
                                control.request_stop(StopReason::Error(format!(
                                    "cannot wake the guest from ACPI S3: {why}"
                                )));
                            }
                        }
                        Ok(true) => {}
                        Ok(false) => return,
                        Err(e) => control.request_stop(StopReason::Error(format!(
                            "vCPU {id} cannot be reset for ACPI S3: {e}"
                        ))),
                    }
                }
                if control.pause_requested() {
                    lifecycle.park(vcpu.as_mut());
                }
            }
            Ok(VcpuExit::Shutdown) => control.request_stop(StopReason::TripleFault { vcpu: id }),
            Ok(VcpuExit::Halted) => {
                // The engine returns this only when nothing can ever wake
                // the vCPU (it has no local APIC: an embedder's bare
                // machine). When the last one halts, the VM is done.
                lifecycle.retire();
                if halted.fetch_add(1, Ordering::SeqCst) + 1 == machine.vcpu_count() {
                    control.request_stop(StopReason::Halted);
                }
                control.wait();
                return;
            }
            Err(e) => control.request_stop(StopReason::Error(e.to_string())),
        }
        if control.should_stop() {
            return;
        }
    }
}

/// Why vCPU 0 could not be started at the waking vector.
#[derive(Debug, thiserror::Error)]
enum WakeFailure {
    #[error(transparent)]
    Vector(#[from] firmware::acpi::WakeError),
    #[error(transparent)]
    Engine(#[from] alcazar_core::EngineError),
}

/// Points vCPU 0, just reset, at the waking vector the OS left in the
/// FACS (ACPI 6.5 §16.3.2, the platform's part of the wake): real mode at
/// CS:IP = vector >> 4 : vector & 0xf, or, for an X_Firmware_Waking_Vector,
/// flat 32-bit protected mode with paging off. The same for a direct boot
/// and a BIOS boot: the BIOS's own resume path is not taken (Linux
/// re-initializes what it needs itself).
fn start_at_waking_vector(vcpu: &mut dyn Vcpu, memory: &GuestMemory) -> Result<(), WakeFailure> {
    use alcazar_core::regs::{Segment, CR0_PE, RFLAGS_FIXED};
    use firmware::acpi::WakingVector;
    let vector = firmware::acpi::waking_vector(memory)?;
    let mut sregs = vcpu.sregs()?;
    let mut regs = vcpu.regs()?;
    regs.rflags = RFLAGS_FIXED;
    match vector {
        WakingVector::RealMode { cs, ip } => {
            sregs.cs = Segment::real_mode(cs, true);
            let data = Segment::real_mode(0, false);
            (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss) = (data, data, data, data, data);
            regs.rip = u64::from(ip);
        }
        WakingVector::Protected32 { eip } => {
            sregs.cs = Segment::flat32(0x08, true);
            let data = Segment::flat32(0x10, false);
            (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss) = (data, data, data, data, data);
            sregs.cr0 |= CR0_PE;
            regs.rip = u64::from(eip);
        }
    }
    tracing::info!(%vector, "ACPI S3: starting vCPU 0 at the waking vector");
    vcpu.set_sregs(&sregs)?;
    vcpu.set_regs(&regs)?;
    Ok(())
}

/// The default devices (unless disabled), with `[[device]]` entries that
/// reuse a default's id replacing it and the others appended.
fn device_specs(config: &VmConfig) -> Result<Vec<DeviceSpec>, VmmError> {
    let mut specs = if config.default_devices {
        registry::default_devices()
    } else {
        Vec::new()
    };
    for spec in &config.devices {
        match specs.iter_mut().find(|s| s.id == spec.id) {
            Some(existing) if existing.class() != spec.class() => {
                return Err(ConfigError::new(
                    spec.key("id"),
                    format!("\"{}\"", spec.id),
                    format!("that id is the default {} device", existing.class()),
                    "use another id, or the same class to reconfigure it",
                )
                .into());
            }
            Some(existing) => *existing = spec.clone(),
            None => specs.push(spec.clone()),
        }
    }
    Ok(specs)
}

/// The fw_cfg device a BIOS boot needs, on its ports: it tells the BIOS
/// the CPUs, the memory map, the ACPI tables of `platform`, the boot order
/// and where to show its screen (the console UART, until a VGA adapter
/// is there).
fn add_fw_cfg(
    machine: &Machine,
    platform: &firmware::Platform,
    config: &VmConfig,
    image: &boot::bios::BiosImage,
    specs: &[DeviceSpec],
    drives: BootDrives<'_>,
    vga: bool,
) -> Result<(), VmmError> {
    use alcazar_devices::fw_cfg::{FW_CFG_PORT, FW_CFG_PORT_COUNT};
    let serial_console = registry::console_uart(specs).and_then(|i| match &specs[i].config {
        crate::config::DeviceConfig::Serial(s) => Some(s.port),
        _ => None,
    });
    let bios = firmware::bios_config::BiosConfig {
        platform,
        ram: config.memory,
        map: machine.memory.map(),
        image,
        boot_paths: boot_paths(&image.order, specs, drives)?,
        serial_console: serial_console.filter(|_| !vga),
        vga,
    };
    let device = firmware::bios_config::fw_cfg_device(&bios, machine.memory.dma())?;
    machine.bus.insert(
        alcazar_core::IoSpace::Port,
        u64::from(FW_CFG_PORT),
        u64::from(FW_CFG_PORT_COUNT),
        "fw-cfg",
        Arc::new(std::sync::Mutex::new(device)),
    )?;
    Ok(())
}

/// The VGA adapter on its ports (0x3b0-0x3df) and its memory window
/// (0xa0000-0xbffff, MMIO in a BIOS machine's memory map).
fn add_vga(machine: &Machine) -> Result<Arc<std::sync::Mutex<alcazar_devices::Vga>>, VmmError> {
    use alcazar_devices::vga::{MMIO_BASE, MMIO_LEN, PORT_BASE, PORT_LEN};
    let (vga, ports, memory) = alcazar_devices::Vga::shared();
    machine.bus.insert(
        alcazar_core::IoSpace::Port,
        u64::from(PORT_BASE),
        u64::from(PORT_LEN),
        "vga",
        Arc::new(std::sync::Mutex::new(ports)),
    )?;
    machine.bus.insert(
        alcazar_core::IoSpace::Mmio,
        MMIO_BASE,
        MMIO_LEN,
        "vga-memory",
        Arc::new(std::sync::Mutex::new(memory)),
    )?;
    Ok(vga)
}

/// How often the VGA text screen is drawn in the terminal.
const DISPLAY_PERIOD: Duration = Duration::from_millis(40);

/// Draws the VGA text screen in `terminal` until the VM stops (only the
/// cells that changed; see `alcazar_devices::vga::render`).
fn run_display(
    vga: Arc<std::sync::Mutex<alcazar_devices::Vga>>,
    terminal: SharedTerminal,
    control: Arc<alcazar_core::VmControl>,
) {
    let mut renderer = alcazar_devices::vga::render::AnsiRenderer::new();
    while !control.should_stop() {
        let screen = alcazar_core::bus::lock(&vga).text_screen();
        let bytes = renderer.frame(&screen);
        if !bytes.is_empty() {
            terminal.write(&bytes);
            terminal.flush();
        }
        std::thread::sleep(DISPLAY_PERIOD);
    }
    terminal.write(alcazar_devices::vga::render::AnsiRenderer::restore());
    terminal.flush();
}

/// Where the drives a BIOS can boot from sit: the IDE controller's
/// drives and the PCI slots of the virtio devices.
#[derive(Clone, Copy)]
struct BootDrives<'a> {
    ide: Option<&'a crate::ide::IdeBuilt>,
    pci_slots: &'a [(String, u8)],
}

impl BootDrives<'_> {
    /// The Open Firmware device path SeaBIOS matches drive `id` against
    /// (its `bootprio_find_*`): `/pci@i0cf8/ide@S/drive@C/disk@U` for an
    /// IDE drive, `/pci@i0cf8/scsi@S` for a virtio-blk disk in slot S
    /// (SeaBIOS matches any node name at that slot; `scsi` is the name
    /// the mass-storage class 01h has in QEMU's paths). `None` if `id` is
    /// neither.
    fn path(&self, id: &str, specs: &[DeviceSpec]) -> Option<String> {
        if let Some(path) = self.ide.and_then(|ide| ide.boot_path(id)) {
            return Some(path);
        }
        let is_blk = specs
            .iter()
            .any(|s| s.id == id && matches!(s.config, crate::config::DeviceConfig::VirtioBlk(_)));
        let (_, slot) = self.pci_slots.iter().find(|(d, _)| d == id)?;
        is_blk.then(|| format!("/pci@i0cf8/scsi@{slot:x}"))
    }

    /// The ids of every bootable drive, for messages.
    fn ids(&self, specs: &[DeviceSpec]) -> Vec<String> {
        let ide = self.ide.map(|i| i.drives.iter().map(|(d, _)| d.clone()));
        let virtio = self
            .pci_slots
            .iter()
            .map(|(d, _)| d.clone())
            .filter(|d| self.path(d, specs).is_some());
        ide.into_iter().flatten().chain(virtio).collect()
    }
}

/// The BIOS boot order as device paths: each id of `order` must name an
/// IDE drive or a virtio-blk disk. An empty order with a CD-ROM drive
/// present boots the CD-ROM first, then the IDE disks (what `--cdrom`
/// users expect); otherwise the BIOS's own order.
fn boot_paths(
    order: &[String],
    specs: &[DeviceSpec],
    drives: BootDrives<'_>,
) -> Result<Vec<String>, VmmError> {
    let is_cd = |id: &str| {
        specs
            .iter()
            .any(|s| s.id == id && matches!(&s.config, crate::config::DeviceConfig::IdeCdrom(_)))
    };
    if order.is_empty() {
        let Some(ide) = drives.ide else {
            return Ok(Vec::new());
        };
        let mut ids: Vec<&String> = ide.drives.iter().map(|(id, _)| id).collect();
        if !ids.iter().any(|id| is_cd(id)) {
            return Ok(Vec::new());
        }
        ids.sort_by_key(|id| !is_cd(id));
        return Ok(ids.into_iter().filter_map(|id| ide.boot_path(id)).collect());
    }
    order
        .iter()
        .map(|id| {
            drives.path(id, specs).ok_or_else(|| {
                let known = drives.ids(specs);
                let fix = if known.is_empty() {
                    "add a --cdrom ISO or a --disk PATH to boot from".to_string()
                } else {
                    format!("use one of: {}", known.join(", "))
                };
                ConfigError::new(
                    "boot.order",
                    format!("\"{id}\""),
                    "not a disk or CD-ROM drive of this machine",
                    fix,
                )
                .into()
            })
        })
        .collect()
}

/// What the VMM keeps of the devices besides the bus: where host input
/// reaches the guest, the power button, and which PCI slot each device
/// got (for the BIOS boot order).
#[derive(Default)]
struct Consoles {
    /// The console UART's input, then the first virtio console's.
    uart: Option<ConsoleInputTarget>,
    virtio: Option<ConsoleInputTarget>,
    power_button: Option<PowerButton>,
    keyboard: Option<Arc<std::sync::Mutex<alcazar_devices::I8042>>>,
    /// Device id and PCI slot of each device on the PCI bus.
    pci_slots: Vec<(String, u8)>,
}

/// Builds each device and puts it on the bus.
fn add_devices(
    machine: &Machine,
    chipset: &Chipset,
    pci: &PciBus,
    tail: &Arc<ConsoleTail>,
    terminal: &SharedTerminal,
    specs: &[DeviceSpec],
    config: &VmConfig,
) -> Result<Consoles, VmmError> {
    let ctx = BuildContext {
        control: &machine.control,
        clock: &machine.clock,
        chipset,
        pci,
        tail,
        terminal,
        serial: &config.serial,
    };
    let console_uart = registry::console_uart(specs);
    let mut out = Consoles::default();
    for (i, spec) in specs.iter().enumerate() {
        let built = registry::build(spec, console_uart == Some(i), &ctx)?;
        if let Some(slot) = built.pci_slot {
            out.pci_slots.push((spec.id.clone(), slot));
        }
        for (space, base, len, device) in built.ranges {
            machine
                .bus
                .insert(space, base, len, &spec.id, device)
                .map_err(|e| overlap_error(spec, e))?;
        }
        for hook in built.hooks {
            match hook {
                HostHook::ConsoleInput(t @ ConsoleInputTarget::Uart(_)) => {
                    out.uart.get_or_insert(t);
                }
                HostHook::ConsoleInput(t @ ConsoleInputTarget::Virtio(_)) => {
                    out.virtio.get_or_insert(t);
                }
                HostHook::ConsoleInput(ConsoleInputTarget::Keyboard(k, _)) => {
                    out.keyboard.get_or_insert(k);
                }
                HostHook::PowerButton(b) => {
                    out.power_button.get_or_insert(b);
                }
                HostHook::Keyboard(k) => {
                    out.keyboard.get_or_insert(k);
                }
            }
        }
    }
    Ok(out)
}

fn overlap_error(spec: &DeviceSpec, e: BusError) -> VmmError {
    let key = spec.key("port");
    match e {
        BusError::Overlap { space, base, end, other, other_base, other_end, .. } => ConfigError::new(
            key,
            format!("{base:#x}"),
            format!("{} {space} range {base:#x}..{end:#x} overlaps device \"{other}\" at {other_base:#x}..{other_end:#x}", spec.class()),
            "move one of the devices to free ports",
        )
        .into(),
        other => other.into(),
    }
}
