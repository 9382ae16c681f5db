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
