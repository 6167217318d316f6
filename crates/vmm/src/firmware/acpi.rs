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
//! button, the RTC's wake status in PM1 (RTC_STS/RTC_EN: FIX_RTC clear,
//! which makes Linux's rtc-cmos arm RTC_EN for a wake alarm), no reset
//! register (Linux
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

/// The FACS (ACPI 6.5 §5.2.10): 64 bytes, 64-byte aligned, version 1. It
/// holds the global lock and the waking vector the OS writes before S3
/// ([`waking_vector`] reads it back on the wake). Its flags offer no
/// 64-bit wake (64BIT_WAKE_SUPPORTED_F clear).
pub fn build_facs() -> Vec<u8> {
    let mut bytes = Vec::new();
    acpi_tables::facs::FACS::new().to_aml_bytes(&mut bytes);
    bytes
}

/// Where the OS asked to be started on a wake from S3, as the FACS says
/// (ACPI 6.5 §5.2.10, Table 5.14, and §16.3.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WakingVector {
    /// Firmware_Waking_Vector: real mode with CS = vector >> 4 (base
    /// vector & 0xffff0) and IP = vector & 0xf.
    RealMode {
        /// The CS selector (its base is `cs << 4`).
        cs: u16,
        /// The IP.
        ip: u16,
    },
    /// X_Firmware_Waking_Vector with 64BIT_WAKE_F clear: 32-bit protected
    /// mode with paging off and flat 4 GiB CS and data segments, at `eip`.
    Protected32 {
        /// The entry point.
        eip: u32,
    },
}

impl std::fmt::Display for WakingVector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WakingVector::RealMode { cs, ip } => write!(f, "real mode {cs:#06x}:{ip:#06x}"),
            WakingVector::Protected32 { eip } => write!(f, "32-bit protected mode {eip:#010x}"),
        }
    }
}

/// Why [`waking_vector`] found no place to wake the OS.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WakeError {
    /// No valid RSDP in the BIOS read-only area or the EBDA.
    #[error("no ACPI RSDP in guest memory")]
    NoRsdp,
    /// The RSDT or XSDT lists no valid FADT.
    #[error("no FADT in the RSDT/XSDT")]
    NoFadt,
    /// The FADT's FIRMWARE_CTRL and X_FIRMWARE_CTRL point at no FACS.
    #[error("the FADT points at no FACS")]
    NoFacs,
    /// Both waking vectors are zero: the OS set none.
    #[error("the FACS holds no waking vector")]
    NoVector,
    /// Firmware_Waking_Vector lies above the real-mode megabyte.
    #[error("Firmware_Waking_Vector {0:#x} is not a real-mode address")]
    NotRealMode(u32),
    /// X_Firmware_Waking_Vector cannot be entered as asked (above 4 GiB,
    /// or a 64-bit wake the FACS does not offer).
    #[error("X_Firmware_Waking_Vector {vector:#x} with OSPM flags {ospm_flags:#x} cannot be entered: only a 32-bit wake below 4 GiB is offered")]
    Unsupported {
        /// X_Firmware_Waking_Vector.
        vector: u64,
        /// The FACS's OSPM flags (64BIT_WAKE_F is bit 0).
        ospm_flags: u32,
    },
}

/// The RSDP's signature (ACPI 6.5 §5.2.5.3).
const RSDP_SIGNATURE: &[u8; 8] = b"RSD PTR ";
/// FACS OSPM flag 64BIT_WAKE_F (ACPI 6.5 Table 5.16).
const FACS_64BIT_WAKE_F: u32 = 1 << 0;
/// The most SDT entries [`waking_vector`] looks at.
const MAX_SDT_ENTRIES: u64 = 64;

fn read_bytes<const N: usize>(mem: &GuestMemory, addr: u64) -> Option<[u8; N]> {
    let mut b = [0u8; N];
    mem.read(addr, &mut b).ok().map(|_| b)
}

fn read_u32(mem: &GuestMemory, addr: u64) -> Option<u32> {
    read_bytes::<4>(mem, addr).map(u32::from_le_bytes)
}

fn read_u64(mem: &GuestMemory, addr: u64) -> Option<u64> {
    read_bytes::<8>(mem, addr).map(u64::from_le_bytes)
}

