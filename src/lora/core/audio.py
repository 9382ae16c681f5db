"""Audio in: decode with soundfile, mix to mono, resample with soxr. One function in, float32 16 kHz out.

soundfile (libsndfile) reads WAV/FLAC/OGG/Opus/MP3/AIFF and soxr resamples. Containers libsndfile does
not read (M4A/AAC from phones, WebM, MP4 video...) are decoded by the `ffmpeg` program when it is on
PATH; without it they are refused with what to do. Knows nothing of models or text.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16_000
PCM16_SCALE = 32_768  # 16-bit PCM full scale: soundfile decodes a 16-bit sample k as k / 32768
SF_ERR_UNRECOGNISED_FORMAT = 1  # libsndfile's code for bytes that are no format it reads
FFMPEG_HINT = ("libsndfile reads WAV, FLAC, OGG/Opus, MP3 and AIFF; for M4A/AAC/WebM and video install ffmpeg "
               "(then they are read through it) or convert: ffmpeg -i IN -ar 16000 OUT.flac (channels kept: lora mixes them)")


# How far a span may run past its file's end and still be read (to the end): manifests write seconds rounded to
# 2 decimals, so an offset and a duration each rounded up end up to 10 ms past the last sample of a segment that ends
# the file. Past this it is a wrong row, not rounding.
SPAN_END_SLACK_S = 0.02


@dataclass(frozen=True)
class Span:
    """A stretch of a recording, in seconds from the file's start: a manifest row's `offset` + `duration` (NeMo)
    or `start`/`end`. `end` None: to the end of the file."""

    start: float
    end: float | None = None

    def frames(self, rate: int) -> tuple[int, int]:
        """(first frame, frames to read; -1 for all the rest) at `rate`: each edge rounded to the nearest frame."""
        first = round(self.start * rate)
        return first, -1 if self.end is None else max(0, round(self.end * rate) - first)

    def cut(self, samples: np.ndarray, rate: int) -> np.ndarray:
        """This span of decoded `samples` (frames first) at `rate`."""
        first, count = self.frames(rate)
        return samples[first:] if count < 0 else samples[first:first + count]

    @property
    def label(self) -> str:
        """`12.5-16.7` (seconds, to the millisecond), `12.5-end`: how ids and messages name the span."""
        return f"{_seconds(self.start)}-{'end' if self.end is None else _seconds(self.end)}"


def _seconds(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".")


class AudioDecodeError(ValueError):
    """Audio that neither libsndfile nor ffmpeg could read; the message says why and what to do."""


class FfmpegMissing(AudioDecodeError):
    """A format only ffmpeg reads, on a machine without ffmpeg: a fact of this machine, not of the file."""


def within_full_scale(audio: np.ndarray) -> np.ndarray:
    """`audio` scaled by 1 / its peak where the peak is above full scale (1.0), else as it is.

    Only float encodings (32/64-bit float WAV, inline arrays, a decoder's float output such as AAC's
    overshoot) can exceed 1.0; integer PCM cannot. Both models were trained on audio within full scale, and
    16-bit PCM (the GPU hand-over, exports) would flatten everything above it, so such a clip (a float mix
    40x too loud, a mastered M4A peaking at 1.02) is brought to full scale with its waveform intact,
    the same in training, evaluation and transcription. Audio within full scale is returned untouched."""
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if peak > 1.0 and np.isfinite(peak):  # non-finite samples are hygiene's to refuse, not ours to scale
        return (audio / peak).astype(np.float32)
    return audio


def downmix(audio: np.ndarray) -> np.ndarray:
    """(frames, channels) -> mono: the mean of the channels, each first given the polarity of the loudest.

    A plain mean cancels channels recorded in opposite polarity (a stereo recorder with one input wired
    inverted, a mid/side pair): LibriSpeech 1089-134686-0000 as L = x, R = -x mixes to a speech level of
    1.5e-5, refused as silent, where either channel alone is the clip itself. A channel whose correlation with
    the loudest channel is negative is inverted first; channels in phase, silent or unrelated (one speaker per
    channel) mix as the plain mean, bit for bit as before."""
    if audio.shape[1] == 1:
        return audio[:, 0]
    loudest = audio[:, int(np.argmax(np.einsum("ij,ij->j", audio, audio)))]  # float32 sums: only signs matter here
    signs = np.where(loudest @ audio < 0, -1.0, 1.0)
    if (signs > 0).all():
        return audio.mean(axis=1)
    return audio @ (signs / audio.shape[1]).astype(audio.dtype)


def to_mono_16k(samples: np.ndarray, sampling_rate: int) -> np.ndarray:
    """Mix (frames, channels) to mono (`downmix`) and resample to 16 kHz, as float32 within full scale."""
    import soxr

    audio = np.asarray(samples, dtype=np.float32)
    if audio.ndim == 2:
        audio = downmix(audio)
    audio = within_full_scale(audio)
    if sampling_rate != SAMPLE_RATE:
        audio = soxr.resample(audio, sampling_rate, SAMPLE_RATE, quality="HQ").astype(np.float32)
    return np.ascontiguousarray(audio, dtype=np.float32)


def load_audio(source: str | Path | bytes, span: Span | None = None) -> np.ndarray:
    """Decode a file path (or raw encoded bytes) to float32 mono 16 kHz samples; with `span`, only that stretch
    of it (libsndfile seeks to it and reads its frames alone; what ffmpeg decodes is cut after decoding)."""
    import soundfile as sf

    try:
        if span is None:
            samples, sr = sf.read(sndfile_source(source), dtype="float32", always_2d=False)
        else:
            samples, sr = _read_span(source, span)
    except sf.LibsndfileError as exc:
        if not unrecognised_format(exc):
            raise
        return decode_with_ffmpeg(source, exc, span)
    return to_mono_16k(samples, sr)


def _read_span(source: str | Path | bytes, span: Span) -> tuple[np.ndarray, int]:
    """The frames of `span` at the file's own rate (fewer where the file ends first, none past its end)."""
    import soundfile as sf

    with sf.SoundFile(sndfile_source(source)) as f:
        first, count = span.frames(f.samplerate)
        if first >= f.frames:
            return np.zeros((0, f.channels) if f.channels > 1 else 0, np.float32), f.samplerate
        f.seek(first)
        return f.read(count, dtype="float32", always_2d=False), f.samplerate


