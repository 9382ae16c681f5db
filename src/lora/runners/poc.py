"""The smallest proof that LoRA learns on real audio: a few real utterances, a few steps, the
training loss printed step by step, falling. Under a minute on a 2-core CPU.

Not an evaluation (it trains and measures on the same utterances); `train_real_small.py` is the
honest before/after on held-out speakers.
"""

from __future__ import annotations

import argparse

from lora import pipeline
from lora.core.cli import ArgumentParser, run_cli, setup_logging
from lora.core.errors import UserError
from lora.data_loader import prepare_dataset
from lora.training import example_source, train_lora
from lora.training_config import TrainConfig, validate


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="lora poc", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-id", default="auto", help="hub id, local dir or import name (default: auto)")
    parser.add_argument("--data-dir", default=None, help="LibriSpeech-layout folder (default: ../shared/speech)")
    parser.add_argument("--samples", type=int, default=4, help="real utterances to fit")
    parser.add_argument("--steps", type=int, default=8, help="optimizer steps")
    parser.add_argument("--learning-rate", type=float, default=2e-3, help="learning rate")
    parser.add_argument("--seed", type=int, default=42, help="seed")
    return parser


def check_args(args) -> None:
    """Ranges argparse cannot say: one line each, before the model loads."""
    for flag, value in (("--samples", args.samples), ("--steps", args.steps)):
        if value < 1:
            raise UserError(f"lora poc {flag} {value}: must be >= 1")


def run(args) -> list[float]:
    check_args(args)
    cfg = TrainConfig(model_id=args.model_id, data_dir=args.data_dir, dataset_samples=args.samples, eval_samples=1,
                      max_steps=args.steps, batch_size=args.samples, gradient_accumulation_steps=1,
                      learning_rate=args.learning_rate, warmup_ratio=0.0, lora_dropout=0.0, seed=args.seed, checkpoint_every=0)
    validate(cfg)  # --learning-rate, --seed: the ranges `lora train` checks
    session = pipeline.start(cfg, cpu=True)
    lm = pipeline.load_model(cfg)
    selected = pipeline.select_data(cfg, use_hub=False)
    examples = prepare_dataset(selected.data.train, lm.processor, lm.family)  # a handful: kept in memory
    model, _ = pipeline.attach(lm.model, cfg, lm.family)
    source = example_source(examples, lm.family, pipeline.loader_options(cfg, "cpu"))
    result = train_lora(model, lm.family, source, cfg, session.accelerator, show_progress=False)
    losses = [row["loss"] for row in result.history]
    for row in result.history:
        print(f"step {row['step']:2d}  loss {row['loss']:.4f}")
    seconds = sum(e.seconds for e in examples)
    print(f"{len(examples)} real utterances ({seconds:.1f} s of audio), loss {losses[0]:.4f} -> {losses[-1]:.4f} "
          f"in {result.wall_seconds:.1f} s ({'falling' if losses[-1] < losses[0] else 'NOT falling'})")
    return losses


def _main(argv: list[str] | None) -> int:
    setup_logging()
    losses = run(build_parser().parse_args(argv))
    return 0 if losses[-1] < losses[0] else 1


def main(argv: list[str] | None = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
