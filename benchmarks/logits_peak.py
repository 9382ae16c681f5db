"""Peak RSS rise of one Moonshine-base training step on a given batch shape, with the models' own loss or
`lora.token_loss` (benchmarks/results/logits_peak.md). Random-initialised from the imported config, bf16
autocast, only the q_proj weights trainable; run each shape in a fresh process under jemalloc:

    LRU_CACHE_CAPACITY=64 LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2 \\
      uv run python benchmarks/logits_peak.py 250 3840 4 [--chunked]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch  # noqa: E402 - after the path: benchmarks/ is a folder of scripts
from transformers import AutoConfig, AutoModelForSpeechSeq2Seq  # noqa: E402

from lora.token_loss import training_loss  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("clips", type=int)
    parser.add_argument("samples", type=int, help="samples per clip (16 kHz)")
    parser.add_argument("tokens", type=int, help="label tokens per clip")
    parser.add_argument("--chunked", action="store_true", help="lora.token_loss instead of forward(labels=...).loss")
    parser.add_argument("--model-dir", default=os.path.expanduser("~/.cache/lora/models/moonshine-base-en"))
    args = parser.parse_args()
    torch.manual_seed(0)
    model = AutoModelForSpeechSeq2Seq.from_config(AutoConfig.from_pretrained(args.model_dir))
    for name, param in model.named_parameters():
        param.requires_grad = "q_proj" in name
    model.train()

    def step(clips: int, samples: int, tokens: int) -> None:
        batch = {"input_values": torch.randn(clips, samples) * 0.1,
                 "attention_mask": torch.ones(clips, samples, dtype=torch.long),
                 "labels": torch.randint(0, 1000, (clips, tokens))}
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = training_loss(model, model, batch) if args.chunked else model(**batch).loss
        loss.backward()

    step(4, 16000, 4)  # warm-up: kernels built, allocator primed
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    step(args.clips, args.samples, args.tokens)
    side = "lora.token_loss" if args.chunked else "model's own loss"
    print(f"{args.clips} x {args.samples} samples, {args.tokens} tokens, {side}: peak RSS rise "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before:.0f} MB")


if __name__ == "__main__":
    main()
