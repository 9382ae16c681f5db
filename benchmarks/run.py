"""`make bench`: training throughput, transcription speed, peak memory, step time vs audio length and
export parity, each against a reference measured in the same run; writes
benchmarks/results/latest.json and latest.md (atomically).

    uv run python benchmarks/run.py [--sections train,transcribe,scaling,export] [--candidates]

`--candidates` also times our trainer with its encoder cache off (the before/after evidence for the
cache); the default bench leaves it out to stay short.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_config as bc  # noqa: E402
from children import ChildFailed, alternating_order, run_child  # noqa: E402
from lora.core.outputs import library_versions, write_json_atomic, write_text_atomic
from lora.core.precision import cpu_bf16_speedup, cpu_model, native_bf16
from report import markdown, summarize_scaling, summarize_training, verdicts  # noqa: E402

SECTIONS = ("scale", "train", "memory", "transcribe", "scaling", "export")
# (format, adapter) pairs the export section exports; an adapter that is not there is reported as skipped.
EXPORTS = (("onnx", "outputs/real_small_quick/lora_adapter"),  # `make demo`
           ("ct2", "outputs/digits_whisper/lora_adapter"))  # `lora-digits --model-id whisper-tiny.en`
TRAINING_NOTE = ("The reference runs at its best settings: its own length grouping (`LengthGroupedSampler` over the clips' "
                 "durations), dataloader worker processes (one per spare core) and the same precision as ours. "
                 "Same model, the same 14 real LibriSpeech utterances (features computed once for both), same LoRA config "
                 "(r 8, alpha 16, dropout 0.05), micro-batch 4, 2 accumulation steps, 4 optimizer steps (about two epochs), "
                 "lr 1e-3 with linear warm-up/decay, clipping 1.0, seed 42, 2 torch threads, warm-up step excluded. Where the "
                 "two differ: (1) batching: both group similar lengths (last column: audio computed on, padding included, over "
                 "real audio; for Whisper both really compute on 30 s per clip). Whisper "
                 "pads every clip to 30 s, so batching cannot matter there and the two loops are expected to tie. "
                 "(2) with LoRA on the decoder only, ours runs the frozen encoder once per distinct micro-batch "
                 "(`lora.encoder_cache`, same losses), the reference every step. (3) precision: ours trains in bf16 autocast "
                 "by default where the CPU computes bf16 natively and a probe finds it faster than fp32 (`--mixed-precision auto`, "
                 "`lora.core.precision`; the table's precision column says what it chose), the Trainer in fp32 unless told "
                 "`bf16=True`; both like-for-like pairs are timed too.")
SCALING_NOTE = ("Clips are whole real utterances of one LJSpeech speaker (9001), concatenated. Moonshine reads raw audio "
                "without padding, so its encoder work grows with the clip; Whisper pads every clip to 30 s of log-mel, so its "
                "step time is flat-ish and only the (short) decoder grows with the transcript: its slope is near zero "
                "by construction and its R^2 says nothing about linearity.")


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def measure(summary: dict, label: str, task: str, **args) -> dict | None:
    started = time.perf_counter()
    try:
        result = run_child(task, **args)
    except ChildFailed as exc:
        summary["errors"].append(f"{label}: {exc}")
        log(f"{label}: FAILED ({exc})")
        return None
    log(f"{label}: {time.perf_counter() - started:.0f} s, peak RSS {result['peak_rss_mb']:.0f} MB")
    return result


def best_of(summary: dict, label: str, task: str, sides: tuple[str, str], repeats: int, **args) -> dict:
    """Each side run `repeats` times in A B B A ... order; per side the fastest run (a shared machine only
    ever slows a run down), with the largest peak RSS seen."""
    order = alternating_order(sides, repeats)
    runs: dict[str, list[dict]] = {side: [] for side in sides}
    for side in order:
        result = measure(summary, f"{label} [{side}]", task, side=side, **args)
        if result:
            runs[side].append(result)
    best = {}
    for side, results in runs.items():
        if results:
            best[side] = max(results, key=lambda r: r["audio_seconds_per_second"]) | {
                "peak_rss_mb": max(r["peak_rss_mb"] for r in results),
                "runs_audio_seconds_per_second": [r["audio_seconds_per_second"] for r in results]}
    return best


def cpu_facts() -> dict:
    """What decides the CPU's bf16 speed, recorded with every bench: its model, AMX, and the precision probe."""
    import torch  # deferred: heavy

    try:  # private, as is oneDNN's own check; a missing one is "unknown", not "no"
        amx = bool(torch.cpu._is_amx_tile_supported())
    except (AttributeError, RuntimeError):
        amx = None
    return {"model": cpu_model(), "amx": amx,
            "onednn_bf16": native_bf16(cpu=True), "bf16_probe_speedup": cpu_bf16_speedup()}


