//! The PC firmware a BIOS boot runs: SeaBIOS and its ISA VGA BIOS, from
//! Debian's `seabios` package. Taken from `/usr/share/seabios` when the
//! package is installed, else downloaded once (`apt-get download`, no
//! install) and unpacked into `$XDG_CACHE_HOME/alcazar/firmware/seabios/`.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::cache::{cache_root, Scratch};
use super::fetch;
use super::progress::Progress;

/// The Debian package.
const PACKAGE: &str = "seabios";
/// Where the package puts its images.
const INSTALLED: &str = "/usr/share/seabios";
/// The BIOS image (256 KiB: the build with every driver QEMU's PC uses).
pub const BIOS: &str = "bios-256k.bin";
/// The VGA BIOS for a standard (ISA) VGA adapter.
pub const VGA_BIOS: &str = "vgabios-isavga.bin";

/// SeaBIOS's image and its VGA BIOS.
#[derive(Debug, Clone)]
pub struct SeaBios {
    /// `bios-256k.bin`.
    pub bios: PathBuf,
    /// `vgabios-isavga.bin`.
    pub vga_bios: PathBuf,
}

impl SeaBios {
    fn in_dir(dir: &Path) -> Option<Self> {
        let s = SeaBios {
            bios: dir.join(BIOS),
            vga_bios: dir.join(VGA_BIOS),
        };
        (s.bios.is_file() && s.vga_bios.is_file()).then_some(s)
    }
}

/// SeaBIOS, from the installed package, the cache, or downloaded into the
/// cache now (progress on stderr if `show`).
pub fn seabios(show: bool) -> anyhow::Result<SeaBios> {
    if let Some(s) = SeaBios::in_dir(Path::new(INSTALLED)) {
        return Ok(s);
    }
    let root = cache_root()?
        .parent()
        .map(|p| p.join("firmware"))
        .context("no cache directory")?;
    let dir = root.join(PACKAGE);
    if let Some(s) = SeaBios::in_dir(&dir) {
        return Ok(s);
    }
    let mut progress = Progress::new(show);
    fs::create_dir_all(&root).with_context(|| format!("cannot create {}", root.display()))?;
    fetch::check_tools(true)?;
    let work = Scratch::new(&root, ".seabios-work")?;
    let staging = Scratch::new(&root, ".seabios-new")?;
    progress.step("downloading SeaBIOS (apt-get download seabios)");
    fetch::apt_download(&work.0, &[PACKAGE], &mut progress)?;
    let deb = fs::read_dir(&work.0)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .context("apt-get download left no seabios package")?;
    let unpacked = work.0.join("root");
    fetch::unpack(&deb, &unpacked)?;
    for name in [BIOS, VGA_BIOS] {
        let from = unpacked.join("usr/share/seabios").join(name);
        fs::copy(&from, staging.0.join(name))
            .with_context(|| format!("the seabios package has no {name}"))?;
    }
    // Another fetch may have won the race: its copy is as good as ours.
    if fs::rename(&staging.0, &dir).is_err() && SeaBios::in_dir(&dir).is_none() {
        anyhow::bail!("cannot move SeaBIOS into {}", dir.display());
    }
    SeaBios::in_dir(&dir).with_context(|| format!("SeaBIOS is missing from {}", dir.display()))
}
