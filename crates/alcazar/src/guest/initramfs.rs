//! The guest's initramfs: busybox, the `/init` script, the virtio modules,
//! packed as a gzip'd newc cpio archive (the kernel's
//! `Documentation/filesystems/ramfs-rootfs-initramfs.rst`).
//!
//! Layout:
//! - `/bin/busybox` and a symbolic link for each applet where busybox's
//!   `--list-full` puts it (`bin/sh`, `sbin/init`, `usr/bin/...`);
//! - `/init` (`init.sh`), `/etc/inittab`, `/etc/profile`, `/etc/passwd`,
//!   `/etc/group`, `/etc/hostname`;
//! - `/bin/alcazar-exit` (see `exit_tool.rs`);
//! - `/usr/share/udhcpc/default.script` (`udhcpc.sh`), which applies a
//!   DHCP lease for `/init`'s `alcazar.net=dhcp`;
//! - `/lib/modules/<version>/kernel/...` the modules, a `modules.dep` for
//!   them (so `modprobe` works in the guest), and `/etc/alcazar/modules`,
//!   their paths in load order, which `/init` reads;
//! - `/dev/console` (c 5 1), so the kernel can open the console for `/init`
//!   before devtmpfs is mounted; empty `/proc /sys /dev /tmp /root /run`.
//!
//! gzip: through the `flate2` crate (pure Rust, miniz_oxide), so building
//! needs no host tool, and the kernel's `CONFIG_RD_GZIP` reads it.

use anyhow::Context;
use flate2::write::GzEncoder;

use super::cpio::CpioWriter;
use super::modules::Module;
use super::progress::Progress;

/// The `/init` script.
pub const INIT_SCRIPT: &str = include_str!("init.sh");

/// busybox udhcpc's script: applies a lease (address, route, DNS).
pub const DHCP_SCRIPT: &str = include_str!("udhcpc.sh");

/// busybox init's table: a shell on the console, respawned when it exits;
/// sync and unmount when the system goes down (`poweroff`, `reboot`).
const INITTAB: &str = "\
# /etc/inittab for busybox init. Format: <tty>::<action>:<program>;
# an empty <tty> means the console. busybox ignores runlevels.
#
# A login shell on the console. (/init appends a getty line for the
# virtio console hvc0 when the machine has one.) cttyhack finds the real console device
# (ttyS0, hvc0) and makes it the controlling terminal, so job control
# and Ctrl-C work.
::respawn:-/bin/cttyhack /bin/sh
::ctrlaltdel:/sbin/reboot
# Run by `poweroff` and `reboot` before the kernel is asked to stop.
::shutdown:/bin/sync
::shutdown:/bin/umount -a -r
::restart:/sbin/init
";

const PROFILE: &str = "\
export PATH=/sbin:/usr/sbin:/bin:/usr/bin
export PS1='\\h:\\w\\$ '
";

/// What goes into the archive besides the fixed files.
#[derive(Debug)]
pub struct Contents<'a> {
    /// The busybox-static binary.
    pub busybox: &'a [u8],
    /// Applet paths from `busybox --list-full` (`bin/sh`, `sbin/init`, ...).
    pub applets: &'a [String],
    /// `uname -r` of the kernel (`6.1.0-56-cloud-amd64`).
    pub kernel_version: &'a str,
    /// The modules in load order, each with its (uncompressed) image.
    pub modules: &'a [(Module, Vec<u8>)],
    /// The names of the modules `/init` loads at every boot (listed in
    /// `/etc/alcazar/modules`); the others wait for `modprobe`.
    pub at_boot: &'a std::collections::BTreeSet<String>,
}

