"""Speaker-clustered paired bootstrap of a WER change: does it generalise to new speakers?

`lora.evaluation.paired_bootstrap` resamples utterances, which treats 50 clips of one speaker as 50
independent draws. Utterances of one speaker share a voice, a microphone and a room, so they are
not independent; when a test set has few speakers, the utterance bootstrap's interval is too
narrow to say anything about an unseen speaker. This one resamples in two stages:

  1. draw as many speakers as there are, with replacement;
  2. for each drawn speaker, draw as many of its utterances as it has, with replacement;

and computes WER(after) - WER(before) on the same drawn utterances (paired: both models are scored
on one resample, so per-utterance differences, not two independent WERs, are what vary). The 95%
interval is the 2.5th and 97.5th percentiles over `resamples` draws.

Verdict: with at least `MIN_SPEAKERS` (5) speakers, "improved" / "worse" when the interval excludes
0, else "no significant change". With fewer the verdict is "too few speakers to generalise (N)":
the interval is still reported, but resampling 2-4 speakers gives an interval that says how much
those speakers vary, not how a new speaker would fare.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MIN_SPEAKERS = 5
BOOTSTRAP_RESAMPLES = 1000


def _speaker_groups(speakers: Sequence[str]) -> list[np.ndarray]:
    order: dict[str, list[int]] = {}
    for i, speaker in enumerate(speakers):
        order.setdefault(str(speaker), []).append(i)
    return [np.asarray(idx) for idx in order.values()]


def clustered_paired_bootstrap(before: Sequence[dict], after: Sequence[dict], speakers: Sequence[str],
                               resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> dict:
    """95% interval of WER(after) - WER(before), resampling speakers, then utterances within each.

    `before`/`after` are per-utterance records in the same order (`errors`, `ref_words`, as in
    `lora.evaluation.score(...)["samples"]`); `speakers[i]` is utterance i's speaker.
    """
    n = len(before)
    if n == 0 or n != len(after) or n != len(speakers):
        raise ValueError(f"before/after/speakers must be the same utterances: {len(before)}, {len(after)}, "
                         f"{len(speakers)} given")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    eb = np.asarray([b["errors"] for b in before], dtype=np.float64)
    ea = np.asarray([a["errors"] for a in after], dtype=np.float64)
    words = np.asarray([b["ref_words"] for b in before], dtype=np.float64)
    groups = _speaker_groups(speakers)
    rng = np.random.default_rng(seed)
    deltas = np.empty(resamples)
    for r in range(resamples):
        chosen = rng.integers(len(groups), size=len(groups))
        picks = np.concatenate([groups[g][rng.integers(len(groups[g]), size=len(groups[g]))] for g in chosen])
        deltas[r] = (ea[picks].sum() - eb[picks].sum()) / (words[picks].sum() or 1.0)
    deltas.sort()
    low, high = float(deltas[int(0.025 * resamples)]), float(deltas[min(resamples - 1, int(0.975 * resamples))])
    delta = float((ea.sum() - eb.sum()) / (words.sum() or 1.0))
    if len(groups) < MIN_SPEAKERS:
        verdict = f"too few speakers to generalise ({len(groups)})"
    else:
        verdict = "improved" if high < 0 else "worse" if low > 0 else "no significant change"
    return {"delta": delta, "ci95": [low, high], "verdict": verdict, "speakers": len(groups), "utterances": n,
            "resamples": resamples, "seed": seed, "method": "speaker-clustered paired bootstrap"}
