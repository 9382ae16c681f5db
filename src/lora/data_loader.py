"""The streaming data loader: records -> worker processes (decode, resample, featurise, tokenise)
-> padded micro-batches, one at a time. Nothing holds the corpus's audio or features.

    records (id, audio path or samples, text, duration from the file header)
      -> `ClipTable`      compact columns (numpy), cheap to fork into workers
      -> `BatchPlan`      micro-batches capped by clips (`--batch-size`) and padded audio seconds
                          (`--max-batch-seconds`), similar lengths together, order shuffled per
                          epoch from (seed, epoch), every world-th batch to each process
      -> `ClipDataset`    in a `torch.utils.data.DataLoader` worker: one row -> model input + labels,
                          or the reason it failed (quarantined on the fly; training goes on)
      -> `collate_rows`   the family's padding + -100-padded labels, with the rows' ids and seconds

The plan is a pure function of (durations, caps, seed, epoch, rank, world): a resumed run skips to
the exact micro-batch where it stopped without loading the ones before it. Evaluation sets are small
and stay in memory as `Example`s (`lora.data.batches`).
"""

from __future__ import annotations

import copy
import functools
import hashlib
import logging
import math
import os
import random
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from lora.core.audio import SAMPLE_RATE, Span, audio_seconds, to_pcm16
from lora.core.memory import keep_heap_flat
from lora.data.audio_probe import TRUNCATED, shortfall
from lora.data.batches import Example, collate, length_grouped_batches, prepare_dataset
from lora.data.hygiene import QUARANTINE, HygieneOptions, audio_findings
from lora.data.manifest import BadRow
from lora.data.records import Utterance
from lora.families import bucket_length, pad_labels

log = logging.getLogger("lora")


@dataclass(frozen=True)
class LoaderOptions:
    """How micro-batches are made (all from `TrainConfig`)."""

    batch_size: int = 1  # clips per micro-batch at most
    max_batch_seconds: float = 0.0  # padded audio seconds per micro-batch at most (0 = clips only)
    seed: int = 42
    num_workers: int = 0  # DataLoader worker processes (0 = in this process)
    pin_memory: bool = False  # page-locked batches via the DataLoader's pinning thread (off by default: see loader_options)
    prefetch_factor: int = 4  # batches each worker prepares ahead
    features_on_device: bool = False  # workers hand over raw audio; the family featurises on the GPU
    length_buckets: bool = False  # pad audio and labels up to `bucket_length` steps, so batch shapes repeat


def default_num_workers() -> int:
    """One worker per spare core, at most 8: the main process keeps a core for the model."""
    return max(0, min(8, (os.cpu_count() or 1) - 1))


# ---------------------------------------------------------------------------------------------
# compact rows


class StringColumn:
    """Many strings as one UTF-8 buffer plus offsets: two numpy arrays instead of N Python objects,
    so a 10^5-row corpus costs megabytes and forking workers copies nothing (no refcounts touched)."""

    def __init__(self, values: list[str]):
        encoded = [v.encode("utf-8") for v in values]
        self.offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(b) for b in encoded], out=self.offsets[1:])
        self.buffer = np.frombuffer(b"".join(encoded), dtype=np.uint8)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> str:
        return self.buffer[self.offsets[i]: self.offsets[i + 1]].tobytes().decode("utf-8")

    def to_arrays(self, prefix: str) -> dict[str, np.ndarray]:
        return {f"{prefix}.offsets": self.offsets, f"{prefix}.buffer": self.buffer}

    @classmethod
    def from_arrays(cls, arrays, prefix: str) -> StringColumn:
        column = cls.__new__(cls)
        column.offsets, column.buffer = arrays[f"{prefix}.offsets"], arrays[f"{prefix}.buffer"]
        return column

    def to_list(self) -> list[str]:
        return [self[i] for i in range(len(self))]


