"""Model calls: one interface (`make_llm(config).generate(requests)`), three backends."""
from .base import Backend, LLMConfig, LLMError, Request, Result, Sample, Sampling, Usage, cache_key, make_llm

__all__ = ["Backend", "LLMConfig", "LLMError", "Request", "Result", "Sample", "Sampling", "Usage", "cache_key",
           "make_llm"]
