"""Reuse the encoder's output across epochs when LoRA leaves the encoder untouched.

Why: with adapters only in the decoder (e.g. `--target-modules "model\\.decoder\\..*(q_proj|v_proj)"`),
the encoder is a fixed function of the audio. Small-data LoRA runs see each utterance many times,
so recomputing it every epoch is wasted work (for Whisper, whose encoder always reads 30 s, most
of the step). The cache is keyed by the micro-batch's members, not per clip, because padding is
part of the encoder's input (Moonshine's GroupNorm sees the padded frames); length-grouped batches
are the same every epoch, so the keys recur.

The cache only switches on when the result is provably the same as recomputing: no trainable
parameter in the encoder and no dropout or layer-drop configured (train-mode randomness would
differ, and skipping it would also shift the random stream the decoder's LoRA dropout draws from).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

MAX_CACHE_BYTES = 512 * 1024 * 1024  # beyond this, batches are encoded every time (same result)
_RANDOM_CONFIG_WORDS = ("dropout", "layerdrop")


def encoder_is_fixed(model) -> bool:
    """True when the encoder has no trainable weight and no configured train-time randomness."""
    import torch

    encoder = model.get_encoder()
    if any(p.requires_grad for p in encoder.parameters()):
        return False
    config = model.config.to_dict()
    if config.get("apply_spec_augment"):  # Whisper masks input features in train mode
        return False
    if any(isinstance(v, int | float) and v > 0 for k, v in config.items() if any(w in k for w in _RANDOM_CONFIG_WORDS)):
        return False
    return not any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in encoder.modules())


class EncoderCache:
    """Encoder outputs per micro-batch (keyed by its rows), computed without autograd."""

    def __init__(self, model, input_key: str, autocast: Callable[[], AbstractContextManager] = nullcontext,
                 max_bytes: int = MAX_CACHE_BYTES):
        self.encoder = model.get_encoder()
        self.input_key = input_key
        self.autocast = autocast  # the trainer's mixed-precision context, as its forward gets
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = 0
        self.store: dict[tuple[int, ...], object] = {}

    def model_inputs(self, members: list, batch: dict) -> dict:
        """`batch` with the audio inputs replaced by `encoder_outputs` (labels kept)."""
        import torch

        key = tuple(members)  # row indices: the same micro-batch recurs every epoch (fixed composition)
        encoded = self.store.get(key)
        if encoded is None:
            inputs = {k: v for k, v in batch.items() if k in (self.input_key, "attention_mask")}
            with torch.no_grad(), self.autocast():
                encoded = self.encoder(**inputs)
            size = encoded.last_hidden_state.numel() * encoded.last_hidden_state.element_size()
            if self.bytes + size <= self.max_bytes:
                self.store[key] = encoded
                self.bytes += size
        else:
            self.hits += 1
        return {"encoder_outputs": encoded, "labels": batch["labels"]}
