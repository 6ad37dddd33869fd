"""End to end: flywheel simulate -> mine -> a review queue of the mined version -> a reviewer
works through it by keyboard in headless Chromium (served by the real `ptdata review serve`)
-> export -> the decisions are feedback events in the flywheel store -> the next `mine`
includes the corrections."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import httpx

from .conftest import load_jsonl, run_cli, shared
from .test_review_browser import keys, login, open_queue, pos_of, submit_and_wait, wait
from .review_helpers import chrome, need_browser

FIXES = ["A corrected answer, written by the reviewer: first.", "A corrected answer, written by the reviewer: second."]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ok(r: subprocess.CompletedProcess) -> dict:
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    return json.loads(r.stdout) if r.stdout.strip().startswith("{") else {}


def test_flywheel_to_review_to_the_next_mine(tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    need_browser()
    fw, rv, data = str(tmp_path / "fw.sqlite"), str(tmp_path / "rv.sqlite"), tmp_path / "data"
    ok(run_cli("flywheel", "simulate", shared("alpaca_en_52k.jsonl.gz"), "--store", fw, "--limit", "30", "--json"))
    # no held-out split: the queue's first 6 records are rows 0-5 (each with a thumbs up)
    v1 = ok(run_cli("flywheel", "mine", "--version", "v1", "--store", fw, "--out", data, "--eval-share", "0", "--json"))
    assert v1["counts"]["sft"] > 6
    tok = ok(run_cli("review", "add-reviewer", "ann", "--store", rv, "--json"))["token"]
    made = ok(run_cli("review", "create", "fb", "--flywheel-version", "v1", "--flywheel-store", fw, "--flywheel-out", data,
                      "--store", rv, "--limit", "6", "--json"))
    assert made["items"] == 6 and made["kinds"] == {"interaction": 6}
    port = free_port()
    srv = subprocess.Popen([sys.executable, "-c", "from ptdata.cli import main; main()", "review", "serve", "--store", rv,
                            "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ})
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                httpx.get(base + "/login", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.05)
        with chrome() as d:
            login(d, base, tok)
            open_queue(d, base, "fb")
            originals = []
            for pos in range(6):
                panel = d.find_element(By.CSS_SELECTOR, "#record .panel").text
                assert "flywheel interaction" in panel and "thumbs" in panel  # the users' own feedback events
                originals.append(d.find_elements(By.CSS_SELECTOR, "#record .role-assistant .content")[-1].text)
                keys(d, "4", "4", "5", "4", "a")
                if pos < 2:
                    keys(d, "e")
                    wait(d, lambda: d.switch_to.active_element.get_attribute("id") == "edit-text")
                    ActionChains(d).key_down(Keys.CONTROL).send_keys("a").key_up(Keys.CONTROL).send_keys(FIXES[pos]).perform()
                    keys(d, Keys.ESCAPE)
                submit_and_wait(d, str(pos + 1) if pos < 5 else "")
            assert pos_of(d) == ""
    finally:
        srv.terminate()
        srv.wait(10)
    ex = ok(run_cli("review", "export", "fb", "--store", rv, "--out", tmp_path / "reviewed", "--json"))
    assert ex["counts"]["accepted"] == 6 and ex["counts"]["corrections"] == 2
    assert ex["flywheel_feedback"] == {"created": 8, "events": 8}  # 6 thumbs up, 2 corrections
    fixes = [r for r in load_jsonl(tmp_path / "reviewed" / "fb-1" / "sft.jsonl") if r["meta"]["mined_from"] == "human_correction"]
    assert sorted(r["messages"][-1]["content"] for r in fixes) == sorted(FIXES)
    # the same export again sends the same event ids: nothing is counted twice
    again = ok(run_cli("review", "export", "fb", "--store", rv, "--out", tmp_path / "reviewed", "--json"))
    assert again["flywheel_feedback"] == {"same": 8, "events": 8}
    v2 = ok(run_cli("flywheel", "mine", "--version", "v2", "--store", fw, "--out", data, "--json"))
    c = v2["counts"]
    assert c["late_feedback_interactions"] == 6 and c["by_source"].get("correction") == 2
    assert c["by_source"].get("correction_vs_original") == 2
    mined = load_jsonl(data / "v2" / "sft.jsonl")
    assert sorted(r["messages"][-1]["content"] for r in mined if r["meta"]["mined_from"] == "correction") == sorted(FIXES)
    pairs = load_jsonl(data / "v2" / "pairs.jsonl")
    norm = lambda t: " ".join(t.split())  # noqa: E731 - the page's text as Selenium reads it
    assert {norm(p["rejected"][0]["content"]) for p in pairs} <= {norm(o) for o in originals[:2]}
    assert sorted(p["chosen"][0]["content"] for p in pairs) == sorted(FIXES)
    # the accepted answers were in v1 already: dropped as such, not mined twice
    assert c["dropped_records"].get("in_earlier_version", 0) >= 4
