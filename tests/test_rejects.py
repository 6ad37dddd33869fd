"""Rejects listing copies of a kept record by reference (output.rejects: compact) restore to
exactly what output.rejects: full writes, whichever op later keeps or drops the record they
point at; records that differ from their keeper in any byte keep their full row."""
from __future__ import annotations

import gzip
import re

import orjson
import pytest

from ptdata.ops.dedup import ExactDedup, NearDedup
from ptdata.ops.filters import LengthFilter
from ptdata.pipeline import Input, Output, Recipe, run
from ptdata.pipeline.rejects import read_rejects, write_full_rejects

from .conftest import run_cli, shared


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """600 Alpaca lines three times over, plus 100 of them with a trailing space in the answer
    (the same id, other bytes) and 50 native records with extra meta, twice."""
    d = tmp_path_factory.mktemp("rejects")
    rows = gzip.open(shared("alpaca_en_52k.jsonl.gz")).read().splitlines()[:600]
    spaced = [orjson.dumps({**orjson.loads(x), "output": orjson.loads(x)["output"] + " "}) for x in rows[:100]]
    (d / "alpaca.jsonl").write_bytes(b"\n".join(rows * 3 + spaced) + b"\n")
    native = [orjson.dumps({"kind": "sft", "meta": {"team": "a" if i % 2 else "b"},
                            "messages": [{"role": "user", "content": orjson.loads(x)["instruction"]},
                                         {"role": "assistant", "content": orjson.loads(x)["output"] or "ok"}]})
              for i, x in enumerate(rows[:50])]
    (d / "native.jsonl").write_bytes(b"\n".join(native * 2) + b"\n")
    return d


def _no_source(rec: dict) -> dict:
    return {**rec, "meta": {k: v for k, v in rec["meta"].items() if k != "source"}}


def _run(data, out, ops, rejects, fmt="ptdata"):
    r = Recipe(inputs=[Input(str(data / "alpaca.jsonl")), Input(str(data / "native.jsonl"))], ops=ops,
               output=Output(dir=str(out), rejects=rejects, format=fmt, report=False), shard_bytes=60_000, batch_size=200)
    return run(r, workers=2)


@pytest.mark.parametrize("name", ["exact", "near", "exact then a filter that drops keepers"])
def test_compact_rejects_restore_to_the_full_rows(data, tmp_path, name):
    ops = {"exact": lambda: [ExactDedup(keep="first")], "near": lambda: [NearDedup(threshold=0.8, keep="first")],
           "exact then a filter that drops keepers": lambda: [ExactDedup(keep="first"), LengthFilter(max_chars=300)]}[name]
    compact = _run(data, tmp_path / "compact", ops(), "compact")
    full = _run(data, tmp_path / "full", ops(), "full")
    assert compact.kept_path.read_bytes() == full.kept_path.read_bytes()
    assert compact.stats["records_in"] == compact.kept + compact.rejected == 1800 + 100 + 100
    rows = [orjson.loads(x) for x in compact.rejects_path.read_bytes().splitlines()]
    assert len(rows) == compact.rejected
    refs = [r for r in rows if "copy_of" in r]
    assert all(r["copy_of"] == r["id"] and "record" not in r for r in refs)
    # independently, from the full rows: a dedup drop is a copy when its record equals, all but
    # meta.source, the record it was dropped for (named in the detail; kept, or dropped later)
    full_rows = [orjson.loads(x) for x in full.rejects_path.read_bytes().splitlines()]
    past = {r["id"]: r for r in (orjson.loads(x) for x in full.kept_path.read_bytes().splitlines())}
    past.update({r["id"]: r["record"] for r in full_rows if r["op"] == "length_filter"})
    dedup = ops()[0].name
    expect = {r["source"] for r in full_rows if r["op"] == dedup
              and _no_source(r["record"]) == _no_source(past[re.search("[0-9a-f]{32}", r["detail"])[0]])}
    assert {r["source"] for r in refs} == expect
    # 2 x 600 Alpaca copies (less the empty answers) and 50 native ones, less those native
    # records dropped for an Alpaca record with the same text (other meta); the spaced answers
    # share an id with their keeper but not its bytes
    assert 1100 < len(refs) <= 1250
    spaced = [r for r in full_rows if r["op"] == dedup and r["record"]["messages"][-1]["content"].endswith(" ")]
    assert len(spaced) >= 90 and not any(r["source"] in expect for r in spaced)
    write_full_rejects(tmp_path / "compact", tmp_path / "restored.jsonl")
    assert (tmp_path / "restored.jsonl").read_bytes() == full.rejects_path.read_bytes()
    if name.startswith("exact then"):  # some copies point at a keeper the length filter dropped later
        dropped_later = {r["id"] for r in rows if r["op"] == "length_filter"}
        assert sum(1 for r in refs if r["copy_of"] in dropped_later) > 50
    # the CLI gives the same rows
    cli = run_cli("rejects", str(tmp_path / "compact"), "-o", str(tmp_path / "cli.jsonl"))
    assert cli.returncode == 0, cli.stderr
    assert (tmp_path / "cli.jsonl").read_bytes() == full.rejects_path.read_bytes()
    as_written = [r for r in read_rejects(tmp_path / "compact", full=False)]
    assert as_written == rows


def test_no_references_when_the_kept_file_is_not_ptdata_records(data, tmp_path):
    res = _run(data, tmp_path / "alpaca", [ExactDedup(keep="first")], "compact", fmt="alpaca")
    assert b'"copy_of"' not in res.rejects_path.read_bytes()
    assert res.rejected == res.rejects_path.read_bytes().count(b"\n") > 1200


def test_a_missing_keeper_is_a_clear_error(data, tmp_path):
    _run(data, tmp_path / "o", [ExactDedup(keep="first")], "compact")
    (tmp_path / "o" / "kept.jsonl").write_bytes(b"")
    cli = run_cli("rejects", str(tmp_path / "o"), "-o", str(tmp_path / "x.jsonl"))
    assert cli.returncode != 0 and "is a copy of is neither kept nor rejected by a later op" in cli.stderr
    assert "Traceback" not in cli.stderr


def test_an_unknown_rejects_mode_is_refused(tmp_path):
    from ptdata.errors import InputError
    from ptdata.pipeline import load_recipe

    with pytest.raises(InputError, match="^output: rejects: must be one of compact, full, got 'refs'$"):
        Output(rejects="refs")
    (tmp_path / "r.yaml").write_text("inputs: [x.jsonl]\nops: []\noutput: {rejects: refs}\n")
    with pytest.raises(InputError, match=r"r\.yaml: output: rejects: must be one of compact, full, got 'refs'$"):
        load_recipe(tmp_path / "r.yaml")
