"""Optional packages: `require_extra(module, extra)` imports one or says, in one line, which extra to install.

The core install (`pip install lora`) trains and evaluates; Whisper import (`whisper`), Moonshine
import and its reference runtime (`moonshine`), ONNX/CTranslate2 export (`export`), report plots
(`report`), TensorBoard tracking (`tracking`) and long-form VAD (`longform`) are extras.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from lora.core.errors import UserError

PROJECT = "lora"


def install_hint(extra: str) -> str:
    return f"pip install '{PROJECT}[{extra}]' (or `uv sync` in a checkout)"


def require_extra(module: str, extra: str, purpose: str = "") -> ModuleType:
    """`module` imported, or a UserError naming the extra that provides it."""
    if importlib.util.find_spec(module.split(".")[0]) is None:
        what = f" for {purpose}" if purpose else ""
        raise UserError(f"the optional package {module.split('.')[0]!r} is not installed{what}; install the "
                        f"'{extra}' extra: {install_hint(extra)}")
    return importlib.import_module(module)


def has_extra_module(module: str) -> bool:
    return importlib.util.find_spec(module.split(".")[0]) is not None
