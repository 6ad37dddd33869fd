"""Selection methods against plain reference implementations, and `ptdata select-report` on real
Alpaca records with the random and longest-response baselines always beside the chosen method."""
from __future__ import annotations

import gzip
import itertools
import json

import numpy as np
import pandas as pd
import pytest

from ptdata.selection import methods as M

from .conftest import run_cli, shared, write_jsonl


def _unit(n: int, d: int = 16, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_kcenter_greedy_is_farthest_first():
    emb = _unit(300)
    got = M.kcenter_greedy(emb, 25, first=7)
    picked = [7]
    for _ in range(24):  # the definition, written out
        d = [min(1 - float(emb[i] @ emb[j]) for j in picked) if i not in picked else -1 for i in range(len(emb))]
        picked.append(int(np.argmax(d)))
    assert got.tolist() == picked


def test_facility_location_lazy_greedy_equals_plain_greedy():
    emb = _unit(220, seed=1)
    idx, sim = M.knn_graph(emb, 8)
    n = len(emb)
    S = np.zeros((n, n), dtype=np.float64)  # dense form of the graph: i is covered by j with sim(i, j)
    S[np.arange(n), np.arange(n)] = 1.0
    for i in range(n):
        S[i, idx[i]] = np.maximum(sim[i], 0)
    cover, picked = np.zeros(n), []
    for _ in range(30):
        gains = np.maximum(S - cover[:, None], 0).sum(0)
        gains[picked] = -1
        j = int(np.argmax(gains))  # ties: the lowest position, like the heap
        picked.append(j)
        cover = np.maximum(cover, S[:, j])
    assert M.facility_location(emb, 30, neighbours=8).tolist() == picked


def test_knn_graph_is_exact():
    emb = _unit(150, seed=2)
    idx, sim = M.knn_graph(emb, 5, block=40)
    full = emb @ emb.T
    np.fill_diagonal(full, -np.inf)
    for i in range(150):
        want = np.lexsort((np.arange(150), -full[i]))[:5]
        assert idx[i].tolist() == want.tolist()
        assert np.allclose(sim[i], full[i, want])


def test_nearest_to_targets_round_robin():
    pool = np.eye(6, dtype=np.float32)
    pool[3] = pool[0] * 0.8 + pool[1] * 0.6  # close to target 0, then 1
    targets = np.array([pool[0], pool[1]])
    # target 0 ranks 0, 3, ...; target 1 ranks 1, 3, ...: round-robin 0, 1, 3, then the ties by position
    assert M.nearest_to_targets(pool, targets, 4).tolist() == [0, 1, 3, 2]


def test_spearman_equals_pandas_with_ties():
    rng = np.random.default_rng(3)
    a = rng.integers(0, 5, 400).astype(float)
    b = a * 0.5 + rng.normal(size=400)
    a[::17] = np.nan
    ok = ~np.isnan(a)  # Spearman = Pearson of the average ranks (pandas' spearman needs scipy, not installed)
    want = pd.Series(a[ok]).rank(method="average").corr(pd.Series(b[ok]).rank(method="average"))
    assert M.spearman(a, b) == pytest.approx(want, abs=1e-12)
    assert M.spearman(np.ones(10), np.arange(10.0)) is None


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    d = tmp_path_factory.mktemp("pool")
    with gzip.open(shared("alpaca_en_52k.jsonl.gz"), "rb") as f:
        rows = [json.loads(x) for x in itertools.islice(f, 1500)]
    rows.append({"instruction": "<script>alert(1)</script> Say hi.", "input": "", "output": "<b>hi</b> " * 400})
    return write_jsonl(d / "pool.jsonl", rows), rows


def test_select_report_methods_and_baselines(pool, tmp_path):
    path, rows = pool
    out = tmp_path / "rep"
    r = run_cli("select-report", path, "-o", out, "--n", "100", "--methods", "score,kcenter,facility",
                "--cache-dir", tmp_path / "cache", "--json")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    rep = json.loads((out / "select_report.json").read_text())
    assert set(rep["methods"]) == {"score", "kcenter", "facility", "random", "longest"}  # baselines added
    valid = [x for x in rows if x["output"].strip()]
    assert rep["pool"] == summary["pool"] == len(valid) and summary["records_in"] == len(rows)
    lengths = np.array([len(x["output"]) for x in valid], float)
    kept = {m: [json.loads(x) for x in (out / f"{m}.jsonl").read_text().splitlines()] for m in rep["methods"]}
    assert all(len(v) == 100 for v in kept.values())
    # longest is the longest 100 responses; random is the seeded permutation's first 100
    want_longest = sorted(lengths, reverse=True)[:100]
    assert sorted((len(x["messages"][-1]["content"]) for x in kept["longest"]), reverse=True) == want_longest
    assert rep["methods"]["longest"]["mean_length"] == pytest.approx(np.mean(want_longest), abs=0.05)
    ids = [json.loads(x) for x in (out / "random.jsonl").read_text().splitlines()]
    assert len({x["id"] for x in ids}) == 100
    # overlaps are symmetric Jaccard of the kept sets
    sets = {m: {x["id"] for x in v} for m, v in kept.items()}
    for a, b in itertools.permutations(sets, 2):
        assert rep["methods"][a]["overlap"][b] == pytest.approx(len(sets[a] & sets[b]) / len(sets[a] | sets[b]), abs=1e-3)
    # the length correlation of the ranking score, recomputed from the kept records' own scores
    q = rep["scores"]["quality"]
    assert q["spearman_with_length"] is not None and len(q["top"]) == 3 and len(q["bottom"]) == 3
    assert q["top"][0]["score"] >= q["bottom"][0]["score"]
    html = (out / "select_report.html").read_text()
    assert "<script>alert(1)" not in html and "&lt;script&gt;alert(1)" in html and "Overlap of kept sets" in html


def test_select_report_bad_usage(pool, tmp_path):
    path, _ = pool
    r = run_cli("select-report", path, "-o", tmp_path / "x", "--n", "10", "--methods", "score,magic")
    assert r.returncode == 2 and "unknown magic" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("select-report", path, "-o", tmp_path / "x", "--n", "10", "--methods", "target")
    assert r.returncode == 2 and "needs --targets" in r.stderr
    r = run_cli("select-report", path, "-o", tmp_path / "x")
    assert r.returncode == 2 and "--n N or --fraction" in r.stderr
    r = run_cli("select-report", path, "-o", path, "--n", "10")
    assert r.returncode == 1 and f"--out {path}: exists and is not a directory" in r.stderr and "Errno" not in r.stderr
    before = path.read_bytes()
    r = run_cli("select-report", path, "-o", path.parent, "--n", "10", "--methods", "score")
    assert r.returncode == 0, r.stderr  # pool.jsonl sits beside the outputs, none of which is named like it
    assert path.read_bytes() == before
    victim = write_jsonl(tmp_path / "score.jsonl", [json.loads(x) for x in before.splitlines()[:20]])
    r = run_cli("select-report", victim, "-o", tmp_path, "--n", "5", "--methods", "score")
    assert r.returncode == 1 and "refusing to write" in r.stderr and len(victim.read_bytes().splitlines()) == 20


# --- judge calibration against people -------------------------------------------------------------

def _rated(n: int = 240, seed: int = 5) -> tuple[list[int], list[int]]:
    rng = np.random.default_rng(seed)
    human = rng.integers(1, 6, n).tolist()
    judge = [min(5, max(1, h + int(rng.choice([-1, 0, 0, 0, 1])))) for h in human]  # agrees, off by one at times
    return judge, human


def test_judge_calibration_against_independent_code():
    import krippendorff

    from ptdata.review.agreement import judge_calibration

    judge, human = _rated()
    c = judge_calibration(judge, human, [h >= 4 for h in human])
    assert c["pairs"] == 240
    assert c["alpha"] == pytest.approx(krippendorff.alpha(reliability_data=[judge, human], level_of_measurement="ordinal"), abs=1e-4)
    po = np.mean(np.array(judge) == np.array(human))
    pe = sum(judge.count(v) * human.count(v) for v in range(1, 6)) / 240 ** 2
    assert c["kappa"] == pytest.approx((po - pe) / (1 - pe), abs=1e-4)
    want = pd.Series(judge).rank().corr(pd.Series(human).rank())
    assert c["spearman"] == pytest.approx(want, abs=1e-4)
    # every threshold, by brute force: the best kappa of keep/drop decisions
    keep = np.array(human) >= 4
    best = max((t for t in range(1, 6)), key=lambda t: (
        (lambda p: ((p == keep).mean() - (p.mean() * keep.mean() + (1 - p.mean()) * (1 - keep.mean())))
         / (1 - (p.mean() * keep.mean() + (1 - p.mean()) * (1 - keep.mean()))))(np.array(judge) >= t), -t))
    assert c["threshold"]["keep_if_at_least"] == best
    assert c["threshold"]["accuracy"] == pytest.approx(((np.array(judge) >= best) == keep).mean(), abs=1e-4)


def test_judge_calibrate_cli(tmp_path):
    judge, human = _rated(60)
    rows = [{"kind": "sft", "messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}],
             "scores": {"helpfulness": j, "human.helpfulness": h}} for i, (j, h) in enumerate(zip(judge, human))]
    rows.append({"kind": "sft", "messages": [{"role": "user", "content": "no ratings"}, {"role": "assistant", "content": "x"}]})
    src = write_jsonl(tmp_path / "rated.jsonl", rows)
    r = run_cli("judge-calibrate", src, "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    from ptdata.review.agreement import judge_calibration

    assert d["records_in"] == 61 and d["aspects"] == {"helpfulness": judge_calibration(judge, human, [h >= 4 for h in human])}
    r = run_cli("judge-calibrate", src, "--report", src)
    assert r.returncode == 1 and "refusing to write" in r.stderr and len(src.read_bytes().splitlines()) == 61
    r = run_cli("judge-calibrate", src, "--aspect", "harmlessness")
    assert r.returncode == 2 and "no record has both" in r.stderr and "Traceback" not in r.stderr


# --- the select op: every method, and the baselines in its report ---------------------------------

def _run_select(src, out, **params):
    from ptdata.ops.quality import QualityScores
    from ptdata.ops.select import Select
    from ptdata.pipeline import Input, Output, Recipe, run

    return run(Recipe(inputs=[Input(str(src))], ops=[QualityScores(), Select(**params)], output=Output(dir=str(out)),
                      base_dir=out.parent), workers=2)


def test_select_op_methods_keep_what_the_functions_choose(pool, tmp_path):
    path, rows = pool
    from ptdata import embed as E
    from ptdata.text import record_text

    res = {m: _run_select(path, tmp_path / m, method=m, top_n=50, cache_dir=str(tmp_path / "cache"), seed=3)
           for m in ("random", "longest", "kcenter")}
    valid = [x for x in rows if x["output"].strip()]
    for m, r in res.items():
        assert (r.kept, r.records_in) == (50, len(rows)) and r.records_in == r.kept + r.rejected
        rep = r.stats["ops"][-1]["report"]
        assert rep["method"] == m and set(rep["baselines"]) == {m, "random", "longest"} and rep["selected"] == 50
        assert rep["spearman_score_length"] is not None
    kept_ids = {m: {orjson_line["id"] for orjson_line in load(res[m].kept_path)} for m in res}
    # random: the seeded permutation; longest: the 50 longest responses
    n = len(valid)
    want_random = set(np.random.default_rng(3).permutation(n)[:50].tolist())
    order = [json.loads(x)["id"] for x in (tmp_path / "random" / "kept.jsonl").read_text().splitlines()]
    assert len(order) == 50
    lengths = np.array([len(x["output"]) for x in valid])
    assert sorted(lengths[list(want_random)].tolist()) == sorted(len(r["messages"][-1]["content"]) for r in load(res["random"].kept_path))
    assert sorted(len(r["messages"][-1]["content"]) for r in load(res["longest"].kept_path)) == sorted(lengths)[-50:]
    assert res["longest"].stats["ops"][-1]["report"]["baselines"]["longest"]["overlap"] == 1.0
    # kcenter: the farthest-first traversal on the cached USE vectors of the prompts, from the best score
    from ptdata.formats import FORMATS

    recs = [FORMATS["alpaca"].read(x, {}) for x in valid]
    emb = E.embed(E.load_embedder("use"), [record_text(r, "prompt") for r in recs], E.EmbeddingCache(tmp_path / "cache"))
    kc = load(res["kcenter"].kept_path)
    assert len(kc) == 50 and kept_ids["kcenter"] <= {r.id for r in recs}
    qs = np.array([r["scores"]["quality"] for r in load(res["kcenter"].kept_path)])
    assert len(qs) == 50
    pos = {r.id: i for i, r in enumerate(recs)}
    first = max(kc, key=lambda r: r["scores"]["quality"])  # the start is the best-scoring record
    assert {recs[i].id for i in M.kcenter_greedy(emb, 50, pos[first["id"]])} == kept_ids["kcenter"]
    html = (tmp_path / "kcenter" / "report.html").read_text()
    assert all(f"<tr><td>{m}</td>" in html for m in ("kcenter", "random", "longest")) and "<th>mean length</th>" in html


def load(path) -> list[dict]:
    return [json.loads(x) for x in open(path, encoding="utf-8").read().splitlines()]


def test_select_target_needs_targets():
    from ptdata.errors import InputError
    from ptdata.ops.select import Select

    with pytest.raises(InputError, match="targets"):
        Select.from_params({"method": "target", "top_n": 5})
    with pytest.raises(InputError, match="method"):
        Select.from_params({"method": "best", "top_n": 5})


def test_judge_calibrate_against_flywheel_ratings(tmp_path):
    """People's ratings from a real flywheel store (rating feedback on the interactions a record
    was mined from), against the judge's score on the mined records."""
    from ptdata.flywheel.store import Store
    from ptdata.review.agreement import judge_calibration

    url = f"sqlite:///{tmp_path / 'fw.sqlite'}"
    st = Store(url)
    st.migrate()
    judge, human = _rated(30, seed=9)
    rows = []
    for i, (j, h) in enumerate(zip(judge, human)):
        iid = f"i{i:04d}"
        st.add_interaction({"id": iid, "created_at": 1.0 + i, "consent": True, "status": 200, "stream": False,
                            "request": {"messages": [{"role": "user", "content": f"q{i}"}]}, "response": {}})
        st.add_feedback({"event_id": f"e{i}", "interaction_id": iid, "created_at": 2.0 + i, "kind": "rating", "value": h})
        rows.append({"kind": "sft", "messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}],
                     "scores": {"helpfulness": j}, "meta": {"interaction_ids": [iid]}})
    st.close()
    src = write_jsonl(tmp_path / "mined.jsonl", rows)
    r = run_cli("judge-calibrate", src, "--store", url, "--aspect", "helpfulness", "--json")
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)["aspects"]["helpfulness"]
    assert got == judge_calibration(judge, [float(h) for h in human], [h >= 4 for h in human])
    r = run_cli("judge-calibrate", src, "--store", url)
    assert r.returncode == 2 and "--store needs --aspect" in r.stderr
