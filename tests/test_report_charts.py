"""Charts say what the tables say: a mean rating of 3.5 is drawn as 3.5 (not 4), a share of 1/3 as
33.33 (not 33.333333333333336), and a long model-version label is shortened on the chart but
kept whole in its tooltip."""
from __future__ import annotations

import re

from ptdata.report.html import LABEL_CHARS, hbar_chart, histogram


def test_bar_values_are_printed_as_the_tables_print_them():
    long = "ft-2026-11-30-qwen3-8b-sft-dpo-round-3-with-flywheel-v7-data"
    svg = hbar_chart("mean rating (1-5)", ["v1", long, "<script>x</script>"], [3.5, 100 / 3, 4])
    labels = re.findall(r">([^<>]+)</text>", svg)
    assert labels[1::2] == ["3.5", "33.33", "4"]  # the bar values, in order
    assert f"<title>{long}</title>" in svg and f">{long[:LABEL_CHARS - 1]}…<" in svg
    assert "<script>" not in svg and "&lt;script&gt;" in svg


def test_histograms_label_bin_edges_and_counts():
    svg = histogram("score", [i / 20 for i in range(21)], [0] * 7 + [3, 9, 1] + [0] * 10)
    assert ">0.3<" in svg and "<title>[0.35, 0.4): 3</title>" in svg and "0.3500000000000001" not in svg
    assert ">9<" in svg and ">0<" in svg  # the count axis: 0 and the tallest bar
