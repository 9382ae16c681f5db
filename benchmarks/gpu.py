"""`make bench-gpu`: LoRA training throughput on one CUDA GPU, end to end from FLAC files on disk
through the loader's worker processes, against `Seq2SeqTrainer` + PEFT at its best settings on the
same GPU, with a bare-loop ceiling and an estimate of model FLOPs utilisation beside it.

    python benchmarks/gpu.py --models-dir DIR --speech-dir DIR [--steps 40] [--sides ...] [--output benchmarks/results/gpu.json]

Models: each family's imported config (config.json + tokenizer + feature-extractor files in
`--models-dir/<import name>/`), weights random-initialised (seeded): speed does not depend on the
weight values, and the GPU machine does not carry the 60 MB of real weights. Results say so.
Data: every clip of `--speech-dir` (real FLAC files, LibriSpeech layout or manifest.jsonl), clips
over 1 s only (sentence speech; 0.4 s isolated digits would measure per-clip overhead, not training),
repeated under new ids to fill the run; decoded, resampled and featurised by the workers each time.

Before the sides of a family, one untimed pass of `ours` (`--no-warm-pass` skips it): the first side a
process runs for a model pays once-per-process costs on every new batch shape (measured: whichever side ran
first was 10-40% slower; benchmarks/results/gpu_order.json), which would otherwise go to whichever side is
first in `--sides`.

Sides, per family, `--steps` optimizer steps each, the first `--warmup` not timed:
  ours          `lora.training.train_lora` + `lora.data_loader` as `lora train` runs on CUDA
                (duration-capped, length-bucketed batches, workers handing over 16-bit PCM, no pinning thread, bf16
                autocast, fused AdamW, features made on the GPU, attention heads zero-padded to a multiple of 8 where
                the model allows it: Moonshine's 52-wide heads, so that SDPA's masked kernel runs instead of the math one)
  ours_unpadded_heads  the same without the head padding (the A/B; skipped where heads are already aligned)
  ours_unfolded_stem  `ours` with Moonshine's first convolution (1 -> 416 channels, kernel 127) as windows x weight,
                one GEMM (`lora.families.moonshine.conv_stem`; the A/B; skipped for models without that layer)
  ours_unbucketed  the same without length buckets (each micro-batch padded to its longest; earlier leases' `ours`)
  ours_pinned   the same with the DataLoader's pinning thread (the A/B; the run that chose it off ran it first)
  ours_worker_features  the same with features made in the workers (the hand-over before PCM16)
  ours_preloaded  our loop over 8 batches loaded once (the loop's own cost without the workers)
  ours_preloaded_compiled  the same 8 batches, the model under `--compile` (like for like: no loader to blur it)
  ours_compiled  `ours` with the model under `torch.compile` (`--compile`, `lora.model_utils.compiled`: lengths symbolic, one graph); its
                first `--compile-warmup` steps (compilation, the recompile for dynamic shapes) are not timed
  loader        the loader alone, no model: what it can feed
  reference     `Seq2SeqTrainer` + PEFT at its best: bf16, `group_by_length`, the same workers,
                pinned memory, `adamw_torch_fused`, the same batch size in clips, features in workers
  reference_unpinned  the same without pinned memory
  reference_padded_heads  the better of those two with transformers' own `pad_head_dim_to_multiple_of=8` (what our
                side does, as a user at their best would set it; skipped where heads are already aligned). The best
                of the reference sides is the reference.
  ours_cudnn_benchmark  `ours` with `torch.backends.cudnn.benchmark` (cuDNN picks its convolution algorithms by trying them)
  ceiling       a bare bf16 forward + backward + fused AdamW loop over batches already on the GPU (the model `ours` trains)
  profile       `torch.profiler` over 3 bare steps: the device's busy time per step against the wall time, and
                the ops that take it (where a faster model step must come from)
  profile_ours  the same over 3 steps of `ours` (workers and our loop), with the host's own ops beside the device's
                (what `ours` adds to the bare step)
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import numpy as np  # noqa: E402

from lora.core.outputs import write_json_atomic, write_text_atomic  # noqa: E402
from lora.data.manifest import read_source  # noqa: E402
from lora.data.records import Utterance  # noqa: E402
from lora.data_loader import ClipTable, LoaderOptions, make_loader  # noqa: E402
from lora.families import family_for, pad_labels  # noqa: E402
from lora.families.moonshine.conv_stem import unfold_first_convolution  # noqa: E402
from lora.model_utils import pad_attention_heads  # noqa: E402
from lora.training import streaming_source, train_lora  # noqa: E402
from lora.training_config import TrainConfig  # noqa: E402

MODELS = ("moonshine-base-en", "whisper-tiny.en")
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0}  # dense bf16 tensor-core peak (SXM), for the MFU estimate
# Per family: micro-batch caps (clips, padded audio seconds) chosen for a 80 GB GPU and LoRA r 8.
BATCH = {"moonshine": (256, 1200.0), "whisper": (128, 3840.0)}
MIN_CLIP_SECONDS = 1.0
# Our sides' micro-batches as `lora train` makes them (`--length-buckets`, its default with --max-batch-seconds:
# audio and labels padded up to one of 8 lengths per doubling); `ours_unbucketed` is the A/B (earlier leases' `ours`)
LENGTH_BUCKETS = True
PREFETCH = [4]  # set from --prefetch


def log(msg: str) -> None:
    print(f"[bench-gpu {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def corpus(speech_dirs: list[Path], rows_wanted: int) -> list[Utterance]:
    import soundfile as sf  # deferred: heavy-ish

    clips = []
    for folder in speech_dirs:
        for u in read_source(folder).rows:
            info = sf.info(str(u.audio))
            seconds = info.frames / info.samplerate
            if seconds >= MIN_CLIP_SECONDS:
                u.extra["seconds"] = seconds
                clips.append(u)
    rows, k = [], 0
    while len(rows) < rows_wanted:
        for u in clips:
            rows.append(Utterance(f"{u.id}~r{k}", u.speaker, u.text, u.audio, origin=u.origin, extra={"seconds": u.extra["seconds"]}))
        k += 1
    return rows[:rows_wanted]


def build(model_dir: Path, device: str, pad_heads: bool = False):
    """The random-initialised model with LoRA (r 8, all attention); `pad_heads`: attention heads zero-padded to a
    multiple of 8 where the model allows it (`lora.model_utils.pad_attention_heads`, what `lora train` does on CUDA)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForSpeechSeq2Seq, AutoProcessor

    config = AutoConfig.from_pretrained(model_dir)
    torch.manual_seed(0)
    model = AutoModelForSpeechSeq2Seq.from_config(config, attn_implementation="sdpa").to(device)
    pad_attention_heads(model) if pad_heads else None
    processor = AutoProcessor.from_pretrained(model_dir)
    family = family_for(config.model_type)
    family.prepare_model(model)  # as `lora.model_utils.load_base` (Moonshine: each clip of a batch encoded alone)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules=list(family.default_target_modules)))
    return model, processor, family


