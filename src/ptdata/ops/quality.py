"""Quality scores along four axes, and Deita-style selection.

Heuristic, model-free scores in [0, 1] (model-based judges come with the LLM layer):
- `quality.accuracy`: an answer is present, not a refusal, on topic, and consistent with what
  the question asks (a number when it asks for one; the reference answer when there is one);
- `quality.complexity`: how demanding the instruction is (length, constraints, reasoning asks);
- `quality.density`: information per word in the response (content words, numbers, names, variety);
- `quality.ifollow`: share of the instruction's verifiable constraints the response satisfies
  (word/sentence/bullet/paragraph counts, JSON, language, case, start/end phrases, keywords);
  absent when the instruction states none.
`quality` is their mean. `select` keeps the top N (or a fraction) by a score, skipping a
candidate too similar to one already kept.
"""
from __future__ import annotations

import json
import math
import re
import zlib
from dataclasses import dataclass
from typing import Callable, ClassVar

import numpy as np

from ..params import Count, Positive, Share
from ..records import Record
from ..text import match_words, prompt_text, response_text
from .base import Decision, Drop, GlobalOp, MapOp, param, register
from .filters import refusal_match

_NUM_WORDS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())}
_ZH_NUM = {c: i for i, c in enumerate("零一二三四五六七八九十")} | {"两": 2}
_NUM = r"(\d+|zero|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|fifteen|sixteen|seventeen|eighteen|nineteen|twenty|a single|a|an)"
_STOP = set("""a an the and or but if of to in on at by for with from as is are was were be been being it its this that these
those i you he she we they me him her us them my your his our their what which who whom whose when where why how not no
do does did done can could should would will shall may might must have has had than then so such very just also into over
about after before under more most some any each other all both few many much own same too only s t don now""".split())


def _num(s: str) -> int:
    s = s.lower()
    if s.isdigit():
        return int(s)
    if s in ("a", "an", "a single"):
        return 1
    if s in _NUM_WORDS:
        return _NUM_WORDS[s]
    if len(s) == 1 and s in _ZH_NUM:
        return _ZH_NUM[s]
    if s.startswith("十") and len(s) == 2:
        return 10 + _ZH_NUM.get(s[1], 0)
    return -1


_HAN = re.compile(r"[\u4e00-\u9fff]")


def _han(text: str) -> int:
    return 0 if text.isascii() else len(_HAN.findall(text))


def _words(text: str) -> int:
    """Words, counting each Chinese character as one."""
    cjk = _han(text)
    return len(match_words(text)) if not cjk else cjk + len(re.findall(r"[A-Za-z]+", text))


def _sentences(text: str) -> int:
    return len([s for s in re.split(r"(?<=[.!?。！？])\s*", text.strip()) if s.strip()])


def _bullets(text: str) -> int:
    return len(re.findall(r"(?m)^\s*(?:[-*•]|\d+[.)、]|[（(]?\d+[)）])\s+\S", text)) or len(re.findall(r"(?m)^\s*(?:[-*•]|\d+[.、])\S", text))


def _paragraphs(text: str) -> int:
    return len([p for p in re.split(r"\n\s*\n", text.strip()) if p.strip()])


def _is_json(text: str) -> bool:
    t = text.strip()
    m = re.match(r"^```(?:json)?\s*(.*?)\s*```$", t, re.S)
    if m:
        t = m.group(1)
    try:
        json.loads(t)
        return True
    except ValueError:
        return False


_LANG_NAMES = {"english": "en", "chinese": "zh", "mandarin": "zh", "french": "fr", "spanish": "es", "german": "de",
               "japanese": "ja", "korean": "ko", "italian": "it", "portuguese": "pt", "russian": "ru",
               "中文": "zh", "汉语": "zh", "英文": "en", "英语": "en", "日语": "ja", "法语": "fr"}


def _response_lang(text: str) -> str:
    from .language import identify

    return identify(text)[0]


