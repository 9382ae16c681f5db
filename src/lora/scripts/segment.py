"""`lora segment --audio FILE --transcript TEXT|@file.txt|@file.srt --output data/segmented.jsonl [--model-id moonshine-base-en] [--max-cer 0.2]`

Cuts one long recording with one transcript into training clips of at most 30 s (lora.segmenting):
silero-vad chunks cut in pauses, a base-model hypothesis per chunk, the transcript's words aligned to
the hypotheses and shared out to the chunks, and each chunk scored (CER of its hypothesis against its
words). Chunks with CER above --max-cer (or no words, or no hypothesis) are quarantined. With
subtitles (@file.srt / @file.vtt) their cue times cut the clips instead.

Writes the clips (16 kHz FLAC, under `<output dir>/clips/`), the manifest (--output, JSONL: id, audio
relative to the manifest, text, speaker, seconds, source, start_s, end_s) and `quarantine.jsonl`
beside it (every quarantined chunk with its reason, times, words and hypothesis), each atomically.
Train on the manifest with `lora train --manifest ...`.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from lora.core.audio import SAMPLE_RATE
from lora.core.cli import run_cli, setup_logging
from lora.core.errors import UserError
from lora.core.outputs import write_text_atomic
from lora.data.preflight import preflight
from lora.data.records import Utterance
from lora.data.subtitles import is_subtitle_file, read_subtitles
from lora.longform import LongformOptions, torch_transcriber
from lora.model_utils import load_base, resolve_model_id
from lora.scripts.run_stt import read_text_arg
from lora.segmenting import SegmentOptions, segment_by_cues, segment_recording, write_clips

log = logging.getLogger("lora")

QUARANTINE_FILE = "quarantine.jsonl"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lora segment", description=__doc__.split("\n\n")[1],
                                     epilog=__doc__.split("\n\n")[2])
    parser.add_argument("--audio", required=True, metavar="FILE",
                        help="the long recording (WAV, FLAC, OGG, MP3; M4A, WebM and other containers through ffmpeg)")
    parser.add_argument("--transcript", required=True, metavar="TEXT|@FILE",
                        help="its transcript, or @file.txt holding it, or @file.srt / @file.vtt: subtitles, whose cue times "
                             "cut the clips (no VAD or word alignment; each clip still scored against the base model)")
    parser.add_argument("--output", required=True, help="manifest (JSONL) to write; clips go to clips/ beside it")
    parser.add_argument("--model-id", default="moonshine-base-en", help="base model that places the words (default moonshine-base-en)")
    parser.add_argument("--max-cer", type=float, default=0.2, help="quarantine chunks whose CER exceeds this (default 0.2)")
    parser.add_argument("--max-chunk-s", type=float, default=30.0, help="longest clip in seconds (default 30)")
    parser.add_argument("--speaker", default="", help="speaker id written into every row (default: none)")
    parser.add_argument("--batch-size", type=int, default=8, help="chunks per decoding batch")
    parser.add_argument("--quiet", action="store_true", help="warnings only")
    return parser


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.quiet)
    if not 0 <= args.max_cer:
        raise UserError(f"--max-cer {args.max_cer:g}: must be >= 0")
    if not 1.0 <= args.max_chunk_s <= 30.0:
        raise UserError(f"--max-chunk-s {args.max_chunk_s:g}: must be within 1..30 s (the models' window is 30 s)")
    if args.batch_size < 1:
        raise UserError(f"--batch-size {args.batch_size}: must be >= 1")
    output = Path(args.output)
    if output.suffix.lower() != ".jsonl":
        raise UserError(f"{output}: the manifest is JSONL; name it *.jsonl")
    cues = read_subtitles(args.transcript[1:]) if args.transcript.startswith("@") and is_subtitle_file(args.transcript[1:]) else None
    transcript = " ".join(c.text for c in cues) if cues else read_text_arg(args.transcript, "--transcript")
    if not transcript.strip():
        raise UserError("--transcript is empty; pass the recording's transcript (TEXT or @file.txt)")
    row = Utterance(Path(args.audio).stem or "recording", args.speaker, transcript, args.audio, origin=args.audio)
    report = preflight([row], require_text=True, quiet=True, source=args.audio, max_seconds=24 * 3600.0)
    samples = report.good[0].samples()

    model, processor, family = load_base(resolve_model_id(args.model_id))
    options = SegmentOptions(max_cer=args.max_cer, longform=LongformOptions(args.max_chunk_s, batch_size=args.batch_size))
    transcriber = torch_transcriber(model, processor, family, args.batch_size)
    try:
        if cues:
            result = segment_by_cues(samples, cues, transcriber, options)
        else:
            result = segment_recording(samples, transcript, transcriber, options)
    except ValueError as exc:  # the model heard nothing the transcript could be placed by
        raise UserError(f"{args.audio}: {exc}; check that the transcript belongs to this recording") from None
    write_clips(samples, result.clips, output.parent, row.id, args.speaker, str(args.audio), manifest_name=output.name)
    quarantine = output.with_name(QUARANTINE_FILE)
    lines = [{"origin": f"{args.audio}@{q.clip.start_s:.2f}-{q.clip.end_s:.2f}s", "reason": q.reason,
              "start_s": round(q.clip.start_s, 3), "end_s": round(q.clip.end_s, 3), "text": q.clip.text,
              "hypothesis": q.clip.hypothesis, "cer": q.clip.cer} for q in result.quarantined]
    write_text_atomic(quarantine, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in lines))
    kept_s = sum(c.end_s - c.start_s for c in result.clips)
    print(f"{args.audio}: {len(samples) / SAMPLE_RATE:.1f} s -> {len(result.clips)} clip(s) ({kept_s:.1f} s) -> {output}; "
          f"{len(result.quarantined)} quarantined -> {quarantine}")
    for q in result.quarantined:
        print(f"  quarantined {q.clip.start_s:.2f}-{q.clip.end_s:.2f} s: {q.reason}")
    if not result.clips:
        raise UserError(f"{args.audio}: every chunk was quarantined (listed in {quarantine}); "
                        "check the transcript, or raise --max-cer")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
