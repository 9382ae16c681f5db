"""Your vocabulary: how often a model writes the terms you care about where they are said.

WER weighs every word alike, so a run that teaches a model twenty product names, drug names or people's
names can move it by a fraction of a point while those names go from wrong to right. `--terms FILE` (one
term or phrase per line, `#` comments) measures them: in each eval utterance, a term's occurrences in the
reference and in the hypothesis are counted (both texts and the term as scored: the Whisper English
normaliser, so "Dr." is "doctor" and "twenty one" is "21"; whole words only). Per utterance,

    recalled = min(said, written)      missed = said - recalled      inserted = max(0, written - said)

and over the set, recall = recalled / said and the term error rate = (missed + inserted) / said. The
change in term error rate gets the same paired bootstrap as the WER (`lora.evaluation.paired_bootstrap`,
each utterance's errors and term occurrences standing for its word errors and words), so "improved" /
"worse" says the same thing as for the WER. Utterances without a term count as no occurrences (an
insertion there still counts).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from lora.core.errors import UserError
from lora.core.text import normalize_for_scoring
from lora.data.alignment import MATCH, align_words
from lora.data.formats import decode_utf8
from lora.evaluation import paired_bootstrap
from lora.results import TermResult, WerChange

MAX_LISTED_TERMS = 200  # per-term rows kept in the results (most said first)
# `lora check --suggest-terms`: a word the base model misses in at least this share of the at least this
# many times it is said is a candidate term
MIN_SUGGESTED_MISSED, MIN_SUGGESTED_SAID = 0.5, 2
# a run of 2-3 such words said together ("okonkwo adeyemi") is suggested as one phrase when more than half the times
# one of its words is said fall inside it; a word said only inside taken phrases is then not listed alone
MAX_PHRASE_WORDS, MIN_PHRASE_SHARE = 3, 0.5
_COMMENT = re.compile(r"(^|\s)#.*$")  # a comment starts with # at the start or after a space ("C#" is a term)


def read_terms(path: str | Path) -> tuple[str, ...]:
    """The terms of a file, one per line (blank lines and `#` comments skipped; terms scored alike, once, as
    first written); a line that normalises to nothing, a file that is not UTF-8 or holds no term: one line
    naming it."""
    path = Path(path)
    try:
        text = decode_utf8(path, path.read_bytes(), "terms file")
    except OSError as exc:
        raise UserError(f"{path}: cannot read the terms file ({exc.strerror}); pass a text file, one term per line") from None
    terms: dict[str, str] = {}  # scored form -> the term as first written (Kubernetes, kubernetes: one term)
    for number, line in enumerate(text.splitlines(), 1):
        term = _COMMENT.sub("", line).strip()
        if not term:
            continue
        scored = normalize_for_scoring(term)
        if not scored.split():
            raise UserError(f"{path}:{number}: {term!r} has no words once normalised as scored; write the term as said")
        dropped = any(not (ch.isalnum() or ch.isspace()) for ch in term)  # "zero" -> "0" is a number, not a loss
        if dropped and len(scored.replace(" ", "")) == 1:  # "C++" is scored as "c": every "c" would count
            raise UserError(f"{path}:{number}: {term!r} is scored as {scored!r} (symbols dropped), which every "
                            f"{scored!r} would match; write the term as said (e.g. \"c plus plus\")")
        terms.setdefault(scored, " ".join(term.split()))
    if not terms:
        raise UserError(f"{path}: no terms in it; write one term or phrase per line")
    return tuple(terms.values())


def count_term(words: Sequence[str], term_words: Sequence[str]) -> int:
    """Non-overlapping occurrences of `term_words` in `words` (both already normalised)."""
    n, k, count, i = len(words), len(term_words), 0, 0
    while i + k <= n:
        if list(words[i:i + k]) == list(term_words):
            count, i = count + 1, i + k
        else:
            i += 1
    return count


def utterance_terms(terms: Sequence[str], reference: str, hypothesis: str) -> dict[str, tuple[int, int]]:
    """term -> (said, written) in one utterance, for the terms said or written in it."""
    ref, hyp = normalize_for_scoring(reference).split(), normalize_for_scoring(hypothesis).split()
    found = {}
    for term in terms:
        words = normalize_for_scoring(term).split()
        said, written = count_term(ref, words), count_term(hyp, words)
        if said or written:
            found[term] = (said, written)
    return found


def term_rows(terms: Sequence[str], samples: Sequence[dict]) -> list[dict]:
    """Per utterance (`samples` as `lora.evaluation.score` gives them): id, said, recalled, missed, inserted,
    and `errors` / `ref_words` (missed + inserted / said) for the bootstrap."""
    rows = []
    for s in samples:
        found = utterance_terms(terms, s["reference"], s["hypothesis"])
        said = sum(a for a, _ in found.values())
        recalled = sum(min(a, b) for a, b in found.values())
        inserted = sum(max(0, b - a) for a, b in found.values())
        rows.append({"id": s["id"], "said": said, "recalled": recalled, "missed": said - recalled, "inserted": inserted,
                     "errors": said - recalled + inserted, "ref_words": said, "found": found})
    return rows


def _per_term(terms: Sequence[str], before: list[dict] | None, after: list[dict]) -> list[dict]:
    table = {t: {"term": t, "said": 0, "recalled_before": None if before is None else 0, "recalled_after": 0,
                 "inserted_before": None if before is None else 0, "inserted_after": 0} for t in terms}
    for side, rows in (("before", before), ("after", after)):
        for row in rows or []:
            for term, (said, written) in row["found"].items():
                entry = table[term]
                if side == "after":
                    entry["said"] += said
                entry[f"recalled_{side}"] += min(said, written)
                entry[f"inserted_{side}"] += max(0, written - said)
    return sorted(table.values(), key=lambda e: (-e["said"], e["term"]))[:MAX_LISTED_TERMS]


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def term_result(terms_file: str, terms: Sequence[str], after_samples: Sequence[dict],
                before_samples: Sequence[dict] | None = None, seed: int = 0) -> TermResult:
    """The terms' recall, insertions and error rate on one model's eval samples, or on two models' (before ->
    after, the same utterances in the same order) with the paired bootstrap of the error rate's change."""
    after = term_rows(terms, after_samples)
    before = term_rows(terms, before_samples) if before_samples is not None else None
    said = sum(r["said"] for r in after)

    def totals(rows: list[dict] | None) -> tuple:
        if rows is None:
            return None, None, None, None
        recalled, inserted = sum(r["recalled"] for r in rows), sum(r["inserted"] for r in rows)
        return recalled, inserted, _rate(recalled, said), _rate(said - recalled + inserted, said)

    recalled_b, inserted_b, recall_b, rate_b = totals(before)
    recalled_a, inserted_a, recall_a, rate_a = totals(after)
    change = None
    if before is not None and said:
        change = WerChange(**paired_bootstrap(before, after, seed=seed))
    return TermResult(
        terms_file=str(terms_file), terms=len(terms), utterances=len(after),
        utterances_with_terms=sum(1 for r in after if r["said"]), said=said,
        recalled_before=recalled_b, recalled_after=recalled_a, inserted_before=inserted_b, inserted_after=inserted_a,
        recall_before=recall_b, recall_after=recall_a, term_error_rate_before=rate_b, term_error_rate_after=rate_a,
        term_error_rate_change_ci95=change, per_term=_per_term(terms, before, after))


