"""Does the exported model transcribe like the PyTorch model, and run as fast as the original?

Three transcripts of the same real utterances: the merged PyTorch model (batch 1, so padding plays
no part), the exported model in its runtime, and the original packaged model in the same runtime.
The exported and original runtimes are timed clip by clip in alternation, after one untimed
warm-up clip each, so a load change on the machine hits both sides alike.
"""

from __future__ import annotations

import time

from lora.core.audio import SAMPLE_RATE
from lora.data_loader import prepare_dataset
from lora.decoding import transcribe_examples
from lora.evaluation import score
from lora.families import resolve_callable

SPEED_TARGET = 0.9  # exported throughput / original throughput, same runtime
WER_GAP_TARGET_POINTS = 0.2  # |WER(exported) - WER(PyTorch merged)|, in percentage points


def _wer(rows, hyps: list[str]) -> dict:

    result = score([u.id for u in rows], [u.text for u in rows], hyps)
    return {"wer": result["wer"], "cer": result["cer"], "ref_words": result["ref_words"]}


def timed_alternating(transcribers: dict, audios: list, limits: list[int]) -> tuple[dict, dict]:
    """(hypotheses, seconds) per transcriber, each clip run by every transcriber in turn."""
    for transcribe in transcribers.values():  # untimed warm-up: session and kernel set-up
        transcribe(audios[0], limits[0])
    hyps = {name: [] for name in transcribers}
    seconds = dict.fromkeys(transcribers, 0.0)
    for audio, limit in zip(audios, limits):
        for name, transcribe in transcribers.items():
            start = time.perf_counter()
            hyps[name].append(transcribe(audio, limit))
            seconds[name] += time.perf_counter() - start
    return hyps, seconds


def measure_parity(fmt, out_dir, merged, rows) -> dict:

    examples = prepare_dataset(rows, merged.processor, merged.family)
    start = time.perf_counter()
    torch_hyps = transcribe_examples(merged.model, merged.processor, merged.family, examples, batch_size=1)
    torch_seconds = time.perf_counter() - start
    audios = [u.samples() for u in rows]
    limits = [merged.family.max_new_tokens(len(a) / SAMPLE_RATE) for a in audios]
    runners = {"exported": resolve_callable(fmt.open_exported)(out_dir), "original": resolve_callable(fmt.open_original)()}
    hyps, seconds = timed_alternating(runners, audios, limits)
    audio_seconds = sum(len(a) for a in audios) / SAMPLE_RATE
    wer = {"pytorch_merged": _wer(rows, torch_hyps), "exported": _wer(rows, hyps["exported"]),
           "original_base_model": _wer(rows, hyps["original"])}
    gap = 100 * abs(wer["exported"]["wer"] - wer["pytorch_merged"]["wer"])
    speed = {name: audio_seconds / max(s, 1e-9) for name, s in seconds.items()}
    ratio = speed["exported"] / speed["original"]
    return {
        "utterances": len(rows), "audio_seconds": audio_seconds,
        "wer": wer, "wer_gap_points": gap,
        "identical_transcripts_vs_pytorch": sum(a == b for a, b in zip(hyps["exported"], torch_hyps)) / len(rows),
        "speed_audio_seconds_per_second": speed | {"pytorch_merged_batch1": audio_seconds / max(torch_seconds, 1e-9)},
        "speed_ratio_exported_vs_original": ratio,
        "targets": {
            "speed_ratio_min": SPEED_TARGET, "speed_met": ratio >= SPEED_TARGET,
            "wer_gap_points_max": WER_GAP_TARGET_POINTS, "wer_met": gap <= WER_GAP_TARGET_POINTS,
        },
        "samples": [{"id": u.id, "reference": u.text, "pytorch_merged": t, "exported": e, "original": o}
                    for u, t, e, o in zip(rows, torch_hyps, hyps["exported"], hyps["original"])],
    }
