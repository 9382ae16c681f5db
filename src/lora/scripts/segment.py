"""`lora segment --audio FILE --transcript TEXT|@file.txt|@file.srt (or --manifest M|DIR) --output data/segmented.jsonl`

Cuts a long recording with its transcript (or many: --manifest) into training clips of at most 30 s (lora.segmenting):
silero-vad chunks cut in pauses, a base-model hypothesis per chunk, the transcript's words aligned to
the hypotheses and shared out to the chunks, and each chunk scored (CER of its hypothesis against its
words). Chunks with CER above --max-cer (or no words, or no hypothesis) are quarantined. With
subtitles (@file.srt / @file.vtt / @file.sbv, or @video.mkv: its own subtitle stream) their cue times cut
the clips instead, one speaker's cues to a clip where the subtitles name who speaks. Subtitles off the speech
(timed against another cut of a video, or at another frame rate) are found by comparing their cues with the
speech silero-vad hears: a warning, or moved with --subtitle-offset auto.

Writes the clips (16 kHz FLAC, under `<output dir>/clips/`), the manifest (--output, JSONL: id, audio
relative to the manifest, text, speaker, seconds, source, start_s, end_s) and `quarantine.jsonl`
beside it (every quarantined chunk with its reason, times, words and hypothesis), each atomically.
Train on the manifest with `lora train --manifest ...`.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from collections import Counter
from pathlib import Path

from lora.core.audio import SAMPLE_RATE
from lora.core.cli import ArgumentParser, run_cli, setup_logging
from lora.core.errors import UserError
from lora.core.outputs import check_output_file, write_text_atomic
from lora.data.manifest import BadRow, read_source
from lora.data.preflight import preflight
from lora.data.records import Utterance
from lora.data.subtitles import Cue, is_subtitle_file, is_video, read_subtitles, shift_cues
from lora.longform import LongformOptions, torch_transcriber
from lora.model_utils import load_base, resolve_model_id
from lora.scripts.run_stt import read_text_arg
from lora.segmenting import (
    MIN_OFFSET_S,
    SegmentOptions,
    best_offset,
    cut_at_end,
    heard_speech,
    segment_by_cues,
    segment_recording,
    write_clip_audio,
    write_manifest,
)

log = logging.getLogger("lora")

QUARANTINE_FILE = "quarantine.jsonl"


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="lora segment", description=__doc__.split("\n\n")[1],
                            epilog=__doc__.split("\n\n")[2])
    parser.add_argument("--audio", metavar="FILE",
                        help="the long recording (WAV, FLAC, OGG, MP3; M4A, WebM, videos and other containers through ffmpeg)")
    parser.add_argument("--transcript", metavar="TEXT|@FILE",
                        help="its transcript, or @file.txt holding it, or @file.srt / @file.vtt (or @video.mkv: the video's own "
                             "subtitle stream): subtitles, whose cue times "
                             "cut the clips (no VAD or word alignment; each clip still scored against the base model)")
    parser.add_argument("--manifest", metavar="M",
                        help="instead of --audio/--transcript: many long recordings, as a manifest (audio + text per row) "
                             "or a folder of recordings (or videos) with same-name .txt/.srt/.vtt transcripts beside them, "
                             "or videos with their own subtitle stream")
    parser.add_argument("--output", required=True, help="manifest (JSONL) to write; clips go to clips/ beside it")
    parser.add_argument("--model-id", default="moonshine-base-en", help="base model that places the words (default moonshine-base-en)")
    parser.add_argument("--subtitle-offset", metavar="auto|SECONDS",
                        help="shift every subtitle cue by SECONDS (later; negative: earlier), or `auto`: per recording, "
                             "by the shift (and frame-rate stretch) that lines its cues up with the speech heard, when that is clear. "
                             "Default: the cues' own times, and a warning when they look off")
    parser.add_argument("--max-cer", type=float, default=0.2, help="quarantine chunks whose CER exceeds this (default 0.2)")
    parser.add_argument("--max-chunk-s", type=float, default=30.0, help="longest clip in seconds (default 30)")
    parser.add_argument("--speaker", default="",
                        help="speaker id written into every row (default: none, or the manifest's); a clip whose "
                             "subtitles name who speaks (<v Name>, \"Name: ...\") gets that name")
    parser.add_argument("--batch-size", type=int, default=8, help="chunks per decoding batch")
    parser.add_argument("--quiet", action="store_true", help="warnings only")
    return parser


def _subtitles(transcript: str) -> bool:
    """--transcript names subtitles: @file.srt/.vtt/.sbv, or @video.mkv (its own subtitle stream)."""
    return transcript.startswith("@") and (is_subtitle_file(transcript[1:]) or is_video(transcript[1:]))


def check_args(args) -> None:
    """Contradictory or missing options: one line each, before anything is loaded."""
    if args.manifest and (args.audio or args.transcript):
        raise UserError("--manifest names the recordings and their transcripts; drop --audio/--transcript")
    if not args.manifest and not (args.audio and args.transcript):
        raise UserError("pass --audio FILE --transcript TEXT|@FILE (one recording) or --manifest M (many)")
    if not 0 <= args.max_cer:
        raise UserError(f"--max-cer {args.max_cer:g}: must be >= 0")
    if not 1.0 <= args.max_chunk_s <= 30.0:
        raise UserError(f"--max-chunk-s {args.max_chunk_s:g}: must be within 1..30 s (the models' window is 30 s)")
    if args.batch_size < 1:
        raise UserError(f"--batch-size {args.batch_size}: must be >= 1")
    if args.subtitle_offset is not None and args.transcript and not _subtitles(args.transcript):
        raise UserError("--subtitle-offset shifts subtitles' cues; the transcript is not subtitles (@file.srt/.vtt/.sbv or @video)")
    if args.subtitle_offset not in (None, "auto"):
        try:
            offset = float(args.subtitle_offset)
        except ValueError:
            offset = math.nan
        if not math.isfinite(offset):
            raise UserError(f"--subtitle-offset {args.subtitle_offset}: pass `auto` or seconds (e.g. -2.5)")
    if Path(args.output).suffix.lower() != ".jsonl":
        raise UserError(f"{args.output}: the manifest is JSONL; name it *.jsonl")
    check_output_file(args.output)  # found after the model has cut every recording, that would lose the work
    clips = Path(args.output).expanduser().parent / "clips"
    if clips.exists() and not clips.is_dir():
        raise UserError(f"--output {args.output}: the clips go to {clips}, which is a file; move it or pick another folder")


def recordings(args) -> tuple[list[Utterance], list[BadRow], str]:
    """The long recordings to cut (each with its transcript, and `extra["subtitles"]` where cues time it)."""
    if args.manifest:
        read = read_source(Path(args.manifest))
        rows = list(read.rows)
        if args.speaker:
            for u in rows:
                u.speaker = args.speaker
        return rows, list(read.bad), read.source
    extra = {}
    if _subtitles(args.transcript):
        transcript = " ".join(c.text for c in read_subtitles(args.transcript[1:]))
        extra["subtitles"] = args.transcript[1:]
    else:
        transcript = read_text_arg(args.transcript, "--transcript")
    if not transcript.strip():
        raise UserError("--transcript is empty; pass the recording's transcript (TEXT or @file.txt)")
    return [Utterance(Path(args.audio).stem or "recording", args.speaker, transcript, args.audio, origin=args.audio,
                      extra=extra)], [], args.audio


def timed_cues(u: Utterance, samples, offset: str | None) -> tuple[list[Cue], bool]:
    """The recording's subtitle cues, shifted as --subtitle-offset says, and whether they look off the speech
    and were left as timed (with a warning saying so)."""
    subtitles = u.extra["subtitles"]
    cues = read_subtitles(subtitles)
    if offset not in (None, "auto"):
        return shift_cues(cues, float(offset)), False
    speech, total_s = heard_speech(samples), len(samples) / SAMPLE_RATE
    fit = best_offset(speech, cues, total_s)
    if not fit.clear:
        return cues, False
    agreeing = f"speech and cues agree on {fit.agreement_unshifted:.0%} of the subtitles' span as timed, {fit.agreement:.0%} moved"
    # Cue frames past the recording's end count against the cues as timed, and a shift or stretch that pulls them
    # back wins by it. Where the speech leaves the frames little else to go by (short pauses, cues spanning whole
    # sentences), a last cue left on screen after the recording ends then looks like cues late or timed at
    # another frame rate. Fitting the cues cut at the end instead (tried) silenced that wrong warning and with it
    # the right one for cues 3 s late or at 25/24 on the recipe's 122 s recording. So both fits are made, and
    # where the cut cues fit as timed the warning says the overrun alone may be why.
    overrun = max(c.end_s for c in cues) - total_s
    if overrun >= MIN_OFFSET_S and not best_offset(speech, cut_at_end(cues, total_s), total_s).clear:
        agreeing += (f"; that rests on the last cue ending {overrun:.1f} s past the recording's end: if it was only "
                     f"left on screen, the cues are right as timed")
    if offset == "auto":
        stretched = f"stretched x{fit.scale:.6g} (another frame rate) and " if fit.scale != 1.0 else ""
        print(f"{subtitles}: cues {stretched}shifted {fit.offset_s:+.2f} s to the speech heard ({agreeing})")
        return shift_cues(cues, fit.offset_s, fit.scale), False
    if fit.scale == 1.0:
        log.warning("%s: the cues look %.2f s %s against the speech in %s (%s); pass --subtitle-offset auto (or %+.2f) "
                    "to shift them", subtitles, abs(fit.offset_s), "early" if fit.offset_s > 0 else "late", u.audio,
                    agreeing, fit.offset_s)
    else:
        log.warning("%s: the cues look timed at another frame rate than the speech in %s (they fit stretched x%.6g "
                    "and shifted %+.2f s: %s); pass --subtitle-offset auto to move them", subtitles, u.audio, fit.scale,
                    fit.offset_s, agreeing)
    return cues, True


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.quiet)
    check_args(args)
    output = Path(args.output)
    rows, bad, where = recordings(args)
    report = preflight(rows, bad, require_text=True, quiet=True, source=where, max_seconds=24 * 3600.0)

    model, processor, family = load_base(resolve_model_id(args.model_id))
    options = SegmentOptions(max_cer=args.max_cer, longform=LongformOptions(args.max_chunk_s, batch_size=args.batch_size))
    transcriber = torch_transcriber(model, processor, family, args.batch_size)
    manifest_rows, kept_clips, quarantined, total_s, off_speech = [], [], [], 0.0, 0
    lines = [{"origin": b.origin, "reason": b.reason, "detail": b.detail} for b in report.bad]
    for u in report.good:
        samples = u.samples()
        total_s += len(samples) / SAMPLE_RATE
        try:
            if "subtitles" in u.extra:
                cues, looks_off = timed_cues(u, samples, args.subtitle_offset)
                off_speech += looks_off
                result = segment_by_cues(samples, cues, transcriber, options)
            else:
                result = segment_recording(samples, u.text, transcriber, options)
        except ValueError as exc:  # the model heard nothing the transcript could be placed by
            if not args.manifest:
                raise UserError(f"{u.audio}: {exc}; check that the transcript belongs to this recording") from None
            lines.append({"origin": u.origin, "reason": "transcript not placed", "detail": f"{exc}; check that the "
                          "transcript belongs to this recording"})
            continue
        offset = u.span.start if u.span is not None else 0.0  # a manifest row that is a segment: times in its file
        manifest_rows += write_clip_audio(samples, result.clips, output.parent, u.id, u.speaker, str(u.audio), offset_s=offset)
        kept_clips += result.clips
        quarantined += [(u, q) for q in result.quarantined]
        lines += [{"origin": f"{u.audio}@{offset + q.clip.start_s:.2f}-{offset + q.clip.end_s:.2f}s", "reason": q.reason,
                   "start_s": round(offset + q.clip.start_s, 3), "end_s": round(offset + q.clip.end_s, 3),
                   "text": q.clip.text, "hypothesis": q.clip.hypothesis, "cer": q.clip.cer} for q in result.quarantined]
    write_manifest(output, manifest_rows)
    quarantine = output.with_name(QUARANTINE_FILE)
    write_text_atomic(quarantine, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in lines))
    kept_s = sum(r["seconds"] for r in manifest_rows)
    print(f"{where}: {len(report.good)} recording(s), {total_s:.1f} s -> {len(manifest_rows)} clip(s) ({kept_s:.1f} s) "
          f"-> {output}; {len(lines)} quarantined -> {quarantine}")
    if args.subtitle_offset is not None and not any("subtitles" in u.extra for u in report.good):
        log.warning("--subtitle-offset %s: no recording here is timed by subtitles; nothing was shifted", args.subtitle_offset)
    named = Counter(c.speaker for c in kept_clips if c.speaker)
    if named:
        print("speakers named by the subtitles: " + ", ".join(f"{who} ({n} clip{'s' * (n > 1)})" for who, n in sorted(named.items())))
    for u, q in quarantined[:20]:
        print(f"  quarantined {u.id} {q.clip.start_s:.2f}-{q.clip.end_s:.2f} s: {q.reason}")
    if not manifest_rows:
        raise UserError(f"{where}: every chunk was quarantined (listed in {quarantine}); " + (
            "the subtitles look off the speech (warned above): pass --subtitle-offset auto" if off_speech
            else _cue_problems([r["reason"] for r in lines]) or "check the transcript, or raise --max-cer"))
    return 0


# Quarantine reasons that say the subtitles' times are wrong (no --max-cer helps), each with what to do
CUE_TIME_PROBLEMS = (
    (("past the recording's end", "before the recording's start"),
     "cues timed outside the recording: pass this recording's subtitles, or move them with --subtitle-offset SECONDS"),
    (("overlap (",), "cues timed over each other: make each cue end before the next starts"),
    (("> max_chunk_s",), "a cue longer than --max-chunk-s: split it into shorter cues"),
)


def _cue_problems(reasons: list[str]) -> str:
    """What to do when every reason is a fault of the subtitles' times (else "")."""
    found = [{i for i, (marks, _) in enumerate(CUE_TIME_PROBLEMS) if any(m in r for m in marks)} for r in reasons]
    if not reasons or not all(found):
        return ""
    return "; ".join(hint for i, (_, hint) in enumerate(CUE_TIME_PROBLEMS) if any(i in f for f in found))


def main(argv: list[str] | None = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
