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


def test_native_bf16_agrees_with_the_cpu_flags():
    """oneDNN's answer matches what the kernel reports for this CPU (AVX512-BF16 or AMX-BF16)."""
    from pathlib import Path

    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        pytest.skip("no /proc/cpuinfo on this system")
    flags = set(cpuinfo.read_text().split())
    assert precision.native_bf16(cpu=True) == bool({"avx512_bf16", "amx_bf16"} & flags)
