"""`--json`: every command that sums up its work prints that summary as one JSON object on
stdout, and nothing else there; its figures are the files it wrote. The human lines stay on
stderr and never show a Python repr. Also `pairs --to`, which takes `ptdata export`'s names."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from ptdata.cli import app
from ptdata.llm.serve import LoopbackServer, make_app

from .conftest import EXAMPLES, run_cli, write_jsonl
from .llm_helpers import scripted
from .test_judges_pairs import judge_script

ALPACA = EXAMPLES / "alpaca_mixed.jsonl"  # 124 rows, 6 of them planted rejects
HH = EXAMPLES / "hh_pairs.jsonl"


def summary_of(r) -> dict:
    """stdout is exactly one JSON object on one line; the human summary went to stderr."""
    lines = r.stdout.splitlines()
    assert len(lines) == 1 and r.stdout.endswith("\n"), r.stdout[:2000] + r.stderr[-2000:]
    d = json.loads(lines[0])
    assert isinstance(d, dict) and lines[0].startswith("{")
    for repr_bit in ("{'", "': ", "None", "Counter("):  # no Python reprs in the human lines
        assert repr_bit not in r.stderr, r.stderr
    return d


def rows(path) -> list[dict]:
    p = Path(path)
    if p.suffix == ".json":
        return json.loads(p.read_text())
    return [orjson.loads(x) for x in p.read_bytes().splitlines() if x.strip()] if p.exists() else []


def reasons_in(path) -> dict:
    return dict(Counter(x["reason"] for x in rows(path)))


def accounts(d: dict, kept_file, rejects_file, derived: int = 0) -> None:
    """in = kept + rejected, and the counts are the files' lines, the reasons their reasons."""
    assert d["records_in"] + derived == d["kept"] + d["rejected"]
    assert len(rows(kept_file)) == d["kept"]
    assert len(rows(rejects_file)) == d["rejected"]
    assert d["reasons"] == reasons_in(rejects_file)


def test_convert(tmp_path):
    dst = tmp_path / "a.openai.jsonl"
    r = run_cli("convert", ALPACA, dst, "--to", "openai", "--json")
    assert r.returncode == 0, r.stderr
    d = summary_of(r)
    assert d["command"] == "convert" and d["format"] == "openai"
    assert (d["records_in"], d["kept"], d["rejected"]) == (124, 118, 6)
    accounts(d, dst, tmp_path / "a.openai.rejects.jsonl")
    assert d["files"] == {"out": str(dst), "rejects": str(tmp_path / "a.openai.rejects.jsonl")}
    assert d["rows_out"] == len(rows(dst)) and sum(d["flags"].values()) > 0
    assert "in 124 · kept 118 · rejected 6" in r.stderr and "rejected by reason: " in r.stderr
    assert list(d) == sorted(d)  # keys stable


def test_convert_nothing_written_keeps_exit_4(tmp_path):
    src = write_jsonl(tmp_path / "bad.jsonl", [{"instruction": "x", "input": "", "output": ""}] * 3)
    r = run_cli("convert", src, tmp_path / "o.jsonl", "--to", "openai", "--json")
    assert r.returncode == 4
    d = summary_of(r)
    assert (d["records_in"], d["kept"], d["rejected"], d["reasons"]) == (3, 0, 3, {"empty_turn": 3})
    assert d["files"]["out"] is None


def test_validate_and_stats(tmp_path):
    r = run_cli("validate", ALPACA, "-o", tmp_path / "v.jsonl", "--json", "-q")
    assert r.returncode == 3  # some rejected: as without --json
    d = summary_of(r)
    accounts(d, tmp_path / "v.jsonl", tmp_path / "v.rejects.jsonl")
    assert d["files"] == {"out": str(tmp_path / "v.jsonl"), "rejects": str(tmp_path / "v.rejects.jsonl")}

    r = run_cli("stats", ALPACA, "--json", "-q")
    assert r.returncode == 0, r.stderr
    s = summary_of(r)
    assert (s["records_in"], s["kept"], s["rejected"], s["reasons"]) == (d["records_in"], d["kept"], d["rejected"], d["reasons"])
    assert s["records"] == s["kept"] and s["reject_reasons"] == s["reasons"] and s["flags"] == d["flags"]
    assert sum(s["kinds"].values()) == s["records"]
    r = run_cli("stats", ALPACA, "-q")  # without --json: the table, on stdout
    assert "ptdata stats" in r.stdout and not r.stdout.lstrip().startswith("{")


def _recipe(tmp_path: Path) -> Path:
    p = tmp_path / "r.yaml"
    p.write_text(f"name: t\ninputs:\n  - path: {ALPACA}\nops:\n  - exact_dedup: {{}}\noutput:\n  dir: {tmp_path / 'run'}\n")
    return p


