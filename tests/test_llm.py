"""The model-calls layer against a real OpenAI-compatible server on loopback, serving a tiny
random Qwen2 built from a config (no download), plus fault injection and the disk cache."""
from __future__ import annotations

import os
import time
from pathlib import Path

import orjson
import pytest

from ptdata.llm import LLMConfig, LLMError, Request, make_llm
from ptdata.llm.base import Result, Sample
from ptdata.llm.serve import Fault, LoopbackServer, make_app

from .llm_helpers import build_tiny_model, scripted

pytest.importorskip("torch")
pytest.importorskip("transformers")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-qwen2")


@pytest.fixture(scope="session")
def local_lm(tiny_model):
    return make_llm({"backend": "transformers", "model": str(tiny_model), "cache_dir": None})


@pytest.fixture(scope="module")
def server(local_lm):
    app = make_app(local_lm.complete, model_name="tiny")
    with LoopbackServer(app) as srv:
        yield srv


def client(srv, **kw):
    return make_llm({"model": "tiny", "base_url": srv.base_url, "cache_dir": None, "max_tokens": 12, **kw})


PROMPTS = [[{"role": "user", "content": f"Say something about number {i}."}] for i in range(4)]


def test_http_answers_equal_in_process_model(server, local_lm):
    """n samples and per-token log-probs over HTTP are exactly what the model gives in process."""
    llm = client(server)
    reqs = [Request(p, llm.config.sampling(n=3, seed=7 + i, logprobs=True)) for i, p in enumerate(PROMPTS)]
    remote = llm.generate(reqs)
    local = [local_lm.complete(r) for r in reqs]
    for r, l in zip(remote, local):
        assert r.ok and len(r.samples) == 3
        assert [s.text for s in r.samples] == [s.text for s in l.samples]
        for s, ls in zip(r.samples, l.samples):
            assert s.logprobs == pytest.approx(ls.logprobs)
            assert len(s.logprobs) == len(s.tokens) > 0 and all(x <= 0 for x in s.logprobs)
        assert r.completion_tokens == sum(len(s.logprobs) for s in r.samples)
    # prompt tokens are the chat template's length under the real Qwen tokenizer
    ids = local_lm.tokenizer.apply_chat_template(PROMPTS[0], add_generation_prompt=True)
    assert remote[0].prompt_tokens == len(ids["input_ids"] if hasattr(ids, "keys") else ids) > 10
    u = llm.usage
    assert (u.requests, u.http_calls, u.retries, u.failures) == (4, 4, 0, 0)
    assert u.completion_tokens == sum(r.completion_tokens for r in remote)


def test_streaming_gives_the_same_answers(server):
    reqs = [Request(p, LLMConfig(model="x").sampling(n=2, seed=3, logprobs=True, max_tokens=10)) for p in PROMPTS]
    plain = client(server).generate(reqs)
    streamed = client(server, stream=True).generate(reqs)
    for a, b in zip(plain, streamed):
        assert b.ok
        assert [s.text for s in a.samples] == [s.text for s in b.samples]
        assert [s.logprobs for s in a.samples] == [s.logprobs for s in b.samples]
        assert (a.prompt_tokens, a.completion_tokens) == (b.prompt_tokens, b.completion_tokens)


def test_greedy_is_deterministic_without_seed(server):
    reqs = [Request(PROMPTS[0], LLMConfig(model="x").sampling(temperature=0, max_tokens=8))]
    assert client(server).generate(reqs)[0].text == client(server).generate(reqs)[0].text


def test_faults_are_retried_and_nothing_is_lost(local_lm):
    faults = [Fault("429", match="number 0", times=2, retry_after=0.3), Fault("500", match="number 1", times=1),
              Fault("hang", match="number 2", times=1, hang_s=3.0), Fault("bad_body", match="number 3", times=1),
              Fault("500", match="number 4", times=99)]
    app = make_app(local_lm.complete, faults=faults)
    prompts = [[{"role": "user", "content": f"Say something about number {i}."}] for i in range(6)]
    with LoopbackServer(app) as srv:
        llm = client(srv, timeout=0.8, max_retries=3, backoff=0.05, backoff_max=1.0)
        res = llm.generate([Request(p, llm.config.sampling(seed=1)) for p in prompts])
        log = app.state.log
    assert [r.ok for r in res] == [True, True, True, True, False, True]
    assert [r.attempts for r in res] == [3, 2, 2, 2, 4, 1]
    assert res[4].error == "server_error" and "gave up after 4 attempts" in res[4].detail
    assert llm.usage.retries == 2 + 1 + 1 + 1 + 3 and llm.usage.failures == 1
    # Retry-After was honoured: the retries of prompt 0 came >= 0.3 s after each 429
    t0 = [t for t, st, p in log.entries if "number 0" in p]
    assert len(t0) == 3 and t0[1] - t0[0] >= 0.29 and t0[2] - t0[1] >= 0.29
    assert log.by_status[429] == 2 and log.by_status[500] == 1 + 4


