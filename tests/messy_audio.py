"""Audio files for the manifest/preflight tests, generated on the fly (never committed).

Preflight checks file plumbing (decodes? truncated? NaN? how long?), not speech content, so
tones are enough here; the real-speech checks run on ../shared/speech.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf


def tone(seconds: float, rate: int = 16_000, channels: int = 1) -> np.ndarray:
    t = np.arange(round(seconds * rate), dtype=np.float32) / rate
    mono = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    return mono if channels == 1 else np.stack([mono] * channels, axis=1)


def write_audio(path: Path, seconds: float = 1.0, rate: int = 16_000, channels: int = 1,
                samples: np.ndarray | None = None, **sf_kwargs) -> Path:
    """Write `samples` (default a tone) with soundfile; `format`/`subtype` pass through."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = tone(seconds, rate, channels) if samples is None else samples
    sf.write(str(path), data, rate, **sf_kwargs)
    return path


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


def truncate(path: Path, keep: int | float) -> Path:
    """Keep the first `keep` bytes (or that fraction of the file)."""
    data = path.read_bytes()
    n = int(len(data) * keep) if isinstance(keep, float) else keep
    path.write_bytes(data[:n])
    return path
