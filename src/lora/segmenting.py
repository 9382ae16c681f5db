"""Cut a long recording with one transcript into training clips, and write them with a manifest.

`segment_recording(samples, transcript, transcribe_batch, options)`:
  1. VAD chunks of at most `max_chunk_s` (lora.longform: speech regions, cut in pauses);
  2. a base-model hypothesis per chunk (any batched transcriber);
  3. the chunk hypotheses' words, concatenated in time order, are aligned to the transcript's words
     (lora.data.alignment, word edit distance);
  4. every reference word goes to a chunk: a word paired with a hypothesis word (match or
     substitution) goes to that word's chunk; an unpaired (deleted) word goes to the chunk of the
     nearest paired reference word in alignment order (steps through the alignment, insertions
     included), the earlier side on a tie. The alignment is monotonic, so each chunk gets a
     contiguous run of reference words;
  5. each chunk's CER (normalised, lora.evaluation.score) between its hypothesis and its reference
     words; chunks with CER > `max_cer`, no reference words or no hypothesis are quarantined with
     the reason.
`segment_by_cues(samples, cues, transcribe_batch, options)` does the same for a recording with subtitles
(lora.data.subtitles): their times cut the clips (neighbouring cues joined up to `max_chunk_s`, each
clip padded by PAD_S into the silence around it), each clip's words are its cues', and steps 2 and 5
score and quarantine as above.
`subtitle_offset(samples, cues)` says how far the subtitles are off the speech silero-vad hears (subtitles
timed against another cut of a video, or at another frame rate): the shift (after a frame-rate stretch, where
one fits clearly better) that best lines the cues' spans up with the speech (`best_offset`, frames of
OFFSET_FRAME_S compared over shifts up to MAX_OFFSET_S), and the share of the subtitles' span where speech
and cues agree so moved and as timed; `lora segment` warns of a clear one, and moves the cues by it with
`--subtitle-offset auto`.
`write_clip_audio` writes the kept clips as 16 kHz 16-bit FLAC/WAV under `<out>/clips/` and returns their
manifest rows (id, audio (relative to `<out>`), text, speaker, seconds, source, start_s, end_s); `write_manifest`
writes the rows of every recording once their clips are written, every file atomically, so the manifest never
names a clip that is not written yet.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lora.core.audio import SAMPLE_RATE
from lora.core.outputs import write_bytes_atomic, write_text_atomic
from lora.core.text import normalize_for_scoring
from lora.data.alignment import DELETION, INSERTION, MATCH, align_words
from lora.data.subtitles import Cue, group_cues
from lora.evaluation import score
from lora.longform import (
    LongformOptions,
    TranscribeBatch,
    decode_chunks,
    detect_speech,
    plan_chunks,
)

AUDIO_FORMATS = {"flac": "FLAC", "wav": "WAV"}
# Subtitle times are set by eye and ear: a clip cut at them is widened this much on each side (up to its
# neighbours' cues), so a word started a little before its cue is not cut in half.
PAD_S = 0.25
# A cue is heard when most of its words are in the clip's hypothesis: a cue with more than this share of its
# words (and at least MIN_CUE_ERRORS of them) substituted or missing holds the wrong text or the wrong times,
# and its clip is quarantined whatever the clip's CER (one wrong cue among several hides under the CER).
MAX_CUE_WORD_ERRORS, MIN_CUE_ERRORS = 0.5, 3
# Two clips whose cues overlap by more than this (two speakers at once in a meeting, or cues timed over each
# other) cannot be cut apart without cutting words off one of them: both are quarantined. Less is timing
# slack (a frame or two), cut at the later cue's start.
MAX_CUE_OVERLAP_S = 0.1
# Subtitles off the speech: cue spans and VAD speech compared in frames this long, over shifts up to this
# far either way (capped at half the recording). A shift is clear when it is at least MIN_OFFSET_S and lines
# up at least MIN_OFFSET_GAIN more of the frames than none does. Cues spanning whole utterances of the shared
# speech (their leading and trailing pauses included) gave best shifts of 0.0-0.52 s, and shifted by 2-7 s
# were found within 0.52 s; a smaller offset than MIN_OFFSET_S is left to PAD_S and the per-cue check.
OFFSET_FRAME_S, MAX_OFFSET_S = 0.02, 60.0
MIN_OFFSET_S, MIN_OFFSET_GAIN = 1.0, 0.01
# Subtitles timed for a video at another frame rate drift: a cue at t belongs at t * ratio. The ratios of
# the common rates (film 24 and 23.976, PAL 25) are tried besides 1, each only where it moves the last cue
# at least MIN_DRIFT_S, and taken only when it fits MIN_OFFSET_GAIN better than the best shift alone: cues
# shrunk fit speech better for being shorter (cues last a little longer than their words), so a stretch
# can win a little by that alone. Measured on the 122 s recipe recording (whole-utterance cues): timed
# 3 s late, x0.96 fitted 0.004 better than the shift alone (wrong); timed at 25/24, 0.019 better (right).
MIN_DRIFT_S = 3.0
FRAME_RATE_RATIOS = tuple(sorted({round(a / b, 6) for a in (24000 / 1001, 24.0, 25.0) for b in (24000 / 1001, 24.0, 25.0)}))


@dataclass(frozen=True)
class SegmentOptions:
    max_cer: float = 0.2
    longform: LongformOptions = field(default_factory=LongformOptions)


@dataclass(frozen=True)
class SubtitleOffset:
    """How far subtitles are off the speech: every cue time t belongs at `t * scale + offset_s`."""

    offset_s: float
    agreement: float  # share of the subtitles' span where speech and cues agree, cues moved so
    agreement_unshifted: float
    scale: float = 1.0

    @property
    def clear(self) -> bool:
        moved = abs(self.offset_s) >= MIN_OFFSET_S or self.scale != 1.0
        return moved and self.agreement - self.agreement_unshifted >= MIN_OFFSET_GAIN


@dataclass(frozen=True)
class Clip:
    """One chunk of the recording with its share of the transcript.

    `word_start:word_end` are the indices (end exclusive) of its words in `transcript.split()`.
    """

    start_s: float
    end_s: float
    text: str
    cer: float | None  # None when there is no reference text to score against
    hypothesis: str
    word_start: int
    word_end: int
    speaker: str = ""  # who speaks in it, where its subtitles say (else the recording's speaker)


@dataclass(frozen=True)
class Quarantined:
    clip: Clip
    reason: str


@dataclass(frozen=True)
class SegmentResult:
    clips: tuple[Clip, ...]
    quarantined: tuple[Quarantined, ...]

    def word_chunks(self) -> dict[int, Clip]:
        """Reference word index -> the clip (kept or quarantined) it was assigned to."""
        every = [*self.clips, *(q.clip for q in self.quarantined)]
        return {i: c for c in every for i in range(c.word_start, c.word_end)}


def assign_words(n_ref: int, hyp_chunk: list[int], pairs) -> list[int]:
    """Chunk index of every reference word, from an alignment of the reference to the hypothesis words.

    `hyp_chunk[j]` is the chunk of hypothesis word j. Deleted reference words take the chunk of
    the nearest paired reference word in alignment order (earlier on a tie). ValueError when no
    reference word is paired (the hypothesis is empty): there is nothing to place words by.
    """
    anchors: list[tuple[int, int]] = []  # (alignment position, chunk) of every paired ref word
    for pos, p in enumerate(pairs):
        if p.op not in (DELETION, INSERTION):
            anchors.append((pos, hyp_chunk[p.hyp_index]))
    if n_ref and not anchors:
        raise ValueError("no reference word aligns to any hypothesis word; cannot place the transcript")
    chunk_of = [-1] * n_ref
    k = 0  # index of the first anchor at or after pos
    for pos, p in enumerate(pairs):
        while k < len(anchors) and anchors[k][0] < pos:
            k += 1
        if p.ref_index is None:
            continue
        if p.op != DELETION:
            chunk_of[p.ref_index] = hyp_chunk[p.hyp_index]
            continue
        before = anchors[k - 1] if k > 0 else None
        after = anchors[k] if k < len(anchors) else None
        if after is None or (before is not None and pos - before[0] <= after[0] - pos):
            chunk_of[p.ref_index] = before[1]
        else:
            chunk_of[p.ref_index] = after[1]
    return chunk_of


def _cer(reference: str, hypothesis: str) -> float | None:
    if not reference.strip():
        return None
    return float(score(["clip"], [reference], [hypothesis])["cer"])


def segment_recording(
    samples: np.ndarray,
    transcript: str,
    transcribe_batch: TranscribeBatch,
    options: SegmentOptions = SegmentOptions(),
    speech: list[tuple[int, int]] | None = None,
) -> SegmentResult:
    """Clips of a long recording with the transcript words each holds; poor matches quarantined.

    `speech` skips the VAD when the speech regions (sample indices) are already known.
    """
    samples = np.asarray(samples, dtype=np.float32)
    lf = options.longform
    if speech is None:
        speech = detect_speech(samples, lf.vad)
    chunks = plan_chunks(speech, len(samples), lf.max_chunk_s, samples, lf.min_fill)
    hyps = decode_chunks(samples, chunks, transcribe_batch, lf.batch_size)
    hyp_words, hyp_chunk = [], []
    for c, text in enumerate(hyps):
        words = text.split()
        hyp_words.extend(words)
        hyp_chunk.extend([c] * len(words))
    ref_words = transcript.split()
    chunk_of = assign_words(len(ref_words), hyp_chunk, align_words(ref_words, hyp_words))
    clips, quarantined = [], []
    for c, ((a, b), hyp) in enumerate(zip(chunks, hyps)):
        idx = [i for i, k in enumerate(chunk_of) if k == c]
        start, end = (idx[0], idx[-1] + 1) if idx else (0, 0)
        text = " ".join(ref_words[start:end])
        clip = Clip(a / SAMPLE_RATE, b / SAMPLE_RATE, text, _cer(text, hyp), hyp, start, end)
        reason = "no reference words assigned" if not text else _match_problem(clip, options)
        if reason:
            quarantined.append(Quarantined(clip, reason))
        else:
            clips.append(clip)
    return SegmentResult(tuple(clips), tuple(quarantined))


def _unfit(group: list[Cue], total_s: float, max_chunk_s: float) -> str | None:
    """Why a group of cues cannot be a clip: timed past the recording's end or before its start, or one cue
    longer than a clip."""
    if group[0].start_s >= total_s:
        return f"cue at {group[0].start_s:.2f} s is past the recording's end ({total_s:.2f} s)"
    if group[-1].end_s <= 0:
        return f"cue at {group[-1].start_s:.2f}-{group[-1].end_s:.2f} s is before the recording's start"
    if group[-1].end_s - group[0].start_s > max_chunk_s:
        return f"cue of {group[0].end_s - group[0].start_s:.1f} s > max_chunk_s {max_chunk_s:g}"
    return None


def _overlapping(groups: list[list[Cue]]) -> list[tuple[int, str]]:
    """(index, reason) of each group that overlaps a neighbour by more than MAX_CUE_OVERLAP_S."""
    found = []
    for i in range(1, len(groups)):
        before, after = groups[i - 1], groups[i]
        end = max(c.end_s for c in before)
        if end - after[0].start_s > MAX_CUE_OVERLAP_S:
            speakers = (before[-1].speaker, after[0].speaker)
            why = f"{' and '.join(speakers)} at once" if all(speakers) and len(set(speakers)) == 2 else "timed over each other"
            reason = (f"cues at {before[-1].start_s:.2f}-{end:.2f} s and {after[0].start_s:.2f}-{after[0].end_s:.2f} s "
                      f"overlap ({why}): no cut keeps both whole")
            found += [(i - 1, reason), (i, reason)]
    return found


def _match_problem(clip: Clip, options: SegmentOptions) -> str | None:
    """Why a clip's hypothesis does not match its words well enough to train on (None: it does)."""
    if not clip.hypothesis:
        return "empty hypothesis"
    if clip.cer > options.max_cer:
        return f"cer {clip.cer:.3f} > max_cer {options.max_cer}"
    return None


