#!/bin/bash
# In the guest: run the selftests in DIR and merge their TAP into one numbered stream.
set -uo pipefail
dir=$1
echo 1024 >/proc/sys/vm/nr_hugepages
echo "# huge pages reserved: $(cat /proc/sys/vm/nr_hugepages)"
n=0
failed=0
for t in udmabuf dmabuf-heap; do
	log=$(mktemp)
	"$dir/$t" >"$log" 2>&1
	status=$?
	while IFS= read -r line; do
		if [[ $line =~ ^(not\ ok|ok)\ [0-9]+\ (-\ )?(.*)$ ]]; then
			n=$((n + 1))
			desc=${BASH_REMATCH[3]}
			if [ "${BASH_REMATCH[1]}" = ok ] || [[ $desc =~ \#\ SKIP ]]; then
				echo "ok $n - $t: $desc"
			else
				echo "not ok $n - $t: $desc"
				failed=$((failed + 1))
			fi
		else
			echo "# $t: $line"
		fi
	done <"$log"
	n=$((n + 1))
	if [ $status = 0 ]; then
		echo "ok $n - $t exits 0"
	else
		echo "not ok $n - $t exits $status"
		failed=$((failed + 1))
	fi
	rm -f "$log"
done
echo "1..$n"
echo "# $((n - failed)) passed, $failed failed"
[ $failed = 0 ]
