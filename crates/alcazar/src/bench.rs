//! `alcazar bench`: guest instructions per second on the kit's benchmark
//! guests. The emu engine counts retired instructions; the kvm engine
//! cannot, so it reports times only. `scripts/bench.sh` runs this next to
//! QEMU TCG on the same images and records the ratios in
//! `docs/benchmarks.md`.

use std::time::{Duration, Instant};

use alcazar_vmm::config::{self, ConsoleTarget, VmConfig};
use alcazar_vmm::Vm;

/// Flags of `alcazar bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Engine to measure: emu (default) or kvm.
    #[arg(long, default_value = "emu")]
    engine: String,
    /// Benchmark programs to run (default: every bench-* kit program).
    #[arg(long = "program")]
    programs: Vec<String>,
    /// Runs per program; the median is reported.
    #[arg(long, default_value_t = 1)]
    runs: u32,
}

struct Sample {
    instructions: u64,
    elapsed: Duration,
}

fn run_once(program: &str, engine: config::EngineChoice) -> Result<Sample, String> {
    let config = VmConfig {
        name: program.into(),
        memory: 64 << 20,
        cpus: 1,
        engine,
        serial: ConsoleTarget::None,
        ..VmConfig::new(crate::kit::boot_source("bench", program).map_err(|e| e.to_string())?)
    };
    let expected = alcazar_kit::build(program)
        .ok_or_else(|| format!("{program}: no such kit program"))?
        .map_err(|e| format!("{program}: {e}"))?
        .expect
        .status;
    let vm = Vm::create(&config).map_err(|e| e.to_string())?;
    let machine = vm.machine().clone();
    let start = Instant::now();
    let reason = vm.run().map_err(|e| e.to_string())?;
    let elapsed = start.elapsed();
    if reason.exit_status() != expected {
        return Err(format!(
            "{program}: {reason} (expected exit status {expected})"
        ));
    }
    let instructions = machine.stats.iter().map(|s| s.instructions()).sum();
    Ok(Sample {
        instructions,
        elapsed,
    })
}

/// Runs the benchmarks; returns the exit status.
pub fn run(args: BenchArgs) -> u8 {
    let engine = match config::parse_engine("--engine", &args.engine) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("alcazar: config error: {e}");
            return 2;
        }
    };
    let programs: Vec<String> = if args.programs.is_empty() {
        alcazar_kit::names()
            .into_iter()
            .filter(|n| n.starts_with("bench-"))
            .map(String::from)
            .collect()
    } else {
        args.programs.clone()
    };
    println!(
        "{:<14} {:>14} {:>10} {:>10}",
        "program", "instructions", "seconds", "MIPS"
    );
    let mut failed = false;
    for program in &programs {
        let mut samples = Vec::new();
        for _ in 0..args.runs.max(1) {
            match run_once(program, engine) {
                Ok(s) => samples.push(s),
                Err(e) => {
                    eprintln!("alcazar: bench {e}");
                    failed = true;
                    break;
                }
            }
        }
        if samples.is_empty() {
            continue;
        }
        samples.sort_by_key(|s| s.elapsed);
        let median = &samples[samples.len() / 2];
        let secs = median.elapsed.as_secs_f64();
        let mips = if median.instructions > 0 {
            format!("{:.1}", median.instructions as f64 / secs / 1e6)
        } else {
            "n/a".into()
        };
        println!(
            "{program:<14} {:>14} {secs:>10.3} {mips:>10}",
            median.instructions
        );
    }
    u8::from(failed)
}