def segment_by_cues(
    samples: np.ndarray,
    cues: list[Cue],
    transcribe_batch: TranscribeBatch,
    options: SegmentOptions = SegmentOptions(),
) -> SegmentResult:
    """Clips of a long recording cut at its subtitles' times, each holding its cues' words; poor matches
    (and a cue longer than `max_chunk_s`) quarantined."""
    samples = np.asarray(samples, dtype=np.float32)
    total_s = len(samples) / SAMPLE_RATE
    lf = options.longform
    groups = group_cues(cues, lf.max_chunk_s - 2 * PAD_S)
    bounds = []
    for i, group in enumerate(groups):
        floor = groups[i - 1][-1].end_s if i else 0.0
        ceiling = groups[i + 1][0].start_s if i + 1 < len(groups) else total_s
        start = min(max(floor, group[0].start_s - PAD_S, group[-1].end_s - lf.max_chunk_s, 0.0), total_s)
        end = min(ceiling, group[-1].end_s + PAD_S, start + lf.max_chunk_s, total_s)
        bounds.append((start, end))
    unfit = [_unfit(g, total_s, lf.max_chunk_s) for g in groups]  # such a group is not decoded
    for i, reason in _overlapping(groups):
        unfit[i] = unfit[i] or reason
    fits = [reason is None for reason in unfit]
    chunks = [(round(a * SAMPLE_RATE), round(b * SAMPLE_RATE)) for (a, b), ok in zip(bounds, fits) if ok]
    decoded = iter(decode_chunks(samples, chunks, transcribe_batch, lf.batch_size))
    hyps = [next(decoded) if ok else "" for ok in fits]
    clips, quarantined, first_word = [], [], 0
    for group, (start, end), hyp, why_unfit in zip(groups, bounds, hyps, unfit):
        text = " ".join(c.text for c in group)
        n_words = len(text.split())
        clip = Clip(start, end, text, _cer(text, hyp), hyp, first_word, first_word + n_words, group[0].speaker)
        first_word += n_words
        reason = why_unfit or (_unheard_cue(group, hyp) if hyp else None) or _match_problem(clip, options)
        if reason:
            quarantined.append(Quarantined(clip, reason))
        else:
            clips.append(clip)
    return SegmentResult(tuple(clips), tuple(quarantined))


