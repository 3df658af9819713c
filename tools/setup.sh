#!/usr/bin/env bash
# One step from a fresh machine to a working checkout: Docker engine, offline base image, the plugin.
# With --test, also what the test suite needs: a local registry, SLURM and munge, a headless browser.
set -euo pipefail
for_tests=${1:-}
cd "$(dirname "$0")/.."
bash tools/ensure-docker.sh
bash tools/base-image.sh
if [ "$for_tests" = --test ]; then
# The push/pull tests serve Debian's docker-registry on 127.0.0.1 with htpasswd auth.
if ! command -v docker-registry >/dev/null 2>&1 || ! command -v htpasswd >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-registry apache2-utils >/dev/null
fi
# The SLURM tests start their own cluster on this host (tools/slurm-cluster.sh).
if ! command -v slurmctld >/dev/null 2>&1 || ! command -v munged >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
fi
# The results history is tested on a real PostgreSQL too (tools/postgres.sh starts it on a local port).
if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
# The HTML report is checked in a real headless browser.
if ! command -v chromium >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
fi
python3 -m pip install -q -e '.[dev]' 2>&1 | grep -v -i "running pip as the 'root' user" || true
python3 -c 'import pytest_madengine' 

# An editable install compiles nothing and, under PYTHONDONTWRITEBYTECODE, nothing is cached: every
# pytest session would compile the plugin's modules again. A wheel install compiles them; so do we.
python3 -m compileall -q pytest_madengine >/dev/null
