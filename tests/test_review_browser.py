"""The review page in a real headless Chromium (Debian's chromium + chromium-driver, driven by
Selenium; nothing downloads a browser), keyboard only: a reviewer works through 20 records and
the stored answers are the keys pressed; two reviewers with overlap 2 give the kappa and alpha
an independent computation gives; a pair shown swapped to one reviewer still stores the record
side that reviewer picked; record text with <script> and <img onerror> renders as text; a
reviewer cannot open another queue or the admin pages. With PTDATA_SCREENSHOTS=1 the chat, pair
and agreement views are written to docs/review/ (the README shows them)."""
from __future__ import annotations

import contextlib
import os
import re
import time
from pathlib import Path

import pytest

from ptdata.llm.serve import LoopbackServer
from ptdata.review.app import make_app
from ptdata.review.queue import create_queue
from ptdata.review.rubric import default_rubric
from ptdata.review.store import ReviewStore

from .conftest import ROOT, write_jsonl
from .review_helpers import ASPECTS, KIND, XSS, chrome, need_browser, pair_records, sft_records
from .test_review_agreement import kappa_by_definition

pytest.importorskip("fastapi")
SHOTS = ROOT / "docs" / "review"


@pytest.fixture(scope="module")
def browser():
    need_browser()
    with chrome() as d:
        yield d


@contextlib.contextmanager
def served(tmp_path: Path, people=("ann", "ben", "root")):
    s = ReviewStore(str(tmp_path / "review.sqlite"))
    tok = {n: s.add_reviewer(n, "admin" if n == "root" else "reviewer") for n in people}
    asgi, _ = make_app(s)
    with LoopbackServer(asgi) as srv:
        yield f"http://127.0.0.1:{srv.port}", tok, s
    s.close()


def shot(d, name: str, tmp_path: Path) -> Path:
    """A screenshot: into docs/review/ with PTDATA_SCREENSHOTS=1 (for the README), else tmp."""
    where = SHOTS if os.environ.get("PTDATA_SCREENSHOTS") == "1" else tmp_path
    where.mkdir(parents=True, exist_ok=True)
    p = where / f"{name}.png"
    d.save_screenshot(str(p))
    data = p.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    return p


