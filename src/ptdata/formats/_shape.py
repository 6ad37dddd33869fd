"""Steps every reader and writer shares, wrapped around them by the registry (formats/__init__.py).

Reading: an inline ``<think>…</think>`` block at the start of an assistant content becomes the
message's `reasoning` (every format but ptdata and llamafactory-v1, which hold reasoning
explicitly), and top-level fields the format does not map are kept in ``meta.extra``.

Writing (options ``-o reasoning=keep|drop|inline``, ``-o extra=keep|drop``):
- reasoning `keep` writes it each format's own way: ptdata and llamafactory-v1 natively,
  openai / openai-pref / trl conversational as ``reasoning_content`` on the message (the key HF
  chat templates such as Qwen3's and vLLM / SGLang / DeepSeek read; ``-o reasoning_key=thinking``
  for GPT-OSS templates, ``reasoning`` for OpenRouter), alpaca / sharegpt / trl standard inline
  (LLaMA-Factory's data/README.md: the CoT goes in the response, ``<think>cot</think>output``),
  qa inline (an answer is free text; R1-style math data keeps the block in it); hh (a fixed
  Human/Assistant transcript) and rated have no place for it and reject the record `not_representable`. `inline`
  writes it as a ``<think>`` block in front of the answer in any format, `drop` leaves it out.
- media parts (image, audio, video, file) only go to ptdata, openai, openai-pref and
  llamafactory-v1; any other writer rejects the record `not_representable`.
- ``meta.extra`` is written back as top-level fields by the formats whose rows are free-form
  (alpaca, sharegpt, trl, hh, qa, llamafactory-v1; ptdata keeps it in meta). A field whose name
  the target format (or format detection) would read as its own is not written over it: the
  record is rejected `not_representable`.
"""
from __future__ import annotations

from typing import Any, Callable

from ..content import (MEDIA_TYPES, REASONING_KEYS, THINK_CLOSE, THINK_OPEN, canonical_layout, has_media,
                       has_reasoning, inline_think, split_think)
from ..errors import InputError, RecordError
from ..records import MESSAGE_KEYS, Record
from ._common import not_representable

Read = Callable[[dict, dict], Record]
Write = Callable[[Record, dict], list[dict]]


def _qa_keys(row: dict, opts: dict) -> set:
    from .qa import fields

    return set(fields(opts).values())


def _openai_keys(row: dict, opts: dict) -> set:
    keys = {"messages", "tools", "parallel_tool_calls", "kto_tag"}
    if isinstance(row.get("label"), bool):
        keys.add("label")
    return keys


# The top-level fields each reader maps; any other field of a row goes to meta.extra.
KNOWN: dict[str, set | Callable[[dict, dict], set]] = {
    "ptdata": {"id", "kind", "messages", "chosen", "rejected", "scores", "meta"},
    "rated": {"prompt", "instruction", "input", "system", "completions", "responses", "candidates", "samples",
              "scores", "reference", "answer", "id", "source", "source_id"},
    "openai-pref": {"input", "preferred_output", "non_preferred_output"},
    "sharegpt": {"conversations", "system", "tools", "chosen", "rejected", "kto_tag"},
    "alpaca": {"instruction", "input", "output", "system", "history", "chosen", "rejected", "kto_tag"},
    "hh": {"chosen", "rejected"},
    "qa": _qa_keys,
    "llamafactory-v1": {"messages", "chosen_messages", "rejected_messages", "tools"},
    "openai": _openai_keys,
    "trl": {"prompt", "completion", "chosen", "rejected", "label", "messages", "tools", "chat_template_kwargs"},
}
# Fields some format reads or detects by: never written from meta.extra, whatever the target.
DETECT_KEYS = {"kind", "messages", "conversations", "instruction", "input", "output", "history", "system", "tools",
               "prompt", "completion", "chosen", "rejected", "label", "kto_tag", "question", "answer",
               "preferred_output", "non_preferred_output", "chosen_messages", "rejected_messages", "completions",
               "responses", "candidates", "samples", "text"}
FREEFORM = {"alpaca", "sharegpt", "trl", "hh", "qa", "llamafactory-v1"}
MEDIA_OK = {"ptdata", "openai", "openai-pref", "llamafactory-v1"}
NATIVE_THINK = {"ptdata", "llamafactory-v1"}  # readers that hold reasoning explicitly (no inline split)
HF_MESSAGES = {"trl", "rated"}  # writers that pass record messages through: given HF-shaped messages


def _trl_native(opts: dict) -> str:
    return "inline" if opts.get("style") == "standard" else "field"


