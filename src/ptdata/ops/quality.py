"""Quality scores along four axes, and a filter on a score.

Model-free scores in [0, 1] (model-based judges come with the LLM layer):
- `quality.accuracy`: an answer is present, not a refusal, on topic, and consistent with what
  the question asks (a number when it asks for one; the reference answer when there is one);
- `quality.complexity`: how demanding the instruction is (length, constraints, reasoning asks);
- `quality.density`: information per word in the response (content words, numbers, names, variety);
- `quality.ifollow`: instruction following, IFEval-style: the share of the instruction's verifiable
  constraints (IFEval's 25 instruction types, detected from the prompt text in English or Chinese
  by `ptdata.quality.ifeval.detect_constraints`) that the response follows, each verified by
  IFEval's official checker (PyPI `if-verifiable`, strict mode). Absent when the instruction states
  no verifiable constraint; `meta.ifeval` lists the constraints (id, kwargs) and which were followed.
`quality` is the mean of the axes present. Model-based scores: `model_scores` (IFD, perplexity
from a local causal LM) and the judges; selection on any score: ptdata.ops.select.
"""
from __future__ import annotations

import importlib.util
import math
import re
import zlib
from dataclasses import dataclass
from typing import ClassVar

from ..quality.ifeval import INSTALL as IFEVAL_INSTALL
from ..quality.ifeval import detect_constraints, verify
from ..quality.ifeval import registry as ifeval_registry
from ..records import Record
from ..text import match_words, prompt_text, response_text
from .base import Drop, MapOp, param, register
from .filters import refusal_match

_NUM_WORDS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())}
_STOP = set("""a an the and or but if of to in on at by for with from as is are was were be been being it its this that these
those i you he she we they me him her us them my your his our their what which who whom whose when where why how not no
do does did done can could should would will shall may might must have has had than then so such very just also into over
about after before under more most some any each other all both few many much own same too only s t don now""".split())
_HAN = re.compile(r"[\u4e00-\u9fff]")


def _han(text: str) -> int:
    return 0 if text.isascii() else len(_HAN.findall(text))


def _words(text: str) -> int:
    """Words, counting each Chinese character as one."""
    cjk = _han(text)
    return len(match_words(text)) if not cjk else cjk + len(re.findall(r"[A-Za-z]+", text))


_ASKS_NUMBER = re.compile(r"\b(how (?:many|much|long|old|far)|calculate|compute|what is \d|sum of|product of|solve)\b|多少|几个|计算", re.I)
_FINAL_NUM = re.compile(r"(-?\d[\d,]*(?:\.\d+)?)")
_REASONING = re.compile(r"\b(why|explain|compare|contrast|analy[sz]e|evaluate|justify|derive|prove|step[- ]by[- ]step|pros and cons|"
                        r"trade-?offs?|design|implement|optimi[sz]e|critique|argue)\b|为什么|解释|比较|分析|评估|证明|设计|实现", re.I)


def accuracy_score(rec: Record, question: str, answer: str) -> float:
    if not answer.strip():
        return 0.0
    if refusal_match(answer):
        return 0.1
    score = 1.0
    ref = rec.meta.get("reference")
    if ref is not None:
        nums = _FINAL_NUM.findall(answer.rsplit("####", 1)[-1]) or _FINAL_NUM.findall(answer)
        want = str(ref).replace(",", "").strip()
        return 1.0 if nums and nums[-1].replace(",", "").rstrip(".") == want else 0.2
    if _ASKS_NUMBER.search(question) and not re.search(r"\d", answer) and not any(w in answer.lower() for w in _NUM_WORDS):
        score -= 0.4
    q = {w for w in match_words(question) if w not in _STOP and len(w) > 2}
    if q and len(q) >= 3:
        a = set(match_words(answer))
        overlap = len(q & a) / len(q)
        if overlap == 0 and len(answer) > 40:
            score -= 0.3
    if len(answer.strip()) < 2:
        score -= 0.3
    return max(0.0, min(1.0, score))


