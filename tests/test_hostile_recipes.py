"""Hostile recipes and the decisions behind them, through the real CLI under a memory cap
(issue 14, items 8, 9, 22, 23, 24): recipe values checked by type and range with one error line,
YAML alias bombs refused, mixed-script near duplicates found, distillation answers compared
exactly with truncated samples voting for nothing and the best sample defined, math-only text
language-neutral. Unit tests on the public datasets check the mechanisms behind each."""
from __future__ import annotations

import dataclasses
import gzip
import itertools
import re
from pathlib import Path

import numpy as np
import orjson
import pytest

from ptdata.distill.answers import is_truncated, looping_tail, normalize_number, number, sample_answer
from ptdata.distill.confidence import vote
from ptdata.errors import InputError
from ptdata.ops import all_ops
from ptdata.ops.dedup import NearDedup, exact_jaccard, shingle_hashes
from ptdata.ops.language import NEUTRAL, identify, identify_record
from ptdata.params import allowed, describe_schema, schema
from ptdata.pipeline import Input, Output, Recipe
from ptdata.records import Record
from ptdata.text import is_cjk, normalize_for_match, shingles

from .conftest import load_jsonl, run_cli, shared, write_jsonl
from .hostile import EXIT_ERROR, EXIT_OK, digest, one_error_line, run_capped, summary


@pytest.fixture(scope="module")
def alpaca_file(tmp_path_factory) -> Path:
    rows = load_jsonl(shared("alpaca_en_52k.jsonl.gz"))[:200]
    return write_jsonl(tmp_path_factory.mktemp("in") / "alpaca.jsonl", rows)


def _recipe(tmp: Path, body: str, name: str = "recipe.yaml") -> Path:
    p = tmp / name
    p.write_text(body)
    return p


# ---- item 8: every recipe value checked by type and range, one line, same words as `ptdata ops` ----

BAD = [  # (recipe lines after `inputs`, the error after "error: recipe.yaml: ")
    ("ops:\n  - length_filter: {min_chars: \"abc\"}", "ops[0] length_filter: min_chars: must be an integer >= 0, got 'abc'"),
    ("ops:\n  - near_dedup: {threshold: [1, 2]}", "ops[0] near_dedup: threshold: must be a number between 0 and 1, got [1, 2]"),
    ("ops:\n  - exact_dedup: {}\n  - length_filter: {}\n  - near_dedup: {threshold: 1.5}",
     "ops[2] near_dedup: threshold: must be a number between 0 and 1, got 1.5"),
    ("ops:\n  - exact_dedup: {keep: sideways}", "ops[0] exact_dedup: keep: must be one of best, first, got 'sideways'"),
    ("ops:\n  - language_filter: {languages: en}",
     "ops[0] language_filter: languages: must be a non-empty list of ISO 639 codes such as en, zh, got 'en'"),
    ("ops:\n  - near_dedup: {threshold: .nan}", "ops[0] near_dedup: threshold: must be a number between 0 and 1, got nan"),
    ("ops:\n  - pii: {action: shout}", "ops[0] pii: action: must be one of redact, reject, detect, got 'shout'"),
    ("ops:\n  - near_dedup: {num_perm: true}", "ops[0] near_dedup: num_perm: must be an integer between 1 and 4096, got True"),
    ("ops:\n  - near_dedup: {word_ngram: 1000000000}",
     "ops[0] near_dedup: word_ngram: must be an integer between 1 and 64, got 1000000000"),
    ("ops:\n  - generate: {llm: {model: m, concurrency: abc}}",
     "ops[0] generate: llm: concurrency: must be an integer >= 1, got 'abc'"),
    ("ops: []\nbatch_size: abc", "batch_size: must be an integer >= 1, got 'abc'"),
    ("ops: []\nbatch_size: 0", "batch_size: must be an integer >= 1, got 0"),
    ("ops: []\nshard_bytes: -5", "shard_bytes: must be an integer >= 1, got -5"),
    ("ops: []\nvalidation: {max_turn_chars: \"x\"}", "validation: max_turn_chars: must be an integer >= 1, got 'x'"),
    ("ops: []\noutput: {dir: o, rejects: sideways}", "output: rejects: must be one of compact, full, got 'sideways'"),
    ("ops:\n  - pii: {template: \"{nope}\"}",
     "ops[0] pii: template: {type} is the only placeholder (the PII type), got ['{nope}']"),
    ("ops:\n  - refusal_filter: {extra_patterns: [\"\"]}",
     "ops[0] refusal_filter: extra_patterns: '' matches the empty text, so it would drop every record"),
    ("ops:\n  - length_filter: {min_chars: 1, min_chars: 5}", "line 3: key 'min_chars' given twice"),
    ("ops:\n  - decontaminate: {benchmarks: [nonexist.jsonl]}", "ops[0] decontaminate: benchmark file nonexist.jsonl not found"),
]


