#!/usr/bin/env bash
# One step from a fresh machine to a working checkout: Docker engine, offline base image, the plugin.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/ensure-docker.sh
bash tools/base-image.sh
# The push/pull tests serve Debian's docker-registry on 127.0.0.1 with htpasswd auth.
if ! command -v docker-registry >/dev/null 2>&1 || ! command -v htpasswd >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-registry apache2-utils >/dev/null
fi
python3 -m pip install -q -e '.[dev]' 2>&1 | grep -v -i "running pip as the 'root' user" || true
python3 -c 'import pytest_madengine' 