def our_options(family, workers: int, cuda: bool, **changes) -> LoaderOptions:
    """Our sides' loader options: the family's caps (`BATCH`), batches length-bucketed as `lora train` makes
    them, features made on the GPU, `--prefetch`; `changes` as each side differs."""
    clips, cap = BATCH[family.name]
    base = LoaderOptions(clips, cap, seed=0, num_workers=workers, features_on_device=cuda, prefetch_factor=PREFETCH[0],
                         length_buckets=LENGTH_BUCKETS)
    return dataclasses.replace(base, **changes)


def compiled_counted(model):
    """`lora.model_utils.compiled(model)` with TorchDynamo's counters reset, for `compile_facts` after the run."""
    import torch
    from torch._dynamo.utils import counters

    from lora.model_utils import compiled

    torch._dynamo.reset()
    counters.clear()
    return compiled(model)


def compile_facts(history: list[dict], warmup: int) -> dict:
    """Graphs traced and graph breaks since `compiled_counted`, and how long the untimed steps took."""
    from torch._dynamo.utils import counters

    reasons = sorted(counters["graph_break"].items(), key=lambda kv: -kv[1])[:5]  # why, for the next change
    return {"graphs": counters["stats"]["unique_graphs"], "graph_breaks": sum(counters["graph_break"].values()),
            "graph_break_reasons": {reason[:400]: n for reason, n in reasons},
            "untimed_seconds": history[warmup - 1]["elapsed_s"] if len(history) >= warmup else None}


def throughput(history: list[dict], warmup: int) -> tuple[float, int, float]:
    """(audio s/s, steps, seconds) over the steps after `warmup` (elapsed_s is cumulative)."""
    timed = history[warmup:]
    if len(timed) < 2:
        return float("nan"), 0, 0.0
    seconds = timed[-1]["elapsed_s"] - history[warmup - 1]["elapsed_s"]
    audio = sum(r["audio_seconds"] for r in timed)
    return audio / seconds, len(timed), seconds


