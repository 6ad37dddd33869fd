"""CLI for the model steps: generate, evolve, rewrite, judge, pairs, and llm-serve.

Each step is a one-op recipe run by the local executor, so it gets what every run gets:
rejects with reasons, stats.json (with model calls, cache hits, retries and tokens), resume.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import orjson
import typer
import yaml

from .cli import JsonOpt, app, counts_text, err, exit_if_nothing, print_json, run_recipe, run_summary, written
from .errors import InputError
from .ops.base import Op

InputsArg = Annotated[list[Path], typer.Argument(help="Input files (any supported format).")]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Output directory (kept.jsonl, rejects.jsonl, stats.json).")]
FromOpt = Annotated[Optional[str], typer.Option("--from", help="Input format (detected when omitted).")]
ModelOpt = Annotated[Optional[str], typer.Option("--model", help="Served model name, or a local model dir (transformers).")]
BackendOpt = Annotated[Optional[str], typer.Option("--backend", help="openai (default), transformers or vllm.")]
BaseUrlOpt = Annotated[Optional[str], typer.Option("--base-url", help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1.")]
KeyEnvOpt = Annotated[Optional[str], typer.Option("--api-key-env", help="Environment variable holding the API key.")]
LLMSetOpt = Annotated[Optional[list[str]], typer.Option("--llm", help="Any model setting as key=value: concurrency=64, "
                                                        "temperature=0, max_tokens=1024, seed=1, logprobs=true, cache_dir=…")]
LLMFileOpt = Annotated[Optional[Path], typer.Option("--llm-config", help="YAML file with the model settings.")]
WorkersOpt = Annotated[int, typer.Option(help="Worker processes (each with its own `concurrency` requests in flight).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]


def llm_settings(model, backend, base_url, api_key_env, sets, config_file) -> dict[str, Any]:
    """Model settings from a YAML file, then --llm key=value, then the named flags."""
    d: dict[str, Any] = {}
    if config_file:
        try:
            loaded = yaml.safe_load(Path(config_file).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as e:
            raise InputError(f"{config_file}: cannot read model settings ({e})") from None
        if not isinstance(loaded, dict):
            raise InputError(f"{config_file}: model settings must be a mapping")
        d.update(loaded.get("llm", loaded))
    for item in sets or []:
        if "=" not in item:
            raise InputError(f"--llm {item!r} must look like key=value")
        k, _, v = item.partition("=")
        d[k.strip()] = yaml.safe_load(v)
    for k, v in (("model", model), ("backend", backend), ("base_url", base_url), ("api_key_env", api_key_env)):
        if v is not None:
            d[k] = v
    return d


def run_step(op: Op, inputs: list[Path], out: Path, fmt: str | None, workers: int, quiet: bool, name: str,
             allow_empty: bool = False, as_json: bool = False):
    """A model step as a one-op recipe; exit 4 when it kept nothing (unless the caller goes on).
    `as_json`: print the run's summary object (the caller that goes on prints its own)."""
    from .pipeline import Input, Output, Recipe

    recipe = Recipe(inputs=[Input(str(p), format=fmt) for p in inputs], ops=[op],
                    output=Output(dir=str(out), report=False), name=name, batch_size=256)
    result = run_recipe(recipe, workers, quiet)
    if as_json:
        print_json(run_summary(result, op.name))
    if not allow_empty:
        exit_if_nothing(result.records_in, result.kept)
    return result


@app.command("generate")
def generate_cmd(inputs: InputsArg, out: OutOpt, n: Annotated[int, typer.Option(help="Responses per prompt.")] = 4,
                 mode: Annotated[str, typer.Option(help="candidates (for pairs) or sft (one record per answer).")] = "candidates",
                 keep_original: Annotated[bool, typer.Option(help="An sft record's own answer becomes a candidate.")] = False,
                 fmt: FromOpt = None, model: ModelOpt = None, backend: BackendOpt = None, base_url: BaseUrlOpt = None,
                 api_key_env: KeyEnvOpt = None, llm: LLMSetOpt = None, llm_config: LLMFileOpt = None,
                 workers: WorkersOpt = 1, quiet: QuietOpt = False, as_json: JsonOpt = False) -> None:
    """Sample N responses per prompt from a teacher model."""
    from .ops.llm import Generate

    op = Generate(llm=llm_settings(model, backend, base_url, api_key_env, llm, llm_config), n=n, mode=mode,
                  keep_original=keep_original)
    run_step(op, inputs, out, fmt, workers, quiet, "generate", as_json=as_json)


