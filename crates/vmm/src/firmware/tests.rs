//! Reads the installed tables back out of guest memory with a small
//! parser written from the specifications (ACPI 6.5 chapter 5, MP spec
//! 1.4 chapter 4), the way a guest OS finds them: by scanning the BIOS
//! area for the signatures.

use alcazar_core::layout;
use alcazar_core::memory::{GuestMemory, MemoryMap, RegionKind};

use super::acpi::{
    install_acpi, install_acpi_tables, waking_vector, AcpiAddresses, WakeError, WakingVector,
};
use super::dsdt::isa_devices;
use super::mptable::install_mptable;
use super::*;

fn memory() -> GuestMemory {
    GuestMemory::new(MemoryMap::pc(16 << 20).unwrap()).unwrap()
}

fn read(mem: &GuestMemory, addr: u64, len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len];
    mem.read(addr, &mut b).unwrap();
    b
}

fn sum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |s, b| s.wrapping_add(*b))
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().unwrap())
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// Finds `signature` on a 16-byte boundary in [start, end), as Linux's
/// RSDP and MP scans do.
fn scan(mem: &GuestMemory, start: u64, end: u64, signature: &[u8]) -> Option<u64> {
    let area = read(mem, start, (end - start) as usize);
    (0..area.len())
        .step_by(16)
        .find(|&i| area[i..].starts_with(signature))
        .map(|i| start + i as u64)
}

/// An ACPI table read back whole, its header checked: the length covers
/// at least the header and all its bytes sum to zero.
fn read_table(mem: &GuestMemory, addr: u64) -> Vec<u8> {
    let header = read(mem, addr, 36);
    let len = u32_at(&header, 4) as usize;
    assert!(len >= 36, "table at {addr:#x} has length {len}");
    let table = read(mem, addr, len);
    assert_eq!(sum(&table), 0, "checksum of {:?}", &table[0..4]);
    table
}

/// Finds the RSDP by scanning and checks both of its checksums; returns
/// the XSDT's address.
fn find_xsdt(mem: &GuestMemory) -> u64 {
    let rsdp_addr = scan(mem, 0xe_0000, 0x10_0000, b"RSD PTR ").expect("RSDP");
    assert_eq!(rsdp_addr, layout::RSDP_ADDRESS);
    let rsdp = read(mem, rsdp_addr, 36);
    assert_eq!(sum(&rsdp[0..20]), 0, "ACPI 1.0 checksum");
    assert_eq!(rsdp[15], 2, "revision");
    assert_eq!(u32_at(&rsdp, 20), 36, "length");
    assert_eq!(sum(&rsdp), 0, "extended checksum");
    u64_at(&rsdp, 24)
}

/// The tables the XSDT lists, by signature.
fn xsdt_tables(mem: &GuestMemory) -> Vec<(u64, Vec<u8>)> {
    let xsdt = read_table(mem, find_xsdt(mem));
    assert_eq!(&xsdt[0..4], b"XSDT");
    assert_eq!((xsdt.len() - 36) % 8, 0);
    (36..xsdt.len())
        .step_by(8)
        .map(|at| {
            let addr = u64_at(&xsdt, at);
            (addr, read_table(mem, addr))
        })
        .collect()
}

fn table<'a>(tables: &'a [(u64, Vec<u8>)], signature: &[u8; 4]) -> &'a [u8] {
    let found: Vec<_> = tables
        .iter()
        .filter(|(_, t)| &t[0..4] == signature)
        .collect();
    assert_eq!(found.len(), 1, "{signature:?} listed once");
    &found[0].1
}

fn installed(cpus: u32) -> (GuestMemory, AcpiAddresses) {
    let mem = memory();
    let addrs = install_acpi_tables(&mem, &Platform::new(cpus)).unwrap();
    (mem, addrs)
}

#[test]
fn rsdp_is_found_by_scanning_and_returned() {
    let mem = memory();
    let rsdp = install_acpi(&mem, &Platform::new(1)).unwrap();
    assert_eq!(rsdp, layout::RSDP_ADDRESS);
    assert_eq!(rsdp % 16, 0);
    let xsdt = find_xsdt(&mem);
    assert!((layout::RSDP_ADDRESS..layout::ACPI_TABLES_END).contains(&xsdt));
}

