"""`ptdata flywheel ...`: serve the logging proxy and feedback API, send feedback."""
from __future__ import annotations

import os
from typing import Annotated, Optional
from urllib.parse import urlparse

import typer

from .cli import JsonOpt, app, counts_text, err, out, print_json, written
from .errors import InputError

fw = typer.Typer(no_args_is_help=True, help="The data flywheel: logging proxy, feedback, mining.")
app.add_typer(fw, name="flywheel")


@fw.command("serve")
def serve_cmd(upstream: Annotated[str, typer.Option(help="The model's OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1.")],
              store: Annotated[str, typer.Option(help="sqlite path or URL, or postgresql://user@host/db.")] = "flywheel.sqlite",
              host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
              port: Annotated[int, typer.Option(help="Port.")] = 8080,
              model_version: Annotated[str, typer.Option(help="Version label stored with every interaction.")] = "",
              no_consent: Annotated[str, typer.Option(help="Without consent: 'metadata' (no content) or 'drop'.")] = "metadata",
              default_consent: Annotated[bool, typer.Option(help="Consent when the request does not say.")] = True,
              max_body_bytes: Annotated[int, typer.Option(help="Larger request bodies get 413.")] = 1 << 20,
              timeout: Annotated[float, typer.Option(help="Upstream timeout in seconds (then 504).")] = 120.0,
              body_timeout: Annotated[float, typer.Option(help="Seconds a client has to send its request body (then 408).")] = 30.0,
              upstream_key_env: Annotated[str, typer.Option(help="Env var with the upstream's API key.")] = "UPSTREAM_API_KEY") -> None:
    """Run the OpenAI-compatible logging proxy and the feedback API. Keys come from the environment:
    PTDATA_FLYWHEEL_WRITE_KEYS and PTDATA_FLYWHEEL_ADMIN_KEYS (comma-separated), PTDATA_FLYWHEEL_SALT
    (without it, user ids are hashed with a random salt the store keeps)."""
    import uvicorn

    from .flywheel.server import config_from_env, make_app

    if no_consent not in ("metadata", "drop"):
        raise InputError("--no-consent must be metadata or drop")
    if not (timeout > 0 and body_timeout > 0):
        raise InputError("--timeout and --body-timeout must be positive seconds")
    try:
        cfg = config_from_env(upstream, store, model_version=model_version, no_consent=no_consent,
                              default_consent=default_consent, max_body_bytes=max_body_bytes, timeout=timeout,
                              body_timeout=body_timeout, upstream_key_env=upstream_key_env)
    except ValueError as e:
        raise InputError(f"{e}: set PTDATA_FLYWHEEL_WRITE_KEYS and PTDATA_FLYWHEEL_ADMIN_KEYS") from None
    from .llm.serve import listen_socket

    sock = listen_socket(host, port)  # before the store is opened: a taken port leaves nothing behind
    asgi, _ = make_app(cfg)
    if not cfg.user_salt:
        err.print("PTDATA_FLYWHEEL_SALT not set: user ids are hashed with the store's own random salt", highlight=False)
    err.print(f"flywheel proxy on http://{host}:{sock.getsockname()[1]}/v1 -> {upstream} (store: {store.split('@')[-1]})",
              highlight=False)
    server = uvicorn.Server(uvicorn.Config(asgi, log_level="warning", access_log=False))
    server.run(sockets=[sock])


def _check_url(url: str) -> str:
    u = urlparse(url)
    if u.scheme not in ("http", "https") or not u.netloc:
        raise InputError(f"--url {url!r}: give the flywheel's base URL, e.g. http://127.0.0.1:8080/v1")
    return url


