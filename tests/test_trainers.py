"""Every trainer export of the README's curated example data trains, as written, in the trainer it
is for: TRL's SFTTrainer, DPOTrainer and KTOTrainer (2 steps each on a tiny Qwen2 built from a
config, with the offline Qwen tokenizer, on CPU) on the JSONL exports and on the Parquet files
`ptdata convert --to trl` writes, and the tokenized and packed Parquet in Hugging Face's Trainer
with batch size 2. Each export holds exactly the records of the kinds its trainer takes; every
other record is a `wrong_kind` reject that names the export taking it."""
from __future__ import annotations

import copy
import math

import orjson
import pyarrow.parquet as pq
import pytest

from .conftest import load_jsonl, run_cli
from .curated import by_class, curate

trl = pytest.importorskip("trl", reason="install the trl extra: pip install -e '.[trl]'")
datasets = pytest.importorskip("datasets")
torch = pytest.importorskip("torch")

pytestmark = pytest.mark.trl

# --to: the record classes it takes (ptdata.formats.record_class)
TAKES = {"trl-sft": ["sft"], "trl-dpo": ["preference"], "trl-kto": ["preference", "unpaired"], "openai": ["sft"],
         "openai-pref": ["preference"]}
HINTS = {("trl-sft", "preference"): "--to trl-dpo or --to trl-kto", ("trl-sft", "unpaired"): "--to trl-kto",
         ("trl-dpo", "sft"): "--to trl-sft", ("trl-dpo", "unpaired"): "--to trl-kto", ("trl-kto", "sft"): "--to trl-sft",
         ("openai", "preference"): "--to openai-pref", ("openai", "unpaired"): "--to trl-kto or --to llamafactory-kto",
         ("openai-pref", "sft"): "--to openai", ("openai-pref", "unpaired"): "--to trl-kto or --to llamafactory-kto"}
