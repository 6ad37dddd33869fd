"""Structural and multi-turn coherence checks, the first step of every command.

Errors make a record unusable for training and reject it with a reason code; flags mark
something a person should look at (a language switch, an unbalanced code fence, an answer
cut off mid-sentence) and are kept in ``meta.flags`` (``strict`` turns them into rejects).

Messages may carry `reasoning` (assistant turns) and content `parts` (content.py): a turn with
only media (an image and no text) is not empty, an answer that is only reasoning is; the
reasoning is held to the same length limit as the text and counts in telling two turns (and
two preference sides) apart.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from .errors import RecordError
from .params import Count, Positive
from .content import media_of
from .records import Message, Record, normalize_text

# Codes, so that callers and tests can rely on them.
ERRORS = (
    "empty_conversation", "system_not_first", "first_turn_not_user", "roles_out_of_order", "tool_without_call",
    "missing_tool_result", "empty_turn", "turn_too_long", "repeated_turn", "sft_not_ending_with_assistant",
    "prompt_not_ending_with_user", "preference_missing_side", "chosen_equals_rejected", "bad_side",
)
FLAGS = ("language_switch", "unbalanced_code_fence", "truncated_answer")


@dataclass
class ValidationConfig:
    """What validation checks; the annotations are the ranges a recipe's `validation:` is checked against."""

    max_turn_chars: Positive = 100_000
    language: bool = True
    strict: bool = False
    min_language_chars: Count = 20


def validate(rec: Record, cfg: ValidationConfig | None = None) -> list[str]:
    """Raise RecordError on the first structural error; return the list of flags otherwise."""
    cfg = cfg or ValidationConfig()
    if not rec.messages:
        raise RecordError("empty_conversation", "no prompt turns")
    if rec.kind == "sft":
        check_turns(rec.messages, cfg, "messages")
        if rec.messages[-1]["role"] != "assistant" or rec.messages[-1].get("tool_calls"):
            raise RecordError("sft_not_ending_with_assistant", f"last turn is {_describe(rec.messages[-1])}")
        finals = [rec.messages[-1]]
    elif rec.kind == "prompt":
        check_turns(rec.messages, cfg, "messages")
        if rec.messages[-1]["role"] not in ("user", "tool"):
            raise RecordError("prompt_not_ending_with_user", f"last turn is {_describe(rec.messages[-1])}")
        finals = []
    else:
        finals = _check_preference(rec, cfg)
    flags = _flags(rec, finals, cfg)
    if flags:
        if cfg.strict:
            raise RecordError(flags[0], "flag rejected in strict mode")
        rec.meta["flags"] = flags
    return flags


def _check_preference(rec: Record, cfg: ValidationConfig) -> list[Message]:
    if rec.messages[-1]["role"] not in ("user", "tool"):
        raise RecordError("prompt_not_ending_with_user", f"the prompt's last turn is {_describe(rec.messages[-1])}")
    ch, rj = rec.chosen or [], rec.rejected or []
    unpaired = "label" in rec.meta
    if unpaired:
        if bool(ch) == bool(rj):
            raise RecordError("preference_missing_side", "an unpaired (KTO) record has exactly one side")
    elif not ch or not rj:
        raise RecordError("preference_missing_side", f"{'chosen' if not ch else 'rejected'} is empty")
    finals = []
    for name, side in (("chosen", ch), ("rejected", rj)):
        if not side:
            continue
        if side[0]["role"] != "assistant":
            raise RecordError("bad_side", f"{name} starts with {_describe(side[0])}, not an assistant turn")
        if side[-1]["role"] != "assistant" or side[-1].get("tool_calls"):
            raise RecordError("bad_side", f"{name} ends with {_describe(side[-1])}, not an assistant answer")
        check_turns(rec.messages + side, cfg, f"prompt+{name}")
        finals.append(side[-1])
    if not unpaired and _norm_side(ch) == _norm_side(rj):
        raise RecordError("chosen_equals_rejected", "chosen and rejected have the same content")
    return finals


def _norm_side(side: list[Message]) -> list:
    return [(m["role"], normalize_text(m["content"]), str(m.get("tool_calls")),
             normalize_text(m["reasoning"]) if "reasoning" in m else None, str(media_of(m)) if m.get("parts") else None)
            for m in side]


