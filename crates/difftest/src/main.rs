//! `alcazar-difftest`: runs random user-mode instruction sequences under
//! KVM and on the emu engine and reports every difference.
//!
//! ```text
//! alcazar-difftest [--seed N] [--start INDEX] [--count N] [--class NAME[,NAME..]|all] [--len N]
//!                  [--long] [--time SECONDS] [--case INDEX] [--max-shrinks N]
//!                  [--self-test] [--kvm-vs-kvm] [--jit] [--list-classes]
//! ```
//!
//! `--kvm-vs-kvm` runs the cases on two KVM VMs instead (a check of the
//! oracle's determinism: everything must match, undefined flags included).
//! `--jit` makes the emu engine's translator (tier 1) the subject instead
//! of its interpreter: every block is translated on its first run.
//!
//! ```text
//! ```
//!
//! Exit status: 0 when the engines agree, 1 on a mismatch, 2 when the
//! harness cannot run (no `/dev/kvm`, bad arguments).

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use alcazar_difftest::gen::Generator;
use alcazar_difftest::harness::{self, Config, Harness, Subject, Summary};
use alcazar_difftest::host::HostFacts;
use alcazar_difftest::kvm_runner::KvmRunner;
use alcazar_difftest::{report, selftest, Class, Error};

/// Set by SIGINT: finish the current case and print the summary.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// What the command line asks for.
struct Args {
    cfg: Config,
    case: Option<u64>,
    self_test: bool,
    kvm_vs_kvm: bool,
    jit: bool,
    long: bool,
}

const USAGE: &str = "usage: alcazar-difftest [--seed N] [--start INDEX] [--count N] [--class NAME[,NAME..]|all] \
[--len N] [--long] [--time SECONDS] [--case INDEX] [--max-shrinks N] [--self-test] [--kvm-vs-kvm] [--jit] \
[--list-classes]";

fn number(v: Option<String>, name: &str) -> Result<u64, Error> {
    let v = v.ok_or_else(|| Error::Usage(format!("{name} needs a value")))?;
    let parsed = match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => v.parse(),
    };
    parsed.map_err(|_| Error::Usage(format!("{name}: not a number: {v}")))
}

fn parse() -> Result<Option<Args>, Error> {
    let mut a = Args {
        cfg: Config::default(),
        case: None,
        self_test: false,
        kvm_vs_kvm: false,
        jit: false,
        long: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--seed" => a.cfg.seed = number(it.next(), "--seed")?,
            "--count" => a.cfg.count = number(it.next(), "--count")?,
            "--start" => a.cfg.start = number(it.next(), "--start")?,
            "--len" => a.cfg.max_len = number(it.next(), "--len")?.clamp(1, 64) as usize,
            "--max-shrinks" => a.cfg.max_shrinks = number(it.next(), "--max-shrinks")? as usize,
            "--time" => {
                a.cfg.time_limit = Some(Duration::from_secs(number(it.next(), "--time")?));
            }
            "--case" => a.case = Some(number(it.next(), "--case")?),
            "--long" => a.long = true,
            "--self-test" => a.self_test = true,
            "--kvm-vs-kvm" => a.kvm_vs_kvm = true,
            "--jit" => a.jit = true,
            "--class" => {
                let v = it
                    .next()
                    .ok_or_else(|| Error::Usage("--class needs a value".into()))?;
                a.cfg.classes = if v == "all" {
                    Class::ALL
                        .into_iter()
                        .chain(Class::SIMD)
                        .chain(Class::EXTENSIONS)
                        .collect()
                } else {
                    v.split(',')
                        .map(|n| {
                            Class::from_name(n)
                                .ok_or_else(|| Error::Usage(format!("unknown class {n}")))
                        })
                        .collect::<Result<_, _>>()?
                };
            }
            "--list-classes" => {
                for c in Class::every() {
                    println!("{c}");
                }
                return Ok(None);
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(None);
            }
            other => return Err(Error::Usage(format!("unknown argument {other}\n{USAGE}"))),
        }
    }
    if a.long {
        a.cfg.count = u64::MAX;
    }
    Ok(Some(a))
}

fn table(sum: &Summary) -> String {
    let mut out = format!(
        "{:<9}{:>10}{:>10}{:>10}{:>8}{:>9}{:>8}  verdict\n",
        "class", "runs", "pass", "mismatch", "indet", "kvm-exc", "quirks"
    );
    for (class, s) in &sum.classes {
        let verdict = if s.mismatched == 0 { "PASS" } else { "FAIL" };
        out.push_str(&format!(
            "{:<9}{:>10}{:>10}{:>10}{:>8}{:>9}{:>8}  {verdict}\n",
            class.name(),
            s.runs,
            s.passed,
            s.mismatched,
            s.indeterminate,
            s.exceptions,
            s.quirks
        ));
    }
    out
}

