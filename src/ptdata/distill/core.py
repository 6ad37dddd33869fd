"""Label prompts with a teacher, keep the confident labels, merge them into a training set,
and repeat in rounds with provenance on every record.

A run directory holds everything, so an interrupted run resumes where it stopped:
  state.json                 rounds done, after-round commands done
  round_N/labels.jsonl       labels kept in round N (with meta.distill provenance)
  round_N/decisions.jsonl    one row per prompt seen in round N: estimator values, answer, kept or why not
  round_N/train.jsonl        the merged training set after round N (a version per round)
  train.jsonl                the latest merged training set
  rejects.jsonl              prompts that end without a label, each with its reason
  calibration.json/.html     precision and coverage against the threshold; growth per round
"""
from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import orjson

from ..errors import InputError
from ..io import guard_outputs
from ..llm import Backend, LLMConfig, make_llm
from ..reader import read_records
from ..records import Record
from .answers import extractor, is_truncated, reference_answer, sample_answer
from .confidence import Combiner, best_sample, logprob_confidence, verify, vote

Progress = Callable[[str], None]


@dataclass
class DistillConfig:
    k: int = 8
    answer: str = "number"
    estimators: list[str] = field(default_factory=lambda: ["consistency"])
    threshold: float | dict[str, float] = 0.6
    combine: str = "all"
    weights: dict[str, float] = field(default_factory=dict)
    verifier: str | None = None  # module:function(record, answer) -> bool
    judge: dict | None = None  # model settings of the judge estimator (default: the teacher's)
    rounds: int = 1
    teachers: list[dict] = field(default_factory=list)  # round N uses teachers[N-1] (the last one repeats)
    after_round: str | None = None  # a shell command run after each round
    overwrite_human: bool = False

    def combiner(self) -> Combiner:
        return Combiner(list(self.estimators), self.threshold, self.combine, self.weights)

    def manifest(self) -> dict:
        return dict(vars(self))


def as_prompt(rec: Record) -> Record:
    """The prompt record of anything: sft records lose their answer (kept as the reference when
    the format gave one), preference records keep their prompt turns."""
    if rec.kind == "prompt":
        return rec
    meta = {k: v for k, v in rec.meta.items() if k in ("source", "reference", "candidates", "source_id")}
    msgs = rec.messages[:-1] if rec.kind == "sft" else rec.messages
    return Record("prompt", msgs, meta=meta)


def prompt_id(rec: Record) -> str:
    return as_prompt(rec).id


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    tmp = path.with_name(path.name + ".partial")
    with open(tmp, "wb") as f:
        for r in rows:
            f.write(orjson.dumps(r) + b"\n")
    os.replace(tmp, path)


def _read_jsonl(path: Path) -> list[dict]:
    return [orjson.loads(x) for x in path.read_bytes().splitlines()] if path.exists() else []


def _user_callable(spec: str | None):
    if not spec:
        return None
    import importlib

    mod, _, fn = spec.partition(":")
    try:
        return getattr(importlib.import_module(mod), fn)
    except (ImportError, AttributeError, ValueError) as e:
        raise InputError(f"verifier {spec!r} cannot be imported: {e}") from None


