"""Every figure RESULTS.md and plan.md cite is the one in its committed result file.

A cited figure is written as `4,450<!-- benchmarks/results/gpu.json results/moonshine-base-en/ours/audio_seconds_per_second ,.0f -->`:
the value as printed, then (in an HTML comment a reader does not see) the file, the path of keys to the
number in it (`/`-separated; list items by index) and the format that prints it. The test reads every
such comment and checks the printed value is that number in that format.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = (ROOT / "RESULTS.md", ROOT / "plan.md")
FIGURE = re.compile(r"(?P<shown>[-+]?[\d,]*\.?\d+(?:%|x)?)<!-- (?P<file>\S+) (?P<keys>\S+) (?P<fmt>\S+) -->")


def cited(doc: Path | None = None) -> list[re.Match]:
    return [m for d in ([doc] if doc else DOCS) for m in FIGURE.finditer(d.read_text(encoding="utf-8"))]


def lookup(data, keys: str):
    for key in (k.replace("%", "/") for k in keys.split("/")):  # "%" stands for a "/" inside a key
        data = data[int(key)] if isinstance(data, list) else data[key]
    return data


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d.name)
def test_results_doc_cites_figures(doc):
    assert len(cited(doc)) >= 10
    comments = doc.read_text(encoding="utf-8").count("<!-- ")
    assert comments == len(cited(doc)), "a figure comment that does not parse: value<!-- file keys format -->"


@pytest.mark.parametrize("match", cited(), ids=lambda m: f"{m['file']}:{m['keys']}")
def test_each_cited_figure_matches_its_file(match):
    path = ROOT / match["file"]
    assert path.is_file(), f"{match['file']} is cited but not committed"
    value = lookup(json.loads(path.read_text(encoding="utf-8")), match["keys"])
    fmt = match["fmt"]
    suffix = "x" if fmt.endswith("x") else ""
    assert format(value, fmt.rstrip("x")) + suffix == match["shown"]
