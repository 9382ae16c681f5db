"""Moonshine: raw 16 kHz audio in (no mel, no 30 s padding), Llama-style SentencePiece labels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lora.core.audio import SAMPLE_RATE
from lora.families.base import ModelFamily, raw_waveforms


@dataclass(frozen=True)
class MoonshineFamily(ModelFamily):
    def featurize(self, processor, samples: np.ndarray) -> np.ndarray:
        feats = processor.feature_extractor(samples, sampling_rate=SAMPLE_RATE, return_tensors="np")
        return np.asarray(feats["input_values"][0], dtype=np.float32)

    def pad_inputs(self, inputs: list[np.ndarray], length: int | None = None) -> dict:
        """Dynamic padding to the longest clip of the batch (or to `length`, a shape bucket), with a mask.

        Padded in NumPy, then wrapped: row-by-row copies into a torch tensor measured 12x slower
        (148x vs 1,800x real time on 2 cores), enough to starve a GPU through the loader's workers."""
        import torch

        lengths = np.array([len(x) for x in inputs])
        width = max(int(lengths.max()), length or 0)
        values = np.zeros((len(inputs), width), dtype=np.float32)
        for i, x in enumerate(inputs):
            values[i, : len(x)] = x
        mask = (np.arange(width) < lengths[:, None]).astype(np.int64)
        return {"input_values": torch.from_numpy(values), "attention_mask": torch.from_numpy(mask)}

    def prepare_model(self, model) -> None:
        """Each clip of a padded batch encoded as if alone (lora.families.moonshine.clip_lengths): transcripts
        and losses that do not depend on the batch a clip is in."""
        from lora.families.moonshine.clip_lengths import encode_clips_alone  # deferred: imports torch

        encode_clips_alone(model)

    def raw_input(self, processor, samples: np.ndarray) -> np.ndarray | None:
        """On a GPU the workers hand over the clip as 16-bit PCM plus its length, and the device makes
        the float input and the mask (`device_features`): the padded float32 values plus an int64 mask
        were 12 bytes per sample through shared memory, which held the loader back. The imported
        extractor does not normalise (its input is the samples); one that did keeps the CPU path."""
        return None if processor.feature_extractor.do_normalize else np.ascontiguousarray(samples, dtype=np.float32)

    def device_features(self, processor, batch: dict) -> dict:
        if "raw_audio" in batch:
            import torch  # deferred: heavy

            audio, lengths, batch = raw_waveforms(batch)
            positions = torch.arange(audio.shape[-1], device=audio.device)
            batch["input_values"] = audio
            batch["attention_mask"] = (positions < lengths[:, None]).long()
        return batch

    def label_ids(self, tokenizer, text: str, policy: str | None = None) -> list[int]:
        """Text tokens + eos; the model prepends bos (decoder start) itself when shifting."""
        ids = tokenizer(self.target(text, policy), add_special_tokens=False).input_ids
        return list(ids) + [tokenizer.eos_token_id]


MOONSHINE = MoonshineFamily(
    name="moonshine",
    input_key="input_values",
    default_target_modules=("q_proj", "k_proj", "v_proj", "o_proj"),
    target_policy="styled",  # the base model's casing and punctuation kept in training targets (lora.styled_targets)
    # Moonshine takes any length, and on 17-28 s of joined digits it counts on past the audio ("1, 2, ..., 0" eleven
    # times for five). Chosen on the digits recipe's training speakers and dev-clean only
    # (benchmarks/longform_chunk_length.py, results/longform_chunk_length_moonshine-base-en.jsonl), pooled WER at
    # 30 / 20 / 15 / 10 s chunks: FSDD 105.5 / 143.5 / 48.5 / 47.5%, dev-clean 1.9 / 1.0 / 1.0 / 2.9%.
    longform_chunk_s=15.0,
)
