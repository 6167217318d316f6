//! Guest images owned by the project: Debian's kernel and a busybox
//! initramfs, fetched once into a cache and reused.
//!
//! `alcazar guest fetch` downloads the packages (`fetch.rs`), picks the
//! kernel and the virtio modules (`modules.rs`), packs busybox, the modules
//! and `/init` (`init.sh`) into a gzip'd newc cpio (`initramfs.rs`,
//! `cpio.rs`), and stores `vmlinuz`, `initrd.img` and `manifest.toml` in
//! `$XDG_CACHE_HOME/alcazar/guests/<flavor>/` (default `~/.cache`;
//! `cache.rs`). A guest is built in a temporary directory next to it and
//! renamed into place, so an interrupted fetch leaves nothing half-made. The
//! `/init` script ends the VM through `alcazar-exit` (`exit_tool.rs`);
//! `progress.rs` reports the steps. [`ensure`] is the same as a fetch,
//! for commands that need a guest (it fetches only the first time).

mod cache;
mod cpio;
mod exit_tool;
mod fetch;
pub mod firmware;
mod initramfs;
mod modules;
mod progress;

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use cache::{
    cache_root, cached, contents_digest, install, lock, remove_abandoned, Manifest, Scratch,
};
use progress::Progress;

/// Which Debian kernel a guest runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Flavor {
    /// `linux-image-cloud-amd64`: small, for VMs (virtio, no MP table).
    Cloud,
    /// `linux-image-amd64`: Debian's generic kernel.
    Generic,
}

impl Flavor {
    /// All flavors.
    pub const ALL: [Flavor; 2] = [Flavor::Cloud, Flavor::Generic];

    /// The name used on the command line and in the cache.
    pub fn name(self) -> &'static str {
        match self {
            Flavor::Cloud => "cloud",
            Flavor::Generic => "generic",
        }
    }

    /// The Debian metapackage that follows the current kernel ABI.
    pub fn metapackage(self) -> &'static str {
        match self {
            Flavor::Cloud => "linux-image-cloud-amd64",
            Flavor::Generic => "linux-image-amd64",
        }
    }

    /// An image package of this flavor, for messages.
    pub fn example_image(self) -> &'static str {
        match self {
            Flavor::Cloud => "linux-image-6.1.0-56-cloud-amd64",
            Flavor::Generic => "linux-image-6.1.0-56-amd64",
        }
    }

    /// True if `package` is a versioned kernel image of this flavor
    /// (`linux-image-<digit>...-cloud-amd64`; generic: `-amd64` without
    /// another flavor word such as `cloud` or `rt`).
    pub fn is_image_package(self, package: &str) -> bool {
        let Some(rest) = package.strip_prefix("linux-image-") else {
            return false;
        };
        if !rest.starts_with(|c: char| c.is_ascii_digit()) || rest.ends_with("-unsigned") {
            return false;
        }
        match self {
            Flavor::Cloud => rest.ends_with("-cloud-amd64"),
            Flavor::Generic => {
                rest.ends_with("-amd64") && !rest.contains("-cloud-") && !rest.contains("-rt-")
            }
        }
    }
}

/// A guest ready to boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestImage {
    /// The kernel, a bzImage.
    pub kernel: PathBuf,
    /// The initramfs, a gzip'd newc cpio.
    pub initrd: PathBuf,
    /// The kernel's release (`uname -r`), e.g. `6.1.0-56-cloud-amd64`.
    pub version: String,
}

/// `alcazar guest ...`
#[derive(Debug, clap::Args)]
pub struct GuestArgs {
    #[command(subcommand)]
    command: GuestCommand,
}

#[derive(Debug, clap::Subcommand)]
enum GuestCommand {
    /// Download Debian's kernel and busybox-static and build the guest
    /// images (kept in the cache and reused).
    Fetch(FetchArgs),
    /// Print the cached kernel and initrd paths, one per line.
    Path {
        /// The kernel flavor.
        #[arg(long, value_enum, default_value = "cloud")]
        flavor: Flavor,
    },
    /// List the cached guests.
    Ls,
}

#[derive(Debug, clap::Args)]
struct FetchArgs {
    /// The kernel flavor: cloud (linux-image-cloud-amd64) or generic
    /// (linux-image-amd64).
    #[arg(long, value_enum, default_value = "cloud")]
    flavor: Flavor,
    /// Build again even if the cache holds this guest.
    #[arg(long)]
    force: bool,
    /// Use the kernel image and busybox-static .deb files in DIR instead of
    /// downloading (needs dpkg-deb, not apt-get).
    #[arg(long, value_name = "DIR")]
    from_debs: Option<PathBuf>,
}

