"""The README's Python snippets run as written from the repository root (in a scratch copy of it)."""
from __future__ import annotations

import os
import re
import subprocess
import sys

from .conftest import ROOT


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), re.S)


def test_every_python_snippet_in_the_readme_runs(tmp_path):
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    blocks = python_blocks()
    assert blocks
    for code in blocks:
        r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                           env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
        assert r.returncode == 0, f"{code}\n{r.stderr}"
    # the API snippet's own figures: in = kept + rejected, and the recipe wrote its outputs
    assert (tmp_path / "out" / "api" / "train.openai.jsonl").exists()
    assert (tmp_path / "out" / "api" / "curated" / "_SUCCESS").exists()
    first = r.stdout.splitlines()[0].split()
    assert int(first[0]) == int(first[1]) + int(first[2]) > 0
