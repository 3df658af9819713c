#!/bin/bash
# Real CPU work without a GPU: generate N MiB of data, SHA-256 it, report the hashing throughput.
. ../scripts/common/perf.sh
size_mb=${1:-32}
dd if=/dev/urandom of=data.bin bs=1048576 count="$size_mb" 2>/dev/null
start=$(now_cs)
digest=$(sha256sum data.bin | cut -d' ' -f1)
end=$(now_cs)
elapsed=$((end - start))
[ "$elapsed" -gt 0 ] || elapsed=1
echo "sha256 of $size_mb MiB: $digest in $elapsed cs"
report "$(awk -v m="$size_mb" -v cs="$elapsed" 'BEGIN { printf "%.2f", m * 100 / cs }')" MB_per_second
