"""The LoRA training loop, on `accelerate` so it runs unchanged on CPU, one GPU or under
`accelerate launch`/`torchrun` (data sharded per process, gradients averaged, loss reduced).

Micro-batches come from a `BatchSource`: the streaming loader over a corpus on disk
(`lora.data_loader.make_loader`, worker processes) or, for small in-memory sets, prepared `Example`s
with the same batch plan. Either way the stream is a pure function of (seed, position), so every
process sees its own shard of one global order and a resumed run skips to where it stopped.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from lora.checkpoint import (
    CHECKPOINT_DIR,
    STATE_FILE,
    check_resumable,
    finished_length,
    load_checkpoint,
    read_state,
    resume_config,
    save_checkpoint,
)
from lora.core.errors import Interrupted, UserError
from lora.core.memory import keep_heap_flat, release_free_memory
from lora.core.outputs import current_rss_mb
from lora.data.manifest import BadRow
from lora.data_loader import BatchPlan, ClipTable, Example, LoadedBatch, LoaderOptions, collate, loader_plan, make_loader
from lora.encoder_cache import EncoderCache, encoder_is_fixed
from lora.model_utils import float32_attention_on_cpu
from lora.token_loss import training_loss

log = logging.getLogger("lora")


@dataclass
class TrainResult:
    history: list[dict] = field(default_factory=list)  # one row per optimizer step
    wall_seconds: float = 0.0
    audio_seconds: float = 0.0  # audio seen by all processes' micro-batches
    label_tokens: int = 0
    first_step_wall: float | None = None  # time.perf_counter() when the first optimizer step ended
    quarantined: list[BadRow] = field(default_factory=list)  # rows the loader could not load (this process)
    batches_per_epoch: int = 0
    eval_history: list[dict] = field(default_factory=list)  # {step, eval_loss, wer} at each --eval-steps evaluation
    best_step: int | None = None  # the step whose LoRA state was kept (None: the last step's)
    stopped_early_at: int | None = None  # the step `on_step` stopped the run at (early stopping)


# Called after every optimizer step on every process with (step, history row); the row may be
# extended in place (eval figures). A true return value stops the run after this step.
StepCallback = Callable[[int, dict], bool | None]


# A BatchSource opens this process's micro-batch stream: (rank, world, skip) -> LoadedBatch iterator.
# Optional attributes: `batches_per_epoch`; `on_device(batch)` (inputs computed on the device); `base_rows`, a
# NumPy bool per source row (table row or example) marking the replay clips `--replay-distillation` applies to;
# `styler(batch, model) -> batch` with `save()`, labels for rows styled as first drawn (`lora.styled_targets.DrawStyler`);
# `rows`, {"count", "fingerprint"} of the training rows, kept in each checkpoint (a resume over other rows is refused).
BatchSource = Callable[[int, int, int], Iterator[LoadedBatch]]


def streaming_source(table: ClipTable, processor, family, policy: str | None, options: LoaderOptions) -> BatchSource:
    """Micro-batches loaded by DataLoader workers from the files on disk (the scale path)."""

    plan = loader_plan(table.seconds, family, options)

    def open_stream(rank: int, world: int, skip: int) -> Iterator[LoadedBatch]:
        loader, _ = make_loader(table, processor, family, policy, options, rank, world, skip, plan)
        return iter(loader)

    open_stream.batches_per_epoch = plan.batches_per_epoch  # the loader's own plan
    open_stream.rows = table.identity()  # a resume must draw from the same rows
    if options.features_on_device:
        open_stream.on_device = lambda batch: family.device_features(processor, batch)
    return open_stream


def opened_now(source: BatchSource, rank: int, world: int) -> BatchSource:
    """`source` with the stream a fresh run reads (`rank` of `world`, nothing skipped) opened now: its loader's
    workers load the first micro-batches while LoRA is attached and the optimizer built, not after. Asked for
    any other stream (a resume skips batches), or a second time, it opens that one as `source` would."""
    early: list = [source(rank, world, 0)]

    def open_stream(r: int, w: int, skip: int) -> Iterator[LoadedBatch]:
        if (r, w, skip) == (rank, world, 0) and early:
            return early.pop()
        early.clear()  # not wanted: its workers stop
        return source(r, w, skip)

    open_stream.__dict__.update(source.__dict__)  # batches_per_epoch, rows, on_device, base_rows, styler
    return open_stream


def example_source(examples: list[Example], family, options: LoaderOptions) -> BatchSource:
    """Micro-batches of examples already in memory (small sets: poc, benches), the same plan."""
    import numpy as np

    seconds = np.array([e.seconds for e in examples], dtype=np.float32)

    def open_stream(rank: int, world: int, skip: int) -> Iterator[LoadedBatch]:
        plan = BatchPlan(seconds, options.batch_size, options.max_batch_seconds, options.seed, rank, world, skip,
                         family.padded_seconds)
        for idx in plan:
            members = [examples[i] for i in idx]
            yield LoadedBatch(collate(members, family), tuple(idx), sum(e.seconds for e in members),
                              sum(len(e.labels) for e in members), [])

    open_stream.batches_per_epoch = BatchPlan(seconds, options.batch_size, options.max_batch_seconds,
                                              padded_seconds=family.padded_seconds).batches_per_epoch
    return open_stream


def _micro_batch_seed(seed: int, position: int) -> int:
    """RNG seed (LoRA dropout) of the micro-batch at `position` in the global order, a pure function
    like the micro-batch itself: the masks then do not depend on how many processes share a step, nor
    on where a run resumed (a checkpoint holds rank 0's RNG state only)."""
    return (seed * 2**32 + position) % 2**63


def _step_totals(accelerator, losses: list, seconds: float, tokens: int):
    """(loss sum over processes, audio seconds, label tokens) of one optimizer step, in one all-reduce
    and left on the device: every process then logs and checkpoints the whole step, and reading the
    numbers (a device sync) can wait until the next step is queued (`_Pending`)."""
    import torch

    device = losses[0].device
    # torch.full, not torch.tensor(x, device=...): the latter copies from pageable host memory, and that
    # copy waits for the GPU to finish everything queued, the stall the one-step lag exists to avoid
    local = torch.stack([torch.stack(losses).float().mean(), torch.full((), float(seconds), device=device),
                         torch.full((), float(tokens), device=device)])
    return accelerator.reduce(local, reduction="sum")


@dataclass
class _Pending:
    """A step whose totals are still on the device. Reading them right away would make the host
    wait for the GPU every step, with nothing queued behind it; reading them one step later keeps
    the next step's work queued while the GPU finishes this one."""

    step: int
    totals: object  # device tensor from _step_totals
    lr: float
    grad_norm: object  # device tensor (or None), read with the totals
    started: float  # time.perf_counter() when the step began
    queued: float  # ... and when its work was all queued


def _next_good(stream: Iterator[LoadedBatch], result: TrainResult, on_bad) -> LoadedBatch:
    """The next micro-batch with at least one loadable row; unloadable rows are quarantined."""
    while True:
        batch = next(stream)
        if batch.bad:
            result.quarantined.extend(batch.bad)
            for bad in batch.bad:
                log.warning("quarantined while training: %s", bad.message)
            if on_bad is not None:
                on_bad(result.quarantined)
        if batch.rows:
            return batch


def _agreed(accelerator, stop: bool) -> bool:
    """The main process's stop decision, the same on every process."""
    if accelerator.num_processes == 1:
        return stop
    from accelerate.utils import broadcast_object_list  # deferred: heavy

    return bool(broadcast_object_list([stop])[0])


class StopAfterStep:
    """Ctrl-C (SIGINT) or a scheduler's SIGTERM during training: the first asks the loop to stop when the
    step under way ends (its checkpoint written, the loader's workers shut down in order); a second one
    acts at once. `signum` is the signal that asked.

    Only where the signal has its default action (Ctrl-C raising KeyboardInterrupt, SIGTERM ending the
    process), in the main thread of a single process: processes of a distributed run would have to agree
    on the step every step, and they still stop at once."""

    DEFAULTS = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}

    def __init__(self, enabled: bool = True):
        self.enabled, self.signum, self.previous = enabled, 0, {}

    @property
    def requested(self) -> bool:
        return self.signum != 0

    def __enter__(self) -> StopAfterStep:
        if self.enabled and threading.current_thread() is threading.main_thread():
            for signum, default in self.DEFAULTS.items():
                if signal.getsignal(signum) is default:
                    self.previous[signum] = signal.signal(signum, self._request)
        return self

    def _request(self, signum, frame) -> None:
        self.signum = self.signum or signum
        self._restore()  # a second signal acts at once
        log.warning("%s: stopping when this step ends, after its checkpoint (%s again stops at once)",
                    "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name,
                    "Ctrl-C" if signum == signal.SIGINT else "the signal")

    def _restore(self) -> None:
        for signum, previous in self.previous.items():
            signal.signal(signum, previous)
        self.previous = {}

    def __exit__(self, *exc) -> None:
        self._restore()


