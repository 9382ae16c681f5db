"""LoRA's input dropout on a CPU, side by side: PEFT's `nn.Dropout` (torch's `bernoulli_` mask) against
`lora.lora_dropout.FastMaskDropout` (the same mask distribution from numpy's SFC64 bits), in one process on
the same model and the same micro-batches (benchmarks/results/lora_dropout_ab.json / .md):

    uv run python benchmarks/lora_dropout_ab.py [--models moonshine-base-en,whisper-tiny.en] [--rounds 2] [--steps 3]

Real imported weights (`lora import`), LoRA r 8 / dropout 0.05 on each family's default targets (all
attention), fp32 (what `--mixed-precision auto` picks on a CPU without AMX), micro-batches of the real
sentence clips of ../shared/speech (dev-clean, test-clean, LJSpeech, JFK) up to 60 s of audio and 16 clips
(`--steps` different micro-batches),
as `lora train --max-batch-seconds 60` makes them. Each step: `lora.token_loss.training_loss`, backward, AdamW.
Order torch, fast, fast, torch per round (drift cancels); every step timed; the median per side counts.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch  # noqa: E402 - after the path: benchmarks/ is a folder of scripts
from torch import nn  # noqa: E402

from lora.core.outputs import write_json_atomic, write_text_atomic  # noqa: E402
from lora.data.records import read_librispeech_dir  # noqa: E402
from lora.families import pad_labels  # noqa: E402
from lora.lora_dropout import FastMaskDropout, lora_branches  # noqa: E402
from lora.model_utils import attach_lora, load_base, resolve_model_id  # noqa: E402
from lora.token_loss import training_loss  # noqa: E402

SPEECH = Path(__file__).resolve().parents[1].parent / "shared" / "speech"
MAX_SECONDS, MAX_CLIPS = 60.0, 16


def micro_batches(family, processor, count: int) -> list[tuple[dict, float]]:
    """`count` micro-batches of consecutive real sentence clips (the 26 of dev-clean, test-clean, LJSpeech and
    JFK, 153 s, taken round again as needed), each up to MAX_SECONDS of audio and MAX_CLIPS clips."""
    clips = read_librispeech_dir(SPEECH, ["dev-clean", "test-clean", "ljspeech", "jfk"])
    batches, current, seconds = [], [], 0.0
    for u in itertools.cycle(clips):
        samples = u.samples()
        length = len(samples) / 16000
        if current and (seconds + length > MAX_SECONDS or len(current) == MAX_CLIPS):
            batches.append(_collate(family, processor, current, seconds))
            current, seconds = [], 0.0
            if len(batches) == count:
                return batches
        current.append((samples, u.text))
        seconds += length


def _collate(family, processor, clips, seconds) -> tuple[dict, float]:
    batch = family.pad_inputs([family.featurize(processor, samples) for samples, _ in clips])
    batch["labels"] = pad_labels([family.label_ids(processor.tokenizer, text) for _, text in clips])
    return batch, seconds


def set_dropout(model, fast: bool) -> None:
    """Every LoRA branch's dropout as `FastMaskDropout` (fast) or PEFT's own `nn.Dropout`."""
    for branches, name in lora_branches(model):
        if isinstance(branches[name], nn.Dropout):  # (nn.Identity where the dropout is 0)
            p = branches[name].p
            branches[name] = FastMaskDropout(p) if fast else nn.Dropout(p)


def side(model, optimizer, batches, steps: int) -> list[float]:
    times = []
    for i in range(steps):
        batch, _ = batches[i % len(batches)]
        start = time.perf_counter()
        loss = training_loss(model, model, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    return times


def run(name: str, rounds: int, steps: int) -> dict:
    torch.manual_seed(0)
    model, processor, family = load_base(resolve_model_id(name))
    model = attach_lora(model, 8, 16, 0.05, family.default_target_modules)
    set_dropout(model, fast=False)  # attach_lora swapped in the fast mask: start from PEFT's own
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    batches = micro_batches(family, processor, steps)
    side(model, optimizer, batches[:1], 1)  # untimed: first-use kernels
    times = {"torch": [], "fast": []}
    for _ in range(rounds):
        for kind in ("torch", "fast", "fast", "torch"):
            set_dropout(model, fast=kind == "fast")
            times[kind] += side(model, optimizer, batches, steps)
    medians = {k: statistics.median(v) for k, v in times.items()}
    audio = sum(s for _, s in batches) / len(batches)
    return {"lora_branches": len(lora_branches(model)), "mean_audio_seconds_per_step": audio,
            "median_step_seconds": medians, "step_seconds": times, "speedup": medians["torch"] / medians["fast"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="moonshine-base-en,whisper-tiny.en")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3, help="steps per side per turn")
    parser.add_argument("--output", default="benchmarks/results/lora_dropout_ab.json")
    args = parser.parse_args()
    results = {"threads": torch.get_num_threads(), "torch": torch.__version__, "results": {}}
    for name in args.models.split(","):
        results["results"][name] = run(name, args.rounds, args.steps)
        print(name, {k: v for k, v in results["results"][name].items() if k != "step_seconds"}, flush=True)
        write_json_atomic(args.output, results)
    lines = ["# LoRA input dropout on a CPU: torch's bernoulli_ mask against FastMaskDropout", "",
             f"torch {results['torch']}, {results['threads']} threads, fp32, real weights, 60 s micro-batches; "
             "order torch fast fast torch per round, median step.", "",
             "| model | LoRA branches | audio s per step | torch step (s) | fast step (s) | speedup |", "|---|---|---|---|---|---|"]
    for name, r in results["results"].items():
        m = r["median_step_seconds"]
        lines.append(f"| {name} | {r['lora_branches']} | {r['mean_audio_seconds_per_step']:.1f} | {m['torch']:.3f} | {m['fast']:.3f} | {r['speedup']:.2f}x |")
    write_text_atomic(Path(args.output).with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
