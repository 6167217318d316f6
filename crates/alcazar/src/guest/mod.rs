//! Guest images owned by the project: Debian's kernel and a busybox
//! initramfs, fetched once into a cache and reused.
//!
//! `alcazar guest fetch` downloads the packages (`fetch.rs`), picks the
//! kernel and the virtio modules (`modules.rs`), packs busybox, the modules
//! and `/init` (`init.sh`) into a gzip'd newc cpio (`initramfs.rs`,
//! `cpio.rs`), and stores `vmlinuz`, `initrd.img` and `manifest.toml` in
//! `$XDG_CACHE_HOME/alcazar/guests/<flavor>/` (default `~/.cache`). A guest
//! is built in a temporary directory next to it and renamed into place, so
//! an interrupted fetch leaves nothing half-made. [`ensure`] is the same,
//! for commands that need a guest (it fetches only the first time).

mod cpio;
mod exit_tool;
mod fetch;
mod initramfs;
mod modules;
mod progress;

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use progress::Progress;

/// Bumped when the layout or the contents of a cached guest change in a
/// way that an older cache must be rebuilt for.
const LAYOUT: i64 = 1;

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
#[allow(dead_code)]
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
    let contents = initramfs::Contents {
        busybox: &busybox,
        applets: &applets,
        kernel_version: &version,
        modules: &modules,
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
    for &(name, required) in modules::WANTED {
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

/// Moves a finished guest into place. If another fetch won the race, its
/// complete guest is kept and ours dropped.
fn install(staging: &Scratch, dir: &Path, flavor: Flavor, force: bool) -> anyhow::Result<()> {
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
pub fn cache_root() -> anyhow::Result<PathBuf> {
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
fn remove_abandoned(root: &Path, flavor: Flavor) {
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
fn lock(root: &Path, progress: &mut Progress) -> anyhow::Result<fs::File> {
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
struct Scratch(PathBuf);

impl Scratch {
    fn new(parent: &Path, prefix: &str) -> anyhow::Result<Self> {
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
fn contents_digest() -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let wanted: String = modules::WANTED.iter().map(|(n, _)| *n).collect();
    let exit_tool = exit_tool::image().unwrap_or_default();
    let parts: [&[u8]; 4] = [
        initramfs::INIT_SCRIPT.as_bytes(),
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
struct Manifest {
    flavor: String,
    kernel_version: String,
    kernel_package: String,
    kernel_package_version: String,
    busybox_version: String,
    modules: Vec<String>,
    kernel_size: u64,
    initrd_size: u64,
    contents: String,
}

impl Manifest {
    fn image(&self, dir: &Path) -> GuestImage {
        GuestImage {
            kernel: dir.join("vmlinuz"),
            initrd: dir.join("initrd.img"),
            version: self.kernel_version.clone(),
        }
    }

    fn to_toml(&self) -> String {
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

    fn parse(text: &str) -> Option<Manifest> {
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
fn cached(dir: &Path, flavor: Flavor) -> Option<Manifest> {
    let m = Manifest::parse(&fs::read_to_string(dir.join("manifest.toml")).ok()?)?;
    let size = |f: &str| fs::metadata(dir.join(f)).ok().map(|m| m.len());
    let ok = m.flavor == flavor.name()
        && m.contents == contents_digest()
        && size("vmlinuz") == Some(m.kernel_size)
        && size("initrd.img") == Some(m.initrd_size);
    ok.then_some(m)
}

/// Encodes a command for `alcazar.exec=` on the kernel command line:
/// base64url without padding (RFC 4648 section 5), whose alphabet
/// (`A-Z a-z 0-9 - _`) needs no quoting there. `/init` decodes it.
// Called by `alcazar run` once it boots Linux guests (the lead wires it).
#[allow(dead_code)]
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
#[allow(dead_code)]
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
