//! Drives cases through both engines: generate, run under KVM (the
//! oracle) and on the subject, compare, count per class, and shrink the
//! first mismatch of each kind.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::analysis::Tracker;
use crate::compare::{compare, quirk, Diff, Field, Masks, Quirk};
use crate::emu_runner::{EmuRun, EmuRunner};
use crate::gen::{assemble, Case, Class, Generator, Item};
use crate::host::HostFacts;
use crate::kvm_runner::KvmRunner;
use crate::state::{vector_name, Ending, FinalState, InitState, Program};
use crate::{report, shrink, Error};

/// An engine checked against the oracle.
pub trait Subject {
    /// Runs `prog` from `init`.
    fn run(&mut self, prog: &Program, init: &InitState) -> Result<EmuRun, Error>;
}

impl Subject for EmuRunner {
    fn run(&mut self, prog: &Program, init: &InitState) -> Result<EmuRun, Error> {
        EmuRunner::run(self, prog, init)
    }
}

impl Subject for crate::jit_runner::JitRunner {
    fn run(&mut self, prog: &Program, init: &InitState) -> Result<EmuRun, Error> {
        crate::jit_runner::JitRunner::run(self, prog, init)
    }
}

/// KVM as a subject (a second VM): KVM against itself must agree on
/// everything, undefined flags included.
impl Subject for KvmRunner {
    fn run(&mut self, prog: &Program, init: &InitState) -> Result<EmuRun, Error> {
        Ok(EmuRun {
            state: KvmRunner::run(self, prog, init)?,
            tracker: Tracker::new(),
        })
    }
}

/// The result of comparing one case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The engines agree.
    Pass,
    /// They differ.
    Mismatch(Vec<Diff>),
    /// The sequence read an undefined value; nothing to compare.
    Indeterminate(String),
}

/// One case, run on both engines.
#[derive(Clone, Debug)]
pub struct Checked {
    /// The assembled program.
    pub prog: Program,
    /// KVM's final state.
    pub kvm: FinalState,
    /// The subject's final state.
    pub emu: FinalState,
    /// What was compared.
    pub masks: Masks,
    /// A known oracle quirk that explained a difference in the endings.
    pub quirk: Option<Quirk>,
    /// The verdict.
    pub verdict: Verdict,
}

impl Checked {
    /// Whether the engines differ.
    pub fn mismatched(&self) -> bool {
        matches!(self.verdict, Verdict::Mismatch(_))
    }

    /// The mnemonic of the instruction at `rip`, lower case.
    fn mnemonic_at(&self, rip: u64) -> String {
        self.prog.insn_at(rip).map_or("?".to_string(), |i| {
            format!("{:?}", i.mnemonic()).to_lowercase()
        })
    }

    /// A short name for the kind of mismatch: the subject's exception and
    /// the instruction it came from, or the fields that differ.
    pub fn signature(&self, class: Class) -> String {
        let Verdict::Mismatch(diffs) = &self.verdict else {
            return String::new();
        };
        let is_ac = |e: &Ending| matches!(e, Ending::Exception { vector: 17, .. });
        let crashed = matches!(self.emu.ending, Ending::Panic | Ending::StepLimit);
        if !crashed
            && self.emu.ending != self.kvm.ending
            && (is_ac(&self.kvm.ending) || is_ac(&self.emu.ending))
        {
            return format!(
                "alignment check (#AC): kvm {}, emu {}",
                short_ending(&self.kvm.ending),
                short_ending(&self.emu.ending)
            );
        }
        match self.emu.ending {
            Ending::Panic => {
                let note = self.emu.note.as_deref().unwrap_or("");
                let first = note.lines().next().unwrap_or("");
                return format!("emu panic: {first}");
            }
            Ending::StepLimit => return "emu step limit".to_string(),
            Ending::Exception { vector, .. } if self.emu.ending != self.kvm.ending => {
                let at = self.mnemonic_at(self.emu.rip);
                return format!(
                    "emu {} at {at} (kvm: {})",
                    vector_name(vector),
                    short_ending(&self.kvm.ending)
                );
            }
            Ending::Done => {
                if let Ending::Exception { vector, .. } = self.kvm.ending {
                    let at = self.mnemonic_at(self.kvm.rip);
                    return format!("kvm {} at {at} (emu: done)", vector_name(vector));
                }
            }
            _ => {}
        }
        let mut kinds: Vec<&str> = diffs.iter().map(|d| field_kind(d.field)).collect();
        kinds.dedup();
        let kinds: std::collections::BTreeSet<&str> = kinds.into_iter().collect();
        let kinds: Vec<&str> = kinds.into_iter().collect();
        format!(
            "{class}: {} differ (kvm {}, emu {})",
            kinds.join("+"),
            short_ending(&self.kvm.ending),
            short_ending(&self.emu.ending)
        )
    }
}

