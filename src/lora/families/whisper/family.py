"""Whisper: 80-bin log-mel input padded to 30 s (the encoder's fixed length), prompted labels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lora.core.audio import SAMPLE_RATE
from lora.families.base import ModelFamily

WINDOW_SECONDS = 30.0  # the encoder's fixed input length


@dataclass(frozen=True)
class WhisperFamily(ModelFamily):
    def featurize(self, processor, samples: np.ndarray) -> np.ndarray:
        feats = processor.feature_extractor(samples, sampling_rate=SAMPLE_RATE, return_tensors="np")
        return np.asarray(feats["input_features"][0], dtype=np.float32)

    def pad_inputs(self, inputs: list[np.ndarray]) -> dict:
        """Features are already 30 s wide (HF Whisper requires 3000 frames), so just stack."""
        import torch

        return {"input_features": torch.from_numpy(np.stack(inputs))}

    def padded_seconds(self, seconds: float) -> float:
        """Every clip is padded to the encoder's 30 s window."""
        return max(seconds, WINDOW_SECONDS)

    def label_ids(self, tokenizer, text: str, policy: str | None = None) -> list[int]:
        """`<|notimestamps|> text <|endoftext|>`: the tokenizer's prompt minus the start token,
        which the model prepends itself as `decoder_start_token_id` when shifting labels. The text
        gets a leading space, as Whisper emits it (" Hello" is one token, "Hello" another)."""
        ids = list(tokenizer(" " + self.target(text, policy)).input_ids)
        start = tokenizer.convert_tokens_to_ids("<|startoftranscript|>")
        if ids and ids[0] == start:
            ids = ids[1:]
        return ids


WHISPER = WhisperFamily(
    name="whisper",
    input_key="input_features",
    default_target_modules=("q_proj", "k_proj", "v_proj", "out_proj"),
    target_policy="styled",
    tokens_per_second=6.0,
    min_new_tokens_cap=12,
)
