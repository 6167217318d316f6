//! Firmware tables that describe the machine to a guest OS: ACPI (RSDP,
//! XSDT, FADT, FACS, MADT, DSDT) and the Intel MultiProcessor table.
//!
//! A PC BIOS leaves these in memory before it hands over to the OS; a
//! direct-booted Linux kernel finds them the same way, by scanning the BIOS
//! area for the signatures or through `boot_params.acpi_rsdp_addr`.
//!
//! Where they live (all in the reserved area below 1 MiB that the e820 map
//! marks reserved, 0x9fc00..0x100000):
//!
//! | range | contents |
//! |---|---|
//! | [`alcazar_core::layout::RSDP_ADDRESS`] (0xe0000) | RSDP, 16-byte aligned, inside the legacy scan area 0xe0000..0xfffff (ACPI 6.5 §5.2.5.1) |
//! | after it, below [`alcazar_core::layout::ACPI_TABLES_END`] (0xf0000) | XSDT, FACS, FADT, MADT, DSDT ([`acpi`]) |
//! | [`alcazar_core::layout::MPTABLE_START`] (0xf0000) .. [`alcazar_core::layout::MPTABLE_END`] (0x100000) | MP floating pointer, then the MP configuration table ([`mptable`]) |
//!
//! The machine they describe is fixed by [`Platform`]: vCPUs with
//! local APIC IDs 0..N-1 (local APICs at [`(layout::LOCAL_APIC_BASE as u32)`]), one 82093AA
//! IOAPIC with ID N at [`(layout::IOAPIC_BASE as u32)`] (24 pins, GSI base 0), the dual
//! 8259A, ISA IRQ n on IOAPIC pin n except IRQ 0 (PIT) on pin 2, the ACPI
//! PM block at 0x600 with its SCI on IRQ 9, and the ISA devices of the DSDT
//! ([`dsdt`]).
//!
//! Checked beyond the unit tests (by hand, not in CI): `iasl -d` and
//! `acpiexec` (acpica-tools) load the tables and evaluate `\_S5` and the
//! `_CRS` objects; Debian's Linux 6.1 cloud kernel, with the ACPI area
//! loaded into a QEMU microvm at 0xe0000, lists every table, takes its SMP
//! and IOAPIC configuration, both overrides and the LAPIC NMI from the
//! MADT, reports "PM: (supports S0 S5)", and binds ttyS0, the i8042 and
//! rtc_cmos through PnP ACPI.
//!
//! Left out: SRAT/SLIT (one NUMA node), HPET, MCFG and PCI (no PCI bus yet:
//! [`dsdt`] has one place where the host bridge goes), processor objects in
//! the DSDT (Linux enumerates CPUs from the MADT), and sleep states other
//! than S5.

pub mod acpi;
pub mod bios_config;
pub mod dsdt;
pub mod mptable;
pub mod table_loader;

#[cfg(test)]
mod tests;

use alcazar_core::memory::MemoryError;

/// Local APIC version reported in the MP table: 0x14, an integrated xAPIC
/// (Intel SDM Vol. 3A §11.4.8).
pub const LOCAL_APIC_VERSION: u8 = 0x14;
/// IOAPIC version (IOAPICVER bits 7:0 of the 82093AA).
pub const IOAPIC_VERSION: u8 = 0x11;

/// Most vCPUs the tables describe: local APIC IDs are 8 bits in the MADT's
/// Processor Local APIC structure and the MP table, 0xff is the broadcast
/// ID.
pub const MAX_CPUS: u32 = 254;

/// OEM ID of every ACPI table (6 bytes).
pub const ACPI_OEM_ID: [u8; 6] = *b"ALCAZR";
/// OEM table ID of every ACPI table (8 bytes).
pub const ACPI_OEM_TABLE_ID: [u8; 8] = *b"ALCAZAR ";
/// OEM revision of every ACPI table.
pub const ACPI_OEM_REVISION: u32 = 1;

/// The IOAPIC's APIC ID for a machine of `cpus` vCPUs: the first ID after
/// the CPUs' while it fits the 4 bits of the 82093AA's IOAPICID register
/// (datasheet §3.2.1, bits 27:24), so the register, the MADT and the MP
/// table agree. With 16 or more vCPUs no 4-bit ID is free; an xAPIC
/// system (interrupt messages on the system bus, not the old 3-wire APIC
/// bus) lets an IOAPIC share an ID with a local APIC, so it is 0.
pub fn ioapic_id(cpus: u32) -> u8 {
    match u8::try_from(cpus) {
        Ok(id) if id <= 0x0f => id,
        _ => 0,
    }
}

