#!/bin/bash
# In the guest with systemd as PID 1: the pieces the systemd suite relies on work.
n=0 failed=0
check() {
	local what=$1
	shift
	n=$((n + 1))
	if "$@" >/dev/null 2>&1; then
		echo "ok $n - $what"
	else
		echo "not ok $n - $what"
		failed=$((failed + 1))
	fi
}
state=$(systemctl is-system-running --wait 2>/dev/null)
check "systemd finished booting (state: $state)" test "$state" = running
check "the system bus answers" busctl --system status org.freedesktop.DBus
check "systemctl lists units" systemctl list-units --no-pager
check "the journal is readable" journalctl -b --no-pager -n 1
check "the broker's devices are there" test -c /dev/udmabuf -a -c /dev/dri/renderD128
echo "1..$n"
echo "# $((n - failed)) passed, $failed failed"
[ $failed = 0 ]
