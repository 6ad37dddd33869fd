"""Structural scanning of JSON bytes without parsing them: nesting depth, and the items of a
top-level array.

Why not an incremental parser (ijson): it builds every item as Python objects, so an item
nested 100,000 deep or 200 MB large is built whole before anything can say no (memory grew
with the square of the depth). Here the bytes are scanned with numpy, a chunk at a time:
quotes not escaped by an odd run of backslashes toggle "inside a string", brackets outside
strings change the depth, and commas at depth 1 end an item. Each item's bytes then go to
orjson, like a JSONL line, under the same limits (size and depth). Time is linear in the bytes
whatever their shape, memory is one chunk plus one item of at most the size limit.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import IO, Iterator

import numpy as np

from .errors import RecordError

DEFAULT_MAX_DEPTH = 100  # JSON nesting (objects and arrays) of one record
CHUNK = 4 << 20
WHITESPACE = b" \t\r\n"
BOM = b"\xef\xbb\xbf"

# structural classes: +1 opens, -1 closes, 2 separates items
_CLASS = np.zeros(256, dtype=np.int8)
_CLASS[[ord("["), ord("{")]] = 1
_CLASS[[ord("]"), ord("}")]] = -1
_CLASS[ord(",")] = 2


def _real_quotes(arr: np.ndarray, carry_bs: int) -> tuple[np.ndarray, int]:
    """Positions of the quotes that are not escaped (not preceded by an odd run of backslashes,
    the run possibly begun `carry_bs` bytes before this chunk), and the backslash run at its end.
    Works on the runs of backslashes, so its arrays are as long as the quotes and backslashes."""
    q = np.flatnonzero(arr == 34)
    b = np.flatnonzero(arr == 92)
    if not len(b):
        if carry_bs % 2 and len(q) and q[0] == 0:
            q = q[1:]
        return q, 0 if len(arr) else carry_bs
    first = np.flatnonzero(np.diff(b, prepend=-2) != 1)  # index in b of each run's first backslash
    starts, ends = b[first], b[np.append(first[1:] - 1, len(b) - 1)]
    lengths = ends - starts + 1 + np.where(starts == 0, carry_bs, 0)
    k = np.searchsorted(ends, q - 1)
    k_ok = np.minimum(k, len(ends) - 1)
    run = np.where((k < len(ends)) & (ends[k_ok] == q - 1), lengths[k_ok], 0)
    run = np.where(q == 0, carry_bs, run)
    tail = int(lengths[-1]) if ends[-1] == len(arr) - 1 else 0
    return q[run % 2 == 0], tail


@dataclass
class ScanState:
    """What a scan carries from one chunk to the next."""

    in_string: bool = False
    backslashes: int = 0
    depth: int = 0


def _structure(arr: np.ndarray, st: ScanState) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions of the structural bytes outside strings in this chunk, their class, and the
    depth after each; updates the carried state."""
    quotes, st.backslashes = _real_quotes(arr, st.backslashes)
    cls = _CLASS[arr]
    pos = np.flatnonzero(cls)
    if len(quotes) or st.in_string:
        inside = (np.searchsorted(quotes, pos) + st.in_string) % 2 == 1
        pos = pos[~inside]
        st.in_string = bool((len(quotes) + st.in_string) % 2)
    kinds = cls[pos]
    delta = np.where(kinds == 2, 0, kinds).astype(np.int64)
    depth_after = st.depth + np.cumsum(delta)
    if len(depth_after):
        st.depth = int(depth_after[-1])
    return pos, kinds, depth_after


def max_depth(data: bytes) -> int:
    """The deepest nesting of objects and arrays in a JSON text (0 for a scalar)."""
    pos, kinds, depth = _structure(np.frombuffer(data, dtype=np.uint8), ScanState())
    return int(depth.max(initial=0))


def check_depth(line: bytes, limit: int) -> RecordError | None:
    """A `too_deep` reject for a JSON text nested deeper than `limit`; counting brackets first
    keeps this free for ordinary records."""
    if line.count(b"[") + line.count(b"{") <= limit:
        return None
    d = max_depth(line)
    return too_deep(d, limit) if d > limit else None


def too_deep(depth: int, limit: int) -> RecordError:
    return RecordError("too_deep", f"nested {depth:,} levels deep, over the limit of {limit:,} (--max-depth)")


@dataclass
class _Item:
    parts: list[bytes] = field(default_factory=list)
    size: int = 0
    depth: int = 0

    def add(self, b: bytes, limit: int) -> None:
        self.size += len(b)
        if self.size <= limit:
            self.parts.append(b)
        else:
            self.parts.clear()


