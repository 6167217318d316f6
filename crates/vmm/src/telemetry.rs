//! Telemetry: what a VM's vCPUs and devices have been doing, as one
//! snapshot.
//!
//! Palacios keeps per-core exit counts and prints them on demand; Alcazar
//! keeps more and can show them three ways. [`Telemetry::collect`] reads
//! the counters a [`Machine`] accumulates while it runs — per vCPU
//! ([`alcazar_core::stats::VcpuStats`]): exits (emu: events) by kind with
//! the host time spent on them, guest time (kvm), retired instructions,
//! events delivered by vector, page faults and TLB flushes (emu); per bus
//! ([`alcazar_core::Bus`]): accesses by I/O port, reads, writes and
//! handler time by device range, unclaimed accesses — and the guest
//! clock's paused time. The snapshot serializes to JSON for the API,
//! prints as the human summary of `alcazar run --telemetry`
//! ([`Telemetry::summary`]); the control plane (`alcazar-control`) renders it
//! in the Prometheus text format.
//!
//! Every counter only grows while the VM lives, so two snapshots taken a
//! while apart show what happened in between.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use alcazar_core::engine::ExitKind;
use alcazar_core::{IoSpace, Machine};
use serde::{Deserialize, Serialize};

/// The vector of the page-fault exception, #PF (Intel SDM Vol. 3A §6.15,
/// "Interrupt 14—Page-Fault Exception").
pub const PAGE_FAULT_VECTOR: u8 = 14;

/// How many of the busiest ports [`Telemetry::summary`] lists.
const SUMMARY_PORTS: usize = 12;

/// A snapshot of a machine's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Telemetry {
    /// Per vCPU, by id.
    pub vcpus: Vec<VcpuTelemetry>,
    /// I/O ports accessed (reads and writes, claimed or not), busiest
    /// first; ports never accessed are left out.
    pub ports: Vec<PortCount>,
    /// Every range registered on the buses, ports first, in address order.
    pub devices: Vec<DeviceTelemetry>,
    /// Whether device handlers were being timed
    /// ([`alcazar_core::Bus::set_timing`]); if not, the devices'
    /// `time_ns` are 0.
    pub device_timing: bool,
    /// Accesses no device claimed.
    pub unclaimed: Unclaimed,
    /// Host nanoseconds the guest clock has stood still (the VM paused).
    pub paused_ns: u64,
}

/// The counters of one vCPU.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VcpuTelemetry {
    /// The vCPU's id (its local APIC id).
    pub id: u32,
    /// Every exit kind (named as [`ExitKind::name`]) with its count and
    /// the host time spent on it. The kvm engine times the handling of
    /// each exit in user space; the emu engine counts the events its
    /// instructions raise (port I/O, MMIO, MSR, CPUID, HLT, ...) and times
    /// the sleep of a halted vCPU.
    pub exits: BTreeMap<String, ExitCount>,
    /// Host nanoseconds inside `KVM_RUN` (kvm; 0 on emu).
    pub guest_ns: u64,
    /// Guest instructions retired (emu; 0 on kvm, which cannot count).
    pub instructions: u64,
    /// Exceptions, interrupts and NMIs delivered through the IDT/IVT, by
    /// vector (emu; empty on kvm, whose deliveries KVM makes); vectors
    /// never delivered are left out.
    pub vectors: BTreeMap<u8, u64>,
    /// Page faults delivered (the count of vector 14; emu).
    pub page_faults: u64,
    /// TLB flushes (emu).
    pub tlb_flushes: u64,
    /// Counters only this vCPU's engine keeps, by name: on emu the
    /// translator's (`jit_blocks_translated`, `jit_code_cache_bytes`,
    /// `jit_translation_ns`, `jit_chain_links`, `jit_fallback_<insn>`,
    /// ...). Empty where the engine publishes none.
    #[serde(default)]
    pub engine: BTreeMap<String, u64>,
}

/// The count of one exit kind and the host time spent on it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitCount {
    /// Exits (events) so far.
    pub count: u64,
    /// Host nanoseconds spent on them, where the engine measures it.
    pub time_ns: u64,
}

/// Accesses to one I/O port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortCount {
    /// The port.
    pub port: u16,
    /// Reads and writes of any width.
    pub count: u64,
}

