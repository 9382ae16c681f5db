"""Join short training clips of one speaker into longer utterances (real audio, end to end).

Why: a domain made of one-word clips (spoken digits) teaches the decoder that a number word is
followed by the end of the transcript. Measured on the digits recipe: Whisper tiny.en then cut
general sentences short ("Four" for "For although the Chinese took impressions...", "Eight" for
"Eight. The press yard"), and replaying general speech alone did not stop it. Training also on
runs of 2..N of a speaker's own clips, transcripts joined in order, shows that speech may go on
after such a word. The single clips stay in the training set; evaluation data is never joined.
"""

from __future__ import annotations

import random
from collections import defaultdict

import numpy as np

from lora.data.records import Utterance


def with_joined_clips(utterances: list[Utterance], most: int, seed: int = 42) -> list[Utterance]:
    """`utterances` plus, per speaker, its clips shuffled and joined in runs of 2..`most`."""
    if most < 2:
        return list(utterances)
    rng = random.Random(seed)
    by_speaker: dict[str, list[Utterance]] = defaultdict(list)
    for u in sorted(utterances, key=lambda u: u.id):
        by_speaker[u.speaker].append(u)
    joined = []
    for speaker in sorted(by_speaker):
        clips = by_speaker[speaker]
        rng.shuffle(clips)
        start = 0
        while len(clips) - start >= 2:
            run = clips[start: start + rng.randint(2, most)]
            start += len(run)
            joined.append(_join(run))
    return list(utterances) + joined


def _join(run: list[Utterance]) -> Utterance:
    first = run[0]
    return Utterance(id="+".join(u.id for u in run), speaker=first.speaker, text=" ".join(u.text for u in run),
                     audio=np.concatenate([u.samples() for u in run]), origin=first.origin, subset=first.subset,
                     extra={"joined_from": [u.id for u in run]})