class RepeatedStrings:
    """Strings with many repeats (audio paths, transcripts of a corpus that reuses clips): each
    distinct string once, plus an int32 code per row."""

    def __init__(self, values: list[str]):
        index: dict[str, int] = {}
        self.codes = np.fromiter((index.setdefault(v, len(index)) for v in values), dtype=np.int32, count=len(values))
        self.values = StringColumn(list(index))

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, i: int) -> str:
        return self.values[int(self.codes[i])]

    def to_arrays(self, prefix: str) -> dict[str, np.ndarray]:
        return {f"{prefix}.codes": self.codes, **self.values.to_arrays(f"{prefix}.values")}

    @classmethod
    def from_arrays(cls, arrays, prefix: str) -> RepeatedStrings:
        return cls._of(arrays[f"{prefix}.codes"], StringColumn.from_arrays(arrays, f"{prefix}.values"))

    @classmethod
    def _of(cls, codes: np.ndarray, values: StringColumn) -> RepeatedStrings:
        column = cls.__new__(cls)
        column.codes, column.values = codes, values
        return column

    def replaced(self, rows: np.ndarray, values: list[str], which: np.ndarray) -> RepeatedStrings:
        """A copy in which row `rows[i]` holds `values[which[i]]` (the other rows as they were)."""
        index = {v: i for i, v in enumerate(self.values.to_list())}
        new_codes = np.fromiter((index.setdefault(v, len(index)) for v in values), dtype=np.int32, count=len(values))
        codes = self.codes.copy()
        codes[rows] = new_codes[which]
        return self._of(codes, StringColumn(list(index)))


class OriginColumn:
    """`file:line` origins as (index of the file, line): the file names of a corpus are few."""

    def __init__(self, origins: list[str]):
        files: dict[str, int] = {}
        self.lines = np.zeros(len(origins), dtype=np.int64)
        self.file_index = np.zeros(len(origins), dtype=np.int32)
        for i, origin in enumerate(origins):
            head, _, tail = origin.rpartition(":")
            if head and tail.isdigit():
                self.lines[i] = int(tail)
            else:
                head, self.lines[i] = origin, -1
            self.file_index[i] = files.setdefault(head, len(files))
        self.files = list(files)

    def __len__(self) -> int:
        return len(self.lines)

    def __getitem__(self, i: int) -> str:
        line = int(self.lines[i])
        head = self.files[self.file_index[i]]
        return head if line < 0 else f"{head}:{line}"

    def to_arrays(self, prefix: str) -> dict[str, np.ndarray]:
        return {f"{prefix}.lines": self.lines, f"{prefix}.file_index": self.file_index,
                **StringColumn(self.files).to_arrays(f"{prefix}.files")}

    @classmethod
    def from_arrays(cls, arrays, prefix: str) -> OriginColumn:
        column = cls.__new__(cls)
        column.lines, column.file_index = arrays[f"{prefix}.lines"], arrays[f"{prefix}.file_index"]
        column.files = StringColumn.from_arrays(arrays, f"{prefix}.files").to_list()
        return column


