"""Streaming readers and writers for JSONL, JSON arrays and Parquet, each optionally gzipped,
and the rejects writer.

Readers yield ``(position, row_or_error)``: a bad row (malformed JSON, invalid UTF-8, a
record over the size limit, a non-object) becomes a RecordError at its line, never an
exception, so the caller can put it in the rejects file and go on. Memory stays flat:
JSONL is read line by line with a size cap, JSON arrays with an incremental parser,
Parquet by row batches.
"""
from __future__ import annotations

import base64
import datetime as dt
import gzip
import os
import shutil
import tempfile
import zlib
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator

import orjson

from .errors import InputError, RecordError
from .json_scan import BOM, DEFAULT_MAX_DEPTH, array_items, check_depth

DEFAULT_MAX_RECORD_BYTES = 16 * 1024 * 1024
GZIP_MAGIC = b"\x1f\x8b"
PARQUET_MAGIC = b"PAR1"

Row = dict[str, Any]


def head_of_truncated(path: str | Path, n: int = 4096) -> bytes:
    """The first bytes a truncated or corrupt gzip file still inflates to (b"" if none)."""
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    with open(path, "rb") as f:
        try:
            return d.decompress(f.read(1 << 16), n)
        except zlib.error:
            return b""


def split_name(path: str | Path) -> tuple[str, bool]:
    """(container, gzipped) from a file name: container is jsonl, json or parquet."""
    name = str(path).lower()
    gz = name.endswith(".gz")
    if gz:
        name = name[:-3]
    if name.endswith(".parquet"):
        return "parquet", gz
    if name.endswith(".json"):
        return "json", gz
    return "jsonl", gz


def sniff(path: Path) -> tuple[str, bool]:
    """Container and compression from the bytes (the name only breaks ties)."""
    with open(path, "rb") as f:
        head = f.read(4096)
    gz = head[:2] == GZIP_MAGIC
    if gz:
        with gzip.open(path, "rb") as g:
            try:
                head = g.read(4096)
            except (OSError, EOFError) as e:
                head = head_of_truncated(path)
                if not head:
                    raise InputError(f"{path}: not a readable gzip file ({e})") from None
    if head[:4] == PARQUET_MAGIC:
        return "parquet", gz
    text = head.removeprefix(BOM).lstrip()
    first = text[:1]
    if first == b"[":
        return "json", gz
    if first == b"{":
        return ("json" if _pretty_printed(text) else "jsonl"), gz
    return split_name(path)[0], gz


def _pretty_printed(head: bytes) -> bool:
    """Whether JSON text starting with "{" is an object spread over lines (indented), not JSONL:
    its first line is not a whole value and the next one is indented."""
    lines = head.split(b"\n", 2)
    if len(lines) < 2 or not lines[1][:1].isspace():
        return False
    try:
        orjson.loads(lines[0])
        return False
    except orjson.JSONDecodeError:
        return lines[0].rstrip().endswith((b"{", b",", b"[", b":"))


