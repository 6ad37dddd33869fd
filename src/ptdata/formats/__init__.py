"""Format registry: detection order, readers and writers, dataset_info.json mapping, Parquet schemas.

Each external format is a module with ``detect(row) -> bool``, ``read(row, opts) -> Record``
and ``write(record, opts) -> list[row]``. A writer that cannot hold a record raises
RecordError("not_representable") instead of dropping data.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import orjson

from ..errors import InputError
from ..records import Record
from . import alpaca, hh, llamafactory_v1, native, openai, qa, rated, sharegpt, trl
from ._shape import check_write_options, extra_summary, wrap_read, wrap_write  # noqa: F401  (reasoning, media, meta.extra)


@dataclass(frozen=True)
class Format:
    name: str
    detect: Callable[[dict], bool]
    read: Callable[[dict, dict], Record]
    write: Callable[[Record, dict], list[dict]]
    description: str


# Detection order matters: the more specific shapes first (HH before TRL's implicit prompt).
FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format(native.NAME, native.detect, native.read, native.write, "ptdata records (id, kind, messages, chosen, rejected, scores, meta)"),
        Format(rated.NAME, rated.detect, rated.read, rated.write, "a prompt with several rated responses, UltraFeedback-style (prompt, completions with scores or aspect ratings)"),
        Format(openai.PREF_NAME, openai.detect_pref, openai.read_pref, openai.write_pref, "OpenAI preference fine-tuning (input, preferred_output, non_preferred_output)"),
        Format(sharegpt.NAME, sharegpt.detect, sharegpt.read, sharegpt.write, "ShareGPT / LLaMA-Factory (conversations of from/value; DPO and KTO variants)"),
        Format(alpaca.NAME, alpaca.detect, alpaca.read, alpaca.write, "Alpaca / LLaMA-Factory (instruction, input, output, system, history; ranking and KTO variants)"),
        Format(hh.NAME, hh.detect, hh.read, hh.write, "HH-RLHF transcripts (chosen/rejected '\\n\\nHuman: … \\n\\nAssistant: …')"),
        Format(qa.NAME, qa.detect, qa.read, qa.write, "question/answer pairs such as GSM8K (--field question=… --field answer=…)"),
        Format(llamafactory_v1.NAME, llamafactory_v1.detect, llamafactory_v1.read, llamafactory_v1.write, "LLaMA-Factory v1 (messages or chosen_messages/rejected_messages of {type, value} parts; loss_weight)"),
        Format(openai.NAME, openai.detect, openai.read, openai.write, "OpenAI chat fine-tuning (messages, tools, tool_calls, weight, content parts, reasoning_content)"),
        Format(trl.NAME, trl.detect, trl.read, trl.write, "TRL prompt-only, prompt-completion, preference (explicit/implicit), unpaired; standard or conversational"),
    )
}
# Every reader and writer goes through the shared steps of _shape.py (inline <think> blocks,
# meta.extra, reasoning and media on the way out).
FORMATS = {n: replace(f, read=wrap_read(n, f.read), write=wrap_write(n, f.write)) for n, f in FORMATS.items()}


def get_format(name: str) -> Format:
    try:
        return FORMATS[name]
    except KeyError:
        raise InputError(f"unknown format {name!r}; known: {', '.join(FORMATS)}") from None


def guess_format(row: dict) -> str | None:
    """Name of the first format whose shape this row has, or None."""
    for f in FORMATS.values():
        if f.detect(row):
            return f.name
    return None


# --- LLaMA-Factory dataset_info.json -------------------------------------------------------

_ALPACA_COLUMNS = {"prompt": "instruction", "query": "input", "response": "output", "history": "history",
                   "system": "system", "chosen": "chosen", "rejected": "rejected", "kto_tag": "kto_tag"}
_SHAREGPT_COLUMNS = {"messages": "conversations", "system": "system", "tools": "tools",
                     "chosen": "chosen", "rejected": "rejected", "kto_tag": "kto_tag"}


def dataset_info_options(info_path: str | Path, dataset: str | None, data_file: str | Path | None = None) -> tuple[str, dict]:
    """(format name, reader options) from a dataset_info.json entry.

    The entry is the one named `dataset`, or else the one whose `file_name` is the data file's name.
    """
    path = Path(info_path)
    try:
        info = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as e:
        raise InputError(f"{path}: cannot read dataset_info.json ({e})") from None
    entry = None
    if dataset:
        entry = info.get(dataset)
        if entry is None:
            raise InputError(f"{path}: no dataset named {dataset!r} (have: {', '.join(info)})")
    elif data_file is not None:
        name = Path(data_file).name
        entry = next((e for e in info.values() if isinstance(e, dict) and e.get("file_name") == name), None)
        if entry is None:
            raise InputError(f"{path}: no entry with file_name {name!r}")
    formatting = entry.get("formatting", "alpaca")
    if formatting not in ("alpaca", "sharegpt"):
        raise InputError(f"{path}: formatting {formatting!r} is not supported (alpaca or sharegpt)")
    canon = _ALPACA_COLUMNS if formatting == "alpaca" else _SHAREGPT_COLUMNS
    rename = {src: canon[key] for key, src in (entry.get("columns") or {}).items() if key in canon and src != canon[key]}
    return formatting, {"rename": rename, "tags": entry.get("tags") or {}}


# LLaMA-Factory's sharegpt tags, written out in full so an entry never depends on its defaults.
SHAREGPT_TAGS = {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt",
                 "observation_tag": "observation", "function_tag": "function_call", "system_tag": "system"}
LF_STAGES = {"sft": "sft", "ranking": "rm (DPO, ORPO, SimPO, reward model)", "kto": "kto"}


def lf_type(rec_or_kind: "Record | str") -> str:
    """LLaMA-Factory's dataset type for a record: sft, ranking (a pair) or kto (an unpaired record)."""
    cls = rec_or_kind if isinstance(rec_or_kind, str) else record_class(rec_or_kind)
    return {"sft": "sft", "preference": "ranking", "unpaired": "kto"}.get(cls, cls)


