//! A VM's life: create it from a config, run it until it stops.
//!
//! [`Vm::create`] does all the fallible set-up — memory, devices, boot
//! image, engine, vCPUs — before any guest code runs, so a bad config fails
//! early and leaves nothing behind. [`Vm::run`] starts one host thread per
//! vCPU, each running [`vcpu_loop`], and waits for the machine's stop
//! reason.

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use alcazar_core::engine::{EngineKind, EngineVm, Vcpu, VcpuExit};
use alcazar_core::memory::{GuestMemory, MemoryMap};
use alcazar_core::{BusError, Machine, StopReason};
use alcazar_devices::virtio::console::ConsoleInput;
use alcazar_devices::Uart16550;

use crate::boot;
use crate::config::{DeviceSpec, VmConfig};
use crate::console::ConsoleTail;
use crate::engine_select;
use crate::error::{ConfigError, VmmError};
use crate::pci::PciBus;
use crate::platform::Chipset;
use crate::registry::{self, BuildContext};

/// A created (not yet running) VM.
pub struct Vm {
    name: String,
    machine: Arc<Machine>,
    // Kept alive while the vCPUs run: it owns the engine's VM handle.
    _engine_vm: Box<dyn EngineVm>,
    vcpus: Vec<Box<dyn Vcpu>>,
    engine: EngineKind,
    engine_why: String,
    com1: Option<Arc<Mutex<Uart16550>>>,
    hvc0: Option<ConsoleInput>,
    chipset: Chipset,
    pci: PciBus,
    tail: Arc<ConsoleTail>,
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
    /// Builds the machine `config` describes, ready to run.
    pub fn create(config: &VmConfig) -> Result<Vm, VmmError> {
        let specs = device_specs(config)?;
        let payload = boot::load(&config.boot)?;
        let memory = GuestMemory::new(MemoryMap::pc(config.memory)?)?;
        let selected = engine_select::select(config.engine)?;
        let machine = Arc::new(Machine::new(memory, config.cpus));
        let engine_vm = selected.engine.create_vm(machine.clone())?;
        let chipset = Chipset::new(&machine, engine_vm.apic_bus())?;
        let tail = Arc::new(ConsoleTail::new(machine.control.clone()));
        let pci = PciBus::new(&machine, &chipset, engine_vm.io_events())?;
        let (com1, hvc0) = add_devices(&machine, &chipset, &pci, &tail, &specs, config)?;
        let start = payload.install(&machine.memory, config.cpus)?;
        let mut vcpus = Vec::new();
        for id in 0..config.cpus {
            let mut vcpu = engine_vm.create_vcpu(id)?;
            start.prepare(vcpu.as_mut(), config.cpus)?;
            vcpus.push(vcpu);
        }
        tracing::info!(name = %config.name, engine = %selected.engine.kind(), why = %selected.why, "VM created");
        Ok(Vm {
            name: config.name.clone(),
            engine: selected.engine.kind(),
            engine_why: selected.why,
            machine,
            _engine_vm: engine_vm,
            vcpus,
            com1,
            hvc0,
            chipset,
            pci,
            tail,
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

    /// COM1, for feeding it host input.
    pub fn com1(&self) -> Option<Arc<Mutex<Uart16550>>> {
        self.com1.clone()
    }

    /// Where host input for the first virtio console (the guest's `hvc0`)
    /// goes, if the machine has one.
    pub fn virtio_console(&self) -> Option<ConsoleInput> {
        self.hvc0.clone()
    }

    /// The last lines of the guest console (COM1).
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

    /// Runs every vCPU on its own thread until the machine stops; returns
    /// why it stopped.
    pub fn run(self) -> Result<StopReason, VmmError> {
        let halted = Arc::new(AtomicU32::new(0));
        let mut threads = Vec::new();
        threads.push(self.start_timer_thread()?);
        for vcpu in self.vcpus {
            let machine = self.machine.clone();
            let halted = halted.clone();
            let thread = std::thread::Builder::new()
                .name(format!("vcpu{}", vcpu.id()))
                .spawn(move || {
                    // A bug in an engine or device must end this VM with an
                    // error, not leave the other threads waiting forever.
                    let run = std::panic::AssertUnwindSafe(|| vcpu_loop(vcpu, &machine, &halted));
                    if std::panic::catch_unwind(run).is_err() {
                        machine.control.request_stop(StopReason::Error(
                            "a vCPU thread panicked (a VMM bug; see the message above)".into(),
                        ));
                    }
                })
                .map_err(|source| VmmError::Io {
                    what: "starting a vCPU thread".into(),
                    source,
                })?;
            threads.push(thread);
        }
        let reason = self.machine.control.wait();
        for t in threads {
            if t.join().is_err() {
                tracing::error!("a vCPU thread panicked");
            }
        }
        Ok(reason)
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

/// The life of one vCPU thread: run until the VM stops, and turn the
/// events only the VMM can act on into stop reasons.
pub fn vcpu_loop(mut vcpu: Box<dyn Vcpu>, machine: &Machine, halted: &AtomicU32) {
    let control = &machine.control;
    let id = vcpu.id();
    loop {
        match vcpu.run() {
            Ok(VcpuExit::Stopped) => return,
            Ok(VcpuExit::Shutdown) => control.request_stop(StopReason::TripleFault { vcpu: id }),
            Ok(VcpuExit::Halted) => {
                // The engine returns this only when nothing can ever wake
                // the vCPU (it has no local APIC: an embedder's bare
                // machine). When the last one halts, the VM is done.
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

/// The default devices (unless disabled), with `[[device]]` entries that
/// reuse a default's id replacing it and the others appended.
fn device_specs(config: &VmConfig) -> Result<Vec<DeviceSpec>, VmmError> {
    let mut specs = if config.default_devices {
        registry::default_specs()
    } else {
        Vec::new()
    };
    for spec in &config.devices {
        if registry::class(&spec.class).is_none() {
            let known: Vec<&str> = registry::CLASSES.iter().map(|c| c.name).collect();
            return Err(ConfigError::new(
                spec.key("class"),
                format!("\"{}\"", spec.class),
                "unknown device class",
                format!("known classes: {}", known.join(", ")),
            )
            .into());
        }
        match specs.iter_mut().find(|s| s.id == spec.id) {
            Some(existing) if existing.class != spec.class => {
                return Err(ConfigError::new(
                    spec.key("id"),
                    format!("\"{}\"", spec.id),
                    format!("that id is the default {} device", existing.class),
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

/// Where host input reaches the guest: COM1, and the first virtio console.
type ConsoleInputs = (Option<Arc<Mutex<Uart16550>>>, Option<ConsoleInput>);

/// Builds each device and puts it on the bus; returns COM1 and the first
/// virtio console's input.
fn add_devices(
    machine: &Machine,
    chipset: &Chipset,
    pci: &PciBus,
    tail: &Arc<ConsoleTail>,
    specs: &[DeviceSpec],
    config: &VmConfig,
) -> Result<ConsoleInputs, VmmError> {
    let ctx = BuildContext {
        control: &machine.control,
        clock: &machine.clock,
        chipset,
        pci,
        tail,
        serial: &config.serial,
        base: Path::new("."),
    };
    let mut com1 = None;
    let mut hvc0 = None;
    for spec in specs {
        let class = registry::class(&spec.class).ok_or_else(|| {
            ConfigError::new(
                spec.key("class"),
                &spec.class,
                "unknown device class",
                "see the registry",
            )
        })?;
        let built = class.build(spec, &ctx)?;
        for (space, base, len, device) in built.ranges {
            machine
                .bus
                .insert(space, base, len, &spec.id, device)
                .map_err(|e| overlap_error(spec, e))?;
        }
        if spec.id == "com1" {
            com1 = built.uart;
        }
        if hvc0.is_none() {
            hvc0 = built.console;
        }
    }
    Ok((com1, hvc0))
}

fn overlap_error(spec: &DeviceSpec, e: BusError) -> VmmError {
    let key = if spec.index == 0 && spec.params.is_empty() {
        format!("device \"{}\"", spec.id)
    } else {
        spec.key("port")
    };
    match e {
        BusError::Overlap { space, base, end, other, other_base, other_end, .. } => ConfigError::new(
            key,
            format!("{base:#x}"),
            format!("{} {space} range {base:#x}..{end:#x} overlaps device \"{other}\" at {other_base:#x}..{other_end:#x}", spec.class),
            "move one of the devices to free ports",
        )
        .into(),
        other => other.into(),
    }
}
