import math

from lora.evaluation import compare, paired_bootstrap, score, summarize_losses


def test_summarize_losses_mean():
    assert summarize_losses([1.0, 2.0, 3.0]) == 2.0


def test_summarize_losses_empty_is_none_not_zero():
    assert summarize_losses([]) is None


def test_summarize_losses_skips_non_finite():
    assert summarize_losses([1.0, math.nan, 3.0]) == 2.0


def test_normalised_wer_ignores_case_punctuation_and_number_style():
    result = score(["u1"], ["MISTER QUILTER'S TWO DOGS"], ["Mr. Quilter's 2 dogs."])
    assert result["wer"] == 0.0 and result["cer"] == 0.0
    assert result["samples"][0]["hypothesis"] == "Mr. Quilter's 2 dogs."  # raw string kept


def test_score_counts_errors_per_utterance():
    result = score(["a", "b"], ["the cat sat", "a dog"], ["the cat", "a big dog"])
    assert (result["deletions"], result["insertions"], result["substitutions"]) == (1, 1, 0)
    assert result["wer"] == 2 / 5
    assert [s["errors"] for s in result["samples"]] == [1, 1]


def test_bootstrap_detects_clear_improvement_and_is_seeded():
    before = [{"errors": 3, "ref_words": 5}] * 20
    after = [{"errors": 0, "ref_words": 5}] * 19 + [{"errors": 1, "ref_words": 5}]
    first = paired_bootstrap(before, after, seed=1)
    assert first["verdict"] == "improved" and first["ci95"][1] < 0
    assert first == paired_bootstrap(before, after, seed=1)


def test_bootstrap_no_change_when_mixed():
    before = [{"errors": e, "ref_words": 4} for e in (0, 2, 0, 2, 1, 1)]
    after = [{"errors": e, "ref_words": 4} for e in (2, 0, 2, 0, 1, 1)]
    assert paired_bootstrap(before, after)["verdict"] == "no significant change"


def test_compare_lists_regressions_first():
    before = score(["a", "b"], ["one two", "three four"], ["one two", "three"])
    after = score(["a", "b"], ["one two", "three four"], ["one", "three four"])
    rows = compare(before, after)
    assert rows[0]["id"] == "a" and rows[0]["wer_change"] > 0


def test_bootstrap_is_paired():
    """Each resample takes the same utterances before and after: when every utterance improves by
    exactly one error the interval has zero width, though the per-model WERs vary a lot across
    utterances (an unpaired resample of the two sides would give a wide interval)."""
    before = [{"errors": e + 1, "ref_words": 10} for e in (0, 9, 2, 7, 4, 5, 1, 8)]
    after = [{"errors": b["errors"] - 1, "ref_words": 10} for b in before]
    result = paired_bootstrap(before, after, seed=3)
    assert result["ci95"][0] == result["ci95"][1] == result["delta"] == -0.1
    assert result["verdict"] == "improved"