fn short_ending(e: &Ending) -> String {
    match e {
        Ending::Done => "done".to_string(),
        Ending::Exception { vector, .. } => vector_name(*vector).to_string(),
        Ending::StepLimit => "step limit".to_string(),
        Ending::Panic => "panic".to_string(),
    }
}

/// The category of a field, for signatures.
pub fn field_kind(f: Field) -> &'static str {
    match f {
        Field::Ending => "exception",
        Field::Gpr(_) => "gpr",
        Field::Rip => "rip",
        Field::Rflags => "rflags",
        Field::Mem(_) => "memory",
        Field::Fpu(_) => "fpu",
    }
}

/// The oracle and the subject.
pub struct Harness<S: Subject> {
    /// KVM at CPL 3.
    pub oracle: KvmRunner,
    /// What is checked.
    pub subject: S,
    /// How this host's oracle behaves where the host decides.
    pub host: HostFacts,
}

impl<S: Subject> std::fmt::Debug for Harness<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Harness").finish_non_exhaustive()
    }
}

impl Harness<EmuRunner> {
    /// KVM against the emu engine.
    pub fn kvm_vs_emu() -> Result<Self, Error> {
        let mut oracle = KvmRunner::new()?;
        let host = HostFacts::probe(&mut oracle)?;
        let mut subject = EmuRunner::new()?;
        subject.set_alignment_checks(host.alignment_checks);
        Ok(Harness {
            oracle,
            subject,
            host,
        })
    }
}

impl Harness<crate::jit_runner::JitRunner> {
    /// KVM against the emu engine's translator; `None` where this host
    /// cannot run translated code.
    pub fn kvm_vs_jit() -> Result<Option<Self>, Error> {
        let mut oracle = KvmRunner::new()?;
        let host = HostFacts::probe(&mut oracle)?;
        let Some(mut subject) = crate::jit_runner::JitRunner::new()? else {
            return Ok(None);
        };
        subject.set_alignment_checks(host.alignment_checks);
        Ok(Some(Harness {
            oracle,
            subject,
            host,
        }))
    }
}

impl<S: Subject> Harness<S> {
    /// Assembles `items`, runs them from `init` on both engines, compares.
    pub fn check(&mut self, items: &[Item], init: &InitState) -> Result<Checked, Error> {
        let prog = assemble(items)?;
        let kvm = self.oracle.run(&prog, init)?;
        let run = self.subject.run(&prog, init)?;
        let masks = Masks::from_tracker(&run.tracker);
        let quirk = quirk(&kvm, &run.state, prog.insn_at(kvm.rip), &self.host);
        let verdict = if let Some(why) = run.tracker.indeterminate.clone() {
            // Still a mismatch if the subject crashed: that does not
            // depend on undefined values.
            let crashed = matches!(run.state.ending, Ending::Panic | Ending::StepLimit);
            if crashed {
                Verdict::Mismatch(compare(&kvm, &run.state, masks, quirk))
            } else {
                Verdict::Indeterminate(why)
            }
        } else {
            let diffs = compare(&kvm, &run.state, masks, quirk);
            if diffs.is_empty() {
                Verdict::Pass
            } else {
                Verdict::Mismatch(diffs)
            }
        };
        Ok(Checked {
            prog,
            kvm,
            emu: run.state,
            masks,
            quirk,
            verdict,
        })
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct Config {
    /// Base seed: case `i` is generated from (seed, i).
    pub seed: u64,
    /// Index of the first case.
    pub start: u64,
    /// Cases to run (`u64::MAX`: until stopped).
    pub count: u64,
    /// Classes, used round-robin.
    pub classes: Vec<Class>,
    /// Longest sequence, in templates.
    pub max_len: usize,
    /// Most mismatches to shrink in one run.
    pub max_shrinks: usize,
    /// Most candidate runs per shrink.
    pub shrink_budget: usize,
    /// Stop after this long (if set).
    pub time_limit: Option<Duration>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            seed: 1,
            start: 0,
            count: 10_000,
            classes: Class::ALL.to_vec(),
            max_len: 8,
            max_shrinks: 40,
            shrink_budget: 3000,
            time_limit: None,
        }
    }
}