@app.command("evolve")
def evolve_cmd(inputs: InputsArg, out: OutOpt, rounds: Annotated[int, typer.Option(help="Evolution rounds.")] = 1,
               method: Annotated[Optional[list[str]], typer.Option(help="constraints, deepen, concretize, reasoning, "
                                                                  "complicate_input, breadth (repeatable; default all).")] = None,
               fmt: FromOpt = None, model: ModelOpt = None, backend: BackendOpt = None, base_url: BaseUrlOpt = None,
               api_key_env: KeyEnvOpt = None, llm: LLMSetOpt = None, llm_config: LLMFileOpt = None,
               workers: WorkersOpt = 1, quiet: QuietOpt = False, as_json: JsonOpt = False) -> None:
    """Evol-Instruct: make prompts more complex (in depth) or new (in breadth), answer them, eliminate failures."""
    from .ops.llm import Evolve

    op = Evolve(llm=llm_settings(model, backend, base_url, api_key_env, llm, llm_config), methods=method or [], rounds=rounds)
    run_step(op, inputs, out, fmt, workers, quiet, "evolve", as_json=as_json)


@app.command("rewrite")
def rewrite_cmd(inputs: InputsArg, out: OutOpt, fmt: FromOpt = None, model: ModelOpt = None, backend: BackendOpt = None,
                base_url: BaseUrlOpt = None, api_key_env: KeyEnvOpt = None, llm: LLMSetOpt = None,
                llm_config: LLMFileOpt = None, workers: WorkersOpt = 1, quiet: QuietOpt = False,
                as_json: JsonOpt = False) -> None:
    """Rewrite answers for accuracy and knowledge density (a worse rewrite is not taken)."""
    from .ops.llm import Rewrite

    op = Rewrite(llm=llm_settings(model, backend, base_url, api_key_env, llm, llm_config))
    run_step(op, inputs, out, fmt, workers, quiet, "rewrite", as_json=as_json)


@app.command("judge")
def judge_cmd(inputs: InputsArg, out: OutOpt,
              judge: Annotated[str, typer.Option(help="aspects, deita, pairwise or consistency.")] = "aspects",
              aspect: Annotated[Optional[list[str]], typer.Option(help="Aspect to rate (repeatable).")] = None,
              retries: Annotated[int, typer.Option(help="Re-asks after a malformed answer.")] = 2,
              drop_inconsistent: Annotated[bool, typer.Option(help="consistency: reject self-contradicting conversations.")] = False,
              fmt: FromOpt = None, model: ModelOpt = None, backend: BackendOpt = None, base_url: BaseUrlOpt = None,
              api_key_env: KeyEnvOpt = None, llm: LLMSetOpt = None, llm_config: LLMFileOpt = None,
              workers: WorkersOpt = 1, quiet: QuietOpt = False, as_json: JsonOpt = False) -> None:
    """Rate responses with an AI judge; malformed answers are re-asked, then rejected with the reason."""
    from .ops.llm import Judge

    kw: dict[str, Any] = {"aspects": aspect} if aspect else {}
    op = Judge(llm=llm_settings(model, backend, base_url, api_key_env, llm, llm_config), judge=judge, retries=retries,
               drop_inconsistent=drop_inconsistent, **kw)
    run_step(op, inputs, out, fmt, workers, quiet, f"judge-{judge}", as_json=as_json)


