//! Which kernel modules go into the initramfs, and in which order `/init`
//! loads them.
//!
//! A module can be loaded only after the modules whose symbols it uses.
//! `depmod` records that in `modules.dep` (`kernel/a.ko: kernel/b.ko ...`,
//! one line per module, see `modules.dep(5)`), but Debian's kernel packages
//! do not ship the file: it is generated when the package is installed, and
//! we never install. The same facts are in every module: `modpost` writes a
//! `depends=` string into the module's `.modinfo` ELF section. So this file
//! reads `modules.dep` when there is one, else the `.modinfo` of each module
//! it needs, and orders the modules dependencies first (a depth-first
//! post-order walk from the wanted modules).

use std::collections::BTreeMap;

use anyhow::{bail, Context};

/// The modules the guest needs for virtio over PCI and the ACPI power
/// button (`button`, and `evdev` through which busybox `acpid` sees it),
/// and whether the guest is usable without each (`false`: optional). Their dependencies
/// (`virtio_ring` before `virtio`, `virtio_pci_modern_dev`, `failover`,
/// ...) follow from the kernel's own data.
pub const WANTED: &[(&str, bool)] = &[
    ("virtio_pci", true),
    ("virtio_blk", true),
    ("virtio_net", true),
    ("virtio_console", true),
    ("virtio_rng", true),
    ("vmw_vsock_virtio_transport", false),
    ("button", false),
    ("evdev", false),
];

/// Modules packed into the initramfs but loaded by `/init` only when
/// their hardware is there: the IDE controller's (PCI class 0101h: a
/// `--disk PATH,if=ide` or a `--cdrom`) ATA driver, SCSI disks and
/// CD-ROMs. Loading them always would cost every boot their link time.
/// All optional.
pub const ON_DEMAND: &[&str] = &["ata_piix", "sd_mod", "sr_mod"];

/// One module: its name, its path below `/lib/modules/<version>/`, and the
/// names of the modules it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    /// The module name, as `lsmod` shows it (`virtio_rng` for `virtio-rng.ko`).
    pub name: String,
    /// The file, relative to the modules directory (`kernel/drivers/...`).
    pub path: String,
    /// The modules that must be loaded first.
    pub deps: Vec<String>,
}

/// The module name of a file: the base name without `.ko` (and a
/// compression suffix), with `-` read as `_`, as the kernel does.
pub fn module_name(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    let stem = [".ko", ".ko.xz", ".ko.zst", ".ko.gz"]
        .iter()
        .find_map(|s| base.strip_suffix(s))
        .unwrap_or(base);
    stem.replace('-', "_")
}

/// Parses `modules.dep` text into modules keyed by name.
pub fn parse_modules_dep(text: &str) -> anyhow::Result<BTreeMap<String, Module>> {
    let mut modules = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((path, deps)) = line.split_once(':') else {
            bail!("modules.dep line {}: no ':' in {line:?}", n + 1);
        };
        let path = path.trim().to_string();
        let module = Module {
            name: module_name(&path),
            deps: deps.split_whitespace().map(module_name).collect(),
            path,
        };
        modules.insert(module.name.clone(), module);
    }
    Ok(modules)
}

