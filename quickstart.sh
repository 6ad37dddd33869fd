#!/usr/bin/env bash
# Install everything into .venv and run the main job on examples/ (results in out/).
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/install.sh
PATH="$PWD/.venv/bin:$PATH" bash examples/main_job.sh out