def test_api_key_is_sent_and_checked(local_lm, monkeypatch):
    app = make_app(local_lm.complete, api_key="s3cret-key")
    with LoopbackServer(app) as srv:
        monkeypatch.setenv("PTDATA_TEST_KEY", "s3cret-key")
        ok = client(srv, api_key_env="PTDATA_TEST_KEY").generate([Request(PROMPTS[0])])[0]
        monkeypatch.setenv("PTDATA_TEST_KEY", "wrong")
        bad = client(srv, api_key_env="PTDATA_TEST_KEY").generate([Request(PROMPTS[0])])[0]
    assert ok.ok
    assert bad.error == "auth_error" and bad.attempts == 1 and "wrong" not in bad.detail
    assert "s3cret" not in repr(LLMConfig(model="m", api_key_env="PTDATA_TEST_KEY"))


def test_config_errors_are_clear(tmp_path):
    with pytest.raises(LLMError, match="api_key_env"):
        LLMConfig.from_dict({"model": "m", "api_key": "sk-123"})
    with pytest.raises(LLMError, match="unknown setting"):
        LLMConfig.from_dict({"model": "m", "temprature": 0.1})
    with pytest.raises(LLMError, match="backend"):
        LLMConfig.from_dict({"model": "m", "backend": "tgi"})
    with pytest.raises(LLMError, match="not a local model directory"):
        make_llm({"backend": "transformers", "model": str(tmp_path)})
    try:
        import vllm  # noqa: F401
    except ImportError:
        with pytest.raises(LLMError, match="pip install vllm"):
            make_llm({"backend": "vllm", "model": "m"})


def test_cache_rerun_makes_zero_calls(local_lm, tmp_path):
    """A cached step, rerun through the CLI, makes no HTTP call and writes the same output."""
    from ptdata.cli import app as cli

    from typer.testing import CliRunner

    src = tmp_path / "prompts.jsonl"
    src.write_bytes(b"".join(orjson.dumps({"prompt": p}) + b"\n" for p in PROMPTS))
    app = make_app(local_lm.complete)
    with LoopbackServer(app) as srv:
        args = ["generate", str(src), "--base-url", srv.base_url, "--model", "tiny", "--n", "2",
                "--llm", f"cache_dir={tmp_path / 'cache'}", "--llm", "max_tokens=6", "--llm", "seed=5", "-q"]
        r1 = CliRunner().invoke(cli, [*args, "-o", str(tmp_path / "a")])
        calls = app.state.log.calls
        r2 = CliRunner().invoke(cli, [*args, "-o", str(tmp_path / "b")])
        assert r1.exit_code == 0 and r2.exit_code == 0, r1.output + r2.output
        assert calls == 4 and app.state.log.calls == 4
    a = (tmp_path / "a" / "kept.jsonl").read_bytes()
    assert a == (tmp_path / "b" / "kept.jsonl").read_bytes()
    recs = [orjson.loads(x) for x in a.splitlines()]
    assert [len(r["meta"]["candidates"]) for r in recs] == [2] * 4
    stats_a = orjson.loads((tmp_path / "a" / "stats.json").read_bytes())
    stats_b = orjson.loads((tmp_path / "b" / "stats.json").read_bytes())
    assert stats_a["ops"][1]["counters"]["http_calls"] == 4
    assert stats_b["ops"][1]["counters"] == {"requests": 4, "cache_hits": 4}


def test_rate_limit_storm_loses_no_prompt(tmp_path):
    """40 rate-limit answers spread over 40 concurrent prompts: all come back, in order, and
    each 429 cost exactly one retry."""
    app = make_app(scripted(lambda user, req: f"echo: {user}"), faults=[Fault("429", times=40, retry_after=0.05)])
    with LoopbackServer(app) as srv:
        llm = client(srv, concurrency=8, max_retries=10)
        t = time.time()
        res = llm.generate([Request([{"role": "user", "content": f"q{i}"}]) for i in range(40)])
    assert time.time() - t < 10
    assert [r.text for r in res] == [f"echo: q{i}" for i in range(40)]
    assert llm.usage.retries == 40 and app.state.log.by_status == {429: 40, 200: 40}


