"""Packing: best-fit decreasing of whole sequences into rows of a fixed length, with
position_ids restarting at 0 for every sequence and the lengths kept to unpack.

Written rows are padded to the pack length (`pad_row`): pad tokens labelled -100 whose
position_ids restart at 0 too, so the padding is a segment of its own. No attention_mask is
written on purpose: a Hugging Face model given position_ids and no attention_mask reads the
sequence boundaries from them and keeps every sequence to itself (a block-diagonal causal
mask, `transformers.masking_utils.find_packed_sequence_indices`), while a padding mask would
switch that off and let the packed sequences of a row attend to each other."""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field


@dataclass
class PackedRow:
    input_ids: list[int] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    position_ids: list[int] = field(default_factory=list)
    seq_lengths: list[int] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)


def best_fit_decreasing(lengths: list[int], capacity: int) -> list[list[int]]:
    """Bins of sequence indices; every bin's total <= capacity; no sequence is split.
    Longest first, each into the fullest bin it still fits (a sorted list of free space)."""
    too_long = [i for i, n in enumerate(lengths) if n > capacity]
    if too_long:
        raise ValueError(f"{len(too_long)} sequence(s) longer than the pack length {capacity}")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    free: list[tuple[int, int]] = []  # (free space, bin index), sorted
    bins: list[list[int]] = []
    for i in order:
        n = lengths[i]
        j = bisect.bisect_left(free, (n, -1))
        if j < len(free):
            space, b = free.pop(j)
            bins[b].append(i)
            bisect.insort(free, (space - n, b))
        else:
            bins.append([i])
            bisect.insort(free, (capacity - n, len(bins) - 1))
    return bins


def pack(seqs: list[tuple[str, list[int], list[int]]], capacity: int) -> tuple[list[PackedRow], float]:
    """(id, input_ids, labels) sequences -> packed rows and the packing efficiency
    (tokens / (rows x capacity))."""
    bins = best_fit_decreasing([len(s[1]) for s in seqs], capacity)
    rows = []
    for b in bins:
        r = PackedRow()
        for i in sorted(b):
            sid, ids, labels = seqs[i]
            r.input_ids += ids
            r.labels += labels
            r.position_ids += list(range(len(ids)))
            r.seq_lengths.append(len(ids))
            r.ids.append(sid)
        rows.append(r)
    total = sum(len(s[1]) for s in seqs)
    return rows, (total / (len(rows) * capacity) if rows else 0.0)


def pad_row(row: PackedRow, length: int, pad_id: int) -> PackedRow:
    """The row padded to `length` tokens (seq_lengths and ids still name the real sequences only)."""
    n = length - len(row.input_ids)
    if n < 0:
        raise ValueError(f"a packed row of {len(row.input_ids)} tokens is longer than {length}")
    return PackedRow(row.input_ids + [pad_id] * n, row.labels + [-100] * n, row.position_ids + list(range(n)),
                     list(row.seq_lengths), list(row.ids))


def unpack(row: PackedRow) -> list[tuple[str, list[int], list[int]]]:
    out, pos = [], 0
    for sid, n in zip(row.ids, row.seq_lengths):
        out.append((sid, row.input_ids[pos:pos + n], row.labels[pos:pos + n]))
        pos += n
    return out
