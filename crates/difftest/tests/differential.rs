//! The differential test: 100,000+ random user-mode sequences across every
//! instruction class, run under KVM (the oracle) and on the emu engine;
//! any difference fails the test and prints the shrunk repro of each kind.
//!
//! Without `/dev/kvm` the tests print `SKIPPED: <reason>` and pass, unless
//! `ALCAZAR_REQUIRE_KVM=1`.

use alcazar_difftest::gen::Generator;
use alcazar_difftest::harness::{self, Config, Harness, Summary};
use alcazar_difftest::kvm_runner::KvmRunner;
use alcazar_difftest::{selftest, Class, Error};

/// Fixed seed: a failure here is reproduced with
/// `alcazar-difftest --seed 0x5eed --case N`.
const SEED: u64 = 0x5eed;
/// Cases in the main test.
const COUNT: u64 = 110_000;

/// Whether KVM can be used; prints the skip line if not.
fn kvm_or_skip() -> bool {
    match KvmRunner::new() {
        Ok(_) => true,
        Err(Error::KvmUnavailable(why)) => {
            if std::env::var("ALCAZAR_REQUIRE_KVM").as_deref() == Ok("1") {
                panic!("ALCAZAR_REQUIRE_KVM=1 but KVM is unavailable: {why}");
            }
            println!("SKIPPED: {why}");
            false
        }
        Err(e) => panic!("KVM is present but unusable: {e}"),
    }
}

fn summary_text(sum: &Summary) -> String {
    let mut out = String::new();
    for (class, s) in &sum.classes {
        out.push_str(&format!(
            "{:<8} runs {:>6} pass {:>6} mismatch {:>5} indeterminate {:>4} kvm-exceptions {:>5} quirks {:>3}\n",
            class.name(),
            s.runs,
            s.passed,
            s.mismatched,
            s.indeterminate,
            s.exceptions,
            s.quirks
        ));
    }
    for f in &sum.findings {
        out.push_str(&format!(
            "\n=== {} — {} case(s); first: --seed {SEED:#x} --case {} (class {})\n",
            f.signature, f.count, f.index, f.class
        ));
        if let Some((_, text)) = &f.shrunk {
            out.push_str(text);
        }
    }
    out
}

/// Runs `count` random cases of `classes` under kvm and emu, prints the
/// summary, and asserts that no case differed.
fn run_against_kvm(classes: &[Class], count: u64) -> harness::Summary {
    let mut h = Harness::kvm_vs_emu().expect("harness");
    let cfg = Config {
        seed: SEED,
        count,
        classes: classes.to_vec(),
        max_shrinks: 24,
        shrink_budget: 1500,
        ..Config::default()
    };
    let gen = Generator::new(cfg.max_len);
    let sum = harness::run(&mut h, &gen, &cfg, |_| {}, || false).expect("harness run");
    let text = summary_text(&sum);
    println!(
        "{}\n{} cases in {:.1} s\n{text}",
        h.host.describe(),
        sum.runs,
        sum.elapsed.as_secs_f64()
    );
    assert_eq!(
        sum.mismatches(),
        0,
        "emu differs from KVM in {} of {} cases; see the repros above",
        sum.mismatches(),
        sum.runs
    );
    sum
}

#[test]
fn emu_matches_kvm_on_random_user_mode_sequences() {
    if !kvm_or_skip() {
        return;
    }
    let sum = run_against_kvm(&Class::ALL, COUNT);
    // Every class must really have been exercised.
    for class in Class::ALL {
        let s = sum.classes.get(&class).copied().unwrap_or_default();
        assert!(
            s.runs >= COUNT / 12,
            "class {class} ran only {} cases",
            s.runs
        );
        assert!(
            s.passed + s.mismatched >= s.runs * 9 / 10,
            "class {class}: too many indeterminate cases ({})",
            s.indeterminate
        );
    }
}

/// Cases per class with the translator as the subject.
const JIT_COUNT_PER_CLASS: u64 = 5000;

/// The same random user-mode sequences, every class, with the emu
/// engine's translator (tier 1) as the subject: every block translated on
/// its first run, exceptions delivered through the IDT as on the CPU.
#[test]
fn the_translator_matches_kvm_on_random_user_mode_sequences() {
    if !kvm_or_skip() {
        return;
    }
    let Some(mut h) = Harness::kvm_vs_jit().expect("harness") else {
        println!("SKIPPED: this host cannot run translated code");
        return;
    };
    let extensions: &[Class] = if host_has_extensions() {
        &Class::EXTENSIONS
    } else {
        &[]
    };
    let classes: Vec<Class> = Class::ALL
        .iter()
        .chain(Class::SIMD.iter())
        .chain(extensions)
        .copied()
        .collect();
    let cfg = Config {
        seed: SEED,
        count: JIT_COUNT_PER_CLASS * classes.len() as u64,
        classes: classes.clone(),
        max_shrinks: 24,
        shrink_budget: 1500,
        ..Config::default()
    };
    let gen = Generator::new(cfg.max_len);
    let sum = harness::run(&mut h, &gen, &cfg, |_| {}, || false).expect("harness run");
    let text = summary_text(&sum);
    println!(
        "{}\ntranslator: {} cases in {:.1} s\n{text}",
        h.host.describe(),
        sum.runs,
        sum.elapsed.as_secs_f64()
    );
    assert_eq!(
        sum.mismatches(),
        0,
        "the translator differs from KVM in {} of {} cases; see the repros above",
        sum.mismatches(),
        sum.runs
    );
    let (translated, retired) = h.subject.instructions();
    println!("instructions: {translated} of {retired} retired in translated code");
    assert!(
        translated * 2 >= retired,
        "the interpreter, not the translator, ran most instructions ({translated} of {retired} translated)"
    );
    for class in classes {
        let s = sum.classes.get(&class).copied().unwrap_or_default();
        assert!(
            s.runs >= JIT_COUNT_PER_CLASS / 2,
            "class {class} ran only {} cases",
            s.runs
        );
    }
}

