import pytest

from lora.core.text import normalize_for_scoring, target_text


def test_target_policies():
    raw = "I SAID HELLO TO MISTER SMITH"
    assert target_text(raw, "raw") == raw
    assert target_text(raw, "lower") == "i said hello to mister smith"
    assert target_text(raw, "sentence") == "I said hello to mister smith"
    assert target_text(raw, "normalized") == normalize_for_scoring(raw)


def test_unknown_policy_is_an_error():
    with pytest.raises(ValueError, match="unknown target policy"):
        target_text("x", "shout")


@pytest.mark.parametrize("typographic, ascii_", [
    ("She doesn’t pick them up", "She doesn't pick them up"),  # real dev-clean 1988-24833-0002, as a word processor writes it
    ("he’s in charge", "he's in charge"),
    ("I’m not fixing to start an annex to Kate’s cat home", "I'm not fixing to start an annex to Kate's cat home"),
    ("‘Hello,’ she said.", "'Hello,' she said."),
    ("itʼs", "it's"),  # U+02BC, the modifier letter some keyboards type
])
def test_typographic_apostrophes_score_as_ascii_ones(typographic, ascii_):
    assert normalize_for_scoring(typographic) == normalize_for_scoring(ascii_)
    assert "'" not in normalize_for_scoring(typographic) and "’" not in normalize_for_scoring(typographic)