class RowSource:
    """Rows of one input file, with a byte-level progress reading for progress bars."""

    def __init__(self, path: str | Path, max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
                 byte_range: tuple[int, int] | None = None, first_line: int = 1,
                 max_depth: int = DEFAULT_MAX_DEPTH) -> None:
        """`byte_range` (start, end), line-aligned, with `first_line` its line number: one
        worker's share of a plain JSONL file (see `split_ranges`)."""
        self.path = Path(path)
        if not self.path.exists():
            raise InputError(f"{self.path}: no such file")
        if self.path.is_dir():
            raise InputError(f"{self.path}: is a directory, not a data file")
        if not self.path.is_file():
            raise InputError(f"{self.path}: not a regular file (a pipe or device cannot be read twice, for detection and reading)")
        self.size = self.path.stat().st_size
        if self.size == 0:
            raise InputError(f"{self.path}: empty file (no records)")
        self.container, self.gz = sniff(self.path)
        self.max_record_bytes = max_record_bytes
        self.max_depth = max_depth
        self.position_label = {"jsonl": "line", "json": "item", "parquet": "row"}[self.container]
        self._raw: IO[bytes] | None = None
        self._rows_done = 0
        self._rows_total = 0
        self.byte_range = byte_range
        self.first_line = first_line
        if byte_range is not None and (self.container != "jsonl" or self.gz):
            raise ValueError("byte ranges are only for plain JSONL files")

    def fraction(self) -> float:
        """How far through the file the reader is, 0..1 (compressed bytes for gz, rows for Parquet)."""
        if self.container == "parquet":
            return self._rows_done / self._rows_total if self._rows_total else 0.0
        try:
            return self._raw.tell() / self.size if self._raw is not None else 0.0
        except (ValueError, OSError):
            return 1.0

    def __iter__(self) -> Iterator[tuple[int, Row | RecordError]]:
        if self.container == "parquet":
            yield from self._parquet()
            return
        with open(self.path, "rb") as raw:
            self._raw = raw
            if self.byte_range is not None:
                raw.seek(self.byte_range[0])
            f: IO[bytes] = gzip.GzipFile(fileobj=raw, mode="rb") if self.gz else raw
            self._last = 0
            try:
                if self.container == "json":
                    yield from self._json_array(f)
                else:
                    yield from self._jsonl(f)
            except (OSError, EOFError, zlib.error) as e:  # truncated or corrupt gzip stream: what was read stands
                at = self._last + 1
                yield at, RecordError("corrupt_file", f"{self.path}: unreadable after {self.position_label} {self._last:,} "
                                                      f"(the last good one; {e})")

    def _jsonl(self, f: IO[bytes]) -> Iterator[tuple[int, Row | RecordError]]:
        limit = self.max_record_bytes
        lineno = self.first_line - 1
        remaining = self.byte_range[1] - self.byte_range[0] if self.byte_range else -1
        readline = f.readline
        loads = orjson.loads
        depth_limit = self.max_depth
        at_start = self.byte_range is None or self.byte_range[0] == 0
        while remaining:
            line = readline(limit + 1)
            if not line:
                return
            remaining -= len(line)
            lineno += 1
            self._last = lineno
            if at_start:
                at_start = False
                line = line.removeprefix(BOM)
            if len(line) > limit:
                size = len(line)
                while not line.endswith(b"\n"):  # skip the rest of the oversized line, keeping nothing
                    line = readline(1 << 20)
                    if not line:
                        break
                    size += len(line)
                    remaining -= len(line)
                yield lineno, RecordError("record_too_large", f"{size:,} bytes, over the limit of {limit:,} (--max-record-bytes)")
                continue
            deep = check_depth(line, depth_limit)
            if deep is not None:
                yield lineno, deep
                continue
            try:
                row = loads(line)
            except orjson.JSONDecodeError as e:
                if not line.strip():
                    continue  # blank line: not a record
                yield lineno, decode_error(line, e)
                continue
            if type(row) is not dict:
                yield lineno, RecordError("not_an_object", f"a record must be a JSON object, got {type(row).__name__}")
                continue
            yield lineno, row

    def _json_array(self, f: IO[bytes]) -> Iterator[tuple[int, Row | RecordError]]:
        """Items cut out by `json_scan.array_items` (never built before their size and depth are
        known), each decoded like a JSONL line."""
        for n, item in array_items(f, self.max_record_bytes, self.max_depth):
            self._last = n
            yield n, item if isinstance(item, RecordError) else decode_row(item)

    def _parquet(self) -> Iterator[tuple[int, Row | RecordError]]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        with _plain_copy(self.path, self.gz) as path:
            try:
                pf = pq.ParquetFile(path)
            except (pa.ArrowInvalid, OSError) as e:
                raise InputError(f"{self.path}: not a readable Parquet file ({e})") from None
            self._rows_total = pf.metadata.num_rows
            convert = [f.name for f in pf.schema_arrow if _needs_json_values(f.type)]
            n = 0
            for batch in pf.iter_batches(batch_size=8192):
                for row in batch.to_pylist():
                    n += 1
                    self._rows_done = n
                    for k in convert:
                        row[k] = json_value(row[k])
                    yield n, {k: v for k, v in row.items() if v is not None}


def _needs_json_values(t) -> bool:
    """Whether an Arrow type reads back as Python values JSON has no form for (Decimal, bytes,
    timedelta, dates and times), at any depth."""
    import pyarrow.types as pt

    if pt.is_decimal(t) or pt.is_binary(t) or pt.is_large_binary(t) or pt.is_fixed_size_binary(t) or pt.is_duration(t) \
            or pt.is_temporal(t):
        return True
    return any(_needs_json_values(t.field(i).type) for i in range(t.num_fields))


