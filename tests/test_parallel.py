"""Parallel conversion gives byte-identical output, rejects and line numbers to a serial run."""
from __future__ import annotations

import gzip

import orjson
import pytest

from ptdata import convert
from ptdata.pipeline import Input, Output, Recipe
from ptdata.pipeline.local import _make_shards, number_shards

from .conftest import shared


@pytest.fixture(scope="module")
def alpaca_with_defects(tmp_path_factory):
    path = tmp_path_factory.mktemp("par") / "alpaca.jsonl"
    with gzip.open(shared("alpaca_en_52k.jsonl.gz"), "rb") as f, open(path, "wb") as out:
        for i, line in enumerate(f):
            out.write(line)
            if i % 9001 == 17:
                out.write(b'{"instruction": "broken\n')
            if i % 12007 == 5:
                out.write(b'{"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]}\n')
    return path


@pytest.mark.parametrize("ext", ["jsonl", "jsonl.gz"])
def test_parallel_equals_serial(tmp_path, alpaca_with_defects, ext):
    serial = convert(alpaca_with_defects, tmp_path / f"s.{ext}", "ptdata", workers=1)
    par = convert(alpaca_with_defects, tmp_path / f"p.{ext}", "ptdata", workers=2)
    assert serial.as_dict() == par.as_dict()
    assert par.records_in == 52_002 + 6 + 5 == par.kept + par.rejected
    assert par.reasons["malformed_json"] == 6 and par.reasons["format_mismatch"] == 5
    read = (lambda p: gzip.open(p).read()) if ext.endswith("gz") else (lambda p: p.read_bytes())
    assert read(tmp_path / f"s.{ext}") == read(tmp_path / f"p.{ext}")
    assert (tmp_path / "s.rejects.jsonl").read_bytes() == (tmp_path / "p.rejects.jsonl").read_bytes()
    lines = alpaca_with_defects.read_bytes().split(b"\n")
    for rej in map(orjson.loads, (tmp_path / "p.rejects.jsonl").read_bytes().splitlines()):
        if rej["reason"] == "malformed_json":
            assert lines[rej["line"] - 1] == b'{"instruction": "broken'


def test_shards_cover_the_file_exactly(tmp_path):
    """The executor's shards: line-aligned byte ranges, each told the number of its first line."""
    p = tmp_path / "x.jsonl"
    p.write_bytes(b"".join(b'{"a": %d}\n' % i for i in range(10_000)))
    data = p.read_bytes()
    recipe = Recipe(inputs=[Input(str(p))], ops=[], output=Output(dir=str(tmp_path / "out")), shard_bytes=len(data) // 7)
    shards = _make_shards(recipe, [[p]], tmp_path / "work")
    assert len(shards) == 7 and [sh.first_line for sh in shards] == [1] + [0] * 6  # not counted yet
    number_shards(shards)
    ranges = [(*sh.byte_range, sh.first_line) for sh in shards]
    assert ranges[0][:1] == (0,) and ranges[-1][1] == p.stat().st_size
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    for start, end, first_line in ranges:
        assert data[:start].count(b"\n") + 1 == first_line
        assert start == 0 or data[start - 1:start] == b"\n"


def _peak_rss_mb(src, dst) -> float:
    import subprocess
    import sys

    code = ("import resource, sys; from ptdata import convert; "
            "convert(sys.argv[1], sys.argv[2], 'openai', workers=1); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")
    r = subprocess.run([sys.executable, "-c", code, str(src), str(dst)], capture_output=True, text=True, check=True)
    return float(r.stdout.strip())


def test_memory_stays_flat_with_input_size(tmp_path):
    """Streaming: 4x the records must not need more memory (a generous 25 MB allowance for noise)."""
    data = gzip.open(shared("alpaca_en_52k.jsonl.gz"), "rb").read()
    x1, x4 = tmp_path / "x1.jsonl", tmp_path / "x4.jsonl"
    x1.write_bytes(data)
    x4.write_bytes(data * 4)
    rss1 = _peak_rss_mb(x1, tmp_path / "o1.jsonl")
    rss4 = _peak_rss_mb(x4, tmp_path / "o4.jsonl")
    assert rss4 < rss1 + 25, (rss1, rss4)