/// Cases in the SSE test.
const SIMD_COUNT: u64 = 40_000;

#[test]
fn emu_matches_kvm_on_random_sse_sequences() {
    if !kvm_or_skip() {
        return;
    }
    let sum = run_against_kvm(&Class::SIMD, SIMD_COUNT);
    for class in Class::SIMD {
        let s = sum.classes.get(&class).copied().unwrap_or_default();
        assert!(
            s.runs >= SIMD_COUNT / (2 * Class::SIMD.len() as u64),
            "class {class} ran only {} cases",
            s.runs
        );
    }
}

/// Whether the host CPU, which runs the oracle's user code, has the
/// extensions of [`Class::EXTENSIONS`] (BMI1, BMI2, ADX; AES-NI,
/// PCLMULQDQ, SHA); prints the skip line if not.
fn host_has_extensions() -> bool {
    let has = std::arch::is_x86_feature_detected!("bmi1")
        && std::arch::is_x86_feature_detected!("bmi2")
        && std::arch::is_x86_feature_detected!("adx")
        && std::arch::is_x86_feature_detected!("aes")
        && std::arch::is_x86_feature_detected!("pclmulqdq")
        && std::arch::is_x86_feature_detected!("sha");
    if !has {
        println!("SKIPPED: the host CPU lacks BMI1, BMI2, ADX, AES-NI, PCLMULQDQ or SHA");
    }
    has
}

/// Cases in the extensions test (20,000 per class).
const EXTENSIONS_COUNT: u64 = 20_000 * Class::EXTENSIONS.len() as u64;

/// The extension classes: `bmi` (BMI1, BMI2, ADX) and `crypto` (AES-NI,
/// PCLMULQDQ, SHA).
#[test]
fn emu_matches_kvm_on_random_bmi_adx_and_crypto_sequences() {
    if !kvm_or_skip() || !host_has_extensions() {
        return;
    }
    let sum = run_against_kvm(&Class::EXTENSIONS, EXTENSIONS_COUNT);
    for class in Class::EXTENSIONS {
        let s = sum.classes.get(&class).copied().unwrap_or_default();
        assert!(
            s.runs >= EXTENSIONS_COUNT / Class::EXTENSIONS.len() as u64,
            "class {class} ran only {} cases",
            s.runs
        );
        assert!(
            s.passed + s.mismatched >= s.runs * 9 / 10,
            "class {class}: too many indeterminate cases ({})",
            s.indeterminate
        );
    }
}

#[test]
fn kvm_agrees_with_itself_on_everything() {
    if !kvm_or_skip() {
        return;
    }
    let sum = selftest::kvm_determinism(7, 3000).expect("kvm vs kvm");
    assert_eq!(sum.mismatches(), 0, "{}", summary_text(&sum));
}

#[test]
fn an_injected_bug_is_caught_and_shrunk() {
    if !kvm_or_skip() {
        return;
    }
    let (case, text) = selftest::injected_mismatch(3).expect("the mutant is caught");
    println!("{text}");
    assert!(case.items.len() <= 3, "not shrunk: {text}");
    assert!(
        case.items
            .iter()
            .any(|i| i.insn.mnemonic() == iced_x86::Mnemonic::Adc),
        "the shrunk case lost the trigger: {text}"
    );
}

#[test]
fn a_hung_guest_times_out_instead_of_hanging_the_harness() {
    if !kvm_or_skip() {
        return;
    }
    let mut k = KvmRunner::new().expect("kvm");
    // jmp $ (EB FE), then the final out.
    let prog = alcazar_difftest::state::Program::from_code(vec![0xeb, 0xfe, 0xe6, 0xf0]);
    let init = alcazar_difftest::state::InitState::zeroed();
    let r = k.run(&prog, &init).expect("run");
    assert_eq!(r.ending, alcazar_difftest::state::Ending::StepLimit);
    // The VM is still usable afterwards.
    let prog = alcazar_difftest::state::Program::from_code(vec![0x90, 0xe6, 0xf0]);
    let r = k.run(&prog, &init).expect("run");
    assert_eq!(r.ending, alcazar_difftest::state::Ending::Done);
}
