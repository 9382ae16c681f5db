"""Decode loop guard: stop a hypothesis when an n-gram repeats more often than the audio allows.

Seq2seq recognisers (Moonshine especially, Whisper too) can fall into a loop on short or silent
clips: "zero zero zero zero zero zero zero zero" for a 0.5 s "zero". The length cap of
`ModelFamily.max_new_tokens` bounds the damage but still lets the loop fill the cap, and the
Whisper normaliser then folds the loop into "00000000" (one substitution), so WER barely shows it
(see `lora.style_metrics.raw_insertions`).

The rule. With S seconds of audio, a speaker says at most `units_per_second` x S units (words, or
tokens for the token-level guard). k consecutive copies of an n-gram are k x n units, and the b units
before them were said first, so they need at least (b + k x n) / units_per_second seconds. A run of
copies is a loop when

    k > allowed(n, b) = max(1, ceil((units_per_second x S - b) / n), min(min_repeats, floor(fastest_units_per_second x S / n))),
    for n = 1 .. max_ngram.

Counting the units before the run matters when a model loops after transcribing the clip: the loop then
has only what is left of the audio's budget. (Before b was counted, a 5-word phrase could repeat 7 times
after 20 words of an 8.4 s clip, 55 words in all, 6.6 words/s.) What the rule comes to: past the first
units_per_second x S units, more than min_repeats copies in a row are a loop.

`min_repeats` (3) is a floor because people do say "no no no" or "zero zero zero" (phone numbers)
quickly, faster than the typical rate; but not faster than anyone speaks: the floor holds only where the
audio could hold its copies at `fastest_units_per_second`. Defaults and why:
  * words: 4 words/s. The sentences of ../shared/speech run at 1.6-3.7 words/s (test-clean
    2.3-3.1, dev-clean 1.6-3.7, LJSpeech 2.0-3.1, JFK 2.0); the FSDD clips reach 7 words/s, but
    each is one word (k = 1). 4/s still catches the loop that matters: "zero" x 8 on 0.5 s is k = 8 >
    max(1, ceil(2), min(3, 4)) = 3.
    The floor's fastest rate: 8 words/s, above the 7.0 words/s of the shortest one-word clips of
    ../shared/speech and speech-extra (0.143 s; the training speakers' shortest, 0.144 s) and above
    the fastest conversational speech (6-7 syllables/s). So three copies of a word need 0.375 s:
    "Four. Four. Four." on a 0.2 s clip (one output of the digits recipe's tuned Moonshine, whose base
    model wrote nothing there) is cut to "Four.", while "no no no" on 0.375 s or more keeps the floor.
    Before this bound the floor held at any length (3 words on 0.2 s is 15 words/s).
  * tokens: 8 tokens/s (subword tokenizers split a word into 1-2 tokens), the floor's fastest rate
    16 tokens/s; "zero" x 8 on 0.5 s is caught whether "zero" is one token (8 > max(1, 4, 3)) or
    two (8 > max(1, 2, min(3, 4))).
  * n-grams: up to 10 words / 20 tokens. A loop is often a phrase or a sentence, not a word: ", and the book of
    1980s" is 5 words and 11 Moonshine tokens (the digits recipe's Moonshine, seed 2 in fp32, began such a run
    after an LJSpeech sentence; it stopped by itself after four varied copies, 4.2 words/s in all, which no
    length rule can refuse; the tests run it on to the length cap), and a sentence repeated is longer still. The floor keeps long n-grams safe: four
    copies of a 10-word phrase are 40 words, which no one says in the 5 s the floor would need.
    (Up to 4 before: a phrase loop of 5 or more words was never seen.)
  The test suite checks that no transcript of ../shared/speech (326, with their real durations)
  fires, at the word level and at the token level of both real tokenizers.

Where to cut: at the end of the first copy of the looping n-gram (one copy kept): a run long
enough to fire is evidence that everything after the first copy is the loop.

Three ways to use it:
  * `loop_cut(units, seconds, options)`: pure; index to cut the unit list at, or None;
  * `LoopGuardLogitsProcessor`: for `model.generate` (transformers), batch-aware with per-row audio
    seconds; a row whose generated tokens end in a loop gets EOS forced, the others go on. The
    tokens of the loop already emitted stay; decode and pass through `trim_loops` (or cut the ids
    with `loop_cut`) to keep one copy;
  * `trim_loops(text, seconds)`: post hoc, on decoded text, for exported models (ONNX Runtime,
    CTranslate2). CTranslate2's own `no_repeat_ngram_size` forbids any repeat of an n-gram
    anywhere (it breaks "zero zero seven") and `repetition_penalty` reweights every repeated token;
    neither knows the audio length, so prefer `trim_loops` on its outputs.
"""

from __future__ import annotations

import math
import re
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class LoopGuardOptions:
    """How many consecutive copies of an n-gram the audio length allows (see the module docstring)."""

    units_per_second: float = field(default=4.0, metadata={
        "help": "most units (words, or tokens for the token guard) a speaker says per second of audio"})
    min_repeats: int = field(default=3, metadata={
        "help": "consecutive copies allowed beyond the typical rate ('no no no') where the audio could hold them "
                "at fastest_units_per_second"})
    fastest_units_per_second: float = field(default=8.0, metadata={
        "help": "fastest rate anyone says units at: min_repeats copies need min_repeats x n / this many seconds"})
    max_ngram: int = field(default=10, metadata={"help": "longest repeated n-gram looked for"})

    def floor(self, n: int, seconds: float) -> int:
        """Copies of an n-gram allowed anywhere in `seconds` of audio: min_repeats where the audio could hold
        them at fastest_units_per_second, fewer where it could not."""
        return min(self.min_repeats, math.floor(self.fastest_units_per_second * max(seconds, 0.0) / n))

    def allowed(self, n: int, seconds: float, before: int = 0) -> int:
        """Most consecutive copies of an n-gram that `seconds` of audio can hold after `before` units."""
        return max(1, math.ceil((self.units_per_second * max(seconds, 0.0) - before) / n), self.floor(n, seconds))


