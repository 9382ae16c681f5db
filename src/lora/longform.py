"""Long-form transcription: voice activity detection, a chunk planner, batched chunk decoding, subtitles.

Pipeline for a recording of any length (16 kHz float32 mono samples):
  1. `detect_speech`: silero-vad (ONNX) speech regions, in samples.
  2. `plan_chunks`: pure. Groups speech regions into chunks of at most `max_chunk_s` (30 s: Whisper's
     window). A chunk runs from the start of its first region to the end of its last, so cuts always
     fall in pauses between regions. Regions are packed greedily; when the next region would overflow
     the chunk, the cut goes in the longest pause among those that leave the chunk at least
     `min_fill` (half) full, else in the last pause. Only a single region longer than the maximum is
     cut inside speech: at the centre of the lowest-energy 100 ms window (10 ms hop) among windows
     whose centre lies in the second half of the allowed span, repeatedly until every piece fits.
  3. `transcribe_long`: chunks decoded by any batched transcriber `transcribe_batch(list[np.ndarray])
     -> list[str]` (PyTorch model via `torch_transcriber`, an exported ONNX model, CTranslate2...),
     `batch_size` chunks per call; texts joined with single spaces; one `Segment` per chunk.
  4. `to_srt` / `to_vtt`: subtitle files from segments.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from lora.core.audio import SAMPLE_RATE
from lora.core.errors import UserError
from lora.data.hygiene import transcribe_rows
from lora.data.records import Utterance
from lora.data_loader import prepare_dataset
from lora.decoding import transcribe_examples
from lora.families import all_exports, resolve_callable

# Subtitle cues as readers take them (the usual broadcast guidance: two lines of at most 42 characters, at most
# about 7 s on screen): a decoded chunk (up to 15 s of Moonshine, 30 s of Whisper) is one cue of up to ~450
# characters otherwise.
CUE_LINE_CHARS, CUE_LINES, CUE_MAX_S = 42, 2, 7.0
CLAUSE_END = (".", "?", "!", "…", ",", ";", ":")  # a word ending so is a good place to start the next cue
ENERGY_WINDOW_S = 0.1  # window for cutting inside an over-long speech region
ENERGY_HOP_S = 0.01

EXPORT_REPORT = "export_report.json"  # written by `lora export` (lora.export.REPORT_FILE)
SENTENCE_END = (".", "?", "!", "…", '"', "”")  # a chunk's text ending so ends a sentence
# English function words a model capitalises at a chunk's start only because its text starts there ("... is
# established, For the frequent ..."): lower-cased where the chunk before did not end a sentence. Names are not
# here, nor words that are also names or months (May, Will, Can, Mark).
CONTINUATION_WORDS = frozenset("""
a an the and but or nor for so yet of in on at to from by with without into onto upon about above after before
below between through during under over than that which who whom whose what when where while whether if because
as although though unless until since it its he him his she her hers we us our they them their you your this these
those there then is are was were be been being has have had do does did would shall should could might must not no
all any some each every more most such only also just very even""".split())

TranscribeBatch = Callable[[list[np.ndarray]], list[str]]


@dataclass(frozen=True)
class VadOptions:
    """silero-vad `get_speech_timestamps` settings (its defaults, except a wider speech pad)."""

    threshold: float = 0.5
    min_speech_ms: int = 250
    min_silence_ms: int = 100
    speech_pad_ms: int = 60


@dataclass(frozen=True)
class LongformOptions:
    """How a long recording is cut and decoded."""

    max_chunk_s: float = 30.0
    min_fill: float = 0.5  # a cut may not leave a chunk less full than this share of max_chunk_s (if avoidable)
    batch_size: int = 8
    vad: VadOptions = field(default_factory=VadOptions)


@dataclass(frozen=True)
class Segment:
    start_s: float
    end_s: float
    text: str


@dataclass(frozen=True)
class LongTranscript:
    text: str
    segments: tuple[Segment, ...]


# ---------------------------------------------------------------------------------------------
# pure chunk planning


def _lowest_energy_cut(samples: np.ndarray, start: int, end: int) -> int:
    """Centre of the quietest 100 ms window among centres start, start+10 ms, ..., <= end."""
    half = int(ENERGY_WINDOW_S * SAMPLE_RATE) // 2
    lo, hi = max(start - half, 0), min(end + half, len(samples))
    squared = np.concatenate([[0.0], np.cumsum(np.asarray(samples[lo:hi], dtype=np.float64) ** 2)])
    centres = np.arange(start, end + 1, int(ENERGY_HOP_S * SAMPLE_RATE))
    a = np.clip(centres - half, lo, hi) - lo
    b = np.clip(centres + half, lo, hi) - lo
    return int(centres[np.argmin(squared[b] - squared[a])])


def split_long_region(region: tuple[int, int], max_len: int, samples: np.ndarray) -> list[tuple[int, int]]:
    """Cut one speech region longer than `max_len` samples at low-energy points into pieces <= max_len."""
    start, end = region
    pieces = []
    while end - start > max_len:
        cut = _lowest_energy_cut(samples, start + max_len // 2, start + max_len)
        pieces.append((start, cut))
        start = cut
    pieces.append((start, end))
    return pieces


def plan_chunks(
    speech: Sequence[tuple[int, int]],
    total: int,
    max_chunk_s: float = 30.0,
    samples: np.ndarray | None = None,
    min_fill: float = 0.5,
) -> list[tuple[int, int]]:
    """(start, end) sample spans of chunks <= `max_chunk_s` covering every speech region, in order.

    `speech` is sorted, non-overlapping (start, end) samples, clipped to [0, total]. `samples` is
    needed only when one region is longer than the maximum (ValueError otherwise).
    """
    max_len = round(max_chunk_s * SAMPLE_RATE)
    regions: list[tuple[int, int]] = []
    for start, end in speech:
        start, end = max(0, int(start)), min(total, int(end))
        if end <= start:
            continue
        if regions and start < regions[-1][1]:
            raise ValueError(f"speech regions overlap or are unsorted at sample {start}")
        if end - start > max_len:
            if samples is None:
                raise ValueError(f"a speech region of {(end - start) / SAMPLE_RATE:.1f} s exceeds max_chunk_s; "
                                 "pass the samples so it can be cut at its quietest point")
            regions.extend(split_long_region((start, end), max_len, samples))
        else:
            regions.append((start, end))
    chunks: list[tuple[int, int]] = []
    first = 0
    while first < len(regions):
        last = first  # extend while the chunk still fits
        while last + 1 < len(regions) and regions[last + 1][1] - regions[first][0] <= max_len:
            last += 1
        if last + 1 < len(regions) and last > first:
            # cut after region k (first <= k <= last): the longest pause that leaves the chunk min_fill full
            floor = regions[first][0] + min_fill * max_len
            candidates = [k for k in range(first, last + 1) if regions[k][1] >= floor] or [last]
            last = max(candidates, key=lambda k: (regions[k + 1][0] - regions[k][1], k))
        chunks.append((regions[first][0], regions[last][1]))
        first = last + 1
    return chunks


# ---------------------------------------------------------------------------------------------
# VAD


@lru_cache(maxsize=1)
def _silero():
    # torch/silero imported here: keeps `--help` fast. Importing silero_vad calls
    # torch.set_num_threads(1) for the whole process; the caller's thread count is restored. The
    # ONNX session itself runs with 1 intra-op and 1 inter-op thread (silero's OnnxWrapper).
    import torch

    threads = torch.get_num_threads()
    import silero_vad

    torch.set_num_threads(threads)
    return silero_vad


@lru_cache(maxsize=1)
def _vad_model():
    return _silero().load_silero_vad(onnx=True)


def detect_speech(samples: np.ndarray, options: VadOptions = VadOptions()) -> list[tuple[int, int]]:
    """Speech regions of 16 kHz float samples as (start, end) sample indices (silero-vad, ONNX)."""
    import torch  # silero's get_speech_timestamps takes a torch tensor

    stamps = _silero().get_speech_timestamps(
        torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32)),
        _vad_model(),
        threshold=options.threshold,
        sampling_rate=SAMPLE_RATE,
        min_speech_duration_ms=options.min_speech_ms,
        min_silence_duration_ms=options.min_silence_ms,
        speech_pad_ms=options.speech_pad_ms,
    )
    return [(int(s["start"]), int(s["end"])) for s in stamps]


# ---------------------------------------------------------------------------------------------
# decoding


def decode_chunks(samples: np.ndarray, chunks: Sequence[tuple[int, int]], transcribe_batch: TranscribeBatch,
                  batch_size: int = 8) -> list[str]:
    """One stripped text per chunk, `batch_size` chunks per `transcribe_batch` call."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return [t.strip() for t in transcribe_rows((samples[a:b] for a, b in chunks), transcribe_batch, batch_size)]


