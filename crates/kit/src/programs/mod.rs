//! The program registry. Each submodule builds one program.

pub(crate) mod apic_timer;
pub(crate) mod bench;
pub(crate) mod demo;
pub(crate) mod fault_pf;
pub(crate) mod faults;
pub(crate) mod hostile_virtio;
pub(crate) mod interrupts;
pub(crate) mod irq_storm;
pub(crate) mod isa_irq;
pub(crate) mod long;
pub(crate) mod protected;
pub(crate) mod real;
pub(crate) mod register_storm;
pub(crate) mod smp;
pub(crate) mod smp_sipi;
pub(crate) mod sweep;
pub(crate) mod syscall;
pub(crate) mod ticker;
pub(crate) mod virtio_rng;

use crate::image::{CodePart, Image};
use crate::{Expect, FlatMode, KitError, KitProgram};

/// A built program plus where its code parts are (for the decode tests).
pub(crate) struct Built {
    pub(crate) program: KitProgram,
    /// Only the tests look at the parts; the public API hands out bytes.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) parts: Vec<CodePart>,
}

/// Static facts about a program, shared by every build of it.
pub(crate) struct Info {
    pub(crate) name: &'static str,
    pub(crate) description: &'static str,
    pub(crate) mode: FlatMode,
}

/// One registry row: a name and the function that builds it.
pub(crate) struct Entry {
    pub(crate) name: &'static str,
    build: fn() -> Result<Built, KitError>,
}

impl Entry {
    /// Assembles the program.
    pub(crate) fn build(&self) -> Result<Built, KitError> {
        (self.build)()
    }
}

/// Every program, in the order [`crate::names`] lists them.
pub(crate) const REGISTRY: &[Entry] = &[
    Entry {
        name: real::INFO.name,
        build: real::build,
    },
    Entry {
        name: protected::INFO.name,
        build: protected::build,
    },
    Entry {
        name: long::INFO.name,
        build: long::build,
    },
    Entry {
        name: demo::INFO.name,
        build: demo::build,
    },
    Entry {
        name: sweep::INFO.name,
        build: sweep::build,
    },
    Entry {
        name: smp::INFO.name,
        build: smp::build,
    },
    Entry {
        name: fault_pf::INFO.name,
        build: fault_pf::build,
    },
    Entry {
        name: faults::GP.name,
        build: faults::build_gp,
    },
    Entry {
        name: faults::UD.name,
        build: faults::build_ud,
    },
    Entry {
        name: faults::DE.name,
        build: faults::build_de,
    },
    Entry {
        name: interrupts::LONG.name,
        build: interrupts::build_long,
    },
    Entry {
        name: interrupts::REAL.name,
        build: interrupts::build_real,
    },
    Entry {
        name: syscall::INFO.name,
        build: syscall::build,
    },
    Entry {
        name: apic_timer::INFO.name,
        build: apic_timer::build,
    },
    Entry {
        name: smp_sipi::INFO.name,
        build: smp_sipi::build,
    },
    Entry {
        name: isa_irq::INFO.name,
        build: isa_irq::build,
    },
    Entry {
        name: virtio_rng::INFO.name,
        build: virtio_rng::build,
    },
    Entry {
        name: hostile_virtio::RNG.info.name,
        build: hostile_virtio::build_rng,
    },
    Entry {
        name: hostile_virtio::BLK.info.name,
        build: hostile_virtio::build_blk,
    },
    Entry {
        name: irq_storm::INFO.name,
        build: irq_storm::build,
    },
    Entry {
        name: register_storm::FULL.name,
        build: register_storm::build_full,
    },
    Entry {
        name: register_storm::QUICK.name,
        build: register_storm::build_quick,
    },
    Entry {
        name: ticker::INFO.name,
        build: ticker::build,
    },
    Entry {
        name: ticker::SPINNER.name,
        build: ticker::build_spinner,
    },
    Entry {
        name: bench::SIEVE.name,
        build: bench::build_sieve,
    },
    Entry {
        name: bench::MEMCPY.name,
        build: bench::build_memcpy,
    },
    Entry {
        name: bench::INTERP.name,
        build: bench::build_interp,
    },
];

/// The registry row called `name`.
pub(crate) fn find(name: &str) -> Option<&'static Entry> {
    REGISTRY.iter().find(|entry| entry.name == name)
}

/// Wraps a finished image into a [`Built`].
pub(crate) fn finish(image: Image, info: &Info, expect: Expect) -> Built {
    let load_address = image.linear(0);
    let (code, parts) = image.finish();
    let program = KitProgram {
        name: info.name,
        description: info.description,
        mode: info.mode,
        load_address,
        code,
        expect,
        aps_wait_for_sipi: false,
        devices: Vec::new(),
    };
    Built { program, parts }
}

#[cfg(test)]
mod tests;
