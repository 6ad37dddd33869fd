#!/usr/bin/env bash
# Start a two-node Ray cluster on loopback (a head and a second node, one CPU each) with token
# authentication, and print its address. Stop it with `.venv/bin/ray stop --force`.
# Clients need RAY_AUTH_MODE=token in their environment (the token is in ~/.ray/auth_token).
set -euo pipefail
cd "$(dirname "$0")/.."
RAY=.venv/bin/ray
PORT=${PTDATA_RAY_PORT:-6390}
export RAY_AUTH_MODE=token
"$RAY" stop --force >/dev/null 2>&1 || true
[ -s "$HOME/.ray/auth_token" ] || "$RAY" get-auth-token --generate >/dev/null
"$RAY" start --head --node-ip-address=127.0.0.1 --port="$PORT" --num-cpus=1 --include-dashboard=false \
  --disable-usage-stats >&2
"$RAY" start --address="127.0.0.1:$PORT" --node-ip-address=127.0.0.1 --num-cpus=1 --disable-usage-stats >&2
echo "127.0.0.1:$PORT"