def transcribe_long(
    samples: np.ndarray,
    transcribe_batch: TranscribeBatch,
    options: LongformOptions = LongformOptions(),
    speech: Sequence[tuple[int, int]] | None = None,
) -> LongTranscript:
    """Transcript of a recording of any length: VAD -> chunks <= max_chunk_s -> batched decoding.

    `speech` skips the VAD when the speech regions are already known (sample indices).
    """
    samples = np.asarray(samples, dtype=np.float32)
    if speech is None:
        speech = detect_speech(samples, options.vad)
    chunks = plan_chunks(speech, len(samples), options.max_chunk_s, samples, options.min_fill)
    texts = continue_sentences(decode_chunks(samples, chunks, transcribe_batch, options.batch_size))
    segments = tuple(Segment(a / SAMPLE_RATE, b / SAMPLE_RATE, t) for (a, b), t in zip(chunks, texts))
    return LongTranscript(" ".join(t for t in texts if t), segments)


def continue_sentences(texts: Sequence[str]) -> list[str]:
    """Chunk texts where a chunk that continues the sentence of the one before (which did not end with . ? ! or a
    closing quote) starts with a capitalised function word ("For the frequent", "The Gutenberg") get that capital
    lower-cased: it came from the cut, not the speech. Other first words (names, "I") are left as written."""
    out: list[str] = []
    before = ""  # the last non-empty chunk's text
    for text in texts:
        first, _, rest = text.partition(" ")
        if before and not before.endswith(SENTENCE_END) and first[:1].isupper() and first[1:].islower() \
                and first.strip(",.;:!?").lower() in CONTINUATION_WORDS:
            text = first.lower() + (" " + rest if rest else "")
        out.append(text)
        before = text or before
    return out


