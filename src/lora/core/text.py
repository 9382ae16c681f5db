"""Text in two roles: the training-target policy and the scoring normaliser. Knows no audio or models.

Scoring uses the Whisper English normaliser from the `whisper-normalizer` PyPI package, a
maintained verbatim extraction of openai/whisper's `normalizers/english.py` (+ its spelling map),
so our WER is comparable with published Whisper/Moonshine figures without depending on the
whole `openai-whisper` package (which pulls its own torch/triton/tiktoken stack).
"""

from __future__ import annotations

import re
from functools import lru_cache

TARGET_POLICIES = ("styled", "raw", "lower", "sentence", "normalized")
# A reference "has style" when it carries punctuation other than apostrophes/hyphens, or mixes cases.
_STYLE_PUNCT = re.compile(r"[^\w\s'\-]")


@lru_cache(maxsize=1)
def _english_normalizer():
    from whisper_normalizer.english import EnglishTextNormalizer

    return EnglishTextNormalizer()


# Typographic apostrophes (word processors' and phones' smart quotes: "doesn’t"), read as the ASCII one the Whisper
# normaliser knows: it expands "doesn't" to "does not" but cut "doesn’t" into "doesn t", two errors per contraction.
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'"})


@lru_cache(maxsize=1 << 16)
def normalize_for_scoring(text: str) -> str:
    """Whisper English normalisation: case, punctuation, spelling, numbers ("two" == "2"); typographic
    apostrophes count as "'".

    Cached: speaker splits and leakage checks normalise every transcript of a corpus, often twice,
    and corpora repeat transcripts (~0.3 ms each uncached)."""
    return _english_normalizer()((text or "").translate(_APOSTROPHES))


_SPACES = re.compile(r"\s+")


def target_text(text: str, policy: str) -> str:
    """The string a model is trained to emit for transcript `text` under `policy`.

    - raw: as given (LibriSpeech is UPPERCASE without punctuation)
    - lower: lower case
    - sentence: first letter upper, rest lower, standalone "i" upper (how the models were trained)
    - normalized: the scoring normaliser's output
    - styled: a reference with style (`has_style`: LJSpeech, JFK) as given. One without (LibriSpeech
      UPPERCASE, FSDD "zero") gets the base model's casing and punctuation carried onto it by the
      pipeline (`lora.styled_targets`, stored as `Utterance.extra["target"]`, which the families use
      when present); only where no such target was computed (eval-loss sets) is it written as
      `sentence` here. The run records how many training words got the base model's style.
    """
    text = _SPACES.sub(" ", (text or "").strip())
    if policy == "styled":
        return text if has_style(text) else target_text(text, "sentence")
    if policy == "raw":
        return text
    if policy == "lower":
        return text.lower()
    if policy == "sentence":
        lowered = re.sub(r"\bi\b", "I", text.lower())
        return lowered[:1].upper() + lowered[1:]
    if policy == "normalized":
        return normalize_for_scoring(text)
    raise ValueError(f"unknown target policy {policy!r}; choose one of {TARGET_POLICIES}")


def has_style(text: str) -> bool:
    """Does a transcript carry its own orthography: punctuation (beyond ' and -) or both cases?"""
    letters = [c for c in text or "" if c.isalpha()]
    mixed = any(c.isupper() for c in letters) and any(c.islower() for c in letters)
    return mixed or bool(_STYLE_PUNCT.search(text or ""))