#[test]
fn xsdt_lists_fadt_madt_and_mcfg_with_valid_tables() {
    let (mem, addrs) = installed(2);
    let tables = xsdt_tables(&mem);
    let signatures: Vec<&[u8]> = tables.iter().map(|(_, t)| &t[0..4]).collect();
    assert_eq!(signatures, [b"FACP", b"APIC", b"MCFG"]);
    assert_eq!(tables[0].0, addrs.fadt);
    assert_eq!(tables[1].0, addrs.madt);
    assert_eq!(tables[2].0, addrs.mcfg);
    // MCFG: one allocation (16 bytes after 8 reserved): ECAM base, segment
    // 0, buses 0..=0.
    let mcfg = &tables[2].1;
    assert_eq!(mcfg.len(), 36 + 8 + 16);
    assert_eq!(
        u64::from_le_bytes(mcfg[44..52].try_into().unwrap()),
        alcazar_core::layout::ECAM_BASE
    );
    assert_eq!(&mcfg[52..56], &[0, 0, 0, 0]);
    for (addr, t) in &tables {
        assert_eq!(&t[10..16], &ACPI_OEM_ID);
        assert!(*addr + t.len() as u64 <= layout::ACPI_TABLES_END);
    }
}

#[test]
fn tables_do_not_overlap_and_stay_in_their_area() {
    let (mem, a) = installed(MAX_CPUS);
    let facs_len = u32_at(&read(&mem, a.facs, 8), 4) as u64;
    let mut spans = vec![(a.rsdp, 36u64), (a.facs, facs_len)];
    for addr in [a.xsdt, a.fadt, a.madt, a.dsdt, a.mcfg] {
        spans.push((addr, read_table(&mem, addr).len() as u64));
    }
    spans.sort();
    for w in spans.windows(2) {
        assert!(w[0].0 + w[0].1 <= w[1].0, "{w:x?} overlap");
    }
    let (last, len) = spans[spans.len() - 1];
    assert!(last + len <= layout::ACPI_TABLES_END);
}

#[test]
fn fadt_describes_the_pm_block_and_flags() {
    let (mem, addrs) = installed(1);
    let tables = xsdt_tables(&mem);
    let f = table(&tables, b"FACP");
    assert_eq!(f.len(), 276);
    assert_eq!((f[8], f[131]), (6, 5), "FADT revision 6.5");
    assert_eq!(u32_at(f, 36) as u64, addrs.facs, "FIRMWARE_CTRL");
    assert_eq!(u32_at(f, 40) as u64, addrs.dsdt, "DSDT");
    assert_eq!(u64_at(f, 132), addrs.facs, "X_FIRMWARE_CTRL");
    assert_eq!(u64_at(f, 140), addrs.dsdt, "X_DSDT");
    assert_eq!(u16_at(f, 46), 9, "SCI_INT");
    assert_eq!(u32_at(f, 48), 0, "SMI_CMD: always in ACPI mode");
    assert_eq!(u32_at(f, 56), 0x600, "PM1a_EVT_BLK");
    assert_eq!(u32_at(f, 64), 0x604, "PM1a_CNT_BLK");
    assert_eq!(u32_at(f, 76), 0x608, "PM_TMR_BLK");
    assert_eq!(
        u32_at(f, 60) | u32_at(f, 68) | u32_at(f, 72),
        0,
        "no PM1b/PM2"
    );
    assert_eq!(u32_at(f, 80) | u32_at(f, 84), 0, "no GPE blocks");
    assert_eq!((f[88], f[89], f[91]), (4, 2, 4), "block lengths");
    assert!(u16_at(f, 96) > 100 && u16_at(f, 98) > 1000, "no C2/C3");
    // IAPC_BOOT_ARCH: LEGACY_DEVICES | 8042 | VGA Not Present.
    assert_eq!(u16_at(f, 109), 0b111);
    let flags = u32_at(f, 112);
    let bit = |n: u32| flags & (1 << n) != 0;
    assert!(bit(0) && bit(2), "WBINVD, PROC_C1");
    assert!(!bit(4), "fixed power button present");
    assert!(bit(5), "no fixed sleep button");
    assert!(!bit(6), "FIX_RTC clear: RTC_STS/RTC_EN are in PM1");
    assert!(bit(8), "TMR_VAL_EXT");
    assert!(!bit(10), "no reset register");
    assert!(!bit(20), "not hardware-reduced");
    assert_eq!(&f[116..128], &[0; 12], "RESET_REG empty");
    // Generic address structures: system I/O, width, offset 0, access, port.
    let gas = |at: usize| (f[at], f[at + 1], f[at + 2], f[at + 3], u64_at(f, at + 4));
    assert_eq!(gas(148), (1, 32, 0, 2, 0x600), "X_PM1a_EVT_BLK");
    assert_eq!(gas(172), (1, 16, 0, 2, 0x604), "X_PM1a_CNT_BLK");
    assert_eq!(gas(208), (1, 32, 0, 3, 0x608), "X_PM_TMR_BLK");
    assert_eq!(gas(160).4 | gas(184).4 | gas(196).4, 0, "no X_PM1b/X_PM2");

    let facs = read(&mem, addrs.facs, 64);
    assert_eq!(&facs[0..4], b"FACS");
    assert_eq!(u32_at(&facs, 4), 64);
    assert_eq!(addrs.facs % 64, 0, "FACS 64-byte aligned");
}

