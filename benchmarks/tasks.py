"""The measurements, each run in its own child process by `run.py` (so each has its own peak RSS).

Every task loads what it needs, does one untimed warm-up (first-call kernel and allocator set-up
would otherwise land on whichever side runs first), then times only the work being compared.
"""

from __future__ import annotations

import statistics
import time

import bench_config as bc
from lora.core.precision import resolve_precision
from lora.data_loader import BatchPlan, LoaderOptions, collate, default_num_workers, length_grouped_batches, prepare_dataset
from lora.decoding import transcribe_examples
from lora.evaluation import score
from lora.export import ExportOptions, export_adapter
from lora.families import family_for
from lora.families.moonshine.reference import OrtMoonshine
from lora.families.whisper.reference import Ct2Whisper
from lora.model_utils import attach_lora, load_base, resolve_model_id
from lora.training import example_source, train_lora
from lora.training_config import TrainConfig
from speech import speaker_clips, utterances

# "ours": our trainer as `lora-train` runs it (default precision "auto": bf16 autocast where the CPU has
# native bf16 and the probe finds it faster); "reference": Seq2SeqTrainer as its defaults run it (fp32). The
# like-for-like pairs: fp32 ("ours" or "ours_fp32" vs "reference") and bf16 ("ours" or "ours_bf16" vs
# "reference_bf16", the Trainer's own `bf16=True`).
TRAIN_SIDES = ("ours", "reference", "ours_fp32", "ours_bf16", "reference_bf16", "ours_no_encoder_cache")


def _load(model_id: str):

    return load_base(resolve_model_id(model_id))


def _with_lora(model, family, case: bc.TrainCase):

    targets = family.default_target_modules if case.targets == "all" else (family.attention_in("decoder"),)
    return attach_lora(model, case.lora_r, case.lora_alpha, case.lora_dropout, targets)


def _step(model, batch) -> float:
    """One forward + backward (gradients discarded); its wall time."""
    start = time.perf_counter()
    model(**batch).loss.backward()
    seconds = time.perf_counter() - start
    model.zero_grad(set_to_none=True)
    return seconds


def train(case: dict, side: str) -> dict:
    """Train one `TrainCase` with our trainer or the Seq2SeqTrainer reference; throughput + losses."""
    import torch
    from accelerate import Accelerator
    from accelerate.utils import set_seed


    case = bc.TrainCase(**case)
    set_seed(case.seed)
    model, processor, family = _load(case.model)
    examples = prepare_dataset(utterances(bc.SPEECH_DIR, bc.TRAIN_SUBSETS), processor, family)
    model = _with_lora(model, family, case)
    model.train()
    longest = length_grouped_batches(examples, case.batch_size)[-1]
    _step(model, collate([examples[i] for i in longest], family))  # warm-up, identical for every side
    set_seed(case.seed)
    cfg = TrainConfig(model_id=case.model, batch_size=case.batch_size, gradient_accumulation_steps=case.gradient_accumulation_steps,
                      max_steps=case.max_steps, learning_rate=case.learning_rate, seed=case.seed, checkpoint_every=0,
                      lora_r=case.lora_r, lora_alpha=case.lora_alpha, lora_dropout=case.lora_dropout)
    cpu_start = time.process_time()  # CPU seconds: less sensitive than wall time to other load on the machine
    if side.startswith("reference"):
        from reference_trainer import train_reference

        result = train_reference(model, family, examples, cfg, bf16=side == "reference_bf16", workers=default_num_workers())
        result["precision"] = "bf16" if side == "reference_bf16" else "no"
    else:

        precision = {"ours_fp32": "no", "ours_bf16": "bf16"}.get(side) or resolve_precision(cfg.mixed_precision, cpu=True)[0]
        accelerator = Accelerator(gradient_accumulation_steps=cfg.gradient_accumulation_steps, mixed_precision=precision, cpu=True)
        start = time.perf_counter()
        source = example_source(examples, family, LoaderOptions(cfg.batch_size, seed=cfg.seed))
        out = train_lora(model, family, source, cfg, accelerator, show_progress=False,
                         cache_encoder=side != "ours_no_encoder_cache")
        result = {"wall_seconds": time.perf_counter() - start, "audio_seconds": out.audio_seconds,
                  "label_tokens": out.label_tokens, "losses": [row["loss"] for row in out.history],
                  "padded_audio_seconds": _padded_seconds(examples, cfg), "precision": precision}
    return result | {"case": case.name, "side": side, "threads": torch.get_num_threads(),
                     "cpu_seconds": time.process_time() - cpu_start,
                     "audio_seconds_per_second": result["audio_seconds"] / result["wall_seconds"],
                     "label_tokens_per_second": result["label_tokens"] / result["wall_seconds"]}


def _padded_seconds(examples, cfg) -> float:
    """Audio our trainer computed on, padding included (its micro-batch stream replayed)."""
    from itertools import islice

    import numpy as np

    plan = BatchPlan(np.array([e.seconds for e in examples], dtype=np.float32), cfg.batch_size, seed=cfg.seed)
    stream = ([examples[i] for i in idx] for idx in plan)
    return sum(max(e.seconds for e in b) * len(b) for b in islice(stream, cfg.max_steps * cfg.gradient_accumulation_steps))


