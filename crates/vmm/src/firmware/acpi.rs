//! The static ACPI tables: RSDP, XSDT, FACS, FADT and MADT (ACPI 6.5
//! chapter 5.2), and [`install_acpi`], which lays them out with the DSDT
//! ([`super::dsdt`]) from [`layout::RSDP_ADDRESS`] up.
//!
//! The RSDP, XSDT, FADT and FACS come from the `acpi_tables` crate's
//! builders. Its MADT builder cannot set the MADT flags (PCAT_COMPAT) and
//! has no interrupt source override or local APIC NMI structures, so the
//! MADT is assembled here from its §5.2.12 structures on the crate's
//! generic [`Sdt`] (which keeps the length and checksum right).
//!
//! What the FADT says (ACPI 6.5 §5.2.9): a PC-AT-compatible machine, not
//! hardware-reduced, already in ACPI mode (no SMI_CMD: the PM device keeps
//! SCI_EN set), PM1a event block at 0x600 (4 bytes), PM1a control block at
//! 0x604 (2 bytes), a 32-bit PM timer at 0x608 (TMR_VAL_EXT), SCI on IRQ 9,
//! no GPE blocks, no C2/C3, a fixed-feature power button and no sleep
//! button, no RTC wake status in PM1 (FIX_RTC), no reset register (Linux
//! falls back to the keyboard controller), legacy devices and an 8042
//! present, no VGA. Each PM block is given both as the legacy 32-bit port
//! field and as an X_ generic address structure; the DSDT and FACS both as
//! the 32-bit and the 64-bit (X_) pointer, with the same value.

use acpi_tables::fadt::{FADTBuilder, Flags, PmProfile};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};
use acpi_tables::madt::{EnabledStatus, IoApic, ProcessorLocalApic};
use acpi_tables::mcfg::MCFG;
use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;
use acpi_tables::xsdt::XSDT;
use acpi_tables::Aml;
use alcazar_core::layout;
use alcazar_core::memory::GuestMemory;
use alcazar_devices::acpi_pm;

use super::{
    dsdt, FirmwareError, Placer, Platform, ACPI_OEM_ID, ACPI_OEM_REVISION, ACPI_OEM_TABLE_ID,
};

/// Length of the common SDT header (ACPI 6.5 Table 5.4).
pub const SDT_HEADER_LEN: usize = 36;

/// MADT revision (ACPI 6.5 Table 5.19).
pub const MADT_REVISION: u8 = 5;
/// MADT flag PCAT_COMPAT: the system also has dual 8259s (Table 5.20).
pub const MADT_PCAT_COMPAT: u32 = 1 << 0;

/// MADT interrupt controller structure types (ACPI 6.5 Table 5.21).
// The table as the spec has it, for readers: not every type is written.
#[allow(dead_code)]
pub mod madt_type {
    /// Processor Local APIC (§5.2.12.2).
    pub const LOCAL_APIC: u8 = 0;
    /// I/O APIC (§5.2.12.3).
    pub const IO_APIC: u8 = 1;
    /// Interrupt Source Override (§5.2.12.5).
    pub const INTERRUPT_SOURCE_OVERRIDE: u8 = 2;
    /// Local APIC NMI (§5.2.12.7).
    pub const LOCAL_APIC_NMI: u8 = 4;
}

/// MPS INTI flags (ACPI 6.5 Table 5.26), used by the interrupt source
/// override and local APIC NMI structures.
pub mod inti {
    /// Polarity bits 1:0 = 01: active high.
    pub const ACTIVE_HIGH: u16 = 0b01;
    /// Trigger mode bits 3:2 = 01: edge-triggered.
    pub const EDGE: u16 = 0b01 << 2;
    /// Trigger mode bits 3:2 = 11: level-triggered.
    pub const LEVEL: u16 = 0b11 << 2;
}

/// Processor UID meaning "all processors" in a Local APIC NMI structure.
pub const ALL_PROCESSORS: u8 = 0xff;
/// The local APIC input the NMI is wired to (LINT1).
pub const NMI_LINT: u8 = 1;

/// FADT IAPC_BOOT_ARCH flags (ACPI 6.5 Table 5.11).
// The flags as the spec has them, for readers: not every one is set.
#[allow(dead_code)]
pub mod iapc_boot_arch {
    /// LEGACY_DEVICES: ISA devices the OS cannot enumerate are present.
    pub const LEGACY_DEVICES: u16 = 1 << 0;
    /// 8042: a keyboard controller is present.
    pub const I8042: u16 = 1 << 1;
    /// VGA Not Present.
    pub const VGA_NOT_PRESENT: u16 = 1 << 2;
    /// CMOS RTC Not Present (not set here: the MC146818 exists).
    pub const CMOS_RTC_NOT_PRESENT: u16 = 1 << 5;
}

