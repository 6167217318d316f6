//! The guest cache: `$XDG_CACHE_HOME/alcazar/guests/<flavor>/` with
//! `vmlinuz`, `initrd.img` and `manifest.toml`. A guest is complete when its
//! manifest parses, names this flavor and this build's contents, and the
//! files have the recorded sizes. Guests are built in scratch directories
//! next to it and renamed into place, under a lock, so an interrupted or
//! concurrent fetch never leaves a half-made guest.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use super::progress::Progress;
use super::{exit_tool, initramfs, modules, Flavor, GuestImage};

/// Bumped when the layout or the contents of a cached guest change in a
/// way that an older cache must be rebuilt for.
const LAYOUT: i64 = 4;

/// Moves a finished guest into place. If another fetch won the race, its
/// complete guest is kept and ours dropped.
pub(super) fn install(
    staging: &Scratch,
    dir: &Path,
    flavor: Flavor,
    force: bool,
) -> anyhow::Result<()> {
    if dir.exists() && (force || cached(dir, flavor).is_none()) {
        let old = Scratch::new(
            dir.parent().unwrap_or(dir),
            &format!(".{}-old", flavor.name()),
        )?;
        fs::remove_dir(&old.0)?;
        fs::rename(dir, &old.0).with_context(|| format!("cannot move {} aside", dir.display()))?;
    }
    match fs::rename(&staging.0, dir) {
        Ok(()) => Ok(()),
        Err(_) if cached(dir, flavor).is_some() => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot rename into {}", dir.display())),
    }
}

/// `$XDG_CACHE_HOME/alcazar/guests`, or `~/.cache/alcazar/guests`.
pub(super) fn cache_root() -> anyhow::Result<PathBuf> {
    let base = match std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
            Some(home) => PathBuf::from(home).join(".cache"),
            None => bail!("neither XDG_CACHE_HOME nor HOME is set; cannot place the guest cache"),
        },
    };
    Ok(base.join("alcazar").join("guests"))
}

/// Removes the scratch directories of fetches that were killed. Called
/// with the cache locked, so no other fetch is using them.
pub(super) fn remove_abandoned(root: &Path, flavor: Flavor) {
    let Ok(entries) = fs::read_dir(root) else {
        return;
    };
    let prefix = format!(".{}-", flavor.name());
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// Takes an exclusive `flock(2)` on `<root>/.lock`; it is released when
/// the returned file is closed (also if the process dies).
pub(super) fn lock(root: &Path, progress: &mut Progress) -> anyhow::Result<fs::File> {
    use std::os::fd::AsRawFd;
    let path = root.join(".lock");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let mut operation = libc::LOCK_EX | libc::LOCK_NB;
    loop {
        // SAFETY: flock(2) on a descriptor we own; it passes no memory.
        if unsafe { libc::flock(file.as_raw_fd(), operation) } == 0 {
            return Ok(file);
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EWOULDBLOCK) if operation & libc::LOCK_NB != 0 => {
                progress.step("another fetch is building this cache; waiting for it");
                operation = libc::LOCK_EX;
            }
            Some(libc::EINTR) => {}
            _ => return Err(e).with_context(|| format!("cannot lock {}", path.display())),
        }
    }
}

/// A directory removed when dropped (unless renamed away first).
pub(super) struct Scratch(pub(super) PathBuf);

