"""Bad input never ends in a traceback: one clear line (file-level) or a reject with file, line and reason."""
from __future__ import annotations

import gzip

import orjson
import pytest

from .conftest import load_jsonl, run_cli, write_jsonl

GOOD = {"instruction": "Name a colour.", "input": "", "output": "Blue."}


def _convert(tmp_path, src, *extra):
    out = tmp_path / "out.jsonl"
    r = run_cli("convert", src, out, "--to", "openai", "-q", *extra)
    assert "Traceback" not in r.stderr, r.stderr
    return r, out, tmp_path / "out.rejects.jsonl"


def _summary(stderr: str) -> tuple[int, int, int]:
    line = next(l for l in stderr.splitlines() if l.startswith("in "))
    nums = [int(x.replace(",", "")) for x in line.replace("·", " ").split() if x.replace(",", "").isdigit()]
    return nums[0], nums[1], nums[2]


def test_malformed_json_wrong_types_and_bad_utf8_are_rejected_with_lines(tmp_path):
    src = tmp_path / "in.jsonl"
    write_jsonl(src, [
        GOOD,
        b'{"instruction": "broken", "output": ',  # line 2: malformed
        {"instruction": ["not", "a", "string"], "input": "", "output": "x"},  # line 3: wrong type
        b'{"instruction": "caf\xe9", "input": "", "output": "ok"}',  # line 4: Latin-1 byte
        b"[1, 2, 3]",  # line 5: not an object
        GOOD | {"output": "Red."},
        {"instruction": "x", "input": "", "output": "y", "history": "oops"},  # line 7: history not a list
    ])
    r, out, rej = _convert(tmp_path, src)
    assert r.returncode == 0
    assert _summary(r.stderr) == (7, 2, 5)
    rows = load_jsonl(rej)
    got = {(x["line"], x["op"], x["reason"]) for x in rows}
    assert got == {(2, "read", "malformed_json"), (3, "parse", "wrong_type"), (4, "read", "invalid_utf8"),
                   (5, "read", "not_an_object"), (7, "parse", "wrong_type")}
    assert all(x["source"] == str(src) for x in rows)
    assert "invalid UTF-8 at byte 20" in next(x["detail"] for x in rows if x["reason"] == "invalid_utf8")
    assert len(load_jsonl(out)) == 2


def test_fifty_megabyte_record_is_rejected_without_loading_it(tmp_path):
    src = tmp_path / "huge.jsonl"
    with open(src, "wb") as f:
        f.write(orjson.dumps(GOOD) + b"\n")
        f.write(b'{"instruction": "big", "input": "", "output": "' + b"a" * (50 * 1024 * 1024) + b'"}\n')
        f.write(orjson.dumps(GOOD) + b"\n")
    r, out, rej = _convert(tmp_path, src)
    assert r.returncode == 0 and _summary(r.stderr) == (3, 2, 1)
    (row,) = load_jsonl(rej)
    assert (row["line"], row["reason"]) == (2, "record_too_large")
    assert "52,428," in row["detail"] and "record" not in row
    # a raised limit lets it through to validation, which rejects the over-long turn instead
    r2, _, rej2 = _convert(tmp_path, src, "--max-record-bytes", str(64 * 1024 * 1024))
    assert _summary(r2.stderr) == (3, 2, 1) and load_jsonl(rej2)[0]["reason"] == "turn_too_long"


def test_empty_file_is_one_line_error(tmp_path):
    src = tmp_path / "empty.jsonl"
    src.write_bytes(b"")
    r, out, _ = _convert(tmp_path, src)
    assert r.returncode == 1
    assert r.stderr.strip() == f"error: {src}: empty file (no records)"
    assert not out.exists()


def test_missing_file_and_unknown_format_are_one_line_errors(tmp_path):
    r, _, _ = _convert(tmp_path, tmp_path / "nope.jsonl")
    assert r.returncode == 1 and r.stderr.strip().endswith("nope.jsonl: no such file")
    src = write_jsonl(tmp_path / "odd.jsonl", [{"foo": 1, "bar": 2}])
    r, _, _ = _convert(tmp_path, src)
    assert r.returncode == 1 and "cannot tell the format" in r.stderr and "--from" in r.stderr
    r = run_cli("convert", src, tmp_path / "o.jsonl", "--to", "nosuch")
    assert r.returncode == 1 and "unknown format 'nosuch'" in r.stderr


def test_file_mixing_two_formats_rejects_the_minority(tmp_path):
    sharegpt = {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}]}
    src = write_jsonl(tmp_path / "mixed.jsonl", [GOOD] * 5 + [sharegpt] * 2 + [GOOD] * 3)
    r, out, rej = _convert(tmp_path, src)
    assert r.returncode == 0 and _summary(r.stderr) == (10, 8, 2)
    rows = load_jsonl(rej)
    assert [(x["line"], x["op"], x["reason"]) for x in rows] == [(6, "detect", "format_mismatch"), (7, "detect", "format_mismatch")]
    assert "looks like sharegpt" in rows[0]["detail"] and rows[0]["record"] == sharegpt


def test_truncated_gzip_and_corrupt_parquet(tmp_path):
    good = tmp_path / "ok.jsonl.gz"
    with gzip.open(good, "wb") as f:
        for _ in range(2000):
            f.write(orjson.dumps(GOOD | {"output": f"Blue {_}."}) + b"\n")
    data = good.read_bytes()
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(data[: len(data) // 2])
    r, out, rej = _convert(tmp_path, cut)
    assert r.returncode == 0
    n_in, kept, rejected = _summary(r.stderr)
    assert rejected == 1 and load_jsonl(rej)[-1]["reason"] == "corrupt_file" and kept == n_in - 1 > 0
    bad_pq = tmp_path / "bad.parquet"
    bad_pq.write_bytes(b"PAR1" + b"\0" * 100)
    r, _, _ = _convert(tmp_path, bad_pq)
    assert r.returncode == 1 and "not a readable Parquet file" in r.stderr and "Traceback" not in r.stderr


def test_json_array_with_a_broken_tail(tmp_path):
    src = tmp_path / "arr.json"
    src.write_text('[{"instruction": "a", "input": "", "output": "b"},\n {"instruction": "c", "input": "", "output": "d"},\n {"instruction": ')
    r, out, rej = _convert(tmp_path, src)
    assert _summary(r.stderr) == (3, 2, 1)
    (row,) = load_jsonl(rej)
    assert (row["item"], row["reason"]) == (3, "malformed_json")


@pytest.mark.parametrize("fmt", ["alpaca", "qa"])
def test_explicit_from_with_wrong_fields(tmp_path, fmt):
    src = write_jsonl(tmp_path / "x.jsonl", [{"messages": [{"role": "user", "content": "hi"}]}])
    r, out, rej = _convert(tmp_path, src, "--from", fmt)
    assert _summary(r.stderr) == (1, 0, 1)
    assert load_jsonl(rej)[0]["reason"] == "missing_field"
