"""Hostile input through the real CLI: readers, outputs, stale runs, exit codes (issue: hardening).

Every case runs `ptdata` in a subprocess under an address-space cap (tests/hostile.py) and
checks: no traceback, the documented exit code, records in = kept + rejected, and the inputs
byte-identical afterwards.
"""
from __future__ import annotations

import datetime
import decimal
import gzip
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from .conftest import load_jsonl, shared, write_jsonl
from .hostile import (EXIT_ALL_REJECTED, EXIT_ERROR, EXIT_OK, EXIT_SOME_REJECTED, EXIT_USAGE, digest, one_error_line,
                      run_capped, summary)

ROWS = [{"instruction": f"Name colour number {i}.", "input": "", "output": f"Colour {i} is blue."} for i in range(50)]


def _convert(tmp_path: Path, src: Path, *extra: str, memory_mb: int = 1024) -> tuple:
    before = digest(src)
    out = tmp_path / "out.jsonl"
    r = run_capped("convert", src, out, "--to", "openai", "-q", *extra, cwd=tmp_path, memory_mb=memory_mb)
    assert digest(src) == before
    rejects = tmp_path / "out.rejects.jsonl"
    return r, (load_jsonl(out) if out.exists() else []), (load_jsonl(rejects) if rejects.exists() else [])


def _deep_item(depth: int) -> bytes:
    return b'{"instruction":"a","input":"","output":"b","x":' + b"[" * depth + b"]" * depth + b"}"


# --- 1. JSON arrays: depth, size, time ------------------------------------------------------------

@pytest.mark.parametrize("depth", [20_000, 100_000])
def test_a_deeply_nested_json_array_item_is_too_deep_in_bounded_memory(tmp_path, depth):
    src = tmp_path / "deep.json"
    src.write_bytes(b"[" + orjson.dumps(ROWS[0]) + b"," + _deep_item(depth) + b"," + orjson.dumps(ROWS[1]) + b"]")
    r, kept, rejects = _convert(tmp_path, src, memory_mb=768)
    assert r.returncode == EXIT_OK, r.stderr
    assert summary(r.stderr) == (3, 2, 1)
    assert [(x["item"], x["reason"]) for x in rejects] == [(2, "too_deep")]
    assert f"nested {depth + 1:,} levels deep" in rejects[0]["detail"]
    assert [m["messages"][0]["content"] for m in kept] == [ROWS[0]["instruction"], ROWS[1]["instruction"]]


def test_jsonl_and_json_arrays_share_the_depth_limit(tmp_path):
    """The same records, as JSONL and as a JSON array, give the same verdicts; --max-depth moves the limit."""
    items = [ROWS[0], orjson.loads(_deep_item(150)), ROWS[1]]
    jsonl, arr = tmp_path / "d.jsonl", tmp_path / "d.json"
    write_jsonl(jsonl, items)
    arr.write_bytes(orjson.dumps(items))
    for src in (jsonl, arr):
        r, kept, rejects = _convert(tmp_path, src)
        assert summary(r.stderr) == (3, 2, 1) and rejects[0]["reason"] == "too_deep"
        r, kept, rejects = _convert(tmp_path, src, "--max-depth", "200")
        assert summary(r.stderr) == (3, 3, 0)


def test_a_json_array_item_over_max_record_bytes_is_skipped_unread(tmp_path):
    src = tmp_path / "big.json"
    big = {"instruction": "big", "input": "", "output": "x" * (20 << 20)}
    src.write_bytes(orjson.dumps([ROWS[0], big, ROWS[1]]))
    r, kept, rejects = _convert(tmp_path, src, "--max-record-bytes", str(8 << 20), memory_mb=768)
    assert summary(r.stderr) == (3, 2, 1)
    assert rejects[0]["item"] == 2 and rejects[0]["reason"] == "record_too_large" and "record" not in rejects[0]
    r, kept, rejects = _convert(tmp_path, src, "--max-record-bytes", str(32 << 20), "--max-turn-chars", str(30 << 20))
    assert summary(r.stderr) == (3, 3, 0) and len(kept[1]["messages"][1]["content"]) == 20 << 20


def test_json_array_items_with_escapes_and_brackets_in_strings_read_as_orjson_reads_them(tmp_path):
    """Cut by the scanner or read line by line from JSONL (orjson on each line), the records agree."""
    tricky = [{"instruction": 'say "]}, [{" please', "input": "a\\", "output": "b\\\"c\\\\"},
              {"instruction": "中文\"引号\"", "input": "", "output": "[1, {2}]"}]
    rows = tricky + alpaca_head(3000)
    arr, jsonl = tmp_path / "t.json", tmp_path / "t.jsonl"
    arr.write_bytes(orjson.dumps(rows, option=orjson.OPT_INDENT_2))
    write_jsonl(jsonl, rows)
    r, kept_arr, rejects = _convert(tmp_path, arr)
    assert summary(r.stderr)[0] == 3002 and not [x for x in rejects if x["op"] == "read"]
    r, kept_jsonl, _ = _convert(tmp_path, jsonl)
    assert kept_arr == kept_jsonl and kept_arr[1]["messages"][1]["content"] == "[1, {2}]"


