"""The one record model every format reads into and writes from.

A record is `sft` (a whole conversation ending with an assistant turn), `preference`
(prompt turns plus `chosen` / `rejected` continuations) or `prompt` (unlabeled turns
ending with a user or tool turn). Messages are plain dicts in the OpenAI/TRL shape:
``{"role", "content", "reasoning"?, "name"?, "tool_calls"?, "tool_call_id"?, "weight"?, "parts"?,
"reasoning_wrap"?}``: `content` is always a string; `reasoning` (the model's thinking) and
`parts` (content arrays: part layout and media references) are described in content.py.

The id is an xxh3-128 hash of the *normalized* conversation (roles, stripped NFC
content, tool calls, tools; reasoning and media references only where a message has them,
so the id of a record without them is what it always was), so the same conversation gets
the same id whichever format it came from: ids are the dedup and lineage key.
"""
from __future__ import annotations

import unicodedata
from typing import Any, Iterable

import orjson
import xxhash

from .content import check_parts, media_of, parse_openai_parts, reasoning_of
from .errors import RecordError

KINDS = ("sft", "preference", "prompt")
ROLES = ("system", "user", "assistant", "tool")
MESSAGE_KEYS = ("role", "content", "reasoning", "name", "tool_calls", "tool_call_id", "weight", "parts", "reasoning_wrap")

Message = dict[str, Any]


class Record:
    """One post-training example. `id` is computed lazily from the content and cached."""

    __slots__ = ("kind", "messages", "chosen", "rejected", "scores", "meta", "_id")

    def __init__(
        self,
        kind: str,
        messages: list[Message],
        chosen: list[Message] | None = None,
        rejected: list[Message] | None = None,
        scores: dict[str, float] | None = None,
        meta: dict[str, Any] | None = None,
        id: str | None = None,
    ) -> None:
        self.kind = kind
        self.messages = messages
        self.chosen = chosen
        self.rejected = rejected
        self.scores = scores if scores is not None else {}
        self.meta = meta if meta is not None else {}
        self._id = id

    @property
    def id(self) -> str:
        if self._id is None:
            self._id = content_id(self)
        return self._id

    def refresh_id(self) -> str:
        """Recompute the id after the content was changed in place (e.g. by redaction)."""
        self._id = None
        return self.id

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"id": self.id, "kind": self.kind, "messages": self.messages}
        if self.kind == "preference":
            d["chosen"] = self.chosen or []
            d["rejected"] = self.rejected or []
        d["scores"] = self.scores
        d["meta"] = self.meta
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Record":
        kind = d.get("kind")
        if kind not in KINDS:
            raise RecordError("bad_kind", f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
        rec = cls(
            kind=kind,
            messages=check_messages(d.get("messages"), "messages"),
            chosen=check_messages(d["chosen"], "chosen") if d.get("chosen") is not None else None,
            rejected=check_messages(d["rejected"], "rejected") if d.get("rejected") is not None else None,
            scores=check_scores(d.get("scores")),
            meta=_check_dict(d.get("meta"), "meta"),
        )
        return rec

    @classmethod
    def from_trusted(cls, d: dict[str, Any]) -> "Record":
        """Rebuild a record ptdata itself wrote (no re-checking; the id is kept)."""
        return cls(d["kind"], d["messages"], d.get("chosen"), d.get("rejected"), d.get("scores") or {}, d.get("meta") or {}, d.get("id"))

    def conversations(self) -> Iterable[list[Message]]:
        """Each full conversation this record holds (one for sft/prompt, two for a pair)."""
        if self.kind == "preference":
            if self.chosen:
                yield self.messages + self.chosen
            if self.rejected:
                yield self.messages + self.rejected
        else:
            yield self.messages

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Record) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"Record(kind={self.kind!r}, id={self.id[:12]}…, turns={len(self.messages)})"


