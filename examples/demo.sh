#!/bin/bash
# The broker between real clients: dmabrokerd on a private bus, then a media client (vivid)
# capturing into a broker buffer, a CPU client reading that frame, a GPU client (vgem)
# importing it, and buffers exported by vgem and vivid adopted and read elsewhere.
# Needs /dev/udmabuf, vgem and vivid: run it in the guest (scripts/run-demo does).
set -euo pipefail
build=${1:?usage: demo.sh BUILD_DIR}
build=$(cd "$build" && pwd)
ex=$build/examples
work=$(mktemp -d)
chmod 755 "$work"
pids=()

cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT
# Writing to a client that has died must not end the demo.
trap '' PIPE

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

cat >"$work/bus.conf" <<CONF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig><type>session</type><listen>unix:dir=$work</listen><auth>EXTERNAL</auth>
<policy context="default"><allow user="*"/><allow own="*"/>
<allow send_destination="*" eavesdrop="true"/><allow eavesdrop="true"/></policy></busconfig>
CONF
dbus-daemon --config-file="$work/bus.conf" --nofork --print-address=3 3>"$work/address" 2>/dev/null &
pids+=($!)
while [ ! -s "$work/address" ]; do sleep 0.1; done
export DMABROKER_BUS_ADDRESS=$(head -1 "$work/address")
"$build/daemon/dmabrokerd" --address="$DMABROKER_BUS_ADDRESS" --config=/dev/null &
pids+=($!)
until "$build/tools/dmabrokerctl" status >/dev/null 2>&1; do sleep 0.1; done

say "dmabrokerd is up"
"$build/tools/dmabrokerctl" status

# Waits until client NAME (process PID) printed a line starting with WORD, or failed.
wait_for() {
	local name=$1 pid=$2 word=$3
	until grep -qE "^($word|error)" "$work/$name.out" 2>/dev/null; do
		if ! kill -0 "$pid" 2>/dev/null; then break; fi
		sleep 0.1
	done
}

# Starts a client in the background with its stdin held open; its "key value" lines go to a
# file; waits until it says WORD (start: until it holds) or failed.
start_until() {
	local name=$1 word=$2
	shift 2
	mkfifo "$work/$name.in"
	"$@" <"$work/$name.in" >"$work/$name.out" 2>"$work/$name.err" &
	pids+=($!)
	eval "pid_$name=${pids[-1]}"
	exec {fd}>"$work/$name.in"
	eval "hold_$name=$fd"
	wait_for "$name" "${pids[-1]}" "$word"
	sed "s/^/  [$name] /" "$work/$name.out"
	if grep -q '^error' "$work/$name.out"; then
		sed "s/^/  [$name] /" "$work/$name.err"
	fi
}
start() {
	local name=$1
	shift
	start_until "$name" ready "$@"
}
# Tells a waiting client to go on, waits until it says WORD, and shows what it said since.
go_until() {
	local name=$1 word=$2 pid fd seen
	eval "pid=\$pid_$name fd=\$hold_$name"
	seen=$(wc -l <"$work/$name.out")
	echo go >&"$fd" || true # a client that failed has gone: SIGPIPE is ignored
	until [ "$(grep -cE "^($word|error)" "$work/$name.out")" -gt "$(head -n "$seen" "$work/$name.out" | grep -cE "^($word|error)")" ]; do
		if ! kill -0 "$pid" 2>/dev/null; then break; fi
		sleep 0.1
	done
	tail -n +"$((seen + 1))" "$work/$name.out" | grep -v '^vivid-bar' | sed "s/^/  [$name] /"
}
value() { awk -v k="$2" '$1 == k { print $2; exit }' "$work/$1.out"; }
nth_token() { awk '$1 == "token" { print $2 }' "$work/$1.out" | sed -n "$2p"; }

say "media client: vivid captures a 640x360 YUYV frame into a broker udmabuf"
start media "$ex/media-client" capture --instance 0 --tokens 2

say "CPU client: imports the frame and recognises vivid's colour bars"
"$ex/cpu-client" read "$(nth_token media 1)" --vivid-yuyv 640x360 | sed 's/^/  [cpu] /'

say "GPU client: imports the same buffer into vgem (a static importer: cached path, pinned)"
start gpu "$ex/gpu-client" import "$(nth_token media 2)"
"$build/tools/dmabrokerctl" buffers

say "GPU client exports a vgem dumb buffer; the CPU client reads it"
start gpuexp "$ex/gpu-client" export
"$ex/cpu-client" read "$(value gpuexp token)" | sed 's/^/  [cpu] /'
echo "  exporter checksum $(value gpuexp checksum)"

say "buffer collection: vivid, vgem and the CPU client each state what they need"
echo "  (vivid: TRY_FMT's stride and size, REQBUFS' minimum; vgem's client: a stride divisor of 512)"
start_until colmedia ready "$ex/media-client" collection --instance 0
start_until colgpu joined "$ex/gpu-client" collection "$(nth_token colmedia 1)" --stride-divisor 512
start_until colcpu joined "$ex/cpu-client" collection "$(nth_token colmedia 2)"
wait_for colmedia "$pid_colmedia" "ready captured"
sed -n '/^ready negotiating/,$p' "$work/colmedia.out" | tail -n +2 | sed "s/^/  [colmedia] /"
wait_for colgpu "$pid_colgpu" ready
wait_for colcpu "$pid_colcpu" ready
"$build/tools/dmabrokerctl" collections
say "the camera filled every buffer; vgem imports each, the CPU client checks each"
go_until colgpu done
go_until colcpu done

say "vivid's dma-contig instance needs physically contiguous memory"
start_until colcontig error "$ex/media-client" collection --instance 1 --participants 1

say "media client exports a vivid buffer (VIDIOC_EXPBUF); the CPU client reads it"
start mediaexp "$ex/media-client" export --instance 0
"$ex/cpu-client" read "$(value mediaexp token)" --vivid-yuyv 640x360 | sed 's/^/  [cpu] /'
echo "  exporter checksum $(value mediaexp checksum)"

say "who holds what"
"$build/tools/dmabrokerctl" clients
"$build/tools/dmabrokerctl" buffers

say "clients leave; the daemon lets go of everything"
for v in hold_media hold_gpu hold_gpuexp hold_mediaexp hold_colmedia hold_colgpu hold_colcpu \
	hold_colcontig; do eval "exec {$v}>&-"; done
sleep 1
"$build/tools/dmabrokerctl" status | head -3
if [ -r /sys/kernel/debug/dma_buf/bufinfo ]; then
	echo "  kernel: $(grep -E '^Total' /sys/kernel/debug/dma_buf/bufinfo)"
fi
