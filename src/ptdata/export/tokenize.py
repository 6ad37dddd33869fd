"""Chat-template tokenization with assistant-only labels that are right for any template.

`return_assistant_tokens_mask` needs `{% generation %}` markers, which the stock templates of
Llama-3.1, Qwen3 and Gemma-3 lack (the mask then comes back all zeros). Here turn boundaries
are found in token space: the conversation is rendered and tokenized by the template itself
(never re-tokenized with added special tokens, so no double BOS), each assistant turn's start
is the length of the rendered prefix with the generation prompt, its end the length of the
rendered prefix through that turn, cut after the turn's end-of-turn token. Every prefix must
be a token prefix of the whole conversation; a template for which it is not (one that
rewrites earlier turns, as Qwen3 does with reasoning) gets the record rejected with a reason.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError, RecordError
from ..records import Record

IGNORE = -100
END_TOKENS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "</s>", "<|endoftext|>", "<|end_of_text|>")


def load_tokenizer(path: str | Path):
    """A tokenizer with a chat template: `qwen` (Qwen2's, built offline from the qwen-tokenizer
    package), or a local Hugging Face tokenizer directory, as `tokenizer.save_pretrained(DIR)`
    writes it (nothing is downloaded)."""
    if str(path) == "qwen":
        from ..tokenizers import qwen_tokenizer

        return qwen_tokenizer()
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise InputError("tokenized export needs transformers: pip install 'ptdata[trl]'") from None
    p = Path(path)
    if not p.is_dir():
        raise InputError(f"{p}: not a tokenizer directory (give `qwen`, or a directory saved with "
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


class ChatEncoder:
    """Encode sft records into input_ids / labels with one tokenizer and its template."""

    def __init__(self, tokenizer: Any, train_on: str = "all", max_length: int | None = None,
                 truncation: str = "reject", template_kwargs: dict | None = None) -> None:
        if train_on not in ("all", "last"):
            raise InputError("train_on must be all or last")
        if truncation not in ("reject", "truncate", "drop_turns"):
            raise InputError("truncation must be reject, truncate or drop_turns")
        self.tok, self.train_on, self.max_length, self.truncation = tokenizer, train_on, max_length, truncation
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

    def spans(self, messages: list[dict], tools: list | None, full: list[int]) -> list[tuple[int, int, int]]:
        """(start, end, message index) of every assistant turn, in token positions of `full`."""
        out = []
        for k, m in enumerate(messages):
            if m["role"] != "assistant":
                continue
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

    def encode(self, rec: Record) -> Encoded:
        if rec.kind != "sft":
            other = "--to trl-kto" if "label" in rec.meta else "--to trl-dpo" if rec.kind == "preference" else ""
            raise RecordError("wrong_kind", f"tokenized export takes sft records only, not {rec.kind} records"
                              + (f"; export them with {other}" if other else ""))
        tools = rec.meta.get("tools")
        messages = [dict(m) for m in rec.messages]
        enc = self._encode(messages, tools)
        if self.max_length is None or len(enc.input_ids) <= self.max_length:
            return enc
        return self._shorten(messages, tools, enc)

    def _encode(self, messages: list[dict], tools: list | None) -> Encoded:
        clean = [{k: v for k, v in m.items() if k != "weight"} for m in messages]
        full = self.render(clean, tools)
        labels = [IGNORE] * len(full)
        spans = self.spans(clean, tools, full)
        last = spans[-1][2] if spans else -1
        for start, end, k in spans:
            if messages[k].get("weight", 1) == 0 or (self.train_on == "last" and k != last):
                continue
            labels[start:end] = full[start:end]
        if not any(x != IGNORE for x in labels):
            raise RecordError("nothing_to_train", "no assistant token is trained (weights, train_on or template)")
        return Encoded(full, labels)

    def _shorten(self, messages: list[dict], tools: list | None, enc: Encoded) -> Encoded:
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
        head = [m for m in messages[:1] if m["role"] == "system"]
        body = messages[len(head):]
        while True:
            nxt = next((i for i in range(1, len(body)) if body[i]["role"] == "user"), None)
            if nxt is None:
                raise RecordError("too_long", f"{n} tokens > {limit} even with only the last exchange")
            body = body[nxt:]
            e = self._encode(head + body, tools)
            if len(e.input_ids) <= limit:
                return e
