"""vLLM's offline engine, for GPU machines (optional: `pip install vllm`)."""
from __future__ import annotations

from .base import Backend, Done, LLMConfig, LLMError, Request, Result, Sample


class VLLMBackend(Backend):
    def __init__(self, config: LLMConfig) -> None:
        super().__init__(config)
        try:
            import vllm
        except ImportError:
            raise LLMError("the vllm backend needs vLLM and a GPU: pip install vllm (or serve the model with "
                           "`vllm serve` and use the openai backend)") from None
        self.vllm = vllm
        self.engine = vllm.LLM(model=config.model, seed=config.seed or 0)

    def _compute(self, requests: list[Request], done: Done) -> None:
        # one engine call per distinct sampling setting: vLLM batches the prompts itself
        groups: dict = {}
        for i, r in enumerate(requests):
            groups.setdefault((r.sampling, r.prompt is not None), []).append(i)
        for (s, raw), idx in groups.items():
            params = self.vllm.SamplingParams(n=s.n, temperature=s.temperature, top_p=s.top_p, max_tokens=s.max_tokens,
                                              seed=s.seed, stop=list(s.stop) if s.stop else None,
                                              logprobs=0 if s.logprobs else None)
            outs = (self.engine.generate([requests[i].prompt for i in idx], params, use_tqdm=False) if raw
                    else self.engine.chat([requests[i].messages for i in idx], params, use_tqdm=False))
            for i, o in zip(idx, outs):
                samples = []
                for c in o.outputs:
                    lp = ([float(d[t].logprob) for d, t in zip(c.logprobs, c.token_ids)] if s.logprobs and c.logprobs
                          else None)
                    samples.append(Sample(c.text, c.finish_reason, lp))
                done(i, Result(samples=samples, prompt_tokens=len(o.prompt_token_ids or []),
                                completion_tokens=sum(len(c.token_ids) for c in o.outputs)))