def _frames(spans: list[tuple[float, float]], n: int, first: int = 0, outside: float = -1.0) -> np.ndarray:
    """+1 on the frames the spans (seconds) cover, -1 between them, `outside` before the first and after the
    last, for frames first..first+n."""
    mask = np.full(n, outside, dtype=np.float64)
    edge = [max(round(t / OFFSET_FRAME_S) - first, 0) for span in spans for t in span]
    if edge:
        mask[min(edge):max(edge)] = -1.0
    for a, b in zip(edge[::2], edge[1::2]):
        mask[a:b] = 1.0
    return mask


def best_offset(speech: list[tuple[float, float]], cues: list[Cue], total_s: float,
                max_offset_s: float = MAX_OFFSET_S, scales: tuple[float, ...] = FRAME_RATE_RATIOS) -> SubtitleOffset:
    """The shift of the cues (a whole number of frames, up to `max_offset_s` and half the recording either
    way), after stretching their times by one of `scales` (where that moves the last cue MIN_DRIFT_S), whose
    spans agree with the speech spans (seconds) on the most frames. Only the subtitles' own span counts (their
    first cue to their last): speech outside it is speech they do not cover, not a sign of where they belong.
    Among equals: scale 1, the least shift."""
    n = max(round(total_s / OFFSET_FRAME_S), 1)
    m = round(min(max_offset_s, total_s / 2) / OFFSET_FRAME_S)
    heard = _frames(speech, n)
    best: SubtitleOffset | None = None
    last = max((c.end_s for c in cues), default=0.0)
    for scale in sorted({1.0, *(r for r in scales if abs(r - 1.0) * last >= MIN_DRIFT_S)}, key=lambda r: abs(r - 1.0)):
        shown = _frames([(c.start_s * scale, c.end_s * scale) for c in cues], n + 2 * m, first=-m, outside=0.0)
        span = max(int(np.count_nonzero(shown)), 1)
        # agree[k]: the share of the subtitles' span where speech and cues agree, with the cues shifted by
        # (m - k) frames (frames shifted off the recording count as half agreeing)
        agree = (np.correlate(shown, heard, "valid") / span + 1) / 2
        ties = np.flatnonzero(agree >= agree.max() - 1e-12)
        k = int(ties[np.argmin(np.abs(ties - m))])
        if best is None:
            unmoved = float(agree[m])  # scale 1 comes first
        if best is None or agree[k] >= best.agreement + MIN_OFFSET_GAIN:  # a stretch must fit clearly better
            best = SubtitleOffset(round((m - k) * OFFSET_FRAME_S, 3), float(agree[k]), unmoved, scale)
    return best