/// Builds the gzip'd archive.
pub fn build(contents: &Contents, progress: &mut Progress) -> anyhow::Result<Vec<u8>> {
    let exit_tool = super::exit_tool::image().context("assembling alcazar-exit")?;
    let total = (contents.busybox.len()
        + contents.modules.iter().map(|(_, i)| i.len()).sum::<usize>()) as u64;
    let mut done = 0u64;
    let gz = GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut w = CpioWriter::new(gz);

    for d in [
        "proc", "sys", "dev", "tmp", "root", "run", "etc", "bin", "sbin",
    ] {
        let perm = match d {
            "tmp" => 0o1777,
            "root" => 0o700,
            _ => 0o755,
        };
        w.dir(d, perm)?;
    }
    w.char_device("dev/console", 0o600, 5, 1)?;
    w.file("init", 0o755, INIT_SCRIPT.as_bytes())?;
    w.file("bin/busybox", 0o755, contents.busybox)?;
    done += contents.busybox.len() as u64;
    progress.bar("packing", done, total);
    for applet in contents.applets {
        let applet = applet.trim_start_matches('/');
        // /init is our script; linuxrc is for the old initrd scheme.
        if applet.is_empty() || applet == "linuxrc" || applet == "bin/busybox" {
            continue;
        }
        // A relative link, so the tree also works unpacked elsewhere.
        let target = match applet.rsplit_once('/') {
            Some(("bin", _)) => "busybox".to_string(),
            _ => format!("{}bin/busybox", "../".repeat(applet.matches('/').count())),
        };
        w.symlink(applet, &target)?;
    }
    w.file("bin/alcazar-exit", 0o755, &exit_tool)?;
    w.file(
        "usr/share/udhcpc/default.script",
        0o755,
        DHCP_SCRIPT.as_bytes(),
    )?;
    w.file("etc/inittab", 0o644, INITTAB.as_bytes())?;
    w.file("etc/profile", 0o644, PROFILE.as_bytes())?;
    w.file("etc/hostname", 0o644, b"alcazar\n")?;
    // root has no password: `login` on hvc0 (or anywhere) asks for none.
    w.file("etc/passwd", 0o644, b"root::0:0:root:/root:/bin/sh\n")?;
    w.file("etc/group", 0o644, b"root:x:0:\n")?;

    let base = format!("lib/modules/{}", contents.kernel_version);
    let mut order = String::new();
    for (module, image) in contents.modules {
        let path = uncompressed_path(&module.path);
        w.file(&format!("{base}/{path}"), 0o644, image)?;
        if contents.at_boot.contains(&module.name) {
            order.push_str(&format!("/{base}/{path}\n"));
        }
        done += image.len() as u64;
        progress.bar("packing", done, total);
    }
    w.file(
        &format!("{base}/modules.dep"),
        0o644,
        modules_dep(contents.modules).as_bytes(),
    )?;
    w.file("etc/alcazar/modules", 0o644, order.as_bytes())?;

    let gz = w.finish()?;
    let bytes = gz.finish().context("finishing the gzip stream")?;
    progress.clear_bar();
    Ok(bytes)
}

/// A module's path once its compression suffix is gone (we store modules
/// uncompressed).
pub fn uncompressed_path(path: &str) -> &str {
    path.strip_suffix(".xz")
        .or_else(|| path.strip_suffix(".zst"))
        .or_else(|| path.strip_suffix(".gz"))
        .unwrap_or(path)
}

