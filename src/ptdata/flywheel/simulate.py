"""Show the loop on one machine: replay a dataset through the proxy against a loopback upstream
that answers with the dataset's own responses, and send scripted feedback.

SFT rows (e.g. Alpaca): the upstream answers with the row's response; feedback by position:
6 in 10 thumbs up, 1 a rating of 5, 1 a rating of 2, 1 a correction, 1 nothing.
Preference rows (e.g. HH-RLHF): the prompt is asked twice; the upstream answers `chosen`
then `rejected`; the first gets thumbs up, the second thumbs down, and every third pair also
a "chose the first over the second" event.
"""
from __future__ import annotations

import asyncio
import secrets
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from ..llm import Request, Result, Sample
from ..llm.serve import LoopbackServer, make_app as make_upstream
from ..reader import read_records
from ..records import Record
from .server import ServiceConfig, make_app
from .store import Store


@dataclass
class Plan:
    messages: list[dict]
    answers: list[str]  # what the upstream says, in order
    feedback: list[list[tuple[str, Any]]]  # per call: (kind, value); value "@0" names call 0's interaction


def feedback_plan(rec: Record, i: int) -> Plan | None:
    if rec.kind == "sft" and rec.messages[-1]["role"] == "assistant":
        msgs, ans = rec.messages[:-1], rec.messages[-1]["content"]
        k = i % 10
        fb = ([("thumbs", "up")] if k < 6 else [("rating", 5)] if k == 6 else [("rating", 2)] if k == 7
              else [("correction", ans.rstrip() + "\n\n(Edited by the user for accuracy.)")] if k == 8 else [])
        return Plan(msgs, [ans], [fb])
    if rec.kind == "preference" and rec.chosen and rec.rejected:
        ch = "\n\n".join(m["content"] for m in rec.chosen if m["role"] == "assistant")
        rj = "\n\n".join(m["content"] for m in rec.rejected if m["role"] == "assistant")
        if not ch.strip() or not rj.strip() or rec.messages[-1]["role"] != "user":
            return None
        second = [("thumbs", "down")]
        first = [("thumbs", "up")] + ([("choice", "@1")] if i % 3 == 0 else [])
        return Plan(rec.messages, [ch, rj], [first, second])
    return None


def _key(msgs: list[dict]) -> bytes:
    return orjson.dumps([[m["role"], m["content"]] for m in msgs])


async def _replay(plans: list[Plan], base: str, key: str, model_version: str, concurrency: int) -> dict:
    sem = asyncio.Semaphore(concurrency)
    h = {"Authorization": f"Bearer {key}", "X-PTData-Model-Version": model_version}
    counts = defaultdict(int)
    async with aiohttp.ClientSession(headers=h) as s:
        async def one(p: Plan) -> None:
            async with sem:
                ids = []
                for _ in p.answers:  # one call per scripted answer, in order
                    async with s.post(base + "/chat/completions", json={"model": "sim", "messages": p.messages}) as r:
                        await r.read()
                        ids.append(r.headers["X-Interaction-Id"])
                        counts["calls"] += 1
                for n, evs in enumerate(p.feedback):
                    for kind, value in evs:
                        if kind == "choice":
                            body = {"interaction_id": ids[n], "kind": "choice",
                                    "value": {"chosen": ids[n], "rejected": ids[int(value[1:])]}}
                        else:
                            body = {"interaction_id": ids[n], "kind": kind, "value": value}
                        async with s.post(base + "/feedback", json=body) as r:
                            await r.read()
                            counts[f"feedback_{kind}"] += 1
        await asyncio.gather(*(one(p) for p in plans))
    return dict(counts)


def simulate(data: Path | list[Record], store_url: str, model_version: str = "sim-v1", limit: int | None = None,
             start: int = 0, concurrency: int = 16) -> dict:
    """Replay `data` (a file in any format, or records) through a proxy in front of a scripted
    upstream; everything lands in the store at `store_url`."""
    recs = [r for r, _ in read_records(data)] if isinstance(data, Path) else list(data)
    recs = [r for r in recs if r is not None][start:(start + limit) if limit else None]
    plans = [p for i, r in enumerate(recs, start=start) if (p := feedback_plan(r, i)) is not None]
    queue: dict[bytes, list[str]] = defaultdict(list)
    for p in plans:
        queue[_key(p.messages)].extend(p.answers)
    served: dict[bytes, int] = defaultdict(int)

    def upstream(req: Request) -> Result:
        k = _key(req.messages)
        answers = queue[k]
        text = answers[served[k] % len(answers)] if answers else "I do not know."
        served[k] += 1
        return Result(samples=[Sample(text, "stop")], prompt_tokens=sum(len(m["content"].split()) for m in req.messages),
                      completion_tokens=len(text.split()))

    write, admin = secrets.token_hex(16), secrets.token_hex(16)
    with LoopbackServer(make_upstream(upstream, model_name="sim-upstream")) as up:
        cfg = ServiceConfig(upstream=up.base_url, store_url=store_url, write_keys=[write], admin_keys=[admin],
                            model_version=model_version)
        asgi, app = make_app(cfg, Store(store_url))
        with LoopbackServer(asgi) as proxy:
            counts = asyncio.run(_replay(plans, proxy.base_url, write, model_version, concurrency))
        app.state.store.close()
    return {"records": len(recs), "plans": len(plans), **counts}
