#!/usr/bin/env bash
# Builds every cargo-fuzz target in fuzz/ and runs each for SECONDS
# (default 10), starting from the seeds in fuzz/corpus/<target>/.
#
#   scripts/fuzz.sh            # CI: 10 s per target
#   scripts/fuzz.sh 600        # a real session: 10 minutes per target
#   scripts/fuzz.sh 60 pci_config
#
# cargo-fuzz needs a nightly compiler (-Zsanitizer); with none installed,
# RUSTC_BOOTSTRAP=1 lets the stable compiler accept the flags.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${1:-10}"
shift || true

if ! command -v cargo-fuzz >/dev/null; then
    echo "fuzz.sh: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked --quiet
fi
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    fuzz=(cargo +nightly fuzz)
else
    export RUSTC_BOOTSTRAP=1
    fuzz=(cargo fuzz)
fi

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <("${fuzz[@]}" list)
fi
"${fuzz[@]}" build
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    # A scratch copy of the seeds: new inputs found in CI are not committed.
    work="$(mktemp -d)"
    cp -r "corpus/$t/." "$work/"
    echo "fuzz.sh: $t for ${seconds}s" >&2
    extra=()
    asan="${ASAN_OPTIONS:-}"
    case "$t" in
        # Builds one VM per process and keeps it for the process's life:
        # LeakSanitizer reports the VM's insides as leaked.
        api_request) extra=(-detect_leaks=0) asan="detect_leaks=0" ;;
        # Each input is bounded (a time budget, joined threads): an
        # input that runs for seconds hangs.
        emu_exec | virtio_devices) extra=(-timeout=10) ;;
    esac
    # The fuzzer's own status decides (under pipefail an `|| true` here
    # would hide a crash): read PIPESTATUS with errexit off.
    set +e
    ASAN_OPTIONS="$asan" "${fuzz[@]}" run "$t" "$work" -- -max_total_time="$seconds" -print_final_stats=1 "${extra[@]}" 2>&1 |
        grep -E '^(stat::number_of_executed_units|Done|==|SUMMARY)|panicked|ERROR'
    status=${PIPESTATUS[0]}
    set -e
    rm -rf "$work"
    if [ "$status" -ne 0 ]; then
        echo "fuzz.sh: $t failed (status $status); the crashing input is in fuzz/artifacts/$t" >&2
        exit 1
    fi
done
