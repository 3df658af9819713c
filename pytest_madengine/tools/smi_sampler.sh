#!/bin/bash
# Written for pytest-madengine: samples power and VRAM with rocm-smi (or amd-smi) every
# $MAD_SMI_INTERVAL_S seconds into $MAD_TOOL_OUTPUT/<tool>_samples.csv while the model runs.
action=$1 tool=${2:-rocm-smi}
pidfile="$MAD_TOOL_OUTPUT/.${tool}.pid"
case "$action" in
  start)
    mkdir -p "$MAD_TOOL_OUTPUT"
    command -v rocm-smi >/dev/null || { echo "rocm-smi is not in the image" >&2; exit 1; }
    ( while true; do
        printf '%s,' "$(date +%s)"; rocm-smi --showpower --showmeminfo vram --csv 2>/dev/null | tail -n +2 | tr '\n' ';'; echo
        sleep "${MAD_SMI_INTERVAL_S:-1}"
      done ) > "$MAD_TOOL_OUTPUT/${tool}_samples.csv" &
    echo $! > "$pidfile" ;;
  stop)
    [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null; rm -f "$pidfile" ;;
esac