/// The machine the firmware tables describe, read from the machine as
/// built: the vCPU count, the CPU model the engine gives them, the
/// IOAPIC's ID as its register holds it, and the ISA devices on the bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// Number of vCPUs; their local APIC IDs are 0..cpus-1, vCPU 0 is the
    /// bootstrap processor. 1..=[`MAX_CPUS`].
    pub cpus: u32,
    /// CPU signature for the MP table's processor entries: CPUID.1:EAX
    /// (stepping, model, family; MP spec 1.4 Table 4-5).
    pub cpu_signature: u32,
    /// Feature flags for the MP table's processor entries: CPUID.1:EDX.
    pub cpu_features: u32,
    /// The IOAPIC's APIC ID.
    pub ioapic_id: u8,
    /// The 16550 UARTs on the bus: first port and ISA IRQ, in device
    /// order (the DSDT's `COM1`, `COM2`, ...).
    pub uarts: Vec<(u16, u8)>,
    /// Whether the 8042 keyboard controller is on the bus.
    pub i8042: bool,
    /// Whether the DSDT offers S3 (`\_S3_`): the machine has the ACPI PM
    /// block and its engine can restart vCPUs at the waking vector.
    pub s3: bool,
}

impl Platform {
    /// A PC with `cpus` vCPUs and the standard devices (COM1 at 0x3f8 on
    /// IRQ 4, the 8042), the IOAPIC ID [`ioapic_id`] gives, and no CPU
    /// model (signature and features 0): what the unit tests describe.
    #[cfg(test)]
    pub fn new(cpus: u32) -> Self {
        Platform {
            cpus,
            cpu_signature: 0,
            cpu_features: 0,
            ioapic_id: ioapic_id(cpus),
            uarts: vec![(0x3f8, 4)],
            i8042: true,
            s3: true,
        }
    }

    /// The machine as built: `cpus` vCPUs answering CPUID from `cpuid`
    /// (the engine's table), the IOAPIC whose ID register holds
    /// `ioapic_id`, and the UARTs and keyboard controller of `devices`.
    pub fn describe(
        cpus: u32,
        cpuid: &[alcazar_core::cpuid::CpuidEntry],
        ioapic_id: u8,
        devices: &[crate::config::DeviceSpec],
    ) -> Self {
        use crate::config::DeviceConfig;
        let leaf1 = cpuid.iter().find(|e| e.leaf == 1).map(|e| e.result);
        Platform {
            cpus,
            cpu_signature: leaf1.map_or(0, |r| r.eax),
            cpu_features: leaf1.map_or(0, |r| r.edx),
            ioapic_id,
            uarts: devices
                .iter()
                .filter_map(|d| match &d.config {
                    DeviceConfig::Serial(s) => Some((s.port, s.irq)),
                    _ => None,
                })
                .collect(),
            i8042: devices
                .iter()
                .any(|d| matches!(d.config, DeviceConfig::I8042)),
            // The VMM turns it on once it knows its engine can wake.
            s3: false,
        }
    }

    /// The IOAPIC's APIC ID as the tables give it.
    pub fn ioapic_id(&self) -> u8 {
        self.ioapic_id
    }

    /// Checks that the tables can describe this many CPUs.
    fn validate(&self) -> Result<(), FirmwareError> {
        if (1..=MAX_CPUS).contains(&self.cpus) {
            Ok(())
        } else {
            Err(FirmwareError::UnsupportedCpuCount {
                cpus: self.cpus,
                max: MAX_CPUS,
            })
        }
    }
}

/// Writes the ACPI tables and the MP table that describe `platform` into
/// `memory`; returns the RSDP's address (for `boot_params.acpi_rsdp_addr`).
pub fn install(
    memory: &alcazar_core::memory::GuestMemory,
    platform: &Platform,
) -> Result<u64, FirmwareError> {
    let rsdp = acpi::install_acpi(memory, platform)?;
    mptable::install_mptable(memory, platform)?;
    Ok(rsdp)
}