/// An address space, as telemetry names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Space {
    /// The port space of `in`/`out`.
    Port,
    /// Memory-mapped I/O.
    Mmio,
}

impl From<IoSpace> for Space {
    fn from(space: IoSpace) -> Self {
        match space {
            IoSpace::Port => Space::Port,
            IoSpace::Mmio => Space::Mmio,
        }
    }
}

impl Space {
    /// The lower-case name used in JSON and Prometheus labels.
    pub fn name(self) -> &'static str {
        match self {
            Space::Port => "port",
            Space::Mmio => "mmio",
        }
    }
}

impl std::fmt::Display for Space {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Space::Port => "port",
            Space::Mmio => "MMIO",
        })
    }
}

/// One range on a bus and the accesses it received.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceTelemetry {
    /// The name the device registered the range under.
    pub name: String,
    /// Its address space.
    pub space: Space,
    /// Its first address.
    pub base: u64,
    /// Its length.
    pub len: u64,
    /// Reads it received.
    pub reads: u64,
    /// Writes it received.
    pub writes: u64,
    /// Host nanoseconds its device spent on them (0 unless
    /// [`Telemetry::device_timing`]).
    pub time_ns: u64,
}

/// Accesses nobody claimed: reads returned all ones, writes were dropped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unclaimed {
    /// Port reads.
    pub port_reads: u64,
    /// Port writes.
    pub port_writes: u64,
    /// MMIO reads.
    pub mmio_reads: u64,
    /// MMIO writes.
    pub mmio_writes: u64,
}

impl Telemetry {
    /// Reads every counter of `machine` now. The counters are updated
    /// lock-free by the vCPU threads, so a snapshot of a running VM is a
    /// consistent-enough picture, not an atomic one.
    pub fn collect(machine: &Machine) -> Telemetry {
        let vcpus = machine
            .stats
            .iter()
            .enumerate()
            .map(|(id, stats)| {
                let exits = ExitKind::ALL
                    .iter()
                    .map(|&kind| {
                        let count = ExitCount {
                            count: stats.get(kind),
                            time_ns: stats.time_ns(kind),
                        };
                        (kind.name().to_string(), count)
                    })
                    .collect();
                VcpuTelemetry {
                    id: id as u32,
                    exits,
                    guest_ns: stats.guest_time_ns(),
                    instructions: stats.instructions(),
                    vectors: stats.vectors().into_iter().collect(),
                    page_faults: stats.page_faults(),
                    tlb_flushes: stats.tlb_flushes(),
                    engine: stats.engine_counters().into_iter().collect(),
                }
            })
            .collect();
        let ports = machine
            .bus
            .port_counts()
            .into_iter()
            .map(|(port, count)| PortCount { port, count })
            .collect();
        let devices = machine
            .bus
            .ranges()
            .into_iter()
            .map(|r| DeviceTelemetry {
                name: r.name,
                space: r.space.into(),
                base: r.base,
                len: r.len,
                reads: r.reads,
                writes: r.writes,
                time_ns: r.time_ns,
            })
            .collect();
        let u = machine.bus.unclaimed();
        let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        Telemetry {
            vcpus,
            ports,
            devices,
            device_timing: machine.bus.timing(),
            unclaimed: Unclaimed {
                port_reads: load(&u.port_reads),
                port_writes: load(&u.port_writes),
                mmio_reads: load(&u.mmio_reads),
                mmio_writes: load(&u.mmio_writes),
            },
            paused_ns: u64::try_from(machine.clock.paused_total().as_nanos()).unwrap_or(u64::MAX),
        }
    }

