"""Is one utterance's audio usable, and how long is it? The per-row probe behind `lora.data.preflight`.

Decoding is the expensive part of a preflight, so each row is decoded once: the header is read
first (a 10-minute file is rejected without decoding it), then the samples, which are checked
for truncation and NaN/inf and then dropped (only the duration is kept). Any sample rate and any
channel count is fine: `lora.core.audio` converts them later. A file's extension is ignored; what
libsndfile recognises in the bytes decides (a FLAC named `.wav` is fine, text named `.wav` is not), and
what it does not recognise goes to ffmpeg when that is installed (M4A, WebM; `lora.core.audio`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lora.core.audio import (
    SAMPLE_RATE,
    SPAN_END_SLACK_S,
    AudioDecodeError,
    FfmpegMissing,
    Span,
    decode_with_ffmpeg,
    ffmpeg_seconds,
    sndfile_source,
    unrecognised_format,
)

# Reasons (short categories, counted in reports); the probe's `detail` says what exactly was found.
MISSING_FILE = "missing file"
NOT_A_FILE = "not a file"
EMPTY_FILE = "empty file"
UNREADABLE_FILE = "unreadable file"
UNDECODABLE = "cannot decode"
NEEDS_FFMPEG = "needs ffmpeg"
TRUNCATED = "truncated file"
NO_SAMPLES = "no samples"
NON_FINITE = "non-finite samples"
TOO_SHORT = "too short"
TOO_LONG = "too long"
SPAN_PAST_END = "span past the end"
# A file whose rows are spans of it is probed without duration bounds (a talk is longer than any clip): its spans
# are held to them instead (`probe_span`).
RECORDING_MAX_S = 1e9

# libsndfile's header log says `data : 64000 (should be 31978)` when a WAV's data chunk claims
# more bytes than the file holds. Streaming recorders write placeholder sizes (0, 0xFFFFFFFF)
# and fix them up at the end; a size at or above this is a placeholder, not a truncation.
_WAV_DATA_LOG = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
PLACEHOLDER_SIZE = 0x7FFF0000
# Bumped when a probe of the same bytes can answer otherwise (the preflight cache keys on it):
# 2 = formats libsndfile does not read are probed through ffmpeg; 3 = MP3s without a length tag are decoded.
PROBER_VERSION = 3
# Decoded audio this far short of the header's duration is a file cut short, not a header's estimate
# (MP3 and container headers may be a little off; a cut loses far more, and its transcript no longer fits).
DECLARED_SHARE, DECLARED_SLACK_S = 0.9, 0.1
# An MP3's length tag sits in its first frame (at most 1,441 bytes at 320 kb/s, 32 kHz); read a little more
MP3_HEAD_BYTES, MP3_FIRST_FRAME_BYTES = 4096, 2048


@dataclass(frozen=True)
class Probe:
    """Duration in seconds, or the reason (and detail) why the audio is unusable."""

    seconds: float = 0.0
    reason: str = ""
    detail: str = ""

    @property
    def ok(self) -> bool:
        return not self.reason


def probe_audio(audio, sampling_rate: int, min_seconds: float, max_seconds: float, decode: bool = True) -> Probe:
    """Probe a path, raw encoded bytes or inline samples (frames[, channels]) at `sampling_rate`.

    `decode=False` reads the header only (at scale: the full decode then happens in the data
    loader's workers, which quarantine a row that fails it while training goes on)."""
    if isinstance(audio, np.ndarray | list):
        return check_samples(np.asarray(audio, dtype=np.float32), sampling_rate, min_seconds, max_seconds)
    if isinstance(audio, bytes | bytearray):
        if not audio:
            return Probe(0.0, EMPTY_FILE, "0 bytes of encoded audio")
        return _probe_encoded(bytes(audio), min_seconds, max_seconds, decode)
    path = Path(audio)
    problem = _file_problem(path)
    if problem:
        return problem
    return _probe_encoded(str(path), min_seconds, max_seconds, decode)


def _file_problem(path: Path) -> Probe | None:
    """Existence, type, size and permission, before libsndfile gets a vague look at it."""
    try:
        return _file_problem_or_raise(path)
    except OSError as exc:  # e.g. a name longer than the file system allows (ENAMETOOLONG), an I/O error
        shown = str(path) if len(str(path)) <= 200 else f"{str(path)[:120]}... ({len(str(path)):,} characters)"
        return Probe(0.0, UNREADABLE_FILE, f"{shown}: {exc.strerror or exc}")


def _file_problem_or_raise(path: Path) -> Probe | None:
    if not path.exists():
        windows = "\\" in str(path)  # a manifest written on Windows: C:\data\a.wav, clips\a.wav
        return Probe(0.0, MISSING_FILE, str(path) + ("; it has backslashes: a Windows path? write it with / separators, "
                                                     "relative to the manifest" if windows else ""))
    if path.is_dir():
        return Probe(0.0, NOT_A_FILE, f"{path} is a directory")
    if not path.is_file():
        return Probe(0.0, NOT_A_FILE, f"{path} is not a regular file")
    if path.stat().st_size == 0:
        return Probe(0.0, EMPTY_FILE, f"{path} has 0 bytes")
    if not os.access(path, os.R_OK):
        return Probe(0.0, UNREADABLE_FILE, f"no read permission on {path}")
    return None


def _probe_encoded(source: str | bytes, min_seconds: float, max_seconds: float, decode: bool = True) -> Probe:
    """Header first (cheap bounds check), then one full decode to catch truncation and NaN/inf."""
    import soundfile as sf

    try:
        info = sf.info(sndfile_source(source))
    except Exception as exc:  # libsndfile's message is the useful part, whatever the class
        if unrecognised_format(exc):
            return _probe_with_ffmpeg(source, exc, min_seconds, max_seconds, decode)
        return Probe(0.0, UNDECODABLE, _sndfile_message(exc))
    truncated = _declared_truncation(info.extra_info)
    if truncated:
        return Probe(0.0, TRUNCATED, truncated)
    if info.frames <= 0:
        return Probe(0.0, NO_SAMPLES, f"0 frames in the {info.format} file")
    # an MP3 without a length tag has no length in its header: libsndfile's frames are a guess from the file
    # size and the first frame's bit rate (4x off for a VBR file measured), so only its decode can say
    estimated = info.format == "MP3" and not mp3_has_length_tag(source)
    seconds = info.frames / info.samplerate
    bounds = None if estimated else _bounds_problem(seconds, min_seconds, max_seconds)
    if bounds:
        return bounds
    if not decode and not estimated:
        return Probe(seconds)
    try:
        samples, rate = sf.read(sndfile_source(source), dtype="float32", always_2d=True)
    except Exception as exc:
        return Probe(0.0, UNDECODABLE, _sndfile_message(exc))
    if len(samples) < info.frames and not estimated:
        return Probe(0.0, TRUNCATED, f"decoded {len(samples)} of the {info.frames} frames its header declares")
    return check_samples(samples, rate, min_seconds, max_seconds)


def mp3_has_length_tag(source: str | bytes) -> bool:
    """Does an MP3 say how long it is (a Xing/Info or VBRI tag in its first frame)? Read by hand: neither
    libsndfile nor soundfile reports it, and without one the header's frame count is an estimate."""
    try:
        head = _read_bytes(source, 0, MP3_HEAD_BYTES)
        if head[:3] == b"ID3" and len(head) >= 10:  # skip an ID3v2 tag: its size is 4 syncsafe bytes (7 bits each)
            size = 10 + ((head[6] & 0x7F) << 21 | (head[7] & 0x7F) << 14 | (head[8] & 0x7F) << 7 | head[9] & 0x7F)
            head = _read_bytes(source, size, MP3_HEAD_BYTES)
    except OSError:
        return False
    return any(tag in head[:MP3_FIRST_FRAME_BYTES] for tag in (b"Xing", b"Info", b"VBRI"))


def _read_bytes(source: str | bytes, offset: int, size: int) -> bytes:
    if isinstance(source, bytes):
        return source[offset:offset + size]
    with open(source, "rb") as handle:
        handle.seek(offset)
        return handle.read(size)


def _probe_with_ffmpeg(source: str | bytes, sndfile_error: Exception, min_seconds: float, max_seconds: float,
                       decode: bool) -> Probe:
    """A container libsndfile does not read (M4A, WebM...): ffprobe's header, then ffmpeg's decode."""
    try:
        seconds = ffmpeg_seconds(source, sndfile_error)
        bounds = _bounds_problem(seconds, min_seconds, max_seconds)
        if bounds or not decode:
            return bounds or Probe(seconds)
        samples = decode_with_ffmpeg(source, sndfile_error)
        cut = shortfall(len(samples) / SAMPLE_RATE, seconds)
        return Probe(0.0, TRUNCATED, cut) if cut else check_samples(samples, SAMPLE_RATE, min_seconds, max_seconds)
    except FfmpegMissing as exc:
        return Probe(0.0, NEEDS_FFMPEG, str(exc))
    except AudioDecodeError as exc:
        return Probe(0.0, UNDECODABLE, str(exc))


def check_samples(samples: np.ndarray, sampling_rate: int, min_seconds: float, max_seconds: float) -> Probe:
    """Checks shared by decoded files and inline arrays: empty, NaN/inf, duration bounds."""
    if samples.ndim not in (1, 2):
        return Probe(0.0, UNDECODABLE, f"samples have {samples.ndim} dimensions; expected frames[, channels]")
    frames = samples.shape[0]
    if frames == 0 or samples.size == 0:
        return Probe(0.0, NO_SAMPLES, "0 frames")
    finite = np.isfinite(samples)
    if not finite.all():
        bad = int(samples.size - np.count_nonzero(finite))
        return Probe(0.0, NON_FINITE, f"{bad} of {samples.size} samples are NaN or inf")
    seconds = frames / sampling_rate
    return _bounds_problem(seconds, min_seconds, max_seconds) or Probe(seconds)


def probe_span(recording: Probe, span: Span, min_seconds: float, max_seconds: float) -> Probe:
    """A span of a probed recording (probed with bounds 0..RECORDING_MAX_S): its own length, within its file and
    the duration bounds. A span running past the file's end by more than rounding is a wrong row, not a short clip."""
    if not recording.ok:
        return recording
    end = recording.seconds if span.end is None else span.end
    if span.start >= recording.seconds or end > recording.seconds + SPAN_END_SLACK_S:
        return Probe(0.0, SPAN_PAST_END, f"the segment {span.label} s runs past the end of the {recording.seconds:.3f} s "
                     "recording; fix the row's offset and duration (or start and end), in seconds into the file")
    seconds = min(end, recording.seconds) - span.start
    return _bounds_problem(seconds, min_seconds, max_seconds) or Probe(seconds)


def shortfall(decoded_seconds: float, declared_seconds: float) -> str | None:
    """Why decoded audio is a truncated file's (None when it is as long as its header says, give or take)."""
    if decoded_seconds < declared_seconds * DECLARED_SHARE - DECLARED_SLACK_S:
        return f"decoded {decoded_seconds:.2f} s of the {declared_seconds:.2f} s its header declares"
    return None


def _bounds_problem(seconds: float, min_seconds: float, max_seconds: float) -> Probe | None:
    if seconds < min_seconds:
        return Probe(seconds, TOO_SHORT, f"{seconds:.3f} s < {min_seconds:g} s")
    if seconds > max_seconds:
        return Probe(seconds, TOO_LONG, f"{seconds:.1f} s > {max_seconds:g} s; cut long recordings into clips with "
                     "`lora segment --audio FILE --transcript TEXT` (`--manifest M` for many; or transcribe them with `lora stt`, any length)")
    return None


def _declared_truncation(header_log: str) -> str | None:
    """A WAV whose data chunk is cut short decodes "fine" to a prefix whose transcript no longer fits."""
    match = _WAV_DATA_LOG.search(header_log or "")
    if match:
        declared, present = int(match[1]), int(match[2])
        if present < declared < PLACEHOLDER_SIZE:
            return f"the WAV header declares {declared} bytes of audio, the file holds {present}"
    return None


def _sndfile_message(exc: Exception) -> str:
    """libsndfile's own words without the `Error opening '<path>': ` prefix the path repeats."""
    message = getattr(exc, "error_string", None) or str(exc)
    return re.sub(r"^Error\s*:\s*", "", message.strip()).rstrip(".") or type(exc).__name__