def dataset_info_entry(fmt: str, file_name: str, kinds: "set[str] | str", columns: "set[str] | None" = None) -> dict:
    """The dataset_info.json entry LLaMA-Factory needs for a file of one type we wrote.

    `kinds`: the file's type, `sft`, `ranking` or `kto` (record kinds are accepted too: a
    `preference` kind is ranking). `columns`: the columns the file has; optional ones
    (system, history, tools) are listed only when present, since LLaMA-Factory indexes
    every listed column (`example[column]`) and a JSON file has no column no row holds.
    Shapes as in LLaMA-Factory's data/README.md and data/parser.py (`DatasetAttr.join`):
    once `columns` is given, every column not in it is None, so the messages / prompt
    columns are always named.
    """
    if isinstance(kinds, str):
        t = kinds
    else:
        t = "kto" if "unpaired" in kinds else "ranking" if "preference" in kinds else "sft"
    t = {"preference": "ranking", "unpaired": "kto"}.get(t, t)
    if t not in LF_STAGES:
        raise InputError(f"LLaMA-Factory has no dataset type for {t!r} records (sft, ranking or kto)")
    have = set(columns) if columns is not None else None
    entry: dict[str, Any] = {"file_name": file_name}
    if fmt == "sharegpt":
        entry["formatting"] = "sharegpt"
        cols = {"messages": "conversations"}
        optional = ("tools",)
    elif fmt == "alpaca":
        cols = {"prompt": "instruction", "query": "input"}
        if t != "ranking":
            cols["response"] = "output"
        optional = ("system", "history")
    else:
        raise InputError(f"LLaMA-Factory reads alpaca or sharegpt data, not {fmt!r}")
    for c in optional:
        if have is None or c in have:
            cols[c] = c
    if t == "ranking":
        entry["ranking"] = True
        cols.update({"chosen": "chosen", "rejected": "rejected"})
    elif t == "kto":
        cols["kto_tag"] = "kto_tag"
    entry["columns"] = cols
    if fmt == "sharegpt":
        entry["tags"] = dict(SHAREGPT_TAGS)
    return entry


def record_class(rec: Record) -> str:
    """What a trainer takes a record as: sft, preference (a pair), unpaired (one rated side, KTO) or prompt."""
    if rec.kind == "preference":
        return "unpaired" if "label" in rec.meta else "preference"
    return rec.kind


def row_type(fmt: str, row: dict, kind: str | None = None) -> str:
    """The type of one written row (which columns it needs): a Parquet file or a LLaMA-Factory
    dataset holds rows of one type. `kind` is the record's class (record_class)."""
    keys = set(row) - {"tools", "chat_template_kwargs", "system", "history", "parallel_tool_calls"}
    if fmt == "trl":
        if "messages" in keys:
            return "language_modeling"
        if "label" in keys:
            return "unpaired"
        if "chosen" in keys:
            return "preference" if "prompt" in keys else "implicit_preference"
        return "prompt_completion" if "completion" in keys else "prompt_only"
    if fmt in ("alpaca", "sharegpt"):
        if "chosen" in keys:
            return "ranking"
        if "kto_tag" in keys:
            return "kto"
        if kind == "prompt" or (fmt == "alpaca" and "output" not in keys):
            return "prompt"
        return "sft"
    return fmt