/// Runs `alcazar guest ...`; returns the exit status.
pub fn command(args: GuestArgs) -> u8 {
    let result = match args.command {
        GuestCommand::Fetch(f) => fetch_command(f),
        GuestCommand::Path { flavor } => path_command(flavor),
        GuestCommand::Ls => ls_command(),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("alcazar: {e:#}");
            1
        }
    }
}

fn fetch_command(args: FetchArgs) -> anyhow::Result<()> {
    let guest = get(args.flavor, args.force, args.from_debs.as_deref(), true)?;
    println!("{}", guest.kernel.display());
    println!("{}", guest.initrd.display());
    Ok(())
}

fn path_command(flavor: Flavor) -> anyhow::Result<()> {
    let dir = cache_root()?.join(flavor.name());
    let Some(manifest) = cached(&dir, flavor) else {
        bail!(
            "no {} guest in {}; run `alcazar guest fetch --flavor {}`",
            flavor.name(),
            dir.display(),
            flavor.name()
        );
    };
    let guest = manifest.image(&dir);
    println!("{}", guest.kernel.display());
    println!("{}", guest.initrd.display());
    Ok(())
}

fn ls_command() -> anyhow::Result<()> {
    let root = cache_root()?;
    let mut any = false;
    for flavor in Flavor::ALL {
        let dir = root.join(flavor.name());
        if let Some(m) = cached(&dir, flavor) {
            any = true;
            println!(
                "{:<8} {:<24} kernel {:>5.1} MiB  initrd {:>5.1} MiB  {}",
                flavor.name(),
                m.kernel_version,
                m.kernel_size as f64 / 1048576.0,
                m.initrd_size as f64 / 1048576.0,
                dir.display()
            );
        }
    }
    if !any {
        eprintln!(
            "alcazar: no guests in {}; run `alcazar guest fetch`",
            root.display()
        );
    }
    Ok(())
}

/// The guest of `flavor`, fetched and built on first use (with progress on
/// stderr if `progress`), else straight from the cache. For `alcazar run`.
// Called by `alcazar run` once it boots Linux guests (the lead wires it).
pub fn ensure(flavor: Flavor, progress: bool) -> anyhow::Result<GuestImage> {
    get(flavor, false, None, progress)
}

fn get(
    flavor: Flavor,
    force: bool,
    from_debs: Option<&Path>,
    show: bool,
) -> anyhow::Result<GuestImage> {
    let mut progress = Progress::new(show);
    let root = cache_root()?;
    let dir = root.join(flavor.name());
    let found = |progress: &mut Progress, m: Manifest| {
        progress.step(&format!(
            "{} guest cached ({}, {})",
            flavor.name(),
            m.kernel_version,
            dir.display()
        ));
        m.image(&dir)
    };
    if let Some(m) = cached(&dir, flavor).filter(|_| !force) {
        return Ok(found(&mut progress, m));
    }
    fs::create_dir_all(&root).with_context(|| format!("cannot create {}", root.display()))?;
    // One fetch at a time per cache, across threads and processes: a second
    // caller waits, then finds the first one's guest.
    let _lock = lock(&root, &mut progress)?;
    if let Some(m) = cached(&dir, flavor).filter(|_| !force) {
        return Ok(found(&mut progress, m));
    }
    fetch::check_tools(from_debs.is_none())?;
    remove_abandoned(&root, flavor);
    let staging = Scratch::new(&root, &format!(".{}-new", flavor.name()))?;
    let work = Scratch::new(&root, &format!(".{}-work", flavor.name()))?;
    let manifest = build(flavor, from_debs, &work.0, &staging.0, &mut progress)?;
    install(&staging, &dir, flavor, force)?;
    progress.step(&format!(
        "{} guest ready: kernel {}, initrd {:.1} MiB, in {}",
        flavor.name(),
        manifest.kernel_version,
        manifest.initrd_size as f64 / 1048576.0,
        dir.display()
    ));
    Ok(manifest.image(&dir))
}

