"""Model cards: metadata and body from a realistic run record; ModelCard.load reads them back."""

from __future__ import annotations

import pytest
from huggingface_hub import ModelCard

from lora.model_card import (
    NOT_RECORDED,
    build_model_card,
    portable_base_id,
    write_model_card,
)


@pytest.fixture
def info() -> dict:
    """Shaped like a real real_metrics.json (values typed in, as a run would record them)."""
    return {
        "model_id_requested": "moonshine-base-en", "model_id_used": "moonshine-base-en", "model_source": "import",
        "model_path": "/root/.cache/lora/models/moonshine-base-en",
        "family": "moonshine", "target_modules": ["q_proj", "v_proj"],
        "train_ids": ["1089-134686-0000", "1089-134686-0001", "LJ001-0001"], "train_speakers": ["1089", "9001"],
        "eval_ids": ["3752-4944-0000", "1988-24833-0000"], "eval_speakers": ["1988", "3752"],
        "data_source": "/data/audiofolder (audiofolder)",
        "config": {"lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.05, "max_steps": 20},
        "baseline_wer": 0.2125, "tuned_wer": 0.1875,
        "baseline_wer_ci95": [0.15, 0.3], "tuned_wer_ci95": [0.12, 0.25],
        "wer_delta_ci95": {"delta": -0.025, "ci95": [-0.06, 0.01], "verdict": "no significant change",
                           "resamples": 2000, "seed": 42},
        "canary": {"source": "jfk", "utterances": 1, "wer_before": 0.0, "wer_after": 0.0417,
                   "wer_delta_ci95": {"delta": 0.0417, "ci95": [0.0417, 0.0417], "verdict": "worse"}},
        "command": ["lora", "train", "--dataset", "data/af", "--max-steps", "20"],
        "versions": {"python": "3.11.9", "torch": "2.9.0", "transformers": "5.24.0", "peft": "0.17.1", "onnxruntime": None},
    }


def test_metadata(info, tmp_path):
    card = build_model_card(info)
    assert card.data.library_name == "peft"
    assert card.data.base_model == "UsefulSensors/moonshine-base"
    assert card.data.tags == ["lora", "automatic-speech-recognition", "moonshine"]
    assert card.data.pipeline_tag == "automatic-speech-recognition"

    path = write_model_card(tmp_path, info)
    loaded = ModelCard.load(path)
    assert loaded.data.to_dict() == card.data.to_dict()
    assert loaded.text == card.text


def test_body(info):
    text = build_model_card(info).text
    assert "`moonshine-base-en` (import), portable id `UsefulSensors/moonshine-base`" in text
    assert "r=8, alpha=16, dropout=0.05, targets: `q_proj`, `v_proj`" in text
    assert "- training: 3 utterances from 2 speakers" in text
    assert "- evaluation: 2 utterances from 2 speakers (speaker-disjoint from training)" in text
    assert "| before (base model) | 21.2% | [15.0%, 30.0%] |" in text
    assert "| after (with LoRA) | 18.8% | [12.0%, 25.0%] |" in text
    assert "| change | -2.5 points | [-6.0%, 1.0%] |" in text
    assert "Verdict: **no significant change** (paired bootstrap over utterances, 2000 resamples)." in text
    assert "WER before: 0.0%, after: 4.2%" in text and "verdict: **worse**" in text
    assert "lora train --dataset data/af --max-steps 20" in text
    assert "- transformers: 5.24.0" in text and "onnxruntime" not in text


def test_the_data_source_a_run_records_reads_as_its_place_and_kind(info):
    """`lora train` records data_source as a dict (resolve_data); the card names it, not a Python dict."""
    info["data_source"] = {"kind": "dataset_save_to_disk", "where": "/data/ds", "train_split_requested": "train.100",
                           "train_split_used": "dataset /data/ds", "corpus_rows": 14}
    text = build_model_card(info).text
    assert "- source: /data/ds (dataset_save_to_disk)\n" in text and "{" not in text.split("## Data")[1].split("##")[0]


def test_the_card_shows_your_terms_when_the_run_measured_them(info):
    assert "Your terms" not in build_model_card(info).text
    info["terms"] = {"terms_file": "terms.txt", "terms": 10, "said": 800, "recall_before": 0.45625, "recall_after": 0.9775,
                     "inserted_before": 8, "inserted_after": 10,
                     "term_error_rate_change_ci95": {"delta": -0.51875, "ci95": [-0.55625, -0.485], "verdict": "improved"}}
    text = build_model_card(info).text
    assert "## Your terms (held-out evaluation)" in text and "800 occurrences of 10 terms from `terms.txt`" in text
    assert "- written where said: 45.6% before, 97.8% after" in text and "- written where not said: 8 before, 10 after" in text
    assert "- term error rate change: -51.9 points, 95% interval [-55.6%, -48.5%], verdict: **improved**" in text


def test_an_eval_of_the_training_speaker_says_it_is_not_speaker_disjoint(info):
    assert "## Word error rate (held-out evaluation)" in build_model_card(info).text
    text = build_model_card(info | {"train_speakers": ["me"], "eval_speakers": ["me"]}).text
    assert "## Word error rate (held-out utterances of the training speakers, not speaker-disjoint)" in text
    assert "(speaker-disjoint from training)" not in text


def test_missing_values_say_not_recorded(info):
    sparse = {k: info[k] for k in ("model_id_used", "model_source", "family", "target_modules")}
    text = build_model_card(sparse).text
    assert f"| before (base model) | {NOT_RECORDED} | {NOT_RECORDED} |" in text
    assert f"Verdict: **{NOT_RECORDED}**" in text
    assert "No canary set was scored" in text
    assert f"```\n{NOT_RECORDED}\n```" in text


def test_merged_model_is_a_transformers_library_card(info):
    card = build_model_card(info | {"merged": True})
    assert card.data.library_name == "transformers"
    assert "merged into the base weights (a plain transformers model)" in card.text


def test_portable_ids():
    assert portable_base_id({"model_id_used": "whisper-tiny.en", "model_source": "import"}) == "openai/whisper-tiny.en"
    assert portable_base_id({"model_id_used": "openai/whisper-base", "model_source": "hub"}) == "openai/whisper-base"
    assert portable_base_id({"model_id_used": "/home/me/models/x", "model_source": "local"}) is None
    card = build_model_card({"model_id_used": "/home/me/models/x", "model_source": "local", "family": "whisper"})
    assert card.data.base_model is None and "base_model" not in str(card).split("---")[1]
