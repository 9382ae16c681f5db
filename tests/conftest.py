"""Shared fixtures: the real speech folder and the real imported models (converted once per cache).

The imported models live under `$LORA_HOME` (default `~/.cache/lora`); the first test session
converts them (seconds), later sessions reuse the cache (the import is idempotent).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SPEECH_DIR = Path(os.environ.get("LORA_SPEECH_DIR") or ROOT.parent / "shared" / "speech")
LIBRISPEECH_SUBSETS = ("test-clean", "dev-clean")


@pytest.fixture(scope="session")
def speech_dir() -> Path:
    if not (SPEECH_DIR / "manifest.jsonl").is_file():
        pytest.fail(f"real speech folder not found at {SPEECH_DIR} (set LORA_SPEECH_DIR)")
    return SPEECH_DIR


@pytest.fixture(scope="session")
def librispeech_utterances(speech_dir):
    """The real LibriSpeech utterances of the shared folder (test-clean + dev-clean)."""
    from lora.utterances import read_librispeech_dir

    return read_librispeech_dir(speech_dir, list(LIBRISPEECH_SUBSETS))


@pytest.fixture(scope="session")
def moonshine_dir() -> Path:
    from lora.importers import cached_import

    return cached_import("moonshine-base-en", progress=lambda m: None)


@pytest.fixture(scope="session")
def whisper_dir() -> Path:
    from lora.importers import cached_import

    return cached_import("whisper-tiny.en", progress=lambda m: None)