/// Downloads (or reads) the packages into `work` and writes the guest's
/// files into `out`, the manifest last.
fn build(
    flavor: Flavor,
    from_debs: Option<&Path>,
    work: &Path,
    out: &Path,
    progress: &mut Progress,
) -> anyhow::Result<Manifest> {
    let debs = match from_debs {
        Some(dir) => {
            progress.step(&format!("using the packages in {}", dir.display()));
            fetch::from_dir(flavor, dir)?
        }
        None => fetch::download(flavor, work, progress)?,
    };
    progress.step(&format!(
        "unpacking {} {} and {} {} (dpkg-deb -x)",
        debs.kernel.package, debs.kernel.version, debs.busybox.package, debs.busybox.version
    ));
    let kernel_tree = work.join("kernel");
    let busybox_tree = work.join("busybox");
    fetch::unpack(&debs.kernel.path, &kernel_tree)?;
    fetch::unpack(&debs.busybox.path, &busybox_tree)?;

    let (vmlinuz, version) = find_vmlinuz(&kernel_tree)?;
    let modules_dir = ["lib/modules", "usr/lib/modules"]
        .iter()
        .map(|d| kernel_tree.join(d).join(&version))
        .find(|d| d.is_dir())
        .with_context(|| format!("{} has no lib/modules/{version}", debs.kernel.package))?;
    progress.step(&format!("choosing the virtio modules of {version}"));
    let modules = collect_modules(&modules_dir)?;

    let busybox_path = ["bin/busybox", "usr/bin/busybox"]
        .iter()
        .map(|p| busybox_tree.join(p))
        .find(|p| p.is_file())
        .with_context(|| format!("{} has no bin/busybox", debs.busybox.package))?;
    let busybox = fs::read(&busybox_path)?;
    let applets = fetch::busybox_applets(&busybox_path);

    progress.step(&format!(
        "packing the initramfs: busybox ({} applets), {} modules, /init",
        applets.len(),
        modules.len()
    ));
    let at_boot = modules::needed_by(modules::WANTED.iter().map(|(n, _)| *n), &modules);
    let contents = initramfs::Contents {
        busybox: &busybox,
        applets: &applets,
        kernel_version: &version,
        modules: &modules,
        at_boot: &at_boot,
    };
    let initrd = initramfs::build(&contents, progress)?;
    fs::copy(&vmlinuz, out.join("vmlinuz"))
        .with_context(|| format!("cannot copy {}", vmlinuz.display()))?;
    fs::write(out.join("initrd.img"), &initrd)?;
    let manifest = Manifest {
        flavor: flavor.name().to_string(),
        kernel_version: version,
        kernel_package: debs.kernel.package,
        kernel_package_version: debs.kernel.version,
        busybox_version: debs.busybox.version,
        modules: modules.iter().map(|(m, _)| m.name.clone()).collect(),
        kernel_size: fs::metadata(out.join("vmlinuz"))?.len(),
        initrd_size: initrd.len() as u64,
        contents: contents_digest(),
    };
    fs::write(out.join("manifest.toml"), manifest.to_toml())?;
    Ok(manifest)
}

/// `/boot/vmlinuz-<version>` of an unpacked kernel package.
fn find_vmlinuz(tree: &Path) -> anyhow::Result<(PathBuf, String)> {
    let boot = tree.join("boot");
    for entry in fs::read_dir(&boot).with_context(|| format!("no {}", boot.display()))? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if let Some(version) = name.strip_prefix("vmlinuz-") {
            return Ok((path.clone(), version.to_string()));
        }
    }
    bail!("the kernel package has no boot/vmlinuz-*")
}

/// The wanted modules and their dependencies, in load order, read into
/// memory (uncompressed).
fn collect_modules(dir: &Path) -> anyhow::Result<Vec<(modules::Module, Vec<u8>)>> {
    // name -> path relative to `dir`, for every module file.
    let mut files = std::collections::BTreeMap::new();
    let mut pending = vec![dir.join("kernel")];
    while let Some(d) = pending.pop() {
        for entry in fs::read_dir(&d)? {
            let entry = entry?;
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                pending.push(path);
            } else if let Ok(rel) = path.strip_prefix(dir) {
                let rel = rel.to_string_lossy().to_string();
                if [".ko", ".ko.xz", ".ko.zst", ".ko.gz"]
                    .iter()
                    .any(|s| rel.ends_with(s))
                {
                    files.insert(modules::module_name(&rel), rel);
                }
            }
        }
    }
    let builtin: Vec<String> = fs::read_to_string(dir.join("modules.builtin"))
        .unwrap_or_default()
        .lines()
        .map(modules::module_name)
        .collect();
    let dep_file = fs::read_to_string(dir.join("modules.dep")).ok();
    let from_depmod = dep_file
        .as_deref()
        .map(modules::parse_modules_dep)
        .transpose()?;

    let mut roots = Vec::new();
    let on_demand = modules::ON_DEMAND.iter().map(|&n| (n, false));
    for (name, required) in modules::WANTED.iter().copied().chain(on_demand) {
        if files.contains_key(name) {
            roots.push(name);
        } else if builtin.iter().any(|b| b == name) {
            tracing::info!("{name} is built into this kernel");
        } else if required {
            bail!("this kernel has no {name}, neither as a module nor built in");
        }
    }
    let mut images = std::collections::BTreeMap::new();
    let order = modules::load_order(&roots, |name| {
        let Some(rel) = files.get(name) else {
            return Ok(None);
        };
        let image = fetch::read_module(&dir.join(rel))?;
        let deps = match &from_depmod {
            Some(map) => map.get(name).map(|m| m.deps.clone()).unwrap_or_default(),
            None => modules::modinfo_depends(&image).with_context(|| format!("module {rel}"))?,
        };
        images.insert(name.to_string(), image);
        Ok(Some(modules::Module {
            name: name.to_string(),
            path: rel.clone(),
            deps,
        }))
    })?;
    Ok(order
        .into_iter()
        .map(|m| {
            let image = images.remove(&m.name).unwrap_or_default();
            (m, image)
        })
        .collect())
}

