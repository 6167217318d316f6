#!/usr/bin/env bash
# Boot time and memory: from process start to the guest's ready marker
# (`ALCAZAR-READY`, printed by the initramfs's /init), and the peak RSS at
# that moment, for the same Debian kernel and busybox initramfs on
#   - Alcazar's emu engine (`alcazar run --exec true`),
#   - QEMU TCG, `-M microvm` and `-M pc` (installed from apt if missing).
#
#   scripts/bench-boot.sh [RUNS] [FLAVOR]   (default 5 runs, cloud kernel)
#
# Prints a Markdown table (medians) for docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-5}
FLAVOR=${2:-cloud}
TIMEOUT=300
MARKER=ALCAZAR-READY

if ! command -v qemu-system-x86_64 >/dev/null 2>&1; then
    echo "installing qemu-system-x86 from apt..." >&2
    apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q qemu-system-x86 >&2
fi
cargo build --release -q -p alcazar
ALCAZAR=target/release/alcazar
"$ALCAZAR" guest fetch --flavor "$FLAVOR" >&2
KERNEL=$("$ALCAZAR" guest path --flavor "$FLAVOR" | sed -n 1p)
INITRD=$("$ALCAZAR" guest path --flavor "$FLAVOR" | sed -n 2p)
# The default guest's command line (see `alcazar run --help`), for all three.
APPEND="console=ttyS0 quiet cryptomgr.notests"
KHZ=$(awk '/cpu MHz/ {printf "%d", $4 * 1000; exit}' /proc/cpuinfo)

# median and measure.
. scripts/boot_measure.sh

echo "| VMM | seconds to marker (median of $RUNS) | peak RSS (MiB) |"
echo "|---|---:|---:|"
read -r s r < <(measure "$ALCAZAR" run --engine emu --memory 256M --guest "$FLAVOR" --exec true)
echo "| Alcazar emu | $s | $r |"
# microvm has no PIT-calibrated TSC reference: tell the kernel the TSC rate
# (without it calibration may hang; see DESIGN.md).
read -r s r < <(measure qemu-system-x86_64 -accel tcg -M microvm -m 256M -nodefaults -no-user-config \
    -nographic -serial stdio -kernel "$KERNEL" -initrd "$INITRD" -append "$APPEND tsc_early_khz=$KHZ")
echo "| QEMU TCG -M microvm | $s | $r |"
read -r s r < <(measure qemu-system-x86_64 -accel tcg -M pc -m 256M -nodefaults -no-user-config \
    -nographic -serial stdio -kernel "$KERNEL" -initrd "$INITRD" -append "$APPEND")
echo "| QEMU TCG -M pc | $s | $r |"
