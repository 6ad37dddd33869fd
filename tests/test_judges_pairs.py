"""Judges, Evol-Instruct, rewrite and the pair builder against a scripted loopback server:
fixed, deterministic judge answers (valid, malformed, out of range, position-biased), so the
pairs built from the HH-RLHF prompts must come out exactly as the script implies."""
from __future__ import annotations

import gzip
import itertools

import orjson
import pytest
import xxhash
from typer.testing import CliRunner

from ptdata.cli import app as cli
from ptdata.generate.prompts import render_conversation
from ptdata.llm.serve import LoopbackServer, make_app
from ptdata.reader import read_records

from .conftest import shared
from .llm_helpers import between, scripted

ASPECTS = ["helpfulness", "truthfulness", "harmlessness", "instruction_following"]
SEED = 11


def h(s: str) -> int:
    return xxhash.xxh32_intdigest(s.encode("utf-8", "surrogatepass"))


def gen_texts(user: str, n: int) -> list[str]:
    return [f"Reply {k}:" + " detail" * (h(user) % 5 + 3 * k) for k in range(n)]


def conv_of(user: str) -> str:
    return between(user, "### Conversation\n", "\n### End of conversation")


def rating(answer: str, aspect: str) -> int:
    return 1 + h(answer + aspect) % 5


def strength(answer: str) -> int:
    return h(answer) % 100


def judge_script(user: str, req) -> str | list[str]:
    if "### Answer to rate" in user and "Aspects:" in user:
        conv, ans = conv_of(user), between(user, "### Answer to rate\n", "\n### End of answer")
        kind = h(conv) % 10
        if kind == 0:
            return "I think this answer is quite good."  # malformed, always
        if kind == 1 and req.sampling.seed == SEED:
            return '{"helpfulness": 4,'  # malformed on the first attempt only
        if kind == 2:
            return orjson.dumps({a: {"rating": 7, "rationale": "x"} for a in ASPECTS}).decode()
        body = {a: {"rating": rating(ans, a), "rationale": f"{a} judged"} for a in ASPECTS}
        return "```json\n" + orjson.dumps(body).decode() + "\n```"
    if "### Answer A" in user:
        conv = conv_of(user)
        a, b = between(user, "### Answer A\n", "\n### End of answer A"), between(user, "### Answer B\n", "\n### End of answer B")
        if h(conv) % 10 == 3:
            w = "A"  # position-biased judge
        else:
            w = "tie" if strength(a) == strength(b) else "A" if strength(a) > strength(b) else "B"
        return orjson.dumps({"winner": w, "rationale": "compared"}).decode()
    if "contradict" in user and "[assistant turn" in user:
        conv = conv_of(user)
        return orjson.dumps({"consistent": h(conv) % 4 != 0, "turn": 2 if h(conv) % 4 == 0 else None,
                             "explanation": "checked"}).decode()
    if '{"complexity"' in user:
        return orjson.dumps({"complexity": 1 + h(between(user, "### Instruction\n", "\n### End of instruction")) % 6}).decode()
    if '{"quality"' in user:
        return orjson.dumps({"quality": 1 + h(between(user, "### Answer to rate\n", "\n### End of answer")) % 6}).decode()
    if user.startswith("I want you to act as an instruction"):
        given = between(user, "#Given Instruction#:\n", "\n\n#")
        k = h(given) % 5
        if k == 0:
            return given  # no information gain
        if k == 1:
            return "#Rewritten Instruction#: " + given
        return given + " Answer in exactly three bullet points, and name one reliable source."
    if "### Answer to improve" in user:
        ans = between(user, "### Answer to improve\n", "\n### End of answer")
        return "" if h(ans) % 4 == 0 else ans + " In more detail: the key facts are stated precisely here."
    if user.endswith("name one reliable source."):
        if h(user) % 3 == 0:
            return "Sorry, I can't help with that."
        return "- first point with a detail\n- second point with a detail\n- third point. Source: an encyclopedia."
    return gen_texts(user, req.sampling.n)


