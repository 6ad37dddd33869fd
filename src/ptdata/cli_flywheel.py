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
             eval_share: Annotated[float, typer.Option(help="Share of conversations held out for evaluation (eval.jsonl; "
                                                       "never mined into training data, in any version).")] = 0.1,
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
    m = mine(Store(store), version, Path(out_dir), t0, t1, MineConfig(min_rating=min_rating, ops=op_list, pii=pii, pii_ner=pii_ner,
                                                                     eval_share=eval_share))
    c = m["counts"]
    vdir = Path(out_dir) / version
    if as_json:
        print_json({**m, "command": "flywheel mine", "kept": c["sft"] + c["pairs"],
                    "files": {"dir": written(vdir) if m["written"] else None,
                              **{n: written(vdir / f"{n}.jsonl") if m["written"] else None for n in ("sft", "pairs", "eval", "rejects")},
                              "manifest": written(vdir / "manifest.json") if m["written"] else None,
                              "card": written(vdir / "CARD.md") if m["written"] else None}})
    if not m["written"]:
        err.print(f"nothing new: {c['interactions']:,} interactions since {_when(m['since']) if m['since'] else 'the start'} gave no record "
                  f"(unused: {counts_text(c['unused_interactions']) or 'none'}; dropped: {counts_text(c['dropped_records']) or 'none'}); "
                  "no version written", highlight=False)
        raise typer.Exit(4)
    err.print(f"version {version} (parent {m['parent'] or 'none'}): {c['interactions']:,} interactions -> {c['sft']:,} sft, "
              f"{c['pairs']:,} pairs", highlight=False)
    err.print(f"  held out for evaluation: {c['eval']:,} prompts from {c['held_out_conversations']:,} conversations "
              f"(eval.jsonl)", highlight=False)
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
                  f"eval={c.get('eval', 0):,} interactions={c.get('interactions', 0):,}", highlight=False, soft_wrap=True)


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


# ---- the loop over time: evaluate a candidate, record deploys, diff versions, dataset cards ----------------
EXIT_GATE = 5  # `flywheel eval --gate`: the candidate's win rate is below the gate (README, Exit codes)


def _label(v: str, what: str) -> str:
    import re

    if not v or len(v) > 200 or re.search(r"[\x00-\x1f\x7f]", v):
        raise InputError(f"{what} {v[:40]!r}: a label of 1-200 printable characters")
    return v


def _open_store(url: str, what: str):
    """An existing store: a path that is not there would be made as an empty store."""
    from pathlib import Path

    from .flywheel.store import Store

    if "://" not in url and not Path(url).exists():
        raise InputError(f"{what} {url}: no such file (the store `flywheel mine` read)")
    return Store(url)


def _model(url: str | None, model: str | None, sets: list[str] | None, api_key_env: str | None, what: str) -> dict:
    from .cli_llm import llm_settings

    if not url or not model:
        raise InputError(f"{what}: give both the URL and the model name")
    d = {"temperature": 0, "cache_dir": None}  # replay deterministically, and never reuse another model's answers
    d.update(llm_settings(model, None, _check_base(url, what), api_key_env, sets, None))
    return d


def _check_base(url: str, what: str) -> str:
    u = urlparse(url)
    if u.scheme not in ("http", "https") or not u.netloc:
        raise InputError(f"{what} {url!r}: give an OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1")
    return url


