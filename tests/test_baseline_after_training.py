"""The baseline is measured after training, on the trained PEFT model with its adapters switched off
(`pipeline.measure_baseline`), so it no longer delays the first optimizer step. It must be the base
model's measurement exactly: same eval loss, same transcripts, on both families."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch


@pytest.mark.parametrize("family_name", ["moonshine", "whisper"])
def test_baseline_after_training_equals_the_base_model_before_it(family_name, request, librispeech_utterances):
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from lora import pipeline
    from lora.data_loader import LoaderOptions, prepare_dataset
    from lora.model_utils import attach_lora, load_base, resolve_model_id
    from lora.training import example_source, train_lora
    from lora.training_config import TrainConfig

    set_seed(0)
    resolved = resolve_model_id(str(request.getfixturevalue(f"tiny_{family_name}")))
    model, processor, family = load_base(resolved)
    rows = sorted(librispeech_utterances, key=lambda u: u.id)
    train, held = prepare_dataset(rows[:4], processor, family), prepare_dataset(rows[4:7], processor, family)
    lm = pipeline.LoadedModel(resolved, model, processor, family)
    sets = pipeline.EvalSets(held, held, held[:2])
    cfg = TrainConfig(batch_size=2, gradient_accumulation_steps=1, max_steps=4, learning_rate=5e-2, checkpoint_every=0,
                      seed=0, eval_batch_size=2)
    before = pipeline.measure(lm, model, sets, cfg)  # the base model, as the baseline used to be measured

    peft_model = attach_lora(model, 4, 8, 0.0, (family.attention_in("decoder"),))
    train_lora(peft_model, family, example_source(train, family, LoaderOptions(batch_size=2, seed=0)), cfg, Accelerator(),
               show_progress=False)
    trained = [p for n, p in peft_model.named_parameters() if "lora_B" in n]
    assert trained and any(p.abs().max() > 0 for p in trained)  # the adapters moved: switching them off matters
    session = SimpleNamespace(accelerator=SimpleNamespace(is_main_process=True), baseline_seconds=0.0)

    baseline = pipeline.measure_baseline(lm, peft_model, sets, cfg, session)
    tuned = pipeline.measure(lm, peft_model, sets, cfg)

    assert baseline.eval["eval_loss"] == pytest.approx(before.eval["eval_loss"], rel=1e-5, abs=1e-6)
    assert [s["hypothesis"] for s in baseline.eval["samples"]] == [s["hypothesis"] for s in before.eval["samples"]]
    assert [s["hypothesis"] for s in baseline.canary["samples"]] == [s["hypothesis"] for s in before.canary["samples"]]
    assert tuned.eval["eval_loss"] != pytest.approx(before.eval["eval_loss"], rel=1e-4)  # and on again afterwards
    assert session.baseline_seconds > 0


def test_a_non_main_process_measures_no_baseline():
    from lora import pipeline

    session = SimpleNamespace(accelerator=SimpleNamespace(is_main_process=False), baseline_seconds=0.0)
    assert pipeline.measure_baseline(None, torch.nn.Linear(1, 1), None, None, session) is None
    assert session.baseline_seconds == 0.0


@pytest.mark.slow
def test_baseline_first_and_after_training_give_the_same_baseline(tiny_moonshine, speech_dir, tmp_path):
    """`lora train` both ways on real speech: the baseline's figures and transcripts agree, only its place differs."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    metrics = {}
    for name, extra in (("after", []), ("first", ["--baseline-first"])):
        out = tmp_path / name
        proc = subprocess.run(
            [sys.executable, str(root / "train_real_small.py"), "--model-id", str(tiny_moonshine), "--data-dir", str(speech_dir),
             "--dataset-samples", "6", "--eval-samples", "3", "--canary-samples", "2", "--eval-batch-size", "3",
             "--max-steps", "2", "--learning-rate", "0.05", "--mixed-precision", "no", "--quiet", "--output-dir", str(out), *extra],
            capture_output=True, text=True, cwd=root)
        assert proc.returncode == 0, proc.stderr[-3000:]
        metrics[name] = json.loads((out / "real_metrics.json").read_text())
    after, first = metrics["after"], metrics["first"]
    assert list(after["scale"]["stage_seconds"]).index("baseline") > list(after["scale"]["stage_seconds"]).index("train")
    assert list(first["scale"]["stage_seconds"]).index("baseline") < list(first["scale"]["stage_seconds"]).index("train")
    assert after["baseline_eval_loss"] == pytest.approx(first["baseline_eval_loss"], rel=1e-5)
    assert after["baseline_wer"] == first["baseline_wer"]
    assert [s["hypothesis_before"] for s in after["samples"]] == [s["hypothesis_before"] for s in first["samples"]]
    assert after["canary"]["wer_before"] == first["canary"]["wer_before"]
