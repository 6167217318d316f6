#!/usr/bin/env bash
# virtio-blk sequential throughput seen from a Linux guest, for the same
# Debian kernel and busybox initramfs on
#   - Alcazar's emu engine (`alcazar run --disk IMG --exec ...`),
#   - QEMU TCG `-M pc` with `-drive file=IMG,if=virtio,format=raw,cache=none`
#     (installed from apt if missing).
#
#   scripts/bench-blk.sh [RUNS] [MIB]   (default 3 runs, a 256 MiB disk)
#
# The guest runs, with O_DIRECT so its page cache is out of the way:
#   dd if=/dev/vda of=/dev/null bs=1M iflag=direct            (read MIB MiB)
#   dd if=/dev/zero of=/dev/vda bs=1M count=MIB oflag=direct  (write MIB MiB)
# between marker lines; scripts/line_timer.py stamps the lines with the
# host's clock and the throughput is MIB over the time between markers.
# The command reaches the guest as `alcazar.exec=` on the kernel command
# line (what `--exec` does); QEMU gets an isa-debug-exit device on port
# 0xf4 so /init can end the VM the same way.
#
# Prints a Markdown table (medians) for docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
MIB=${2:-256}
FLAVOR=cloud
TIMEOUT=600

if ! command -v qemu-system-x86_64 >/dev/null 2>&1; then
    echo "installing qemu-system-x86 from apt..." >&2
    apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q qemu-system-x86 >&2
fi
cargo build --release -q -p alcazar
ALCAZAR=${CARGO_TARGET_DIR:-target}/release/alcazar
"$ALCAZAR" guest fetch --flavor "$FLAVOR" >&2
KERNEL=$("$ALCAZAR" guest path --flavor "$FLAVOR" | sed -n 1p)
INITRD=$("$ALCAZAR" guest path --flavor "$FLAVOR" | sed -n 2p)
APPEND="console=ttyS0 quiet cryptomgr.notests"

# Not on tmpfs: QEMU's cache=none opens the image with O_DIRECT.
WORK=$(mktemp -d --tmpdir="${BENCH_DIR:-/var/tmp}" alcazar-bench-blk.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
IMG=$WORK/disk.img

SCRIPT="echo BENCH-READ-START; dd if=/dev/vda of=/dev/null bs=1M iflag=direct; echo BENCH-READ-END; \
echo BENCH-WRITE-START; dd if=/dev/zero of=/dev/vda bs=1M count=$MIB oflag=direct; echo BENCH-WRITE-END"
# /init's alcazar.exec= takes base64url (RFC 4648 §5).
ENC=$(printf '%s' "$SCRIPT" | base64 -w0 | tr '+/' '-_' | tr -d '=')

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# between LOG A B: seconds between the lines containing A and B.
between() {
    awk -v a="$2" -v b="$3" 'index($0, a) {s=$1} index($0, b) {e=$1} END {
        if (s == "" || e == "") exit 1; printf "%.3f\n", e - s }' "$1"
}

# measure COMMAND...: RUNS runs on a fresh image each; prints
# "read_MiB/s write_MiB/s".
measure() {
    local reads writes log
    reads=$(mktemp) writes=$(mktemp) log=$(mktemp)
    for _ in $(seq "$RUNS"); do
        rm -f "$IMG"
        head -c $((MIB << 20)) /dev/urandom >"$IMG"
        scripts/line_timer.py "$TIMEOUT" -- "$@" >"$log"
        if ! grep -q BENCH-WRITE-END "$log" || grep -q 'dd: ' "$log"; then
            echo "the guest did not finish both dd runs:" >&2
            cat "$log" >&2
            exit 1
        fi
        awk -v m="$MIB" -v t="$(between "$log" BENCH-READ-START BENCH-READ-END)" \
            'BEGIN {printf "%.2f\n", m / t}' >>"$reads"
        awk -v m="$MIB" -v t="$(between "$log" BENCH-WRITE-START BENCH-WRITE-END)" \
            'BEGIN {printf "%.2f\n", m / t}' >>"$writes"
    done
    echo "$(median <"$reads") $(median <"$writes")"
    rm -f "$reads" "$writes" "$log"
}

echo "| VMM | read MiB/s | write MiB/s |"
echo "|---|---:|---:|"
read -r r w < <(measure "$ALCAZAR" run --engine emu --memory 256M --guest "$FLAVOR" \
    --disk "$IMG" --exec "$SCRIPT")
echo "| Alcazar emu | $r | $w |"
for cache in none writeback; do
    read -r r w < <(measure qemu-system-x86_64 -accel tcg -M pc -m 256M -nodefaults -no-user-config \
        -nographic -serial stdio -device isa-debug-exit,iobase=0xf4,iosize=0x04 \
        -drive "file=$IMG,if=virtio,format=raw,cache=$cache" \
        -kernel "$KERNEL" -initrd "$INITRD" -append "$APPEND alcazar.exec=$ENC")
    echo "| QEMU TCG -M pc, cache=$cache | $r | $w |"
done
