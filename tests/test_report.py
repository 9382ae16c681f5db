"""lora.report.content on realistic metrics dicts: files written, PNGs valid, raw text escaped, verdicts shown,
optional parts (canary, loss history) absent without errors; and a headless-Chromium render check."""

from __future__ import annotations

import copy
import html
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lora.report.content import REPORT_HTML, REPORT_MD, _target_style, data_line, write_report
from lora.scripts.screenshot import chromium_path, screenshot

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
NASTY_REF = "TOM & JERRY <SCRIPT>ALERT(1)</SCRIPT> | A*B"
NASTY_HYP = "tom & jerry <b>bold</b> | a*b"


def _sample(uid, ref, before, after, wer_before, wer_after):
    return {"id": uid, "reference": ref, "hypothesis_before": before, "hypothesis_after": after,
            "wer_before": wer_before, "wer_after": wer_after, "wer_change": wer_after - wer_before}


def run_metrics() -> dict:
    """Shaped like a real `lora-train` real_metrics.json (samples worst regressions first)."""
    samples = [
        _sample("1089-134686-0007", NASTY_REF, "tom and jerry script alert one script a b", NASTY_HYP, 0.25, 0.5),
        _sample("1221-135766-0002", "YET THESE THOUGHTS AFFECTED HESTER PRYNNE", "yet these thoughts affected hester prynne",
                "yet these thoughts affected hester prynne", 0.0, 0.0),
        _sample("2961-960-0004", "THE PLACE SEEMED FRAGRANT WITH ALL THE RICHES OF GREEK THOUGHT",
                "the place seem fragrant with all the riches of greek taught",
                "the place seemed fragrant with all the riches of greek thought", 0.18, 0.0),
        _sample("9204-1-0002", "TWO", "too", "two", 1.0, 0.0),
    ]
    history = [{"step": s, "loss": 3.0 / s + 0.5, "lr": 1e-3 * min(1, s / 3), "elapsed_s": 0.4 * s} for s in range(1, 21)]
    return {
        "model_id_requested": "auto", "model_id_used": "moonshine-base-en", "model_source": "imported",
        "family": "moonshine", "target_policy": "sentence", "target_modules": ["q_proj", "v_proj"],
        "train_ids": [f"t{i}" for i in range(40)], "train_speakers": ["3752", "9001"],
        "data_source": {"kind": "local_default", "where": "/work/shared/speech [dev-clean]", "train_split": "train.100"},
        "eval_ids": [s["id"] for s in samples], "eval_speakers": ["1089", "1221", "2961", "9204"],
        "config": {"max_steps": 20, "learning_rate": 1e-3, "lora_r": 8, "target_modules": None, "seed": 42},
        "world_size": 1, "device": "cuda", "train_loss": 0.9, "train_loss_history": history,
        "baseline_eval_loss": 1.42, "tuned_eval_loss": 1.05, "baseline_wer": 0.123, "tuned_wer": 0.081,
        "baseline_cer": 0.06, "tuned_cer": 0.04, "wer_utterances": len(samples),
        "wer_delta_ci95": {"delta": -0.042, "ci95": [-0.06, -0.021], "verdict": "improved", "resamples": 1000, "seed": 42},
        "samples": samples,
        "canary": {"wer_before": 0.05, "wer_after": 0.054, "cer_before": 0.02, "cer_after": 0.021, "utterances": 4,
                   "source": "LibriSpeech test-clean, unseen speakers",
                   "wer_delta_ci95": {"delta": 0.004, "ci95": [-0.01, 0.02], "verdict": "no significant change"}},
        "train_audio_seconds": 300.5, "eval_audio_seconds": 22.1, "train_wall_seconds": 12.3, "wall_seconds": 40.2,
        "peak_rss_mb": 2048.0, "versions": {"python": "3.11.7", "torch": "2.6.0"},
    }


