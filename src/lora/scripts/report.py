"""`lora-report METRICS_JSON [--output-dir DIR]`

Turns a run's real_metrics.json (baseline vs tuned) or a lora-eval eval.json (one model) into
report.md, report.html (one self-contained file, plots embedded) and the PNG plots it shows.

Output goes next to the metrics file unless --output-dir is given. Imports no torch: it only reads JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lora.core.cli import run_cli
from lora.core.errors import UserError
from lora.report.content import write_report

METRICS_FILES = ("real_metrics.json", "eval.json")  # what a run folder / a `lora eval --output` folder holds


def build_parser() -> argparse.ArgumentParser:
    parts = __doc__.split("\n\n")
    parser = argparse.ArgumentParser(prog="lora report", description=parts[1], epilog=parts[2])
    parser.add_argument("metrics", type=Path, metavar="METRICS_JSON",
                        help="real_metrics.json or eval.json (or the folder holding it)")
    parser.add_argument("--output-dir", type=Path, default=None, metavar="DIR",
                        help="where to write the report (default: the metrics file's folder)")
    return parser


def read_metrics(path: Path) -> dict:
    """The metrics dict, or a one-line UserError saying what is wrong with the file."""
    if path.is_dir():
        found = [path / name for name in METRICS_FILES if (path / name).is_file()]
        if not found:
            raise UserError(f"{path}: a folder with no {' or '.join(METRICS_FILES)} (no finished run or eval there); "
                            "pass a run's output folder or its metrics file")
        path = found[0]
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
    return data


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    metrics = read_metrics(args.metrics)

    written = write_report(metrics, args.output_dir or (args.metrics if args.metrics.is_dir() else args.metrics.parent))
    for path in written.values():
        print(path)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
