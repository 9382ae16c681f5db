"""Run configuration: frozen dataclasses whose fields carry their help text (as peft's `LoraConfig`).

CLI flags and `--config run.toml` files are generated from these fields, so a new option is one
field here. Precedence: dataclass default < TOML file < command-line flag.
"""

from __future__ import annotations

import argparse
import dataclasses
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path

from lora.errors import UserError


def opt(default, help: str, **extra):
    return field(default=default, metadata={"help": help, **extra})


@dataclass(frozen=True)
class TrainConfig:
    model_id: str = opt("auto", "hub id, local transformers dir, or import name (moonshine-base-en, whisper-tiny.en); "
                        "auto = UsefulSensors/moonshine-tiny when the hub answers, else moonshine-base-en")
    train_split: str = opt("train.100", "LibriSpeech split to train on (train.100 -> train-clean-100; any folder name works)")
    data_dir: str | None = opt(None, "local LibriSpeech-layout folder (default: hub, then $LORA_SPEECH_DIR, then ../shared/speech)")
    manifest: str | None = opt(None, "training manifest (JSONL/JSON/CSV/TSV/path list); split by speaker for eval")
    dataset_samples: int = opt(40, "number of training utterances")
    eval_samples: int = opt(8, "number of held-out (speaker-disjoint) evaluation utterances")
    train_speakers: str | None = opt(None, "comma-separated speakers to train on (overrides the random speaker split)")
    eval_speakers: str | None = opt(None, "comma-separated speakers to evaluate on")
    canary: str | None = opt(None, "manifest of general speech scored before/after to measure forgetting "
                             "(default: LibriSpeech/LJSpeech utterances of unseen speakers in the local speech folder)")
    canary_samples: int = opt(0, "cap on canary utterances (0 = all)")
    allow_shared_speakers: bool = opt(False, "allow speakers in both train and eval (WER is then not held-out)")
    allow_shared_text: bool = opt(False, "allow identical transcripts in train and eval (closed vocabularies, e.g. digits)")
    replay_subsets: str | None = opt(None, "comma-separated general-speech folders of the data dir mixed into training "
                                     "to prevent forgetting (e.g. dev-clean,jfk); the canary then leaves their speakers out")
    replay_share: float = opt(0.15, "share of training utterances drawn from the replay folders")
    join_clips: int = opt(1, "also train on runs of 2..N clips of one speaker joined end to end (1 = off): for "
                             "one-word domains, so the model does not learn to stop after one word")
    max_steps: int = opt(40, "optimizer steps")
    batch_size: int = opt(1, "utterances per micro-batch")
    gradient_accumulation_steps: int = opt(4, "micro-batches per optimizer step")
    eval_batch_size: int = opt(8, "utterances per evaluation/decoding batch")
    wer_batches: int = opt(0, "evaluation batches to decode for WER (0 = all eval utterances)")
    learning_rate: float = opt(1e-3, "peak learning rate (linear warm-up then linear decay)")
    warmup_ratio: float = opt(0.1, "fraction of steps spent warming up")
    weight_decay: float = opt(0.0, "AdamW weight decay")
    max_grad_norm: float = opt(1.0, "gradient clipping norm (0 = off)")
    lora_r: int = opt(8, "LoRA rank")
    lora_alpha: int = opt(16, "LoRA alpha (scale = alpha / r)")
    lora_dropout: float = opt(0.05, "dropout on the LoRA branch")
    target_modules: str | None = opt(None, "comma-separated module names to adapt (default: the family's attention projections)")
    target_policy: str | None = opt(None, "training-target text style: raw, lower, sentence, normalized (default: the family's)")
    seed: int = opt(42, "seed for data selection, splits, LoRA init and shuffling")
    output_dir: str = opt("outputs/real_small", "run folder: real_metrics.json, lora_adapter/, processor/")
    checkpoint_every: int = opt(10, "write a resumable checkpoint every N optimizer steps (0 = never)")
    resume: bool = opt(False, "continue from output_dir/checkpoint (same options) instead of starting over")
    mixed_precision: str = opt("auto", "auto (bf16 where the device computes it natively, else fp32), no, fp16 or bf16")
    quiet: bool = opt(False, "only warnings and the final summary")
    log_level: str = opt("INFO", "DEBUG, INFO, WARNING")

    @property
    def target_module_list(self) -> tuple[str, ...] | None:
        return split_csv(self.target_modules) or None


def split_csv(value: str | None) -> tuple[str, ...]:
    return tuple(s.strip() for s in (value or "").split(",") if s.strip())


# ---------------------------------------------------------------------------------------------
# dataclass <-> argparse / TOML


def _field_type(f: dataclasses.Field, cls) -> type:
    hint = typing.get_type_hints(cls)[f.name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def add_dataclass_args(parser: argparse.ArgumentParser, cls) -> None:
    """One `--flag` per field; defaults are SUPPRESSed so we can tell which flags were given."""
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        kind = _field_type(f, cls)
        help_text = f"{f.metadata.get('help', '')} (default: {f.default})"
        if kind is bool:
            parser.add_argument(flag, action="store_true", default=argparse.SUPPRESS, help=help_text)
        else:
            parser.add_argument(flag, type=kind, default=argparse.SUPPRESS, help=help_text)
    parser.add_argument("--config", default=argparse.SUPPRESS, help="TOML file of the same options (flags override it)")


def load_toml(path: str | Path, cls) -> dict:
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise UserError(f"{path}: cannot read config ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: invalid TOML: {exc}") from None
    data = {k.replace("-", "_"): v for k, v in data.items()}
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise UserError(f"{path}: unknown option(s) {unknown}; see --help for the names")
    return data


def config_from_args(cls, namespace: argparse.Namespace):
    given = vars(namespace).copy()
    values = load_toml(given.pop("config"), cls) if "config" in given else {}
    values.update({k: v for k, v in given.items() if k in {f.name for f in dataclasses.fields(cls)}})
    return cls(**values)
