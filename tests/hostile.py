"""Harness for the hostile-input tests: run the real `ptdata` entry point under a memory cap and
check the promises every command keeps (no traceback, the documented exit code, inputs left
byte-identical, records in = kept + rejected)."""
from __future__ import annotations

import hashlib
import os
import re
import resource
import subprocess
import sys
from pathlib import Path

# The documented exit codes (README, "Exit codes").
EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_SOME_REJECTED, EXIT_ALL_REJECTED = 0, 1, 2, 3, 4

DEFAULT_MEMORY_MB = 1536


def _limit(mb: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (mb << 20, mb << 20))
    return apply


def run_capped(*args: str, cwd: Path | None = None, env_extra: dict | None = None, memory_mb: int = DEFAULT_MEMORY_MB,
               timeout: float = 300, stdin: str | None = None) -> subprocess.CompletedProcess:
    """Run `ptdata ARGS` with its address space capped at `memory_mb` and assert it did not crash:
    no Python traceback on stderr and no death by signal (a segfault or the kernel's OOM kill)."""
    env = {**os.environ, **(env_extra or {})}
    env.setdefault("PYTHONFAULTHANDLER", "")
    r = subprocess.run([sys.executable, "-c", "from ptdata.cli import main; main()", *map(str, args)],
                       capture_output=True, text=True, cwd=cwd, timeout=timeout, env=env, preexec_fn=_limit(memory_mb),
                       input=stdin)
    assert "Traceback" not in r.stderr, r.stderr[-4000:]
    assert r.returncode >= 0, f"killed by signal {-r.returncode}: {r.stderr[-2000:]}"
    assert r.returncode != 137, r.stderr[-2000:]
    return r


def digest(*paths: Path) -> dict[str, str]:
    """Content hashes of files (inputs must be byte-identical after a command)."""
    return {str(p): hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths}


SUMMARY = re.compile(r"^in ([\d,]+) · kept ([\d,]+) · rejected ([\d,]+)", re.M)


def summary(stderr: str) -> tuple[int, int, int]:
    """(in, kept, rejected) from a command's summary line; asserts in = kept + rejected."""
    m = SUMMARY.search(stderr)
    assert m, f"no summary line in: {stderr[-2000:]}"
    n_in, kept, rejected = (int(x.replace(",", "")) for x in m.groups())
    assert n_in == kept + rejected, stderr
    return n_in, kept, rejected


def one_error_line(stderr: str, *needles: str) -> str:
    """The single `error:` line a command printed, containing every needle."""
    lines = [l for l in stderr.splitlines() if l.startswith("error:")]
    assert len(lines) == 1, stderr[-2000:]
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]