@fw.command("feedback")
def feedback_cmd(interaction: Annotated[str, typer.Argument(help="Interaction id (X-Interaction-Id).")],
                 url: Annotated[str, typer.Option(help="The flywheel's base URL.")] = "http://127.0.0.1:8080/v1",
                 key_env: Annotated[str, typer.Option(help="Env var holding a write key.")] = "PTDATA_FLYWHEEL_KEY",
                 thumbs: Annotated[Optional[str], typer.Option(help="up or down.")] = None,
                 rating: Annotated[Optional[int], typer.Option(help="1-5.")] = None,
                 correction: Annotated[Optional[str], typer.Option(help="The corrected answer.")] = None,
                 comment: Annotated[Optional[str], typer.Option(help="Free text.")] = None,
                 regenerated: Annotated[Optional[str], typer.Option(help="Id of the regenerated interaction.")] = None,
                 chose_over: Annotated[Optional[str], typer.Option(help="This interaction was chosen over that one.")] = None,
                 event_id: Annotated[Optional[str], typer.Option(help="Idempotency id (a retry with it is not counted twice).")] = None) -> None:
    """Send one feedback event for an interaction."""
    from .flywheel.client import FlywheelClient, FlywheelError

    key = os.environ.get(key_env)
    if not key:
        raise InputError(f"set {key_env} to a write key")
    events = [(k, v) for k, v in (("thumbs", thumbs), ("rating", rating), ("correction", correction),
                                  ("comment", comment), ("regenerate", regenerated)) if v is not None]
    if chose_over:
        events.append(("choice", {"chosen": interaction, "rejected": chose_over}))
    if len(events) != 1:
        raise InputError("give exactly one of --thumbs, --rating, --correction, --comment, --regenerated, --chose-over")
    kind, value = events[0]
    try:
        r = FlywheelClient(_check_url(url), key).feedback(interaction, kind, value, event_id=event_id)
    except (FlywheelError, OSError, ValueError) as e:
        raise InputError(f"feedback not recorded: {e}") from None
    out.print(f"{'recorded' if r.get('created') else 'already recorded'}: {r.get('event_id')}", highlight=False)


StoreOpt = Annotated[str, typer.Option(help="sqlite path or URL, or postgresql://user@host/db.")]


def _when(t: float) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _share(v: float | None) -> str:
    return "-" if v is None else f"{v:.1%}"


@fw.command("mine")
def mine_cmd(version: Annotated[str, typer.Option(help="Name of the new dataset version (immutable).")],
             store: StoreOpt = "flywheel.sqlite",
             out_dir: Annotated[str, typer.Option("--out", "-o", help="Versions are written to OUT/NAME/.")] = "flywheel-data",
             since: Annotated[Optional[str], typer.Option(help="ISO date/time or epoch seconds (default: when the last version was mined).")] = None,
             until: Annotated[Optional[str], typer.Option(help="ISO date/time or epoch seconds (default: now).")] = None,
             min_rating: Annotated[int, typer.Option(help="A rating this high counts as positive.")] = 4,
             pii: Annotated[str, typer.Option(help="redact or reject records with PII.")] = "redact",
             pii_ner: Annotated[bool, typer.Option(help="Also find person names (Presidio + spaCy: the pii-ner extra; slow).")] = False,
             ops: Annotated[Optional[str], typer.Option(help="YAML file with a list of curation ops to run on mined records.")] = None,
             as_json: JsonOpt = False) -> None:
    """Turn the store into a dataset version: SFT records and preference pairs, scrubbed and deduplicated.
    A version name is 1-64 letters, digits, '.', '_' or '-' starting with a letter or digit. Exit 4 when
    nothing new was mined (no version is written)."""
    from pathlib import Path

    from .flywheel.mine import MineConfig, check_version_name, mine, parse_since
    from .flywheel.store import Store
    from .pipeline.recipe import load_ops_file

    check_version_name(version)
    t0 = parse_since(since, "--since") if since else None
    t1 = parse_since(until, "--until") if until else None

    op_list = load_ops_file(ops) if ops else []
    if pii not in ("redact", "reject"):
        raise InputError("--pii must be redact or reject")
    m = mine(Store(store), version, Path(out_dir), t0, t1, MineConfig(min_rating=min_rating, ops=op_list, pii=pii, pii_ner=pii_ner))
    c = m["counts"]
    vdir = Path(out_dir) / version
    if as_json:
        print_json({**m, "command": "flywheel mine", "kept": c["sft"] + c["pairs"],
                    "files": {"dir": written(vdir) if m["written"] else None,
                              **{n: written(vdir / f"{n}.jsonl") if m["written"] else None for n in ("sft", "pairs", "rejects")},
                              "manifest": written(vdir / "manifest.json") if m["written"] else None}})
    if not m["written"]:
        err.print(f"nothing new: {c['interactions']:,} interactions since {_when(m['since']) if m['since'] else 'the start'} gave no record "
                  f"(unused: {counts_text(c['unused_interactions']) or 'none'}; dropped: {counts_text(c['dropped_records']) or 'none'}); "
                  "no version written", highlight=False)
        raise typer.Exit(4)
    err.print(f"version {version} (parent {m['parent'] or 'none'}): {c['interactions']:,} interactions -> {c['sft']:,} sft, "
              f"{c['pairs']:,} pairs", highlight=False)
    err.print(f"  by source: {counts_text(c['by_source']) or 'none'}\n"
              f"  unused interactions: {counts_text(c['unused_interactions']) or 'none'}\n"
              f"  dropped records: {counts_text(c['dropped_records']) or 'none'}\n  written to {vdir}", highlight=False)


