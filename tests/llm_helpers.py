"""Test helpers for the model-calls layer: a tiny random Qwen2 model built from a config
(no download), and scripted responders for the loopback OpenAI-compatible server."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

from ptdata.llm import Request, Result, Sample


def build_tiny_model(directory: Path) -> Path:
    """A 2-layer, 64-wide Qwen2 with random weights and the real Qwen tokenizer."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from ptdata.tokenizers import qwen_tokenizer

    if (directory / "config.json").exists():
        return directory
    tok = qwen_tokenizer()
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                      eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"), pad_token_id=tok.pad_token_id,
                      tie_word_embeddings=True)
    model = Qwen2ForCausalLM(cfg)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory


def scripted(answer: Callable[[str, Request], str | list[str]]) -> Callable[[Request], Result]:
    """A responder that answers from a function of (last user message, request)."""
    def respond(req: Request) -> Result:
        user = next((m["content"] for m in reversed(req.messages) if m["role"] == "user"), "")
        out = answer(user, req)
        texts = out if isinstance(out, list) else [out] * req.sampling.n
        return Result(samples=[Sample(t, "stop") for t in texts], prompt_tokens=len(user.split()),
                      completion_tokens=sum(len(t.split()) for t in texts))
    return respond


def between(text: str, start: str, end: str) -> str:
    m = re.search(re.escape(start) + r"(.*?)" + re.escape(end), text, re.S)
    return m.group(1).strip() if m else ""
