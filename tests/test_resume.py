"""Kill a training subprocess with SIGKILL mid-epoch while its data-loader workers run, resume it, and
compare the adapter with an uninterrupted run of the same seed (real speech from the shared folder,
named explicitly so a reachable hub changes nothing; tiny random model from the real config)."""

import json
import os
import random
import signal
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSpeechSeq2Seq

from lora.checkpoint import CHECKPOINT_DIR, load_checkpoint, save_checkpoint
from lora.core.errors import UserError
from lora.model_utils import attach_lora
from training_processes import checkpoint_step, signal_at_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 24


SPEECH_DIR = os.environ.get("LORA_SPEECH_DIR") or os.path.join(os.path.dirname(ROOT), "shared", "speech")
KILL_SEED = 20261126  # the kill step is drawn from a fixed seed: a failure can be replayed


def _cmd(model_dir, out):
    return [sys.executable, os.path.join(ROOT, "train_real_small.py"), "--model-id", str(model_dir), "--data-dir", SPEECH_DIR,
            "--dataset-samples", "7", "--eval-samples", "2", "--canary-samples", "1", "--max-steps", str(STEPS),
            "--batch-size", "2", "--max-batch-seconds", "12", "--num-workers", "1",
            "--gradient-accumulation-steps", "2", "--checkpoint-every", "1", "--lora-dropout", "0.1",
            "--quiet", "--output-dir", str(out)]


