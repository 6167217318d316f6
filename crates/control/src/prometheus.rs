//! [`Telemetry`] in the Prometheus text exposition format, version 0.0.4.
//!
//! The format (Prometheus documentation, "Exposition formats", text-based
//! format): one sample a line, `name{label="value",...} value`; before a
//! metric's first sample a `# HELP name text` and a `# TYPE name type`
//! line; all samples of one metric together; in label values a backslash,
//! a double quote and a line feed are written `\\`, `\"` and `\n`. Every
//! metric here is a counter named `alcazar_..._total` (times:
//! `alcazar_..._seconds_total`, exact to the nanosecond) and carries the
//! VM's name as label `vm`.

use std::fmt::Write as _;

use alcazar_core::engine::ExitKind;

use alcazar_vmm::telemetry::{DeviceTelemetry, Space, Telemetry, VcpuTelemetry};

/// The content type of the format, for an HTTP `Content-Type` header.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Telemetry snapshot `t` in the Prometheus text format 0.0.4, every sample
/// labelled `vm="<vm>"`: exits and exit time by vCPU and kind, guest
/// time, instructions, deliveries by vector, page faults, TLB flushes,
/// accesses by port, reads, writes and (if timed) handler time by
/// device range, unclaimed accesses and paused time.
pub fn render(t: &Telemetry, vm: &str) -> String {
    let mut e = Exposition::new(vm);
    e.family(
        "alcazar_vcpu_exits_total",
        "Exits (emu: events) by vCPU and kind.",
    );
    for v in &t.vcpus {
        for kind in ExitKind::ALL {
            let n = v.exits.get(kind.name()).map_or(0, |c| c.count);
            e.sample(
                &[("vcpu", v.id.to_string().as_str()), ("kind", kind.name())],
                n,
            );
        }
    }
    e.family(
        "alcazar_vcpu_exit_seconds_total",
        "Host time spent on exits (emu: events) by vCPU and kind, where measured.",
    );
    for v in &t.vcpus {
        for kind in ExitKind::ALL {
            let ns = v.exits.get(kind.name()).map_or(0, |c| c.time_ns);
            e.sample(
                &[("vcpu", v.id.to_string().as_str()), ("kind", kind.name())],
                seconds(ns),
            );
        }
    }
    e.per_vcpu(
        t,
        "alcazar_vcpu_guest_seconds_total",
        "Host time inside KVM_RUN (kvm engine).",
        |v| seconds(v.guest_ns),
    );
    e.per_vcpu(
        t,
        "alcazar_vcpu_instructions_total",
        "Guest instructions retired (emu engine).",
        |v| v.instructions.to_string(),
    );
    e.family(
        "alcazar_vcpu_vector_deliveries_total",
        "Exceptions, interrupts and NMIs delivered by vCPU and vector (emu engine).",
    );
    for v in &t.vcpus {
        for (vector, n) in &v.vectors {
            e.sample(
                &[
                    ("vcpu", v.id.to_string().as_str()),
                    ("vector", vector.to_string().as_str()),
                ],
                n,
            );
        }
    }
    e.per_vcpu(
        t,
        "alcazar_vcpu_page_faults_total",
        "Page faults (vector 14) delivered (emu engine).",
        |v| v.page_faults.to_string(),
    );
    e.per_vcpu(
        t,
        "alcazar_vcpu_tlb_flushes_total",
        "TLB flushes (emu engine).",
        |v| v.tlb_flushes.to_string(),
    );
    if t.vcpus.iter().any(|v| !v.engine.is_empty()) {
        e.gauge_family(
            "alcazar_vcpu_engine_counter",
            "Counters only the vCPU's engine keeps (emu: the translator's), by name.",
        );
        for v in &t.vcpus {
            for (name, n) in &v.engine {
                e.sample(&[("vcpu", v.id.to_string().as_str()), ("counter", name)], n);
            }
        }
    }
    e.family(
        "alcazar_port_accesses_total",
        "Accesses by I/O port, claimed or not.",
    );
    for p in &t.ports {
        e.sample(&[("port", format!("{:#x}", p.port).as_str())], p.count);
    }
    e.family("alcazar_device_reads_total", "Reads by device range.");
    for d in &t.devices {
        e.device_sample(d, d.reads);
    }
    e.family("alcazar_device_writes_total", "Writes by device range.");
    for d in &t.devices {
        e.device_sample(d, d.writes);
    }
    if t.device_timing {
        e.family(
            "alcazar_device_seconds_total",
            "Host time in device handlers by device range, lock waits included.",
        );
        for d in &t.devices {
            e.device_sample(d, seconds(d.time_ns));
        }
    }
    e.family(
        "alcazar_unclaimed_accesses_total",
        "Accesses no device claimed, by space and direction.",
    );
    let u = &t.unclaimed;
    for (space, access, n) in [
        (Space::Port, "read", u.port_reads),
        (Space::Port, "write", u.port_writes),
        (Space::Mmio, "read", u.mmio_reads),
        (Space::Mmio, "write", u.mmio_writes),
    ] {
        e.sample(&[("space", space.name()), ("access", access)], n);
    }
    e.family(
        "alcazar_paused_seconds_total",
        "Host time the VM has spent paused (its guest clock stood still).",
    );
    e.sample(&[], seconds(t.paused_ns));
    e.out
}