def complexity_score(question: str, n_constraints: int | None = None) -> float:
    n = _words(question)
    length = min(1.0, math.log1p(n) / math.log1p(120))
    asks = min(1.0, len(_REASONING.findall(question)) / 2)
    cons = min(1.0, (len(detect_constraints(question)) if n_constraints is None else n_constraints) / 3)
    parts = min(1.0, (question.count("?") + question.count("？") + len(re.findall(r"(?m)^\s*\d+[.)]", question)) - 1) / 3) if n else 0
    return round(0.45 * length + 0.25 * asks + 0.2 * cons + 0.1 * max(0.0, parts), 4)


def density_score(answer: str) -> float:
    if not answer.strip():
        return 0.0
    words = match_words(answer)
    cjk = _han(answer)
    if cjk > len(words):  # Chinese: character variety and compressibility
        chars = [c for c in answer if not c.isspace()]
        variety = len(set(chars)) / len(chars)
        content = min(1.0, len(chars) / 150)
    else:
        if not words:
            return 0.0
        content_words = [w for w in words if w not in _STOP]
        variety = len(set(content_words)) / max(1, len(content_words))
        content = (len(content_words) / len(words)) * min(1.0, len(words) / 60)
    raw = answer.encode()
    compress = min(1.0, len(zlib.compress(raw)) / max(1, len(raw))) if len(raw) > 40 else 0.5
    facts = min(1.0, len(re.findall(r"\d+|\b[A-Z][a-z]+(?: [A-Z][a-z]+)*", answer)) / 10)
    return round(0.35 * content + 0.25 * variety + 0.25 * compress + 0.15 * facts, 4)


@register
@dataclass
class QualityScores(MapOp):
    """Add quality.accuracy / complexity / density, quality.ifollow (IFEval's checkers; only when the prompt states
    verifiable constraints, listed in meta.ifeval) and `quality`, the mean of those present (never drops)."""

    name: ClassVar[str] = "quality_scores"

    def rules(self) -> None:
        if importlib.util.find_spec("if_verifiable") is None:
            raise ValueError(f"quality.ifollow needs IFEval's checkers: {IFEVAL_INSTALL}")

    def setup(self) -> None:
        ifeval_registry()

    def check(self, rec: Record) -> Drop | None:
        q, a = prompt_text(rec), response_text(rec)
        cs = detect_constraints(q)
        s = rec.scores
        s["quality.accuracy"] = round(accuracy_score(rec, q, a), 4)
        s["quality.complexity"] = complexity_score(q, len(cs))
        s["quality.density"] = density_score(a)
        parts = [s["quality.accuracy"], s["quality.complexity"], s["quality.density"]]
        if cs:
            verdicts = verify(a, cs, prompt=q)
            f = sum(v.followed for v in verdicts) / len(verdicts)
            s["quality.ifollow"] = round(f, 4)
            rec.meta["ifeval"] = [v.as_dict() for v in verdicts]
            parts.append(f)
        else:  # no verifiable constraint: the axis is absent, not 0 or 1, and does not count in the mean
            s.pop("quality.ifollow", None)
            rec.meta.pop("ifeval", None)
        s["quality"] = round(sum(parts) / len(parts), 4)
        return None


@register
@dataclass
class ScoreFilter(MapOp):
    """Drop records whose score is below a minimum (or missing)."""

    name: ClassVar[str] = "score_filter"
    score: str = param("quality", "score name")
    min: float = param(0.5, "minimum value to keep")  # any finite number: scores are not all in [0, 1]

    def check(self, rec: Record) -> Drop | None:
        v = rec.scores.get(self.score)
        if v is None:
            return Drop("missing_score", f"no {self.score} score")
        if v < self.min:
            return Drop("low_score", f"{self.score} {v:.3f} < {self.min}")
        return None
