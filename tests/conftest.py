"""Shared fixtures: the public datasets in ../shared/data and small helpers."""
from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
EXAMPLES = ROOT / "examples" / "data"


def shared(name: str) -> Path:
    p = SHARED / name
    if not p.exists():
        pytest.fail(f"missing shared dataset {p} (../shared/data must sit beside the repository)")
    return p


def load_jsonl(path: Path) -> list[dict]:
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        return [orjson.loads(line) for line in f if line.strip()]


def write_jsonl(path: Path, rows: list) -> Path:
    with open(path, "wb") as f:
        for r in rows:
            f.write(r if isinstance(r, bytes) else orjson.dumps(r))
            f.write(b"\n")
    return path


def run_cli(*args: str, cwd: Path | None = None, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    """Run the real `ptdata` entry point in a subprocess (what a user runs)."""
    env = {**os.environ, **env_extra} if env_extra else None
    return subprocess.run([sys.executable, "-c", "from ptdata.cli import main; main()", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=600, env=env)


@pytest.fixture(scope="session")
def alpaca_rows() -> list[dict]:
    return load_jsonl(shared("alpaca_en_52k.jsonl.gz"))


@pytest.fixture(scope="session")
def hh_rows() -> list[dict]:
    return load_jsonl(shared("hh_rlhf_harmless_test.jsonl.gz"))
