"""Records from any supported file: container, format detection, parsing, validation.

`read_records` yields ``(Record, None)`` for a usable record or ``(None, reject_row)`` for
everything else, so every input row ends up counted exactly once. A file whose format
cannot be told, or that is missing or empty, raises InputError (one line, no traceback).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from .errors import InputError, RecordError
from .formats import FORMATS, apply_rename, dataset_info_options, get_format, guess_format
from .io import DEFAULT_MAX_RECORD_BYTES, Row, RowSource, reject_row
from .json_scan import DEFAULT_MAX_DEPTH
from .records import Record
from .validation import ValidationConfig, validate

DETECT_SAMPLE = 200


@dataclass
class ReadOptions:
    fmt: str | None = None  # None: detect from the data (or a dataset_info.json beside the file)
    opts: dict = field(default_factory=dict)  # format options: fields, tags, rename, ...
    dataset_info: str | None = None
    dataset: str | None = None
    validate: bool = True
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
    max_depth: int = DEFAULT_MAX_DEPTH  # JSON nesting of one record


def resolve_format(path: Path, ro: ReadOptions) -> tuple[str | None, dict]:
    """Explicit --from, else a dataset_info.json (given, or beside the file and naming it), else None."""
    opts = dict(ro.opts)
    info = ro.dataset_info
    if info is None and ro.fmt is None:
        beside = path.parent / "dataset_info.json"
        if beside.exists():
            try:
                fmt, extra = dataset_info_options(beside, None, path)
                return fmt, {**extra, **opts}
            except InputError:
                pass  # the file is not described there: fall back to detection
    if info is not None:
        fmt, extra = dataset_info_options(info, ro.dataset, path)
        if ro.fmt and ro.fmt != fmt:
            raise InputError(f"--from {ro.fmt} disagrees with {info} (formatting {fmt})")
        return fmt, {**extra, **opts}
    if ro.fmt is not None:
        get_format(ro.fmt)
    return ro.fmt, opts


class RecordReader:
    """Iterates one file's records and rejects; `fmt` is known after the first record."""

    def __init__(self, path: str | Path, ro: ReadOptions | None = None, byte_range: tuple[int, int] | None = None,
                 first_line: int = 1, detected: str | None = None, alias: str | Path | None = None) -> None:
        """`detected`: a format already detected on this file by a parent process (shape checks stay on).
        `alias`: the name to report in rejects and `meta.source` (e.g. the .gz a temporary copy came from)."""
        self.ro = ro or ReadOptions()
        self.source = RowSource(path, self.ro.max_record_bytes, byte_range, first_line, max_depth=self.ro.max_depth)
        self.path = self.source.path
        self.alias = Path(alias) if alias else self.path
        self.fmt, self.opts = resolve_format(self.path, self.ro)
        self.explicit = self.fmt is not None
        if detected is not None and not self.explicit:
            self.fmt = detected
        self.label = self.source.position_label
        self.position = 0  # line/item/row of the record last yielded
        self.own_source = False  # whether that record's row carried its own meta.source

    def detect(self) -> str:
        """The file's format: given, or the majority shape of its first rows (a short separate pass)."""
        if self.fmt is None:
            head = []
            for item in RowSource(self.path, self.ro.max_record_bytes, max_depth=self.ro.max_depth):
                head.append(item)
                if sum(1 for _, r in head if isinstance(r, dict)) >= DETECT_SAMPLE:
                    break
            self.fmt = self._detect(head)
        return self.fmt

    def fraction(self) -> float:
        return self.source.fraction()

    def _reject(self, pos: int, op: str, err: RecordError, record=None) -> Row:
        return reject_row(str(self.alias), pos, self.label, op, err, record)

    def __iter__(self) -> Iterator[tuple[Record | None, Row | None]]:
        fmt = FORMATS[self.detect()]
        detect, read, opts = fmt.detect, fmt.read, self.opts
        rename = opts.get("rename")
        check = self.ro.validate
        cfg = self.ro.validation
        name = str(self.alias)  # the path as given (or relative to the recipe): never just the file name
        for pos, row in self.source:
            if isinstance(row, RecordError):
                yield None, self._reject(pos, "read", row)
                continue
            if rename:
                row = apply_rename(row, rename)
            if not self.explicit and not detect(row):
                yield None, self._reject(pos, "detect", self._mismatch(row), row)
                continue
            try:
                rec = read(row, opts)
            except RecordError as e:
                yield None, self._reject(pos, "parse", e, row)
                continue
            if check:
                try:
                    validate(rec, cfg)
                except RecordError as e:
                    yield None, self._reject(pos, "validate", e, row)
                    continue
            self.own_source = "source" in rec.meta
            if not self.own_source:
                rec.meta["source"] = f"{name}:{pos}"
            self.position = pos
            yield rec, None

    def _detect(self, head: list[tuple[int, Row | RecordError]]) -> str:
        votes = Counter(guess_format(apply_rename(r, self.opts.get("rename") or {})) for _, r in head if isinstance(r, dict))
        known = [(n, c) for n, c in votes.most_common() if n is not None]
        if not known:
            if not votes:
                first_err = next((r for _, r in head if isinstance(r, RecordError)), None)
                if first_err is None:
                    raise InputError(f"{self.path}: no records")
                return "ptdata"  # nothing parseable: every row is a read reject whatever the format
            keys = next(sorted(r)[:8] for _, r in head if isinstance(r, dict))
            raise InputError(f"{self.path}: cannot tell the format (first record has keys {keys}); pass --from")
        return known[0][0]

    def _mismatch(self, row: Row) -> RecordError:
        other = guess_format(row)
        if other is None:
            return RecordError("unknown_format", f"keys {sorted(row)[:8]} match no known format (file is {self.fmt})")
        return RecordError("format_mismatch", f"row looks like {other}, but the file was detected as {self.fmt}")


def read_records(path: str | Path, ro: ReadOptions | None = None) -> Iterator[tuple[Record | None, Row | None]]:
    yield from RecordReader(path, ro)
