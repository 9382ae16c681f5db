"""`lora train --dataset` end to end on real speech (an audiofolder of ../shared/speech) with a tiny
random model: eval during training with the best step kept, TensorBoard scalars read back, a
self-contained adapter (PEFT + processor + model card, portable base id), `lora.load_adapter`,
plain `PeftModel.from_pretrained`, and `lora merge` into a folder the transformers pipeline loads."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile

from lora.core.errors import UserError
from lora.data.resolve import DataChoice, resolve_data
from lora.hf_args import rewrite_hf_args
from lora.runners.real_small import build_parser
from lora.training_config import TrainConfig, config_from_args

ROOT = Path(__file__).resolve().parents[1]
STEPS = 4


@pytest.fixture(scope="module")
def audiofolder(speech_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("af") / "af"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_audiofolder.py"), "--speech-dir", str(speech_dir),
                    "--output", str(out)], check=True, capture_output=True, cwd=ROOT)
    return out


@pytest.fixture(scope="module")
def run_dir(tiny_moonshine, audiofolder, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hf_run")
    (out / "terms.txt").write_text("the\n", encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "lora", "train", "--model-id", str(tiny_moonshine), "--dataset", str(audiofolder),
         "--dataset-samples", "6", "--eval-samples", "2", "--canary-samples", "1", "--max-steps", str(STEPS),
         "--eval_steps", "2", "--gradient-accumulation-steps", "1", "--num-workers", "0", "--learning_rate", "1e-3",
         "--lr-scheduler-type", "cosine", "--warmup-steps", "1", "--report-to", "tensorboard", "--run-name", "t",
         "--quiet", "--output-dir", str(out), "--terms", str(out / "terms.txt")],
        capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_dataset_run_records_the_eval_curve_and_the_kept_step(run_dir, audiofolder):
    m = json.loads((run_dir / "real_metrics.json").read_text())
    assert m["data_source"]["kind"] == "dataset_audiofolder" and m["data_source"]["where"] == str(audiofolder)
    assert [p["step"] for p in m["eval_history"]] == [2, 4]
    assert all(set(p) == {"step", "eval_loss", "wer", "term_error_rate"} for p in m["eval_history"])  # --terms given
    assert m["best_metric"] == "wer" and m["best_step"] in (2, 4)
    best = min(m["eval_history"], key=lambda p: p["wer"])  # first minimum wins: later ties do not replace it
    assert m["best_step"] == best["step"]
    assert m["config"]["lr_scheduler_type"] == "cosine" and m["config"]["learning_rate"] == 1e-3
    assert all(r["grad_norm"] is not None and r["grad_norm"] >= 0 for r in m["train_loss_history"])
    page = (run_dir / "report.html").read_text()
    assert "Evaluation during training" in page and "kept" in page


def test_tensorboard_event_file_holds_the_step_scalars(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder = run_dir / "runs" / "t"
    acc = EventAccumulator(str(folder))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/learning_rate", "train/grad_norm", "train/audio_seconds_per_second",
            "eval/loss", "eval/wer"} <= tags
    assert [e.step for e in acc.Scalars("train/loss")] == list(range(1, STEPS + 1))
    assert [e.step for e in acc.Scalars("eval/wer")] == [2, 4]
    m = json.loads((run_dir / "real_metrics.json").read_text())
    logged = [e.value for e in acc.Scalars("train/loss")]
    assert logged == pytest.approx([r["loss"] for r in m["train_loss_history"]], rel=1e-5)


def test_adapter_folder_is_self_contained(run_dir):
    adapter = run_dir / "lora_adapter"
    for name in ("adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "preprocessor_config.json",
                 "README.md", "lora_run.json"):
        assert (adapter / name).is_file(), name
    config = json.loads((adapter / "adapter_config.json").read_text())
    info = json.loads((adapter / "lora_run.json").read_text())
    assert config["base_model_name_or_path"] == info["model_id_used"]  # a local folder: its own path, not a cache
    card = (adapter / "README.md").read_text()
    m = json.loads((run_dir / "real_metrics.json").read_text())
    assert f"{100 * m['baseline_wer']:.1f}%" in card and f"{100 * m['tuned_wer']:.1f}%" in card
    assert "--eval_steps" in card and "library_name: peft" in card
    assert (run_dir / "processor" / "tokenizer.json").is_file()


def test_load_adapter_and_plain_peft_agree(run_dir, tiny_moonshine):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForSpeechSeq2Seq

    import lora

    model, processor = lora.load_adapter(run_dir / "lora_adapter")
    base = AutoModelForSpeechSeq2Seq.from_pretrained(str(tiny_moonshine), dtype=torch.float32)
    plain = PeftModel.from_pretrained(base, str(run_dir / "lora_adapter")).eval()
    ours = dict(model.named_parameters())
    theirs = dict(plain.named_parameters())
    lora_keys = [k for k in ours if "lora_" in k]
    assert lora_keys and all(torch.equal(ours[k], theirs[k]) for k in lora_keys)
    assert processor.tokenizer is not None and processor.feature_extractor.sampling_rate == 16000


def test_merge_cli_writes_a_capped_pipeline_folder(run_dir, tmp_path, speech_dir):
    from transformers import pipeline

    from lora.scripts import merge

    out = tmp_path / "merged"
    assert merge.build_parser().prog == "lora merge"
    assert merge.main(["--adapter-dir", str(run_dir / "lora_adapter"), "--output", str(out), "--quiet"]) == 0
    generation = json.loads((out / "generation_config.json").read_text())
    assert 0 < generation["max_new_tokens"] <= 256
    asr = pipeline("automatic-speech-recognition", model=str(out))
    # samples, not the file name: transformers decodes file names through the ffmpeg program
    audio, rate = soundfile.read(str(speech_dir / "jfk" / "9101" / "1" / "9101-1-0000.flac"), dtype="float32")
    result = asr({"raw": audio, "sampling_rate": rate})
    tokens = asr.tokenizer(result["text"], add_special_tokens=False)["input_ids"]
    assert len(tokens) <= generation["max_new_tokens"]  # random tiny weights: noise text, but capped


def test_dataset_object_goes_through_preflight(audiofolder, tmp_path):
    import datasets

    meta = [line.split(",") for line in (audiofolder / "metadata.csv").read_text().splitlines()[1:]]
    rows = {"audio": [str(audiofolder / r[0]) for r in meta] + [str(tmp_path / "missing.flac")],
            "text": [r[1] for r in meta] + ["LOST"], "speaker_id": [r[2] for r in meta] + ["x"]}
    quarantine = tmp_path / "quarantine.jsonl"
    data = resolve_data(DataChoice(dataset=datasets.Dataset.from_dict(rows), dataset_samples=0, eval_samples=2,
                                   quarantine_path=str(quarantine)), hub_ok=False)
    assert data.source["kind"] == "dataset_dataset"
    assert data.source["train_split_requested"] == "train"  # --dataset-split, not LibriSpeech's --train-split
    assert data.source["train_split_used"].startswith("train of dataset ")
    assert len(data.train) + len(data.eval) <= len(meta) and data.eval
    assert "missing.flac" in quarantine.read_text()


def test_hf_spellings_and_new_flags_parse():
    args = build_parser().parse_args(rewrite_hf_args(["--learning_rate", "2e-4", "--lr_scheduler_type=cosine",
                                                      "--warmup_steps", "3", "--metric_for_best_model", "eval_loss"]))
    cfg = config_from_args(TrainConfig, args)
    assert (cfg.learning_rate, cfg.lr_scheduler_type, cfg.warmup_steps, cfg.metric_for_best_model) == (2e-4, "cosine", 3, "eval_loss")
    for bad in (["--lr-scheduler-type", "step"], ["--metric-for-best-model", "bleu"], ["--early-stopping-patience", "2"],
                ["--metric-for-best-model", "term_error_rate"]):  # without --terms
        with pytest.raises(UserError):
            config_from_args(TrainConfig, build_parser().parse_args(bad))
