"""What a message holds besides its text: the model's reasoning, and content parts.

A record message keeps its text in `content` (always a string: the text parts joined exactly,
with no separator added, as LLaMA-Factory's renderer and HF chat templates join them) and,
when the source had more structure than that, two optional keys:

- ``reasoning``: the model's thinking before the answer (assistant turns only). Read from
  OpenAI-compatible ``reasoning_content`` (vLLM, SGLang, DeepSeek), ``reasoning`` (newer vLLM,
  OpenRouter), ``thinking`` (HF datasets for GPT-OSS / Harmony), LLaMA-Factory v1 ``reasoning``
  parts, and an inline ``<think>…</think>`` block at the start of an assistant content (Qwen3,
  DeepSeek-R1). ``reasoning_wrap`` keeps the exact text around an inline block when it is not
  the canonical ``"<think>\\n" … "\\n</think>\\n\\n"``, so writing it back inline is byte-exact.
- ``parts``: the layout of a content array, one entry per part, in order. Text and reasoning
  entries hold no text, only their length in characters (``{"type": "text", "chars": 12}``):
  the text itself is the matching slice of `content` / `reasoning`, so an op that edits the
  text (PII redaction) can never leave a stale copy behind. ``{"type": "tool_call"}`` stands
  for the next of the message's `tool_calls` (LLaMA-Factory v1 puts calls among the parts).
  Media are typed references kept whole: ``{"type": "image", "url", "detail"?}``,
  ``{"type": "audio", "url"}`` or ``{"type": "audio", "data", "format"}``,
  ``{"type": "video", "url"}``, ``{"type": "file", "file_id"?, "file_data"?, "filename"?}``.
  `parts` is absent when the layout is the canonical one (reasoning, then text, then tool
  calls) and nothing but text came as an array.

If the text was edited so that the lengths no longer add up, writers put all of it in the
first text part (nothing is lost; the split points are). This module does not import the
record model (records.py imports it).
"""
from __future__ import annotations

import json
import re
from typing import Any, Callable

from .errors import RecordError

MEDIA_TYPES = ("image", "audio", "video", "file")
PART_TYPES = ("text", "reasoning", "tool_call", *MEDIA_TYPES)
REASONING_KEYS = ("reasoning_content", "reasoning", "thinking")  # read in this order
THINK_OPEN, THINK_CLOSE = "<think>\n", "\n</think>\n\n"  # Qwen3 / DeepSeek-R1 chat templates render this
_THINK = re.compile(r"(\s*<think>\n*)(.*?)(\n*</think>\s*)", re.S)

# --- reasoning -------------------------------------------------------------------------------


def reasoning_of(m: dict, where: str) -> str | None:
    """The reasoning a message dict carries under any of REASONING_KEYS (None when none)."""
    found = None
    for k in REASONING_KEYS:
        v = m.get(k)
        if v is None:
            continue
        if not isinstance(v, str):
            raise RecordError("wrong_type", f"{where}.{k} must be a string, got {type(v).__name__}")
        if found is not None and v != found:
            raise RecordError("wrong_type", f"{where} has two different reasoning texts ({' and '.join(REASONING_KEYS)})")
        found = v
    return found


def split_think(text: str) -> tuple[str, str, list[str] | None] | None:
    """(reasoning, content, wrap) of a text that starts with a closed <think> block, else None.
    `wrap` is the exact text before and after the reasoning, None when it is the canonical one."""
    if "<think>" not in text[:64]:
        return None
    if text.startswith(THINK_OPEN):  # the canonical form first: the reasoning is exactly what it wraps
        end = text.find(THINK_CLOSE, len(THINK_OPEN))
        if end >= 0 and "</think>" not in text[len(THINK_OPEN):end]:
            return text[len(THINK_OPEN):end], text[end + len(THINK_CLOSE):], None
    m = _THINK.match(text)
    if m is None:
        return None
    before, reasoning, after = m.groups()
    content = text[m.end():]
    wrap = None if before == THINK_OPEN and after == THINK_CLOSE else [before, after]
    if wrap is not None and THINK_OPEN + reasoning + THINK_CLOSE + content == text:
        wrap = None  # e.g. an empty block "<think>\n\n</think>\n\n": the canonical form renders it too
    return reasoning, content, wrap


def inline_think(m: dict) -> str:
    """The message's content with its reasoning put back in front as a <think> block."""
    before, after = m.get("reasoning_wrap") or (THINK_OPEN, THINK_CLOSE)
    return f"{before}{m['reasoning']}{after}{m['content']}"


