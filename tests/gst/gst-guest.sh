#!/bin/bash
# The GStreamer plugin on a real kernel (run by vm-run in the guest; one boot for all of it):
# vivid captures into the broker's buffers with v4l2src io-mode=dmabuf-import and
# dmabrokersink, and dmabrokersrc consumers in other processes (and another uid) get every
# frame as the broker's dma-buf, bit for bit the frame a plain mmap capture gives for the same
# sequence number.
#   gst-guest.sh BUILD_DIR
# On the host it installs what the guest runs from this machine's root (GStreamer's tools and
# plugins, v4l-utils) when missing, then boots the guest with itself as the command.
set -uo pipefail
build=${1:?usage: gst-guest.sh BUILD_DIR}
build=$(cd "$build" && pwd)

if [ -z "${DMABROKER_VM_RESULTS:-}" ]; then
	here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
	missing=()
	for p in gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good v4l-utils; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
			missing+=("$p")
	done
	if [ ${#missing[@]} -gt 0 ]; then
		echo "# installing ${missing[*]}" >&2
		apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends "${missing[@]}" >&2 || exit 1
	fi
	exec "$here/../vm/vm-run" --timeout 900 -- "$here/gst-guest.sh" "$build"
fi
frames_bin=$build/tests/gst/gst-frames
ctl=$build/tools/dmabrokerctl
work=$(mktemp -d)
chmod 755 "$work"
pids=()

# 320x180 (vivid's smallest webcam size) at 10 fps: TCG keeps up, so vivid drops nothing.
caps="video/x-raw,format=YUY2,width=320,height=180,framerate=10/1"
# The reference runs longer: a frame dropped in the stream's run (no buffer free in time)
# moves its later frames to higher sequence numbers.
ref_frames=200
stream_frames=150
nobody=65534

cleanup() {
	for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done
	wait 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT

n=0
failed=0
ok() {
	n=$((n + 1))
	echo "ok $n - $1"
}
not_ok() {
	n=$((n + 1))
	failed=1
	echo "not ok $n - $1"
	shift
	for f in "$@"; do [ -f "$f" ] && tail -25 "$f" | sed "s|^|# $(basename "$f"): |"; done
	return 0
}
# expect DESCRIPTION COMMAND...: ok when the command succeeds.
expect() {
	local what=$1
	shift
	if "$@"; then ok "$what"; else not_ok "$what"; fi
}
bail() {
	echo "Bail out! $*"
	exit 1
}

# GStreamer in a read-only root: a registry of our own, and only the plugins used here, so
# that the first scan under TCG stays short.
mkdir -p "$work/plugins" "$work/home"
chmod 777 "$work/home"
for p in coreelements video4linux2; do
	f=$(ls /usr/lib/x86_64-linux-gnu/gstreamer-1.0/libgst$p.so 2>/dev/null) ||
		bail "no GStreamer plugin $p (gstreamer1.0-plugins-base/good)"
	ln -s "$f" "$work/plugins/"
done
export GST_PLUGIN_SYSTEM_PATH_1_0=$work/plugins GST_PLUGIN_PATH_1_0=$build/gst
export GST_REGISTRY_1_0=$work/home/registry.bin HOME=$work/home
export GST_REGISTRY_FORK=no
export GST_DEBUG=${GST_DEBUG:-dmabroker*:4}

# dmabrokerd on a private bus, as the demo runs it.
cat >"$work/bus.conf" <<CONF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig><type>session</type><listen>unix:dir=$work</listen><auth>EXTERNAL</auth>
<policy context="default"><allow user="*"/><allow own="*"/>
<allow send_destination="*" eavesdrop="true"/><allow eavesdrop="true"/></policy></busconfig>
CONF
dbus-daemon --config-file="$work/bus.conf" --nofork --print-address=3 3>"$work/address" \
	2>"$work/dbus.err" &
pids+=($!)
for _ in $(seq 100); do [ -s "$work/address" ] && break; sleep 0.1; done
[ -s "$work/address" ] || bail "the private bus did not start"
export DMABROKER_BUS_ADDRESS=$(head -1 "$work/address")
"$build/daemon/dmabrokerd" --address="$DMABROKER_BUS_ADDRESS" --config=/dev/null \
	>"$work/daemon.log" 2>&1 &
pids+=($!)
for _ in $(seq 300); do "$ctl" status >/dev/null 2>&1 && break; sleep 0.1; done
"$ctl" status >/dev/null 2>&1 || bail "dmabrokerd did not answer"

# vivid's capture nodes: instance 0 on vb2-vmalloc, 1 on vb2-dma-contig.
node_of() {
	local d
	for d in /sys/class/video4linux/video*; do
		[ "$(cat "$d/name" 2>/dev/null)" = "vivid-00$1-vid-cap" ] && echo "/dev/$(basename "$d")" && return
	done
}
dev0=$(node_of 0)
dev1=$(node_of 1)
[ -n "$dev0" ] && [ -n "$dev1" ] || bail "no vivid capture nodes (instances 0 and 1)"
grep -q '^0,1' /sys/module/vivid/parameters/allocators ||
	bail "vivid is not on allocators 0,1: $(cat /sys/module/vivid/parameters/allocators)"

# gst-frames in the background: run NAME [--as-nobody] PIPELINE; its lines go to NAME.out.
run() {
	local name=$1
	shift
	local prefix=()
	if [ "$1" = --as-nobody ]; then
		prefix=(setpriv --reuid=$nobody --regid=$nobody --clear-groups
			env HOME="$work/home/$name" GST_REGISTRY_1_0="$work/home/$name/registry.bin")
		mkdir -p "$work/home/$name"
		chown $nobody "$work/home/$name"
		shift
	fi
	"${prefix[@]}" "$frames_bin" --timeout 400 "$1" >"$work/$name.out" 2>"$work/$name.err" &
	pids+=($!)
	eval "pid_$name=$!"
}
# wait_for NAME PATTERN [COUNT] [SECONDS]: until NAME.out has COUNT lines matching PATTERN.
wait_for() {
	local name=$1 pattern=$2 count=${3:-1} secs=${4:-120} i
	for ((i = 0; i < secs * 10; i++)); do
		[ "$(grep -cE "$pattern" "$work/$name.out" 2>/dev/null)" -ge "$count" ] && return 0
		grep -q '^error' "$work/$name.out" 2>/dev/null && return 1
		sleep 0.1
	done
	return 1
}
# finish NAME: waits for it and gives its exit status.
finish() {
	local pid
	eval "pid=\$pid_$1"
	wait "$pid"
}
frames() { grep '^frame ' "$work/$1.out"; }

echo "1..24"

# --- vivid: a moving pattern (colour bars moving right), no on-screen text ---
if v4l2-ctl -d "$dev0" -c osd_text_mode=2,horizontal_movement=5 2>"$work/ctl.err" &&
	v4l2-ctl -d "$dev0" -C osd_text_mode | grep -q ': 2' &&
	v4l2-ctl -d "$dev0" -C horizontal_movement | grep -q ': 5'; then
	ok "vivid $dev0: OSD text off, the pattern moves"
else
	not_ok "vivid $dev0: OSD text off, the pattern moves" "$work/ctl.err"
fi

# --- the reference: a plain mmap capture, one checksum per sequence number ---
run ref "v4l2src device=$dev0 io-mode=mmap num-buffers=$ref_frames ! $caps ! fakesink name=check sync=false"
finish ref
status=$?
frames ref | awk '{print $2, $3}' >"$work/ref.sums"
if [ $status = 0 ] && [ "$(wc -l <"$work/ref.sums")" = $ref_frames ]; then
	ok "reference: $ref_frames frames captured with io-mode=mmap"
else
	not_ok "reference: $ref_frames frames captured with io-mode=mmap" "$work/ref.out" "$work/ref.err"
fi
# v4l2src's offset is the driver's sequence number. Under TCG vivid's thread may be late and
# skip one; where, is said here, and whether the stream's span has them all is asserted below.
ref_gaps=$(awk 'NR > 1 && $1 != prev + 1 {printf "%s%d..%d", sep, prev + 1, $1 - 1; sep = ", "}
	{prev = $1}' "$work/ref.sums")
echo "# reference: sequence numbers $(awk 'NR == 1 {print $1}' "$work/ref.sums")..$(awk 'END {print $1}' "$work/ref.sums"), missing: ${ref_gaps:-none}"
# Frame k and frame k+1 differ: a frame of the wrong sequence number cannot pass for it.
same=$(awk 'NR > 1 && $2 == prev {n++} {prev = $2} END {print n + 0}' "$work/ref.sums")
distinct=$(awk '{print $2}' "$work/ref.sums" | sort -u | wc -l)
if [ "$same" = 0 ] && [ "$distinct" -gt 1 ]; then
	ok "reference: every frame differs from the one before ($distinct distinct checksums)"
else
	not_ok "reference: every frame differs from the one before ($same repeats)" "$work/ref.sums"
fi

# --- the stream: the producer, consumers joining, one killed, one of another uid ---
run prod "v4l2src device=$dev0 io-mode=dmabuf-import num-buffers=$stream_frames ! $caps ! dmabrokersink stream-name=cam device=$dev0 tokens=1"
if wait_for prod '^stream cam ' 1 120 && wait_for prod '^token ' 1 10; then
	ok "producer: dmabrokersink made the stream and a token"
else
	not_ok "producer: dmabrokersink made the stream and a token" "$work/prod.out" "$work/prod.err"
fi
token=$(awk '/^token / {print $2; exit}' "$work/prod.out")
# The exporter /proc shows for the backend the broker chose: udmabuf, or a dma-heap's name.
backend=$(awk '/^stream / {print $5; exit}' "$work/prod.out")
case $backend in
udmabuf) exporter=udmabuf ;;
dma-heap:*) exporter=${backend#dma-heap:} ;;
*) exporter="not-a-dma-buf-backend:$backend" ;;
esac
# The stride negotiated: vivid's bytesperline for the caps (2 bytes a pixel), which the sink
# asked of the device.
stride=$(v4l2-ctl -d "$dev0" --try-fmt-video width=320,height=180,pixelformat=YUYV 2>/dev/null |
	awk -F: '/Bytes per Line/ {gsub(/ /, "", $2); print $2}')
[ -n "$stride" ] || stride="unknown:vivid-said-nothing"

run a "dmabrokersrc stream-name=cam ! fakesink name=check sync=false"
run killed "dmabrokersrc stream-name=cam ! fakesink name=check sync=false"
run other --as-nobody "dmabrokersrc token=$token ! fakesink name=check sync=false"
wait_for a '^frame ' 5 120
wait_for killed '^frame ' 3 60
before_kill=$(frames a | wc -l)
kill -9 "$pid_killed"
wait "$pid_killed" 2>/dev/null
# A second consumer of this uid joins mid-stream; a consumer of another uid without a token
# is refused.
run b "dmabrokersrc stream-name=cam ! fakesink name=check sync=false"
run refused --as-nobody "dmabrokersrc stream-name=cam ! fakesink name=check sync=false"
finish refused
refused_status=$?
wait_for b '^frame ' 3 120
finish prod
prod_status=$?
finish a
a_status=$?
finish b
b_status=$?
finish other
other_status=$?

if [ $prod_status = 0 ] && grep -q '^eos' "$work/prod.out"; then
	ok "producer: $stream_frames frames, then end of stream"
else
	not_ok "producer: $stream_frames frames, then end of stream" "$work/prod.out" "$work/prod.err"
fi
if grep -q 'every buffer is back' "$work/prod.err"; then
	ok "producer: at the end every buffer came back from the consumers"
else
	not_ok "producer: at the end every buffer came back from the consumers" "$work/prod.err"
fi
for c in a b other; do
	eval "status=\$${c}_status"
	if [ "$status" = 0 ] && grep -q '^eos' "$work/$c.out" && [ "$(frames $c | wc -l)" -gt 0 ]; then
		ok "consumer $c: $(frames $c | wc -l) frames, then EOS"
	else
		not_ok "consumer $c: frames, then EOS (status $status)" "$work/$c.out" "$work/$c.err"
	fi
done

# Frame k of every consumer is reference frame k, and the broker's dma-buf.
compare() {
	awk 'NR == FNR {ref[$1] = $2; next}
	     $1 == "frame" {n++; if (!($2 in ref)) {print "no reference frame " $2; bad++}
	                    else if (ref[$2] != $3) {print "frame " $2 ": " $3 " != " ref[$2]; bad++}}
	     END {if (!n) {print "no frames"; bad++}; exit bad > 0}' "$work/ref.sums" "$work/$1.out"
}
for c in a b other killed; do
	if compare $c >"$work/$c.cmp"; then
		ok "consumer $c: every frame is the reference frame of its sequence number"
	else
		not_ok "consumer $c: every frame is the reference frame of its sequence number" "$work/$c.cmp"
	fi
done
for c in a b other; do
	bad=$(frames $c | grep -vc " dmabuf=1 exp=$exporter name=cam stride=$stride\$")
	if [ "$bad" = 0 ]; then
		ok "consumer $c: every frame is a dma-buf the broker made ($backend, exporter $exporter, named cam), its GstVideoMeta of the negotiated stride $stride"
	else
		not_ok "consumer $c: $bad frames are not the broker's dma-buf" "$work/$c.out"
	fi
done
# The reference has every sequence number the consumers saw, from the first to the last.
span=$(cat "$work"/{a,b,other,killed}.out | awk '$1 == "frame" {if (!n++ || $2 < lo) lo = $2; if ($2 > hi) hi = $2}
	END {print lo, hi}')
missing=$(awk -v lo="${span% *}" -v hi="${span#* }" '{have[$1] = 1}
	END {for (k = lo; k <= hi; k++) if (!(k in have)) n++; print n + 0}' "$work/ref.sums")
if [ -n "${span% *}" ] && [ "$missing" = 0 ]; then
	ok "reference: every sequence number of the stream's span (${span% *}..${span#* }) was captured"
else
	not_ok "reference: $missing sequence numbers of the stream's span (${span:-none}) missing" "$work/ref.sums"
fi
# Not asserted: how many sequence numbers vivid skipped while the stream ran (no buffer free).
echo "# consumer a saw sequence numbers $(frames a | head -1 | awk '{print $2}')..$(frames a | tail -1 | awk '{print $2}') with $(frames a | awk 'NR > 1 && $2 != prev + 1 {n++} {prev = $2} END {print n + 0}') gaps"
after_kill=$(frames a | wc -l)
if [ "$after_kill" -gt "$before_kill" ] && [ "$(frames a | tail -1 | awk '{print $2}')" -ge $((stream_frames - 3)) ]; then
	ok "SIGKILL of a consumer: the capture went on ($before_kill frames before, $after_kill in all)"
else
	not_ok "SIGKILL of a consumer: the capture went on ($before_kill before, $after_kill in all)" "$work/a.out" "$work/prod.err"
fi
first_a=$(frames a | head -1 | awk '{print $2}')
first_b=$(frames b | head -1 | awk '{print $2}')
if [ -n "$first_b" ] && [ "$first_b" -gt "$first_a" ]; then
	ok "consumer b joined mid-stream (first frame $first_b, a's $first_a)"
else
	not_ok "consumer b joined mid-stream (first frame ${first_b:-none}, a's $first_a)" "$work/b.out"
fi
if [ $refused_status != 0 ] && grep -q '^error Cannot join the stream cam' "$work/refused.out"; then
	ok "another uid without a token is refused: $(grep '^error' "$work/refused.out" | cut -c7-)"
else
	not_ok "another uid without a token is refused (status $refused_status)" "$work/refused.out" "$work/refused.err"
fi

# Every process is gone: the daemon holds nothing.
sleep 1
"$ctl" status >"$work/status" 2>&1
"$ctl" streams >>"$work/status" 2>&1
if grep -qE '^Clients: +0$' "$work/status" && grep -qE '^Buffers: +0 ' "$work/status" &&
	grep -q '^no streams$' "$work/status"; then
	ok "after the stream the daemon's counts are back to zero (no client, buffer or stream)"
else
	not_ok "after the stream the daemon's counts are back to zero" "$work/status"
fi

# --- contiguity: vivid's dma-contig instance, a frame larger than a huge page ---
big="video/x-raw,format=YUY2,width=1920,height=1080"
run contig "v4l2src device=$dev1 io-mode=dmabuf-import num-buffers=3 ! $big ! dmabrokersink stream-name=big device=$dev1"
finish contig
contig_status=$?
first_error=$(grep -m1 '^error' "$work/contig.out" | cut -c7-)
if [ $contig_status = 1 ] && grep -q 'dmabrokerd refused the buffers' <<<"$first_error" &&
	grep -qi 'contiguous' <<<"$first_error"; then
	ok "1920x1080 on dma-contig vivid: refused at negotiation with the broker's reason: $first_error"
else
	not_ok "1920x1080 on dma-contig vivid: refused at negotiation with the broker's reason (status $contig_status)" "$work/contig.out" "$work/contig.err"
fi
if [ "$(frames contig | wc -l)" = 0 ] && ! grep -q '^stream ' "$work/contig.out"; then
	ok "the refused pipeline made no stream and no frame (no silent fallback)"
else
	not_ok "the refused pipeline made no stream and no frame" "$work/contig.out"
fi
"$ctl" status >"$work/status" 2>&1
if grep -qE '^Buffers: +0 ' "$work/status"; then
	ok "after the refusal the daemon holds no buffer"
else
	not_ok "after the refusal the daemon holds no buffer" "$work/status"
fi
exit $failed