@dataclass
class ClipTable:
    """The training rows as columns. Audio is a path (string column) or, for manifests with inline
    samples, an entry of `inline` (small corpora only: those samples are in the manifest anyway)."""

    ids: StringColumn
    texts: RepeatedStrings
    origins: OriginColumn
    audio_paths: RepeatedStrings  # "" where the audio is inline
    seconds: np.ndarray  # float32, from the header (preflight); 0 when unknown
    sampling_rates: np.ndarray  # int32, of inline audio
    inline: dict[int, object] = field(default_factory=dict)
    targets: RepeatedStrings | None = None  # styled training targets ("" where none: the text is used)
    # rows that are segments of a longer recording (`Utterance.span`): start and end seconds, float64 so that a
    # span of an hour-long file still lands on its sample; NaN start: the whole file, NaN end: to the file's end.
    # None when no row is a segment (a plain corpus carries no such columns).
    span_starts: np.ndarray | None = None
    span_ends: np.ndarray | None = None

    @classmethod
    def from_records(cls, rows: list[Utterance]) -> ClipTable:
        paths, inline = [], {}
        for i, u in enumerate(rows):
            if isinstance(u.audio, str | os.PathLike):
                paths.append(os.fspath(u.audio))
            else:
                paths.append("")
                inline[i] = u.audio
        starts, ends = span_columns(rows)
        return cls(StringColumn([u.id for u in rows]), RepeatedStrings([u.text for u in rows]),
                   OriginColumn([u.origin for u in rows]), RepeatedStrings(paths),
                   np.array([record_seconds(u) for u in rows], dtype=np.float32),
                   np.array([u.sampling_rate for u in rows], dtype=np.int32), inline,
                   RepeatedStrings([u.extra.get("target", "") for u in rows]), starts, ends)

    def __len__(self) -> int:
        return len(self.ids)

    def span(self, i: int) -> Span | None:
        if self.span_starts is None or np.isnan(self.span_starts[i]):
            return None
        end = float(self.span_ends[i])
        return Span(float(self.span_starts[i]), None if np.isnan(end) else end)

    def record(self, i: int) -> Utterance:
        path = self.audio_paths[i]
        target = self.targets[i] if self.targets is not None else ""
        return Utterance(self.ids[i], "", self.texts[i], path if path else self.inline[i],
                         int(self.sampling_rates[i]), self.origins[i], extra={"target": target} if target else {},
                         span=self.span(i))

    @property
    def hours(self) -> float:
        return float(self.seconds.sum()) / 3600.0

    def fingerprint(self) -> str:
        """Which rows, in which order, of which lengths: what the batch plan is drawn from (a resume checks it)."""
        digest = hashlib.sha1()
        for part in (self.ids.offsets, self.ids.buffer, self.seconds):
            digest.update(np.ascontiguousarray(part).tobytes())
        return digest.hexdigest()[:16]

    def identity(self) -> dict:
        """{"count", "fingerprint"}: what a checkpoint keeps of the rows, and what a resume compares."""
        return {"count": len(self), "fingerprint": self.fingerprint()}

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The columns as named NumPy arrays (`np.savez`); only for tables without inline audio."""
        if self.inline:
            raise ValueError("a table with inline audio has no array form (its samples live in the manifest)")
        targets = self.targets if self.targets is not None else RepeatedStrings([""] * len(self))
        spans = {} if self.span_starts is None else {"span_starts": self.span_starts, "span_ends": self.span_ends}
        return {**self.ids.to_arrays("ids"), **self.texts.to_arrays("texts"), **self.origins.to_arrays("origins"),
                **self.audio_paths.to_arrays("audio_paths"), **targets.to_arrays("targets"),
                "seconds": self.seconds, "sampling_rates": self.sampling_rates, **spans}

    @classmethod
    def from_arrays(cls, arrays) -> ClipTable:
        """The inverse of `to_arrays` (`arrays`: a mapping such as an opened `.npz`)."""
        spans = (arrays["span_starts"], arrays["span_ends"]) if "span_starts" in arrays else (None, None)
        return cls(StringColumn.from_arrays(arrays, "ids"), RepeatedStrings.from_arrays(arrays, "texts"),
                   OriginColumn.from_arrays(arrays, "origins"), RepeatedStrings.from_arrays(arrays, "audio_paths"),
                   arrays["seconds"], arrays["sampling_rates"], {}, RepeatedStrings.from_arrays(arrays, "targets"), *spans)


def span_columns(rows: list[Utterance]) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(starts, ends) of the rows' spans as `ClipTable` keeps them; (None, None) when no row is a segment."""
    if not any(u.span is not None for u in rows):
        return None, None
    starts = np.array([math.nan if u.span is None else u.span.start for u in rows], dtype=np.float64)
    ends = np.array([math.nan if u.span is None or u.span.end is None else u.span.end for u in rows], dtype=np.float64)
    return starts, ends


