"""The smallest proof that LoRA learns on real audio: a few real utterances, a few steps, the
training loss printed step by step, falling. Under a minute on a 2-core CPU.

Not an evaluation (it trains and measures on the same utterances); `train_real_small.py` is the
honest before/after on held-out speakers.
"""

from __future__ import annotations

import argparse

from lora.cli import run_cli, setup_logging


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="main.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-id", default="auto", help="hub id, local dir or import name (default: auto)")
    parser.add_argument("--data-dir", default=None, help="LibriSpeech-layout folder (default: ../shared/speech)")
    parser.add_argument("--samples", type=int, default=4, help="real utterances to fit")
    parser.add_argument("--steps", type=int, default=8, help="optimizer steps")
    parser.add_argument("--learning-rate", type=float, default=2e-3, help="learning rate")
    parser.add_argument("--seed", type=int, default=42, help="seed")
    return parser


def run(args) -> list[float]:
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from lora.data_loader import DataChoice, prepare_dataset, resolve_data
    from lora.model_utils import attach_lora, load_base, resolve_model_id
    from lora.training import train_lora
    from lora.training_config import TrainConfig

    cfg = TrainConfig(model_id=args.model_id, data_dir=args.data_dir, dataset_samples=args.samples, max_steps=args.steps,
                      batch_size=args.samples, gradient_accumulation_steps=1, learning_rate=args.learning_rate,
                      warmup_ratio=0.0, lora_dropout=0.0, seed=args.seed)
    set_seed(cfg.seed)
    model, processor, family = load_base(resolve_model_id(cfg.model_id))
    data = resolve_data(DataChoice(data_dir=cfg.data_dir, dataset_samples=cfg.dataset_samples, eval_samples=1, seed=cfg.seed,
                                   use_hub=False), hub_ok=False)
    examples = prepare_dataset(data.train, processor, family)
    model = attach_lora(model, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, family.default_target_modules)
    result = train_lora(model, family, examples, cfg, Accelerator(), show_progress=False)
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