def make_optimizer(params, cfg, device_type: str):
    """AdamW; the fused kernel on CUDA (one launch for all parameters instead of one per tensor)."""
    import torch

    fused = device_type == "cuda"
    return torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay, fused=fused)


def resume_dir(cfg, run_dir: Path | None) -> Path | None:
    """The run folder to resume from: `--resume-from-checkpoint` (a run folder or its checkpoint/), else
    `run_dir` under `--resume`, else None."""
    given = getattr(cfg, "resume_from_checkpoint", None)
    if given:
        path = Path(given).expanduser()
        folder = path.parent if path.name == CHECKPOINT_DIR else path
        if read_state(folder) is None:
            raise UserError(f"--resume-from-checkpoint {given}: no {CHECKPOINT_DIR}/{STATE_FILE} there; "
                            "pass a run folder that wrote checkpoints (--checkpoint-every)")
        return folder
    if run_dir is None:
        return None
    if not cfg.resume:
        earlier = read_state(run_dir)
        if earlier is not None:  # a forgotten --resume would otherwise lose it at this run's first checkpoint, unsaid
            log.warning("warning: %s holds the checkpoint of step %s of an earlier%s run; starting from step 0 as asked "
                        "(run with --resume to go on from it instead)", run_dir / CHECKPOINT_DIR, earlier.get("step"),
                        ", finished" if earlier.get("finished") else "")
        return None
    if read_state(run_dir) is None:  # a restart loop passes --resume every time: start over, but say so
        log.warning("warning: --resume: no %s/%s in %s; starting from step 0", CHECKPOINT_DIR, STATE_FILE, run_dir)
        return None
    return run_dir