def test_run_and_rejects(tmp_path):
    r = run_cli("run", _recipe(tmp_path), "--json", "-q")
    assert r.returncode == 0, r.stderr
    d = summary_of(r)
    out = tmp_path / "run"
    accounts(d, out / "kept.jsonl", out / "rejects.jsonl")
    assert d["files"] == {"kept": str(out / "kept.jsonl"), "rejects": str(out / "rejects.jsonl"),
                          "stats": str(out / "stats.json"), "report": str(out / "report.html")}
    assert [o["op"] for o in d["ops"]] == ["read+validate", "exact_dedup"] and d["reasons"]["exact_duplicate"] > 0
    st = orjson.loads((out / "stats.json").read_bytes())
    assert (st["records_in"], st["kept"], st["rejected"]) == (d["records_in"], d["kept"], d["rejected"])

    r = run_cli("rejects", out, "-o", tmp_path / "rej.jsonl", "--reason", "exact_duplicate", "--json")
    assert r.returncode == 0, r.stderr
    j = summary_of(r)
    assert j["rows"] == len(rows(tmp_path / "rej.jsonl")) == d["reasons"]["exact_duplicate"]
    assert j["files"] == {"out": str(tmp_path / "rej.jsonl")}
    r = run_cli("rejects", out, "--json")  # stdout is the rejects themselves: --json has no place
    assert r.returncode == 1 and r.stdout == "" and r.stderr.startswith("error: --json needs -o")


def test_export_targets(tmp_path):
    out = tmp_path / "ex"
    r = run_cli("export", HH, ALPACA, "-o", out, "--to", "all", "--json")
    assert r.returncode == 0, r.stderr
    d = summary_of(r)
    assert d["records_in"] == d["written"] + d["rejected"] and d["kept"] == d["written"]
    assert len(rows(out / "train.all.rejects.jsonl")) == d["rejected"] and d["reasons"] == reasons_in(out / "train.all.rejects.jsonl")
    for name, t in d["targets"].items():
        assert d["files"][name] == t["file"] and len(rows(t["file"])) == t["rows"], name
    assert d["targets"]["trl-kto"]["rows"] == 2 * d["targets"]["trl-dpo"]["rows"]
    assert d["files"]["dataset_info"] == str(out / "dataset_info.json")


def test_export_tokenized(tmp_path):
    out = tmp_path / "tok"
    r = run_cli("export", ALPACA, "-o", out, "--to", "tokenized", "--tokenizer", "qwen", "--max-length", "64", "--json")
    assert r.returncode == 0, r.stderr
    d = summary_of(r)
    assert d["records_in"] == d["kept"] + d["rejected"] == 124
    assert len(rows(out / "rejects.jsonl")) == d["rejected"] and d["reasons"] == reasons_in(out / "rejects.jsonl")
    assert pq.read_table(d["files"]["data"]).num_rows == d.get("sequences", d["kept"])
    assert d["reasons"]["too_long"] > 0
    top = max(d["reasons"].items(), key=lambda kv: kv[1])
    assert f"rejected {d['rejected']:,} ({top[0]} {top[1]:,}, " in r.stderr  # reasons as text, largest first


def _rated(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "rated.jsonl", [
        {"prompt": f"Question {i}?", "completions": [{"response": f"a good answer {i}", "overall_score": 5},
                                                     {"response": f"bad {i}", "overall_score": 1 if i % 3 else 4.5}]}
        for i in range(9)])


def test_pairs_takes_export_target_names(tmp_path):
    src, out = _rated(tmp_path), tmp_path / "p"
    r = run_cli("pairs", src, "-o", out, "--to", "trl", "--to", "openai-pref", "--to", "llamafactory-ranking", "--json", "-q")
    assert r.returncode == 0, r.stderr
    d = summary_of(r)
    accounts(d, out / "kept.jsonl", out / "rejects.jsonl")
    assert (d["pairs"], d["rejected"], d["reasons"]) == (6, 3, {"margin_below_min": 3})
    # the group trl is the pair targets in it, as in `ptdata export --to trl`
    assert set(d["exports"]) == {"trl-dpo", "trl-kto", "openai-pref", "llamafactory-ranking"}
    for target, e in d["exports"].items():
        ext = ".json" if target.startswith("llamafactory") else ".jsonl"
        assert e["file"] == str(out / f"pairs.{target}{ext}") and len(rows(e["file"])) == e["rows"], target
        assert e["written"] == d["pairs"] and e["rejected"] == 0
    assert d["exports"]["trl-kto"]["rows"] == 12
    assert d["files"]["bias"] == str(out / "bias.json") and d["bias"] == orjson.loads((out / "bias.json").read_bytes())


@pytest.mark.parametrize("to,hint", [("kto", "use --to trl-kto"), ("openai", "use --to openai-pref"),
                                     ("trl-sft", "use --to trl-dpo or --to trl-kto"),
                                     ("llamafactory-kto", "use --to llamafactory-ranking"),
                                     ("tokenized", "use --to trl-dpo or --to trl-kto")])