@pytest.fixture(scope="module")
def server():
    app = make_app(scripted(judge_script), model_name="judge")
    with LoopbackServer(app) as srv:
        yield srv, app


@pytest.fixture(scope="module")
def hh_head(tmp_path_factory):
    path = tmp_path_factory.mktemp("hh") / "hh60.jsonl"
    with gzip.open(shared("hh_rlhf_harmless_test.jsonl.gz"), "rb") as f:
        path.write_bytes(b"".join(itertools.islice(f, 60)))
    return path


def step(srv, *args: str) -> None:
    r = CliRunner().invoke(cli, [*args, "--base-url", srv.base_url, "--model", "judge", "-q",
                                 "--llm", f"seed={SEED}", "--llm", "cache_dir=null", "--llm", "backoff=0.01"])
    assert r.exit_code == 0, r.output


def records(path) -> list:
    return [r for r, _ in read_records(path)]


def rejects(path) -> list[dict]:
    return [orjson.loads(x) for x in path.read_bytes().splitlines()] if path.exists() else []


def test_pairs_from_rated_candidates_match_the_script(server, hh_head, tmp_path):
    srv, app = server
    step(srv, "generate", str(hh_head), "-o", str(tmp_path / "gen"), "--n", "3")
    step(srv, "judge", str(tmp_path / "gen" / "kept.jsonl"), "-o", str(tmp_path / "judged"))
    r = CliRunner().invoke(cli, ["pairs", str(tmp_path / "judged" / "kept.jsonl"), "-o", str(tmp_path / "pairs"),
                                 "--min-margin", "1", "--to", "trl", "--to", "openai-pref", "--to", "llamafactory", "-q"])
    assert r.exit_code == 0, r.output

    prompts = [rec.messages for rec in records(hh_head)]
    expected_pairs, expected_rejects = {}, {}
    for msgs in prompts:
        conv = render_conversation(msgs)
        texts = gen_texts(msgs[-1]["content"], 3)
        kind = h(conv) % 10
        if kind == 0:
            expected_rejects[conv] = "judge_malformed"
            continue
        if kind == 2:
            expected_rejects[conv] = "judge_bad_rating"
            continue
        scores = [sum(rating(t, a) for a in ASPECTS) / 4 for t in texts]
        order = sorted(range(3), key=lambda k: (-scores[k], k))
        best, worst = order[0], order[-1]
        if scores[best] - scores[worst] < 1:
            expected_rejects[conv] = "margin_below_min"
        else:
            expected_pairs[conv] = (texts[best], texts[worst], round(scores[best] - scores[worst], 4))

    pairs = records(tmp_path / "pairs" / "kept.jsonl")
    got = {render_conversation(p.messages): (p.chosen[0]["content"], p.rejected[0]["content"], p.scores["margin"]) for p in pairs}
    assert got == expected_pairs and len(pairs) == len(expected_pairs) >= 20
    judged_rej = {render_conversation(x["record"]["messages"]): x["reason"] for x in rejects(tmp_path / "judged" / "rejects.jsonl")}
    pair_rej = {render_conversation(x["record"]["messages"]): x["reason"] for x in rejects(tmp_path / "pairs" / "rejects.jsonl")}
    assert {**judged_rej, **pair_rej} == expected_rejects
    assert {"judge_malformed", "judge_bad_rating", "margin_below_min"} <= set(expected_rejects.values())
    # nothing lost: every prompt is a pair or a reject
    assert len(expected_pairs) + len(expected_rejects) == 60
    # the first-attempt malformed answers were re-asked and accepted
    retried = [render_conversation(m) for m in prompts if h(render_conversation(m)) % 10 == 1]
    assert retried and all(c in got or expected_rejects.get(c) == "margin_below_min" for c in retried)
    # per-aspect ratings and rationales are carried on the pair
    p = pairs[0]
    assert {f"chosen.{a}" for a in ASPECTS} <= set(p.scores) and p.meta["pair"]["strategy"] == "best_worst"
    bias = orjson.loads((tmp_path / "pairs" / "bias.json").read_bytes())
    assert bias["pairs"] == len(pairs)
    longer = sum(len(c) > len(rj) for c, rj, _ in expected_pairs.values())
    assert bias["length"]["chosen_longer_share"] == round(longer / len(pairs), 4)
    assert set(bias["ratings"]) == set(ASPECTS)