def make_scheduler(optimizer, cfg):
    """`--lr-scheduler-type` over `cfg.max_steps` optimizer steps with `--warmup-steps` (else `--warmup-ratio`)."""
    from transformers import get_scheduler  # deferred: heavy

    warmup = getattr(cfg, "warmup_steps", 0) or int(cfg.warmup_ratio * cfg.max_steps)
    return get_scheduler(getattr(cfg, "lr_scheduler_type", "linear"), optimizer, num_warmup_steps=warmup,
                         num_training_steps=cfg.max_steps)


def train_lora(model, family, source: BatchSource, cfg, accelerator, show_progress: bool = True,
               run_dir: Path | None = None, cache_encoder: bool = True, on_bad=None,
               on_step: StepCallback | None = None) -> TrainResult:
    """Run `cfg.max_steps` optimizer steps of `cfg.gradient_accumulation_steps` micro-batches each.

    With `run_dir`, a checkpoint is written every `cfg.checkpoint_every` steps and `cfg.resume`
    continues from the last one (same weights as an uninterrupted run).
    With `cache_encoder`, a frozen, dropout-free encoder runs once per distinct micro-batch
    (`lora.encoder_cache`; same losses, less work when LoRA adapts only the decoder).
    A step whose loss is NaN/inf stops the run with a `UserError` (the last checkpoint stays).
    `on_bad(rows)` is called with every row quarantined so far whenever the loader meets a new one.
    `on_step(step, row)` runs after each optimizer step (row: loss, lr, grad_norm, audio seconds per
    second); a true return stops the run there (early stopping; the decision of the main process
    holds for all).
    """
    import torch
    from tqdm.auto import tqdm  # deferred with torch: heavy, and --help must stay fast

    params = [p for p in model.parameters() if p.requires_grad]
    on_cpu = accelerator.device.type == "cpu"
    if on_cpu:  # opt-in (LORA_GLIBC_TUNING=1|trim): keep RSS flat under variable-sized activations (lora.core.memory)
        keep_heap_flat()
    optimizer = make_optimizer(params, cfg, accelerator.device.type)
    scheduler = make_scheduler(optimizer, cfg)
    # The scheduler is stepped by hand once per optimizer step: accelerate's wrapper would step it
    # once per process, which is not the schedule a single-process run of the same global batch gets.
    model, optimizer = accelerator.prepare(model, optimizer)
    model.train()
    bare = accelerator.unwrap_model(model, keep_torch_compile=False)  # under --compile: the module compiled, its own names
    if on_cpu and accelerator.mixed_precision == "bf16" and float32_attention_on_cpu(bare):
        log.info("bf16 on a CPU: attention computed in float32 (faster there; lora.model_utils.FLOAT32_ATTENTION)")
    encoder_cache = EncoderCache(bare, family.input_key, accelerator.autocast) if cache_encoder and encoder_is_fixed(bare) else None
    result = TrainResult(batches_per_epoch=getattr(source, "batches_per_epoch", 0))
    first_step = 1
    resume_from = resume_dir(cfg, run_dir)
    if resume_from is not None:
        check_resumable(read_state(resume_from), dataclasses.asdict(cfg), getattr(source, "rows", None))
        state = load_checkpoint(resume_from, bare, optimizer, scheduler)
        result.history, result.audio_seconds, result.label_tokens = state["history"], state["audio_seconds"], state["label_tokens"]
        first_step = state["step"] + 1
        if state.get("finished") and finished_length(state, dataclasses.asdict(cfg)) is None:
            first_step = cfg.max_steps + 1  # it ended here (early stopping included): nothing left to train
        log.info("resumed from %s at step %d", resume_from / CHECKPOINT_DIR, state["step"])
    # Resume position: every earlier micro-batch of this process is skipped by the plan, unloaded.
    stream = source(accelerator.process_index, accelerator.num_processes, (first_step - 1) * cfg.gradient_accumulation_steps)
    bar = tqdm(total=cfg.max_steps, initial=first_step - 1, desc="train", unit="step",
               disable=not (show_progress and accelerator.is_main_process))
    non_blocking = accelerator.device.type == "cuda"
    on_device = getattr(source, "on_device", lambda batch: batch)  # e.g. Whisper's log-mel on the GPU
    distillation = getattr(cfg, "replay_distillation", 0.0)
    base_rows = getattr(source, "base_rows", None) if distillation > 0 else None  # bool per source row: replay clips
    if distillation > 0 and base_rows is None:
        raise ValueError("replay_distillation > 0 needs a batch source with `base_rows` (which rows are replay clips)")
    styler = getattr(source, "styler", None)  # styles rows as first drawn (lora.styled_targets.DrawStyler)
    start = time.perf_counter()
    pending: _Pending | None = None

    def record(done: _Pending) -> bool:
        """Read a step's totals (the one host-device sync of a step), log it; True: stop here."""
        loss_sum, step_seconds, step_tokens = done.totals.tolist()
        step_loss = loss_sum / accelerator.num_processes
        if not math.isfinite(step_loss):
            kept = f"; the last good checkpoint is in {run_dir / 'checkpoint'}" if run_dir is not None and read_state(run_dir) else ""
            raise UserError(f"step {done.step}: the training loss is {step_loss} (not finite), so the run stopped{kept}; "
                            "lower --learning-rate, check the quarantine for bad rows, or try --mixed-precision no")
        result.audio_seconds += step_seconds
        result.label_tokens += round(step_tokens)
        row = {"step": done.step, "loss": step_loss, "lr": done.lr, "elapsed_s": time.perf_counter() - start,
               "audio_seconds": step_seconds,
               "grad_norm": float(done.grad_norm) if done.grad_norm is not None else None,
               "audio_seconds_per_second": step_seconds / max(done.queued - done.started, 1e-9),
               "rss_mb": current_rss_mb()}
        result.history.append(row)
        bar.set_postfix(loss=f"{step_loss:.3f}")
        bar.update(1)
        if on_step is not None and _agreed(accelerator, bool(on_step(done.step, row))):
            result.stopped_early_at = done.step
            log.info("early stopping at step %d", done.step)
            return True
        return False

    def optimizer_step(step: int):
        """The `gradient_accumulation_steps` micro-batches of one optimizer step: losses, audio seconds, label
        tokens, the gradient norm and when the step started."""
        losses, seconds, tokens, grad_norm = [], 0.0, 0, None
        step_start = time.perf_counter()
        for micro in range(cfg.gradient_accumulation_steps):
            loaded = _next_good(stream, result, on_bad)
            if styler is not None:  # the base model's transcripts of clips drawn for the first time -> their labels
                loaded = styler(loaded, bare)
            local = (step - 1) * cfg.gradient_accumulation_steps + micro
            torch.manual_seed(_micro_batch_seed(cfg.seed, local * accelerator.num_processes + accelerator.process_index))
            batch = {k: v.to(accelerator.device, non_blocking=non_blocking) for k, v in loaded.tensors.items()}
            batch = on_device(batch)
            if encoder_cache is not None:
                batch = encoder_cache.model_inputs(loaded.rows, batch)
            rows_to_base = None  # this micro-batch's replay rows, when it has any and distillation is on
            if base_rows is not None:
                replay_here = base_rows[list(loaded.rows)]
                if replay_here.any():
                    rows_to_base = torch.from_numpy(replay_here).to(accelerator.device)
            with accelerator.accumulate(model):
                # logits a chunk at a time; on replay rows, plus the distillation to the base model (lora.token_loss)
                loss = training_loss(model, bare, batch, base_rows=rows_to_base, base_weight=distillation)
                accelerator.backward(loss)
                if accelerator.sync_gradients:  # the norm is logged; max_norm inf clips nothing (--max-grad-norm 0)
                    grad_norm = accelerator.clip_grad_norm_(params, cfg.max_grad_norm if cfg.max_grad_norm > 0 else math.inf)
                optimizer.step()
                if accelerator.sync_gradients:
                    scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            losses.append(loss.detach())
            seconds += loaded.seconds
            tokens += loaded.tokens
            if on_cpu:  # opt-in (LORA_GLIBC_TUNING): hand the micro-batch's freed heap pages back
                release_free_memory()
        return losses, seconds, tokens, grad_norm, step_start

    def write_checkpoint(step: int, finished: bool = False) -> None:
        if styler is not None:  # before the checkpoint: a resumed run finds every transcript its targets came from
            styler.save()
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            save_checkpoint(run_dir, bare, optimizer, scheduler, {
                "step": step, "history": result.history, "audio_seconds": result.audio_seconds,
                "label_tokens": result.label_tokens, "config": resume_config(dataclasses.asdict(cfg)),
                "rows": getattr(source, "rows", None), "finished": finished})

    checkpoints = run_dir is not None and cfg.checkpoint_every > 0
    # the bar closes before an error (Ctrl-C included) is printed, not after it
    with StopAfterStep(enabled=accelerator.num_processes == 1) as interrupt:
        try:
            for step in range(first_step, cfg.max_steps + 1):
                losses, seconds, tokens, grad_norm, step_start = optimizer_step(step)
                if result.first_step_wall is None:  # when the first optimizer step ended, not when its loss was read (a step later)
                    if accelerator.device.type == "cuda":
                        torch.cuda.synchronize(accelerator.device)  # the run's one extra sync: kernels are queued, not done
                    result.first_step_wall = time.perf_counter()
                sync_now = on_step is not None and cfg.eval_steps > 0 and (step % cfg.eval_steps == 0 or step == cfg.max_steps)
                if pending is not None and record(pending):
                    pending = None
                    break
                pending = _Pending(step, _step_totals(accelerator, losses, seconds, tokens), scheduler.get_last_lr()[0],
                                   grad_norm, step_start, time.perf_counter())
                if sync_now:  # an evaluation step: on_step must see this step's model, so no lag here
                    stop = record(pending)
                    pending = None
                    if stop:
                        break
                if checkpoints and step % cfg.checkpoint_every == 0 and step < cfg.max_steps:
                    if pending is not None and record(pending):
                        pending = None
                        break
                    pending = None
                    write_checkpoint(step)
                elif interrupt.requested:  # Ctrl-C: this step is the checkpoint's (`lora.checkpoint.interrupted_at`)
                    if pending is not None:
                        record(pending)
                        pending = None
                    if checkpoints:
                        write_checkpoint(step)
                if interrupt.requested:
                    raise Interrupted("", interrupt.signum)
            if pending is not None:
                record(pending)
            if checkpoints and result.history and result.history[-1]["step"] >= first_step:
                # the last step's state, marked finished: a crash while measuring, or a restart loop's --resume, does
                # not train again (`lora.checkpoint.finished_length`); it also saves the styler's transcripts
                write_checkpoint(result.history[-1]["step"], finished=True)
            elif styler is not None:
                styler.save()
        finally:
            bar.close()
            result.wall_seconds = time.perf_counter() - start
            # workers end now: their peak RSS is then counted, and after Ctrl-C or an error they end in order
            getattr(stream, "_shutdown_workers", lambda: None)()
    model.eval()
    return result