@fw.command("versions")
def versions_cmd(store: StoreOpt = "flywheel.sqlite", as_json: JsonOpt = False) -> None:
    """List dataset versions with their counts and parents."""
    from datetime import datetime, timezone

    from .flywheel.mine import list_versions
    from .flywheel.store import Store

    vs = list_versions(Store(store))
    if as_json:  # the listing is stdout's human form: the object takes its place
        print_json({"command": "flywheel versions", "versions": vs})
        return
    for v in vs:
        when = datetime.fromtimestamp(v["created_at"], timezone.utc).strftime("%Y-%m-%d %H:%M")
        c = v["counts"]
        out.print(f"{v['name']:<20} {when}  parent={v['parent'] or '-':<12} sft={c.get('sft', 0):,} pairs={c.get('pairs', 0):,} "
                  f"interactions={c.get('interactions', 0):,}", highlight=False, soft_wrap=True)


@fw.command("report")
def report_cmd(store: StoreOpt = "flywheel.sqlite",
               out_path: Annotated[str, typer.Option("--out", "-o", help="HTML file to write.")] = "flywheel-report.html",
               as_json: JsonOpt = False) -> None:
    """An HTML page with the loop per model version: interactions, feedback, satisfaction, corrections, records mined."""
    from pathlib import Path

    from .flywheel.report import write_report
    from .flywheel.store import Store

    s = write_report(Store(store), Path(out_path))
    for mv, m in s["model_versions"].items():
        err.print(f"{mv}: {m['interactions']:,} interactions, feedback rate {_share(m['feedback_rate'])}, thumbs-up share "
                  f"{_share(m['thumbs_up_share'])}, mean rating {'-' if m['mean_rating'] is None else format(m['mean_rating'], '.2f')}, "
                  f"correction rate {_share(m['correction_rate'])}", highlight=False)
    err.print(f"report: {out_path}", highlight=False)
    if as_json:
        print_json({**s, "command": "flywheel report", "files": {"report": written(out_path)}})


@fw.command("simulate")
def simulate_cmd(data: Annotated[list[str], typer.Argument(help="Datasets to replay (SFT rows answer; preference rows "
                                                           "give up/down answers).")],
                 store: StoreOpt = "flywheel.sqlite",
                 model_version: Annotated[str, typer.Option(help="Model version label for these interactions.")] = "sim-v1",
                 limit: Annotated[Optional[int], typer.Option(help="Rows per dataset.")] = None,
                 start: Annotated[int, typer.Option(help="First row of each dataset.")] = 0, as_json: JsonOpt = False) -> None:
    """Replay datasets through the proxy against a loopback upstream with scripted feedback."""
    from pathlib import Path

    from .flywheel.simulate import simulate

    done = []
    for d in data:
        c = simulate(Path(d), store, model_version, limit, start)
        feedback = {k.removeprefix("feedback_"): v for k, v in c.items() if k.startswith("feedback_")}
        err.print(f"{d}: {c['records']:,} rows, {c['plans']:,} replayed, {c.get('calls', 0):,} model calls, "
                  f"feedback: {counts_text(feedback) or 'none'}", highlight=False)
        done.append({"data": d, "records": c["records"], "plans": c["plans"], "calls": c.get("calls", 0), "feedback": feedback})
    if as_json:
        print_json({"command": "flywheel simulate", "model_version": model_version, "datasets": done})
