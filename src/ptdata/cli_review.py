"""`ptdata review ...`: human review queues, the review web app, agreement reports, export."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .cli import JsonOpt, app, counts_text, err, out, print_json, written
from .errors import InputError

rv = typer.Typer(no_args_is_help=True, help="Human review: queues, the review web app, agreement, export.")
app.add_typer(rv, name="review")

StoreOpt = Annotated[str, typer.Option(help="The review store: sqlite path or URL, or postgresql://user@host/db.")]
DEFAULT_STORE = "review.sqlite"


def _store(url: str):
    from .review.store import ReviewStore

    return ReviewStore(url)


@rv.command("add-reviewer")
def add_reviewer_cmd(name: Annotated[str, typer.Argument(help="Reviewer name (letters, digits, '.', '_', '-').")],
                     role: Annotated[str, typer.Option(help="reviewer or admin.")] = "reviewer",
                     store: StoreOpt = DEFAULT_STORE, as_json: JsonOpt = False) -> None:
    """Create a reviewer and print their token (once: only its hash is stored)."""
    token = _store(store).add_reviewer(name, role)
    if as_json:
        print_json({"command": "review add-reviewer", "name": name, "role": role, "token": token})
        return
    err.print(f"{role} {name} added; the token (shown once, give it to them):", highlight=False)
    out.print(token, highlight=False)


@rv.command("create")
def create_cmd(name: Annotated[str, typer.Argument(help="Queue name (letters, digits, '.', '_', '-').")],
               data: Annotated[Optional[Path], typer.Option(help="Any file ptdata reads (SFT, pairs, distillation labels...).")] = None,
               flywheel_version: Annotated[Optional[str], typer.Option(help="A mined flywheel version to review.")] = None,
               flywheel_store: Annotated[str, typer.Option(help="The flywheel store (with --flywheel-version).")] = "flywheel.sqlite",
               flywheel_out: Annotated[Path, typer.Option(help="Where the flywheel's versions are (mine --out).")] = Path("flywheel-data"),
               rubric: Annotated[Optional[Path], typer.Option(help="Rubric YAML (default: 1-5 helpfulness, truthfulness, "
                                                              "harmlessness, instruction following; labels; accept/reject; note; edit; choice).")] = None,
               overlap: Annotated[int, typer.Option(help="Reviewers per record.")] = 1,
               reviewers: Annotated[Optional[str], typer.Option(help="Comma-separated reviewer names (default: every reviewer).")] = None,
               limit: Annotated[Optional[int], typer.Option(min=1, help="At most this many records.")] = None,
               store: StoreOpt = DEFAULT_STORE, as_json: JsonOpt = False) -> None:
    """Make a review queue from a file or a flywheel version; each record goes to --overlap reviewers."""
    from .review.queue import create_queue
    from .review.rubric import load_rubric

    if (data is None) == (flywheel_version is None):
        raise InputError("give --data FILE or --flywheel-version V (one of them)")
    rb = load_rubric(rubric)
    names = [n.strip() for n in reviewers.split(",") if n.strip()] if reviewers is not None else None
    if names == []:  # an empty list is not "every reviewer": that is leaving the option out
        raise InputError(f"--reviewers {reviewers!r}: no reviewer names (leave the option out for every reviewer)")
    fw = {"store": flywheel_store, "version": flywheel_version, "out": str(flywheel_out)} if flywheel_version else None
    made = create_queue(_store(store), name, rb, overlap, names, data=data, flywheel=fw, limit=limit)
    err.print(f"queue {name}: {made['items']:,} records ({counts_text(made['kinds'])}), overlap {overlap}, rubric "
              f"{rb.name} {made['rubric_version']}", highlight=False)
    err.print("  per reviewer: " + ", ".join(f"{k} {v:,}" for k, v in made["reviewers"].items()), highlight=False)
    if made["rejected"]:
        err.print(f"  not queued (unreadable records): {counts_text(made['rejected'])}", highlight=False)
    if as_json:
        print_json({**made, "command": "review create", "records_in": made["items"] + sum(made["rejected"].values()),
                    "kept": made["items"], "rejected": sum(made["rejected"].values()), "reasons": made["rejected"]})


@rv.command("list")
def list_cmd(store: StoreOpt = DEFAULT_STORE, as_json: JsonOpt = False) -> None:
    """Queues with their progress, and the reviewers."""
    s = _store(store)
    qs = s.queues()
    people = s.reviewers()
    rows = [{"name": q["name"], "items": q["items"], "overlap": q["overlap"], "answers": q["done"], "assigned": q["total"],
             "kinds": q["kinds"], "reviewers": {p["name"]: {"done": p["done"], "total": p["total"]} for p in s.progress(q["id"])}}
            for q in qs]
    if as_json:
        print_json({"command": "review list", "queues": rows,
                    "reviewers": [{"name": p["name"], "role": p["role"], "active": p["active"]} for p in people]})
        return
    for q in rows:
        per = ", ".join(f"{n} {v['done']:,}/{v['total']:,}" for n, v in q["reviewers"].items())
        out.print(f"{q['name']:<24} {q['items']:>8,} records  overlap {q['overlap']}  answered {q['answers']:,}/{q['assigned']:,}  ({per})",
                  highlight=False, soft_wrap=True)
    out.print("reviewers: " + (", ".join(f"{p['name']} ({p['role']})" for p in people) or "none"), highlight=False, soft_wrap=True)


@rv.command("serve")
def serve_cmd(store: StoreOpt = DEFAULT_STORE,
              host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
              port: Annotated[int, typer.Option(min=0, max=65535, help="Port (0: any free one).")] = 8090,
              max_body_bytes: Annotated[int, typer.Option(min=1, help="Larger request bodies get 413.")] = 1 << 20,
              secure_cookies: Annotated[bool, typer.Option(help="Mark cookies Secure (behind an HTTPS proxy).")] = False) -> None:
    """Serve the review web app (log in with a token from add-reviewer)."""
    import uvicorn

    from .llm.serve import listen_socket
    from .review.app import make_app

    sock = listen_socket(host, port)  # before the store is opened: a taken port leaves nothing behind
    asgi, _ = make_app(_store(store), max_body_bytes=max_body_bytes, secure_cookies=secure_cookies)
    err.print(f"review app on http://{host}:{sock.getsockname()[1]}/ (store: {store.split('@')[-1]})", highlight=False)
    uvicorn.Server(uvicorn.Config(asgi, log_level="warning", access_log=False)).run(sockets=[sock])


@rv.command("report")
def report_cmd(name: Annotated[str, typer.Argument(help="Queue name.")], store: StoreOpt = DEFAULT_STORE,
               out_path: Annotated[Optional[Path], typer.Option("--out", "-o", help="Also write the agreement page as HTML here.")] = None,
               as_json: JsonOpt = False) -> None:
    """Agreement per aspect: Krippendorff's alpha (ordinal) and Cohen's kappa, judge vs human, position bias, progress."""
    from .review.report import queue_stats, write_report

    s = _store(store)
    if s.queue(name) is None:
        raise InputError(f"no queue {name!r} (ptdata review list shows them)")
    st = write_report(s, name, out_path) if out_path else queue_stats(s, name)
    f = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    err.print(f"queue {name}: {st['items_answered']:,} of {st['items']:,} records answered ({st['answers']:,} answers)", highlight=False)
    for a, v in st["aspects"].items():
        h, j = v["human"], v["judge"] or {}
        err.print(f"  {a:<24} human alpha {f(h['alpha'])} kappa {f(h['kappa'])} ({h['units']:,} records)"
                  + (f"   judge alpha {f(j.get('alpha'))} kappa {f(j.get('kappa'))} ({j.get('pairs', 0):,} pairs)" if j else ""),
                  highlight=False)
    for label, v in (("decision", st["decision"]), ("pair choice", st["choice"])):
        if v:
            err.print(f"  {label:<24} alpha {f(v['alpha'])} kappa {f(v['kappa'])} ({v['units']:,} records)", highlight=False)
    pb = st["position_bias"]
    if pb["choices"]:
        err.print(f"  position bias: left picked in {f(pb['left_share'])} of {pb['choices']:,} choices", highlight=False)
    err.print("  progress: " + ", ".join(f"{p['reviewer']} {p['done']:,}/{p['total']:,}" for p in st["progress"]), highlight=False)
    if out_path:
        err.print(f"report: {out_path}", highlight=False)
    if as_json:
        print_json({**st, "command": "review report", "files": {"report": written(out_path)}})


@rv.command("export")
def export_cmd(name: Annotated[str, typer.Argument(help="Queue name.")], store: StoreOpt = DEFAULT_STORE,
               out_dir: Annotated[Path, typer.Option("--out", "-o", help="Versions are written to OUT/VERSION/.")] = Path("review-data"),
               version: Annotated[Optional[str], typer.Option(help="Version name (default: QUEUE-N).")] = None,
               flywheel_store: Annotated[Optional[str], typer.Option(help="The flywheel store to send the decisions to "
                                                                     "(default: the one the queue was made from).")] = None,
               no_feedback: Annotated[bool, typer.Option("--no-feedback", help="Do not send feedback events to the flywheel store.")] = False,
               as_json: JsonOpt = False) -> None:
    """Write the answers as an immutable dataset version (accepted records with human scores,
    corrections, chosen pairs; rejects). Exit 4 when nothing was reviewed yet."""
    from .review.export import export

    m = export(_store(store), name, out_dir, version, flywheel_store, to_flywheel=not no_feedback)
    c = m["counts"]
    vdir = Path(m["dir"]) if m.get("written") else None
    if as_json:
        print_json({**{k: v for k, v in m.items() if k != "rubric"}, "command": "review export", "records_in": c["reviewed"],
                    "kept": c.get("sft", 0) + c.get("pairs", 0) + c.get("prompts", 0), "rejected": c["rejects"],
                    "files": {n: written(vdir / f"{n}.jsonl") if vdir else None for n in ("sft", "pairs", "prompts", "rejects")}
                    | {"manifest": written(vdir / "manifest.json") if vdir else None, "dir": written(vdir)}})
    if not m.get("written"):
        err.print(f"nothing to export: {c['reviewed']:,} of {c['items']:,} records reviewed; no version written", highlight=False)
        raise typer.Exit(4)
    err.print(f"version {m['version']} of queue {name}: {c['reviewed']:,} reviewed records -> {c.get('sft', 0):,} sft, "
              f"{c.get('pairs', 0):,} pairs, {c['rejects']:,} rejects ({c.get('corrections', 0):,} corrections)", highlight=False)
    if m.get("flywheel_feedback"):
        fb = dict(m["flywheel_feedback"])
        n = fb.pop("events")
        err.print(f"  flywheel feedback events: {n:,} ({counts_text(fb) or 'none'})", highlight=False)
    err.print(f"  written to {vdir}", highlight=False)


