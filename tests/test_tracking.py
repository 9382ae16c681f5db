"""Tracker: TensorBoard scalars written under <run_dir>/runs/ and read back; validation of --report-to."""

from __future__ import annotations

import pytest

from lora import tracking
from lora.core.errors import UserError
from lora.tracking import Tracker, TrackingOptions, parse_report_to, scalar_values


def _scalars(logdir) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_scalars_round_trip(tmp_path):
    history = [
        (1, {"train/loss": 2.5, "train/learning_rate": 1e-4, "train/grad_norm": 3.0, "train/audio_seconds_per_second": 41.5}),
        (2, {"train/loss": 2.25, "train/learning_rate": 2e-4, "train/grad_norm": 2.0, "train/audio_seconds_per_second": 40.0}),
        (5, {"eval/loss": 1.75, "eval/wer": 0.125}),
    ]
    with Tracker(tmp_path, "tensorboard", run_name="r1") as tracker:
        for step, values in history:
            tracker.log(step, values)
        assert tracker.tensorboard_dir == tmp_path / "runs" / "r1"
    assert list((tmp_path / "runs" / "r1").glob("events.out.tfevents.*"))
    got = _scalars(tmp_path / "runs" / "r1")
    expected: dict[str, list] = {}
    for step, values in history:
        for key, value in values.items():
            expected.setdefault(key, []).append((step, pytest.approx(value)))
    assert got == expected
    assert set(got) == set(tracking.STANDARD_SCALARS)


def test_default_run_name_and_options(tmp_path):
    tracker = Tracker.from_options(tmp_path, TrackingOptions(), config={"lora_r": 8, "targets": ("q_proj", "v_proj")})
    tracker.log(3, {"train/loss": 1.5, "eval/wer": None, "train/grad_norm": float("nan")})
    tracker.close()
    runs = list((tmp_path / "runs").iterdir())
    assert [p.name for p in runs] == [tracker.run_name]
    assert _scalars(runs[0]) == {"train/loss": [(3, 1.5)]}  # None and NaN left out, not logged as 0


def test_report_to_validation():
    assert parse_report_to("tensorboard") == ("tensorboard",)
    assert parse_report_to(" TensorBoard , mlflow,tensorboard") == ("tensorboard", "mlflow")
    assert parse_report_to(["none"]) == ()
    with pytest.raises(UserError, match="unknown tracker; choose from tensorboard, wandb, mlflow, trackio or none"):
        parse_report_to("tensorbored")
    with pytest.raises(UserError, match="cannot be combined"):
        parse_report_to("none,wandb")
    with pytest.raises(UserError, match="empty"):
        parse_report_to("")


def test_none_writes_nothing(tmp_path):
    with Tracker(tmp_path / "run", "none") as tracker:
        tracker.log(1, {"train/loss": 1.0})
    assert list((tmp_path / "run").iterdir()) == []


@pytest.mark.parametrize("name", ["wandb", "mlflow", "trackio"])
def test_missing_package_names_what_to_install(tmp_path, monkeypatch, name):
    monkeypatch.setattr(tracking, "is_installed", lambda module: module != name)
    with pytest.raises(UserError) as info:
        Tracker(tmp_path, f"tensorboard,{name}")
    assert str(info.value) == (f"--report-to {name}: package not installed; install it with `uv pip install {name}` "
                               "or choose --report-to tensorboard/none")
    assert not (tmp_path / "runs").exists()  # nothing started before the check


def test_scalar_values_rejects_non_numbers():
    assert scalar_values({"a": 1, "b": 2.5, "c": None, "d": float("inf")}) == {"a": 1.0, "b": 2.5}
    with pytest.raises(TypeError, match="train/loss"):
        scalar_values({"train/loss": "1.0"})
