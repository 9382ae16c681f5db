"""`lora eval` writes the style figures beside the normalised WER, and compares an adapter with its base."""

from __future__ import annotations

import json

import pytest

from lora.scripts.evaluate import main


@pytest.fixture(scope="module")
def adapter(tiny_moonshine, tmp_path_factory):
    """A LoRA adapter on the tiny Moonshine whose B matrices are non-zero (so it changes the output)."""
    import torch
    from transformers import AutoModelForSpeechSeq2Seq

    from lora.model_utils import attach_lora, save_adapter

    model = attach_lora(AutoModelForSpeechSeq2Seq.from_pretrained(tiny_moonshine), 4, 8, 0.0, ("q_proj", "v_proj"))
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    out = tmp_path_factory.mktemp("adapter") / "lora_adapter"
    save_adapter(model, out, {"model_id_used": str(tiny_moonshine), "model_id_requested": str(tiny_moonshine)})
    return out


def test_eval_json_has_the_style_figures(adapter, speech_dir, tmp_path, capsys):
    out = tmp_path / "eval.json"
    code = main(["--adapter-dir", str(adapter), "--data-dir", str(speech_dir), "--subsets", "jfk,fsdd", "--max-samples", "3",
                 "--compare-base", "--output", str(out), "--quiet"])
    assert code == 0
    m = json.loads(out.read_text())
    # the summary says the WER is the adapted model's, and gives the base model's beside it
    printed = capsys.readouterr().out
    assert f"+ adapter: WER {100 * m['wer']:.2f}%" in printed
    assert f"(base, adapter off): WER {100 * m['base_model_wer']:.2f}%" in printed
    assert m["utterances"] == 3 and m["schema_version"] == 2
    assert m["orthographic_wer"] >= 0 and m["wer"] >= 0
    assert m["raw_insertions"] >= 0 and m["max_hyp_ref_word_ratio"] >= 0 and m["outputs_over_2x_ref"] >= 0
    assert m["base_model_wer"] is not None
    for key in ("punctuation_f1_vs_base", "capitalisation_f1_vs_base"):  # None only when neither output has any
        assert m[key] is None or 0 <= m[key] <= 1


def test_compare_base_needs_an_adapter(speech_dir, tmp_path, capsys):
    code = main(["--model-id", "moonshine-base-en", "--data-dir", str(speech_dir), "--compare-base", "--output", str(tmp_path / "e.json")])
    assert code == 2 and "--compare-base needs --adapter-dir" in capsys.readouterr().err


def test_unknown_target_policy_is_refused(tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["--target-policy", "fancy", "--output", str(tmp_path / "e.json")])
    assert exit_info.value.code == 2
