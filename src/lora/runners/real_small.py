"""The real small run: baseline -> LoRA fine-tune -> tuned, on real speech, with honest numbers.

Steps (as README lists them): resolve the model; pick real utterances with train/eval speakers
disjoint; compute features and labels once; measure the baseline (eval loss + WER); attach LoRA and
train; measure again; save `lora_adapter/`, `processor/` and `real_metrics.json`.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from dataclasses import asdict
from pathlib import Path

from lora.cli import run_cli, setup_logging
from lora.errors import UserError
from lora.paths import default_speech_dir
from lora.training_config import TrainConfig, add_dataclass_args, config_from_args, split_csv

log = logging.getLogger("lora")

# Under several processes the others wait in DDP's first broadcast while the main process measures
# the baseline (and the canary) alone. torch's default collective timeout (10 min NCCL, 30 min gloo)
# is shorter than a large baseline on CPU, so the wait gets this instead.
COLLECTIVE_TIMEOUT_S = 3 * 3600


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="train_real_small.py",
        description="LoRA fine-tune a small speech recogniser on a few dozen real utterances and report "
        "baseline vs tuned eval loss and WER on speaker-disjoint held-out speech.",
    )
    add_dataclass_args(parser, TrainConfig)
    return parser


def run(cfg: TrainConfig) -> dict:
    from datetime import timedelta

    import torch
    from accelerate import Accelerator
    from accelerate.utils import InitProcessGroupKwargs, set_seed

    from lora.data_loader import DataChoice, prepare_dataset, resolve_data
    from lora.sources import canary_utterances, read_manifest_rows
    from lora.clip_joining import with_joined_clips
    from lora.precision import resolve_precision
    from lora.splits import check_leakage, mix_replay
    from lora.decoding import assess
    from lora.evaluation import compare, paired_bootstrap, summarize_losses
    from lora.model_utils import attach_lora, hub_reachable, load_base, resolve_model_id, save_adapter, save_processor
    from lora.outputs import library_versions, peak_rss_mb, write_json_atomic
    from lora.report import write_report
    from lora.training import train_lora

    started = time.perf_counter()
    _check_launch()
    cpu = _cpu_only()
    precision, precision_note = resolve_precision(cfg.mixed_precision, cpu)
    accelerator = Accelerator(gradient_accumulation_steps=cfg.gradient_accumulation_steps, mixed_precision=precision, cpu=cpu,
                              kwargs_handlers=[InitProcessGroupKwargs(timeout=timedelta(seconds=COLLECTIVE_TIMEOUT_S))])
    if not accelerator.is_main_process:
        log.setLevel(logging.WARNING)  # N copies of every info line say nothing more than one
    elif precision_note:
        log.warning("mixed precision: %s", precision_note)
    set_seed(cfg.seed)
    # The first use of an imported model converts it into the cache, and N processes converting into
    # one folder at once trip over each other's temp folders: the main process goes first (a shared
    # cache), then each machine's first process (a per-machine cache), then the rest just load it.
    with accelerator.main_process_first(), accelerator.local_main_process_first():
        resolved = resolve_model_id(cfg.model_id)
        model, processor, family = load_base(resolved)
    data = resolve_data(
        DataChoice(cfg.train_split, cfg.data_dir, cfg.manifest, cfg.dataset_samples, cfg.eval_samples, cfg.seed,
                   split_csv(cfg.train_speakers), split_csv(cfg.eval_speakers),
                   replay_subsets=split_csv(cfg.replay_subsets), quarantine_path=str(Path(cfg.output_dir) / "quarantine.jsonl")),
        hub_ok=hub_reachable() if not (cfg.data_dir or cfg.manifest) else False,
    )
    leaks = check_leakage(data.train, data.eval, cfg.allow_shared_speakers, cfg.allow_shared_text)
    if cfg.canary:
        canary = read_manifest_rows(cfg.canary)
    else:
        seen = data.train + data.replay + data.eval
        canary = canary_utterances(Path(cfg.data_dir) if cfg.data_dir else default_speech_dir(), seen, cfg.canary_samples, cfg.seed)
    policy = cfg.target_policy or family.target_policy
    train_rows = with_joined_clips(data.train, cfg.join_clips, cfg.seed)
    train_examples = mix_replay(prepare_dataset(train_rows, processor, family, policy),
                                prepare_dataset(data.replay, processor, family, policy), cfg.replay_share)
    eval_examples = prepare_dataset(data.eval, processor, family, policy)
    canary_examples = prepare_dataset(canary, processor, family, policy)
    wer_examples = eval_examples[: cfg.wer_batches * cfg.eval_batch_size] if cfg.wer_batches else eval_examples
    model.to(accelerator.device)

    main = accelerator.is_main_process
    baseline = assess(model, processor, family, eval_examples, wer_examples, cfg.eval_batch_size) if main else {}
    canary_before = assess(model, processor, family, canary_examples, canary_examples, cfg.eval_batch_size) if main and canary else {}
    targets = cfg.target_module_list or family.default_target_modules
    model = attach_lora(model, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, targets)
    result = train_lora(model, family, train_examples, cfg, accelerator, show_progress=not cfg.quiet, run_dir=Path(cfg.output_dir))
    model = accelerator.unwrap_model(model)
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        return {}
    tuned = assess(model, processor, family, eval_examples, wer_examples, cfg.eval_batch_size)
    canary_after = assess(model, processor, family, canary_examples, canary_examples, cfg.eval_batch_size) if canary else {}

    out = Path(cfg.output_dir)
    run_info = resolved.record() | {
        "family": family.name, "target_policy": policy, "target_modules": list(targets),
        "train_ids": [u.id for u in data.train + data.replay],
        "train_speakers": sorted({u.speaker for u in data.train + data.replay}),
        "replay_ids": [u.id for u in data.replay],
        "joined_train_utterances": len(train_rows) - len(data.train),
    }
    save_adapter(model, out / "lora_adapter", run_info)
    save_processor(processor, out / "processor")
    metrics = run_info | {
        "data_source": data.source,
        "eval_ids": [u.id for u in data.eval],
        "eval_speakers": sorted({u.speaker for u in data.eval}),
        "leakage": leaks,
        "config": asdict(cfg),
        "world_size": accelerator.num_processes,
        "device": str(accelerator.device),
        "mixed_precision": precision, "mixed_precision_note": precision_note,
        "train_loss": summarize_losses([r["loss"] for r in result.history]),
        "train_loss_history": result.history,
        "baseline_eval_loss": baseline["eval_loss"],
        "tuned_eval_loss": tuned["eval_loss"],
        "wer": tuned["wer"], "cer": tuned["cer"],
        "baseline_wer": baseline["wer"], "tuned_wer": tuned["wer"],
        "baseline_cer": baseline["cer"], "tuned_cer": tuned["cer"],
        "wer_utterances": len(wer_examples),
        "wer_delta_ci95": paired_bootstrap(baseline["samples"], tuned["samples"], seed=cfg.seed),
        "samples": compare(baseline, tuned),
        "canary": _canary_record(canary, canary_before, canary_after, cfg.canary),
        "canary_wer_before": canary_before.get("wer"), "canary_wer_after": canary_after.get("wer"),
        "train_audio_seconds": sum(e.seconds for e in train_examples),
        "eval_audio_seconds": sum(e.seconds for e in eval_examples),
        "train_wall_seconds": result.wall_seconds,
        "train_audio_seconds_per_second": result.audio_seconds / max(result.wall_seconds, 1e-9),
        "wall_seconds": time.perf_counter() - started,
        "peak_rss_mb": peak_rss_mb(),
        "torch_threads": torch.get_num_threads(),
        "versions": library_versions(),
    }
    write_json_atomic(out / "real_metrics.json", metrics)
    write_report(metrics, out)
    _print_summary(metrics, out)
    return metrics


def _cpu_only() -> bool:
    """True without a GPU (or with `--cpu`): accelerate must then be told, or a torchrun/multi-GPU
    launch on a CPU-only machine gives N unconnected single processes instead of one gloo group."""
    import torch
    from accelerate.utils import parse_flag_from_env

    return parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.accelerator.is_available()


def _check_launch() -> None:
    """Refuse `accelerate launch --cpu --num_processes N` (N > 1) that started one process.

    accelerate starts several CPU processes only through mpirun (`--mpirun_hostfile`); otherwise it
    runs the script once, with MASTER_ADDR set and no world size. Training N times slower than asked,
    with world_size 1 in the metrics, is worse than stopping with the commands that do work.
    """
    from accelerate.utils import parse_flag_from_env

    launched = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
    if parse_flag_from_env("ACCELERATE_USE_CPU") and "MASTER_ADDR" in os.environ and not any(k in os.environ for k in launched):
        raise UserError("`accelerate launch --cpu` with several processes starts only one (accelerate needs mpirun, "
                        "--mpirun_hostfile, for that); use `accelerate launch --multi_gpu --num_processes N` (gloo on a "
                        "CPU-only machine) or `torchrun --nproc_per_node N`, or drop --num_processes/unset MASTER_ADDR for one process")


def _launch_rank() -> int:
    """This process's global rank from the launcher's environment (0 when not launched)."""
    from accelerate.utils import get_int_from_env

    return get_int_from_env(["RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK"], 0)


def _canary_record(canary, before: dict, after: dict, manifest: str | None) -> dict:
    from lora.evaluation import compare, paired_bootstrap

    if not canary:
        return {"utterances": 0, "source": manifest or "none found"}
    return {
        "source": manifest or "local LibriSpeech/LJSpeech subsets, unseen speakers",
        "utterances": len(canary), "ids": [u.id for u in canary],
        "wer_before": before["wer"], "wer_after": after["wer"], "cer_before": before["cer"], "cer_after": after["cer"],
        "eval_loss_before": before["eval_loss"], "eval_loss_after": after["eval_loss"],
        "wer_delta_ci95": paired_bootstrap(before["samples"], after["samples"]),
        "samples": compare(before, after),
    }


def _fmt(value, pct: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{100 * value:.1f}%" if pct else f"{value:.3f}"


def _print_summary(m: dict, out: Path) -> None:
    ci = m["wer_delta_ci95"]
    interval = f"[{100 * ci['ci95'][0]:+.1f}, {100 * ci['ci95'][1]:+.1f}] pts" if ci.get("ci95") else "n/a"
    print(f"model        {m['model_id_used']} ({m['model_source']})")
    print(f"train loss   {_fmt(m['train_loss'])} (mean of {len(m['train_loss_history'])} steps)")
    print(f"eval loss    {_fmt(m['baseline_eval_loss'])} -> {_fmt(m['tuned_eval_loss'])}")
    print(f"WER          {_fmt(m['baseline_wer'], True)} -> {_fmt(m['tuned_wer'], True)} on {m['wer_utterances']} held-out utterances; "
          f"change 95% CI {interval}: {ci['verdict']}")
    if m["canary"]["utterances"]:
        print(f"canary WER   {_fmt(m['canary_wer_before'], True)} -> {_fmt(m['canary_wer_after'], True)} "
              f"on {m['canary']['utterances']} general-speech utterances (forgetting check)")
    print(f"wall time    {m['wall_seconds']:.1f} s, peak RSS {m['peak_rss_mb']:.0f} MB")
    print(f"wrote        {out / 'real_metrics.json'}, {out / 'report.html'}, {out / 'lora_adapter'}, {out / 'processor'}")


def _main(argv: list[str] | None) -> int:
    cfg = config_from_args(TrainConfig, build_parser().parse_args(argv))
    setup_logging(cfg.quiet, cfg.log_level)
    run_locked(cfg)
    return 0


def run_locked(cfg: TrainConfig) -> dict:
    """`run` holding the output folder's lock, so two runs cannot write one folder.

    Only the main process (rank 0) locks and writes; the other processes of the same run would
    otherwise find the folder locked by their own rank 0.
    """
    from lora.checkpoint import OutputLock

    if _launch_rank() != 0:
        return run(cfg)
    with OutputLock(Path(cfg.output_dir)):
        return run(cfg)


def main(argv: list[str] | None = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
