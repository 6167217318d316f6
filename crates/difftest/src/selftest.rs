//! Checks of the harness itself: KVM against a second KVM VM must agree
//! on everything (undefined flags included, same CPU), and a deliberately
//! wrong subject must be caught and shrunk to the instruction that
//! triggers it.

use iced_x86::Mnemonic;

use crate::emu_runner::EmuRun;
use crate::gen::{Case, Class, Generator};
use crate::harness::{self, Config, Harness, Subject, Summary};
use crate::host::HostFacts;
use crate::kvm_runner::KvmRunner;
use crate::state::{InitState, Program};
use crate::Error;

/// A subject that is wrong on purpose: after any program containing
/// `trigger`, bit 0 of RBX is flipped.
#[derive(Debug)]
pub struct Mutant<S> {
    /// The engine underneath.
    pub inner: S,
    /// The mnemonic that triggers the bug.
    pub trigger: Mnemonic,
}

impl<S: Subject> Subject for Mutant<S> {
    fn run(&mut self, prog: &Program, init: &InitState) -> Result<EmuRun, Error> {
        let mut r = self.inner.run(prog, init)?;
        if prog.insns.iter().any(|i| i.mnemonic() == self.trigger) {
            r.state.gpr[crate::gen::regs::RBX] ^= 1;
        }
        Ok(r)
    }
}

/// Runs `count` cases of every class on two KVM VMs.
pub fn kvm_determinism(seed: u64, count: u64) -> Result<Summary, Error> {
    let mut oracle = KvmRunner::new()?;
    let host = HostFacts::probe(&mut oracle)?;
    let mut h = Harness {
        oracle,
        subject: KvmRunner::new()?,
        host,
    };
    let cfg = Config {
        seed,
        count,
        ..Config::default()
    };
    harness::run(&mut h, &Generator::new(cfg.max_len), &cfg, |_| {}, || false)
}

/// Runs ALU cases against a [`Mutant`] that breaks ADC until it is
/// caught; returns the shrunk case and its report.
pub fn injected_mismatch(seed: u64) -> Result<(Case, String), Error> {
    let mut oracle = KvmRunner::new()?;
    let host = HostFacts::probe(&mut oracle)?;
    let mut h = Harness {
        oracle,
        host,
        subject: Mutant {
            inner: KvmRunner::new()?,
            trigger: Mnemonic::Adc,
        },
    };
    let cfg = Config {
        seed,
        count: 2000,
        classes: vec![Class::Alu],
        max_shrinks: 1,
        ..Config::default()
    };
    let sum = harness::run(&mut h, &Generator::new(cfg.max_len), &cfg, |_| {}, || false)?;
    sum.findings
        .into_iter()
        .find_map(|f| f.shrunk)
        .ok_or_else(|| Error::Layout("the injected mismatch was not caught".to_string()))
}
