//! The Intel MultiProcessor table (MultiProcessor Specification 1.4,
//! chapter 4), for guests that do not use ACPI (Linux with `acpi=off` and
//! an MP-table parser, `CONFIG_X86_MPPARSE`).
//!
//! [`install_mptable`] writes, from [`super::MPTABLE_START`]:
//! - the MP floating pointer structure (§4.1, 16 bytes): spec revision
//!   1.4, a configuration table present (feature byte 1 = 0), virtual wire
//!   mode (feature byte 2 IMCRP clear: there is no IMCR);
//! - the MP configuration table (§4.2, base table only, no extended
//!   entries): the header (OEM "ALCAZAR"), one processor entry per vCPU
//!   (§4.3.1; the BSP flag on vCPU 0), one ISA bus entry (§4.3.2), the
//!   IOAPIC entry (§4.3.3), I/O interrupt assignment entries (§4.3.4) and
//!   local interrupt assignment entries (§4.3.5).
//!
//! Interrupt routing matches the MADT: ExtINT (the 8259A's output) on
//! IOAPIC pin 0, ISA IRQ 0 on pin 2, ISA IRQ n on pin n for the others
//! (IRQ 2 is the 8259A cascade and has no entry), every ISA IRQ "conforms
//! to the bus" (edge-triggered, active high); LINT0 is ExtINT and LINT1 is
//! NMI on every local APIC. The SCI's level trigger is not stated: a guest
//! that reads this table has turned ACPI off.

use alcazar_core::layout;
use alcazar_core::memory::GuestMemory;

use super::{checksum, FirmwareError, Placer, Platform, IOAPIC_VERSION, LOCAL_APIC_VERSION};

/// Signature of the MP floating pointer structure.
pub const FLOATING_SIGNATURE: [u8; 4] = *b"_MP_";
/// Signature of the MP configuration table.
pub const CONFIG_SIGNATURE: [u8; 4] = *b"PCMP";
/// Specification revision 1.4.
pub const SPEC_REV: u8 = 4;
/// Length of the floating pointer structure in bytes.
pub const FLOATING_LEN: usize = 16;
/// Length of the configuration table header in bytes.
pub const CONFIG_HEADER_LEN: usize = 44;
/// OEM ID of the configuration table header (8 bytes, space-padded).
pub const OEM_ID: [u8; 8] = *b"ALCAZAR ";
/// Product ID of the configuration table header (12 bytes, space-padded).
pub const PRODUCT_ID: [u8; 12] = *b"VMM         ";

/// Configuration table entry types (MP spec Table 4-3) and lengths.
pub mod entry {
    /// Processor entry type (20 bytes).
    pub const PROCESSOR: u8 = 0;
    /// Bus entry type (8 bytes).
    pub const BUS: u8 = 1;
    /// I/O APIC entry type (8 bytes).
    pub const IOAPIC: u8 = 2;
    /// I/O interrupt assignment entry type (8 bytes).
    pub const IO_INTERRUPT: u8 = 3;
    /// Local interrupt assignment entry type (8 bytes).
    pub const LOCAL_INTERRUPT: u8 = 4;
    /// Length of a processor entry.
    pub const PROCESSOR_LEN: usize = 20;
    /// Length of every other base table entry.
    pub const OTHER_LEN: usize = 8;
}

/// Processor entry CPU flags (MP spec Table 4-5).
const CPU_ENABLED: u8 = 1 << 0;
const CPU_BOOTSTRAP: u8 = 1 << 1;
/// The bits of CPUID.1:EAX the CPU signature field holds (stepping, model,
/// family; the rest are reserved).
const CPU_SIGNATURE_MASK: u32 = 0xfff;
/// I/O APIC entry flag: usable.
const IOAPIC_ENABLED: u8 = 1 << 0;

/// Interrupt types of interrupt assignment entries (MP spec Table 4-11).
// The table as the spec has it, for readers: not every type is used.
#[allow(dead_code)]
pub mod int_type {
    /// A vectored interrupt, vector from the APIC redirection entry.
    pub const INT: u8 = 0;
    /// A non-maskable interrupt.
    pub const NMI: u8 = 1;
    /// A system management interrupt.
    pub const SMI: u8 = 2;
    /// A vectored interrupt, vector from an external 8259A.
    pub const EXTINT: u8 = 3;
}