@pytest.mark.parametrize("body,message", BAD, ids=[m.split(":")[0] + ":" + m.split(":")[1] for _, m in BAD])
def test_bad_recipe_values_are_one_line(tmp_path, alpaca_file, body, message):
    before = digest(alpaca_file)
    out = tmp_path / "out"
    body = body.replace("dir: o", f"dir: {out}") if "output:" in body else f"{body}\noutput: {{dir: {out}}}"
    recipe = _recipe(tmp_path, f"inputs: [{alpaca_file}]\n{body}\n")
    r = run_capped("run", recipe.name, cwd=tmp_path)
    assert r.returncode == EXIT_ERROR
    assert one_error_line(r.stderr) == f"error: recipe.yaml: {message}"
    assert not (tmp_path / "out").exists() and digest(alpaca_file) == before


def test_inputs_must_be_a_list(tmp_path, alpaca_file):
    """`inputs: a.jsonl` used to read as the input "a"."""
    r = run_capped("run", _recipe(tmp_path, f"inputs: {alpaca_file}\nops: []\n"), cwd=tmp_path)
    assert r.returncode == EXIT_ERROR
    one_error_line(r.stderr, "recipe.yaml: inputs: must be a non-empty list of non-empty strings or mappings, got ")


def test_ops_prints_the_same_constraints(tmp_path):
    """Each error above names what `ptdata ops` prints for that parameter, and every op's
    description is printed whole."""
    r = run_capped("ops")
    assert r.returncode == EXIT_OK
    for _, message in BAD:
        m = re.match(r"ops\[\d+\] (\w+): (\w+): must be (.*), got ", message)
        if m and m.group(2) != "llm":
            op, name, words = m.groups()
            assert f"    {name} = " in _op_block(r.stdout, op)
            line = next(x for x in _op_block(r.stdout, op).splitlines() if x.startswith(f"    {name} = "))
            assert f"  ({words})  " in line
    for name, cls in all_ops().items():
        assert f"{name} ({cls.kind}) {cls.summary()}" in r.stdout
        assert cls.summary().endswith((".", ")")), cls.summary()  # a whole sentence, not a first line


def _op_block(stdout: str, op: str) -> str:
    """The parameter lines `ptdata ops` prints under one op."""
    lines = stdout.splitlines()
    start = next(i for i, x in enumerate(lines) if x.startswith(f"{op} ("))
    block = list(itertools.takewhile(lambda x: x.startswith("    "), lines[start + 1:]))
    return "\n".join(block)


def _wrong_value(schema: dict):
    """A value of the wrong type for a parameter, or just outside its range."""
    if "minimum" in schema:
        return schema["minimum"] - 1
    if "maximum" in schema:
        return schema["maximum"] + 1
    return object()


def test_every_op_parameter_is_checked():
    """Each parameter of each op refuses a value of the wrong type and one outside its range,
    with one line naming the op, the parameter and what it allows."""
    for name, cls in all_ops().items():
        for f in dataclasses.fields(cls):
            if not f.init:
                continue
            words = allowed(cls, f.name)
            assert "any value" not in words, (name, f.name)
            for bad in {id(x): x for x in (object(), _wrong_value(schema(cls, f.name)))}.values():
                with pytest.raises(InputError) as e:
                    cls.from_params({f.name: bad})
                msg = str(e.value)
                assert "\n" not in msg and msg.startswith(f"op {name}: {f.name}: must be {words}, got "), msg