def heard_speech(samples: np.ndarray, options: LongformOptions = LongformOptions()) -> list[tuple[float, float]]:
    """The spans (seconds) where silero-vad hears speech in the recording."""
    return [(a / SAMPLE_RATE, b / SAMPLE_RATE) for a, b in detect_speech(np.asarray(samples, np.float32), options.vad)]


def subtitle_offset(samples: np.ndarray, cues: list[Cue], options: LongformOptions = LongformOptions()) -> SubtitleOffset:
    """`best_offset` against the speech silero-vad hears in the recording."""
    return best_offset(heard_speech(samples, options), cues, len(samples) / SAMPLE_RATE)


def cut_at_end(cues: list[Cue], total_s: float) -> list[Cue]:
    """The cues with any that runs past the recording's end ending there (those starting after it kept whole)."""
    return [Cue(c.start_s, min(c.end_s, total_s), c.text, c.speaker) if c.start_s < total_s else c for c in cues]


def _unheard_cue(group: list[Cue], hypothesis: str) -> str | None:
    """Why one of the clip's cues is not what the clip says (None when every cue is heard). Words compared as
    scored (the scoring normaliser: "EIGHT" and "8," are alike, case and punctuation aside), each cue's on its own."""
    words, owner = [], []
    for k, cue in enumerate(group):
        cue_words = normalize_for_scoring(cue.text).split()
        words += cue_words
        owner += [k] * len(cue_words)
    errors, counts = [0] * len(group), [owner.count(k) for k in range(len(group))]
    for pair in align_words(words, normalize_for_scoring(hypothesis).split()):
        if pair.ref_index is not None and pair.op != MATCH:
            errors[owner[pair.ref_index]] += 1
    for cue, wrong, n in zip(group, errors, counts):
        if wrong >= MIN_CUE_ERRORS and wrong > MAX_CUE_WORD_ERRORS * n:
            return f"cue at {cue.start_s:.2f}-{cue.end_s:.2f} s not heard ({wrong} of its {n} words missing or different)"
    return None


