"""Metrics from (reference, hypothesis) pairs: normalised WER/CER, per-utterance errors, a paired
bootstrap of the before/after difference, and loss summaries. Knows nothing of where data came from.

WER/CER use jiwer on text normalised with the Whisper English normaliser (lora.core.text); the raw
strings are kept in every per-utterance record.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass

from lora.core.text import normalize_for_scoring

BOOTSTRAP_RESAMPLES = 1000


@dataclass(frozen=True)
class UtteranceScore:
    id: str
    reference: str
    hypothesis: str
    ref_words: int
    errors: int  # substitutions + deletions + insertions (words)
    wer: float


def summarize_losses(losses: list[float]) -> float | None:
    """Mean of logged losses; None when nothing was logged (never a made-up 0)."""
    values = [float(x) for x in losses if x is not None and math.isfinite(float(x))]
    return sum(values) / len(values) if values else None


def _normalised(texts: list[str]) -> list[str]:
    # jiwer rejects empty references; an empty normalised string scores as one empty word.
    return [normalize_for_scoring(t) or "<empty>" for t in texts]


def score(ids: list[str], references: list[str], hypotheses: list[str]) -> dict:
    """Corpus WER/CER with S/D/I counts, plus per-utterance scores (raw strings kept)."""
    import jiwer

    if not references:
        return {"wer": None, "cer": None, "samples": []}
    refs, hyps = _normalised(references), _normalised(hypotheses)
    words = jiwer.process_words(refs, hyps)
    chars = jiwer.process_characters(refs, hyps)
    per = []
    for i, (ref, hyp) in enumerate(zip(refs, hyps)):
        one = jiwer.process_words(ref, hyp)
        errors = one.substitutions + one.deletions + one.insertions
        n = len(ref.split())
        per.append(UtteranceScore(ids[i], references[i], hypotheses[i], n, errors, errors / max(n, 1)))
    return {
        "wer": words.wer,
        "cer": chars.cer,
        "substitutions": words.substitutions,
        "deletions": words.deletions,
        "insertions": words.insertions,
        "ref_words": sum(u.ref_words for u in per),
        "samples": [asdict(u) for u in per],
    }


def paired_bootstrap(before: list[dict], after: list[dict], resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> dict:
    """95% interval of WER(after) - WER(before), resampling utterances with replacement.

    `before`/`after` are per-utterance records (same order) with `errors` and `ref_words`.
    The verdict is "improved"/"worse" when the interval excludes 0, else "no significant change".
    """
    n = len(before)
    if n == 0 or n != len(after):
        return {"delta": None, "ci95": None, "verdict": "not enough data", "resamples": 0}
    eb = [b["errors"] for b in before]
    ea = [a["errors"] for a in after]
    nw = [b["ref_words"] for b in before]
    rng = random.Random(seed)
    deltas = []
    for _ in range(resamples):
        pick = [rng.randrange(n) for _ in range(n)]
        words = sum(nw[i] for i in pick) or 1
        deltas.append((sum(ea[i] for i in pick) - sum(eb[i] for i in pick)) / words)
    deltas.sort()
    low, high = deltas[int(0.025 * resamples)], deltas[min(resamples - 1, int(0.975 * resamples))]
    delta = (sum(ea) - sum(eb)) / (sum(nw) or 1)
    verdict = "improved" if high < 0 else "worse" if low > 0 else "no significant change"
    return {"delta": delta, "ci95": [low, high], "verdict": verdict, "resamples": resamples, "seed": seed}


def compare(before: dict, after: dict) -> list[dict]:
    """Per-utterance before/after, the utterances that got worse first."""
    rows = []
    for b, a in zip(before["samples"], after["samples"]):
        rows.append({
            "id": b["id"], "reference": b["reference"],
            "hypothesis_before": b["hypothesis"], "hypothesis_after": a["hypothesis"],
            "wer_before": b["wer"], "wer_after": a["wer"], "wer_change": a["wer"] - b["wer"],
        })
    return sorted(rows, key=lambda r: (-r["wer_change"], r["id"]))


def bootstrap_wer_ci(samples: list[dict], resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> list[float] | None:
    """95% interval of one model's corpus WER, resampling utterances with replacement."""
    if not samples:
        return None
    rng = random.Random(seed)
    n = len(samples)
    values = []
    for _ in range(resamples):
        pick = [samples[rng.randrange(n)] for _ in range(n)]
        values.append(sum(s["errors"] for s in pick) / (sum(s["ref_words"] for s in pick) or 1))
    values.sort()
    return [values[int(0.025 * resamples)], values[min(resamples - 1, int(0.975 * resamples))]]

