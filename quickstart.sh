#!/usr/bin/env bash
# Install everything into .venv and run the main job: the curation recipe on examples/
# (kept records, rejects with reasons, stats.json and report.html in out/curated/).
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/install.sh
.venv/bin/ptdata run examples/curate.yaml