def _scored_pairs(references: Sequence[str], hypotheses: Sequence[str]) -> list[tuple[list[str], list[str]]]:
    """(reference words, hypothesis words) of each utterance, as scored."""
    return [(normalize_for_scoring(r).split(), normalize_for_scoring(h).split())
            for r, h in zip(references, hypotheses, strict=True)]


def _missed_words(pairs: Sequence[tuple[list[str], list[str]]], min_said: int,
                  min_missed_share: float) -> list[tuple[str, int, int]]:
    said: Counter[str] = Counter()
    missed: Counter[str] = Counter()
    for ref, hyp in pairs:
        said.update(ref)
        for pair in align_words(ref, hyp):
            if pair.ref_index is not None and pair.op != MATCH:
                missed[ref[pair.ref_index]] += 1
    found = [(w, missed[w], n) for w, n in said.items() if n >= min_said and missed[w] >= min_missed_share * n]
    return sorted(found, key=lambda x: (-x[1], -x[1] / x[2], x[0]))


def missed_words(references: Sequence[str], hypotheses: Sequence[str], min_said: int = MIN_SUGGESTED_SAID,
                 min_missed_share: float = MIN_SUGGESTED_MISSED) -> list[tuple[str, int, int]]:
    """(word, missed, said) for the reference words a model's hypotheses miss (substituted or left out, words
    as scored) at least `min_missed_share` of the at least `min_said` times they are said; most missed first.
    Run on the training data with the base model, they are the candidates for `--terms`."""
    return _missed_words(_scored_pairs(references, hypotheses), min_said, min_missed_share)


