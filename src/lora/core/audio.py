"""Audio in: decode with soundfile, mix to mono, resample with soxr. One function in, float32 16 kHz out.

No FFmpeg and no torchcodec: soundfile (libsndfile) reads WAV/FLAC/OGG, soxr resamples.
Knows nothing of models or text.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16_000
PCM16_SCALE = 32_768  # 16-bit PCM full scale: soundfile decodes a 16-bit sample k as k / 32768


def to_mono_16k(samples: np.ndarray, sampling_rate: int) -> np.ndarray:
    """Mix (frames, channels) to mono and resample to 16 kHz, as float32."""
    import soxr

    audio = np.asarray(samples, dtype=np.float32)
    if audio.ndim == 2:
        audio = audio.mean(axis=1)
    if sampling_rate != SAMPLE_RATE:
        audio = soxr.resample(audio, sampling_rate, SAMPLE_RATE, quality="HQ").astype(np.float32)
    return np.ascontiguousarray(audio, dtype=np.float32)


def load_audio(source: str | Path | bytes) -> np.ndarray:
    """Decode a file path (or raw encoded bytes) to float32 mono 16 kHz samples."""
    import soundfile as sf

    handle = io.BytesIO(source) if isinstance(source, bytes | bytearray) else str(source)
    samples, sr = sf.read(handle, dtype="float32", always_2d=False)
    return to_mono_16k(samples, sr)


def to_pcm16(samples: np.ndarray) -> np.ndarray:
    """Float samples as 16-bit PCM (rounded, clipped to full scale): half the bytes of float32 for the
    loader's workers to hand over. Exact for 16-bit sources (what soundfile decoded from one comes back
    bit for bit); other sources are rounded 96 dB below full scale."""
    return np.clip(np.rint(np.asarray(samples, dtype=np.float32) * PCM16_SCALE), -PCM16_SCALE, PCM16_SCALE - 1).astype(np.int16)


def duration_seconds(samples: np.ndarray) -> float:
    return float(len(samples)) / SAMPLE_RATE
