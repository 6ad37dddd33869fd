"""Peer check: TRL's own data utilities accept our TRL output and agree with our prompt extraction.

Needs the `trl` extra (installed by .ci/run); every HH-RLHF pair in ../shared/data is checked.
"""
from __future__ import annotations

import orjson
import pytest

from ptdata import ReadOptions, convert
from ptdata.formats import trl as trl_fmt

from .conftest import load_jsonl, shared

trl_data_utils = pytest.importorskip("trl.data_utils", reason="install the trl extra: pip install -e '.[trl]'")
datasets = pytest.importorskip("datasets")

pytestmark = pytest.mark.trl
RO = ReadOptions(validate=False)


@pytest.fixture(scope="module")
def hh_trl(tmp_path_factory):
    d = tmp_path_factory.mktemp("trl")
    src = shared("hh_rlhf_harmless_test.jsonl.gz")
    out = {}
    for mode in ("explicit", "implicit", "unpaired"):
        c = convert(src, d / f"{mode}.jsonl", "trl", RO, write_opts={"preference": mode})
        assert c.records_in == 2312 == c.kept
        out[mode] = load_jsonl(d / f"{mode}.jsonl")
    return out


def test_is_conversational_accepts_every_row(hh_trl):
    for mode, rows in hh_trl.items():
        assert all(trl_data_utils.is_conversational(r) for r in rows), mode


def test_maybe_extract_prompt_agrees_on_every_pair(hh_trl):
    explicit, implicit = hh_trl["explicit"], hh_trl["implicit"]
    assert len(implicit) == 2312
    for ours, imp in zip(explicit, implicit, strict=True):
        theirs = trl_data_utils.maybe_extract_prompt(imp)
        assert theirs["prompt"] == ours["prompt"]
        assert theirs["chosen"] == ours["chosen"] and theirs["rejected"] == ours["rejected"]
        # with an explicit prompt TRL leaves the example alone
        assert trl_data_utils.maybe_extract_prompt(ours) == ours


def test_standard_string_prompt_extraction_matches_trl(hh_rows):
    """Our character-level rule (space before the divergence goes to the completion) equals TRL's."""
    for row in hh_rows:
        theirs = trl_data_utils.extract_prompt({"chosen": row["chosen"], "rejected": row["rejected"]})
        i = trl_fmt.extract_prompt_str(row["chosen"], row["rejected"])
        assert (row["chosen"][:i], row["chosen"][i:], row["rejected"][i:]) == (theirs["prompt"], theirs["chosen"], theirs["rejected"])
        rec = trl_fmt.read_implicit({"chosen": row["chosen"], "rejected": row["rejected"]}, {})
        assert rec.messages[0]["content"] == theirs["prompt"] and rec.chosen[0]["content"] == theirs["chosen"]


def test_unpair_preference_dataset_matches_our_unpaired_rows(hh_trl):
    ds = datasets.Dataset.from_list(hh_trl["explicit"])
    theirs = trl_data_utils.unpair_preference_dataset(ds)
    assert len(theirs) == 2 * 2312
    key = lambda r: orjson.dumps({k: r[k] for k in ("prompt", "completion", "label")}, option=orjson.OPT_SORT_KEYS)
    assert sorted(map(key, theirs)) == sorted(map(key, hh_trl["unpaired"]))
    # and our reader takes TRL's unpaired rows back as labelled preference records
    rows = [dict(r) for r in theirs.select(range(10))]
    recs = [trl_fmt.read(r, {}) for r in rows]
    assert all(r.kind == "preference" and r.meta["label"] == row["label"] for r, row in zip(recs, rows))
