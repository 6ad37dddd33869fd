"""ptdata: turn raw material into post-training data for LLMs (SFT, preference, distillation, flywheel)."""
from __future__ import annotations

import os
import sys

__version__ = "0.1.0"

if "numpy" not in sys.modules:
    # ptdata parallelizes with processes and uses numpy only for sorting and elementwise work:
    # a BLAS thread pool would only oversubscribe the cores and make forking workers unsafe.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from .convert import RunCounts, convert  # noqa: E402
from .errors import InputError, RecordError  # noqa: E402
from .formats import FORMATS, get_format, guess_format  # noqa: E402
from .reader import ReadOptions, RecordReader, read_records  # noqa: E402
from .records import Record, content_id  # noqa: E402
from .validation import ValidationConfig, validate  # noqa: E402

__all__ = [
    "FORMATS", "InputError", "ReadOptions", "Record", "RecordError", "RecordReader", "RunCounts", "ValidationConfig",
    "__version__", "content_id", "convert", "get_format", "guess_format", "read_records", "validate",
]