# (pattern over the instruction, checker(match, response) -> bool). Each match is one constraint.
Constraint = tuple[re.Pattern, Callable[[re.Match, str], bool]]
CONSTRAINTS: list[Constraint] = [
    (re.compile(rf"\b(?:in|with|using)? ?(?:less than|fewer than|at most|no more than|under|maximum of|up to) {_NUM} words\b", re.I),
     lambda m, r: 0 < _words(r) <= _num(m.group(1))),
    (re.compile(rf"\bat least {_NUM} words\b", re.I), lambda m, r: _words(r) >= _num(m.group(1))),
    (re.compile(rf"\b(?:in|with|using) (?:exactly |about |around )?{_NUM} words\b(?! or (?:less|fewer|more))", re.I),
     lambda m, r: abs(_words(r) - _num(m.group(1))) <= max(2, 0.2 * _num(m.group(1)))),
    (re.compile(rf"\b{_NUM} words or (?:less|fewer)\b", re.I), lambda m, r: 0 < _words(r) <= _num(m.group(1))),
    (re.compile(rf"\b(?:in|with|using) (?:exactly )?{_NUM} sentences?\b|\bin a (single) sentence\b|\bone-(sentence)\b", re.I),
     lambda m, r: _sentences(r) == (_num(m.group(1)) if m.group(1) and _num(m.group(1)) > 0 else 1)),
    (re.compile(rf"\b{_NUM} bullet(?:ed)? points?\b|\b(?:list|name|give|provide|generate|suggest) (?:me )?{_NUM} (?!words|sentences|paragraphs)\w+", re.I),
     lambda m, r: _list_count(r) == _num(m.group(1) or m.group(2))),
    (re.compile(rf"\b{_NUM} paragraphs?\b", re.I), lambda m, r: _paragraphs(r) == _num(m.group(1))),
    (re.compile(r"\b(?:in|as|into|using) (?:a |valid )?json\b|\bjson (?:format|object)\b", re.I), lambda m, r: _is_json(r)),
    (re.compile(r"\b(?:in|into) (english|chinese|mandarin|french|spanish|german|japanese|korean|italian|portuguese|russian)\b|"
                r"(?:用|使用)(中文|汉语|英文|英语|日语|法语)", re.I),
     lambda m, r: _response_lang(r) == _LANG_NAMES[(m.group(1) or m.group(2)).lower()]),
    (re.compile(r"\ball (?:in )?lower ?case\b|\bonly lowercase\b", re.I), lambda m, r: r == r.lower() and r != r.upper()),
    (re.compile(r"\ball (?:in )?(?:upper ?case|capital letters|caps)\b", re.I), lambda m, r: r == r.upper() and r != r.lower()),
    (re.compile(r"\b(?:end|finish) (?:your (?:answer|response) )?with (?:the (?:phrase|word|sentence) )?[\"“']([^\"”']+)[\"”']", re.I),
     lambda m, r: r.rstrip().rstrip(".!").endswith(m.group(1).rstrip(".!"))),
    (re.compile(r"\b(?:start|begin) (?:your (?:answer|response) )?with (?:the (?:phrase|word|sentence) )?[\"“']([^\"”']+)[\"”']", re.I),
     lambda m, r: r.lstrip().startswith(m.group(1))),
    (re.compile(r"\b(?:include|use|mention) the (?:key)?words? [\"“']([^\"”']+)[\"”']", re.I), lambda m, r: m.group(1).lower() in r.lower()),
    (re.compile(r"\b(?:without|do not use|don't use|no) (?:any )?commas\b", re.I), lambda m, r: "," not in r),
    (re.compile(r"(?:不超过|少于|不多于)\s*(\d+|[一二三四五六七八九十两]+)\s*(?:个)?字"), lambda m, r: 0 < _words(r) <= _num(m.group(1))),
    (re.compile(r"(?:列出|列举|给出|提供|写出)\s*(\d+|[一二三四五六七八九十两]+)\s*(?:个|条|种|项|点)"), lambda m, r: _list_count(r) == _num(m.group(1))),
    (re.compile(r"用一句话"), lambda m, r: _sentences(r) == 1),
]


def _list_count(text: str) -> int:
    b = _bullets(text)
    if b:
        return b
    lines = [l for l in text.splitlines() if l.strip()]
    if len(lines) > 1:
        return len(lines)
    parts = [p for p in re.split(r"[,;，；、]|\band\b", text) if p.strip()]
    return len(parts)


# A constraint pattern can only match when one of its cue words occurs (lowercased).
_CUES = [("word",), ("word",), ("word",), ("word",), ("sentence",), ("bullet", "list", "name", "give", "provide", "generate", "suggest"),
         ("paragraph",), ("json",), ("in ", "用", "使用"), ("lower",), ("upper", "capital", "caps"), ("end", "finish"), ("start", "begin"),
         ("include", "use", "mention"), ("comma",), ("不超过", "少于", "不多于"), ("列出", "列举", "给出", "提供", "写出"), ("一句话",)]
assert len(_CUES) == len(CONSTRAINTS)


def constraints(instruction: str) -> list[tuple[re.Match, Callable]]:
    """The verifiable constraints an instruction states (IFEval-style), each with its checker."""
    low = instruction.lower()
    found = []
    for (rx, ok), cues in zip(CONSTRAINTS, _CUES):
        if any(c in low for c in cues):
            found.extend((m, ok) for m in rx.finditer(instruction))
    return found


