#!/usr/bin/env bash
# BIOS boot time: from process start to the guest's ready marker
# (`ALCAZAR-READY`), booting one GRUB CD image (grub-mkrescue, holding the
# default guest's kernel and initramfs, menu timeout 0, GRUB on the serial
# port) through SeaBIOS on
#   - Alcazar's emu engine (`alcazar run --cdrom ISO`: SeaBIOS, IDE ATAPI),
#   - QEMU TCG `-M pc -cdrom ISO` (SeaBIOS, IDE ATAPI) and `-M q35`
#     (SeaBIOS, AHCI), installed from apt if missing.
#
#   scripts/bench-bios.sh [RUNS]   (default 5)
#
# Prints a Markdown table (medians, peak RSS at the marker) for
# docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-5}
TIMEOUT=300
MARKER=ALCAZAR-READY

need() {
    if ! command -v "$1" >/dev/null 2>&1; then
        echo "installing $2 from apt..." >&2
        apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
            --no-install-recommends $2 >&2
    fi
}
need qemu-system-x86_64 qemu-system-x86
need grub-mkrescue "grub-pc-bin grub-common xorriso mtools"
cargo build --release -q -p alcazar
ALCAZAR=target/release/alcazar
"$ALCAZAR" guest fetch --flavor cloud >&2
KERNEL=$("$ALCAZAR" guest path --flavor cloud | sed -n 1p)
INITRD=$("$ALCAZAR" guest path --flavor cloud | sed -n 2p)

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/root/boot/grub"
cp "$KERNEL" "$WORK/root/boot/vmlinuz"
cp "$INITRD" "$WORK/root/boot/initrd.img"
cat >"$WORK/root/boot/grub/grub.cfg" <<'CFG'
serial --unit=0 --speed=115200
terminal_input serial
terminal_output serial
set timeout=0
menuentry "Alcazar guest" {
  linux /boot/vmlinuz console=ttyS0 quiet cryptomgr.notests
  initrd /boot/initrd.img
}
CFG
grub-mkrescue -o "$WORK/guest.iso" "$WORK/root" 2>/dev/null
ISO="$WORK/guest.iso"

# median and measure.
. scripts/boot_measure.sh

echo "| VMM | seconds to marker (median of $RUNS) | peak RSS (MiB) |"
echo "|---|---:|---:|"
read -r s r < <(measure "$ALCAZAR" run --engine emu --memory 256M --cdrom "$ISO" --api-socket none)
echo "| Alcazar emu, --cdrom | $s | $r |"
read -r s r < <(measure qemu-system-x86_64 -accel tcg -M pc -m 256M -nodefaults -no-user-config \
    -nographic -serial stdio -cdrom "$ISO" -boot d)
echo "| QEMU TCG -M pc -cdrom | $s | $r |"
read -r s r < <(measure qemu-system-x86_64 -accel tcg -M q35 -m 256M -nodefaults -no-user-config \
    -nographic -serial stdio -cdrom "$ISO" -boot d)
echo "| QEMU TCG -M q35 -cdrom | $s | $r |"
