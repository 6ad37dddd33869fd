"""The README's Python snippets and bash blocks run as written from the repository root (in a scratch copy of it)."""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from .conftest import ROOT


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), re.S)


def test_every_python_snippet_in_the_readme_runs(tmp_path):
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    blocks = python_blocks()
    assert blocks
    for code in blocks:
        r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                           env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
        assert r.returncode == 0, f"{code}\n{r.stderr}"
    # the API snippet's own figures: in = kept + rejected, and the recipe wrote its outputs
    assert (tmp_path / "out" / "api" / "train.openai.jsonl").exists()
    assert (tmp_path / "out" / "api" / "curated" / "_SUCCESS").exists()
    first = r.stdout.splitlines()[0].split()
    assert int(first[0]) == int(first[1]) + int(first[2]) > 0


# ---- the README's bash blocks -------------------------------------------------------------------
# Every ```bash block runs as written from the repository root: in a scratch copy of the tracked
# files (`.venv` a link to the real one, `shared` a link beside the copy so `../shared/data`
# resolves), PATH unchanged (a bare `ptdata`, only on PATH in an activated venv, fails), with
# `set -euo pipefail`. Usage synopses with placeholders are ```text blocks and are not run.

# What CI runs itself (.ci/run): the README's two setup lines. Matched by the command (the text
# before a trailing `  # comment`), exactly.
SETUP_LINES = {
    "bash quickstart.sh": "the setup itself: CI installs the venv (scripts/install.sh) before the tests; run here it "
                          "would reinstall the real venv through the .venv link",
    ".venv/bin/python -m pytest -q": "the test suite this test is part of",
}
# Benchmarks that compare with peers in venvs of their own (bench/_venvs, see each script's
# docstring), which neither CI nor scripts/install.sh sets up: not run.
BENCH_LINES = {
    ".venv/bin/python bench/curation.py --copies 10 --results bench/RESULTS.md": "needs the datatrove and data-juicer "
                                                                                 "venvs (bench/_venvs)",
    ".venv/bin/python bench/llm_throughput.py --results bench/RESULTS.md": "needs the distilabel venv (bench/_venvs)",
}
# The benchmarks that need nothing else finish in about a minute and a quarter together on 2 cores:
# test_readme_benchmarks runs them (slow), not the block test.
BENCH_RUN = {
    ".venv/bin/python bench/convert.py --results bench/RESULTS.md": "Alpaca x10 (520,020 records), best of 5: ~45 s",
    ".venv/bin/python bench/flywheel_load.py --results bench/RESULTS.md": "10 s open loop each way, a closed loop, "
                                                                          "kill -9: ~30 s",
}
SKIPPED = {**SETUP_LINES, **BENCH_LINES, **BENCH_RUN}


