"""Per-family behaviour (Moonshine, Whisper). A new family is one new module plus one entry here."""

from __future__ import annotations

from lora.errors import UserError
from lora.families.base import IGNORE_INDEX, ModelFamily, pad_labels
from lora.families.moonshine import MOONSHINE
from lora.families.whisper import WHISPER

FAMILIES: dict[str, ModelFamily] = {"moonshine": MOONSHINE, "whisper": WHISPER}


def family_for(model_type: str) -> ModelFamily:
    """The family of a transformers `config.model_type`."""
    try:
        return FAMILIES[model_type]
    except KeyError:
        raise UserError(
            f"model type {model_type!r} is not supported; supported families: {', '.join(FAMILIES)}"
        ) from None


__all__ = ["FAMILIES", "IGNORE_INDEX", "ModelFamily", "family_for", "pad_labels"]
