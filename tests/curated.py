"""The README's main job, curated into a temporary directory: the example data every export test uses."""
from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

from ptdata.formats import record_class
from ptdata.reader import read_records

from .conftest import ROOT, run_cli


def curate(tmp: Path) -> Path:
    """`ptdata run examples/curate.yaml` in a copy of examples/ under `tmp`; returns kept.jsonl."""
    shutil.copytree(ROOT / "examples" / "data", tmp / "examples" / "data")
    shutil.copy(ROOT / "examples" / "curate.yaml", tmp / "examples" / "curate.yaml")
    r = run_cli("run", "examples/curate.yaml", "-q", cwd=tmp)
    assert r.returncode == 0, r.stderr
    return tmp / "out" / "curated" / "kept.jsonl"


def by_class(path: Path) -> dict[str, list]:
    """The records of a file by what a trainer takes them as: sft, preference, unpaired, prompt."""
    out: dict[str, list] = {}
    for rec, bad in read_records(path):
        assert bad is None, bad
        out.setdefault(record_class(rec), []).append(rec)
    return out


def class_counts(path: Path) -> Counter:
    return Counter({k: len(v) for k, v in by_class(path).items()})
