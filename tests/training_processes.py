"""Helpers for tests that stop a training subprocess mid-run: its checkpoint's step, and a signal sent
once the checkpoint reaches a step."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest


def checkpoint_step(out: Path) -> int:
    """The step of the run's last checkpoint (0: none yet, or one being written)."""
    try:
        return json.loads((Path(out) / "checkpoint" / "state.json").read_text())["step"]
    except (OSError, ValueError, KeyError):
        return 0


def signal_at_checkpoint(proc: subprocess.Popen, out: Path, step: int, sig: int = signal.SIGKILL,
                         timeout_s: float = 300.0, group: bool = False) -> None:
    """Send `sig` to `proc` as soon as its checkpoint reaches `step`; fails the test if it ended first.
    `group`: to its whole process group, workers included, as a terminal's Ctrl-C (start it with
    `start_new_session=True`)."""
    deadline = time.time() + timeout_s
    while checkpoint_step(out) < step and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    if proc.poll() is not None:
        pytest.fail(f"training finished before the signal at step {step}; raise STEPS")
    if group:
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)