/// FADT major version (ACPI 6.5: 6).
pub const FADT_MAJOR_VERSION: u8 = 6;
/// FADT minor version (ACPI 6.5: 5).
pub const FADT_MINOR_VERSION: u8 = 5;
/// P_LVL2_LAT above 100 µs: C2 not supported (ACPI 6.5 Table 5.9).
const P_LVL2_NOT_SUPPORTED: u16 = 101;
/// P_LVL3_LAT above 1000 µs: C3 not supported.
const P_LVL3_NOT_SUPPORTED: u16 = 1001;

/// Port of the PM1a event block (PM1_STS, then PM1_EN).
pub const PM1A_EVT_BLK: u16 = layout::ACPI_PM_BASE_PORT + acpi_pm::PM1_EVT_OFFSET;
/// Length of the PM1a event block in bytes.
pub const PM1_EVT_LEN: u8 = 4;
/// Port of the PM1a control block (PM1_CNT).
pub const PM1A_CNT_BLK: u16 = layout::ACPI_PM_BASE_PORT + acpi_pm::PM1_CNT_OFFSET;
/// Length of the PM1a control block in bytes.
pub const PM1_CNT_LEN: u8 = 2;
/// Port of the PM timer.
pub const PM_TMR_BLK: u16 = layout::ACPI_PM_BASE_PORT + acpi_pm::PM_TMR_OFFSET;
/// Length of the PM timer block in bytes.
pub const PM_TMR_LEN: u8 = 4;

/// The FACS (ACPI 6.5 §5.2.10): 64 bytes, 64-byte aligned. It holds the
/// global lock and the waking vector; Alcazar supports no sleep state the
/// waking vector would serve, but OSPM expects the structure on a machine
/// that is not hardware-reduced.
pub fn build_facs() -> Vec<u8> {
    let mut bytes = Vec::new();
    acpi_tables::facs::FACS::new().to_aml_bytes(&mut bytes);
    bytes
}

/// A generic address structure for `len` bytes of I/O ports at `port`.
fn io_gas(port: u16, len: u8, access: AccessSize) -> GAS {
    GAS::new(AddressSpace::SystemIo, len * 8, 0, access, u64::from(port))
}

/// The FADT (ACPI 6.5 §5.2.9, revision 6.5) pointing at the DSDT and FACS.
pub fn build_fadt(dsdt_addr: u32, facs_addr: u32) -> Vec<u8> {
    let mut f = FADTBuilder::new(ACPI_OEM_ID, ACPI_OEM_TABLE_ID, ACPI_OEM_REVISION)
        .preferred_pm_profile(PmProfile::Unspecified)
        .flag(Flags::Wbinvd)
        .flag(Flags::ProcC1)
        .flag(Flags::SlpButton)
        .flag(Flags::FixRtc)
        .flag(Flags::TmrValExt);
    f.major_version = FADT_MAJOR_VERSION;
    f.fadt_minor_version = FADT_MINOR_VERSION;
    f.firmware_ctrl = facs_addr.into();
    f.x_firmware_ctrl = u64::from(facs_addr).into();
    f.dsdt = dsdt_addr.into();
    f.x_dsdt = u64::from(dsdt_addr).into();
    f.sci_int = u16::from(layout::SCI_ISA_IRQ).into();
    // No SMI_CMD, ACPI_ENABLE or ACPI_DISABLE: the machine is always in
    // ACPI mode.
    f.pm1a_evt_blk = u32::from(PM1A_EVT_BLK).into();
    f.pm1a_cnt_blk = u32::from(PM1A_CNT_BLK).into();
    f.pm_tmr_blk = u32::from(PM_TMR_BLK).into();
    f.pm1_evt_len = PM1_EVT_LEN;
    f.pm1_cnt_len = PM1_CNT_LEN;
    f.pm_tmr_len = PM_TMR_LEN;
    f.x_pm1a_evt_blk = io_gas(PM1A_EVT_BLK, PM1_EVT_LEN, AccessSize::WordAccess);
    f.x_pm1a_cnt_blk = io_gas(PM1A_CNT_BLK, PM1_CNT_LEN, AccessSize::WordAccess);
    f.x_pm_tmr_blk = io_gas(PM_TMR_BLK, PM_TMR_LEN, AccessSize::DwordAccess);
    f.p_lvl2_lat = P_LVL2_NOT_SUPPORTED.into();
    f.p_lvl3_lat = P_LVL3_NOT_SUPPORTED.into();
    f.iapc_boot_arch =
        (iapc_boot_arch::LEGACY_DEVICES | iapc_boot_arch::I8042 | iapc_boot_arch::VGA_NOT_PRESENT)
            .into();
    let mut bytes = Vec::new();
    f.finalize().to_aml_bytes(&mut bytes);
    bytes
}