def audio_seconds(source: str | Path | bytes) -> float:
    """Duration from the header (libsndfile's, else ffprobe's), without decoding the samples."""
    import soundfile as sf

    try:
        info = sf.info(sndfile_source(source))
    except sf.LibsndfileError as exc:
        if not unrecognised_format(exc):
            raise
        return ffmpeg_seconds(source, exc)
    return info.frames / info.samplerate


def unrecognised_format(exc: Exception) -> bool:
    """libsndfile's error for bytes of a format it does not read (as opposed to a damaged file)."""
    return getattr(exc, "code", None) == SF_ERR_UNRECOGNISED_FORMAT


def decode_with_ffmpeg(source: str | Path | bytes, sndfile_error: Exception | None = None,
                       span: Span | None = None) -> np.ndarray:
    """First audio stream of any container ffmpeg reads, as float32 mono 16 kHz (ffmpeg resamples); with `span`,
    that stretch of it (cut from the whole decode: ffmpeg's own seeking in compressed streams is not sample exact).

    Not transformers' `ffmpeg_read`: it pipes the bytes through stdin, where an M4A whose index (the
    `moov` atom) sits at the end of the file, as ffmpeg's own AAC writer puts it, cannot be read.
    Given a path, ffmpeg seeks; bytes are written to a temporary file first.

    Every channel comes back (float WAV on the pipe, which says how many) and is mixed by `downmix`, as a
    file libsndfile reads is: ffmpeg's own `-ac 1` averages the channels, so a stereo M4A with one channel
    in opposite polarity decoded to near silence (peak 0.005 for a clip peaking at 0.65). The piped WAV's
    size fields say "unknown" (ffmpeg cannot seek back); libsndfile reads it to the end of the pipe's bytes."""
    _require("ffmpeg", sndfile_error)
    with _as_path(source) as path:
        done = subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-i", path,
                               "-map", "0:a:0", "-ar", str(SAMPLE_RATE), "-c:a", "pcm_f32le", "-f", "wav", "pipe:1"],
                              capture_output=True, check=False)
    if done.returncode != 0:
        raise AudioDecodeError(f"{_said(sndfile_error)}; nor can ffmpeg: {_last_line(done.stderr, path)}")
    import soundfile as sf

    try:
        samples, sr = sf.read(io.BytesIO(done.stdout), dtype="float32", always_2d=False)
    except sf.LibsndfileError as exc:  # a stream ffmpeg wrote no sample of: a header alone, or nothing
        raise AudioDecodeError(f"ffmpeg decoded 0 samples ({exc.error_string.rstrip('.')})") from None
    if not len(samples):
        raise AudioDecodeError("ffmpeg decoded 0 samples")
    return to_mono_16k(samples if span is None else span.cut(samples, sr), sr)