def _chunks(f: IO[bytes], size: int) -> Iterator[bytes]:
    """`f`'s bytes in chunks of about `size`. A read error (a truncated or corrupt gzip stream)
    comes after the bytes read before it, so nothing readable is lost."""
    import zlib

    read1 = getattr(f, "read1", None) or f.read
    while True:
        parts, n, err = [], 0, None
        while n < size:
            try:
                b = read1(size - n)
            except (OSError, EOFError, zlib.error) as e:
                err = e
                break
            if not b:
                break
            parts.append(b)
            n += len(b)
        if parts:
            yield b"".join(parts)
        if err is not None:
            raise err
        if n < size:
            return


def array_items(f: IO[bytes], max_bytes: int, max_depth_: int = DEFAULT_MAX_DEPTH,
                chunk: int = CHUNK) -> Iterator[tuple[int, bytes | RecordError]]:
    """(index, item bytes or RecordError) for each item of the top-level JSON array in `f`, or
    for each top-level object when the file holds objects instead (one pretty-printed record,
    or several one after another).

    An item over `max_bytes` is skipped unread (`record_too_large`), one nested deeper than
    `max_depth_` is `too_deep`; a bad item is one reject and the items after it are still read.
    Blank items (`[]`, a trailing comma) are not records. Data outside the arrays or objects, or
    a file cut off inside an item, is one `malformed_json` reject."""
    st = ScanState()
    state = "before"  # before a top-level value, in it, after it
    mode = "array"  # the top-level value being read: an array of items, or one object that is the item
    item = _Item()
    n = 0
    first = True
    garbage = False

    def finish(it: _Item) -> Iterator[tuple[int, bytes | RecordError]]:
        nonlocal n
        if it.size > max_bytes:
            n += 1
            yield n, RecordError("record_too_large", f"item of {it.size:,} bytes, over the limit of {max_bytes:,} (--max-record-bytes)")
            return
        data = b"".join(it.parts)
        if not data.strip(WHITESPACE):
            return
        n += 1
        if it.depth > max_depth_:
            yield n, too_deep(it.depth, max_depth_)
            return
        yield n, data

    for buf in _chunks(f, chunk):
        if first:
            first = False
            buf = buf.removeprefix(BOM)
        arr = np.frombuffer(buf, dtype=np.uint8)
        depth_before = st.depth
        pos, kinds, depth_after = _structure(arr, st)
        before = np.concatenate(([depth_before], depth_after[:-1])) if len(depth_after) else depth_after
        marks = np.flatnonzero(((kinds == 1) & (before == 0)) | ((kinds == 2) & (before == 1)) | ((kinds == -1) & (before == 1)))
        # the deepest point of each stretch between marks, for the items' depth
        deep_at = np.maximum.reduceat(depth_after, marks) if len(marks) else np.empty(0, np.int64)
        head_depth = int(depth_after[: marks[0]].max(initial=0)) if len(marks) else int(depth_after.max(initial=0))
        lift = 1 if mode == "array" else 0  # an array's items sit one level below it
        start = 0
        if state == "in":
            item.depth = max(item.depth, head_depth - lift)
        for k, m in enumerate(marks.tolist()):
            p = int(pos[m])
            kind = int(kinds[m])
            if state == "in":
                if mode == "object" and kind == 2:
                    item.depth = max(item.depth, int(deep_at[k]) - lift)  # what follows the comma counts too
                    continue  # a comma inside the object
                item.add(buf[start:p + 1 if mode == "object" else p], max_bytes)
                yield from finish(item)
                item = _Item()
                state = "after" if kind == -1 else "in"
                start = p + 1
            else:  # between top-level values: only whitespace belongs there
                garbage = garbage or bool(buf[start:p].strip(WHITESPACE)) or kind != 1
                if kind == 1:
                    state, mode = "in", "array" if buf[p] == 91 else "object"
                    lift = 1 if mode == "array" else 0
                start = p + 1 if not (state == "in" and mode == "object" and kind == 1) else p
            if state == "in":
                item.depth = max(item.depth, int(deep_at[k]) - lift)
        if state == "in":
            item.add(buf[start:], max_bytes)
        else:
            garbage = garbage or bool(buf[start:].strip(WHITESPACE))
    if state == "in":  # the file ended inside a top-level value: cut off, whether mid-item or between items
        tail = b"".join(item.parts).strip(WHITESPACE)
        n += 1
        raw = tail.decode("utf-8", "backslashreplace") if tail else None
        what = f"inside item {n}" if tail or item.size > max_bytes else f"before the {'array' if mode == 'array' else 'object'} is closed"
        yield n, RecordError("malformed_json", f"the file ends {what} (truncated?)", raw=raw)
    if garbage:
        n += 1
        yield n, RecordError("malformed_json", "data outside the top-level JSON values (an array of records, or records)")