/// Encodes a command for `alcazar.exec=` on the kernel command line:
/// base64url without padding (RFC 4648 section 5), whose alphabet
/// (`A-Z a-z 0-9 - _`) needs no quoting there. `/init` decodes it.
// Called by `alcazar run` once it boots Linux guests (the lead wires it).
pub fn encode_exec(command: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = command.as_bytes();
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// The kernel command line parameter that makes `/init` run `command`.
// Called by `alcazar run` once it boots Linux guests (the lead wires it).
pub fn exec_parameter(command: &str) -> String {
    format!("alcazar.exec={}", encode_exec(command))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_encoding_follows_rfc4648() {
        // RFC 4648 section 10 vectors, without padding.
        let vectors = [
            ("", ""),
            ("f", "Zg"),
            ("fo", "Zm8"),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg"),
            ("fooba", "Zm9vYmE"),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in vectors {
            assert_eq!(encode_exec(plain), encoded, "{plain:?}");
        }
        // The URL-safe alphabet: 62 and 63 are '-' and '_'.
        assert_eq!(encode_exec("\u{fb}\u{ff}"), "w7vDvw");
        assert_eq!(encode_exec("?>>"), "Pz4-");
        assert_eq!(encode_exec("??"), "Pz8");
        assert_eq!(encode_exec("\u{ffff}"), "77-_");
        assert_eq!(exec_parameter("id"), "alcazar.exec=aWQ");
    }

    /// The `decode_b64url` function of `/init`, as text.
    pub(crate) fn decode_function() -> String {
        let start = initramfs::INIT_SCRIPT
            .find("decode_b64url() {")
            .expect("init.sh defines decode_b64url");
        let len = initramfs::INIT_SCRIPT[start..]
            .find("\n}\n")
            .expect("the function ends");
        initramfs::INIT_SCRIPT[start..start + len + 3].to_string()
    }

    #[test]
    fn busybox_decodes_what_we_encode() {
        // The real decoder is busybox's sh, tr and base64; the integration
        // test runs it with the fetched busybox. Here: if one is at hand.
        let busybox = std::env::var("ALCAZAR_BUSYBOX").unwrap_or_else(|_| "busybox".into());
        let function = decode_function();
        let commands = [
            "echo hello",
            "x='a b'; echo \"$x\" | tr a-z A-Z; exit 3",
            "printf '%s\\n' 'ütf-8 ✓' >/dev/null\necho two lines",
            "a",
            "ab",
        ];
        for command in commands {
            let script = format!("{function}\ndecode_b64url \"$1\"");
            let Ok(out) = std::process::Command::new(&busybox)
                .args(["sh", "-c", &script, "sh", &encode_exec(command)])
                .output()
            else {
                eprintln!("NOTE busybox_decodes_what_we_encode: no busybox here");
                return;
            };
            assert!(out.status.success(), "{command:?}: {out:?}");
            assert_eq!(String::from_utf8_lossy(&out.stdout), command);
        }
        for bad in ["a", "ab$c", "a b"] {
            let script = format!("{function}\ndecode_b64url \"$1\"");
            let out = std::process::Command::new(&busybox)
                .args(["sh", "-c", &script, "sh", bad])
                .output()
                .unwrap();
            assert!(!out.status.success(), "{bad:?} decoded");
        }
    }

    #[test]
    fn flavors_recognise_their_image_packages() {
        assert!(Flavor::Cloud.is_image_package("linux-image-6.1.0-56-cloud-amd64"));
        assert!(!Flavor::Cloud.is_image_package("linux-image-cloud-amd64"));
        assert!(!Flavor::Cloud.is_image_package("linux-image-6.1.0-56-amd64"));
        assert!(Flavor::Generic.is_image_package("linux-image-6.1.0-56-amd64"));
        assert!(!Flavor::Generic.is_image_package("linux-image-6.1.0-56-cloud-amd64"));
        assert!(!Flavor::Generic.is_image_package("linux-image-6.1.0-56-rt-amd64"));
        assert!(!Flavor::Generic.is_image_package("linux-image-6.1.0-56-amd64-unsigned"));
    }
}
