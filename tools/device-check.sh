#!/usr/bin/env bash
# One prepared check for a real NVIDIA machine (the `device` tool's H200): real nvidia-smi output,
# our detection and report header, -n auto, and, where a Docker engine with the NVIDIA runtime exists,
# GPU passthrough end to end. Not part of CI. Needs the docker SDK wheel in .whl/ when it is missing.
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/device-check}
mkdir -p "$OUT"
if ! python3 -c 'import docker' 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD"
PYTEST=(python3 -m pytest -p pytest_madengine.plugin -p no:cacheprovider)
{
  echo "== host"; uname -a; python3 -c 'import pytest, sys; print(sys.version.split()[0], "pytest", pytest.__version__)'
  echo "== nvidia-smi, the formats our fakes imitate"
  nvidia-smi --query-gpu=index,name,uuid,compute_cap,driver_version --format=csv,noheader,nounits
  nvidia-smi -L
  echo "== detection"
  python3 - <<'PY'
import json, time
from pytest_madengine.gpus.detect import detect_gpus
t = time.monotonic(); d = detect_gpus(); took = time.monotonic() - t
print(json.dumps(d.to_dict())); print(d.header_line()); print(f"detection took {took:.2f} s")
assert d.vendor == "NVIDIA" and d.gpus and d.gpus[0].arch.startswith("sm_"), "no NVIDIA GPU detected"
print("DETECTION OK")
PY
  echo "== report header and collected archs"
  "${PYTEST[@]}" --collect-only models/ 2>&1 | head -20
  echo "== -n auto"
  "${PYTEST[@]}" -n auto --collect-only -q models/ 2>&1 | grep -E "workers?|collected" | head -3
  echo "== docker engine with NVIDIA runtime?"
  for tool in docker dockerd containerd runc nvidia-container-cli nvidia-ctk; do printf '%s: %s\n' "$tool" "$(command -v $tool || echo missing)"; done
  ls -l /dev/nvidia* 2>&1 | head
  if docker info >/dev/null 2>&1; then
    echo "== passthrough end to end"
    "${PYTEST[@]}" -rA models/models.json -k dummy 2>&1 | tail -20
  else
    echo "PASSTHROUGH NOT TESTED: no Docker engine answers on this machine"
  fi
  echo "== detection unit tests on this host"
  "${PYTEST[@]}" -q tests/test_gpu_detect.py tests/test_models.py 2>&1 | tail -3
} 2>&1 | tee "$OUT/device-check.log"
