"""Fold a LoRA adapter into its base model and save a plain transformers folder.

`merge_adapter(adapter_dir, output)` loads the base model the adapter records (or `model_id`),
applies the adapter, `merge_and_unload`s it (W + (alpha/r)·B·A in every adapted projection) and
writes a folder that anything reading transformers checkpoints can load without PEFT:
`model.safetensors` + `config.json`, `generation_config.json`, the processor (feature extractor
and tokenizer files), a `README.md` model card and `lora_merge.json` (what was merged, from
where). `transformers.pipeline("automatic-speech-recognition", model=output)` loads it for both
Moonshine and Whisper. The folder is written to a temp folder beside `output` and renamed into
place; an existing `output` is replaced only when it is itself a merged folder.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from lora.core.errors import UserError
from lora.core.outputs import (
    library_versions,
    output_dir,
    quiet_progress_bars,
    replace_dir,
    write_json_atomic,
    writing,
)
from lora.export.merge import load_merged
from lora.model_card import write_model_card

log = logging.getLogger("lora")

MERGE_RECORD = "lora_merge.json"
RUN_METRICS_FILE = "real_metrics.json"  # the run folder's metrics, one level above lora_adapter/
REQUIRED_FILES = ("config.json", "model.safetensors", "generation_config.json", "preprocessor_config.json")
# what an adapter's run record (lora_run.json) and its run's real_metrics.json both say: differing, the metrics beside
# the adapter are another run's (an adapter copied into another run's folder)
SAME_RUN_KEYS = ("family", "train_ids")
# Files of a local base folder that no save_pretrained writes but readers use (Whisper's English
# text normaliser, read by the tokenizer's `normalize` and by evaluation scripts).
BASE_AUX_FILES = ("normalizer.json",)
# The longest clip the merged model's generation cap is sized for (Whisper's window; the pipeline
# chunks longer audio).
PIPELINE_MAX_SECONDS = 30.0


@dataclass(frozen=True)
class MergeOptions:
    """`lora merge`: fold an adapter into its base weights."""

    adapter_dir: Path = field(metadata={"help": "a run's lora_adapter/ folder"})
    output: Path = field(metadata={"help": "folder for the merged transformers model (replaced if it is one already)"})
    model_id: str | None = field(default=None, metadata={"help": "base model (default: the one the adapter records)"})


def run_metrics(adapter_dir: Path) -> dict:
    """The run's metrics record beside the adapter (`../real_metrics.json`), or {} when there is none."""
    path = Path(adapter_dir).resolve().parent / RUN_METRICS_FILE
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: unreadable run metrics ({exc}); fix or remove it to merge") from None


def own_metrics(metrics: dict, run_info: dict, adapter_dir: Path) -> dict:
    """`metrics` when they are the adapter's own run's, else {} (with a warning): the card shows no figures rather
    than another run's."""
    other = [k for k in SAME_RUN_KEYS if k in metrics and k in run_info and metrics[k] != run_info[k]]
    if other:
        log.warning("warning: %s is not the run of %s (its %s differ); the merged model's card shows no run figures",
                    Path(adapter_dir).resolve().parent / RUN_METRICS_FILE, adapter_dir, " and ".join(other))
        return {}
    return metrics


def card_info(run_info: dict, base: dict, metrics: dict, adapter_dir: Path) -> dict:
    """What the merged model's card shows: the run's metrics over its adapter record, marked merged."""
    return {**run_info, **metrics, **base, "merged": True, "merged_from": str(adapter_dir),
            "versions": metrics.get("versions") or library_versions()}


def check_output(adapter_dir: Path, output: Path) -> None:
    if output.resolve() == adapter_dir.resolve():
        raise UserError(f"--output {output}: is the adapter folder itself; choose another folder")
    if output.exists() and not (output / MERGE_RECORD).is_file() and (output.is_file() or any(output.iterdir())):
        raise UserError(f"--output {output}: exists and is not a merged model folder; choose another folder")


def copy_base_aux_files(base_dir: Path, out_dir: Path) -> list[str]:
    """Copy BASE_AUX_FILES the base folder has and `out_dir` lacks; returns the names copied."""
    copied = []
    for name in BASE_AUX_FILES:
        if base_dir.is_dir() and (base_dir / name).is_file() and not (out_dir / name).exists():
            shutil.copyfile(base_dir / name, out_dir / name)
            copied.append(name)
    return copied


def cap_generation(model, family, seconds: float = PIPELINE_MAX_SECONDS) -> int:
    """Set the generation config's `max_new_tokens` to the family's cap for `seconds` of audio (within
    the decoder's positions), so a plain `pipeline(...)` on the merged folder cannot run away."""
    cap = family.max_new_tokens(seconds)
    limit = getattr(model.config, "max_target_positions", None) or getattr(model.config, "max_position_embeddings", None)
    if limit:
        cap = min(cap, int(limit) // 2)  # Whisper checks prompt + new tokens against its 448 positions
    model.generation_config.max_new_tokens = cap
    return cap


def merge_adapter(adapter_dir: str | Path, output: str | Path, model_id: str | None = None) -> Path:
    """Merge `adapter_dir` into its base model and save the result to `output`; returns `output`."""
    adapter_dir, output = Path(adapter_dir), output_dir(output)
    check_output(adapter_dir, output)
    metrics = run_metrics(adapter_dir)
    merged = load_merged(adapter_dir, model_id)
    metrics = own_metrics(metrics, merged.run_info, adapter_dir)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with writing(output), quiet_progress_bars():
            merged.model.save_pretrained(str(tmp), safe_serialization=True)
            merged.processor.save_pretrained(str(tmp))
            # transformers 5 nests the feature extractor in processor_config.json; older readers
            # (transformers 4, CTranslate2/optimum converters) look for preprocessor_config.json
            merged.processor.feature_extractor.save_pretrained(str(tmp))
        copy_base_aux_files(Path(merged.base.get("model_path", "")), tmp)
        cap_generation(merged.model, merged.family)
        # the pipeline reads decoder start/eos and the length cap from it
        merged.model.generation_config.save_pretrained(str(tmp))
        missing = [name for name in REQUIRED_FILES if not (tmp / name).is_file()]
        if missing:
            raise UserError(f"merging {adapter_dir}: the saved model lacks {', '.join(missing)}; "
                            "the base model folder is incomplete")
        write_json_atomic(tmp / MERGE_RECORD, {"adapter_dir": str(adapter_dir.resolve()), "base": merged.base,
                                               "family": merged.family.name, "run_info": merged.run_info})
        write_model_card(tmp, card_info(merged.run_info, merged.base, metrics, adapter_dir))
        return replace_dir(tmp, output)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
