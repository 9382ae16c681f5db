"""`lora eval` writes the style figures beside the normalised WER, and compares an adapter with its base."""

from __future__ import annotations

import json

import pytest

from joined_audio import joined_flac
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


def test_terms_count_the_long_clips_too_and_compare_base_scores_them(adapter, speech_dir, tmp_path, capsys):
    """A clip over 30 s goes through the long-form path; its terms count (before and after) like a short clip's."""
    from lora.core.text import normalize_for_scoring
    from lora.results import EvalResult, read_result
    from lora.term_recall import term_rows

    flac, text = joined_flac(speech_dir, tmp_path / "long.flac", 40)
    jfk = next((speech_dir / "jfk").rglob("*.flac"))
    jfk_text = "And so, my fellow Americans, ask not what your country can do for you, ask what you can do for your country."
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"id": "long", "audio": str(flac), "text": text, "speaker": "9001"}) + "\n"
                        + json.dumps({"id": "jfk", "audio": str(jfk), "text": jfk_text, "speaker": "9101"}) + "\n")
    (tmp_path / "terms.txt").write_text("printing\ncountry\n", encoding="utf-8")
    out = tmp_path / "eval" / "eval.json"
    assert main(["--adapter-dir", str(adapter), "--manifest", str(manifest), "--terms", str(tmp_path / "terms.txt"),
                 "--compare-base", "--output", str(out), "--quiet"]) == 0
    result = read_result(out, EvalResult)
    assert [x["id"] for x in result.long_form] == ["long"] and result.long_form_base_wer is not None
    said_long = normalize_for_scoring(text).split().count("printing")
    assert said_long >= 1  # LJSpeech's first utterances are about printing
    t = result.terms
    assert t.utterances == 2 and t.said == said_long + 2 and t.utterances_with_terms == 2
    by_term = {e["term"]: e for e in t.per_term}
    assert by_term["printing"]["said"] == said_long and by_term["country"]["said"] == 2
    after = term_rows(("printing", "country"), result.samples + result.long_form)
    assert t.recalled_after == sum(r["recalled"] for r in after)
    assert t.recalled_before is not None and t.term_error_rate_change_ci95 is not None
    assert result.long_form[0]["base_wer"] is not None
    assert "(base model" in capsys.readouterr().out
    assert "## Long recordings" in (out.parent / "report.md").read_text(encoding="utf-8")
