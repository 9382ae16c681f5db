"""lora: LoRA fine-tuning of small on-device speech recognisers.

`lora.load_adapter(dir)` returns (model, processor) for a run's `lora_adapter/` folder: the base
model it records (an import name such as `moonshine-base-en`, or a hub id) with the adapter applied.
Importing `lora` itself imports no torch; the function loads it when called. It does put one small fix to
transformers' start-up in place (`lora.core.transformers_startup`: its model index is built once, not twice).
"""

from lora.core import transformers_startup

transformers_startup.install()

__version__ = "0.1.0"
__all__ = ["load_adapter"]


def load_adapter(adapter_dir, model_id: str | None = None):
    """(model, processor) of a saved adapter folder; see `lora.model_utils.load_adapter`."""
    from lora.model_utils import load_adapter as _load  # deferred: pulls in torch/transformers/peft

    return _load(adapter_dir, model_id)
