#!/usr/bin/env bash
# Vectorised work in the guest: Debian's OpenSSL (AES-NI, PCLMULQDQ, SHA,
# AVX/AVX2 code paths, chosen by CPUID) on Alcazar's emu engine against
# QEMU TCG with its `-cpu max` (which offers the same extensions), side by
# side on this machine: the same Debian kernel, the default busybox
# initramfs with glibc and OpenSSL appended, the same command line.
#
#   scripts/bench-simd.sh [RUNS] [MIB]   (default 3 runs, 64 MiB of input)
#
# Each workload reads MIB MiB of zeros from a tmpfs file written before
# the clock starts, and is timed on the host's clock between two lines the
# guest prints around it (BENCH-START, BENCH-END):
#   aes-ctr   openssl enc -aes-128-ctr      (AES-NI)
#   gmac      openssl mac ... GMAC          (GHASH: PCLMULQDQ, AVX)
#   sha256    openssl dgst -sha256          (SHA extensions)
#   sha512    openssl dgst -sha512          (AVX2 / BMI2 code)
# Installs qemu-system-x86 from apt if missing. Prints a Markdown table
# (medians, MiB/s) for docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
MIB=${2:-64}
TIMEOUT=900

need() { command -v "$1" >/dev/null 2>&1 || {
    echo "installing $2 from apt..." >&2
    apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$2" >&2
}; }
need qemu-system-x86_64 qemu-system-x86
need bc bc
cargo build --release -q -p alcazar
ALCAZAR=target/release/alcazar
"$ALCAZAR" guest fetch >&2
KERNEL=$("$ALCAZAR" guest path | sed -n 1p)
BASE_INITRD=$("$ALCAZAR" guest path | sed -n 2p)
APPEND="console=ttyS0 quiet cryptomgr.notests"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

(cd "$WORK" && apt-get download -q libc6 libssl3 openssl >&2)
for deb in "$WORK"/*.deb; do dpkg-deb -x "$deb" "$WORK/root"; done
INITRD="$WORK/initrd-openssl.img"
scripts/userland_initrd.py "$BASE_INITRD" "$INITRD" "$WORK/root" \
    lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 lib/x86_64-linux-gnu/libc.so.6 \
    usr/lib/x86_64-linux-gnu/libssl.so.3 usr/lib/x86_64-linux-gnu/libcrypto.so.3 \
    usr/bin/openssl

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
b64url() { printf '%s' "$1" | base64 -w0 | tr '+/' '-_' | tr -d '='; }
KEY=000102030405060708090a0b0c0d0e0f
declare -A WORKLOAD=(
    [aes-ctr]="openssl enc -aes-128-ctr -K $KEY -iv $KEY -in /tmp/z -out /dev/null"
    [gmac]="openssl mac -cipher AES-128-GCM -macopt hexkey:$KEY -macopt hexiv:000102030405060708090a0b -in /tmp/z GMAC"
    [sha256]="openssl dgst -sha256 /tmp/z"
    [sha512]="openssl dgst -sha512 /tmp/z"
)
WORKLOADS=(aes-ctr gmac sha256 sha512)

alcazar_run() { # EXTRA
    "$ALCAZAR" run --engine emu --memory 512M --api-socket none \
        --kernel "$KERNEL" --initrd "$INITRD" --cmdline "$APPEND $1" --on-reboot exit
}
qemu_run() { # EXTRA
    qemu-system-x86_64 -accel tcg -cpu max -M pc -m 512M -nodefaults -no-user-config \
        -nographic -serial stdio -no-reboot -device isa-debug-exit,iobase=0xf4,iosize=4 \
        -kernel "$KERNEL" -initrd "$INITRD" -append "$APPEND $1"
}
export -f alcazar_run qemu_run
export ALCAZAR KERNEL INITRD APPEND

# MiB/s of WORKLOAD on VMM (alcazar_run or qemu_run).
rate() { # VMM WORKLOAD
    local script secs
    script="head -c $((MIB << 20)) /dev/zero > /tmp/z; echo BENCH-START; ${WORKLOAD[$2]}; echo BENCH-END"
    secs=$(scripts/line_timer.py "$TIMEOUT" -- bash -c "$1 \"\$0\"" \
        "alcazar.exec=$(b64url "$script")" |
        awk '/BENCH-START/ {s=$1} /BENCH-END/ {print $1 - s; exit}')
    echo "$MIB / $secs" | bc -l
}

declare -A R
for run in $(seq "$RUNS"); do
    for w in "${WORKLOADS[@]}"; do
        R["alcazar $w"]+="$(rate alcazar_run "$w") "
        R["qemu $w"]+="$(rate qemu_run "$w") "
    done
    echo "run $run done" >&2
done
med() { echo "${R[$1]}" | tr ' ' '\n' | grep -v '^$' | median; }

echo "| OpenSSL over $MIB MiB | Alcazar emu (MiB/s) | QEMU TCG -cpu max (MiB/s) | Alcazar / QEMU |"
echo "|---|---:|---:|---:|"
for w in "${WORKLOADS[@]}"; do
    a=$(med "alcazar $w"); q=$(med "qemu $w")
    printf '| %s | %.1f | %.1f | %.2f |\n' "$w" "$a" "$q" "$(echo "$a / $q" | bc -l)"
done
