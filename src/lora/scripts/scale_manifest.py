"""`lora scale-manifest`: an N-hour manifest made of the real clips of a speech folder, for scale tests.

Write an N-hour JSONL manifest whose rows are the real clips of a speech folder (LibriSpeech layout or
a folder with manifest.jsonl), repeated round-robin until the hours are reached. Each repeat gets its own
id (`<id>~r<k>`) and keeps its speaker and transcript; it points at the same audio file (no audio is
written, none is synthetic). Such a corpus measures memory, start-up and throughput at scale; any WER
measured on it means nothing (the same clips over and over), and `lora train` says so when it sees
`repeat_of` in the rows.

    uv run python scripts/scale_manifest.py --hours 100 --output data/scale_100h.jsonl
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path

from lora.core.cli import ArgumentParser, run_cli, setup_logging
from lora.core.errors import UserError
from lora.core.outputs import check_output_file, write_text_atomic
from lora.core.paths import default_speech_dir
from lora.data.manifest import read_source
from lora.data.preflight import header_check

log = logging.getLogger("lora")
MAX_HOURS = 10_000  # 100x the scale bench's corpus; the rows are held in memory for the atomic write (~10 GB here)


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="lora scale-manifest", description=__doc__.split("\n\n")[1])
    parser.add_argument("--hours", type=float, required=True, help="hours of audio the manifest should hold")
    parser.add_argument("--output", required=True, help="JSONL manifest to write")
    parser.add_argument("--speech-dir", action="append", default=None,
                        help="real speech folder(s) to draw clips from (repeatable; default: ../shared/speech and "
                             "../shared/speech-extra when present)")
    return parser


def real_clips(folders: list[Path]) -> list[dict]:
    """Every usable clip of `folders` as {id, audio (absolute path), text, speaker, seconds}, by id."""
    clips = []
    for folder in folders:
        read = read_source(folder)
        checked = header_check(read.rows, read.bad, source=read.source, quiet=True)
        clips += [{"id": u.id, "audio": str(Path(u.audio).resolve()), "text": u.text, "speaker": u.speaker,
                   "seconds": round(u.extra["seconds"], 4)} for u in checked.good if isinstance(u.audio, Path)]
    if not clips:
        raise UserError(f"no usable clips with audio files in {', '.join(map(str, folders))}; pass --speech-dir")
    return sorted(clips, key=lambda c: c["id"])


def scale_rows(clips: list[dict], hours: float):
    """Rows cycling over `clips` until `hours` of audio; repeat k of clip X has id `X~r<k>`."""
    wanted, total, k = hours * 3600.0, 0.0, 0
    while total < wanted:
        for clip in clips:
            if total >= wanted:
                break
            yield {**clip, "id": f"{clip['id']}~r{k}", "repeat_of": clip["id"]}
            total += clip["seconds"]
        k += 1


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    if not (args.hours > 0 and math.isfinite(args.hours)):
        raise UserError(f"--hours {args.hours}: pass a positive number of hours")
    if args.hours > MAX_HOURS:  # it would run for hours and run out of memory before writing anything
        raise UserError(f"--hours {args.hours:g}: at most {MAX_HOURS} hours; write a larger corpus as several manifests")
    check_output_file(args.output)
    if Path(args.output).suffix.lower() != ".jsonl":  # JSONL under another name is read as that format later
        raise UserError(f"{args.output}: the manifest is JSONL; name it *.jsonl")
    if args.speech_dir:
        folders = [Path(f) for f in args.speech_dir]
    else:
        base = default_speech_dir()
        if base is None:
            raise UserError("no speech folder: pass --speech-dir or set $LORA_SPEECH_DIR (default ../shared/speech)")
        folders = [base] + [p for p in [base.parent / "speech-extra"] if p.is_dir()]
    clips = real_clips(folders)
    lines, seconds = [], 0.0
    for row in scale_rows(clips, args.hours):
        lines.append(json.dumps(row, ensure_ascii=False))
        seconds += row["seconds"]
    write_text_atomic(args.output, "\n".join(lines) + "\n")
    print(f"wrote {args.output}: {len(lines)} rows, {seconds / 3600:.2f} h, from {len(clips)} real clips of "
          f"{len({c['speaker'] for c in clips})} speakers in {', '.join(map(str, folders))} (repeated; WER on it means nothing)")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
