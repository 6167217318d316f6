//! Getting Debian's packages and taking them apart, without installing
//! anything: `apt-get download` writes a package's `.deb` into the current
//! directory (it works as root or not, and needs only the package lists),
//! `dpkg-deb -f` reads a control field, `dpkg-deb -x` unpacks the files.
//!
//! The kernel packages `linux-image-cloud-amd64` and `linux-image-amd64`
//! are metapackages: they hold no kernel, only a `Depends:` on the real
//! image package of the current ABI (`linux-image-6.1.0-56-cloud-amd64 (=
//! 6.1.192-2)` on Debian 12), which is what we download next.

use std::ffi::OsStr;
use std::fs;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::{bail, Context};

use super::progress::Progress;
use super::Flavor;

/// The package that holds a statically linked busybox.
pub const BUSYBOX_PACKAGE: &str = "busybox-static";

/// A downloaded (or given) package file.
#[derive(Debug, Clone)]
pub struct Deb {
    /// Its `Package:` field.
    pub package: String,
    /// Its `Version:` field.
    pub version: String,
    /// The file.
    pub path: PathBuf,
}

/// The two packages a guest is made from.
#[derive(Debug, Clone)]
pub struct Debs {
    /// The kernel image package (not the metapackage).
    pub kernel: Deb,
    /// `busybox-static`.
    pub busybox: Deb,
}

/// What to tell someone whose host cannot fetch.
pub fn no_tools_help(missing: &str) -> String {
    format!(
        "`alcazar guest fetch` needs {missing} (Debian or Ubuntu's apt and dpkg), which this host \
         does not have.\n\
         Instead, either:\n\
         - download the .deb files of `linux-image-cloud-amd64`'s dependency (on Debian 12: \
         linux-image-6.1.0-56-cloud-amd64) and of busybox-static on a Debian machine, and run \
         `alcazar guest fetch --from-debs DIR` here (needs only dpkg-deb), or\n\
         - give `alcazar run` your own guest: `--kernel PATH` (an x86-64 bzImage with virtio \
         over PCI) and `--initrd PATH` (a gzip'd newc cpio archive, e.g. `find . | cpio -o -H \
         newc | gzip`, whose /init mounts /proc, /sys and /dev and starts a shell on the console)"
    )
}

/// True if `tool` can be run from PATH.
pub fn have(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| {
            let p = dir.join(tool);
            p.metadata().is_ok_and(|m| {
                m.is_file()
                    && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0
            })
        })
    })
}

/// Checks that the tools a fetch needs are here.
pub fn check_tools(need_apt: bool) -> anyhow::Result<()> {
    let mut missing = Vec::new();
    if need_apt && !have("apt-get") {
        missing.push("apt-get");
    }
    if !have("dpkg-deb") {
        missing.push("dpkg-deb");
    }
    if !missing.is_empty() {
        bail!(no_tools_help(&missing.join(" and ")));
    }
    Ok(())
}

