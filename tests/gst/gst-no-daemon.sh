#!/bin/bash
# Both elements on this machine with no daemon to reach: the pipeline fails at once with the
# library's reason (no hang, no fallback), and GST_DEBUG=dmabroker*:6 shows the plugin's
# categories.
#   gst-no-daemon.sh PLUGIN_DIR
set -uo pipefail
plugin_dir=${1:?usage: gst-no-daemon.sh PLUGIN_DIR}

if ! command -v gst-launch-1.0 >/dev/null 2>&1; then
	echo "# installing gstreamer1.0-tools" >&2
	apt-get update -qq >&2
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
		gstreamer1.0-tools gstreamer1.0-plugins-base >&2 || exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export GST_REGISTRY_1_0=$work/registry.bin GST_PLUGIN_PATH_1_0=$plugin_dir
export GST_PLUGIN_PATH=$plugin_dir HOME=$work GST_DEBUG_NO_COLOR=1 GST_DEBUG='dmabroker*:6'
# A bus address where nothing listens.
export DMABROKER_BUS_ADDRESS=unix:path=$work/no-bus-here

n=0
failed=0
result() {
	n=$((n + 1))
	if [ "$1" = 0 ]; then
		echo "ok $n - $2"
	else
		failed=1
		echo "not ok $n - $2"
		sed 's/^/# /' "$3" | tail -15
	fi
}

echo "1..6"
for element in dmabrokersink dmabrokersrc; do
	case $element in
	dmabrokersink) pipeline="videotestsrc num-buffers=1 ! dmabrokersink" ;;
	dmabrokersrc) pipeline="dmabrokersrc ! fakesink" ;;
	esac
	log=$work/$element.log
	timeout 60 gst-launch-1.0 $pipeline >"$log" 2>&1
	status=$?
	[ $status != 0 ] && [ $status != 124 ]
	result $? "$element: the pipeline fails (status $status, not a hang)" "$log"
	grep -q "^ERROR: from element .*${element}0: cannot connect to dmabrokerd: " "$log"
	result $? "$element: with the library's reason, from the element" "$log"
	grep -qE " $element +gst$element\.c:[0-9]+:" "$log"
	result $? "$element: GST_DEBUG=dmabroker*:6 shows its category" "$log"
done
exit $failed
