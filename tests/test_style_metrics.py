"""Style-aware metrics on hand-made strings: what the normalised WER hides (case, punctuation, loops)."""

from __future__ import annotations

import pytest

from lora.evaluation import score
from lora.style_metrics import (
    capitalisation_f1,
    orthographic_wer,
    punctuation_f1,
    raw_insertions,
    strip_for_insertions,
    tokens,
)

BASE = "For a full hour he had paced up and down waiting, but he could wait no longer."
TUNED = "for a full hour he had paced up and down waiting but he could wait no longer"


def test_lost_punctuation_and_capitals_score_zero():
    punct, caps = punctuation_f1([BASE], [TUNED]), capitalisation_f1([BASE], [TUNED])
    assert (punct.f1, punct.true_pos, punct.false_neg, punct.false_pos) == (0.0, 0, 2, 0)
    assert (caps.f1, caps.true_pos, caps.false_neg, caps.false_pos) == (0.0, 0, 1, 0)
    assert punct.aligned_words == caps.aligned_words == 17


def test_the_normalised_wer_does_not_see_it():
    assert score(["a"], [BASE], [TUNED])["wer"] == 0.0
    assert orthographic_wer([BASE], [TUNED]) == pytest.approx(3 / 17)  # "For", "waiting,", "longer."


def test_identical_outputs_score_one():
    assert punctuation_f1([BASE], [BASE]).f1 == 1.0
    assert capitalisation_f1([BASE], [BASE]).f1 == 1.0
    assert orthographic_wer([BASE], [BASE]) == 0.0


def test_extra_marks_are_false_positives():
    result = punctuation_f1(["yes I know"], ["Yes, I know!"])
    assert (result.true_pos, result.false_pos, result.false_neg, result.f1) == (0, 2, 0, 0.0)
    caps = capitalisation_f1(["yes I know"], ["Yes, I know!"])
    assert (caps.true_pos, caps.false_pos, caps.false_neg) == (1, 1, 0)
    assert caps.f1 == pytest.approx(2 / 3)


def test_partial_agreement_over_clips():
    result = punctuation_f1(["Hello, world.", "Ask not."], ["Hello world.", "Ask not?"])
    # aligned: hello(, vs none) world(. vs .) ask not(. vs ?): TP 1, FN 2, FP 1
    assert (result.true_pos, result.false_neg, result.false_pos) == (1, 2, 1)
    assert result.f1 == pytest.approx(2 / 5)
    assert result.precision == pytest.approx(1 / 2) and result.recall == pytest.approx(1 / 3)


def test_only_aligned_words_are_compared():
    # "really," exists only in the tuned text: a word difference, not a style one
    result = punctuation_f1(["I am here."], ["I am, really, here."])
    assert (result.true_pos, result.false_pos, result.false_neg, result.aligned_words) == (1, 1, 0, 3)


def test_standalone_marks_attach_to_the_previous_word():
    assert [t.marks for t in tokens("wait — what ?")] == [("—",), ("?",)]
    assert [t.marks for t in tokens('"quoted" text')] == [('"', '"'), ()]
    assert [t.key for t in tokens("Don't STOP")] == ["dont", "stop"]


def test_nothing_to_compare_is_none_not_perfect():
    result = punctuation_f1(["zero"], ["zero"])
    assert result.f1 is None and result.aligned_words == 1


def test_orthographic_wer_keeps_case_and_punctuation_normalises_whitespace():
    assert orthographic_wer(["Hello  world"], [" Hello world "]) == 0.0
    assert orthographic_wer(["Hello world"], ["hello world"]) == 0.5
    assert orthographic_wer(["Hello world"], ["Hello world."]) == 0.5
    assert orthographic_wer(["a b", ""], ["a b", "c d"]) == 1.0  # 2 insertions over 2 reference words


def test_raw_insertions_see_the_loop_the_normaliser_hides():
    refs, hyps = ["zero"], ["Zero, zero zero zero."]
    assert raw_insertions(refs, hyps) == 3
    assert score(["a"], refs, hyps)["insertions"] == 0  # "0000" vs "0": one substitution


def test_raw_insertions_ignore_case_and_punctuation_only():
    assert raw_insertions(["Don't stop."], ["don't STOP"]) == 0
    assert strip_for_insertions("Don't — stop, 'now'.") == "don't stop now"


@pytest.mark.parametrize("fn", [orthographic_wer, punctuation_f1, capitalisation_f1, raw_insertions])
def test_mismatched_inputs_are_refused(fn):
    with pytest.raises(ValueError, match="same clips"):
        fn(["a", "b"], ["a"])
    with pytest.raises(TypeError, match="lists of strings"):
        fn("a b", "a b")


def test_forgetting_verdict_thresholds():
    from lora.style_metrics import (
        MAX_NORMALISED_WER_RISE,
        MAX_ORTHOGRAPHIC_WER_RISE,
        MIN_CAPITALISATION_F1,
        MIN_PUNCTUATION_F1,
        forgetting_verdict,
    )

    ok = forgetting_verdict(0.05, 0.05 + MAX_NORMALISED_WER_RISE, 0.10, 0.10 + MAX_ORTHOGRAPHIC_WER_RISE,
                            MIN_PUNCTUATION_F1, MIN_CAPITALISATION_F1)
    assert ok == ("pass", [])
    verdict, reasons = forgetting_verdict(0.05, 0.07, 0.10, 0.10, 0.95, 0.99)
    assert verdict == "fail" and reasons == ["normalised WER rise +2.0 pt > 1 pt"]
    verdict, reasons = forgetting_verdict(0.05, 0.05, 0.10, 0.13, 0.80, 0.90)
    assert verdict == "fail" and len(reasons) == 3 and reasons[1] == "punctuation F1 0.800 < 0.9"
    verdict, reasons = forgetting_verdict(0.05, 0.05, 0.10, 0.10, None, 1.0)
    assert verdict == "pass" and reasons == ["punctuation F1 not measured"]


def test_length_ratios_count_loops():
    from lora.style_metrics import length_ratios

    ratio, over = length_ratios(["ZERO", "ONE", "TWO"], ["zero", "one, one.", "two two two two"])
    assert ratio == 4.0 and over == 1  # "one, one." is exactly 2x: not over
    assert length_ratios([], []) == (None, 0)