/// `ns` nanoseconds as exact decimal seconds.
fn seconds(ns: u64) -> String {
    format!("{}.{:09}", ns / 1_000_000_000, ns % 1_000_000_000)
}

/// A label value with `\`, `"` and line feeds escaped.
fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// The text being written, one metric after another.
struct Exposition {
    out: String,
    vm: String,
    /// The metric whose samples are being written.
    metric: &'static str,
}

impl Exposition {
    fn new(vm: &str) -> Self {
        Exposition {
            out: String::new(),
            vm: escape_label(vm),
            metric: "",
        }
    }

    /// Starts counter `name` with its HELP and TYPE lines.
    fn family(&mut self, name: &'static str, help: &str) {
        self.typed_family(name, help, "counter");
    }

    /// Starts a metric whose samples may also go down (`gauge`).
    fn gauge_family(&mut self, name: &'static str, help: &str) {
        self.typed_family(name, help, "gauge");
    }

    fn typed_family(&mut self, name: &'static str, help: &str, kind: &str) {
        self.metric = name;
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    /// One sample of the current metric: `vm` and then `labels`.
    fn sample(&mut self, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        let _ = write!(self.out, "{}{{vm=\"{}\"", self.metric, self.vm);
        for (name, v) in labels {
            let _ = write!(self.out, ",{name}=\"{}\"", escape_label(v));
        }
        let _ = writeln!(self.out, "}} {value}");
    }

    /// A sample of device range `d`, labelled with its name, space and
    /// base address (one device may register several ranges under one
    /// name).
    fn device_sample(&mut self, d: &DeviceTelemetry, value: impl std::fmt::Display) {
        let base = format!("{:#x}", d.base);
        let labels = [
            ("device", d.name.as_str()),
            ("space", d.space.name()),
            ("base", &base),
        ];
        self.sample(&labels, value);
    }

    /// A counter with one sample per vCPU.
    fn per_vcpu(
        &mut self,
        t: &Telemetry,
        name: &'static str,
        help: &str,
        value: impl Fn(&VcpuTelemetry) -> String,
    ) {
        self.family(name, help);
        for v in &t.vcpus {
            self.sample(&[("vcpu", v.id.to_string().as_str())], value(v));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use alcazar_core::memory::{GuestMemory, MemoryMap};
    use alcazar_core::{IoSpace, Machine};

    use alcazar_vmm::telemetry::{ExitCount, PortCount, Unclaimed};

    use super::*;

    /// Two vCPUs' worth of counters, a busy port, an MMIO window in two
    /// ranges, an unclaimed write and a short pause.
    fn busy() -> Telemetry {
        let exits = |pairs: &[(&str, u64, u64)]| {
            ExitKind::ALL
                .iter()
                .map(|k| {
                    let (count, time_ns) = pairs
                        .iter()
                        .find(|(n, _, _)| *n == k.name())
                        .map_or((0, 0), |&(_, c, t)| (c, t));
                    (k.name().to_string(), ExitCount { count, time_ns })
                })
                .collect()
        };
        let range = |name: &str, space, base, reads, writes, time_ns| DeviceTelemetry {
            name: name.into(),
            space,
            base,
            len: 0x1000,
            reads,
            writes,
            time_ns,
        };
        Telemetry {
            vcpus: vec![
                VcpuTelemetry {
                    id: 0,
                    exits: exits(&[("port_io", 11, 4_200), ("hlt", 1, 2_500_000_000)]),
                    instructions: 123_456,
                    vectors: [(14, 3), (0x20, 1)].into_iter().collect(),
                    page_faults: 3,
                    tlb_flushes: 9,
                    engine: [("jit_blocks_translated".to_string(), 42)]
                        .into_iter()
                        .collect(),
                    ..VcpuTelemetry::default()
                },
                VcpuTelemetry {
                    id: 1,
                    exits: exits(&[("mmio", 1, 0)]),
                    guest_ns: 1_500_000,
                    ..VcpuTelemetry::default()
                },
            ],
            ports: vec![PortCount {
                port: 0x3fd,
                count: 6,
            }],
            devices: vec![
                range("uart", Space::Port, 0x3f8, 6, 5, 0),
                range("pci-window", Space::Mmio, 0xd000_0000, 1, 0, 1_000_000),
                range("pci-window", Space::Mmio, 0xd000_1000, 1, 1, 2_000_000),
            ],
            device_timing: true,
            unclaimed: Unclaimed {
                mmio_writes: 1,
                port_reads: 1,
                ..Unclaimed::default()
            },
            paused_ns: 5_000_000,
        }
    }

    /// A sample's labels, values unescaped.
    type Labels = Vec<(String, String)>;
    /// A sample: metric name, labels, value.
    type Sample = (String, Labels, f64);

    fn valid_metric_name(s: &str) -> bool {
        let mut chars = s.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }

    fn valid_label_name(s: &str) -> bool {
        let mut chars = s.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    }

    /// Parses `{name="value",...}` at the start of `s`: the labels with
    /// their values unescaped, and the rest of `s`.
    fn parse_labels(s: &str) -> Result<(Labels, &str), String> {
        let mut labels = Vec::new();
        let mut rest = s.strip_prefix('{').ok_or("no {")?;
        loop {
            if let Some(r) = rest.strip_prefix('}') {
                return Ok((labels, r));
            }
            let eq = rest.find('=').ok_or("label without =")?;
            let name = &rest[..eq];
            if !valid_label_name(name) {
                return Err(format!("bad label name {name:?}"));
            }
            let mut chars = rest[eq + 1..]
                .strip_prefix('"')
                .ok_or("unquoted value")?
                .char_indices();
            let mut value = String::new();
            let end = loop {
                match chars.next().ok_or("unterminated value")? {
                    (i, '"') => break i,
                    (_, '\\') => match chars.next().ok_or("dangling \\")?.1 {
                        '\\' => value.push('\\'),
                        '"' => value.push('"'),
                        'n' => value.push('\n'),
                        c => return Err(format!("bad escape \\{c}")),
                    },
                    (_, '\n') => return Err("raw line feed in a value".into()),
                    (_, c) => value.push(c),
                }
            };
            labels.push((name.to_string(), value));
            rest = &rest[eq + 1..][1 + end + 1..];
            if let Some(r) = rest.strip_prefix(',') {
                rest = r;
            } else if !rest.starts_with('}') {
                return Err(format!("expected , or }} at {rest:?}"));
            }
        }
    }

    /// Checks `text` against the 0.0.4 text format; returns the samples
    /// as (name, labels, value).
    fn check(text: &str) -> Result<Vec<Sample>, String> {
        let mut help = HashSet::new();
        let mut types = HashMap::new();
        let mut finished = HashSet::new();
        let mut series = HashSet::new();
        let mut current = String::new();
        let mut samples = Vec::new();
        if !text.is_empty() && !text.ends_with('\n') {
            return Err("the last line has no line feed".into());
        }
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap_or("");
                if !valid_metric_name(name) || !help.insert(name.to_string()) {
                    return Err(format!("bad or second HELP: {line:?}"));
                }
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').ok_or(format!("{line:?}"))?;
                let known = ["counter", "gauge", "histogram", "summary", "untyped"];
                if !valid_metric_name(name) || !known.contains(&kind) {
                    return Err(format!("bad TYPE: {line:?}"));
                }
                if types.insert(name.to_string(), kind.to_string()).is_some() {
                    return Err(format!("second TYPE: {line:?}"));
                }
            } else if line.starts_with('#') {
                continue;
            } else {
                let end = line.find(['{', ' ']).ok_or(format!("no value: {line:?}"))?;
                let name = &line[..end];
                if !valid_metric_name(name) {
                    return Err(format!("bad metric name: {line:?}"));
                }
                let (labels, rest) = match line[end..].starts_with('{') {
                    true => parse_labels(&line[end..]).map_err(|e| format!("{e}: {line:?}"))?,
                    false => (Vec::new(), &line[end..]),
                };
                let value = rest
                    .strip_prefix(' ')
                    .ok_or(format!("no space: {line:?}"))?;
                let value: f64 = value.parse().map_err(|_| format!("bad value: {line:?}"))?;
                if !help.contains(name) || !types.contains_key(name) {
                    return Err(format!("sample before HELP and TYPE: {line:?}"));
                }
                if name != current {
                    if !finished.insert(current.clone()) || finished.contains(name) {
                        return Err(format!("samples of {name} are not together"));
                    }
                    current = name.to_string();
                }
                if types[name] == "counter" && (value < 0.0 || !name.ends_with("_total")) {
                    return Err(format!("bad counter: {line:?}"));
                }
                if !series.insert(format!("{name}{labels:?}")) {
                    return Err(format!("repeated series: {line:?}"));
                }
                samples.push((name.to_string(), labels, value));
            }
        }
        Ok(samples)
    }

    #[test]
    fn the_checker_rejects_what_the_format_forbids() {
        let ok = "# HELP a_total A.\n# TYPE a_total counter\na_total{vm=\"x\\\"y\"} 1\n";
        assert_eq!(
            check(ok).unwrap()[0].1,
            [("vm".to_string(), "x\"y".to_string())]
        );
        for bad in [
            "a_total 1\n",
            "# HELP a_total A.\na_total 1\n",
            "# HELP a_total A.\n# TYPE a_total counter\na_total{vm=\"x\\y\"} 1\n",
            "# HELP a_total A.\n# TYPE a_total counter\na_total{vm=\"x\"y\"} 1\n",
            "# HELP a_total A.\n# TYPE a_total counter\na_total{1vm=\"x\"} 1\n",
            "# HELP a_total A.\n# TYPE a_total counter\na_total{vm=\"x\"} one\n",
            "# HELP a_total A.\n# TYPE a_total counter\na_total 1\na_total 2\n",
            "# HELP a-b A.\n# TYPE a-b counter\na-b 1\n",
            "# HELP a A.\n# TYPE a counter\na 1\n",
            "# HELP a_total A.\n# TYPE a_total counter\na_total 1",
        ] {
            assert!(check(bad).is_err(), "accepted {bad:?}");
        }
        let interleaved = "# HELP a_total A.\n# TYPE a_total counter\n# HELP b_total B.\n\
                           # TYPE b_total counter\na_total{x=\"1\"} 1\nb_total 1\na_total{x=\"2\"} 1\n";
        assert!(check(interleaved).is_err());
    }

    #[test]
    fn the_exposition_is_well_formed_and_carries_every_counter() {
        let text = render(&busy(), "linux-1");
        let samples = check(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let find = |name: &str, labels: &[(&str, &str)]| -> f64 {
            let mut want: Vec<(String, String)> = vec![("vm".into(), "linux-1".into())];
            want.extend(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())));
            samples
                .iter()
                .find(|(n, l, _)| n == name && *l == want)
                .unwrap_or_else(|| panic!("no {name} {want:?} in\n{text}"))
                .2
        };
        assert!(samples.iter().all(|(n, _, _)| n.starts_with("alcazar_")));
        let exits = "alcazar_vcpu_exits_total";
        assert_eq!(find(exits, &[("vcpu", "0"), ("kind", "port_io")]), 11.0);
        assert_eq!(find(exits, &[("vcpu", "1"), ("kind", "shutdown")]), 0.0);
        let secs = "alcazar_vcpu_exit_seconds_total";
        assert_eq!(find(secs, &[("vcpu", "0"), ("kind", "hlt")]), 2.5);
        assert_eq!(
            find("alcazar_vcpu_guest_seconds_total", &[("vcpu", "1")]),
            0.0015
        );
        assert_eq!(
            find("alcazar_vcpu_instructions_total", &[("vcpu", "0")]),
            123456.0
        );
        let deliveries = "alcazar_vcpu_vector_deliveries_total";
        assert_eq!(find(deliveries, &[("vcpu", "0"), ("vector", "14")]), 3.0);
        assert_eq!(
            find("alcazar_vcpu_page_faults_total", &[("vcpu", "0")]),
            3.0
        );
        assert_eq!(
            find("alcazar_vcpu_tlb_flushes_total", &[("vcpu", "0")]),
            9.0
        );
        assert_eq!(
            find("alcazar_port_accesses_total", &[("port", "0x3fd")]),
            6.0
        );
        let window = [
            ("device", "pci-window"),
            ("space", "mmio"),
            ("base", "0xd0001000"),
        ];
        assert_eq!(find("alcazar_device_reads_total", &window), 1.0);
        assert_eq!(find("alcazar_device_writes_total", &window), 1.0);
        assert!(find("alcazar_device_seconds_total", &window) >= 0.001);
        let unclaimed = "alcazar_unclaimed_accesses_total";
        assert_eq!(
            find(unclaimed, &[("space", "mmio"), ("access", "write")]),
            1.0
        );
        assert!(find("alcazar_paused_seconds_total", &[]) >= 0.005);
        let engine = "alcazar_vcpu_engine_counter";
        assert_eq!(
            find(
                engine,
                &[("vcpu", "0"), ("counter", "jit_blocks_translated")]
            ),
            42.0
        );
    }