def ifollow_score(instruction: str, response: str, cs: list | None = None) -> float | None:
    cs = constraints(instruction) if cs is None else cs
    if not cs:
        return None
    return sum(1 for m, ok in cs if _safe(ok, m, response)) / len(cs)


def _safe(ok: Callable, m: re.Match, response: str) -> bool:
    try:
        return bool(ok(m, response))
    except (ValueError, KeyError, IndexError, TypeError):
        return False


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
    cons = min(1.0, (len(constraints(question)) if n_constraints is None else n_constraints) / 3)
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
    """Add quality.accuracy / complexity / density / ifollow and their mean `quality` (never drops)."""

    name: ClassVar[str] = "quality_scores"

    def check(self, rec: Record) -> Drop | None:
        q, a = prompt_text(rec), response_text(rec)
        cs = constraints(q)
        s = rec.scores
        s["quality.accuracy"] = round(accuracy_score(rec, q, a), 4)
        s["quality.complexity"] = complexity_score(q, len(cs))
        s["quality.density"] = density_score(a)
        parts = [s["quality.accuracy"], s["quality.complexity"], s["quality.density"]]
        f = ifollow_score(q, a, cs)
        if f is not None:
            s["quality.ifollow"] = round(f, 4)
            parts.append(f)
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


@register
@dataclass
class Select(GlobalOp):
    """Keep the best records by a score: top N or a fraction, greedily skipping a candidate whose
    MinHash similarity to an already selected record is >= diversity_threshold (Deita-style)."""

    name: ClassVar[str] = "select"
    score: str = param("quality", "score to rank by (higher is better)")
    top_n: Count = param(0, "number of records to keep (0: use fraction)")
    fraction: Share = param(0.0, "share of records to keep when top_n is 0")
    diversity_threshold: Share = param(0.7, "skip candidates at least this similar (Jaccard) to a kept record; 1 disables")
    num_perm: Positive = param(64, "MinHash permutations for the similarity")
    bands: Positive = param(16, "LSH bands used to find similar kept records")

    def rules(self) -> None:
        if not self.top_n and not self.fraction:
            raise ValueError("select needs top_n > 0 or 0 < fraction <= 1")
        if self.num_perm % self.bands:
            raise ValueError(f"num_perm ({self.num_perm}) must be a multiple of bands ({self.bands})")

    def keys(self, batch: list[Record]) -> dict[str, np.ndarray]:
        from .dedup import NearDedup, _id_keys, _score_keys

        sig = NearDedup(num_perm=self.num_perm, bands=self.bands).signatures([response_text(r) + "\n" + prompt_text(r) for r in batch])
        return {"sig": sig, "score": _score_keys(batch, self.score), **_id_keys(batch)}

    def decide(self, keys: dict[str, np.ndarray]):
        from .dedup import _band_hashes, _id_at

        sig, scores = keys["sig"], keys["score"]
        n = len(scores)
        target = self.top_n or int(round(self.fraction * n))
        order = np.lexsort((np.arange(n), -np.where(np.isnan(scores), -np.inf, scores)))
        bands = _band_hashes(sig, self.bands)
        buckets: dict[tuple[int, int], list[int]] = {}
        kept: list[int] = []
        too_close: dict[int, tuple[int, float]] = {}
        check = self.diversity_threshold < 1
        for i in order.tolist():
            if len(kept) >= target:
                break
            if check:
                near = None
                for b, h in enumerate(bands[i].tolist()):
                    for j in buckets.get((b, h), ()):
                        sim = float((sig[i] == sig[j]).mean())
                        if sim >= self.diversity_threshold:
                            near = (j, sim)
                            break
                    if near:
                        break
                if near:
                    too_close[i] = near
                    continue
                for b, h in enumerate(bands[i].tolist()):
                    buckets.setdefault((b, h), []).append(i)
            kept.append(i)
        keep = np.zeros(n, dtype=bool)
        keep[kept] = True
        drop = np.nonzero(~keep)[0]
        cutoff = float(scores[kept[-1]]) if kept else float("nan")
        reasons, details = [], []
        for i in drop.tolist():
            if i in too_close:
                j, sim = too_close[i]
                reasons.append("too_similar")
                details.append(f"J~{sim:.2f} to selected {_id_at(keys, j)}")
            else:
                reasons.append("not_selected")
                details.append(f"{self.score} {scores[i]:.3f} below the selection cutoff {cutoff:.3f}")
        return Decision(drop, reasons, details, {"selected": len(kept), "too_similar": len(too_close), "cutoff": cutoff})
