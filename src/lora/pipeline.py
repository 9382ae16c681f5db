"""The stages of a run, as named functions every runner, recipe, benchmark and test calls:

    start        accelerator, precision, seed
    select_data  sources -> checked records -> speaker-disjoint train / eval / replay, canary
                 (before the model: a large corpus's records come and go before the weights arrive)
    load_model   resolve --model-id, load the base model, processor and family
    train_batches  the training rows as a streaming batch source (workers decode as it trains)
    style_targets  "styled" policy: base-model casing/punctuation carried onto unstyled training references
    eval_sets    eval / WER / canary examples (small: prepared in memory)
    measure      eval loss + WER (+ canary) of the model as it is
    attach       LoRA on the target modules
    train        optimizer steps over the batch source
    save         lora_adapter/ (PEFT, safetensors) and processor/
    metrics      the typed `RealMetrics` of the run
    report       real_metrics.json, report.md/html, plots

This file knows the order of the stages, not how any stage works inside.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import logging
import math
import signal
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import timedelta
from pathlib import Path

from lora import prepared_rows_cache
from lora.checkpoint import check_resumable, finished_length, interrupted_at, read_state
from lora.clustered_bootstrap import clustered_paired_bootstrap
from lora.core.cli import setup_logging
from lora.core.errors import Interrupted, UserError
from lora.core.hub import hub_reachable
from lora.core.memory import allocator_in_use, bound_kernel_cache, jemalloc_path
from lora.core.outputs import library_versions, peak_rss_children_mb, peak_rss_mb, write_json_atomic, write_text_atomic
from lora.core.paths import default_speech_dir
from lora.core.precision import resolve_precision
from lora.data.clip_joining import with_joined_clips
from lora.data.manifest import BadRow
from lora.data.preflight import write_quarantine
from lora.data.records import Utterance
from lora.data.resolve import DataChoice, TrainEvalData, resolve_data
from lora.data.selection import check_leakage, mix_replay, replay_mask
from lora.data.sources import canary_utterances, read_manifest_rows
from lora.data_loader import ClipTable, Example, LoaderOptions, default_num_workers, prepare_dataset, record_seconds
from lora.decoding import assess, transcribe_examples
from lora.evaluation import bootstrap_wer_ci, compare, paired_bootstrap, summarize_losses
from lora.families import family_for
from lora.model_utils import (
    ResolvedModel,
    attach_lora,
    attention_head_padding,
    base_model_view,
    eager_module,
    evaluating,
    load_base,
    pad_attention_heads,
    resolve_model_id,
    save_adapter,
    save_processor,
)
from lora.report.content import write_report
from lora.results import CanaryResult, RealMetrics, ScaleFacts, TargetStyle, WerChange, read_result, to_dict
from lora.style_metrics import forgetting_verdict, length_ratios, raw_insertions
from lora.styled_targets import DrawStyler, TranscriptCache, attach_original_text, own_text, style_rows, style_scores
from lora.term_recall import read_terms, term_result
from lora.tracking import Tracker
from lora.training import BatchSource, TrainResult, opened_now, streaming_source, train_lora
from lora.training_config import TrainConfig, split_csv

log = logging.getLogger("lora")

# Under several processes the others wait in DDP's first broadcast while the main process measures
# the baseline (and the canary) alone. torch's default collective timeout (10 min NCCL, 30 min gloo)
# is shorter than a large baseline on CPU, so the wait gets this instead.
COLLECTIVE_TIMEOUT_S = 3 * 3600
# Above this many training rows, train_ids are not listed in the metrics (only counted): the file
# would be megabytes of ids.
MAX_LISTED_IDS = 20_000


@dataclass
class Session:
    accelerator: object
    precision: str
    precision_note: str | None
    started: float  # time.perf_counter() at the start of the run
    cpu: bool
    baseline_seconds: float = 0.0  # time spent measuring the baseline after training (set by `measure_baseline`)
    stage_seconds: dict[str, float] = field(default_factory=dict)  # `mark`: wall seconds per stage
    stage_peak_rss_mb: dict[str, float] = field(default_factory=dict)  # `mark`: peak RSS when it ended
    _last_mark: float | None = None

    def mark(self, stage: str) -> None:
        """Record that `stage` just ended: its wall time (since the previous mark, or the run's start) and peak RSS."""
        now = time.perf_counter()
        self.stage_seconds[stage] = now - (self._last_mark if self._last_mark is not None else self.started)
        self.stage_peak_rss_mb[stage] = peak_rss_mb()
        self._last_mark = now


@dataclass
class LoadedModel:
    resolved: ResolvedModel
    model: object
    processor: object
    family: object


@dataclass
class TrainSummary:
    """What the metrics and the adapter record about the training rows, taken before the rows
    themselves are handed to the loader (and let go: a large corpus is not kept twice)."""

    ids: list[str]  # listed up to MAX_LISTED_IDS rows, else empty
    speakers: list[str]
    replay_ids: list[str]
    joined: int  # joined-clip rows added (`--join-clips`)
    rows: int
    seconds: float


@dataclass
class SelectedData:
    data: TrainEvalData
    canary: list[Utterance]
    leaks: dict
    train_rows: list[Utterance]  # training rows after clip joining and replay mixing (emptied by train_batches)
    summary: TrainSummary
    table: ClipTable | None = None  # the training rows as columns (set by train_batches, or read from the cache)
    style: TargetStyle | None = None  # set by style_targets (or read from the cache)
    style_model: str = ""  # the base model the targets were styled with
    cache_key: str | None = None  # the prepared-rows cache entry these rows are (or will be) stored under
    from_cache: bool = False  # read from the prepared-rows cache (lora.prepared_rows_cache)
    prepared_by_child: bool = False  # that cache entry was written by this run's own child process (`prepared_in_child`)


@dataclass
class EvalSets:
    eval: list[Example]
    wer: list[Example]
    canary: list[Example]
    terms: tuple[str, ...] = ()  # --terms: the vocabulary whose recall is measured on `wer`


@dataclass
class Measurement:
    """eval loss + WER of one model state on the eval set, and on the canary."""

    eval: dict
    canary: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# stages


def start(cfg: TrainConfig, cpu: bool, started: float | None = None) -> Session:
    """The accelerator (one process or several), mixed precision chosen for the device, the seed."""
    bound_kernel_cache()  # before the first CPU kernel is built (lora.core.memory)
    allocator = allocator_in_use()
    note = ("" if allocator == "jemalloc" else
            " (jemalloc is installed: lora train, lora digits and train_real_small.py use it unless LORA_ALLOCATOR=glibc)" if jemalloc_path() else
            " (jemalloc keeps peak RSS lower: apt-get install libjemalloc2)")
    log.info("memory allocator: %s%s", allocator, note)
    from accelerate import Accelerator  # deferred: heavy
    from accelerate.utils import InitProcessGroupKwargs, set_seed

    precision, note = resolve_precision(cfg.mixed_precision, cpu)
    _forget_earlier_precision(precision)
    accelerator = Accelerator(gradient_accumulation_steps=cfg.gradient_accumulation_steps, mixed_precision=precision, cpu=cpu,
                              kwargs_handlers=[InitProcessGroupKwargs(timeout=timedelta(seconds=COLLECTIVE_TIMEOUT_S))])
    if not accelerator.is_main_process:
        log.setLevel(logging.WARNING)  # N copies of every info line say nothing more than one
    elif note:
        log.warning("mixed precision: %s", note)
    set_seed(cfg.seed)
    return Session(accelerator, precision, note, started if started is not None else time.perf_counter(), cpu)


def _forget_earlier_precision(precision: str) -> None:
    """A second run in one Python process (the Python API, a notebook, the tests) may ask for another precision
    than the first: accelerate keeps the first's in a process-wide singleton and refuses any other ("AcceleratorState
    has already been initialized and cannot be changed"). In one process that state holds nothing else a run
    needs, so it is reset (accelerate's own tests do the same); under several processes it is left alone, where
    every run of the launch shares the precision the launcher set."""
    from accelerate.state import AcceleratorState, PartialState  # deferred: heavy

    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision") not in (None, precision) and PartialState().num_processes == 1:
        AcceleratorState._reset_state(reset_partial_state=False)


def load_model(cfg: TrainConfig, session: Session | None = None) -> LoadedModel:
    """Resolve `--model-id` and load it. Under several processes the main process converts an
    imported model first (a shared cache), then each machine's first process, then the rest load it."""
    if session is None:
        resolved = resolve_model_id(cfg.model_id)
        return LoadedModel(resolved, *load_base(resolved))
    accelerator = session.accelerator
    with accelerator.main_process_first(), accelerator.local_main_process_first():
        resolved = resolve_model_id(cfg.model_id)
        model, processor, family = load_base(resolved)  # transformers picks SDPA attention where the model has it
    if accelerator.device.type == "cuda" and model.config._attn_implementation == "sdpa":
        added = pad_attention_heads(model)  # Moonshine's 52-wide heads: the masked SDPA kernel, not the float32 math one
        if added:
            log.info("attention heads zero-padded by %d columns for CUDA's memory-efficient SDPA kernel (exact)", added)
    return LoadedModel(resolved, model, processor, family)


def select_data(cfg: TrainConfig, use_hub: bool = True, dataset=None) -> SelectedData:
    """Train / eval / replay rows (speaker-disjoint, leakage refused) and the canary; for a large
    manifest read before with the same options, from the prepared-rows cache (`--prepared-cache`).

    `dataset` (Python API) is a `datasets.Dataset` / `IterableDataset` / `DatasetDict` object used
    instead of `cfg.dataset`, read with `cfg.audio_column` / `text_column` / `speaker_column` /
    `dataset_split`: e.g. `select_data(cfg, dataset=load_dataset("audiofolder", data_dir="data/af")["train"])`.
    Its rows go through the same preflight and quarantine as files and then the same streaming loader.
    """
    key = _prepared_key(cfg) if dataset is None else None
    cached = prepared_rows_cache.load(key) if key else None
    if cached is not None:
        return _from_cache(cached, key, cfg)
    if key and _large_manifest(Path(cfg.manifest)):
        cached = prepared_in_child(cfg, key)
        if cached is not None:
            return replace(_from_cache(cached, key, cfg), prepared_by_child=True)
    return _read_rows(cfg, use_hub, dataset, key)


def _read_rows(cfg: TrainConfig, use_hub: bool, dataset, key: str | None) -> SelectedData:
    """`select_data` in this process: read, check and select the rows (no prepared-rows cache involved)."""
    chosen = dataset if dataset is not None else cfg.dataset
    local = bool(cfg.data_dir or cfg.manifest or chosen is not None)
    data = resolve_data(
        DataChoice(cfg.train_split, cfg.data_dir, cfg.manifest, cfg.training_rows, cfg.eval_rows, cfg.seed,
                   split_csv(cfg.train_speakers), split_csv(cfg.eval_speakers), use_hub=use_hub,
                   replay_subsets=split_csv(cfg.replay_subsets), allow_shared_speakers=cfg.allow_shared_speakers,
                   eval_manifest=cfg.eval_manifest,
                   quarantine_path=str(Path(cfg.output_dir) / "quarantine.jsonl"),
                   dataset=chosen, audio_column=cfg.audio_column, text_column=cfg.text_column,
                   speaker_column=cfg.speaker_column, dataset_split=cfg.dataset_split),
        hub_ok=hub_reachable() if use_hub and not local else False,
    )
    leaks = check_leakage(data.train, data.eval, cfg.allow_shared_speakers, cfg.allow_shared_text)
    if cfg.canary:
        canary = read_manifest_rows(cfg.canary)
    else:
        seen = data.train + data.replay + data.eval
        canary = canary_utterances(Path(cfg.data_dir) if cfg.data_dir else default_speech_dir(), seen, cfg.canary_samples, cfg.seed)
    root = Path(cfg.data_dir) if cfg.data_dir else default_speech_dir()
    attach_original_text(data.train + data.replay + data.eval + canary, root)  # LJSpeech/JFK case + punctuation
    joined = with_joined_clips(data.train, cfg.join_clips, cfg.seed)
    train_rows = mix_replay(joined, data.replay, cfg.replay_share)
    trained = data.train + data.replay
    summary = TrainSummary(
        ids=[u.id for u in trained] if len(trained) <= MAX_LISTED_IDS else [],
        speakers=sorted({u.speaker for u in trained}), replay_ids=[u.id for u in data.replay][:MAX_LISTED_IDS],
        joined=len(joined) - len(data.train), rows=len(train_rows), seconds=sum(record_seconds(u) for u in train_rows))
    return SelectedData(data, canary, leaks, train_rows, summary, cache_key=key if len(train_rows) >= prepared_rows_cache.MIN_ROWS else None)


# What decides a run's rows and their targets (the prepared-rows cache key; `output_dir` only says where
# the quarantine list goes, and is not among them).
PREPARED_OPTIONS = ("manifest", "train_split", "training_rows", "eval_rows", "eval_manifest", "seed", "train_speakers", "eval_speakers",
                    "canary", "canary_samples", "allow_shared_speakers", "allow_shared_text", "replay_subsets",
                    "replay_share", "join_clips", "target_policy", "style_consensus", "style_on_draw", "model_id")


def _prepared_key(cfg: TrainConfig) -> str | None:
    """The cache key of a manifest run's prepared rows; None where the cache does not apply (off, no
    manifest file, a folder or dataset as the source: their contents have no single size and mtime)."""
    if not (cfg.prepared_cache and cfg.manifest and Path(cfg.manifest).is_file()) or cfg.data_dir or cfg.dataset is not None:
        return None
    speech = default_speech_dir()
    settings = {name: getattr(cfg, name) for name in PREPARED_OPTIONS} | {"speech_dir": str(speech)}
    transcripts = [speech / "manifest.jsonl"] + sorted(speech.glob("*/*/*/*.trans.txt")) if speech else []
    return prepared_rows_cache.cache_key(settings, [cfg.manifest, cfg.canary, cfg.eval_manifest, *transcripts])


def _from_cache(cached: prepared_rows_cache.PreparedRows, key: str, cfg: TrainConfig) -> SelectedData:
    if cached.quarantine is not None:  # this run's folder gets the list preflight wrote for these rows
        write_text_atomic(Path(cfg.output_dir) / "quarantine.jsonl", cached.quarantine)
    log.info("data: %d training rows (%.1f h) read from the prepared-rows cache (%s); --no-prepared-cache reads the manifest "
             "again", len(cached.table), cached.table.hours, key)
    data = TrainEvalData([], cached.eval, cached.source, cached.replay)
    return SelectedData(data, cached.canary, cached.leaks, [], TrainSummary(**cached.summary), table=cached.table,
                        style=cached.style, style_model=cached.style_model, cache_key=key, from_cache=True)


# A manifest of at least this many lines, of short lines (paths, not inline samples), is prepared in a child
# process on its first run (`prepared_in_child`).
CHILD_MIN_LINES = prepared_rows_cache.MIN_ROWS
CHILD_MAX_LINE_BYTES = 2048


def _large_manifest(path: Path) -> bool:
    """At least CHILD_MIN_LINES lines of CHILD_MAX_LINE_BYTES or less on average (counted in one pass over the bytes)."""
    lines = size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            lines += chunk.count(b"\n")
            size += len(chunk)
    return lines >= CHILD_MIN_LINES and size <= lines * CHILD_MAX_LINE_BYTES


def prepared_in_child(cfg: TrainConfig, key: str) -> prepared_rows_cache.PreparedRows | None:
    """The first run over a large manifest reads, checks, selects and styles its rows in a child process,
    which writes them to the prepared-rows cache; this process then reads that entry, as a second run would.

    Why: the process that parses a large manifest keeps the parse's Python heap after the rows become
    `ClipTable` columns (100 h, 724,245 rows, jemalloc: 883 MB after reading the rows against 607 MB when
    they come from the cache, and a 2-step run's peak 2,168 against 2,017 MB), and the training peak then
    carries it. A child's heap goes when it exits. None (the caller reads the rows itself) where the child
    failed or wrote nothing; a bad manifest then gets its one-line error from this process.
    Several processes (torchrun / accelerate) each read their rows themselves, as before.
    """
    import multiprocessing
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return None
    started = time.perf_counter()
    child = multiprocessing.get_context("spawn").Process(target=_prepare_rows_child, args=(cfg, prepared_rows_cache.MIN_ROWS),
                                                         name="lora-prepare-rows")
    child.start()
    child.join()
    cached = prepared_rows_cache.load(key) if child.exitcode == 0 else None
    if cached is None:
        log.info("preparing the rows in a child process did not finish (exit %s); reading them here", child.exitcode)
    else:
        log.info("rows prepared in a child process in %.1f s", time.perf_counter() - started)
    return cached


class _ModelOnDemand:
    """What `style_targets` reads of a `LoadedModel`, the weights loaded only if a clip must be transcribed."""

    def __init__(self, cfg: TrainConfig):
        self.resolved = resolve_model_id(cfg.model_id)
        self._loaded: tuple | None = None

    def _load(self) -> tuple:
        if self._loaded is None:
            self._loaded = load_base(self.resolved)
        return self._loaded

    @property
    def model(self):
        return self._load()[0]

    @property
    def processor(self):
        return self._load()[1]

    @property
    def family(self):
        if self._loaded is not None:
            return self._loaded[2]
        from transformers import AutoConfig  # deferred: heavy, and only its config is needed here

        return family_for(AutoConfig.from_pretrained(self.resolved.path).model_type)


def _prepare_rows_child(cfg: TrainConfig, min_rows: int) -> None:
    """In the child: the rows as `select_data` + `style_targets` + `train_batches` would prepare them, into the cache
    (`min_rows`: the parent's caching threshold, which a fresh interpreter would not otherwise share)."""
    import os

    setup_logging(cfg.quiet)
    prepared_rows_cache.MIN_ROWS = min_rows
    try:
        selected = _read_rows(cfg, use_hub=False, dataset=None, key=_prepared_key(cfg))
        style_targets(selected, _ModelOnDemand(cfg), cfg)
        selected.table = ClipTable.from_records(selected.train_rows)
        if selected.cache_key:
            _save_prepared(selected, cfg)
    except BaseException as exc:  # noqa: BLE001 - the parent reads the rows itself and reports any error in one line
        if isinstance(exc, UserError):  # bad input: the parent meets it again and says so in its one line
            log.debug("preparing the rows in a child process: %s", exc, exc_info=True)
        else:
            log.warning("preparing the rows in a child process failed (%s: %s); the run reads them itself",
                        type(exc).__name__, exc)
            log.debug("the child's traceback", exc_info=True)
        sys.stderr.flush()
        os._exit(1)


def loader_options(cfg: TrainConfig, device_type: str) -> LoaderOptions:
    workers = default_num_workers() if cfg.num_workers < 0 else cfg.num_workers
    cuda = device_type == "cuda"
    # Not pinned (the DataLoader's pinning thread off). The A/B that chose this (H200: Whisper tiny.en
    # 3,379 -> 5,645 audio s/s without it, benchmarks/results/gpu_pinning_ab.json) ran the pinned side
    # first, and the first side a process runs was later measured 10-40% slower whatever it was
    # (gpu_order.json), so neither setting is shown faster; the loop waited under 2 ms per step either way.
    return LoaderOptions(cfg.clips_per_batch, cfg.max_batch_seconds, cfg.seed, workers, pin_memory=False, features_on_device=cuda,
                         length_buckets=cfg.length_buckets and cfg.max_batch_seconds > 0)


STYLE_CHUNK = 256  # clips featurised at once for the base transcripts (Whisper's log-mels are ~1 MB each)
# --style-on-draw auto: more distinct clips to style than this are styled as training draws them. Up front,
# 256 clips cost ~10 s on 2 CPU cores (Moonshine base; benchmarks/results/styling_pass_cold_cache.json: 2,412 in 91 s).
STYLE_ON_DRAW_OVER = 256


def style_targets(selected: SelectedData, lm: LoadedModel, cfg: TrainConfig) -> TargetStyle:
    """Under the "styled" policy (`--target-policy styled`), give each training row whose reference lacks style the base
    model's casing and punctuation (`lora.styled_targets`; transcripts cached per model under $LORA_HOME).
    Runs on the base model, before LoRA is attached; replay and joined rows included."""
    policy = cfg.target_policy or lm.family.target_policy
    r = lm.resolved
    model_key = f"{r.model_id_used}@{r.path}" if policy == "styled" else ""
    if selected.prepared_by_child and selected.style.policy == policy and selected.style_model == model_key:
        return selected.style  # styled in this run, by its child: its figures stand
    if selected.from_cache:
        if selected.style.policy == policy and selected.style_model == model_key:
            # nothing to transcribe or align: the cached targets are this model's
            selected.style = dataclasses.replace(selected.style, transcribed=0, seconds=0.0,
                                                 cache_hits=selected.style.styled_rows - selected.style.pending_rows)
            return selected.style
        log.info("prepared-rows cache: styled for %s (%s), not %s (%s); preparing the rows again",
                 selected.style_model or "no model", selected.style.policy, model_key or "no model", policy)
        fresh = select_data(replace(cfg, prepared_cache=False))
        for f in dataclasses.fields(fresh):  # in place: the caller holds `selected`; the entry is rewritten under its key
            if f.name != "cache_key":
                setattr(selected, f.name, getattr(fresh, f.name))
    selected.style_model = model_key
    if policy != "styled":
        selected.style = TargetStyle(policy=policy)
        return selected.style

    def transcribe(rows: list[Utterance]) -> list[str]:
        out: list[str] = []
        for i in range(0, len(rows), STYLE_CHUNK):
            examples = prepare_dataset(rows[i:i + STYLE_CHUNK], lm.processor, lm.family, "raw")
            out += transcribe_examples(lm.model, lm.processor, lm.family, examples, cfg.eval_batch_size)
        return out

    on_draw_over = {"yes": 0, "no": None}.get(cfg.style_on_draw, STYLE_ON_DRAW_OVER)
    started = time.perf_counter()
    style = style_rows(selected.train_rows, transcribe, TranscriptCache(model_key), consensus=cfg.style_consensus,
                       on_draw_over=on_draw_over)
    style = dataclasses.replace(style, seconds=time.perf_counter() - started)
    selected.style = style
    log.info("styled targets: %d of %d rows given the base model's style (word coverage %s; %d given the most common style of "
             "their text), %d with their own", style.styled_rows, style.rows,
             "n/a" if style.coverage is None else f"{style.coverage:.1%}", style.consensus_rows, style.own_style_rows)
    return style


def one_clip_batches(options: LoaderOptions, batches_per_epoch: int, seconds, family) -> str | None:
    """What to say when `--max-batch-seconds` holds no two clips (every micro-batch one clip), else None."""
    if options.max_batch_seconds <= 0 or options.batch_size < 2 or len(seconds) < 2 or batches_per_epoch < len(seconds):
        return None
    shortest = family.padded_seconds(float(min(seconds)))
    return (f"--max-batch-seconds {options.max_batch_seconds:g} holds no two clips (the shortest is {shortest:.1f} s as "
            f"{family.name} pads it): every micro-batch is one clip; raise it to at least {2 * shortest:g} to batch them")


def train_batches(selected: SelectedData, lm: LoadedModel, cfg: TrainConfig, options: LoaderOptions) -> tuple[BatchSource, ClipTable]:
    """The training rows as compact columns, streamed through the loader's workers; a large corpus's
    prepared rows are written to the prepared-rows cache here (the next run with the same options reads them)."""
    if selected.table is None:
        selected.table = ClipTable.from_records(selected.train_rows)
        selected.train_rows, selected.data.train = [], []  # the table holds them now, in a fraction of the memory
        gc.collect()
        if selected.cache_key and selected.style is not None:
            _save_prepared(selected, cfg)
    table = selected.table
    policy = cfg.target_policy or lm.family.target_policy
    source = streaming_source(table, lm.processor, lm.family, policy, options)
    warning = one_clip_batches(options, source.batches_per_epoch, table.seconds, lm.family)
    if warning:
        log.warning("warning: %s", warning)
    if cfg.replay_distillation > 0:  # the rows the distillation to the base model applies to
        source.base_rows = replay_mask((table.ids[i] for i in range(len(table))), selected.data.replay)
    if policy == "styled" and selected.style is not None and selected.style.on_draw:
        styler = DrawStyler(table, TranscriptCache(selected.style_model), functools.partial(_transcribe_drawn, lm, cfg),
                            functools.partial(lm.family.label_ids, lm.processor.tokenizer, policy=policy), options.length_buckets)
        if styler.pending_rows:
            log.info("styled targets: %d rows (%d clips) are styled as training first draws them", styler.pending_rows,
                     len(styler.key_names) - len(styler.transcripts))
            source.styler = styler
    return source, table


def stream_opened(source: BatchSource, cfg: TrainConfig, session: Session) -> BatchSource:
    """`source` with this process's stream opened now (`opened_now`): the workers load while the model is made
    ready. Not on --resume, where the checkpoint says at which micro-batch the stream starts."""
    if cfg.resume:
        return source
    return opened_now(source, session.accelerator.process_index, session.accelerator.num_processes)


def _transcribe_drawn(lm: LoadedModel, cfg: TrainConfig, rows: list[Utterance], model) -> list[str]:
    """Base transcripts of clips a training micro-batch drew (`DrawStyler`): the model in training with its
    adapters off, in eval mode, as the styling pass before training would have transcribed them."""
    examples = prepare_dataset(rows, lm.processor, lm.family, "raw")
    with evaluating(model), base_model_view(model):
        return transcribe_examples(model, lm.processor, lm.family, examples, cfg.eval_batch_size, progress=False)


def styled_in_training(style: TargetStyle | None, source: BatchSource) -> TargetStyle | None:
    """The run's target-style figures with the rows `DrawStyler` styled during training (this process's)."""
    styler = getattr(source, "styler", None)
    return styler.summary(style) if styler is not None and style is not None else style


def _save_prepared(selected: SelectedData, cfg: TrainConfig) -> None:
    quarantine = Path(cfg.output_dir) / "quarantine.jsonl"
    prepared = prepared_rows_cache.PreparedRows(selected.table, selected.data.eval, selected.data.replay, selected.canary, selected.data.source,
                            selected.leaks, asdict(selected.summary), selected.style, selected.style_model,
                            quarantine.read_text(encoding="utf-8") if quarantine.is_file() else None)
    where = prepared_rows_cache.save(selected.cache_key, prepared)
    if where is not None:
        log.info("prepared rows cached: %s (a second run with the same manifest and options starts from it)", where)


def eval_sets(selected: SelectedData, lm: LoadedModel, cfg: TrainConfig) -> EvalSets:
    policy = cfg.target_policy or lm.family.target_policy
    eval_examples = prepare_dataset(selected.data.eval, lm.processor, lm.family, policy)
    canary = prepare_dataset(selected.canary, lm.processor, lm.family, policy)
    wer = eval_examples[: cfg.wer_batches * cfg.eval_batch_size] if cfg.wer_batches else eval_examples
    return EvalSets(eval_examples, wer, canary, read_terms(cfg.terms) if cfg.terms else ())


def measure(lm: LoadedModel, model, sets: EvalSets, cfg: TrainConfig) -> Measurement:
    result = assess(model, lm.processor, lm.family, sets.eval, sets.wer, cfg.eval_batch_size)
    canary = assess(model, lm.processor, lm.family, sets.canary, sets.canary, cfg.eval_batch_size) if sets.canary else {}
    return Measurement(result, canary)


def measure_baseline(lm: LoadedModel, model, sets: EvalSets, cfg: TrainConfig, session: Session,
                     adapters_off: bool = True) -> Measurement | None:
    """The model before training (main process only). By default measured after training: the trained PEFT
    model with its adapters switched off (`adapters_off`) is the base model weight for weight (LoRA only
    adds B·A beside each frozen weight), so the baseline does not delay the first optimizer step by an
    inference pass over the eval set and the canary. With `--baseline-first`, `model` is the base model
    before LoRA is attached and `adapters_off` is False."""
    if not session.accelerator.is_main_process:
        return None
    start = time.perf_counter()
    with base_model_view(model) if adapters_off else contextlib.nullcontext():
        result = measure(lm, model, sets, cfg)
    session.baseline_seconds = time.perf_counter() - start
    return result


def attach(model, cfg: TrainConfig, family):
    targets = cfg.target_module_list or family.default_target_modules
    try:
        return attach_lora(model, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, targets), tuple(targets)
    except ValueError as exc:  # PEFT: no module of the model matches the names given
        if not cfg.target_module_list:
            raise
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise UserError(f"--target-modules {cfg.target_modules}: {reason} (the {family.name} defaults: "
                        f"{','.join(family.default_target_modules)}); pass module names of this model") from None


def finished_already(cfg: TrainConfig, selected: SelectedData) -> RealMetrics | None:
    """`--resume` of a run that finished with these options over these rows: its metrics (nothing to do), else None.

    A run that ends writes a last checkpoint marked finished, then its results; with both there, a restart
    loop's `--resume` returns at once instead of training its last steps again and measuring again. Changed
    options or rows are refused as for any resume; a longer --max-steps / --num-epochs goes on training."""
    out = Path(cfg.output_dir)
    state = read_state(out) if cfg.resume and not cfg.resume_from_checkpoint else None
    if state is None or not state.get("finished") or not (out / "real_metrics.json").is_file():
        return None
    table = selected.table if selected.table is not None else ClipTable.from_records(selected.train_rows)
    check_resumable(state, asdict(cfg), table.identity())
    longer = finished_length(state, asdict(cfg))
    if longer is not None:
        log.info("--resume: the run in %s finished at step %s; %s: training on from there", out, state.get("step"), longer)
        return None
    log.warning("--resume: %s holds this run, finished at step %s; nothing to do (its results: %s). Train again with a "
                "new --output-dir, or without --resume", out, state.get("step"), out / "real_metrics.json")
    return read_result(out / "real_metrics.json", RealMetrics)


def steps_for(cfg: TrainConfig, batches_per_epoch: int, world: int) -> TrainConfig:
    """`--num-epochs` turned into optimizer steps (the scheduler needs the count up front)."""
    if cfg.num_epochs <= 0:
        return cfg
    steps = max(1, math.ceil(cfg.num_epochs * batches_per_epoch / (cfg.gradient_accumulation_steps * world)))
    log.info("%g epoch(s) of %d micro-batches = %d optimizer steps", cfg.num_epochs, batches_per_epoch, steps)
    return replace(cfg, max_steps=steps)


def train(model, lm: LoadedModel, source: BatchSource, cfg: TrainConfig, session: Session,
          sets: EvalSets | None = None) -> TrainResult:
    """Optimizer steps over `source`, reported to `--report-to` (per step: loss, learning rate, gradient
    norm, audio seconds per second). With `--eval-steps` and `sets`, eval loss + WER every N steps and at
    the end; the best LoRA state by `--metric-for-best-model` is restored into `model` afterwards (so it
    is what gets saved and measured as "tuned"), and `--early-stopping-patience` can end the run early."""
    out = Path(cfg.output_dir)
    quarantine = out / "quarantine.jsonl"
    upfront = _read_quarantine(quarantine)
    main = session.accelerator.is_main_process

    def on_bad(rows: list[BadRow]) -> None:
        if main:
            write_quarantine(quarantine, upfront + rows)

    tracker = Tracker(out, cfg.report_to, cfg.run_name, config=asdict(cfg)) if main else None
    evaluator = StepEvaluator(model, lm, sets, cfg) if main and cfg.eval_steps and sets is not None else None

    def on_step(step: int, row: dict) -> bool:
        if tracker is not None and (step % cfg.logging_steps == 0 or step == cfg.max_steps):
            tracker.log(step, {"train/loss": row["loss"], "train/learning_rate": row["lr"], "train/grad_norm": row["grad_norm"],
                               "train/audio_seconds_per_second": row["audio_seconds_per_second"]})
        if evaluator is None or not (step % cfg.eval_steps == 0 or step == cfg.max_steps):
            return False
        point = evaluator.evaluate(step)
        row.update({"eval_loss": point["eval_loss"], "wer": point["wer"]})
        if tracker is not None:
            tracker.log(step, {"eval/loss": point["eval_loss"], "eval/wer": point["wer"]})
        return evaluator.should_stop()

    try:
        result = train_lora(model, lm.family, source, cfg, session.accelerator, show_progress=not cfg.quiet, run_dir=out,
                            on_bad=on_bad, on_step=on_step)
    except KeyboardInterrupt as exc:
        signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
        raise Interrupted(interrupted_at(out, cfg.checkpoint_every, signal.Signals(signum).name), signum) from None
    finally:
        if tracker is not None:
            tracker.close()
    if evaluator is not None:
        evaluator.restore_best()
        result.eval_history, result.best_step = evaluator.history, evaluator.best_step
    return result


class StepEvaluator:
    """Eval loss + WER during training (`--eval-steps`) on the eval set or its first `--eval-subset`
    utterances, remembering the best LoRA state (a CPU copy of the adapter weights only)."""

    def __init__(self, model, lm: LoadedModel, sets: EvalSets, cfg: TrainConfig):
        subset = cfg.eval_subset or None
        self.model, self.lm, self.cfg = model, lm, cfg
        self.loss_examples, self.wer_examples = sets.eval[:subset], sets.wer[:subset]
        self.terms = sets.terms
        self.history: list[dict] = []
        self.best_step: int | None = None
        self.best_value = math.inf
        self.best_state: dict | None = None
        self.since_best = 0

    def evaluate(self, step: int) -> dict:
        from peft import get_peft_model_state_dict  # deferred: heavy

        bare = eager_module(self.model)
        with evaluating(bare):
            result = assess(bare, self.lm.processor, self.lm.family, self.loss_examples, self.wer_examples,
                            self.cfg.eval_batch_size)
        point = {"step": step, "eval_loss": result["eval_loss"], "wer": result["wer"]}
        if self.terms:  # --terms: the kept step can be the one that writes them best (--metric-for-best-model)
            point["term_error_rate"] = term_result(self.cfg.terms, self.terms, result["samples"]).term_error_rate_after
        self.history.append(point)
        value = point[self.cfg.metric_for_best_model]
        if value is None and self.cfg.metric_for_best_model == "term_error_rate" and not self.history[:-1]:
            log.warning("--metric-for-best-model term_error_rate: no term of %s is said in the evaluated utterances; "
                        "every step ties, and the first evaluated is kept", self.cfg.terms)
        value = math.inf if value is None or not math.isfinite(value) else value
        if self.best_state is None or value < self.best_value:
            self.best_value, self.best_step, self.since_best = value, step, 0
            self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in get_peft_model_state_dict(bare).items()}
        else:
            self.since_best += 1
        terms = point.get("term_error_rate")
        log.info("step %d: eval loss %.4f, WER %s%s (best: step %s)", step, point["eval_loss"],
                 "n/a" if point["wer"] is None else f"{100 * point['wer']:.1f}%",
                 "" if terms is None else f", term error rate {100 * terms:.1f}%", self.best_step)
        return point

    def should_stop(self) -> bool:
        return bool(self.cfg.early_stopping_patience) and self.since_best >= self.cfg.early_stopping_patience

    def restore_best(self) -> None:
        from peft import set_peft_model_state_dict  # deferred: heavy

        if self.best_state is not None:
            set_peft_model_state_dict(eager_module(self.model), self.best_state)
            log.info("kept the LoRA state of step %d (best %s %.4f)", self.best_step, self.cfg.metric_for_best_model,
                     self.best_value)