    /// The human summary `alcazar run --telemetry` prints when the VM
    /// ends: per vCPU the non-zero exit counts (with instructions, page
    /// faults and TLB flushes), the times measured and the vectors
    /// delivered; the busiest ports; accesses (and time) by device, the
    /// ranges of one device name added up; unclaimed accesses; the time
    /// the VM was paused. Every line ends in a newline.
    pub fn summary(&self) -> String {
        let mut out = String::from("alcazar: exits per vCPU\n");
        for v in &self.vcpus {
            self.summarize_vcpu(v, &mut out);
        }
        let ports: Vec<String> = self
            .ports
            .iter()
            .take(SUMMARY_PORTS)
            .map(|p| format!("{:#x}={}", p.port, p.count))
            .collect();
        if !ports.is_empty() {
            let _ = writeln!(out, "  busiest ports (accesses): {}", ports.join(" "));
        }
        let mut by_name: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
        for d in &self.devices {
            let e = by_name
                .entry(format!("{} {}", d.space, d.name))
                .or_default();
            e.0 += d.reads;
            e.1 += d.writes;
            e.2 += d.time_ns;
        }
        let devices: Vec<String> = by_name
            .iter()
            .filter(|(_, &(r, w, _))| r + w > 0)
            .map(|(name, &(r, w, ns))| match self.device_timing {
                true => format!("{name} r={r} w={w} time={}", human_ns(ns)),
                false => format!("{name} r={r} w={w}"),
            })
            .collect();
        if !devices.is_empty() {
            let _ = writeln!(out, "  accesses by device: {}", devices.join(", "));
        }
        let u = &self.unclaimed;
        let _ = writeln!(
            out,
            "  unclaimed: port reads={} writes={}, mmio reads={} writes={}",
            u.port_reads, u.port_writes, u.mmio_reads, u.mmio_writes
        );
        if self.paused_ns > 0 {
            let _ = writeln!(out, "  paused: {}", human_ns(self.paused_ns));
        }
        out
    }

    fn summarize_vcpu(&self, v: &VcpuTelemetry, out: &mut String) {
        let exit = |kind: ExitKind| v.exits.get(kind.name()).copied().unwrap_or_default();
        let mut line: Vec<String> = ExitKind::ALL
            .iter()
            .map(|&k| (k, exit(k).count))
            .filter(|&(_, n)| n > 0)
            .map(|(k, n)| format!("{}={n}", k.name()))
            .collect();
        for (name, n) in [
            ("instructions", v.instructions),
            ("page_faults", v.page_faults),
            ("tlb_flushes", v.tlb_flushes),
        ] {
            if n > 0 {
                line.push(format!("{name}={n}"));
            }
        }
        let _ = writeln!(out, "  vcpu{}: {}", v.id, line.join(" "));
        if !v.engine.is_empty() {
            let engine: Vec<String> = v
                .engine
                .iter()
                .filter(|(_, &n)| n > 0)
                .map(|(k, n)| format!("{k}={n}"))
                .collect();
            let _ = writeln!(out, "    engine: {}", engine.join(" "));
        }
        let mut times: Vec<String> = ExitKind::ALL
            .iter()
            .map(|&k| (k, exit(k).time_ns))
            .filter(|&(_, ns)| ns > 0)
            .map(|(k, ns)| format!("{}={}", k.name(), human_ns(ns)))
            .collect();
        if v.guest_ns > 0 {
            times.push(format!("guest={}", human_ns(v.guest_ns)));
        }
        if !times.is_empty() {
            let _ = writeln!(out, "    time: {}", times.join(" "));
        }
        let vectors: Vec<String> = v
            .vectors
            .iter()
            .map(|(vector, n)| format!("{vector:#04x}={n}"))
            .collect();
        if !vectors.is_empty() {
            let _ = writeln!(out, "    vectors delivered: {}", vectors.join(" "));
        }
    }
}

