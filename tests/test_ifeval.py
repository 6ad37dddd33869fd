"""quality.ifollow: IFEval's official checkers (if-verifiable) with Punkt offline, and constraint
detection from the prompt text, checked on the IFEval data in ../shared/data/ifeval."""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest

from ptdata.errors import InputError
from ptdata.ops.quality import QualityScores
from ptdata.quality.ifeval import Constraint, detect_constraints, ensure_punkt, registry, verify
from ptdata.records import Record

from .conftest import shared

REF = Path(__file__).parent / "data" / "ifeval_punkt_english.json"
# The official checker replaces an annotated letter that is not a-z ('#' in row 1122, '!' in row 1129) by a
# random letter, and the upstream evaluation does not seed it: the published figures hold one draw there.
# ptdata seeds the draw from the constraint and a seed; 4 is the first seed (0-4 tried) whose draws give the
# published figures. Every other constraint is seed-independent (asserted below).
PUBLISHED_SEED = 4


def rows() -> list[tuple[dict, str]]:
    prompts = [json.loads(line) for line in shared("ifeval/input_data.jsonl").read_text().splitlines()]
    responses = [json.loads(line) for line in shared("ifeval/input_response_data_gpt4_20231107_145030.jsonl").read_text().splitlines()]
    assert len(prompts) == len(responses) == 541
    return [(p, r["response"]) for p, r in zip(prompts, responses)]  # joined by line order (see the data README)


def annotated(p: dict) -> list[Constraint]:
    return [Constraint(i, {k: v for k, v in kw.items() if v is not None}) for i, kw in zip(p["instruction_id_list"], p["kwargs"])]


def strict(data: list[tuple[dict, str]], seed: int) -> list[list[bool]]:
    out = []
    for p, response in data:
        vs = verify(response, annotated(p), prompt=p["prompt"], seed=seed, raise_errors=True)
        out.append([v.followed for v in vs])
    return out


def test_annotated_constraints_reproduce_the_published_gpt4_strict_figures():
    data = rows()
    verdicts = strict(data, PUBLISHED_SEED)
    prompt_level = sum(all(v) for v in verdicts) / len(verdicts)
    instruction_level = sum(map(sum, verdicts)) / sum(map(len, verdicts))
    print(f"GPT-4 strict: prompt-level {100 * prompt_level:.2f}, instruction-level {100 * instruction_level:.2f} "
          f"({sum(map(len, verdicts))} instructions)")
    assert sum(map(len, verdicts)) == 834
    assert (round(100 * prompt_level, 2), round(100 * instruction_level, 2)) == (76.89, 83.57)
    # only the two random-letter constraints depend on the seed
    other = strict(data, 0)
    random_letter = {(i, j) for i, (p, _) in enumerate(data) for j, kw in enumerate(p["kwargs"])
                     if p["instruction_id_list"][j] == "keywords:letter_frequency" and not str(kw.get("letter", "")).isalpha()}
    assert {data[i][0]["key"] for i, _ in random_letter} == {1122, 1129}
    assert all(verdicts[i][j] == other[i][j] for i in range(len(data)) for j in range(len(verdicts[i])) if (i, j) not in random_letter)


def detection_figures(data: list[tuple[dict, str]]) -> dict[str, float]:
    tp = fn = fp = agree = 0
    for p, response in data:
        want = set(p["instruction_id_list"])
        found = detect_constraints(p["prompt"])
        got = {c.id for c in found}
        tp, fn, fp = tp + len(want & got), fn + len(want - got), fp + len(got - want)
        official = all(v.followed for v in verify(response, annotated(p), prompt=p["prompt"]))
        ours = all(v.followed for v in verify(response, found, prompt=p["prompt"]))
        agree += official == ours
    return {"recall": tp / (tp + fn), "precision": tp / (tp + fp), "verdict": agree / len(data)}


def test_detection_from_the_prompt_text_alone():
    """Recall and precision of the instruction ids detected per prompt against IFEval's annotation,
    and agreement of the all-followed verdict with the official strict one. The patterns were written
    looking at the first 270 prompts only; the last 271 are held out."""
    data = rows()
    figures = {"all 541": detection_figures(data), "first 270 (dev)": detection_figures(data[:270]),
               "last 271 (held out)": detection_figures(data[270:])}
    for name, f in figures.items():
        print(f"{name}: recall {100 * f['recall']:.1f}%, precision {100 * f['precision']:.1f}%, verdict agreement {100 * f['verdict']:.1f}%")
    for name in ("all 541", "last 271 (held out)"):
        f = figures[name]
        assert f["recall"] >= 0.90 and f["precision"] >= 0.90 and f["verdict"] >= 0.90, (name, f)


