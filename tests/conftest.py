"""Shared fixtures: the real speech folder and the real imported models (converted once per cache).

The imported models live under `$LORA_HOME` (default `~/.cache/lora`); the first test session
converts them (seconds), later sessions reuse the cache (the import is idempotent).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SPEECH_DIR = Path(os.environ.get("LORA_SPEECH_DIR") or ROOT.parent / "shared" / "speech")
LIBRISPEECH_SUBSETS = ("test-clean", "dev-clean")


@pytest.fixture(autouse=True)
def fresh_accelerator_state():
    """Each test starts without an earlier test's accelerate state: it is one per process, so a test that builds
    `Accelerator()` for fp32 would otherwise train in whatever precision an earlier in-process run chose (bf16
    where `--mixed-precision auto` finds it faster: a loss comparison then sees bf16 rounding)."""
    state = sys.modules.get("accelerate.state")  # not imported for it: most tests never touch accelerate
    if state is not None:
        state.AcceleratorState._reset_state(reset_partial_state=False)
    yield


@pytest.fixture(scope="session")
def speech_dir() -> Path:
    if not (SPEECH_DIR / "manifest.jsonl").is_file():
        pytest.fail(f"real speech folder not found at {SPEECH_DIR} (set LORA_SPEECH_DIR)")
    return SPEECH_DIR


@pytest.fixture(scope="session")
def librispeech_utterances(speech_dir):
    """The real LibriSpeech utterances of the shared folder (test-clean + dev-clean)."""
    from lora.data.records import read_librispeech_dir

    return read_librispeech_dir(speech_dir, list(LIBRISPEECH_SUBSETS))


@pytest.fixture(scope="session")
def moonshine_dir() -> Path:
    from lora.importing import cached_import

    return cached_import("moonshine-base-en", progress=lambda m: None)


@pytest.fixture(scope="session")
def whisper_dir() -> Path:
    from lora.importing import cached_import

    return cached_import("whisper-tiny.en", progress=lambda m: None)


# Tiny random-initialised models built from the real configs: same vocab, special tokens and
# processor as the imported models, with layer sizes cut down so unit tests run in seconds.
TINY_OVERRIDES = {
    "moonshine": dict(hidden_size=64, intermediate_size=128, encoder_num_hidden_layers=1, decoder_num_hidden_layers=1,
                      encoder_num_attention_heads=2, decoder_num_attention_heads=2,
                      encoder_num_key_value_heads=2, decoder_num_key_value_heads=2),
    "whisper": dict(d_model=64, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
                    encoder_ffn_dim=128, decoder_ffn_dim=128),
}


def build_tiny_model(real_dir: Path, out_dir: Path) -> Path:
    import shutil

    import torch
    from transformers import AutoConfig, AutoModelForSpeechSeq2Seq

    config = AutoConfig.from_pretrained(real_dir)
    for key, value in TINY_OVERRIDES[config.model_type].items():
        setattr(config, key, value)
    torch.manual_seed(0)
    model = AutoModelForSpeechSeq2Seq.from_config(config)
    model.save_pretrained(out_dir)
    for path in real_dir.iterdir():  # processor, tokenizer and generation files of the real model
        if path.suffix in {".json", ".txt", ".model"} and path.name not in {"config.json", "lora_import.json"}:
            if not (out_dir / path.name).exists() or path.name == "generation_config.json":
                shutil.copy(path, out_dir / path.name)
    return out_dir


@pytest.fixture(scope="session")
def tiny_moonshine(moonshine_dir, tmp_path_factory) -> Path:
    return build_tiny_model(moonshine_dir, tmp_path_factory.mktemp("tiny_moonshine"))


@pytest.fixture(scope="session")
def tiny_whisper(whisper_dir, tmp_path_factory) -> Path:
    return build_tiny_model(whisper_dir, tmp_path_factory.mktemp("tiny_whisper"))


@pytest.fixture(params=["moonshine", "whisper"])
def tiny_model_dir(request) -> Path:
    return request.getfixturevalue(f"tiny_{request.param}")