TRL_TYPE_NAMES = {"language_modeling": "language-modeling rows (messages)", "prompt_completion": "prompt-completion rows",
                  "preference": "preference rows (prompt, chosen, rejected)", "implicit_preference":
                  "implicit-prompt preference rows (chosen, rejected)", "unpaired": "unpaired rows (prompt, completion, label)",
                  "prompt_only": "prompt-only rows", "sft": "sft rows", "ranking": "ranking rows (chosen, rejected)",
                  "kto": "KTO rows (kto_tag)", "prompt": "prompt-only rows"}


def apply_rename(row: dict, rename: dict[str, str]) -> dict:
    if not rename:
        return row
    return {rename.get(k, k): v for k, v in row.items()}


# --- Parquet schemas ------------------------------------------------------------------------
# Free-form objects (tools, meta, tool-call arguments) are JSON strings in Parquet, as HF does.
# pyarrow is imported here, not at module load: JSONL-only runs start ~0.1 s sooner.

# The columns of each row type (row_type) in a Parquet file: only the type's own columns plus the
# optional ones a trainer reads as absent when null (tools; alpaca's system and history), so a
# file of one type has no all-null columns of another type that would make a trainer take it for
# that type (SFTTrainer sees a `prompt` key and treats language-modeling rows as prompt-completion).
TYPE_COLUMNS = {
    "trl": {"language_modeling": ["messages", "tools"], "prompt_completion": ["prompt", "completion", "tools"],
            "preference": ["prompt", "chosen", "rejected", "tools"], "implicit_preference": ["chosen", "rejected", "tools"],
            "unpaired": ["prompt", "completion", "label", "tools"], "prompt_only": ["prompt", "tools"]},
    "alpaca": {"sft": ["instruction", "input", "output", "system", "history"],
               "ranking": ["instruction", "input", "chosen", "rejected", "system", "history"],
               "kto": ["instruction", "input", "output", "kto_tag", "system", "history"],
               "prompt": ["instruction", "input", "system", "history"]},
    "sharegpt": {"sft": ["conversations", "tools"], "prompt": ["conversations", "tools"],
                 "ranking": ["conversations", "chosen", "rejected", "tools"], "kto": ["conversations", "kto_tag", "tools"]},
}


OPTIONAL_COLUMNS = {"tools", "system", "history"}


def parquet_schema(fmt: str, opts: dict, row_type: str | None = None, present: set | None = None):
    """The Parquet schema of `fmt`; with `row_type` (see row_type()), the schema of that row type
    alone (TYPE_COLUMNS), else the union of every type's columns. With `present` (the keys the
    rows have), the type's optional columns (OPTIONAL_COLUMNS) no row has are left out too."""
    full = _parquet_schema(fmt, opts)
    cols = TYPE_COLUMNS.get(fmt, {}).get(row_type) if row_type else None
    if cols is None:
        return full
    import pyarrow as pa

    if present is not None:
        cols = [c for c in cols if c not in OPTIONAL_COLUMNS or c in present]
    return pa.schema([full.field(c) for c in cols])


