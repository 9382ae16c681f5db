"""`--mixed-precision auto`: bf16 autocast only where the device computes bf16 natively."""

import pytest

from lora.core import precision
from lora.core.errors import UserError
from lora.core.precision import resolve_precision


@pytest.fixture(autouse=True)
def _no_launcher_env(monkeypatch):
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)


@pytest.mark.parametrize("native, expected", [(True, "bf16"), (False, "no")])
def test_auto_follows_the_hardware(monkeypatch, native, expected):
    monkeypatch.setattr(precision, "native_bf16", lambda cpu: native)
    assert resolve_precision("auto", cpu=True) == (expected, None)


def test_a_launcher_choice_beats_auto(monkeypatch):
    monkeypatch.setattr(precision, "native_bf16", lambda cpu: True)
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")
    assert resolve_precision("auto", cpu=True) == ("no", None)


def test_explicit_choices_are_kept_or_explained():
    assert resolve_precision("no", cpu=True) == ("no", None)
    assert resolve_precision("bf16", cpu=True) == ("bf16", None)
    precision, note = resolve_precision("fp16", cpu=True)
    assert precision == "no" and "fp16 needs a GPU" in note
    with pytest.raises(UserError, match="choose one of auto, no, fp16, bf16"):
        resolve_precision("fp8", cpu=True)


def test_native_bf16_answers_a_bool_on_this_machine():
    assert isinstance(precision.native_bf16(cpu=True), bool)
