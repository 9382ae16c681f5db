"""Choosing utterances: speaker-disjoint splits, balanced picks, leakage rules, replay mixing.

Pure functions over `Utterance` lists (no I/O), so every rule here is cheap to test.
"""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from lora.core.errors import UserError
from lora.core.text import normalize_for_scoring
from lora.data.records import Utterance

log = logging.getLogger("lora")

DEFAULT_EVAL_FRACTION = 0.25
# Segments of one recording overlapping by less than this are cut apart by rounding (manifests write seconds to
# two decimals), not cut over each other: they may fall on both sides of a split.
SEGMENT_OVERLAP_SLACK_S = 0.1


def split_by_speaker(
    utterances: list[Utterance], eval_fraction: float = DEFAULT_EVAL_FRACTION, seed: int = 42
) -> tuple[list[Utterance], list[Utterance]]:
    """Split so that no speaker is in both parts; deterministic under `seed`.

    Eval speakers are drawn first from those who said something nobody else said: a speaker whose
    every transcript is shared with others (a closed vocabulary such as spoken digits) would leave
    no eval utterance once `without_train_texts` drops what training covers.
    """
    speakers = sorted({u.speaker for u in utterances})
    if len(speakers) < 2:
        raise UserError(
            f"need at least two speakers for a speaker-disjoint train/eval split, found {len(speakers)} "
            f"({', '.join(speakers) or 'no speaker field'}); add recordings from another speaker, or pass "
            "--allow-shared-speakers to hold out utterances of the same speaker (WER then measures that speaker's "
            "unseen utterances, not unseen speakers)"
        )
    random.Random(seed).shuffle(speakers)
    own = _speakers_with_own_texts(utterances)
    speakers.sort(key=lambda s: s not in own)  # stable: the seeded order holds within each group
    n_eval = min(len(speakers) - 1, max(1, round(eval_fraction * len(speakers))))
    eval_speakers = set(speakers[:n_eval])
    train = [u for u in utterances if u.speaker not in eval_speakers]
    held = [u for u in utterances if u.speaker in eval_speakers]
    return train, held


def split_by_utterance(
    utterances: list[Utterance], eval_fraction: float = DEFAULT_EVAL_FRACTION, seed: int = 42
) -> tuple[list[Utterance], list[Utterance]]:
    """Hold out a seeded share of the utterances themselves: for one speaker's data (adapting to a voice),
    when `--allow-shared-speakers` says the eval may share speakers with training. Utterances with the same
    (normalised) transcript stay on one side, so the eval never hears a sentence training read; so do segments
    of one recording whose spans overlap (`overlapping_segments`), so it never hears audio training heard."""
    groups: dict[str, list[Utterance]] = defaultdict(list)
    for u in sorted(utterances, key=lambda u: u.id):
        groups[normalize_for_scoring(u.text)].append(u)
    for keys in overlapping_segments(groups):  # one group of the texts whose audio overlaps
        first, *rest = sorted(keys)
        for key in rest:
            groups[first] += groups.pop(key)
    if len(groups) < 2:
        raise UserError(f"need at least two different transcripts to hold some out, found {len(groups)}; add recordings")
    keys = sorted(groups)
    random.Random(seed).shuffle(keys)
    n_eval = min(len(keys) - 1, max(1, round(eval_fraction * len(keys))))
    held_keys = set(keys[:n_eval])
    train = [u for k in keys if k not in held_keys for u in groups[k]]
    held = [u for k in keys if k in held_keys for u in groups[k]]
    return train, held


def overlapping_segments(groups: dict[str, list[Utterance]]) -> list[set[str]]:
    """The sets of group keys (two or more) that must stay together because rows of theirs are segments of one
    file whose spans overlap (a whole-file row overlaps every segment of its file). Sliding-window segmenters cut
    overlapping chunks of a recording, each with its own transcript: held out by transcript alone, half of an eval
    chunk's audio could be trained on. Connected groups via union-find over the overlaps, each file's spans
    swept in order of their start."""
    parent = {key: key for key in groups}

    def root(key: str) -> str:
        while parent[key] != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    by_file: dict[str, list[tuple[float, float, str]]] = defaultdict(list)
    for key, rows in groups.items():
        for u in rows:
            if isinstance(u.audio, str | Path):
                span = u.span
                start, end = (0.0, float("inf")) if span is None else (span.start, float("inf") if span.end is None else span.end)
                by_file[str(u.audio)].append((start, end, key))
    for spans in by_file.values():
        spans.sort()
        reach, reach_key = -1.0, None
        for start, end, key in spans:
            if reach_key is not None and start < reach - SEGMENT_OVERLAP_SLACK_S:  # overlaps the earlier span reaching furthest
                parent[root(key)] = root(reach_key)
            if end > reach:
                reach, reach_key = end, key
    together: dict[str, set[str]] = defaultdict(set)
    for key in groups:
        together[root(key)].add(key)
    return [keys for keys in together.values() if len(keys) > 1]


def _speakers_with_own_texts(utterances: list[Utterance]) -> set[str]:
    """Speakers with at least one (normalised) transcript that no other speaker has."""

    speakers_of: dict[str, set[str]] = defaultdict(set)
    for u in utterances:
        speakers_of[normalize_for_scoring(u.text)].add(u.speaker)
    return {next(iter(who)) for who in speakers_of.values() if len(who) == 1}


