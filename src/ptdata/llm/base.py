"""The one LLM interface every model-using step goes through.

`generate(requests) -> results`, in order, one result per request, never an exception for a
request that failed: a failed request comes back as a `Result` with an `error` reason, so a
step can reject that record with the reason and lose nothing. Backends share the disk cache
and the usage accounting defined here; they only implement `_compute`.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields
from typing import Annotated, Any, Callable, Literal

import orjson
import xxhash
from annotated_types import Gt, Interval

from ..errors import InputError
from ..params import Count, NonNegative, Positive, check

Progress = Callable[[int], None]  # called with the number of requests just finished
Done = Callable[[int, "Result"], None]  # a backend calls it with each request's index and result as it arrives

# Called with a backend's Usage each time a request ends (answered, failed, or found in the cache):
# the CLI shows it as a live line (done, failed, retried, tokens, rate). Set in the process that
# runs the model step; worker processes reset it (see pipeline.local._init_worker).
on_result: Callable[["Usage"], None] | None = None


class LLMError(InputError):
    """A configuration or installation problem: the step cannot start."""


@dataclass(frozen=True)
class Sampling:
    """Sampling parameters, OpenAI names. `logprobs` asks for per-token log-probs."""

    n: int = 1
    temperature: float = 0.7
    top_p: float = 1.0
    max_tokens: int = 512
    seed: int | None = None
    stop: tuple[str, ...] | None = None
    logprobs: bool = False

    def __post_init__(self) -> None:
        if self.n < 1:
            raise LLMError(f"n must be >= 1, got {self.n}")
        if not 0 <= self.temperature <= 2:
            raise LLMError(f"temperature must be in [0, 2], got {self.temperature}")
        if self.max_tokens < 1:
            raise LLMError(f"max_tokens must be >= 1, got {self.max_tokens}")


@dataclass
class Request:
    """One chat request, or with `prompt` one raw text completion (the text goes to the model as
    it is, no chat template: Magpie's user-prefix trick needs that). `attempt` > 0 re-asks the same
    question (e.g. after a malformed judge answer): it is part of the cache key, so a retry is a
    new call, and a rerun repeats it."""

    messages: list[dict]
    sampling: Sampling = field(default_factory=Sampling)
    attempt: int = 0
    tag: str = ""  # the caller's label (record id, step), for logs; not part of the cache key
    prompt: str | None = None


@dataclass
class Sample:
    text: str
    finish_reason: str | None = None
    logprobs: list[float] | None = None  # one per generated token, natural log
    tokens: list[str] | None = None

    @property
    def mean_logprob(self) -> float | None:
        return sum(self.logprobs) / len(self.logprobs) if self.logprobs else None

    @property
    def min_logprob(self) -> float | None:
        return min(self.logprobs) if self.logprobs else None

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class Result:
    samples: list[Sample] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False
    error: str | None = None  # machine-readable reason: timeout, rate_limited, server_error, http_4xx, bad_response, connection
    detail: str = ""
    attempts: int = 1

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def text(self) -> str:
        return self.samples[0].text if self.samples else ""


@dataclass
class Usage:
    """Token and call accounting for one backend over its lifetime."""

    requests: int = 0
    cache_hits: int = 0
    http_calls: int = 0
    retries: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, r: Result) -> None:
        self.requests += 1
        if r.cached:
            self.cache_hits += 1
            return
        self.prompt_tokens += r.prompt_tokens
        self.completion_tokens += r.completion_tokens
        self.failures += r.error is not None

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class LLMConfig:
    """Where the model is and how to call it. Comes from a recipe or the CLI; nothing is
    hard-coded. The key is read from the environment variable `api_key_env` (default
    OPENAI_API_KEY) at call time and is never stored in the config, the cache or a log."""

    backend: Literal["openai", "transformers", "vllm"] = "openai"
    model: str = ""
    base_url: str = "http://127.0.0.1:8000/v1"
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: Positive = 16
    timeout: Annotated[float, Gt(0)] = 60.0
    max_retries: Count = 5
    backoff: NonNegative = 0.5  # first retry waits about this long, doubling each time (with jitter)
    backoff_max: NonNegative = 30.0
    stream: bool = False
    cache_dir: str | None = ".ptdata-cache"
    device: str = "cpu"  # transformers backend
    temperature: Annotated[float, Interval(ge=0, le=2)] = 0.7
    top_p: Annotated[float, Interval(gt=0, le=1)] = 1.0
    max_tokens: Positive = 512
    seed: Count | None = None
    logprobs: bool = False

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "LLMConfig":
        d = dict(d or {})
        known = {f.name for f in fields(cls)}
        if "api_key" in d:
            raise LLMError("put the API key in an environment variable and name it with api_key_env; "
                           "a key in a recipe would be written to logs and manifests")
        unknown = set(d) - known
        if unknown:
            raise LLMError(f"llm: unknown setting(s) {sorted(unknown)}; known: {sorted(known)}")
        try:
            cfg = cls(**check(cls, d, "llm"))  # each setting's type and range (the annotations above)
        except LLMError:
            raise
        except InputError as e:
            raise LLMError(str(e)) from None
        if not cfg.model:
            raise LLMError("llm: `model` is required (a served model name, or a local model directory)")
        return cfg

    def sampling(self, **over: Any) -> Sampling:
        base = dict(temperature=self.temperature, top_p=self.top_p, max_tokens=self.max_tokens,
                    seed=self.seed, logprobs=self.logprobs)
        base.update({k: v for k, v in over.items() if v is not None})
        if isinstance(base.get("stop"), list):
            base["stop"] = tuple(base["stop"])
        return Sampling(**base)

    def api_key(self) -> str | None:
        return os.environ.get(self.api_key_env) if self.api_key_env else None


def cache_key(model: str, req: Request) -> str:
    """Content address of a request: the model, the messages, the sampling and the attempt."""
    payload = {"model": model, "messages": req.messages, "sampling": asdict(req.sampling), "attempt": req.attempt}
    if req.prompt is not None:  # only then: chat requests keep the keys they always had
        payload["prompt"] = req.prompt
    return xxhash.xxh3_128_hexdigest(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS))


class Backend:
    """Shared behaviour: cache lookup, compute what is missing, store successes, count usage."""

    def __init__(self, config: LLMConfig) -> None:
        from .cache import DiskCache

        self.config = config
        self.usage = Usage()
        self.cache = DiskCache(config.cache_dir) if config.cache_dir else None

    @property
    def model(self) -> str:
        return self.config.model

    def generate(self, requests: list[Request], progress: Progress | None = None) -> list[Result]:
        results: list[Result | None] = [None] * len(requests)
        keys = [cache_key(self.model, r) for r in requests]
        todo = []
        for i, k in enumerate(keys):
            hit = self.cache.get(k) if self.cache is not None else None
            if hit is not None:
                results[i] = _result_from_json(hit)
                self.usage.add(results[i])
            else:
                todo.append(i)
        if on_result is not None and len(todo) < len(requests):
            on_result(self.usage)
        if progress and len(todo) < len(requests):
            progress(len(requests) - len(todo))
        if todo:
            def done(j: int, res: Result) -> None:
                """Each answer is cached as it arrives: an interrupted step keeps what it paid for."""
                i = todo[j]
                results[i] = res
                if self.cache is not None and res.ok:
                    self.cache.put(keys[i], _result_to_json(res))
                self.usage.add(res)
                if on_result is not None:
                    on_result(self.usage)
                if progress:
                    progress(1)

            self._compute([requests[i] for i in todo], done)
        return results  # type: ignore[return-value]

    def _compute(self, requests: list[Request], done: Done) -> None:
        """Answer every request, calling `done(index, result)` for each as soon as it is known."""
        raise NotImplementedError

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()


def _result_to_json(r: Result) -> bytes:
    return orjson.dumps({"samples": [s.to_dict() for s in r.samples], "prompt_tokens": r.prompt_tokens,
                         "completion_tokens": r.completion_tokens})


def _result_from_json(b: bytes) -> Result:
    d = orjson.loads(b)
    return Result(samples=[Sample(**s) for s in d["samples"]], prompt_tokens=d["prompt_tokens"],
                  completion_tokens=d["completion_tokens"], cached=True, attempts=0)


def make_llm(config: LLMConfig | dict) -> Backend:
    """The backend a config names. Heavy backends import their libraries only here."""
    cfg = config if isinstance(config, LLMConfig) else LLMConfig.from_dict(config)
    if cfg.backend == "openai":
        from .openai_http import OpenAIBackend

        return OpenAIBackend(cfg)
    if cfg.backend == "transformers":
        from .hf import TransformersBackend

        return TransformersBackend(cfg)
    from .vllm_engine import VLLMBackend

    return VLLMBackend(cfg)


__all__ = ["Backend", "LLMConfig", "LLMError", "Request", "Result", "Sample", "Sampling", "Usage", "make_llm",
           "cache_key"]
