"""Every validation rule: errors reject with their code, flags are kept and marked."""
from __future__ import annotations

import pytest

from ptdata.errors import RecordError
from ptdata.records import Record
from ptdata.validation import ValidationConfig, looks_truncated, script_of, validate


def m(role, content="ok", **kw):
    return {"role": role, "content": content, **kw}


U, A = m("user", "Hello there"), m("assistant", "Hi, how can I help?")
CALL = m("assistant", "", tool_calls=[{"type": "function", "function": {"name": "f", "arguments": {}}}])


@pytest.mark.parametrize("rec,reason", [
    (Record("sft", []), "empty_conversation"),
    (Record("sft", [U, m("system", "late"), A]), "system_not_first"),
    (Record("sft", [m("system", "s"), A]), "first_turn_not_user"),
    (Record("sft", [U, A, A]), "roles_out_of_order"),
    (Record("sft", [U, m("user", "again?"), A]), "roles_out_of_order"),
    (Record("sft", [U, m("tool", "42"), A]), "tool_without_call"),
    (Record("sft", [U, CALL, m("tool", "1"), m("tool", "2"), A]), "tool_without_call"),
    (Record("sft", [U, CALL, A]), "missing_tool_result"),
    (Record("sft", [U, m("assistant", "  \n")]), "empty_turn"),
    (Record("sft", [U, m("assistant", "x" * 11)]), "turn_too_long"),
    (Record("sft", [U, m("assistant", " Hello there\n")]), "repeated_turn"),
    (Record("sft", [U, A, m("user", "More?")]), "sft_not_ending_with_assistant"),
    (Record("sft", [U, CALL]), "sft_not_ending_with_assistant"),
    (Record("prompt", [U, A]), "prompt_not_ending_with_user"),
    (Record("preference", [U], [A], []), "preference_missing_side"),
    (Record("preference", [U], [A], [m("assistant", " Hi, how can I help? ")]), "chosen_equals_rejected"),
    (Record("preference", [U, A], [A], [m("assistant", "no")]), "prompt_not_ending_with_user"),
    (Record("preference", [U], [m("user", "x")], [A]), "bad_side"),
    (Record("preference", [U], [A], [m("assistant", "no"), m("user", "why")]), "bad_side"),
    (Record("preference", [U], [A], [], meta={"label": True}), None),
    (Record("preference", [U], [A], [A], meta={"label": True}), "preference_missing_side"),
    (Record("sft", [U, CALL, m("tool", "42"), A]), None),
    (Record("prompt", [U, CALL, m("tool", "42")]), None),
])
def test_errors(rec, reason):
    cfg = ValidationConfig(max_turn_chars=10 if reason == "turn_too_long" else 100_000)
    if reason is None:
        assert validate(rec, cfg) == []
        return
    with pytest.raises(RecordError) as e:
        validate(rec, cfg)
    assert e.value.reason == reason


def test_flags_are_kept_and_strict_rejects_them():
    en = "Please explain how photosynthesis works in a few sentences."
    zh = "光合作用是植物利用光能把水和二氧化碳转化为葡萄糖和氧气的过程，发生在叶绿体中。"
    rec = Record("sft", [m("user", en), m("assistant", zh)])
    assert validate(rec) == ["language_switch"] and rec.meta["flags"] == ["language_switch"]
    assert validate(Record("sft", [m("user", en), m("assistant", zh)]), ValidationConfig(language=False)) == []
    fence = Record("sft", [m("user", "code?"), m("assistant", "```python\nprint(1)\n")])
    assert validate(fence) == ["unbalanced_code_fence"]
    with pytest.raises(RecordError) as e:
        validate(Record("sft", [m("user", "code?"), m("assistant", "```python\nprint(1)\n")]), ValidationConfig(strict=True))
    assert e.value.reason == "unbalanced_code_fence"


def test_script_detection():
    assert script_of("请用简单的话解释光合作用，并举一个例子。") == "zh"
    assert script_of("光合作用とは何ですか？簡単に説明してください。") == "ja"
    assert script_of("Explain photosynthesis in simple words, please.") == "latin"
    assert script_of("Hi") is None
    assert script_of("```\n" + "x = 1\n" * 50 + "```\n请解释这段代码的作用是什么？") == "zh"


@pytest.mark.parametrize("text,cut", [
    ("The answer is 42.", False),
    ("Negative", False),
    ("Steps:\n1. Mix\n2. Bake", False),
    ("First you need flour, then eggs,", True),
    ("The ingredients are:", True),
    ("a" * 120 + " the rest of this long explanation continues and then it simply stops in the middle of the", True),
    ("这是一个很长的回答，" * 30, True),
    ("这是一个完整的回答。", False),
])
def test_truncation_heuristic(text, cut):
    assert looks_truncated(text) is cut


def test_script_counts_equal_one_regex_per_script():
    """script_of counts every script's characters in one pass over the code points: the counts
    equal each script's regex on real Chinese and English rows, on every range's first and last
    code point and its neighbours, and on emoji and a lone surrogate."""
    from ptdata.validation import _SCRIPTS, _script_counts

    from .conftest import load_jsonl, shared

    rows = load_jsonl(shared("alpaca_zh_17k.jsonl.gz"))[:2000] + load_jsonl(shared("alpaca_en_52k.jsonl.gz"))[:2000]
    texts = [r.get("instruction", "") + (r.get("output") or "") for r in rows]
    edges = [0x41, 0x5A, 0x61, 0x7A, 0xC0, 0x24F, 0x400, 0x4FF, 0x600, 0x6FF, 0x3040, 0x30FF, 0x3400, 0x4DBF, 0x4E00,
             0x9FFF, 0xAC00, 0xD7AF]
    texts.append("".join(chr(c + d) for c in edges for d in (-1, 0, 1)))
    texts += ["", "😀 日本語のテキスト", "a\ud800b", "ÀÖØöøÿĀſƀɏ"]
    assert sum(len(t) for t in texts) > 500_000
    for t in texts:
        assert _script_counts(t) == [len(rx.findall(t)) for _, rx in _SCRIPTS], t[:40]
