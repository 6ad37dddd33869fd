#!/usr/bin/env bash
# Conversion demo on the shipped example data: validate and normalize every file into ptdata
# records (rejects beside them, with reasons), print statistics, and export trainer formats.
# Usage: examples/convert_demo.sh [OUT_DIR]   (default: out/convert)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-out/convert}
# the project's own ptdata (scripts/install.sh puts it in .venv), else the one on PATH
ptdata() { if [ -x .venv/bin/ptdata ]; then .venv/bin/ptdata "$@"; else command ptdata "$@"; fi; }
D=examples/data
rm -rf "$OUT" && mkdir -p "$OUT/records" "$OUT/rejects" "$OUT/export"
for f in alpaca_mixed.jsonl sharegpt_tools.json openai_chat.jsonl.gz hh_pairs.jsonl trl_prefs.parquet; do
  name=${f%%.*}
  ptdata convert "$D/$f" "$OUT/records/$name.jsonl" --rejects "$OUT/rejects/$name.jsonl" --to ptdata --max-turn-chars 20000 -q
done
ptdata convert "$D/gsm_style.jsonl" "$OUT/records/gsm_style.jsonl" --rejects "$OUT/rejects/gsm_style.jsonl" --to ptdata --from qa \
  --field question=problem --field answer=solution -q
ptdata stats "$OUT"/records/*.jsonl --json -q > "$OUT/stats.json"
# trainer-ready exports of the cleaned records
ptdata convert "$OUT/records/hh_pairs.jsonl" "$OUT/export/hh_dpo.trl.jsonl" --to trl -q
ptdata convert "$OUT/records/trl_prefs.jsonl" "$OUT/export/prefs.openai-pref.jsonl" --to openai-pref -q
ptdata convert "$OUT/records/sharegpt_tools.jsonl" "$OUT/export/llamafactory/tools.json" --to sharegpt --write-dataset-info -q
ptdata convert "$OUT/records/alpaca_mixed.jsonl" "$OUT/export/alpaca.openai.jsonl" --to openai -q
echo "done: records, rejects and stats in $OUT/"