# How `-o reasoning=keep` writes reasoning: field (the format's own key or parts), inline, or None (rejected).
NATIVE_REASONING: dict[str, Any] = {"ptdata": "field", "llamafactory-v1": "field", "openai": "field",
                                    "openai-pref": "field", "trl": _trl_native, "alpaca": "inline",
                                    "sharegpt": "inline", "hh": None, "qa": "inline", "rated": None}

WRITE_OPTIONS = {"reasoning": ("keep", "drop", "inline"), "reasoning_key": REASONING_KEYS, "extra": ("keep", "drop"),
                 "loss_weight": ("given", "all")}


def check_write_options(opts: dict) -> None:
    """Refuse (one error line, before anything is written) a value of an option checked here."""
    for k, allowed in WRITE_OPTIONS.items():
        v = opts.get(k)
        if v is not None and v not in allowed:
            raise InputError(f"-o {k}: must be {', '.join(allowed[:-1])} or {allowed[-1]}, got {str(v)[:60]!r}")


def known_keys(fmt: str, row: dict, opts: dict) -> set:
    k = KNOWN.get(fmt, set())
    return k(row, opts) if callable(k) else k


# --- reading ---------------------------------------------------------------------------------

def _ordered(m: dict) -> dict:
    return {k: m[k] for k in MESSAGE_KEYS if k in m}


def _starts_think(c: str) -> bool:
    return c.startswith("<think>") or (c[:1].isspace() and c.lstrip().startswith("<think>"))


def _split_inline(msgs: list[dict]) -> None:
    for i, m in enumerate(msgs):
        if m["role"] != "assistant" or not _starts_think(m["content"]) or "reasoning" in m or m.get("parts"):
            continue
        got = split_think(m["content"])
        if got is None:
            continue
        reasoning, content, wrap = got
        new = {**m, "content": content, "reasoning": reasoning}
        if wrap is not None:
            new["reasoning_wrap"] = wrap
        msgs[i] = _ordered(new)


def wrap_read(name: str, read: Read) -> Read:
    split = name not in NATIVE_THINK
    known = KNOWN.get(name, set())
    static = None if callable(known) else known

    def read_record(row: dict, opts: dict) -> Record:
        rec = read(row, opts)
        if split:
            for m in rec.messages:
                if m["role"] == "assistant" and _starts_think(m["content"]):
                    _split_inline(rec.messages)
                    break
            if rec.kind == "preference":
                for msgs in (rec.chosen, rec.rejected):
                    if msgs:
                        _split_inline(msgs)
        keys = static if static is not None else known(row, opts)
        if keys.issuperset(row):
            return rec
        extra = {k: v for k, v in row.items() if v is not None and k not in keys}
        if extra:
            have = rec.meta.get("extra")
            if have is not None and not isinstance(have, dict):
                raise RecordError("wrong_type", f"meta.extra must be an object, got {type(have).__name__}")
            rec.meta["extra"] = {**extra, **(have or {})}
        return rec

    read_record.__wrapped__ = read  # type: ignore[attr-defined]
    return read_record


# --- writing ---------------------------------------------------------------------------------

def _is_canonical(m: dict) -> bool:
    return m["parts"] == canonical_layout(m["content"], m.get("reasoning"), len(m.get("tool_calls") or ()))


def _tidy(m: dict) -> dict:
    if m.get("parts") is not None and _is_canonical(m):
        del m["parts"]
    return m


def _drop_reasoning(m: dict) -> dict:
    if "reasoning" not in m:
        return m
    new = {k: v for k, v in m.items() if k not in ("reasoning", "reasoning_wrap")}
    if new.get("parts"):
        new["parts"] = [p for p in new["parts"] if p["type"] != "reasoning"]
    return _tidy(new)


def _inline(m: dict) -> dict:
    if "reasoning" not in m:
        return m
    text = inline_think(m)
    added = len(text) - len(m["content"])
    new = {k: v for k, v in m.items() if k not in ("reasoning", "reasoning_wrap")}
    new["content"] = text
    parts = new.get("parts")
    if parts:
        first_r = next((i for i, p in enumerate(parts) if p["type"] == "reasoning"), 0)
        parts = [dict(p) for p in parts if p["type"] != "reasoning"]
        first_t = next((p for p in parts if p["type"] == "text"), None)
        if first_t is not None and sum(p["chars"] for p in parts if p["type"] == "text") == len(m["content"]):
            first_t["chars"] += added
        elif first_t is None:
            parts.insert(min(first_r, len(parts)), {"type": "text", "chars": len(text)})
        new["parts"] = parts
    return _tidy(new)


