"""Speaker-clustered paired bootstrap: pairing, speaker clustering and the too-few-speakers verdict."""

from __future__ import annotations

import json
import random

import pytest

from lora.clustered_bootstrap import MIN_SPEAKERS, clustered_paired_bootstrap
from lora.evaluation import paired_bootstrap


def records(errors: list[int], words: list[int]) -> list[dict]:
    return [{"errors": e, "ref_words": w} for e, w in zip(errors, words)]


def real_speakers(speech_dir) -> list[str]:
    return [json.loads(line)["speaker"] for line in (speech_dir / "manifest.jsonl").read_text().splitlines() if line]


def test_identical_per_utterance_deltas_give_a_zero_width_interval(speech_dir):
    speakers = real_speakers(speech_dir)  # 326 utterances, 12 real speakers
    rng = random.Random(1)
    before_errors = [rng.randrange(0, 4) for _ in speakers]
    before = records([e + 1 for e in before_errors], [1] * len(speakers))
    after = records(before_errors, [1] * len(speakers))  # every utterance: exactly one error fewer
    result = clustered_paired_bootstrap(before, after, speakers)
    assert result["ci95"][0] == result["ci95"][1] == pytest.approx(-1.0)
    assert result["verdict"] == "improved" and result["speakers"] == 12


def test_pairing_matters(speech_dir):
    """The same before/after errors resampled independently (unpaired) give a wide interval that includes 0."""
    speakers = real_speakers(speech_dir)
    rng = random.Random(2)
    base = [rng.randrange(0, 6) for _ in speakers]
    before, after = records([b + 1 for b in base], [5] * len(speakers)), records(base, [5] * len(speakers))
    paired = clustered_paired_bootstrap(before, after, speakers)
    n, draws = len(speakers), []
    for _ in range(1000):
        pick_b, pick_a = [rng.randrange(n) for _ in range(n)], [rng.randrange(n) for _ in range(n)]
        draws.append((sum(after[i]["errors"] for i in pick_a) - sum(before[i]["errors"] for i in pick_b)) / (5 * n))
    draws.sort()
    unpaired = [draws[25], draws[975]]
    assert paired["ci95"][1] - paired["ci95"][0] == pytest.approx(0.0)
    assert unpaired[1] - unpaired[0] > 0.05


def test_two_speakers_say_too_few_but_still_report_the_interval():
    speakers = ["a"] * 10 + ["b"] * 10
    before = records([3] * 20, [10] * 20)
    after = records([1] * 10 + [2] * 10, [10] * 20)
    result = clustered_paired_bootstrap(before, after, speakers)
    assert result["verdict"] == "too few speakers to generalise (2)"
    low, high = result["ci95"]
    assert low <= result["delta"] <= high < 0
    assert result["delta"] == pytest.approx(-0.15)


def test_speaker_clustering_widens_the_interval_when_speakers_differ():
    # 6 speakers, 20 utterances each: three improve a lot, three get worse; utterances within a speaker agree
    speakers = [f"s{k}" for k in range(6) for _ in range(20)]
    before = records([2] * 120, [10] * 120)
    after = records([0 if int(s[1]) < 3 else 3 for s in speakers], [10] * 120)
    clustered = clustered_paired_bootstrap(before, after, speakers)
    by_utterance = paired_bootstrap(before, after)
    assert clustered["speakers"] == 6 >= MIN_SPEAKERS
    assert clustered["delta"] == pytest.approx(by_utterance["delta"])
    width = clustered["ci95"][1] - clustered["ci95"][0]
    assert width > 2 * (by_utterance["ci95"][1] - by_utterance["ci95"][0])
    assert clustered["verdict"] == "no significant change"


def test_same_seed_same_interval_and_bad_input_refused():
    speakers = ["a", "b", "c", "d", "e"] * 4
    before, after = records(list(range(20)), [20] * 20), records(list(range(20))[::-1], [20] * 20)
    assert clustered_paired_bootstrap(before, after, speakers, seed=3) == clustered_paired_bootstrap(before, after, speakers, seed=3)
    with pytest.raises(ValueError, match="same utterances"):
        clustered_paired_bootstrap(before, after[:-1], speakers)
    with pytest.raises(ValueError, match="resamples"):
        clustered_paired_bootstrap(before, after, speakers, resamples=0)
