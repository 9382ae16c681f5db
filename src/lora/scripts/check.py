"""`lora-check MANIFEST_OR_DIR [--quarantine PATH] [--min-seconds S] [--max-seconds S] [--min-good N]`

Checks every row of a manifest (JSONL/JSON/CSV/TSV/path list) or a speech folder the way every
lora command will (see lora.data.preflight), prints a summary table, and lists the unusable rows in a
quarantine JSONL (origin file:line, id, reason, detail). Exit 0 when at least --min-good rows are
usable, 2 (one line on stderr) otherwise.

Quarantine file: --quarantine PATH is always written (empty when nothing is bad), so scripts can
rely on it; without it ./quarantine.jsonl is written only when there are bad rows, so a clean
check leaves nothing behind (an older ./quarantine.jsonl is then left as it was).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lora.core.cli import run_cli, setup_logging
from lora.data.manifest import read_source
from lora.data.preflight import check_rows, write_quarantine

DEFAULT_QUARANTINE = Path("quarantine.jsonl")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lora check", description=__doc__.split("\n\n")[1],
                                     epilog=__doc__.split("\n\n")[2])
    parser.add_argument("source", metavar="MANIFEST_OR_DIR", help="manifest file or LibriSpeech-layout folder")
    parser.add_argument("--quarantine", type=Path, default=None, metavar="PATH",
                        help=f"where to list bad rows (default: ./{DEFAULT_QUARANTINE}, only if any are bad)")
    parser.add_argument("--min-seconds", type=float, default=0.1, metavar="S", help="shortest usable utterance (default 0.1)")
    parser.add_argument("--max-seconds", type=float, default=30.0, metavar="S", help="longest usable utterance (default 30)")
    parser.add_argument("--min-good", type=int, default=1, metavar="N", help="fail unless this many rows are usable (default 1)")
    parser.add_argument("--require-text", action="store_true",
                        help="rows without a transcript (plain path lists) are bad too, as for training")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.quiet)

    read = read_source(args.source)
    report = check_rows(read.rows, read.bad, min_seconds=args.min_seconds, max_seconds=args.max_seconds,
                        require_text=args.require_text, quiet=args.quiet, source=read.source)
    target = args.quarantine or (DEFAULT_QUARANTINE if report.bad else None)
    if target is not None:
        from dataclasses import replace

        report = replace(report, quarantine=write_quarantine(target, report.bad))
    print(report.render(), flush=True)
    report.require(args.min_good)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