def test_python_api_refuses_too(tmp_path):
    from ptdata.ops.dedup import NearDedup as ND
    from ptdata.ops.filters import LengthFilter

    src = write_jsonl(tmp_path / "a.jsonl", [{"instruction": "hi", "output": "hello"}])
    with pytest.raises(InputError, match=r"^ops\[0\] near_dedup: threshold: must be a number between 0 and 1, got 1.5$"):
        Recipe(inputs=[Input(str(src))], ops=[ND(threshold=1.5)])
    with pytest.raises(InputError, match=r"^ops\[1\] length_filter: min_chars: must be an integer >= 0, got 'abc'$"):
        Recipe(inputs=[Input(str(src))], ops=[ND(), LengthFilter(min_chars="abc", max_chars=10**9)])
    with pytest.raises(InputError, match=r"^input: format: must be one of .*, got 'nope'$"):
        Input(str(src), format="nope")
    inp = Input(str(src))
    inp.fields = {"question": 5}  # changed after construction: the recipe checks again
    with pytest.raises(InputError, match=r"^inputs\[0\]: fields: must be a mapping of names to strings, got \{'question': 5\}$"):
        Recipe(inputs=[inp], ops=[])
    with pytest.raises(InputError, match=r"^output: rejects: must be one of compact, full, got 'x'$"):
        Output(rejects="x")
    with pytest.raises(InputError, match=r"^batch_size: must be an integer >= 1, got 0$"):
        Recipe(inputs=[Input(str(src))], ops=[], batch_size=0)
    with pytest.raises(InputError, match=r"^inputs\[0\]: must be an Input, got 'a.jsonl'$"):
        Recipe(inputs=["a.jsonl"], ops=[])


def test_schema_words():
    assert describe_schema({"type": "number", "minimum": 0, "maximum": 1}) == "a number between 0 and 1"
    assert describe_schema({"type": "integer", "exclusiveMinimum": 0}) == "an integer > 0"
    assert describe_schema({"type": "array", "items": {"type": "string"}, "minItems": 1}) == "a non-empty list of strings"
    assert describe_schema({"anyOf": [{"enum": ["a", "b"]}, {"type": "null"}]}) == "one of a, b or null"
    assert describe_schema({"type": "object", "additionalProperties": {"type": "number", "minimum": 0}}) == \
        "a mapping of names to numbers >= 0"


# ---- item 9: YAML alias bombs ----------------------------------------------------------------

def _bomb() -> str:
    parts = ["&a [" + ",".join(["lol"] * 9) + "]"]
    parts += [f"&{c} [" + ",".join([f"*{p}"] * 9) + "]" for p, c in zip("abcdefgh", "bcdefghi")]
    return "name: [" + ", ".join(parts) + "]\n"


@pytest.mark.parametrize("kind", ["bomb", "cycle", "deep_list", "deep_map"])
def test_yaml_alias_bombs_are_refused(tmp_path, alpaca_file, kind):
    head = {"bomb": _bomb(), "cycle": "name: &a [x, *a]\n", "deep_list": "name: " + "[" * 20000 + "]" * 20000 + "\n",
            "deep_map": "name: " + "{a: " * 5000 + "1" + "}" * 5000 + "\n"}[kind]
    recipe = _recipe(tmp_path, head + f"inputs: [{alpaca_file}]\nops: []\noutput: {{dir: {tmp_path / 'out'}}}\n")
    if kind == "bomb":
        assert len(recipe.read_bytes()) < 1000
    r = run_capped("run", recipe, memory_mb=512, timeout=60)
    assert r.returncode == EXIT_ERROR
    one_error_line(r.stderr, str(recipe), {"bomb": "aliases expand", "cycle": "contains it", "deep_list": "nested",
                                           "deep_map": "nested"}[kind])
    assert not (tmp_path / "out").exists()