def save(model, lm: LoadedModel, out: Path, run_info: dict, measured: RealMetrics | None = None) -> None:
    """`lora_adapter/` (self-contained: PEFT files, processor files, README.md model card with the
    run's figures when `measured` is given) and `processor/`, each written whole then renamed in."""
    card = adapter_card(run_info, measured)
    save_adapter(model, out / "lora_adapter", run_info, processor=lm.processor, card=card)
    save_processor(lm.processor, out / "processor")


def adapter_card(run_info: dict, measured: RealMetrics | None) -> dict:
    """What the adapter's model card shows: the metrics (or just the run record) and the command line."""
    record = to_dict(measured) if measured is not None else dict(run_info)
    return record | {"argv": list(sys.argv), "versions": record.get("versions") or library_versions()}


def run_info(lm: LoadedModel, selected: SelectedData, cfg: TrainConfig, targets: tuple[str, ...]) -> dict:
    """What the adapter records about its run (lora_run.json): model, targets, training speakers/ids."""
    s = selected.summary
    return lm.resolved.record() | {
        "family": lm.family.name, "target_policy": cfg.target_policy or lm.family.target_policy,
        "target_modules": list(targets), "train_ids": s.ids, "train_speakers": s.speakers,
        "replay_ids": s.replay_ids, "joined_train_utterances": s.joined,
    }


