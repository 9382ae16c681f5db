"""The LoRA training loop, on `accelerate` so it runs unchanged on CPU, one GPU or under
`accelerate launch`/`torchrun` (data sharded per process, gradients averaged, loss reduced).

The micro-batch stream is a pure function of (seed, position), so every process sees its own
shard of one global order, and a resumed run can skip to where it stopped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from pathlib import Path

from lora.checkpoint import check_resumable, load_checkpoint, read_state, save_checkpoint
from lora.data_loader import Example, collate, length_grouped_batches
from lora.encoder_cache import EncoderCache, encoder_is_fixed

log = logging.getLogger("lora")


@dataclass
class TrainResult:
    history: list[dict] = field(default_factory=list)  # one row per optimizer step
    wall_seconds: float = 0.0
    audio_seconds: float = 0.0  # audio seen by all processes' micro-batches
    label_tokens: int = 0


def micro_batches(examples: list[Example], batch_size: int, seed: int, rank: int = 0, world: int = 1) -> Iterator[list[Example]]:
    """Endless length-grouped micro-batches; epoch e reshuffles with seed+e; rank takes every world-th."""
    epoch, position = 0, 0
    while True:
        for idx in length_grouped_batches(examples, batch_size, seed=seed + epoch):
            if position % world == rank:
                yield [examples[i] for i in idx]
            position += 1
        epoch += 1


def _micro_batch_seed(seed: int, position: int) -> int:
    """RNG seed (LoRA dropout) of the micro-batch at `position` in the global order, a pure function
    like the micro-batch itself: the masks then do not depend on how many processes share a step, nor
    on where a run resumed (a checkpoint holds rank 0's RNG state only)."""
    return (seed * 2**32 + position) % 2**63


def _step_totals(accelerator, losses: list, seconds: float, tokens: int) -> tuple[float, float, int]:
    """(mean loss, audio seconds, label tokens) of one optimizer step over all processes, in one
    all-reduce: every process then logs and checkpoints the whole step, not just its own shard."""
    import torch

    device = losses[0].device
    local = torch.stack([torch.stack(losses).float().mean(), torch.tensor(seconds, device=device),
                         torch.tensor(float(tokens), device=device)])
    total = accelerator.reduce(local, reduction="sum")
    return float(total[0]) / accelerator.num_processes, float(total[1]), round(float(total[2]))


def train_lora(model, family, examples: list[Example], cfg, accelerator, show_progress: bool = True,
               run_dir: Path | None = None, cache_encoder: bool = True) -> TrainResult:
    """Run `cfg.max_steps` optimizer steps of `cfg.gradient_accumulation_steps` micro-batches each.

    With `run_dir`, a checkpoint is written every `cfg.checkpoint_every` steps and `cfg.resume`
    continues from the last one (same weights as an uninterrupted run).
    With `cache_encoder`, a frozen, dropout-free encoder runs once per distinct micro-batch
    (`lora.encoder_cache`; same losses, less work when LoRA adapts only the decoder).
    """
    import dataclasses

    import torch
    from tqdm.auto import tqdm
    from transformers import get_linear_schedule_with_warmup

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    warmup = int(cfg.warmup_ratio * cfg.max_steps)
    scheduler = get_linear_schedule_with_warmup(optimizer, warmup, cfg.max_steps)
    # The scheduler is stepped by hand once per optimizer step: accelerate's wrapper would step it
    # once per process, which is not the schedule a single-process run of the same global batch gets.
    model, optimizer = accelerator.prepare(model, optimizer)
    model.train()
    bare = accelerator.unwrap_model(model)
    encoder_cache = EncoderCache(bare, family.input_key, accelerator.autocast) if cache_encoder and encoder_is_fixed(bare) else None
    stream = micro_batches(examples, cfg.batch_size, cfg.seed, accelerator.process_index, accelerator.num_processes)
    result = TrainResult()
    first_step = 1
    if run_dir is not None and cfg.resume and read_state(run_dir):
        check_resumable(read_state(run_dir), dataclasses.asdict(cfg))
        state = load_checkpoint(run_dir, accelerator.unwrap_model(model), optimizer, scheduler)
        result.history, result.audio_seconds, result.label_tokens = state["history"], state["audio_seconds"], state["label_tokens"]
        first_step = state["step"] + 1
        for _ in range(state["step"] * cfg.gradient_accumulation_steps):
            next(stream)
        log.info("resumed from %s at step %d", run_dir / "checkpoint", state["step"])
    bar = tqdm(total=cfg.max_steps, initial=first_step - 1, desc="train", unit="step",
               disable=not (show_progress and accelerator.is_main_process))
    start = time.perf_counter()
    for step in range(first_step, cfg.max_steps + 1):
        losses, seconds, tokens = [], 0.0, 0
        for micro in range(cfg.gradient_accumulation_steps):
            batch_examples = next(stream)
            local = (step - 1) * cfg.gradient_accumulation_steps + micro
            torch.manual_seed(_micro_batch_seed(cfg.seed, local * accelerator.num_processes + accelerator.process_index))
            batch = {k: v.to(accelerator.device) for k, v in collate(batch_examples, family).items()}
            if encoder_cache is not None:
                batch = encoder_cache.model_inputs(batch_examples, batch)
            with accelerator.accumulate(model):
                loss = model(**batch).loss
                accelerator.backward(loss)
                if accelerator.sync_gradients and cfg.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
                optimizer.step()
                if accelerator.sync_gradients:
                    scheduler.step()
                optimizer.zero_grad()
            losses.append(loss.detach())
            seconds += sum(e.seconds for e in batch_examples)
            tokens += sum(len(e.labels) for e in batch_examples)
        step_loss, step_seconds, step_tokens = _step_totals(accelerator, losses, seconds, tokens)
        result.audio_seconds += step_seconds
        result.label_tokens += step_tokens
        row = {"step": step, "loss": step_loss, "lr": scheduler.get_last_lr()[0], "elapsed_s": time.perf_counter() - start}
        result.history.append(row)
        bar.set_postfix(loss=f"{step_loss:.3f}")
        bar.update(1)
        if run_dir is not None and cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < cfg.max_steps:
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                save_checkpoint(run_dir, accelerator.unwrap_model(model), optimizer, scheduler, {
                    "step": step, "history": result.history, "audio_seconds": result.audio_seconds,
                    "label_tokens": result.label_tokens, "config": dataclasses.asdict(cfg)})
    bar.close()
    result.wall_seconds = time.perf_counter() - start
    model.eval()
    return result
