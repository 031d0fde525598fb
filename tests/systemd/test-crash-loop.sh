#!/bin/bash
# In the guest, systemd as PID 1: dmabrokerd is killed again and again (SIGKILL N times, then
# the watchdog's SIGABRT once) while library clients keep allocating, sharing, importing and
# holding buffers, and restarts each time with nothing lost. Then the fd-store quota. TAP.
#   test-crash-loop.sh BUILD_DIR
#
# The kills are paced (at least $pace s apart) so that the shipped unit's start limit is not
# hit: with Restart=on-failure, RestartSec=1s and systemd's default start limit (5 starts in
# 10 s), a daemon that dies faster than that is given up on (the unit becomes failed, until
# `systemctl reset-failed` or the next bus activation). This test does not change the limit:
# it checks that paced deaths never reach it.
set -uo pipefail
build=$(cd "$1" && pwd)
ctl=$build/tools/dmabrokerctl
cpu=$build/examples/cpu-client
load=$build/tests/systemd/load-client
kills=${DMABROKER_CRASH_KILLS:-20}
pace=2.5
work=$(mktemp -d)
n=0
failed=0
point() {
	n=$((n + 1))
	if [ "$1" = 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; failed=$((failed + 1)); fi
}
diag() { sed 's/^/# /'; }
finish() {
	echo "1..$n"
	echo "# $((n - failed)) passed, $failed failed"
	exit $([ $failed = 0 ] && echo 0 || echo 1)
}
wait_for() { # wait_for SECONDS COMMAND...: until COMMAND succeeds (wall clock: TCG is slow)
	local end=$((SECONDS + $1))
	shift
	while [ $SECONDS -lt $end ]; do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
	"$@" >/dev/null 2>&1
}
main_pid() { systemctl show -p MainPID --value dmabrokerd; }
n_restarts() { systemctl show -p NRestarts --value dmabrokerd; }
broker_owner() {
	busctl --system call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus \
		GetNameOwner s org.dmabroker.Broker1 2>/dev/null | awk '{ print $2 }' | tr -d '"'
}
bprop() { # bprop PATH PROPERTY
	busctl --system get-property org.dmabroker.Broker1 "$1" org.dmabroker.Buffer1 "$2" 2>/dev/null
}
# block FILE PATH: PATH's entry in dmabrokerctl's output (its line and the indented ones after it).
block() { awk -v p="$2" '$0 == p { on = 1; print; next } on && /^\// { exit } on { print }' "$1"; }
ids() { sed -n 's|^/org/dmabroker/Broker1/buffer/\([0-9]*\)$|\1|p' "$@"; }
max_of() { sort -n | tail -1; }

# --- the load clients: stdin a fifo we keep open, stdout a file; ask waits for "end" ---
declare -A cfd
start_load() { # start_load NAME [ARGS]
	local name=$1 fd
	shift
	mkfifo "$work/$name.in"
	# Without the writing ends of the other fifos: each reader must see its own EOF.
	(
		for f in "${cfd[@]}"; do eval "exec $f>&-"; done
		exec 9>&- "$load" "$name" "$@" <"$work/$name.in" >"$work/$name.out" 2>"$work/$name.err"
	) &
	eval "${name}_pid=$!"
	exec {fd}>"$work/$name.in"
	cfd[$name]=$fd
	wait_for 30 grep -q '^end start' "$work/$name.out"
}
count_ends() { # count_ends FILE: into $ends, with builtins only (a fork costs under TCG)
	local line
	ends=0
	while IFS= read -r line; do [[ $line == "end "* ]] && ends=$((ends + 1)); done <"$1"
}
ask() { # ask NAME COMMAND: its answer in $work/NAME.ans
	local name=$1 before end=$((SECONDS + 60))
	count_ends "$work/$name.out"
	before=$ends
	echo "$2" >&"${cfd[$name]}"
	while count_ends "$work/$name.out"; [ "$ends" -le "$before" ]; do
		[ $SECONDS -lt $end ] || { echo "# $name did not answer $2"; return 1; }
		sleep 0.05
	done
	awk -v b="$before" '/^end / { e++; next } e == b' "$work/$name.out" >"$work/$name.ans"
}
reap() { # reap PID NAME: its exit status once it ended, or 124 (and what it hung in) after 30 s
	local p=$1
	if ! wait_for 30 sh -c "[ ! -e /proc/$p ] || grep -q '^State:.*Z' /proc/$p/status"; then
		echo "# $2 did not end: in $(cat /proc/$p/wchan 2>/dev/null)"
		cat /proc/$p/stack 2>/dev/null | head -8 | diag
		ls -l /proc/$p/fd 2>/dev/null | diag
		kill -9 "$p"
		wait "$p"
		return 124
	fi
	wait "$p"
}
stop_load() { # stop_load NAME: quit, and its exit status
	local p
	eval "p=\$${1}_pid"
	echo quit >&"${cfd[$1]}"
	reap "$p" "$1"
}
ans() { awk -v k="$2" '$1 == k { $1 = ""; sub(/^ /, ""); print }' "$work/$1.ans"; }

systemctl is-system-running --wait >/dev/null 2>&1
meson install -C "$build" --no-rebuild --quiet >"$work/install.log" 2>&1
point $? "meson install"
systemd-sysusers >/dev/null 2>&1
udevadm control --reload >/dev/null 2>&1
udevadm trigger --settle --subsystem-match=misc --subsystem-match=dma_heap >/dev/null 2>&1
busctl --system call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus ReloadConfig >/dev/null 2>&1
systemctl daemon-reload
systemctl start dmabrokerd
point $? "systemctl start dmabrokerd (the shipped unit, no test drop-in)"
conf=$(systemctl show -p Restart -p RestartUSec -p StartLimitBurst -p StartLimitIntervalUSec dmabrokerd | tr '\n' ' ')
echo "# unit: $conf"

# A cpu-client holds one buffer and a token through every kill.
mkfifo "$work/hold"
"$cpu" allocate --size 262144 --fill 0x33 --tokens 1 <"$work/hold" >"$work/holder.out" 2>&1 &
holder=$!
exec 9>"$work/hold"
wait_for 30 grep -q '^ready' "$work/holder.out"
holder_buffer=$(awk '$1 == "buffer" { print $2 }' "$work/holder.out")
holder_client=$(awk '$1 == "client" { print $2 }' "$work/holder.out")
holder_token=$(awk '$1 == "token" { print $2 }' "$work/holder.out")
holder_sum=$(awk '$1 == "checksum" { print $2 }' "$work/holder.out")
point "$([ -n "$holder_token" ]; echo $?)" "cpu-client holds $holder_buffer and has shared it"

# clients NAME: a load client's two client paths (owner, importer), as it said at start.
clients() { awk '$1 == "clients" { print $2, $3; exit }' "$work/$1.out"; }
start_load l1
point $? "load client l1 runs: $(clients l1)"
start_load l2
point $? "load client l2 runs: $(clients l2)"
systemctl reset-failed dmabrokerd

echo "# $kills x SIGKILL, then 1 x SIGABRT, under load, at least ${pace}s apart. After each restart:"
echo "#  the unit restarted by itself (new MainPID, NRestarts + 1, new unique bus name, not failed);"
echo "#  the kept buffers (marked before the kill) are listed as before (owner, size, backend,"
echo "#  attachments), their Owner and Attachments properties name their clients; the clients"
echo "#  are listed with the same bus name, pid and role; the cpu-client's buffer, owner and"
echo "#  attachment are there; each load client then checks its mappings' bytes, imports a"
echo "#  single-use and a reusable token issued before the kill (same bytes), sees the expired"
echo "#  one refused, makes new calls (allocate, share, import) and gets an id above every one"
echo "#  seen before; every buffer it holds is listed with it as owner or attached importer."
total=$((kills + 1))
last_kill=0
cycle_fail=0
start_loop=$(date +%s)
for k in $(seq $total); do
	sig=KILL
	[ "$k" = "$total" ] && sig=ABRT
	cycle_start=$SECONDS
	phases=""
	t0=$(date +%s%N)
	phase() { local t; t=$(date +%s%N); phases="$phases $1 $(((t - t0) / 1000000))ms"; t0=$t; }
	sleep 0.5 # load between restarts
	ask l1 mark && cp "$work/l1.ans" "$work/l1.mark"
	ask l2 mark && cp "$work/l2.ans" "$work/l2.mark"
	phase mark
	"$ctl" buffers >"$work/pre.buffers" 2>&1
	"$ctl" clients >"$work/pre.clients" 2>&1
	kept=$(awk '$1 == "kept-owned" { print $2 }' "$work/l1.mark" "$work/l2.mark")
	kept_imported=$(awk '$1 == "kept-imported" { print $2 }' "$work/l1.mark" "$work/l2.mark")
	maxid=$( (ids "$work/pre.buffers"; awk '$1 == "maxid" { print $2 }' "$work/l1.mark" "$work/l2.mark") | max_of)
	phase snapshot
	read -r pid restarts < <(systemctl show -p MainPID -p NRestarts --value dmabrokerd | tr '\n' ' ')
	owner=$(broker_owner)
	now=$(date +%s.%N)
	wait_s=$(awk -v a="$last_kill" -v b="$now" -v p="$pace" 'BEGIN { w = a + p - b; print (w > 0 ? w : 0) }')
	sleep "$wait_s"
	last_kill=$(date +%s.%N)
	phase pace
	systemctl kill -s "$sig" dmabrokerd
	errs=()
	[ "$(echo $kept | wc -w)" = 6 ] || errs+=("the clients kept $(echo $kept | wc -w) buffers, not 6: $(grep error "$work/l1.mark" "$work/l2.mark")")
	wait_for 30 sh -c "p=\$(systemctl show -p MainPID --value dmabrokerd); [ \"\$p\" != 0 ] && [ \"\$p\" != $pid ] && systemctl is-active --quiet dmabrokerd" ||
		errs+=("did not come back: $(systemctl is-active dmabrokerd)")
	[ "$(n_restarts)" = $((restarts + 1)) ] || errs+=("NRestarts $restarts -> $(n_restarts)")
	newowner=$(broker_owner)
	[ -n "$newowner" ] && [ "$newowner" != "$owner" ] || errs+=("bus name $owner -> $newowner")
	phase restart
	# Before the clients check anything: what was marked is listed as it was.
	"$ctl" buffers >"$work/post.buffers" 2>&1
	"$ctl" clients >"$work/post.clients" 2>&1
	# One awk for all of it: every fork counts under TCG.
	mapfile -t -O ${#errs[@]} errs < <(awk -v kept="$kept" -v kimp="$kept_imported" \
		-v clients="$(clients l1) $(clients l2)" '
		function entry(file, p) { return e[file, p] }
		FNR == 1 { file++; cur = "" }
		/^\// { cur = $0; e[file, cur] = $0; next }
		cur != "" { e[file, cur] = e[file, cur] "|" $0 }
		END {
			# files: 1 pre.buffers, 2 post.buffers, 3 pre.clients, 4 post.clients
			n = split(kept, k, " ")
			for (i = 1; i <= n; i++)
				if (entry(2, k[i]) == "" || entry(1, k[i]) != entry(2, k[i]))
					print "kept " k[i] " changed: " entry(1, k[i]) " -> " entry(2, k[i])
			n = split(kimp, k, " ")
			for (i = 1; i <= n; i++)
				if (entry(2, k[i]) !~ /\|    \//)
					print "kept import " k[i] " lost its holder: " entry(2, k[i])
			n = split(clients, k, " ")
			for (i = 1; i <= n; i++) {
				a = entry(3, k[i]); b = entry(4, k[i])
				sub(/, holds.*/, "", a); sub(/, holds.*/, "", b)
				if (a == "" || a != b) print "client " k[i] ": " a " -> " b
			}
		}' "$work/pre.buffers" "$work/post.buffers" "$work/pre.clients" "$work/post.clients")
	first=$(echo "$kept" | head -1)
	first_client=$(clients l1 | cut -d' ' -f1)
	bprop "$first" Owner | grep -q "\"$first_client\"" || errs+=("Owner of $first: $(bprop "$first" Owner)")
	bprop "$first" Attachments | grep -q "\"$first_client\"" || errs+=("Attachments of $first: $(bprop "$first" Attachments)")
	h=$(block "$work/post.buffers" "$holder_buffer")
	[[ $h == *"owner uid 0 ($holder_client)"* && $h == *$'\n    '"$holder_client "* ]] ||
		errs+=("cpu-client's $holder_buffer: ${h//$'\n'/|}")
	phase compare
	# The clients check, then hold still while their holdings are compared.
	for l in l1 l2; do
		if ! ask $l check; then
			errs+=("$l did not answer")
			continue
		fi
		cp "$work/$l.ans" "$work/$l.check.$k"
		[ "$(ans $l checked)" = ok ] || errs+=("$l: $(grep -v '^held' "$work/$l.ans" | tr '\n' '|')")
		# A call the kill cut off fails (at most one per client, two per process).
		nerr=$(ans $l errors-since-last-check | awk '{ print $1 }')
		[ "${nerr:-9}" -le 2 ] || errs+=("$l: $(ans $l errors-since-last-check) failed calls")
		newid=$(ans $l new-id | awk '{ print $1 }')
		[ -n "$newid" ] && [ "$newid" -gt "$maxid" ] || errs+=("$l: new id $newid not above $maxid")
	done
	phase check
	"$ctl" buffers >"$work/paused.buffers" 2>&1
	echo "daemon: $(grep -c '^/' "$work/paused.buffers") buffers listed, $(grep -c '^  attachments: none' "$work/paused.buffers") with no attachment; cycle $((SECONDS - cycle_start)) s" >>"$work/summary.$k"
	for l in l1 l2; do
		# Every buffer the client holds: listed, with it as owner or as an attached importer.
		mapfile -t -O ${#errs[@]} errs < <(awk -v l=$l '
			FNR == 1 { file++ }
			file == 1 && $1 == "clients" { ca = $2; cb = $3; next }
			file == 1 && $1 == "held" { held[$2] = $3; next }
			file == 2 && /^\// { cur = $0; e[cur] = $0; next }
			file == 2 && cur != "" { e[cur] = e[cur] "|" $0 }
			END {
				for (b in held) {
					if (held[b] == "owner" && index(e[b], "owner uid 0 (" ca ")") == 0)
						print l " holds " b " as owner: " e[b]
					if (held[b] == "importer" && index(e[b], "|    " cb " ") == 0)
						print l " holds " b " as importer: " e[b]
				}
			}' "$work/$l.ans" "$work/paused.buffers")
		echo "$l: $(grep -c '^held' "$work/$l.ans") held, $(ans $l ops) ops, failed calls since last check: $(ans $l errors-since-last-check)" >>"$work/summary.$k"
	done
	phase held
	echo "phases:$phases" >>"$work/summary.$k"
	echo resume >&"${cfd[l1]}"
	echo resume >&"${cfd[l2]}"
	point "${#errs[@]}" "kill $k (SIG$sig): pid $pid -> $(main_pid), bus name $owner -> $newowner, $(wc -l <"$work/pre.buffers" | tr -d ' ') lines of buffers before, new ids above $maxid"
	if [ ${#errs[@]} != 0 ]; then
		cycle_fail=$((cycle_fail + 1))
		printf '%s\n' "${errs[@]}" | head -10 | diag
	fi
	diag <"$work/summary.$k"
done

echo "# the $total cycles took $(($(date +%s) - start_loop)) s"
point "$([ "$(systemctl is-failed dmabrokerd)" != failed ] && [ "$(n_restarts)" -ge "$total" ]; echo $?)" \
	"$total deaths paced ${pace}s apart never hit the start limit (NRestarts $(n_restarts), $(systemctl is-active dmabrokerd))"
"$cpu" read "$holder_token" >"$work/read.out" 2>&1
point "$([ "$(awk '$1 == "checksum" { print $2 }' "$work/read.out")" = "$holder_sum" ]; echo $?)" \
	"cpu-client's token, issued before all $total kills, imports the same bytes"
point "$(kill -0 $holder; echo $?)" "the cpu-client kept running and holding its mapping"
exec 9>&-
reap $holder cpu-client
for l in l1 l2; do
	stop_load $l
	point $? "$l exits cleanly, no byte changed in any mapping ($(tail -1 "$work/$l.err"))"
done
journalctl -u dmabrokerd --no-pager | grep -iE 'restor' | tail -2 | diag

# --- FdStoreMax: a buffer the store would not take is refused, never served and lost ---
confd=$(dirname "$(find /usr/local/etc /etc -path '*/dmabroker/dmabroker.conf' 2>/dev/null | head -1)")/dmabroker.conf.d
mkdir -p "$confd" /run/systemd/system/dmabrokerd.service.d
printf '[Daemon]\nFdStoreMax=8\n' >"$confd/60-fdstore.conf"
# Keep the two equal, as the unit's comment asks.
printf '[Service]\nFileDescriptorStoreMax=8\n' >/run/systemd/system/dmabrokerd.service.d/60-fdstore.conf
systemctl daemon-reload
systemctl restart dmabrokerd
point "$([ "$(systemctl show -p FileDescriptorStoreMax --value dmabrokerd)" = 8 ]; echo $?)" \
	"FdStoreMax=8 in $confd, FileDescriptorStoreMax=8 in a unit drop-in"
start_load q --idle
ask q "quota 20"
served=$(ans q quota-allocated)
err=$(ans q quota-error)
# 8 entries: the journal's, one kept free for its compaction, and 6 buffers.
point "$([ "${served:-0}" = 6 ] && echo "$err" | grep -q 'QuotaExceeded: FdStoreMax (8)'; echo $?)" \
	"Allocate beyond the store: $served served, then $err"
ask q raw
point "$(ans q raw-error | grep -q '^org.dmabroker.Error.QuotaExceeded .*FdStoreMax'; echo $?)" \
	"on the bus: $(ans q raw-error)"
"$ctl" buffers >"$work/quota.pre" 2>&1
pid=$(main_pid)
systemctl kill -s KILL dmabrokerd
wait_for 30 sh -c "p=\$(systemctl show -p MainPID --value dmabrokerd); [ \"\$p\" != 0 ] && [ \"\$p\" != $pid ] && systemctl is-active --quiet dmabrokerd"
point $? "SIGKILL with the store full: restarted ($pid -> $(main_pid))"
"$ctl" buffers >"$work/quota.post" 2>&1
lost=0
qclient=$(clients q | cut -d' ' -f1)
for b in $(ans q quota-buffer); do
	[ "$(block "$work/quota.pre" "$b")" = "$(block "$work/quota.post" "$b")" ] &&
		block "$work/quota.post" "$b" | grep -q "owner uid 0 ($qclient)" || lost=$((lost + 1))
done
point "$lost" "all $served buffers served under FdStoreMax are back after the kill, as they were ($lost lost)"
# The idle client's first call after the restart: its peer connection died with the old
# daemon; the library must see that before sending, and go to the new one on the bus.
ask q "quota 1"
point "$(ans q quota-error | grep -q 'FdStoreMax'; echo $?)" \
	"an idle client's first call after a restart reaches the daemon: $(ans q quota-error)"
ask q "quota 1"
point "$([ "$(ans q quota-allocated)" = 0 ] && ans q quota-error | grep -q FdStoreMax; echo $?)" \
	"the full store still refuses: $(ans q quota-error)"
stop_load q
# Released buffers must leave the store. (A restart first: it drops what lingers.)
systemctl restart dmabrokerd
start_load c --idle
ask c "churn 20"
point "$([ "$(ans c churn-done)" = 20 ]; echo $?)" \
	"20 rounds of allocate and release, one buffer at a time, fit a store of 8: $(ans c churn-done) done ($(ans c churn-error))"
"$ctl" buffers >"$work/churn.buffers" 2>&1
echo "# after the rounds the daemon lists $(grep -c '^/' "$work/churn.buffers") buffers, $(grep -c '^  attachments: none' "$work/churn.buffers") with no attachment"
stop_load c
rm -f "$confd/60-fdstore.conf" /run/systemd/system/dmabrokerd.service.d/60-fdstore.conf
systemctl daemon-reload

point "$([ "$cycle_fail" = 0 ]; echo $?)" "N = $total deaths under load ($kills SIGKILL, 1 SIGABRT), $cycle_fail with a loss"
journalctl -u dmabrokerd --no-pager -o short-monotonic | tail -8 | diag
finish