/// Interrupt entry flags 0: polarity and trigger mode conform to the bus.
const CONFORMS: u16 = 0;
/// The ISA bus's ID.
const ISA_BUS_ID: u8 = 0;
/// Destination local APIC ID meaning "all local APICs".
const ALL_LOCAL_APICS: u8 = 0xff;
/// Number of ISA IRQs.
const ISA_IRQS: u8 = 16;
/// The 8259A cascade input, which no device raises.
const CASCADE_IRQ: u8 = 2;

fn processor(apic_id: u8, bsp: bool, platform: &Platform) -> [u8; entry::PROCESSOR_LEN] {
    let mut e = [0u8; entry::PROCESSOR_LEN];
    e[0] = entry::PROCESSOR;
    e[1] = apic_id;
    e[2] = LOCAL_APIC_VERSION;
    e[3] = CPU_ENABLED | if bsp { CPU_BOOTSTRAP } else { 0 };
    e[4..8].copy_from_slice(&(platform.cpu_signature & CPU_SIGNATURE_MASK).to_le_bytes());
    e[8..12].copy_from_slice(&platform.cpu_features.to_le_bytes());
    e
}

fn isa_bus() -> [u8; entry::OTHER_LEN] {
    let mut e = [0u8; entry::OTHER_LEN];
    e[0] = entry::BUS;
    e[1] = ISA_BUS_ID;
    e[2..8].copy_from_slice(b"ISA   ");
    e
}

fn ioapic(id: u8) -> [u8; entry::OTHER_LEN] {
    let mut e = [0u8; entry::OTHER_LEN];
    e[0] = entry::IOAPIC;
    e[1] = id;
    e[2] = IOAPIC_VERSION;
    e[3] = IOAPIC_ENABLED;
    e[4..8].copy_from_slice(&(layout::IOAPIC_BASE as u32).to_le_bytes());
    e
}

fn io_interrupt(kind: u8, source_irq: u8, ioapic_id: u8, pin: u8) -> [u8; entry::OTHER_LEN] {
    let mut e = [0u8; entry::OTHER_LEN];
    e[0] = entry::IO_INTERRUPT;
    e[1] = kind;
    e[2..4].copy_from_slice(&CONFORMS.to_le_bytes());
    e[4] = ISA_BUS_ID;
    e[5] = source_irq;
    e[6] = ioapic_id;
    e[7] = pin;
    e
}

fn local_interrupt(kind: u8, lint: u8) -> [u8; entry::OTHER_LEN] {
    let mut e = [0u8; entry::OTHER_LEN];
    e[0] = entry::LOCAL_INTERRUPT;
    e[1] = kind;
    e[2..4].copy_from_slice(&CONFORMS.to_le_bytes());
    e[4] = ISA_BUS_ID;
    e[5] = 0;
    e[6] = ALL_LOCAL_APICS;
    e[7] = lint;
    e
}

/// The MP configuration table (header and base entries) for `platform`.
pub fn build_config_table(platform: &Platform) -> Result<Vec<u8>, FirmwareError> {
    platform.validate()?;
    let ioapic_id = platform.ioapic_id();
    let mut entries: Vec<u8> = Vec::new();
    let mut count: u16 = 0;
    let mut push = |bytes: &[u8]| {
        entries.extend_from_slice(bytes);
        count += 1;
    };
    for cpu in 0..platform.cpus {
        let id = u8::try_from(cpu).map_err(|_| FirmwareError::UnsupportedCpuCount {
            cpus: platform.cpus,
            max: super::MAX_CPUS,
        })?;
        push(&processor(id, cpu == 0, platform));
    }
    push(&isa_bus());
    push(&ioapic(ioapic_id));
    // The 8259A's INTR output on pin 0, for virtual wire mode through the
    // IOAPIC.
    push(&io_interrupt(int_type::EXTINT, 0, ioapic_id, 0));
    for irq in 0..ISA_IRQS {
        if irq == CASCADE_IRQ {
            continue;
        }
        // layout::isa_irq_to_gsi(layout::PIT_ISA_IRQ) is 2, a valid pin number.
        let pin = if irq == layout::PIT_ISA_IRQ {
            layout::isa_irq_to_gsi(layout::PIT_ISA_IRQ) as u8
        } else {
            irq
        };
        push(&io_interrupt(int_type::INT, irq, ioapic_id, pin));
    }
    push(&local_interrupt(int_type::EXTINT, 0));
    push(&local_interrupt(int_type::NMI, 1));

    let len = CONFIG_HEADER_LEN + entries.len();
    let base_len = u16::try_from(len).map_err(|_| FirmwareError::NoSpace {
        table: "MP configuration",
        len,
        addr: layout::MPTABLE_START,
        limit: layout::MPTABLE_END,
    })?;
    let mut t = Vec::with_capacity(len);
    t.extend_from_slice(&CONFIG_SIGNATURE);
    t.extend_from_slice(&base_len.to_le_bytes());
    t.push(SPEC_REV);
    t.push(0); // checksum, below
    t.extend_from_slice(&OEM_ID);
    t.extend_from_slice(&PRODUCT_ID);
    t.extend_from_slice(&0u32.to_le_bytes()); // OEM table pointer
    t.extend_from_slice(&0u16.to_le_bytes()); // OEM table size
    t.extend_from_slice(&count.to_le_bytes());
    t.extend_from_slice(&(layout::LOCAL_APIC_BASE as u32).to_le_bytes());
    t.extend_from_slice(&0u16.to_le_bytes()); // extended table length
    t.push(0); // extended table checksum (no extended entries)
    t.push(0); // reserved
    debug_assert_eq!(t.len(), CONFIG_HEADER_LEN);
    t.extend_from_slice(&entries);
    t[7] = checksum(&t);
    Ok(t)
}

