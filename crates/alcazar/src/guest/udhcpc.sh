#!/bin/sh
# /usr/share/udhcpc/default.script of an Alcazar guest: busybox udhcpc runs
# it with the event as $1 and the lease in the environment (busybox's
# networking/udhcp/dhcpc.c: interface, ip, mask (prefix length), router,
# dns, domain). It applies the lease to the interface, the default route
# and /etc/resolv.conf.
#
# The interface keeps its MTU of 1500: passt offers 65520 (DHCP option 26),
# but the virtio-net card offers no large receive buffers, so frames above
# 1514 bytes would not fit the guest's buffers.

case "$1" in
deconfig)
	ip -4 addr flush dev "$interface"
	ip link set "$interface" up
	;;
bound | renew)
	ip -4 addr flush dev "$interface"
	ip -4 addr add "$ip/${mask:-24}" dev "$interface"
	ip link set "$interface" up
	if [ -n "$router" ]; then
		ip -4 route del default 2>/dev/null
		for r in $router; do
			ip -4 route add default via "$r" dev "$interface"
			break
		done
	fi
	: >/etc/resolv.conf
	[ -n "$domain" ] && echo "search $domain" >>/etc/resolv.conf
	for d in $dns; do
		echo "nameserver $d" >>/etc/resolv.conf
	done
	echo "alcazar-dhcp: $interface $ip/${mask:-24} router ${router:-none} dns ${dns:-none}"
	;;
leasefail | nak)
	echo "alcazar-dhcp: $interface: no lease ($1)"
	;;
esac
exit 0