@fw.command("eval")
def eval_cmd(source: Annotated[str, typer.Argument(help="A version folder (its eval.jsonl), or a store (every held-out "
                                                   "interaction in it).")],
             candidate: Annotated[Optional[str], typer.Option(help="The candidate model's OpenAI-compatible base URL.")] = None,
             candidate_model: Annotated[Optional[str], typer.Option(help="The candidate's served model name.")] = None,
             candidate_version: Annotated[Optional[str], typer.Option(help="Its model-version label (default: the model name).")] = None,
             current: Annotated[Optional[str], typer.Option(help="The current model's base URL (or --from-store).")] = None,
             current_model: Annotated[Optional[str], typer.Option(help="The current model's served name.")] = None,
             current_version: Annotated[Optional[str], typer.Option(help="Its model-version label (default: the model name; "
                                                                    "--from-store: the stored answers' version).")] = None,
             from_store: Annotated[bool, typer.Option(help="Compare with the stored answers instead of asking a current model.")] = False,
             judge_url: Annotated[Optional[str], typer.Option(help="The judge's base URL.")] = None,
             judge_model: Annotated[Optional[str], typer.Option(help="The judge's served model name.")] = None,
             aspect: Annotated[Optional[list[str]], typer.Option(help="Also have the judge rate both answers on this aspect "
                                                                 "(repeatable): per-aspect deltas.")] = None,
             gate: Annotated[Optional[float], typer.Option(help="Exit 5 when the win rate is below this (0-1).")] = None,
             store: Annotated[Optional[str], typer.Option(help="Store the result here (default: SOURCE when it is a store).")] = None,
             limit: Annotated[Optional[int], typer.Option(help="At most this many held-out prompts.")] = None,
             retries: Annotated[int, typer.Option(help="Re-asks after a malformed judge answer.")] = 2,
             api_key_env: Annotated[Optional[str], typer.Option("--api-key-env", help="Env var with the API key (all three models).")] = None,
             llm: Annotated[Optional[list[str]], typer.Option("--llm", help="A setting for all three models as key=value "
                                                              "(concurrency=32, max_tokens=1024, timeout=120, cache_dir=...).")] = None,
             judge_llm: Annotated[Optional[list[str]], typer.Option(help="A judge-only setting as key=value.")] = None,
             as_json: JsonOpt = False) -> None:
    """Judge a candidate model against the current one on the held-out prompts; exit 5 below --gate.

    The held-out prompts go to the candidate and to the current model (or the stored answers are used); a judge
    compares each pair in both orders (a win only when both agree): wins, ties, losses, the win rate with a 95%
    Wilson interval, per-aspect deltas, the worst regressions. Logs carry counts, never prompt text."""
    from pathlib import Path

    from .flywheel.evaluate import evaluate, load_store_eval, load_version_eval, record
    from .llm import make_llm

    if from_store == bool(current or current_model):
        raise InputError("give --current URL --current-model M, or --from-store (one of them)")
    if gate is not None and not 0 <= gate <= 1:
        raise InputError(f"--gate {gate}: a win rate in [0, 1]")
    if limit is not None and limit < 1:
        raise InputError("--limit must be at least 1")
    if retries < 0:
        raise InputError("--retries must be 0 or more")
    cand_cfg = _model(candidate, candidate_model, llm, api_key_env, "--candidate/--candidate-model")
    judge_cfg = _model(judge_url, judge_model, (llm or []) + (judge_llm or []), api_key_env, "--judge-url/--judge-model")
    cur_cfg = None if from_store else _model(current, current_model, llm, api_key_env, "--current/--current-model")
    src = Path(source)
    rec_store = None
    if src.is_dir():
        eval_set, items = load_version_eval(src)
        if store:
            rec_store = _open_store(store, "--store")
    else:
        rec_store = _open_store(store or source, "the store")
        eval_set, items = "store", load_store_eval(rec_store)
    items = items[:limit] if limit else items
    cand_v = _label(candidate_version or candidate_model, "--candidate-version")
    if from_store:
        seen: dict[str, int] = {}
        for it in items:
            seen[it.model_version or "(none)"] = seen.get(it.model_version or "(none)", 0) + 1
        cur_v = current_version or (max(seen, key=seen.get) if seen else "(stored)")
    else:
        cur_v = current_version or current_model
    cur_v = _label(cur_v, "--current-version")
    backends = [make_llm(c) for c in (cand_cfg, judge_cfg) + ((cur_cfg,) if cur_cfg else ())]
    try:
        s = evaluate(items, backends[0], backends[1], backends[2] if cur_cfg else None,
                     sampling=backends[0].config.sampling(), judge_sampling=backends[1].config.sampling(),
                     aspects=aspect or [], retries=retries, gate=gate)
    finally:
        for b in backends:
            b.close()
    summary = {"command": "flywheel eval", "eval_set": eval_set, "candidate_version": cand_v, "current_version": cur_v,
               "current": "stored answers" if from_store else current_model, "judge_model": judge_model, **s}
    if rec_store is not None:
        summary["evaluation_id"] = record(rec_store, s, eval_set, cand_v, cur_v, judge_model)
    rate = "-" if s["win_rate"] is None else f"{s['win_rate']:.3f} (95% Wilson CI {s['ci_low']:.3f}-{s['ci_high']:.3f})"
    err.print(f"{cand_v} vs {cur_v} on {s['n']:,} held-out prompts of {eval_set}: {s['wins']:,} wins, {s['ties']:,} ties "
              f"({s['inconsistent']:,} of them the two orders disagreeing), {s['losses']:,} losses; win rate {rate}",
              highlight=False, markup=False)
    left = {k: s[k] for k in ("candidate_errors", "current_errors", "unjudged") if s[k]}
    if left:
        err.print(f"  not judged / errors: {counts_text(left)}", highlight=False, markup=False)
    for a, d in (s.get("aspects") or {}).items():
        err.print(f"  {a}: {d['delta']:+.2f} (candidate - current, 1-5 scale)", highlight=False, markup=False)
    err.print(f"  result {'stored: ' + summary['evaluation_id'] if rec_store is not None else 'not stored (give --store)'}",
              highlight=False, markup=False)
    if as_json:
        print_json(summary)
    else:  # the report itself (prompts and answers of the worst regressions) is stdout, never the log
        for k, w in enumerate(s["worst_regressions"], 1):
            out.print(f"--- regression {k}: interaction {w['interaction_id']}\n[prompt] {w['prompt'][-1]['content']}\n"
                      f"[candidate] {w['candidate']}\n[current] {w['current']}"
                      + (f"\n[reference] {w['reference']}" if w["reference"] else ""), highlight=False, markup=False,
                      soft_wrap=True)
    if gate is not None:
        err.print(f"gate {gate:g}: {'pass' if s['passed'] else 'FAIL'}", highlight=False, markup=False)
        if not s["passed"]:
            raise typer.Exit(EXIT_GATE)


