"""Style-aware scoring beside the normalised WER: what the Whisper normaliser hides.

The project's headline WER (`lora.evaluation`) normalises case, punctuation, spelling and numbers,
so a fine-tune that forgets how to punctuate or capitalise, or that loops "zero zero zero", can
look as good as before. These metrics show it:

* `orthographic_wer(refs, hyps)`: WER with case and punctuation kept, only whitespace normalised
  (collapsed and stripped): the "orthographic" WER that ESB and Distil-Whisper report beside the
  normalised one. Corpus-level: total word errors / total reference words.
* `punctuation_f1(base_outputs, tuned_outputs)` and `capitalisation_f1(...)`: does the tuned model
  still write like the base model on the same clips? The base model's own output is the reference,
  so no punctuated ground truth is needed. Exact definition, per clip:
    1. split each output on whitespace into tokens; a token's *key* is its lower-cased letters and
       digits (`str.isalnum`), its *marks* are the punctuation characters (Unicode category P*)
       before and after those letters; a token with no letters or digits ("—", "...") adds its
       marks to the previous token (to the next one when it comes first);
    2. align the two key sequences with `difflib.SequenceMatcher` (autojunk off); only tokens in
       "equal" blocks (same key, aligned) are compared; words one output has and the other has not
       are the WER's business, not style's;
    3. punctuation: for each aligned pair, the multiset of marks of the base token is the truth and
       that of the tuned token the prediction: TP = |base & tuned|, FP = |tuned - base|,
       FN = |base - tuned|;
       capitalisation: a token is positive when its first letter is upper case: TP = both, FP =
       tuned only, FN = base only;
    4. sum TP/FP/FN over all clips; F1 = 2TP / (2TP + FP + FN); precision = TP/(TP+FP), recall =
       TP/(TP+FN). When TP + FP + FN = 0 (neither output has any mark / capital on aligned words)
       F1 is None: nothing to compare, not perfect agreement.
  Example: base "For a full hour he had paced up and down waiting, but he could wait no longer."
  vs tuned "for a full hour he had paced up and down waiting but he could wait no longer": all 17
  words align; punctuation TP 0, FN 2 ("," and ".") -> F1 0; capitalisation TP 0, FN 1 ("For") -> F1 0.
* `raw_insertions(refs, hyps)`: insertions counted before the scoring normaliser, on text only
  lower-cased with punctuation stripped (apostrophes inside words kept). The Whisper normaliser
  joins "zero zero zero" into "000", so a decoder loop on a digit clip costs one substitution in
  the normalised WER and hides the loop; here it costs one insertion per repeated word.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class StyleF1:
    """F1 of the tuned outputs' marks against the base outputs' on aligned words (None: nothing to compare)."""

    f1: float | None
    precision: float | None
    recall: float | None
    true_pos: int
    false_pos: int
    false_neg: int
    aligned_words: int


@dataclass(frozen=True)
class _Token:
    key: str
    marks: tuple[str, ...]
    capitalised: bool


def collapse_whitespace(text: str) -> str:
    """The only normalisation of the orthographic WER."""
    return _SPACE.sub(" ", text or "").strip()


def _word_errors(ref: str, hyp: str) -> tuple[int, int, int, int]:
    """(substitutions, deletions, insertions, reference words) of one pair; an empty side is handled here."""
    import jiwer

    ref_words, hyp_words = ref.split(), hyp.split()
    if not ref_words or not hyp_words:
        return 0, len(ref_words), len(hyp_words), len(ref_words)
    out = jiwer.process_words(ref, hyp)
    return out.substitutions, out.deletions, out.insertions, len(ref_words)


def _check_pairs(a: Sequence[str], b: Sequence[str], names: str) -> None:
    if isinstance(a, str) or isinstance(b, str):
        raise TypeError(f"{names} must be lists of strings (one per clip), not single strings")
    if len(a) != len(b):
        raise ValueError(f"{names}: {len(a)} vs {len(b)} texts; they must be the same clips in the same order")


def orthographic_wer(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """Corpus WER with case and punctuation kept ("Hello," != "hello"); only whitespace normalised."""
    _check_pairs(refs, hyps, "refs/hyps")
    errors = words = 0
    for ref, hyp in zip(refs, hyps):
        s, d, i, n = _word_errors(collapse_whitespace(ref), collapse_whitespace(hyp))
        errors += s + d + i
        words += n
    if words == 0:
        raise ValueError("the references hold no words; WER is undefined")
    return errors / words


def _is_mark(ch: str) -> bool:
    return unicodedata.category(ch).startswith("P")


def tokens(text: str) -> list[_Token]:
    """Whitespace tokens with key, attached punctuation marks and capitalisation (see the module docstring)."""
    out: list[_Token] = []
    pending: list[str] = []  # marks of leading letterless tokens, for the next word
    for raw in (text or "").split():
        alnum = [i for i, ch in enumerate(raw) if ch.isalnum()]
        if not alnum:
            marks = [ch for ch in raw if _is_mark(ch)]
            if out:
                last = out[-1]
                out[-1] = _Token(last.key, last.marks + tuple(marks), last.capitalised)
            else:
                pending += marks
            continue
        first, last_i = alnum[0], alnum[-1]
        marks = pending + [ch for ch in raw[:first] + raw[last_i + 1:] if _is_mark(ch)]
        pending = []
        key = "".join(ch for ch in raw.lower() if ch.isalnum())
        letters = [ch for ch in raw if ch.isalpha()]
        out.append(_Token(key, tuple(marks), bool(letters) and letters[0].isupper()))
    return out


def _aligned(base: str, tuned: str) -> list[tuple[_Token, _Token]]:
    a, b = tokens(base), tokens(tuned)
    matcher = difflib.SequenceMatcher(None, [t.key for t in a], [t.key for t in b], autojunk=False)
    pairs = []
    for block in matcher.get_matching_blocks():
        pairs += [(a[block.a + k], b[block.b + k]) for k in range(block.size)]
    return pairs


def _f1(tp: int, fp: int, fn: int, aligned: int) -> StyleF1:
    if tp + fp + fn == 0:
        return StyleF1(None, None, None, 0, 0, 0, aligned)
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    return StyleF1(2 * tp / (2 * tp + fp + fn), precision, recall, tp, fp, fn, aligned)


def punctuation_f1(base_outputs: Sequence[str], tuned_outputs: Sequence[str]) -> StyleF1:
    """F1 of the tuned outputs' punctuation marks against the base outputs' on aligned words."""
    _check_pairs(base_outputs, tuned_outputs, "base_outputs/tuned_outputs")
    tp = fp = fn = aligned = 0
    for base, tuned in zip(base_outputs, tuned_outputs):
        for b, t in _aligned(base, tuned):
            truth, pred = Counter(b.marks), Counter(t.marks)
            tp += sum((truth & pred).values())
            fp += sum((pred - truth).values())
            fn += sum((truth - pred).values())
            aligned += 1
    return _f1(tp, fp, fn, aligned)


def capitalisation_f1(base_outputs: Sequence[str], tuned_outputs: Sequence[str]) -> StyleF1:
    """F1 of the tuned outputs' capitalised words against the base outputs' on aligned words."""
    _check_pairs(base_outputs, tuned_outputs, "base_outputs/tuned_outputs")
    tp = fp = fn = aligned = 0
    for base, tuned in zip(base_outputs, tuned_outputs):
        for b, t in _aligned(base, tuned):
            tp += b.capitalised and t.capitalised
            fp += t.capitalised and not b.capitalised
            fn += b.capitalised and not t.capitalised
            aligned += 1
    return _f1(tp, fp, fn, aligned)


def strip_for_insertions(text: str) -> str:
    """Lower case, punctuation removed (apostrophes inside words kept), whitespace collapsed; nothing else."""
    low = (text or "").lower()
    kept = []
    for i, ch in enumerate(low):
        inner_apostrophe = ch in "'’" and 0 < i < len(low) - 1 and low[i - 1].isalnum() and low[i + 1].isalnum()
        kept.append(ch if not _is_mark(ch) or inner_apostrophe else " ")
    return collapse_whitespace("".join(kept))


def raw_insertions(refs: Sequence[str], hyps: Sequence[str]) -> int:
    """Total inserted words before scoring normalisation (loops the normaliser would fold into "000")."""
    _check_pairs(refs, hyps, "refs/hyps")
    return sum(_word_errors(strip_for_insertions(r), strip_for_insertions(h))[2] for r, h in zip(refs, hyps))


# The forgetting verdict on the canary: every one must hold for "pass".
MAX_NORMALISED_WER_RISE = 0.01  # 1 point of normalised WER
MAX_ORTHOGRAPHIC_WER_RISE = 0.01  # 1 point of orthographic WER
MIN_PUNCTUATION_F1 = 0.90  # tuned vs base output
MIN_CAPITALISATION_F1 = 0.95  # tuned vs base output
# Held-out outputs longer than this many times their reference (in words) are counted (loops).
LONG_OUTPUT_RATIO = 2.0


def forgetting_verdict(wer_before: float | None, wer_after: float | None, ortho_before: float | None,
                       ortho_after: float | None, punct_f1: float | None, caps_f1: float | None) -> tuple[str, list[str]]:
    """("pass" | "fail", the failed checks). A figure that could not be measured (None) fails nothing
    but is named, so a verdict never rests silently on a missing number."""
    reasons, missing = [], []
    checks = (
        ("normalised WER rise", None if wer_before is None or wer_after is None else wer_after - wer_before,
         lambda x: x > MAX_NORMALISED_WER_RISE + 1e-12, f"> {100 * MAX_NORMALISED_WER_RISE:g} pt"),
        ("orthographic WER rise", None if ortho_before is None or ortho_after is None else ortho_after - ortho_before,
         lambda x: x > MAX_ORTHOGRAPHIC_WER_RISE + 1e-12, f"> {100 * MAX_ORTHOGRAPHIC_WER_RISE:g} pt"),
        ("punctuation F1", punct_f1, lambda x: x < MIN_PUNCTUATION_F1, f"< {MIN_PUNCTUATION_F1:g}"),
        ("capitalisation F1", caps_f1, lambda x: x < MIN_CAPITALISATION_F1, f"< {MIN_CAPITALISATION_F1:g}"),
    )
    for name, value, failed, limit in checks:
        if value is None:
            missing.append(f"{name} not measured")
        elif failed(value):
            shown = f"{100 * value:+.1f} pt" if "rise" in name else f"{value:.3f}"
            reasons.append(f"{name} {shown} {limit}")
    return ("fail" if reasons else "pass"), reasons + missing


def length_ratios(refs: Sequence[str], hyps: Sequence[str]) -> tuple[float | None, int]:
    """(largest hypothesis/reference word ratio, hypotheses over LONG_OUTPUT_RATIO x their reference), on
    text stripped as for `raw_insertions`; a reference of no words counts as one word."""
    _check_pairs(refs, hyps, "refs/hyps")
    ratios = [len(strip_for_insertions(h).split()) / max(1, len(strip_for_insertions(r).split())) for r, h in zip(refs, hyps)]
    if not ratios:
        return None, 0
    return max(ratios), sum(1 for x in ratios if x > LONG_OUTPUT_RATIO)
