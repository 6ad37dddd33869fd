"""Floor for recipe (a): one process, orjson + a hash set, no normalization, no rejects file."""
import sys

import orjson

src, dst = sys.argv[1], sys.argv[2]
seen = set()
kept = 0
with open(src, "rb") as f, open(dst, "wb") as out:
    for line in f:
        r = orjson.loads(line)
        text = f"{r['instruction']}\n{r['input']}\n{r['output']}"
        if not 10 <= len(text) <= 10000:
            continue
        h = hash(text)
        if h in seen:
            continue
        seen.add(h)
        out.write(orjson.dumps(r) + b"\n")
        kept += 1
print(f"kept={kept}")