@fw.command("deploy")
def deploy_cmd(model_version: Annotated[str, typer.Option(help="The model-version label it serves under (the proxy's "
                                                          "--model-version).")],
               trained_on: Annotated[str, typer.Option(help="The dataset version it was trained on.")],
               store: StoreOpt = "flywheel.sqlite", as_json: JsonOpt = False) -> None:
    """Record which dataset version a model version was trained on (the report and the cards show it)."""
    s = _open_store(store, "--store")
    done = s.deploy(_label(model_version, "--model-version"), trained_on)
    err.print(f"{model_version}: trained on {trained_on} ({'recorded' if done == 'created' else 'already recorded'})",
              highlight=False, markup=False)
    if as_json:
        print_json({"command": "flywheel deploy", "model_version": model_version, "trained_on": trained_on,
                    "created": done == "created"})


@fw.command("diff")
def diff_cmd(a: Annotated[str, typer.Argument(help="The first version folder.")],
             b: Annotated[str, typer.Argument(help="The second version folder.")],
             as_json: JsonOpt = False) -> None:
    """Records added, removed and changed between two dataset version folders, per file.

    A record's key is its prompt (the hash of the prompt messages: roles and normalized text); changed: the same
    prompt with other content."""
    from pathlib import Path

    from .flywheel.diff import diff_versions

    d = diff_versions(Path(a), Path(b))
    if as_json:
        print_json({"command": "flywheel diff", **d})
        return
    out.print(f"{'file':<8} {'added':>8} {'removed':>8} {'changed':>8} {'unchanged':>10}   records {Path(a).name} -> {Path(b).name}",
              highlight=False, markup=False)
    for name, f in d["files"].items():
        out.print(f"{name:<8} {f['added']:>8,} {f['removed']:>8,} {f['changed']:>8,} {f['unchanged']:>10,}   "
                  f"{f['records_a']:,} -> {f['records_b']:,}", highlight=False, markup=False)


