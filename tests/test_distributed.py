"""Two CPU processes (gloo) launched by `accelerate launch` train the same adapter as one process with
the same global batch (gradient accumulation doubled), on real speech with a tiny random model built
from the real config: micro-batch sharding, gradient averaging across processes, the global loss, and
the main process alone writing are all checked from the outside, through the command users run.

`accelerate launch --cpu --num_processes 2` itself starts one process (accelerate runs several CPU
processes only through mpirun), so the two processes come from `--multi_gpu`, which on a machine
without a GPU is torchrun + gloo; the `--cpu` form must be refused, not silently run alone.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from training_processes import checkpoint_step

ROOT = Path(__file__).resolve().parents[1]
STEPS, GA = 4, 2
ADAPTER = Path("lora_adapter") / "adapter_model.safetensors"


def _env() -> dict:
    """One thread per process in both runs (torchrun's default), and no launcher state leaking in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCELERATE_") and k not in
           {"MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK", "CUDA_VISIBLE_DEVICES"}}
    return env | {"OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}


def _free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def _args(model_dir, speech_dir, out, ga: int, dropout: float, *extra: str) -> list[str]:
    return [str(ROOT / "train_real_small.py"), "--model-id", str(model_dir), "--data-dir", str(speech_dir),
            "--dataset-samples", "12", "--eval-samples", "2", "--canary-samples", "1", "--eval-batch-size", "2",
            "--max-steps", str(STEPS), "--gradient-accumulation-steps", str(ga), "--lora-dropout", str(dropout),
            "--mixed-precision", "no", "--quiet", "--output-dir", str(out), *extra]


def _launch_cmd(args: list[str], processes: int = 2, *flags: str) -> list[str]:
    return [sys.executable, "-m", "accelerate.commands.launch", *(flags or ("--multi_gpu",)),
            "--num_processes", str(processes), "--num_machines", "1", "--mixed_precision", "no",
            "--dynamo_backend", "no", "--main_process_port", _free_port(), *args]


def _launch(args: list[str], processes: int = 2, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run(_launch_cmd(args, processes, *flags), capture_output=True, text=True, cwd=ROOT, env=_env(),
                          timeout=300)


def _single(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT, env=_env(), timeout=300)


def _metrics(out: Path) -> dict:
    return json.loads((out / "real_metrics.json").read_text())


def _max_diff(a: Path, b: Path) -> float:
    x, y = load_file(str(a / ADAPTER)), load_file(str(b / ADAPTER))
    assert x.keys() == y.keys() and x
    return max(float((x[k] - y[k]).abs().max()) for k in x)


@pytest.fixture(scope="module")
def runs(tiny_moonshine, speech_dir, tmp_path_factory):
    """(one process x GA 2*GA, two processes x GA) on the same data, seed and steps."""
    one, two = tmp_path_factory.mktemp("one"), tmp_path_factory.mktemp("two")
    proc = _single(_args(tiny_moonshine, speech_dir, one, 2 * GA, 0.0))
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = _launch(_args(tiny_moonshine, speech_dir, two, GA, 0.0))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return one, two


def test_two_processes_follow_one_process_with_the_same_global_batch(runs):
    one, two = runs
    m1, m2 = _metrics(one), _metrics(two)
    assert (m1["world_size"], m2["world_size"]) == (1, 2)
    l1 = [r["loss"] for r in m1["train_loss_history"]]
    l2 = [r["loss"] for r in m2["train_loss_history"]]
    assert len(l1) == len(l2) == STEPS
    assert all(abs(a - b) <= 1e-4 * abs(a) for a, b in zip(l1, l2)), (l1, l2)
    assert [r["lr"] for r in m1["train_loss_history"]] == [r["lr"] for r in m2["train_loss_history"]]
    assert _max_diff(one, two) <= 1e-5
    # throughput counts the audio of both processes, not the main process's shard only
    audio1 = m1["train_audio_seconds_per_second"] * m1["train_wall_seconds"]
    audio2 = m2["train_audio_seconds_per_second"] * m2["train_wall_seconds"]
    assert audio2 == pytest.approx(audio1, rel=1e-4)


def test_only_the_main_process_writes(runs):
    _, two = runs
    assert [p.relative_to(two) for p in two.rglob("real_metrics.json")] == [Path("real_metrics.json")]
    assert [p.relative_to(two) for p in two.rglob("adapter_model.safetensors")] == [ADAPTER]
    assert not [p for p in two.rglob(".*tmp-*")], "a temp folder was left behind"
    assert _metrics(two)["mixed_precision"] == "no"


def test_resume_under_two_processes_matches_the_uninterrupted_run(tiny_moonshine, speech_dir, tmp_path):
    """With LoRA dropout on: every rank must pick up its own random stream, not rank 0's."""
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    args = lambda out, *extra: _args(tiny_moonshine, speech_dir, out, GA, 0.1, "--checkpoint-every", "2", *extra)  # noqa: E731
    # the uninterrupted run, frozen (SIGSTOP) once its step-2 checkpoint is there to copy it: the run's last checkpoint
    # is its finished one
    proc = subprocess.Popen(_launch_cmd(args(full)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env=_env(), start_new_session=True)
    deadline = time.time() + 300
    while checkpoint_step(full) < 2 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGSTOP)
    resumed.mkdir()
    shutil.copytree(full / "checkpoint", resumed / "checkpoint")  # as if killed after step 2
    os.killpg(proc.pid, signal.SIGCONT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    copied = json.loads((resumed / "checkpoint" / "state.json").read_text())
    assert copied["step"] == 2 and not copied["finished"], "the run went past its step-2 checkpoint before it was frozen"
    assert json.loads((full / "checkpoint" / "state.json").read_text())["finished"]
    proc = _launch(args(resumed, "--resume"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _max_diff(full, resumed) <= 1e-7
    rows = lambda out: [(r["step"], r["loss"], r["lr"]) for r in _metrics(out)["train_loss_history"]]  # noqa: E731
    assert rows(full) == rows(resumed)


def test_accelerate_cpu_flag_with_several_processes_is_refused(tiny_moonshine, speech_dir, tmp_path):
    proc = _launch(_args(tiny_moonshine, speech_dir, tmp_path / "out", GA, 0.0), 2, "--cpu")
    assert proc.returncode != 0
    assert "error: `accelerate launch --cpu` with several processes starts only one" in proc.stderr
    assert not (tmp_path / "out" / "real_metrics.json").exists()
