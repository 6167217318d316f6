//! What a BIOS is told about the machine, through the fw_cfg device
//! ([`alcazar_devices::fw_cfg`]): the items and files SeaBIOS reads on a
//! machine of QEMU's kind.
//!
//! | item or file | contents |
//! |---|---|
//! | `NB_CPUS`, `MAX_CPUS` | the vCPU count (SeaBIOS waits for that many APs to answer its SIPI) |
//! | `RAM_SIZE` | guest RAM in bytes |
//! | `NOGRAPHIC` | 1 without a VGA adapter |
//! | `BOOT_MENU`, `etc/boot-menu-wait` | whether to offer the boot menu (Esc), and how long to wait, in ms |
//! | `etc/e820` | the RAM ranges (20-byte entries: base, length, type 1), which the BIOS completes with its own reservations before it hands the map to the OS |
//! | `etc/table-loader`, `etc/acpi/rsdp`, `etc/acpi/tables` | the ACPI tables ([`super::table_loader`]) |
//! | `bootorder` | one Open Firmware device path per line, most preferred first |
//! | `etc/sercon-port` | the UART (0x3f8) where SeaBIOS shows its screen when there is no VGA adapter, so BIOS messages, its boot menu and a bootloader's text menu reach the terminal |
//! | `vgaroms/...` | the VGA BIOS, run as an option ROM |
//!
//! Left out: SMBIOS tables (SeaBIOS builds a minimal set), NUMA, the
//! `etc/reserved-memory-end` hint (no memory hotplug).

use alcazar_core::memory::{MemoryMap, RegionKind};
use alcazar_core::DmaMemory;
use alcazar_devices::fw_cfg::{keys, FwCfg};

use super::{table_loader, FirmwareError, Platform};
use crate::boot::bios::BiosImage;

/// An e820 entry type: usable RAM (ACPI 6.5 §15.1, Table 15.1).
const E820_RAM: u32 = 1;
/// How long SeaBIOS waits at its boot menu prompt, in milliseconds.
const MENU_WAIT_MS: u16 = 2500;

/// Everything the fw_cfg device holds for one machine.
#[derive(Debug)]
pub struct BiosConfig<'a> {
    /// The machine the ACPI tables describe.
    pub platform: &'a Platform,
    /// Guest RAM in bytes.
    pub ram: u64,
    /// The memory map (its RAM regions become `etc/e820`).
    pub map: &'a MemoryMap,
    /// The BIOS and its options.
    pub image: &'a BiosImage,
    /// Device paths for `bootorder`, most preferred first.
    pub boot_paths: Vec<String>,
    /// The UART SeaBIOS draws its screen on, if any.
    pub serial_console: Option<u16>,
    /// Whether a VGA adapter is present.
    pub vga: bool,
}

/// The fw_cfg device for `config`, its DMA reaching `memory`.
pub fn fw_cfg_device(config: &BiosConfig<'_>, memory: DmaMemory) -> Result<FwCfg, FirmwareError> {
    let mut d = FwCfg::new(memory);
    let cpus = u16::try_from(config.platform.cpus).unwrap_or(u16::MAX);
    d.set_item(keys::NB_CPUS, cpus.to_le_bytes().to_vec());
    d.set_item(keys::MAX_CPUS, cpus.to_le_bytes().to_vec());
    d.set_item(keys::RAM_SIZE, config.ram.to_le_bytes().to_vec());
    d.set_item(
        keys::NOGRAPHIC,
        u16::from(!config.vga).to_le_bytes().to_vec(),
    );
    d.set_item(
        keys::BOOT_MENU,
        u16::from(config.image.menu).to_le_bytes().to_vec(),
    );
    if config.image.menu {
        d.add_file("etc/boot-menu-wait", MENU_WAIT_MS.to_le_bytes().to_vec())?;
    }
    d.add_file("etc/e820", e820(config.map))?;
    let acpi = table_loader::build(config.platform)?;
    d.add_file(table_loader::RSDP_FILE, acpi.rsdp)?;
    d.add_file(table_loader::TABLES_FILE, acpi.tables)?;
    d.add_file(table_loader::LOADER_FILE, acpi.loader)?;
    if !config.boot_paths.is_empty() {
        let mut order = config.boot_paths.join("\n").into_bytes();
        order.push(0);
        d.add_file("bootorder", order)?;
    }
    if let Some(port) = config.serial_console {
        d.add_file("etc/sercon-port", port.to_le_bytes().to_vec())?;
    }
    if let Some(vga) = &config.image.vga_bios {
        d.add_file("vgaroms/vgabios.bin", vga.clone())?;
    }
    Ok(d)
}

/// The `etc/e820` file: every RAM region of `map` (the VGA window and the
/// MMIO hole are not RAM; the BIOS reserves its own areas).
fn e820(map: &MemoryMap) -> Vec<u8> {
    let mut out = Vec::new();
    let mut ram = map
        .entries()
        .iter()
        .filter(|e| e.kind == RegionKind::Ram)
        .map(|e| (e.start, e.size))
        .collect::<Vec<_>>();
    // The BIOS wants low memory as one range from 0: the VGA window's
    // gap is its business (it reserves 0xa0000-0xfffff itself).
    use alcazar_core::memory::{LEGACY_VGA_END, LEGACY_VGA_START};
    if let [(0, LEGACY_VGA_START), (LEGACY_VGA_END, rest), ..] = ram[..] {
        ram.splice(0..2, [(0, LEGACY_VGA_END + rest)]);
    }
    for (start, size) in ram {
        out.extend_from_slice(&start.to_le_bytes());
        out.extend_from_slice(&size.to_le_bytes());
        out.extend_from_slice(&E820_RAM.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e820_gives_low_ram_as_one_range_and_ram_above_4_gib() {
        let map = MemoryMap::pc_firmware(5 << 30, 256 << 10).unwrap();
        let e = e820(&map);
        assert_eq!(e.len(), 40);
        let u64_at = |i: usize| u64::from_le_bytes(e[i..i + 8].try_into().unwrap());
        assert_eq!((u64_at(0), u64_at(8)), (0, 0xc000_0000));
        assert_eq!((u64_at(20), u64_at(28)), (1 << 32, (5 << 30) - 0xc000_0000));
    }
}
