"""`lora stt (--audio FILE... | --audio-list LIST) (--model-id M | --adapter-dir D | --exported DIR) --output OUT.json [--srt P] [--vtt P]`

Transcribes audio files of any length, or a manifest (audio as float arrays or file paths) or a plain
list of audio paths, with a base model alone (--model-id), a base model + LoRA adapter (--adapter-dir;
the base defaults to the one recorded in the adapter) or an exported model (--exported: the folder
`lora export` wrote, ONNX Moonshine or CTranslate2 Whisper), and scores it (normalised WER) when
references are present. Clips up to the family's long-form chunk (`--max-chunk-s`, default Moonshine 15 s,
Whisper 30 s: `ModelFamily.longform_chunk_s`) are decoded whole; longer ones go through the long-form path
(lora.longform: silero-vad speech regions, chunks of at most that cut in pauses, decoded in batches,
stitched), and the artifact lists every segment's start/end time. Warns when an utterance or speaker of the
manifest was in the adapter's training data.

Subtitles: --srt/--vtt PATH for one audio file; with several, one `<id>.srt`/`<id>.vtt` per file beside
--output.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
from pathlib import Path

import numpy as np

from lora.core.audio import SAMPLE_RATE
from lora.core.cli import ArgumentParser, run_cli, setup_logging
from lora.core.errors import UserError
from lora.core.outputs import check_not_an_input, check_output_file, write_text_atomic
from lora.data.formats import AUDIO_EXTENSIONS, audio_files_in
from lora.data.hf_sources import read_dataset
from lora.data.hygiene import CHARS_PER_SECOND, HygieneOptions, has_dc_offset, speech_level, text_findings
from lora.data.manifest import read_source
from lora.data.preflight import preflight
from lora.data.records import Utterance
from lora.data.selection import seen_in_training
from lora.evaluation import score
from lora.families import all_exports, family_for
from lora.longform import (
    LongformOptions,
    VadOptions,
    detect_speech,
    exported_transcriber,
    readable_cues,
    to_srt,
    to_vtt,
    torch_transcriber,
    transcribe_any,
)
from lora.model_utils import load_base, load_with_adapter, resolve_model_id
from lora.results import SttArtifact, write_result
from lora.scripts.dataset_args import add_dataset_args, dataset_options

log = logging.getLogger("lora")

SHORT_CHUNK_S = 5.0  # chunks shorter than this cut most utterances, and so words (a warning, not a refusal)
MAX_SECONDS = 24 * 3600.0  # stt takes recordings of any length (a day is a generous sanity bound)
# Transcribing is not training: a heavily clipped recording is still worth its transcript, so stt warns about
# clipping where training and scoring quarantine it (a share of clipped samples can never exceed 1). The same
# for a DC offset (removed before decoding) and for speech far quieter than training's `silent` floor (brought
# up to a normal level, then kept only where silero-vad hears speech in it): LibriSpeech 1089-134686-0000 with
# +0.3 DC, or scaled by 1e-3 (speech level 1.2e-4), was refused, while both models transcribe either as well as
# the original once offset removed / gain applied. Digital silence (below `QUIET_FLOOR`), constant and
# non-finite audio still have nothing to transcribe and are refused as everywhere. A reference too short or too long
# for its audio (chars_per_second) was a reason to drop the clip untranscribed; it is only what the output is
# scored against, so it is a warning here (`reference_warnings`, training's limits).
TRAINING_HYGIENE = HygieneOptions()
QUIET_FLOOR = 1e-5  # speech level (hygiene.speech_level) below a 16-bit LSB's RMS: digital silence
QUIET_TARGET = 0.05  # the speech level quiet audio is brought up to (real clips: 0.0039-0.37)
STT_HYGIENE = HygieneOptions(clipped_quarantine_share=1.0, silent_rms=QUIET_FLOOR, min_ac_rms=QUIET_FLOOR,
                             max_abs_mean=float("inf"), max_mean_to_std=float("inf"), min_chars_per_second=0.0,
                             max_chars_per_second=float("inf"))


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="lora stt", description=__doc__.split("\n\n")[1],
                            epilog=__doc__.split("\n\n")[2])
    parser.add_argument("files", nargs="*", metavar="FILE", help="audio file(s) of any length, or folders of them, as --audio")
    parser.add_argument("--audio", nargs="+", default=None, metavar="FILE",
                        help="audio file(s) of any length, or folders of them (every audio file inside)")
    parser.add_argument("--audio-list", default=None, help="manifest (JSONL/JSON/CSV/TSV) or a text file of audio paths")
    parser.add_argument("--reference", default=None, metavar="TEXT|@FILE",
                        help="with one --audio file: its transcript (or @file.txt holding it), to score the WER")
    parser.add_argument("--model-id", default=None,
                        help="base model: hub id, local dir or import name (default with --adapter-dir: the one it records)")
    parser.add_argument("--adapter-dir", default=None, help="a run's lora_adapter/ folder (optional with --model-id)")
    parser.add_argument("--processor-dir", default=None, help="a run's processor/ folder (default: the base model's)")
    parser.add_argument("--exported", default=None, metavar="DIR",
                        help="an exported model folder (lora export; its export_report.json says the format)")
    add_dataset_args(parser)
    parser.add_argument("--output", required=True, help="JSON artifact to write")
    parser.add_argument("--srt", default=None, metavar="PATH", help="SubRip subtitles (one audio file; several: beside --output)")
    parser.add_argument("--vtt", default=None, metavar="PATH", help="WebVTT subtitles (one audio file; several: beside --output)")
    parser.add_argument("--batch-size", type=int, default=8, help="clips or long-form chunks per decoding batch")
    parser.add_argument("--max-chunk-s", type=float, default=None,
                        help="longest chunk of the long-form path (default: the model family's, Moonshine 15, Whisper 30)")
    parser.add_argument("--quiet", action="store_true", help="warnings only")
    return parser


def leakage_warnings(rows, run_info: dict) -> list[str]:
    """Utterances/speakers of the manifest that the adapter was trained on (one line each kind)."""
    ids, speakers = seen_in_training(list(rows), run_info)
    warnings = []
    if ids:
        examples = ", ".join(ids[:3]) + (", ..." if len(ids) > 3 else "")
        warnings.append(f"{len(ids)} of {len(rows)} utterance(s) were in the adapter's training data ({examples}): "
                        "their WER is not held-out")
    if speakers:
        warnings.append(f"speaker(s) {', '.join(speakers[:5])}{', ...' if len(speakers) > 5 else ''} were in the "
                        "adapter's training data: WER is not held-out")
    return warnings


def read_text_arg(value: str, flag: str) -> str:
    """`TEXT` or `@file.txt` (the file's text, whitespace collapsed)."""
    if not value.startswith("@"):
        return value
    path = Path(value[1:])
    try:
        return " ".join(path.read_text(encoding="utf-8").split())
    except OSError as exc:
        raise UserError(f"{path}: cannot read the {flag} file ({exc.strerror}); pass {flag} TEXT or @an/existing/file.txt") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: the {flag} file is not UTF-8 text; save it as UTF-8") from None


def check_args(args) -> None:
    """Contradictory or missing options: one line each, before anything is loaded."""
    if not args.audio and not args.audio_list and not args.dataset:
        raise UserError("nothing to transcribe: pass --audio FILE [FILE ...], --audio-list MANIFEST or --dataset D")
    if args.exported and (args.adapter_dir or args.processor_dir):
        raise UserError("--exported runs an exported model (its adapter is merged in); drop --adapter-dir/--processor-dir")
    if not (args.exported or args.adapter_dir or args.model_id):
        raise UserError("no model: pass --model-id M (base model alone), --adapter-dir D (base + LoRA) or --exported DIR")
    if args.reference is not None and (args.audio_list or len(args.audio or []) != 1):
        raise UserError("--reference is the transcript of one --audio file; for several, use --audio-list with a manifest")
    if args.batch_size < 1:
        raise UserError(f"--batch-size {args.batch_size}: must be >= 1")
    if args.max_chunk_s is not None and not 1.0 <= args.max_chunk_s <= 30.0:
        raise UserError(f"--max-chunk-s {args.max_chunk_s:g}: must be within 1..30 s (the models' window is 30 s)")
    if args.max_chunk_s is not None and args.max_chunk_s < SHORT_CHUNK_S:
        log.warning("warning: --max-chunk-s %g: speech longer than a chunk is cut where it is quietest, often inside a "
                    "word at this length; transcripts lose words there (the default: Moonshine 15 s, Whisper 30 s)",
                    args.max_chunk_s)
    if args.processor_dir:
        folder = Path(args.processor_dir)
        if not folder.is_dir():
            raise UserError(f"--processor-dir {folder}: no such folder; pass a run's processor/ folder (or drop the flag)")
        if not any((folder / name).is_file() for name in ("processor_config.json", "preprocessor_config.json")):
            raise UserError(f"--processor-dir {folder}: no processor_config.json or preprocessor_config.json in it; "
                            "pass a run's processor/ folder (or drop the flag)")
    check_output_file(args.output)
    reference = args.reference[1:] if args.reference and args.reference.startswith("@") else None
    inputs = [*(args.audio or []), args.audio_list, args.dataset, reference]
    check_not_an_input(args.output, inputs)
    one_file = bool(args.audio) and len(args.audio) == 1 and not (args.audio_list or args.dataset)
    for flag, path in (("--srt", args.srt), ("--vtt", args.vtt)):
        if not path or not one_file:
            continue  # several files: one subtitle file per id beside --output, whose folder is checked above
        check_output_file(path, flag)
        check_not_an_input(path, inputs, flag)
        if Path(path).resolve() == Path(args.output).resolve():
            raise UserError(f"{flag} {path} is also --output (the JSON artifact); give the subtitles their own file")
    if args.srt and args.vtt and Path(args.srt).resolve() == Path(args.vtt).resolve():
        raise UserError(f"--srt and --vtt are the same file {args.srt}; give each its own")


def audio_files(paths: list[str]) -> list[str]:
    """The `--audio` entries, a folder standing for the audio files in it (recursively, in name order)."""
    files = []
    for path in paths:
        if not Path(path).is_dir():
            files.append(path)
            continue
        found = [str(f) for f in audio_files_in(Path(path))]
        if not found:
            raise UserError(f"{path}: a folder with no audio files in it ({', '.join(sorted(AUDIO_EXTENSIONS))}); "
                            "pass audio files, or a folder that holds some")
        files += found
    return files


def audio_rows(paths: list[str], reference: str | None) -> list[Utterance]:
    """One row per `--audio` file (id = file stem; a repeated stem gets -2, -3...)."""
    rows, seen = [], {}
    for path in paths:
        stem = Path(path).stem or "audio"
        seen[stem] = seen.get(stem, 0) + 1
        row_id = stem if seen[stem] == 1 else f"{stem}-{seen[stem]}"
        rows.append(Utterance(row_id, "", reference or "", path, origin=path, extra={"has_text": reference is not None}))
    return rows


def conditioned(samples: np.ndarray, vad: VadOptions) -> tuple[np.ndarray, str]:
    """Samples fit to decode, and what was done to them ("" when nothing), for audio training would refuse but
    that holds speech: a DC offset is subtracted, speech below training's `silent` level is brought up to
    `QUIET_TARGET` (peak within full scale). Raises ValueError when amplified audio holds no speech (silero-vad)."""
    notes = []
    mean, std = float(samples.mean()), float(samples.std())
    if has_dc_offset(mean, std, TRAINING_HYGIENE):
        samples = (samples - mean).astype(np.float32)
        notes.append(f"DC offset {mean:+.3f} removed")
    level = speech_level(samples, SAMPLE_RATE)
    if 0 < level < TRAINING_HYGIENE.silent_rms:
        gain = min(QUIET_TARGET / level, 1.0 / max(float(np.max(np.abs(samples))), 1e-12))
        samples = (samples * gain).astype(np.float32)
        if not detect_speech(samples, vad):
            raise ValueError(f"speech level {level:.2e} and no speech heard in it at +{20 * np.log10(gain):.0f} dB: "
                             "nothing to transcribe; check the recording")
        notes.append(f"very quiet (speech level {level:.2e} < {TRAINING_HYGIENE.silent_rms:g}): decoded at "
                     f"+{20 * np.log10(gain):.0f} dB")
    return samples, "; ".join(notes)


def load_transcriber(args):
    """(transcribe_batch, artifact model fields, adapter run info, model family) for the chosen model."""
    if args.exported:
        transcribe_batch, report = exported_transcriber(args.exported)
        fields = {k: report.get(k, "") for k in ("model_id_requested", "model_id_used", "model_source", "model_path")}
        family = family_for(all_exports()[report["format"]].family)
        return transcribe_batch, fields | {"adapter_dir": report.get("adapter_dir", "")}, {}, family
    if args.adapter_dir:
        model, processor, family, resolved, info = load_with_adapter(Path(args.adapter_dir), args.model_id)
    else:
        resolved = resolve_model_id(args.model_id)
        model, processor, family = load_base(resolved)
        info = {}
    if args.processor_dir:
        from transformers import AutoProcessor  # deferred: heavy

        try:
            processor = AutoProcessor.from_pretrained(args.processor_dir)
        except (OSError, ValueError) as exc:
            reason = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
            raise UserError(f"--processor-dir {args.processor_dir}: not a loadable processor ({reason}); pass a run's "
                            "processor/ folder") from None
    fields = resolved.record() | {"adapter_dir": str(args.adapter_dir or "")}  # "" = base model alone
    return torch_transcriber(model, processor, family, args.batch_size), fields, info, family


def subtitle_path(output: str | Path, row_id: str, ext: str) -> Path:
    """Where several files' `<id>.srt` goes: beside --output, in the folders the id names (`lora segment` names its
    clips `narrator/part1-0000`), never above it (`..` and empty parts dropped)."""
    parts = [p for p in re.split(r"[\\/]", row_id) if p not in ("", ".", "..")] or ["audio"]
    return Path(output).parent.joinpath(*parts[:-1], f"{parts[-1]}.{ext}")


def reference_warnings(rows: list[Utterance]) -> list[tuple[str, str]]:
    """(origin, what) for each row whose reference is too short or too long for its audio by training's limits
    (hygiene's chars_per_second, which stt's own options leave out)."""
    found = []
    for u in rows:
        if u.text and u.extra.get("seconds"):
            found += [(u.origin, f.detail) for f in text_findings(u.text, u.extra["seconds"], TRAINING_HYGIENE)
                      if f.check == CHARS_PER_SECOND]
    return found


def check_subtitle_targets(args, rows: list[Utterance]) -> None:
    """Several files with --srt/--vtt write `<id>.srt` beside --output: refuse, before a model loads, one that is a
    recording's own subtitles beside it (`talks/part1.srt` of `talks/part1.flac`, as `lora segment` reads them):
    `lora stt talks/ --output talks/stt.json --srt x` replaced them with the model's cues, unsaid."""
    if len(rows) < 2:
        return
    for flag, ext, given in (("--srt", "srt", args.srt), ("--vtt", "vtt", args.vtt)):
        for u in rows if given else ():
            target = subtitle_path(args.output, u.id, ext)
            own = Path(u.audio).with_suffix(f".{ext}") if isinstance(u.audio, str | Path) else None
            if own is not None and target.is_file() and own.is_file() and os.path.samefile(target, own):
                raise UserError(f"{flag}: {target} is the subtitle file of {u.audio}, which this command's cues (one "
                                f"file per recording beside --output) would replace; write --output into another folder")


def write_subtitles(args, transcripts: dict) -> list[str]:
    """--srt/--vtt (cues cut to reading size, `readable_cues`): the path given for one file; one file per id beside
    --output for several."""
    written = []
    for flag, render, ext in ((args.srt, to_srt, "srt"), (args.vtt, to_vtt, "vtt")):
        if not flag:
            continue
        if len(transcripts) == 1:
            targets = {next(iter(transcripts)): Path(flag)}
        else:
            targets = {i: subtitle_path(args.output, i, ext) for i in transcripts}
        for row_id, path in targets.items():
            written.append(str(write_text_atomic(path, render(readable_cues(transcripts[row_id].segments)))))
    return written


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    args.audio = audio_files([*(args.audio or []), *args.files]) or None  # `lora stt memo.m4a` means `--audio memo.m4a`
    setup_logging(args.quiet)
    check_args(args)

    reference = read_text_arg(args.reference, "--reference") if args.reference is not None else None
    rows, bad, source = [], [], "--audio"
    if args.audio:
        rows += audio_rows(args.audio, reference)
    if args.dataset:
        read = read_dataset(args.dataset, dataset_options(args))
        rows, bad, source = rows + list(read.rows), list(read.bad), read.source
    if args.audio_list:
        read = read_source(Path(args.audio_list))
        if not read.rows and not args.audio:
            raise UserError(f"{args.audio_list}: the manifest has no usable rows; add at least one audio entry")
        rows, bad, source = rows + list(read.rows), list(read.bad), read.source
    check_subtitle_targets(args, rows)
    report = preflight(rows, bad, require_text=False, quiet=True, source=source, max_seconds=MAX_SECONDS, hygiene=STT_HYGIENE)
    for w in report.warnings:
        log.warning("warning: %s: %s (transcribed all the same)", w.origin, w.detail)
    for origin, detail in reference_warnings(report.good):
        log.warning("warning: %s: %s (transcribed all the same; scored against that reference)", origin, detail)

    transcribe_batch, model_fields, info, family = load_transcriber(args)
    for warning in leakage_warnings(report.good, info):
        log.warning("warning: %s", warning)
    max_chunk_s = args.max_chunk_s or family.longform_chunk_s
    options = LongformOptions(max_chunk_s=max_chunk_s, batch_size=args.batch_size)
    errors = [{"id": b.id, "origin": b.origin, "reason": b.reason, "detail": b.detail} for b in report.bad]
    transcripts, texts = {}, {}
    for u in report.good:
        try:
            samples = u.samples()
        except Exception as exc:  # one unreadable file must not lose the others
            errors.append({"id": u.id, "origin": u.origin, "reason": "cannot decode", "detail": f"{type(exc).__name__}: {exc}"})
            continue
        try:
            samples, note = conditioned(samples, options.vad)
        except ValueError as exc:
            errors.append({"id": u.id, "origin": u.origin, "reason": "hygiene: silent", "detail": str(exc)})
            continue
        if note:
            log.warning("warning: %s: %s (transcribed all the same)", u.origin, note)
        transcripts[u.id] = transcribe_any(samples, transcribe_batch, options)
        texts[u.id] = (u.text, len(samples) / SAMPLE_RATE)
        if len(samples) > max_chunk_s * SAMPLE_RATE:
            log.info("%s: %.0f s long-form -> %d segments", u.id, len(samples) / SAMPLE_RATE, len(transcripts[u.id].segments))
    if not transcripts:  # every file failed after preflight (undecodable, or no speech heard): nothing to write
        first = errors[0]
        raise UserError(f"{first['origin']}: {first['reason']} ({first['detail']}); fix or remove the bad file(s)")
    scored = [i for i, (text, _) in texts.items() if text.strip()]
    result = score(scored, [texts[i][0] for i in scored], [transcripts[i].text for i in scored])
    per_id = {s["id"]: s["wer"] for s in result["samples"]}
    samples = [{"id": i, "reference": texts[i][0] or None, "hypothesis": t.text, "wer": per_id.get(i),
                "seconds": round(texts[i][1], 3), "segments": len(t.segments)} for i, t in transcripts.items()]
    segments = [{"id": i, "start_s": round(s.start_s, 3), "end_s": round(s.end_s, 3), "text": s.text}
                for i, t in transcripts.items() for s in t.segments]
    artifact = SttArtifact(**model_fields, processor_dir=args.processor_dir, samples=samples, wer=result["wer"],
                           cer=result["cer"], errors=errors, segments=segments, max_chunk_s=max_chunk_s,
                           exported_dir=args.exported)
    write_result(args.output, artifact)
    subtitles = write_subtitles(args, transcripts)
    wer = "n/a (no references)" if result["wer"] is None else f"{100 * result['wer']:.1f}%"
    seconds = sum(s for _, s in texts.values())
    print(f"transcribed {len(transcripts)} file(s)/utterance(s), {seconds:.1f} s, {len(segments)} segment(s), "
          f"WER {wer}, {len(errors)} errors -> {args.output}" + (f" (+ {', '.join(subtitles)})" if subtitles else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
