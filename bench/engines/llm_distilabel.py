"""distilabel 1.5.3's OpenAILLM (the openai async client) on the same workload.

mode "batches": the way a distilabel Task calls its LLM, one `generate_outputs` per input
batch of CONCURRENCY prompts (asyncio.gather inside the batch), batch after batch.
mode "all": one call with all N prompts at once (no concurrency bound at all).
Usage: python llm_distilabel.py BASE_URL N CONCURRENCY MODE -> prints JSON {wall, ok}"""
import sys
import time

import orjson
from distilabel.models.llms import OpenAILLM

base, n, conc, mode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
llm = OpenAILLM(model="bench", base_url=base, api_key="not-needed", max_retries=0, timeout=60)
llm.load()
inputs = [[{"role": "user", "content": f"Question {i}: say something."}] for i in range(n)]
t = time.perf_counter()
outs = []
if mode == "all":
    outs = llm.generate_outputs(inputs=inputs, num_generations=1, max_new_tokens=16)
else:
    for i in range(0, n, conc):
        outs += llm.generate_outputs(inputs=inputs[i:i + conc], num_generations=1, max_new_tokens=16)
wall = time.perf_counter() - t
ok = sum(1 for o in outs if o and o.get("generations") and o["generations"][0])
print(orjson.dumps({"wall": wall, "ok": ok}).decode())