def eval_metrics() -> dict:
    """Shaped like a `lora-eval` eval.json: one model, no before/after."""
    return {"model_id_requested": "auto", "model_id_used": "whisper-tiny.en", "family": "whisper",
            "data": "/work/shared/speech [test-clean]", "utterances": 2, "eval_loss": 0.8, "wer": 0.1, "cer": 0.05,
            "substitutions": 1, "deletions": 0, "insertions": 0, "ref_words": 10, "wer_ci95": [0.0, 0.3],
            "samples": [{"id": "a", "reference": NASTY_REF, "hypothesis": NASTY_HYP, "ref_words": 8, "errors": 1, "wer": 0.125},
                        {"id": "b", "reference": "TWO", "hypothesis": "two", "ref_words": 1, "errors": 0, "wer": 0.0}]}


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 1000, path


def test_full_run_report(tmp_path):
    written = write_report(run_metrics(), tmp_path)
    assert set(written) == {"loss_curve.png", "wer_per_utterance.png", REPORT_MD, REPORT_HTML}
    assert all(p.is_file() and p.parent == tmp_path for p in written.values())
    assert_png(written["loss_curve.png"])
    assert_png(written["wer_per_utterance.png"])
    assert not list(tmp_path.glob(".*"))  # no temp files left behind

    page = written[REPORT_HTML].read_text(encoding="utf-8")
    verdict = "WER 12.3% \u2192 8.1% (\u22124.2 pts, 95% CI [\u22126.0, \u22122.1]): improved"
    assert verdict in page and 'class="verdict improved"' in page
    assert html.escape(NASTY_REF) in page and html.escape(NASTY_HYP) in page
    assert "<SCRIPT>" not in page and "<b>bold" not in page
    assert "Canary WER 5.0% \u2192 5.4% (+0.4 pts, 95% CI [\u22121.0, +2.0]): no significant change" in page
    assert page.count("data:image/png;base64,") == 2 and 'src="loss_curve.png"' not in page
    assert "1 of 4 utterances got worse, 2 better, 1 unchanged." in page
    # the regression is listed before the improvements, and marked
    assert page.index("1089-134686-0007") < page.index("2961-960-0004")
    assert '<tr class="worse"><td>1089-134686-0007' in page

    md = written[REPORT_MD].read_text(encoding="utf-8")
    assert verdict in md
    assert "| metric | baseline | tuned | change (loss / WER pts) |" in md
    assert "| WER | 12.3% | 8.1% | \u22124.2 |" in md
    assert "| Eval loss | 1.420 | 1.050 | \u22120.370 |" in md
    assert "TOM \\& JERRY \\<SCRIPT\\>ALERT(1)\\</SCRIPT\\> \\| A\\*B" in md  # a `|` in a transcript cannot split a row
    assert "![training loss per step](loss_curve.png)" in md
    rows = [line for line in md.splitlines() if line.startswith("| 1089-134686-0007 ")]
    assert len(rows) == 2 and all(row.count(" | ") == 6 for row in rows)  # regressions table + all-utterances table


def test_no_canary_no_history_no_interval(tmp_path):
    metrics = run_metrics()
    del metrics["canary"]
    metrics["train_loss_history"] = []
    metrics["train_loss"] = None
    metrics["wer_delta_ci95"] = {"delta": None, "ci95": None, "verdict": "not enough data", "resamples": 0}
    written = write_report(metrics, tmp_path / "new")
    assert_png(written["loss_curve.png"])  # a placeholder plot, so the file set never varies
    page = written[REPORT_HTML].read_text(encoding="utf-8")
    assert "No canary set was scored in this run" in page
    assert "Canary WER" not in page
    assert "WER 12.3% \u2192 8.1% (\u22124.2 pts): not enough data" in page
    assert "No interval could be computed (not enough data)" in page


