"""End to end on the real imported Moonshine base and real speech: train, reload, transcribe."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run_dir(moonshine_dir, speech_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("real_small")
    terms = out / "terms.txt"
    terms.write_text("# words every reading says, and one none does\nthe\nand\nKubernetes\n", encoding="utf-8")
    proc = subprocess.run(  # --data-dir named: with the hub reachable the data source would otherwise differ
        [sys.executable, str(ROOT / "train_real_small.py"), "--model-id", "moonshine-base-en", "--data-dir", str(speech_dir),
         "--dataset-samples", "8",
         "--eval-samples", "4", "--canary-samples", "2", "--max-steps", "4", "--gradient-accumulation-steps", "2",
         "--wer-batches", "1", "--eval-batch-size", "4", "--quiet", "--output-dir", str(out), "--terms", str(terms)],
        capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (out / "stdout.txt").write_text(proc.stdout)
    return out


def test_metrics_are_complete_and_honest(run_dir):
    m = json.loads((run_dir / "real_metrics.json").read_text())
    assert m["model_id_requested"] == "moonshine-base-en" and m["model_source"] == "import"
    assert m["train_loss"] > 0 and len(m["train_loss_history"]) == 4
    assert math.isfinite(m["baseline_eval_loss"]) and math.isfinite(m["tuned_eval_loss"])
    assert 0 <= m["baseline_wer"] and 0 <= m["tuned_wer"] and "wer" not in m  # no alias keys
    assert m["schema_version"] == 2 and m["non_finite_steps"] == 0
    assert not set(m["train_speakers"]) & set(m["eval_speakers"])
    assert len(m["samples"]) == 4 and {"reference", "hypothesis_before", "hypothesis_after"} <= set(m["samples"][0])
    assert m["wer_delta_ci95"]["verdict"] in {"improved", "worse", "no significant change"}
    assert m["canary"]["wer_before"] is not None and m["canary"]["wer_after"] is not None
    assert m["data_source"]["train_split_used"] != m["data_source"]["train_split_requested"]  # no train-clean-100 here
    assert m["scale"]["seconds_to_first_step"] > 0 and m["scale"]["train_rows"] == 8
    stages = ["select_data", "load_model", "style_targets", "train_batches", "eval_sets", "train", "baseline", "tuned"]
    assert list(m["scale"]["stage_seconds"]) == stages and list(m["scale"]["stage_peak_rss_mb"]) == stages
    assert sum(m["scale"]["stage_seconds"].values()) <= m["wall_seconds"]
    peaks = list(m["scale"]["stage_peak_rss_mb"].values())
    assert peaks == sorted(peaks) and peaks[-1] <= m["peak_rss_mb"]  # peak RSS only grows, stage by stage
    assert m["data_source"]["kind"] in {"local_default", "local_dir"} and m["peak_rss_mb"] > 0
    assert m["train_audio_seconds"] > 0 and m["versions"]["torch"]
    assert (run_dir / "lora_adapter" / "adapter_model.safetensors").is_file()
    assert (run_dir / "processor" / "tokenizer.json").is_file()
    # the default policy is "styled": the base model's style carried onto LibriSpeech's UPPERCASE references
    assert m["target_policy"] == "styled" and m["target_style"]["policy"] == "styled"
    assert m["target_style"]["styled_rows"] == 8 and 0 < m["target_style"]["coverage"] <= 1
    c = m["canary"]
    assert c["verdict"] in {"pass", "fail"} and (c["verdict"] == "fail") == any("not measured" not in r for r in c["verdict_reasons"])
    assert c["orthographic_wer_before"] is not None and c["raw_insertions_after"] >= 0
    assert m["wer_delta_clustered_ci95"]["method"] == "speaker-clustered" and m["outputs_over_2x_ref"] >= 0


def test_the_terms_are_counted_in_the_eval_references_before_and_after(run_dir):
    from lora.core.text import normalize_for_scoring

    m = json.loads((run_dir / "real_metrics.json").read_text())
    t = m["terms"]
    words = [normalize_for_scoring(s["reference"]).split() for s in m["samples"]]
    said = {w: sum(ws.count(w) for ws in words) for w in ("the", "and", "kubernetes")}
    assert t["terms"] == 3 and t["utterances"] == 4 and t["said"] == sum(said.values()) > 0
    per = {r["term"]: r for r in t["per_term"]}
    assert {term: per[term]["said"] for term in ("the", "and", "Kubernetes")} == {
        "the": said["the"], "and": said["and"], "Kubernetes": 0}
    assert 0 <= t["recalled_before"] <= t["said"] and 0 <= t["recalled_after"] <= t["said"]
    assert t["term_error_rate_change_ci95"]["verdict"] in {"improved", "worse", "no significant change"}
    assert "terms        recall " in (run_dir / "stdout.txt").read_text()
    assert "Your terms" in (run_dir / "report.md").read_text()


def test_adapter_reloads_and_run_stt_writes_the_artifact(run_dir, tmp_path, speech_dir):
    manifest = tmp_path / "heldout.jsonl"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "build_manifest.py"), "--split", "test", "--samples", "2",
                    "--data-dir", str(speech_dir), "--output", str(manifest), "--quiet"], check=True, cwd=ROOT)
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert len(rows) == 2 and rows[0]["sampling_rate"] == 16000 and len(rows[0]["audio"]) > 16000
    artifact = tmp_path / "artifact_test.json"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "run_stt.py"), "--adapter-dir", str(run_dir / "lora_adapter"),
                           "--processor-dir", str(run_dir / "processor"), "--audio-list", str(manifest),
                           "--output", str(artifact), "--quiet"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(artifact.read_text())
    assert result["errors"] == [] and len(result["samples"]) == 2
    assert result["model_id_used"] == "moonshine-base-en"
    assert result["wer"] is not None and result["wer"] < 0.5  # real transcripts of real speech
    assert all(s["hypothesis"] for s in result["samples"])


def test_eval_on_the_adapters_own_training_rows_warns_and_records_it(run_dir, speech_dir, tmp_path, capsys):
    from lora.data.records import read_librispeech_dir
    from lora.scripts import evaluate

    m = json.loads((run_dir / "real_metrics.json").read_text())
    by_id = {u.id: u for u in read_librispeech_dir(speech_dir)}
    seen = [by_id[i] for i in m["train_ids"][:2] if i in by_id] + [by_id[m["eval_ids"][0]]]
    manifest = tmp_path / "mixed.jsonl"
    manifest.write_text("".join(json.dumps({"id": u.id, "audio": str(u.audio), "text": u.text, "speaker": u.speaker}) + "\n"
                                for u in seen))
    out = tmp_path / "eval.json"
    assert evaluate.main(["--adapter-dir", str(run_dir / "lora_adapter"), "--manifest", str(manifest),
                          "--output", str(out), "--quiet", "--terms", str(run_dir / "terms.txt"), "--compare-base"]) == 0
    result = json.loads(out.read_text())
    t = result["terms"]  # the base model beside the adapted one
    assert t["utterances"] == len(seen) and t["recalled_before"] is not None and t["recalled_after"] is not None
    assert result["trained_utterances"] == len(seen) - 1 >= 1
    assert result["trained_speakers"] == sorted({u.speaker for u in seen[:-1]})
    assert f"{len(seen) - 1} of {len(seen)} utterance(s) were in the adapter's training data" in capsys.readouterr().err
