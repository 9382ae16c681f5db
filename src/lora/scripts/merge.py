"""`lora merge --adapter-dir D --output M`: fold a LoRA adapter into its base model.

The output is a plain transformers folder (weights, config, generation config with a decode-length
cap, processor files, README.md model card, lora_merge.json) that
`transformers.pipeline("automatic-speech-recognition", model=M)` loads without PEFT.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lora.core.cli import ArgumentParser, run_cli, setup_logging


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="lora merge", description=__doc__.split("\n\n")[0].split(": ", 1)[1])
    parser.add_argument("--adapter-dir", required=True, help="a run's lora_adapter/ folder")
    parser.add_argument("--output", required=True, help="folder for the merged transformers model (replaced if it is one already)")
    parser.add_argument("--model-id", default=None, help="base model (default: the one the adapter records)")
    parser.add_argument("--quiet", action="store_true", help="warnings only")
    return parser


def _main(argv: list[str] | None) -> int:
    from lora.merging import merge_adapter  # deferred: imports torch/transformers (seconds); --help must stay fast

    args = build_parser().parse_args(argv)
    setup_logging(args.quiet)
    out = merge_adapter(Path(args.adapter_dir), Path(args.output), args.model_id)
    print(f"merged {args.adapter_dir} into its base model: {out} (load it with "
          f"transformers.pipeline('automatic-speech-recognition', model='{out}'))")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