def canary_result(canary: list[Utterance], before: dict, after: dict, manifest: str | None) -> CanaryResult:
    if not canary:
        return CanaryResult(source=manifest or "none found", utterances=0)
    refs = [own_text(u) for u in canary]  # the canary's order is the samples' order
    style = style_scores(refs, [s["hypothesis"] for s in before["samples"]], [s["hypothesis"] for s in after["samples"]])
    verdict, reasons = forgetting_verdict(before["wer"], after["wer"], style["orthographic_wer_before"],
                                          style["orthographic_wer_after"], style["punctuation_f1"], style["capitalisation_f1"])
    return CanaryResult(**style, verdict=verdict, verdict_reasons=reasons,
        source=manifest or "local LibriSpeech/LJSpeech subsets, unseen speakers", utterances=len(canary),
        ids=[u.id for u in canary], wer_before=before["wer"], wer_after=after["wer"], cer_before=before["cer"],
        cer_after=after["cer"], eval_loss_before=before["eval_loss"], eval_loss_after=after["eval_loss"],
        wer_delta_ci95=WerChange(**paired_bootstrap(before["samples"], after["samples"])), samples=compare(before, after))


def held_out_facts(sets: EvalSets, before: Measurement, after: Measurement, seed: int) -> dict:
    """Speaker-clustered CI of the held-out WER change, insertions before normalisation, output lengths."""
    b, a = before.eval["samples"], after.eval["samples"]
    refs = [s["reference"] for s in b]
    clustered = None
    if b:
        c = clustered_paired_bootstrap(b, a, [e.speaker for e in sets.wer], seed=seed)
        clustered = WerChange(c["delta"], c["ci95"], c["verdict"], c["resamples"], c["seed"], "speaker-clustered")
    ratio, over = length_ratios(refs, [s["hypothesis"] for s in a])
    return {"wer_delta_clustered_ci95": clustered, "raw_insertions_before": raw_insertions(refs, [s["hypothesis"] for s in b]),
            "raw_insertions_after": raw_insertions(refs, [s["hypothesis"] for s in a]), "max_hyp_ref_word_ratio": ratio,
            "outputs_over_2x_ref": over}