def test_sigkill_then_resume_matches_uninterrupted(tiny_moonshine, tmp_path):
    full, killed = tmp_path / "full", tmp_path / "killed"
    subprocess.run(_cmd(tiny_moonshine, full), check=True, capture_output=True)

    kill_at = random.Random(KILL_SEED).randint(3, STEPS - 6)
    proc = subprocess.Popen(_cmd(tiny_moonshine, killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    signal_at_checkpoint(proc, killed, kill_at, signal.SIGKILL)
    proc.wait()
    stopped = checkpoint_step(killed)
    assert 0 < stopped < STEPS and not (killed / "real_metrics.json").exists()

    resumed = subprocess.run(_cmd(tiny_moonshine, killed) + ["--resume"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a = load_file(str(full / "lora_adapter" / "adapter_model.safetensors"))
    b = load_file(str(killed / "lora_adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-6
    history_a = json.loads((full / "real_metrics.json").read_text())["train_loss_history"]
    history_b = json.loads((killed / "real_metrics.json").read_text())["train_loss_history"]
    assert [round(r["loss"], 6) for r in history_a] == [round(r["loss"], 6) for r in history_b]


def test_ctrl_c_says_where_the_checkpoint_is_and_resume_goes_on(tiny_moonshine, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(_cmd(tiny_moonshine, out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    signal_at_checkpoint(proc, out, 3, signal.SIGINT, group=True)  # as a terminal's Ctrl-C: the loader's workers get it too
    asked_at = checkpoint_step(out)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, err[-3000:]
    stopped = checkpoint_step(out)
    assert asked_at <= stopped <= asked_at + 2  # the step under way ended and wrote its checkpoint
    assert "Ctrl-C: stopping when this step ends, after its checkpoint (Ctrl-C again stops at once)" in err
    assert err.strip().splitlines()[-1] == (f"error: interrupted; the checkpoint of step {stopped} is in "
                                            f"{out / CHECKPOINT_DIR}: run the same command with --resume to go on from it")
    resumed = subprocess.run(_cmd(tiny_moonshine, out) + ["--resume"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert len(json.loads((out / "real_metrics.json").read_text())["train_loss_history"]) == STEPS


def test_sigterm_from_a_scheduler_stops_after_the_step_with_its_checkpoint(tiny_moonshine, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(_cmd(tiny_moonshine, out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    signal_at_checkpoint(proc, out, 2, signal.SIGTERM, group=True)  # as `scancel`: every process of the job
    asked_at = checkpoint_step(out)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM and "Traceback" not in err, err[-3000:]
    stopped = checkpoint_step(out)
    assert asked_at <= stopped <= asked_at + 2
    assert err.strip().splitlines()[-1] == (f"error: stopped by SIGTERM; the checkpoint of step {stopped} is in "
                                            f"{out / CHECKPOINT_DIR}: run the same command with --resume to go on from it")


def test_ctrl_c_before_any_checkpoint_says_there_is_nothing_to_resume(tmp_path):
    from lora.checkpoint import interrupted_at

    assert interrupted_at(tmp_path, 50) == ("interrupted before the first checkpoint (written every 50 steps); "
                                            f"nothing to resume in {tmp_path}")


@pytest.mark.parametrize("text", ["[1, 2]\n", '"step 3"\n', '{"step": 3, "config": [1]}\n'])
def test_a_checkpoint_state_that_is_no_state_is_one_line(tmp_path, text):
    """state.json valid JSON but not a checkpoint's object: one line naming it (was an AttributeError in --resume)."""
    from lora.checkpoint import STATE_FILE, read_state

    (tmp_path / CHECKPOINT_DIR).mkdir()
    (tmp_path / CHECKPOINT_DIR / STATE_FILE).write_text(text)
    with pytest.raises(UserError, match=rf"{STATE_FILE}: not a checkpoint's state .*delete .*{CHECKPOINT_DIR} to start over"):
        read_state(tmp_path)


def test_second_run_on_a_locked_output_dir_is_refused(tmp_path):
    """A second process is refused while the first holds the lock; a forked child of the first does
    not hold it (a killed run's loader workers must not block its --resume)."""
    from lora.checkpoint import OutputLock

    second = ("import sys; from lora.checkpoint import OutputLock; from lora.core.errors import UserError\n"
              "try:\n    OutputLock(sys.argv[1]).__enter__()\nexcept UserError as e:\n    print(e); sys.exit(3)")
    with OutputLock(tmp_path):
        proc = subprocess.run([sys.executable, "-c", second, str(tmp_path)], capture_output=True, text=True)
        assert proc.returncode == 3 and "another run is writing" in proc.stdout
        assert (tmp_path / ".lock").read_text() == f"{os.getpid()}\n"  # the refused run left the holder's pid
    # a run that forks a worker and is then killed: the worker, still alive, must not keep the lock
    killed = ("import os, signal, sys, time; from lora.checkpoint import OutputLock\n"
              "OutputLock(sys.argv[1]).__enter__()\n"
              "if os.fork() == 0:\n    time.sleep(20); os._exit(0)\n"
              "os.kill(os.getpid(), signal.SIGKILL)")
    subprocess.run([sys.executable, "-c", killed, str(tmp_path)])
    proc = subprocess.run([sys.executable, "-c", second, str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


SAVED_STATE = {"step": 1, "history": [], "audio_seconds": 0.0, "label_tokens": 0, "config": {}}  # as training writes it


def _checkpointed(tiny_moonshine, tmp_path):
    """A LoRA model, its optimizer and scheduler, and their checkpoint in tmp_path as training writes it."""
    model = attach_lora(AutoModelForSpeechSeq2Seq.from_pretrained(tiny_moonshine), 4, 8, 0.0, ("q_proj", "v_proj"))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    save_checkpoint(tmp_path, model, optimizer, scheduler, SAVED_STATE)
    return model, optimizer, scheduler, params


def _moved(params) -> list:
    """The trainable parameters moved off the checkpoint (a partial restore would show), as they now are."""
    with torch.no_grad():
        for p in params:
            p.add_(1.0)
    return [p.detach().clone() for p in params]


def test_a_disk_that_fills_during_a_checkpoint_is_one_line_and_keeps_the_earlier_one(tiny_moonshine, tmp_path, monkeypatch):
    """A full disk at a checkpoint ended the run with torch's `RuntimeError: basic_ios::clear: iostream error` (or
    safetensors' SafetensorError) traceback and left a half-written `.checkpoint.tmp-PID/` filling the disk."""
    import safetensors.torch
    from safetensors import SafetensorError

    model, optimizer, scheduler, _ = _checkpointed(tiny_moonshine, tmp_path)
    earlier = {p.name: p.read_bytes() for p in (tmp_path / CHECKPOINT_DIR).iterdir()}

    def full(tensors, filename):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(safetensors.torch, "save_file", full)  # (imported where it is called)
    with pytest.raises(OSError) as raised:
        save_checkpoint(tmp_path, model, optimizer, scheduler, SAVED_STATE | {"step": 2})
    assert raised.value.errno == 28 and raised.value.filename == str(tmp_path / CHECKPOINT_DIR)
    assert {p.name: p.read_bytes() for p in (tmp_path / CHECKPOINT_DIR).iterdir()} == earlier
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT_DIR]


@pytest.mark.parametrize("part, damage", [("adapter.safetensors", "truncate"), ("optimizer.pt", "truncate"),
                                          ("rng.safetensors", "delete")])
def test_a_damaged_checkpoint_file_is_named_and_changes_nothing(tiny_moonshine, tmp_path, part, damage):
    """`--resume` over a checkpoint damaged from outside (a partial copy, a deleted file): one line naming the file,
    and the model and optimizer as they were (every file is read before any state is set)."""
    model, optimizer, scheduler, params = _checkpointed(tiny_moonshine, tmp_path)
    path = tmp_path / CHECKPOINT_DIR / part
    if damage == "delete":
        path.unlink()
    else:
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    before = _moved(params)
    with pytest.raises(UserError, match=rf"{part}: checkpoint file is unreadable .*delete .*{CHECKPOINT_DIR} to start over"):
        load_checkpoint(tmp_path, model, optimizer, scheduler)
    assert all(torch.equal(p, b) for p, b in zip(params, before))


@pytest.mark.parametrize("edit", [{"step": "3"}, {"history": None}, {"audio_seconds": True}, {"label_tokens": 1.5}])
def test_a_checkpoint_state_with_a_value_of_another_kind_changes_nothing(tiny_moonshine, tmp_path, edit):
    """state.json edited by hand ("step": "3"): one line naming the key, and the model as it was (was a TypeError
    in the training loop after every state had been restored)."""
    from lora.checkpoint import STATE_FILE

    model, optimizer, scheduler, params = _checkpointed(tiny_moonshine, tmp_path)
    state = tmp_path / CHECKPOINT_DIR / STATE_FILE
    state.write_text(json.dumps(json.loads(state.read_text()) | edit))
    before = _moved(params)
    (key,) = edit
    with pytest.raises(UserError, match=rf"{STATE_FILE}: checkpoint state with {key} \(\w+\) .*delete .*{CHECKPOINT_DIR}"):
        load_checkpoint(tmp_path, model, optimizer, scheduler)
    assert all(torch.equal(p, b) for p, b in zip(params, before))


def test_a_checkpoint_state_without_its_rng_changes_nothing(tiny_moonshine, tmp_path):
    """state.json edited by hand (its `rng` gone): one line, and the model as it was (was a KeyError after the
    adapter had been restored)."""
    from lora.checkpoint import STATE_FILE

    model, optimizer, scheduler, params = _checkpointed(tiny_moonshine, tmp_path)
    state = tmp_path / CHECKPOINT_DIR / STATE_FILE
    state.write_text(json.dumps({k: v for k, v in json.loads(state.read_text()).items() if k != "rng"}))
    before = _moved(params)
    with pytest.raises(UserError, match=rf"{STATE_FILE}: no random-number states in it \(rng\); delete .*{CHECKPOINT_DIR} to start"):
        load_checkpoint(tmp_path, model, optimizer, scheduler)
    assert all(torch.equal(p, b) for p, b in zip(params, before))
