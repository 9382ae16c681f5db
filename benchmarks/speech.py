"""The real speech the bench runs on, and clips of chosen lengths made from it.

Clips of about 2, 5, 10 and 20 s are concatenations of whole utterances of one speaker (never
synthetic audio, never cut mid-word), so a longer clip is more of the same kind of speech, and its
transcript is the utterances' transcripts joined.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np

from lora.data.records import Utterance, read_librispeech_dir

MAX_PARTS = 4  # utterances per clip at most
TOLERANCE = 0.1  # a clip within 10% of the asked length counts as that length


def utterances(speech_dir: str, subsets) -> list:

    return read_librispeech_dir(Path(speech_dir), list(subsets))


def closest_combination(durations: list[float], target: float, max_parts: int = MAX_PARTS) -> tuple[int, ...]:
    """Indices of utterances whose total duration is near `target`: the fewest utterances within
    TOLERANCE of it (then the closest), else simply the closest total."""
    best: tuple = ()
    for parts in range(1, max_parts + 1):
        for combo in itertools.combinations(range(len(durations)), parts):
            error = abs(sum(durations[i] for i in combo) - target)
            key = (error > TOLERANCE * target, parts if error <= TOLERANCE * target else 0, error, combo)
            best = min(best, key) if best else key
    return best[-1]


def speaker_clips(speech_dir: str, speaker: str, lengths) -> list:
    """One `Utterance` per requested length, each the concatenation of real utterances of `speaker`."""

    rows = sorted((u for u in read_librispeech_dir(Path(speech_dir)) if u.speaker == speaker), key=lambda u: u.id)
    if not rows:
        raise SystemExit(f"speaker {speaker} not found in {speech_dir}")
    audio = [u.samples() for u in rows]
    durations = [len(a) / 16000 for a in audio]
    clips = []
    for target in lengths:
        combo = closest_combination(durations, target)
        clips.append(Utterance(
            id=f"{speaker}-clip-{target:g}s", speaker=speaker, text=" ".join(rows[i].text for i in combo),
            audio=np.concatenate([audio[i] for i in combo]), extra={"parts": [rows[i].id for i in combo]},
        ))
    return clips