/// An Interrupt Source Override structure (ACPI 6.5 §5.2.12.5): ISA IRQ
/// `source` arrives on `gsi` with the MPS INTI `flags`.
fn interrupt_source_override(source: u8, gsi: u32, flags: u16) -> [u8; 10] {
    let mut s = [0u8; 10];
    s[0] = madt_type::INTERRUPT_SOURCE_OVERRIDE;
    s[1] = 10;
    s[2] = 0; // Bus: ISA
    s[3] = source;
    s[4..8].copy_from_slice(&gsi.to_le_bytes());
    s[8..10].copy_from_slice(&flags.to_le_bytes());
    s
}

/// A Local APIC NMI structure (ACPI 6.5 §5.2.12.7).
fn local_apic_nmi(processor_uid: u8, flags: u16, lint: u8) -> [u8; 6] {
    let mut s = [0u8; 6];
    s[0] = madt_type::LOCAL_APIC_NMI;
    s[1] = 6;
    s[2] = processor_uid;
    s[3..5].copy_from_slice(&flags.to_le_bytes());
    s[5] = lint;
    s
}

/// The MADT (ACPI 6.5 §5.2.12): one enabled Processor Local APIC per vCPU
/// (UID = APIC ID = vCPU index), the IOAPIC with GSI base 0, the overrides
/// for the PIT (IRQ 0 -> GSI 2, edge, active high) and the SCI (IRQ 9,
/// level, active high), and LINT1 = NMI on all processors.
pub fn build_madt(platform: &Platform) -> Result<Vec<u8>, FirmwareError> {
    platform.validate()?;
    let mut madt = Sdt::new(
        *b"APIC",
        SDT_HEADER_LEN as u32,
        MADT_REVISION,
        ACPI_OEM_ID,
        ACPI_OEM_TABLE_ID,
        ACPI_OEM_REVISION,
    );
    madt.append_slice(&(layout::LOCAL_APIC_BASE as u32).to_le_bytes());
    madt.append_slice(&MADT_PCAT_COMPAT.to_le_bytes());
    let mut entry = Vec::new();
    for cpu in 0..platform.cpus {
        // validate() bounds cpus by MAX_CPUS < 256.
        let id = u8::try_from(cpu).map_err(|_| FirmwareError::UnsupportedCpuCount {
            cpus: platform.cpus,
            max: super::MAX_CPUS,
        })?;
        entry.clear();
        ProcessorLocalApic::new(id, id, EnabledStatus::Enabled).to_aml_bytes(&mut entry);
        madt.append_slice(&entry);
    }
    entry.clear();
    IoApic::new(platform.ioapic_id(), layout::IOAPIC_BASE as u32, 0).to_aml_bytes(&mut entry);
    madt.append_slice(&entry);
    madt.append_slice(&interrupt_source_override(
        layout::PIT_ISA_IRQ,
        layout::isa_irq_to_gsi(layout::PIT_ISA_IRQ),
        inti::EDGE | inti::ACTIVE_HIGH,
    ));
    madt.append_slice(&interrupt_source_override(
        layout::SCI_ISA_IRQ,
        u32::from(layout::SCI_ISA_IRQ),
        inti::LEVEL | inti::ACTIVE_HIGH,
    ));
    madt.append_slice(&local_apic_nmi(
        ALL_PROCESSORS,
        inti::EDGE | inti::ACTIVE_HIGH,
        NMI_LINT,
    ));
    Ok(madt.as_slice().to_vec())
}

/// Where [`install_acpi`] put each table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AcpiAddresses {
    /// The RSDP ([`layout::RSDP_ADDRESS`]).
    pub rsdp: u64,
    /// The XSDT.
    pub xsdt: u64,
    /// The FACS.
    pub facs: u64,
    /// The FADT.
    pub fadt: u64,
    /// The MADT.
    pub madt: u64,
    /// The DSDT.
    pub dsdt: u64,
    /// The MCFG.
    pub mcfg: u64,
}

/// The MCFG (PCI Firmware 3.3 §4.1.2): one ECAM allocation, segment 0,
/// bus 0 only, at [`alcazar_core::layout::ECAM_BASE`].
pub fn build_mcfg() -> Vec<u8> {
    let mut mcfg = MCFG::new(ACPI_OEM_ID, ACPI_OEM_TABLE_ID, ACPI_OEM_REVISION);
    mcfg.add_ecam(alcazar_core::layout::ECAM_BASE, 0, 0, 0);
    let mut bytes = Vec::new();
    mcfg.to_aml_bytes(&mut bytes);
    bytes
}