fn print_summary(sum: &Summary, seed: u64) {
    println!();
    print!("{}", table(sum));
    let secs = sum.elapsed.as_secs_f64();
    println!(
        "{} cases in {secs:.1} s ({:.0} µs/case), {} mismatches, {} distinct",
        sum.runs,
        if sum.runs > 0 {
            secs * 1e6 / sum.runs as f64
        } else {
            0.0
        },
        sum.mismatches(),
        sum.findings.len()
    );
    for (n, f) in sum.findings.iter().enumerate() {
        println!();
        println!(
            "=== mismatch #{}: {} — {} case(s); first: --seed {seed} --case {} (class {})",
            n + 1,
            f.signature,
            f.count,
            f.index,
            f.class
        );
        if let Some((_, text)) = &f.shrunk {
            print!("{text}");
        }
    }
}

fn run_one(args: &Args, index: u64) -> Result<bool, Error> {
    let mut h = Harness::kvm_vs_emu()?;
    let gen = Generator::new(args.cfg.max_len);
    let n = args.cfg.classes.len() as u64;
    let class = *args
        .cfg
        .classes
        .get((index % n.max(1)) as usize)
        .ok_or_else(|| Error::Usage("no instruction class to run".to_string()))?;
    let case = gen.case(args.cfg.seed, index, class);
    let checked = h.check(&case.items, &case.init)?;
    println!("case {index} (seed {}):", args.cfg.seed);
    print!("{}", report::describe(&case, &checked));
    if checked.mismatched() {
        let small =
            alcazar_difftest::shrink::shrink(&mut h, &case, &checked, args.cfg.shrink_budget)?;
        let again = h.check(&small.items, &small.init)?;
        println!("\nshrunk:");
        print!("{}", report::describe(&small, &again));
    }
    Ok(checked.mismatched())
}

fn self_test() -> Result<bool, Error> {
    let det = selftest::kvm_determinism(1, 5000)?;
    print!("kvm vs kvm:\n{}", table(&det));
    let (case, text) = selftest::injected_mismatch(1)?;
    println!("injected ADC bug, shrunk to:\n{text}");
    let ok = det.mismatches() == 0
        && case.items.len() <= 3
        && case
            .items
            .iter()
            .any(|i| i.insn.mnemonic() == iced_x86::Mnemonic::Adc);
    println!("self-test {}", if ok { "passed" } else { "FAILED" });
    Ok(!ok)
}

/// Runs the configured batch and prints the summary; true on a mismatch.
fn batch<S: Subject>(
    h: &mut Harness<S>,
    args: &Args,
    stop: impl Fn() -> bool,
) -> Result<bool, Error> {
    let cfg = &args.cfg;
    let gen = Generator::new(cfg.max_len);
    let long = args.long;
    let sum = harness::run(
        h,
        &gen,
        cfg,
        |s| {
            if long && s.runs % 10_000 == 0 {
                println!("{} cases, {} mismatches", s.runs, s.mismatches());
            }
        },
        stop,
    )?;
    print_summary(&sum, cfg.seed);
    Ok(sum.mismatches() > 0)
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(Some(a)) => a,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let result = if args.self_test {
        self_test()
    } else if let Some(i) = args.case {
        run_one(&args, i)
    } else {
        // SAFETY: installs a handler that only stores to an atomic, which is
        // async-signal-safe; `on_sigint` has the signature signal(2) expects.
        unsafe {
            libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t);
        }
        // Engine panics are caught and reported as mismatches; keep their
        // default messages off the terminal.
        std::panic::set_hook(Box::new(|_| {}));
        let cfg = &args.cfg;
        println!(
            "alcazar-difftest: seed {}, {} cases, classes {}, up to {} templates",
            cfg.seed,
            if args.long {
                "unlimited".to_string()
            } else {
                cfg.count.to_string()
            },
            cfg.classes
                .iter()
                .map(|c| c.name())
                .collect::<Vec<_>>()
                .join(","),
            cfg.max_len
        );
        let stop = || STOP.load(Ordering::Relaxed);
        if args.kvm_vs_kvm {
            KvmRunner::new().and_then(|mut oracle| {
                let host = HostFacts::probe(&mut oracle)?;
                let mut h = Harness {
                    oracle,
                    subject: KvmRunner::new()?,
                    host,
                };
                batch(&mut h, &args, stop)
            })
        } else if args.jit {
            Harness::kvm_vs_jit().and_then(|h| {
                let mut h =
                    h.ok_or_else(|| Error::Usage("this host cannot run translated code".into()))?;
                eprintln!("{}", h.host.describe());
                batch(&mut h, &args, stop)
            })
        } else {
            Harness::kvm_vs_emu().and_then(|mut h| {
                eprintln!("{}", h.host.describe());
                batch(&mut h, &args, stop)
            })
        }
    };
    match result {
        Ok(false) => ExitCode::SUCCESS,
        Ok(true) => ExitCode::from(1),
        Err(e) => {
            eprintln!("alcazar-difftest: {e}");
            ExitCode::from(2)
        }
    }
}
