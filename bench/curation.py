"""Side-by-side curation benchmark: ptdata vs datatrove vs data-juicer (each in its own venv),
plus a plain-Python floor, on three workloads of 520,020 records, in one run.

Workloads (built deterministically from ../shared/data, cached under bench/_work/cur_<name>/):
  x10       Alpaca EN x10: every line ten times (90% repeated lines).
  distinct  Alpaca EN x10 where every copy differs: copy 0 is the original, copies 1..9 each insert
            one word from a fixed vocabulary at a seeded position in `output` (no repeated line).
  mixed     Alpaca EN 52k + Alpaca ZH 17k + GSM8K train (as {instruction: question, input: "",
            output: answer}), then distinct variants of those (English: an inserted word; Chinese:
            an inserted character from a fixed list) up to 95% of 520,020, then 5% exact repeats
            of random lines of that set at random positions.
Recipes: (a) read, length filter (10..10,000 chars), exact dedup, write;
         (b) read, MinHash near-dedup at Jaccard 0.8 (5-word shingles, 128 hashes), write.
Every engine runs as a subprocess with 2 workers; wall time and the peak RSS of its whole
process tree (sampled every 50 ms) are recorded, and so is the CPU other processes used
meanwhile. The machine is shared: each run waits for it to be quiet (other processes below
--quiet cores for 2 s, at most --max-wait s), and a run during which others used more than
--quiet cores is run again (--retries times for the fast engines, once for the peers). The
engines that take seconds (the floor and ptdata's) run --repeat times, interleaved, and their
median is reported with the range; datatrove and data-juicer run once. --scaling adds recipe
(a) by ptdata on the first 1/4, 1/2 and all of the distinct workload (wall time and peak RSS
per size, medians of --repeat interleaved runs).

Setup (once): python3 -m venv bench/_venvs/datatrove && bench/_venvs/datatrove/bin/pip install "datatrove[io,processing,cli]==0.10.1" spacy
              python3 -m venv bench/_venvs/datajuicer && bench/_venvs/datajuicer/bin/pip install torch==2.13.0+cpu && \\
              bench/_venvs/datajuicer/bin/pip install py-data-juicer==1.6.1 aiohttp
Run:          .venv/bin/python bench/curation.py --repeat 3 --scaling --results bench/RESULTS.md
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import orjson
import psutil

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "bench" / "_work"
VENVS = ROOT / "bench" / "_venvs"
ENGINES = ROOT / "bench" / "engines"
DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT / "bench"))
from convert import update_results  # noqa: E402

TARGET = 520_020  # records per workload: Alpaca EN x10
EN_WORDS = "indeed notably clearly briefly also often simply really quite rather generally usually typically basically certainly".split()
ZH_CHARS = list("的了是在也都就很还又")
GEN = 2  # bump when a generator changes: cached workloads are rebuilt
PEERS = ("datatrove", "datajuicer")


def _lines(name: str) -> list[bytes]:
    return gzip.open(DATA / f"{name}.jsonl.gz", "rb").read().splitlines()


def _insert_word(text: str, rng: random.Random) -> str:
    words = text.split(" ")
    words.insert(rng.randrange(len(words) + 1), EN_WORDS[rng.randrange(len(EN_WORDS))])
    return " ".join(words)


def _insert_char(text: str, rng: random.Random) -> str:
    pos = rng.randrange(len(text) + 1)
    return text[:pos] + ZH_CHARS[rng.randrange(len(ZH_CHARS))] + text[pos:]


def gen_copies(copies: int) -> list[bytes]:
    """Alpaca x N, the original bytes repeated."""
    return _lines("alpaca_en_52k") * copies


def gen_distinct(copies: int = 10, seed: int = 0) -> list[bytes]:
    """Copy 0 is Alpaca as it is; copy k >= 1 inserts one vocabulary word at a seeded place in each output."""
    rng = random.Random(seed)
    rows = [orjson.loads(line) for line in _lines("alpaca_en_52k")]
    out = [orjson.dumps(r) for r in rows]
    for _ in range(1, copies):
        out += [orjson.dumps({**r, "output": _insert_word(r["output"], rng)}) for r in rows]
    return out


def gen_mixed(target: int = TARGET, repeated: float = 0.05, seed: int = 1) -> list[bytes]:
    """EN + ZH + GSM8K, then distinct variants of them (a word / a character inserted in the output)
    up to (1 - repeated) of target, then exact repeats of random lines of that set at random places.
    Inserting m lines one by one at uniform places gives a uniformly random choice of the m final
    positions, so the repeats are placed in one pass (no O(n^2) list inserts)."""
    rng = random.Random(seed)
    def alpaca(line: bytes) -> dict:  # every row with the three fields (one Chinese row has no "input")
        r = orjson.loads(line)
        return {"instruction": r.get("instruction", ""), "input": r.get("input", ""), "output": r.get("output", "")}

    en = [alpaca(line) for line in _lines("alpaca_en_52k")]
    zh = [alpaca(line) for line in _lines("alpaca_zh_17k")]
    gsm = [{"instruction": r["question"], "input": "", "output": r["answer"]} for r in map(orjson.loads, _lines("gsm8k_train"))]
    base = [(r, False) for r in en] + [(r, True) for r in zh] + [(r, False) for r in gsm]
    n_distinct = int(target * (1 - repeated))
    lines = []
    for k in range(n_distinct):
        r, is_zh = base[k % len(base)]
        if k >= len(base):
            o = r.get("output", "")
            r = {**r, "output": _insert_char(o, rng) if is_zh else _insert_word(o, rng)}
        lines.append(orjson.dumps(r))
    n_rep = target - n_distinct
    slots = set(rng.sample(range(target), n_rep))
    it = iter(lines)
    return [lines[rng.randrange(n_distinct)] if i in slots else next(it) for i in range(target)]


def workload_lines(name: str) -> list[bytes]:
    if m := re.fullmatch(r"x(\d+)", name):
        return gen_copies(int(m.group(1)))
    if name == "distinct":
        return gen_distinct()
    if name == "mixed":
        return gen_mixed()
    raise SystemExit(f"unknown workload {name!r}: x<N>, distinct or mixed")


def materialize(base: Path, make, peers: bool = True) -> dict:
    """One workload as the engines read it: alpaca.jsonl (floor, ptdata), parts/ of 10 files
    (datatrove parallelizes by file), text.jsonl with {"text"} (data-juicer). `make()` gives the
    lines; it is called only when the cached copy is missing or was built by another generator."""
    meta = base / "meta.json"
    want = {"gen": GEN, "peers": peers}
    have = json.loads(meta.read_text()) if meta.exists() else {}
    if {k: have.get(k) for k in want} != want:
        lines = make()
        shutil.rmtree(base, ignore_errors=True)
        base.mkdir(parents=True)
        (base / "alpaca.jsonl").write_bytes(b"\n".join(lines) + b"\n")
        if peers:
            parts = base / "parts"
            parts.mkdir()
            step = -(-len(lines) // 10)
            for i in range(10):
                (parts / f"part{i:02d}.jsonl").write_bytes(b"".join(line + b"\n" for line in lines[i * step:(i + 1) * step]))
            with open(base / "text.jsonl", "wb") as f:
                for line in lines:
                    r = orjson.loads(line)
                    f.write(orjson.dumps({"text": f"{r['instruction']}\n{r['input']}\n{r['output']}"}) + b"\n")
        have = {**want, "n": len(lines)}
        meta.write_text(json.dumps(have))
    return {"alpaca": base / "alpaca.jsonl", "parts": base / "parts", "text": base / "text.jsonl", "n": have["n"]}


def prepare(name: str) -> dict:
    return materialize(WORK / f"cur_{name}", lambda: workload_lines(name))


def _busy() -> float:
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def measure(cmd: list[str], timeout: int, log: Path) -> dict:
    """Run one engine; its output goes to a log file (a pipe nobody reads would block a chatty engine).
    `others` is the CPU (in cores, averaged over the run) that processes outside the engine used."""
    load = os.getloadavg()[0]
    busy0, ru0 = _busy(), resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    logf = open(log, "w")
    p = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, text=True,
                         env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
    peak = 0
    proc = psutil.Process(p.pid)
    status = "ok"
    cpu: dict[tuple, float] = {}  # (pid, start) -> last seen user + system seconds of each process in the tree
    while p.poll() is None:
        rss = 0
        try:
            tree = [proc] + proc.children(recursive=True)
        except psutil.Error:
            tree = []
        for c in tree:
            try:
                with c.oneshot():
                    rss += c.memory_info().rss
                    ct = c.cpu_times()
                    cpu[(c.pid, c.create_time())] = ct.user + ct.system
            except psutil.Error:
                pass
        peak = max(peak, rss)
        if time.perf_counter() - t > timeout:
            for c in proc.children(recursive=True):
                c.kill()
            p.kill()
            status = "timeout"
            break
        time.sleep(0.05)
    p.wait()
    wall = time.perf_counter() - t
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU of the engine's tree: what the kernel reports for reaped descendants misses workers whose parent
    # never waits for them (forkserver children, say), sampling misses each process's last 50 ms: take the larger.
    own = max((ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime), sum(cpu.values()))
    others = max(0.0, _busy() - busy0 - own) / wall
    logf.close()
    out = log.read_text(errors="replace")
    if p.returncode not in (0, None) and status == "ok":
        status = f"failed (exit {p.returncode}): {out.strip().splitlines()[-1][:160] if out.strip() else ''}"
    m = re.search(r"kept=(\d+)", out)
    return {"wall": wall, "rss_mb": peak / 2**20, "kept": int(m.group(1)) if m else None, "status": status,
            "cpu": own / wall, "others": others, "load": load}


def engine_cmd(eng: str, recipe: str, data: dict, work: Path, workers: int, py: dict) -> list[str]:
    if eng == "floor":
        return [sys.executable, str(ENGINES / "floor.py"), str(data["alpaca"]), str(work / "out.jsonl")]
    if eng.startswith("ptdata"):
        return [py["ptdata"], str(ENGINES / "ptdata_run.py"), recipe, str(data["alpaca"]), str(work), str(workers),
                "full" if eng == "ptdata-full-rejects" else "compact"]
    if eng == "datatrove":
        return [py["datatrove"], str(ENGINES / "datatrove_run.py"), recipe, str(data["parts"]), str(work), str(workers)]
    return [py["datajuicer"], str(ENGINES / "datajuicer_run.py"), recipe, str(data["text"]), str(work), str(workers)]


def wait_quiet(limit: float, max_wait: float) -> float:
    """Wait (at most max_wait s) until the machine has been quiet for 2 s: other processes below `limit` cores."""
    t0, calm = time.perf_counter(), 0
    while calm < 2 and time.perf_counter() - t0 < max_wait:
        b0 = _busy()
        time.sleep(1)
        calm = calm + 1 if _busy() - b0 < limit else 0
    return time.perf_counter() - t0


def run_one(eng: str, recipe: str, data: dict, tag: str, args, py: dict, raw: list) -> dict:
    """One measured run, started once the machine is quiet. A run during which other processes used more
    than --quiet cores is marked `loaded` and run again: up to --retries times for the fast engines,
    once for datatrove and data-juicer. The last run is kept whatever its load."""
    tries = 1 + (min(1, args.retries) if eng in PEERS else args.retries)
    for i in range(tries):
        waited = wait_quiet(args.quiet, args.max_wait)
        work = WORK / f"run_{eng}_{recipe}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        os.sync()  # the previous engine's output is on disk: nobody pays for another's dirty pages
        r = measure(engine_cmd(eng, recipe, data, work, args.workers, py), args.timeout, WORK / f"log_{tag}_{eng}_{recipe}.txt")
        r.update(recipe=recipe, engine=eng, workload=tag, waited=waited)
        shutil.rmtree(work, ignore_errors=True)
        loaded = r["status"] == "ok" and r["others"] > args.quiet and i < tries - 1
        r["loaded"] = loaded
        print(r, flush=True)
        raw.append(r)
        (WORK / "curation_raw.json").write_text(json.dumps(raw, indent=1))
        if not loaded:
            return r
    return r


CURATION_SRC = [f"src/ptdata/{p}" for p in ("pipeline", "ops", "formats", "reader.py", "records.py", "io.py", "json_scan.py", "parallel.py",
                                              "text.py", "validation.py", "content.py", "params.py", "report")]


def ptdata_commit() -> str:
    """The commit the ptdata runs used (read-only git), marked + when the code these recipes run had uncommitted changes."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=30).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", *CURATION_SRC], cwd=ROOT, capture_output=True, text=True, timeout=30).stdout.strip()
        return (head + ("+" if dirty else "")) or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def peer_version(py: str, dist: str) -> str | None:
    if not Path(py).exists():
        return None
    try:
        return subprocess.run([py, "-c", f"import importlib.metadata as m; print(m.version({dist!r}))"], capture_output=True,
                              text=True, timeout=60).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workloads", default="x10,distinct,mixed", help="x<N> (Alpaca x N), distinct, mixed")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--timeout", type=int, default=1800)
    ap.add_argument("--engines", default="floor,ptdata,ptdata-full-rejects,datatrove,datajuicer")
    ap.add_argument("--recipes", default="a,b")
    ap.add_argument("--scaling", action="store_true", help="recipe (a), ptdata, on 1/4, 1/2 and all of the distinct workload")
    ap.add_argument("--results", type=Path)
    ap.add_argument("--section", default="curation",
                    help="RESULTS.md section to write (another name keeps the full comparison beside a partial rerun)")
    ap.add_argument("--repeat", type=int, default=3, help="runs of the floor and ptdata engines (median reported)")
    ap.add_argument("--quiet", type=float, default=0.3, help="a run is loaded when other processes used more cores than this")
    ap.add_argument("--retries", type=int, default=3, help="reruns of a loaded fast run (peers: at most 1)")
    ap.add_argument("--max-wait", type=float, default=120, help="seconds to wait for a quiet machine before each run")
    args = ap.parse_args()
    engines = args.engines.split(",")
    py = {"ptdata": sys.executable, "datatrove": str(VENVS / "datatrove" / "bin" / "python"),
          "datajuicer": str(VENVS / "datajuicer" / "bin" / "python")}
    versions = {"datatrove": peer_version(py["datatrove"], "datatrove"), "datajuicer": peer_version(py["datajuicer"], "py-data-juicer")}
    raw: list[dict] = []
    started = time.time()
    args.commit = ptdata_commit()
    rows, sizes, datas = [], {}, {}
    for tag in args.workloads.split(","):  # all inputs first: a generator's error shows before any run
        t = time.perf_counter()
        datas[tag] = prepare(tag)
        sizes[tag] = datas[tag]["n"]
        print(f"workload {tag}: {sizes[tag]:,} records ({time.perf_counter() - t:.1f} s to prepare)", flush=True)
    if args.scaling:  # prefixes of the distinct workload
        full = prepare("distinct")
        parts = [("1/4", full["n"] // 4), ("1/2", full["n"] // 2), ("full", full["n"])]
        scale = {label: full if n == full["n"] else
                 materialize(WORK / f"cur_distinct_{label.replace('/', 'of')}", lambda n=n: workload_lines("distinct")[:n], peers=False)
                 for label, n in parts}
    for tag, data in datas.items():
        for recipe in args.recipes.split(","):
            fast = [e for e in engines if e.startswith("ptdata") or (e == "floor" and recipe == "a")]
            runs: dict[str, list[dict]] = {}
            for eng in [e for _ in range(args.repeat) for e in fast] + [e for e in engines if e in PEERS]:
                if eng in PEERS and not versions[eng]:
                    runs[eng] = [{"recipe": recipe, "engine": eng, "workload": tag, "status": "not installed"}]
                    continue
                runs.setdefault(eng, []).append(run_one(eng, recipe, data, tag, args, py, raw))
            rows += [median_run(runs[e]) for e in engines if e in runs]
    scaling = []
    if args.scaling:
        runs = {}
        for _ in range(args.repeat):
            for label, _n in parts:
                runs.setdefault(label, []).append(run_one("ptdata", "a", scale[label], f"distinct_{label.replace('/', 'of')}", args, py, raw))
        scaling = [{**median_run(runs[label]), "size": label, "n": n} for label, n in parts]
    text = report(rows, scaling, sizes, versions, raw, started, args)
    print(text)
    if args.results:
        update_results(args.results, args.section, text)


def median_run(rs: list[dict]) -> dict:
    """One engine's runs as one row: the median wall time (with the range), the highest peak RSS."""
    ok = [r for r in rs if r.get("status") == "ok" and not r.get("loaded")]
    if not ok:
        return rs[0]
    walls = sorted(r["wall"] for r in ok)
    mid = sorted(ok, key=lambda r: r["wall"])[(len(ok) - 1) // 2]
    return {**mid, "rss_mb": max(r["rss_mb"] for r in ok), "runs": len(ok), "range": (walls[0], walls[-1]),
            "others_max": max(r["others"] for r in ok)}


WORKLOAD_TITLE = {"distinct": "distinct: Alpaca x10, every copy differs by one inserted word",
                  "mixed": "mixed: Alpaca EN + ZH + GSM8K + distinct variants, 5% repeated lines"}
LABEL = {"floor": "floor", "ptdata": "ptdata", "ptdata-full-rejects": "ptdata-full-rejects", "datatrove": "datatrove",
         "datajuicer": "data-juicer"}


def _wall(r: dict) -> str:
    if r.get("status") != "ok":
        return r.get("status", "")
    return f"{r['wall']:.2f}" + (f" [{r['range'][0]:.2f}-{r['range'][1]:.2f}]" if r.get("runs", 1) > 1 else "")


def report(rows: list[dict], scaling: list[dict], sizes: dict, versions: dict, raw: list, started: float, args) -> str:
    ver = ", ".join(f"{LABEL[k]} {v}" if v else f"{LABEL[k]} not installed" for k, v in versions.items())
    kept_runs = [r for r in raw if not r.get("loaded")]
    loads = [r["load"] for r in kept_runs]
    others = [r["others"] for r in kept_runs]
    n_loaded = len(raw) - len(kept_runs)
    still = sum(r["others"] > args.quiet for r in kept_runs)
    cmd = "`.venv/bin/python bench/curation.py" + (f" --workloads {args.workloads}" if args.workloads != "x10,distinct,mixed" else "") + \
          (f" --engines {args.engines}" if args.engines != "floor,ptdata,ptdata-full-rejects,datatrove,datajuicer" else "") + \
          (f" --recipes {args.recipes}" if args.recipes != "a,b" else "") + \
          f" --repeat {args.repeat}" + (" --scaling" if args.scaling else "") + " --results bench/RESULTS.md" + \
          (f" --section {args.section}" if args.section != "curation" else "") + "`"
    lines = [f"### curation: ptdata vs datatrove vs data-juicer on {len(sizes)} workload{'s' if len(sizes) > 1 else ''} "
             f"({', '.join(f'{n:,}' for n in sorted(set(sizes.values())))} records)", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB, Python {platform.python_version()}; "
             f"{args.workers} workers each; command: {cmd} ({(time.time() - started) / 60:.0f} min, "
             f"{time.strftime('%Y-%m-%d', time.localtime(started))}, ptdata at {args.commit}). {ver}, each in its own venv. Peak RSS is the whole process tree. "
             f"The floor and ptdata rows are the median of {args.repeat} interleaved runs (range in brackets); datatrove "
             "and data-juicer ran once. The machine is shared (other sessions run test suites and benchmarks on it): "
             f"each run starts after 2 s with other processes below {args.quiet} cores (waiting at most {args.max_wait:.0f} s), and a run during "
             f"which they used more (`others' CPU` below) is run again, up to {args.retries} times for the fast engines and once for the "
             f"peers. " +
             (f"{n_loaded} of {len(raw)} runs were loaded and run again; of the runs reported, {still} still had other load above {args.quiet} "
              f"cores; other processes used {statistics.median(others):.2f} cores during a run at the median (max {max(others):.2f}), and the "
              f"1-minute load average at the start of a run was {min(loads):.2f}-{max(loads):.2f} (median {statistics.median(loads):.2f}; "
              "it counts the engine's own workers of the run before)."
              if raw else "no runs."), "",
             "Workloads, built deterministically from `../shared/data` (seeded; cached in `bench/_work/cur_<name>/`):", ""]
    for tag, n in sizes.items():
        title = WORKLOAD_TITLE.get(tag, f"{tag}: Alpaca EN x{tag[1:]}, every line {tag[1:]} times")
        lines.append(f"- {title} ({n:,} records)")
    lines += ["", "Recipes: (a) read, length filter 10..10,000 chars, exact dedup, write; (b) read, MinHash near-dedup at "
              "Jaccard 0.8 (5-word shingles, 128 hashes), write.", ""]
    # summary: one line per workload and recipe
    lines += ["| workload | recipe | floor s | ptdata s | ptdata / floor | datatrove s | data-juicer s | ptdata vs datatrove | ptdata vs data-juicer |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for tag in sizes:
        for recipe in args.recipes.split(","):
            by = {r["engine"]: r for r in rows if r["workload"] == tag and r["recipe"] == recipe}
            ok = {e: r for e, r in by.items() if r.get("status") == "ok"}
            pt = ok.get("ptdata")

            def cell(e):
                return f"{ok[e]['wall']:.2f}" if e in ok else (by[e]["status"] if e in by else "")

            def ratio(e):
                return f"{ok[e]['wall'] / pt['wall']:.1f}x" if pt and e in ok else ""
            pf = f"{pt['wall'] / ok['floor']['wall']:.2f}x" if pt and "floor" in ok else ""
            lines.append(f"| {tag} | ({recipe}) | {cell('floor')} | {cell('ptdata')} | {pf} | {cell('datatrove')} | {cell('datajuicer')} | "
                         f"{ratio('datatrove')} | {ratio('datajuicer')} |")
    lines.append("")
    for tag, n in sizes.items():
        lines += [f"#### {WORKLOAD_TITLE.get(tag, f'Alpaca EN x{tag[1:]}')} ({n:,} records)", ""]
        for recipe, title in (("a", "(a) read, length filter, exact dedup, write"), ("b", "(b) read, MinHash near-dedup at Jaccard 0.8, write")):
            rs = [r for r in rows if r["workload"] == tag and r["recipe"] == recipe]
            if not rs:
                continue
            pt = next((r for r in rs if r["engine"] == "ptdata" and r.get("status") == "ok"), None)
            lines += [f"**{title}**", "", "| engine | wall s | records/s | peak RSS MB | kept | ptdata speed-up | engine CPU (cores) | others' CPU (cores) | status |",
                      "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
            for r in rs:
                if "wall" not in r:
                    lines.append(f"| {LABEL[r['engine']]} | | | | | | | | {r['status']} |")
                    continue
                speed = f"{r['wall'] / pt['wall']:.2f}x" if pt and r["engine"] != "ptdata" else ""
                lines.append(f"| {LABEL[r['engine']]} | {_wall(r)} | {n / r['wall']:,.0f} | {r['rss_mb']:,.0f} | "
                             f"{r['kept'] if r['kept'] is not None else ''} | {speed} | {r['cpu']:.2f} | {r['others']:.2f} | {r['status'][:200]} |")
            floor = next((r for r in rs if r["engine"] == "floor" and r.get("status") == "ok"), None)
            if pt and floor:
                lines.append(f"\nptdata / floor: {pt['wall'] / floor['wall']:.2f}x.")
            lines.append("")
    if scaling:
        lines += ["#### scaling: recipe (a), ptdata, on the first 1/4, 1/2 and all of the distinct workload", "",
                  f"Median of {args.repeat} interleaved runs (range in brackets); peak RSS is the highest of them.", "",
                  "| size | records | wall s | s per 100k records | peak RSS MB | kept | status |", "|---|---:|---:|---:|---:|---:|---|"]
        for s in scaling:
            if s.get("status") != "ok":
                lines.append(f"| {s['size']} | {s['n']:,} | | | | | {s['status']} |")
                continue
            lines.append(f"| {s['size']} | {s['n']:,} | {_wall(s)} | {s['wall'] / s['n'] * 1e5:.2f} | {s['rss_mb']:,.0f} | {s['kept']} | ok |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
