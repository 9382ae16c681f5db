"""The typed schema of every file a command writes: one dataclass per file, with a schema version.

Writers build these objects and call `write_result`; readers (the report, summaries, the digits
table) call `read_result` and use attributes, so renaming a figure is one edit here plus its users.
Per-utterance rows, the run config and library versions stay plain dicts/lists inside.

    real_metrics.json    RealMetrics    (lora train / train_real_small.py)
    eval.json            EvalResult     (lora eval)
    artifact_test.json   SttArtifact    (lora stt / scripts/run_stt.py)
    export_report.json   ExportReport   (lora export)
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from lora.core.errors import UserError
from lora.core.outputs import write_json_atomic

SCHEMA_VERSION = 2
T = TypeVar("T")


@dataclass(frozen=True)
class WerChange:
    """Paired bootstrap of WER(after) - WER(before): `verdict` improved / worse / no significant change."""

    delta: float | None
    ci95: list[float] | None
    verdict: str
    resamples: int = 0
    seed: int = 0
    method: str = "utterance"  # "utterance" or "speaker-clustered"


@dataclass(frozen=True)
class CanaryResult:
    """General speech scored before and after training: the forgetting check."""

    source: str
    utterances: int
    ids: list[str] = field(default_factory=list)
    wer_before: float | None = None
    wer_after: float | None = None
    cer_before: float | None = None
    cer_after: float | None = None
    eval_loss_before: float | None = None
    eval_loss_after: float | None = None
    wer_delta_ci95: WerChange | None = None
    samples: list[dict] = field(default_factory=list)
    # Style (lora.style_metrics): orthographic WER against the styled references (a reference without
    # style gets the base model's casing/punctuation, `lora.styled_targets`), punctuation and
    # capitalisation F1 of the tuned output against the base output, insertions before normalisation.
    orthographic_wer_before: float | None = None
    orthographic_wer_after: float | None = None
    punctuation_f1: float | None = None
    capitalisation_f1: float | None = None
    raw_insertions_before: int | None = None
    raw_insertions_after: int | None = None
    verdict: str = ""  # "pass" / "fail" (the forgetting verdict, lora.style_metrics.forgetting_verdict)
    verdict_reasons: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class TermResult:
    """`--terms FILE`: how often the model writes your terms where they are said (lora.term_recall)."""

    terms_file: str
    terms: int  # distinct terms in the file
    utterances: int  # eval utterances scored
    utterances_with_terms: int  # of those, utterances whose reference says at least one term
    said: int  # term occurrences in the references
    recalled_before: int | None  # occurrences written where said (None: one model scored)
    recalled_after: int
    inserted_before: int | None  # occurrences written beyond those said
    inserted_after: int
    recall_before: float | None  # recalled / said (None when no term is said)
    recall_after: float | None
    term_error_rate_before: float | None  # (missed + inserted) / said
    term_error_rate_after: float | None
    term_error_rate_change_ci95: WerChange | None  # paired bootstrap of the change (None: one model, or nothing said)
    per_term: list[dict] = field(default_factory=list)  # term, said, recalled_before/after, inserted_before/after


@dataclass(frozen=True)
class TargetStyle:
    """How the training targets were written (`--target-policy`; "styled": `lora.styled_targets`)."""

    policy: str
    rows: int = 0  # distinct single (not joined) training rows
    own_style_rows: int = 0  # references with their own casing/punctuation, kept as they are
    styled_rows: int = 0  # references given the base model's style
    joined_rows: int = 0  # joined clips (targets = their parts' targets)
    reference_words: int = 0  # words of the styled rows
    words_with_base_style: int = 0  # of those, matched to a base-model word (its style carried over)
    consensus_rows: int = 0  # styled rows whose reference text recurs on several clips: given that text's most common styled form
    coverage: float | None = None  # words_with_base_style / reference_words
    transcribed: int = 0  # base-model transcripts computed in this run
    cache_hits: int = 0  # base-model transcripts read from the cache
    cache_path: str = ""
    seconds: float = 0.0  # wall time of the styling pass (transcription of cache misses included), before the first step
    on_draw: bool = False  # clips without a cached transcript styled as training first drew them (--style-on-draw)
    pending_rows: int = 0  # of styled_rows, those whose clip had no cached transcript when training began
    transcribed_on_draw: int = 0  # clips transcribed during training (pending rows never drawn keep the sentence-cased reference)
    seconds_on_draw: float = 0.0  # time the training process spent on it, inside the steps' wall time


@dataclass(frozen=True)
class ScaleFacts:
    """How the run coped with its corpus: size, start-up, loader, on-the-fly quarantine."""

    corpus_rows: int  # usable rows of the source before selection
    corpus_hours: float
    train_rows: int  # rows the batch plan draws from (after selection, joining, replay)
    train_hours: float
    repeated_rows: int  # rows repeating another row's file, transcript and speaker (scale corpora)
    micro_batches_per_epoch: int
    max_batch_seconds: float
    loader_workers: int
    seconds_to_first_step: float | None  # from the start of the run to the end of the first optimizer step
    baseline_seconds: float  # measuring the baseline (eval set + canary): after training unless --baseline-first
    quarantined_while_training: int  # rows the loader's workers could not load (kept out, run went on)
    attention: str  # the attention kernel transformers chose (sdpa, eager, ...)
    compiled: bool
    # Per run stage, in order (select_data, load_model, style_targets, train_batches, eval_sets, train,
    # baseline, tuned; baseline before train under --baseline-first): wall seconds it took, and the
    # process's peak RSS (MB) when it ended. Peak RSS only grows, so the first stage whose figure reaches
    # the run's peak is where the peak was set.
    stage_seconds: dict[str, float] = field(default_factory=dict)
    stage_peak_rss_mb: dict[str, float] = field(default_factory=dict)
    allocator: str = "glibc"  # the process's malloc: jemalloc where installed (lora.core.memory.prefer_jemalloc)
    attention_head_padding: int = 0  # zero columns added to each attention head on CUDA (lora.model_utils.pad_attention_heads)


@dataclass(frozen=True)
class RealMetrics:
    """`real_metrics.json`: baseline -> LoRA -> tuned on speaker-disjoint held-out speech."""

    model_id_requested: str
    model_id_used: str
    model_source: str
    model_path: str
    family: str
    target_policy: str
    target_modules: list[str]
    data_source: dict
    train_ids: list[str]
    train_speakers: list[str]
    replay_ids: list[str]
    joined_train_utterances: int
    eval_ids: list[str]
    eval_speakers: list[str]
    leakage: dict
    config: dict
    world_size: int
    device: str
    mixed_precision: str
    mixed_precision_note: str | None
    train_loss: float | None  # mean over the finite logged steps
    train_loss_history: list[dict]
    non_finite_steps: int  # logged steps whose loss was NaN/inf (the run stops at the first)
    baseline_eval_loss: float
    tuned_eval_loss: float
    baseline_wer: float | None
    tuned_wer: float | None
    baseline_cer: float | None
    tuned_cer: float | None
    wer_utterances: int
    wer_delta_ci95: WerChange
    samples: list[dict]
    canary: CanaryResult
    train_audio_seconds: float  # the training rows' audio (one pass)
    eval_audio_seconds: float
    train_wall_seconds: float
    train_audio_seconds_per_second: float  # audio seen by the optimizer steps / training wall time
    wall_seconds: float
    peak_rss_mb: float  # this process
    peak_rss_workers_mb: float  # the largest data-loader worker (they are separate processes)
    torch_threads: int
    versions: dict
    scale: ScaleFacts
    schema_version: int = SCHEMA_VERSION
    eval_history: list[dict] = field(default_factory=list)  # {step, eval_loss, wer} at each --eval-steps evaluation
    best_step: int | None = None  # the step whose LoRA state was kept and measured as "tuned" (None: the last)
    best_metric: str | None = None  # what chose best_step (wer or eval_loss); None without --eval-steps
    baseline_wer_ci95: list[float] | None = None  # bootstrap 95% interval of the baseline WER (utterances resampled)
    tuned_wer_ci95: list[float] | None = None
    wer_delta_clustered_ci95: WerChange | None = None  # speaker-clustered bootstrap (lora.clustered_bootstrap)
    target_style: TargetStyle | None = None
    raw_insertions_before: int | None = None  # held-out insertions before normalisation (loops show here)
    raw_insertions_after: int | None = None
    max_hyp_ref_word_ratio: float | None = None  # tuned: the longest hypothesis / its reference, in words
    outputs_over_2x_ref: int | None = None  # tuned hypotheses more than twice their reference's words
    terms: TermResult | None = None  # --terms: your vocabulary's recall before -> after


@dataclass(frozen=True)
class EvalResult:
    """`eval.json`: one model (+ adapter) on one manifest or folder."""

    model_id_requested: str
    model_id_used: str
    model_source: str
    model_path: str
    adapter_dir: str | None
    family: str
    data: str
    utterances: int
    audio_seconds: float
    wer: float | None
    cer: float | None
    wer_ci95: list[float] | None
    eval_loss: float
    substitutions: int
    deletions: int
    insertions: int
    ref_words: int
    samples: list[dict]
    wall_seconds: float
    versions: dict
    schema_version: int = SCHEMA_VERSION
    # clips over 30 s, transcribed by the long-form path (lora.longform) and scored apart (no eval
    # loss: the models take 30 s at most): id, seconds, reference, hypothesis, wer, segments
    # [{start_s, end_s, text}] (+ base_wer with `--compare-base`); long_form_wer pools their word errors
    # (None without such clips)
    long_form: list[dict] = field(default_factory=list)
    long_form_wer: float | None = None
    long_form_base_wer: float | None = None  # the same long clips by the base model (`--compare-base`)
    # rows the adapter's run trained on (its lora_run.json): their WER is not held-out (a warning says so)
    trained_utterances: int = 0
    trained_speakers: list[str] = field(default_factory=list)
    orthographic_wer: float | None = None  # case + punctuation kept, against the references as written
    raw_insertions: int | None = None  # insertions before the scoring normaliser
    max_hyp_ref_word_ratio: float | None = None
    outputs_over_2x_ref: int | None = None
    # against the base model's own output (`--compare-base`): does the adapter keep its style?
    base_model_wer: float | None = None
    punctuation_f1_vs_base: float | None = None
    capitalisation_f1_vs_base: float | None = None
    terms: TermResult | None = None  # --terms: your vocabulary's recall (before = the base model with --compare-base)


@dataclass(frozen=True)
class SttArtifact:
    """`artifact_test.json`: transcripts of a manifest or path list (the seed's keys: samples, wer, errors)."""

    model_id_requested: str
    model_id_used: str
    model_source: str
    model_path: str
    adapter_dir: str
    processor_dir: str | None
    samples: list[dict]  # id, reference (None without one), hypothesis, wer
    wer: float | None
    cer: float | None
    errors: list[dict]  # id, origin, reason, detail: rows that could not be transcribed
    schema_version: int = SCHEMA_VERSION
    # long-form (lora.longform): per clip, its segments {id, start_s, end_s, text}; a clip up to
    # max_chunk_s is one segment spanning it, a longer one is cut by VAD into chunks <= max_chunk_s
    segments: list[dict] = field(default_factory=list)
    max_chunk_s: float = 30.0
    exported_dir: str | None = None  # `--exported DIR`: the model ran in the exported runtime


@dataclass(frozen=True)
class ExportReport:
    """`export_report.json`: what was exported and how it compares with PyTorch and the original."""

    format: str
    family: str
    runtime: str
    original: str
    adapter_dir: str
    model_id_requested: str  # the base model the adapter was merged into
    model_id_used: str
    model_source: str
    model_path: str
    output: str
    files: dict[str, int]
    export_seconds: float
    parity_data: str
    utterances: int
    audio_seconds: float
    wer: dict  # pytorch_merged / exported / original_base_model -> {wer, cer, ref_words}
    wer_gap_points: float
    identical_transcripts_vs_pytorch: float
    speed_audio_seconds_per_second: dict
    speed_ratio_exported_vs_original: float
    targets: dict
    samples: list[dict]
    versions: dict
    schema_version: int = SCHEMA_VERSION


def to_dict(result) -> dict:
    return dataclasses.asdict(result)


def write_result(path: str | Path, result) -> Path:
    """Write a result dataclass as JSON, atomically."""
    return write_json_atomic(path, to_dict(result))


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Rebuild a result dataclass (nested WerChange/CanaryResult included); unknown keys are an error."""
    hints = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(hints))
    if unknown:
        raise UserError(f"{cls.__name__}: unknown key(s) {unknown}; the file was written by another version of lora")
    values = dict(data)
    for name, nested in (("wer_delta_ci95", WerChange), ("canary", CanaryResult), ("scale", ScaleFacts),
                         ("wer_delta_clustered_ci95", WerChange), ("target_style", TargetStyle), ("terms", TermResult),
                         ("term_error_rate_change_ci95", WerChange)):
        if isinstance(values.get(name), dict) and name in hints:
            values[name] = from_dict(nested, values[name])
    return cls(**values)


def _json_kind(value) -> str:
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    return {dict: "an object", list: "a list", str: "a string"}.get(type(value), type(value).__name__)


def _kind_problem(hint, value, name: str) -> str | None:
    """Why `value` is not of the JSON kind `hint` declares (None: it is, or is null, or the hint says nothing)."""
    if value is None:
        return None
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = next((a for a in typing.get_args(hint) if a is not type(None)), Any)
    origin, args = typing.get_origin(hint) or hint, typing.get_args(hint)
    if dataclasses.is_dataclass(origin):
        return shape_problem(origin, value, f"{name}.") if isinstance(value, dict) else f"{name} is {_json_kind(value)}, expected an object"
    if origin is list:
        if not isinstance(value, list):
            return f"{name} is {_json_kind(value)}, expected a list"
        element = args[0] if args else Any
        if element is dict or dataclasses.is_dataclass(element) or element in (int, float):  # what a reader indexes or counts with
            return next((p for i, v in enumerate(value) if (p := _kind_problem(element, v, f"{name}[{i}]"))), None)
        return None
    expected = {dict: ("an object", dict), str: ("a string", str), bool: ("true/false", bool),
                int: ("a number", int | float), float: ("a number", int | float)}.get(origin)
    if expected is None:
        return None
    ok = isinstance(value, expected[1]) and (origin is bool or not isinstance(value, bool))
    return None if ok else f"{name} is {_json_kind(value)}, expected {expected[0]}"


def shape_problem(cls: type, data: dict, where: str = "") -> str | None:
    """The first field of `data` whose JSON kind (object, list, string, number, true/false) is not what `cls`
    declares, as `field is a string, expected an object` (None: every field fits). Nulls and keys `cls` does not
    know pass, so a file of an older run still reads; per-utterance rows are only checked to be objects."""
    hints = typing.get_type_hints(cls)
    for name, value in data.items():
        if name in hints and (problem := _kind_problem(hints[name], value, f"{where}{name}")):
            return problem
    return None


def read_result(path: str | Path, cls: type[T]) -> T:
    """Read a result file into its dataclass, with a one-line error when it is missing or malformed."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror}); run the command that writes it first") from None
    except ValueError as exc:
        raise UserError(f"{path}: not valid JSON ({exc}); the file is damaged, run the command again") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object, got {_json_kind(data)}; the file is damaged, run the command again")
    if data.get("schema_version") != SCHEMA_VERSION:
        raise UserError(f"{path}: schema_version {data.get('schema_version')!r}, this lora reads {SCHEMA_VERSION}; "
                        "run the command again with this version")
    try:
        return from_dict(cls, data)
    except TypeError as exc:
        raise UserError(f"{path}: does not match {cls.__name__} ({exc}); run the command again") from None
