"""ptdata's OpenAI-compatible backend: N requests at a given concurrency, no cache.
Usage: python llm_ptdata.py BASE_URL N CONCURRENCY  -> prints JSON {wall, ok}"""
import sys
import time

import orjson

from ptdata.llm import Request, make_llm

base, n, conc = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
llm = make_llm({"model": "bench", "base_url": base, "concurrency": conc, "cache_dir": None, "max_tokens": 16})
reqs = [Request([{"role": "user", "content": f"Question {i}: say something."}], llm.config.sampling()) for i in range(n)]
t = time.perf_counter()
res = llm.generate(reqs)
wall = time.perf_counter() - t
print(orjson.dumps({"wall": wall, "ok": sum(r.ok for r in res), "retries": llm.usage.retries}).decode())
