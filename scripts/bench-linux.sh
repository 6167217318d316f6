#!/usr/bin/env bash
# Linux on Alcazar's emu engine (both tiers) against QEMU TCG, side by side
# on this machine: the same Debian kernel, busybox initramfs and command
# line, runs alternated, medians.
#
#   scripts/bench-linux.sh [RUNS] [FLAVOR]   (default 3 runs, cloud kernel)
#
# Measured, on the host's clock:
#   boot   process start to the guest's ready marker (ALCAZAR-READY)
#   loop   a busybox shell loop of 300k iterations (user code)
#   md5    md5sum of 256 MiB read from /dev/zero
#   gzip   gzip + gunzip of 8 MiB of random data
# For the three workloads the time is between two lines the guest prints
# around the work (BENCH-START, BENCH-END), so boot and exit do not count.
#
# QEMU gets its best configuration for each machine (-accel tcg, as KVM is
# unusable here; -M microvm with the TSC rate given, -M pc), and, as the
# best boot path, the kernel's ELF vmlinux entered through PVH on microvm
# (no decompression), which Alcazar can also boot (`--kernel vmlinux`).
# Installs qemu-system-x86 and lz4 from apt if missing. Prints Markdown
# tables for docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
FLAVOR=${2:-cloud}
TIMEOUT=600

need() { command -v "$1" >/dev/null 2>&1 || {
    echo "installing $2 from apt..." >&2
    apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$2" >&2
}; }
need qemu-system-x86_64 qemu-system-x86
need lz4 lz4
need bc bc
cargo build --release -q -p alcazar
ALCAZAR=target/release/alcazar
"$ALCAZAR" guest fetch --flavor "$FLAVOR" >&2
KERNEL=$("$ALCAZAR" guest path --flavor "$FLAVOR" | sed -n 1p)
INITRD=$("$ALCAZAR" guest path --flavor "$FLAVOR" | sed -n 2p)
APPEND="console=ttyS0 quiet cryptomgr.notests"
KHZ=$(awk '/cpu MHz/ {printf "%d", $4 * 1000; exit}' /proc/cpuinfo)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# The ELF vmlinux inside the bzImage (Debian compresses it with LZ4): find
# the LZ4 legacy magic and decompress from there.
VMLINUX="$WORK/vmlinux"
off=$(grep -obUaP '\x02\x21\x4c\x18' "$KERNEL" | head -1 | cut -d: -f1)
tail -c +$((off + 1)) "$KERNEL" | lz4 -dc > "$VMLINUX" 2>/dev/null || true
head -c 4 "$VMLINUX" | grep -q ELF || { echo "cannot extract vmlinux" >&2; exit 1; }

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
b64url() { printf '%s' "$1" | base64 -w0 | tr '+/' '-_' | tr -d '='; }

declare -A WORKLOAD=(
    [loop]='i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done'
    [md5]='dd if=/dev/zero bs=1M count=256 2>/dev/null | md5sum'
    [gzip]='head -c 8388608 /dev/urandom > /tmp/r; gzip -c /tmp/r | gunzip -c | md5sum'
)

# The VMMs, each a command that takes the guest command line's extra words
# ($1) and runs the guest to its end.
alcazar_run() { # TIER KERNEL EXTRA
    "$ALCAZAR" run --engine emu --emu-tier "$1" --memory 256M --api-socket none \
        --kernel "$2" --initrd "$INITRD" --cmdline "$APPEND $3" --on-reboot exit
}
qemu_run() { # MACHINE KERNEL EXTRA
    local machine=$1 extra=$APPEND
    [ "$machine" = microvm ] && extra="$extra tsc_early_khz=$KHZ"
    qemu-system-x86_64 -accel tcg -M "$machine" -m 256M -nodefaults -no-user-config \
        -nographic -serial stdio -no-reboot -device isa-debug-exit,iobase=0xf4,iosize=4 \
        -kernel "$2" -initrd "$INITRD" -append "$extra $3"
}
VMMS=("alcazar jit" "alcazar interp" "qemu microvm" "qemu pc")
cmd_for() { # VMM KERNEL EXTRA -> prints the command
    case "$1" in
    "alcazar jit") echo alcazar_run jit ;;
    "alcazar interp") echo alcazar_run interp ;;
    "qemu microvm") echo qemu_run microvm ;;
    "qemu pc") echo qemu_run pc ;;
    esac
}
export -f alcazar_run qemu_run
export ALCAZAR INITRD APPEND KHZ

# seconds from start to the marker, for KERNEL on VMM.
boot_time() { # VMM KERNEL
    local c
    c=$(cmd_for "$1")
    scripts/boot_timer.py ALCAZAR-READY "$TIMEOUT" -- bash -c "$c \"\$0\" \"\$1\"" "$2" \
        "alcazar.exec=$(b64url true)" | awk '{print $1}'
}
# seconds between BENCH-START and BENCH-END, for WORKLOAD on VMM.
work_time() { # VMM WORKLOAD
    local c script
    c=$(cmd_for "$1")
    script="echo BENCH-START; ${WORKLOAD[$2]}; echo BENCH-END"
    scripts/line_timer.py "$TIMEOUT" -- bash -c "$c \"\$0\" \"\$1\"" "$KERNEL" \
        "alcazar.exec=$(b64url "$script")" |
        awk '/BENCH-START/ {s=$1} /BENCH-END/ {print $1 - s; exit}'
}

declare -A T
for run in $(seq "$RUNS"); do
    for vmm in "${VMMS[@]}"; do
        T["$vmm boot"]+="$(boot_time "$vmm" "$KERNEL") "
        for w in loop md5 gzip; do
            T["$vmm $w"]+="$(work_time "$vmm" "$w") "
        done
        echo "run $run: $vmm done" >&2
    done
    T["alcazar jit pvh"]+="$(boot_time "alcazar jit" "$VMLINUX") "
    T["qemu microvm pvh"]+="$(boot_time "qemu microvm" "$VMLINUX") "
done
med() { echo "${T[$1]}" | tr ' ' '\n' | grep -v '^$' | median; }

echo "| work | Alcazar jit (s) | Alcazar interp (s) | QEMU microvm (s) | QEMU pc (s) | jit / best QEMU |"
echo "|---|---:|---:|---:|---:|---:|"
for w in boot loop md5 gzip; do
    j=$(med "alcazar jit $w"); i=$(med "alcazar interp $w")
    m=$(med "qemu microvm $w"); p=$(med "qemu pc $w")
    best=$(printf '%s\n%s\n' "$m" "$p" | sort -g | head -1)
    printf '| %s | %.2f | %.2f | %.2f | %.2f | %.2f |\n' "$w" "$j" "$i" "$m" "$p" \
        "$(echo "$j / $best" | bc -l)"
done
echo
echo "| boot through the PVH entry (ELF vmlinux) | Alcazar jit (s) | QEMU microvm (s) | ratio |"
echo "|---|---:|---:|---:|"
j=$(med "alcazar jit pvh"); m=$(med "qemu microvm pvh")
printf '| boot | %.2f | %.2f | %.2f |\n' "$j" "$m" "$(echo "$j / $m" | bc -l)"
