#!/usr/bin/env bash
# LLaMA-Factory's own data loader in a venv of its own (.venvs/llamafactory, git-ignored), for the
# test that loads ptdata's LLaMA-Factory exports with it (tests/test_llamafactory.py). Idempotent.
#
# llamafactory 0.9.5 pins transformers<=5.6.0, datasets<=4.0.0 and trl<=0.24.0, which clash with
# the main .venv, and its dependencies would pull a CUDA torch and a GUI stack. So: the local CPU
# torch 2.13.0 first (as scripts/install.sh does), then llamafactory and exactly the packages its
# data loader imports, from scripts/llamafactory-requirements.txt, with --no-deps.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=.venvs/llamafactory
REQ=scripts/llamafactory-requirements.txt
STAMP="$VENV/.ptdata-installed"
want="$(sha256sum "$REQ" | cut -d' ' -f1)"
if [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  echo "llamafactory venv: up to date ($VENV)"
  exit 0
fi
"$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "llamafactory 0.9.5 needs Python >= 3.11 (set PYTHON=...)")'
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)
"${PIP[@]}" --upgrade pip
"${PIP[@]}" "torch==2.13.0"
"${PIP[@]}" --no-deps -r "$REQ"
# PyPI's torchaudio is built against CUDA torch; its compiled extension cannot load with the CPU
# torch. Without the extension files torchaudio imports as pure Python (its _extension loader
# treats missing libraries as "not built"), which is all LLaMA-Factory's data path needs (it
# imports torchaudio at module level for audio inputs, which text data never has).
site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
rm -f "$site"/torchaudio/lib/*.so
HF_HUB_OFFLINE=1 "$VENV/bin/python" -c 'import llamafactory.data, llamafactory.hparams; print("llamafactory", __import__("llamafactory").__version__)'
echo "$want" > "$STAMP"
