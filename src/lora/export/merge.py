"""Load a base model with its LoRA adapter and fold the adapter into the weights.

Why merge before exporting: runtimes (onnxruntime, CTranslate2) know nothing about LoRA; after
`merge_and_unload` the model is a plain transformers model with W + (alpha/r)·B·A in each adapted
projection, which the exporters read like any other checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lora.core.errors import UserError
from lora.model_utils import load_with_adapter, read_run_info


@dataclass
class MergedModel:
    model: object  # plain transformers model, eval mode, float32
    processor: object
    family: object  # lora.families.ModelFamily
    base: dict  # resolved base-model record (model_id_used, model_source, model_path)
    run_info: dict  # the adapter's lora_run.json


def recorded_family(adapter_dir: Path) -> str | None:
    """The family the adapter's run recorded (lora_run.json), read without importing torch."""

    if not Path(adapter_dir).is_dir():
        raise UserError(f"--adapter-dir {adapter_dir}: no such directory; pass a run's lora_adapter/ folder")
    return read_run_info(Path(adapter_dir)).get("family")


def load_merged(adapter_dir: Path, model_id: str | None = None) -> MergedModel:

    model, processor, family, resolved, info = load_with_adapter(Path(adapter_dir), model_id)
    merged = model.merge_and_unload()
    merged.eval()
    return MergedModel(merged, processor, family, resolved.record(), info)
