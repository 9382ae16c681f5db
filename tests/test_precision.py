"""`--mixed-precision auto`: bf16 autocast only where the device computes bf16 natively and, on a CPU, where
the probe finds it faster than fp32."""

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
    monkeypatch.setattr(precision, "cpu_bf16_speedup", lambda: 1.5)
    assert resolve_precision("auto", cpu=True) == (expected, None)


@pytest.mark.parametrize("speedup, expected", [(1.5, "bf16"), (1.1, "bf16"), (1.05, "no"), (0.68, "no"), (None, "bf16")])
def test_auto_on_a_cpu_trains_in_bf16_only_where_the_probe_finds_it_faster(monkeypatch, speedup, expected):
    monkeypatch.setattr(precision, "native_bf16", lambda cpu: True)
    monkeypatch.setattr(precision, "cpu_bf16_speedup", lambda: speedup)
    chosen, note = resolve_precision("auto", cpu=True)
    assert chosen == expected
    assert (note is not None) == (expected == "no") and (note is None or f"{speedup:.2f}x the fp32 speed" in note)
    assert resolve_precision("bf16", cpu=True) == ("bf16", None)  # asked for by name: kept whatever the probe says


def test_the_probe_runs_once_per_machine_and_is_cached(monkeypatch, tmp_path):
    monkeypatch.setenv("LORA_HOME", str(tmp_path))
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    calls = []
    monkeypatch.setattr(precision, "_probe", lambda torch: calls.append(1) or 0.7)
    assert precision.cpu_bf16_speedup() == 0.7 and precision.cpu_bf16_speedup() == 0.7 and calls == [1]
    cached = (tmp_path / precision.PROBE_CACHE).read_text()
    assert "threads" in cached and "0.7" in cached
    monkeypatch.setenv("WORLD_SIZE", "2")  # several processes read the cached answer
    assert precision.cpu_bf16_speedup() == 0.7 and calls == [1]


def test_several_processes_without_a_cached_probe_do_not_probe(monkeypatch, tmp_path):
    monkeypatch.setenv("LORA_HOME", str(tmp_path))
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(precision, "_probe", lambda torch: pytest.fail("probed under several processes"))
    assert precision.cpu_bf16_speedup() is None


def test_the_real_probe_times_both_precisions():
    import torch

    speedup = precision._probe(torch)
    assert 0.05 < speedup < 20  # a ratio of two timings of the same layer, not a constant


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


@pytest.mark.parametrize("speedup, shown", [(1.5, "bf16 autocast"), (0.7, "fp32; bf16 autocast ran at 0.70x")])
def test_doctor_says_what_auto_trains_in(monkeypatch, speedup, shown):
    from lora.scripts.doctor import precision_row

    monkeypatch.setattr(precision, "native_bf16", lambda cpu: True)
    monkeypatch.setattr(precision, "cpu_bf16_speedup", lambda: speedup)
    name, value = precision_row(cpu=True)
    assert name == "training precision (auto)" and value.startswith(shown)


def test_doctor_says_why_bf16_too(monkeypatch):
    """README: `lora doctor` names the precision auto trains in "(and why)"; where the probe chose bf16 it said
    only "bf16 autocast", and fp32 on a CPU without native bf16 only "fp32"."""
    from lora.scripts.doctor import precision_row

    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    monkeypatch.setattr(precision, "native_bf16", lambda cpu: True)
    monkeypatch.setattr(precision, "cpu_bf16_speedup", lambda: 2.22)
    assert precision_row(cpu=True)[1] == "bf16 autocast; bf16 autocast ran at 2.22x the fp32 speed on this CPU (>= 1.1x)"
    monkeypatch.setattr(precision, "native_bf16", lambda cpu: False)
    assert precision_row(cpu=True)[1] == "fp32; this CPU has no native bf16 (AVX512-BF16 or AMX)"


def test_the_fp32_note_says_where_the_probe_is_cached_only_when_it_is(monkeypatch, tmp_path):
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(precision, "native_bf16", lambda cpu: True)
    monkeypatch.setattr(precision, "_probe", lambda torch: 0.7)
    home = tmp_path / "home"
    home.write_text("a file where the home folder should be: nothing can be written under it")
    monkeypatch.setenv("LORA_HOME", str(home))
    precision_used, note = resolve_precision("auto", cpu=True)
    assert precision_used == "no" and "probe not cached" in note and "0.70x" in note
    monkeypatch.setenv("LORA_HOME", str(tmp_path / "writable"))
    assert f"probe cached in {tmp_path / 'writable' / precision.PROBE_CACHE}" in resolve_precision("auto", cpu=True)[1]