@fw.command("card")
def card_cmd(version: Annotated[str, typer.Option(help="The dataset version.")], store: StoreOpt = "flywheel.sqlite",
             out_dir: Annotated[str, typer.Option("--out", "-o", help="Where the versions are (mine --out).")] = "flywheel-data",
             as_json: JsonOpt = False) -> None:
    """Write a version's CARD.md again, with the evaluations of the model versions trained on it.

    Only the card changes; the version's data files never do."""
    from pathlib import Path

    from .flywheel.card import write_card

    path = write_card(_open_store(store, "--store"), Path(out_dir), version)
    err.print(f"card: {path}", highlight=False, markup=False)
    if as_json:
        print_json({"command": "flywheel card", "version": version, "files": {"card": written(path)}})


# ---- import traces logged by other tools (Langfuse, LiteLLM, OpenTelemetry GenAI, OpenAI logs) ----------------
@fw.command("import")
def import_cmd(files: Annotated[list[str], typer.Argument(help="Export files (JSON or JSON Lines).")],
               source: Annotated[str, typer.Option("--from", help="langfuse, litellm, otel or openai-log.")],
               store: StoreOpt = "flywheel.sqlite",
               consent: Annotated[str, typer.Option(help="all, none, or field:NAME (a metadata field per record; "
                                                    "missing: no consent). Without consent no text is stored.")] = "all",
               model_version: Annotated[str, typer.Option(help="Model-version label stored with every interaction.")] = "",
               score_map: Annotated[Optional[list[str]], typer.Option(help="A Langfuse score name's feedback kind as "
                                                                      "NAME=KIND (thumbs, rating, comment, correction; repeatable).")] = None,
               rejects: Annotated[Optional[str], typer.Option(help="Rejects file (default: import.rejects.jsonl beside "
                                                              "the first input).")] = None,
               as_json: JsonOpt = False) -> None:
    """Import traces other tools logged into the store, as the proxy would have stored them (ids derived from
    the source's: a re-import stores nothing new; users salted-hashed; no consent, no text). Every record is
    stored, already present, or rejected with a reason and file:line. Exit 4 when nothing was importable."""
    from pathlib import Path

    import orjson

    from .flywheel.importers import FEEDBACK_KINDS, SOURCES, ImportConfig, import_into
    from .flywheel.store import Store

    if source not in SOURCES:
        raise InputError(f"--from {source!r}: one of {', '.join(SOURCES)}")
    if consent not in ("all", "none") and not (consent.startswith("field:") and len(consent) > 6):
        raise InputError(f"--consent {consent!r}: all, none or field:NAME")
    smap: dict[str, str] = {}
    for s in score_map or []:
        name, _, kind = s.partition("=")
        if not name or kind not in FEEDBACK_KINDS:
            raise InputError(f"--score-map {s!r}: NAME=KIND with KIND one of {', '.join(FEEDBACK_KINDS)}")
        smap[name] = kind
    paths = [Path(f) for f in files]
    for p in paths:
        if not p.is_file():
            raise InputError(f"{p}: no such file")
        try:
            p.open("rb").close()
        except OSError as e:
            raise InputError(f"{p}: cannot read it: {e.strerror}") from None
    rej_path = Path(rejects) if rejects else paths[0].parent / "import.rejects.jsonl"
    if any(rej_path.resolve() == p.resolve() for p in paths):
        raise InputError(f"--rejects {rej_path}: that is an input")
    if model_version:
        _label(model_version, "--model-version")
    st = Store(store)
    salt = os.environ.get("PTDATA_FLYWHEEL_SALT", "") or st.salt()
    r = import_into(st, source, paths, ImportConfig(salt=salt, consent=consent, model_version=model_version, score_map=smap))
    st.close()
    rej_path.write_bytes(b"".join(orjson.dumps({"source": source, **x}) + b"\n" for x in r["rejects"]))  # empty: none
    s, a = r["stored"], r["already_present"]
    err.print(f"{source}: in {r['in']:,} · stored {s['interactions']:,} interactions, {s['feedback']:,} feedback events · "
              f"already present {a['interactions'] + a['feedback']:,} · rejected {r['rejected']:,}"
              + (f" ({counts_text(r['reasons'])}; {rej_path})" if r["rejected"] else ""), highlight=False, markup=False)
    if as_json:
        print_json({"command": "flywheel import", **{k: v for k, v in r.items() if k != "rejects"},
                    "files": {"rejects": written(rej_path)}})
    if not any(s.values()) and not any(a.values()):
        raise typer.Exit(4)
