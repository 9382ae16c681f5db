"""`lora-report RUN_DIR|METRICS_JSON [--output-dir DIR]`

Turns a run's real_metrics.json (baseline vs tuned) or a lora-eval eval.json (one model) into
report.md, report.html (one self-contained file, plots embedded) and the PNG plots it shows. A run
folder stands for the real_metrics.json (else the eval.json) inside it.

Output goes next to the metrics file unless --output-dir is given. Imports no torch: it only reads JSON.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from lora.core.cli import ArgumentParser, run_cli
from lora.core.errors import UserError
from lora.report.content import write_report
from lora.results import EvalResult, RealMetrics, shape_problem

METRICS_FILES = ("real_metrics.json", "eval.json")  # what a run folder (lora train) or an eval's folder holds


def build_parser() -> argparse.ArgumentParser:
    parts = __doc__.split("\n\n")
    parser = ArgumentParser(prog="lora report", description=parts[1], epilog=parts[2])
    parser.add_argument("metrics", type=Path, metavar="RUN_DIR|METRICS_JSON",
                        help="a run folder, or its real_metrics.json, or a lora eval's eval.json")
    parser.add_argument("--output-dir", type=Path, default=None, metavar="DIR",
                        help="where to write the report (default: the metrics file's folder)")
    return parser


def metrics_file(path: Path) -> Path:
    """The metrics file itself, or for a folder the first of METRICS_FILES inside it."""
    if not path.is_dir():
        return path
    for name in METRICS_FILES:
        if (path / name).is_file():
            return path / name
    raise UserError(f"{path}: a folder with no {' or '.join(METRICS_FILES)} (no finished run or eval there); "
                    "pass a run's output folder or its metrics file")


def read_metrics(path: Path) -> dict:
    """The metrics dict, or a one-line UserError saying what is wrong with the file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read ({exc})") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object of metrics, got {type(data).__name__}")
    if not any(key in data for key in ("baseline_wer", "tuned_wer", "wer")):
        raise UserError(f"{path}: not a run's real_metrics.json nor a lora eval's eval.json (no baseline_wer, tuned_wer "
                        "or wer field); pass one of those")
    kind = "real_metrics.json" if "baseline_wer" in data or "tuned_wer" in data else "eval.json"
    problem = shape_problem(RealMetrics, data) or shape_problem(EvalResult, data)  # the report reads fields of both
    if problem:
        raise UserError(f"{path}: {problem} (not as lora writes its {kind}); restore the file from the run's output "
                        "folder, or run the command again")
    return data


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    path = metrics_file(args.metrics)
    metrics = read_metrics(path)
    out = args.output_dir or path.parent
    if out.is_dir() and not os.access(out, os.W_OK | os.X_OK):  # a shared, read-only results folder
        raise UserError(f"{out}: cannot write the report there (read-only or no permission); pass --output-dir DIR")
    written = write_report(metrics, out)
    for path in written.values():
        print(path)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