def _parquet_schema(fmt: str, opts: dict):
    import pyarrow as pa

    S = pa.string()
    tool_call = pa.struct([("id", S), ("type", S), ("function", pa.struct([("name", S), ("arguments", S)]))])
    MESSAGES = pa.list_(pa.struct([("role", S), ("content", S), ("name", S), ("tool_calls", pa.list_(tool_call)),
                                   ("tool_call_id", S), ("weight", pa.int64())]))
    FROM_VALUE = pa.struct([("from", S), ("value", S)])
    if fmt == "ptdata":  # the record model's messages: also reasoning, parts (JSON text) and reasoning_wrap
        PT = pa.list_(pa.struct([*(MESSAGES.value_type[i] for i in range(MESSAGES.value_type.num_fields)),
                                 ("reasoning", S), ("parts", S), ("reasoning_wrap", pa.list_(S))]))
        return pa.schema([("id", S), ("kind", S), ("messages", PT), ("chosen", PT), ("rejected", PT),
                          ("scores", pa.map_(S, pa.float64())), ("meta", S)])
    if fmt == "llamafactory-v1":
        V1 = pa.list_(pa.struct([("role", S), ("content", pa.list_(pa.struct([("type", S), ("value", S)]))),
                                 ("loss_weight", pa.float64())]))
        return pa.schema([("messages", V1), ("chosen_messages", V1), ("rejected_messages", V1), ("tools", S)])
    if fmt == "alpaca":
        return pa.schema([("instruction", S), ("input", S), ("output", S), ("system", S), ("history", pa.list_(pa.list_(S))),
                          ("chosen", S), ("rejected", S), ("kto_tag", pa.bool_())])
    if fmt == "sharegpt":
        return pa.schema([("conversations", pa.list_(FROM_VALUE)), ("system", S), ("tools", S),
                          ("chosen", FROM_VALUE), ("rejected", FROM_VALUE), ("kto_tag", pa.bool_())])
    if fmt == "openai":
        return pa.schema([("messages", MESSAGES), ("tools", S), ("parallel_tool_calls", pa.bool_())])
    if fmt == "openai-pref":
        inp = pa.struct([("messages", MESSAGES), ("tools", S), ("parallel_tool_calls", pa.bool_())])
        return pa.schema([("input", inp), ("preferred_output", MESSAGES), ("non_preferred_output", MESSAGES)])
    if fmt == "trl":
        t = S if opts.get("style") == "standard" else MESSAGES
        return pa.schema([("messages", MESSAGES), ("prompt", t), ("completion", t), ("chosen", t), ("rejected", t),
                          ("label", pa.bool_()), ("tools", S), ("chat_template_kwargs", S)])
    if fmt == "hh":
        return pa.schema([("chosen", S), ("rejected", S)])
    if fmt == "rated":
        comp = pa.struct([("response", S), ("model", S), ("score", pa.float64()), ("ratings", pa.map_(S, pa.float64()))])
        return pa.schema([("prompt", MESSAGES), ("completions", pa.list_(comp))])
    if fmt == "qa":
        return pa.schema([(c, S) for c in dict.fromkeys(qa.fields(opts).values())])
    raise InputError(f"no Parquet schema for format {fmt!r}")


def _json_str(v: Any) -> Any:
    return v if v is None or isinstance(v, str) else orjson.dumps(v).decode()


_STRUCT_KEYS = {"role", "content", "name", "tool_calls", "tool_call_id", "weight"}
_PTDATA_KEYS = _STRUCT_KEYS | {"reasoning", "parts", "reasoning_wrap"}


def _unfit_field(col: str, msgs: Any, keys: set) -> str | None:
    """`col[i].field` of a message field the Parquet struct has no column for (pyarrow would drop
    it silently), else None."""
    if not isinstance(msgs, list) or not msgs or not isinstance(msgs[0], dict) or "role" not in msgs[0]:
        return None
    for i, m in enumerate(msgs):
        if isinstance(m, dict) and len(m) > 2 and isinstance(m.get("content"), str) and not keys.issuperset(m):
            return f"{col}[{i}].{sorted(set(m) - keys)[0]}"
    return None


def _arrow_messages(msgs: Any, keys: set = _STRUCT_KEYS) -> Any:
    if not isinstance(msgs, list) or not msgs or not isinstance(msgs[0], dict) or "role" not in msgs[0]:
        return msgs
    if "parts" in keys and any(isinstance(m, dict) and m.get("parts") is not None for m in msgs):
        msgs = [{**m, "parts": _json_str(m["parts"])} if m.get("parts") is not None else m for m in msgs]
    if not any(isinstance(m, dict) and m.get("tool_calls") for m in msgs):
        return msgs
    out = []
    for m in msgs:
        if m.get("tool_calls"):
            m = {**m, "tool_calls": [{**c, "function": {**c["function"], "arguments": _json_str(c["function"]["arguments"])}}
                                     for c in m["tool_calls"]]}
        out.append(m)
    return out


def arrow_row(row: dict) -> dict:
    """Make one writer row fit the fixed Parquet schema (JSON-encode the free-form parts)."""
    out = {}
    keys = _PTDATA_KEYS if "kind" in row and "meta" in row else _STRUCT_KEYS
    for k, v in row.items():
        if k in ("tools", "meta", "chat_template_kwargs"):
            v = _json_str(v)
        elif k == "input" and isinstance(v, dict):
            bad = _unfit_field("input.messages", v.get("messages"), keys)
            if bad:
                out[bad] = None
            v = {**v, "messages": _arrow_messages(v.get("messages")), "tools": _json_str(v.get("tools"))}
        elif isinstance(v, list):
            bad = _unfit_field(k, v, keys)
            if bad:  # a key the schema lacks: the writer refuses the row (not_representable), naming the field
                out[bad] = None
            v = _arrow_messages(v, keys)
        out[k] = v
    return out