def _hf(key: str) -> Callable[[dict], dict]:
    def conv(m: dict) -> dict:
        if not any(k in m for k in ("reasoning", "parts", "reasoning_wrap")):
            return m
        out = {k: v for k, v in m.items() if k not in ("reasoning", "parts", "reasoning_wrap")}
        if "reasoning" in m:
            out = {"role": m["role"], "content": m["content"], key: m["reasoning"],
                   **{k: v for k, v in out.items() if k not in ("role", "content")}}
        return out
    return conv


def _map(rec: Record, f: Callable[[dict], dict]) -> Record:
    def side(msgs: list[dict] | None) -> list[dict] | None:
        return None if msgs is None else [f(m) for m in msgs]
    return Record(rec.kind, side(rec.messages), side(rec.chosen), side(rec.rejected), rec.scores, rec.meta)


def _any(rec: Record, test: Callable[[list[dict] | None], bool]) -> bool:
    return test(rec.messages) or (rec.kind == "preference" and (test(rec.chosen) or test(rec.rejected)))


def _plain(rec: Record) -> bool:
    """No message has any of the keys the writer steps look at (the common case: nothing to do)."""
    for msgs in (rec.messages, rec.chosen, rec.rejected):
        for m in msgs or ():
            if len(m) > 2 and ("reasoning" in m or "parts" in m):
                return False
    return True


def wrap_write(name: str, write: Write) -> Write:
    native = NATIVE_REASONING.get(name, "field")
    freeform = name in FREEFORM
    media_ok = name in MEDIA_OK
    hf = name in HF_MESSAGES

    def write_record(rec: Record, opts: dict) -> list[dict]:
        if not _plain(rec):
            mode = opts.get("reasoning", "keep")
            if _any(rec, has_reasoning):
                nat = native(opts) if callable(native) else native
                if mode == "drop":
                    rec = _map(rec, _drop_reasoning)
                elif mode == "inline" or nat == "inline":
                    rec = _map(rec, _inline)
                elif nat is None:
                    raise not_representable(name, "it has reasoning (the model's thinking), which this format has no "
                                            "place for; convert with -o reasoning=inline (a <think> block before the "
                                            "answer) or -o reasoning=drop")
            if not media_ok and _any(rec, has_media):
                kinds = sorted({p["type"] for msgs in (rec.messages, rec.chosen, rec.rejected) for m in msgs or ()
                                for p in m.get("parts") or () if p["type"] in MEDIA_TYPES})
                raise not_representable(name, f"it has {'/'.join(kinds)} content parts; write it as ptdata, openai "
                                        "or llamafactory-v1")
            if hf:
                rec = _map(rec, _hf(opts.get("reasoning_key", "reasoning_content")))
        rows = write(rec, opts)
        extra = rec.meta.get("extra")
        if extra and freeform and isinstance(extra, dict) and opts.get("extra", "keep") == "keep":
            rows = [_with_extra(name, row, extra, opts) for row in rows]
        return rows

    write_record.__wrapped__ = write  # type: ignore[attr-defined]
    return write_record


def _with_extra(name: str, row: dict, extra: dict, opts: dict) -> dict:
    reserved = known_keys(name, row, opts)
    for k in extra:
        if k in row or k in reserved or k in DETECT_KEYS:
            raise not_representable(name, f"its unmapped field {str(k)[:60]!r} (meta.extra) would be read as a "
                                    f"{name} field of that name; convert with -o extra=drop to leave it out")
    return {**row, **extra}


def extras_written(to: str, opts: dict, parquet: bool) -> bool:
    return to == "ptdata" or (to in FREEFORM and not parquet and opts.get("extra", "keep") == "keep")


def extra_summary(extra: dict[str, int], to: str, opts: dict, parquet: bool) -> str | None:
    """The convert summary's line about unmapped fields (None when there were none)."""
    if not extra:
        return None
    names = sorted(extra, key=lambda k: (-extra[k], k))
    listed = ", ".join(f"{k} ({extra[k]:,} record{'s' if extra[k] != 1 else ''})" for k in names[:8])
    if len(names) > 8:
        listed += f", and {len(names) - 8} more"
    n = f"{len(names)} unmapped field{'s' if len(names) != 1 else ''}"
    if to == "ptdata":
        return f"kept {n} in meta.extra: {listed}"
    if extras_written(to, opts, parquet):
        return f"kept {n} (meta.extra, written as {to} row fields): {listed}"
    why = ("-o extra=drop" if opts.get("extra") == "drop" else "Parquet has no column for them" if parquet
           else f"{to} rows have no place for them")
    return f"{n} not written ({why}; --to ptdata keeps them in meta.extra): {listed}"


__all__ = ["THINK_OPEN", "THINK_CLOSE", "check_write_options", "extra_summary", "extras_written", "wrap_read", "wrap_write"]