/// `ns` nanoseconds for people: `850ns`, `12.3us`, `4.56ms`, `7.89s`.
fn human_ns(ns: u64) -> String {
    let f = ns as f64;
    match ns {
        0..1_000 => format!("{ns}ns"),
        1_000..1_000_000 => format!("{:.1}us", f / 1e3),
        1_000_000..1_000_000_000 => format!("{:.2}ms", f / 1e6),
        _ => format!("{:.2}s", f / 1e9),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use alcazar_core::memory::{GuestMemory, MemoryMap};
    use alcazar_core::BusDevice;

    use super::*;

    /// A device whose reads take `delay`.
    struct Slow {
        delay: Duration,
    }

    impl BusDevice for Slow {
        fn read(&mut self, _offset: u64, data: &mut [u8]) {
            std::thread::sleep(self.delay);
            data.fill(0);
        }
        fn write(&mut self, _offset: u64, _data: &[u8]) {}
    }

    fn slow(ms: u64) -> Arc<Mutex<Slow>> {
        Arc::new(Mutex::new(Slow {
            delay: Duration::from_millis(ms),
        }))
    }

    /// Two vCPUs, a UART-like port device, an MMIO device in two ranges,
    /// some traffic, some counted events and a short pause.
    pub(super) fn busy_machine() -> Machine {
        let memory = GuestMemory::new(MemoryMap::pc(16 << 20).expect("map")).expect("memory");
        let m = Machine::new(memory, 2);
        m.bus.set_timing(true);
        m.bus
            .insert(IoSpace::Port, 0x3f8, 8, "uart", slow(0))
            .unwrap();
        m.bus
            .insert(IoSpace::Mmio, 0xd000_0000, 0x1000, "pci-window", slow(1))
            .unwrap();
        m.bus
            .insert(IoSpace::Mmio, 0xd000_1000, 0x1000, "pci-window", slow(1))
            .unwrap();
        let mut b = [0u8; 1];
        for _ in 0..5 {
            m.bus.write(IoSpace::Port, 0x3f8, b"x");
            m.bus.read(IoSpace::Port, 0x3fd, &mut b);
        }
        m.bus.read(IoSpace::Port, 0x3fd, &mut b);
        m.bus.read(IoSpace::Port, 0x80, &mut b);
        let mut d = [0u8; 4];
        m.bus.read(IoSpace::Mmio, 0xd000_0010, &mut d);
        m.bus.read(IoSpace::Mmio, 0xd000_1010, &mut d);
        m.bus.write(IoSpace::Mmio, 0xd000_1010, &d);
        m.bus.write(IoSpace::Mmio, 0xe000_0000, &d);
        let s = m.vcpu_stats(0);
        for _ in 0..11 {
            s.count(ExitKind::PortIo);
        }
        s.count(ExitKind::Hlt);
        s.add_time(ExitKind::Hlt, 2_500_000_000);
        s.add_time(ExitKind::PortIo, 4_200);
        s.add_instructions(123_456);
        for v in [14, 14, 14, 0x20] {
            s.count_vector(v);
        }
        s.set_tlb_flushes(9);
        m.vcpu_stats(1).count(ExitKind::Mmio);
        m.vcpu_stats(1).add_guest_time(1_500_000);
        m.clock.freeze();
        std::thread::sleep(Duration::from_millis(5));
        m.clock.thaw();
        m
    }

    #[test]
    fn collect_reads_every_counter() {
        let t = Telemetry::collect(&busy_machine());
        assert_eq!(t.vcpus.len(), 2);
        let v0 = &t.vcpus[0];
        assert_eq!(v0.id, 0);
        assert_eq!(v0.exits.len(), ExitKind::ALL.len(), "every kind is listed");
        assert_eq!(
            v0.exits["port_io"],
            ExitCount {
                count: 11,
                time_ns: 4_200
            }
        );
        assert_eq!(
            v0.exits["hlt"],
            ExitCount {
                count: 1,
                time_ns: 2_500_000_000
            }
        );
        assert_eq!(v0.exits["mmio"], ExitCount::default());
        assert_eq!(v0.instructions, 123_456);
        assert_eq!(v0.vectors, BTreeMap::from([(14, 3), (0x20, 1)]));
        assert_eq!(v0.page_faults, 3);
        assert_eq!(v0.tlb_flushes, 9);
        assert_eq!(t.vcpus[1].exits["mmio"].count, 1);
        assert_eq!(t.vcpus[1].guest_ns, 1_500_000);
        assert_eq!(
            t.ports,
            [
                PortCount {
                    port: 0x3fd,
                    count: 6
                },
                PortCount {
                    port: 0x3f8,
                    count: 5
                },
                PortCount {
                    port: 0x80,
                    count: 1
                },
            ]
        );
        assert!(t.device_timing);
        let names: Vec<(&str, Space, u64)> = t
            .devices
            .iter()
            .map(|d| (d.name.as_str(), d.space, d.base))
            .collect();
        assert_eq!(
            names,
            [
                ("uart", Space::Port, 0x3f8),
                ("pci-window", Space::Mmio, 0xd000_0000),
                ("pci-window", Space::Mmio, 0xd000_1000),
            ]
        );
        assert_eq!((t.devices[0].reads, t.devices[0].writes), (6, 5));
        assert_eq!((t.devices[2].reads, t.devices[2].writes), (1, 1));
        assert!(t.devices[1].time_ns >= 1_000_000, "{:?}", t.devices[1]);
        assert_eq!(
            t.unclaimed,
            Unclaimed {
                port_reads: 1,
                port_writes: 0,
                mmio_reads: 0,
                mmio_writes: 1
            }
        );
        assert!(t.paused_ns >= 5_000_000, "{}", t.paused_ns);
    }

    #[test]
    fn the_json_form_names_kinds_and_round_trips() {
        let t = Telemetry::collect(&busy_machine());
        let v = serde_json::to_value(&t).unwrap();
        assert_eq!(v["vcpus"][0]["exits"]["port_io"]["count"], 11);
        assert_eq!(v["vcpus"][0]["vectors"]["14"], 3);
        assert_eq!(v["devices"][1]["space"], "mmio");
        assert_eq!(v["ports"][0]["port"], 0x3fd);
        let back: Telemetry = serde_json::from_value(v).unwrap();
        assert_eq!(back, t);
    }

    #[test]
    fn the_summary_keeps_its_line_shapes_and_adds_times() {
        let text = Telemetry::collect(&busy_machine()).summary();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "alcazar: exits per vCPU");
        assert_eq!(
            lines[1],
            "  vcpu0: port_io=11 hlt=1 instructions=123456 page_faults=3 tlb_flushes=9"
        );
        assert_eq!(lines[2], "    time: port_io=4.2us hlt=2.50s");
        assert_eq!(lines[3], "    vectors delivered: 0x0e=3 0x20=1");
        assert_eq!(lines[4], "  vcpu1: mmio=1");
        assert_eq!(lines[5], "    time: guest=1.50ms");
        assert_eq!(
            lines[6],
            "  busiest ports (accesses): 0x3fd=6 0x3f8=5 0x80=1"
        );
        // The two pci-window ranges add up; each device's time follows.
        let devices = lines[7].strip_prefix("  accesses by device: ").unwrap();
        let devices: Vec<&str> = devices.split(", ").collect();
        assert_eq!(devices.len(), 2, "{devices:?}");
        assert!(
            devices[0].starts_with("MMIO pci-window r=2 w=1 time="),
            "{}",
            devices[0]
        );
        assert!(devices[0].ends_with("ms"), "{}", devices[0]);
        assert!(
            devices[1].starts_with("port uart r=6 w=5 time="),
            "{}",
            devices[1]
        );
        assert_eq!(
            lines[8],
            "  unclaimed: port reads=1 writes=0, mmio reads=0 writes=1"
        );
        assert!(
            lines[9].starts_with("  paused: ") && lines[9].ends_with("ms"),
            "{}",
            lines[9]
        );
        assert_eq!(lines.len(), 10);
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn untimed_devices_show_no_time_and_idle_lines_are_left_out() {
        let memory = GuestMemory::new(MemoryMap::pc(16 << 20).expect("map")).expect("memory");
        let m = Machine::new(memory, 1);
        m.bus
            .insert(IoSpace::Port, 0x60, 1, "kbd", slow(0))
            .unwrap();
        m.bus
            .insert(IoSpace::Port, 0x70, 2, "rtc", slow(0))
            .unwrap();
        m.bus.write(IoSpace::Port, 0x60, &[1]);
        let text = Telemetry::collect(&m).summary();
        assert_eq!(
            text,
            "alcazar: exits per vCPU\n  vcpu0: \n  busiest ports (accesses): 0x60=1\n  \
             accesses by device: port kbd r=0 w=1\n  \
             unclaimed: port reads=0 writes=0, mmio reads=0 writes=0\n"
        );
    }

    #[test]
    fn times_read_in_the_unit_that_fits() {
        assert_eq!(human_ns(0), "0ns");
        assert_eq!(human_ns(999), "999ns");
        assert_eq!(human_ns(12_340), "12.3us");
        assert_eq!(human_ns(4_560_000), "4.56ms");
        assert_eq!(human_ns(7_890_000_000), "7.89s");
    }
}