def _topic_seeds(paths: list[Path], out: Path) -> Path:
    """Topic lines (plain text, or JSONL rows with a "topic") as ptdata prompt records with
    `meta.topic`, written beside the run (OUT.topics.jsonl) so the run reads them like any input."""
    from .records import Record

    rows, where = [], []
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise InputError(f"{path}: cannot read topics ({e})") from None
        for n, line in enumerate(text.splitlines(), 1):
            t = line.strip()
            if t.startswith("{"):
                try:
                    t = orjson.loads(t).get("topic")
                except (orjson.JSONDecodeError, AttributeError):
                    raise InputError(f"{path}:{n}: not a JSON object with a \"topic\" string") from None
                if not isinstance(t, str):
                    raise InputError(f"{path}:{n}: \"topic\" must be a string")
                t = t.strip()
            if t:
                rows.append(Record("prompt", [{"role": "user", "content": t}], meta={"topic": t}))
                where.append(f"{path}:{n}")
    if not rows:
        raise InputError(f"{', '.join(map(str, paths))}: no topics")
    seeds = out.with_name(out.name + ".topics.jsonl")
    seeds.parent.mkdir(parents=True, exist_ok=True)
    seeds.write_bytes(b"".join(orjson.dumps({**r.to_dict(), "meta": {**r.meta, "topic_source": w}}) + b"\n"
                               for r, w in zip(rows, where)))
    return seeds


