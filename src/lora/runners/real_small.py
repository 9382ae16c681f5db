"""The real small run: baseline -> LoRA fine-tune -> tuned, on real speech, with honest numbers.

Steps (as README lists them, each a stage of `lora.pipeline`): load the model; pick real utterances
with train/eval speakers disjoint; stream the training rows through the loader's workers; attach LoRA
and train; measure the baseline (eval loss + WER, canary: the same model with its adapters off, so
the first step is not kept waiting for it) and the tuned model; save `lora_adapter/`,
`processor/`, `real_metrics.json` and the report.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from lora import pipeline
from lora.checkpoint import OutputLock
from lora.core.cli import ArgumentParser, run_cli, setup_logging
from lora.core.errors import UserError
from lora.core.memory import prefer_jemalloc
from lora.hf_args import alias_help, rewrite_hf_args
from lora.model_utils import compiled
from lora.results import RealMetrics
from lora.term_recall import describe_terms, read_terms
from lora.training_config import TrainConfig, add_dataclass_args, config_from_args

log = logging.getLogger("lora")

def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="lora train",
        description="LoRA fine-tune a small speech recogniser on real speech (a few dozen utterances to a corpus "
        "streamed from disk) and report baseline vs tuned eval loss and WER on speaker-disjoint held-out speech.",
        epilog=alias_help(), formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_dataclass_args(parser, TrainConfig)
    return parser


def run(cfg: TrainConfig) -> RealMetrics | None:
    """The steps of README's "real small run", in order; returns the metrics (None on other ranks)."""
    started = time.perf_counter()
    _check_launch()
    if cfg.terms:
        read_terms(cfg.terms)  # a bad terms file stops the run now, not after training
    session = pipeline.start(cfg, _cpu_only(), started)
    main = session.accelerator.is_main_process
    selected = pipeline.select_data(cfg)                                      # 1. speaker-disjoint data
    session.mark("select_data")
    finished = pipeline.finished_already(cfg, selected)                       #    (--resume of a finished run: done)
    if finished is not None:
        return finished if main else None
    lm = pipeline.load_model(cfg, session)                                    # 2. the model
    lm.model.to(session.accelerator.device)
    session.mark("load_model")
    with session.accelerator.main_process_first():  # the main process fills the base-transcript cache
        style = pipeline.style_targets(selected, lm, cfg)                     #    styled training targets
    session.mark("style_targets")
    options = pipeline.loader_options(cfg, session.accelerator.device.type)
    source, table = pipeline.train_batches(selected, lm, cfg, options)         #    streamed training rows
    session.mark("train_batches")
    cfg = pipeline.steps_for(cfg, source.batches_per_epoch, session.accelerator.num_processes)
    source = pipeline.stream_opened(source, cfg, session)                      #    its workers start loading now
    sets = pipeline.eval_sets(selected, lm, cfg)                               #    eval + canary (small)
    lm.model.to(session.accelerator.device)
    session.mark("eval_sets")
    if cfg.baseline_first:                                                     #    (--baseline-first: baseline now)
        before = pipeline.measure_baseline(lm, lm.model, sets, cfg, session, adapters_off=False)
        session.mark("baseline")
    model, targets = pipeline.attach(lm.model, cfg, lm.family)                 # 3. LoRA
    if cfg.compile:
        model = compiled(model)                                                #    (--compile: one graph for every shape)
    result = pipeline.train(model, lm, source, cfg, session, sets)             # 4. train (+ --eval-steps, best kept)
    session.mark("train")
    style = pipeline.styled_in_training(style, source)                        #    (+ rows styled as first drawn)
    model = session.accelerator.unwrap_model(model, keep_torch_compile=False)  # measured eagerly: no second compile
    session.accelerator.wait_for_everyone()
    if not main:
        return None
    if not cfg.baseline_first:
        before = pipeline.measure_baseline(lm, model, sets, cfg, session)     # 5. baseline (adapters off)
        session.mark("baseline")
    after = pipeline.measure(lm, model, sets, cfg)                             # 6. tuned
    session.mark("tuned")
    out = Path(cfg.output_dir)
    info = pipeline.run_info(lm, selected, cfg, targets)
    scale = pipeline.scale_facts(selected, table, source, options, result, session, model, cfg)
    metrics = pipeline.metrics(info, lm, selected, sets, cfg, session, before, after, result, scale, style)
    pipeline.save(model, lm, out, info, metrics)                               # 7. adapter (+ card with the figures) + processor
    pipeline.report(metrics, out)                                              # 8. metrics + report
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