def run_ours_preloaded(model_dir, rows, device, workers, steps, warmup, compile_model: bool = False) -> dict:
    """Our training loop over 8 micro-batches loaded once and replayed from pinned host memory: the
    loop's own cost without the workers (tells loader-bound from loop-bound); compiled or not, the same
    8 batches (a like-for-like A/B of `--compile` where the loader would blur it)."""
    from accelerate import Accelerator

    from lora.data_loader import LoadedBatch

    model, processor, family = build(model_dir, device, pad_heads=device == "cuda")
    model = compiled_counted(model) if compile_model else model
    clips, cap = BATCH[family.name]
    cuda = device == "cuda"
    options = our_options(family, workers, cuda, pin_memory=cuda)
    loader, _ = make_loader(ClipTable.from_records(rows), processor, family, None, options)
    it = iter(loader)
    cached = [next(it) for _ in range(8)]
    it._shutdown_workers()

    def source(rank, world, skip):
        i = 0
        while True:
            b = cached[i % len(cached)]
            yield LoadedBatch(b.tensors, b.rows, b.seconds, b.tokens, [])
            i += 1

    source.on_device = lambda batch: family.device_features(processor, batch)
    cfg = TrainConfig(batch_size=clips, max_batch_seconds=cap, gradient_accumulation_steps=1, max_steps=steps,
                      learning_rate=1e-4, checkpoint_every=0, seed=0)
    accelerator = Accelerator(mixed_precision="bf16" if cuda else "no", cpu=not cuda)
    result = train_lora(model, family, source, cfg, accelerator, show_progress=False, cache_encoder=False)
    speed, n, secs = throughput(result.history, warmup)
    return {"audio_seconds_per_second": speed, "timed_steps": n, "timed_seconds": secs,
            "losses": [r["loss"] for r in result.history][:3], **(compile_facts(result.history, warmup) if compile_model else {})}


def run_loader(model_dir, rows, device, workers, steps, warmup) -> dict:
    """The loader alone, no model: batches from the workers, pinned, copied to the GPU and turned into
    model inputs there. The most the training loop could be fed."""
    import torch
    from transformers import AutoConfig, AutoProcessor

    processor = AutoProcessor.from_pretrained(model_dir)
    family = family_for(AutoConfig.from_pretrained(model_dir).model_type)
    clips, cap = BATCH[family.name]
    cuda = device == "cuda"
    options = our_options(family, workers, cuda, pin_memory=cuda)
    loader, _ = make_loader(ClipTable.from_records(rows), processor, family, None, options)
    it = iter(loader)
    audio, start = 0.0, None
    for i in range(steps):
        b = next(it)
        tensors = family.device_features(processor, {k: v.to(device, non_blocking=cuda) for k, v in b.tensors.items()})
        torch.cuda.synchronize() if cuda else None
        if i == warmup - 1:
            start = time.perf_counter()
        elif i >= warmup:
            audio += b.seconds
    wall = time.perf_counter() - start
    it._shutdown_workers()
    return {"audio_seconds_per_second": audio / wall, "timed_batches": steps - warmup, "timed_seconds": wall,
            "bytes_per_batch_from_workers": int(sum(v.numel() * v.element_size() for v in b.tensors.values())),
            "model_input_keys": sorted(tensors)}


class _TimedStream:
    """The loader's iterator, timing how long the training loop waits in `next()` for each batch."""

    def __init__(self, inner, waits: list[float], on_next=None):
        self.inner, self.waits, self.on_next = inner, waits, on_next

    def __iter__(self):
        return self

    def __next__(self):
        self.on_next() if self.on_next else None
        start = time.perf_counter()
        batch = next(self.inner)
        self.waits.append(time.perf_counter() - start)
        return batch

    def _shutdown_workers(self):
        getattr(self.inner, "_shutdown_workers", lambda: None)()


def run_ours(model_dir, rows, device, workers, steps, warmup, on_device: bool = True, pin: bool = False,
             compile_model: bool = False, buckets: bool = LENGTH_BUCKETS, pad_heads: bool = True, unfold_stem: bool = False,
             on_next=None) -> dict:
    import torch
    from accelerate import Accelerator

    model, processor, family = build(model_dir, device, pad_heads=pad_heads and device == "cuda")
    if unfold_stem and not unfold_first_convolution(model):
        return {"skipped": "no single-channel first convolution to unfold"}
    model = compiled_counted(model) if compile_model else model
    clips, cap = BATCH[family.name]
    table = ClipTable.from_records(rows)
    cuda = device == "cuda"
    options = our_options(family, workers, cuda, pin_memory=cuda and pin, features_on_device=cuda and on_device, length_buckets=buckets)
    cfg = TrainConfig(batch_size=clips, max_batch_seconds=cap, gradient_accumulation_steps=1, max_steps=steps,
                      learning_rate=1e-4, checkpoint_every=0, seed=0)
    accelerator = Accelerator(mixed_precision="bf16" if cuda else "no", cpu=not cuda)
    torch.cuda.reset_peak_memory_stats() if cuda else None
    source, waits = streaming_source(table, processor, family, None, options), []

    def timed(rank, world, skip):
        return _TimedStream(source(rank, world, skip), waits, on_next)

    timed.__dict__.update(source.__dict__)  # on_device, batches_per_epoch
    result = train_lora(model, family, timed, cfg, accelerator, show_progress=False, cache_encoder=False)
    speed, n, secs = throughput(result.history, warmup)
    return {"audio_seconds_per_second": speed, "timed_steps": n, "timed_seconds": secs,
            "loader_wait_seconds_per_timed_step": float(np.mean(waits[warmup:])) if len(waits) > warmup else None,
            "mean_audio_seconds_per_step": result.audio_seconds / max(1, len(result.history)),
            "peak_gpu_memory_gb": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
            "losses": [r["loss"] for r in result.history][:3] + [result.history[-1]["loss"]],
            "micro_batch_caps": {"clips": clips, "padded_seconds": cap},
            **(compile_facts(result.history, warmup) if compile_model else {})}


