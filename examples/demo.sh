#!/bin/bash
# The broker between real clients: dmabrokerd on a private bus, then a media client (vivid)
# streaming captured frames through broker buffers to a GPU client (vgem) and a CPU client,
# and buffers exported by vgem and vivid adopted and read elsewhere.
# Needs vgem and vivid: run it in the guest (scripts/run-demo does). On a kernel without
# /dev/udmabuf (Debian 12's 6.1), or with 6.1's udmabuf, which has no vmap, it shows what works
# there and checks that what cannot work is refused with its reason (docs/debian-6.1.md).
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

# An expected refusal: the client's error line must give this reason.
refused() {
	local name=$1 why=$2
	grep -q "^error .*$why" "$work/$name.out" ||
		{ echo "demo: $name was not refused for '$why'" >&2; exit 1; }
	echo "  (refused, as it must be on this kernel)"
}

# A stream consumer got every frame of the stream intact.
streamed() {
	grep -q '^done end-of-stream' "$work/$1.out" && ! grep -q '^first-bad' "$work/$1.out" &&
		awk '$1 == "checked" { n = $2; bad = $4 } END { exit !(n == 60 && bad == 0) }' \
			"$work/$1.out" ||
		{ echo "demo: $1 did not check the 60 frames of the stream" >&2; exit 1; }
	echo "  ($1 checked all 60 frames)"
}

# What must work: the GPU client imported the buffer.
imported() {
	grep -q '^gem-handle' "$work/$1.out" || { echo "demo: $1 did not import" >&2; exit 1; }
}

