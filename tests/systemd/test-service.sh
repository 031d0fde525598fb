#!/bin/bash
# In the guest, systemd as PID 1: install the build, then manage dmabrokerd with systemctl as an
# administrator would, and check that clients lose nothing. TAP.
#   test-service.sh BUILD_DIR
set -uo pipefail
build=$(cd "$1" && pwd)
ctl=$build/tools/dmabrokerctl
cpu=$build/examples/cpu-client
work=$(mktemp -d)
n=0
failed=0
point() {
	n=$((n + 1))
	if [ "$1" = 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; failed=$((failed + 1)); fi
}
finish() {
	echo "1..$n"
	echo "# $((n - failed)) passed, $failed failed"
	exit $([ $failed = 0 ] && echo 0 || echo 1)
}
wait_for() { # wait_for SECONDS COMMAND...: until COMMAND succeeds
	local t=$1
	shift
	for _ in $(seq $((t * 10))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
	return 1
}
prop() { busctl --system get-property org.dmabroker.Broker1 /org/dmabroker/Broker1 org.dmabroker.Broker1 "$1" 2>/dev/null; }
main_pid() { systemctl show -p MainPID --value dmabrokerd; }
broker_owner() {
	busctl --system call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus \
		GetNameOwner s org.dmabroker.Broker1 2>/dev/null | awk '{ print $2 }' | tr -d '"'
}
diag() { sed 's/^/# /'; }
value() { awk -v k="$2" '$1 == k { print $2; exit }' "$work/$1.out"; }
nth_token() { awk '$1 == "token" { print $2 }' "$work/$1.out" | sed -n "$2p"; }

systemctl is-system-running --wait >/dev/null 2>&1
# Install the build into the guest's writable overlay, as a package would.
meson install -C "$build" --no-rebuild --quiet >"$work/install.log" 2>&1
point $? "meson install"
systemd-sysusers >/dev/null 2>&1
point $? "systemd-sysusers creates the service user"
udevadm control --reload >/dev/null 2>&1
udevadm trigger --settle --subsystem-match=misc --subsystem-match=dma_heap >/dev/null 2>&1
busctl --system call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus ReloadConfig >/dev/null 2>&1
systemctl daemon-reload

systemctl start dmabrokerd
point $? "systemctl start dmabrokerd"
point "$(systemctl is-active --quiet dmabrokerd; echo $?)" "the service is active"
point "$(prop Version >/dev/null; echo $?)" "it answers on the system bus: $(prop Version)"
point "$([ "$(ps -o user= -p "$(main_pid)")" = dmabroker ]; echo $?)" "it runs as the dmabroker user"
backends=$(prop Backends)
point "$(echo "$backends" | grep -q '"udmabuf"' && echo "$backends" | grep -q '"dma-heap"'; echo $?)" \
	"the hardened service can open udmabuf and the dma-heap ($backends)"
point "$(prop Devices | grep -q renderD128; echo $?)" "and sees the render node"
# Least privilege: no video group, no V4L2 device allowed, and it still knows the V4L2 nodes
# (from udev and sysfs, without opening them).
groups=$(ps -o supgrp= -p "$(main_pid)")
point "$(echo ",$groups," | grep -q ',render,' && ! echo ",$groups," | grep -q ',video,'; echo $?)" \
	"its supplementary groups are render only ($groups)"
point "$(prop Devices | grep -q '/dev/video'; echo $?)" "and it lists the V4L2 devices without the video group"
point "$(! ls -l /proc/"$(main_pid)"/fd | grep -q /dev/video; echo $?)" "it holds no V4L2 node open"

# A client allocates, writes and shares, and keeps holding its buffer.
mkfifo "$work/hold"
"$cpu" allocate --size 1048576 --fill 0x42 --tokens 2 <"$work/hold" >"$work/alloc.out" 2>"$work/alloc.err" &
client=$!
exec 9>"$work/hold"
wait_for 20 grep -q '^ready' "$work/alloc.out"
buffer=$(value alloc buffer)
sum=$(value alloc checksum)
point "$([ -n "$buffer" ] && [ "$(value alloc backend)" = udmabuf ]; echo $?)" \
	"a client allocates $buffer from udmabuf through the service"

# Reload: a new limit, nothing dropped.
mkdir -p /usr/local/etc/dmabroker/dmabroker.conf.d
printf '[Limits]\nMaxTokensPerClient=77\n' >/usr/local/etc/dmabroker/dmabroker.conf.d/50-test.conf
pid=$(main_pid)
systemctl reload dmabrokerd
point $? "systemctl reload"
wait_for 10 sh -c "busctl --system get-property org.dmabroker.Broker1 /org/dmabroker/Broker1 org.dmabroker.Broker1 Limits | grep -q '\"MaxTokensPerClient\" 77'"
point $? "the reload changed MaxTokensPerClient to 77"
point "$([ "$(main_pid)" = "$pid" ] && "$ctl" buffers | grep -q "^$buffer\$"; echo $?)" \
	"without restarting or dropping the buffer"

# Restart: the buffer, its owner and attachments, and the token come back.
systemctl restart dmabrokerd
point $? "systemctl restart"
point "$([ "$(main_pid)" != "$pid" ]; echo $?)" "a new process ($pid -> $(main_pid))"
"$ctl" buffers >"$work/buffers" 2>&1
point "$(grep -q "^$buffer\$" "$work/buffers"; echo $?)" "$buffer is still listed"
owner=$(value alloc client)
point "$(grep -A4 "^$buffer\$" "$work/buffers" | grep -q "owner uid 0 ($owner)"; echo $?)" \
	"with its owner $owner"
point "$(grep -A4 "^$buffer\$" "$work/buffers" | grep -q "$owner cached"; echo $?)" \
	"and its attachment"
"$cpu" read "$(nth_token alloc 2)" >"$work/read.out" 2>&1
point "$([ "$(value read checksum)" = "$sum" ]; echo $?)" \
	"a token issued before the restart imports the same bytes ($(value read checksum))"
point "$(kill -0 $client; echo $?)" "the client kept running and holding its mapping"

# A stream through a SIGKILL of the daemon: frames go over the stream's own link, so they keep
# flowing while the daemon is dead and after it is back, and the restarted daemon knows the
# stream from its journal.
mkfifo "$work/sprod.in" "$work/scons.in"
"$cpu" stream-produce svc --interval-ms 20 <"$work/sprod.in" >"$work/sprod.out" 2>&1 &
sprod=$!
exec 7>"$work/sprod.in"
wait_for 30 grep -q '^ready' "$work/sprod.out"
"$cpu" stream svc --report 5 --bars <"$work/scons.in" >"$work/scons.out" 2>&1 &
scons=$!
exec 6>"$work/scons.in"
checked() { awk '$1 == "checked" { n = $2 } END { print n + 0 }' "$work/scons.out"; }
bad() { awk '$1 == "checked" { n = $4 } END { print n + 0 }' "$work/scons.out"; }
wait_for 60 sh -c "[ \$(awk '\$1 == \"checked\" { n = \$2 } END { print n + 0 }' $work/scons.out) -ge 20 ]"
point $? "a stream carries frames through the service ($(checked) checked)"
spath=$(value sprod stream)
pid=$(main_pid)
before=$(checked)
kill -KILL "$pid"
during=no
for _ in $(seq 100); do
	if [ -z "$(broker_owner)" ] && [ "$(checked)" -gt "$before" ]; then during=yes; break; fi
	[ -n "$(broker_owner)" ] && [ "$(main_pid)" != "$pid" ] && break
	sleep 0.1
done
point "$([ $during = yes ]; echo $?)" \
	"frames keep coming while the daemon is dead ($before -> $(checked) with no broker on the bus)"
wait_for 60 sh -c "[ \"\$(systemctl show -p MainPID --value dmabrokerd)\" != $pid ] && [ \"\$(systemctl show -p MainPID --value dmabrokerd)\" != 0 ] && busctl --system status org.dmabroker.Broker1"
point $? "systemd restarted the killed daemon ($pid -> $(main_pid))"
after=$(checked)
wait_for 30 sh -c "[ \$(awk '\$1 == \"checked\" { n = \$2 } END { print n + 0 }' $work/scons.out) -ge $((after + 20)) ]"
point $? "and after it is back ($after -> $(checked))"
"$ctl" streams >"$work/streams" 2>&1
point "$([ -n "$spath" ] && grep -q "$spath" "$work/streams"; echo $?)" \
	"the restarted daemon lists the stream $spath"
diag <"$work/streams"
point "$([ "$(bad)" = 0 ] && ! grep -q '^first-bad' "$work/scons.out"; echo $?)" \
	"every frame the consumer checked was intact ($(checked) frames, $(bad) bad)"
exec 6>&-
wait $scons
point $? "the consumer leaves cleanly"
exec 7>&-
wait $sprod
point $? "and so does the producer"

# Watchdog: a daemon that stops answering is restarted.
pid=$(main_pid)
restarts=$(systemctl show -p NRestarts --value dmabrokerd)
kill -STOP "$pid"
wait_for 90 sh -c "[ \"\$(systemctl show -p MainPID --value dmabrokerd)\" != $pid ] && systemctl is-active --quiet dmabrokerd"
point $? "a daemon stopped with SIGSTOP is restarted by the watchdog"
point "$([ "$(systemctl show -p NRestarts --value dmabrokerd)" -gt "$restarts" ]; echo $?)" \
	"NRestarts counts it"
journalctl -u dmabrokerd --no-pager | grep -q -i watchdog
point $? "the journal says why"

exec 9>&-
wait $client
systemctl stop dmabrokerd
point $? "systemctl stop"
sleep 1
point "$(! pgrep -f libexec/dmabrokerd >/dev/null; echo $?)" "no process is left"

# Bus activation: the first call starts the stopped service.
"$ctl" status >"$work/status" 2>&1
point $? "a call to the stopped daemon succeeds"
point "$(systemctl is-active --quiet dmabrokerd; echo $?)" "bus activation started the service"

# The bus policy: only the service user may own the name.
out=$(setpriv --reuid=65534 --regid=65534 --clear-groups -- busctl --system call \
	org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus RequestName su \
	org.dmabroker.Broker1 0 2>&1)
point "$(echo "$out" | grep -qiE "AccessDenied|Access denied"; echo $?)" "another user cannot own the name (${out:0:80})"
out=$(setpriv --reuid=65534 --regid=65534 --clear-groups -- "$ctl" status 2>&1)
point $? "another user may call the daemon"

journalctl -u dmabrokerd --no-pager -o short-monotonic | tail -20 | sed 's/^/# /'
finish
