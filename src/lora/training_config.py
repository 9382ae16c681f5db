"""Run configuration: frozen dataclasses whose fields carry their help text (as peft's `LoraConfig`).

CLI flags and `--config run.toml|.json|.yaml` files are generated from these fields, so a new option
is one field here. Precedence: dataclass default < config file < command-line flag. Every value is
checked against its field's type (a config file's `max_steps = "40"` is an error, not a string), lists
are accepted where a comma-separated list is meant, and booleans can be switched off (`--no-resume`).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import math
import os
import re
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path

from lora.core.errors import UserError
from lora.core.text import TARGET_POLICIES

DEFAULT_SAMPLES = 40  # training rows drawn from the default speech source (the seed's small run)
DEFAULT_EVAL_SAMPLES = 8  # held-out rows split off the training data (the seed's)
MAX_AUTO_CLIPS = 1024  # clip cap of a micro-batch when only --max-batch-seconds bounds it


def opt(default, help: str, **extra):
    return field(default=default, metadata={"help": help, **extra})


@dataclass(frozen=True)
class TrainConfig:
    model_id: str = opt("auto", "hub id, local transformers dir, or import name (moonshine-base-en, whisper-tiny.en); "
                        "auto = UsefulSensors/moonshine-tiny when the hub answers, else moonshine-base-en")
    train_split: str = opt("train.100", "LibriSpeech split to train on (train.100 -> train-clean-100; any folder name works)")
    data_dir: str | None = opt(None, "local LibriSpeech-layout folder (default: hub, then $LORA_SPEECH_DIR, then ../shared/speech)")
    manifest: str | None = opt(None, "training manifest (JSONL/JSON/CSV/TSV/path list) or a folder (LibriSpeech layout, "
                               "a Kaldi data directory (wav.scp + text), a manifest.jsonl inside, or audio files with "
                               "same-name .txt/.lab transcripts); "
                               "split by speaker for eval")
    dataset: str | None = opt(None, "Hugging Face-style dataset to train on: a save_to_disk folder, an audiofolder "
                              "(metadata.csv/jsonl + audio), Parquet/Arrow files (file, glob or folder), a Common Voice "
                              "folder, or a hub dataset name (streamed); split by speaker for eval. From Python, "
                              "pipeline.select_data(cfg, dataset=<datasets.Dataset>) takes a Dataset object")
    dataset_split: str = opt("train", "split of --dataset (DatasetDict, audiofolder/Common Voice subfolder, hub split)")
    audio_column: str | None = opt(None, "audio column of --dataset (default: first of audio, path, file_name, file, audio_filepath)")
    text_column: str | None = opt(None, "transcript column of --dataset (default: first of text, sentence, transcription, "
                                  "transcript, normalized_text)")
    speaker_column: str | None = opt(None, "speaker column of --dataset (default: first of speaker_id, speaker, client_id)")
    dataset_samples: int | None = opt(None, "number of training utterances ('all' or 0 = every usable row; default: "
                                      "all rows of a --manifest/--dataset you name, else 40 of the default speech)")
    eval_samples: int | None = opt(None, "number of held-out (speaker-disjoint) evaluation utterances (default: 8, or "
                                         "every usable row of --eval-manifest)")
    eval_manifest: str | None = opt(None, "your own held-out test set (a manifest or folder, read as --manifest is): the eval "
                                          "set instead of speakers split off the training data, which then all train")
    terms: str | None = opt(None, "your vocabulary: a text file, one term or phrase per line (# comments); how often "
                                  "the model writes them where the eval set says them, before -> after (lora.term_recall)")
    train_speakers: str | None = opt(None, "comma-separated speakers to train on (overrides the random speaker split; "
                                            "alone: every other speaker evaluates)")
    eval_speakers: str | None = opt(None, "comma-separated speakers to evaluate on (alone: every other speaker trains)")
    canary: str | None = opt(None, "manifest of general speech scored before/after to measure forgetting "
                             "(default: LibriSpeech/LJSpeech utterances of unseen speakers in the local speech folder)")
    canary_samples: int = opt(0, "cap on canary utterances (0 = all)")
    allow_shared_speakers: bool = opt(False, "allow speakers in both train and eval (WER is then not held-out)")
    allow_shared_text: bool = opt(False, "allow identical transcripts in train and eval (closed vocabularies, e.g. digits)")
    replay_subsets: str | None = opt(None, "comma-separated general-speech folders of the data dir mixed into training "
                                     "to prevent forgetting (e.g. dev-clean,jfk); the canary then leaves their speakers out")
    replay_share: float = opt(0.15, "share of training utterances drawn from the replay folders")
    replay_distillation: float = opt(0.0, "weight of a term that keeps the model's next-token distributions on the replay "
                                     "clips those of the base model (KL to the model with its adapters off: learning "
                                     "without forgetting); 0 = off, replay then teaches only its targets")
    prepared_cache: bool = opt(True, "reuse the checked, selected and styled rows of a large manifest (20,000+ training rows) "
                               "read before with the same options, files and code (cached under $LORA_HOME/prepared_rows/)")
    join_clips: int = opt(1, "also train on runs of 2..N clips of one speaker joined end to end (1 = off): for "
                             "one-word domains, so the model does not learn to stop after one word")
    max_steps: int = opt(40, "optimizer steps (ignored when --num-epochs is set)")
    num_epochs: float = opt(0.0, "passes over the training rows; sets the number of steps (0 = use --max-steps)")
    batch_size: int = opt(0, "utterances per micro-batch at most (0 = automatic: 1, the seed's micro-batch, or with "
                          "--max-batch-seconds as many as fit, up to 1024)")
    max_batch_seconds: float = opt(0.0, "padded audio seconds per micro-batch at most (similar lengths batched together; "
                                   "Whisper counts 30 s per clip); 0 = --batch-size clips")
    length_buckets: bool = opt(True, "with --max-batch-seconds: pad each micro-batch's audio and labels up to one of 8 "
                               "lengths per doubling, so batch shapes repeat")
    num_workers: int = opt(-1, "data loader worker processes that decode and featurise (-1 = one per spare core, at most 8; "
                           "0 = in the training process)")
    gradient_accumulation_steps: int = opt(4, "micro-batches per optimizer step")
    eval_batch_size: int = opt(8, "utterances per evaluation/decoding batch")
    wer_batches: int = opt(0, "evaluation batches to decode for WER (0 = all eval utterances)")
    learning_rate: float = opt(1e-3, "peak learning rate (reached after the warm-up; --lr-scheduler-type sets the decay)")
    warmup_ratio: float = opt(0.1, "fraction of steps spent warming up (ignored when --warmup-steps > 0)")
    warmup_steps: int = opt(0, "optimizer steps spent warming up (0 = use --warmup-ratio)")
    lr_scheduler_type: str = opt("linear", "learning-rate schedule after warm-up: linear, cosine or constant_with_warmup")
    weight_decay: float = opt(0.0, "AdamW weight decay")
    max_grad_norm: float = opt(1.0, "gradient clipping norm (0 = off)")
    lora_r: int = opt(8, "LoRA rank")
    lora_alpha: int = opt(16, "LoRA alpha (scale = alpha / r)")
    lora_dropout: float = opt(0.05, "dropout on the LoRA branch")
    target_modules: str | None = opt(None, "comma-separated module names to adapt (default: the family's attention projections)")
    target_policy: str | None = opt(None, "training-target text style: styled (the base model's casing and punctuation carried "
                                    "onto unstyled references), raw, lower, sentence, normalized (default: the family's, styled)")
    style_consensus: bool = opt(False, "styled targets: a reference text spoken on 3+ distinct clips (a prompt list: digits, "
                                "commands) gets the styled form most of its clips give, not each clip's own")
    style_on_draw: str = opt("auto", "styled targets: transcribe a clip with the base model when training first draws it (in the "
                             "training process, adapters off) instead of every clip before the first step: yes, no, or auto "
                             "(yes for corpora of more than 256 distinct clips to style, unless --style-consensus or "
                             "--join-clips, which need every transcript first)")
    seed: int = opt(42, "seed for data selection, splits, LoRA init and shuffling")
    output_dir: str = opt("outputs/real_small", "run folder: real_metrics.json, lora_adapter/, processor/")
    checkpoint_every: int = opt(10, "write a resumable checkpoint every N optimizer steps (0 = never)")
    resume: bool = opt(False, "continue from output_dir/checkpoint (same options) instead of starting over")
    resume_from_checkpoint: str | None = opt(None, "run folder (or its checkpoint/ folder) to continue from; implies --resume "
                                             "(TrainingArguments spelling)")
    logging_steps: int = opt(1, "send training scalars to the trackers every N optimizer steps")
    report_to: str = opt("tensorboard", "experiment tracking: tensorboard, wandb, mlflow, trackio (comma-separated) or none; "
                         "TensorBoard event files go to <output-dir>/runs/")
    run_name: str | None = opt(None, "run name in the tracker (default: the start time)")
    baseline_first: bool = opt(False, "measure the baseline (eval set + canary) before the first step, an early look at the "
                               "eval set on a long run; by default it is measured after training with the adapters switched "
                               "off (the same figures, and the first step is not kept waiting)")
    eval_steps: int = opt(0, "measure eval loss + WER every N optimizer steps and keep the best adapter (0 = only at the end)")
    eval_subset: int = opt(0, "utterances of the eval set decoded at each --eval-steps evaluation (0 = all)")
    metric_for_best_model: str = opt("wer", "what picks the kept adapter under --eval-steps: wer, eval_loss or "
                                            "term_error_rate (with --terms) (lower is better)")
    early_stopping_patience: int = opt(0, "stop after N evaluations without improvement of --metric-for-best-model (0 = never)")
    mixed_precision: str = opt("auto", ("auto (bf16 where the device computes it natively and, on a CPU, a cached probe finds it "
                                              "at least 1.1x faster, else fp32; lora doctor says which), no, fp16 or bf16"))
    compile: bool = opt(False, "torch.compile the model, once for every batch shape (opt-in: slower than eager on a CPU and on an H200, RESULTS.md)")
    quiet: bool = opt(False, "only warnings and the final summary")
    log_level: str = opt("INFO", "DEBUG, INFO, WARNING")

    @property
    def training_rows(self) -> int:
        """--dataset-samples resolved: 0 (all) for data the user named, 40 for the default source."""
        if self.dataset_samples is not None:
            return self.dataset_samples
        return 0 if self.manifest or getattr(self, "dataset", None) else DEFAULT_SAMPLES

    @property
    def eval_rows(self) -> int:
        """--eval-samples resolved: 0 (all) for an --eval-manifest, else 8."""
        if self.eval_samples is not None:
            return self.eval_samples
        return 0 if self.eval_manifest else DEFAULT_EVAL_SAMPLES

    @property
    def clips_per_batch(self) -> int:
        """The clip cap of a micro-batch: --batch-size, else 1 (the seed's), else up to 1024 under a seconds cap."""
        if self.batch_size:
            return self.batch_size
        return MAX_AUTO_CLIPS if self.max_batch_seconds > 0 else 1

    @property
    def target_module_list(self) -> tuple[str, ...] | None:
        return split_csv(self.target_modules) or None


def split_csv(value: str | None) -> tuple[str, ...]:
    return tuple(s.strip() for s in (value or "").split(",") if s.strip())


# ---------------------------------------------------------------------------------------------
# dataclass <-> argparse / config files

CONFIG_SUFFIXES = (".toml", ".json", ".yaml", ".yml")
LIST_FIELDS = ("target_modules", "train_speakers", "eval_speakers", "replay_subsets")  # comma-separated strings
ALL_ROWS = ("all", "0")
LR_SCHEDULERS = ("linear", "cosine", "constant_with_warmup")
BEST_METRICS = ("wer", "eval_loss", "term_error_rate")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _field_type(f: dataclasses.Field, cls) -> type:
    hint = typing.get_type_hints(cls)[f.name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def _samples(value: str) -> int:
    """--dataset-samples: a count, or `all` (stored as 0)."""
    if value.strip().lower() in ALL_ROWS:
        return 0
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number or 'all', got {value!r}") from None
    if number < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0 or 'all', got {value!r}")
    return number


def add_dataclass_args(parser: argparse.ArgumentParser, cls) -> None:
    """One `--flag` per field; defaults are SUPPRESSed so we can tell which flags were given."""
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        kind = _field_type(f, cls)
        help_text = f.metadata.get("help", "")
        if "default:" not in help_text:  # a help that names its own default (e.g. what None means) keeps only that
            help_text += f" (default: {f.default})"
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text)
        elif f.name == "dataset_samples":
            parser.add_argument(flag, type=_samples, default=argparse.SUPPRESS, help=help_text)
        else:
            parser.add_argument(flag, type=kind, default=argparse.SUPPRESS, help=help_text)
    parser.add_argument("--config", default=argparse.SUPPRESS,
                        help="TOML, JSON or YAML file of the same options (flags override it)")


def read_config_file(path: str | Path) -> dict:
    """The options of a TOML/JSON/YAML file as a dict (syntax checked, values not yet)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in CONFIG_SUFFIXES:
        raise UserError(f"{path}: config files must end in {', '.join(CONFIG_SUFFIXES)}; rename it or convert it")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"{path}: cannot read config ({exc.strerror}); check the path") from None
    try:
        text = data.decode("utf-8-sig")  # a byte-order mark (as Notepad saves) is not part of the options
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise UserError(f"{path}:{line}: not UTF-8 (byte 0x{data[exc.start]:02x}); re-save the config file as UTF-8") from None
    try:
        if suffix == ".toml":
            data = tomllib.loads(text)
        elif suffix == ".json":
            data = json.loads(text)
        else:
            import yaml  # deferred: only YAML configs need it

            data = yaml.safe_load(text) or {}
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: invalid {suffix[1:].upper()}: {exc}; fix the syntax") from None
    except Exception as exc:  # yaml.YAMLError and its subclasses, with their line/column
        raise UserError(f"{path}: invalid YAML: {' '.join(str(exc).split())}; fix the syntax") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a table of options at the top level, got a {type(data).__name__}")
    return data


def check_value(cls, name: str, value, where: str):
    """`value` converted to the field's type, or a one-line UserError naming the option and the file."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    kind = _field_type(f, cls)
    hint = typing.get_type_hints(cls)[name]
    optional = type(None) in typing.get_args(hint)

    def bad(expected: str):
        return UserError(f"{where}: option {name!r} expects {expected}, got {type(value).__name__} {value!r}; "
                         f"see --help for {('--' + name.replace('_', '-'))}")

    if value is None:
        if optional:
            return None
        raise bad(f"a {kind.__name__}")
    if name in LIST_FIELDS and isinstance(value, list):
        if not all(isinstance(v, str) for v in value):
            raise bad("a list of strings")
        return ",".join(value)
    if name == "dataset_samples" and isinstance(value, str) and value.strip().lower() in ALL_ROWS:
        return 0
    if kind is bool:
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("a whole number")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad("a number")
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise bad("a string" + (" or a list of strings" if name in LIST_FIELDS else ""))
        return value
    return value


def key_lines(path: str | Path, keys) -> dict[str, str]:
    """`path:line` of the first line that sets each key at its start (`key = `, `key:`, `"key":`), else `path`:
    tomllib, json and yaml.safe_load keep no line numbers for the values they return. The file is read once."""
    try:
        lines = Path(path).read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError):
        lines = []
    where = {}
    for key in keys:
        setting = re.compile(rf"""^\s*[{{,]?\s*["']?{re.escape(key)}["']?\s*[:=]""")
        where[key] = next((f"{path}:{n}" for n, line in enumerate(lines, 1) if setting.match(line)), str(path))
    return where