def _weights(items: list[str] | None, what: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for item in items or []:
        k, sep, v = item.partition("=")
        try:
            out[k.strip()] = float(v) if sep else 1.0
        except ValueError:
            raise InputError(f"{what} {item!r} must look like name=weight") from None
    return out


@app.command("multiturn")
def multiturn_cmd(inputs: InputsArg, out: OutOpt,
                  turns: Annotated[int, typer.Option(help="User turns in a finished conversation, the seed's included.")] = 3,
                  min_turns: Annotated[int, typer.Option(help="A conversation cut back below this is rejected.")] = 2,
                  method: Annotated[str, typer.Option(help="simulate (a user model with a persona and a follow-up "
                                                      "style), magpie (raw completion of the template's user prefix) "
                                                      "or shard (an instruction revealed over the turns).")] = "simulate",
                  topics: Annotated[bool, typer.Option(help="The inputs are topics (one per line, or JSONL with "
                                                       "\"topic\"), not records.")] = False,
                  personas: Annotated[Optional[Path], typer.Option(help="Personas file (PersonaHub JSONL or one per line).")] = None,
                  style: Annotated[Optional[list[str]], typer.Option(help="Follow-up style and weight, e.g. challenge=2 "
                                                                     "(repeatable; clarify, deeper, apply, challenge, "
                                                                     "switch; default all equally).")] = None,
                  seed: Annotated[int, typer.Option(help="Draws personas and styles reproducibly.")] = 0,
                  system: Annotated[str, typer.Option(help="The assistant's system prompt.")] = "",
                  assistant_model: Annotated[Optional[str], typer.Option(help="The teacher (default: --model).")] = None,
                  user_model: Annotated[Optional[str], typer.Option(help="The user simulator (default: the assistant).")] = None,
                  judge_model: Annotated[Optional[str], typer.Option(help="The judges (default: the assistant).")] = None,
                  user_base_url: Annotated[Optional[str], typer.Option(help="The user model's endpoint (default: --base-url).")] = None,
                  judge_base_url: Annotated[Optional[str], typer.Option(help="The judges' endpoint (default: --base-url).")] = None,
                  user_llm: Annotated[Optional[list[str]], typer.Option(help="A user-model setting as key=value "
                                                                        "(e.g. temperature=1.0).")] = None,
                  magpie_template: Annotated[str, typer.Option(help="magpie over HTTP: the user model's tokenizer "
                                                               "(qwen, qwen2.5, qwen3 or a directory).")] = "",
                  embeddings: Annotated[bool, typer.Option(help="Embedding checks (similarity to the history, drift "
                                                           "from the seed).")] = True,
                  coherence_judge: Annotated[bool, typer.Option(help="Judge each new user turn's coherence.")] = True,
                  consistency_judge: Annotated[bool, typer.Option(help="Judge each new answer's consistency.")] = True,
                  fmt: FromOpt = None, model: ModelOpt = None, backend: BackendOpt = None, base_url: BaseUrlOpt = None,
                  api_key_env: KeyEnvOpt = None, llm: LLMSetOpt = None, llm_config: LLMFileOpt = None,
                  workers: WorkersOpt = 1, quiet: QuietOpt = False, as_json: JsonOpt = False) -> None:
    """Extend seeds into multi-turn conversations: a simulated user, a teacher, checks on every turn."""
    from .ops.llm import MultiTurn

    assistant = llm_settings(assistant_model or model, backend, base_url, api_key_env, llm, llm_config)
    user = {k: v for k, v in (("model", user_model), ("base_url", user_base_url)) if v}
    user.update(llm_settings(None, None, None, None, user_llm, None))
    judge = {k: v for k, v in (("model", judge_model), ("base_url", judge_base_url)) if v}
    op = MultiTurn(llm=assistant, user_llm=user, judge_llm=judge, method=method, turns=turns, min_turns=min_turns,
                   styles=_weights(style, "--style"), personas=str(personas) if personas else "", seed=seed,
                   system=system, magpie_template=magpie_template, embeddings=embeddings,
                   coherence_judge=coherence_judge, consistency_judge=consistency_judge)
    if topics:
        inputs, fmt = [_topic_seeds(list(inputs), out)], "ptdata"
    run_step(op, inputs, out, fmt, workers, quiet, "multiturn", as_json=as_json)


# names `pairs --to` took before it took `ptdata export`'s (one meaning per flag): the name to use now
OLD_PAIR_TARGETS = {"kto": "trl-kto"}


def pair_targets(to: list[str] | None) -> list[str]:
    """`pairs --to` takes `ptdata export --to`'s names: the targets (in order, once each) that take pairs."""
    from .export import GROUPS, TARGETS, target_names, wrong_kind_hint

    names: list[str] = []
    for t in to or []:
        if t in OLD_PAIR_TARGETS:
            raise InputError(f"--to {t}: use --to {OLD_PAIR_TARGETS[t]} (pairs --to takes ptdata export's target names)")
        if t == "tokenized":
            raise InputError(f"--to tokenized takes sft records, not pairs: use {wrong_kind_hint(t, 'preference')}")
        if t not in TARGETS and t not in GROUPS:
            raise InputError(f"--to {t!r}: choose from {', '.join(n for n in target_names() if n != 'tokenized')}")
        takers = [n for n in ([t] if t in TARGETS else GROUPS[t]) if "preference" in TARGETS[n].takes]
        if not takers:
            raise InputError(f"--to {t} takes {' and '.join(TARGETS[t].takes)} records, not pairs: use {wrong_kind_hint(t, 'preference')}")
        names += [n for n in takers if n not in names]
    return names


@app.command("pairs")
def pairs_cmd(inputs: InputsArg, out: OutOpt,
              strategy: Annotated[str, typer.Option(help="best_worst, best_vs_rest or pairwise.")] = "best_worst",
              min_margin: Annotated[float, typer.Option(help="Minimum score gap chosen - rejected.")] = 1.0,
              aspect: Annotated[Optional[list[str]], typer.Option(help="Aspects averaged into the score (repeatable).")] = None,
              to: Annotated[Optional[list[str]], typer.Option(help="Also export, as `ptdata export --to` names them (repeatable): "
                                                              "trl-dpo, trl-kto, openai-pref, llamafactory-ranking, or the "
                                                              "groups trl, llamafactory, all; to OUT/pairs.TARGET.jsonl (.json).")] = None,
              fmt: FromOpt = None, quiet: QuietOpt = False, as_json: JsonOpt = False) -> None:
    """Build preference pairs from rated candidates or pairwise verdicts; validate; report biases; export."""
    from .export import TARGETS, export_format
    from .ops.llm import Pairs
    from .preference import bias_report
    from .reader import read_records

    targets = pair_targets(to)
    res = run_step(Pairs(strategy=strategy, min_margin=min_margin, aspects=aspect or []), inputs, out, fmt, 1, quiet, "pairs",
                   allow_empty=True)
    judged = [r for p in inputs for r, _ in read_records(p) if r is not None] if strategy == "pairwise" else None
    pairs = [r for r, _ in read_records(res.kept_path) if r is not None] if res.kept else []
    report = bias_report(pairs, judged)
    (out / "bias.json").write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    L = report["length"]
    if pairs:
        err.print(f"bias: chosen longer in {L['chosen_longer_share']:.0%} of pairs (median length ratio {L['median_ratio']})"
                  + (f"; the judge picked the first position in {report['judge_position']['first_position_share']:.0%}"
                     if (report.get("judge_position") or {}).get("first_position_share") is not None else ""), highlight=False)
    for w in report["warnings"]:
        err.print(f"warning: {w}", highlight=False)
    exports = {}
    for target in targets if pairs else []:
        name = f"pairs.{target}{Path(TARGETS[target].file).suffix}"
        c = export_format([Path(res.kept_path)], out, target, names={target: name}, rejects=out / f"pairs.{target}.rejects.jsonl",
                          check_dir=False)
        rows = c["targets"].get(target, {}).get("rows", 0)
        err.print(f"{target}: {out / name} ({c['written']:,} pairs" + (f" as {rows:,} rows" if rows != c["written"] else "")
                  + (f", {c['rejected']:,} not representable ({counts_text(c['reasons'])})" if c["rejected"] else "") + ")"
                  + (f", dataset_info: {c['dataset_info']}" if c.get("dataset_info") else ""), highlight=False)
        exports[target] = {"written": c["written"], "rows": rows, "rejected": c["rejected"], "reasons": c["reasons"],
                           "file": written(out / name), "rejects": written(c["rejects"]), "dataset_info": c.get("dataset_info")}
    err.print(f"bias report: {out / 'bias.json'}", highlight=False)
    if as_json:
        summary = run_summary(res, "pairs")
        summary["files"]["bias"] = written(out / "bias.json")
        print_json({**summary, "strategy": strategy, "pairs": len(pairs), "bias": report, "exports": exports})
    exit_if_nothing(res.records_in, len(pairs), "pair")


@app.command("llm-serve")
def llm_serve_cmd(model: Annotated[Path, typer.Argument(help="Local model directory (config, weights, tokenizer).")],
                  port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 8000,
                  host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
                  api_key_env: Annotated[Optional[str], typer.Option(help="Require this env var's key as Bearer token.")] = None,
                  name: Annotated[str, typer.Option(help="Model name to report.")] = "ptdata-local") -> None:
    """Serve a local transformers model as an OpenAI-compatible /v1/chat/completions (for demos and tests)."""
    import os

    import uvicorn

    from .llm import make_llm
    from .llm.serve import listen_socket, make_app

    key = os.environ.get(api_key_env) if api_key_env else None
    if api_key_env and not key:
        raise InputError(f"--api-key-env {api_key_env}: the variable is not set")
    sock = listen_socket(host, port)  # before the model loads: a port in use is one error line
    backend = make_llm({"backend": "transformers", "model": str(model), "cache_dir": None})
    err.print(f"serving {model} as {name!r} on http://{host}:{sock.getsockname()[1]}/v1", highlight=False)
    server = uvicorn.Server(uvicorn.Config(make_app(backend.complete, model_name=name, api_key=key,
                                                    score_prompt=backend.score_prompt), log_level="warning",
                                           timeout_graceful_shutdown=2))
    server.run(sockets=[sock])


@app.command("distill")
def distill_cmd(inputs: InputsArg, out: OutOpt,
                train: Annotated[Optional[Path], typer.Option(help="Existing training set to merge the labels into.")] = None,
                offline: Annotated[bool, typer.Option(help="Inputs already carry k samples per prompt: filter only, no model.")] = False,
                k: Annotated[int, typer.Option(help="Samples per prompt.")] = 8,
                answer: Annotated[str, typer.Option(help="number, choice, exact, regex:PATTERN or module:function.")] = "number",
                estimator: Annotated[Optional[list[str]], typer.Option(help="consistency, logprob, judge, verifier (repeatable).")] = None,
                threshold: Annotated[float, typer.Option(help="Confidence needed to keep a label (each estimator in [0, 1]).")] = 0.6,
                combine: Annotated[str, typer.Option(help="all (every estimator) or weighted (weighted mean).")] = "all",
                weight: Annotated[Optional[list[str]], typer.Option(help="Estimator weight for --combine weighted, e.g. logprob=0.5.")] = None,
                verifier: Annotated[Optional[str], typer.Option(help="module:function(record, answer) -> bool.")] = None,
                rounds: Annotated[int, typer.Option(help="Labelling rounds; low-confidence prompts are retried.")] = 1,
                after_round: Annotated[Optional[str], typer.Option(help="Shell command run after each round "
                                                               "(env: PTDATA_ROUND, PTDATA_TRAIN, PTDATA_OUT).")] = None,
                overwrite_human: Annotated[bool, typer.Option(help="Let teacher labels replace human labels.")] = False,
                model: ModelOpt = None, backend: BackendOpt = None,
                base_url: Annotated[Optional[list[str]], typer.Option("--base-url", help="Teacher endpoint; repeat it to "
                                                                      "give round 2, 3, ... a new teacher.")] = None,
                api_key_env: KeyEnvOpt = None, llm: LLMSetOpt = None, llm_config: LLMFileOpt = None,
                quiet: QuietOpt = False, as_json: JsonOpt = False) -> None:
    """Distillation: a teacher labels prompts, confident labels are kept and merged, rounds repeat."""
    from .distill import DistillConfig, Distiller
    from .ops.llm import Distill
    from .params import check

    if rounds < 1:
        raise InputError(f"--rounds: must be an integer >= 1, got {rounds}")
    try:
        weights_in = {kk: float(v) for kk, v in (w.split("=", 1) for w in weight or [])}
    except ValueError:
        raise InputError(f"--weight: give estimator=number, got {weight}") from None
    # the options the `distill` op shares are checked by its own annotations (`ptdata ops` shows them)
    check(Distill, {"k": k, "answer": answer, "estimators": estimator or ["consistency"], "threshold": threshold,
                    "combine": combine, "weights": weights_in}, "distill")
    teachers = []
    if not offline:
        urls = base_url or [None]
        teachers = [llm_settings(model, backend, u, api_key_env, llm, llm_config) for u in urls]
    cfg = DistillConfig(k=k, answer=answer, estimators=estimator or ["consistency"], threshold=threshold,
                        combine=combine, weights=weights_in, verifier=verifier, rounds=rounds, teachers=teachers,
                        after_round=after_round, overwrite_human=overwrite_human)
    say = (lambda m: None) if quiet else (lambda m: err.print(m, highlight=False))
    s = Distiller(cfg, out, say).run(list(inputs), train, offline)
    err.print(f"in {s['prompts_in']:,} · labeled {s['labeled']:,} · without a label {s['rejected']:,} · "
              f"training set {s['train_size']:,}", highlight=False)
    for g in s["growth"]:
        err.print(f"  round {g['round']}: +{g['added']:,} added, {g['replaced']:,} replaced, "
                  f"{g['low_confidence']:,} not confident -> {g['train_after']:,}", highlight=False)
    for line in calibration_lines(s["calibration"], threshold):
        err.print(line, highlight=False, markup=False)
    err.print(f"train: {out / 'train.jsonl'}\nrejects: {out / 'rejects.jsonl'}\ncalibration: {out / 'calibration.html'}",
              highlight=False)
    if as_json:
        reasons: dict[str, int] = {}
        for x in _jsonl(out / "rejects.jsonl"):
            reasons[x.get("reason")] = reasons.get(x.get("reason"), 0) + 1
        print_json({"command": "distill", "records_in": s["prompts_in"], "kept": s["labeled"], "rejected": s["rejected"],
                    "reasons": reasons, "prompts_in": s["prompts_in"], "labeled": s["labeled"], "train_size": s["train_size"],
                    "offline": offline, "growth": s["growth"],
                    "files": {"train": written(out / "train.jsonl"), "rejects": written(out / "rejects.jsonl"),
                              "calibration": written(out / "calibration.html"),
                              "calibration_json": written(out / "calibration.json")}})
    exit_if_nothing(s["prompts_in"], s["labeled"], "prompt")


CALIBRATION_SHOWN = (0.0, 0.25, 0.5, 0.75, 1.0)


def calibration_lines(cal: dict, threshold: float) -> list[str]:
    """A few rows of the calibration table (calibration.json / .html has every threshold): for each
    threshold, the referenced prompts whose confidence reaches it (kept), how many of those have the
    reference as their majority answer (correct), coverage and precision; the run's --threshold is
    marked when it is one of the table's thresholds. Nothing when no prompt has a reference."""
    if not cal.get("with_reference"):
        return []
    shown = set(CALIBRATION_SHOWN) | {round(threshold, 2)}
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    lines = [f"calibration on {cal['with_reference']:,} prompts with a reference answer:",
             f"  {'threshold':>9}  {'kept':>6}  {'correct':>7}  {'coverage':>8}  {'precision':>9}"]
    for r in cal["table"]:
        if r["threshold"] in shown:
            mark = "  <- --threshold" if r["threshold"] == threshold else ""
            lines.append(f"  {r['threshold']:>9.2f}  {r['kept']:>6,}  {r['correct']:>7,}  {fmt(r['coverage']):>8}  "
                         f"{fmt(r['precision']):>9}{mark}")
    return lines


def _jsonl(path: Path) -> list[dict]:
    return [orjson.loads(x) for x in path.read_bytes().splitlines() if x.strip()] if path.exists() else []


def print_export_summary(c: dict, out: Path | None = None) -> None:
    """What an export wrote, per file, and what it did not write and where that goes instead."""
    from .export import KIND_NAMES

    reasons = counts_text(c["reasons"])
    err.print(f"in {c['records_in']:,} · written {c['written']:,} · rejected {c['rejected']:,}"
              + (f" ({reasons})" if reasons else "") + (f" -> {out}" if out else ""), highlight=False)
    for name, t in c["targets"].items():
        kinds = " and ".join(KIND_NAMES[k] for k in t["takes"])
        line = f"  {name}: {t['records']:,} {kinds} records"
        if t["rows"] != t["records"]:
            line += f" as {t['rows']:,} rows"
        line += f" -> {t['file']}" if t["file"] else " (no file)"
        if t.get("dataset"):
            line += f" (dataset {t['dataset']!r})"
        if t["rejected"]:
            why = counts_text(t["reasons"])
            line += f"; {t['rejected']:,} records it cannot hold ({why})"
            if t["unlisted"]:
                line += f", {t['unlisted']:,} of them written to other files (--to {name} alone lists them in its rejects)"
        err.print(line, highlight=False)
    for w in c["not_written"]:
        where = f"export them with {w['hint']}" if w["hint"] else "no export trains on unlabeled prompts"
        err.print(f"  {w['records']:,} {KIND_NAMES[w['kind']]} records not written: {where}", highlight=False)
    if c.get("dataset_info"):
        err.print(f"dataset_info: {c['dataset_info']}", highlight=False)
    if c.get("rejected"):
        err.print(f"rejects: {c['rejects']}", highlight=False)


@app.command("export")
def export_cmd(inputs: InputsArg, out: OutOpt,
               to: Annotated[str, typer.Option(help="trl-sft (sft records), trl-dpo (pairs), trl-kto (unpaired records and pairs), "
                                               "openai (sft), openai-pref (pairs), llamafactory-sft, llamafactory-ranking, "
                                               "llamafactory-kto; the groups trl, llamafactory (one file per kind) and all; "
                                               "or tokenized. Records of other kinds are rejected as wrong_kind.")] = "tokenized",
               tokenizer: Annotated[Optional[str], typer.Option(help="qwen (Qwen2's BPE, plain ChatML), qwen2.5 or qwen3 (the "
                                                                "same BPE with the models' stock chat templates; all built "
                                                                "offline), or a local tokenizer directory with a chat template, "
                                                                "as save_pretrained writes it (tokenized).")] = None,
               max_length: Annotated[Optional[int], typer.Option(help="Longest tokenized record.")] = None,
               truncation: Annotated[str, typer.Option(help="reject, truncate (never inside the first user turn) or "
                                                       "drop_turns (drop the earliest exchanges).")] = "reject",
               train_on: Annotated[str, typer.Option(help="all assistant turns, or only the last.")] = "all",
               pack: Annotated[Optional[int], typer.Option(help="Pack whole sequences into rows of exactly this many tokens "
                                                           "(padded; position_ids restart per sequence; no attention_mask).")] = None,
               reasoning: Annotated[str, typer.Option(help="keep (passed to the template as --reasoning-key), inline (a "
                                                      "<think> block in the content) or drop (tokenized).")] = "keep",
               reasoning_key: Annotated[str, typer.Option(help="The message key the template reads reasoning from: "
                                                          "reasoning_content (Qwen3, DeepSeek, GLM), thinking (GPT-OSS).")] = "reasoning_content",
               history: Annotated[str, typer.Option(help="When the template rewrites earlier turns (Qwen3 drops their "
                                                    "reasoning): split (one sequence per assistant turn, as rendered at "
                                                    "inference) or reject.")] = "split",
               fmt: FromOpt = None, quiet: QuietOpt = False, as_json: JsonOpt = False) -> None:
    """Write training-ready data: trainer formats, or tokenized Parquet with assistant-only labels and packing."""
    from .export import export_format, export_tokenized
    from .reader import ReadOptions

    ro = ReadOptions(fmt=fmt)
    if to != "tokenized":
        given = [f for f, v in (("--tokenizer", tokenizer), ("--max-length", max_length), ("--pack", pack),
                                ("--reasoning", None if reasoning == "keep" else reasoning),
                                ("--reasoning-key", None if reasoning_key == "reasoning_content" else reasoning_key),
                                ("--history", None if history == "split" else history)) if v is not None]
        if given:
            raise InputError(f"{given[0]} applies to --to tokenized only, not --to {to}")
        c = export_format(list(inputs), out, to, ro)
        print_export_summary(c, out)
        if as_json:
            print_json({**{k: v for k, v in c.items() if k not in ("rejects", "dataset_info")}, "command": "export", "to": to,
                        "files": {"out": str(out), "rejects": written(c["rejects"]), "dataset_info": c.get("dataset_info"),
                                  **{n: t["file"] for n, t in c["targets"].items()}}})
        exit_if_nothing(c["records_in"], c["written"])
        return
    if tokenizer is None:
        raise InputError("--to tokenized needs --tokenizer qwen or --tokenizer DIR (a local tokenizer with a chat template)")
    s = export_tokenized(list(inputs), out, tokenizer, max_length, truncation, train_on, pack, ro,
                         reasoning=reasoning, reasoning_key=reasoning_key, history=history)
    err.print(f"in {s['records_in']:,} · tokenized {s['kept']:,} · rejected {s['rejected']:,}"
              + (f" ({counts_text(s['reasons'])})" if s["reasons"] else ""), highlight=False)
    if s["split_records"]:
        err.print(f"  {s['split_records']:,} of them split into one sequence per assistant turn, as the template renders "
                  f"it at inference (it rewrites earlier turns): {s['sequences']:,} sequences in all; --history reject "
                  "rejects such records instead", highlight=False)
    err.print(f"  {s['tokens']:,} tokens, {s['trained_share'] or 0:.1%} trained"
              + (f"; packed into {s['packed_rows']:,} rows, efficiency {s['packing_efficiency']:.1%}" if pack else ""),
              highlight=False)
    err.print(f"data: {out / 'tokenized.parquet'}\nstats: {out / 'token_stats.json'}\nreport: {out / 'token_report.html'}",
              highlight=False)
    if as_json:
        print_json({**s, "command": "export", "to": "tokenized",
                    "files": {"out": str(out), "data": written(out / "tokenized.parquet"), "stats": written(out / "token_stats.json"),
                              "report": written(out / "token_report.html"), "rejects": written(out / "rejects.jsonl")}})
    exit_if_nothing(s["records_in"], s["kept"])