def record_seconds(u: Utterance) -> float:
    """A row's duration without decoding it: preflight's measure, else the header (less what lies outside the
    row's span), else the samples."""
    if "seconds" in u.extra:
        return float(u.extra["seconds"])
    if isinstance(u.audio, np.ndarray | list):
        return len(u.audio) / u.sampling_rate
    seconds = audio_seconds(u.audio)
    if u.span is None:
        return seconds
    return max(0.0, min(seconds, seconds if u.span.end is None else u.span.end) - u.span.start)


# ---------------------------------------------------------------------------------------------
# the batch plan (pure)


def plan_epoch(seconds: np.ndarray, batch_size: int, max_batch_seconds: float = 0.0,
               padded_seconds=None, seed: int | None = None) -> list[list[int]]:
    """Micro-batches of one epoch: rows sorted by duration, filled up to `batch_size` clips and
    `max_batch_seconds` of padded audio (clips x the longest; `padded_seconds` maps a duration to
    what the family really feeds, e.g. Whisper's fixed 30 s), then the batch order shuffled with
    `seed` (None keeps it sorted). A clip longer than the cap gets a batch of its own.

    The composition is the same every epoch (only the order changes), so a frozen encoder's output
    can be reused per batch (`lora.encoder_cache`).

    Greedy, like filling batches clip by clip in duration order, but a batch at a time with NumPy: the
    clip-by-clip loop took 0.47 s against 0.15 s on the 100 h scale corpus, paid before the first step
    (benchmarks/batch_plan.py).
    """
    order = np.argsort(seconds, kind="stable")
    size = len(order)
    padded = None
    if max_batch_seconds > 0 and size:
        # `padded_seconds` is a Python function of one duration: call it once per distinct duration
        ordered = np.asarray(seconds)[order]
        new_value = np.empty(size, dtype=bool)
        new_value[0], new_value[1:] = True, ordered[1:] != ordered[:-1]
        pad = padded_seconds or float
        padded = np.array([pad(float(v)) for v in ordered[new_value]], dtype=np.float64)[np.cumsum(new_value) - 1]
    rows = order.tolist()
    batches: list[list[int]] = []
    start, count = 0, 0
    while start < size:
        most = min(batch_size, size - start)
        if padded is not None and most > 1:
            count = _rows_that_fit(padded, start, most, max_batch_seconds, guess=2 * count)
        else:
            count = most
        batches.append(rows[start:start + count])
        start += count
    if seed is not None:
        random.Random(seed).shuffle(batches)
    return batches


def _rows_that_fit(padded: np.ndarray, start: int, most: int, cap: float, guess: int) -> int:
    """How many rows from `start` (at least 1, at most `most`) one batch takes: it closes before the
    first row whose addition makes (rows x that row's padded seconds) exceed `cap`. Looks `guess`
    rows ahead first (neighbouring batches hold similar counts), then four times as far."""
    window = max(guess, 16)
    while True:
        window = min(window, most)
        cost = np.arange(1, window + 1) * padded[start:start + window]
        over = np.flatnonzero(cost[1:] > cap)  # the first row always goes in
        if over.size:
            return int(over[0]) + 1
        if window == most:
            return most
        window *= 4


@dataclass
class BatchPlan:
    """The endless micro-batch stream of one process: epoch e is `plan_epoch` shuffled with seed+e;
    process `rank` of `world` takes every world-th batch; the first `skip` of its batches are passed
    over without loading (resume). Iterating it yields row-index lists (a DataLoader batch sampler)."""

    seconds: np.ndarray
    batch_size: int
    max_batch_seconds: float = 0.0
    seed: int = 42
    rank: int = 0
    world: int = 1
    skip: int = 0
    padded_seconds: object = None

    def __post_init__(self):
        self._base = plan_epoch(self.seconds, self.batch_size, self.max_batch_seconds, self.padded_seconds)

    def for_process(self, rank: int, world: int, skip: int) -> BatchPlan:
        """This plan for process `rank` of `world`, its first `skip` batches passed over: the epoch's batches are
        the same, so they are not planned again (0.15 s on the 100 h scale corpus, paid before the first step)."""
        plan = copy.copy(self)
        plan.rank, plan.world, plan.skip = rank, world, skip
        return plan

    @property
    def batches_per_epoch(self) -> int:
        return len(self._base)

    def epoch(self, epoch: int) -> list[list[int]]:
        batches = list(self._base)
        random.Random(self.seed + epoch).shuffle(batches)
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        epoch, position, mine = 0, 0, 0
        while True:
            for batch in self.epoch(epoch):
                if position % self.world == self.rank:
                    if mine >= self.skip:
                        yield batch
                    mine += 1
                position += 1
            epoch += 1