def metrics(info: dict, lm: LoadedModel, selected: SelectedData, sets: EvalSets, cfg: TrainConfig, session: Session,
            before: Measurement, after: Measurement, result: TrainResult, scale: ScaleFacts,
            target_style: TargetStyle | None = None) -> RealMetrics:
    import torch  # deferred: heavy

    losses = [r["loss"] for r in result.history]
    return RealMetrics(
        **info, data_source=selected.data.source,
        eval_ids=[u.id for u in selected.data.eval], eval_speakers=sorted({u.speaker for u in selected.data.eval}),
        leakage=selected.leaks, config=asdict(cfg), world_size=session.accelerator.num_processes,
        device=str(session.accelerator.device), mixed_precision=session.precision, mixed_precision_note=session.precision_note,
        train_loss=summarize_losses(losses), train_loss_history=result.history,
        non_finite_steps=sum(1 for x in losses if not math.isfinite(x)),
        baseline_eval_loss=before.eval["eval_loss"], tuned_eval_loss=after.eval["eval_loss"],
        baseline_wer=before.eval["wer"], tuned_wer=after.eval["wer"], baseline_cer=before.eval["cer"], tuned_cer=after.eval["cer"],
        wer_utterances=len(sets.wer),
        wer_delta_ci95=WerChange(**paired_bootstrap(before.eval["samples"], after.eval["samples"], seed=cfg.seed)),
        samples=compare(before.eval, after.eval),
        canary=canary_result(selected.canary, before.canary, after.canary, cfg.canary),
        train_audio_seconds=selected.summary.seconds, eval_audio_seconds=sum(e.seconds for e in sets.eval),
        train_wall_seconds=result.wall_seconds,
        train_audio_seconds_per_second=result.audio_seconds / max(result.wall_seconds, 1e-9),
        wall_seconds=time.perf_counter() - session.started, peak_rss_mb=peak_rss_mb(),
        peak_rss_workers_mb=peak_rss_children_mb(), torch_threads=torch.get_num_threads(), versions=library_versions(),
        scale=scale, eval_history=result.eval_history, best_step=result.best_step,
        best_metric=cfg.metric_for_best_model if result.eval_history else None,
        baseline_wer_ci95=bootstrap_wer_ci(before.eval["samples"], seed=cfg.seed),
        tuned_wer_ci95=bootstrap_wer_ci(after.eval["samples"], seed=cfg.seed),
        target_style=target_style, **held_out_facts(sets, before, after, cfg.seed),
        terms=term_result(cfg.terms, sets.terms, after.eval["samples"], before.eval["samples"], cfg.seed) if sets.terms else None,
    )