/// Reads the `.modinfo` section of an ELF64 little-endian module image:
/// its `key=value` strings, NUL-separated (System V gABI, section headers).
pub fn modinfo(image: &[u8]) -> anyhow::Result<Vec<(String, String)>> {
    let u16_at = |o: usize| {
        image
            .get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |o: usize| {
        image
            .get(o..o + 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
    };
    let u64_at = |o: usize| {
        image
            .get(o..o + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    if image.get(..6) != Some(b"\x7fELF\x02\x01") {
        bail!("not an ELF64 little-endian file");
    }
    let malformed = || anyhow::anyhow!("malformed ELF section headers");
    let shoff = u64_at(0x28).ok_or_else(malformed)? as usize;
    let shentsize = u16_at(0x3a).ok_or_else(malformed)? as usize;
    let shnum = u16_at(0x3c).ok_or_else(malformed)? as usize;
    let shstrndx = u16_at(0x3e).ok_or_else(malformed)? as usize;
    let section = |i: usize| -> Option<(u32, &[u8])> {
        let h = shoff.checked_add(i.checked_mul(shentsize)?)?;
        let name = u32_at(h)?;
        let offset = usize::try_from(u64_at(h + 24)?).ok()?;
        let size = usize::try_from(u64_at(h + 32)?).ok()?;
        Some((name, image.get(offset..offset.checked_add(size)?)?))
    };
    let (_, names) = section(shstrndx).ok_or_else(malformed)?;
    for i in 0..shnum {
        let (name, data) = section(i).ok_or_else(malformed)?;
        let name = names.get(name as usize..).unwrap_or_default();
        if name.split(|&b| b == 0).next() == Some(b".modinfo") {
            return Ok(data
                .split(|&b| b == 0)
                .filter_map(|s| {
                    let s = String::from_utf8_lossy(s);
                    let (k, v) = s.split_once('=')?;
                    Some((k.to_string(), v.to_string()))
                })
                .collect());
        }
    }
    bail!("no .modinfo section")
}

/// The modules a module image depends on, from its `depends=` field.
pub fn modinfo_depends(image: &[u8]) -> anyhow::Result<Vec<String>> {
    let info = modinfo(image)?;
    Ok(info
        .iter()
        .find(|(k, _)| k == "depends")
        .map(|(_, v)| {
            v.split(',')
                .filter(|d| !d.is_empty())
                .map(|d| d.replace('-', "_"))
                .collect()
        })
        .unwrap_or_default())
}

/// Orders `roots` and everything they depend on so that each module comes
/// after all of its dependencies. `lookup` finds a module by name (`None`
/// if the kernel has no such module). Dependencies are visited in the
/// order they are listed, so the result is deterministic.
pub fn load_order(
    roots: &[&str],
    mut lookup: impl FnMut(&str) -> anyhow::Result<Option<Module>>,
) -> anyhow::Result<Vec<Module>> {
    #[derive(PartialEq)]
    enum State {
        Visiting,
        Done,
    }
    let mut state: BTreeMap<String, State> = BTreeMap::new();
    let mut order = Vec::new();
    // An explicit stack of (module, index of the next dependency to visit),
    // so that a hostile or broken dependency chain cannot overflow ours.
    for &root in roots {
        let root = root.replace('-', "_");
        if state.contains_key(&root) {
            continue;
        }
        let first = lookup(&root)?.with_context(|| format!("no module {root}"))?;
        state.insert(root, State::Visiting);
        let mut stack = vec![(first, 0usize)];
        while let Some((module, next)) = stack.last_mut() {
            let Some(dep) = module.deps.get(*next).cloned() else {
                let (done, _) = stack.pop().expect("stack is not empty");
                state.insert(done.name.clone(), State::Done);
                order.push(done);
                continue;
            };
            *next += 1;
            match state.get(&dep) {
                Some(State::Done) => {}
                Some(State::Visiting) => bail!(
                    "module dependency cycle: {} -> {dep}",
                    stack
                        .iter()
                        .map(|(m, _)| m.name.as_str())
                        .collect::<Vec<_>>()
                        .join(" -> ")
                ),
                None => {
                    let parent = module.name.clone();
                    let m = lookup(&dep)?.with_context(|| {
                        format!("{parent} depends on {dep}, which is not a module of this kernel")
                    })?;
                    state.insert(dep, State::Visiting);
                    stack.push((m, 0));
                }
            }
        }
    }
    Ok(order)
}

/// The names of `roots` and of every module they need, directly or
/// through others, among `modules` (a load order from [`load_order`]).
/// Names are compared with `-` read as `_`, as the kernel does.
pub fn needed_by<'a, T>(
    roots: impl IntoIterator<Item = &'a str>,
    modules: &[(Module, T)],
) -> std::collections::BTreeSet<String> {
    let mut needed = std::collections::BTreeSet::new();
    let mut todo: Vec<String> = roots.into_iter().map(|r| r.replace('-', "_")).collect();
    while let Some(name) = todo.pop() {
        let Some((module, _)) = modules.iter().find(|(m, _)| m.name == name) else {
            continue;
        };
        if needed.insert(name) {
            todo.extend(module.deps.iter().cloned());
        }
    }
    needed
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `modules.dep` excerpt in depmod's format (paths as in Debian 12's
    /// 6.1 cloud kernel; depmod lists a module's full dependency closure).
    const SAMPLE: &str = "\
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/net/core/failover.ko:
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/char/hw_random/virtio-rng.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/char/virtio_console.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
";

    fn order(roots: &[&str], deps: &BTreeMap<String, Module>) -> anyhow::Result<Vec<String>> {
        Ok(load_order(roots, |n| Ok(deps.get(n).cloned()))?
            .into_iter()
            .map(|m| m.name)
            .collect())
    }

    fn position(list: &[String], name: &str) -> usize {
        list.iter()
            .position(|n| n == name)
            .unwrap_or_else(|| panic!("{name} missing"))
    }

    #[test]
    fn dependencies_come_first() {
        let deps = parse_modules_dep(SAMPLE).unwrap();
        let roots = [
            "virtio_pci",
            "virtio_blk",
            "virtio_net",
            "virtio_console",
            "virtio-rng",
        ];
        let list = order(&roots, &deps).unwrap();
        assert_eq!(list.len(), deps.len(), "{list:?}");
        for m in deps.values() {
            for d in &m.deps {
                assert!(
                    position(&list, d) < position(&list, &m.name),
                    "{d} after {}",
                    m.name
                );
            }
        }
        assert!(position(&list, "virtio_ring") < position(&list, "virtio"));
        assert_eq!(
            list,
            [
                "virtio_pci_modern_dev",
                "virtio_pci_legacy_dev",
                "virtio_ring",
                "virtio",
                "virtio_pci",
                "virtio_blk",
                "failover",
                "net_failover",
                "virtio_net",
                "virtio_console",
                "virtio_rng"
            ]
        );
        assert_eq!(
            deps["virtio_rng"].path,
            "kernel/drivers/char/hw_random/virtio-rng.ko"
        );
    }

    #[test]
    fn a_missing_dependency_is_named() {
        let mut deps = parse_modules_dep(SAMPLE).unwrap();
        deps.remove("failover");
        let e = order(&["virtio_net"], &deps).unwrap_err().to_string();
        assert!(e.contains("net_failover depends on failover"), "{e}");
    }

    #[test]
    fn a_cycle_is_an_error_not_a_hang() {
        let deps = parse_modules_dep("a.ko: b.ko\nb.ko: c.ko\nc.ko: a.ko\n").unwrap();
        let e = order(&["a"], &deps).unwrap_err().to_string();
        assert!(e.contains("cycle"), "{e}");
    }

    #[test]
    fn names_follow_the_kernel_rules() {
        assert_eq!(
            module_name("kernel/drivers/char/hw_random/virtio-rng.ko"),
            "virtio_rng"
        );
        assert_eq!(module_name("kernel/x/virtio_blk.ko.xz"), "virtio_blk");
        assert_eq!(module_name("virtio.ko.zst"), "virtio");
        assert!(parse_modules_dep("no colon here\n").is_err());
    }

    /// Builds a minimal ELF64 with a section-name table and a `.modinfo`.
    fn elf_with_modinfo(modinfo: &[u8]) -> Vec<u8> {
        let shstrtab = b"\0.shstrtab\0.modinfo\0";
        let mut image = vec![0u8; 64];
        image[..6].copy_from_slice(b"\x7fELF\x02\x01");
        let strtab_at = image.len();
        image.extend_from_slice(shstrtab);
        let modinfo_at = image.len();
        image.extend_from_slice(modinfo);
        let shoff = image.len();
        let mut header = |name: u32, offset: usize, size: usize| {
            let mut h = [0u8; 64];
            h[..4].copy_from_slice(&name.to_le_bytes());
            h[24..32].copy_from_slice(&(offset as u64).to_le_bytes());
            h[32..40].copy_from_slice(&(size as u64).to_le_bytes());
            image.extend_from_slice(&h);
        };
        header(0, 0, 0);
        header(1, strtab_at, shstrtab.len());
        header(11, modinfo_at, modinfo.len());
        image[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
        image[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        image[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
        image[0x3e..0x40].copy_from_slice(&1u16.to_le_bytes());
        image
    }

    #[test]
    fn modinfo_depends_reads_the_section() {
        let image =
            elf_with_modinfo(b"license=GPL\0depends=virtio_ring,virtio\0\0name=virtio_blk\0");
        assert_eq!(modinfo_depends(&image).unwrap(), ["virtio_ring", "virtio"]);
        let none = elf_with_modinfo(b"depends=\0name=virtio_ring\0");
        assert!(modinfo_depends(&none).unwrap().is_empty());
    }

    #[test]
    fn truncated_elf_is_an_error() {
        let image = elf_with_modinfo(b"depends=a\0");
        // The last section header's sh_offset and sh_size start 40 bytes
        // before the end.
        for len in [0, 10, 63, 100, image.len() - 40] {
            assert!(modinfo(&image[..len]).is_err(), "length {len} accepted");
        }
        // A section that claims to run past the end of the file.
        let mut huge = image.clone();
        let last = huge.len() - 64;
        huge[last + 32..last + 40].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(modinfo(&huge).is_err());
    }

    #[test]
    fn needed_by_follows_dependencies_and_leaves_the_rest_out() {
        let m = |name: &str, deps: &[&str]| {
            (
                Module {
                    name: name.into(),
                    path: format!("kernel/{name}.ko"),
                    deps: deps.iter().map(|d| d.to_string()).collect(),
                },
                (),
            )
        };
        let modules = [
            m("scsi_mod", &[]),
            m("libata", &["scsi_mod"]),
            m("ata_piix", &["libata"]),
            m("virtio_ring", &[]),
            m("virtio", &["virtio_ring"]),
            m("virtio_blk", &["virtio"]),
        ];
        let boot = needed_by(["virtio_blk", "absent"], &modules);
        assert_eq!(
            boot.into_iter().collect::<Vec<_>>(),
            ["virtio", "virtio_blk", "virtio_ring"]
        );
        assert_eq!(needed_by(["ata-piix"], &modules).len(), 3);
    }
}