def missed_terms(references: Sequence[str], hypotheses: Sequence[str], min_said: int = MIN_SUGGESTED_SAID,
                 min_missed_share: float = MIN_SUGGESTED_MISSED) -> list[tuple[str, int, int]]:
    """`missed_words`, with runs of them said together as phrases: (term, missed, said), most missed first.

    A phrase is 2 to `MAX_PHRASE_WORDS` consecutive reference words, each a missed word, said at least
    `min_said` times and missed (counted as `--terms` counts it: fewer whole copies written than said) in at
    least `min_missed_share` of them, where more than `MIN_PHRASE_SHARE` of one of its words' occurrences lie
    inside it ("okonkwo adeyemi"; not "red blue" where both words are said mostly apart). Longer phrases are
    taken first; a word is left out alone only when every occurrence of it lies inside taken phrases."""
    pairs = _scored_pairs(references, hypotheses)
    words = _missed_words(pairs, min_said, min_missed_share)
    singles = {w for w, _, _ in words}
    said_word = Counter(w for ref, _ in pairs for w in ref)
    runs = {tuple(ref[i:i + n]) for ref, _ in pairs for n in range(MAX_PHRASE_WORDS, 1, -1)
            for i in range(len(ref) - n + 1) if all(w in singles for w in ref[i:i + n])}
    phrases: list[tuple[str, int, int]] = []
    inside: Counter[str] = Counter()  # a word's occurrences inside taken phrases
    for run in sorted(runs, key=lambda r: (-len(r), r)):
        counts = [(count_term(ref, run), count_term(hyp, run)) for ref, hyp in pairs]
        said = sum(a for a, _ in counts)
        missed = sum(a - min(a, b) for a, b in counts)
        if said < min_said or missed < min_missed_share * said:
            continue
        if not any(said > MIN_PHRASE_SHARE * said_word[w] for w in run):
            continue
        text = " ".join(run)
        if any(f" {text} " in f" {p} " and said <= n for p, _, n in phrases):  # inside a longer phrase, said no more
            continue
        phrases.append((text, missed, said))
        inside.update({w: said for w in run})
    kept = [(w, m, n) for w, m, n in words if inside[w] < n]
    return sorted(phrases + kept, key=lambda x: (-x[1], -x[1] / x[2], x[0]))


def suggested_terms_file(terms: Sequence[tuple[str, int, int]], model: str, source: str) -> str:
    """A `--terms` file of `missed_terms`, each with its counts as a comment, for the user to edit."""
    head = [f"# words and phrases {model} missed in at least {MIN_SUGGESTED_MISSED:.0%} of the at least "
            f"{MIN_SUGGESTED_SAID} times", f"# they are said in {source} (as scored: lower case, numbers as digits); "
            "keep the ones that matter,", "# then: lora train ... --terms THIS_FILE"]
    return "\n".join(head + [f"{t}  # missed {m} of {n}" for t, m, n in terms]) + "\n"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def describe_terms(t: TermResult) -> str:
    """One line for a command's summary: recall (before -> after), insertions, the error rate's change."""
    said = f"{t.said} occurrence(s) of {t.terms} term(s) in {t.utterances_with_terms} of {t.utterances} utterances"
    if t.recalled_before is None:
        return f"recall {_pct(t.recall_after)} of {said}; {t.inserted_after} written where not said"
    ci = t.term_error_rate_change_ci95
    change = (f"; term error rate {_pct(t.term_error_rate_before)} -> {_pct(t.term_error_rate_after)}, change 95% CI "
              f"[{100 * ci.ci95[0]:+.1f}, {100 * ci.ci95[1]:+.1f}] pts: {ci.verdict}") if ci and ci.ci95 else ""
    return (f"recall {_pct(t.recall_before)} -> {_pct(t.recall_after)} of {said}; written where not said "
            f"{t.inserted_before} -> {t.inserted_after}{change}")