def select_balanced(utterances: list[Utterance], n: int, seed: int = 42) -> list[Utterance]:
    """Up to `n` utterances, round-robin over speakers so no single speaker dominates."""
    rng = random.Random(seed)
    by_speaker: dict[str, list[Utterance]] = defaultdict(list)
    for u in sorted(utterances, key=lambda u: u.id):
        by_speaker[u.speaker].append(u)
    queues = [by_speaker[s] for s in sorted(by_speaker)]
    for q in queues:
        rng.shuffle(q)
    rng.shuffle(queues)
    chosen: list[Utterance] = []
    while len(chosen) < n and any(queues):
        for q in queues:
            if q and len(chosen) < n:
                chosen.append(q.pop())
    return chosen


def split_by_named_speakers(
    utterances: list[Utterance], train_speakers, eval_speakers
) -> tuple[list[Utterance], list[Utterance]]:
    """Explicit speaker lists (e.g. a recipe's); refuses overlap. One list alone: the other side is every
    other speaker (`--eval-speakers 9001` trains on the rest, as the eval-size warning suggests)."""
    overlap = set(train_speakers) & set(eval_speakers)
    if overlap:
        raise UserError(f"speakers {sorted(overlap)} are in both --train-speakers and --eval-speakers")
    if not train_speakers or not eval_speakers:
        named = set(train_speakers) | set(eval_speakers)
        others = sorted({u.speaker for u in utterances} - named)
        if not others:
            given, missing = ("--eval-speakers", "train") if eval_speakers else ("--train-speakers", "evaluate")
            raise UserError(f"{given} {','.join(sorted(named))} names every speaker of the data, so none is left to {missing} "
                            "on; name fewer speakers (data of one speaker: drop the list and pass --allow-shared-speakers, which holds out "
                            "utterances instead)")
        train_speakers, eval_speakers = (train_speakers or others), (eval_speakers or others)
    train = [u for u in utterances if u.speaker in set(train_speakers)]
    held = [u for u in utterances if u.speaker in set(eval_speakers)]
    for name, part, wanted in (("train", train, train_speakers), ("eval", held, eval_speakers)):
        if not part:
            raise UserError(f"no utterances found for {name} speakers {list(wanted)}")
    return train, held


def without_train_texts(held: list[Utterance], train: list[Utterance]) -> list[Utterance]:
    """Eval candidates whose transcript was not trained on (when we choose the split ourselves)."""

    seen = {normalize_for_scoring(u.text) for u in train}
    kept = [u for u in held if normalize_for_scoring(u.text) not in seen]
    if len(kept) < len(held):
        log.info("left %d eval candidates out: their transcript is also in the training set", len(held) - len(kept))
    return kept


def mix_replay(train: list, replay: list, share: float) -> list:
    """Training examples with `replay` repeated so it makes up about `share` of the utterances."""
    if not replay or share <= 0:
        return list(train)
    wanted = round(share * len(train) / (1 - share))
    copies = max(1, round(wanted / len(replay)))
    return list(train) + list(replay) * copies


def replay_mask(ids: Iterable[str], replay: list) -> np.ndarray:
    """One bool per training row id: is it one of the `replay` rows (what `--replay-distillation` applies to)?"""
    replay_ids = {u.id for u in replay}
    return np.array([i in replay_ids for i in ids], dtype=bool)


def leakage(train: list[Utterance], held: list[Utterance]) -> dict:
    """Speakers and identical (normalised) transcripts present in both train and eval."""

    speakers = sorted({u.speaker for u in train} & {u.speaker for u in held})
    texts = sorted({normalize_for_scoring(u.text) for u in train} & {normalize_for_scoring(u.text) for u in held})
    return {"shared_speakers": speakers, "shared_texts": texts}


def seen_in_training(rows: list[Utterance], run_info: dict) -> tuple[list[str], list[str]]:
    """Ids and speakers of `rows` that an adapter's run trained on (its lora_run.json: train_ids, train_speakers)."""
    train_ids, train_speakers = set(run_info.get("train_ids") or ()), set(run_info.get("train_speakers") or ())
    ids = [u.id for u in rows if u.id in train_ids]
    speakers = sorted({u.speaker for u in rows if u.speaker and u.speaker in train_speakers})
    return ids, speakers


def check_leakage(train: list[Utterance], held: list[Utterance], allow_shared_speakers: bool = False,
                  allow_shared_text: bool = False) -> dict:
    """Refuse a split whose eval part shares speakers or transcripts with training (override flags)."""
    found = leakage(train, held)
    if found["shared_speakers"] and not allow_shared_speakers:
        raise UserError(
            f"speaker leakage: speaker(s) {', '.join(found['shared_speakers'][:5])} are in both train and eval; "
            "use disjoint speakers (or --allow-shared-speakers to override)"
        )
    if found["shared_texts"] and not allow_shared_text:
        raise UserError(
            f"transcript leakage: {len(found['shared_texts'])} identical transcript(s) in train and eval "
            f"(e.g. {found['shared_texts'][0]!r}); use other utterances (or --allow-shared-text for closed vocabularies)"
        )
    return found
