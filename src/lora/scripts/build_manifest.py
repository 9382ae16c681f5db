"""`build_manifest.py --split test --samples 3 --output data/heldout_manifest.jsonl [--data-dir DIR]`

Writes JSONL rows `{"id","speaker","text","sampling_rate":16000,"audio":[float samples]}` from real
audio: a local LibriSpeech-layout folder (`--data-dir`, else the hub when reachable, else
`$LORA_SPEECH_DIR` / `../shared/speech`). Utterances are picked round-robin over speakers.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from lora.core.audio import AudioDecodeError
from lora.core.cli import ArgumentParser, run_cli, setup_logging
from lora.core.errors import UserError
from lora.core.hub import hub_reachable
from lora.core.outputs import check_output_file, write_text_atomic
from lora.core.paths import default_speech_dir
from lora.data.records import list_subsets, read_librispeech_dir, split_folder
from lora.data.selection import select_balanced
from lora.data.sources import hub_stream

log = logging.getLogger("lora")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="lora build-manifest", description=__doc__.split("\n\n")[1])
    parser.add_argument("--split", default="test", help="LibriSpeech split or folder name (test -> test-clean)")
    parser.add_argument("--samples", type=int, default=3, help="number of utterances")
    parser.add_argument("--output", required=True, help="JSONL file to write")
    parser.add_argument("--data-dir", default=None, help="LibriSpeech-layout folder (default: hub, then ../shared/speech)")
    parser.add_argument("--seed", type=int, default=42, help="seed for the pick")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    return parser


def collect(split: str, samples: int, data_dir: str | None, seed: int):

    if data_dir is None and hub_reachable():
        return hub_stream(split, samples, seed), "hub"
    root = Path(data_dir) if data_dir else default_speech_dir()
    if root is None:
        raise UserError("no speech data: pass --data-dir (the hub is unreachable and ../shared/speech is absent)")
    if not root.is_dir():
        raise UserError(f"{root}: no such folder; pass --data-dir a folder holding LibriSpeech-layout splits "
                        "(test-clean/, dev-clean/, ...), such as ../shared/speech")
    folder = split_folder(split)
    available = list_subsets(root)
    if folder not in available:
        raise UserError(f"{root}: no '{folder}' folder for split {split!r}; available: {', '.join(available) or 'none'}")
    return select_balanced(read_librispeech_dir(root, [folder]), samples, seed), f"{root}/{folder}"


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.quiet)
    if args.samples < 1:
        raise UserError("--samples must be at least 1")
    check_output_file(args.output)
    rows, where = collect(args.split, args.samples, args.data_dir, args.seed)
    if not rows:
        raise UserError(f"{where}: no utterances found for split {args.split!r}")

    lines = []
    for u in rows:
        try:
            audio = u.samples()
        except (AudioDecodeError, OSError) as exc:  # nothing is written: the manifest holds every row or none
            raise UserError(f"{u.origin}: cannot decode {u.audio} ({exc}); replace the file or delete its line "
                            "(`lora check` on the folder lists every such row)") from None
        lines.append(json.dumps({"id": u.id, "speaker": u.speaker, "text": u.text, "sampling_rate": 16000,
                                 "audio": [round(float(x), 6) for x in audio]}))
    write_text_atomic(args.output, "\n".join(lines) + "\n")
    print(f"wrote {len(rows)} utterances from {where} to {args.output}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
