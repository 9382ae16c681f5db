"""The family registry: each model family is one folder here, listed once in `REGISTRY`.

A family package exposes `FAMILY` (a `ModelFamily`: features, labels, padding, caps), `IMPORTS`
(packaged models `lora import` converts) and `EXPORTS` (on-device formats `lora export` writes).
Adding a family is one folder plus one line below; nothing else in the code branches on a family.
"""

from __future__ import annotations

import importlib
from functools import cache
from types import ModuleType

from lora.core.errors import UserError
from lora.families.base import (
    IGNORE_INDEX,
    ExportFormat,
    ImportSpec,
    ModelFamily,
    bucket_length,
    pad_labels,
)

# model_type of the transformers config -> the package holding that family
REGISTRY: dict[str, str] = {
    "moonshine": "lora.families.moonshine",
    "whisper": "lora.families.whisper",
}


@cache
def family_package(model_type: str) -> ModuleType:
    """The package of one registered family (imported on first use)."""
    try:
        return importlib.import_module(REGISTRY[model_type])
    except KeyError:
        raise UserError(
            f"model type {model_type!r} is not supported; supported families: {', '.join(REGISTRY)}"
        ) from None


def family_for(model_type: str) -> ModelFamily:
    """The family of a transformers `config.model_type`."""
    return family_package(model_type).FAMILY


def all_families() -> dict[str, ModelFamily]:
    return {name: family_for(name) for name in REGISTRY}


def all_imports() -> dict[str, ImportSpec]:
    """Every packaged model any family can import, by import name."""
    return {spec.name: spec for name in REGISTRY for spec in family_package(name).IMPORTS}


def all_exports() -> dict[str, ExportFormat]:
    """Every export format any family writes, by format name."""
    return {fmt.name: fmt for name in REGISTRY for fmt in family_package(name).EXPORTS}


def resolve_callable(path: str):
    """`"package.module:function"` -> the function (family code is imported only when used)."""
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


__all__ = ["IGNORE_INDEX", "REGISTRY", "ExportFormat", "ImportSpec", "ModelFamily", "all_exports",
           "all_families", "all_imports", "bucket_length", "family_for", "family_package", "pad_labels", "resolve_callable"]
