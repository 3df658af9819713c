# Shared helpers, reached from a model's run directory as ../scripts/common/perf.sh (madengine's layout).
now_cs() { awk '{ printf "%d", $1 * 100 }' /proc/uptime; }
report() { echo "performance: $1 $2"; }