/// Runs a command, capturing its output; fails with its stderr.
fn run(cmd: &mut Command) -> anyhow::Result<Output> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {shown}"))?;
    if !out.status.success() {
        bail!(
            "{shown} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

/// `dpkg-deb -f DEB FIELD`.
pub fn field(deb: &Path, name: &str) -> anyhow::Result<String> {
    let out = run(Command::new("dpkg-deb").arg("-f").arg(deb).arg(name))?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Describes a `.deb` file from its control fields.
pub fn describe(path: &Path) -> anyhow::Result<Deb> {
    Ok(Deb {
        package: field(path, "Package")?,
        version: field(path, "Version")?,
        path: path.to_path_buf(),
    })
}

/// `dpkg-deb -x DEB DIR`: unpacks the files, runs no maintainer script.
pub fn unpack(deb: &Path, dir: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(dir)?;
    run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(dir))?;
    Ok(())
}

/// The image package a kernel metapackage's `Depends:` names, with the
/// exact version if the field pins one: `linux-image-X (= V), ...` gives
/// `("linux-image-X", Some("V"))`.
pub fn image_dependency(depends: &str, meta: &str) -> Option<(String, Option<String>)> {
    depends
        .split([',', '|'])
        .map(str::trim)
        .map(|d| {
            let (name, rest) = d.split_once(' ').unwrap_or((d, ""));
            let name = name.split(':').next().unwrap_or(name);
            let version = rest
                .trim()
                .strip_prefix("(=")
                .and_then(|v| v.strip_suffix(')'))
                .map(|v| v.trim().to_string());
            (name.to_string(), version)
        })
        .find(|(name, _)| {
            name.starts_with("linux-image-")
                && name != meta
                && name["linux-image-".len()..].starts_with(|c: char| c.is_ascii_digit())
        })
}

/// Downloads the guest's packages into `dir` with apt-get.
pub fn download(flavor: Flavor, dir: &Path, progress: &mut Progress) -> anyhow::Result<Debs> {
    let meta = flavor.metapackage();
    progress.step(&format!(
        "downloading {meta} and {BUSYBOX_PACKAGE} (apt-get download)"
    ));
    apt_download(dir, &[meta, BUSYBOX_PACKAGE], progress)?;
    let meta_deb = find_deb(dir, meta)?;
    let depends = field(&meta_deb.path, "Depends")?;
    let Some((image, version)) = image_dependency(&depends, meta) else {
        bail!(
            "{meta} {} depends on no kernel image package: Depends: {depends}",
            meta_deb.version
        );
    };
    let wanted = match &version {
        Some(v) => format!("{image}={v}"),
        None => image.clone(),
    };
    progress.step(&format!(
        "{meta} {} is {image}; downloading it",
        meta_deb.version
    ));
    apt_download(dir, &[&wanted], progress)?;
    Ok(Debs {
        kernel: find_deb(dir, &image)?,
        busybox: find_deb(dir, BUSYBOX_PACKAGE)?,
    })
}

/// Picks the guest's packages from a directory of `.deb` files.
pub fn from_dir(flavor: Flavor, dir: &Path) -> anyhow::Result<Debs> {
    let mut debs = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let path = entry?.path();
        if path.extension() == Some(OsStr::new("deb")) {
            debs.push(describe(&path)?);
        }
    }
    let busybox = debs
        .iter()
        .find(|d| d.package == BUSYBOX_PACKAGE)
        .cloned()
        .with_context(|| format!("no {BUSYBOX_PACKAGE} .deb in {}", dir.display()))?;
    let meta = flavor.metapackage();
    let image = match debs.iter().find(|d| d.package == meta) {
        Some(m) => image_dependency(&field(&m.path, "Depends")?, meta).map(|(name, _)| name),
        None => None,
    };
    let kernels: Vec<&Deb> = debs
        .iter()
        .filter(|d| match &image {
            Some(name) => &d.package == name,
            None => flavor.is_image_package(&d.package),
        })
        .collect();
    match kernels.as_slice() {
        [one] => Ok(Debs {
            kernel: (*one).clone(),
            busybox,
        }),
        [] => bail!(
            "no {} kernel image .deb in {} (e.g. {})",
            flavor.name(),
            dir.display(),
            image.unwrap_or_else(|| flavor.example_image().to_string())
        ),
        many => bail!(
            "several {} kernel image .debs in {}: {}; keep one",
            flavor.name(),
            dir.display(),
            many.iter()
                .map(|d| d.package.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The downloaded `.deb` of `package` in `dir` (apt names it
/// `<package>_<version>_<arch>.deb`).
fn find_deb(dir: &Path, package: &str) -> anyhow::Result<Deb> {
    let prefix = format!("{package}_");
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(OsStr::to_str).unwrap_or_default();
        if name.starts_with(&prefix) && name.ends_with(".deb") {
            return describe(&path);
        }
    }
    bail!(
        "apt-get download left no {package} package in {}",
        dir.display()
    )
}

/// `apt-get download PACKAGES` in `dir`. If apt does not know a package,
/// the package lists are probably missing (a fresh container): run
/// `apt-get update` once, say so, and try again.
pub(super) fn apt_download(
    dir: &Path,
    packages: &[&str],
    progress: &mut Progress,
) -> anyhow::Result<()> {
    let first = apt_get_download(dir, packages, progress)?;
    if first.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&first.stderr).to_string();
    let lists_missing = err.contains("Unable to locate package")
        || err.contains("has no installation candidate")
        || err.contains("Can't select")
        || err.contains("Failed to fetch");
    if !lists_missing {
        bail!(
            "apt-get download {} failed: {}",
            packages.join(" "),
            err.trim()
        );
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "apt-get download {} failed: {}\napt's package lists look missing or stale; \
             run `apt-get update` as root and try again",
            packages.join(" "),
            err.trim()
        );
    }
    progress
        .step("apt does not know the packages (lists missing or stale); running apt-get update");
    let update = Command::new("apt-get")
        .args(["-q", "update"])
        .stdin(Stdio::null())
        .output()
        .context("cannot run apt-get update")?;
    if !update.status.success() {
        bail!(
            "apt-get update failed: {}",
            String::from_utf8_lossy(&update.stderr).trim()
        );
    }
    let second = apt_get_download(dir, packages, progress)?;
    if !second.status.success() {
        bail!(
            "apt-get download {} failed even after apt-get update: {}",
            packages.join(" "),
            String::from_utf8_lossy(&second.stderr).trim()
        );
    }
    Ok(())
}

fn apt_get_download(dir: &Path, packages: &[&str], progress: &Progress) -> anyhow::Result<Output> {
    let mut cmd = Command::new("apt-get");
    cmd.current_dir(dir).stdin(Stdio::null());
    // As root, apt drops to the `_apt` user to download, who cannot write
    // into our private directory; stay root for this one directory.
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        cmd.args(["-o", "APT::Sandbox::User=root"]);
    }
    if progress.is_tty() {
        // apt draws its own download progress on its stdout: send it to our
        // stderr (our stdout may be a guest console).
        let err = std::io::stderr().as_fd().try_clone_to_owned()?;
        cmd.stdout(Stdio::from(err));
    } else {
        cmd.arg("-q").stdout(Stdio::piped());
    }
    cmd.arg("download").args(packages);
    cmd.stderr(Stdio::piped());
    cmd.output().context("cannot run apt-get")
}

/// Reads a module image, decompressing `.ko.xz` / `.ko.zst` / `.ko.gz`.
/// busybox's `insmod` reads plain `.ko` files, so we store them that way.
pub fn read_module(path: &Path) -> anyhow::Result<Vec<u8>> {
    let name = path.to_string_lossy();
    let tool = if name.ends_with(".ko.xz") {
        Some(("xz", "xz-utils"))
    } else if name.ends_with(".ko.zst") {
        Some(("zstd", "zstd"))
    } else {
        None
    };
    if let Some((tool, package)) = tool {
        if !have(tool) {
            bail!("{name} is compressed; install {package} (the `{tool}` command) to unpack it");
        }
        return Ok(run(Command::new(tool).arg("-dc").arg(path))?.stdout);
    }
    let bytes = fs::read(path).with_context(|| format!("cannot read {name}"))?;
    if name.ends_with(".ko.gz") {
        let mut out = Vec::new();
        std::io::Read::read_to_end(
            &mut flate2::read::GzDecoder::new(bytes.as_slice()),
            &mut out,
        )
        .with_context(|| format!("cannot gunzip {name}"))?;
        return Ok(out);
    }
    Ok(bytes)
}

/// `busybox --list-full`: where each applet belongs (`bin/sh`, ...). Empty
/// if the binary cannot run here; `/init` then installs the links itself.
pub fn busybox_applets(busybox: &Path) -> Vec<String> {
    Command::new(busybox)
        .arg("--list-full")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_image_package_is_found_in_depends() {
        let meta = "linux-image-cloud-amd64";
        assert_eq!(
            image_dependency("linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2)", meta),
            Some((
                "linux-image-6.1.0-56-cloud-amd64".into(),
                Some("6.1.192-2".into())
            ))
        );
        assert_eq!(
            image_dependency(
                "initramfs-tools | linux-initramfs-tool, linux-image-6.12.9-amd64",
                meta
            ),
            Some(("linux-image-6.12.9-amd64".into(), None))
        );
        assert_eq!(
            image_dependency("linux-image-cloud-amd64, libc6", meta),
            None
        );
        assert_eq!(image_dependency("", meta), None);
    }

    #[test]
    fn compressed_modules_are_read_uncompressed() {
        let dir = std::env::temp_dir().join(format!("alcazar-ko-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let plain = b"\x7fELF pretend module".repeat(100);
        let ko = dir.join("m.ko");
        fs::write(&ko, &plain).unwrap();
        assert_eq!(read_module(&ko).unwrap(), plain);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &plain).unwrap();
        fs::write(dir.join("g.ko.gz"), gz.finish().unwrap()).unwrap();
        assert_eq!(read_module(&dir.join("g.ko.gz")).unwrap(), plain);
        for (tool, suffix) in [("xz", "xz"), ("zstd", "zst")] {
            if !have(tool) {
                eprintln!("NOTE: no {tool} here; .ko.{suffix} not checked");
                continue;
            }
            let packed = run(Command::new(tool).args(["-c", "-q"]).arg(&ko))
                .unwrap()
                .stdout;
            let path = dir.join(format!("m.ko.{suffix}"));
            fs::write(&path, packed).unwrap();
            assert_eq!(read_module(&path).unwrap(), plain, "{suffix}");
        }
        fs::write(dir.join("bad.ko.gz"), b"not gzip").unwrap();
        assert!(read_module(&dir.join("bad.ko.gz")).is_err());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn missing_tools_are_reported_with_the_alternatives() {
        let help = no_tools_help("apt-get");
        assert!(help.contains("--from-debs DIR"));
        assert!(help.contains("--kernel PATH"));
        assert!(help.contains("--initrd PATH"));
        assert!(!have("surely-no-such-tool-alcazar"));
    }
}