# udmabuf's vmap came with Linux 6.2: vivid (vb2-vmalloc) imports by vmap.
release=$(uname -r)
major=${release%%.*}
minor=${release#*.}
minor=${minor%%.*}
if [ ! -e /dev/udmabuf ]; then
	kernel=no-udmabuf
elif [ "$major" -lt 6 ] || { [ "$major" = 6 ] && [ "$minor" -lt 2 ]; }; then
	kernel=udmabuf-no-vmap
else
	kernel=full
fi

if [ "$kernel" = full ]; then
	say "stream: vivid captures 640x360 YUYV frames into broker buffers and streams them"
	echo "  (each frame fenced with a vgem write fence; consumers wait for it, then check it)"
	start_until media ready "$ex/media-client" stream demo --instance 0 --frames 60 \
		--consumers 2 --fence
	say "GPU client: joins the stream, imports every buffer into vgem (implicit sync)"
	start_until gpu ready "$ex/gpu-client" stream demo
	say "CPU client: joins the stream, waits on each acquire fence, checks the colour bars"
	start_until cpu ready "$ex/cpu-client" stream demo --bars
	wait_for gpu "$pid_gpu" done
	wait_for cpu "$pid_cpu" done
	wait_for media "$pid_media" "ready paused"
	"$build/tools/dmabrokerctl" streams
	for name in media gpu cpu; do
		grep -E '^(sent|checked|first-bad|outstanding|done|error)' "$work/$name.out" |
			sed "s/^/  [$name] /"
	done
	streamed gpu
	streamed cpu
	stream_clients=(media gpu cpu)
else
	if [ "$kernel" = no-udmabuf ]; then
		say "Linux $release has no /dev/udmabuf and no dma-heaps: broker buffers are memfds"
		say "media client: vivid cannot capture into a memfd; the daemon refuses it"
		start media "$ex/media-client" capture --instance 0 --tokens 2
		refused media "cannot import"
	else
		say "Linux $release: udmabuf from kernel-module/udmabuf, which has no vmap"
		say "media client: vivid (vb2-vmalloc) cannot vmap the udmabuf"
		start media "$ex/media-client" capture --instance 0 --tokens 2
		refused media "VIDIOC_QBUF"
	fi

	say "CPU client: allocates and fills a buffer; another CPU client reads it"
	start cpualloc "$ex/cpu-client" allocate --size 1048576 --tokens 2
	"$ex/cpu-client" read "$(nth_token cpualloc 1)" | sed 's/^/  [cpu] /'
	echo "  allocator checksum $(value cpualloc checksum)"

	if [ "$kernel" = no-udmabuf ]; then
		say "GPU client: vgem cannot import a memfd"
		start gpu "$ex/gpu-client" import "$(nth_token cpualloc 2)"
		refused gpu "not a dma-buf"
	else
		say "GPU client: imports the udmabuf into vgem (a static importer: cached path, pinned)"
		start gpu "$ex/gpu-client" import "$(nth_token cpualloc 2)"
		imported gpu
	fi

	say "stream: a CPU producer draws colour bars; a CPU consumer checks every frame"
	start_until cpuprod ready "$ex/cpu-client" stream-produce demo --frames 60
	start_until cpu ready "$ex/cpu-client" stream demo --bars
	wait_for cpu "$pid_cpu" done
	wait_for cpuprod "$pid_cpuprod" "ready paused"
	grep -E '^(sent|checked|first-bad|done|error)' "$work/cpu.out" | sed "s/^/  [cpu] /"
	streamed cpu
	stream_clients=(cpuprod cpu)
fi
# The stream's end: its clients leave, and the producer lets vivid go before anyone else uses
# it. Each client holds the stdin of those started before it: close them all, then wait.
for name in "${stream_clients[@]}"; do
	v=hold_$name
	eval "exec {$v}>&-"
	unset "$v"
done
for name in "${stream_clients[@]}"; do
	p=pid_$name
	wait "${!p}" || { echo "demo: the stream's $name client failed" >&2; exit 1; }
done
"$build/tools/dmabrokerctl" buffers

say "GPU client exports a vgem dumb buffer; the CPU client reads it"
start gpuexp "$ex/gpu-client" export
"$ex/cpu-client" read "$(value gpuexp token)" | sed 's/^/  [cpu] /'
echo "  exporter checksum $(value gpuexp checksum)"

if [ "$kernel" = full ]; then
	say "buffer collection: vivid, vgem and the CPU client each state what they need"
	echo "  (vivid: TRY_FMT's stride and size, REQBUFS' minimum; vgem's client: a stride divisor of 512)"
	start_until colmedia ready "$ex/media-client" collection --instance 0
	start_until colgpu joined "$ex/gpu-client" collection "$(nth_token colmedia 1)" \
		--stride-divisor 512
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
	start_until colcontig "ready captured" "$ex/media-client" collection --instance 1 \
		--participants 1
elif [ "$kernel" = no-udmabuf ]; then
	say "buffer collection: vivid needs dma-bufs, which this kernel cannot make"
	start_until colmedia "ready captured" "$ex/media-client" collection --instance 0 \
		--participants 1
	refused colmedia "needs a dma-buf"
else
	say "buffer collection: a udmabuf for vivid, which cannot vmap it on this kernel"
	start_until colmedia "ready captured" "$ex/media-client" collection --instance 0 \
		--participants 1
	refused colmedia "VIDIOC_QBUF"
fi

say "media client exports a vivid buffer (VIDIOC_EXPBUF); the CPU client reads it"
start mediaexp "$ex/media-client" export --instance 0
"$ex/cpu-client" read "$(value mediaexp token)" --vivid-yuyv 640x360 | sed 's/^/  [cpu] /'
echo "  exporter checksum $(value mediaexp checksum)"

say "media to GPU with devices' own buffers: vgem imports a vivid export (instance 1)"
start mediaexp2 "$ex/media-client" export --instance 1
start gpuimp "$ex/gpu-client" import "$(value mediaexp2 token)"
imported gpuimp
echo "  exporter checksum $(value mediaexp2 checksum)"

say "who holds what"
"$build/tools/dmabrokerctl" clients
"$build/tools/dmabrokerctl" buffers

say "clients leave; the daemon lets go of everything"
for v in hold_cpualloc hold_gpu hold_gpuexp hold_mediaexp hold_mediaexp2 hold_gpuimp \
	hold_colmedia hold_colgpu hold_colcpu hold_colcontig; do
	if [ -n "${!v:-}" ]; then eval "exec {$v}>&-"; fi
done
sleep 1
"$build/tools/dmabrokerctl" status | head -3
if [ -r /sys/kernel/debug/dma_buf/bufinfo ]; then
	echo "  kernel: $(grep -E '^Total' /sys/kernel/debug/dma_buf/bufinfo)"
fi
