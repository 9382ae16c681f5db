"""Choose the digits recipe's defaults by measurement, on the TRAINING speakers only.

Speakers 9201-9203 train, 9204 validates (the recipe's evaluation speakers 9205-9206 are never
loaded here). For each family, a small grid over learning rate, LoRA rank, target modules (encoder
+ decoder attention vs decoder only) and steps; the model and features are loaded once and every
configuration starts from a fresh copy of the base weights. Writes a markdown table + JSON.

    uv run python recipes/digits_sweep.py --family moonshine [--output recipes/results/sweep_moonshine.md]
"""

from __future__ import annotations

import argparse
import copy
import itertools
import time
from dataclasses import replace
from pathlib import Path

SWEEP_TRAIN = ("9201", "9202", "9203")
SWEEP_VALID = ("9204",)
MODELS = {"moonshine": "moonshine-base-en", "whisper": "whisper-tiny.en"}
DECODER_ONLY = {"moonshine": r"model\.decoder\..*\.(q_proj|k_proj|v_proj|o_proj)",
                "whisper": r"model\.decoder\..*\.(q_proj|k_proj|v_proj|out_proj)"}


def grid(family: str):
    """Moonshine gets the full grid; Whisper (30 s padded input, ~5x the cost per step) a smaller one."""
    if family == "whisper":
        for lr, where, steps in itertools.product((1e-3, 3e-3), ("all", "decoder"), (60,)):
            yield {"learning_rate": lr, "lora_r": 8, "lora_alpha": 16, "targets": where, "max_steps": steps}
        return
    for lr, r, where, steps in itertools.product((3e-4, 1e-3, 3e-3), (8,), ("all", "decoder"), (30, 60, 120)):
        yield {"learning_rate": lr, "lora_r": r, "lora_alpha": 2 * r, "targets": where, "max_steps": steps}
    for steps in (60, 120):
        yield {"learning_rate": 1e-3, "lora_r": 16, "lora_alpha": 32, "targets": "all", "max_steps": steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", choices=sorted(MODELS), required=True)
    parser.add_argument("--speech-dir", default="../shared/speech")
    parser.add_argument("--output", default=None)
    args = parser.parse_args()
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from lora.data_loader import DataChoice, prepare_dataset, resolve_data
    from lora.decoding import assess
    from lora.model_utils import attach_lora, load_base, resolve_model_id
    from lora.outputs import write_json_atomic, write_text_atomic
    from lora.training import train_lora
    from lora.training_config import TrainConfig

    base, processor, family = load_base(resolve_model_id(MODELS[args.family]))
    data = resolve_data(DataChoice(data_dir=args.speech_dir, dataset_samples=150, eval_samples=50,
                                   train_speakers=SWEEP_TRAIN, eval_speakers=SWEEP_VALID), hub_ok=False)
    train = prepare_dataset(data.train, processor, family)
    valid = prepare_dataset(data.eval, processor, family)
    baseline = assess(base, processor, family, valid, valid, 32)
    rows = []
    for point in grid(args.family):
        set_seed(42)
        targets = family.default_target_modules if point["targets"] == "all" else (DECODER_ONLY[args.family],)
        model = attach_lora(copy.deepcopy(base), point["lora_r"], point["lora_alpha"], 0.05, targets)
        cfg = replace(TrainConfig(), batch_size=8, gradient_accumulation_steps=1, learning_rate=point["learning_rate"],
                      max_steps=point["max_steps"], checkpoint_every=0)
        started = time.perf_counter()
        train_lora(model, family, train, cfg, Accelerator(), show_progress=False)
        seconds = time.perf_counter() - started
        result = assess(model, processor, family, valid, valid, 32)
        rows.append(point | {"valid_wer": result["wer"], "valid_loss": result["eval_loss"], "train_seconds": seconds})
        print(rows[-1], flush=True)
    best = min(rows, key=lambda r: (r["valid_wer"], r["valid_loss"]))
    lines = [f"Digits sweep, {args.family} ({MODELS[args.family]}): train speakers {', '.join(SWEEP_TRAIN)} "
             f"({len(train)} utts), validation speaker {', '.join(SWEEP_VALID)} ({len(valid)} utts); "
             f"baseline validation WER {100 * baseline['wer']:.1f}%, loss {baseline['eval_loss']:.3f}. batch 8, seed 42.", "",
             "| lr | rank | LoRA on | steps | valid WER | valid loss | train s |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        mark = "**" if r is best else ""
        lines.append(f"| {r['learning_rate']:g} | {r['lora_r']} | {r['targets']} | {r['max_steps']} | "
                     f"{mark}{100 * r['valid_wer']:.1f}%{mark} | {r['valid_loss']:.3f} | {r['train_seconds']:.0f} |")
    out = Path(args.output or f"recipes/results/sweep_{args.family}.md")
    write_text_atomic(out, "\n".join(lines) + "\n")
    write_json_atomic(out.with_suffix(".json"), {"baseline": {k: baseline[k] for k in ("wer", "eval_loss")}, "rows": rows, "best": best})
    print("\n".join(lines))


if __name__ == "__main__":
    main()