/// Errors from building or installing the firmware tables.
#[derive(Debug, thiserror::Error)]
pub enum FirmwareError {
    /// The CPU count is zero or too large for 8-bit APIC IDs.
    #[error("{cpus} vCPUs cannot be described in the firmware tables (1 to {max} are supported)")]
    UnsupportedCpuCount {
        /// The requested count.
        cpus: u32,
        /// The most the tables can describe.
        max: u32,
    },
    /// The tables do not fit in their area below 1 MiB.
    #[error("the {table} table ({len} bytes at {addr:#x}) does not fit below {limit:#x}")]
    NoSpace {
        /// Which table did not fit.
        table: &'static str,
        /// Its length in bytes.
        len: usize,
        /// Where it would have gone.
        addr: u64,
        /// End of its area.
        limit: u64,
    },
    /// Guest memory does not cover the table area.
    #[error("writing firmware tables to guest memory: {0}")]
    Memory(#[from] MemoryError),
    /// The fw_cfg device refused an item (a VMM bug).
    #[error("building the fw_cfg items: {0}")]
    FwCfg(#[from] alcazar_devices::fw_cfg::FwCfgError),
}

/// The byte that makes `bytes` sum to zero (mod 256) when stored in a
/// checksum field that currently holds zero: the checksum rule of every
/// ACPI table (ACPI 6.5 §5.2.6) and MP structure (MP spec 1.4 §4.1).
pub fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |sum, b| sum.wrapping_sub(*b))
}

/// A bump allocator for tables in one area of guest memory.
#[derive(Debug)]
struct Placer {
    next: u64,
    limit: u64,
}

impl Placer {
    fn new(start: u64, limit: u64) -> Self {
        Placer { next: start, limit }
    }

    /// Reserves `len` bytes aligned to `align` (a power of two) for `table`.
    fn place(&mut self, table: &'static str, len: usize, align: u64) -> Result<u64, FirmwareError> {
        let addr = self.next.next_multiple_of(align);
        let end = addr.checked_add(len as u64).filter(|&e| e <= self.limit);
        match end {
            Some(end) => {
                self.next = end;
                Ok(addr)
            }
            None => Err(FirmwareError::NoSpace {
                table,
                len,
                addr,
                limit: self.limit,
            }),
        }
    }
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn checksum_makes_bytes_sum_to_zero() {
        let mut data = vec![1u8, 2, 250, 77, 0];
        data[4] = checksum(&data);
        assert_eq!(data.iter().fold(0u8, |s, b| s.wrapping_add(*b)), 0);
        assert_eq!(checksum(&[]), 0);
    }

    #[test]
    fn placer_aligns_and_refuses_overflow() {
        let mut p = Placer::new(0x1001, 0x1100);
        assert_eq!(p.place("a", 0x10, 0x40).unwrap(), 0x1040);
        assert_eq!(p.place("b", 0x8, 0x10).unwrap(), 0x1050);
        assert!(matches!(
            p.place("c", 0x100, 0x10),
            Err(FirmwareError::NoSpace { table: "c", .. })
        ));
    }

    #[test]
    fn cpu_count_is_validated() {
        assert!(Platform::new(0).validate().is_err());
        assert!(Platform::new(1).validate().is_ok());
        assert!(Platform::new(MAX_CPUS).validate().is_ok());
        assert!(Platform::new(MAX_CPUS + 1).validate().is_err());
        assert_eq!(Platform::new(4).ioapic_id(), 4);
        assert_eq!(Platform::new(15).ioapic_id(), 15);
        // The register holds 4 bits: 16 or more vCPUs share ID 0.
        assert_eq!(Platform::new(16).ioapic_id(), 0);
        assert_eq!(Platform::new(MAX_CPUS).ioapic_id(), 0);
    }

    #[test]
    fn the_cpu_model_comes_from_the_engines_cpuid() {
        use alcazar_core::cpuid::{CpuidEntry, CpuidResult};
        let leaf1 = CpuidEntry {
            leaf: 1,
            result: CpuidResult {
                eax: 0x000a_0f61,
                edx: 0x178b_fbff,
                ..CpuidResult::default()
            },
            ..CpuidEntry::default()
        };
        let p = Platform::describe(2, &[leaf1], 2, &[]);
        assert_eq!(
            (p.cpu_signature, p.cpu_features),
            (0x000a_0f61, 0x178b_fbff)
        );
        assert!(p.uarts.is_empty() && !p.i8042);
    }
}