# ---------------------------------------------------------------------------------------------
# worker side


@dataclass(frozen=True)
class LoadedRow:
    row: int
    inputs: np.ndarray | None = None
    labels: list[int] | None = None
    seconds: float = 0.0
    problem: tuple[str, str] | None = None  # (reason, detail) when the row could not be loaded


LOADER_HYGIENE = HygieneOptions()  # the loader's workers use the default thresholds (lora check can tune them)


class ClipDataset:
    """Map-style dataset over a `ClipTable`: index -> `LoadedRow` (runs in the loader's workers)."""

    def __init__(self, table: ClipTable, processor, family, policy: str | None = None, raw: bool = False):
        self.table, self.processor, self.family, self.policy = table, processor, family, policy
        self.raw = raw  # hand over `family.raw_input` (features computed on the device)

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, i: int) -> LoadedRow:
        u = self.table.record(i)
        try:
            samples = u.samples()
        except Exception as exc:  # one bad file must not stop the run: it is quarantined instead
            return LoadedRow(i, problem=("cannot decode", f"{type(exc).__name__}: {exc}"))
        if samples.size == 0:
            return LoadedRow(i, problem=("no samples", "0 frames after decoding"))
        cut = shortfall(len(samples) / SAMPLE_RATE, float(self.table.seconds[i]))  # a header-only preflight's row
        if cut:
            return LoadedRow(i, problem=(TRUNCATED, cut))
        if not np.isfinite(samples).all():
            return LoadedRow(i, problem=("non-finite samples", "NaN or inf in the decoded audio"))
        # the cheap hygiene checks (silent, dc_constant, clipped: a few passes over the samples)
        bad = [f for f in audio_findings(samples, LOADER_HYGIENE) if f.severity == QUARANTINE]
        if bad:
            return LoadedRow(i, problem=(f"hygiene: {bad[0].check}", f"{bad[0].detail}; {bad[0].advice}"))
        raw = self.family.raw_input(self.processor, samples) if self.raw else None
        inputs = raw if raw is not None else self.family.featurize(self.processor, samples)
        labels = self.family.label_ids(self.processor.tokenizer, u.extra.get("target") or u.text, self.policy)
        return LoadedRow(i, inputs, labels, len(samples) / SAMPLE_RATE)


@dataclass
class LoadedBatch:
    """One micro-batch: model tensors plus what the trainer counts and reports."""

    tensors: dict
    rows: tuple[int, ...]
    seconds: float
    tokens: int
    bad: list[BadRow]


