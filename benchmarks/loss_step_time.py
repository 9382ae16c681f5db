"""Step time of the two token-loss paths side by side (benchmarks/results/loss_step_time.md): the previous
one (the model projects every position, `chunked_cross_entropy` scores the bf16 logits a chunk at a time)
against the committed one (`training_loss`, which computes the frozen projection a chunk at a time inside
the loss). Moonshine base random-initialised from the imported config, q/v_proj trainable, bf16 autocast;
old new new old, twice, 2 steps per batch shape, fastest counts:

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2 uv run python benchmarks/loss_step_time.py [--chunk-tokens N]

`--chunk-tokens N` adds a third side, the committed path with N positions per chunk instead of `CHUNK_TOKENS`
(order old new wide wide new old): is the many-label-token batch's slowdown the chunks' count?
"""

import argparse
import functools
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch  # noqa: E402 - after the path: benchmarks/ is a folder of scripts
from transformers import AutoConfig, AutoModelForSpeechSeq2Seq  # noqa: E402

from lora.token_loss import chunked_cross_entropy, shift_right, training_loss  # noqa: E402

SHAPES = [(7, 128000, 25), (60, 16000, 6), (250, 3840, 4)]  # clips, samples per clip, label tokens per clip


def old(model, batch):
    """The previous path: the model projects every position, the loss scores the bf16 logits a chunk at a time."""
    labels = batch["labels"]
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    inputs["decoder_input_ids"] = shift_right(labels, model.config.decoder_start_token_id, model.config.pad_token_id)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(**inputs).logits
    return chunked_cross_entropy(logits, labels)


def new(model, batch, chunk_tokens: int | None = None):
    """The committed path, as `lora.training` calls it (`chunk_tokens` None: `CHUNK_TOKENS`)."""
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return training_loss(model, model, batch, chunk_tokens=chunk_tokens)


def make_batch(clips: int, samples: int, tokens: int) -> dict:
    return {"input_values": torch.randn(clips, samples) * 0.1, "attention_mask": torch.ones(clips, samples, dtype=torch.long),
            "labels": torch.randint(0, 1000, (clips, tokens))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunk-tokens", type=int, default=0, help="also time the committed path at N positions per chunk")
    args = parser.parse_args()
    wide = functools.partial(new, chunk_tokens=args.chunk_tokens) if args.chunk_tokens else None
    torch.manual_seed(0)
    model = AutoModelForSpeechSeq2Seq.from_config(AutoConfig.from_pretrained(os.path.expanduser("~/.cache/lora/models/moonshine-base-en")))
    for name, param in model.named_parameters():
        param.requires_grad = "q_proj" in name or "v_proj" in name
    model.train()
    batches = [make_batch(*shape) for shape in SHAPES]
    order = [("old", old), ("new", new)] + ([("wide", wide)] * 2 if wide else []) + [("new", new), ("old", old)]
    for _, side in order[:3]:  # warm-up: kernels built, allocator primed
        side(model, batches[0]).backward()
    seconds: dict = {}
    for _ in range(2):
        for name, side in order:
            for i, batch in enumerate(batches):
                start = time.perf_counter()
                for _ in range(2):
                    side(model, batch).backward()
                seconds.setdefault((name, i), []).append(time.perf_counter() - start)
    for i, shape in enumerate(SHAPES):
        o, n = min(seconds[("old", i)]), min(seconds[("new", i)])
        line = f"old {o:.2f}s new {n:.2f}s new/old {n / o:.3f}"
        if wide:
            w = min(seconds[("wide", i)])
            line += f" new@{args.chunk_tokens} {w:.2f}s new@{args.chunk_tokens}/old {w / o:.3f}"
        print(shape, line)


if __name__ == "__main__":
    main()
