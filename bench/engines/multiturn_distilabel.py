"""distilabel 1.5.3's Magpie task (n_turns=TURNS) with ClientvLLM: raw completions (/v1/completions)
of the chat template (a local tokenizer directory, nothing from the Hub) plus the "qwen2" pre-query
template `<|im_start|>user\n`. The task is fed N empty rows in batches of BATCH, one
`process` call per batch, as a Pipeline feeds a Task its `input_batch_size` rows (without the
Pipeline's processes and queues); inside a batch every turn is one `generate` over the batch's
active conversations (asyncio.gather, all in flight at once), so BATCH is its concurrency.
Timed: the process calls (after `load`, which reads the tokenizer and asks /v1/models).
Usage: python multiturn_distilabel.py BASE_URL N TURNS BATCH TOKENIZER_DIR
-> prints JSON {wall, cpu, load, rows, complete}"""
import os
import sys
import time
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore")

import orjson  # noqa: E402
from distilabel.models.llms import ClientvLLM  # noqa: E402
from distilabel.steps.tasks import Magpie  # noqa: E402

base, n, turns, batch, tok = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
t0 = time.perf_counter()
llm = ClientvLLM(base_url=base, tokenizer=tok, magpie_pre_query_template="qwen2", max_retries=0, timeout=60,
                 generation_kwargs={"max_new_tokens": 256, "temperature": 1.0})
task = Magpie(llm=llm, n_turns=turns, input_batch_size=batch)
task.load()
load = time.perf_counter() - t0
t, c = time.perf_counter(), time.process_time()
rows = []
for i in range(0, n, batch):
    for out in task.process([{} for _ in range(min(batch, n - i))]):
        rows += out
wall, cpu = time.perf_counter() - t, time.process_time() - c
complete = sum(1 for r in rows if len(r.get("conversation") or []) == 2 * turns
               and all((m.get("content") or "").strip() for m in r["conversation"]))
print(orjson.dumps({"wall": wall, "cpu": cpu, "load": load, "rows": len(rows), "complete": complete,
                    "example": rows[0].get("conversation") if rows else None}).decode())
