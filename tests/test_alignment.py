"""Word alignment (Levenshtein with backtrace) and style carry-over onto reference transcripts."""

from __future__ import annotations

import random

import jiwer
import pytest

from lora.data.alignment import (
    DELETION,
    INSERTION,
    MATCH,
    SUBSTITUTION,
    AlignedPair,
    align_words,
    carry_style,
    edit_distance,
    normalise_word,
)


def ops(pairs: list[AlignedPair]) -> list[str]:
    return [p.op for p in pairs]


@pytest.mark.parametrize("word, key", [("Hello,", "hello"), ("HELLO", "hello"), ("don't", "don't"),
                                       ('"Quoted."', "quoted"), ("Mr.", "mr"), ("--", "")])
def test_normalise_word(word, key):
    assert normalise_word(word) == key


def test_identical_lists_align_as_matches_despite_case_and_punctuation():
    pairs = align_words(["HELLO", "WORLD"], ["Hello,", "world!"])
    assert pairs == [AlignedPair(0, 0, MATCH), AlignedPair(1, 1, MATCH)]


def test_substitution_deletion_insertion_are_labelled_with_indices():
    assert align_words(["a", "b", "c"], ["a", "c"]) == [
        AlignedPair(0, 0, MATCH), AlignedPair(1, None, DELETION), AlignedPair(2, 1, MATCH)]
    assert align_words(["a", "c"], ["a", "b", "c"]) == [
        AlignedPair(0, 0, MATCH), AlignedPair(None, 1, INSERTION), AlignedPair(1, 2, MATCH)]
    assert align_words(["a", "b"], ["a", "x"]) == [AlignedPair(0, 0, MATCH), AlignedPair(1, 1, SUBSTITUTION)]


def test_equal_cost_alignments_prefer_pairing_words():
    # a b c d / a x d e: three substitutions or sub + del + ins cost the same; words are paired
    assert ops(align_words(["a", "b", "c", "d"], ["a", "x", "d", "e"])) == [MATCH, SUBSTITUTION, SUBSTITUTION, SUBSTITUTION]


@pytest.mark.parametrize("ref, hyp", [([], []), (["a"], []), ([], ["a", "b"])])
def test_empty_sides(ref, hyp):
    pairs = align_words(ref, hyp)
    assert ops(pairs) == [DELETION] * len(ref) + [INSERTION] * len(hyp)


def test_every_word_appears_once_in_order():
    rng = random.Random(0)
    for _ in range(50):
        ref = [rng.choice("abcde") for _ in range(rng.randint(0, 30))]
        hyp = [rng.choice("abcde") for _ in range(rng.randint(0, 30))]
        pairs = align_words(ref, hyp)
        assert [p.ref_index for p in pairs if p.ref_index is not None] == list(range(len(ref)))
        assert [p.hyp_index for p in pairs if p.hyp_index is not None] == list(range(len(hyp)))
        for p in pairs:
            if p.op == MATCH:
                assert ref[p.ref_index] == hyp[p.hyp_index]
            if p.op == SUBSTITUTION:
                assert ref[p.ref_index] != hyp[p.hyp_index]


def test_edit_distance_equals_jiwer_on_random_word_lists():
    rng = random.Random(1)
    for _ in range(50):
        ref = [rng.choice("abcdef") for _ in range(rng.randint(1, 40))]
        hyp = [rng.choice("abcdef") for _ in range(rng.randint(1, 40))]
        out = jiwer.process_words(" ".join(ref), " ".join(hyp))
        assert edit_distance(ref, hyp) == out.substitutions + out.deletions + out.insertions


def test_custom_key_controls_matching():
    assert ops(align_words(["Hello"], ["hello"], key=str)) == [SUBSTITUTION]
    assert ops(align_words(["Hello"], ["hello"])) == [MATCH]


def test_five_thousand_words_align():
    rng = random.Random(2)
    ref = [rng.choice(["the", "a", "of", "print", "book", "type"]) for _ in range(5000)]
    hyp = list(ref)
    del hyp[100:110]
    hyp[2000] = "zzz"
    hyp.insert(4000, "extra")
    assert edit_distance(ref, hyp) == 12


# --- carry_style ------------------------------------------------------------------------------


def test_carry_style_example_from_the_issue():
    assert carry_style("FOR A FULL HOUR HE HAD PACED", "For a full hour, he had paced.") == (
        "For a full hour, he had paced.", 1.0)


def test_carry_style_on_a_real_ljspeech_line():
    reference = "IN BEING COMPARATIVELY MODERN"
    styled = "in being comparatively modern."
    assert carry_style(reference, styled) == ("in being comparatively modern.", 1.0)


def test_unmatched_words_are_lowercase_and_coverage_counts_matches():
    text, coverage = carry_style("THE WOODCUTTERS OF THE NETHERLANDS", "The wood cutters of the Netherlands.")
    assert text == "The woodcutters of the Netherlands."
    assert coverage == pytest.approx(4 / 5)


def test_unmatched_first_word_is_capitalised_when_the_styled_text_starts_a_sentence():
    assert carry_style("PRINTING IN THE ONLY SENSE", "Printed in the only sense.") == ("Printing in the only sense.", 0.8)
    assert carry_style("PRINTING IN THE ONLY SENSE", "printed in the only sense") == ("printing in the only sense", 0.8)


def test_unmatched_word_after_a_sentence_end_is_capitalised():
    text, _ = carry_style("MODERN FOR ALTHOUGH THE CHINESE", "modern. Four although the Chinese")
    assert text == "modern. For although the Chinese"


def test_unmatched_pronoun_i_stays_capital():
    text, coverage = carry_style("AND I'LL SAY I KNOW", "and all say eye know")
    assert text == "and I'll say I know"
    assert coverage == pytest.approx(3 / 5)


def test_deleted_and_inserted_words():
    text, coverage = carry_style("ASK NOT WHAT YOUR COUNTRY CAN DO", "Ask what your country can do, um, for")
    assert text == "Ask not what your country can do,"
    assert coverage == pytest.approx(6 / 7)


def test_numbers_written_as_digits_do_not_match_spelled_words():
    text, coverage = carry_style("ABOUT FOURTEEN FIFTY FIVE", "about 1455.")
    assert text == "about fourteen fifty five."  # the words stay spelled; the sentence still ends
    assert coverage == pytest.approx(1 / 4)


def test_substituted_words_keep_their_letters_and_take_the_style():
    assert carry_style("NINE", "Nein.") == ("Nine.", 0.0)
    text, coverage = carry_style("HE SAID HELLO JOHN", "He said, Hallo, Jon!")
    assert text == "He said, Hello, John!"
    assert coverage == pytest.approx(2 / 4)


def test_last_word_takes_the_final_stop_when_deleted():
    assert carry_style("YES I DO", "Yes, I.")[0] == "Yes, I do."


def test_empty_inputs():
    assert carry_style("", "Anything.") == ("", 1.0)
    assert carry_style("HELLO THERE", "") == ("hello there", 0.0)


def test_carry_style_keeps_reference_words_and_count():
    rng = random.Random(3)
    vocab = ["alpha", "beta", "gamma", "delta", "i"]
    for _ in range(30):
        ref = [rng.choice(vocab).upper() for _ in range(rng.randint(1, 20))]
        styled = [w.capitalize() + rng.choice(["", ",", "."]) for w in ref if rng.random() < 0.7]
        text, coverage = carry_style(" ".join(ref), " ".join(styled))
        assert [normalise_word(w) for w in text.split()] == [w.lower() for w in ref]
        assert 0.0 <= coverage <= 1.0