def test_exports_round_trip_through_trl(server, hh_head, tmp_path):
    pytest.importorskip("trl")
    from datasets import Dataset
    from trl.data_utils import is_conversational, maybe_extract_prompt, unpair_preference_dataset

    srv, _ = server
    step(srv, "generate", str(hh_head), "-o", str(tmp_path / "gen"), "--n", "3")
    step(srv, "judge", str(tmp_path / "gen" / "kept.jsonl"), "-o", str(tmp_path / "judged"))
    r = CliRunner().invoke(cli, ["pairs", str(tmp_path / "judged" / "kept.jsonl"), "-o", str(tmp_path / "p"),
                                 "--to", "trl-dpo", "--to", "trl-kto", "--to", "openai-pref", "--to", "llamafactory-ranking", "-q"])
    assert r.exit_code == 0, r.output
    pairs = records(tmp_path / "p" / "kept.jsonl")
    trl_rows = [orjson.loads(x) for x in (tmp_path / "p" / "pairs.trl-dpo.jsonl").read_bytes().splitlines()]
    assert len(trl_rows) == len(pairs)
    for row, p in zip(trl_rows, pairs):
        assert is_conversational(row)
        assert maybe_extract_prompt(row) == row
        assert row["prompt"] == p.messages and row["chosen"] == p.chosen and row["rejected"] == p.rejected
    unpaired = unpair_preference_dataset(Dataset.from_list([{k: row[k] for k in ("prompt", "chosen", "rejected")} for row in trl_rows]))
    kto = [orjson.loads(x) for x in (tmp_path / "p" / "pairs.trl-kto.jsonl").read_bytes().splitlines()]
    assert sorted(orjson.dumps(dict(x), option=orjson.OPT_SORT_KEYS) for x in unpaired) == \
        sorted(orjson.dumps(x, option=orjson.OPT_SORT_KEYS) for x in kto)
    # every export reads back to the same pairs
    for name in ("pairs.trl-dpo.jsonl", "pairs.openai-pref.jsonl", "pairs.llamafactory-ranking.json"):
        back = records(tmp_path / "p" / name)
        assert [(b.messages, b.chosen, b.rejected) for b in back] == [(p.messages, p.chosen, p.rejected) for p in pairs], name


def test_pairwise_judge_in_both_orders(server, hh_head, tmp_path):
    srv, _ = server
    step(srv, "generate", str(hh_head), "-o", str(tmp_path / "gen"), "--n", "2")
    step(srv, "judge", str(tmp_path / "gen" / "kept.jsonl"), "-o", str(tmp_path / "pw"), "--judge", "pairwise")
    r = CliRunner().invoke(cli, ["pairs", str(tmp_path / "pw" / "kept.jsonl"), "-o", str(tmp_path / "pairs"),
                                 "--strategy", "pairwise", "-q"])
    assert r.exit_code == 0, r.output
    want_pairs, want_rej, firsts = {}, {}, []
    for rec in records(hh_head):
        conv = render_conversation(rec.messages)
        a, b = gen_texts(rec.messages[-1]["content"], 2)
        if h(conv) % 10 == 3:
            want_rej[conv] = "judge_position_inconsistent"
            firsts += ["A", "A"]
        elif strength(a) == strength(b):
            want_rej[conv] = "all_tied"
        else:
            win, lose = (a, b) if strength(a) > strength(b) else (b, a)
            want_pairs[conv] = (win, lose)
            firsts += ["A", "B"]
    got = {render_conversation(p.messages): (p.chosen[0]["content"], p.rejected[0]["content"])
           for p in records(tmp_path / "pairs" / "kept.jsonl")}
    assert got == want_pairs
    assert {render_conversation(x["record"]["messages"]): x["reason"] for x in rejects(tmp_path / "pairs" / "rejects.jsonl")} == want_rej
    bias = orjson.loads((tmp_path / "pairs" / "bias.json").read_bytes())
    jp = bias["judge_position"]
    assert jp["comparisons"] == 60
    assert jp["first_position_share"] == round(firsts.count("A") / len(firsts), 4)
    assert jp["inconsistent_share"] == round(sum(v == "judge_position_inconsistent" for v in want_rej.values()) / 60, 4)