/// The MADT's interrupt controller structures, as (type, bytes).
fn madt_entries(madt: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    let mut at = 44;
    while at < madt.len() {
        let len = madt[at + 1] as usize;
        assert!(len >= 2 && at + len <= madt.len(), "entry at {at}");
        out.push((madt[at], madt[at..at + len].to_vec()));
        at += len;
    }
    out
}

#[test]
fn madt_lists_cpus_ioapic_overrides_and_nmi() {
    for cpus in [1u32, 4, 64, MAX_CPUS] {
        let (mem, _) = installed(cpus);
        let tables = xsdt_tables(&mem);
        let madt = table(&tables, b"APIC");
        assert_eq!(u32_at(madt, 36), 0xfee0_0000, "local APIC address");
        assert_eq!(u32_at(madt, 40), 1, "PCAT_COMPAT");
        let entries = madt_entries(madt);

        let lapics: Vec<_> = entries.iter().filter(|(t, _)| *t == 0).collect();
        assert_eq!(lapics.len(), cpus as usize);
        for (i, (_, e)) in lapics.iter().enumerate() {
            assert_eq!(e.len(), 8);
            assert_eq!((e[2], e[3]), (i as u8, i as u8), "UID, APIC ID");
            assert_eq!(u32_at(e, 4) & 1, 1, "enabled");
        }

        let ioapics: Vec<_> = entries.iter().filter(|(t, _)| *t == 1).collect();
        assert_eq!(ioapics.len(), 1);
        let io = &ioapics[0].1;
        assert_eq!(
            io[2],
            super::ioapic_id(cpus),
            "IOAPIC ID as the register holds it"
        );
        assert_eq!(u32_at(io, 4), 0xfec0_0000);
        assert_eq!(u32_at(io, 8), 0, "GSI base");

        let isos: Vec<_> = entries
            .iter()
            .filter(|(t, _)| *t == 2)
            .map(|(_, e)| (e[2], e[3], u32_at(e, 4), u16_at(e, 8)))
            .collect();
        // (bus, source, GSI, flags): PIT edge/high -> GSI 2, SCI level/high.
        assert_eq!(isos, [(0, 0, 2, 0b0101), (0, 9, 9, 0b1101)]);

        let nmis: Vec<_> = entries.iter().filter(|(t, _)| *t == 4).collect();
        assert_eq!(nmis.len(), 1);
        assert_eq!(nmis[0].1, [4, 6, 0xff, 0b0101, 0, 1], "all CPUs, LINT1");
        assert_eq!(entries.len(), cpus as usize + 4, "nothing else");
    }
}

