//! Booting through a PC BIOS (SeaBIOS): the BIOS image as ROM at the top
//! of 4 GiB, its last 128 KiB copied below 1 MiB, and the bootstrap
//! processor at the reset vector.
//!
//! **What a PC does at power-on** (Intel SDM Vol. 3A §9.1.4 "First
//! Instruction Executed"): the processor starts in real mode with CS
//! selector 0xF000 but CS base 0xFFFF0000, and EIP 0xFFF0, so its first
//! fetch is at physical 0xFFFFFFF0, 16 bytes below 4 GiB, inside the BIOS
//! ROM. The chipset also decodes the ROM's last 128 KiB at
//! 0xE0000-0xFFFFF (the "BIOS area"); once the BIOS far-jumps to a real
//! CS (0xF000), it runs from there. The application processors wait for
//! INIT and STARTUP IPIs (MP spec §B.4): the BIOS counts them that way.
//!
//! **Shadowing.** On an i440FX, PAM registers decide whether 0xC0000-
//! 0xFFFFF reads ROM or RAM, and a BIOS copies itself into RAM and makes
//! the RAM writable while it initialises (SeaBIOS: `make_bios_writable`),
//! then read-only. Alcazar keeps that range as RAM from the start, holding
//! the copy: the BIOS sees its own code where it expects it, can write its
//! data there, and its copy to itself changes nothing. Left out: making
//! the area read-only again (a guest can write its BIOS area after boot,
//! as under PAM setting "RAM read/write").
//!
//! The machine around the BIOS (the fw_cfg files that tell SeaBIOS about
//! memory, CPUs, ACPI tables and the boot order) is built with the other
//! devices, by [`crate::firmware::bios_config`].

use std::io::Read;
use std::path::Path;

use alcazar_core::memory::GuestMemory;
use alcazar_core::regs::{Regs, Segment, SpecialRegs};

use crate::error::{ConfigError, VmmError};

/// Bytes of the BIOS area below 1 MiB that mirrors the ROM's end.
pub const BIOS_AREA_BYTES: u64 = 128 << 10;
/// Most bytes a BIOS image may have.
pub const MAX_BIOS_BYTES: u64 = 16 << 20;
/// Most bytes of a VGA BIOS (an option ROM in 0xC0000-0xDFFFF).
pub const MAX_OPTION_ROM_BYTES: u64 = 128 << 10;

/// RFLAGS bit 1, always set.
const RFLAGS_FIXED: u64 = 2;
/// CR0.ET: the reset value's one set bit that matters here (CD and NW
/// are set at reset too; caching is not modelled).
const CR0_ET: u64 = 1 << 4;

/// A BIOS and the option ROMs it runs, read from disk.
#[derive(Clone, Debug)]
pub struct BiosImage {
    /// The BIOS.
    pub rom: Vec<u8>,
    /// The VGA BIOS, if any.
    pub vga_bios: Option<Vec<u8>>,
    /// Device ids to boot from, in order.
    pub order: Vec<String>,
    /// Whether the boot menu is offered.
    pub menu: bool,
}

/// Reads the BIOS at `bios` and the VGA BIOS at `vga_bios`, checking
/// their sizes before reading.
pub fn load(
    bios: &Path,
    vga_bios_path: Option<&Path>,
    order: &[String],
    menu: bool,
) -> Result<BiosImage, VmmError> {
    let rom = read_rom("boot.bios", bios, MAX_BIOS_BYTES, |len| {
        if len < 64 << 10 || len % (64 << 10) != 0 {
            Err(format!(
                "{len} bytes; a BIOS image is a multiple of 64 KiB, at least 64 KiB"
            ))
        } else {
            Ok(())
        }
    })?;
    let vga_bios = vga_bios_path
        .map(|p| {
            read_rom("boot.vga_bios", p, MAX_OPTION_ROM_BYTES, |len| {
                if len < 512 || len % 512 != 0 {
                    Err(format!(
                        "{len} bytes; an option ROM is a multiple of 512 bytes"
                    ))
                } else {
                    Ok(())
                }
            })
        })
        .transpose()?;
    if let (Some(v), Some(path)) = (&vga_bios, vga_bios_path) {
        if v.get(..2) != Some(&[0x55, 0xaa]) {
            return Err(ConfigError::new(
                "boot.vga_bios",
                format!("\"{}\"", path.display()),
                "no option ROM signature (55 AA)",
                "give a VGA BIOS such as SeaBIOS's vgabios-isavga.bin",
            )
            .into());
        }
    }
    Ok(BiosImage {
        rom,
        vga_bios,
        order: order.to_vec(),
        menu,
    })
}

