"""Shared by the review tests: records to review, answers, a served app, a headless Chromium."""
from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import pytest

from ptdata.records import Record

ASPECTS = ("helpfulness", "truthfulness", "harmlessness", "instruction_following")
XSS = "<script>window.__pwned = 1</script><img src=x onerror=\"window.__pwned = 2\"> & \"quotes\" 'single'"


def sft_records(n: int) -> list[dict]:
    """SFT conversations with every part the chat view renders: a system turn, tool calls and
    their results, reasoning, a long turn, several turns; record 3 carries script and img tags."""
    out = []
    for i in range(n):
        msgs = [{"role": "user", "content": f"Question {i}: what is {i} + {i}?"},
                {"role": "assistant", "content": f"{i} + {i} = {2 * i}."}]
        if i % 4 == 1:
            msgs = [{"role": "system", "content": "You are a careful calculator."}] + msgs
        if i % 4 == 2:
            msgs = [{"role": "user", "content": f"What is the weather in city {i}?"},
                    {"role": "assistant", "content": "", "tool_calls": [
                        {"id": f"call_{i}", "type": "function", "function": {"name": "get_weather", "arguments": {"city": f"c{i}"}}}]},
                    {"role": "tool", "content": '{"temp_c": 21}', "tool_call_id": f"call_{i}"},
                    {"role": "assistant", "content": f"It is 21 °C in city {i}.", "reasoning": "The tool said 21 degrees."}]
        if i % 4 == 3:
            msgs[1]["content"] = f"Long answer {i}. " + "This sentence repeats to make a long turn. " * 60
        if i == 3:
            msgs[0]["content"] = "Render this: " + XSS
            msgs[1]["content"] = XSS + " (as text)"
        out.append(Record("sft", msgs, scores={"helpfulness": 1 + i % 5, "truthfulness": 5 - i % 5}).to_dict())
    return out


KIND = "Of course! "  # how every pair's chosen answer starts (the tests' reviewers pick it by reading)


def pair_records(n: int) -> list[dict]:
    topics = ["a job interview", "a first marathon", "a hard exam", "moving to a new city", "a piano recital", "a new job"]
    out = []
    for i in range(n):
        t = topics[i % len(topics)]
        out.append(Record("preference", [{"role": "user", "content": f"I have {t} tomorrow (#{i}) and I am nervous. Any advice?"}],
                          [{"role": "assistant", "content": f"{KIND}Feeling nervous before {t} is normal. Prepare the basics "
                            "tonight, sleep well, and remind yourself what you already did to get here. You've got this."}],
                          [{"role": "assistant", "content": f"Everyone gets nervous before {t}. Just deal with it."}],
                          scores={"chosen.helpfulness": 4, "rejected.helpfulness": 2}).to_dict())
    return out


def chromium_paths() -> tuple[str, str] | None:
    chrome = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    driver = shutil.which("chromedriver") or ("/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None)
    return (chrome, driver) if chrome and driver else None


def need_browser():
    """Selenium and Debian's chromium + chromium-driver (.ci/run installs them): skipped when
    absent, except in CI where their absence is a failure."""
    paths = chromium_paths()
    try:
        import selenium  # noqa: F401
    except ImportError:
        paths = None
    if paths is None:
        msg = "no headless Chromium: install Debian's chromium and chromium-driver and selenium (.ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return paths


@contextlib.contextmanager
def chrome(width: int = 1400, height: int = 1000):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver = need_browser()
    o = webdriver.ChromeOptions()
    o.binary_location = binary
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", f"--window-size={width},{height}",
              "--no-first-run", "--disable-extensions", "--force-device-scale-factor=1"):
        o.add_argument(a)
    o.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    d = webdriver.Chrome(service=Service(driver), options=o)  # both paths given: Selenium Manager downloads nothing
    d.set_page_load_timeout(30)
    try:
        yield d
    finally:
        d.quit()