/// Counts for one class.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClassStats {
    /// Cases run.
    pub runs: u64,
    /// Cases where the engines agreed.
    pub passed: u64,
    /// Cases where they differed.
    pub mismatched: u64,
    /// Cases discarded because they read an undefined value.
    pub indeterminate: u64,
    /// Cases that ended in an exception under KVM.
    pub exceptions: u64,
    /// Cases where a known oracle quirk explained a difference.
    pub quirks: u64,
}

/// One kind of mismatch, with its shrunk example.
#[derive(Clone, Debug)]
pub struct Finding {
    /// The class of the first case that showed it.
    pub class: Class,
    /// That case's index (regenerate it with the same seed).
    pub index: u64,
    /// The mismatch signature (before shrinking).
    pub signature: String,
    /// How many cases showed it.
    pub count: u64,
    /// The shrunk case and its report, if it was shrunk.
    pub shrunk: Option<(Case, String)>,
}

/// The outcome of a run.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    /// Per-class counts.
    pub classes: BTreeMap<Class, ClassStats>,
    /// Distinct mismatches, in order of discovery.
    pub findings: Vec<Finding>,
    /// Wall time.
    pub elapsed: Duration,
    /// Cases run.
    pub runs: u64,
}

impl Summary {
    /// Total mismatches.
    pub fn mismatches(&self) -> u64 {
        self.classes.values().map(|c| c.mismatched).sum()
    }
}

/// Runs `cfg.count` cases (or until `cfg.time_limit` or `stop()` says so);
/// `progress` is called every 1000 cases.
pub fn run<S: Subject>(
    h: &mut Harness<S>,
    gen: &Generator,
    cfg: &Config,
    mut progress: impl FnMut(&Summary),
    stop: impl Fn() -> bool,
) -> Result<Summary, Error> {
    if cfg.classes.is_empty() {
        return Err(Error::Usage("no instruction class to run".to_string()));
    }
    let start = Instant::now();
    let mut sum = Summary::default();
    let mut shrinks = 0usize;
    let mut index = cfg.start;
    let end = cfg.start.saturating_add(cfg.count);
    while index < end {
        if stop() || cfg.time_limit.is_some_and(|t| start.elapsed() >= t) {
            break;
        }
        let class = cfg.classes[(index % cfg.classes.len() as u64) as usize];
        let case = gen.case(cfg.seed, index, class);
        let checked = h.check(&case.items, &case.init)?;
        let stats = sum.classes.entry(class).or_default();
        stats.runs += 1;
        if matches!(checked.kvm.ending, Ending::Exception { .. }) {
            stats.exceptions += 1;
        }
        if checked.quirk.is_some() {
            stats.quirks += 1;
        }
        match &checked.verdict {
            Verdict::Pass => stats.passed += 1,
            Verdict::Indeterminate(_) => stats.indeterminate += 1,
            Verdict::Mismatch(_) => {
                stats.mismatched += 1;
                let sig = checked.signature(class);
                if let Some(f) = sum.findings.iter_mut().find(|f| f.signature == sig) {
                    f.count += 1;
                } else {
                    let shrunk = if shrinks < cfg.max_shrinks {
                        shrinks += 1;
                        let small = shrink::shrink(h, &case, &checked, cfg.shrink_budget)?;
                        let again = h.check(&small.items, &small.init)?;
                        let text = report::describe(&small, &again);
                        Some((small, text))
                    } else {
                        // Out of shrink budget: keep the unshrunk report.
                        let text = report::describe(&case, &checked);
                        Some((case.clone(), text))
                    };
                    sum.findings.push(Finding {
                        class,
                        index,
                        signature: sig,
                        count: 1,
                        shrunk,
                    });
                }
            }
        }
        index += 1;
        sum.runs = index - cfg.start;
        if sum.runs.is_multiple_of(1000) {
            sum.elapsed = start.elapsed();
            progress(&sum);
        }
    }
    sum.elapsed = start.elapsed();
    Ok(sum)
}