NAMES = {"sft": "sft", "preference": "preference", "unpaired": "unpaired (KTO)"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    kept = curate(tmp_path_factory.mktemp("curated"))
    classes = by_class(kept)
    # the README's example data has every kind a trainer takes
    assert {k: len(v) > 0 for k, v in classes.items()} == {"sft": True, "preference": True, "unpaired": True}
    return kept, classes


@pytest.fixture(scope="module")
def exports(data, tmp_path_factory):
    kept, _ = data
    root = tmp_path_factory.mktemp("exports")
    out = {}
    for to in [*TAKES, "all"]:
        r = run_cli("export", kept, "-o", root / to, "--to", to)
        assert r.returncode == 0, r.stderr
        assert "Traceback" not in r.stderr
        out[to] = (root / to, r.stderr)
    return out


def _ids(recs) -> list[str]:
    return [r.id for r in recs]


@pytest.mark.parametrize("to", list(TAKES))
def test_each_target_writes_its_kinds_only_and_rejects_the_rest_as_wrong_kind(data, exports, to):
    kept, classes = data
    d, stderr = exports[to]
    n_in = sum(len(v) for v in classes.values())
    taken = records_of(kept, TAKES[to])
    rest = [r for k, v in classes.items() if k not in TAKES[to] for r in v]
    rows = load_jsonl(d / f"train.{to}.jsonl")
    n_pairs = len(classes["preference"])
    if to == "trl-kto":  # each pair is two rows (chosen: label true, rejected: label false), an unpaired record one
        assert len(rows) == 2 * n_pairs + len(classes["unpaired"])
    else:
        assert len(rows) == len(taken)
    # the rows are the records, in order, in the trainer's shape
    if to == "trl-sft":
        assert all(set(r) in ({"messages"}, {"messages", "tools"}) for r in rows)
        assert [r["messages"] for r in rows] == [t.messages for t in taken]
        assert sum("tools" in r for r in rows) == sum(bool(t.meta.get("tools")) for t in taken) > 0
    elif to == "trl-dpo":
        assert all(set(r) - {"tools"} == {"prompt", "chosen", "rejected"} for r in rows)
        assert [(r["prompt"], r["chosen"], r["rejected"]) for r in rows] == [(t.messages, t.chosen, t.rejected) for t in taken]
    elif to == "trl-kto":
        assert all(set(r) - {"tools"} == {"prompt", "completion", "label"} for r in rows)
        assert sum(r["label"] for r in rows) == n_pairs + sum(bool(t.meta["label"]) for t in classes["unpaired"])
    elif to == "openai":
        assert all(set(r) - {"tools", "parallel_tool_calls"} == {"messages"} for r in rows)
        for r in rows:  # OpenAI's tool-call arguments are JSON strings
            assert all(isinstance(c["function"]["arguments"], str) for m in r["messages"] for c in m.get("tool_calls", []))
    else:
        assert all(set(r) == {"input", "preferred_output", "non_preferred_output"} for r in rows)
        assert all(len(r["preferred_output"]) == len(r["non_preferred_output"]) == 1 for r in rows)
    # everything else: one wrong_kind reject each, naming the export that takes it
    rejects = load_jsonl(d / f"train.{to}.rejects.jsonl")
    assert len(rejects) == len(rest) == n_in - len(taken)
    assert sorted(x["record"]["id"] for x in rejects) == sorted(_ids(rest))
    assert {(x["op"], x["reason"]) for x in rejects} == {("export", "wrong_kind")}
    by_id = {r.id: k for k, v in classes.items() for r in v}
    for x in rejects:
        assert HINTS[(to, by_id[x["record"]["id"]])] in x["detail"], x["detail"]
    assert f"in {n_in:,} · written {len(taken):,} · rejected {len(rest):,} (wrong_kind {len(rest):,})" in stderr
    for k in classes:
        if k not in TAKES[to]:
            assert f"{len(classes[k]):,} {NAMES[k]} records not written: export them with {HINTS[(to, k)]}" in stderr


def records_of(kept, kinds) -> list:
    """The records of these classes, in file order."""
    from ptdata.formats import record_class
    from ptdata.reader import read_records

    return [r for r, _ in read_records(kept) if record_class(r) in kinds]


def test_all_writes_one_file_per_trainer_identical_to_the_single_targets(data, exports):
    _, classes = data
    d, stderr = exports["all"]
    n_in = sum(len(v) for v in classes.values())
    for to in TAKES:
        assert (d / f"train.{to}.jsonl").read_bytes() == (exports[to][0] / f"train.{to}.jsonl").read_bytes(), to
    for kind in ("sft", "ranking", "kto"):
        assert (d / f"train.llamafactory-{kind}.json").exists()
    assert sorted(orjson.loads((d / "dataset_info.json").read_bytes())) == \
        ["train.llamafactory-kto", "train.llamafactory-ranking", "train.llamafactory-sft"]
    assert not (d / "train.all.rejects.jsonl").exists()  # every record went to at least one file: no rejects file
    assert f"in {n_in:,} · written {n_in:,} · rejected 0" in stderr


# --- the trainers --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tok():
    from ptdata.tokenizers import qwen_tokenizer

    return qwen_tokenizer()


def tiny_model(tok):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=1, max_position_embeddings=4096, pad_token_id=tok.pad_token_id,
                      eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"), tie_word_embeddings=True)
    return Qwen2ForCausalLM(cfg)


def load(path, cache):
    """The file as written, loaded the way a user loads it."""
    builder = "parquet" if path.suffix == ".parquet" else "json"
    return datasets.load_dataset(builder, data_files=str(path), split="train", cache_dir=str(cache))


def train_trl(trainer: str, ds, tok, tmp) -> int:
    """2 optimizer steps of a TRL trainer; returns how many examples the trainer prepared."""
    from trl import DPOConfig, DPOTrainer, KTOConfig, KTOTrainer, SFTConfig, SFTTrainer

    model = tiny_model(tok)
    common = dict(output_dir=str(tmp / "run"), max_steps=2, per_device_train_batch_size=2, report_to=[], save_strategy="no",
                  use_cpu=True, max_length=512, logging_steps=1, dataloader_num_workers=0)
    if trainer == "sft":
        t = SFTTrainer(model=model, args=SFTConfig(**common), train_dataset=ds, processing_class=tok)
    elif trainer == "dpo":
        t = DPOTrainer(model=model, ref_model=copy.deepcopy(model), args=DPOConfig(**common), train_dataset=ds,
                       processing_class=tok)
    else:
        t = KTOTrainer(model=model, ref_model=copy.deepcopy(model), args=KTOConfig(**common), train_dataset=ds,
                       processing_class=tok)
    out = t.train()
    assert out.global_step == 2 and math.isfinite(out.training_loss)
    return len(t.train_dataset)


@pytest.mark.parametrize("to,trainer", [("trl-sft", "sft"), ("trl-dpo", "dpo"), ("trl-dpo", "kto"), ("trl-kto", "kto")])
def test_trl_trainers_train_on_the_jsonl_exports_as_written(data, exports, tok, tmp_path, to, trainer):
    _, classes = data
    path = exports[to][0] / f"train.{to}.jsonl"
    n = train_trl(trainer, load(path, tmp_path / "cache"), tok, tmp_path)
    # every row was prepared: nothing dropped, and KTOTrainer unpairs a DPO file into two rows a pair
    expected = {"trl-sft": len(classes["sft"]), "trl-dpo": len(classes["preference"]),
                "trl-kto": 2 * len(classes["preference"]) + len(classes["unpaired"])}[to]
    assert n == (2 * expected if (to, trainer) == ("trl-dpo", "kto") else expected)


@pytest.fixture(scope="module")
def parquets(data, exports, tmp_path_factory):
    """`ptdata convert --to trl` into Parquet: the mixed curated file, pure SFT, pure pairs, pairs unpaired."""
    kept, _ = data
    d = tmp_path_factory.mktemp("parquet")
    jobs = {"mixed": (kept, []), "sft": (exports["trl-sft"][0] / "train.trl-sft.jsonl", []),
            "dpo": (exports["trl-dpo"][0] / "train.trl-dpo.jsonl", []),
            "kto": (exports["trl-dpo"][0] / "train.trl-dpo.jsonl", ["-O", "preference=unpaired"])}
    for name, (src, extra) in jobs.items():
        r = run_cli("convert", src, d / f"{name}.parquet", "--to", "trl", *extra, "-q")
        assert r.returncode == 0, r.stderr
    return d


def test_trl_parquet_has_one_schema_per_row_type(data, parquets):
    kept, classes = data
    names = {n: pq.read_schema(parquets / f"{n}.parquet").names for n in ("mixed", "sft", "dpo", "kto")}
    has_tools = any(r.meta.get("tools") for r in classes["preference"])
    assert names["sft"] == ["messages", "tools"]  # the SFT data has tool calls
    assert names["dpo"] == ["prompt", "chosen", "rejected", *(["tools"] if has_tools else [])]
    assert names["kto"] == ["prompt", "completion", "label", *(["tools"] if has_tools else [])]
    # a mixed input: the first record fixes the file's type, the others are wrong_kind rejects naming their export
    from ptdata.formats import record_class
    from ptdata.reader import read_records

    first = record_class(next(r for r, _ in read_records(kept)))
    assert first == "sft" and names["mixed"] == names["sft"]
    assert pq.read_metadata(parquets / "mixed.parquet").num_rows == len(classes["sft"])
    rejects = load_jsonl(parquets / "mixed.rejects.jsonl")
    assert len(rejects) == len(classes["preference"]) + len(classes["unpaired"])
    assert {x["reason"] for x in rejects} == {"wrong_kind"}
    assert all("--to trl-dpo" in x["detail"] or "--to trl-kto" in x["detail"] for x in rejects)
    assert pq.read_table(parquets / "mixed.parquet").equals(pq.read_table(parquets / "sft.parquet"))


@pytest.mark.parametrize("name,trainer", [("sft", "sft"), ("dpo", "dpo"), ("kto", "kto")])
def test_trl_trainers_train_on_the_parquet_as_written(data, parquets, tok, tmp_path, name, trainer):
    _, classes = data
    n = train_trl(trainer, load(parquets / f"{name}.parquet", tmp_path / "cache"), tok, tmp_path)
    assert n == {"sft": len(classes["sft"]), "dpo": len(classes["preference"]), "kto": 2 * len(classes["preference"])}[name]


# --- tokenized and packed Parquet in Hugging Face's Trainer ---------------------------------------

@pytest.fixture(scope="module")
def tokenized(data, tmp_path_factory):
    kept, classes = data
    d = tmp_path_factory.mktemp("tokenized")
    out = {}
    for name, extra in (("plain", []), ("packed", ["--pack", "512"])):
        r = run_cli("export", kept, "-o", d / name, "--tokenizer", "qwen", *extra)
        assert r.returncode == 0, r.stderr
        stats = orjson.loads((d / name / "token_stats.json").read_bytes())
        n_other = len(classes["preference"]) + len(classes["unpaired"])
        assert (stats["records_in"], stats["kept"], stats["rejected"]) == (len(classes["sft"]) + n_other, len(classes["sft"]), n_other)
        assert stats["reasons"] == {"wrong_kind": n_other}
        out[name] = d / name / "tokenized.parquet"
    return out


def hf_train(ds, collator, tok, tmp) -> None:
    from transformers import Trainer, TrainingArguments

    args = TrainingArguments(output_dir=str(tmp / "hf"), max_steps=2, per_device_train_batch_size=2, report_to=[],
                             save_strategy="no", use_cpu=True, logging_steps=1, dataloader_num_workers=0)
    out = Trainer(model=tiny_model(tok), args=args, train_dataset=ds, data_collator=collator).train()
    assert out.global_step == 2 and math.isfinite(out.training_loss)


def test_tokenized_parquet_trains_with_batch_size_2(tokenized, tok, tmp_path):
    from transformers import DataCollatorForSeq2Seq

    ds = load(tokenized["plain"], tmp_path / "cache")
    assert set(ds.column_names) == {"id", "input_ids", "labels", "attention_mask"}
    assert len({len(x) for x in ds["input_ids"]}) > 1  # one row per record: the collator pads the batch
    hf_train(ds, DataCollatorForSeq2Seq(tok, padding=True), tok, tmp_path)


def test_packed_parquet_rows_are_full_length_and_train_with_batch_size_2(tokenized, tok, tmp_path):
    from transformers import default_data_collator

    ds = load(tokenized["packed"], tmp_path / "cache")
    assert set(ds.column_names) == {"input_ids", "labels", "position_ids", "seq_lengths", "ids"}
    rows = ds.to_list()
    assert len(rows) >= 2 and {len(r["input_ids"]) for r in rows} == {512}
    for r in rows:
        assert len(r["labels"]) == len(r["position_ids"]) == 512
        n = sum(r["seq_lengths"])
        assert all(x == tok.pad_token_id for x in r["input_ids"][n:]) and all(x == -100 for x in r["labels"][n:])
        starts = [i for i, p in enumerate(r["position_ids"]) if p == 0]
        assert starts[:len(r["seq_lengths"])] == [sum(r["seq_lengths"][:k]) for k in range(len(r["seq_lengths"]))]
    hf_train(ds, default_data_collator, tok, tmp_path)


def test_packed_sequences_do_not_see_each_other(tokenized, tok):
    """Given position_ids and no attention_mask (as the packed rows are written), the model keeps
    every packed sequence to itself: its logits are those of the sequence alone. A padding
    attention_mask would not (the reason the packed Parquet has none). Trainer runs the model
    without a KV cache (TrainingArguments.use_cache is False), which that detection needs."""
    from transformers import TrainingArguments

    assert TrainingArguments(output_dir="unused", report_to=[]).use_cache is False
    ds = pq.read_table(tokenized["packed"]).to_pylist()
    row = next(r for r in ds if len(r["seq_lengths"]) >= 3)
    model = tiny_model(tok).eval()
    ids, pos = torch.tensor([row["input_ids"]]), torch.tensor([row["position_ids"]])
    with torch.no_grad():
        packed = model(input_ids=ids, position_ids=pos, use_cache=False).logits[0]
        naive = model(input_ids=ids, position_ids=pos, attention_mask=torch.ones_like(ids), use_cache=False).logits[0]
        start, leaked = 0, False
        for n in row["seq_lengths"]:
            alone = model(input_ids=ids[:, start:start + n], use_cache=False).logits[0]
            assert torch.allclose(packed[start:start + n], alone, atol=1e-5)
            leaked |= start > 0 and not torch.allclose(naive[start:start + n], alone, atol=1e-5)
            start += n
    assert leaked
