"""`--style-on-draw`: clips without a cached base transcript are styled as training first draws them,
not in a pass over the corpus before the first step. End to end on real speech with the real weights: the
same adapter as styling up front, and the same adapter after SIGKILL + resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from training_processes import checkpoint_step, signal_at_checkpoint

ROOT = Path(__file__).resolve().parents[1]
STEPS = 4  # 2 clips a step: the 7 rows are all first drawn by step 4, 3 of them after the kill at step 2


def _cmd(model_dir, speech_dir, out, *extra):
    # --eval-batch-size 1: each clip is transcribed alone both ways, so both ways give the same transcripts
    return [sys.executable, str(ROOT / "train_real_small.py"), "--model-id", str(model_dir), "--data-dir", str(speech_dir),
            "--dataset-samples", "7", "--eval-samples", "2", "--canary-samples", "1", "--eval-batch-size", "1",
            "--max-steps", str(STEPS), "--batch-size", "2", "--max-batch-seconds", "12", "--num-workers", "1",
            "--checkpoint-every", "1", "--mixed-precision", "no", "--quiet", "--output-dir", str(out), *extra]


def _env(home: Path) -> dict:
    return {**os.environ, "LORA_HOME": str(home)}  # a cold base-transcript cache for each run


def _adapter(out: Path) -> dict:
    return load_file(str(out / "lora_adapter" / "adapter_model.safetensors"))


def _same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-6


@pytest.mark.slow
def test_styling_as_drawn_trains_the_adapter_styling_first_does_and_survives_a_restart(moonshine_dir, speech_dir, tmp_path):
    """The real Moonshine base weights: their transcripts carry punctuation and case, so the targets differ
    from the sentence-cased references the loader's workers tokenise, and only relabelling gets them right."""
    metrics = {}
    for name in ("no", "yes"):
        out = tmp_path / name
        proc = subprocess.run(_cmd(moonshine_dir, speech_dir, out, "--style-on-draw", name), env=_env(tmp_path / f"home-{name}"),
                              capture_output=True, text=True, cwd=ROOT)
        assert proc.returncode == 0, proc.stderr[-3000:]
        metrics[name] = json.loads((out / "real_metrics.json").read_text())["target_style"]
    first, drawn = metrics["no"], metrics["yes"]
    assert not first["on_draw"] and first["transcribed"] == first["styled_rows"] > 0 and first["pending_rows"] == 0
    assert drawn["on_draw"] and drawn["transcribed"] == 0 and drawn["pending_rows"] == drawn["styled_rows"]
    assert 0 < drawn["transcribed_on_draw"] <= drawn["pending_rows"]
    assert drawn["words_with_base_style"] > 0 and drawn["coverage"] > 0.5
    cached = json.loads(next((tmp_path / "home-yes" / "base_transcripts").glob("*.json")).read_text())["transcripts"]
    assert len(cached) == drawn["transcribed_on_draw"]  # what training drew, saved for the next run
    assert any(text.rstrip()[-1:] in ".?!" for text in cached.values())  # styled: these targets are not the references
    _same(_adapter(tmp_path / "no"), _adapter(tmp_path / "yes"))

    killed = tmp_path / "killed"
    cmd = _cmd(moonshine_dir, speech_dir, killed, "--style-on-draw", "yes")
    proc = subprocess.Popen(cmd, env=_env(tmp_path / "home-killed"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    signal_at_checkpoint(proc, killed, 2, signal.SIGKILL)
    proc.wait()
    assert 0 < checkpoint_step(killed) < STEPS
    resumed = subprocess.run(cmd + ["--resume"], env=_env(tmp_path / "home-killed"), capture_output=True, text=True, cwd=ROOT)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _same(_adapter(tmp_path / "yes"), _adapter(killed))