def test_pairs_refuses_other_names_naming_the_one_to_use(tmp_path, to, hint):
    r = run_cli("pairs", _rated(tmp_path), "-o", tmp_path / "p", "--to", to, "--json")
    assert r.returncode == 1 and r.stdout == ""
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith(f"error: --to {to}") and hint in line
    assert not (tmp_path / "p").exists()


def test_distill_offline(tmp_path):
    prompts = []
    for i in range(6):
        good, bad = f"So it is {i + 2}.\n#### {i + 2}", f"So it is {i + 9}.\n#### {i + 9}"
        prompts.append({"prompt": f"What is {i} + 2?", "reference": str(i + 2),
                        "samples": [good] * (5 - 2 * (i % 3)) + [bad] * (2 * (i % 3))})
    src, out = write_jsonl(tmp_path / "s.jsonl", prompts), tmp_path / "d"
    r = run_cli("distill", src, "-o", out, "--offline", "--k", "5", "--threshold", "0.7", "--json", "-q")
    assert r.returncode == 0, r.stderr
    d = summary_of(r)
    accounts(d, out / "train.jsonl", out / "rejects.jsonl")
    assert (d["labeled"], d["rejected"], d["train_size"]) == (4, 2, 4)  # i % 3 == 1: a 3-of-5 majority, below 0.7
    assert d["files"]["train"] == str(out / "train.jsonl")


@pytest.fixture(scope="module")
def teacher():
    with LoopbackServer(make_app(scripted(judge_script), model_name="judge")) as srv:
        yield srv.base_url


def _step(base_url: str, *args) -> dict:
    r = run_cli(*args, "--base-url", base_url, "--model", "judge", "--llm", "cache_dir=null", "--llm", "backoff=0.01",
                "--json", "-q")
    assert r.returncode == 0, r.stderr
    return summary_of(r)


def test_model_steps(teacher, tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [{"instruction": f"Name colour number {i}.", "input": "", "output": f"Blue {i}."}
                                              for i in range(12)])
    for cmd, extra in (("generate", ("--n", "3")), ("judge", ()), ("rewrite", ()), ("evolve", ())):
        inp = tmp_path / "generate" / "kept.jsonl" if cmd == "judge" else src
        d = _step(teacher, cmd, inp, "-o", tmp_path / cmd, *extra)
        assert d["command"] == cmd
        accounts(d, tmp_path / cmd / "kept.jsonl", tmp_path / cmd / "rejects.jsonl", derived=d["derived"])
        assert d["ops"][-1]["op"] == cmd and d["ops"][-1]["counters"]["requests"] > 0
        assert d["files"]["kept"] == str(tmp_path / cmd / "kept.jsonl")


def test_flywheel(tmp_path):
    store = f"sqlite:///{tmp_path / 'fw.sqlite'}"
    r = run_cli("flywheel", "simulate", ALPACA, "--store", store, "--limit", "20", "--json")
    assert r.returncode == 0, r.stderr
    (sim,) = summary_of(r)["datasets"]
    assert sim["records"] == sim["plans"] == sim["calls"] == 20 and sum(sim["feedback"].values()) > 0
    r = run_cli("flywheel", "mine", "--version", "v1", "--store", store, "-o", tmp_path / "data", "--json")
    assert r.returncode == 0, r.stderr
    m = summary_of(r)
    c = m["counts"]
    assert m["written"] and m["kept"] == c["sft"] + c["pairs"] > 0
    assert len(rows(m["files"]["sft"])) == c["sft"] and len(rows(m["files"]["pairs"])) == c["pairs"]
    assert "by source: " in r.stderr
    r = run_cli("flywheel", "mine", "--version", "v2", "--store", store, "-o", tmp_path / "data", "--json")
    assert r.returncode == 4  # nothing new: still exit 4, and still the object
    assert summary_of(r)["written"] is False
    r = run_cli("flywheel", "versions", "--store", store, "--json")
    assert r.returncode == 0 and [v["name"] for v in summary_of(r)["versions"]] == ["v1"]
    r = run_cli("flywheel", "report", "--store", store, "-o", tmp_path / "r.html", "--json")
    assert r.returncode == 0, r.stderr
    rep = summary_of(r)
    assert rep["files"]["report"] == str(tmp_path / "r.html") and rep["model_versions"]["sim-v1"]["interactions"] == 20


@pytest.mark.parametrize("cmd", ["convert", "validate", "stats", "run", "rejects", "generate", "evolve", "rewrite", "judge",
                                 "pairs", "export", "distill", "flywheel mine", "flywheel versions", "flywheel simulate",
                                 "flywheel report"])
def test_every_summary_has_json(cmd):
    r = CliRunner().invoke(app, [*cmd.split(), "--help"], terminal_width=200)
    assert r.exit_code == 0 and "--json" in r.output
