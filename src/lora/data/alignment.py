"""Word-level edit-distance alignment of a hypothesis to a reference, and style carry-over.

`align_words(ref, hyp)` is a Levenshtein alignment over words (unit costs: substitution,
deletion, insertion 1, match 0) with a full backtrace. Words are compared by a key (default
`normalise_word`: lower case, leading/trailing punctuation stripped) so "Hello," matches "HELLO".

Cost: O(n*m) time and memory. Each DP row is computed with numpy (the insertion recurrence
`D[i, j] = min(x[j], D[i, j-1] + 1)` is solved as `j + cummin(x[k] - k)`), so 5k x 5k words takes
about a second; the cost matrix is kept for the backtrace as int32 ((n+1)*(m+1)*4 bytes, 100 MB at
5k x 5k). Ties in the backtrace prefer the diagonal (match/substitution), then deletion, then
insertion, so equal-cost alignments pair words rather than leaving gaps.

`carry_style(reference, styled)` rewrites a reference transcript (e.g. LibriSpeech UPPERCASE without
punctuation) with the casing and punctuation of a styled transcript of the same audio (the base
model's own output), for style-preserving training targets. Knows no audio or models.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher

import numpy as np

MATCH, SUBSTITUTION, DELETION, INSERTION = "match", "sub", "del", "ins"
_EDGE_PUNCT = re.compile(r"^[^\w]+|[^\w]+$")
_SENTENCE_END = (".", "!", "?")
# Reference words always written with a capital I when unmatched ("I", "I'm", "I'll", ...).
_PRONOUN_I = re.compile(r"^i('(m|ll|ve|d))?$")


@dataclass(frozen=True)
class AlignedPair:
    """One alignment step. `ref_index`/`hyp_index` are None for an insertion/deletion."""

    ref_index: int | None
    hyp_index: int | None
    op: str  # MATCH, SUBSTITUTION, DELETION (ref word, no hyp word) or INSERTION (hyp word only)


def normalise_word(word: str) -> str:
    """Lower case with leading/trailing punctuation stripped ("Hello," -> "hello", "don't" kept)."""
    return _EDGE_PUNCT.sub("", word).lower()


def _codes(ref_keys: list[str], hyp_keys: list[str]) -> tuple[np.ndarray, np.ndarray]:
    vocab: dict[str, int] = {}
    ref = np.array([vocab.setdefault(k, len(vocab)) for k in ref_keys], dtype=np.int64)
    hyp = np.array([vocab.setdefault(k, len(vocab)) for k in hyp_keys], dtype=np.int64)
    return ref, hyp


def _cost_matrix(ref: np.ndarray, hyp: np.ndarray) -> np.ndarray:
    n, m = len(ref), len(hyp)
    cost = np.empty((n + 1, m + 1), dtype=np.int32)
    cols = np.arange(m + 1, dtype=np.int32)
    cost[0] = cols
    for i in range(1, n + 1):
        prev = cost[i - 1]
        best = np.empty(m + 1, dtype=np.int32)
        best[0] = i
        best[1:] = np.minimum(prev[:-1] + (hyp != ref[i - 1]), prev[1:] + 1)  # diagonal, deletion
        cost[i] = cols + np.minimum.accumulate(best - cols)  # insertion: min over k<=j of best[k] + (j-k)
    return cost


def align_words(ref: Sequence[str], hyp: Sequence[str], key: Callable[[str], str] = normalise_word) -> list[AlignedPair]:
    """Minimum-edit alignment of `hyp` to `ref`, in order; words compared as `key(word)`."""
    ref_codes, hyp_codes = _codes([key(w) for w in ref], [key(w) for w in hyp])
    cost = _cost_matrix(ref_codes, hyp_codes)
    pairs: list[AlignedPair] = []
    i, j = len(ref), len(hyp)
    while i > 0 or j > 0:
        if i > 0 and j > 0:
            same = ref_codes[i - 1] == hyp_codes[j - 1]
            if cost[i, j] == cost[i - 1, j - 1] + (0 if same else 1):
                pairs.append(AlignedPair(i - 1, j - 1, MATCH if same else SUBSTITUTION))
                i, j = i - 1, j - 1
                continue
        if i > 0 and cost[i, j] == cost[i - 1, j] + 1:
            pairs.append(AlignedPair(i - 1, None, DELETION))
            i -= 1
        else:
            pairs.append(AlignedPair(None, j - 1, INSERTION))
            j -= 1
    pairs.reverse()
    return pairs


def edit_distance(ref: Sequence[str], hyp: Sequence[str], key: Callable[[str], str] = normalise_word) -> int:
    """Word edit distance (substitutions + deletions + insertions) of `hyp` against `ref`."""
    return sum(p.op != MATCH for p in align_words(ref, hyp, key))


def _starts_sentence(previous: str | None, styled_words: list[str]) -> bool:
    if previous is None:  # first word: a sentence start when the styled text starts with a capital
        return bool(styled_words) and styled_words[0][:1].isupper()
    return previous.endswith(_SENTENCE_END)


def carry_style(reference: str, styled: str) -> tuple[str, float]:
    """The reference words written with the casing and edge punctuation of matching `styled` words.

    Returns (text, coverage), coverage = share of reference words matched (1.0 for an empty
    reference: nothing is left uncovered). A matched word is the styled token itself (same letters
    by construction, so casing and leading/trailing punctuation come along). A substituted word that
    is a near miss (`_near`: "Nein." for "nine", "Jon" for "JOHN") keeps its own letters and takes
    the styled word's capital and trailing punctuation: the base model's sentence structure is right
    where a word is misheard. Any other unmatched reference word is written in lower case without
    punctuation, except the pronoun "I" (and I'm/I'll/I've/I'd), and a word at a sentence start is
    capitalised: the first word when the styled text begins with a capital, or any word after one
    ending in . ! or ?. The styled text's final . ! or ? ends the reference (the clip ends a sentence
    there), also when the reference goes on past the last word the base model wrote.

    >>> carry_style("FOR A FULL HOUR HE HAD PACED", "For a full hour, he had paced.")
    ('For a full hour, he had paced.', 1.0)
    >>> carry_style("NINE", "Nein.")
    ('Nine.', 0.0)
    """
    ref_words, styled_words = reference.split(), list(styled.split())
    if not ref_words:
        return "", 1.0
    pairs = {p.ref_index: p for p in align_words(ref_words, styled_words) if p.ref_index is not None}
    final_stop = styled_words[-1][-1] if styled_words and styled_words[-1].endswith(_SENTENCE_END) else ""
    if final_stop:  # the stop belongs after the last reference word, wherever the base model's last word aligned
        styled_words[-1] = styled_words[-1].rstrip("".join(_SENTENCE_END)) or styled_words[-1]
    out: list[str] = [""] * len(ref_words)
    matched = 0
    for i, word in enumerate(ref_words):
        pair = pairs[i]
        if pair.op == MATCH:
            out[i] = styled_words[pair.hyp_index]
            matched += 1
            continue
        lowered = word.lower()
        if _PRONOUN_I.match(lowered):
            lowered = "I" + lowered[1:]
        if _starts_sentence(out[i - 1] if i else None, styled_words):
            lowered = lowered[:1].upper() + lowered[1:]
        if pair.op == SUBSTITUTION and _near(word, styled_words[pair.hyp_index]):
            theirs = styled_words[pair.hyp_index]
            if theirs[:1].isupper():
                lowered = lowered[:1].upper() + lowered[1:]
            lowered = _EDGE_PUNCT.sub("", lowered) + _trailing_punct(theirs)
        out[i] = lowered
    if final_stop and not out[-1].endswith(_SENTENCE_END):
        out[-1] = out[-1].rstrip(",;:") + final_stop
    return " ".join(out), matched / len(ref_words)


NEAR_MISS_RATIO = 0.5  # difflib similarity of two words' letters above which one is a mishearing of the other


def _near(word: str, other: str) -> bool:
    """Is `other` a near miss of `word` ("nein"/"nine" 0.5, "jon"/"john" 0.86; "flour"/"entirely" 0.15)?"""
    return SequenceMatcher(None, normalise_word(word), normalise_word(other)).ratio() >= NEAR_MISS_RATIO


def _trailing_punct(word: str) -> str:
    """The punctuation a word ends with ("paced." -> ".", "don't" -> "")."""
    found = re.search(r"[^\w]+$", word)
    return found.group(0) if found else ""
