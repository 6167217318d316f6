//! The tiny-guest kit in the `alcazar` command (the `kit` feature, on by
//! default): `run --kit PROGRAM`, `[boot] kind = "kit"` in a config,
//! `alcazar kit` and the benchmarks. The library knows nothing of the kit:
//! a program is assembled here and handed to it as a flat image.

use std::path::{Path, PathBuf};

use alcazar_vmm::config::{BootKinds, BootSource, DeviceSpec, FlatImage, Origin};
use alcazar_vmm::ConfigError;
use toml::Table;

/// Kit program `program` as a boot source; `key` names where the name was
/// given (`--kit`, `boot.program`).
pub fn boot_source(key: &str, program: &str) -> Result<BootSource, ConfigError> {
    let unknown = || {
        ConfigError::new(
            key,
            format!("\"{program}\""),
            "no such kit program",
            format!("choose one of: {}", alcazar_kit::names().join(", ")),
        )
    };
    let kit = alcazar_kit::build(program)
        .ok_or_else(unknown)?
        .map_err(|e| {
            ConfigError::new(
                key,
                format!("\"{program}\""),
                format!("the program does not assemble ({e})"),
                "report this bug; choose another program meanwhile",
            )
        })?;
    Ok(BootSource::Flat {
        image: FlatImage::Bytes(kit.code),
        mode: kit.mode,
        load_address: kit.load_address,
        aps_wait_for_sipi: kit.aps_wait_for_sipi,
    })
}

/// The device entries kit `program` needs beyond the standard PC devices
/// (say, the virtio device a driver program drives).
pub fn devices(program: &str) -> Result<Vec<DeviceSpec>, ConfigError> {
    let Some(Ok(built)) = alcazar_kit::build(program) else {
        return Ok(Vec::new());
    };
    built
        .devices
        .iter()
        .map(|class| DeviceSpec::with_defaults(Origin::Flag("--kit".into()), class, class))
        .collect()
}

/// `[boot] kind = "kit"` with `program = "NAME"` (default `demo`).
fn parse_boot(t: &Table, _base: &Path) -> Result<BootSource, ConfigError> {
    if let Some(k) = t
        .keys()
        .find(|k| !["kind", "program"].contains(&k.as_str()))
    {
        return Err(ConfigError::new(
            format!("boot.{k}"),
            alcazar_vmm::config::show(&t[k.as_str()]),
            "unknown key",
            "the keys of a kit boot are: kind, program",
        ));
    }
    let program = match t.get("program") {
        None => "demo",
        Some(toml::Value::String(s)) => s.as_str(),
        Some(v) => {
            return Err(ConfigError::new(
                "boot.program",
                alcazar_vmm::config::show(v),
                "must be a string",
                "quote it: program = \"demo\"",
            ))
        }
    };
    boot_source("boot.program", program)
}

/// The boot kinds a config read by `alcazar` may name: the library's and
/// `kit`; a config without `[boot]` runs the kit's `demo`.
pub fn boot_kinds() -> BootKinds {
    BootKinds::default()
        .with("kit", "a built-in kit program", parse_boot)
        .with_default(|| boot_source("boot.program", "demo"))
}

#[derive(Debug, clap::Args)]
pub struct KitArgs {
    /// A program to write out (with --output); omit to list them all.
    name: Option<String>,
    /// Where to write the program's image (a flat binary; the bench-*
    /// programs are also multiboot kernels, e.g. for `qemu -kernel`).
    #[arg(short, long, requires = "name")]
    output: Option<PathBuf>,
}

/// `alcazar kit [NAME [-o FILE]]`.
pub fn command(args: KitArgs) -> u8 {
    let Some(name) = args.name else {
        list_kit();
        return 0;
    };
    let program = match alcazar_kit::build(&name) {
        Some(Ok(p)) => p,
        Some(Err(e)) => {
            eprintln!("alcazar: kit program {name} does not assemble: {e}");
            return 1;
        }
        None => {
            eprintln!("alcazar: kit {name}: no such program; run `alcazar kit` for the list");
            return 2;
        }
    };
    match args.output {
        Some(path) => match std::fs::write(&path, &program.code) {
            Ok(()) => {
                eprintln!(
                    "alcazar: wrote {} ({} bytes, load at {:#x}, {:?} mode)",
                    path.display(),
                    program.code.len(),
                    program.load_address,
                    program.mode
                );
                0
            }
            Err(e) => {
                eprintln!("alcazar: cannot write {}: {e}", path.display());
                1
            }
        },
        None => {
            println!(
                "{}: {:?} mode, load at {:#x}, {} bytes\n  {}",
                program.name,
                program.mode,
                program.load_address,
                program.code.len(),
                program.description
            );
            0
        }
    }
}

fn list_kit() {
    for name in alcazar_kit::names() {
        match alcazar_kit::build(name) {
            Some(Ok(p)) => println!("{:<18} {:?}  {}", p.name, p.mode, p.description),
            _ => println!("{name:<18} (does not assemble)"),
        }
    }
}