impl Scratch {
    pub(super) fn new(parent: &Path, prefix: &str) -> anyhow::Result<Self> {
        let path = parent.join(format!("{prefix}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Scratch(path))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A digest of what this build of alcazar puts into an initramfs besides
/// the packages (`/init`, the module list, the layout), so a cache made by
/// an older build is rebuilt. FNV-1a, 64 bits: stable, not cryptographic.
pub(super) fn contents_digest() -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let wanted: String = modules::WANTED
        .iter()
        .map(|(n, _)| *n)
        .chain(modules::ON_DEMAND.iter().copied())
        .collect();
    let exit_tool = exit_tool::image().unwrap_or_default();
    let parts: [&[u8]; 5] = [
        initramfs::INIT_SCRIPT.as_bytes(),
        initramfs::DHCP_SCRIPT.as_bytes(),
        wanted.as_bytes(),
        &exit_tool,
        &LAYOUT.to_le_bytes(),
    ];
    for b in parts.iter().flat_map(|p| p.iter()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// `manifest.toml`: what a cached guest is made of.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Manifest {
    pub(super) flavor: String,
    pub(super) kernel_version: String,
    pub(super) kernel_package: String,
    pub(super) kernel_package_version: String,
    pub(super) busybox_version: String,
    pub(super) modules: Vec<String>,
    pub(super) kernel_size: u64,
    pub(super) initrd_size: u64,
    pub(super) contents: String,
}

impl Manifest {
    pub(super) fn image(&self, dir: &Path) -> GuestImage {
        GuestImage {
            kernel: dir.join("vmlinuz"),
            initrd: dir.join("initrd.img"),
            version: self.kernel_version.clone(),
        }
    }

    pub(super) fn to_toml(&self) -> String {
        let mut t = toml::Table::new();
        let s = |v: &str| toml::Value::String(v.to_string());
        t.insert("layout".into(), toml::Value::Integer(LAYOUT));
        t.insert("flavor".into(), s(&self.flavor));
        t.insert("kernel_version".into(), s(&self.kernel_version));
        t.insert("kernel_package".into(), s(&self.kernel_package));
        t.insert(
            "kernel_package_version".into(),
            s(&self.kernel_package_version),
        );
        t.insert("busybox_version".into(), s(&self.busybox_version));
        let modules = self.modules.iter().map(|m| s(m)).collect();
        t.insert("modules".into(), toml::Value::Array(modules));
        t.insert(
            "kernel_size".into(),
            toml::Value::Integer(self.kernel_size as i64),
        );
        t.insert(
            "initrd_size".into(),
            toml::Value::Integer(self.initrd_size as i64),
        );
        t.insert("contents".into(), s(&self.contents));
        format!("# Written by `alcazar guest fetch`. The guest is reused while this matches.\n{t}")
    }

    pub(super) fn parse(text: &str) -> Option<Manifest> {
        let t: toml::Table = text.parse().ok()?;
        let s = |k: &str| t.get(k)?.as_str().map(str::to_string);
        let n = |k: &str| u64::try_from(t.get(k)?.as_integer()?).ok();
        if t.get("layout")?.as_integer()? != LAYOUT {
            return None;
        }
        Some(Manifest {
            flavor: s("flavor")?,
            kernel_version: s("kernel_version")?,
            kernel_package: s("kernel_package")?,
            kernel_package_version: s("kernel_package_version")?,
            busybox_version: s("busybox_version")?,
            modules: t
                .get("modules")?
                .as_array()?
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            kernel_size: n("kernel_size")?,
            initrd_size: n("initrd_size")?,
            contents: s("contents")?,
        })
    }
}

/// The manifest of a complete, current guest in `dir`, or `None`.
pub(super) fn cached(dir: &Path, flavor: Flavor) -> Option<Manifest> {
    let m = Manifest::parse(&fs::read_to_string(dir.join("manifest.toml")).ok()?)?;
    let size = |f: &str| fs::metadata(dir.join(f)).ok().map(|m| m.len());
    let ok = m.flavor == flavor.name()
        && m.contents == contents_digest()
        && size("vmlinuz") == Some(m.kernel_size)
        && size("initrd.img") == Some(m.initrd_size);
    ok.then_some(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_round_trips_and_guards_the_cache() {
        let dir = std::env::temp_dir().join(format!("alcazar-manifest-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("vmlinuz"), b"kernel").unwrap();
        fs::write(dir.join("initrd.img"), b"initrd!").unwrap();
        let m = Manifest {
            flavor: "cloud".into(),
            kernel_version: "6.1.0-56-cloud-amd64".into(),
            kernel_package: "linux-image-6.1.0-56-cloud-amd64".into(),
            kernel_package_version: "6.1.192-2".into(),
            busybox_version: "1:1.35.0-4+deb12u1+b1".into(),
            modules: vec!["virtio_ring".into(), "virtio".into()],
            kernel_size: 6,
            initrd_size: 7,
            contents: contents_digest(),
        };
        assert_eq!(Manifest::parse(&m.to_toml()), Some(m.clone()));
        fs::write(dir.join("manifest.toml"), m.to_toml()).unwrap();
        assert_eq!(cached(&dir, Flavor::Cloud), Some(m.clone()));
        assert_eq!(cached(&dir, Flavor::Generic), None, "flavor mismatch");
        fs::write(dir.join("initrd.img"), b"cut").unwrap();
        assert_eq!(cached(&dir, Flavor::Cloud), None, "size mismatch");
        let stale = Manifest {
            contents: "0".into(),
            ..m
        };
        fs::write(dir.join("initrd.img"), b"initrd!").unwrap();
        fs::write(dir.join("manifest.toml"), stale.to_toml()).unwrap();
        assert_eq!(cached(&dir, Flavor::Cloud), None, "made by another build");
        let _ = fs::remove_dir_all(&dir);
    }
}
