"""LLaMA-Factory's own data loader takes ptdata's LLaMA-Factory exports as written.

llamafactory 0.9.5 runs in a venv of its own (.venvs/llamafactory, made by
scripts/install_llamafactory.sh, which .ci/run calls): tests/llamafactory_load.py calls its
`llamafactory.data.get_dataset` (dataset_info.json parser, file loader, converter with its
stage check, and the stage's dataset processor that tokenizes with the Qwen template) on each
file with the entry ptdata wrote, and every file yields exactly the examples ptdata wrote: the
sft, ranking and kto files of `ptdata export --to llamafactory` on the README's curated data,
and alpaca, sharegpt-KTO and Parquet files from `ptdata convert --write-dataset-info`.
"""
from __future__ import annotations

import json
import os
import subprocess

import orjson
import pytest

from ptdata.convert import dataset_name

from .conftest import ROOT, load_jsonl, run_cli
from .curated import by_class, curate

pytestmark = pytest.mark.slow
LF_PYTHON = ROOT / ".venvs" / "llamafactory" / "bin" / "python"


@pytest.fixture(scope="module")
def lf_python():
    if not LF_PYTHON.exists():
        msg = f"{LF_PYTHON} is missing: run scripts/install_llamafactory.sh"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return LF_PYTHON


def stage_of(entry: dict) -> str:
    return "rm" if entry.get("ranking") else "kto" if "kto_tag" in entry["columns"] else "sft"


def rows_of(path) -> int:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_metadata(path).num_rows
    return len(orjson.loads(path.read_bytes())) if path.suffix == ".json" else len(load_jsonl(path))


def test_llamafactory_loads_each_export_with_its_entry(lf_python, tmp_path):
    from ptdata.tokenizers import qwen_tokenizer

    kept = curate(tmp_path / "c")
    classes = by_class(kept)
    d = tmp_path / "lf"
    d.mkdir()
    # someone's own dataset already in dataset_info.json: kept as it is
    mine = {"mine": {"file_name": "mine.json", "columns": {"prompt": "instruction", "query": "input", "response": "output"}}}
    (d / "mine.json").write_text(json.dumps([{"instruction": "Say hi.", "input": "", "output": "Hi!"}]))
    (d / "dataset_info.json").write_text(json.dumps(mine))

    r = run_cli("export", kept, "-o", d, "--to", "llamafactory")
    assert r.returncode == 0, r.stderr
    weight0 = [x for x in classes["sft"] if any(m.get("weight") == 0 and m["role"] == "assistant" for m in x.messages)]
    files = {"sft": d / "train.llamafactory-sft.json", "ranking": d / "train.llamafactory-ranking.json",
             "kto": d / "train.llamafactory-kto.json"}
    assert rows_of(files["sft"]) == len(classes["sft"]) - len(weight0)  # LLaMA-Factory trains every gpt turn
    assert rows_of(files["ranking"]) == len(classes["preference"])
    assert rows_of(files["kto"]) == len(classes["unpaired"])
    rejects = load_jsonl(d / "train.llamafactory.rejects.jsonl")
    assert sorted(x["record"]["id"] for x in rejects) == sorted(x.id for x in weight0)
    assert {(x["reason"], x["target"]) for x in rejects} == {("not_representable", "llamafactory-sft")}

    # more shapes, from the single-kind TRL exports: alpaca sft / ranking / kto, sharegpt KTO from pairs, Parquet
    for to in ("trl-sft", "trl-dpo", "trl-kto"):
        assert run_cli("export", kept, "-o", tmp_path / to, "--to", to).returncode == 0
    jobs = {"alpaca-sft.json": ("trl-sft", "alpaca"), "alpaca-ranking.json": ("trl-dpo", "alpaca"),
            "alpaca-kto.jsonl": ("trl-kto", "alpaca"), "sharegpt-kto.json": ("trl-kto", "sharegpt"),
            "sharegpt-sft.parquet": ("trl-sft", "sharegpt")}
    for name, (src, fmt) in jobs.items():
        r = run_cli("convert", tmp_path / src / f"train.{src}.jsonl", d / name, "--to", fmt, "--write-dataset-info", "-q")
        assert r.returncode == 0, r.stderr
        files[dataset_name(d / name)] = d / name
    assert rows_of(d / "sharegpt-kto.json") == 2 * len(classes["preference"]) + len(classes["unpaired"])

    info = json.loads((d / "dataset_info.json").read_text())
    assert info["mine"] == mine["mine"]
    assert set(info) == {"mine", "train.llamafactory-sft", "train.llamafactory-ranking", "train.llamafactory-kto",
                         "alpaca-sft", "alpaca-ranking", "alpaca-kto", "sharegpt-kto", "sharegpt-sft"}
    assert info["train.llamafactory-ranking"]["ranking"] is True and "ranking" not in info["train.llamafactory-kto"]
    assert info["train.llamafactory-kto"]["columns"]["kto_tag"] == "kto_tag"
    assert info["alpaca-ranking"]["columns"] == {"prompt": "instruction", "query": "input", "chosen": "chosen",
                                                 "rejected": "rejected", **{c: c for c in ("system", "history")
                                                                            if c in info["alpaca-ranking"]["columns"]}}

    tok_dir = tmp_path / "tok"
    qwen_tokenizer().save_pretrained(tok_dir)
    # each entry at the stage it is for (LLaMA-Factory's dpo / rm stages load data as "rm")
    specs = {f"{dataset_name(path)}:{stage_of(info[dataset_name(path)])}": path for path in files.values()}
    specs["train.llamafactory-sft:rm"] = None  # an sft entry at a preference stage: LLaMA-Factory refuses it
    specs["train.llamafactory-ranking:sft"] = None
    specs["mine:sft"] = d / "mine.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_DATASETS_CACHE": str(tmp_path / "hf"),
           "TRANSFORMERS_VERBOSITY": "error"}
    p = subprocess.run([str(lf_python), str(ROOT / "tests" / "llamafactory_load.py"), str(d), str(tok_dir), *specs],
                       capture_output=True, text=True, timeout=600, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    result = json.loads(next(x for x in p.stdout.splitlines() if x.startswith("RESULT "))[7:])
    for spec, path in specs.items():
        got = result[spec]
        if path is None:
            assert got == {"refused": "The dataset is not applicable in the current training stage."}, spec
            continue
        n = rows_of(path)
        assert n > 0 and got["aligned"] == got["examples"] == n and got["broken"] == 0, (spec, n, got)
    assert "Skipping this abnormal example" not in p.stderr and "Dropped invalid example" not in p.stderr
    assert {s.rsplit(":", 1)[1] for s, path in specs.items() if path is not None} == {"sft", "rm", "kto"}