def bench_training(summary: dict, candidates: bool, repeats: int) -> None:
    """Per case: our default vs the reference's default, then the like-for-like pair at the other precision
    (ours fp32 vs reference fp32 when our default is bf16; ours bf16 vs the reference's bf16 when our default
    is fp32 on a CPU with native bf16, which shows what the precision probe turned down)."""
    summary["training"], summary["training_note"] = [], TRAINING_NOTE
    for n, case in enumerate(bc.TRAIN_CASES):
        args = dataclasses.asdict(case)
        sides = ("ours", "reference") if n % 2 == 0 else ("reference", "ours")  # alternate who runs first
        results = best_of(summary, f"train {case.name}", "train", sides, repeats, case=args)
        if "ours" not in results or "reference" not in results:
            continue
        extra = {}
        if results["ours"]["precision"] != "no":
            pair = best_of(summary, f"train {case.name}", "train", ("reference_bf16", "ours_fp32"), repeats, case=args)
            if len(pair) == 2:
                extra["like_for_like"] = {
                    "fp32": summarize_training(pair["ours_fp32"], results["reference"], {}),
                    results["ours"]["precision"]: summarize_training(results["ours"], pair["reference_bf16"], {})}
        elif native_bf16(cpu=True):
            pair = best_of(summary, f"train {case.name}", "train", ("reference_bf16", "ours_bf16"), repeats, case=args)
            if len(pair) == 2:
                extra["like_for_like"] = {"fp32": summarize_training(results["ours"], results["reference"], {}),
                                          "bf16": summarize_training(pair["ours_bf16"], pair["reference_bf16"], {})}
        if candidates and case.targets == "decoder":
            r = measure(summary, f"train {case.name} [ours_no_encoder_cache]", "train", case=args, side="ours_no_encoder_cache")
            extra["candidates"] = {"ours_no_encoder_cache": r} if r else {}
        summary["training"].append(summarize_training(results["ours"], results["reference"], extra))
        if case == bc.TrainCase(bc.MOONSHINE):
            memory = summary.setdefault("memory", {})
            for side, key in (("ours", "moonshine_lora_training_batch4"), ("reference", "moonshine_lora_training_batch4_seq2seqtrainer")):
                memory[f"{key}_mb"] = results[side]["peak_rss_mb"]


def bench_memory(summary: dict) -> None:
    """Peak RSS of a Moonshine-base LoRA run with the trainer's default micro-batch (1 x 4 accumulation)."""
    result = measure(summary, "memory: Moonshine LoRA run, default micro-batch", "train",
                     case=dataclasses.asdict(bc.MEMORY_CASE), side="ours")
    if result:
        summary.setdefault("memory", {})["moonshine_lora_training_mb"] = result["peak_rss_mb"]


def bench_transcription(summary: dict, repeats: int) -> None:
    summary["transcription"] = []
    for model in (bc.MOONSHINE, bc.WHISPER):
        results = best_of(summary, f"transcribe {model}", "transcribe", ("pytorch", "reference"), repeats, model_id=model)
        if len(results) == 2:
            pytorch, reference = results["pytorch"], results["reference"]
            summary["transcription"].append({"model": model, "pytorch": pytorch, "reference": reference,
                                             "ratio": pytorch["audio_seconds_per_second"] / reference["audio_seconds_per_second"]})
            memory = summary.setdefault("memory", {})
            memory[f"{model}_transcription_pytorch_mb"] = pytorch["peak_rss_mb"]
            memory[f"{model}_transcription_reference_runtime_mb"] = reference["peak_rss_mb"]


def bench_scaling(summary: dict) -> None:
    summary["scaling"], summary["scaling_note"] = [], SCALING_NOTE
    for model in (bc.MOONSHINE, bc.WHISPER):
        result = measure(summary, f"step time vs length {model}", "scaling", model_id=model)
        if result:
            summary["scaling"].append(summarize_scaling(result))


