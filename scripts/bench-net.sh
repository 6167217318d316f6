#!/usr/bin/env bash
# TCP throughput host -> guest through user-mode networking: Alcazar
# (--net user, passt) against QEMU TCG with slirp (-nic user) and, when
# this QEMU has `-netdev stream` (7.2+), with passt.
#
# Each run boots the default guest (Debian cloud kernel + busybox
# initramfs), which gets its address by DHCP and fetches SIZE MiB from an
# HTTP server on the host's 127.0.0.1 through the gateway address
# (`wget -O - | wc -c`, the count checked). scripts/line_timer.py stamps
# the guest's lines with the host's clock; the figure is SIZE over the
# time between the guest's START line and the line with the count.
#
# (Pushing through a port forward, host -> guest `nc -l`, stalls after a
# few MiB with passt 0.0~git20230309 under QEMU as under Alcazar, so the
# guest pulls.)
#
# Usage: scripts/bench-net.sh [SIZE_MIB (64)] [RUNS (3)]
# Needs: a built alcazar (target/release or $ALCAZAR), passt,
# qemu-system-x86_64, python3.
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE_MIB=${1:-64}
RUNS=${2:-3}
ALCAZAR=${ALCAZAR:-${CARGO_TARGET_DIR:-target}/release/alcazar}
QEMU=${QEMU:-qemu-system-x86_64}

[ -x "$ALCAZAR" ] || { echo "no alcazar at $ALCAZAR (cargo build --release -p alcazar)" >&2; exit 1; }
command -v passt >/dev/null || { echo "passt is not installed (apt-get install passt)" >&2; exit 1; }

WORK=$(mktemp -d)
chmod 711 "$WORK" # passt, run as nobody when started as root, binds in it
head -c $((SIZE_MIB * 1048576)) /dev/urandom >"$WORK/blob"
HTTP_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
(cd "$WORK" && exec python3 -m http.server "$HTTP_PORT" --bind 127.0.0.1 >/dev/null 2>&1) &
HTTP_PID=$!
trap 'kill $HTTP_PID 2>/dev/null || true; rm -rf "$WORK"' EXIT

GUEST_CMD="gw=\$(ip route | awk '/^default/ {print \$3}'); echo START; echo COUNT \$(wget -q -O - http://\$gw:$HTTP_PORT/blob | wc -c)"
{ read -r KERNEL; read -r INITRD; } < <("$ALCAZAR" guest path)
CMDLINE="console=ttyS0 quiet cryptomgr.notests alcazar.net=dhcp alcazar.exec=$(
    printf '%s' "$GUEST_CMD" | base64 -w0 | tr '+/' '-_' | tr -d '='
)"
TIMER="$(pwd)/scripts/line_timer.py"

# rate LOG: MiB/s between START and COUNT (the count must be right).
rate() {
    awk -v mib="$SIZE_MIB" '
        $2 == "START" { start = $1 }
        $2 == "COUNT" { end = $1; count = $3 }
        END {
            if (start == "" || end == "" || count != mib * 1048576) print "failed(count=" count ")";
            else printf "%.1f\n", mib / (end - start)
        }' "$1"
}

QEMU_ARGS=(-accel tcg -M pc -m 512 -nographic -no-reboot -nodefaults -serial stdio
    -device isa-debug-exit,iobase=0xf4,iosize=4 -kernel "$KERNEL" -initrd "$INITRD"
    -append "$CMDLINE")

alcazar_run() {
    python3 "$TIMER" 600 -- "$ALCAZAR" run --engine emu --api-socket none --net user \
        --exec "$GUEST_CMD" >"$WORK/run.log" 2>&1 || true
    rate "$WORK/run.log"
}

qemu_slirp_run() {
    python3 "$TIMER" 600 -- "$QEMU" "${QEMU_ARGS[@]}" -nic user,model=virtio-net-pci \
        >"$WORK/run.log" 2>&1 || true
    rate "$WORK/run.log"
}

qemu_passt_run() {
    local dir="$WORK/passt"
    mkdir -p "$dir"
    # passt started as root runs as nobody, and binds its socket as nobody.
    if [ "$(id -u)" = 0 ]; then chown nobody "$dir"; fi
    passt -f -q -s "$dir/passt.socket" >/dev/null 2>&1 &
    local passt=$!
    local n=0
    while [ ! -S "$dir/passt.socket" ]; do
        sleep 0.05
        n=$((n + 1))
        if [ $n -gt 200 ]; then
            echo "passt did not create its socket" >&2
            kill $passt 2>/dev/null || true
            echo failed
            return
        fi
    done
    python3 "$TIMER" 600 -- "$QEMU" "${QEMU_ARGS[@]}" \
        -netdev "stream,id=n0,server=off,addr.type=unix,addr.path=$dir/passt.socket" \
        -device virtio-net-pci,netdev=n0 >"$WORK/run.log" 2>&1 || true
    kill $passt 2>/dev/null || true
    wait $passt 2>/dev/null || true
    rm -rf "$dir"
    rate "$WORK/run.log"
}

echo "host -> guest TCP (guest wget from the host's loopback), $SIZE_MIB MiB, $RUNS runs each (MiB/s)"
echo "$("$QEMU" --version | head -1); passt $(dpkg-query -W -f='${Version}' passt 2>/dev/null || echo '?')"
for setup in alcazar qemu_slirp qemu_passt; do
    if [ "$setup" = qemu_passt ] && ! "$QEMU" -netdev help 2>/dev/null | grep -qw stream; then
        echo "qemu_passt: this QEMU has no -netdev stream"
        continue
    fi
    rates=()
    for _ in $(seq "$RUNS"); do
        # Not in a subshell: a passt started by a run is this shell's job.
        "${setup}_run" >"$WORK/rate"
        rates+=("$(cat "$WORK/rate")")
    done
    echo "$setup: ${rates[*]}"
done
