#!/usr/bin/env bash
# A PostgreSQL server for the tests, on 127.0.0.1 and a free port, its data in one directory;
# `stop` kills what `start` started, by pid.
#
#   bash tools/postgres.sh start DIR     # prints the URL of its `history` database
#   bash tools/postgres.sh stop DIR
#
# Needs Debian's postgresql package (tools/setup.sh --test installs it). The server runs as the
# `postgres` user (it refuses root), with trust authentication on the loopback address only.
set -euo pipefail
action=${1:?start or stop}
dir=$(realpath -m "${2:?a directory for the server}")
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
as_postgres() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

if [ "$action" = stop ]; then
  # The postmaster's own pid (data/postmaster.pid), then the wrapper that started it as postgres.
  for pid in $(head -n 1 "$dir/data/postmaster.pid" 2>/dev/null) $(cat "$dir/server.pid" 2>/dev/null); do
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
  rm -f "$dir/server.pid"
  exit 0
fi

mkdir -p "$dir"
[ "$(id -u)" = 0 ] && chown postgres "$dir"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
[ -f "$dir/data/PG_VERSION" ] || as_postgres "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 >"$dir/initdb.log"
as_postgres "$bin/postgres" -D "$dir/data" -p "$port" -k "$dir" -c listen_addresses=127.0.0.1 -c fsync=off \
  >"$dir/server.log" 2>&1 &
echo $! >"$dir/server.pid"
for _ in $(seq 100); do
  "$bin/pg_isready" -q -h 127.0.0.1 -p "$port" && break
  sleep 0.1
done
"$bin/pg_isready" -q -h 127.0.0.1 -p "$port" || { cat "$dir/server.log" >&2; exit 1; }
"$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres history
echo "postgresql://postgres@127.0.0.1:$port/history"