class _FlacDataset:
    """The reference's dataset: decode + featurise + tokenise in its workers, as HF recipes do."""

    def __init__(self, rows, processor, family):
        self.rows, self.processor, self.family = rows, processor, family
        self.lengths = [u.extra["seconds"] for u in rows]

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        u = self.rows[i]
        samples = u.samples()
        return {"inputs": self.family.featurize(self.processor, samples),
                "labels": self.family.label_ids(self.processor.tokenizer, u.text), "seconds": len(samples) / 16000}


class _Collator:
    def __init__(self, family):
        self.family = family

    def __call__(self, items):
        batch = self.family.pad_inputs([x["inputs"] for x in items])
        batch["labels"] = pad_labels([x["labels"] for x in items])
        return batch


def run_reference(model_dir, rows, device, workers, steps, warmup, pin: bool = True, pad_heads: bool = False) -> dict:
    import tempfile

    from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments, TrainerCallback

    model, processor, family = build(model_dir, device, pad_heads=pad_heads)
    clips, cap = BATCH[family.name]
    mean_seconds = float(np.mean([u.extra["seconds"] for u in rows]))
    batch = max(1, min(clips, int(cap // family.padded_seconds(mean_seconds))))  # the clips ours averages
    dataset = _FlacDataset(rows, processor, family)
    marks: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            import torch

            torch.cuda.synchronize() if device == "cuda" else None
            marks.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as out:
        args = Seq2SeqTrainingArguments(
            output_dir=out, per_device_train_batch_size=batch, max_steps=steps, learning_rate=1e-4,
            bf16=device == "cuda", use_cpu=device != "cuda", **_group_by_length(Seq2SeqTrainingArguments),
            dataloader_num_workers=workers, dataloader_pin_memory=device == "cuda" and pin, dataloader_prefetch_factor=4 if workers else None,
            optim="adamw_torch_fused" if device == "cuda" else "adamw_torch", eval_strategy="no", save_strategy="no",
            report_to=[], logging_steps=steps, disable_tqdm=True, remove_unused_columns=False, label_names=["labels"], seed=0)
        trainer = Seq2SeqTrainer(model=model, args=args, train_dataset=dataset, data_collator=_Collator(family), callbacks=[Clock()])
        order: list[int] = []
        trainer._get_train_sampler = _length_sampler(dataset, batch, order)
        trainer.train()
    # the audio of the timed steps: step k trained on the sampler's indices [k*batch, (k+1)*batch)
    timed = marks[warmup:]
    seconds = timed[-1] - marks[warmup - 1] if len(timed) > 1 else float("nan")
    audio = sum(dataset.lengths[i] for i in order[warmup * batch: len(marks) * batch])
    return {"audio_seconds_per_second": audio / seconds, "timed_steps": len(timed), "timed_seconds": seconds,
            "clips_per_step": batch,
            "settings": f"bf16, group_by_length, dataloader workers, {'pinned' if pin else 'pageable'} memory, adamw_torch_fused"
                        + (", attention heads padded to a multiple of 8 (pad_head_dim_to_multiple_of)" if pad_heads else "")}


REFERENCE_SIDES = ("reference", "reference_unpinned", "reference_padded_heads")


def _better_pinning(res: dict) -> bool:
    """True (pinned) unless the pageable reference side ran faster."""
    pinned, pageable = (res.get(s, {}).get("audio_seconds_per_second") or 0.0 for s in ("reference", "reference_unpinned"))
    return not pageable > pinned


def heads_need_padding(model_dir: Path) -> bool:
    """Whether the model's attention heads are padded on CUDA (the head-dim sides apply): built on the meta device."""
    import torch
    from transformers import AutoConfig, AutoModelForSpeechSeq2Seq

    with torch.device("meta"):
        model = AutoModelForSpeechSeq2Seq.from_config(AutoConfig.from_pretrained(model_dir))
    return pad_attention_heads(model) > 0


def _group_by_length(args_class) -> dict:
    """The Trainer's length grouping, as this transformers version spells it."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(args_class)}
    return {"train_sampling_strategy": "group_by_length"} if "train_sampling_strategy" in names else {"group_by_length": True}


def _length_sampler(dataset, batch, order: list[int]):
    """The Trainer's own `group_by_length` sampler (`LengthGroupedSampler`) over the clips' durations
    (it would otherwise look for a length column), recording the order it yields."""
    from transformers.trainer_pt_utils import LengthGroupedSampler

    class Recording(LengthGroupedSampler):
        def __iter__(self):
            indices = list(super().__iter__())
            order.extend(indices)
            return iter(indices)

    return lambda *args, **kwargs: Recording(batch, dataset=dataset, lengths=dataset.lengths)


def bare_loop(model_dir, rows, device, batches_wanted: int):
    """Batches made once by our loader and moved to the GPU, and one bare step over them (forward + backward +
    AdamW, bf16 autocast on CUDA): the ceiling's loop, and what the profile side looks inside."""
    import torch

    model, processor, family = build(model_dir, device, pad_heads=device == "cuda")  # the model `ours` trains
    cuda = device == "cuda"
    loader, _ = make_loader(ClipTable.from_records(rows), processor, family, None, our_options(family, 4, cuda))
    it = iter(loader)
    batches = []
    for _ in range(batches_wanted):
        b = next(it)
        tensors = family.device_features(processor, {k: v.to(device) for k, v in b.tensors.items()})
        batches.append((tensors, b.seconds))
    it._shutdown_workers()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, fused=cuda)
    model.train()
    dtype = torch.bfloat16 if cuda else torch.float32

    def step(tensors):
        with torch.autocast(device_type=device, dtype=dtype, enabled=cuda):
            loss = model(**tensors).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step, batches


def run_ceiling(model_dir, rows, device, steps, warmup) -> dict:
    """Batches made once by our loader, moved to the GPU, then only forward + backward + AdamW."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    cuda = device == "cuda"
    step, batches = bare_loop(model_dir, rows, device, min(steps, 8))
    with FlopCounterMode(display=False) as counter:
        step(batches[0][0])
    flops_per_audio_second = counter.get_total_flops() / batches[0][1]
    for i in range(warmup):
        step(batches[i % len(batches)][0])
    torch.cuda.synchronize() if cuda else None
    start, audio = time.perf_counter(), 0.0
    for i in range(steps):
        tensors, seconds = batches[i % len(batches)]
        step(tensors)
        audio += seconds
    torch.cuda.synchronize() if cuda else None
    wall = time.perf_counter() - start
    return {"audio_seconds_per_second": audio / wall, "timed_steps": steps, "timed_seconds": wall,
            "train_flops_per_audio_second": flops_per_audio_second}


def run_profile(model_dir, rows, device, steps: int = 3, warmup: int = 3, top: int = 15) -> dict:
    """`torch.profiler` over `steps` bare steps (after `warmup`): the device's busy time per step against the
    wall time (far less busy than wall: the host launching kernels is the bound, where CUDA graphs would help;
    busy throughout: the kernels themselves), and the ops that take the device's time."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    cuda = device == "cuda"
    step, batches = bare_loop(model_dir, rows, device, steps)
    for i in range(warmup):
        step(batches[i % len(batches)][0])
    torch.cuda.synchronize() if cuda else None
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        for tensors, _ in batches:
            step(tensors)
        torch.cuda.synchronize() if cuda else None
        wall = time.perf_counter() - start
    return {"steps": len(batches), "audio_seconds_per_step": float(np.mean([s for _, s in batches])),
            **_profile_summary(prof, len(batches), wall, cuda, top)}


def run_profile_ours(model_dir, rows, device, workers, warmup: int = 5, active: int = 3, top: int = 15) -> dict:
    """`torch.profiler` over `active` steps of `ours` (loader workers, our loop) after `warmup`: what the bare
    `profile` shows, plus the host's own ops (`top_by_self_cpu_time`: where the host spends a step, e.g. waiting
    on a copy or a synchronisation), to say what `ours` adds to the bare step (Whisper: 76% of the ceiling)."""
    from torch.profiler import ProfilerActivity, profile, schedule

    cuda = device == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    marks: list[float] = []  # before each micro-batch is fetched (one optimizer step each)

    with profile(activities=activities, schedule=schedule(wait=warmup, warmup=1, active=active, repeat=1)) as prof:
        def next_step():
            marks.append(time.perf_counter())
            prof.step()

        result = run_ours(model_dir, rows, device, workers, warmup + active + 2, warmup, on_next=next_step)
    first = warmup + 1  # the profiler records between the step() calls first + 1 .. first + active + 1
    wall = marks[first + active] - marks[first] if len(marks) > first + active else float("nan")
    return {"steps": active, "audio_seconds_per_step": result["mean_audio_seconds_per_step"],
            **_profile_summary(prof, active, wall, cuda, top, host_too=True)}


def _profile_summary(prof, steps: int, wall: float, cuda: bool, top: int, host_too: bool = False) -> dict:
    """Per step: wall time, the device's busy time (CUDA: its kernels' own time; a CPU: its ops'), kernels,
    and the ops that take that time; `host_too`: the host's ops by their own CPU time as well."""
    import torch

    def own(event, kind):  # self time on the device (CUDA) or host; attribute names moved across torch versions
        names = ("self_device_time_total", "self_cuda_time_total") if kind == "device" else ("self_cpu_time_total",)
        return next((getattr(event, n) for n in names if hasattr(event, n)), 0.0)

    def tops(events, kind):
        return [{"name": e.key[:120], "ms_per_step": own(e, kind) / 1e3 / steps, "calls_per_step": e.count / steps}
                for e in events[:top]]

    kind = "device" if cuda else "cpu"
    averages = prof.key_averages()
    events = [e for e in averages if own(e, kind) > 0]
    on_gpu = [getattr(e, "device_type", None) == torch.autograd.DeviceType.CUDA for e in events]
    kernels = [e for e, k in zip(events, on_gpu) if k]  # CUDA: the kernels' own time is the device's busy time
    ops = sorted((e for e, k in zip(events, on_gpu) if not k), key=lambda e: -own(e, kind))  # ops, by the time of their kernels
    busy_us = sum(own(e, kind) for e in (kernels or ops))  # (no kernel rows in this torch's averages: their ops' own time)
    summary = {"wall_ms_per_step": wall * 1e3 / steps, f"{kind}_busy_ms_per_step": busy_us / 1e3 / steps,
               "kernels_per_step": sum(e.count for e in kernels) / steps if cuda else None,
               f"top_by_self_{kind}_time": tops(ops, kind)}
    if host_too and cuda:
        host = sorted((e for e in averages if getattr(e, "device_type", None) != torch.autograd.DeviceType.CUDA),
                      key=lambda e: -own(e, "cpu"))
        summary["cpu_busy_ms_per_step"] = sum(own(e, "cpu") for e in host) / 1e3 / steps
        summary["top_by_self_cpu_time"] = tops(host, "cpu")
    return summary


def main(argv=None) -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models-dir", required=True, help="folder with <import name>/config.json + processor files")
    parser.add_argument("--speech-dir", action="append", required=True, help="real speech folder(s) with FLAC files")
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps per side (the first --warmup are not timed)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--no-warm-pass", action="store_true", help="skip the untimed pass of `ours` before each family's sides")
    parser.add_argument("--compile-warmup", type=int, default=15, help="untimed steps of the compiled side (compilation)")
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 2), help="loader workers, both sides")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--sides", default="loader,ours,ours_unpadded_heads,ours_unfolded_stem,ours_unbucketed,ours_pinned,ours_worker_features,reference,"
                        "reference_unpinned,reference_padded_heads,ceiling,profile,profile_ours,ours_cudnn_benchmark,ours_preloaded,ours_compiled")
    parser.add_argument("--prefetch", type=int, default=4, help="batches each loader worker prepares ahead")
    parser.add_argument("--output", default="benchmarks/results/gpu.json")
    parser.add_argument("--smoke", action="store_true", help="tiny batches and corpus: checks the script runs (CPU)")
    parser.add_argument("--caps", help="CLIPS,SECONDS: one micro-batch cap for every family (e.g. a CPU run's 16,60)")
    args = parser.parse_args(argv)
    PREFETCH[0] = args.prefetch
    if args.smoke:
        BATCH.update({"moonshine": (4, 40.0), "whisper": (2, 60.0)})
    if args.caps:
        clips, seconds = args.caps.split(",")
        BATCH.update({name: (int(clips), float(seconds)) for name in BATCH})
    device = "cuda" if torch.cuda.is_available() else "cpu"
    name = torch.cuda.get_device_name(0) if device == "cuda" else "CPU (smoke run: not a GPU result)"
    peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
    rows = corpus([Path(d) for d in args.speech_dir], 200 if args.smoke else 40_000)
    summary = {"device": name, "weights": "random-initialised from the imported configs (speed does not depend on values)",
               "data": f"{len(rows)} rows repeating the real FLAC clips >= {MIN_CLIP_SECONDS} s of {args.speech_dir}",
               "workers": args.workers, "steps": args.steps, "warmup_steps": args.warmup,
               "torch": torch.__version__, "results": {}}
    for model_name in args.models.split(","):
        model_dir = Path(args.models_dir) / model_name
        res = summary["results"][model_name] = {}
        if not args.no_warm_pass:
            log(f"{model_name} warm pass (untimed) ...")
            res["warm_pass"] = run_ours(model_dir, rows, device, args.workers, args.steps, args.warmup)
            log(f"{model_name} warm pass: {res['warm_pass']['audio_seconds_per_second']:.0f} audio s/s (not compared)")
        for side in args.sides.split(","):
            log(f"{model_name} {side} ...")
            try:
                if side == "ours":
                    res[side] = run_ours(model_dir, rows, device, args.workers, args.steps, args.warmup)
                elif side == "ours_unbucketed":  # micro-batches padded to their longest only (the A/B of length buckets)
                    res[side] = run_ours(model_dir, rows, device, args.workers, args.steps, args.warmup, buckets=False)
                elif side == "ours_worker_features":  # the loader before PCM16 hand-over: features (+ int64 mask) made in the workers
                    res[side] = run_ours(model_dir, rows, device, args.workers, args.steps, args.warmup, on_device=False)
                elif side == "ours_pinned":  # the DataLoader's pinning thread on (off by default; RESULTS.md: not shown slower)
                    res[side] = run_ours(model_dir, rows, device, args.workers, args.steps, args.warmup, pin=True)
                elif side == "ours_compiled":
                    res[side] = run_ours(model_dir, rows, device, args.workers, args.steps + args.compile_warmup, args.compile_warmup,
                                         compile_model=True)
                elif side == "loader":
                    res[side] = run_loader(model_dir, rows, device, args.workers, args.steps, args.warmup)
                elif side == "ours_preloaded":
                    res[side] = run_ours_preloaded(model_dir, rows, device, args.workers, args.steps, args.warmup)
                elif side == "ours_preloaded_compiled":
                    res[side] = run_ours_preloaded(model_dir, rows, device, args.workers, args.steps + args.compile_warmup,
                                                   args.compile_warmup, compile_model=True)
                elif side == "reference":
                    res[side] = run_reference(model_dir, rows, device, args.workers, args.steps, args.warmup)
                elif side == "ours_cudnn_benchmark":  # cuDNN tries its algorithms per shape (the bucket ladder repeats shapes)
                    torch.backends.cudnn.benchmark = True
                    try:
                        res[side] = run_ours(model_dir, rows, device, args.workers, args.steps, args.warmup)
                    finally:
                        torch.backends.cudnn.benchmark = False
                elif side == "profile":
                    res[side] = run_profile(model_dir, rows, device)
                elif side == "profile_ours":
                    res[side] = run_profile_ours(model_dir, rows, device, args.workers, warmup=min(args.warmup, 5))
                elif side == "reference_unpinned":
                    res[side] = run_reference(model_dir, rows, device, args.workers, args.steps, args.warmup, pin=False)
                elif side in ("ours_unpadded_heads", "reference_padded_heads") and not heads_need_padding(model_dir):
                    res[side] = {"skipped": "attention heads already a multiple of 8 wide, or no head-dim padding option"}
                elif side == "ours_unfolded_stem":  # Moonshine's raw-audio first convolution as one GEMM (the A/B)
                    res[side] = run_ours(model_dir, rows, device, args.workers, args.steps, args.warmup, unfold_stem=True)
                elif side == "ours_unpadded_heads":  # the A/B of the head-dim padding `lora train` does on CUDA
                    res[side] = run_ours(model_dir, rows, device, args.workers, args.steps, args.warmup, pad_heads=False)
                elif side == "reference_padded_heads":  # transformers' own option, as a user at their best would set it,
                    pin = _better_pinning(res)          # with the pinning that did better above
                    res[side] = run_reference(model_dir, rows, device, args.workers, args.steps, args.warmup, pin=pin, pad_heads=True)
                else:
                    res[side] = run_ceiling(model_dir, rows, device, args.steps, args.warmup)
            except Exception as exc:  # one failing side must not lose the others' figures
                res[side] = {"error": f"{type(exc).__name__}: {exc}"}
            log(f"{model_name} {side}: {res[side]}")
            write_json_atomic(args.output, summary)  # after every side: a time-out still leaves results
            torch.cuda.empty_cache() if device == "cuda" else None
        ours, ceil = (res.get(s, {}).get("audio_seconds_per_second") for s in ("ours", "ceiling"))
        refs = [res.get(s, {}).get("audio_seconds_per_second") for s in REFERENCE_SIDES]
        ref = max((r for r in refs if r), default=None)  # the reference at its best of its sides
        if ours and ref:
            res["reference_best"] = ref
            res["ours_vs_reference"] = ours / ref
        if ours and ceil:
            res["ours_vs_ceiling"] = ours / ceil
        comp = res.get("ours_compiled", {}).get("audio_seconds_per_second")
        if comp and ref:
            res["ours_compiled_vs_reference"] = comp / ref
        pre = res.get("ours_preloaded", {}).get("audio_seconds_per_second")
        pre_comp = res.get("ours_preloaded_compiled", {}).get("audio_seconds_per_second")
        if pre and pre_comp:
            res["preloaded_compiled_vs_preloaded"] = pre_comp / pre
        if pre and ceil:
            res["preloaded_loop_vs_ceiling"] = pre / ceil
        flops = res.get("ceiling", {}).get("train_flops_per_audio_second")
        if flops and peak and ours:
            res["mfu_ours"] = ours * flops / (peak * 1e12)
            res["mfu_ceiling"] = ceil * flops / (peak * 1e12)
        write_json_atomic(args.output, summary)  # after every family: a time-out still leaves results
    write_text_atomic(Path(args.output).with_suffix(".md"), markdown(summary))
    print(markdown(summary))
    return 0


