"""The bench's verdict rows (benchmarks/report.py, pure functions) for the scale section's first-step targets."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _report():
    sys.path.insert(0, str(BENCHMARKS))  # report.py imports bench_config as a module of that folder
    try:
        spec = importlib.util.spec_from_file_location("report", BENCHMARKS / "report.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCHMARKS))


def _scale_run(hours: int, cache: str, first_step: float) -> dict:
    return {"hours": hours, "cache": cache, "steps": 50, "peak_rss_mb": 2000.0,
            "scale": {"seconds_to_first_step": first_step, "baseline_seconds": 2.0}}


def _first_step_rows(summary: dict) -> dict:
    rows = _report().verdicts(summary)
    return {r["target"].rsplit(", ", 1)[-1]: r for r in rows if r["target"].startswith("time to the first optimizer step")}


def test_second_run_is_judged_by_the_median_of_all_warm_runs():
    scale = [_scale_run(1, "cold", 12.0), _scale_run(100, "cold", 40.0), _scale_run(100, "warm", 10.6)]
    rows = _first_step_rows({"scale": scale, "scale_warm_first_step_s": [9.4, 9.9, 11.8, 9.7]})
    second = rows["second run"]
    assert second["met"] is True  # median of 10.6, 9.4, 9.9, 11.8, 9.7 = 9.9
    assert second["measured"].startswith("9.9 s, the median of 5 runs (9.4-11.8 s; the 50-step run 10.6 s)")
    assert rows["first run"]["measured"] == "40.0 s" and rows["first run"]["met"] is True
    missed = _first_step_rows({"scale": scale, "scale_warm_first_step_s": [10.2, 9.0, 10.4, 11.0]})["second run"]
    assert missed["met"] is False  # median 10.4: the fastest run (9.0 s) does not decide it


def test_without_repeats_the_one_warm_run_decides():
    scale = [_scale_run(100, "cold", 40.0), _scale_run(100, "warm", 9.5)]
    second = _first_step_rows({"scale": scale})["second run"]
    assert second["measured"] == "9.5 s" and second["met"] is True