def _encoded(samples: np.ndarray, fmt: str) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.asarray(samples, dtype=np.float32), SAMPLE_RATE, format=AUDIO_FORMATS[fmt], subtype="PCM_16")
    return buf.getvalue()


def write_clip_audio(
    samples: np.ndarray,
    clips: list[Clip] | tuple[Clip, ...],
    out_dir: str | Path,
    recording_id: str,
    speaker: str = "",
    source: str = "",
    audio_format: str = "flac",
    offset_s: float = 0.0,
) -> list[dict]:
    """Write each clip's audio to `<out_dir>/clips/<recording_id>-<nnnn>.<fmt>`; returns their manifest rows
    (audio relative to `out_dir`; speaker: the clip's where its subtitles name one, else `speaker`), for
    `write_manifest` once every recording's clips are written. `offset_s`: where `samples` start in `source` (a
    manifest row that is a segment of it), so that `start_s`/`end_s` are times in the source file."""
    if audio_format not in AUDIO_FORMATS:
        raise ValueError(f"audio_format must be one of {sorted(AUDIO_FORMATS)}, got {audio_format!r}")
    out_dir = Path(out_dir)
    rows = []
    for n, clip in enumerate(clips):
        clip_id = f"{recording_id}-{n:04d}"
        rel = f"clips/{clip_id}.{audio_format}"
        a, b = round(clip.start_s * SAMPLE_RATE), round(clip.end_s * SAMPLE_RATE)
        write_bytes_atomic(out_dir / rel, _encoded(samples[a:b], audio_format))
        rows.append({"id": clip_id, "audio": rel, "text": clip.text, "speaker": clip.speaker or speaker,
                     "seconds": round((b - a) / SAMPLE_RATE, 3), "source": source,
                     "start_s": round(offset_s + clip.start_s, 3), "end_s": round(offset_s + clip.end_s, 3)})
    return rows


def write_manifest(path: str | Path, rows: list[dict]) -> Path:
    return write_text_atomic(Path(path), "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def word_placement_accuracy(result: SegmentResult, word_times: list[float], tolerance_s: float = 0.5) -> float:
    """Share of reference words whose clip (kept or quarantined) spans their known time, +- `tolerance_s`.

    `word_times[i]` is when word i of the transcript is spoken (e.g. estimated from known utterance
    boundaries); a word assigned to no clip counts as misplaced.
    """
    if not word_times:
        raise ValueError("no reference words to place")
    placed = result.word_chunks()
    good = sum(
        1 for i, t in enumerate(word_times)
        if i in placed and placed[i].start_s - tolerance_s <= t <= placed[i].end_s + tolerance_s
    )
    return good / len(word_times)
