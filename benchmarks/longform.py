"""Long-form transcription and segmentation on long real recordings, for both model families.

    uv run python benchmarks/longform.py [--models moonshine-base-en,whisper-tiny.en] [--batch-size 8]

Long recordings are consecutive real utterances of one speaker joined end to end
(lora.data.long_recordings): the 11 LJSpeech utterances (61 s), each LibriSpeech chapter of
../shared/speech (test-clean, dev-clean), and every FSDD take of speaker 9201 in id order (0..9
five times: a counting sequence). For each family and recording it measures
  * WER of the long-form path (VAD -> chunks <= the family's `longform_chunk_s`, Moonshine 15 s, Whisper 30 s,
    as `lora stt` cuts them -> batched decoding, lora.longform) on the
    joined audio against the joined transcript, and WER of transcribing the same utterances one by
    one (batched the same way); pooled WER = all word errors / all reference words;
  * throughput of each, audio seconds per wall second (long-form time includes the VAD); one
    untimed warm-up decode per model first;
  * segmentation (lora.segmenting) with clips of at most 30 s and of at most 10 s: share of
    transcript words assigned to the clip that spans their time (+-0.5 s; word times estimated from
    the known utterance boundaries, by character position), and clips kept / quarantined (CER > 0.2).
    Most recordings here are under 30 s (one chunk, placement trivially right), so the 10 s run is
    the informative one.
The 30 s segmentation reuses the long-form pass's chunk hypotheses (same chunks, a memo keyed by
the chunk's samples), so segmentation time is not a throughput figure.

Scoring: lora.evaluation.score (Whisper English normaliser), except FSDD: that normaliser turns a
spelled-out digit sequence ("ZERO ONE TWO") into one number ("012") and keeps a lone "one" as a
word, so FSDD references and hypotheses are compared as digit tokens (zero..nine and 0..9 -> 0..9,
case and punctuation dropped; other words kept) with jiwer, one-by-one and long-form alike.

Writes benchmarks/results/longform.json and longform.md (atomically).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("moonshine-base-en", "whisper-tiny.en")
LIBRISPEECH_SUBSETS = ("test-clean", "dev-clean")
LJSPEECH_SUBSET = "ljspeech"
FSDD_SUBSET, FSDD_SPEAKER = "fsdd", "9201"
BATCH_SIZE = 8
PLACEMENT_TOLERANCE_S = 0.5
RESULTS = ROOT / "benchmarks" / "results"
SEGMENT_MAX_CHUNK_S = (30.0, 10.0)
TIMING_REPEATS = 2
DIGITS = {w: str(i) for i, w in enumerate(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])}
DIGITS.update({str(i): str(i) for i in range(10)})


def speech_dir() -> Path:
    path = Path(os.environ.get("LORA_SPEECH_DIR") or ROOT.parent / "shared" / "speech")
    if not (path / "manifest.jsonl").is_file():
        sys.exit(f"error: real speech folder not found at {path} (set LORA_SPEECH_DIR)")
    return path


def recordings(root: Path) -> list[tuple[str, object]]:
    """(corpus, JoinedRecording) for every long recording the bench uses."""
    from lora.data.long_recordings import chapter_groups, join_utterances
    from lora.data.records import read_librispeech_dir

    out = []
    for rec_id, utts in chapter_groups(read_librispeech_dir(root, [LJSPEECH_SUBSET])).items():
        out.append(("ljspeech", join_utterances(rec_id, utts)))
    for rec_id, utts in chapter_groups(read_librispeech_dir(root, list(LIBRISPEECH_SUBSETS))).items():
        out.append(("librispeech", join_utterances(rec_id, utts)))
    fsdd = [u for u in read_librispeech_dir(root, [FSDD_SUBSET]) if u.speaker == FSDD_SPEAKER]
    for rec_id, utts in chapter_groups(fsdd).items():
        out.append(("fsdd", join_utterances(rec_id, utts)))
    return out


class MemoTranscriber:
    """Wraps a batched transcriber; remembers each chunk's text by a digest of its samples."""

    def __init__(self, inner):
        self.inner, self.memo = inner, {}

    def __call__(self, batch):
        keys = [hashlib.sha1(b.tobytes()).hexdigest() for b in batch]
        todo = [i for i, k in enumerate(keys) if k not in self.memo]
        if todo:
            for i, text in zip(todo, self.inner([batch[i] for i in todo])):
                self.memo[keys[i]] = text
        return [self.memo[k] for k in keys]


def digit_tokens(text: str) -> str:
    """Words as digit tokens (FSDD scoring): "Zero, 1 two." -> "0 1 2"; other words kept lower case."""
    words = re.findall(r"[a-z0-9']+", text.lower())
    return " ".join(DIGITS.get(w, w) for w in words) or "<empty>"


