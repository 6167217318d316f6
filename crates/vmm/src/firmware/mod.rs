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
//! | [`RSDP_ADDR`] (0xe0000) | RSDP, 16-byte aligned, inside the legacy scan area 0xe0000..0xfffff (ACPI 6.5 §5.2.5.1) |
//! | after it, below [`ACPI_END`] (0xf0000) | XSDT, FACS, FADT, MADT, DSDT ([`acpi`]) |
//! | [`MPTABLE_START`] (0xf0000) .. [`MPTABLE_END`] (0x100000) | MP floating pointer, then the MP configuration table ([`mptable`]) |
//!
//! The machine they describe is fixed by [`PlatformLayout`]: vCPUs with
//! local APIC IDs 0..N-1 (local APICs at [`LOCAL_APIC_ADDR`]), one 82093AA
//! IOAPIC with ID N at [`IOAPIC_ADDR`] (24 pins, GSI base 0), the dual
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
pub mod dsdt;
pub mod mptable;

#[cfg(test)]
mod tests;

use alcazar_core::memory::MemoryError;

/// Guest-physical address of the RSDP (ACPI 6.5 §5.2.5.1: a 16-byte
/// boundary in the BIOS read-only area 0xe0000..0xfffff). Pass it to Linux
/// in `boot_params.acpi_rsdp_addr` as well.
pub const RSDP_ADDR: u64 = 0xe_0000;
/// End (exclusive) of the area for the RSDP and the ACPI tables it leads to.
pub const ACPI_END: u64 = 0xf_0000;
/// Guest-physical address of the MP floating pointer structure (MP spec
/// 1.4 §4.1: a 16-byte boundary in the BIOS ROM area 0xf0000..0xfffff).
pub const MPTABLE_START: u64 = 0xf_0000;
/// End (exclusive) of the MP table area: the top of the first MiB.
pub const MPTABLE_END: u64 = 0x10_0000;

// The layout's invariants, checked at compile time: both anchors on a
// 16-byte boundary inside the BIOS area the OS scans, the two areas apart.
const _: () = {
    assert!(RSDP_ADDR & 0xf == 0 && RSDP_ADDR >= 0xe_0000 && ACPI_END <= MPTABLE_START);
    assert!(MPTABLE_START & 0xf == 0 && MPTABLE_START >= 0xf_0000 && MPTABLE_END <= 0x10_0000);
};

/// Physical address of every local APIC (Intel SDM Vol. 3A §11.4.1).
pub const LOCAL_APIC_ADDR: u32 = 0xfee0_0000;
/// Physical address of the IOAPIC (82093AA datasheet §3.0).
pub const IOAPIC_ADDR: u32 = 0xfec0_0000;
/// Local APIC version reported in the MP table: 0x14, an integrated xAPIC
/// (Intel SDM Vol. 3A §11.4.8).
pub const LOCAL_APIC_VERSION: u8 = 0x14;
/// IOAPIC version (IOAPICVER bits 7:0 of the 82093AA).
pub const IOAPIC_VERSION: u8 = 0x11;

/// ISA IRQ of the 8254 PIT, routed to [`PIT_GSI`] (interrupt source override).
pub const PIT_IRQ: u8 = 0;
/// IOAPIC pin (GSI) that carries the PIT's IRQ 0.
pub const PIT_GSI: u32 = 2;
/// ISA IRQ of the ACPI SCI (level-triggered, active high).
pub const SCI_IRQ: u8 = 9;

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

/// What the firmware tables need to know about the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlatformLayout {
    /// Number of vCPUs; their local APIC IDs are 0..cpus-1, vCPU 0 is the
    /// bootstrap processor. 1..=[`MAX_CPUS`].
    pub cpus: u32,
    /// CPU signature for the MP table's processor entries: CPUID.1:EAX
    /// (stepping, model, family; MP spec 1.4 Table 4-5).
    pub cpu_signature: u32,
    /// Feature flags for the MP table's processor entries: CPUID.1:EDX.
    pub cpu_features: u32,
}

impl PlatformLayout {
    /// The layout for `cpus` vCPUs of the emu engine's CPU model (CPU
    /// signature and features from its CPUID leaf 1).
    pub fn new(cpus: u32) -> Self {
        let leaf1 = alcazar_emu::cpuid::cpuid_table()
            .into_iter()
            .find(|e| e.leaf == 1)
            .map(|e| e.result);
        PlatformLayout {
            cpus,
            cpu_signature: leaf1.map_or(0, |r| r.eax),
            cpu_features: leaf1.map_or(0, |r| r.edx),
        }
    }

    /// The IOAPIC's APIC ID as the tables give it: [`ioapic_id`].
    pub fn ioapic_id(&self) -> u8 {
        ioapic_id(self.cpus)
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
        assert!(PlatformLayout::new(0).validate().is_err());
        assert!(PlatformLayout::new(1).validate().is_ok());
        assert!(PlatformLayout::new(MAX_CPUS).validate().is_ok());
        assert!(PlatformLayout::new(MAX_CPUS + 1).validate().is_err());
        assert_eq!(PlatformLayout::new(4).ioapic_id(), 4);
        assert_eq!(PlatformLayout::new(15).ioapic_id(), 15);
        // The register holds 4 bits: 16 or more vCPUs share ID 0.
        assert_eq!(PlatformLayout::new(16).ioapic_id(), 0);
        assert_eq!(PlatformLayout::new(MAX_CPUS).ioapic_id(), 0);
    }

    #[test]
    fn layout_uses_emu_cpuid_signature() {
        let l = PlatformLayout::new(2);
        // Family in bits 11:8 (or extended family) is never zero for a real CPU.
        assert_ne!(l.cpu_signature & 0xf00, 0);
    }
}