def test_consistency_deita_evolve_rewrite(server, tmp_path):
    srv, _ = server
    # multi-turn sft conversations: the chosen HH transcripts
    src = tmp_path / "sft.jsonl"
    rows = []
    for rec in itertools.islice(records(shared("hh_rlhf_harmless_test.jsonl.gz")), 80):
        rows.append({"messages": rec.messages + rec.chosen})
    src.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    step(srv, "judge", str(src), "-o", str(tmp_path / "cons"), "--judge", "consistency", "--drop-inconsistent")
    kept = records(tmp_path / "cons" / "kept.jsonl")
    rej = rejects(tmp_path / "cons" / "rejects.jsonl")
    multi = [r["messages"] for r in rows if sum(m["role"] == "assistant" for m in r["messages"]) >= 2]
    bad = [m for m in multi if h(_cons_conv(m)) % 4 == 0]
    assert len(rej) == len(bad) > 0 and {x["reason"] for x in rej} == {"inconsistent_turns"}
    assert len(kept) + len(rej) == 80
    assert sum("consistency" in k.scores for k in kept) == len(multi) - len(bad)

    step(srv, "judge", str(src), "-o", str(tmp_path / "deita"), "--judge", "deita")
    for rec in records(tmp_path / "deita" / "kept.jsonl"):
        assert rec.scores["deita.score"] == rec.scores["deita.complexity"] * rec.scores["deita.quality"]
        assert 1 <= rec.scores["deita.complexity"] <= 6

    alpaca = tmp_path / "alpaca.jsonl"
    with gzip.open(shared("alpaca_en_52k.jsonl.gz"), "rb") as f:
        alpaca.write_bytes(b"".join(itertools.islice(f, 60)))
    step(srv, "evolve", str(alpaca), "-o", str(tmp_path / "evol"))
    reasons = {}
    for x in rejects(tmp_path / "evol" / "rejects.jsonl"):
        reasons[x["reason"]] = reasons.get(x["reason"], 0) + 1
    want: dict[str, int] = {}
    n_kept = 0
    for rec in records(alpaca):
        given = rec.messages[-2]["content"]
        k = h(given) % 5
        evolved = given + " Answer in exactly three bullet points, and name one reliable source."
        r = ("no_information_gain" if k == 0 else "copied_template" if k == 1
             else "refusal_response" if h(evolved) % 3 == 0 else None)
        if r:
            want[r] = want.get(r, 0) + 1
        else:
            n_kept += 1
    assert reasons == want and len(want) == 3
    evolved = records(tmp_path / "evol" / "kept.jsonl")
    assert len(evolved) == n_kept
    assert all(e.meta["evol"]["round"] == 1 and e.meta["evol"]["root"] for e in evolved)

    step(srv, "rewrite", str(alpaca), "-o", str(tmp_path / "rw"))
    out = records(tmp_path / "rw" / "kept.jsonl")
    assert len(out) == 60
    for before, after in zip(records(alpaca), out):
        ans = before.messages[-1]["content"]
        if h(ans) % 4 == 0:
            assert after.meta["rewrite"]["status"] == "empty" and after.messages == before.messages
        else:
            assert after.meta["rewrite"]["status"] == "rewritten"
            assert after.messages[-1]["content"] == ans + " In more detail: the key facts are stated precisely here."


def _cons_conv(msgs: list[dict]) -> str:
    from ptdata.generate.prompts import consistency_prompt

    return between(consistency_prompt(msgs), "### Conversation\n", "\n### End of conversation")