def word_errors(references: list[str], hypotheses: list[str], digits: bool) -> tuple[int, int]:
    """(word errors, reference words), pooled over the pairs."""
    if digits:
        import jiwer

        out = jiwer.process_words([digit_tokens(r) for r in references], [digit_tokens(h) for h in hypotheses])
        words = sum(len(digit_tokens(r).split()) for r in references)
        return out.substitutions + out.deletions + out.insertions, words
    from lora.evaluation import score

    out = score([str(i) for i in range(len(references))], references, hypotheses)
    return out["substitutions"] + out["deletions"] + out["insertions"], out["ref_words"]


def bench_model(model_name: str, recs, speech: dict, batch_size: int, max_chunk_s: float | None = None) -> dict:
    from lora.longform import LongformOptions, torch_transcriber, transcribe_long
    from lora.model_utils import load_base, resolve_model_id
    from lora.segmenting import (
        SegmentOptions,
        segment_recording,
        word_placement_accuracy,
    )

    model, processor, family = load_base(resolve_model_id(model_name))
    plain = torch_transcriber(model, processor, family, batch_size)
    plain([recs[0][1].utterances[0].samples()])  # warm-up, untimed
    chunk_s = max_chunk_s or family.longform_chunk_s  # the family's, as `lora stt` cuts
    options = LongformOptions(max_chunk_s=chunk_s, batch_size=batch_size)
    rows = []
    for corpus, rec in recs:
        print(f"[{model_name}] {rec.id}: {len(rec.utterances)} utterances, {rec.seconds:.1f} s", flush=True)
        utts = rec.utterances
        parts = [u.samples() for u in utts]
        t_one, t_long = [], []
        for _ in range(TIMING_REPEATS):  # alternated, fastest kept: the 2-core machine is shared
            t0 = time.perf_counter()
            one = plain(parts)
            t_one.append(time.perf_counter() - t0)
            memo = MemoTranscriber(plain)
            t0 = time.perf_counter()
            long = transcribe_long(rec.samples, memo, options)  # VAD included in the timing
            t_long.append(time.perf_counter() - t0)
        t_one, t_long = min(t_one), min(t_long)
        digits = corpus == "fsdd"
        e_one, words = word_errors([u.text for u in utts], one, digits)
        # the normaliser can count a joined transcript's words differently (numbers across a join): own counts
        e_long, words_long = word_errors([rec.text], [long.text], digits)
        segmentation = {}
        for max_s in SEGMENT_MAX_CHUNK_S:
            seg_options = SegmentOptions(longform=LongformOptions(max_chunk_s=max_s, batch_size=batch_size))
            seg = segment_recording(rec.samples, rec.text, memo, seg_options, speech=speech[rec.id])
            segmentation[f"{max_s:g}"] = {
                "clips": len(seg.clips) + len(seg.quarantined),
                "placement_accuracy": word_placement_accuracy(seg, rec.word_times(), PLACEMENT_TOLERANCE_S),
                "clips_kept": len(seg.clips), "clips_quarantined": len(seg.quarantined),
                "quarantine_reasons": [q.reason for q in seg.quarantined],
                "clip_seconds": [round(c.end_s - c.start_s, 2) for c in seg.clips],
            }
        rows.append({
            "recording": rec.id, "corpus": corpus, "speaker": rec.speaker, "utterances": len(utts),
            "seconds": round(rec.seconds, 3), "ref_words": words, "ref_words_long": words_long,
            "transcript_words": len(rec.text.split()),
            "scoring": "digit tokens" if digits else "whisper normaliser",
            "wer_one_by_one": e_one / words, "errors_one_by_one": e_one,
            "wer_long": e_long / words_long, "errors_long": e_long,
            "seconds_one_by_one": round(t_one, 3), "seconds_long": round(t_long, 3),
            "throughput_one_by_one": rec.seconds / t_one, "throughput_long": rec.seconds / t_long,
            "chunks": len(long.segments), "chunk_seconds": [round(s.end_s - s.start_s, 2) for s in long.segments],
            "segmentation": segmentation,
            "hypothesis_long": long.text, "hypotheses_one_by_one": one,
        })
    corpora = sorted({r["corpus"] for r in rows})
    return {"model": model_name, "family": family.name, "longform_chunk_s": chunk_s, "recordings": rows, "pooled": pooled(rows),
            "pooled_by_corpus": {c: pooled([r for r in rows if r["corpus"] == c]) for c in corpora}}