def fingerprint(abbrev, collocations, starters, ortho) -> str:
    """sha256 of Punkt parameters, sorted (the same recipe recorded in tests/data/ifeval_punkt_english.json)."""
    h = hashlib.sha256()
    for name, items in (("abbrev_types", sorted(abbrev)), ("collocations", sorted("\t".join(c) for c in collocations)),
                        ("sent_starters", sorted(starters)), ("ortho_context", sorted(f"{k}\t{v}" for k, v in ortho.items()))):
        h.update(name.encode() + b"\0")
        for x in items:
            h.update(x.encode() + b"\n")
    return h.hexdigest()


def test_punkt_setup_equals_nltks_real_english_model():
    """The packaged parameters are nltk's punkt_tab English ones, and the checker's sentence counts (and
    nltk.word_tokenize, which the capital-word checker uses) equal the real model's on every IFEval row."""
    import nltk
    from if_verifiable.ifeval import instructions_util
    from nltk.tokenize.punkt import load_punkt_params
    from punkt.data import english

    ref = json.loads(REF.read_text())
    registry()
    ensure_punkt()
    # the package's literals, and what nltk's own loader reads where the checkers look, are the real model
    assert fingerprint(english.ABBREV_TYPES, english.COLLOCATIONS, english.SENT_STARTERS, english.ORTHO_CONTEXT) == ref["fingerprint"]
    assert not english.NUMERIC_ABBREV_TYPES  # nothing beyond nltk's four parameter sets
    loaded = load_punkt_params(nltk.data.find("tokenizers/punkt_tab/english/"))
    assert fingerprint(loaded.abbrev_types, loaded.collocations, loaded.sent_starters, loaded.ortho_context) == ref["fingerprint"]
    data = rows()
    for name, texts in (("responses", [r for _, r in data]), ("prompts", [p["prompt"] for p, _ in data])):
        sentences = [instructions_util.count_sentences(t) for t in texts]
        words = [len(nltk.word_tokenize(t)) for t in texts]
        assert sentences == ref[name]["sentences"], name
        assert words == ref[name]["words"], name
    print(f"Punkt: {len(data)} responses and prompts, sentence and word counts equal nltk's punkt_tab English model")


CHINESE = [
    ("写一篇关于秋天的短文，不少于300字，不要使用逗号。",
     [("length_constraints:number_words", {"relation": "at least", "num_words": 300}), ("punctuation:no_comma", {})]),
    ("请用中文回答：什么是机器学习？回答控制在200字以内，并以“谢谢阅读”结尾。",
     [("length_constraints:number_words", {"relation": "less than", "num_words": 201}),
      ("startend:end_checker", {"end_phrase": "谢谢阅读"}), ("language:response_language", {"language": "zh-cn"})]),
    ("Write a poem about the sea. 全部大写。", [("change_case:english_capital", {})]),
    ("介绍一下长城，用一句话回答。", [("length_constraints:number_sentences", {"relation": "less than", "num_sentences": 2})]),
    ("列出3个要点，用markdown项目符号表示，全部用小写字母书写。",
     [("change_case:english_lowercase", {}), ("detectable_format:number_bullet_lists", {"num_bullets": 3})]),
    ("写一个故事，“勇气”这个词至少出现3次，不要使用“害怕”这个词，用双引号把整个回答括起来。",
     [("keywords:frequency", {"keyword": "勇气", "frequency": 3, "relation": "at least"}),
      ("keywords:forbidden_words", {"forbidden_words": ["害怕"]}), ("startend:quotation", {})]),
    ("用英文回答，回答不超过五句话，且必须包含关键词“AI”和“data”。",
     [("length_constraints:number_sentences", {"relation": "less than", "num_sentences": 6}),
      ("language:response_language", {"language": "en"}), ("keywords:existence", {"keywords": ["AI", "data"]})]),
    ("以JSON格式输出三种水果的名称。", [("detectable_format:json_format", {})]),
    ("写一封信，在末尾加上以P.S.开头的附言，至少包含2个用方括号表示的占位符，例如[姓名]。",
     [("detectable_content:number_placeholders", {"num_placeholders": 2}), ("detectable_content:postscript", {"postscript_marker": "P.S."})]),
    ("请先原样重复下面的问题，然后再回答。\n\n为什么天空是蓝色的？", [("combination:repeat_prompt", {"prompt_to_repeat": "为什么天空是蓝色的？"})]),
    ("用三百到五百字介绍一下熊猫。", [("length_constraints:number_words", {"relation": "at least", "num_words": 300}),
                                   ("length_constraints:number_words", {"relation": "less than", "num_words": 501})]),
]


