#!/bin/busybox sh
# /init of an Alcazar guest: the first program the kernel runs, as PID 1.
#
# The kernel unpacks the initramfs (a cpio archive) into its root file
# system and starts this script with the console (/dev/console) as stdin,
# stdout and stderr. PID 1 must never exit (the kernel panics if it does),
# so every path below ends in `exec init`, the debug-exit port, or poweroff.
#
# What it does:
#   1. mounts the kernel's virtual file systems: proc, sysfs, devtmpfs, devpts;
#   2. loads the virtio modules, dependencies first (the list in
#      /etc/alcazar/modules was computed on the host from the kernel's data),
#      and the IDE drivers when the machine has an IDE controller;
#   3. sets the host name, adds a login prompt (getty) on the virtio console
#      hvc0 when there is one, starts busybox acpid so that the ACPI power
#      button (`alcazar stop`) powers the guest off cleanly, and prints the
#      line ALCAZAR-READY (tests wait for it);
#   4a. with alcazar.exec=ENC on the kernel command line: runs that command
#       with `sh -c` on the console, then ends the VM with the command's exit
#       status through the debug-exit port (0xf4);
#   4b. otherwise: hands over to busybox init, which reads /etc/inittab and
#       keeps a shell on the console until someone types `poweroff`.
#
# Kernel command line parameters read here (the kernel does not pass
# parameters with a dot to init, so they are read from /proc/cmdline):
#   alcazar.exec=ENC       the command, base64url-encoded (RFC 4648 section 5,
#                          padding optional) so that spaces and quotes survive
#   alcazar.hostname=NAME  the host name (default: alcazar)
#   alcazar.net=dhcp       configure eth0 by DHCP (busybox udhcpc, with
#                          /usr/share/udhcpc/default.script applying the
#                          lease) before the marker; `alcazar run --net user`
#                          adds it. Without it eth0 is left down (a TAP
#                          guest configures it itself, no DHCP wait).
#   alcazar.console=hvc0   the virtio console is the guest's console (what
#                          `alcazar run --console virtio` adds): the marker
#                          and the alcazar.exec command go to /dev/hvc0 too.
#                          The kernel's own console stays ttyS0: the
#                          virtio_console driver is a module loaded here.

export PATH=/sbin:/usr/sbin:/bin:/usr/bin
export HOME=/root
export ENV=/etc/profile # read by interactive shells: the prompt
umask 022

say() {
	echo "alcazar-init: $*"
}

# decode_b64url ENC: writes the bytes that ENC encodes to stdout; returns
# non-zero if ENC is not base64url. Busybox's base64 wants the standard
# alphabet and full padding, so translate and re-pad first.
decode_b64url() {
	local enc="$1"
	case "$enc" in
	*[!A-Za-z0-9_=-]*) return 1 ;;
	esac
	enc="${enc%%=*}"
	case $((${#enc} % 4)) in
	1) return 1 ;;
	2) enc="$enc==" ;;
	3) enc="$enc=" ;;
	esac
	printf '%s' "$enc" | tr -- '-_' '+/' | base64 -d
}

# end_vm STATUS: ends the VM, reporting STATUS (0-255) to the VMM.
end_vm() {
	local status="$1"
	sync
	# The debug-exit device ends the VM as soon as the byte reaches its port.
	/bin/alcazar-exit "$status"
	# Still running: try /dev/port (kernels built with CONFIG_DEVPORT).
	# Byte 244 of /dev/port is I/O port 0xf4.
	if [ -c /dev/port ]; then
		printf "\\$(printf %o "$status")" |
			dd of=/dev/port bs=1 seek=244 count=1 conv=notrunc 2>/dev/null
	fi
	say "no debug-exit device at port 0xf4; powering off (exit status $status is lost)"
	poweroff -f
	while :; do sleep 3600; done
}

# 1. Virtual file systems.
mkdir -p /proc /sys /dev /tmp /root /run
mount -t proc proc /proc || say "cannot mount /proc"
mount -t sysfs sysfs /sys || say "cannot mount /sys"
mount -t devtmpfs devtmpfs /dev || say "cannot mount devtmpfs on /dev"
mkdir -p /dev/pts
mount -t devpts devpts /dev/pts || say "cannot mount /dev/pts"

# 2. Modules, one path per line, in load order. A module that fails to load
# is reported and skipped: the shell is still useful without it.
if [ -r /etc/alcazar/modules ]; then
	while read -r module; do
		[ -n "$module" ] || continue
		insmod "$module" || say "insmod $module failed (status $?)"
	done </etc/alcazar/modules
