#!/usr/bin/env bash
# Start a throwaway PostgreSQL on 127.0.0.1 for the tests and print its URL.
# Installs PostgreSQL from Debian's packages when it is missing. Idempotent: a server already
# answering on the port is reused.
set -euo pipefail
PORT=${PTDATA_PG_PORT:-55432}
DIR=${PTDATA_PG_DIR:-/tmp/ptdata-pg}
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq postgresql >&2
fi
BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
if ! "$BIN/pg_isready" -h 127.0.0.1 -p "$PORT" -q 2>/dev/null; then
  rm -rf "$DIR" && mkdir -p "$DIR"
  [ "$(id -u)" = 0 ] && chown postgres:postgres "$DIR"
  as_pg "$BIN/initdb" -D "$DIR/data" -A trust -U postgres >/dev/null
  as_pg "$BIN/pg_ctl" -D "$DIR/data" -o "-p $PORT -c listen_addresses=127.0.0.1 -k $DIR" -l "$DIR/server.log" -w start >/dev/null
fi
echo "postgresql://postgres@127.0.0.1:$PORT/postgres"