def bench_scale(summary: dict, steps: int = bc.SCALE_STEPS) -> None:
    """Peak RSS and time to the first step on 1/10/100 h manifests of real clips (repeated), the 100 h
    one a second time with the preflight and prepared-rows caches warm (the first run filled them).
    Throughput on them is real; WER means nothing."""
    import tempfile

    from lora.scripts.scale_manifest import main as scale_manifest

    summary["scale"] = []
    cache = Path(tempfile.mkdtemp(prefix="bench_preflight_")) / "cache.sqlite"
    for hours in bc.SCALE_HOURS:
        manifest = Path(f"data/scale_{hours}h.jsonl")
        if not manifest.is_file():
            scale_manifest(["--hours", str(hours), "--output", str(manifest)])
        runs = ("cold", "warm") if hours == max(bc.SCALE_HOURS) else ("cold",)
        for run in runs:
            result = measure(summary, f"scale {hours} h ({run} preflight cache)", "scale_run", manifest=str(manifest),
                             output_dir=f"outputs/bench/scale_{hours}h_{run}", steps=steps,
                             max_batch_seconds=bc.SCALE_BATCH_SECONDS, cache=str(cache) if run == "warm" or hours != max(bc.SCALE_HOURS) else str(cache.with_suffix(f".{hours}.sqlite")),
                             prepared=str(cache.parent / f"prepared_{hours}h"))  # per corpus: cold on its first run
            if result:
                summary["scale"].append(result | {"hours": hours, "cache": run, "steps": steps})
    big = max(bc.SCALE_HOURS)
    summary["scale_warm_first_step_s"] = []  # more second runs of the largest corpus, one step each (bc.FIRST_STEP_WARM_REPEATS)
    for i in range(bc.FIRST_STEP_WARM_REPEATS):
        result = measure(summary, f"scale {big} h (warm preflight cache, first step {i + 1})", "scale_run",
                         manifest=f"data/scale_{big}h.jsonl", output_dir=f"outputs/bench/scale_{big}h_warm_{i + 1}", steps=1,
                         max_batch_seconds=bc.SCALE_BATCH_SECONDS, cache=str(cache), prepared=str(cache.parent / f"prepared_{big}h"))
        if result:
            summary["scale_warm_first_step_s"].append(result["scale"]["seconds_to_first_step"])


def bench_export(summary: dict, exports) -> None:
    summary["export"] = []
    for fmt, adapter_dir in exports:
        if not (Path(adapter_dir) / "adapter_config.json").is_file():
            summary["export"].append({"format": fmt, "adapter_dir": adapter_dir, "error": f"skipped: no adapter at {adapter_dir}"})
            continue
        result = measure(summary, f"export {fmt}", "export", adapter_dir=adapter_dir, fmt=fmt, output=f"outputs/bench/export_{fmt}")
        summary["export"].append(result or {"format": fmt, "adapter_dir": adapter_dir, "error": "export failed (see errors)"})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    parser.add_argument("--repeats", type=int, default=2, help="runs per side of each comparison (the fastest counts)")
    parser.add_argument("--candidates", action="store_true", help="also time our trainer with its encoder cache off (decoder-only cases)")
    parser.add_argument("--onnx-adapter", default=EXPORTS[0][1], help="Moonshine adapter the export section exports to ONNX")
    parser.add_argument("--ct2-adapter", default=EXPORTS[1][1], help="Whisper adapter the export section exports to CTranslate2")
    parser.add_argument("--output-dir", default="benchmarks/results", help="where latest.json / latest.md go")
    parser.add_argument("--scale-steps", type=int, default=bc.SCALE_STEPS, help="optimizer steps of each scale run")
    args = parser.parse_args(argv)

    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    started = time.perf_counter()
    summary = {"generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
               "machine": f"{os.cpu_count()} CPU cores, {platform.machine()}, no GPU", "cpu": cpu_facts(), "repeats": args.repeats,
               "errors": []}
    if "scale" in sections:
        bench_scale(summary, args.scale_steps)
    if "train" in sections:
        bench_training(summary, args.candidates, args.repeats)
    if "memory" in sections:
        bench_memory(summary)
    if "transcribe" in sections:
        bench_transcription(summary, args.repeats)
    if "scaling" in sections:
        bench_scaling(summary)
    if "export" in sections:
        bench_export(summary, (("onnx", args.onnx_adapter), ("ct2", args.ct2_adapter)))
    summary["wall_seconds"] = time.perf_counter() - started
    summary["load_average_at_end"] = os.getloadavg()
    summary["targets"] = verdicts(summary)
    summary["versions"] = library_versions()
    out = Path(args.output_dir)
    write_json_atomic(out / "latest.json", summary)
    text = markdown(summary) + f"\nWhole bench: {summary['wall_seconds']:.0f} s; load average at the end {summary['load_average_at_end'][0]:.1f} on {os.cpu_count()} cores.\n"
    write_text_atomic(out / "latest.md", text)
    print(text)
    return 1 if summary["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