fi
# An IDE controller (PCI class 0101xx: `--disk PATH,if=ide` or `--cdrom`)
# gets its drivers now; they are packed but not loaded at every boot.
if grep -qs '^0x0101' /sys/bus/pci/devices/*/class; then
	for module in ata_piix sd_mod sr_mod; do
		modprobe "$module" || say "modprobe $module failed (status $?)"
	done
fi

# 3. The command line, the host name, the ready marker.
exec_enc=""
host="alcazar"
console=""
net=""
set -f # the words of the command line are not file name patterns
for word in $(cat /proc/cmdline); do
	case "$word" in
	alcazar.exec=*) exec_enc="${word#alcazar.exec=}" ;;
	alcazar.hostname=*) host="${word#alcazar.hostname=}" ;;
	alcazar.console=*) console="${word#alcazar.console=}" ;;
	alcazar.net=*) net="${word#alcazar.net=}" ;;
	esac
done
set +f
hostname "$host" || say "cannot set the host name to $host"

# A login prompt on the virtio console: root, no password (/etc/passwd).
# The device node appears when virtio_console has probed; give it a moment
# when it was asked for.
tty=""
if [ "$console" = hvc0 ]; then
	n=0
	while [ ! -c /dev/hvc0 ] && [ $n -lt 20 ]; do
		sleep 0.1
		n=$((n + 1))
	done
	[ -c /dev/hvc0 ] && tty=/dev/hvc0 || say "alcazar.console=hvc0 but there is no /dev/hvc0"
fi
if [ -c /dev/hvc0 ]; then
	echo "hvc0::respawn:/sbin/getty -L 0 hvc0 vt100" >>/etc/inittab
fi
# The ACPI power button: the kernel's button driver reports a press as
# KEY_POWER on an input device; busybox acpid reads the evdev nodes and
# runs /etc/acpi/PWRF/00000080 for it.
if ls /dev/input/event* >/dev/null 2>&1; then
	mkdir -p /etc/acpi/PWRF
	printf '#!/bin/sh\necho "alcazar-init: power button pressed: powering off" >/dev/console\nexec poweroff\n' >/etc/acpi/PWRF/00000080
	chmod 0755 /etc/acpi/PWRF/00000080
	acpid -c /etc/acpi -l /dev/null || say "acpid did not start: the power button does nothing"
fi
# DHCP on eth0 when asked: the interface appears once virtio_net has
# probed; udhcpc gives up after a few tries (the guest still comes up).
ip link set lo up 2>/dev/null
if [ "$net" = dhcp ]; then
	n=0
	while [ ! -e /sys/class/net/eth0 ] && [ $n -lt 20 ]; do
		sleep 0.1
		n=$((n + 1))
	done
	if [ -e /sys/class/net/eth0 ]; then
		udhcpc -i eth0 -s /usr/share/udhcpc/default.script -f -q -n -t 10 -T 1 -A 1 ||
			say "no DHCP lease on eth0"
	else
		say "alcazar.net=dhcp but there is no eth0"
	fi
fi
echo "ALCAZAR-READY"
[ -n "$tty" ] && echo "ALCAZAR-READY" >"$tty"

# 4a. One command, then the end of the VM.
if [ -n "$exec_enc" ]; then
	if cmd=$(decode_b64url "$exec_enc"); then
		# A subshell is not a process group leader, so setsid does not
		# fork and we get the command's status; cttyhack makes the real
		# console (ttyS0) the controlling terminal, so Ctrl-C works.
		# The session's leader runs the command in a child shell (so
		# `exit N` in it ends only that shell), then waits until the
		# terminal has sent the command's output: when a session leader
		# exits, the kernel hangs its terminal up and throws away what
		# the serial driver has not sent yet.
		run='/bin/sh -c "$1"; s=$?; /bin/alcazar-exit; exit $s'
		if [ -n "$tty" ]; then
			# The virtio console: setsid -c makes it the controlling terminal.
			(exec setsid -c /bin/sh -c "$run" sh "$cmd") <"$tty" >"$tty" 2>&1
		else
			(exec setsid cttyhack /bin/sh -c "$run" sh "$cmd") </dev/console >/dev/console 2>&1
		fi
		status=$?
	else
		say "alcazar.exec is not base64url: $exec_enc"
		status=255
	fi
	end_vm "$status"
fi

# 4b. An interactive guest.
exec /sbin/init