def _describe(m: Message) -> str:
    if m.get("tool_calls"):
        return "a tool call"
    return f"{'an' if m['role'] == 'assistant' else 'a'} {m['role']} turn"


# Which role may follow which state; "call" is an assistant turn with open tool calls.
_NEXT = {
    None: ("system", "user"),
    "system": ("user",),
    "user": ("assistant",),
    "assistant": ("user",),
    "call": ("tool",),
    "tool": ("assistant", "tool"),
}


def check_turns(msgs: list[Message], cfg: ValidationConfig, where: str) -> None:
    """Legal role order, tool turns only after a tool call, no empty, over-long or repeated turns."""
    max_chars = cfg.max_turn_chars
    state = None
    pending = 0
    prev_text = None
    for i, m in enumerate(msgs):
        role, content = m["role"], m["content"]
        if role not in _NEXT[state] or (role == "tool" and pending <= 0) or (role == "assistant" and state == "tool" and pending > 0):
            _order_error(msgs, i, state, pending, where)
        if role == "assistant" and m.get("tool_calls"):
            pending = len(m["tool_calls"])
            state = "call"
        else:
            if (not content or content.isspace()) and not (m.get("parts") and media_of(m)):
                why = " (it has reasoning but no answer)" if m.get("reasoning") else ""
                raise RecordError("empty_turn", f"{where}[{i}] ({role}) is empty{why}")
            if role == "tool":
                pending -= 1
            state = role
        if len(content) > max_chars:
            raise RecordError("turn_too_long", f"{where}[{i}] has {len(content):,} characters, over {max_chars:,}")
        if "reasoning" in m and len(m["reasoning"]) > max_chars:
            raise RecordError("turn_too_long", f"{where}[{i}] has {len(m['reasoning']):,} characters of reasoning, over {max_chars:,}")
        if role == "tool":
            prev_text = None  # echoing a tool result is fine
            continue
        text = content.strip()
        if not text.isascii():
            text = normalize_text(text)
        if len(m) > 2 and m.get("parts"):  # the same words about another image are another turn
            media = media_of(m)
            if media:
                text = (text, str(media))
        if text and text == prev_text:
            raise RecordError("repeated_turn", f"{where}[{i}] repeats the previous turn word for word")
        prev_text = text
    if pending > 0 and state == "tool":
        raise RecordError("missing_tool_result", f"{where} ends with {pending} tool call(s) unanswered")


def _order_error(msgs: list[Message], i: int, state: str | None, pending: int, where: str) -> None:
    """The specific reason a turn is out of place (only computed on failure)."""
    m = msgs[i]
    role, at = m["role"], f"{where}[{i}]"
    if role == "system":
        raise RecordError("system_not_first", f"{at} is a system turn after the start")
    if state in (None, "system"):
        raise RecordError("first_turn_not_user", f"{at} is {_describe(m)}; a conversation starts with the user")
    if role == "tool":
        raise RecordError("tool_without_call", f"{at} is a tool result with no open assistant tool call")
    if pending > 0:
        raise RecordError("missing_tool_result", f"{at} is {_describe(m)} but {pending} tool call(s) have no result")
    raise RecordError("roles_out_of_order", f"{at} is {_describe(m)} right after {_describe(msgs[i - 1])}")


# --- flags ----------------------------------------------------------------------------------

_SCRIPTS = (
    ("ja", re.compile(r"[\u3040-\u30ff]")),
    ("ko", re.compile(r"[\uac00-\ud7af]")),
    ("zh", re.compile(r"[\u4e00-\u9fff\u3400-\u4dbf]")),
    ("cyrillic", re.compile(r"[\u0400-\u04ff]")),
    ("arabic", re.compile(r"[\u0600-\u06ff]")),
    ("latin", re.compile(r"[A-Za-z\u00c0-\u024f]")),
)
_SCRIPT_NAMES = [name for name, _ in _SCRIPTS]
# The same character classes as half-open code point ranges: bin k of searchsorted(side="right")
# is the range starting at _SCRIPT_EDGES[k - 1]; odd bins are inside a script's range.
_SCRIPT_EDGES = np.array([0x41, 0x5B, 0x61, 0x7B, 0xC0, 0x250, 0x400, 0x500, 0x600, 0x700, 0x3040, 0x3100, 0x3400, 0x4DC0,
                          0x4E00, 0xA000, 0xAC00, 0xD7B0], dtype=np.uint32)