def test_pairs_from_existing_rating_fields(tmp_path):
    """UltraFeedback-style rows (aspect annotations, or one score per response) become pairs
    without a model; best_vs_rest keeps every lower response above the margin."""
    rows = [
        {"prompt": "What is 2+2?", "completions": [
            {"response": "4", "model": "a", "annotations": {"helpfulness": {"Rating": "5"}, "honesty": {"Rating": "5"}}},
            {"response": "5", "model": "b", "annotations": {"helpfulness": {"Rating": "2"}, "honesty": {"Rating": "1"}}},
            {"response": "four-ish", "model": "c", "annotations": {"helpfulness": {"Rating": "4"}, "honesty": {"Rating": "4"}}}]},
        {"instruction": "Name a colour.", "responses": ["red", "blue", "red"], "scores": [3, 1, 3]},
        {"prompt": "Same?", "completions": [{"text": "yes", "score": 2}, {"text": "yes", "score": 1}]},
        {"prompt": "One only", "completions": [{"text": "x", "score": 5}]},
    ]
    src = tmp_path / "rated.jsonl"
    src.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    r = CliRunner().invoke(cli, ["pairs", str(src), "-o", str(tmp_path / "o"), "--strategy", "best_vs_rest", "-q"])
    assert r.exit_code == 0, r.output
    got = [(p.messages[-1]["content"], p.chosen[0]["content"], p.rejected[0]["content"], p.scores["margin"])
           for p in records(tmp_path / "o" / "kept.jsonl")]
    assert got == [("What is 2+2?", "4", "four-ish", 1.0), ("What is 2+2?", "4", "5", 3.5), ("Name a colour.", "red", "blue", 2.0)]
    rej = {x["record"]["messages"][-1]["content"]: x["reason"] for x in rejects(tmp_path / "o" / "rejects.jsonl")}
    assert rej == {"Same?": "chosen_equals_rejected", "One only": "too_few_rated"}


def test_injected_malformed_judge_answer_is_re_asked(hh_head, tmp_path):
    """The fault server's `bad_answer` replaces one judge answer with prose: that judgment is
    re-asked once and the output is the same as a run without the fault."""
    from ptdata.llm.serve import Fault

    target = next(r for r in records(hh_head) if h(render_conversation(r.messages)) % 10 > 2)
    needle = target.messages[0]["content"][:60]
    outs, calls = [], []
    for faults in ([], [Fault("bad_answer", match=needle, times=1)]):
        app = make_app(scripted(judge_script), model_name="judge", faults=faults)
        with LoopbackServer(app) as srv:
            d = tmp_path / f"run{len(faults)}"
            step(srv, "generate", str(hh_head), "-o", str(d / "gen"), "--n", "3")
            before = app.state.log.calls
            step(srv, "judge", str(d / "gen" / "kept.jsonl"), "-o", str(d / "judged"))
            calls.append(app.state.log.calls - before)
        outs.append((d / "judged" / "kept.jsonl").read_bytes())
    assert outs[0] == outs[1]
    assert calls[1] == calls[0] + 1


def test_pairs_op_in_a_recipe_reports_derived_records(tmp_path):
    """best_vs_rest derives several pairs from one prompt: the run accounts for them
    (in + derived = kept + rejected) and the report's funnel shows the added column."""
    from ptdata.ops.llm import Pairs
    from ptdata.pipeline import Input, Output, Recipe, run

    rows = [{"prompt": f"q{i}", "completions": [{"text": f"a{i}", "score": 5}, {"text": f"b{i}", "score": 3},
                                                  {"text": f"c{i}", "score": 1}]} for i in range(10)]
    src = tmp_path / "r.jsonl"
    src.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    res = run(Recipe(inputs=[Input(str(src))], ops=[Pairs(strategy="best_vs_rest", min_margin=1)],
                     output=Output(dir=str(tmp_path / "o"))), workers=1)
    assert (res.stats["records_in"], res.stats["derived"], res.kept, res.rejected) == (10, 10, 20, 0)
    html = res.report_path.read_text()
    assert "<th>added</th>" in html and "<td>10</td>" in html
