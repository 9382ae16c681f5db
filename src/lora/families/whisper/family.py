"""Whisper: 80-bin log-mel input padded to 30 s (the encoder's fixed length), prompted labels."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from lora.core.audio import SAMPLE_RATE
from lora.families.base import ModelFamily, raw_waveforms

WINDOW_SECONDS = 30.0  # the encoder's fixed input length


@dataclass(frozen=True)
class WhisperFamily(ModelFamily):
    def featurize(self, processor, samples: np.ndarray) -> np.ndarray:
        feats = processor.feature_extractor(samples, sampling_rate=SAMPLE_RATE, return_tensors="np")
        return np.asarray(feats["input_features"][0], dtype=np.float32)

    def pad_inputs(self, inputs: list[np.ndarray], length: int | None = None) -> dict:
        """Features are already 30 s wide (HF Whisper requires 3000 frames), so just stack (one shape: no bucket)."""
        import torch

        return {"input_features": torch.from_numpy(np.stack(inputs))}

    def padded_seconds(self, seconds: float) -> float:
        """Every clip is padded to the encoder's 30 s window."""
        return max(seconds, WINDOW_SECONDS)

    def raw_input(self, processor, samples: np.ndarray) -> np.ndarray:
        """The clip itself (cut at 30 s): padded to the window and turned into log-mel on the GPU, so
        a worker hands over the clip's own samples, not 30 s of padding or of features."""
        return np.ascontiguousarray(samples[: processor.feature_extractor.n_samples], dtype=np.float32)

    def device_features(self, processor, batch: dict) -> dict:
        if "raw_audio" in batch:
            import torch  # deferred: heavy

            audio, _, batch = raw_waveforms(batch)  # zero-padded: the window's padding is zeros too
            window = processor.feature_extractor.n_samples
            audio = torch.nn.functional.pad(audio[:, :window], (0, max(0, window - audio.shape[-1])))
            batch["input_features"] = log_mel(audio, processor.feature_extractor)
        return batch

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
    target_policy="styled",  # the base model's casing and punctuation kept in training targets (lora.styled_targets)
    tokens_per_second=6.0,
    min_new_tokens_cap=12,
)


def log_mel(waveform, extractor):
    """Whisper log-mel of a (batch, samples) tensor, on the tensor's device.

    The same math as `WhisperFeatureExtractor._torch_extract_fbank_features` (STFT, power, mel
    filters, log10, 8-decade floor per clip, scale), which returns NumPy on the CPU: training on a GPU
    would copy 30 s of features per clip back and forth, so this keeps them where the model is. Matches
    the CPU features within 1e-4 (tested).
    """
    import torch  # deferred: heavy

    window, filters = _mel_constants(extractor, str(waveform.device))
    stft = torch.stft(waveform.float(), extractor.n_fft, extractor.hop_length, window=window, return_complex=True)
    magnitudes = (stft[..., :-1].abs() ** 2).contiguous()
    log_spec = torch.clamp(filters.T @ magnitudes, min=1e-10).log10()
    floor = log_spec.amax(dim=(1, 2), keepdim=True) - 8.0
    return (torch.maximum(log_spec, floor) + 4.0) / 4.0


@functools.lru_cache(maxsize=8)
def _mel_constants(extractor, device: str):
    """The Hann window and mel filters of `extractor` on `device`, made once per extractor and device (the
    extractor hashes by identity) instead of copied from NumPy at every batch. A copy from pageable memory
    waits for the GPU's queued work; on an H200 keeping them on the device changed Whisper's throughput
    by no more than noise (benchmarks/results/gpu_pcm16_first.json -> gpu_pinned_full.json)."""
    import torch  # deferred: heavy

    window = torch.hann_window(extractor.n_fft, device=device)
    return window, torch.as_tensor(np.asarray(extractor.mel_filters), dtype=torch.float32).to(device)