/// The MP floating pointer structure pointing at a configuration table at
/// `config_addr`.
pub fn build_floating_pointer(config_addr: u32) -> [u8; FLOATING_LEN] {
    let mut f = [0u8; FLOATING_LEN];
    f[0..4].copy_from_slice(&FLOATING_SIGNATURE);
    f[4..8].copy_from_slice(&config_addr.to_le_bytes());
    f[8] = 1; // length in 16-byte paragraphs
    f[9] = SPEC_REV;
    // f[11] = 0: a configuration table is present; f[12] = 0: no IMCR,
    // virtual wire mode.
    f[10] = checksum(&f);
    f
}

/// Builds the MP table for `platform` and writes it to guest memory: the
/// floating pointer at [`layout::MPTABLE_START`], the configuration table after
/// it, below [`layout::MPTABLE_END`]. Returns the floating pointer's address.
pub fn install_mptable(mem: &GuestMemory, platform: &Platform) -> Result<u64, FirmwareError> {
    let config = build_config_table(platform)?;
    let mut placer = Placer::new(layout::MPTABLE_START, layout::MPTABLE_END);
    let floating_addr = placer.place("MP floating pointer", FLOATING_LEN, 16)?;
    let config_addr = placer.place("MP configuration", config.len(), 16)?;
    // Both lie below 1 MiB.
    let floating = build_floating_pointer(u32::try_from(config_addr).unwrap_or(0));
    mem.write(floating_addr, &floating)?;
    mem.write(config_addr, &config)?;
    tracing::debug!(
        floating = floating_addr,
        config = config_addr,
        cpus = platform.cpus,
        "MP table installed"
    );
    Ok(floating_addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floating_pointer_sums_to_zero() {
        let f = build_floating_pointer(0xf0010);
        assert_eq!(f.iter().fold(0u8, |s, b| s.wrapping_add(*b)), 0);
        assert_eq!(&f[4..8], &0xf0010u32.to_le_bytes());
    }

    #[test]
    fn processor_entry_flags_and_signature() {
        let platform = Platform {
            cpu_signature: 0x000a_0f61,
            cpu_features: 0x1234,
            ..Platform::new(2)
        };
        let bsp = processor(0, true, &platform);
        let ap = processor(1, false, &platform);
        assert_eq!(bsp[3], CPU_ENABLED | CPU_BOOTSTRAP);
        assert_eq!(ap[3], CPU_ENABLED);
        assert_eq!(ap[1], 1);
        assert_eq!(&bsp[4..8], &0xf61u32.to_le_bytes());
        assert_eq!(&bsp[8..12], &0x1234u32.to_le_bytes());
    }

    #[test]
    fn too_many_cpus_is_an_error() {
        let err = build_config_table(&Platform::new(300)).unwrap_err();
        assert!(matches!(
            err,
            FirmwareError::UnsupportedCpuCount { cpus: 300, .. }
        ));
    }
}