def test_steps_reject_with_reasons_and_lose_nothing(local_lm, tmp_path):
    """Through the CLI: a prompt whose server keeps failing is rejected with the reason; the
    tiny random model cannot write judge JSON, so every judgment is re-asked twice, then
    rejected as malformed; in = kept + rejected at each step."""
    from typer.testing import CliRunner

    from ptdata.cli import app as cli

    src = tmp_path / "p.jsonl"
    src.write_bytes(b"".join(orjson.dumps({"prompt": f"Question number {i}?"}) + b"\n" for i in range(6)))
    app = make_app(local_lm.complete, faults=[Fault("500", match="number 4", times=99)])
    with LoopbackServer(app) as srv:
        common = ["--base-url", srv.base_url, "--model", "tiny", "-q", "--llm", "cache_dir=null", "--llm", "max_tokens=8",
                  "--llm", "max_retries=2", "--llm", "backoff=0.01", "--llm", "seed=3"]
        r = CliRunner().invoke(cli, ["generate", str(src), "-o", str(tmp_path / "g"), "--n", "2", *common])
        assert r.exit_code == 0, r.output
        calls_before = app.state.log.calls
        r = CliRunner().invoke(cli, ["judge", str(tmp_path / "g" / "kept.jsonl"), "-o", str(tmp_path / "j"), *common])
        assert r.exit_code == 4, r.output  # every record rejected: nothing produced (README, Exit codes)
        judge_calls = app.state.log.calls - calls_before
    g = orjson.loads((tmp_path / "g" / "stats.json").read_bytes())
    assert (g["records_in"], g["kept"], g["rejected"]) == (6, 5, 1)
    rej = [orjson.loads(x) for x in (tmp_path / "g" / "rejects.jsonl").read_bytes().splitlines()]
    assert [(x["reason"], x["record"]["messages"][0]["content"]) for x in rej] == [("llm_server_error", "Question number 4?")]
    j = orjson.loads((tmp_path / "j" / "stats.json").read_bytes())
    assert (j["records_in"], j["kept"], j["rejected"]) == (5, 0, 5)
    assert j["ops"][1]["dropped"] == {"judge_malformed": 5}
    assert judge_calls == 5 * 2 * 3  # 5 records x 2 candidates x (1 + 2 re-asks)


def test_an_interrupted_step_keeps_every_answer_it_got(tmp_path):
    """Ctrl-C in the middle of `generate`: the answers that arrived are in the cache, so the rerun
    asks only for the rest (each answer is committed as it arrives, not at the end of a batch)."""
    import asyncio
    import signal
    import subprocess
    import sys

    async def slow(req: Request) -> Result:
        await asyncio.sleep(0.05)
        return Result(samples=[Sample(f"answer to {req.messages[-1]['content']}", "stop")], prompt_tokens=3, completion_tokens=3)

    src = tmp_path / "p.jsonl"
    src.write_bytes(b"".join(orjson.dumps({"prompt": f"Question {i}?"}) + b"\n" for i in range(200)))
    app = make_app(slow)
    with LoopbackServer(app) as srv:
        args = [sys.executable, "-c", "from ptdata.cli import main; main()", "generate", str(src), "-o", str(tmp_path / "g"),
                "--n", "1", "--mode", "sft", "--base-url", srv.base_url, "--model", "m", "-q",
                "--llm", f"cache_dir={tmp_path / 'cache'}", "--llm", "concurrency=4"]
        p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        deadline = time.time() + 60
        while app.state.log.calls < 40 and time.time() < deadline:
            time.sleep(0.01)
        os.killpg(p.pid, signal.SIGINT)
        _, errout = p.communicate(timeout=60)
        assert p.returncode == 130, errout.decode()
        first = app.state.log.calls
        assert 40 <= first < 200
        r = subprocess.run(args, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        again = app.state.log.calls - first
    # at most the requests in flight when the step was interrupted are asked twice
    assert 200 - first <= again <= 200 - first + 4
    kept = [orjson.loads(x) for x in (tmp_path / "g" / "kept.jsonl").read_bytes().splitlines()]
    assert len(kept) == 200


def test_a_model_step_on_a_terminal_shows_its_calls_as_they_end(tmp_path):
    """On a terminal, `generate` draws a live line per request (done, cached, failed, retried,
    tokens, rate), not only a shard bar that stays at 0/1 for the whole step."""
    import asyncio
    import pty
    import subprocess
    import sys

    async def slow(req: Request) -> Result:
        await asyncio.sleep(0.02)
        return Result(samples=[Sample("an answer", "stop")], prompt_tokens=5, completion_tokens=2)

    src = tmp_path / "p.jsonl"
    src.write_bytes(b"".join(orjson.dumps({"prompt": f"Question {i}?"}) + b"\n" for i in range(60)))
    with LoopbackServer(make_app(slow)) as srv:
        master, slave = pty.openpty()
        p = subprocess.Popen([sys.executable, "-c", "from ptdata.cli import main; main()", "generate", str(src), "-o",
                              str(tmp_path / "g"), "--n", "1", "--base-url", srv.base_url, "--model", "m",
                              "--llm", "cache_dir=null", "--llm", "concurrency=2"],
                             stdin=slave, stdout=slave, stderr=slave, env={**os.environ, "COLUMNS": "200", "TERM": "xterm"})
        os.close(slave)
        out = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        assert p.wait(timeout=120) == 0
    text = out.decode(errors="replace")
    assert "model calls" in text and " done (0 cached)" in text and "calls/s" in text
    assert "in 60 · kept 60 · rejected 0" in text