def login(d, base: str, token: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    d.delete_all_cookies()
    d.get(base + "/login")
    d.find_element(By.ID, "token").send_keys(token + Keys.ENTER)
    wait(d, lambda: "/login" not in d.current_url)


def wait(d, cond, timeout: float = 10.0):
    end = time.time() + timeout
    while True:
        try:
            v = cond()
            if v:
                return v
        except Exception:  # noqa: BLE001 - the page is changing under us
            if time.time() > end:
                raise
        if time.time() > end:
            logs = d.get_log("browser")
            raise AssertionError(f"timed out; browser log: {logs}")
        time.sleep(0.02)


def pos_of(d) -> str:
    return d.execute_script("return document.getElementById('record-pos').dataset.pos")


def open_queue(d, base: str, name: str, pos: str = "0") -> None:
    d.get(f"{base}/q/{name}")
    wait(d, lambda: pos_of(d) == pos)


def keys(d, *seq) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    a = ActionChains(d)
    for k in seq:
        a.send_keys(k)
    a.perform()


def submit_and_wait(d, nxt: str) -> None:
    from selenium.webdriver.common.keys import Keys

    keys(d, Keys.ENTER)
    wait(d, lambda: pos_of(d) == nxt)


def answers_by_pos(s: ReviewStore, queue: str, reviewer: str) -> dict[int, dict]:
    q = s.queue(queue)["id"]
    return {a["pos"]: a["answer"] for a in s.answers_of(q) if a["reviewer"] == reviewer}


def test_a_reviewer_works_through_20_records_by_keyboard_only(browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    d = browser
    recs = sft_records(20)
    with served(tmp_path) as (base, tok, s):
        create_queue(s, "kb", default_rubric(), 1, ["ann"], data=write_jsonl(tmp_path / "s.jsonl", recs))
        login(d, base, tok["ann"])
        open_queue(d, base, "kb")
        expect: dict[int, dict] = {}
        for i in range(20):
            if i == 2:
                shot(d, "chat", tmp_path)  # tool calls, their result, collapsible reasoning
            if i == 3:  # the record with <script> and <img onerror>: text on the page, nothing ran
                texts = [e.text for e in d.find_elements(By.CSS_SELECTOR, "#record .msg .content")]
                assert any("<script>window.__pwned = 1</script>" in t for t in texts), texts
                assert any('<img src=x onerror="window.__pwned = 2">' in t for t in texts), texts
                assert d.find_elements(By.CSS_SELECTOR, "#record img, #record script") == []
                assert d.execute_script("return window.__pwned === undefined")
            if i == 10:  # back to the last record (shown with its answer) and forward again
                keys(d, "p")
                wait(d, lambda: pos_of(d) == "9")
                on = d.find_element(By.CSS_SELECTOR, "[data-slot='helpfulness'] .opt.on").text
                assert on == str(expect[9]["ratings"]["helpfulness"])
                keys(d, "n")
                wait(d, lambda: pos_of(d) == "10")
            if i == 12:  # the help overlay opens and closes by key
                keys(d, "?")
                assert d.find_element(By.ID, "help").is_displayed()
                keys(d, Keys.ESCAPE)
                assert not d.find_element(By.ID, "help").is_displayed()
            r = [(i * (k + 1)) % 5 + 1 for k in range(4)]
            keys(d, *map(str, r))
            exp = {"ratings": dict(zip(ASPECTS, r)), "labels": {}, "decision": "reject" if i % 4 == 0 else "accept",
                   "note": None, "correction": None}
            if i % 3 == 0:
                keys(d, "2")  # focus is on the labels after the four ratings: toggle the 2nd label
                exp["labels"] = {"labels": ["unsafe"]}
            if i == 7:  # back to the last aspect, a wrong key, undone
                keys(d, "k", "1", "u")
            keys(d, "r" if i % 4 == 0 else "a")
            if i % 5 == 0:
                keys(d, "e")
                wait(d, lambda: d.switch_to.active_element.get_attribute("id") == "edit-text")
                keys(d, " [fixed]")
                wait(d, lambda: "[fixed]" in d.find_element(By.ID, "diff").text)
                assert d.find_elements(By.CSS_SELECTOR, "#diff ins")  # the edit shows as a diff
                keys(d, Keys.ESCAPE)
                exp["correction"] = recs[i]["messages"][-1]["content"] + " [fixed]"
            if i % 6 == 0:
                keys(d, "m")
                wait(d, lambda: d.switch_to.active_element.get_attribute("id") == "note-text")
                keys(d, f"note {i}", Keys.ESCAPE)
                exp["note"] = f"note {i}"
            expect[i] = exp
            submit_and_wait(d, str(i + 1) if i < 19 else "")
            if i == 15:  # u with nothing to undo on the page: the last submission is undone and reopened
                keys(d, "u")
                wait(d, lambda: pos_of(d) == "15")
                assert answers_by_pos(s, "kb", "ann").get(15) is None
                keys(d, "5")  # focus starts on helpfulness
                expect[15]["ratings"]["helpfulness"] = 5
                submit_and_wait(d, "16")
        assert "All your records" in d.find_element(By.ID, "record").text
        got = answers_by_pos(s, "kb", "ann")
        assert sorted(got) == list(range(20))
        for i, exp in expect.items():
            a = got[i]
            assert a["ratings"] == exp["ratings"], i
            assert a["labels"] == exp["labels"] and a["decision"] == exp["decision"] and a["note"] == exp["note"], (i, a)
            assert (a.get("correction") or {}).get("text") == exp["correction"], (i, a)
        assert s.member(s.queue("kb")["id"], s.reviewers()[0]["id"])["done"] == 20
        errors = [e for e in d.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == [], errors  # no script error, no CSP violation


def review_by_keys(d, base: str, queue: str, n: int, plan) -> None:
    """Answer n records by keyboard: plan(pos, page) -> the keys for that record (before Enter)."""
    open_queue(d, base, queue)
    for pos in range(n):
        keys(d, *plan(pos, d))
        submit_and_wait(d, str(pos + 1) if pos < n - 1 else "")


def test_two_reviewers_kappa_and_alpha_match_an_independent_computation(browser, tmp_path):
    from selenium.webdriver.common.by import By

    krippendorff = pytest.importorskip("krippendorff")
    import numpy as np

    d = browser
    n = 12
    # the ratings each reviewer will type for helpfulness (others fixed); ben disagrees now and then
    ann = [1, 2, 3, 4, 5, 1, 2, 3, 4, 5, 3, 3]
    ben = [1, 2, 3, 5, 5, 2, 2, 3, 3, 5, 4, 3]
    ann_t, ben_t = [5, 4, 4, 3, 5, 5, 4, 2, 4, 5, 3, 4], [5, 4, 3, 3, 5, 4, 4, 2, 4, 5, 3, 4]
    ann_s, ben_s = [5, 5, 4, 5, 5, 5, 3, 5, 5, 4, 5, 5], [5, 5, 4, 5, 4, 5, 3, 5, 5, 5, 5, 5]
    dec_a = ["a"] * 10 + ["r", "r"]
    dec_b = ["a"] * 9 + ["r", "r", "a"]
    with served(tmp_path) as (base, tok, s):
        create_queue(s, "agree", default_rubric(), 2, ["ann", "ben"], data=write_jsonl(tmp_path / "s.jsonl", sft_records(n)))
        for who, hs, ts, ss, ds in (("ann", ann, ann_t, ann_s, dec_a), ("ben", ben, ben_t, ben_s, dec_b)):
            login(d, base, tok[who])
            review_by_keys(d, base, "agree", n, lambda p, _d: [str(hs[p]), str(ts[p]), str(ss[p]), "3", ds[p]])
        got_a, got_b = answers_by_pos(s, "agree", "ann"), answers_by_pos(s, "agree", "ben")
        assert [got_a[p]["ratings"]["helpfulness"] for p in range(n)] == ann
        assert [got_b[p]["ratings"]["helpfulness"] for p in range(n)] == ben
        # independent: kappa written out from its definition, alpha from the krippendorff package
        kappa = kappa_by_definition(ann, ben)
        alpha = krippendorff.alpha(reliability_data=np.array([ann, ben], dtype=float), level_of_measurement="ordinal")
        dk = kappa_by_definition(dec_a, dec_b)
        login(d, base, tok["root"])
        d.get(base + "/admin/q/agree")
        row = wait(d, lambda: [r for r in d.find_elements(By.CSS_SELECTOR, "table.agreement tr") if r.text.startswith("helpfulness")])
        cells = [c.text for c in row[0].find_elements(By.TAG_NAME, "td")]
        assert float(cells[1]) == pytest.approx(alpha, abs=5e-4) and float(cells[2]) == pytest.approx(kappa, abs=5e-4)
        assert cells[3] == "12"
        # the records carry judge scores: the judge's agreement stands beside the reviewers'
        assert cells[5] != "–" and cells[7] == "24"
        shot(d, "agreement", tmp_path)
        rep = d.execute_async_script("fetch('/api/admin/q/agree/report').then(r => r.json()).then(arguments[0])")
        assert rep["aspects"]["helpfulness"]["human"]["alpha"] == pytest.approx(alpha, abs=1e-4)
        assert rep["aspects"]["helpfulness"]["human"]["kappa"] == pytest.approx(kappa, abs=1e-4)
        assert rep["decision"]["kappa"] == pytest.approx(dk, abs=1e-4)
        assert rep["aspects"]["truthfulness"]["human"]["kappa"] == pytest.approx(kappa_by_definition(ann_t, ben_t), abs=1e-4)
        # a constant aspect (everyone typed 3) has no defined kappa or alpha, shown as such, not as 0 or 1
        assert rep["aspects"]["instruction_following"]["human"]["kappa"] is None
        assert rep["aspects"]["instruction_following"]["human"]["alpha"] is None


def test_pairs_are_blind_and_swapped_for_one_reviewer(browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    d = browser
    n = 6
    pressed: dict[tuple[str, int], str] = {}
    with served(tmp_path) as (base, tok, s):
        create_queue(s, "pp", default_rubric(), 2, ["ann", "ben"], data=write_jsonl(tmp_path / "p.jsonl", pair_records(n)))
        for who in ("ann", "ben"):
            login(d, base, tok[who])

            def plan(pos, page, who=who):
                left = page.find_element(By.ID, "side-left").text
                # the reviewer reads the answers and picks the kind one (the record's chosen side)
                k = Keys.ARROW_LEFT if KIND in left else Keys.ARROW_RIGHT
                pressed[who, pos] = "left" if k == Keys.ARROW_LEFT else "right"
                if who == "ben" and pos == 1:
                    keys(page, k)
                    shot(page, "pair", tmp_path)
                # and rates the kind one 4 and the other 2, left side first for each aspect
                return [k] + (["4", "2"] if k == Keys.ARROW_LEFT else ["2", "4"]) * 4 + ["a"]

            review_by_keys(d, base, "pp", n, plan)
        q = s.queue("pp")["id"]
        rows = s.answers_of(q)
        assert len(rows) == 2 * n
        by_item: dict[int, list] = {}
        for a in rows:
            by_item.setdefault(a["item_seq"], []).append(a)
            assert a["answer"]["choice"] == "chosen"  # the record's side, whatever the screen showed
            assert a["answer"]["ratings"] == {**{f"chosen.{x}": 4 for x in ASPECTS}, **{f"rejected.{x}": 2 for x in ASPECTS}}
            assert a["answer"]["swapped"] is bool(a["swap"])
            assert pressed[a["reviewer"], a["pos"]] == ("right" if a["swap"] else "left")
        for seq, two in by_item.items():  # one of the two saw it swapped, and pressed the other arrow
            assert {bool(a["swap"]) for a in two} == {True, False}
            assert {pressed[a["reviewer"], a["pos"]] for a in two} == {"left", "right"}
        login(d, base, tok["root"])
        rep = d.execute_async_script("fetch('/api/admin/q/pp/report').then(r => r.json()).then(arguments[0])")
        assert rep["position_bias"]["left_share"] == 0.5 and rep["position_bias"]["choices"] == 2 * n
        assert rep["judge_choice"]["percent_agreement"] == 1.0


def test_untrusted_text_renders_as_text_in_every_view(browser, tmp_path):
    from selenium.webdriver.common.by import By

    from ptdata.records import Record

    d = browser
    recs = [Record("preference", [{"role": "user", "content": "pick " + XSS}], [{"role": "assistant", "content": "L " + XSS}],
                   [{"role": "assistant", "content": "R " + XSS}]).to_dict(),
            Record("sft", [{"role": "system", "content": XSS}, {"role": "user", "content": "2+2?"},
                           {"role": "assistant", "content": "4", "reasoning": XSS}],
                   meta={"distill": {"teacher": XSS, "confidence": 0.9, "samples": 2, "answer": XSS},
                         "candidates": [{"text": XSS}, {"text": "4"}]}).to_dict()]
    with served(tmp_path) as (base, tok, s):
        create_queue(s, "x", default_rubric(), 1, ["ann"], data=write_jsonl(tmp_path / "x.jsonl", recs))
        login(d, base, tok["ann"])
        for pos in ("0", "1"):
            d.get(f"{base}/q/x")
            wait(d, lambda: pos_of(d) == "0")
            if pos == "1":
                keys(d, "n")
                wait(d, lambda: pos_of(d) == "1")
            d.execute_script("document.querySelectorAll('#record details').forEach(x => x.open = true)")
            text = d.find_element(By.ID, "record").text
            assert text.count("<script>window.__pwned = 1</script>") >= 3, text
            assert d.find_elements(By.CSS_SELECTOR, "#record img, #record script, #record [onerror]") == []
            assert d.execute_script("return window.__pwned === undefined")
        assert "distillation label" in d.find_element(By.ID, "record").text


def test_a_reviewer_cannot_open_another_queue_or_the_admin_pages(browser, tmp_path):
    from selenium.webdriver.common.by import By

    d = browser
    with served(tmp_path) as (base, tok, s):
        data = write_jsonl(tmp_path / "s.jsonl", sft_records(2))
        create_queue(s, "mine", default_rubric(), 1, ["ann"], data=data)
        create_queue(s, "theirs", default_rubric(), 1, ["ben"], data=data)
        login(d, base, tok["ann"])
        d.get(base + "/")
        links = [a.text for a in d.find_elements(By.CSS_SELECTOR, "table.list a")]
        assert links == ["mine"]
        d.get(base + "/q/theirs")
        assert "not assigned" in d.find_element(By.TAG_NAME, "main").text
        for path in ("/admin", "/admin/q/mine"):
            d.get(base + path)
            assert "admin role" in d.find_element(By.TAG_NAME, "main").text
        d.get(base + "/q/mine")
        wait(d, lambda: pos_of(d) == "0")
        status = d.execute_async_script("""const done = arguments[0];
            Promise.all(['/api/q/theirs/next', '/api/q/theirs/a/0', '/api/admin/q/mine/report']
              .map(u => fetch(u).then(r => r.status))).then(done)""")
        assert status == [403, 403, 403]
        # a cross-site style POST without the CSRF token is refused even with the session cookie
        st = d.execute_async_script("""fetch('/api/q/mine/a/0', {method: 'POST', headers: {'Content-Type': 'application/json'},
            body: '{}'}).then(r => arguments[0](r.status))""")
        assert st == 403
        assert re.fullmatch(r"[A-Za-z0-9_\-]+", d.execute_script("return document.body.dataset.csrf"))