def pooled(rows: list[dict]) -> dict:
    words = sum(r["ref_words"] for r in rows)
    audio = sum(r["seconds"] for r in rows)
    segmentation = {}
    for key in rows[0]["segmentation"]:
        segs = [(r["segmentation"][key], r["transcript_words"]) for r in rows]
        segmentation[key] = {
            "placement_accuracy": sum(s["placement_accuracy"] * w for s, w in segs) / sum(w for _, w in segs),
            "clips_kept": sum(s["clips_kept"] for s, _ in segs),
            "clips_quarantined": sum(s["clips_quarantined"] for s, _ in segs),
        }
    return {
        "recordings": len(rows), "audio_seconds": round(audio, 3), "ref_words": words,
        "wer_one_by_one": sum(r["errors_one_by_one"] for r in rows) / words,
        "wer_long": sum(r["errors_long"] for r in rows) / sum(r["ref_words_long"] for r in rows),
        "throughput_one_by_one": audio / sum(r["seconds_one_by_one"] for r in rows),
        "throughput_long": audio / sum(r["seconds_long"] for r in rows),
        "segmentation": segmentation,
    }


def markdown(result: dict) -> str:
    keys = [f"{m:g}" for m in SEGMENT_MAX_CHUNK_S]
    seg_head = " | ".join(f"placement / kept / quar. (clips <= {k} s)" for k in keys)
    chunks = ", ".join(f"{m['longform_chunk_s']:g} s ({m['model']})" for m in result["models"])
    lines = [
        "# Long-form transcription and segmentation", "",
        (f"{result['created']} · {result['machine']} · batch size {result['batch_size']} · VAD silero (ONNX) · "
        f"long-form chunks <= {chunks} · placement tolerance {PLACEMENT_TOLERANCE_S} s"), "",
        ("Long recordings = consecutive real utterances of one speaker joined end to end. WER pooled = all word "
        "errors / all reference words (Whisper English normaliser; FSDD as digit tokens, see the script's "
        "docstring). Throughput = audio s / wall s (long-form includes the VAD). Word placement = share of "
        "transcript words put in the clip that spans their (estimated) time."), "",
        (f"| model | recordings | audio s | words | WER one-by-one | WER long-form | throughput one-by-one | throughput long-form "
        f"| {seg_head} |"),
        "|---|---|---|---|---|---|---|---|" + "---|" * len(keys),
    ]
    for m in result["models"]:
        for label, p in [("all", m["pooled"]), *m["pooled_by_corpus"].items()]:
            segs = " | ".join(f"{100 * p['segmentation'][k]['placement_accuracy']:.1f}% / "
                              f"{p['segmentation'][k]['clips_kept']} / {p['segmentation'][k]['clips_quarantined']}"
                              for k in keys)
            lines.append(f"| {m['model']} | {label} | {p['audio_seconds']:.1f} | {p['ref_words']} "
                         f"| {100 * p['wer_one_by_one']:.2f}% | {100 * p['wer_long']:.2f}% "
                         f"| {p['throughput_one_by_one']:.2f} | {p['throughput_long']:.2f} | {segs} |")
    lines += ["", "## Per recording", "",
              (f"| model | recording | corpus | utts | s | words | WER 1-by-1 | WER long | thr 1-by-1 | thr long | chunks "
              f"| {seg_head} |"),
              "|---|---|---|---|---|---|---|---|---|---|---|" + "---|" * len(keys)]
    for m in result["models"]:
        for r in m["recordings"]:
            segs = " | ".join(f"{100 * r['segmentation'][k]['placement_accuracy']:.1f}% / "
                              f"{r['segmentation'][k]['clips_kept']} / {r['segmentation'][k]['clips_quarantined']}"
                              for k in keys)
            lines.append(f"| {m['model']} | {r['recording']} | {r['corpus']} | {r['utterances']} | {r['seconds']:.1f} "
                         f"| {r['ref_words']} | {100 * r['wer_one_by_one']:.1f}% | {100 * r['wer_long']:.1f}% "
                         f"| {r['throughput_one_by_one']:.2f} | {r['throughput_long']:.2f} | {r['chunks']} | {segs} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--max-chunk-s", type=float, default=None,
                        help="long-form chunk for every model (default: each family's `longform_chunk_s`, as `lora stt`)")
    args = parser.parse_args(argv)

    import platform

    import torch

    from lora.core.outputs import library_versions, write_json_atomic, write_text_atomic
    from lora.longform import VadOptions, detect_speech

    recs = recordings(speech_dir())
    speech = {rec.id: detect_speech(rec.samples, VadOptions()) for _, rec in recs}  # for segmentation
    models = [bench_model(name, recs, speech, args.batch_size, args.max_chunk_s) for name in args.models.split(",")]
    result = {
        "created": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}",
        "batch_size": args.batch_size, "placement_tolerance_s": PLACEMENT_TOLERANCE_S,
        "versions": library_versions(), "models": models,
    }
    write_json_atomic(args.out / "longform.json", result)
    write_text_atomic(args.out / "longform.md", markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
