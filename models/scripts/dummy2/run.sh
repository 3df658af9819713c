#!/bin/bash
# A model from scripts/dummy2/models.json: its paths are relative to scripts/dummy2/.
. ../scripts/common/perf.sh
iterations=1
while [ $# -gt 0 ]; do
  case "$1" in
    --iterations) iterations=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
echo "model $MAD_MODEL_NAME on $MAD_SYSTEM_GPU_ARCHITECTURE ($MAD_GPU_VENDOR), $MAD_RUNTIME_NGPUS GPU(s): ${MAD_HOST_GPU_IDS:-none}"
cat /etc/madengine-build
i=0
while [ "$i" -lt "$iterations" ]; do
  i=$((i + 1))
  echo "iteration $i/$iterations"
done
report "$((iterations * 1000 + 234)).5" samples_per_second