/// EISAID() of ASL (ACPI 6.5 §19.6.35), computed independently of the
/// AML builder: three letters in 5 bits each, four hex digits, stored
/// big-endian as a 32-bit integer.
fn eisaid(id: &str) -> u32 {
    let b = id.as_bytes();
    let letter = |c: u8| u32::from(c - b'@');
    let hex = u32::from_str_radix(&id[3..], 16).unwrap();
    let v = letter(b[0]) << 26 | letter(b[1]) << 21 | letter(b[2]) << 16 | hex;
    v.swap_bytes()
}

/// An AML integer constant in its shortest encoding (ACPI 6.5 §20.2.3:
/// ZeroOp, OneOp, BytePrefix, WordPrefix, DWordPrefix).
fn aml_integer(v: u32) -> Vec<u8> {
    match v {
        0 => vec![0x00],
        1 => vec![0x01],
        2..=0xff => vec![0x0a, v as u8],
        0x100..=0xffff => [&[0x0b][..], &(v as u16).to_le_bytes()].concat(),
        _ => [&[0x0c][..], &v.to_le_bytes()].concat(),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn dsdt_declares_s5_and_the_isa_devices() {
    let (mem, addrs) = installed(1);
    let dsdt = read_table(&mem, addrs.dsdt);
    assert_eq!(&dsdt[0..4], b"DSDT");
    assert_eq!(dsdt[8], 2, "revision 2: 64-bit integers");
    let aml = &dsdt[36..];
    // Name(\_S5_, Package(4) {5, 5, 0, 0}).
    let s5 = [
        0x08, b'\\', b'_', b'S', b'5', b'_', 0x12, 0x08, 0x04, 0x0a, 0x05, 0x0a, 0x05, 0x00, 0x00,
    ];
    assert!(contains(aml, &s5), "\\_S5_ package");
    assert!(contains(aml, b"\\_SB_"));
    for hid in [
        "PNP0501", "PNP0303", "PNP0F13", "PNP0B00", "PNP0100", "PNP0000",
    ] {
        // Name(_HID, EISAID(..)): NameOp "_HID" and the integer.
        let mut name = vec![0x08];
        name.extend_from_slice(b"_HID");
        name.extend_from_slice(&aml_integer(eisaid(hid)));
        assert!(contains(aml, &name), "_HID {hid}");
    }
    assert_eq!(eisaid("PNP0501"), 0x0105_d041);
    // COM1's _CRS: IO(Decode16, 0x3f8, 0x3f8, 1, 8) then IRQNoFlags() {4}.
    assert!(contains(
        aml,
        &[0x47, 0x01, 0xf8, 0x03, 0xf8, 0x03, 0x01, 0x08, 0x22, 0x10, 0x00, 0x79]
    ));
    // No COM2.
    assert!(!contains(aml, &[0xf8, 0x02, 0xf8, 0x02]));
    assert_eq!(isa_devices(&Platform::new(1)).len(), 6);
}

/// Finds and checks the MP floating pointer; returns the configuration
/// table.
fn mp_config(mem: &GuestMemory) -> Vec<u8> {
    let fp_addr = scan(mem, 0xf_0000, 0x10_0000, b"_MP_").expect("MP floating pointer");
    let fp = read(mem, fp_addr, 16);
    assert_eq!(sum(&fp), 0, "floating pointer checksum");
    assert_eq!((fp[8], fp[9]), (1, 4), "length 1, spec 1.4");
    assert_eq!(fp[11], 0, "configuration table present");
    assert_eq!(fp[12] & 0x80, 0, "virtual wire mode");
    let config_addr = u64::from(u32_at(&fp, 4));
    assert!((layout::MPTABLE_START..layout::MPTABLE_END).contains(&config_addr));
    assert_eq!(config_addr % 16, 0);
    let header = read(mem, config_addr, 44);
    assert_eq!(&header[0..4], b"PCMP");
    let len = u16_at(&header, 4) as usize;
    let config = read(mem, config_addr, len);
    assert!(config_addr + len as u64 <= layout::MPTABLE_END);
    assert_eq!(sum(&config), 0, "configuration table checksum");
    assert_eq!(config[6], 4, "spec 1.4");
    assert_eq!(&config[8..16], b"ALCAZAR ");
    assert_eq!(u32_at(&config, 36), 0xfee0_0000);
    assert_eq!(u16_at(&config, 40), 0, "no extended entries");
    config
}

#[test]
fn mp_table_entries() {
    for cpus in [1u32, 2, 64, MAX_CPUS] {
        let mem = memory();
        let platform = Platform::new(cpus);
        let fp = install_mptable(&mem, &platform).unwrap();
        assert_eq!(fp, layout::MPTABLE_START);
        let config = mp_config(&mem);
        let mut at = 44;
        let mut entries = Vec::new();
        while at < config.len() {
            let len = if config[at] == 0 { 20 } else { 8 };
            entries.push(config[at..at + len].to_vec());
            at += len;
        }
        assert_eq!(at, config.len());
        assert_eq!(u16_at(&config, 34) as usize, entries.len(), "entry count");
        let of = |t: u8| entries.iter().filter(move |e| e[0] == t);

        let cpus_seen: Vec<_> = of(0).collect();
        assert_eq!(cpus_seen.len(), cpus as usize);
        for (i, e) in cpus_seen.iter().enumerate() {
            assert_eq!(e[1], i as u8, "APIC ID");
            assert_eq!(e[2], 0x14, "local APIC version");
            let expected_flags = if i == 0 { 0b11 } else { 0b01 };
            assert_eq!(e[3], expected_flags, "enabled, BSP on CPU 0 only");
            assert_eq!(u32_at(e, 4), platform.cpu_signature & 0xfff);
            assert_eq!(u32_at(e, 8), platform.cpu_features);
        }
        let buses: Vec<_> = of(1).collect();
        assert_eq!(buses.len(), 1);
        assert_eq!(&buses[0][2..8], b"ISA   ");
        let ioapics: Vec<_> = of(2).collect();
        assert_eq!(ioapics.len(), 1);
        assert_eq!(ioapics[0][1], super::ioapic_id(cpus));
        assert_eq!((ioapics[0][2], ioapics[0][3]), (0x11, 1));
        assert_eq!(u32_at(ioapics[0], 4), 0xfec0_0000);

        // (type, source IRQ, IOAPIC ID, pin).
        let ints: Vec<_> = of(3).map(|e| (e[1], e[5], e[6], e[7])).collect();
        let id = super::ioapic_id(cpus);
        let mut expected = vec![(3, 0, id, 0), (0, 0, id, 2), (0, 1, id, 1)];
        expected.extend((3..16).map(|irq| (0, irq, id, irq)));
        assert_eq!(ints, expected);
        let lints: Vec<_> = of(4).map(|e| (e[1], e[6], e[7])).collect();
        assert_eq!(
            lints,
            [(3, 0xff, 0), (1, 0xff, 1)],
            "ExtINT LINT0, NMI LINT1"
        );
    }
}

#[test]
fn cpu_count_outside_the_tables_is_refused() {
    let mem = memory();
    for cpus in [0, MAX_CPUS + 1] {
        let platform = Platform::new(cpus);
        assert!(matches!(
            install_acpi(&mem, &platform),
            Err(FirmwareError::UnsupportedCpuCount { .. })
        ));
        assert!(matches!(
            install_mptable(&mem, &platform),
            Err(FirmwareError::UnsupportedCpuCount { .. })
        ));
    }
    // Nothing was written.
    assert!(scan(&mem, 0xe_0000, 0x10_0000, b"RSD PTR ").is_none());
    assert!(scan(&mem, 0xe_0000, 0x10_0000, b"_MP_").is_none());
}

#[test]
fn memory_without_the_bios_area_is_an_error() {
    let mut map = MemoryMap::default();
    map.add(0, 0x8_0000, RegionKind::Ram).unwrap();
    let mem = GuestMemory::new(map).unwrap();
    let platform = Platform::new(1);
    assert!(matches!(
        install_acpi(&mem, &platform),
        Err(FirmwareError::Memory(_))
    ));
    assert!(matches!(
        install_mptable(&mem, &platform),
        Err(FirmwareError::Memory(_))
    ));
}

/// The tables of a machine as built, read back and checked against the
/// live devices: the MADT's IOAPIC where the bus has the IOAPIC and with
/// the ID its register holds; every interrupt override (MADT) and ISA
/// interrupt entry (MP table) delivered on that IOAPIC pin when the ISA
/// line is raised; every `COMn` of the DSDT a UART at that port that
/// raises that IRQ; the `_PRT` entry of a PCI device's slot the pin its
/// interrupt line register (written by the bus) names. The machine has
/// COM1 moved to 0x2e8 on IRQ 5 and a second UART, so a table written
/// from a fixed list would fail.
#[test]
fn the_tables_describe_the_devices_as_built() {
    use std::sync::{Arc, Mutex};

    use alcazar_core::irq::{ApicBus, InterruptMessage, MsiSink, PlatformInterrupts};
    use alcazar_core::{IoSpace, Machine};

    use crate::config::{DeviceSpec, Origin};
    use crate::platform::Chipset;

    /// Local APICs that record every interrupt message.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<InterruptMessage>>);
    impl MsiSink for Recorder {
        fn deliver(&self, m: InterruptMessage) {
            self.0.lock().unwrap().push(m);
        }
    }
    impl ApicBus for Recorder {
        fn set_ext_int(&self, _: bool) {}
        fn connect(&self, _: Arc<dyn PlatformInterrupts>) {}
    }

    let cpus = 2;
    let machine = Machine::new(memory(), cpus);
    let apics = Arc::new(Recorder::default());
    let chipset = Chipset::new(&machine, Some(apics.clone())).unwrap();
    let pci = crate::pci::PciBus::new(&machine, &chipset, None, Default::default()).unwrap();
    let spec = |class: &str, id: &str, toml: &str| {
        let params: toml::Table = toml.parse().unwrap();
        DeviceSpec::parse(
            Origin::File(0),
            class,
            id,
            &params,
            std::path::Path::new("."),
        )
        .unwrap()
    };
    let mut specs = crate::config::device::default_devices();
    specs[0] = spec("serial", "com1", "port = 0x2e8\nirq = 5");
    specs.push(spec("serial", "com2", "port = 0x2f8\nirq = 3"));
    specs.push(spec("virtio-rng", "rng0", ""));
    let tail = Arc::new(crate::console::ConsoleTail::new(machine.control.clone()));
    let terminal: crate::console::SharedTerminal = Arc::new(crate::console::Stdout);
    let ctx = crate::registry::BuildContext {
        control: &machine.control,
        clock: &machine.clock,
        chipset: &chipset,
        pci: &pci,
        tail: &tail,
        terminal: &terminal,
        serial: &crate::config::ConsoleTarget::None,
    };
    for s in &specs {
        let built = crate::registry::build(s, false, &ctx).unwrap();
        for (space, base, len, dev) in built.ranges {
            machine.bus.insert(space, base, len, &s.id, dev).unwrap();
        }
    }
    let platform = Platform::describe(cpus, &[], chipset.ioapic_id(), &specs);
    install(&machine.memory, &platform).unwrap();

    let device_at = |space: IoSpace, addr: u64| {
        machine
            .bus
            .ranges()
            .into_iter()
            .find(|r| r.space == space && (r.base..r.base + r.len).contains(&addr))
            .map(|r| r.name)
    };
    let ioapic_write = |reg: u32, v: u32| {
        machine
            .bus
            .write(IoSpace::Mmio, layout::IOAPIC_BASE, &reg.to_le_bytes());
        machine
            .bus
            .write(IoSpace::Mmio, layout::IOAPIC_BASE + 0x10, &v.to_le_bytes());
    };
    let ioapic_read = |reg: u32| {
        machine
            .bus
            .write(IoSpace::Mmio, layout::IOAPIC_BASE, &reg.to_le_bytes());
        let mut v = [0u8; 4];
        machine
            .bus
            .read(IoSpace::Mmio, layout::IOAPIC_BASE + 0x10, &mut v);
        u32::from_le_bytes(v)
    };
    // Points IOAPIC `pin` at vector 0x40 + pin (edge, unmasked), raises
    // ISA line `irq`, and says whether that vector arrived.
    let arrives = |irq: u8, pin: u8| -> bool {
        ioapic_write(0x10 + 2 * u32::from(pin) + 1, 0);
        ioapic_write(0x10 + 2 * u32::from(pin), 0x40 + u32::from(pin));
        apics.0.lock().unwrap().clear();
        chipset.isa_irq(irq).pulse();
        let got = apics.0.lock().unwrap().clone();
        ioapic_write(0x10 + 2 * u32::from(pin), 1 << 16);
        got.iter().any(|m| m.vector == 0x40 + pin)
    };

    // MADT: the IOAPIC where the bus has it, with the ID its register holds.
    let tables = xsdt_tables(&machine.memory);
    let madt = table(&tables, b"APIC");
    let entries = madt_entries(madt);
    let io = &entries.iter().find(|(t, _)| *t == 1).expect("an IOAPIC").1;
    let base = u64::from(u32_at(io, 4));
    assert_eq!(
        device_at(IoSpace::Mmio, base).as_deref(),
        Some("ioapic"),
        "the MADT's IOAPIC address"
    );
    assert_eq!(u32::from(io[2]), ioapic_read(0) >> 24 & 0xf, "IOAPIC ID");
    let pins = (ioapic_read(1) >> 16 & 0xff) + 1;
    assert_eq!(pins, u32::from(layout::IOAPIC_PINS));
    // Every override delivers on the GSI it names.
    for (_, e) in entries.iter().filter(|(t, _)| *t == 2) {
        let (irq, gsi) = (e[3], u32_at(e, 4));
        assert!(arrives(irq, gsi as u8), "MADT: IRQ {irq} -> GSI {gsi}");
    }
    // MP table: every ISA interrupt entry delivers on its pin.
    let config = mp_config(&machine.memory);
    let mut at = 44;
    while at < config.len() {
        let e = &config[at..];
        if e[0] == 3 && e[1] == 0 && e[4] == 0 {
            let (irq, pin) = (e[5], e[7]);
            assert!(arrives(irq, pin), "MP table: IRQ {irq} -> pin {pin}");
        }
        at += if e[0] == 0 { 20 } else { 8 };
    }
    // DSDT: each COMn's port has a UART that raises the IRQ it lists.
    let dsdt = read_table(&machine.memory, table_address(&tables, b"FACP", 40));
    for (n, &(port, irq)) in [(0x2e8u16, 5u8), (0x2f8, 3)].iter().enumerate() {
        let crs = [
            0x47,
            0x01,
            port as u8,
            (port >> 8) as u8,
            port as u8,
            (port >> 8) as u8,
            0x01,
            0x08,
            0x22,
            (1u16 << irq) as u8,
            ((1u16 << irq) >> 8) as u8,
        ];
        assert!(contains(&dsdt, format!("COM{}", n + 1).as_bytes()));
        assert!(contains(&dsdt, &crs), "COM{} _CRS", n + 1);
        let id = device_at(IoSpace::Port, u64::from(port));
        assert_eq!(
            id.as_deref(),
            Some(["com1", "com2"][n]),
            "a UART at {port:#x}"
        );
        // IER: transmitter empty; MCR: OUT2 gates the IRQ on a PC.
        let pin = layout::isa_irq_to_gsi(irq) as u8;
        ioapic_write(0x10 + 2 * u32::from(pin) + 1, 0);
        ioapic_write(0x10 + 2 * u32::from(pin), 0x40 + u32::from(pin));
        apics.0.lock().unwrap().clear();
        machine
            .bus
            .write(IoSpace::Port, u64::from(port) + 4, &[0x08]);
        machine
            .bus
            .write(IoSpace::Port, u64::from(port) + 1, &[0x02]);
        let got = apics.0.lock().unwrap().clone();
        assert!(
            got.iter().any(|m| m.vector == 0x40 + pin),
            "the UART at {port:#x} raises IRQ {irq}"
        );
    }
    assert!(
        !contains(&dsdt, &[0x47, 0x01, 0xf8, 0x03]),
        "no UART at 0x3f8"
    );
    // _PRT: the entry for the virtio device's slot, INTA#, names the GSI
    // its interrupt line register holds.
    let (slot, _) = pci.virtio_devices()[0];
    let cf8 = 0x8000_0000u32 | u32::from(slot) << 11 | 0x3c;
    machine.bus.write(
        IoSpace::Port,
        u64::from(layout::PCI_CONFIG_PORT),
        &cf8.to_le_bytes(),
    );
    let mut line = [0u8; 1];
    machine.bus.read(IoSpace::Port, 0xcfc, &mut line);
    assert!(line[0] >= layout::PCI_INTX_FIRST_GSI, "line {}", line[0]);
    let address = u32::from(slot) << 16 | 0xffff;
    // Package(4) { address, pin 0, 0, gsi }.
    // PackageOp, PkgLength 11, four elements: DWordPrefix address, Zero
    // (INTA#), Zero (source: a GSI), BytePrefix GSI.
    let mut entry = vec![0x12, 0x0b, 0x04, 0x0c];
    entry.extend_from_slice(&address.to_le_bytes());
    entry.extend_from_slice(&[0x00, 0x00, 0x0a, line[0]]);
    assert!(contains(&dsdt, &entry), "_PRT entry of slot {slot}");
}

/// The address in the 32-bit field at `offset` of the table `signature`.
fn table_address(tables: &[(u64, Vec<u8>)], signature: &[u8; 4], offset: usize) -> u64 {
    u64::from(u32_at(table(tables, signature), offset))
}

#[test]
fn the_waking_vector_is_read_back_from_the_facs_as_the_os_left_it() {
    let (mem, addrs) = installed(2);
    assert_eq!(waking_vector(&mem), Err(WakeError::NoVector));
    // Linux's real-mode wakeup code sits on a page boundary below 1 MiB.
    mem.write(addrs.facs + 12, &0x9_a000u32.to_le_bytes())
        .unwrap();
    assert_eq!(
        waking_vector(&mem),
        Ok(WakingVector::RealMode { cs: 0x9a00, ip: 0 })
    );
    mem.write(addrs.facs + 12, &0x9_a00fu32.to_le_bytes())
        .unwrap();
    assert_eq!(
        waking_vector(&mem),
        Ok(WakingVector::RealMode {
            cs: 0x9a00,
            ip: 0xf
        })
    );
    mem.write(addrs.facs + 12, &0x10_0000u32.to_le_bytes())
        .unwrap();
    assert_eq!(waking_vector(&mem), Err(WakeError::NotRealMode(0x10_0000)));
    // X_Firmware_Waking_Vector wins: a 32-bit wake below 4 GiB is
    // entered, a 64-bit one (not offered) or one above 4 GiB refused.
    mem.write(addrs.facs + 24, &0x20_0000u64.to_le_bytes())
        .unwrap();
    assert_eq!(
        waking_vector(&mem),
        Ok(WakingVector::Protected32 { eip: 0x20_0000 })
    );
    mem.write(addrs.facs + 36, &1u32.to_le_bytes()).unwrap();
    assert!(matches!(
        waking_vector(&mem),
        Err(WakeError::Unsupported { .. })
    ));
    mem.write(addrs.facs + 36, &0u32.to_le_bytes()).unwrap();
    mem.write(addrs.facs + 24, &(1u64 << 40).to_le_bytes())
        .unwrap();
    assert!(matches!(
        waking_vector(&mem),
        Err(WakeError::Unsupported { .. })
    ));
}

#[test]
fn a_missing_or_broken_facs_is_an_error_not_a_panic() {
    let mem = memory();
    assert_eq!(waking_vector(&mem), Err(WakeError::NoRsdp));
    let (mem, addrs) = installed(1);
    mem.write(addrs.facs, b"XXXX").unwrap();
    assert_eq!(waking_vector(&mem), Err(WakeError::NoFacs));
    // An RSDT/XSDT whose length points past RAM, or entries anywhere.
    let (mem, addrs) = installed(1);
    let xsdt = find_xsdt(&mem);
    mem.write(xsdt + 4, &u32::MAX.to_le_bytes()).unwrap();
    mem.write(xsdt + 36, &u64::MAX.to_le_bytes()).unwrap();
    let _ = waking_vector(&mem);
    let _ = addrs;
}
