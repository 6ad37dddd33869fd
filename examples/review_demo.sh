#!/usr/bin/env bash
# The human review loop on one machine, without a browser: reviewers with tokens, a queue, the
# review app on loopback, one answer sent through the app's API (what the review page sends when
# a reviewer presses Enter), the agreement report and the export into a dataset version.
# Usage: bash examples/review_demo.sh [OUT]   (default out/review; PORT=8090 picks the port)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-out/review}
PTDATA=${PTDATA:-.venv/bin/ptdata}
PORT=${PORT:-8090}
S=$OUT/review.sqlite
rm -rf "$OUT" && mkdir -p "$OUT"
TOKEN=$($PTDATA review add-reviewer ann --store "$S")            # the token is printed once; only its hash is kept
$PTDATA review add-reviewer lead --role admin --store "$S" > "$OUT/lead.token"
$PTDATA review create demo --data examples/data/alpaca_mixed.jsonl --store "$S" --reviewers ann --limit 10
$PTDATA review serve --store "$S" --port "$PORT" & SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$PORT/login" && break; sleep 0.1; done
API="http://127.0.0.1:$PORT/api/q/demo"
curl -sf -H "Authorization: Bearer $TOKEN" "$API/next" > "$OUT/next.json"   # the first open record, as the page gets it
curl -sf -H "Authorization: Bearer $TOKEN" -H "Content-Type: application/json" "$API/a/0" -d '{
  "ratings": {"helpfulness": 4, "truthfulness": 5, "harmlessness": 5, "instruction_following": 4},
  "decision": "accept", "note": "good, one word changed", "correction": "Eat well, move every day and sleep enough."}' \
  > "$OUT/answer.json"
echo "review app was on http://127.0.0.1:$PORT/ (log in with a token); answer stored: $(cat "$OUT/answer.json")"
kill $SERVER && wait $SERVER 2>/dev/null || true
$PTDATA review report demo --store "$S" -o "$OUT/agreement.html"
$PTDATA review export demo --store "$S" --out "$OUT/data"