@pytest.mark.parametrize("prompt,want", CHINESE, ids=[c[0][:12] for c in CHINESE])
def test_chinese_constraints_are_detected(prompt, want):
    got = [(c.id, c.kwargs) for c in detect_constraints(prompt)]
    assert sorted(got, key=str) == sorted(want, key=str)


def test_chinese_responses_are_verified_by_characters_and_fullwidth_punctuation():
    cs = detect_constraints("写一篇关于秋天的短文，不少于30字，不要使用逗号，不要出现“害怕”这个词，“秋天”至少出现2次。")
    assert [c.id for c in cs] == ["length_constraints:number_words", "punctuation:no_comma", "keywords:frequency",
                                  "keywords:forbidden_words"] and all(c.cjk for c in cs)

    def followed(response: str) -> list[bool]:
        return [v.followed for v in verify(response, cs)]

    # 29 characters, full-width commas
    assert followed("秋天来了。树叶黄了，天气凉了。我很喜欢秋天的风景，秋天是丰收的季节。") == [False, False, True, True]
    assert followed("秋天来了。树叶黄了。天气凉了。我很喜欢秋天的风景。秋天是丰收的季节。田野里一片金黄。") == [True, True, True, True]
    assert followed("秋天来了。树叶黄了。天气凉了。我很喜欢秋天的风景。秋天是丰收的季节。我一点也不害怕冬天。") == [True, True, True, False]
    one = detect_constraints("介绍一下长城，用一句话回答。")
    assert [v.followed for v in verify("长城是中国古代的伟大防御工程。", one)] == [True]
    assert [v.followed for v in verify("长城很长。它在中国北方。", one)] == [False]
    lang = detect_constraints("请用中文回答：什么是机器学习？")
    assert [v.followed for v in verify("机器学习是让计算机从数据中学习规律的方法。", lang)] == [True]
    assert [v.followed for v in verify("Machine learning is a way for computers to learn patterns from data.", lang)] == [False]


def sft(prompt: str, answer: str) -> Record:
    return Record("sft", [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}])


def test_quality_scores_ifollow_axis_and_meta():
    op = QualityScores()
    op.validate()
    op.setup()
    plain = sft("What is the capital of France?", "The capital of France is Paris.")
    op.check(plain)
    assert "quality.ifollow" not in plain.scores and "ifeval" not in plain.meta
    axes = [plain.scores[k] for k in ("quality.accuracy", "quality.complexity", "quality.density")]
    assert plain.scores["quality"] == round(sum(axes) / 3, 4)

    half = sft("Describe the sea in at least 50 words. Do not use any commas.", "The sea is blue and deep and wide.")
    op.check(half)
    assert half.scores["quality.ifollow"] == 0.5
    assert half.meta["ifeval"] == [
        {"id": "length_constraints:number_words", "kwargs": {"relation": "at least", "num_words": 50}, "followed": False},
        {"id": "punctuation:no_comma", "kwargs": {}, "followed": True}]
    axes = [half.scores[k] for k in ("quality.accuracy", "quality.complexity", "quality.density")] + [0.5]
    assert half.scores["quality"] == round(sum(axes) / 4, 4)

    zh = sft("用一句话介绍长城，不要使用逗号。", "长城是中国古代修建的伟大防御工程。")
    op.check(zh)
    assert zh.scores["quality.ifollow"] == 1.0
    assert [(c["id"], c["followed"], c.get("cjk")) for c in zh.meta["ifeval"]] == [
        ("length_constraints:number_sentences", True, True), ("punctuation:no_comma", True, True)]
    # a record scored again without a constraint loses the stale axis and meta
    half.messages[0]["content"] = "Describe the sea."
    op.check(half)
    assert "quality.ifollow" not in half.scores and "ifeval" not in half.meta


def test_missing_if_verifiable_is_one_clear_line(monkeypatch):
    for name in [m for m in sys.modules if m == "if_verifiable" or m.startswith("if_verifiable.")] + ["if_verifiable"]:
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(InputError, match=r"pip install if-verifiable==0\.1\.2") as e:
        registry.__wrapped__()
    assert "\n" not in str(e.value)
    with pytest.raises(InputError, match=r"quality_scores: .*pip install if-verifiable==0\.1\.2"):
        QualityScores().validate()
