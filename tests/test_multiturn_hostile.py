"""`ptdata multiturn` against hostile settings, seeds and servers: every bad value is one `error:`
line (exit 1), a server that answers in the wrong shape costs the seed a reject with the reason
(never an internal error), and odd seeds keep what they carry."""
from __future__ import annotations

import orjson
import pytest

from ptdata.llm import Request, Result, Sample
from ptdata.llm.serve import LoopbackServer, make_app

from .conftest import load_jsonl, run_cli, write_jsonl

Q, A = "How do I sort a list in Python?", "Use sorted(xs) for a new list, or xs.sort() to sort in place."


def responder(req: Request) -> Result:
    """User simulator, teacher and judges that always pass: distinct words every turn."""
    if req.prompt is not None:  # magpie: an aligned model that ran past its end of turn
        return Result(samples=[Sample("Which one is faster for big lists?<|im_end|>\n<|im_start|>assistant\n"
                                      "I am the model answering myself.", "stop")])
    user = req.messages[-1]["content"]
    system = req.messages[0]["content"] if req.messages[0]["role"] == "system" else ""
    if "### Latest user message" in user:
        text = '{"coherent": true, "explanation": "ok"}'
    elif "contradict a fact" in user:
        text = '{"consistent": true, "turn": null, "explanation": "ok"}'
    elif "role-playing a real human user" in system:
        text = "Does sorted also work on tuples of strings?"
    elif user.startswith("Which one is faster"):
        text = "Both are O(n log n); sort() avoids a copy."
    else:
        text = "Yes: sorted accepts any iterable and returns a list, comparing tuples element by element."
    return Result(samples=[Sample(text, "stop")] * req.sampling.n)


@pytest.fixture()
def server():
    with LoopbackServer(make_app(responder, model_name="m")) as srv:
        yield srv


def mt(base_url: str, *args: str):
    return run_cli("multiturn", *args, "--model", "m", "--base-url", base_url, "--no-embeddings",
                   "--llm", "cache_dir=null", "--llm", "max_retries=0", "-q")


def one_error_line(r, needle: str) -> None:
    assert r.returncode == 1, (r.returncode, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], r.stderr
    assert "internal error" not in r.stderr and "Traceback" not in r.stderr


def test_no_style_with_weight_is_one_error_line(tmp_path):
    src = write_jsonl(tmp_path / "s.jsonl", [{"instruction": Q, "output": A}])
    r = run_cli("multiturn", src, "-o", tmp_path / "o", "--model", "m", "--no-embeddings", "--style", "clarify=0",
                "--style", "deeper=0")
    one_error_line(r, "styles")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"inputs: [{{path: {src}}}]\nops:\n  - multiturn: {{llm: {{model: m}}, embeddings: false, "
                      f"styles: {{challenge: 0}}}}\noutput: {{dir: {tmp_path / 'o2'}}}\n", encoding="utf-8")
    one_error_line(run_cli("run", recipe, "-q"), "weight above 0")


def test_bad_turns_is_named_as_turns(tmp_path):
    src = write_jsonl(tmp_path / "s.jsonl", [{"instruction": Q, "output": A}])
    for turns in ("-1", "0", "1"):
        r = run_cli("multiturn", src, "-o", tmp_path / "o", "--model", "m", "--no-embeddings", "--turns", turns)
        one_error_line(r, "turns: must be an integer between 2 and 50")


def test_missing_embedding_model_names_the_setting(tmp_path):
    src = write_jsonl(tmp_path / "s.jsonl", [{"instruction": Q, "output": A}])
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"inputs: [{{path: {src}}}]\nops:\n  - multiturn: {{llm: {{model: m}}, "
                      f"embedding_model: {tmp_path / 'no-such-model'}}}\noutput: {{dir: {tmp_path / 'o'}}}\n",
                      encoding="utf-8")
    one_error_line(run_cli("run", recipe, "-q"), "embedding_model")


BODIES = {  # what a broken or hostile server sends back, and how the backend reads it
    "usage_not_numbers": (b'{"choices":[{"index":0,"message":{"content":"fine"},"finish_reason":"stop"}],'
                          b'"usage":{"prompt_tokens":"abc"}}', False),
    "usage_a_list": (b'{"choices":[{"index":0,"message":{"content":"fine"},"finish_reason":"stop"}],"usage":[1]}', False),
    "stream_chunk_a_list": (b"data: [1, 2]\n\ndata: [DONE]\n\n", True),
    "stream_choice_a_string": (b'data: {"choices": ["x"]}\n\ndata: [DONE]\n\n', True),
    "stream_text_a_number": (b'data: {"choices": [{"index": 0, "delta": {"content": 5}}]}\n\ndata: [DONE]\n\n', True),
}


@pytest.mark.parametrize("case", sorted(BODIES))
def test_a_server_answering_in_the_wrong_shape_is_a_reject_not_a_crash(case, tmp_path):
    from fastapi import FastAPI
    from fastapi.responses import Response

    body, stream = BODIES[case]
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat():
        return Response(body, media_type="text/event-stream" if stream else "application/json")

    src = write_jsonl(tmp_path / "s.jsonl", [{"instruction": Q, "output": A}, {"instruction": "Why?", "output": "Because."}])
    with LoopbackServer(app) as srv:
        r = mt(srv.base_url, src, "-o", tmp_path / "o", *(["--llm", "stream=true"] if stream else []))
    assert "internal error" not in r.stderr and r.returncode in (0, 4), r.stderr
    stats = orjson.loads((tmp_path / "o" / "stats.json").read_bytes())
    assert stats["records_in"] == 2 and stats["kept"] + stats["rejected"] == 2
    if not stream:  # unreadable usage counts no tokens; the answer itself is used
        assert r.returncode == 0 or all(x["reason"] != "llm_bad_response" for x in load_jsonl(tmp_path / "o" / "rejects.jsonl"))
    else:
        assert {x["reason"] for x in load_jsonl(tmp_path / "o" / "rejects.jsonl")} == {"llm_bad_response"}


def test_an_sft_record_with_a_topic_label_is_continued_not_discarded(server, tmp_path):
    rec = {"id": "x", "kind": "sft", "messages": [{"role": "user", "content": Q}, {"role": "assistant", "content": A}],
           "scores": {}, "meta": {"topic": "python lists"}}
    src = write_jsonl(tmp_path / "s.jsonl", [rec])
    r = mt(server.base_url, src, "-o", tmp_path / "o", "--from", "ptdata", "--turns", "2")
    assert r.returncode == 0, r.stderr
    [row] = load_jsonl(tmp_path / "o" / "kept.jsonl")
    assert [m["content"] for m in row["messages"][:2]] == [Q, A]  # the seed's own exchange, kept
    assert row["meta"]["synthesis"]["styles"][0] == "seed" and len(row["messages"]) == 4


def test_magpie_turn_ends_at_the_templates_end_of_turn(server, tmp_path):
    """A server that ignores `stop` lets the model write past its user turn (the template's
    end-of-turn and an assistant reply of its own): the user turn is cut there."""
    src = write_jsonl(tmp_path / "s.jsonl", [{"messages": [{"role": "user", "content": Q}, {"role": "assistant", "content": A}]}])
    r = mt(server.base_url, src, "-o", tmp_path / "o", "--method", "magpie", "--magpie-template", "qwen3", "--turns", "2")
    assert r.returncode == 0, r.stderr
    [row] = load_jsonl(tmp_path / "o" / "kept.jsonl")
    assert row["messages"][2] == {"role": "user", "content": "Which one is faster for big lists?"}
    assert not any("<|im_" in (m["content"] or "") for m in row["messages"])