def alpaca_head(n: int) -> list[dict]:
    with gzip.open(shared("alpaca_en_52k.jsonl.gz"), "rb") as f:
        return [orjson.loads(next(f)) for _ in range(n)]


# --- 2, 3. BOM, and a bad item in the middle of an array --------------------------------------

def test_a_utf8_bom_is_stripped_from_json_arrays_and_jsonl(tmp_path):
    arr, jsonl = tmp_path / "bom.json", tmp_path / "bom.jsonl"
    arr.write_bytes(b"\xef\xbb\xbf" + orjson.dumps(ROWS[:5]))
    jsonl.write_bytes(b"\xef\xbb\xbf" + b"\n".join(orjson.dumps(r) for r in ROWS) + b"\n")
    r, kept, _ = _convert(tmp_path, arr)
    assert summary(r.stderr) == (5, 5, 0)
    r, kept, _ = _convert(tmp_path, jsonl)
    assert summary(r.stderr) == (50, 50, 0) and kept[0]["messages"][0]["content"] == ROWS[0]["instruction"]


def test_a_bad_item_in_a_json_array_is_one_reject_and_the_rest_are_read(tmp_path):
    src = tmp_path / "bad.json"
    src.write_bytes(b"[" + orjson.dumps(ROWS[0]) + b',{"instruction": nope},' + orjson.dumps(ROWS[1]) + b",[1,2],"
                    + orjson.dumps(ROWS[2]) + b"]")
    r, kept, rejects = _convert(tmp_path, src)
    assert summary(r.stderr) == (5, 3, 2)
    assert [(x["item"], x["reason"]) for x in rejects] == [(2, "malformed_json"), (4, "not_an_object")]


def test_a_truncated_json_array_keeps_its_complete_items(tmp_path):
    src = tmp_path / "cut.json"
    whole = orjson.dumps(ROWS[:10])
    src.write_bytes(whole[: whole.index(orjson.dumps(ROWS[9])) + 20])
    r, kept, rejects = _convert(tmp_path, src)
    assert summary(r.stderr) == (10, 9, 1)
    assert rejects[0]["item"] == 10 and rejects[0]["reason"] == "malformed_json" and "truncated" in rejects[0]["detail"]


# --- 4. a truncated .jsonl.gz through `run` ------------------------------------------------------

def _recipe(tmp_path: Path, inputs: list[str], out: str, ops: str = "[{exact_dedup: {}}]", name: str = "r.yaml",
            output_extra: str = "") -> Path:
    p = tmp_path / name
    p.write_text(f"inputs: [{', '.join('{path: ' + i + '}' for i in inputs)}]\nops: {ops}\n"
                 f"output: {{dir: {out}{output_extra}}}\n")
    return p