def ffmpeg_seconds(source: str | Path | bytes, sndfile_error: Exception | None = None) -> float:
    """Duration of the first audio stream from ffprobe (the container's header), else a decode."""
    if shutil.which("ffprobe") is None:
        return len(decode_with_ffmpeg(source, sndfile_error)) / SAMPLE_RATE
    with _as_path(source) as path:
        done = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries",
                               "stream=duration:format=duration", "-of", "json", path],
                              capture_output=True, check=False)
    if done.returncode != 0:
        raise AudioDecodeError(f"{_said(sndfile_error)}; nor can ffprobe: {_last_line(done.stderr, path)}")
    found = json.loads(done.stdout or b"{}")
    streams = found.get("streams") or []
    if not streams:
        raise AudioDecodeError("no audio stream in the file")
    for value in (streams[0].get("duration"), found.get("format", {}).get("duration")):
        if value not in (None, "N/A"):
            return float(value)
    return len(decode_with_ffmpeg(source, sndfile_error)) / SAMPLE_RATE


def to_pcm16(samples: np.ndarray) -> np.ndarray:
    """Float samples as 16-bit PCM (rounded, clipped to full scale): half the bytes of float32 for the
    loader's workers to hand over. Exact for 16-bit sources (what soundfile decoded from one comes back
    bit for bit); other sources are rounded 96 dB below full scale."""
    return np.clip(np.rint(np.asarray(samples, dtype=np.float32) * PCM16_SCALE), -PCM16_SCALE, PCM16_SCALE - 1).astype(np.int16)


def duration_seconds(samples: np.ndarray) -> float:
    return float(len(samples)) / SAMPLE_RATE


def sndfile_source(source: str | Path | bytes):
    """What soundfile opens: the path, or encoded bytes as a file object."""
    return io.BytesIO(source) if isinstance(source, bytes | bytearray) else os.fspath(source)


def _require(program: str, sndfile_error: Exception | None) -> None:
    if shutil.which(program) is None:
        raise FfmpegMissing(f"{_said(sndfile_error)}; {FFMPEG_HINT}")


def _said(sndfile_error: Exception | None) -> str:
    """libsndfile's own words, e.g. `Format not recognised`."""
    return (getattr(sndfile_error, "error_string", "") or "Format not recognised").rstrip(".")


@contextmanager
def _as_path(source: str | Path | bytes) -> Iterator[str]:
    """A path to hand to ffmpeg: the file itself, or encoded bytes written to a temporary file."""
    if not isinstance(source, bytes | bytearray):
        yield os.fspath(source)
        return
    handle, temp = tempfile.mkstemp(prefix="lora-audio-")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(source)
        yield temp
    finally:
        Path(temp).unlink(missing_ok=True)


def _last_line(stderr: bytes, path: str) -> str:
    """ffmpeg's last complaint, without the `<path>: ` it starts with (the caller names the file)."""
    lines = [line.strip() for line in stderr.decode("utf-8", "replace").splitlines() if line.strip()]
    return lines[-1].removeprefix(f"{path}: ") if lines else "no message"
