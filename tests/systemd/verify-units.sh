#!/bin/bash
# Host test: the installed units pass `systemd-analyze verify`, and the system unit's
# hardening rates 2.0 or lower with `systemd-analyze security`. TAP.
#   verify-units.sh BUILD_DIR
set -uo pipefail
build=$1
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
n=0
failed=0
point() {
	n=$((n + 1))
	if [ "$1" = 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; failed=$((failed + 1)); fi
}

DESTDIR=$stage meson install -C "$build" --no-rebuild --quiet >/dev/null 2>&1
point $? "meson install into a scratch root"
unit=$(find "$stage" -path '*/systemd/system/dmabrokerd.service' | head -1)
user_unit=$(find "$stage" -path '*/systemd/user/dmabrokerd.service' | head -1)
point "$([ -n "$unit" ] && [ -n "$user_unit" ]; echo $?)" "both units are installed"

# The scratch root gets the units ours depend on and the commands it runs, from this system.
mkdir -p "$stage/usr/lib/systemd/system" "$stage/bin"
cp -a /lib/systemd/system/*.target /lib/systemd/system/dbus.socket "$stage/usr/lib/systemd/system/" 2>/dev/null
cp /bin/kill "$stage/bin/"
out=$(systemd-analyze verify --root="$stage" "$unit" 2>&1)
point $? "systemd-analyze verify dmabrokerd.service${out:+: $out}"

# The user manager has no --root: verify a copy whose ExecStart points into the scratch root.
udir=$(mktemp -d)
runtime=$(mktemp -d)
libexec=$(grep -oE 'ExecStart=[^ ]+' "$user_unit" | cut -d= -f2)
sed "s|$libexec|$stage$libexec|" "$user_unit" >"$udir/dmabrokerd.service"
out=$(XDG_RUNTIME_DIR=$runtime SYSTEMD_UNIT_PATH="$udir:" systemd-analyze verify --user \
	"$udir/dmabrokerd.service" 2>&1)
point $? "systemd-analyze verify --user dmabrokerd.service${out:+: $out}"
rm -rf "$udir" "$runtime"

score=$(systemd-analyze security --offline=true --root="$stage" "$unit" 2>/dev/null |
	sed -n 's/.*Overall exposure level for dmabrokerd.service: \([0-9.]*\).*/\1/p')
point "$(awk -v s="${score:-99}" 'BEGIN { exit !(s <= 2.0) }'; echo $?)" \
	"systemd-analyze security rates the system unit ${score:-?} (at most 2.0)"

for f in dbus-1/system.d/org.dmabroker.Broker1.conf dbus-1/system-services/org.dmabroker.Broker1.service \
	dbus-1/services/org.dmabroker.Broker1.service sysusers.d/dmabroker.conf rules.d/70-dmabroker.rules \
	dmabroker/dmabroker.conf; do
	point "$([ -n "$(find "$stage" -path "*/$f" | head -1)" ]; echo $?)" "installs $f"
done
echo "1..$n"
echo "# $((n - failed)) passed, $failed failed"
[ $failed = 0 ]
