"""Step time of the two token-loss paths side by side (benchmarks/results/loss_step_time.md): the previous
one (the model projects every position, `chunked_cross_entropy` scores the bf16 logits a chunk at a time)
against the committed one (`chunked_projected_cross_entropy`: the frozen projection a chunk at a time inside
the loss). Moonshine base random-initialised from the imported config, q/v_proj trainable, bf16 autocast;
old new new old, twice, 2 steps per batch shape, fastest counts:

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2 uv run python benchmarks/loss_step_time.py
"""

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch  # noqa: E402 - after the path: benchmarks/ is a folder of scripts
from transformers import AutoConfig, AutoModelForSpeechSeq2Seq  # noqa: E402

from lora.token_loss import (  # noqa: E402
    chunked_cross_entropy,
    chunked_projected_cross_entropy,
    frozen_projection,
    hidden_states_out,
    shift_right,
)

torch.manual_seed(0)
d = os.path.expanduser("~/.cache/lora/models/moonshine-base-en")
model = AutoModelForSpeechSeq2Seq.from_config(AutoConfig.from_pretrained(d))
for n, p in model.named_parameters():
    p.requires_grad = "q_proj" in n or "v_proj" in n
model.train()


def old(model, batch):
    labels = batch["labels"]
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    inputs["decoder_input_ids"] = shift_right(labels, model.config.decoder_start_token_id, model.config.pad_token_id)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(**inputs).logits
    return chunked_cross_entropy(logits, labels)


def new(model, batch):
    labels = batch["labels"]
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    inputs["decoder_input_ids"] = shift_right(labels, model.config.decoder_start_token_id, model.config.pad_token_id)
    w = frozen_projection(model)
    with hidden_states_out(model):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            h = model(**inputs).logits
    return chunked_projected_cross_entropy(h, w, labels)


shapes = [(7, 128000, 25), (60, 16000, 6), (250, 3840, 4)]


def batch(c, s, t):
    return {"input_values": torch.randn(c, s) * 0.1, "attention_mask": torch.ones(c, s, dtype=torch.long), "labels": torch.randint(0, 1000, (c, t))}


bs = [batch(*s) for s in shapes]
for f in (old, new):
    f(model, bs[0]).backward()
res = {}
for rep in range(2):
    for name, f in (("old", old), ("new", new), ("new", new), ("old", old)):
        for i, b in enumerate(bs):
            t = time.perf_counter()
            for _ in range(2):
                f(model, b).backward()
            res.setdefault((name, i), []).append(time.perf_counter() - t)
for i, s in enumerate(shapes):
    o = min(res[("old", i)])
    n = min(res[("new", i)])
    print(s, f"old {o:.2f}s new {n:.2f}s new/old {n / o:.3f}")