WORD_GUARD = LoopGuardOptions()
TOKEN_GUARD = LoopGuardOptions(units_per_second=8.0, fastest_units_per_second=16.0, max_ngram=20)

_WORD = re.compile(r"\S+")


def loop_cut(units: Sequence[Hashable], seconds: float, options: LoopGuardOptions = WORD_GUARD) -> int | None:
    """Index to cut `units` at (one copy of the looping n-gram kept), or None when there is no loop.

    The earliest cut over all n = 1..max_ngram and all runs wins.
    """
    units = list(units)
    size = len(units)
    best: int | None = None
    for n in range(1, options.max_ngram + 1):
        if size < 2 * n:
            break
        # same[i]: units[i] == units[i + n]; run[i]: how many `same` in a row from i
        run = [0] * (size - n + 1)
        for i in range(size - n - 1, -1, -1):
            run[i] = run[i + 1] + 1 if units[i] == units[i + n] else 0
        for p in range(size - n + 1):
            if run[p] >= n and 1 + run[p] // n > options.allowed(n, seconds, before=p):
                best = p + n if best is None else min(best, p + n)
                break  # later runs of this n cut later
    return best


def ends_in_loop(units: Sequence[Hashable], seconds: float, options: LoopGuardOptions) -> bool:
    """Do `units` end in a run of copies that exceeds `allowed`? (The streaming check, called once per
    generated token: at most (min_repeats + 1) x n units compared for each n, whatever the length of the run.)

    The walk back over the run's copies stops after max(1, floor(n)) + 1 of them: each further copy moves the
    run's start back n units, which raises `allowed`'s typical-rate term by exactly one copy, so
    copies - allowed can no longer grow. A run fires at that many copies or not at all. And while the
    hypothesis is within units_per_second x seconds units nothing can fire, so nothing is walked. (Walking
    every run of every call made decoding quadratic in its length: on an hour of speech with the tests' tiny
    random Moonshine, 13.6 s of 30 s of generation under cProfile were this check; 0.35 s of 15.5 s now,
    benchmarks/results/test_suite_time.md.)
    """
    units = units if isinstance(units, list) else list(units)
    if len(units) <= options.units_per_second * max(seconds, 0.0):
        return False  # within the typical-rate budget: a run of k copies starts k x n units back, so allowed >= k
    for n in range(1, options.max_ngram + 1):
        if len(units) < 2 * n:
            break
        tail = units[-n:]
        enough = max(1, options.floor(n, seconds)) + 1  # copies that decide it (see above)
        copies, start = 1, len(units) - n  # the run's copies so far, and where the earliest of them starts
        while copies < enough and start - n >= 0 and units[start - n:start] == tail:
            copies += 1
            start -= n
            if copies > options.allowed(n, seconds, before=start):
                return True
    return False


def _word_key(word: str) -> str:
    """Words compare by letters and digits only: "zero," "Zero" and "zero." are one word."""
    return "".join(ch for ch in word.lower() if ch.isalnum()) or word


def trim_loops(text: str, seconds: float, options: LoopGuardOptions = WORD_GUARD) -> str:
    """Cut a decoded hypothesis after the first copy of a looping word n-gram; unchanged otherwise."""
    words = list(_WORD.finditer(text or ""))
    cut = loop_cut([_word_key(m.group()) for m in words], seconds, options)
    if cut is None:
        return text
    return text[:words[cut - 1].end()]


class LoopGuardLogitsProcessor:
    """transformers LogitsProcessor: force EOS on rows whose generated tokens end in a loop.

    `seconds[i]` is the audio length of batch row i (beams of a row share it). The prompt
    (decoder start / forced tokens) present at the first call is not checked. Pass it as
    `model.generate(..., logits_processor=LogitsProcessorList([guard]))`; build a new one per batch.
    """

    def __init__(self, seconds: Sequence[float], eos_token_id: int, options: LoopGuardOptions = TOKEN_GUARD) -> None:
        self.seconds = [float(s) for s in seconds]
        self.eos_token_id = int(eos_token_id)
        self.options = options
        self.prompt_length: int | None = None
        self.stopped: set[int] = set()  # batch rows (not beams) that were stopped for looping

    def __call__(self, input_ids, scores):
        if self.prompt_length is None:
            self.prompt_length = input_ids.shape[1]
        rows = input_ids.shape[0]
        if rows % len(self.seconds):
            raise ValueError(f"{rows} decoder rows for {len(self.seconds)} audio lengths")
        per_row = rows // len(self.seconds)
        generated = input_ids[:, self.prompt_length:].tolist()
        for r, ids in enumerate(generated):
            if ids and ids[-1] != self.eos_token_id and ends_in_loop(ids, self.seconds[r // per_row], self.options):
                scores[r, :] = -math.inf
                scores[r, self.eos_token_id] = 0.0
                self.stopped.add(r // per_row)
        return scores


def trim_token_loops(ids: Sequence[int], seconds: float, options: LoopGuardOptions = TOKEN_GUARD,
                     special_ids: frozenset[int] = frozenset()) -> list[int]:
    """Cut a generated id sequence after the first copy of a looping token n-gram (special ids ignored)."""
    content = [i for i in ids if i not in special_ids]
    cut = loop_cut(content, seconds, options)
    return content if cut is None else content[:cut]