_SCRIPT_BINS = {"ja": (11,), "ko": (17,), "zh": (13, 15), "cyrillic": (7,), "arabic": (9,), "latin": (1, 3, 5)}


def _script_counts(text: str) -> list[int]:
    """How many characters of `text` each of _SCRIPTS' classes matches, in their order: one
    pass over the code points instead of one regex scan per script."""
    cps = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    per_bin = np.bincount(np.searchsorted(_SCRIPT_EDGES, cps, side="right"), minlength=len(_SCRIPT_EDGES) + 1).tolist()
    return [sum(per_bin[k] for k in _SCRIPT_BINS[name]) for name in _SCRIPT_NAMES]


_CODE_BLOCK = re.compile(r"```.*?(```|$)", re.S)
_ASCII_NON_LETTERS = bytes(c for c in range(128) if not chr(c).isalpha())
_NON_ASCII_LETTERS = bytes(c for c in range(256) if not (c < 128 and chr(c).isalpha()))
_NON_ASCII_BYTES = bytes(range(128, 256))


def script_of(text: str, min_chars: int = 20) -> str | None:
    """The dominant writing system of a turn (zh, ja, ko, latin, …), None if too short to tell.

    Script, not language: it is what a language switch in chat data almost always is
    (an English question answered in Chinese), and it costs microseconds per turn.
    """
    if "```" in text:
        text = _CODE_BLOCK.sub(" ", text)
    if text.isascii():
        if len(text) < min_chars:
            return None
        letters = len(text.encode().translate(None, _ASCII_NON_LETTERS)) if len(text) < 4 * min_chars else min_chars
        return "latin" if letters >= min_chars else None
    raw = text.encode()
    non_ascii_chars = len(text) - len(raw.translate(None, _NON_ASCII_BYTES))
    ascii_letters = len(raw.translate(None, _NON_ASCII_LETTERS))
    if ascii_letters >= min_chars and 3 * non_ascii_chars < ascii_letters:
        return "latin"  # a few curly quotes or accents in English text: no other script can dominate
    best, best_n = None, 0
    for name, n in zip(_SCRIPT_NAMES, _script_counts(text)):
        if name == "zh" and best == "ja":  # kana marks Japanese even when kanji dominate
            continue
        if n > best_n:
            best, best_n = name, n
    weight = 3 if best in ("zh", "ja", "ko") else 1  # one CJK character carries about a word
    return best if best_n * weight >= min_chars else None


_END_OK = set(".!?。！？…)]}>\"'”’」』》*`|~%$_") | set("0123456789")
_END_CUT = set(",;:、，；：-–(")


def looks_truncated(text: str) -> bool:
    """An answer that stops mid-sentence: ends on a comma/colon, or a long prose line stops without punctuation."""
    t = text.rstrip()
    if not t:
        return False
    last = t[-1]
    if last in _END_OK:
        return False
    if last in _END_CUT:
        return True
    last_line = t.rsplit("\n", 1)[-1]
    return len(t) >= 200 and len(last_line) >= 80 and (last.isalpha() or "\u4e00" <= last <= "\u9fff")


def _flags(rec: Record, finals: list[Message], cfg: ValidationConfig) -> list[str]:
    flags = []
    turns = rec.messages + (rec.chosen or []) + (rec.rejected or []) if rec.kind == "preference" else rec.messages
    if cfg.language and not all(m["content"].isascii() for m in turns):  # all-ASCII text is all one script
        first = None
        for m in turns:
            if m["role"] == "user" or m["role"] == "assistant":
                s = script_of(m["content"], cfg.min_language_chars)
                if s is not None:
                    if first is None:
                        first = s
                    elif s != first:
                        flags.append("language_switch")
                        break
    for m in turns:
        c = m["content"]
        if "```" in c and c.count("```") % 2:
            flags.append("unbalanced_code_fence")
            break
    for m in finals:
        if looks_truncated(m["content"]):
            flags.append("truncated_answer")
            break
    return flags