def json_value(v: Any) -> Any:
    """A Parquet value in a form JSON holds: Decimal as its exact text, bytes as UTF-8 text
    (else `base64:` + base64), times as ISO 8601, durations as seconds; at any depth."""
    if isinstance(v, dict):
        return {k: json_value(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [json_value(x) for x in v]
    if isinstance(v, Decimal):
        return str(v)
    if isinstance(v, (bytes, bytearray)):
        try:
            return bytes(v).decode("utf-8")
        except UnicodeDecodeError:
            return "base64:" + base64.b64encode(v).decode()
    if isinstance(v, dt.timedelta):
        return v.total_seconds()
    if isinstance(v, (dt.datetime, dt.date, dt.time)):
        return v.isoformat()
    return v


def split_ranges(path: str | Path, parts: int) -> list[tuple[int, int]]:
    """Cut a plain JSONL file into about `parts` line-aligned byte ranges [(start, end)]."""
    size = Path(path).stat().st_size
    cuts = [0]
    with open(path, "rb") as f:
        for k in range(1, parts):
            t = size * k // parts
            if t <= cuts[-1]:
                continue
            f.seek(t)
            f.readline()
            pos = f.tell()
            if cuts[-1] < pos < size:
                cuts.append(pos)
    cuts.append(size)
    return list(zip(cuts, cuts[1:]))


def count_newlines(path: str | Path, byte_range: tuple[int, int]) -> int:
    """Newlines in a byte range, so each range knows the number of its first line."""
    return newline_counts(path, [byte_range])[0]


def newline_counts(path: str | Path, ranges: list[tuple[int, int]], block: int = 1 << 20) -> list[int]:
    """Newlines in each byte range: one buffer for all (a fresh one per block costs a page fault
    per 4 KB) and numpy's vector compare (twice as fast as bytes.count)."""
    import numpy as np

    buf = bytearray(block)
    view, arr, hit = memoryview(buf), np.frombuffer(buf, dtype=np.uint8), np.empty(block, dtype=bool)
    counts = []
    with open(path, "rb", buffering=0) as f:
        for start, end in ranges:
            n = 0
            f.seek(start)
            left = end - start
            while left:
                got = f.readinto(view[:min(block, left)])
                if not got:
                    break
                left -= got
                n += int(np.count_nonzero(np.equal(arr[:got], 10, out=hit[:got])))
            counts.append(n)
    return counts


def with_first_lines(ranges: list[tuple[int, int]], newlines: list[int]) -> list[tuple[int, int, int]]:
    out, line = [], 1
    for (a, b), n in zip(ranges, newlines):
        out.append((a, b, line))
        line += n
    return out


@contextmanager
def _plain_copy(path: Path, gz: bool) -> Iterator[Path]:
    """Parquet needs random access: a gzipped Parquet file is inflated to a temp file first."""
    if not gz:
        yield path
        return
    with tempfile.NamedTemporaryFile(suffix=".parquet", delete=False) as tmp:
        with gzip.open(path, "rb") as src:
            shutil.copyfileobj(src, tmp, 1 << 20)
    try:
        yield Path(tmp.name)
    finally:
        os.unlink(tmp.name)


def decode_row(data: bytes) -> Row | RecordError:
    """One record's JSON text -> its object, or the reason it is not one."""
    try:
        row = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        return decode_error(data, e)
    if type(row) is not dict:
        return RecordError("not_an_object", f"a record must be a JSON object, got {type(row).__name__}")
    return row


def decode_error(line: bytes, e: Exception) -> RecordError:
    """Tell invalid UTF-8 apart from malformed JSON, with the byte offset of the bad UTF-8."""
    raw = line.decode("utf-8", "backslashreplace").rstrip("\r\n")
    try:
        line.decode("utf-8")
    except UnicodeDecodeError as u:
        return RecordError("invalid_utf8", f"invalid UTF-8 at byte {u.start} of the line", raw=raw)
    return RecordError("malformed_json", str(e).splitlines()[0][:200], raw=raw)


# --- writers --------------------------------------------------------------------------------

class RowWriter:
    """Writes rows to JSONL, a JSON array or Parquet (by file name), gzipped when it ends in .gz.

    Writes go to a temporary name and are renamed into place on close, so a crashed run never
    leaves a truncated file that looks complete.
    """

    def __init__(self, path: str | Path, fmt: str = "ptdata", opts: dict | None = None, batch_rows: int = 4096,
                 on_unfit: Callable[[Any, str], None] | None = None, keep_empty: bool = True) -> None:
        """`on_unfit(tag, detail)`: called for each record (the `tag` given to `write_many`)
        whose rows do not fit the Parquet schema; they are left out and the rest written.
        Without it, such a batch is an InputError. `keep_empty=False`: a writer that got no row
        leaves no file (and removes an older one of that name, which would be stale).
        """
        self.path = Path(path)
        self.on_unfit = on_unfit
        self.keep_empty = keep_empty
        self._tags: list[Any] = []
        self.container, self.gz = split_name(self.path)
        self.fmt, self.opts = fmt, opts or {}
        self.count = 0
        self._buf: list[Any] = []
        self._batch = batch_rows
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(f".{self.path.name}.partial")
        raw = open(self._tmp, "wb")
        self._raw = raw
        self._f: IO[bytes] = gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) if self.gz else raw
        self._pq = None
        self.row_type: str | None = None  # set before the first write: the Parquet schema of that row type alone
        self._present: set[str] = set()
        self._schema: Any = None
        if self.container == "json":
            self._f.write(b"[")

    def write(self, row: Row) -> None:
        self._buf.append(row)
        if self.on_unfit is not None and self.container == "parquet":  # only a schema can refuse a row
            self._tags.append(row)
        if len(self._buf) >= self._batch:
            self._flush()

    def write_many(self, rows: list[Row], tag: Any = None) -> None:
        """Rows of one record; `tag` names the record to `on_unfit` if they cannot be written."""
        self._buf.extend(rows)
        if self.on_unfit is not None and self.container == "parquet":
            self._tags.extend([tag] * len(rows))
        if len(self._buf) >= self._batch:
            self._flush()

    def _flush(self) -> None:
        if not self._buf:
            return
        rows, self._buf = self._buf, []
        tags, self._tags = self._tags, []
        if self.container == "parquet":
            rows = self._write_parquet(rows, tags)
        elif self.container == "json":
            sep = b"\n" if self.count == 0 else b",\n"
            self._f.write(sep + b",\n".join(orjson.dumps(r) for r in rows))
        else:
            dumps = orjson.dumps
            self._f.write(b"\n".join([dumps(r) for r in rows]) + b"\n")
        self.count += len(rows)

    def _write_parquet(self, rows: list[Row], tags: list[Any]) -> list[Row]:
        """Write a batch; rows that do not fit the schema go to `on_unfit` by record (all rows
        of a record, or none, are written). Returns the rows written."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        from .formats import arrow_row, parquet_schema

        # A file of one row type gets that type's columns, and of its optional columns (tools, ...)
        # those some row has: the first batch decides, a later batch that needs one more widens the file.
        self._present |= {k for r in rows for k, v in r.items() if v is not None}
        schema = parquet_schema(self.fmt, self.opts, self.row_type, None if self.gz else self._present)
        if self._pq is not None and schema != self._schema:
            self._widen(schema)
        self._schema = schema
        errors = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError, TypeError, ValueError)
        converted = [arrow_row(r) for r in rows]
        names = set(schema.names)

        def fit(batch: list[Row]) -> Any:  # from_pylist drops keys the schema lacks: refuse them instead
            for r in batch:
                extra = set(r) - names
                if extra:
                    raise ValueError(f"field {sorted(extra)[0]!r} has no column in this Parquet schema")
            return pa.Table.from_pylist(batch, schema=schema)

        try:
            table = fit(converted)
        except errors as e:
            if self.on_unfit is None:
                raise InputError(f"{self.path}: rows do not fit the {self.fmt} Parquet schema ({str(e)[:300]})") from None
            bad: dict[int, str] = {}
            for r, tag in zip(converted, tags):
                try:
                    fit([r])
                except errors as e1:
                    bad.setdefault(id(tag), str(e1).splitlines()[0][:300])
            keep = [i for i, tag in enumerate(tags) if id(tag) not in bad]
            reported: set[int] = set()
            for tag in tags:
                if id(tag) in bad and id(tag) not in reported:
                    reported.add(id(tag))
                    self.on_unfit(tag, f"does not fit the {self.fmt} Parquet schema: {bad[id(tag)]}")
            rows = [rows[i] for i in keep]
            table = pa.Table.from_pylist([converted[i] for i in keep], schema=schema)
        if self._pq is None:
            self._pq = pq.ParquetWriter(self._f, schema, compression="zstd")
        self._pq.write_table(table)
        return rows

    def _widen(self, schema: Any) -> None:
        """Rewrite what was written so far under a schema with more (nullable) columns."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        self._pq.close()
        self._raw.close()
        old = self._tmp.with_name(self._tmp.name + ".old")
        os.replace(self._tmp, old)
        self._raw = self._f = open(self._tmp, "wb")
        self._pq = pq.ParquetWriter(self._f, schema, compression="zstd")
        pf = pq.ParquetFile(old)
        for i in range(pf.num_row_groups):
            t = pf.read_row_group(i)
            cols = [t.column(f.name) if f.name in t.column_names else pa.nulls(t.num_rows, f.type) for f in schema]
            self._pq.write_table(pa.Table.from_arrays(cols, schema=schema))
        old.unlink()

    def close(self) -> None:
        self._flush()
        if self.container == "parquet":
            if self._pq is None:  # no rows: still a valid, empty Parquet file
                import pyarrow.parquet as pq

                from .formats import parquet_schema

                schema = parquet_schema(self.fmt, self.opts, self.row_type, None if self.gz else self._present)
                self._pq = pq.ParquetWriter(self._f, schema, compression="zstd")
            self._pq.close()
        elif self.container == "json":
            self._f.write(b"\n]\n")
        if self._f is not self._raw:
            self._f.close()
        self._raw.close()
        if self.count == 0 and not self.keep_empty:
            self._tmp.unlink(missing_ok=True)
            if self.path.is_file() or self.path.is_symlink():
                self.path.unlink()
            return
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        try:
            if self._f is not self._raw:
                self._f.close()
            self._raw.close()
        finally:
            self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> "RowWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _identity(p: Path) -> tuple[str, tuple[int, int] | None]:
    """A file's resolved path and, if it exists, (device, inode): a hard link or symlink to an
    input is that input."""
    try:
        st = p.stat()
        ino = (st.st_dev, st.st_ino)
    except OSError:
        ino = None
    return os.path.realpath(p), ino


def guard_outputs(inputs: Iterable[str | Path], files: Iterable[str | Path] = (), dirs: Iterable[str | Path] = ()) -> None:
    """Refuse, before anything is written, an output file that is an input, or an output
    directory (whose contents a command replaces or clears) that holds an input."""
    ins = [(Path(p), *_identity(Path(p))) for p in inputs]
    seen: dict[str, Path] = {}
    for out in files:
        r = os.path.realpath(out)
        if r in seen:
            raise InputError(f"refusing to write {out}: it is also the output {seen[r]}")
        seen[r] = Path(out)
    for out in files:
        if Path(out).is_dir():
            raise InputError(f"{out}: is a directory; give the output a file name")
        real, ino = _identity(Path(out))
        for p, r, i in ins:
            if real == r or (ino is not None and ino == i):
                raise InputError(f"refusing to write {out}: it is the input {p}")
    for d in dirs:
        real = os.path.realpath(d)
        for p, r, _ in ins:
            if r.startswith(real.rstrip(os.sep) + os.sep):
                raise InputError(f"refusing to write into {d}: it holds the input {p} (choose another output directory)")


def rejects_path_for(out: str | Path) -> Path:
    """`data/out.jsonl(.gz)|.json|.parquet` -> `data/out.rejects.jsonl`."""
    p = Path(out)
    name = p.name
    for suffix in (".gz", ".jsonl", ".json", ".parquet"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    return p.with_name(f"{name}.rejects.jsonl")


PREVIEW_CHARS = 2000


def reject_row(source: str, position: int, position_label: str, op: str, err: RecordError, record: Any = None) -> Row:
    """One machine-readable reject: where it came from, which op dropped it and why, and the data."""
    row: Row = {"source": source, position_label: position, "op": op, "reason": err.reason, "detail": err.detail}
    if record is None and err.raw is not None:  # text that never parsed, so the row can be mended and read again
        row["raw"] = err.raw
    if record is not None:
        size = len(orjson.dumps(record)) if not isinstance(record, (bytes, str)) else len(record)
        if size <= DEFAULT_MAX_RECORD_BYTES:
            row["record"] = record
        else:
            row["record_preview"] = str(record)[:PREVIEW_CHARS]
    return row
