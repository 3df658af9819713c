#!/usr/bin/env bash
# One step from a fresh machine to a working checkout: Docker engine, offline base image, the plugin.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/ensure-docker.sh
bash tools/base-image.sh
python3 -m pip install -q -e '.[dev]' 2>&1 | grep -v -i "running pip as the 'root' user" || true
python3 -c 'import pytest_madengine' 