def has_reasoning(msgs: list[dict] | None) -> bool:
    return any("reasoning" in m for m in msgs or ())


def has_media(msgs: list[dict] | None) -> bool:
    return any(m.get("parts") and any(p["type"] in MEDIA_TYPES for p in m["parts"]) for m in msgs or ())


def media_of(m: dict) -> list[dict]:
    return [p for p in m.get("parts") or () if p["type"] in MEDIA_TYPES]


# --- parts in the record ---------------------------------------------------------------------

_MEDIA_FIELDS = {"image": ("url", "detail"), "audio": ("url", "data", "format"), "video": ("url",),
                 "file": ("file_id", "file_data", "filename")}


def check_parts(value: Any, where: str) -> list[dict]:
    """A record's `parts` (as ptdata writes them; a JSON string from Parquet is parsed)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise RecordError("wrong_type", f"{where}.parts is a string that is not JSON") from None
    if not isinstance(value, list):
        raise RecordError("wrong_type", f"{where}.parts must be a list, got {type(value).__name__}")
    out = []
    for j, p in enumerate(value):
        at = f"{where}.parts[{j}]"
        if not isinstance(p, dict) or p.get("type") not in PART_TYPES:
            raise RecordError("wrong_type", f"{at} must be an object with a type of {', '.join(PART_TYPES)}")
        t = p["type"]
        if t in ("text", "reasoning"):
            n = p.get("chars")
            if type(n) is not int or n < 0:
                raise RecordError("wrong_type", f"{at}.chars must be a count of characters, got {n!r}")
            out.append({"type": t, "chars": n})
        elif t == "tool_call":
            out.append({"type": t})
        else:
            entry = {"type": t}
            for k in _MEDIA_FIELDS[t]:
                v = p.get(k)
                if v is not None:
                    if not isinstance(v, str):
                        raise RecordError("wrong_type", f"{at}.{k} must be a string, got {type(v).__name__}")
                    entry[k] = v
            if len(entry) == 1:
                raise RecordError("wrong_type", f"{at} ({t}) has none of {', '.join(_MEDIA_FIELDS[t])}")
            out.append(entry)
    return out


def canonical_layout(content: str, reasoning: str | None, n_calls: int) -> list[dict]:
    """The layout a message has when `parts` is absent: reasoning, text, tool calls."""
    out = []
    if reasoning is not None:
        out.append({"type": "reasoning", "chars": len(reasoning)})
    if content or not (n_calls or reasoning is not None):
        out.append({"type": "text", "chars": len(content)})
    out.extend({"type": "tool_call"} for _ in range(n_calls))
    return out


def resolve(m: dict) -> list[tuple[str, Any]]:
    """The message as an ordered list of (type, value): text and reasoning slices, tool calls
    (the call dict), media entries. Falls back gracefully when the text no longer matches."""
    content, reasoning = m["content"], m.get("reasoning")
    calls = m.get("tool_calls") or []
    parts = m.get("parts")
    if parts is None:
        parts = canonical_layout(content, reasoning, len(calls))
    out: list[tuple[str, Any]] = []
    texts = _slices(content, [p["chars"] for p in parts if p["type"] == "text"])
    reasons = _slices(reasoning or "", [p["chars"] for p in parts if p["type"] == "reasoning"]) if reasoning is not None else []
    n_call_parts = sum(1 for p in parts if p["type"] == "tool_call")
    ti = ri = ci = 0
    for p in parts:
        t = p["type"]
        if t == "text":
            if ti < len(texts) and texts[ti] is not None:
                out.append(("text", texts[ti]))
            ti += 1
        elif t == "reasoning":
            if ri < len(reasons) and reasons[ri] is not None:
                out.append(("reasoning", reasons[ri]))
            ri += 1
        elif t == "tool_call":
            if n_call_parts == len(calls):
                out.append(("tool_call", calls[ci]))
                ci += 1
        else:
            out.append((t, p))
    if reasoning is not None and not any(t == "reasoning" for t, _ in out):
        out.insert(0, ("reasoning", reasoning))
    if content and not any(t == "text" for t, _ in out):
        at = max((i + 1 for i, (t, _) in enumerate(out) if t == "reasoning"), default=0)
        out.insert(at, ("text", content))
    if n_call_parts != len(calls):
        out.extend(("tool_call", c) for c in calls)
    return out


def _slices(text: str, lengths: list[int]) -> list[str | None]:
    """Cut `text` by `lengths`; when they do not add up (the text was edited), all of it goes to
    the first slot and the other slots are None (left out)."""
    if not lengths:
        return []
    if sum(lengths) == len(text):
        out, at = [], 0
        for n in lengths:
            out.append(text[at:at + n])
            at += n
        return out
    return [text] + [None] * (len(lengths) - 1)


def layout_or_none(layout: list[dict], content: str, reasoning: str | None, n_calls: int) -> list[dict] | None:
    """`layout` to store as `parts`, or None when it is the canonical one and holds no media."""
    return None if layout == canonical_layout(content, reasoning, n_calls) else layout


# --- OpenAI / HF content arrays ---------------------------------------------------------------


def parse_openai_parts(value: list, where: str) -> tuple[str, list[dict]]:
    """An OpenAI chat content array -> (content, parts). Text parts are joined exactly."""
    texts: list[str] = []
    layout: list[dict] = []
    for j, p in enumerate(value):
        at = f"{where}[{j}]"
        if isinstance(p, str):  # some clients send bare strings in the array
            p = {"type": "text", "text": p}
        if not isinstance(p, dict):
            raise RecordError("wrong_type", f"{at} must be a content part object, got {type(p).__name__}")
        t = p.get("type")
        if t == "text":
            text = p.get("text")
            if not isinstance(text, str):
                raise RecordError("wrong_type", f"{at}.text must be a string, got {type(text).__name__}")
            texts.append(text)
            layout.append({"type": "text", "chars": len(text)})
        elif t == "image_url":
            img = p.get("image_url")
            if isinstance(img, str):
                img = {"url": img}
            if not isinstance(img, dict) or not isinstance(img.get("url"), str):
                raise RecordError("wrong_type", f"{at}.image_url must be an object with a url")
            entry = {"type": "image", "url": img["url"]}
            if isinstance(img.get("detail"), str):
                entry["detail"] = img["detail"]
            layout.append(entry)
        elif t == "input_audio":
            au = p.get("input_audio")
            if not isinstance(au, dict) or not isinstance(au.get("data"), str) or not isinstance(au.get("format"), str):
                raise RecordError("wrong_type", f"{at}.input_audio must be an object with data and format")
            layout.append({"type": "audio", "data": au["data"], "format": au["format"]})
        elif t == "file":
            f = p.get("file")
            if not isinstance(f, dict) or not any(isinstance(f.get(k), str) for k in _MEDIA_FIELDS["file"]):
                raise RecordError("wrong_type", f"{at}.file must be an object with file_id, file_data or filename")
            layout.append({"type": "file", **{k: f[k] for k in _MEDIA_FIELDS["file"] if isinstance(f.get(k), str)}})
        else:
            raise RecordError("wrong_type", f"{at} is a content part of type {str(t)[:40]!r}; ptdata reads text, "
                              "image_url, input_audio and file parts")
    return "".join(texts), layout


def openai_content(m: dict, fmt: str, not_representable: Callable[[str, str], RecordError]) -> str | list:
    """A record message's content as OpenAI writes it: the string, or the content array when the
    message came as one or holds media."""
    parts = m.get("parts")
    if parts is None:
        return m["content"]
    if not parts and not m["content"]:
        return []  # an empty content array stays one
    kinds = [p["type"] for p in parts]
    media = any(k in MEDIA_TYPES for k in kinds)
    if not media and kinds.count("text") <= 1 and any(k in ("reasoning", "tool_call") for k in kinds):
        return m["content"]  # a LLaMA-Factory v1 layout of one text part: plain text here
    out: list[dict] = []
    for t, v in resolve(m):
        if t == "text":
            out.append({"type": "text", "text": v})
        elif t == "image":
            img = {"url": v["url"]} if "url" in v else None
            if img is None:
                raise not_representable(fmt, "an image part has no url")
            if "detail" in v:
                img["detail"] = v["detail"]
            out.append({"type": "image_url", "image_url": img})
        elif t == "audio":
            if "data" not in v or "format" not in v:
                raise not_representable(fmt, "an audio part is a file reference, and OpenAI input_audio needs the data")
            out.append({"type": "input_audio", "input_audio": {"data": v["data"], "format": v["format"]}})
        elif t == "file":
            out.append({"type": "file", "file": {k: v[k] for k in _MEDIA_FIELDS["file"] if k in v}})
        elif t == "video":
            raise not_representable(fmt, "OpenAI chat messages have no video parts")
    return out