def test_run_salvages_a_truncated_gzip_input_and_names_the_last_good_line(tmp_path):
    data = gzip.compress(b"".join(orjson.dumps(r) + b"\n" for r in alpaca_head(2000)))
    src = tmp_path / "cut.jsonl.gz"
    src.write_bytes(data[: len(data) // 2])
    before = digest(src)
    r = run_capped("run", _recipe(tmp_path, ["cut.jsonl.gz"], "out"), "-q", cwd=tmp_path)
    assert r.returncode == EXIT_OK, r.stderr
    n_in, kept, rejected = summary(r.stderr)
    (bad,) = [x for x in load_jsonl(tmp_path / "out" / "rejects.jsonl") if x["op"] == "read"]
    assert bad["reason"] == "corrupt_file" and str(src.name) in bad["detail"]
    last_good = bad["line"] - 1
    assert f"after line {last_good:,}" in bad["detail"] and 500 < last_good < 2000
    assert n_in == last_good + 1 and kept + rejected == n_in
    assert not list((tmp_path / "out").rglob("*.partial")) and digest(src) == before


# --- 5. values JSON or Parquet cannot hold ------------------------------------------------------

def test_parquet_values_json_cannot_hold_do_not_abort_the_job(tmp_path):
    src = tmp_path / "odd.parquet"
    pq.write_table(pa.table({
        "instruction": ["q1", "", "q3"], "input": ["", "", ""], "output": ["a1", "a2", "a3"],
        "price": pa.array([decimal.Decimal("1.50")] * 3, pa.decimal128(5, 2)),
        "blob": [b"\x00\xff", b"x", b"y"],
        "ts": pa.array([datetime.datetime(2024, 1, 1)] * 3, pa.timestamp("us")),
        "took": pa.array([datetime.timedelta(seconds=3)] * 3, pa.duration("ms"))}), src)
    r, kept, rejects = _convert(tmp_path, src)
    assert r.returncode == EXIT_OK and summary(r.stderr) == (3, 2, 1)
    (row,) = rejects
    assert row["reason"] == "empty_turn"
    assert {k: row["record"][k] for k in ("price", "blob", "ts", "took")} == \
        {"price": "1.50", "blob": "x", "ts": "2024-01-01T00:00:00", "took": 3.0}


def _native(content: str, **extra) -> dict:
    return {"kind": "sft", "messages": [{"role": "user", "content": content}, {"role": "assistant", "content": "ok"}],
            "meta": {}, **extra}


def test_bad_scores_are_rejects_and_a_score_parquet_cannot_hold_is_not_representable(tmp_path):
    src = tmp_path / "scores.jsonl"
    src.write_bytes(b"\n".join([
        orjson.dumps(_native("a", scores=[1, 2])),
        orjson.dumps(_native("b", scores={"q": "high"})),
        orjson.dumps(_native("c", scores={"q": True})),
        orjson.dumps(_native("d", scores={"q": 0.5})),
        orjson.dumps(_native("e", scores={"q": 2 ** 63})),
    ]) + b"\n")
    out = tmp_path / "o.parquet"
    r = run_capped("convert", src, out, "--to", "ptdata", "-q", cwd=tmp_path)
    assert r.returncode == EXIT_OK and summary(r.stderr) == (5, 1, 4)
    rejects = {x["line"]: (x["op"], x["reason"]) for x in load_jsonl(tmp_path / "o.rejects.jsonl")}
    assert rejects == {1: ("parse", "wrong_type"), 2: ("parse", "wrong_type"), 3: ("parse", "wrong_type"),
                       5: ("write", "not_representable")}
    assert pq.read_table(out).num_rows == 1
    # as JSONL the big integer is representable
    r = run_capped("convert", src, tmp_path / "o.jsonl", "--to", "ptdata", "-q", cwd=tmp_path)
    assert summary(r.stderr) == (5, 2, 3)


def test_run_with_a_parquet_kept_file_rejects_what_the_schema_cannot_hold(tmp_path):
    write_jsonl(tmp_path / "in.jsonl", [_native("fits", scores={"q": 1}), _native("too big", scores={"q": 2 ** 63})])
    recipe = _recipe(tmp_path, ["in.jsonl"], "out", ops="[]", output_extra=", file: kept.parquet")
    r = run_capped("run", recipe, "-q", cwd=tmp_path)
    assert r.returncode == EXIT_OK, r.stderr
    assert summary(r.stderr) == (2, 1, 1)
    (row,) = load_jsonl(tmp_path / "out" / "rejects.jsonl")
    assert (row["op"], row["reason"]) == ("write", "not_representable")
    stats = orjson.loads((tmp_path / "out" / "stats.json").read_bytes())
    assert (stats["kept"], stats["rejected"]) == (1, 1) and pq.read_table(tmp_path / "out" / "kept.parquet").num_rows == 1


# --- 6. outputs that are inputs ----------------------------------------------------------------

def test_no_command_writes_over_its_input(tmp_path):
    src = write_jsonl(tmp_path / "x.jsonl", ROWS)
    os.link(src, tmp_path / "hard.jsonl")
    (tmp_path / "sym.jsonl").symlink_to(src)
    before = digest(src)
    cases = [
        ("convert", src, src, "--to", "openai"),
        ("convert", src, tmp_path / "y.jsonl", "--to", "openai", "--rejects", src),
        ("convert", src, tmp_path / "hard.jsonl", "--to", "openai"),
        ("convert", src, tmp_path / "sym.jsonl", "--to", "openai"),
        ("validate", src, "--out", src),
    ]
    for args in cases:
        r = run_capped(*args, "-q", cwd=tmp_path)
        assert r.returncode == EXIT_ERROR, (args, r.stderr)
        one_error_line(r.stderr, "refusing to write")
        assert digest(src) == before, args
    assert not (tmp_path / "y.jsonl").exists() and not (tmp_path / "y.rejects.jsonl").exists()


def test_a_run_whose_output_dir_holds_an_input_is_refused(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    src = write_jsonl(out / "kept.jsonl", ROWS)
    before = digest(src)
    r = run_capped("run", _recipe(tmp_path, ["out/kept.jsonl"], "out"), "-q", cwd=tmp_path)
    assert r.returncode == EXIT_ERROR
    one_error_line(r.stderr, "refusing to write into", "kept.jsonl")
    assert digest(src) == before and sorted(p.name for p in out.iterdir()) == ["kept.jsonl"]


# --- 7. completion marker, stale outputs, content-keyed resume -----------------------------------

def _run_bg(recipe: Path, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "from ptdata.cli import main; main()", "run", str(recipe), "-q"],
                            cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def test_a_killed_run_of_a_changed_recipe_leaves_no_stale_output_that_looks_complete(tmp_path):
    with gzip.open(shared("alpaca_en_52k.jsonl.gz"), "rb") as f:
        (tmp_path / "in.jsonl").write_bytes(f.read())
    first = _recipe(tmp_path, ["in.jsonl"], "out", ops="[{length_filter: {min_chars: 3}}]", name="a.yaml")
    r = run_capped("run", first, "-q", cwd=tmp_path)
    assert r.returncode == EXIT_OK
    out = tmp_path / "out"
    done = orjson.loads((out / "_SUCCESS").read_bytes())
    assert done["kept"] == summary(r.stderr)[1] and done["recipe_hash"] == orjson.loads((out / "stats.json").read_bytes())["recipe_hash"]
    changed = tmp_path / "b.yaml"
    changed.write_text(first.read_text().replace("[{length_filter: {min_chars: 3}}]",
                                                 "[{length_filter: {min_chars: 20}}, {near_dedup: {threshold: 0.8}}]")
                       .replace("inputs:", "shard_bytes: 200000\ninputs:"))
    p = _run_bg(changed, tmp_path)
    deadline = time.time() + 120
    manifest = out / ".work" / "manifest.json"

    def started() -> bool:  # the changed recipe's own shards, not the first run's
        try:
            return b"near_dedup" in manifest.read_bytes() and len(list((out / ".work" / "seg0").glob("*.stats.json"))) >= 3
        except OSError:
            return False

    while time.time() < deadline and p.poll() is None and not started():
        time.sleep(0.01)
    assert p.poll() is None, "the run finished before it could be killed"
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    # nothing in out/ claims to be the result: the first recipe's outputs were moved aside
    assert not (out / "_SUCCESS").exists() and not (out / "kept.jsonl").exists() and not (out / "stats.json").exists()
    assert (out / ".previous" / "kept.jsonl").exists()
    r = run_capped("run", changed, "-q", cwd=tmp_path)
    assert r.returncode == EXIT_OK and "resumed:" in r.stderr
    assert orjson.loads((out / "_SUCCESS").read_bytes())["kept"] == summary(r.stderr)[1]


def test_resume_notices_an_input_edited_in_place_with_the_same_size_and_mtime(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", ROWS)
    recipe = _recipe(tmp_path, ["in.jsonl"], "out")
    assert run_capped("run", recipe, "-q", cwd=tmp_path).returncode == EXIT_OK
    st = src.stat()
    data = src.read_bytes().replace(b"Colour 7 is blue.", b"Colour 7 is pink.")
    src.write_bytes(data)
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert src.stat().st_size == st.st_size and src.stat().st_mtime_ns == st.st_mtime_ns
    r = run_capped("run", recipe, "-q", cwd=tmp_path)
    assert "resumed:" not in r.stderr
    assert b"Colour 7 is pink." in (tmp_path / "out" / "kept.jsonl").read_bytes()


# --- 10, 11. exit codes, rejects filters, validate of several files --------------------------------

def test_exit_codes_follow_the_table(tmp_path):
    good = write_jsonl(tmp_path / "good.jsonl", ROWS[:3])
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"instruction": "", "input": "", "output": "x"}] * 3)
    mixed = write_jsonl(tmp_path / "mixed.jsonl", ROWS[:2] + [{"instruction": "", "input": "", "output": "x"}])
    assert run_capped("convert", good, tmp_path / "o1.jsonl", "--to", "openai", "-q").returncode == EXIT_OK
    r = run_capped("convert", bad, tmp_path / "o2.jsonl", "--to", "openai", "-q")
    assert r.returncode == EXIT_ALL_REJECTED and "nothing written" in r.stderr
    assert run_capped("validate", mixed, "-q", cwd=tmp_path).returncode == EXIT_SOME_REJECTED
    assert run_capped("validate", bad, "-q", cwd=tmp_path).returncode == EXIT_ALL_REJECTED
    assert run_capped("validate", good, "-q", cwd=tmp_path).returncode == EXIT_OK
    assert run_capped("stats", bad, "-q").returncode == EXIT_ALL_REJECTED
    r = run_capped("run", _recipe(tmp_path, ["bad.jsonl"], "out"), "-q", cwd=tmp_path)
    assert r.returncode == EXIT_ALL_REJECTED
    r = run_capped("convert", tmp_path / "missing.jsonl", tmp_path / "o3.jsonl", "--to", "openai")
    assert r.returncode == EXIT_ERROR
    one_error_line(r.stderr, "missing.jsonl", "no such file")
    r = run_capped("convert", good, tmp_path / "o4.jsonl", "--to", "openai", "--no-such-flag")
    assert r.returncode == EXIT_USAGE and "No such option" in r.stderr
    assert run_capped("convert", good).returncode == EXIT_USAGE


def test_pairs_with_no_pair_exits_4_and_still_writes_its_report(tmp_path):
    rows = [{"prompt": f"Question {i}?", "completions": [{"response": f"answer {i}", "overall_score": 5},
                                                         {"response": f"other {i}", "overall_score": 5}]} for i in range(4)]
    src = write_jsonl(tmp_path / "rated.jsonl", rows)
    r = run_capped("pairs", src, "-o", tmp_path / "pairs", "--to", "trl", "-q")
    assert r.returncode == EXIT_ALL_REJECTED, r.stderr
    assert summary(r.stderr) == (4, 0, 4) and (tmp_path / "pairs" / "bias.json").exists()


def test_rejects_names_an_unknown_op_or_reason(tmp_path):
    write_jsonl(tmp_path / "in.jsonl", ROWS + ROWS[:5])
    assert run_capped("run", _recipe(tmp_path, ["in.jsonl"], "out"), "-q", cwd=tmp_path).returncode == EXIT_OK
    r = run_capped("rejects", tmp_path / "out", "--op", "nosuchop")
    assert r.returncode == EXIT_ERROR
    one_error_line(r.stderr, "nosuchop", "exact_dedup", "validate")
    r = run_capped("rejects", tmp_path / "out", "--reason", "nosuchreason")
    assert r.returncode == EXIT_ERROR
    one_error_line(r.stderr, "nosuchreason", "exact_duplicate")
    r = run_capped("rejects", tmp_path / "out", "--op", "exact_dedup", "--reason", "exact_duplicate")
    assert r.returncode == EXIT_OK and len(r.stdout.splitlines()) == 5


def test_validate_reports_every_file_it_cannot_read_and_validates_the_others(tmp_path):
    good = write_jsonl(tmp_path / "good.jsonl", ROWS[:4])
    odd = write_jsonl(tmp_path / "odd.jsonl", [{"foo": 1, "bar": 2}])
    r = run_capped("validate", odd, tmp_path / "missing.jsonl", good, "-q", cwd=tmp_path)
    assert r.returncode == EXIT_ERROR
    errors = [l for l in r.stderr.splitlines() if l.startswith("error:")]
    assert len(errors) == 2 and "odd.jsonl" in errors[0] and "missing.jsonl" in errors[1]
    assert summary(r.stderr) == (4, 4, 0)


def test_llm_serve_on_a_port_in_use_is_one_error_line_before_the_model_loads(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        t = time.perf_counter()
        r = run_capped("llm-serve", "smollm2", "--port", str(port))
        assert r.returncode == EXIT_ERROR and time.perf_counter() - t < 30
        one_error_line(r.stderr, f"--port {port}", "in use")


# --- cases an adversarial review found after the first round -------------------------------------

def test_a_kept_file_outside_the_output_dir_is_refused(tmp_path):
    src = write_jsonl(tmp_path / "data.jsonl", ROWS[:3])
    before = digest(src)
    for file in ("../data.jsonl", str(src), "sub/kept.jsonl", ".."):
        r = run_capped("run", _recipe(tmp_path, ["data.jsonl"], "out", ops="[]", output_extra=f", file: '{file}'"), "-q",
                       cwd=tmp_path)
        assert r.returncode == EXIT_ERROR, file
        one_error_line(r.stderr, "r.yaml", "output: file: must be a file name inside output.dir")
    assert digest(src) == before


def test_a_corrupt_gzip_stream_keeps_the_lines_before_the_damage(tmp_path):
    rows = alpaca_head(3000)
    data = bytearray(gzip.compress(b"".join(orjson.dumps(r) + b"\n" for r in rows)))
    data[len(data) * 2 // 3] ^= 0xFF
    src = tmp_path / "bad.jsonl.gz"
    src.write_bytes(bytes(data))
    r, kept, rejects = _convert(tmp_path, src)
    n_in, n_kept, n_rej = summary(r.stderr)
    assert r.returncode == EXIT_OK and n_kept > 1000
    last = rejects[-1]
    assert last["reason"] == "corrupt_file" and f"after line {last['line'] - 1:,}" in last["detail"]
    r = run_capped("run", _recipe(tmp_path, ["bad.jsonl.gz"], "out"), "-q", cwd=tmp_path)
    assert r.returncode == EXIT_OK and summary(r.stderr)[1] > 1000


def test_a_truncated_gzipped_json_array_keeps_its_complete_items(tmp_path):
    data = gzip.compress(orjson.dumps(ROWS * 400))
    src = tmp_path / "cut.json.gz"
    src.write_bytes(data[: len(data) // 2])
    r, kept, rejects = _convert(tmp_path, src)
    n_in, n_kept, n_rej = summary(r.stderr)
    assert n_kept > 5000 and n_rej == 1
    assert rejects[0]["reason"] == "corrupt_file" and rejects[0]["item"] == n_kept + 1
    assert f"after item {n_kept:,}" in rejects[0]["detail"]


def test_json_objects_that_are_not_in_an_array_are_read_as_records(tmp_path):
    one = tmp_path / "one.json"
    one.write_text(orjson.dumps(ROWS[0], option=orjson.OPT_INDENT_2).decode())
    r, kept, _ = _convert(tmp_path, one)
    assert summary(r.stderr) == (1, 1, 0)
    several = tmp_path / "several.json"
    several.write_text("\n".join(orjson.dumps(x, option=orjson.OPT_INDENT_2).decode() for x in ROWS[:3]))
    r, kept, _ = _convert(tmp_path, several)
    assert summary(r.stderr) == (3, 3, 0) and [k["messages"][0]["content"] for k in kept] == [x["instruction"] for x in ROWS[:3]]


def test_inputs_with_nothing_to_read_are_one_error_line(tmp_path):
    blank = tmp_path / "blank.json"
    blank.write_text("  \n\n ")
    r = run_capped("convert", blank, tmp_path / "o.jsonl", "--to", "openai")
    assert r.returncode == EXIT_ERROR
    one_error_line(r.stderr, "blank.json", "no records")
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    r = run_capped("convert", fifo, tmp_path / "o.jsonl", "--to", "openai")
    assert r.returncode == EXIT_ERROR
    one_error_line(r.stderr, "pipe.jsonl", "not a regular file")
    d = tmp_path / "d"
    d.mkdir()
    r = run_capped("validate", d, "-q", cwd=tmp_path)
    assert r.returncode == EXIT_ERROR and r.stderr.strip().count("\n") == 0 and not list(tmp_path.glob("*.rejects.jsonl"))
    src = write_jsonl(d / "in.jsonl", ROWS[:2])
    r = run_capped("convert", src, d, "--to", "ptdata")
    assert r.returncode == EXIT_ERROR and not list(d.glob(".*partial"))
    one_error_line(r.stderr, "is a directory")


def test_unparseable_lines_keep_their_text_in_the_rejects(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_bytes(orjson.dumps(ROWS[0]) + b'\n{"instruction": "cut\n{"instruction": "caf\xe9", "output": "x"}\n')
    r, kept, rejects = _convert(tmp_path, src)
    assert [(x["reason"], x["raw"]) for x in rejects] == [("malformed_json", '{"instruction": "cut'),
                                                           ("invalid_utf8", '{"instruction": "caf\\xe9", "output": "x"}')]


def test_rejects_output_never_goes_into_the_run_dir_or_over_its_inputs(tmp_path):
    src = write_jsonl(tmp_path / "data.jsonl", ROWS + ROWS[:3])
    assert run_capped("run", _recipe(tmp_path, ["data.jsonl"], "out"), "-q", cwd=tmp_path).returncode == EXIT_OK
    before = digest(src, *(tmp_path / "out" / ".work").rglob("*.jsonl"))
    for target in (tmp_path / "out" / ".work" / "seg0" / "00000.jsonl", tmp_path / "out" / "x.jsonl", src):
        r = run_capped("rejects", tmp_path / "out", "-o", target)
        assert r.returncode == EXIT_ERROR, target
        one_error_line(r.stderr, "refusing to write")
    assert digest(src, *(tmp_path / "out" / ".work").rglob("*.jsonl")) == before


def test_a_repeated_op_is_counted_on_its_own(tmp_path):
    write_jsonl(tmp_path / "in.jsonl", ROWS[:10] + [{"instruction": "ab", "input": "", "output": "cd"}])
    recipe = _recipe(tmp_path, ["in.jsonl"], "out", ops="[{length_filter: {min_chars: 1}}, {turn_filter: {}}, "
                                                         "{length_filter: {min_chars: 3}}]")
    r = run_capped("run", recipe, "-q", cwd=tmp_path)
    stats = orjson.loads((tmp_path / "out" / "stats.json").read_bytes())
    assert [(o["op"], o["in"], o["kept"]) for o in stats["ops"][1:]] == \
        [("length_filter", 11, 11), ("turn_filter", 11, 11), ("length_filter#2", 11, 10)]
    (row,) = load_jsonl(tmp_path / "out" / "rejects.jsonl")
    assert row["op"] == "length_filter#2"


def test_changed_recipe_keeps_the_previous_run_whole_in_previous(tmp_path):
    write_jsonl(tmp_path / "in.jsonl", ROWS)
    assert run_capped("run", _recipe(tmp_path, ["in.jsonl"], "out", ops="[]"), "-q", cwd=tmp_path).returncode == EXIT_OK
    first = orjson.loads((tmp_path / "out" / "_SUCCESS").read_bytes())
    r = run_capped("run", _recipe(tmp_path, ["in.jsonl"], "out", ops="[{length_filter: {min_chars: 18}}]"), "-q", cwd=tmp_path)
    assert r.returncode == EXIT_OK
    prev = tmp_path / "out" / ".previous"
    assert orjson.loads((prev / "_SUCCESS").read_bytes()) == first
    assert sorted(p.name for p in prev.iterdir()) == ["_SUCCESS", "kept.jsonl", "rejects.jsonl", "report.html", "stats.json"]


def test_nothing_written_means_no_file_and_no_stale_one(tmp_path):
    good = write_jsonl(tmp_path / "good.jsonl", ROWS[:3])
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"instruction": "", "input": "", "output": "x"}] * 3)
    out = tmp_path / "keep.jsonl"
    assert run_capped("convert", good, out, "--to", "openai", "-q").returncode == EXIT_OK
    assert out.exists() and not (tmp_path / "keep.rejects.jsonl").exists()  # no rejects: no empty rejects file
    r = run_capped("convert", bad, out, "--to", "openai", "-q")
    assert r.returncode == EXIT_ALL_REJECTED and "nothing written" in r.stderr
    assert not out.exists() and len(load_jsonl(tmp_path / "keep.rejects.jsonl")) == 3


# --- cases a code review found -----------------------------------------------------------------

def test_two_gzipped_inputs_with_one_name_are_each_read(tmp_path):
    for sub, rows in (("a", ROWS[:3]), ("b", ROWS[10:14])):
        (tmp_path / "g" / sub).mkdir(parents=True)
        (tmp_path / "g" / sub / "train.jsonl.gz").write_bytes(gzip.compress(b"".join(orjson.dumps(r) + b"\n" for r in rows)))
    (tmp_path / "r.yaml").write_text("inputs: ['g/*/train.jsonl.gz']\nops: []\noutput: {dir: out}\n")
    r = run_capped("run", "r.yaml", "-q", cwd=tmp_path)
    assert summary(r.stderr) == (7, 7, 0)
    kept = load_jsonl(tmp_path / "out" / "kept.jsonl")
    assert [(k["meta"]["source"], k["messages"][0]["content"]) for k in kept] == \
        [(f"g/a/train.jsonl.gz:{i + 1}", x["instruction"]) for i, x in enumerate(ROWS[:3])] + \
        [(f"g/b/train.jsonl.gz:{i + 1}", x["instruction"]) for i, x in enumerate(ROWS[10:14])]


@pytest.mark.parametrize("file", ["rejects.jsonl", "stats.json", "_SUCCESS", ".work", ".hidden.jsonl"])
def test_the_kept_file_cannot_be_one_of_the_runs_own_files(tmp_path, file):
    write_jsonl(tmp_path / "in.jsonl", ROWS[:2])
    r = run_capped("run", _recipe(tmp_path, ["in.jsonl"], "out", ops="[]", output_extra=f", file: '{file}'"), "-q", cwd=tmp_path)
    assert r.returncode == EXIT_ERROR and not (tmp_path / "out").exists()
    one_error_line(r.stderr, "output: file:")


def test_validate_does_not_touch_the_rejects_convert_wrote(tmp_path):
    raw = write_jsonl(tmp_path / "raw.jsonl", ROWS[:3] + [{"instruction": "", "input": "", "output": "x"}])
    assert run_capped("convert", raw, tmp_path / "train.jsonl", "--to", "ptdata", "-q", cwd=tmp_path).returncode == EXIT_OK
    before = digest(tmp_path / "train.rejects.jsonl")
    r = run_capped("validate", "train.jsonl", "-q", cwd=tmp_path)
    assert r.returncode == EXIT_OK and digest(tmp_path / "train.rejects.jsonl") == before
    r = run_capped("validate", "train.jsonl", "--out", tmp_path / "v.jsonl", "--rejects", tmp_path / "v.jsonl", "-q", cwd=tmp_path)
    assert r.returncode == EXIT_ERROR and not (tmp_path / "v.jsonl").exists()
    one_error_line(r.stderr, "it is also the output")


def test_pretty_printed_records_are_sniffed_from_a_real_head_and_keep_the_depth_limit(tmp_path):
    rec = {**ROWS[0], "x": 1}
    one = tmp_path / "one.json"
    one.write_bytes(b"\xef\xbb\xbf\n" + orjson.dumps(rec, option=orjson.OPT_INDENT_2))  # BOM and a blank line first
    r, kept, _ = _convert(tmp_path, one)
    assert summary(r.stderr) == (1, 1, 0)
    deep = tmp_path / "deep.json"
    deep.write_text('{\n  "instruction": "a",\n  "input": "",\n  "output": "b",\n  "x": ' + "[" * 500 + "]" * 500 + "\n}")
    r, kept, rejects = _convert(tmp_path, deep)
    assert summary(r.stderr) == (1, 0, 1) and rejects[0]["reason"] == "too_deep"


def test_a_json_array_named_jsonl_larger_than_a_shard_is_read_whole(tmp_path):
    (tmp_path / "arr.jsonl").write_bytes(orjson.dumps(ROWS * 4, option=orjson.OPT_INDENT_2))
    (tmp_path / "r.yaml").write_text("inputs: [arr.jsonl]\nops: []\nshard_bytes: 4096\noutput: {dir: out}\n")
    r = run_capped("run", "r.yaml", "-q", cwd=tmp_path)
    assert r.returncode == EXIT_OK and summary(r.stderr) == (200, 200, 0)


def test_a_json_array_cut_between_items_is_a_reject(tmp_path):
    src = tmp_path / "cut.json"
    src.write_bytes(b"[" + orjson.dumps(ROWS[0]) + b",\n")
    r, kept, rejects = _convert(tmp_path, src)
    assert summary(r.stderr) == (2, 1, 1) and "before the array is closed" in rejects[0]["detail"]
    src.write_bytes(b"[" + orjson.dumps(ROWS[0]) + b',{"instruction": "unfinished')
    r, kept, rejects = _convert(tmp_path, src)
    assert summary(r.stderr) == (2, 1, 1) and rejects[0]["raw"] == '{"instruction": "unfinished'


def test_rejects_of_an_unfinished_run_are_refused(tmp_path):
    write_jsonl(tmp_path / "in.jsonl", ROWS + ROWS[:2])
    assert run_capped("run", _recipe(tmp_path, ["in.jsonl"], "out"), "-q", cwd=tmp_path).returncode == EXIT_OK
    (tmp_path / "out" / "_SUCCESS").unlink()
    r = run_capped("rejects", tmp_path / "out")
    assert r.returncode == EXIT_ERROR
    one_error_line(r.stderr, "no _SUCCESS")


def test_an_op_object_keeps_no_label_from_an_earlier_recipe(tmp_path):
    from ptdata.errors import InputError
    from ptdata.ops import LengthFilter
    from ptdata.pipeline import Input, Recipe

    a, b = LengthFilter(min_chars=1), LengthFilter(min_chars=3)
    Recipe(inputs=[Input("x.jsonl")], ops=[a, b])
    Recipe(inputs=[Input("x.jsonl")], ops=[b, a])
    assert (b.name, a.name) == ("length_filter", "length_filter#2")
    with pytest.raises(InputError, match="the same op object is listed twice"):
        Recipe(inputs=[Input("x.jsonl")], ops=[a, a])


def test_one_meaning_per_flag(tmp_path):
    """-o is --out in every command (validate too); format options are -O / --option."""
    src = write_jsonl(tmp_path / "in.jsonl", ROWS[:3])
    assert run_capped("validate", src, "-o", tmp_path / "valid.jsonl", "-q").returncode == EXIT_OK
    assert len(load_jsonl(tmp_path / "valid.jsonl")) == 3
    r = run_capped("convert", src, tmp_path / "t.jsonl", "--to", "trl", "-O", "style=standard", "-q")
    assert r.returncode == EXIT_OK and set(load_jsonl(tmp_path / "t.jsonl")[0]) == {"prompt", "completion"}
    r = run_capped("convert", src, tmp_path / "t2.jsonl", "--to", "trl", "-o", "style=standard")
    assert r.returncode == EXIT_USAGE
    assert run_capped("export", src, "-o", tmp_path / "e", "--to", "trl-sft", "-q").returncode == EXIT_OK