class Distiller:
    def __init__(self, cfg: DistillConfig, out: Path, progress: Progress | None = None) -> None:
        self.cfg, self.out = cfg, Path(out)
        self.extract = extractor(cfg.answer)
        self.combiner = cfg.combiner()
        self.user_verifier = _user_callable(cfg.verifier)
        self.say = progress or (lambda msg: None)
        self._llms: dict[str, tuple[LLMConfig, Backend]] = {}  # one backend per model setting (a local model loads once)
        if "judge" in cfg.estimators and not (cfg.judge or cfg.teachers):
            raise InputError("the judge estimator needs model settings (judge: {...}) or a teacher")

    def llm(self, settings: dict) -> tuple[LLMConfig, Backend]:
        key = orjson.dumps(settings, option=orjson.OPT_SORT_KEYS).decode()
        if key not in self._llms:
            cfg = LLMConfig.from_dict(settings)
            self._llms[key] = (cfg, make_llm(cfg))
        return self._llms[key]

    # ---- one round ---------------------------------------------------------------------
    def decide(self, prompts: list[Record], round_no: int, teacher: str) -> tuple[list[Record], list[dict]]:
        """Labels kept and one decision row per prompt; prompts carry their samples in meta.candidates."""
        votes = []
        for p in prompts:
            samples = p.meta.get("candidates") or []
            votes.append(vote(samples, [sample_answer(s, self.extract) for s in samples]))
        judged = self._judge(prompts, votes) if "judge" in self.cfg.estimators else [{} for _ in prompts]
        decisions, labels = [], []
        for p, v, scores in zip(prompts, votes, judged):
            if v.chosen is not None and v.chosen_by == "consensus" and scores:
                v.chosen, v.chosen_by = best_sample(p.meta["candidates"], v.members, scores)
            row = self._row(p, v, scores, round_no, teacher)
            decisions.append(row)
            if row["kept"]:
                labels.append(self._label(p, v, row, round_no, teacher))
        return labels, decisions

    def _judge(self, prompts: list[Record], votes: list) -> list[dict[int, float]]:
        """Judge scores in [0, 1] per sample index: of every distinct text of the majority answer
        when log-probs do not pick the label (the judge picks it), else of the chosen sample only."""
        from ..generate.judges import deita_scores

        asks: list[tuple[int, list[int], Record]] = []
        for at, (p, v) in enumerate(zip(prompts, votes)):
            if v.chosen is None:
                continue
            by_text: dict[str, list[int]] = {}
            for i in (v.members if v.chosen_by == "consensus" else [v.chosen]):
                by_text.setdefault(p.meta["candidates"][i]["text"], []).append(i)
            asks += [(at, idx, Record("sft", p.messages + [{"role": "assistant", "content": text}]))
                     for text, idx in by_text.items()]
        out: list[dict[int, float]] = [{} for _ in prompts]
        if not asks:
            return out
        judge_cfg, jl = self.llm({**(self.cfg.teachers[0] if self.cfg.teachers else {}), **(self.cfg.judge or {})})
        kept, _ = deita_scores([r for _, _, r in asks], jl, judge_cfg.sampling(temperature=0.0), axes=("quality",))
        quality = {id(r): r.scores.get("deita.quality") for r in kept}
        for at, idx, r in asks:
            if quality.get(id(r)) is not None:
                out[at].update({i: round((quality[id(r)] - 1) / 5, 6) for i in idx})
        return out

    def _row(self, p: Record, v: Any, judged: dict[int, float], round_no: int, teacher: str) -> dict:
        """The decision on one prompt: estimator values of the chosen sample, kept or why not."""
        samples = p.meta.get("candidates") or []
        ref = reference_answer(p.meta.get("reference"), self.extract)
        values: dict[str, Any] = {}
        if "consistency" in self.cfg.estimators:
            values["consistency"] = round(v.share, 6)
        if v.chosen is not None:
            s = samples[v.chosen]
            if s.get("mean_logprob") is not None:
                values["logprob"] = round(logprob_confidence(s), 6)
                values["logprob_mean"] = s["mean_logprob"]
                if s.get("min_logprob") is not None:
                    values["logprob_min"] = s["min_logprob"]
            if judged.get(v.chosen) is not None:
                values["judge"] = judged[v.chosen]
            ver = verify(v.majority, ref, p, self.user_verifier)
            if ver is not None:
                values["verifier"] = ver
        row = {"prompt_id": p.id, "round": round_no, "teacher": teacher, "answer": v.majority,
               "answers": v.answers, "reference": ref, "samples": len(samples),
               "truncated": sum(map(is_truncated, samples)), "chosen_by": v.chosen_by, "values": values,
               "correct": (v.majority == ref) if ref is not None and v.majority is not None else None}
        if v.chosen is None:
            row["kept"], row["reason"] = False, "no_answer"
        elif not self.combiner.keep(values):
            row["kept"], row["reason"] = False, "low_confidence"
        else:
            row["kept"], row["reason"] = True, None
        row["confidence"] = round(self.combiner.score(values), 6) if v.chosen is not None else 0.0
        return row

    def _label(self, p: Record, v: Any, row: dict, round_no: int, teacher: str) -> Record:
        """The kept label: the prompt and its best sample, with provenance in meta.distill."""
        sample = p.meta["candidates"][v.chosen]
        meta = {k: x for k, x in p.meta.items() if k not in ("candidates",)}
        meta["label_source"] = "teacher"
        meta["distill"] = {"teacher": sample.get("model") or teacher, "round": round_no, "estimators": row["values"],
                           "confidence": row["confidence"], "threshold": self.cfg.threshold,
                           "combine": self.cfg.combine, "prompt_id": p.id, "answer": row["answer"],
                           "samples": row["samples"], "chosen_sample": v.chosen, "chosen_by": v.chosen_by}
        return Record("sft", p.messages + [{"role": "assistant", "content": sample["text"]}], meta=meta)

    def sample(self, prompts: list[Record], round_no: int) -> tuple[list[Record], str, list[dict]]:
        """Ask this round's teacher for k samples per prompt (a new seed each round, so a
        low-confidence prompt gets fresh samples when it is retried)."""
        from ..generate.sampling import sample_responses

        cfg, llm = self.llm(self.cfg.teachers[min(round_no, len(self.cfg.teachers)) - 1])
        seed = (cfg.seed or 0) + 1000 * round_no
        bare = [Record("prompt", p.messages, meta={k: v for k, v in p.meta.items() if k != "candidates"}) for p in prompts]
        wants_logprobs = True if "logprob" in self.cfg.estimators else None  # None: the teacher's own setting
        kept, dropped = sample_responses(bare, llm, cfg.sampling(n=self.cfg.k, seed=seed, logprobs=wants_logprobs))
        failed = [{"prompt_id": r.id, "round": round_no, "teacher": cfg.model, "kept": False, "reason": d.reason,
                   "detail": d.detail} for r, d in dropped]
        out = []
        for r in kept:
            meta = {k: v for k, v in r.meta.items() if k not in ("parent", "step", "teacher")}
            out.append(Record("prompt", r.messages, meta=meta))
        return out, cfg.model, failed

    # ---- the whole run -----------------------------------------------------------------
    def run(self, prompt_paths: list[Path], train_path: Path | None = None, offline: bool = False) -> dict:
        cfg = self.cfg
        if offline and cfg.rounds > 1:
            raise InputError("the offline mode filters samples made elsewhere: one round (drop --rounds)")
        if not offline and not cfg.teachers:
            raise InputError("no teacher: give --model/--base-url, or use --offline with a samples file")
        guard_outputs([*prompt_paths, *([train_path] if train_path else [])], dirs=[self.out])
        self.out.mkdir(parents=True, exist_ok=True)
        state_path = self.out / "state.json"
        manifest = orjson.dumps({"config": cfg.manifest(), "inputs": [str(p) for p in prompt_paths],
                                 "train": str(train_path) if train_path else None, "offline": offline},
                                option=orjson.OPT_SORT_KEYS).decode()
        state = orjson.loads(state_path.read_bytes()) if state_path.exists() else {}
        if state.get("manifest") != manifest:
            for d in self.out.glob("round_*"):
                shutil.rmtree(d)
            state = {"manifest": manifest, "rounds_done": [], "hooks_done": []}
        prompts, read_rejects = self._load_prompts(prompt_paths)
        train = [r for r, _ in read_records(train_path)] if train_path else []
        train = [r for r in train if r is not None]
        human = {prompt_id(r) for r in train if r.meta.get("label_source") != "teacher"}
        skipped = []
        if not cfg.overwrite_human:
            skipped = [{"prompt_id": p.id, "kept": False, "reason": "has_human_label", "round": 0} for p in prompts if p.id in human]
        skip_ids = {s["prompt_id"] for s in skipped}
        labeled: dict[str, Record] = {}
        growth = []
        last_failure: dict[str, dict] = {}
        for rnd in range(1, cfg.rounds + 1):
            rdir = self.out / f"round_{rnd}"
            if rnd in state["rounds_done"]:
                labels = [Record.from_dict(d) for d in _read_jsonl(rdir / "labels.jsonl")]
                decisions = _read_jsonl(rdir / "decisions.jsonl")
                self.say(f"round {rnd}: done earlier, {len(labels)} labels reused")
            else:
                pending = [p for p in prompts if p.id not in skip_ids and p.id not in labeled]
                self.say(f"round {rnd}: {len(pending)} prompt(s) to label")
                if offline:
                    with_samples, teacher, failed = pending, "offline", []
                else:
                    with_samples, teacher, failed = self.sample(pending, rnd)
                labels, decisions = self.decide(with_samples, rnd, teacher)
                decisions += failed
                rdir.mkdir(exist_ok=True)
                _write_jsonl(rdir / "labels.jsonl", [r.to_dict() for r in labels])
                _write_jsonl(rdir / "decisions.jsonl", decisions)
            before = len(train)
            train, merged = merge(train, labels, cfg.overwrite_human)
            for r in labels:
                labeled[r.meta["distill"]["prompt_id"]] = r
            for d in decisions:
                if not d["kept"]:
                    last_failure[d["prompt_id"]] = d
                else:
                    last_failure.pop(d["prompt_id"], None)
            if rnd not in state["rounds_done"]:
                _write_jsonl(rdir / "train.jsonl", [r.to_dict() for r in train])
                (rdir / "summary.json").write_bytes(orjson.dumps(merged))
                state["rounds_done"].append(rnd)
                _save_state(state_path, state)
            growth.append({"round": rnd, "train_before": before, "labels": len(labels), **merged, "train_after": len(train),
                           "low_confidence": sum(1 for d in decisions if not d["kept"])})
            if cfg.after_round and rnd not in state["hooks_done"]:
                self._hook(rnd, rdir / "train.jsonl")
                state["hooks_done"].append(rnd)
                _save_state(state_path, state)
        _write_jsonl(self.out / "train.jsonl", [r.to_dict() for r in train])
        rejects = list(read_rejects) + [{**d, "reason": d["reason"]} for d in skipped]
        by_id = {p.id: p for p in prompts}
        rejects += [{"prompt_id": pid, "reason": d["reason"], "round": d.get("round"), "values": d.get("values"),
                     "record": by_id[pid].to_dict() if pid in by_id else None}
                    for pid, d in last_failure.items() if pid not in labeled]
        _write_jsonl(self.out / "rejects.jsonl", rejects)
        all_decisions = [d for rnd in range(1, cfg.rounds + 1) for d in _read_jsonl(self.out / f"round_{rnd}" / "decisions.jsonl")]
        from .report import calibration, write_calibration

        cal = calibration(all_decisions, self.combiner)
        summary = {"prompts_in": len(prompts) + len(read_rejects), "labeled": len(labeled), "rejected": len(rejects),
                   "train_size": len(train), "growth": growth, "calibration": cal}
        assert summary["prompts_in"] == summary["labeled"] + summary["rejected"], "distill lost a prompt"
        (self.out / "calibration.json").write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
        write_calibration(summary, self.out / "calibration.html")
        return summary

    def _load_prompts(self, paths: list[Path]) -> tuple[list[Record], list[dict]]:
        seen: dict[str, Record] = {}
        rejects = []
        for path in paths:
            for rec, bad in read_records(path):
                if rec is None:
                    rejects.append(bad)
                    continue
                p = as_prompt(rec)
                if p.id in seen:
                    rejects.append({"prompt_id": p.id, "reason": "duplicate_prompt", "record": rec.to_dict(),
                                    "source": rec.meta.get("source", "")})
                    continue
                seen[p.id] = p
        return list(seen.values()), rejects

    def _hook(self, rnd: int, train: Path) -> None:
        env = {**os.environ, "PTDATA_ROUND": str(rnd), "PTDATA_TRAIN": str(train.resolve()),
               "PTDATA_OUT": str(self.out.resolve()), "PTDATA_PID": str(os.getpid())}
        self.say(f"round {rnd}: running after-round command")
        rc = subprocess.run(self.cfg.after_round, shell=True, env=env).returncode  # noqa: S602 (the user's own command)
        if rc != 0:
            raise InputError(f"after-round command failed with exit {rc} in round {rnd}; fix it and rerun to resume")


def _save_state(path: Path, state: dict) -> None:
    tmp = path.with_name(path.name + ".partial")
    tmp.write_bytes(orjson.dumps(state))
    os.replace(tmp, path)


def merge(train: list[Record], labels: list[Record], overwrite_human: bool = False) -> tuple[list[Record], dict]:
    """Add teacher labels to a training set: an identical record is not added twice, a human
    label is never replaced unless asked, and a teacher label for the same prompt is replaced
    by the newer one."""
    by_prompt = {prompt_id(r): i for i, r in enumerate(train)}
    ids = {r.id for r in train}
    out = list(train)
    added = replaced = dup = kept_human = 0
    for r in labels:
        if r.id in ids:
            dup += 1
            continue
        pid = r.meta["distill"]["prompt_id"]
        i = by_prompt.get(pid)
        if i is None:
            by_prompt[pid] = len(out)
            out.append(r)
            added += 1
        elif out[i].meta.get("label_source") != "teacher" and not overwrite_human:
            kept_human += 1
        else:
            out[i] = r
            replaced += 1
        ids.add(r.id)
    return out, {"added": added, "replaced": replaced, "duplicates": dup, "human_kept": kept_human}