def test_a_run_whose_eval_shares_speakers_with_training_says_so(tmp_path):
    metrics = run_metrics()
    assert "Not speaker-disjoint" not in write_report(metrics, tmp_path / "disjoint")[REPORT_MD].read_text(encoding="utf-8")
    metrics["leakage"] = {"shared_speakers": [""], "shared_texts": []}
    md = write_report(metrics, tmp_path / "shared")[REPORT_MD].read_text(encoding="utf-8")
    assert ("Not speaker-disjoint: 1 eval speaker(s) also trained (no speaker field; --allow-shared-speakers). The change "
            "measures unseen utterances of those speakers, not unseen speakers.") in md


def test_canary_null_and_sparse_metrics(tmp_path):
    """An old or half-written metrics file: nulls and missing keys read as n/a, never a crash."""
    sparse = {"model_id_used": "m", "baseline_wer": None, "tuned_wer": None, "canary": None,
              "samples": [], "train_loss_history": None}
    written = write_report(sparse, tmp_path)
    page = written[REPORT_HTML].read_text(encoding="utf-8")
    assert "WER n/a \u2192 n/a (n/a pts): no significance test" in page
    assert "No canary set was scored" in page
    assert_png(written["wer_per_utterance.png"])


def test_single_model_eval_report(tmp_path):
    written = write_report(eval_metrics(), tmp_path)
    assert set(written) == {"wer_per_utterance.png", REPORT_MD, REPORT_HTML}
    assert_png(written["wer_per_utterance.png"])
    page = written[REPORT_HTML].read_text(encoding="utf-8")
    assert "WER 10.0% (95% CI [0.0%, 30.0%]), CER 5.0% on 2 utterances" in page
    assert html.escape(NASTY_HYP) in page and "1 of 2 utterances have at least one error." in page
    assert "| id | WER | errors / words | reference | hypothesis |" in written[REPORT_MD].read_text(encoding="utf-8")


def test_an_eval_with_long_clips_shows_them_with_the_base_models_wer(tmp_path):
    long_clip = {"id": "talk", "seconds": 95.4, "reference": "the whole talk", "hypothesis": "the hole talk", "wer": 1 / 3,
                 "base_wer": 2 / 3, "segments": [{"start_s": 0.0, "end_s": 29.0, "text": "the hole"},
                                                 {"start_s": 29.5, "end_s": 95.0, "text": "talk"}]}
    metrics = eval_metrics() | {"long_form": [long_clip], "long_form_wer": 1 / 3, "long_form_base_wer": 2 / 3}
    md = write_report(metrics, tmp_path)[REPORT_MD].read_text(encoding="utf-8")
    assert "## Long recordings" in md
    assert "1 clip(s) over 30 s went through the long-form path" in md and "WER 33.3% (base model 66.7%)." in md
    assert "| talk | 95.4 s | 2 | 66.7% | 33.3% | the whole talk | the hole talk |" in md
    without = write_report(eval_metrics(), tmp_path / "plain")[REPORT_MD].read_text(encoding="utf-8")
    assert "Long recordings" not in without


def test_report_does_not_modify_metrics(tmp_path):
    metrics = run_metrics()
    frozen = copy.deepcopy(metrics)
    write_report(metrics, tmp_path)
    assert metrics == frozen


def test_cli_writes_next_to_metrics_without_torch(tmp_path):
    path = tmp_path / "real_metrics.json"
    path.write_text(json.dumps(run_metrics()))
    code = ("import sys; from lora.scripts.report import main; rc = main(sys.argv[1:]); "
            "assert 'torch' not in sys.modules, 'lora-report imported torch'; raise SystemExit(rc)")
    done = subprocess.run([sys.executable, "-c", code, str(path)], check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / REPORT_HTML).is_file() and str(tmp_path / REPORT_MD) in done.stdout


def test_cli_takes_a_run_folder(tmp_path, capsys):
    """README: `lora report RUN_DIR` (it said "Is a directory" before)."""
    from lora.scripts.report import main

    (tmp_path / "real_metrics.json").write_text(json.dumps(run_metrics()))
    assert main([str(tmp_path)]) == 0
    assert (tmp_path / REPORT_HTML).is_file() and str(tmp_path / REPORT_MD) in capsys.readouterr().out
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([str(empty)]) == 2
    assert "real_metrics.json or eval.json" in capsys.readouterr().err