def _fmt(value, pct: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{100 * value:.1f}%" if pct else f"{value:.3f}"


def _print_summary(m: RealMetrics, out: Path) -> None:
    ci = m.wer_delta_ci95
    interval = f"[{100 * ci.ci95[0]:+.1f}, {100 * ci.ci95[1]:+.1f}] pts" if ci.ci95 else "n/a"
    print(f"model        {m.model_id_used} ({m.model_source})")
    print(f"train loss   {_fmt(m.train_loss)} (mean of {len(m.train_loss_history)} steps)")
    print(f"eval loss    {_fmt(m.baseline_eval_loss)} -> {_fmt(m.tuned_eval_loss)}")
    held_out = "held-out utterances of training speakers" if m.leakage.get("shared_speakers") else "held-out utterances"
    print(f"WER          {_fmt(m.baseline_wer, True)} -> {_fmt(m.tuned_wer, True)} on {m.wer_utterances} {held_out}; "
          f"change 95% CI {interval}: {ci.verdict}")
    if m.canary.utterances:
        print(f"canary WER   {_fmt(m.canary.wer_before, True)} -> {_fmt(m.canary.wer_after, True)} "
              f"on {m.canary.utterances} general-speech utterances (forgetting check)")
    if m.terms:
        print(f"terms        {describe_terms(m.terms)}")
    if m.eval_history:
        curve = ", ".join(f"{p['step']}: {_fmt(p['wer'], True)}" for p in m.eval_history)
        print(f"eval curve   WER by step {curve}; kept step {m.best_step} (best {m.best_metric})")
    s = m.scale
    print(f"data         {s.train_rows} training rows ({s.train_hours:.2f} h) of a {s.corpus_rows}-row corpus "
          f"({s.corpus_hours:.2f} h); first step after {_fmt(s.seconds_to_first_step)} s; "
          f"{m.train_audio_seconds_per_second:.1f} audio s/s")
    print(f"wall time    {m.wall_seconds:.1f} s, peak RSS {m.peak_rss_mb:.0f} MB (largest loader worker {m.peak_rss_workers_mb:.0f} MB)")
    print(f"wrote        {out / 'real_metrics.json'}, {out / 'report.html'}, {out / 'lora_adapter'}, {out / 'processor'}")


def _main(argv: list[str] | None) -> int:
    args = rewrite_hf_args(sys.argv[1:] if argv is None else argv)  # --learning_rate etc. (TrainingArguments spellings)
    cfg = config_from_args(TrainConfig, build_parser().parse_args(args))
    setup_logging(cfg.quiet, cfg.log_level)
    run_locked(cfg)
    return 0


def run_locked(cfg: TrainConfig) -> RealMetrics | None:
    """`run` holding the output folder's lock, so two runs cannot write one folder.

    Only the main process (rank 0) locks and writes; the other processes of the same run would
    otherwise find the folder locked by their own rank 0.
    """

    if _launch_rank() != 0:
        return run(cfg)
    with OutputLock(Path(cfg.output_dir)):
        return run(cfg)


def main(argv: list[str] | None = None) -> int:
    prefer_jemalloc()  # re-executes with jemalloc where installed (lora-train, train_real_small.py)
    return run_cli(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
