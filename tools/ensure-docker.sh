#!/usr/bin/env bash
# Make sure a Docker engine answers; start Debian's dockerd when none does.
set -euo pipefail
if docker info >/dev/null 2>&1; then exit 0; fi
if ! command -v dockerd >/dev/null 2>&1; then
  echo "ensure-docker: no engine answers; installing Debian's docker.io" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
fi
if ! docker info >/dev/null 2>&1; then
  echo "ensure-docker: starting dockerd in the background (log: /tmp/dockerd.log)" >&2
  nohup dockerd >/tmp/dockerd.log 2>&1 &
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && exit 0
    sleep 1
  done
  echo "ensure-docker: dockerd did not answer within 60 s; see /tmp/dockerd.log" >&2
  tail -20 /tmp/dockerd.log >&2 || true
  exit 1
fi