/// Builds the ACPI tables for `platform` and writes them to guest memory:
/// the RSDP at [`layout::RSDP_ADDRESS`], then the XSDT (listing the FADT, the MADT
/// and the MCFG), the FACS, the FADT, the MADT, the DSDT and the MCFG, all below
/// [`layout::ACPI_TABLES_END`]. Returns the RSDP's address, for `boot_params.acpi_rsdp_addr`.
pub fn install_acpi(mem: &GuestMemory, platform: &Platform) -> Result<u64, FirmwareError> {
    Ok(install_acpi_tables(mem, platform)?.rsdp)
}

/// [`install_acpi`], returning the address of every table.
pub fn install_acpi_tables(
    mem: &GuestMemory,
    platform: &Platform,
) -> Result<AcpiAddresses, FirmwareError> {
    platform.validate()?;
    let madt = build_madt(platform)?;
    let dsdt = dsdt::build_dsdt(platform);
    let facs = build_facs();
    let mcfg = build_mcfg();
    const XSDT_ENTRIES: usize = 3;
    let xsdt_len = SDT_HEADER_LEN + 8 * XSDT_ENTRIES;

    let mut placer = Placer::new(layout::RSDP_ADDRESS, layout::ACPI_TABLES_END);
    let rsdp_addr = placer.place("RSDP", Rsdp::len(), 16)?;
    let xsdt_addr = placer.place("XSDT", xsdt_len, 16)?;
    let facs_addr = placer.place("FACS", facs.len(), 64)?;
    let fadt_addr = placer.place("FADT", acpi_tables::fadt::FADT::len(), 16)?;
    let madt_addr = placer.place("MADT", madt.len(), 16)?;
    let dsdt_addr = placer.place("DSDT", dsdt.len(), 16)?;
    let mcfg_addr = placer.place("MCFG", mcfg.len(), 16)?;

    // Every address is below layout::ACPI_TABLES_END (1 MiB), so it fits the 32-bit fields.
    let low32 = |addr: u64| u32::try_from(addr).unwrap_or(0);
    let fadt = build_fadt(low32(dsdt_addr), low32(facs_addr));

    let mut xsdt = XSDT::new(ACPI_OEM_ID, ACPI_OEM_TABLE_ID, ACPI_OEM_REVISION);
    xsdt.add_entry(fadt_addr);
    xsdt.add_entry(madt_addr);
    xsdt.add_entry(mcfg_addr);
    let mut xsdt_bytes = Vec::new();
    xsdt.to_aml_bytes(&mut xsdt_bytes);
    debug_assert_eq!(xsdt_bytes.len(), xsdt_len);

    let mut rsdp = Vec::new();
    Rsdp::new(ACPI_OEM_ID, xsdt_addr).to_aml_bytes(&mut rsdp);

    mem.write(rsdp_addr, &rsdp)?;
    mem.write(xsdt_addr, &xsdt_bytes)?;
    mem.write(facs_addr, &facs)?;
    mem.write(fadt_addr, &fadt)?;
    mem.write(madt_addr, &madt)?;
    mem.write(dsdt_addr, &dsdt)?;
    mem.write(mcfg_addr, &mcfg)?;
    tracing::debug!(
        rsdp = rsdp_addr,
        xsdt = xsdt_addr,
        fadt = fadt_addr,
        madt = madt_addr,
        dsdt = dsdt_addr,
        cpus = platform.cpus,
        "ACPI tables installed"
    );
    Ok(AcpiAddresses {
        rsdp: rsdp_addr,
        xsdt: xsdt_addr,
        facs: facs_addr,
        fadt: fadt_addr,
        madt: madt_addr,
        dsdt: dsdt_addr,
        mcfg: mcfg_addr,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn madt_size_grows_by_eight_per_cpu() {
        let one = build_madt(&Platform::new(1)).unwrap();
        let two = build_madt(&Platform::new(2)).unwrap();
        assert_eq!(two.len() - one.len(), 8);
        // Header + LAPIC address + flags + 1 LAPIC + IOAPIC + 2 ISOs + NMI.
        assert_eq!(one.len(), 36 + 4 + 4 + 8 + 12 + 2 * 10 + 6);
    }

    #[test]
    fn fadt_is_the_acpi_6_5_length() {
        assert_eq!(build_fadt(0x1000, 0x2000).len(), 276);
    }

    #[test]
    fn facs_is_64_bytes() {
        let facs = build_facs();
        assert_eq!(facs.len(), 64);
        assert_eq!(&facs[0..4], b"FACS");
    }
}