/// Reads the regular file at `path` of at most `limit` bytes whose length
/// `check` accepts.
fn read_rom(
    key: &str,
    path: &Path,
    limit: u64,
    check: impl Fn(u64) -> Result<(), String>,
) -> Result<Vec<u8>, VmmError> {
    let shown = format!("\"{}\"", path.display());
    let fail = |problem: String, fix: &str| -> VmmError {
        ConfigError::new(key, shown.clone(), problem, fix.to_string()).into()
    };
    let fix = "give SeaBIOS's image (Debian package seabios; `alcazar guest fetch` gets it)";
    let file = std::fs::File::open(path).map_err(|e| fail(format!("cannot read it ({e})"), fix))?;
    let meta = file
        .metadata()
        .map_err(|e| fail(format!("cannot read it ({e})"), fix))?;
    if !meta.is_file() {
        return Err(fail("not a regular file".into(), fix));
    }
    if meta.len() > limit {
        return Err(fail(
            format!(
                "{} bytes, more than the {limit} a ROM here may have",
                meta.len()
            ),
            fix,
        ));
    }
    check(meta.len()).map_err(|p| fail(p, fix))?;
    let mut bytes = Vec::new();
    file.take(limit)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(format!("cannot read it ({e})"), fix))?;
    check(bytes.len() as u64).map_err(|p| fail(format!("{p} (it changed while read)"), fix))?;
    Ok(bytes)
}

/// Puts the BIOS in `memory` (built by
/// [`alcazar_core::memory::MemoryMap::pc_firmware`] for its size): the
/// ROM below 4 GiB and the copy of its end below 1 MiB.
pub fn install(memory: &GuestMemory, image: &BiosImage) -> Result<(), VmmError> {
    let len = image.rom.len() as u64;
    memory.write(0x1_0000_0000 - len, &image.rom)?;
    let area = len.min(BIOS_AREA_BYTES);
    let tail = &image.rom[(len - area) as usize..];
    memory.write(0x10_0000 - area, tail)?;
    Ok(())
}

/// The bootstrap processor's power-on state (SDM Vol. 3A §9.1.1, Table
/// 9-1): real mode, CS.selector 0xF000 with base 0xFFFF0000, IP 0xFFF0,
/// the other segments at 0 with 64 KiB limits, interrupts off.
pub fn reset_state(mut sregs: SpecialRegs) -> (Regs, SpecialRegs) {
    let regs = Regs {
        rflags: RFLAGS_FIXED,
        rip: 0xfff0,
        rdx: 0x600,
        ..Default::default()
    };
    let mut cs = Segment::real_mode(0xf000, true);
    cs.base = 0xffff_0000;
    sregs.cs = cs;
    let data = Segment::real_mode(0, false);
    (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss) = (data, data, data, data, data);
    sregs.cr0 = CR0_ET;
    sregs.cr2 = 0;
    sregs.cr3 = 0;
    sregs.cr4 = 0;
    sregs.efer = 0;
    sregs.gdt.base = 0;
    sregs.gdt.limit = 0xffff;
    sregs.idt.base = 0;
    sregs.idt.limit = 0xffff;
    (regs, sregs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alcazar_core::memory::MemoryMap;

    #[test]
    fn the_rom_ends_at_4_gib_and_its_last_128_kib_below_1_mib() {
        let mut rom = vec![0u8; 256 << 10];
        rom[(256 << 10) - 16] = 0xea; // the reset vector's far jump
        rom[0] = 0x11;
        let image = BiosImage {
            rom,
            vga_bios: None,
            order: vec![],
            menu: false,
        };
        let mem = GuestMemory::new(MemoryMap::pc_firmware(64 << 20, 256 << 10).unwrap()).unwrap();
        install(&mem, &image).unwrap();
        let mut b = [0u8; 1];
        mem.read(0xffff_fff0, &mut b).unwrap();
        assert_eq!(b[0], 0xea);
        mem.read(0xffff0, &mut b).unwrap();
        assert_eq!(b[0], 0xea, "the shadow copy");
        mem.read(0xfffc_0000, &mut b).unwrap();
        assert_eq!(b[0], 0x11);
        assert!(mem.read(0xa0000, &mut b).is_err(), "the VGA window is MMIO");
    }

    #[test]
    fn the_reset_state_fetches_at_fffffff0() {
        let (regs, sregs) = reset_state(SpecialRegs::default());
        assert_eq!(sregs.cs.base + regs.rip, 0xffff_fff0);
        assert_eq!(sregs.cs.selector, 0xf000);
        assert_eq!(sregs.cr0 & 1, 0, "real mode");
    }

    #[test]
    fn a_bios_of_the_wrong_size_is_one_line() {
        let dir = std::env::temp_dir().join(format!("alcazar-bios-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let odd = dir.join("odd.bin");
        std::fs::write(&odd, vec![0u8; 1000]).unwrap();
        let e = load(&odd, None, &[], false).unwrap_err().to_string();
        assert!(e.contains("odd.bin") && e.contains("64 KiB"), "{e}");
        let e = load(Path::new("/dev/zero"), None, &[], false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a regular file"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
