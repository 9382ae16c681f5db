"""Experiment tracking: `--report-to tensorboard|wandb|mlflow|trackio|none` over accelerate's trackers.

`Tracker(run_dir, report_to)` starts the chosen backends; `Tracker.log(step, values)` sends the
training scalars (`train/loss`, `train/learning_rate`, `train/grad_norm`,
`train/audio_seconds_per_second`, `eval/loss`, `eval/wer`, ...) to every one of them;
`Tracker.close()` flushes and closes. TensorBoard event files go under `<run_dir>/runs/<run name>/`
(the `transformers.Trainer` layout), MLflow's store under `<run_dir>/mlruns/`, W&B's files under
`<run_dir>/wandb/`. A backend whose package is missing is a `UserError` naming what to install:
nothing is silently dropped. `none` means no tracking at all.
"""

from __future__ import annotations

import importlib.util
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from lora.core.errors import UserError
from lora.core.extras import install_hint

NONE = "none"
TRACKERS = ("tensorboard", "wandb", "mlflow", "trackio")
# backend -> (module that must import, what to install)
PACKAGES = {
    "tensorboard": ("tensorboard", "tensorboard"),
    "wandb": ("wandb", "wandb"),
    "mlflow": ("mlflow", "mlflow"),
    "trackio": ("trackio", "trackio"),
}
STANDARD_SCALARS = ("train/loss", "train/learning_rate", "train/grad_norm", "train/audio_seconds_per_second",
                    "eval/loss", "eval/wer")
TENSORBOARD_SUBDIR = "runs"
MLFLOW_SUBDIR = "mlruns"
DEFAULT_PROJECT = "lora"


@dataclass(frozen=True)
class TrackingOptions:
    """Where training metrics are reported."""

    report_to: str = field(default="tensorboard", metadata={"help": "comma-separated: tensorboard, wandb, mlflow, "
                                                                     "trackio, or none (TensorBoard files go to "
                                                                     "<output-dir>/runs/)"})
    run_name: str | None = field(default=None, metadata={"help": "run name in the tracker (default: the start time)"})
    project: str = field(default=DEFAULT_PROJECT, metadata={"help": "W&B/trackio project or MLflow experiment name"})


def parse_report_to(value: str | Sequence[str]) -> tuple[str, ...]:
    """Validated backend names, in the order given; `none` (alone) -> ()."""
    items = value.split(",") if isinstance(value, str) else list(value)
    names = [n.strip().lower() for n in items if n.strip()]
    if not names:
        raise UserError(f"--report-to is empty; choose from {', '.join(TRACKERS)} or {NONE}")
    unknown = [n for n in names if n not in (*TRACKERS, NONE)]
    if unknown:
        raise UserError(f"--report-to {', '.join(unknown)}: unknown tracker; choose from {', '.join(TRACKERS)} or {NONE}")
    if NONE in names:
        if len(names) > 1:
            raise UserError(f"--report-to {','.join(names)}: 'none' cannot be combined with other trackers")
        return ()
    return tuple(dict.fromkeys(names))


def is_installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def require_packages(names: Sequence[str]) -> None:
    """A UserError naming what to install when a chosen backend's package is missing."""
    missing = [name for name in names if not is_installed(PACKAGES[name][0])]
    if missing:
        install = " ".join(PACKAGES[n][1] for n in missing)
        extra = " (the 'tracking' extra: " + install_hint("tracking") + ")" if "tensorboard" in missing else ""
        raise UserError(f"--report-to {','.join(missing)}: package not installed; install it with "
                        f"`uv pip install {install}`{extra} or choose --report-to tensorboard/none")


def scalar_values(values: Mapping[str, object]) -> dict[str, float]:
    """The finite numbers of `values` (None / NaN / inf are left out: trackers plot them as gaps anyway)."""
    out = {}
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            if value is None:
                continue
            raise TypeError(f"tracker value {key}={value!r} is not a number")
        if math.isfinite(value):
            out[key] = float(value)
    return out


def default_run_name() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


def _config_values(config: Mapping[str, object]) -> dict:
    """Hyperparameters as trackers accept them: scalars kept, anything else as its str()."""
    return {k: v if v is None or isinstance(v, bool | int | float | str) else str(v) for k, v in config.items()}


def _make_backend(name: str, run_dir: Path, run_name: str, project: str):
    # deferred: accelerate.tracking imports torch (seconds); --help must stay fast
    from accelerate import tracking

    if name == "tensorboard":
        return tracking.TensorBoardTracker(run_name, run_dir / TENSORBOARD_SUBDIR)
    if name == "wandb":
        return tracking.WandBTracker(project, name=run_name, dir=str(run_dir))
    if name == "mlflow":
        return tracking.MLflowTracker(experiment_name=project, logging_dir=str(run_dir / MLFLOW_SUBDIR),
                                      run_name=run_name)
    if name == "trackio":
        return tracking.TrackioTracker(project, name=run_name)
    raise UserError(f"unknown tracker {name!r}; choose from {', '.join(TRACKERS)}")


class Tracker:
    """The chosen backends behind one `log(step, values)` / `close()` pair."""

    def __init__(self, run_dir: str | Path, report_to: str | Sequence[str] = "tensorboard", run_name: str | None = None,
                 project: str = DEFAULT_PROJECT, config: Mapping[str, object] | None = None):
        self.names = parse_report_to(report_to)
        require_packages(self.names)
        self.run_dir = Path(run_dir)
        self.run_name = run_name or default_run_name()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._backends = []
        try:
            for name in self.names:
                backend = _make_backend(name, self.run_dir, self.run_name, project)
                backend.start()
                self._backends.append(backend)
                if config:
                    backend.store_init_configuration(_config_values(config))
        except BaseException:
            self.close()
            raise

    @classmethod
    def from_options(cls, run_dir: str | Path, options: TrackingOptions, config: Mapping[str, object] | None = None):
        return cls(run_dir, options.report_to, options.run_name, options.project, config)

    @property
    def tensorboard_dir(self) -> Path | None:
        return self.run_dir / TENSORBOARD_SUBDIR / self.run_name if "tensorboard" in self.names else None

    def log(self, step: int, values: Mapping[str, object]) -> None:
        """Send the finite numbers of `values` at `step` to every backend."""
        scalars = scalar_values(values)
        if not scalars:
            return
        for backend in self._backends:
            backend.log(scalars, step=int(step))

    def close(self) -> None:
        for backend in getattr(self, "_backends", []):
            backend.finish()
        self._backends = []

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
