"""The README's main job on examples/, and the validate / stats commands with exact figures."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path


from .conftest import EXAMPLES, ROOT, load_jsonl, run_cli, write_jsonl


def test_convert_demo_finds_every_planted_validation_defect(tmp_path):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}  # the installed `ptdata`
    r = subprocess.run(["bash", str(ROOT / "examples" / "convert_demo.sh"), str(tmp_path / "out")], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    out = tmp_path / "out"
    reasons: Counter = Counter()
    for f in (out / "rejects").glob("*.jsonl"):
        reasons.update(row["reason"] for row in load_jsonl(f))
    stats = json.loads((out / "stats.json").read_text())
    found = dict(reasons) | {f"flag:{k}": v for k, v in stats["flags"].items()}
    planted = json.loads((EXAMPLES / "PLANTED.json").read_text())
    assert found == planted
    # nothing lost: every input row is a record or a reject
    n_records = sum(len(load_jsonl(f)) for f in (out / "records").glob("*.jsonl"))
    assert n_records == stats["records"]
    assert n_records + sum(reasons.values()) == 124 + 60 + 50 + 40 + 40 + 30
    info = json.loads((out / "export" / "llamafactory" / "dataset_info.json").read_text())
    assert info["tools"]["formatting"] == "sharegpt"


def test_stats_exact_figures(tmp_path):
    rows = [
        {"messages": [{"role": "user", "content": "What is the capital of France?"}, {"role": "assistant", "content": "Paris."}]},
        {"messages": [{"role": "user", "content": "What is the capital of France?"}, {"role": "assistant", "content": "Paris."}]},
        {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "法国的首都是哪里？请回答。"}, {"role": "assistant", "content": "巴黎。"}]},
        {"messages": [{"role": "user", "content": "Hi"}]},
        {"messages": [{"role": "user", "content": ""}, {"role": "assistant", "content": "x"}]},
    ]
    src = write_jsonl(tmp_path / "s.jsonl", rows)
    r = run_cli("stats", src, "--json", "-q")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["records"] == 4 and d["rejected"] == 1 and d["reject_reasons"] == {"empty_turn": 1}
    assert d["kinds"] == {"sft": 3, "prompt": 1}
    assert d["turns_per_conversation"]["histogram"] == {"1": 1, "2": 2, "3": 1}
    assert d["chars_by_role"]["assistant"] == {"total": 6 + 6 + 3, "turns": 3, "mean": 5.0}
    assert d["chars_by_role"]["system"]["total"] == 9
    assert d["languages"] == {"en": 2, "zh": 1, "latin": 1}
    assert d["duplicates"]["records"] == 1 and d["duplicates"]["unique_records"] == 3


def test_validate_exit_codes_and_outputs(tmp_path):
    ok = write_jsonl(tmp_path / "ok.jsonl", [{"instruction": "Say hi.", "input": "", "output": "Hi!"}])
    r = run_cli("validate", ok, "--rejects", tmp_path / "r1.jsonl", "-q")
    assert r.returncode == 0 and "in 1 · kept 1 · rejected 0" in r.stderr
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"instruction": "Say hi.", "input": "", "output": "Hi!"},
                                               {"instruction": "Say hi.", "input": "", "output": ""}])
    r = run_cli("validate", bad, "--out", tmp_path / "valid.jsonl", "-q")
    assert r.returncode == 3
    assert [x["reason"] for x in load_jsonl(tmp_path / "valid.rejects.jsonl")] == ["empty_turn"]
    (rec,) = load_jsonl(tmp_path / "valid.jsonl")
    assert rec["kind"] == "sft" and len(rec["id"]) == 32


def test_formats_command_lists_all():
    r = run_cli("formats")
    for name in ("alpaca", "sharegpt", "openai", "openai-pref", "trl", "hh", "qa", "ptdata"):
        assert name in r.stdout