/// The RSDP's address: searched where an OS searches (ACPI 6.5
/// §5.2.5.1), the first KiB of the EBDA and 0xe0000-0xfffff, on 16-byte
/// boundaries, with a valid checksum over its first 20 bytes.
fn find_rsdp(mem: &GuestMemory) -> Option<u64> {
    let ebda = read_bytes::<2>(mem, 0x40e).map(|b| u64::from(u16::from_le_bytes(b)) << 4);
    let ebda_range = ebda.filter(|&e| e >= 0x400).map(|e| e..e + 1024);
    let ranges = ebda_range
        .into_iter()
        .chain(std::iter::once(0xe0000..0x100000));
    for range in ranges {
        for addr in range.step_by(16) {
            let Some(head) = read_bytes::<20>(mem, addr) else {
                continue;
            };
            if &head[..8] == RSDP_SIGNATURE && head.iter().fold(0u8, |s, &b| s.wrapping_add(b)) == 0
            {
                return Some(addr);
            }
        }
    }
    None
}

/// The FADT's address, from the XSDT (RSDP revision 2+) or the RSDT.
fn find_fadt(mem: &GuestMemory, rsdp: u64) -> Option<u64> {
    let revision = read_bytes::<1>(mem, rsdp + 15)?[0];
    let xsdt = if revision >= 2 {
        read_u64(mem, rsdp + 24).filter(|&a| a != 0)
    } else {
        None
    };
    let (table, entry) = match xsdt {
        Some(x) => (x, 8),
        None => (u64::from(read_u32(mem, rsdp + 16)?), 4),
    };
    let len = u64::from(read_u32(mem, table + 4)?);
    let count = (len.saturating_sub(SDT_HEADER_LEN as u64) / entry).min(MAX_SDT_ENTRIES);
    (0..count).find_map(|i| {
        let at = table + SDT_HEADER_LEN as u64 + i * entry;
        let addr = if entry == 8 {
            read_u64(mem, at)?
        } else {
            u64::from(read_u32(mem, at)?)
        };
        (&read_bytes::<4>(mem, addr)? == b"FACP").then_some(addr)
    })
}

/// Reads the waking vector the OS left in the FACS before it put the
/// machine in S3 (ACPI 6.5 §16.3.2): finds the RSDP, the FADT, its FACS
/// (X_FIRMWARE_CTRL, else FIRMWARE_CTRL) and takes X_Firmware_Waking_Vector
/// if the FACS is version 1 or later and it is non-zero, else
/// Firmware_Waking_Vector. Works on the tables of a direct boot and on
/// those a BIOS placed. Every value comes from the guest and is checked.
pub fn waking_vector(mem: &GuestMemory) -> Result<WakingVector, WakeError> {
    let rsdp = find_rsdp(mem).ok_or(WakeError::NoRsdp)?;
    let fadt = find_fadt(mem, rsdp).ok_or(WakeError::NoFadt)?;
    let fadt_len = read_u32(mem, fadt + 4).unwrap_or(0);
    let x_ctrl = (fadt_len >= 140)
        .then(|| read_u64(mem, fadt + 132))
        .flatten()
        .unwrap_or(0);
    let ctrl = read_u32(mem, fadt + 36).map_or(0, u64::from);
    let facs = [x_ctrl, ctrl]
        .into_iter()
        .find(|&a| a != 0 && read_bytes::<4>(mem, a).as_ref() == Some(b"FACS"))
        .ok_or(WakeError::NoFacs)?;
    let length = read_u32(mem, facs + 4).unwrap_or(0);
    let vector = read_u32(mem, facs + 12).unwrap_or(0);
    let version = read_bytes::<1>(mem, facs + 32).map_or(0, |b| b[0]);
    let (x_vector, ospm_flags) = if length >= 64 && version >= 1 {
        (
            read_u64(mem, facs + 24).unwrap_or(0),
            read_u32(mem, facs + 36).unwrap_or(0),
        )
    } else {
        (0, 0)
    };
    if x_vector != 0 {
        return match u32::try_from(x_vector) {
            Ok(eip) if ospm_flags & FACS_64BIT_WAKE_F == 0 => Ok(WakingVector::Protected32 { eip }),
            _ => Err(WakeError::Unsupported {
                vector: x_vector,
                ospm_flags,
            }),
        };
    }
    match vector {
        0 => Err(WakeError::NoVector),
        v if v >= 0x10_0000 => Err(WakeError::NotRealMode(v)),
        v => Ok(WakingVector::RealMode {
            cs: (v >> 4) as u16,
            ip: (v & 0xf) as u16,
        }),
    }
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
