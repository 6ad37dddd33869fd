"""A dataset card per mined version (`CARD.md` in the version's folder): records per file, where
they came from, what was filtered and why, the PII policy, the held-out evaluation split, and the
evaluations of the model versions trained on it (`ptdata flywheel deploy` records those;
`ptdata flywheel card` writes the card again once they exist: only CARD.md is rewritten, the
version's data files never are). Every value from the store or a client (model-version labels,
reasons) is escaped for Markdown, so a label cannot add table cells, links or HTML.
"""
from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path

import orjson

from ..errors import InputError
from ..ops.pii import TYPES

_MD = re.compile(r"([\\`*_\[\]<>|~])")


def md(v: object) -> str:
    """A value as Markdown text: specials backslash-escaped, no line breaks, `&` as an entity."""
    s = "-" if v is None else str(v)
    s = s.replace("&", "&amp;").replace("\r", " ").replace("\n", " ")
    return _MD.sub(r"\\\1", s)


def _when(t: float | None) -> str:
    return "-" if not t else datetime.fromtimestamp(float(t), timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _table(head: list[str], rows: list[list[object]]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(md(c) for c in r) + " |" for r in rows]
    return out + [""]


def _counts(title: str, d: dict, what: str) -> list[str]:
    if not d:
        return [f"{title}: none.", ""]
    return [f"{title}:", ""] + _table([what, "count"], [[k, f"{v:,}"] for k, v in sorted(d.items(), key=lambda kv: -kv[1])])


def fmt_rate(e: dict) -> str:
    if e.get("win_rate") is None:
        return "-"
    return f"{e['win_rate']:.3f} [{e['ci_low']:.3f}, {e['ci_high']:.3f}]"


def card_markdown(manifest: dict, evaluations: list[dict], deployed: list[str] | None = None) -> str:
    c = manifest.get("counts", {})
    name = manifest.get("version", "?")
    rejects = sum(c.get("unused_interactions", {}).values()) + sum(c.get("dropped_records", {}).values()) \
        + sum(c.get("eval_dropped", {}).values())
    pii = manifest.get("pii") or {}
    lines = [f"# Dataset card: {md(name)}", "",
             f"Mined by `ptdata flywheel mine` from the interactions of "
             f"{_when(manifest.get('since')) if manifest.get('since') else 'the start'} to "
             f"{_when(manifest.get('until'))} (parent version: {md(manifest.get('parent') or 'none')}). "
             f"{c.get('interactions', 0):,} interactions read ({c.get('late_feedback_interactions', 0):,} of them earlier "
             f"ones with new feedback), {c.get('feedback', 0):,} feedback events.", "",
             "## Files", ""]
    lines += _table(["file", "records", "what"], [
        ["sft.jsonl", f"{c.get('sft', 0):,}", "SFT records (training)"],
        ["pairs.jsonl", f"{c.get('pairs', 0):,}", "preference pairs (training)"],
        ["eval.jsonl", f"{c.get('eval', 0):,}", "held-out prompts with the stored answer (evaluation only)"],
        ["rejects.jsonl", f"{rejects:,}", "unused interactions and dropped records, with the reason"]])
    lines += ["## Sources", ""] + _counts("Records by `mined_from`", c.get("by_source", {}), "source")
    ops = [next(iter(o)) for o in manifest.get("ops", [])]
    lines += ["## Filters", "",
              f"A rating of {manifest.get('min_rating', 4)} or more counts as positive feedback. Ops run on the mined "
              f"records, in order: {', '.join(md(o) for o in ops) or 'none'}; then exact dedup within the version and "
              "against every earlier version.", ""]
    lines += _counts("Interactions that gave no record", c.get("unused_interactions", {}), "reason")
    lines += _counts("Records dropped", c.get("dropped_records", {}), "reason")
    lines += ["## PII policy", "",
              f"Action: **{md(pii.get('action', 'redact'))}**; types found by pattern: {', '.join(TYPES)}"
              f"{'; person names by NER (Presidio + spaCy)' if pii.get('ner') else ''}. "
              f"{c.get('pii_redacted_records', 0):,} training record(s) had PII redacted. The held-out prompts, their "
              "stored answers and corrections are scrubbed the same way; rejected records are stored redacted.", ""]
    share = manifest.get("eval_share")
    lines += ["## Held-out evaluation split", "",
              f"{c.get('eval', 0):,} held-out prompt(s) in `eval.jsonl`, from {c.get('held_out_interactions', 0):,} "
              f"interaction(s) in {c.get('held_out_conversations', 0):,} conversation(s)"
              + (f" (target share {share:.0%} of conversations)" if share is not None else "") + ". A conversation "
              "(its conversation id, else its prompt up to the first user message) gets its side from a salted hash of "
              "its key the first time a version sees it, and keeps it: no version mines a held-out one into training "
              "data.", ""]
    lines += _counts("Held-out interactions that are not eval prompts", c.get("eval_dropped", {}), "reason")
    lines += ["## Evaluations of models trained on this version", ""]
    if not evaluations:
        who = ", ".join(md(d) for d in deployed or [])
        lines += [(f"Trained on it: {who}; no evaluation recorded yet (`ptdata flywheel eval`)." if who else
                   "No model version is recorded as trained on this version yet (`ptdata flywheel deploy`)."), ""]
    else:
        lines += _table(["model version", "against", "eval set", "n", "wins", "ties", "losses", "win rate [95% CI]",
                         "gate", "when"],
                        [[e["candidate_version"], e["current_version"], e["eval_set"], e["n"], e["wins"], e["ties"],
                          e["losses"], fmt_rate(e),
                          "-" if e.get("gate") is None else f"{e['gate']:g}: {'pass' if e.get('passed') else 'FAIL'}",
                          _when(e.get("created_at"))] for e in evaluations])
        lines += ["Win rate: (wins + ties / 2) / n over the held-out prompts; a win counts only when the judge "
                  "agrees in both orders. 95% CI: Wilson score interval.", ""]
    return "\n".join(lines)


def write_card(store, out_dir: Path, version: str) -> Path:
    """(Re)write OUT/VERSION/CARD.md from its manifest and the store's deploy and evaluation records."""
    from .mine import list_versions, version_dir

    vdir = version_dir(out_dir, version)
    if version not in {v["name"] for v in list_versions(store)}:
        raise InputError(f"--version {version!r}: no such version in the store")
    try:
        manifest = orjson.loads((vdir / "manifest.json").read_bytes())
    except (OSError, orjson.JSONDecodeError) as e:
        raise InputError(f"{vdir / 'manifest.json'}: cannot read the version's manifest ({e})") from None
    deployed = [d["model_version"] for d in store.deployments() if d["trained_on"] == version]
    evals = [e for e in store.evaluations() if e["candidate_version"] in deployed]
    path = vdir / "CARD.md"
    path.write_text(card_markdown(manifest, evals, deployed), encoding="utf-8")
    return path
