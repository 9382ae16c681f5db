"""Long real recordings made by joining consecutive utterances of one speaker, end to end.

For testing and benchmarking the long-form path (lora.longform, lora.segmenting) on real speech
whose transcript and utterance boundaries are known: the joined transcript is the utterances'
transcripts in order, and utterance k spans `bounds[k]` seconds of the joined audio.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from lora.core.audio import SAMPLE_RATE
from lora.data.records import Utterance


@dataclass(frozen=True)
class JoinedRecording:
    id: str
    speaker: str
    samples: np.ndarray
    utterances: tuple[Utterance, ...]
    bounds: tuple[tuple[float, float], ...]  # (start_s, end_s) of each utterance in `samples`

    @property
    def text(self) -> str:
        return " ".join(u.text for u in self.utterances)

    @property
    def seconds(self) -> float:
        return len(self.samples) / SAMPLE_RATE

    def word_times(self) -> list[float]:
        """Estimated centre time of every word of `text`: its character position within its utterance,
        spread linearly over the utterance's span (no word timestamps exist for the sources)."""
        times: list[float] = []
        for u, (start, end) in zip(self.utterances, self.bounds):
            words = u.text.split()
            total = max(sum(len(w) for w in words) + len(words) - 1, 1)
            offset = 0
            for w in words:
                times.append(start + (end - start) * (offset + len(w) / 2) / total)
                offset += len(w) + 1
        return times


def join_utterances(recording_id: str, utterances: list[Utterance]) -> JoinedRecording:
    """The utterances' audio concatenated in the order given (one speaker expected)."""
    if not utterances:
        raise ValueError("nothing to join")
    speakers = {u.speaker for u in utterances}
    if len(speakers) != 1:
        raise ValueError(f"{recording_id}: utterances of several speakers {sorted(speakers)}")
    parts = [u.samples() for u in utterances]
    ends = np.cumsum([len(p) for p in parts]) / SAMPLE_RATE
    starts = np.concatenate([[0.0], ends[:-1]])
    return JoinedRecording(recording_id, utterances[0].speaker, np.concatenate(parts), tuple(utterances),
                           tuple((float(a), float(b)) for a, b in zip(starts, ends)))


def chapter_groups(utterances: list[Utterance]) -> dict[str, list[Utterance]]:
    """LibriSpeech-style ids `<speaker>-<chapter>-<n>` grouped by `<speaker>-<chapter>`, each sorted by id."""
    groups: dict[str, list[Utterance]] = defaultdict(list)
    for u in sorted(utterances, key=lambda u: u.id):
        groups[u.id.rsplit("-", 1)[0]].append(u)
    return dict(groups)


def repeat_to_length(utterances: list[Utterance], min_seconds: float) -> list[Utterance]:
    """The utterances in order, cycled (whole utterances only) until their total duration reaches
    `min_seconds` (`extra["seconds"]` when known, else decoded): for building an hour of real speech
    out of a few minutes of real clips. Repeats keep their ids with a `~<n>` suffix."""
    if not utterances:
        raise ValueError("nothing to repeat")
    lengths = [u.extra.get("seconds") or len(u.samples()) / SAMPLE_RATE for u in utterances]
    if sum(lengths) <= 0:
        raise ValueError("the utterances have no audio")
    out: list[Utterance] = []
    total, n = 0.0, 0
    while total < min_seconds or not out:
        k = n % len(utterances)
        u = utterances[k]
        rounds = n // len(utterances)
        out.append(u if rounds == 0 else Utterance(f"{u.id}~{rounds}", u.speaker, u.text, u.audio, u.sampling_rate,
                                                   u.origin, u.subset, dict(u.extra), u.span))
        total += lengths[k]
        n += 1
    return out


def speaker_utterances(utterances: list[Utterance], speaker: str | None = None) -> list[Utterance]:
    """One speaker's utterances sorted by id: `speaker`, or the speaker with the most audio."""
    by_speaker: dict[str, list[Utterance]] = defaultdict(list)
    for u in utterances:
        by_speaker[u.speaker].append(u)
    if not by_speaker:
        raise ValueError("no utterances")
    if speaker is None:
        speaker = max(by_speaker, key=lambda s: (sum(u.extra.get("seconds", 0.0) for u in by_speaker[s]),
                                                 len(by_speaker[s]), s))
    if speaker not in by_speaker:
        raise ValueError(f"speaker {speaker!r} not found; speakers: {', '.join(sorted(by_speaker))}")
    return sorted(by_speaker[speaker], key=lambda u: u.id)