def test_a_run_folder_that_cannot_be_written_says_so_and_names_output_dir(tmp_path, capsys, monkeypatch):
    """A shared, read-only results folder: the error named a random temp file (`.loss_curve.png.pvrtd_rn: Operation
    not permitted`) and not --output-dir. (As root a chmod does not stop writes: `os.access` answers as a
    read-only mount does.)"""
    from lora.scripts.report import main

    run = tmp_path / "run"
    run.mkdir()
    (run / "real_metrics.json").write_text(json.dumps(run_metrics()))
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == run else real_access(p, mode))
    assert main([str(run)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: {run}: cannot write the report there (read-only or no permission); pass --output-dir DIR"]
    assert main([str(run), "--output-dir", str(tmp_path / "elsewhere")]) == 0
    assert (tmp_path / "elsewhere" / REPORT_MD).is_file()


def test_cli_bad_input_is_one_line(tmp_path):
    from lora.scripts.report import main

    bad = tmp_path / "m.json"
    bad.write_text("{\n  nope")
    assert main([str(bad)]) == 2
    assert main([str(tmp_path / "missing.json")]) == 2


@pytest.mark.parametrize("edit, problem", [
    ({"canary": "x"}, "canary is a string, expected an object"),
    ({"samples": [1]}, "samples[0] is a number, expected an object"),
    ({"wer_delta_ci95": {"ci95": 5}}, "wer_delta_ci95.ci95 is a number, expected a list"),
    ({"train_ids": 5}, "train_ids is a number, expected a list"),
    ({"data_source": "x"}, "data_source is a string, expected an object"),
    ({"tuned_wer": "8%"}, "tuned_wer is a string, expected a number"),
    ({"terms": [1]}, "terms is a list, expected an object"),
])
def test_cli_metrics_with_a_field_of_another_kind_is_one_line(tmp_path, capsys, edit, problem):
    """A hand-edited or foreign metrics file: the field named, nothing written (each was a traceback, or a report
    of "n/a" for a WER that was a string)."""
    from lora.scripts.report import main

    path = tmp_path / "real_metrics.json"
    path.write_text(json.dumps(run_metrics() | edit))
    assert main([str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {path}: {problem} (not as lora writes its real_metrics.json)"), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["real_metrics.json"]


@pytest.mark.skipif(chromium_path() is None, reason="chromium not installed (apt-get install -y chromium); "
                                                    "the HTML render check needs a real browser")
def test_html_renders_in_headless_chromium(tmp_path):
    import numpy as np
    from matplotlib import image

    written = write_report(run_metrics(), tmp_path)
    shot = screenshot(written[REPORT_HTML], tmp_path / "shot.png")
    assert shot.stat().st_size > 10_000
    pixels = image.imread(shot)
    assert pixels.shape[0] >= 1000 and pixels.shape[1] >= 1000
    assert np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0).shape[0] > 50  # text, colours, plots: not blank


def test_the_report_says_how_many_rows_were_styled_as_drawn():
    style = {"policy": "styled", "rows": 10, "styled_rows": 10, "own_style_rows": 0, "coverage": 0.9, "transcribed": 0,
             "cache_hits": 2, "on_draw": True, "pending_rows": 8, "transcribed_on_draw": 3, "seconds_on_draw": 1.25}
    text = _target_style(style)
    assert "8 rows had no cached transcript when training began, 3 clips transcribed in training (1.2 s)" in text
    assert "styled as drawn" not in _target_style(style | {"on_draw": False})


def test_the_data_line_names_the_split_the_run_used():
    source = {"kind": "dataset_parquet", "where": "/data/pq", "train_split_requested": "test",
              "train_split_used": "test of dataset /data/pq"}
    assert data_line({"data_source": source}) == "dataset_parquet: /data/pq (train split test of dataset /data/pq)"
