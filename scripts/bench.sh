#!/usr/bin/env bash
# Measures the emu engine on the kit's benchmark guests and compares it with
# QEMU TCG running the very same images (they are multiboot kernels).
#
#   scripts/bench.sh [RUNS]      (default 5 runs per measurement; medians)
#
# Prints a Markdown table for docs/benchmarks.md. Installs QEMU from apt if
# it is missing. QEMU's time includes its start-up (firmware, multiboot
# load: about 0.15 s here); Alcazar's is the guest run alone, reported by
# `alcazar bench`. The instruction counts are the emu engine's (both run the
# same deterministic guest code).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-5}

if ! command -v qemu-system-x86_64 >/dev/null 2>&1; then
    echo "installing qemu-system-x86 from apt..." >&2
    apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q qemu-system-x86 >&2
fi
command -v bc >/dev/null 2>&1 || { apt-get update -q >&2 && apt-get install -y -q bc >&2; }
cargo build --release -q -p alcazar
ALCAZAR=target/release/alcazar
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

qemu_time() {
    local image=$1
    for _ in $(seq "$RUNS"); do
        local start end
        start=$(date +%s.%N)
        qemu-system-x86_64 -accel tcg -M pc -m 64 -display none -serial none -no-reboot \
            -device isa-debug-exit,iobase=0xf4,iosize=4 -kernel "$image" || true
        end=$(date +%s.%N)
        echo "$end - $start" | bc -l
    done | median
}

echo "| guest | instructions | Alcazar emu (s) | emu MIPS | QEMU TCG (s) | QEMU MIPS | emu / QEMU time |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for program in bench-sieve bench-memcpy bench-interp; do
    "$ALCAZAR" kit "$program" -o "$WORK/$program.bin" 2>/dev/null
    read -r _ insns secs mips < <("$ALCAZAR" bench --engine emu --program "$program" --runs "$RUNS" | tail -1)
    qsecs=$(qemu_time "$WORK/$program.bin")
    qmips=$(echo "$insns / $qsecs / 1000000" | bc -l)
    ratio=$(echo "$secs / $qsecs" | bc -l)
    printf '| %s | %s | %.3f | %s | %.3f | %.0f | %.2f |\n' "$program" "$insns" "$secs" "$mips" "$qsecs" "$qmips" "$ratio"
done