/// `modules.dep` for the packed modules, in depmod's convention: each line
/// lists a module's whole dependency closure, so that loading the list
/// from the end backwards, then the module, works.
fn modules_dep(modules: &[(Module, Vec<u8>)]) -> String {
    let index = |name: &str| modules.iter().position(|(m, _)| m.name == name);
    let mut text = String::new();
    for (i, (module, _)) in modules.iter().enumerate() {
        // The closure, by position in the load order (all before i).
        let mut closure = vec![false; i];
        let mut todo: Vec<&str> = module.deps.iter().map(String::as_str).collect();
        while let Some(dep) = todo.pop() {
            if let Some(j) = index(dep).filter(|&j| j < i && !closure[j]) {
                closure[j] = true;
                todo.extend(modules[j].0.deps.iter().map(String::as_str));
            }
        }
        let deps: Vec<&str> = (0..i)
            .rev()
            .filter(|&j| closure[j])
            .map(|j| uncompressed_path(&modules[j].0.path))
            .collect();
        let line = format!("{}: {}", uncompressed_path(&module.path), deps.join(" "));
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

/// gunzips an archive (for tests and checks).
#[cfg(test)]
fn gunzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut out = Vec::new();
    let mut d = flate2::write::GzDecoder::new(&mut out);
    d.write_all(bytes).unwrap();
    d.finish().unwrap();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest::cpio::tests::read;
    use crate::guest::cpio::{S_IFCHR, S_IFLNK};

    fn module(name: &str, path: &str, deps: &[&str]) -> (Module, Vec<u8>) {
        let m = Module {
            name: name.into(),
            path: path.into(),
            deps: deps.iter().map(|d| d.to_string()).collect(),
        };
        (m, format!("image of {name}").into_bytes())
    }

    fn sample_modules() -> Vec<(Module, Vec<u8>)> {
        vec![
            module("virtio_ring", "kernel/drivers/virtio/virtio_ring.ko", &[]),
            module(
                "virtio",
                "kernel/drivers/virtio/virtio.ko",
                &["virtio_ring"],
            ),
            module(
                "virtio_blk",
                "kernel/drivers/block/virtio_blk.ko.xz",
                &["virtio"],
            ),
        ]
    }

    #[test]
    fn the_archive_holds_init_busybox_links_modules_and_console() {
        let modules = sample_modules();
        let applets = vec!["bin/sh".to_string(), "usr/bin/env".into(), "linuxrc".into()];
        // virtio_blk is packed for modprobe but not loaded at boot.
        let at_boot = super::super::modules::needed_by(["virtio"], &modules);
        let contents = Contents {
            busybox: b"busybox bytes",
            applets: &applets,
            kernel_version: "6.1.0-test",
            modules: &modules,
            at_boot: &at_boot,
        };
        let archive = build(&contents, &mut Progress::new(false)).unwrap();
        assert_eq!(&archive[..2], b"\x1f\x8b", "gzip magic");
        let entries = read(&gunzip(&archive));
        let find = |n: &str| entries.iter().find(|e| e.name == n);
        assert_eq!(find("init").unwrap().data, INIT_SCRIPT.as_bytes());
        assert_eq!(find("bin/busybox").unwrap().data, b"busybox bytes");
        let sh = find("bin/sh").unwrap();
        assert_eq!(
            (sh.mode & 0o170000, sh.data.as_slice()),
            (S_IFLNK, &b"busybox"[..])
        );
        assert_eq!(find("usr/bin/env").unwrap().data, b"../../bin/busybox");
        assert!(find("linuxrc").is_none());
        let console = find("dev/console").unwrap();
        assert_eq!((console.mode & 0o170000, console.rdev), (S_IFCHR, (5, 1)));
        let blk = "lib/modules/6.1.0-test/kernel/drivers/block/virtio_blk.ko";
        assert_eq!(find(blk).unwrap().data, b"image of virtio_blk");
        let order = String::from_utf8(find("etc/alcazar/modules").unwrap().data.clone()).unwrap();
        let names: Vec<&str> = order
            .lines()
            .map(|l| l.rsplit('/').next().unwrap())
            .collect();
        assert_eq!(names, ["virtio_ring.ko", "virtio.ko"]);
        assert!(find("etc/inittab").is_some());
        assert!(find("bin/alcazar-exit").is_some());
    }

    #[test]
    fn modules_dep_lists_the_closure_nearest_first() {
        let dep = modules_dep(&sample_modules());
        assert_eq!(
            dep,
            "kernel/drivers/virtio/virtio_ring.ko:\n\
             kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko\n\
             kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko\n"
        );
    }
}