def _check_dict(value: Any, field: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RecordError("wrong_type", f"field '{field}' must be an object, got {type(value).__name__}")
    return value


def check_scores(value: Any) -> dict:
    """Scores are named numbers (null stands for NaN, as JSON writes it)."""
    scores = _check_dict(value, "scores")
    for k, v in scores.items():
        if not (v is None or (type(v) in (int, float))):
            raise RecordError("wrong_type", f"scores.{str(k)[:100]} must be a number, got {type(v).__name__}")
    return scores


def message(role: str, content: str, **extra: Any) -> Message:
    """Build a message, dropping optional keys that are None."""
    m: Message = {"role": role, "content": content}
    for k, v in extra.items():
        if v is not None:
            m[k] = v
    return m


def check_messages(value: Any, field: str) -> list[Message]:
    """Check a message list's structure (types, roles); content rules live in validation."""
    if not isinstance(value, list):
        raise RecordError("wrong_type", f"field '{field}' must be a list of messages, got {type(value).__name__}")
    out: list[Message] = []
    for i, m in enumerate(value):
        if not isinstance(m, dict):
            raise RecordError("wrong_type", f"{field}[{i}] must be an object, got {type(m).__name__}")
        role = m.get("role")
        if role not in ROLES:
            raise RecordError("unknown_role", f"{field}[{i}].role is {role!r}; expected one of {', '.join(ROLES)}")
        where = f"{field}[{i}]"
        content = m.get("content")
        reasoning = reasoning_of(m, where)
        if reasoning is not None and role != "assistant":
            raise RecordError("wrong_type", f"{where} is a {role} turn with reasoning; only assistant turns have it")
        if content is None and (m.get("tool_calls") or reasoning is not None):
            content = ""
        parts = None
        if isinstance(content, list):  # an OpenAI / HF content array
            content, parts = parse_openai_parts(content, f"{where}.content")
        elif not isinstance(content, str):
            raise RecordError("wrong_type", f"{where}.content must be a string or a list of content parts, got {type(content).__name__}")
        elif m.get("parts") is not None:  # ptdata's own record form
            parts = check_parts(m["parts"], where)
        wrap = m.get("reasoning_wrap")
        if wrap is not None and (reasoning is None or not (isinstance(wrap, list) and len(wrap) == 2
                                                            and all(isinstance(x, str) for x in wrap))):
            raise RecordError("wrong_type", f"{where}.reasoning_wrap must be the [before, after] text of a reasoning block")
        clean = message(role, content, reasoning=reasoning, **{k: m.get(k) for k in MESSAGE_KEYS[3:7]},
                        parts=parts, reasoning_wrap=wrap)
        if "tool_calls" in clean:
            clean["tool_calls"] = normalize_tool_calls(clean["tool_calls"], f"{where}.tool_calls")
        if "weight" in clean and clean["weight"] not in (0, 1):
            raise RecordError("wrong_type", f"{where}.weight must be 0 or 1, got {clean['weight']!r}")
        out.append(clean)
    return out


def normalize_tool_calls(value: Any, where: str) -> list[dict[str, Any]]:
    """Tool calls in OpenAI shape with `arguments` parsed to an object when it is JSON.

    OpenAI stores arguments as a JSON string, TRL/HF templates want a dict: we hold the
    dict and render the string on the way out. Unparseable argument strings are kept as is.
    """
    if isinstance(value, str):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            raise RecordError("bad_tool_call", f"{where} is a string that is not JSON") from None
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list) or not value:
        raise RecordError("bad_tool_call", f"{where} must be a non-empty list")
    calls = []
    for j, call in enumerate(value):
        if not isinstance(call, dict):
            raise RecordError("bad_tool_call", f"{where}[{j}] must be an object")
        fn = call.get("function", call)
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise RecordError("bad_tool_call", f"{where}[{j}] has no function name")
        args = fn.get("arguments", {})
        if isinstance(args, str):
            try:
                args = orjson.loads(args) if args.strip() else {}
            except orjson.JSONDecodeError:
                pass
        out = {"type": "function", "function": {"name": fn["name"], "arguments": args}}
        if call.get("id"):
            out["id"] = call["id"]
        calls.append(out)
    return calls


def normalize_text(s: str) -> str:
    """Whitespace-stripped NFC text: what counts as 'the same content' for ids."""
    s = s.strip()
    if not s.isascii():
        s = unicodedata.normalize("NFC", s)
    return s


def _norm_messages(msgs: list[Message] | None) -> list:
    out = []
    for m in msgs or ():
        item: list[Any] = [m["role"], normalize_text(m["content"])]
        if "tool_calls" in m:
            item.append([[c["function"]["name"], c["function"]["arguments"]] for c in m["tool_calls"]])
        if m.get("name"):
            item.append(m["name"])
        if "reasoning" in m:  # only where present: ids of records without reasoning do not change
            item.append({"reasoning": normalize_text(m["reasoning"])})
        if m.get("parts"):
            media = media_of(m)
            if media:
                item.append({"media": media})
        out.append(item)
    return out


def content_id(rec: Record) -> str:
    """Stable xxh3-128 hex id of the normalized conversation (not scores, meta or weights)."""
    key: list[Any] = [rec.kind, _norm_messages(rec.messages)]
    if rec.kind == "preference":
        key.append(_norm_messages(rec.chosen))
        key.append(_norm_messages(rec.rejected))
    tools = rec.meta.get("tools")
    if tools:
        key.append(tools)
    return xxhash.xxh3_128_hexdigest(orjson.dumps(key, option=orjson.OPT_SORT_KEYS))


def kind_of(messages: list[Message]) -> str:
    """sft when the last turn is the assistant's, else an unlabeled prompt."""
    return "sft" if messages and messages[-1]["role"] == "assistant" else "prompt"


def common_prefix_len(a: list[Message], b: list[Message]) -> int:
    """Number of leading messages a and b share (TRL's extract_prompt, per message)."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n