def markdown(summary: dict) -> str:
    lines = [f"# GPU training throughput ({summary['device']})", "",
             f"{summary['weights']}; {summary['data']}; {summary['workers']} loader workers; {summary['steps']} steps per side "
             f"({summary['warmup_steps']} warm-up steps not timed); torch {summary['torch']}.", "",
             "| model | ours (audio s/s) | Seq2SeqTrainer+PEFT best (audio s/s) | ours / reference | bare-loop ceiling | ours / ceiling | MFU ours | MFU ceiling | loader alone | ours, pinning thread | ours, features made in the workers | ours compiled | compiled / reference |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def f(x, fmt="{:,.0f}"):
        return "n/a" if x is None else fmt.format(x)

    notes = []  # below the table

    for model, r in summary["results"].items():
        lines.append(f"| {model} | {f(r.get('ours', {}).get('audio_seconds_per_second'))} | "
                     f"{f(r.get('reference_best'))} | {f(r.get('ours_vs_reference'), '{:.2f}x')} | "
                     f"{f(r.get('ceiling', {}).get('audio_seconds_per_second'))} | {f(r.get('ours_vs_ceiling'), '{:.2f}')} | "
                     f"{f(r.get('mfu_ours'), '{:.1%}')} | {f(r.get('mfu_ceiling'), '{:.1%}')} | "
                     f"{f(r.get('loader', {}).get('audio_seconds_per_second'))} | "
                     f"{f(r.get('ours_pinned', {}).get('audio_seconds_per_second'))} | "
                     f"{f(r.get('ours_worker_features', {}).get('audio_seconds_per_second'))} | "
                     f"{f(r.get('ours_compiled', {}).get('audio_seconds_per_second'))} | {f(r.get('ours_compiled_vs_reference'), '{:.2f}x')} |")
        for side in ("ours_compiled", "ours_preloaded_compiled"):
            comp = r.get(side, {})
            if "graphs" in comp:
                notes.append(f"{model} {side}: {comp['graphs']} graph(s), {comp['graph_breaks']} graph break(s); its untimed "
                             f"steps (compilation) took {f(comp.get('untimed_seconds'), '{:.0f}')} s")
                notes += [f"{model} {side} graph break x{n}: {reason}" for reason, n in comp.get("graph_break_reasons", {}).items()]
        if "audio_seconds_per_second" in r.get("ours_unbucketed", {}):
            notes.append(f"{model} ours without length buckets (each micro-batch padded to its longest): "
                         f"{f(r['ours_unbucketed']['audio_seconds_per_second'])} audio s/s")
        if "audio_seconds_per_second" in r.get("ours_unfolded_stem", {}):
            notes.append(f"{model} ours with the first convolution unfolded into one GEMM: "
                         f"{f(r['ours_unfolded_stem']['audio_seconds_per_second'])} audio s/s")
        if "audio_seconds_per_second" in r.get("ours_unpadded_heads", {}):
            notes.append(f"{model} ours without the attention heads' zero padding: "
                         f"{f(r['ours_unpadded_heads']['audio_seconds_per_second'])} audio s/s")
        refs = {s: r[s]["audio_seconds_per_second"] for s in REFERENCE_SIDES if "audio_seconds_per_second" in r.get(s, {})}
        if len(refs) > 1:
            notes.append(f"{model} reference sides: " + ", ".join(f"{s} {f(v)}" for s, v in refs.items()) + " audio s/s")
        if "audio_seconds_per_second" in r.get("ours_cudnn_benchmark", {}):
            notes.append(f"{model} ours with cudnn.benchmark: {f(r['ours_cudnn_benchmark']['audio_seconds_per_second'])} audio s/s")
        for side, what in (("profile", "the bare step"), ("profile_ours", "ours")):
            prof = r.get(side, {})
            if "wall_ms_per_step" in prof:
                kind = "device" if "device_busy_ms_per_step" in prof else "cpu"
                tops = "; ".join(f"{o['name']} {o['ms_per_step']:.1f} ms" for o in prof[f"top_by_self_{kind}_time"][:8])
                notes.append(f"{model} profile of {what} ({prof['audio_seconds_per_step']:.0f} audio s): "
                             f"{prof['wall_ms_per_step']:.1f} ms wall, {prof[f'{kind}_busy_ms_per_step']:.1f} ms {kind} busy; top: {tops}")
                if kind == "device" and "top_by_self_cpu_time" in prof:
                    host = "; ".join(f"{o['name']} {o['ms_per_step']:.1f} ms" for o in prof["top_by_self_cpu_time"][:8])
                    notes.append(f"{model} profile of {what}, host: {prof['cpu_busy_ms_per_step']:.1f} ms busy; top: {host}")
        if "preloaded_compiled_vs_preloaded" in r:
            notes.append(f"{model} over the same 8 preloaded batches: {f(r['ours_preloaded']['audio_seconds_per_second'])} audio s/s "
                         f"eager, {f(r['ours_preloaded_compiled']['audio_seconds_per_second'])} compiled "
                         f"({r['preloaded_compiled_vs_preloaded']:.2f}x)")
        for side, outcome in r.items():
            if isinstance(outcome, dict) and "error" in outcome:
                notes.append(f"{model} {side} failed: {r[side]['error']}")
    return "\n".join(lines + [f"\n{n}" for n in notes]) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