def scale_facts(selected: SelectedData, table: ClipTable, source: BatchSource, options: LoaderOptions, result: TrainResult,
                session: Session, model, cfg: TrainConfig) -> ScaleFacts:
    src = selected.data.source
    first = result.first_step_wall - session.started if result.first_step_wall is not None else None
    return ScaleFacts(
        corpus_rows=src.get("corpus_rows", 0), corpus_hours=src.get("corpus_hours", 0.0), train_rows=len(table),
        train_hours=table.hours, repeated_rows=src.get("repeated_rows", 0),
        micro_batches_per_epoch=source.batches_per_epoch, max_batch_seconds=cfg.max_batch_seconds,
        loader_workers=options.num_workers, seconds_to_first_step=first, baseline_seconds=session.baseline_seconds,
        quarantined_while_training=len(result.quarantined),
        attention=str(getattr(getattr(model, "config", None), "_attn_implementation", "unknown")),
        attention_head_padding=attention_head_padding(model), compiled=cfg.compile,
        stage_seconds=dict(session.stage_seconds), stage_peak_rss_mb=dict(session.stage_peak_rss_mb),
        allocator=allocator_in_use())


def report(result: RealMetrics, out: Path) -> None:
    data = to_dict(result)
    write_json_atomic(out / "real_metrics.json", data)
    write_report(data, out)


def _read_quarantine(path: Path) -> list[BadRow]:
    """Rows preflight already quarantined (the loader's finds are added to them)."""
    import json

    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            d = json.loads(line)
            rows.append(BadRow(d["origin"], d["reason"], d.get("id", ""), d.get("detail", "")))
    return rows