def torch_transcriber(model, processor, family, batch_size: int = 8) -> TranscribeBatch:
    """A `transcribe_batch` callable for a loaded PyTorch model (greedy, `lora.decoding`)."""

    def transcribe_batch(chunks: list[np.ndarray]) -> list[str]:
        utts = [Utterance(id=f"chunk-{i}", speaker="", text="", audio=np.asarray(c, dtype=np.float32))
                for i, c in enumerate(chunks)]
        return transcribe_examples(model, processor, family, prepare_dataset(utts, processor, family), batch_size)

    return transcribe_batch


def exported_transcriber(export_dir: str | Path) -> tuple[TranscribeBatch, dict]:
    """A `transcribe_batch` for an exported model folder (`lora export`): its export_report.json names
    the format, whose family opens it (ONNX Moonshine, CTranslate2 Whisper). Also returns the report."""
    import json

    export_dir = Path(export_dir)
    report_path = export_dir / EXPORT_REPORT
    if not report_path.is_file():
        raise UserError(f"{report_path}: missing; pass a folder written by `lora export`")
    try:
        report = json.loads(report_path.read_text())
        name = report["format"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{report_path}: unreadable export report ({exc}); export again with `lora export`") from None
    formats = all_exports()
    if name not in formats:
        raise UserError(f"{report_path}: unknown format {name!r}; known: {', '.join(formats)}")
    transcribe = resolve_callable(formats[name].open_exported)(export_dir)

    def transcribe_batch(chunks: list[np.ndarray]) -> list[str]:
        return [transcribe(np.asarray(c, dtype=np.float32), None) for c in chunks]

    return transcribe_batch, report


def transcribe_any(samples: np.ndarray, transcribe_batch: TranscribeBatch,
                   options: LongformOptions = LongformOptions()) -> LongTranscript:
    """One clip of any length: up to `max_chunk_s` decoded whole (one segment spanning it), longer
    through the VAD long-form path (`transcribe_long`)."""
    samples = np.asarray(samples, dtype=np.float32)
    if len(samples) <= round(options.max_chunk_s * SAMPLE_RATE):
        text = transcribe_batch([samples])[0].strip()
        return LongTranscript(text, (Segment(0.0, len(samples) / SAMPLE_RATE, text),))
    return transcribe_long(samples, transcribe_batch, options)


# ---------------------------------------------------------------------------------------------
# subtitles


def subtitle_timestamp(seconds: float, separator: str) -> str:
    """`HH:MM:SS<separator>mmm` (SRT: ",", WebVTT: "."), negative times as 0."""
    ms = max(0, round(seconds * 1000))
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{ms:03d}"


def readable_cues(segments: Sequence[Segment], line_chars: int = CUE_LINE_CHARS, lines: int = CUE_LINES,
                  max_s: float = CUE_MAX_S) -> list[Segment]:
    """Segments cut into subtitle cues of at most `lines` lines of `line_chars` characters and about `max_s`
    seconds, each cue's lines joined by "\n"; words kept in order, none lost or repeated.

    A long segment's words go into pieces of about equal length (enough pieces for both limits), a piece
    ending early at a sentence or clause end when one falls in its second half. The models give no word times
    here, so a piece's time is its share of the segment's characters: a reading aid, not an alignment."""
    cues: list[Segment] = []
    for seg in segments:
        words = seg.text.split()
        if not words:
            continue
        text = " ".join(words)
        span = max(seg.end_s - seg.start_s, 0.0)
        # a piece holds at most 1.15x the average piece's characters (below), so 1.15x its share of the time
        pieces_needed = max(math.ceil(len(text) / (line_chars * lines)), math.ceil(span * 1.15 / max_s), 1)
        if pieces_needed == 1:
            cues.append(Segment(seg.start_s, seg.end_s, _wrap(text, line_chars, lines)))
            continue
        target = len(text) / pieces_needed
        pieces, current = [], []
        for word in words:
            if current and len(" ".join(current + [word])) > min(line_chars * lines, target * 1.15):
                ends = [k for k in range(len(current), 0, -1) if current[k - 1].endswith(CLAUSE_END)
                        and len(" ".join(current[:k])) >= target / 2]
                cut = ends[0] if ends else len(current)  # the last clause end in the piece's second half, else here
                pieces.append(" ".join(current[:cut]))
                current = current[cut:]
            current.append(word)
        pieces.append(" ".join(current))
        total = sum(len(p) for p in pieces)
        at = seg.start_s
        for piece in pieces:
            end = min(seg.end_s, at + span * len(piece) / total)
            cues.append(Segment(at, end, _wrap(piece, line_chars, lines)))
            at = end
    return cues


def _wrap(text: str, line_chars: int, lines: int) -> str:
    """`text` in at most `lines` lines, broken at the space that best balances them when it is too long for one."""
    if len(text) <= line_chars or lines < 2:
        return text
    spaces = [i for i, c in enumerate(text) if c == " "]
    if not spaces:
        return text
    fitting = [i for i in spaces if i <= line_chars and len(text) - i - 1 <= line_chars]
    middle = min(fitting or spaces, key=lambda i: abs(i - len(text) / 2))
    return text[:middle] + "\n" + text[middle + 1:]


def to_srt(segments: Sequence[Segment]) -> str:
    """SubRip: numbered cues `HH:MM:SS,mmm --> HH:MM:SS,mmm`, blank line between cues; empty texts skipped."""
    cues = [s for s in segments if s.text.strip()]
    return "".join(
        f"{n}\n{subtitle_timestamp(s.start_s, ',')} --> {subtitle_timestamp(s.end_s, ',')}\n{s.text.strip()}\n\n"
        for n, s in enumerate(cues, 1)
    )


def to_vtt(segments: Sequence[Segment]) -> str:
    """WebVTT: `WEBVTT` header, cues `HH:MM:SS.mmm --> HH:MM:SS.mmm`; empty texts skipped."""
    cues = [s for s in segments if s.text.strip()]
    body = "".join(f"{subtitle_timestamp(s.start_s, '.')} --> {subtitle_timestamp(s.end_s, '.')}\n{s.text.strip()}\n\n" for s in cues)
    return "WEBVTT\n\n" + body