class _Collate:
    """Picklable collate function (workers receive it): pads the good rows (to a shape bucket with
    `buckets`), lists the bad ones."""

    def __init__(self, family, table: ClipTable, raw: bool = False, buckets: bool = False):
        self.family, self.table, self.raw, self.buckets = family, table, raw, buckets

    def __call__(self, items: list[LoadedRow]) -> LoadedBatch:
        good = [r for r in items if r.problem is None]
        bad = [BadRow(self.table.origins[r.row], r.problem[0], self.table.ids[r.row], r.problem[1])
               for r in items if r.problem is not None]
        tensors = {}
        if good and self.raw:
            import torch  # deferred: heavy (the worker has it loaded already)

            lengths = np.array([len(r.inputs) for r in good], dtype=np.int32)
            width = bucket_length(int(lengths.max())) if self.buckets else int(lengths.max())
            audio = np.zeros((len(good), width), dtype=np.int16)
            for i, r in enumerate(good):  # zero padding, as the family's features expect (NumPy: see pad_inputs)
                audio[i, : len(r.inputs)] = to_pcm16(r.inputs)
            # 16-bit PCM + lengths, turned into model inputs on the device (`raw_waveforms`)
            tensors = {"raw_audio": torch.from_numpy(audio), "raw_lengths": torch.from_numpy(lengths)}
            tensors["labels"] = pad_labels([r.labels for r in good], self.buckets)
        elif good:
            length = bucket_length(max(len(r.inputs) for r in good)) if self.buckets else None
            tensors = self.family.pad_inputs([r.inputs for r in good], length)
            tensors["labels"] = pad_labels([r.labels for r in good], self.buckets)
        return LoadedBatch(tensors, tuple(r.row for r in good), sum(r.seconds for r in good),
                           sum(len(r.labels) for r in good), bad)


def loader_plan(seconds: np.ndarray, family, options: LoaderOptions, rank: int = 0, world: int = 1, skip: int = 0) -> BatchPlan:
    """The batch plan `make_loader` follows (its clip costs counted in bucketed lengths with `length_buckets`)."""
    padded = functools.partial(_bucketed_seconds, family) if options.length_buckets else family.padded_seconds
    return BatchPlan(seconds, options.batch_size, options.max_batch_seconds, options.seed, rank, world, skip, padded)


def make_loader(table: ClipTable, processor, family, policy: str | None, options: LoaderOptions,
                rank: int = 0, world: int = 1, skip: int = 0, plan: BatchPlan | None = None):
    """A `torch.utils.data.DataLoader` yielding `LoadedBatch`es forever (see `BatchPlan`); `plan`: this
    table's `loader_plan` made before (its batches are then not planned again)."""
    from torch.utils.data import DataLoader  # deferred: torch is heavy and --help must stay fast

    plan = plan.for_process(rank, world, skip) if plan is not None else loader_plan(table.seconds, family, options, rank, world, skip)
    workers = options.num_workers
    extra = {"prefetch_factor": options.prefetch_factor, "persistent_workers": False} if workers > 0 else {}
    raw = options.features_on_device and family.raw_input(processor, np.zeros(1, np.float32)) is not None
    loader = DataLoader(ClipDataset(table, processor, family, policy, raw), batch_sampler=plan,
                        collate_fn=_Collate(family, table, raw, options.length_buckets), num_workers=workers,
                        pin_memory=options.pin_memory,
                        worker_init_fn=_worker_init if workers > 0 else None, **extra)
    return loader, plan


def _bucketed_seconds(family, seconds: float) -> float:
    """What a clip costs in a bucketed batch: its samples rounded up to the ladder, then the family's padding."""
    return family.padded_seconds(bucket_length(math.ceil(seconds * SAMPLE_RATE)) / SAMPLE_RATE)


def _worker_init(_worker_id: int) -> None:
    """One thread per worker: N workers x M torch/numpy threads would oversubscribe the cores.
    Decoded clips vary in size: the worker's heap is kept flat as the trainer's (lora.core.memory).
    Ctrl-C in a terminal (and a scheduler's SIGTERM) reaches the workers too; it is the trainer's to act on
    (it stops when the step ends and shuts the workers down), and a worker that quit on its own would fail
    the trainer's next batch."""
    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    torch.set_num_threads(1)
    keep_heap_flat()


__all__ = ["BatchPlan", "ClipDataset", "ClipTable", "Example", "LoadedBatch", "LoaderOptions", "RepeatedStrings", "StringColumn",
           "collate", "default_num_workers", "length_grouped_batches", "loader_plan", "make_loader", "plan_epoch", "prepare_dataset"]
