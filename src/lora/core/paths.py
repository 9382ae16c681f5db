"""Where the project keeps things on disk: the model cache and the default speech folder.

Kept free of heavy imports so every CLI can use it before torch is loaded.
"""

from __future__ import annotations

import os
from pathlib import Path

SHARED_SPEECH_RELATIVE = Path("..") / "shared" / "speech"


def lora_home() -> Path:
    """Root of the cache (`$LORA_HOME`, default `~/.cache/lora`)."""
    return Path(os.environ.get("LORA_HOME") or Path.home() / ".cache" / "lora").expanduser()


def imported_models_dir() -> Path:
    """Where import names (e.g. `moonshine-base-en`) are converted on first use."""
    return lora_home() / "models"


def default_speech_dir() -> Path | None:
    """`$LORA_SPEECH_DIR`, else `../shared/speech` when it exists, else None."""
    env = os.environ.get("LORA_SPEECH_DIR")
    if env:
        return Path(env).expanduser()
    if SHARED_SPEECH_RELATIVE.is_dir():
        return SHARED_SPEECH_RELATIVE.resolve()
    return None