def bash_blocks() -> list[tuple[str, str]]:
    """(the `## ` section it is in, its text) for every ```bash block of the README, in order."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks, section = [], ""
    for m in re.finditer(r"^## ([^\n]+)$|^```bash\n(.*?)^```$", text, re.M | re.S):
        if m.group(1) is not None:
            section = m.group(1).strip()
        else:
            blocks.append((section, m.group(2)))
    return blocks


def command(line: str) -> str:
    return re.sub(r"\s+#\s.*$", "", line).strip()


def scratch_copy(tmp: Path) -> Path:
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    repo = tmp / "repo"
    for name in filter(None, files):
        src = ROOT / os.fsdecode(name)
        if src.is_file():  # a tracked file someone deleted in the work tree is not copied
            (repo / os.fsdecode(name)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, repo / os.fsdecode(name))
    (repo / ".venv").symlink_to(ROOT / ".venv")
    (tmp / "shared").symlink_to(ROOT.parent / "shared")
    return repo


def run_block(script: str, cwd: Path, env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    """bash -c SCRIPT in a session of its own, so that a block past its time is killed whole (a model server
    it started in the background too)."""
    p = subprocess.Popen(["bash", "-c", "set -euo pipefail\n" + script], cwd=cwd, env=env, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        pytest.fail(f"past {timeout} s:\n{script}\n{out[-3000:]}\n{err[-3000:]}")
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def lines_of(path: Path) -> int:
    return sum(1 for x in path.read_bytes().splitlines() if x.strip())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_quick_start(d: Path, out: str) -> None:
    # examples/model_demo.sh: generate, judge, distill against SmolLM2, and the calibration table printed
    assert lines_of(d / "out/model_demo/generate/kept.jsonl") == 4
    judged = orjson.loads((d / "out/model_demo/judge/stats.json").read_bytes())
    assert judged["records_in"] == 4 == judged["kept"] + judged["rejected"]
    cal = orjson.loads((d / "out/model_demo/distill/calibration.json").read_bytes())
    assert cal["prompts_in"] == 8 == cal["labeled"] + cal["rejected"] and cal["calibration"]["with_reference"] == 8
    assert (d / "out/model_demo/distill/calibration.html").exists()
    assert "calibration on 8 prompts with a reference answer:" in out
    assert re.search(r"^ +0\.75 +\d+ +\d+ +[\d.]+ +[\d.-]+  <- --threshold$", out, re.M), out
    assert "calibration table: out/model_demo/distill/calibration.html" in out


def check_commands(d: Path, out: str) -> None:
    assert (d / "out/curated/_SUCCESS").exists()
    st = orjson.loads((d / "out/curated/stats.json").read_bytes())
    dups = next(o for o in st["ops"] if o["op"] == "exact_dedup")["dropped"]["exact_duplicate"]
    assert lines_of(d / "out/exact_duplicates.jsonl") == dups > 0
    assert lines_of(d / "out/alpaca.openai.jsonl") == 118 and lines_of(d / "out/alpaca.openai.rejects.jsonl") == 6
    assert (d / "out/gsm.sharegpt.parquet").stat().st_size > 0
    assert lines_of(d / "out/hh.valid.jsonl") == 38 and lines_of(d / "out/hh.valid.rejects.jsonl") == 2
    stats = orjson.loads((d / "out/stats.json").read_bytes())  # hh_pairs holds the pairs, sharegpt_tools the sft
    assert stats["kinds"]["preference"] == 38 and stats["kinds"]["sft"] > 0
    assert "alpaca" in out and "sharegpt" in out  # formats


def check_distillation(d: Path, out: str) -> None:
    assert lines_of(d / "out/distill/train.jsonl") == 3  # the wrong majority (81) passes 0.75 too: no verifier
    table = {t["threshold"]: (t["kept"], t["correct"]) for t in
             orjson.loads((d / "out/distill/calibration.json").read_bytes())["calibration"]["table"]}
    assert (table[0.0], table[0.5], table[0.75], table[1.0]) == ((4, 3), (4, 3), (3, 2), (1, 1))
    assert "       0.75       3        2     0.750      0.667  <- --threshold" in out


def check_training_export(d: Path, out: str) -> None:
    recs = [orjson.loads(x) for x in (d / "out/curated/kept.jsonl").read_bytes().splitlines()]
    kinds = [r["kind"] for r in recs]
    sft = kinds.count("sft")
    pairs = sum(1 for r in recs if r["kind"] == "preference" and r.get("chosen") and r.get("rejected"))
    unpaired = kinds.count("preference") - pairs  # KTO records: one side and a label
    assert sft and pairs and unpaired
    assert lines_of(d / "out/export/train.trl-sft.jsonl") == lines_of(d / "out/export/train.openai.jsonl") == sft
    assert lines_of(d / "out/export/train.trl-dpo.jsonl") == lines_of(d / "out/export/train.openai-pref.jsonl") == pairs
    assert lines_of(d / "out/export/train.trl-kto.jsonl") == 2 * pairs + unpaired  # a pair is two KTO rows
    assert "train.llamafactory-sft" in orjson.loads((d / "out/export/dataset_info.json").read_bytes())
    ts = orjson.loads((d / "out/tokenized/token_stats.json").read_bytes())
    assert ts["kept"] == sft and ts["rejected"] == len(kinds) - sft and ts["pack_length"] == 4096
    assert (d / "out/tokenized/tokenized.parquet").stat().st_size > 0


def check_data_flywheel(d: Path, out: str) -> None:
    listed = dict(re.findall(r"^(v[12]) .*?sft=(\d+)", out, re.M))
    assert set(listed) == {"v1", "v2"}, out
    for v, n in listed.items():
        assert lines_of(d / f"out/flywheel/data/{v}/sft.jsonl") == int(n) > 0
    assert "in_earlier_version" in out  # v2: the rows that came back again
    assert (d / "out/flywheel/report.html").exists()
    assert not (d / "flywheel.sqlite").exists() and not (d / "flywheel-data").exists()


def check_tests_and_benchmarks(d: Path, out: str) -> None:
    assert out == ""  # every line is a benchmark (BENCH_LINES, BENCH_RUN): nothing ran here


def check_human_review(d: Path, out: str) -> None:
    assert (d / "out/review/agreement.html").exists()
    [version] = [p for p in (d / "out/review/data").iterdir() if p.is_dir()]
    manifest = orjson.loads((version / "manifest.json").read_bytes())
    assert manifest and lines_of(version / "sft.jsonl") >= 1  # the correction sent through the API is an sft record


def check_curation_recipes(d: Path, out: str) -> None:
    rep = orjson.loads((d / "out/select/select_report.json").read_bytes())
    assert set(rep["methods"]) == {"score", "kcenter", "facility", "random", "longest"}  # the baselines always
    assert all(lines_of(d / f"out/select/{m}.jsonl") == 30 for m in rep["methods"]) and "Spearman with response length" in out


CHECKS = {"Quick start": check_quick_start, "Commands": check_commands, "Curation recipes": check_curation_recipes,
          "Distillation": check_distillation,
          "Training export": check_training_export, "Data flywheel": check_data_flywheel,
          "Human review": check_human_review, "Tests and benchmarks": check_tests_and_benchmarks}


def test_every_bash_block_in_the_readme_runs(tmp_path):
    blocks = bash_blocks()
    assert {s for s, _ in blocks} == set(CHECKS), "a section with a bash block needs its checks here (and vice versa)"
    every = [command(x) for _, code in blocks for x in code.splitlines()]
    assert [x for x in SKIPPED if x not in every] == [], "a skipped line the README no longer has"
    for line in every:  # `ptdata` is on PATH only in an activated venv; the README says `.venv/bin/ptdata`
        assert not re.match(r"(\S+=\S*\s+)*ptdata\b", line), f"bare ptdata in a bash block: {line}"
        if line not in SKIPPED:
            assert "quickstart.sh" not in line and "scripts/install" not in line and "pytest" not in line, line
    d = scratch_copy(tmp_path)
    start = time.time()
    outputs: dict[str, str] = {}
    env = {**os.environ, "PORT": str(free_port())}  # model_demo.sh's server port; PATH as it is
    for section, code in blocks:
        script = "\n".join(x for x in code.splitlines() if command(x) not in SKIPPED)
        outputs.setdefault(section, "")
        if not script.strip():
            continue
        r = run_block(script, d, env)
        assert r.returncode == 0, f"## {section}: exit {r.returncode}\n{script}\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}"
        assert "Traceback" not in r.stderr, f"## {section}\n{r.stderr}"
        outputs[section] += r.stdout + r.stderr
    for section, check in CHECKS.items():
        check(d, outputs[section])
    # everything the blocks wrote is in the copy, nothing in the repository itself
    made = [(Path(top) / f).relative_to(d) for top, dirs, files in os.walk(d) for f in files  # not into .venv (a link)
            if "__pycache__" not in Path(top).parts and (Path(top) / f).stat().st_mtime >= start]
    assert made
    leaked = [str(p) for p in made if (ROOT / p).exists() and (ROOT / p).stat().st_mtime >= start
              and p.parts[:2] != ("out", "curated")]  # out/curated: the quick start's job, which others may run
    assert leaked == []


@pytest.mark.slow
def test_readme_benchmarks(tmp_path):
    """The README's benchmark commands that need no peer venv, as written, in a scratch copy."""
    lines = [command(x) for _, code in bash_blocks() for x in code.splitlines()]
    assert set(BENCH_RUN) <= set(lines)
    d = scratch_copy(tmp_path)
    start = time.time()
    before = (d / "bench" / "RESULTS.md").read_text(encoding="utf-8")
    r = run_block("\n".join(BENCH_RUN), d, dict(os.environ))
    assert r.returncode == 0 and "Traceback" not in r.stderr, f"{r.stdout[-3000:]}\n{r.stderr[-5000:]}"
    results = (d / "bench" / "RESULTS.md").read_text(encoding="utf-8")
    assert results != before and "### convert: Alpaca x10" in results and "### flywheel proxy:" in results
    assert "0 of them missing from the store" in r.stdout + r.stderr + results
    assert (ROOT / "bench" / "RESULTS.md").stat().st_mtime < start  # written in the copy only
    assert not (ROOT / "bench" / "_work").exists() or (ROOT / "bench" / "_work").stat().st_mtime < start

