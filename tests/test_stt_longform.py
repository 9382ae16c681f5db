"""`lora stt` on long real recordings (consecutive real utterances joined, written as FLAC): the VAD
long-form path, per-segment times in the artifact, SRT/VTT outputs, several files, the base model
alone. Tiny random models decode (the texts are noise; the structure is what is checked)."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import soundfile as sf

from joined_audio import joined_flac
from lora.results import SttArtifact, read_result
from lora.scripts import run_stt


def test_long_file_goes_through_vad_chunks_with_segment_times(tmp_path, speech_dir, tiny_moonshine, capsys):
    flac, text = joined_flac(speech_dir, tmp_path / "long.flac", 70)
    seconds = sf.info(str(flac)).duration
    out = tmp_path / "out" / "artifact.json"
    code = run_stt.main(["--model-id", str(tiny_moonshine), "--audio", str(flac), "--reference", text, "--output", str(out),
                         "--srt", str(tmp_path / "out" / "a.srt"), "--vtt", str(tmp_path / "out" / "a.vtt"), "--quiet"])
    assert code == 0
    artifact = read_result(out, SttArtifact)
    assert artifact.adapter_dir == "" and artifact.model_source == "local" and artifact.schema_version == 2
    assert len(artifact.samples) == 1 and artifact.samples[0]["seconds"] == pytest.approx(seconds, abs=0.01)
    segs = artifact.segments
    assert len(segs) >= 3 and artifact.samples[0]["segments"] == len(segs)
    assert all(s["id"] == "long" and 0 < s["end_s"] - s["start_s"] <= 30.0 for s in segs)
    assert all(a["end_s"] <= b["start_s"] for a, b in zip(segs, segs[1:]))  # in order, no overlap
    assert segs[-1]["end_s"] <= seconds + 1e-3
    assert artifact.samples[0]["wer"] is not None and artifact.wer == artifact.samples[0]["wer"]
    srt = (tmp_path / "out" / "a.srt").read_text()
    vtt = (tmp_path / "out" / "a.vtt").read_text()
    cue_texts = [block.split("\n", 2)[2] for block in srt.split("\n\n") if block.strip()]  # number, times, 1-2 text lines
    assert [w for t in cue_texts for w in t.split()] == [w for s in segs for w in s["text"].split()]
    assert len(cue_texts) >= sum(1 for s in segs if s["text"].strip())  # a chunk may be several cues (readable_cues)
    assert vtt.startswith("WEBVTT") and vtt.count(" --> ") == len(cue_texts)
    assert f"{len(segs)} segment(s)" in capsys.readouterr().out


def test_several_files_write_subtitles_beside_the_output(tmp_path, speech_dir, tiny_moonshine):
    long_flac, _ = joined_flac(speech_dir, tmp_path / "long.flac", 40)
    short = next((speech_dir / "jfk").rglob("*.flac"))
    out = tmp_path / "res" / "artifact.json"
    assert run_stt.main(["--model-id", str(tiny_moonshine), "--audio", str(long_flac), str(short), "--output", str(out),
                         "--srt", "ignored.srt", "--quiet"]) == 0
    artifact = json.loads(out.read_text())
    assert [s["id"] for s in artifact["samples"]] == ["long", short.stem]
    by_id = {}
    for s in artifact["segments"]:
        by_id.setdefault(s["id"], []).append(s)
    assert len(by_id["long"]) >= 2 and len(by_id[short.stem]) == 1  # <= 30 s: one segment spanning the clip
    assert by_id[short.stem][0]["start_s"] == 0.0
    assert (tmp_path / "res" / "long.srt").is_file() and (tmp_path / "res" / f"{short.stem}.srt").is_file()
    assert artifact["wer"] is None  # no references


def test_exported_dir_plugs_into_the_long_form_path(tmp_path, speech_dir, tiny_moonshine):
    """An export folder (as `lora export` writes it) of the tiny model, run by OnnxMoonshine."""
    from lora.families.moonshine.exports import export_onnx
    from lora.model_utils import ResolvedModel, load_base

    model, processor, _ = load_base(ResolvedModel("tiny", "tiny", "local", str(tiny_moonshine)))
    export_dir = tmp_path / "export"
    export_dir.mkdir()
    export_onnx(model, processor, export_dir)
    (export_dir / "export_report.json").write_text(json.dumps(
        {"format": "onnx", "model_id_requested": "tiny", "model_id_used": "tiny", "model_source": "local",
         "model_path": str(tiny_moonshine), "adapter_dir": "run/lora_adapter"}))
    flac, _ = joined_flac(speech_dir, tmp_path / "long.flac", 40)
    out = tmp_path / "a.json"
    assert run_stt.main(["--exported", str(export_dir), "--audio", str(flac), "--output", str(out), "--quiet"]) == 0
    artifact = json.loads(out.read_text())
    assert artifact["exported_dir"] == str(export_dir) and artifact["adapter_dir"] == "run/lora_adapter"
    assert len(artifact["segments"]) >= 2


@pytest.mark.slow
def test_an_hour_of_real_speech(tmp_path, speech_dir, tiny_moonshine):
    """60 min of real speech (the LJSpeech utterances cycled), VAD long-form end to end."""
    flac, _ = joined_flac(speech_dir, tmp_path / "hour.flac", 3600)
    out = tmp_path / "hour.json"
    started = time.perf_counter()
    assert run_stt.main(["--model-id", str(tiny_moonshine), "--audio", str(flac), "--output", str(out),
                         "--srt", str(tmp_path / "hour.srt"), "--batch-size", "16", "--quiet"]) == 0
    artifact = json.loads(out.read_text())
    segs = artifact["segments"]
    assert artifact["samples"][0]["seconds"] >= 3600
    assert len(segs) >= 3600 / 30 and max(s["end_s"] - s["start_s"] for s in segs) <= 30.0
    speech = sum(s["end_s"] - s["start_s"] for s in segs)
    assert speech / artifact["samples"][0]["seconds"] > 0.8  # LJSpeech is read speech: little silence
    print(f"hour: {len(segs)} segments in {time.perf_counter() - started:.0f} s")
    assert np.all(np.diff([s["start_s"] for s in segs]) > 0)


def test_eval_scores_long_clips_through_the_long_form_path(tmp_path, speech_dir, tiny_moonshine):
    from lora.results import EvalResult
    from lora.scripts import evaluate

    flac, text = joined_flac(speech_dir, tmp_path / "long.flac", 40)
    short = next((speech_dir / "jfk").rglob("*.flac"))
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"id": "long", "audio": str(flac), "text": text, "speaker": "9001"}) + "\n"
                        + json.dumps({"id": "jfk", "audio": str(short), "text": "And so, my fellow Americans, ask not what "
                                      "your country can do for you, ask what you can do for your country.", "speaker": "9101"}) + "\n")
    out = tmp_path / "eval" / "eval.json"
    assert evaluate.main(["--model-id", str(tiny_moonshine), "--manifest", str(manifest), "--output", str(out), "--quiet"]) == 0
    result = read_result(out, EvalResult)
    assert result.utterances == 1 and [s["id"] for s in result.samples] == ["jfk"]
    assert [x["id"] for x in result.long_form] == ["long"] and len(result.long_form[0]["segments"]) >= 2
    assert result.long_form_wer == result.long_form[0]["wer"] and result.long_form_wer is not None


def test_several_files_with_ids_naming_folders_write_subtitles_in_those_folders(tmp_path, speech_dir, tiny_moonshine):
    """`lora segment`'s manifest names clips `<speaker>/<recording>-0000`: `lora stt --audio-list clips/all.jsonl
    --srt x` ended in a traceback (ValueError: Invalid name 'narrator/part1-0000.srt')."""
    flacs = sorted((speech_dir / "jfk").rglob("*.flac"))[:1] + sorted((speech_dir / "test-clean").rglob("*.flac"))[:1]
    manifest = tmp_path / "all.jsonl"
    ids = ["narrator/part1-0000", "../reader/part2-0000"]  # a folder, and one that would climb out of the output's
    manifest.write_text("".join(json.dumps({"id": i, "audio": str(f)}) + "\n" for i, f in zip(ids, flacs)))
    out = tmp_path / "res" / "stt.json"
    assert run_stt.main(["--model-id", str(tiny_moonshine), "--audio-list", str(manifest), "--output", str(out),
                         "--srt", "x.srt", "--vtt", "x.vtt", "--quiet"]) == 0
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.[sv][rt][tt]")) == [
        "res/narrator/part1-0000.srt", "res/narrator/part1-0000.vtt", "res/reader/part2-0000.srt", "res/reader/part2-0000.vtt"]