def transcribe(model_id: str, side: str, batch_size: int = 8) -> dict:
    """Greedy transcription of the bench utterances by our PyTorch path or the reference runtime.
    Both sides are timed from decoded 16 kHz samples to text (feature extraction included)."""
    from dataclasses import replace


    rows = [replace(u, audio=u.samples()) for u in utterances(bc.SPEECH_DIR, bc.TRANSCRIBE_SUBSETS)]
    if side == "pytorch":
        model, processor, family = _load(model_id)
        transcribe_examples(model, processor, family, prepare_dataset(rows[:1], processor, family))  # warm-up
        start = time.perf_counter()
        hyps = transcribe_examples(model, processor, family, prepare_dataset(rows, processor, family), batch_size)
        runtime = f"PyTorch transcribe_examples (batch {batch_size})"
    else:
        transcribe_all, runtime = _reference_runtime(model_id, batch_size)
        transcribe_all([rows[0].audio])  # warm-up
        start = time.perf_counter()
        hyps = transcribe_all([u.audio for u in rows])
    wall = time.perf_counter() - start
    audio_seconds = sum(len(u.audio) for u in rows) / 16000
    scored = score([u.id for u in rows], [u.text for u in rows], hyps)
    return {"model": model_id, "side": side, "runtime": runtime, "utterances": len(rows), "audio_seconds": audio_seconds,
            "wall_seconds": wall, "audio_seconds_per_second": audio_seconds / wall, "wer": scored["wer"],
            "hypotheses": hyps}


def _reference_runtime(model_id: str, batch_size: int):
    """(transcribe clips -> texts, description) for the model's packaged original runtime, each used
    at its best: ctranslate2 batches like our PyTorch path; the Moonshine graphs decode one clip at a time."""

    if model_id == bc.MOONSHINE:

        ort = OrtMoonshine()
        return (lambda audios: [ort.transcribe(a)[1] for a in audios]), "onnxruntime, packaged .ort graphs (OrtMoonshine, batch 1)"

    ct2, family = Ct2Whisper(batch_size=batch_size), family_for("whisper")

    def transcribe_all(audios):
        order = sorted(range(len(audios)), key=lambda i: len(audios[i]))
        texts = [""] * len(audios)
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            cap = family.max_new_tokens(max(len(audios[i]) for i in idx) / 16000)
            for i, out in zip(idx, ct2.transcribe_batch([audios[i] for i in idx], cap)):
                texts[i] = out.text
        return texts

    return transcribe_all, f"ctranslate2, packaged CTranslate2 dir (Ct2Whisper, length-sorted batches of {batch_size})"


def scaling(model_id: str) -> dict:
    """Training-step time (forward + backward, batch 1, LoRA on attention) per clip length."""

    model, processor, family = _load(model_id)
    clips = speaker_clips(bc.SPEECH_DIR, bc.SCALING_SPEAKER, bc.CLIP_SECONDS)
    examples = prepare_dataset(clips, processor, family)
    model = _with_lora(model, family, bc.TrainCase(model_id))
    model.train()
    rows = []
    for clip, example in zip(clips, examples):
        batch = collate([example], family)
        _step(model, batch)  # warm-up at this shape
        times = [_step(model, batch) for _ in range(bc.SCALING_REPEATS)]
        rows.append({"clip": clip.id, "parts": clip.extra["parts"], "audio_seconds": example.seconds,
                     "label_tokens": len(example.labels), "step_seconds": statistics.median(times), "all_seconds": times})
    return {"model": model_id, "rows": rows}


def export(adapter_dir: str, fmt: str, output: str) -> dict:
    from pathlib import Path


    report = export_adapter(ExportOptions(Path(adapter_dir), fmt, Path(output)))
    return {k: v for k, v in report.items() if k not in {"samples", "versions"}}


def scale_run(manifest: str, output_dir: str, steps: int, max_batch_seconds: float, cache: str, options: dict | None = None,
              prepared: str | None = None) -> dict:
    """One `lora train` run on an N-hour manifest (in this child: its peak RSS is the run's); `cache`: the
    preflight cache file, `prepared`: the prepared-rows cache folder (None: the user's); `options`: more
    `TrainConfig` fields (a side of an A/B)."""
    import os

    from lora.results import to_dict
    from lora.runners.real_small import run

    os.environ["LORA_PREFLIGHT_CACHE"] = cache
    if prepared:
        os.environ["LORA_PREPARED_CACHE"] = prepared
    cfg = TrainConfig(manifest=manifest, max_steps=steps, max_batch_seconds=max_batch_seconds, batch_size=256,
                      gradient_accumulation_steps=1, eval_samples=2, canary_samples=2, wer_batches=1, eval_batch_size=2,
                      checkpoint_every=0, output_dir=output_dir, quiet=True, **(options or {}))
    m = run(cfg)
    return {"manifest": manifest, "scale": to_dict(m.scale), "target_style": to_dict(m.target_style) if m.target_style else None,
            "peak_rss_mb_in_run": m.peak_rss_mb,
            "peak_rss_workers_mb": m.peak_rss_workers_mb, "train_audio_seconds_per_second": m.train_audio_seconds_per_second,
            "train_wall_seconds": m.train_wall_seconds, "wall_seconds": m.wall_seconds, "train_loss": m.train_loss}