    #[test]
    fn label_values_are_escaped_and_untimed_devices_have_no_time() {
        let memory = GuestMemory::new(MemoryMap::pc(16 << 20).expect("map")).expect("memory");
        let m = Machine::new(memory, 1);
        let dev = std::sync::Arc::new(std::sync::Mutex::new(Nothing));
        m.bus
            .insert(IoSpace::Port, 0x60, 1, "we\"ird\\dev\nice", dev)
            .unwrap();
        m.bus.write(IoSpace::Port, 0x60, &[1]);
        let text = render(&Telemetry::collect(&m), "a \"vm\"\\\n");
        assert!(
            text.contains(
                r#"{vm="a \"vm\"\\\n",device="we\"ird\\dev\nice",space="port",base="0x60"} 1"#
            ),
            "{text}"
        );
        let samples = check(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert!(samples.iter().any(|(_, labels, _)| labels
            .iter()
            .any(|(k, v)| k == "device" && v == "we\"ird\\dev\nice")));
        assert!(!text.contains("alcazar_device_seconds_total"));
    }

    #[test]
    fn seconds_are_exact() {
        assert_eq!(seconds(0), "0.000000000");
        assert_eq!(seconds(1), "0.000000001");
        assert_eq!(seconds(2_500_000_000), "2.500000000");
        assert_eq!(seconds(u64::MAX), "18446744073.709551615");
    }

    struct Nothing;

    impl alcazar_core::BusDevice for Nothing {
        fn read(&mut self, _offset: u64, data: &mut [u8]) {
            data.fill(0);
        }
        fn write(&mut self, _offset: u64, _data: &[u8]) {}
    }
}