def test_a_reasonable_alias_still_works(tmp_path, alpaca_file):
    recipe = _recipe(tmp_path, f"inputs: [{alpaca_file}]\nops:\n  - length_filter: &lf {{min_chars: 2, field: all}}\n"
                               f"  - turn_filter: {{min_turns: 2}}\n  - length_filter: *lf\n"
                               f"output: {{dir: {tmp_path / 'out'}}}\n")
    r = run_capped("run", recipe, memory_mb=1024)
    assert r.returncode == EXIT_OK, r.stderr
    assert summary(r.stderr) == (200, 200, 0)


# ---- item 22: near dedup of mixed-script text -------------------------------------------------

_HAN = re.compile(r"[\u4e00-\u9fff]")


def _one_char_copy(row: dict) -> dict:
    """The record with one Chinese character changed, in the middle of its most Chinese field."""
    key = max(("instruction", "input", "output"), key=lambda k: len(_HAN.findall(row.get(k) or "")))
    text = row[key]
    at = [m.start() for m in _HAN.finditer(text)]
    i = at[len(at) // 2]
    return {**row, key: text[:i] + ("的" if text[i] != "的" else "是") + text[i + 1:]}


def _all_text(row: dict) -> str:
    return "\n".join(row[k] for k in ("instruction", "input", "output") if row.get(k))


@pytest.fixture(scope="module")
def zh_rows() -> list[dict]:
    return load_jsonl(shared("alpaca_zh_17k.jsonl.gz"))


@pytest.fixture(scope="module")
def mixed_rows(zh_rows) -> list[dict]:
    """Chinese records whose letters are mostly Latin (quoted English, code, product names): the
    ones a per-record choice of shingling cut into words, a run of Chinese characters one word."""
    rows = [r for r in zh_rows if len(_HAN.findall(_all_text(r))) >= 40 and not is_cjk(normalize_for_match(_all_text(r)))]
    assert len(rows) >= 20
    return rows


def _found(texts_a: list[str], texts_b: list[str]) -> tuple[int, np.ndarray]:
    """(pairs (a_i, b_i) near_dedup finds, exact Jaccard of each pair)."""
    op, n = NearDedup(), len(texts_a)
    shingled = op.shingled(texts_a + texts_b)
    keys = shingle_hashes(*shingled)
    pairs, _ = op.pairs(op.signatures([], shingled), keys["sh"], keys["sh_n"])
    found = {tuple(p) for p in pairs.tolist()}
    truth = np.array([[i, i + n] for i in range(n)])
    return sum((i, i + n) in found for i in range(n)), exact_jaccard(keys["sh"], keys["sh_n"], truth)


def test_mixed_script_shingles_by_script(mixed_rows, zh_rows):
    """Each CJK character is a unit and each Latin word a unit, within one record: a copy with one
    character changed stays above the threshold and is found, as on plain Chinese."""
    assert shingles("Clear Display (micro:bit block)是在3.0版本中引入的。")[:3] == [
        "clear display micro bit block", "display micro bit block 是", "micro bit block 是 在"]
    copies = [_one_char_copy(r) for r in mixed_rows]
    hit, jac = _found([_all_text(r) for r in mixed_rows], [_all_text(r) for r in copies])
    assert hit == len(mixed_rows) and (jac >= 0.8).all(), (hit, len(mixed_rows), float(jac.min()))
    plain = [r for r in zh_rows if len(_HAN.findall(_all_text(r))) >= 60 and not re.search("[A-Za-z]", _all_text(r))][:300]
    hit, _ = _found([_all_text(r) for r in plain], [_all_text(_one_char_copy(r)) for r in plain])
    assert hit == len(plain)


def test_near_dedup_cli_on_mixed_script(tmp_path, mixed_rows):
    src = write_jsonl(tmp_path / "mixed.jsonl", mixed_rows + [_one_char_copy(r) for r in mixed_rows])
    before = digest(src)
    recipe = _recipe(tmp_path, f"inputs: [{src}]\nops:\n  - near_dedup: {{threshold: 0.8, keep: first}}\n"
                               f"output: {{dir: {tmp_path / 'out'}}}\n")
    r = run_capped("run", recipe)
    assert r.returncode == EXIT_OK, r.stderr
    n = len(mixed_rows)
    assert summary(r.stderr) == (2 * n, n, n)
    rej = load_jsonl(tmp_path / "out" / "rejects.jsonl")
    assert {x["reason"] for x in rej} == {"near_duplicate"} and len(rej) == n
    assert sorted(int(x["source"].rsplit(":", 1)[1]) for x in rej) == list(range(n + 1, 2 * n + 1))
    assert digest(src) == before


# ---- item 23: distillation answers ------------------------------------------------------------

def test_numbers_compare_exactly():
    a, b = number("A: 1234567890123456789012345678901"), number("A: 1234567890123456789012345678909")
    assert a == "1234567890123456789012345678901" and a != b
    assert number("#### 1,000.50") == number("\\boxed{1000.5}") == number("#### 2001/2") == "1000.5"
    assert normalize_number("\\frac{1}{3}") == "1/3" and normalize_number("0.3333333333333333333333333333") != "1/3"
    assert normalize_number("-0.0") == "0" and normalize_number("1/0") is None
    assert number("It costs $18.00 in total") == "18"


def test_truncated_samples_have_no_answer():
    loop = "Each box holds 0.18 of a crate, so 1/5.5 = 0." + "18" * 60
    assert looping_tail(loop) and sample_answer({"text": loop}, number) is None
    assert not looping_tail("#### 1000000") and sample_answer({"text": "#### 1000000"}, number) == "1000000"
    cut = {"text": "Natalia sold 48 clips in April and half as many in May, so 48 / 2 = 24, and", "finish_reason": "length"}
    assert is_truncated(cut) and sample_answer(cut, number) is None
    # no final-answer line and a mid-sentence stop: its last number is where it was cut
    assert number("She sold 48 clips in April, then 24 in May, so in total she sold 48 + 24 = 72,") is None
    v = vote([{"text": loop}, {"text": loop}, {"text": "#### 5"}], [sample_answer({"text": t}, number) for t in (loop, loop, "#### 5")])
    assert v.majority == "5" and v.share == pytest.approx(1 / 3)


@pytest.fixture(scope="module")
def gsm() -> list[dict]:
    with gzip.open(shared("gsm8k_train.jsonl.gz"), "rb") as f:
        return [orjson.loads(x) for x in itertools.islice(f, 200)]


def _final(ans: str) -> str:
    return ans.rsplit("####", 1)[1].strip()


def _weak(gsm: list[dict], i: int) -> str:
    """A sample that reaches the right answer by the wrong reasoning: another problem's solution
    with this problem's final line."""
    return gsm[(i + 1) % len(gsm)]["answer"].rsplit("####", 1)[0] + f"#### {_final(gsm[i]['answer'])}"


def _plain(ans: str) -> str:
    return re.sub(r"<<[^>]*>>", "", ans)  # the same solution without calculator annotations


def test_best_sample_is_the_consensus_not_the_first(gsm):
    """Without log-probs or a judge the label is the sample agreeing most with the others of the
    majority answer, in any order (the first-listed weak sample used to be kept every time)."""
    for i, g in enumerate(gsm):
        texts = [_weak(gsm, i), g["answer"], _plain(g["answer"])]
        picked = set()
        for order in (texts, texts[::-1], texts[1:] + texts[:1]):
            samples = [{"text": t} for t in order]
            v = vote(samples, [sample_answer(s, number) for s in samples])
            assert v.share == 1.0 and v.chosen_by == "consensus"
            picked.add(order[v.chosen])
        assert len(picked) == 1 and texts[0] not in picked  # the same label in any order, never the weak one
    lp = [{"text": "#### 3", "mean_logprob": -0.9}, {"text": "#### 3.0", "mean_logprob": -0.1}]
    assert vote(lp, ["3", "3"]).chosen == 1 and vote(lp, ["3", "3"]).chosen_by == "logprob"


def test_distill_cli_answers(tmp_path, gsm):
    big = "1234567890123456789012345678901"
    rows = []
    for i, g in enumerate(gsm[:60]):
        kind = i % 4
        if kind == 0:  # agreeing only after rounding to 28 digits: two answers, no majority of 0.6
            samples = [f"A: {big}", f"A: {big[:-1]}9", f"A: {big}5"]
        elif kind == 1:  # a looping sample, cut where it was: no answer, no label
            samples = [{"text": "So each share is 0." + "18" * 80}] * 3
        elif kind == 2:  # one sample stopped by the token limit does not vote
            samples = [g["answer"], g["answer"], {"text": g["answer"], "finish_reason": "length"}]
        else:  # the first sample reasons wrongly; the label is the consensus sample
            samples = [_weak(gsm, i), g["answer"], _plain(g["answer"])]
        rows.append({"prompt": g["question"], "reference": _final(g["answer"]), "samples": samples})
    src = write_jsonl(tmp_path / "samples.jsonl", rows)
    before = digest(src)
    r = run_capped("distill", src, "-o", tmp_path / "d", "--offline", "--threshold", "0.6", "-q")
    assert r.returncode == EXIT_OK, r.stderr
    cal = orjson.loads((tmp_path / "d" / "calibration.json").read_bytes())
    assert (cal["prompts_in"], cal["labeled"], cal["rejected"]) == (60, 30, 30)  # in = labeled + without a label
    decisions = {d["prompt_id"]: d for d in load_jsonl(tmp_path / "d" / "round_1" / "decisions.jsonl")}
    labels = [Record.from_dict(x) for x in load_jsonl(tmp_path / "d" / "train.jsonl")]
    by_q = {x.messages[-2]["content"]: x for x in labels}
    for i, (g, row) in enumerate(zip(gsm[:60], rows)):
        pid = Record("prompt", [{"role": "user", "content": g["question"]}]).id
        d = decisions[pid]
        if i % 4 == 0:
            assert not d["kept"] and len(set(d["answers"])) == 3 and d["values"]["consistency"] == pytest.approx(1 / 3, abs=1e-6)
        elif i % 4 == 1:
            assert d["reason"] == "no_answer" and d["answers"] == [None] * 3 and d["truncated"] == 3
        elif i % 4 == 2:
            assert d["kept"] and d["answers"][2] is None and d["values"]["consistency"] == pytest.approx(2 / 3, abs=1e-6)
        else:
            assert d["kept"] and d["chosen_by"] == "consensus"
            assert by_q[g["question"]].messages[-1]["content"] != row["samples"][0]
            assert by_q[g["question"]].meta["distill"]["chosen_by"] == "consensus"
    assert digest(src) == before


# ---- item 24: language ID on math-only text ---------------------------------------------------

@pytest.fixture(scope="module")
def arithmetic() -> list[tuple[str, str]]:
    """500 distinct calculations from GSM8K's calculator annotations (<<48/2=24>>)."""
    seen: dict[str, str] = {}
    with gzip.open(shared("gsm8k_train.jsonl.gz"), "rb") as f:
        for line in f:
            for expr, val in re.findall(r"<<([^<>=]+)=([^<>=]+)>>", orjson.loads(line)["answer"]):
                seen.setdefault(expr, val)
            if len(seen) >= 500:
                break
    return list(seen.items())[:500]


def test_math_only_text_is_language_neutral(arithmetic):
    assert all(identify(e + "=") == (NEUTRAL, 1.0) for e, _ in arithmetic)
    rec = Record("sft", [{"role": "user", "content": "91-33="}, {"role": "assistant", "content": "答案是五十八，也就是58。"}])
    assert identify_record(rec, "prompt")[0] == "zh"  # the rest of the conversation tells
    rec = Record("sft", [{"role": "user", "content": "91-33="}, {"role": "assistant", "content": "58"}])
    assert identify_record(rec, "prompt")[0] == NEUTRAL
    assert identify("Bonjour, je voudrais réserver une table pour deux personnes ce soir.")[0] == "fr"


def test_language_filter_cli_keeps_math(tmp_path, arithmetic, alpaca_file):
    math = [{"instruction": f"{e}=", "output": v} for e, v in arithmetic]
    french = [{"instruction": "Écrivez une phrase sur la mer et le soleil, s'il vous plaît.",
               "output": "La mer brille sous le soleil du matin."}]
    src = write_jsonl(tmp_path / "math.jsonl", math + french)
    before = digest(src, alpaca_file)
    recipe = _recipe(tmp_path, f"inputs: [{src}, {alpaca_file}]\nops:\n  - language_filter: {{languages: [en, zh]}}\n"
                               f"output: {{dir: {tmp_path / 'out'}}}\n")
    r = run_capped("run", recipe)
    assert r.returncode == EXIT_OK, r.stderr
    n_in, kept, rejected = summary(r.stderr)
    assert n_in == 701 and rejected <= 3  # the French record, and at most a couple of Alpaca's oddities
    kept_rows = load_jsonl(tmp_path / "out" / "kept.jsonl")
    assert sum(1 for x in kept_rows if x["meta"].get("lang") == NEUTRAL) == 500
    rej = load_jsonl(tmp_path / "out" / "rejects.jsonl")
    assert any("sous le soleil" in orjson.dumps(x).decode() for x in rej)
    assert digest(src, alpaca_file) == before


def test_judge_picks_the_label_when_log_probs_do_not(tmp_path, gsm):
    """With the judge estimator and no log-probs, every distinct sample of the majority answer is
    judged and the best-judged one is the label (here the judge prefers the sample the consensus
    rule would not pick), through `ptdata run` with the distill op."""
    from ptdata.llm.serve import LoopbackServer, make_app

    from .llm_helpers import scripted

    rows, prefer = [], {}
    for i, g in enumerate(gsm[:20]):
        texts = [_weak(gsm, i), g["answer"], _plain(g["answer"])]
        v = vote([{"text": t} for t in texts], [number(t) for t in texts])
        prefer[g["question"]] = next(t for t in texts[1:] if t != texts[v.chosen])
        rows.append({"prompt": g["question"], "reference": _final(g["answer"]), "samples": texts})
    src = write_jsonl(tmp_path / "samples.jsonl", rows)
    liked = set(prefer.values())

    def judge(user, req):
        ans = user.split("### Answer to rate\n", 1)[1].split("\n### End of answer", 1)[0]
        return orjson.dumps({"quality": 6 if ans in liked else 3}).decode()

    app = make_app(scripted(judge), model_name="judge")
    with LoopbackServer(app) as srv:
        recipe = _recipe(tmp_path, f"inputs: [{src}]\nops:\n  - distill: {{estimators: [consistency, judge], threshold: 0.9, "
                                   f"judge: {{model: judge, base_url: '{srv.base_url}', cache_dir: null}}}}\n"
                                   f"output: {{dir: {tmp_path / 'out'}}}\n")
        r = run_capped("run", recipe)
        calls = app.state.log.calls
    assert r.returncode == EXIT_OK, r.stderr
    assert summary(r.stderr) == (20, 20, 0) and calls == 60  # three distinct samples judged per prompt
    for x in load_jsonl(tmp_path / "out" / "kept.jsonl"):
        d = x["meta"]["distill"]
        assert d["chosen_by"] == "judge" and d["estimators"]["judge"] == 1.0
        assert x["messages"][-1]["content"] == prefer[x["messages"][-2]["content"]]


def test_run_time_errors_name_the_recipe_and_the_input(tmp_path):
    recipe = _recipe(tmp_path, "inputs: [{path: nomatch*.jsonl}]\nops: []\n")
    r = run_capped("run", recipe.name, cwd=tmp_path)
    assert r.returncode == EXIT_ERROR
    assert one_error_line(r.stderr) == "error: recipe.yaml: inputs[0]: input 'nomatch*.jsonl' matches no file"


def test_math_written_in_latex_or_with_function_names_passes_the_language_filter(tmp_path):
    rows = [("sin(x)+cos(x)", "√2·sin(x+π/4)"), ("Solve: 3 + 4 * 2", "11"), ("$\\frac{1}{2}+\\frac{1}{3}$", "$\\frac{5}{6}$"),
            ("e^{i\\pi}+1=0 ?", "0"), ("Quelle est la capitale de la France, s'il vous plaît ?", "La capitale est Paris.")]
    write_jsonl(tmp_path / "m.jsonl", [{"instruction": a, "input": "", "output": b} for a, b in rows])
    recipe = _recipe(tmp_path, "inputs: [m.jsonl]\nops:\n  - language_id: {}\n  - language_filter: {languages: [en, zh]}\n"
                               "output: {dir: out}\n")
    r = run_capped("run", recipe.name, "-q", cwd=tmp_path)
    assert r.returncode == EXIT_OK and summary(r.stderr) == (5, 4, 1)
    (row,) = load_jsonl(tmp_path / "out" / "rejects.jsonl")
    assert row["reason"] == "wrong_language" and row["record"]["meta"]["lang"] == "fr"


def test_distill_reads_no_answer_where_a_sample_breaks_off(tmp_path):
    rows = [{"prompt": "q5", "samples": ["The answer is 12 and then we multiply by", "The answer is 12 and then we multiply by",
                                         "The answer is 9."]},
            {"prompt": "q6", "samples": ["So the result is 12, and next", "So the result is 12, and next", "The result is 9."]},
            {"prompt": "q7", "samples": ["#### 1e3", "#### 1000", "It is 1,000 apples."]}]
    write_jsonl(tmp_path / "s.jsonl", rows)
    r = run_capped("distill", tmp_path / "s.jsonl", "-o", tmp_path / "o", "--offline", "--threshold", "0.9", "-q")
    assert r.returncode == EXIT_OK, r.stderr
    labels = load_jsonl(tmp_path / "o" / "train.jsonl")
    assert [(x["messages"][0]["content"], x["meta"]["distill"]["answer"]) for x in labels] == [("q7", "1000")]
    assert number("#### 1e999999999") is None and number("#### 1e3") == "1000"
    long = "9" * 5000
    assert number(f"#### {long}") == number(f"The answer is {long}.") == long


@pytest.mark.parametrize("args,message", [
    (["--rounds", "0"], "--rounds: must be an integer >= 1, got 0"),
    (["--threshold", "nan"], "distill: threshold: must be a number between 0 and 1, got nan"),
    (["--threshold", "-1"], "distill: threshold: must be a number between 0 and 1, got -1.0"),
    (["--weight", "consistency=-5", "--combine", "weighted"], "distill: weights: must be a mapping of names to numbers >= 0"),
    (["--k", "-3"], "distill: k: must be an integer >= 1, got -3"),
])
def test_distill_options_are_checked_as_the_op_checks_them(tmp_path, args, message):
    write_jsonl(tmp_path / "s.jsonl", [{"prompt": "q", "samples": ["#### 3", "#### 3"]}])
    r = run_capped("distill", tmp_path / "s.jsonl", "-o", tmp_path / "o", "--offline", *args, "-q")
    assert r.returncode == EXIT_ERROR
    one_error_line(r.stderr, message)
    assert not (tmp_path / "o").exists()


def test_complete_gsm8k_solutions_keep_their_last_number():
    """Without a `####` line, a worked solution's last number is its answer unless the text breaks
    off after it: on GSM8K's 1,319 test solutions (calculator notes removed) only one gives none."""
    rows = load_jsonl(shared("gsm8k_test.jsonl.gz"))
    bodies = [re.sub(r"<<[^>]*>>", "", r["answer"].rpartition("####")[0]).strip() for r in rows]
    assert sum(number(b) is None for b in bodies) <= 1
    assert number("The answer is 18\nI hope this helps!") == "18" and number("4*21 = 84 times") == "84"


def test_indic_words_are_words():
    assert not identify("नमस्ते दुनिया")[0] == NEUTRAL
    assert identify("भारत की राजधानी क्या है?")[0] == "hi"


def test_an_integer_past_64_bits_is_one_line(tmp_path):
    """The recipe fingerprint and JSON hold 64-bit integers: a larger value is refused when the recipe loads."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text("inputs: [in.jsonl]\nops:\n  - judge: {retries: 100000000000000000000000, llm: {model: m}}\n"
                      "output: {dir: out}\n", encoding="utf-8")
    (tmp_path / "in.jsonl").write_text('{"instruction": "a", "output": "b"}\n', encoding="utf-8")
    r = run_cli("run", str(recipe), cwd=tmp_path)
    assert r.returncode == 1 and "retries: must be an integer >= 0, got 100000000000000000000000" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "out").exists()
