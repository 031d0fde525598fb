#!/bin/bash
# gst-inspect-1.0 on the plugin in the build tree: both elements, their pads, their properties
# and their metadata, read from the built module (not an installed one). The GStreamer tools
# are installed when they are missing, as vm-run installs qemu: this test does not skip.
#   gst-inspect.sh PLUGIN_DIR
set -euo pipefail
plugin_dir=${1:?usage: gst-inspect.sh PLUGIN_DIR}

if ! command -v gst-inspect-1.0 >/dev/null 2>&1; then
	echo "# installing gstreamer1.0-tools" >&2
	apt-get update -qq >&2
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
		gstreamer1.0-tools gstreamer1.0-plugins-base >&2
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# A registry of our own: nothing read from (or written to) the caller's.
export GST_REGISTRY_1_0=$work/registry.bin GST_PLUGIN_PATH_1_0=$plugin_dir
export GST_PLUGIN_PATH=$plugin_dir HOME=$work

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
	[ -n "${2:-}" ] && sed 's/^/# /' "$2"
	return 0
}
# check DESCRIPTION FILE PATTERN: the output in FILE has a line matching PATTERN (ERE).
check() {
	if grep -qE -- "$3" "$2"; then ok "$1"; else not_ok "$1" "$2"; fi
}

echo "1..29"
if gst-inspect-1.0 dmabroker >"$work/plugin" 2>&1; then
	ok "gst-inspect-1.0 dmabroker loads the plugin"
else
	not_ok "gst-inspect-1.0 dmabroker loads the plugin" "$work/plugin"
fi
check "it is the build tree's module" "$work/plugin" "Filename +$plugin_dir/libgstdmabroker\.so"
check "the plugin lists dmabrokersink" "$work/plugin" "^ +dmabrokersink: dmabroker stream sink"
check "the plugin lists dmabrokersrc" "$work/plugin" "^ +dmabrokersrc: dmabroker stream source"
check "the plugin's license is MIT" "$work/plugin" "License +MIT/X11"

for element in dmabrokersink dmabrokersrc; do
	if gst-inspect-1.0 "$element" >"$work/$element" 2>&1; then
		ok "gst-inspect-1.0 $element"
	else
		not_ok "gst-inspect-1.0 $element" "$work/$element"
	fi
done

s=$work/dmabrokersink
check "dmabrokersink: klass Sink/Video" "$s" "Klass +Sink/Video"
check "dmabrokersink: a sink pad template of raw video" "$s" "^ +SINK template: 'sink'"
check "dmabrokersink: its caps are video/x-raw" "$s" "^ +video/x-raw$"
check "dmabrokersink: YUY2 among its formats" "$s" "format: .*YUY2"
check "dmabrokersink: an always sink pad" "$s" "^ +SINK: 'sink'"
for p in stream-name mode device contiguous max-segment-size tokens; do
	check "dmabrokersink: property $p, described" "$s" "^ +$p +: [A-Z]"
done
check "dmabrokersink: mode is an enum of fifo and latest" "$s" '\(1\): latest'
check "dmabrokersink: a GstBaseSink" "$s" "GstBaseSink"

s=$work/dmabrokersrc
check "dmabrokersrc: klass Source/Video" "$s" "Klass +Source/Video"
check "dmabrokersrc: a src pad template of raw video" "$s" "^ +SRC template: 'src'"
check "dmabrokersrc: an always src pad" "$s" "^ +SRC: 'src'"
for p in stream-name token max-held required; do
	check "dmabrokersrc: property $p, described" "$s" "^ +$p +: [A-Z]"
done
check "dmabrokersrc: a GstPushSrc" "$s" "GstPushSrc"
check "dmabrokersrc: the token is a string" "$s" 'String\. Default: null'
exit $failed