def load_config_file(path: str | Path, cls) -> dict:
    read = read_config_file(path)
    data = {str(k).replace("-", "_"): v for k, v in read.items()}
    where = {str(k).replace("-", "_"): line for k, line in key_lines(path, map(str, read)).items()}  # as spelled there
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        close = difflib.get_close_matches(unknown[0], known, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise UserError(f"{where[unknown[0]]}: unknown option(s) {unknown}; {hint}see --help for the names")
    return {k: check_value(cls, k, v, where[k]) for k, v in data.items()}


def validate(cfg: TrainConfig) -> TrainConfig:
    """Ranges a type cannot say; one line per problem, naming the flag."""
    rules = [
        (cfg.max_steps >= 1 or cfg.num_epochs > 0, "--max-steps must be >= 1 (or set --num-epochs)"),
        (cfg.num_epochs >= 0, "--num-epochs must be >= 0"),
        (cfg.batch_size >= 0, "--batch-size must be >= 1 (or 0 for automatic)"),
        (cfg.max_batch_seconds >= 0, "--max-batch-seconds must be >= 0 (0 = off)"),
        (cfg.gradient_accumulation_steps >= 1, "--gradient-accumulation-steps must be >= 1"),
        (cfg.eval_batch_size >= 1, "--eval-batch-size must be >= 1"),
        (cfg.learning_rate > 0, "--learning-rate must be > 0"),
        (0 <= cfg.warmup_ratio < 1, "--warmup-ratio must be in [0, 1)"),
        (0 <= cfg.lora_dropout < 1, "--lora-dropout must be in [0, 1)"),
        (cfg.lora_r >= 1, "--lora-r must be >= 1"),
        (cfg.lora_alpha >= 1, "--lora-alpha must be >= 1 (the LoRA update is scaled by alpha / r; 0 trains nothing)"),
        (cfg.weight_decay >= 0, "--weight-decay must be >= 0"),
        (cfg.max_grad_norm >= 0, "--max-grad-norm must be >= 0 (0 = off)"),
        (0 <= cfg.seed < 2**32, "--seed must be within 0..4294967295"),
        (cfg.join_clips >= 1, "--join-clips must be >= 1 (1 = off)"),
        (cfg.canary_samples >= 0, "--canary-samples must be >= 0 (0 = all)"),
        (cfg.wer_batches >= 0, "--wer-batches must be >= 0 (0 = all eval utterances)"),
        (cfg.checkpoint_every >= 0, "--checkpoint-every must be >= 0 (0 = never)"),
        (cfg.eval_samples is None or cfg.eval_samples >= 1, "--eval-samples must be >= 1"),
        (not (cfg.eval_manifest and (cfg.train_speakers or cfg.eval_speakers)),
         "--eval-manifest is the eval set: drop --train-speakers/--eval-speakers"),
        (0 <= cfg.replay_share < 1, "--replay-share must be in [0, 1)"),
        (cfg.replay_distillation >= 0, "--replay-distillation must be >= 0 (0 = off)"),
        (cfg.replay_distillation == 0 or bool(cfg.replay_subsets), "--replay-distillation needs --replay-subsets"),
        (cfg.num_workers >= -1, "--num-workers must be >= 0 (or -1 for automatic)"),
        (cfg.warmup_steps >= 0, "--warmup-steps must be >= 0"),
        (cfg.lr_scheduler_type in LR_SCHEDULERS, f"--lr-scheduler-type must be one of {', '.join(LR_SCHEDULERS)}"),
        (cfg.logging_steps >= 1, "--logging-steps must be >= 1"),
        (cfg.eval_steps >= 0, "--eval-steps must be >= 0 (0 = only at the end)"),
        (cfg.eval_subset >= 0, "--eval-subset must be >= 0 (0 = the whole eval set)"),
        (cfg.metric_for_best_model in BEST_METRICS, f"--metric-for-best-model must be one of {', '.join(BEST_METRICS)}"),
        (cfg.metric_for_best_model != "term_error_rate" or bool(cfg.terms),
         "--metric-for-best-model term_error_rate needs --terms FILE (the terms it is the error rate of)"),
        (cfg.early_stopping_patience >= 0, "--early-stopping-patience must be >= 0"),
        (cfg.early_stopping_patience == 0 or cfg.eval_steps > 0, "--early-stopping-patience needs --eval-steps"),
        (cfg.mixed_precision in ("auto", "no", "fp16", "bf16"), "--mixed-precision must be auto, no, fp16 or bf16"),
        (cfg.log_level.upper() in LOG_LEVELS, f"--log-level must be one of {', '.join(LOG_LEVELS)}"),
        (cfg.style_on_draw in ("auto", "yes", "no"), "--style-on-draw must be auto, yes or no"),
        (cfg.target_policy in (None, *TARGET_POLICIES), f"--target-policy must be one of {', '.join(TARGET_POLICIES)}"),
        (cfg.style_on_draw != "yes" or not (cfg.style_consensus or cfg.join_clips > 1),
         "--style-on-draw yes cannot go with --style-consensus or --join-clips (they need every clip's transcript before "
         "the first step)"),
    ]
    for f in dataclasses.fields(cfg):  # nan / inf pass every range check below
        value = getattr(cfg, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"--{f.name.replace('_', '-')} {value}: must be a finite number; fix the flag or the config file")
    output = Path(cfg.output_dir).expanduser()
    if output.exists() and not output.is_dir():
        raise UserError(f"--output-dir {cfg.output_dir} is a file, not a folder; pass a folder for the run's outputs")
    if output.is_symlink() and not output.exists():  # mkdir said only "File exists"
        raise UserError(f"--output-dir {cfg.output_dir} is a link to {os.readlink(output)}, which does not exist; create "
                        "that folder or pass another --output-dir")
    for ok, message in rules:
        if not ok:
            raise UserError(f"{message}; fix the flag or the config file")
    return cfg


def config_from_args(cls, namespace: argparse.Namespace):
    given = vars(namespace).copy()
    values = load_config_file(given.pop("config"), cls) if "config" in given else {}
    values.update({k: v for k, v in given.items() if k in {f.name for f in dataclasses.fields(cls)}})
    cfg = cls(**values)
    return validate(cfg) if isinstance(cfg, TrainConfig) else cfg
