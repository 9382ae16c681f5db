"""`lora stt`, `lora segment`, `lora check`, `lora join` with bad inputs: exit 2, exactly one stderr line
`error: ...` naming what is wrong, no traceback, nothing written. Every case fails before a model loads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lora.core.cli import run_cli
from lora.runners import poc, real_small
from lora.scripts import (
    build_manifest,
    check,
    evaluate,
    export,
    import_model,
    join_utterances,
    merge,
    report,
    run_stt,
    scale_manifest,
    segment,
)


def _flac(speech_dir: Path) -> Path:
    return next((speech_dir / "ljspeech").rglob("*.flac"))


def _text(speech_dir: Path) -> str:
    """The real transcript of `_flac`."""
    flac = _flac(speech_dir)
    for line in next(flac.parent.glob("*.trans.txt")).read_text().splitlines():
        if line.split(" ", 1)[0] == flac.stem:
            return line.split(" ", 1)[1]
    raise AssertionError(f"no transcript for {flac}")


def _setup(tmp_path: Path, speech_dir: Path) -> dict:
    """Files the cases refer to by name: a real clip, a text file posing as audio, broken exports..."""
    (tmp_path / "notaudio.wav").write_text("this is not audio")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (tmp_path / "export_noreport").mkdir()
    (tmp_path / "export_badjson").mkdir()
    (tmp_path / "export_badjson" / "export_report.json").write_text("{not json")
    (tmp_path / "export_badformat").mkdir()
    (tmp_path / "export_badformat" / "export_report.json").write_text(json.dumps({"format": "tflite"}))
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "blank.txt").write_text("   \n")
    (tmp_path / "bad.srt").write_text("this is not a subtitle file\n")
    (tmp_path / "no_audio_dir").mkdir()
    (tmp_path / "no_audio_dir" / "readme.txt").write_text("no audio here\n")
    (tmp_path / "m.jsonl").write_text(json.dumps({"audio": str(_flac(speech_dir)), "text": _text(speech_dir)}) + "\n")
    (tmp_path / "clip.txt").write_text(_text(speech_dir))
    (tmp_path / "dangling").symlink_to(tmp_path / "unmounted_disk" / "runs")  # a link whose folder is not there
    (tmp_path / "notext.csv").write_text(f"audio,caption\n{_flac(speech_dir)},{_text(speech_dir)}\n")  # a column not known as text
    (tmp_path / "nocols.tsv").write_text(f"wav\tcaption\n{_flac(speech_dir)}\t{_text(speech_dir)}\n")  # neither column known
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)  # past Python's JSON recursion limit
    (tmp_path / "deep.jsonl").write_text(json.dumps({"audio": str(_flac(speech_dir)), "text": "x"}) + "\n" + "[" * 100_000 + "\n")
    for name, config, weights in (("ad_badjson", "{not json", None), ("ad_noweights", "{}", None),
                                  ("ad_truncated", "{}", b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\": {")):
        folder = tmp_path / name  # damaged adapter folders; the base they record is a local folder (nothing loads)
        folder.mkdir()
        (folder / "adapter_config.json").write_text(config)
        (folder / "lora_run.json").write_text(json.dumps({"model_id_used": str(tmp_path / "base")}))
        (tmp_path / "base").mkdir(exist_ok=True)
        (tmp_path / "base" / "config.json").write_text("{}")
        if weights is not None:
            (folder / "adapter_model.safetensors").write_bytes(weights)
    (tmp_path / "ad_moved").mkdir()  # an adapter copied to another machine, without the local base folder it records
    (tmp_path / "ad_moved" / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(tmp_path / "gone_base")}))
    (tmp_path / "ad_moved" / "lora_run.json").write_text(json.dumps({"model_id_used": str(tmp_path / "gone_base")}))
    (tmp_path / "not_metrics.json").write_text(json.dumps({"a": 1}))
    (tmp_path / "no_run").mkdir()
    (tmp_path / "dir.jsonl").mkdir()
    (tmp_path / "d.flac").mkdir()
    (tmp_path / "file_clips").mkdir()
    (tmp_path / "file_clips" / "clips").write_text("not a folder\n")
    (tmp_path / "not_export").mkdir()
    (tmp_path / "not_export" / "notes.txt").write_text("keep me\n")
    (tmp_path / "no_rate.jsonl").write_text(json.dumps({"audio": {"array": [0.0] * 8000}, "text": "x"}) + "\n")  # rate unsaid
    (tmp_path / "list.jsonl").write_text(json.dumps([{"audio": str(_flac(speech_dir)), "text": "x"}]) + "\n"
                                         + json.dumps({"audio": str(_flac(speech_dir)), "text": "x"}) + "\n")  # a list, then rows
    (tmp_path / "long_name.jsonl").write_text(json.dumps({"audio": "a" * 5000 + ".flac", "text": "x"}) + "\n")  # ENAMETOOLONG
    chapter = tmp_path / "ls_bad" / "test-clean" / "1" / "2"  # LibriSpeech layout, a text file posing as its audio
    chapter.mkdir(parents=True)
    (chapter / "1-2-0000.flac").write_text("this is not audio")
    (chapter / "1-2.trans.txt").write_text("1-2-0000 HELLO\n")
    return {"clip": str(_flac(speech_dir)), "tmp": str(tmp_path), "speech": str(speech_dir)}


# (command, argv with {clip}/{tmp} placeholders, text the error line must contain)
CASES = [
    # lora stt
    ("stt", ["--output", "{tmp}/o.json", "--model-id", "moonshine-base-en"], "nothing to transcribe"),
    ("stt", ["--audio", "{clip}", "--output", "{tmp}/o.json"], "no model: pass --model-id"),
    ("stt", ["--audio", "{clip}", "{clip}", "--reference", "HI", "--model-id", "x", "--output", "{tmp}/o.json"],
     "--reference is the transcript of one --audio file"),
    ("stt", ["--audio-list", "{tmp}/m.jsonl", "--reference", "HI", "--model-id", "x", "--output", "{tmp}/o.json"],
     "--reference is the transcript of one --audio file"),
    ("stt", ["--audio", "{clip}", "--exported", "{tmp}/export_noreport", "--adapter-dir", "{tmp}", "--output", "{tmp}/o.json"],
     "drop --adapter-dir"),
    ("stt", ["--audio", "{clip}", "--model-id", "x", "--batch-size", "0", "--output", "{tmp}/o.json"], "--batch-size 0: must be >= 1"),
    ("stt", ["--audio", "{clip}", "--model-id", "x", "--output", "{tmp}/clip.txt/o.json"], "clip.txt is a file, not a folder"),
    ("stt", ["--audio", "{clip}", "--adapter-dir", "{tmp}/ad_badjson", "--output", "{tmp}/o.json"], "adapter_config.json: not readable JSON"),
    ("stt", ["--audio", "{clip}", "--adapter-dir", "{tmp}/ad_noweights", "--output", "{tmp}/o.json"], "no adapter_model.safetensors"),
    ("stt", ["--audio", "{clip}", "--adapter-dir", "{tmp}/ad_truncated", "--output", "{tmp}/o.json"], "not a readable safetensors file"),
    ("stt", ["--audio", "{clip}", "--model-id", "x", "--output", "{tmp}"], "is a folder; pass a file name"),
    ("stt", ["--audio", "{clip}", "--model-id", "x", "--max-chunk-s", "45", "--output", "{tmp}/o.json"], "within 1..30 s"),
    ("stt", ["--audio", "{clip}", "--model-id", "x", "--max-chunk-s", "0", "--output", "{tmp}/o.json"], "within 1..30 s"),
    ("stt", ["--audio", "{clip}", "--model-id", "x", "--reference", "@{tmp}/gone.txt", "--output", "{tmp}/o.json"],
     "cannot read the --reference file"),
    ("stt", ["--audio", "{clip}", "--model-id", "x", "--reference", "@{tmp}/latin1.txt", "--output", "{tmp}/o.json"],
     "not UTF-8 text"),
    ("stt", ["--audio", "{tmp}/gone.flac", "--model-id", "x", "--output", "{tmp}/o.json"], "missing file"),
    ("stt", ["--audio", "{tmp}/notaudio.wav", "--model-id", "x", "--output", "{tmp}/o.json"], "cannot decode"),
    ("stt", ["--audio", "{tmp}/no_audio_dir", "--model-id", "x", "--output", "{tmp}/o.json"], "a folder with no audio files in it"),
    ("stt", ["--audio-list", "{tmp}/empty.jsonl", "--model-id", "x", "--output", "{tmp}/o.json"], "empty manifest"),
    ("stt", ["--audio", "{clip}", "--exported", "{tmp}/export_noreport", "--output", "{tmp}/o.json"],
     "export_report.json: missing"),
    ("stt", ["--audio", "{clip}", "--exported", "{tmp}/export_badjson", "--output", "{tmp}/o.json"], "unreadable export report"),
    ("stt", ["--audio", "{clip}", "--exported", "{tmp}/export_badformat", "--output", "{tmp}/o.json"], "unknown format 'tflite'"),
    ("stt", ["--audio", "{clip}", "--model-id", "./no-such-model", "--output", "{tmp}/o.json"], "is neither a directory"),
    ("stt", ["--audio", "{clip}", "--model-id", "{tmp}", "--output", "{tmp}/o.json"], "no config.json"),
    ("stt", ["--audio", "{clip}", "--adapter-dir", "{tmp}", "--output", "{tmp}/o.json"], "no adapter_config.json"),
    ("stt", ["--audio", "{clip}", "--adapter-dir", "{tmp}/ad_moved", "--output", "{tmp}/o.json"],
     "ad_moved: its base model {tmp}/gone_base (the folder it was trained on) is not on this machine; pass --model-id"),
    ("merge", ["--adapter-dir", "{tmp}/ad_moved", "--output", "{tmp}/merged"], "is not on this machine; pass --model-id"),
    ("stt", ["--audio", "{clip}", "--model-id", "x", "--output", "{tmp}/o.json", "--srt", "{tmp}/no_audio_dir"],
     "--srt {tmp}/no_audio_dir is a folder; pass a file name"),
    ("stt", ["--audio", "{clip}", "--model-id", "x", "--output", "{tmp}/o.json", "--vtt", "{tmp}/clip.txt/o.vtt"],
     "clip.txt is a file, not a folder"),
    ("stt", ["--audio", "{clip}", "--model-id", "x", "--output", "{tmp}/o.json", "--srt", "{tmp}/o.json"], "is also --output"),
    ("stt", ["--audio", "{clip}", "--model-id", "x", "--output", "{tmp}/o.json", "--srt", "{tmp}/s.txt", "--vtt", "{tmp}/s.txt"],
     "--srt and --vtt are the same file"),
    ("stt", ["--audio", "{clip}", "--model-id", "x", "--output", "{tmp}/o.json", "--processor-dir", "{tmp}/no_run"],
     "--processor-dir {tmp}/no_run: no processor_config.json or preprocessor_config.json in it"),
    ("stt", ["--audio", "{clip}", "--model-id", "x", "--output", "{tmp}/o.json", "--processor-dir", "{tmp}/nowhere"],
     "--processor-dir {tmp}/nowhere: no such folder"),
    # lora segment
    ("segment", ["--audio", "{tmp}/gone.flac", "--transcript", "HI", "--output", "{tmp}/s.jsonl"], "missing file"),
    ("segment", ["--audio", "{tmp}/notaudio.wav", "--transcript", "HI", "--output", "{tmp}/s.jsonl"], "cannot decode"),
    ("segment", ["--audio", "{clip}", "--transcript", "   ", "--output", "{tmp}/s.jsonl"], "--transcript is empty"),
    ("segment", ["--audio", "{clip}", "--transcript", "@{tmp}/blank.txt", "--output", "{tmp}/s.jsonl"], "--transcript is empty"),
    ("segment", ["--audio", "{clip}", "--transcript", "@{tmp}/gone.txt", "--output", "{tmp}/s.jsonl"],
     "cannot read the --transcript file"),
    ("segment", ["--audio", "{clip}", "--transcript", "@{tmp}/latin1.txt", "--output", "{tmp}/s.jsonl"], "not UTF-8 text"),
    ("segment", ["--audio", "{clip}", "--transcript", "HI", "--output", "{tmp}/s.csv"], "name it *.jsonl"),
    ("segment", ["--audio", "{clip}", "--transcript", "HI", "--output", "{tmp}/s.jsonl", "--max-cer", "-1"], "--max-cer -1: must be >= 0"),
    ("segment", ["--audio", "{clip}", "--transcript", "HI", "--output", "{tmp}/s.jsonl", "--max-chunk-s", "31"], "within 1..30 s"),
    ("segment", ["--audio", "{clip}", "--transcript", "HI", "--output", "{tmp}/s.jsonl", "--batch-size", "0"], "must be >= 1"),
    ("segment", ["--audio", "{clip}", "--output", "{tmp}/s.jsonl"], "pass --audio FILE --transcript TEXT|@FILE (one recording) or --manifest M"),
    ("segment", ["--manifest", "{tmp}/m.jsonl", "--audio", "{clip}", "--output", "{tmp}/s.jsonl"], "drop --audio/--transcript"),
    ("segment", ["--audio", "{clip}", "--transcript", "@{tmp}/bad.srt", "--output", "{tmp}/s.jsonl"],
     "not a readable SRT subtitle file"),
    ("segment", ["--audio", "{clip}", "--transcript", "@{tmp}/bad.srt", "--output", "{tmp}/s.jsonl", "--subtitle-offset", "2s"],
     "--subtitle-offset 2s: pass `auto` or seconds (e.g. -2.5)"),
    ("segment", ["--audio", "{clip}", "--transcript", "@{tmp}/bad.srt", "--output", "{tmp}/s.jsonl", "--subtitle-offset", "nan"],
     "--subtitle-offset nan: pass `auto` or seconds"),
    ("segment", ["--audio", "{clip}", "--transcript", "HI", "--output", "{tmp}/s.jsonl", "--subtitle-offset", "auto"],
     "--subtitle-offset shifts subtitles' cues; the transcript is not subtitles"),
    ("segment", ["--audio", "{clip}", "--transcript", "@{tmp}/clip.txt", "--output", "{tmp}/s.jsonl", "--model-id", "./no-such-model"],
     "is neither a directory"),
    ("segment", ["--audio", "{clip}", "--transcript", "HI", "--output", "{tmp}/dir.jsonl"], "--output {tmp}/dir.jsonl is a folder"),
    ("segment", ["--audio", "{clip}", "--transcript", "HI", "--output", "{tmp}/clip.txt/s.jsonl"], "clip.txt is a file, not a folder"),
    ("segment", ["--audio", "{clip}", "--transcript", "HI", "--output", "{tmp}/file_clips/s.jsonl"],
     "the clips go to {tmp}/file_clips/clips, which is a file"),
    # lora check
    ("check", ["{tmp}/m.jsonl", "--workers", "-1"], "--workers -1: must be >= 0"),
    ("check", ["{tmp}/m.jsonl", "--min-good", "-1"], "--min-good -1: must be >= 0"),
    ("check", ["{tmp}/m.jsonl", "--min-seconds", "-1"], "--min-seconds -1: must be >= 0"),
    ("check", ["{tmp}/m.jsonl", "--min-seconds", "nan"], "--min-seconds nan: must be a finite number"),
    ("check", ["{tmp}/m.jsonl", "--max-seconds", "inf"], "--max-seconds inf: must be a finite number"),
    ("check", ["{tmp}/m.jsonl", "--max-seconds", "-5"], "--max-seconds -5: must be >= 0"),
    ("check", ["{tmp}/m.jsonl", "--max-model-cer", "nan"], "--max-model-cer nan: must be a finite number"),
    ("check", ["{tmp}/m.jsonl", "--max-model-cer", "-0.5"], "--max-model-cer -0.5: must be >= 0"),
    ("check", ["{tmp}/m.jsonl", "--silent-rms", "nan"], "--silent-rms nan: must be >= 0"),
    ("check", ["{tmp}/deep.json"], "deep.json:1: JSON nested too deeply to read"),
    # lora train: values no range check catches, and a file where the run's folder goes
    ("train", ["--manifest", "{tmp}/m.jsonl", "--max-batch-seconds", "inf"], "--max-batch-seconds inf: must be a finite number"),
    ("train", ["--manifest", "{tmp}/m.jsonl", "--learning-rate", "nan"], "--learning-rate nan: must be a finite number"),
    ("train", ["--manifest", "{tmp}/m.jsonl", "--output-dir", "{tmp}/clip.txt"], "is a file, not a folder"),
    ("train", ["--manifest", "{tmp}/m.jsonl", "--output-dir", "{tmp}/dangling"],  # was "dangling: File exists"
     "--output-dir {tmp}/dangling is a link to {tmp}/unmounted_disk/runs, which does not exist; create that folder"),
    ("check", ["{tmp}/deep.jsonl"], "deep.jsonl:2: JSON nested too deeply to read"),
    ("check", ["{tmp}/long_name.jsonl"], "File name too long"),
    ("check", ["{tmp}/list.jsonl"], "list.jsonl:1: line 1 is a JSON array, but .jsonl needs one JSON object per line; "
                                    "rename the file to .json (a JSON list of rows) or write one object per line"),
    ("check", ["{tmp}/no_rate.jsonl"], 'no_rate.jsonl:1: no sampling rate (inline audio samples do not say their rate; '
                                       'add "sampling_rate": N (the rate in Hz) to the row'),
    ("check", ["{tmp}/m.jsonl", "--verify-with-model"], "--verify-with-model needs --model-id"),
    ("check", ["{tmp}/m.jsonl", "--verify-with-model", "--model-id", "x", "--no-hygiene"], "drop --no-hygiene"),
    ("check", ["{tmp}/m.jsonl", "--min-chars-per-second", "50"], "must be below --max-chars-per-second 40"),
    ("check", ["{tmp}/m.jsonl", "--silent-rms", "-0.1"], "--silent-rms -0.1: must be >= 0"),
    ("check", ["{tmp}/m.jsonl", "--clipped-warn-share", "0.5"], "must not exceed --clipped-quarantine-share"),
    ("check", ["{tmp}/m.jsonl", "--min-seconds", "5", "--max-seconds", "1"], "duration bounds 5..1 s are empty"),
    ("check", ["{tmp}/m.jsonl", "--model-id", "./no-such-model"], "is neither a directory"),
    ("check", ["{tmp}/m.jsonl", "--model-id", "{tmp}/clip.txt"], "clip.txt: a file, not a model folder"),
    ("segment", ["--audio", "{clip}", "--transcript", "@{tmp}/clip.txt", "--output", "{tmp}/s.jsonl", "--model-id", ""],
     "--model-id is empty; offline choices"),
    ("check", ["{tmp}/empty.jsonl"], "empty manifest"),
    ("segment", ["--audio", "{clip}", "--transcript", "HI", "--output", "{tmp}/s.jsonl"], "hygiene: chars_per_second"),
    ("check", ["{tmp}/m.jsonl", "--max-chars-per-second", "2"], "only 0 usable row(s) of 1"),
    ("check", ["{tmp}/m.jsonl", "--min-good", "2"], "only 1 usable row(s) of 1"),
    ("train", ["--manifest", "{tmp}/notext.csv", "--output-dir", "{tmp}/nt"],
     "notext.csv:2: no text (no column named text, transcript, sentence, transcription or normalized_text; "
     "columns found: audio, caption; rename the column that holds the transcripts)"),
    ("check", ["{tmp}/notext.csv", "--require-text"], "no text (no column named text, transcript, sentence, transcription or "
     "normalized_text; columns found: audio, caption; rename the column that holds the transcripts)"),
    ("check", ["{tmp}/nocols.tsv"], "nocols.tsv:1: no audio column (expected one of audio, path, audio_filepath, file, file_name; "
     "found wav, caption); rename the column that holds the audio paths, and the one that holds the transcripts (one of text, "),
    ("train", ["--manifest", "{tmp}/m.jsonl", "--weight-decay", "-1"], "--weight-decay must be >= 0"),
    ("train", ["--manifest", "{tmp}/m.jsonl", "--seed", "-1"], "--seed must be within 0..4294967295"),
    ("train", ["--manifest", "{tmp}/m.jsonl", "--seed", str(2**32)], "--seed must be within 0..4294967295"),
    ("train", ["--manifest", "{tmp}/m.jsonl", "--max-grad-norm", "-1"], "--max-grad-norm must be >= 0"),
    ("train", ["--manifest", "{tmp}/m.jsonl", "--lora-alpha", "0"], "--lora-alpha must be >= 1"),
    ("train", ["--manifest", "{tmp}/m.jsonl", "--join-clips", "0"], "--join-clips must be >= 1"),
    ("train", ["--manifest", "{tmp}/m.jsonl", "--canary-samples", "-1"], "--canary-samples must be >= 0"),
    ("train", ["--manifest", "{tmp}/m.jsonl", "--wer-batches", "-1"], "--wer-batches must be >= 0"),
    ("train", ["--manifest", "{tmp}/m.jsonl", "--checkpoint-every", "-1"], "--checkpoint-every must be >= 0"),
    ("train", ["--manifest", "{tmp}/m.jsonl", "--target-policy", "bogus"], "--target-policy must be one of styled, raw"),
    # lora poc: its own flags, and the ranges `lora train` checks
    ("poc", ["--steps", "0"], "lora poc --steps 0: must be >= 1"),
    ("poc", ["--samples", "-1"], "lora poc --samples -1: must be >= 1"),
    ("poc", ["--learning-rate", "-1"], "--learning-rate must be > 0"),
    # lora eval: flags checked before the rows are read or a model loads
    ("eval", ["--manifest", "{tmp}/m.jsonl", "--model-id", "x", "--batch-size", "0", "--output", "{tmp}/e/eval.json"],
     "--batch-size 0: must be >= 1"),
    ("eval", ["--manifest", "{tmp}/m.jsonl", "--model-id", "x", "--max-samples", "-1", "--output", "{tmp}/e/eval.json"],
     "--max-samples -1: must be >= 0"),
    ("eval", ["--data-dir", "{tmp}/no_audio_dir", "--model-id", "x", "--output", "{tmp}/e/eval.json"],
     "no LibriSpeech-layout subsets in it"),
    ("eval", ["--data-dir", "{tmp}/nowhere", "--model-id", "x", "--output", "{tmp}/e/eval.json"], "--data-dir {tmp}/nowhere: no such folder"),
    # lora report: a JSON that is no run's metrics, a folder with no run
    ("report", ["{tmp}/not_metrics.json", "--output-dir", "{tmp}/r"], "not a run's real_metrics.json nor a lora eval's eval.json"),
    ("report", ["{tmp}/no_run"], "a folder with no real_metrics.json or eval.json"),
    # lora export / import: an existing file or foreign folder at --output is never replaced
    ("export", ["--adapter-dir", "{tmp}/ad_noweights", "--format", "onnx", "--output", "{tmp}/clip.txt"],
     "exists and is a file, not an earlier export"),
    ("export", ["--adapter-dir", "{tmp}/ad_noweights", "--format", "onnx", "--output", "{tmp}/not_export"],
     "exists and is a folder without export_report.json"),
    ("export", ["--adapter-dir", "{tmp}/ad_noweights", "--format", "onnx", "--output", "{tmp}/ad_noweights"],
     "is the adapter folder itself"),
    ("export", ["--adapter-dir", "{tmp}/ad_noweights", "--format", "onnx", "--output", "{tmp}/x", "--max-samples", "-1"],
     "--max-samples -1: must be >= 0"),
    ("import", ["moonshine-base-en", "--output", "{tmp}/clip.txt"], "exists and is a file, not an earlier import"),
    ("import", ["moonshine-base-en", "--output", "{tmp}/not_export"], "exists and is a folder without lora_import.json"),
    # build-manifest / scale-manifest: a folder at --output is refused before any audio is read
    ("build-manifest", ["--data-dir", "{speech}", "--split", "ljspeech", "--samples", "1", "--output", "{tmp}/no_run"],
     "--output {tmp}/no_run is a folder; pass a file name"),
    ("scale-manifest", ["--hours", "0.01", "--speech-dir", "{speech}", "--output", "{tmp}/no_run"],
     "--output {tmp}/no_run is a folder; pass a file name"),
    ("scale-manifest", ["--hours", "0.01", "--speech-dir", "{speech}", "--output", "{tmp}/s.csv"],
     "{tmp}/s.csv: the manifest is JSONL; name it *.jsonl"),  # JSONL written as .csv was read back as a CSV
    ("scale-manifest", ["--hours", "1e9", "--speech-dir", "{speech}", "--output", "{tmp}/s.jsonl"],
     "--hours 1e+09: at most 10000 hours"),  # ran until memory ran out
    ("build-manifest", ["--data-dir", "{tmp}/ls_bad", "--split", "test", "--samples", "1", "--output", "{tmp}/b.jsonl"],
     "1-2.trans.txt:1: cannot decode {tmp}/ls_bad/test-clean/1/2/1-2-0000.flac (Format not recognised"),
    ("build-manifest", ["--data-dir", "{tmp}/nowhere", "--split", "test", "--samples", "1", "--output", "{tmp}/b.jsonl"],
     "{tmp}/nowhere: no such folder; pass --data-dir a folder holding LibriSpeech-layout splits"),  # was "available: none"
    # lora join
    ("join", ["--data-dir", "{speech}", "--subset", "nosuch", "--output", "{tmp}/j.flac"], "no subset 'nosuch'"),
    ("join", ["--data-dir", "{speech}", "--subset", "ljspeech", "--output", "{tmp}/j.wav"], "name it *.flac"),
    ("join", ["--data-dir", "{speech}", "--subset", "ljspeech", "--speaker", "0000", "--output", "{tmp}/j.flac"], "speaker '0000' not found"),
    ("join", ["--data-dir", "{speech}", "--subset", "ljspeech", "--seconds", "0", "--output", "{tmp}/j.flac"], "--seconds 0: must be above 0 and at most 14400"),
    ("join", ["--data-dir", "{speech}", "--subset", "ljspeech", "--output", "{tmp}/d.flac"], "--output {tmp}/d.flac is a folder"),
    ("join", ["--data-dir", "{speech}", "--subset", "ljspeech", "--output", "{tmp}/j.flac", "--transcript-out", "{tmp}/no_run"],
     "--transcript-out {tmp}/no_run is a folder"),
    ("join", ["--data-dir", "{speech}", "--subset", "ljspeech", "--output", "{tmp}/j.flac", "--transcript-out", "{tmp}/j.flac"],
     "is also --output"),
    ("check", ["{tmp}/m.jsonl", "--quarantine", "{tmp}/no_run"], "--quarantine {tmp}/no_run is a folder"),
    ("check", ["{tmp}/m.jsonl", "--output", "{tmp}/clip.txt"], "clip.txt is a file, not a folder"),
    ("join", ["--data-dir", "{tmp}/nowhere", "--subset", "ljspeech", "--output", "{tmp}/j.flac"], "no speech folder"),
]
MAINS = {"stt": run_stt.main, "segment": segment.main, "check": check.main, "join": join_utterances.main,
         "train": lambda argv: run_cli(real_small._main, argv),  # (its `main` may re-execute under jemalloc first)
         "poc": poc.main, "eval": evaluate.main, "report": report.main, "merge": merge.main, "export": export.main, "import": import_model.main,
         "build-manifest": build_manifest.main, "scale-manifest": scale_manifest.main}


@pytest.mark.parametrize("command, argv, expected", CASES, ids=[f"{c}-{i}" for i, (c, _, _) in enumerate(CASES)])
def test_bad_input_is_one_error_line(command, argv, expected, tmp_path, speech_dir, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    names = _setup(tmp_path, speech_dir)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    code = MAINS[command]([a.format(**names) for a in argv])
    err = capsys.readouterr().err.strip().splitlines()
    err = [line for line in err if not line.startswith("[lora]")]  # log lines are not errors
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert expected.format(**names) in err[0]
    assert "Traceback" not in err[0]
    written = sorted(p.name for p in tmp_path.rglob("*"))
    if command in ("stt", "segment", "join", "eval", "report", "export", "import", "merge", "build-manifest", "scale-manifest"):
        assert written == before  # nothing half-written


@pytest.mark.parametrize("argv, expected", [
    (["stt", "--audio", "/nonexistent/x.flac", "--model-id", "moonshine-base-en", "--output", "o.json"], "missing file"),
    (["segment", "--audio", "/nonexistent/x.flac", "--transcript", "HI", "--output", "s.jsonl"], "missing file"),
    (["check", "/nonexistent/m.jsonl"], "/nonexistent/m.jsonl"),
])
def test_cli_subprocess_one_line_no_traceback(argv, expected, tmp_path):
    lora = Path(sys.executable).with_name("lora")
    done = subprocess.run([str(lora), *argv], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    lines = [line for line in done.stderr.strip().splitlines() if not line.startswith("[lora]")]
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], done.stderr


def test_rows_over_30_s_are_refused_naming_lora_segment(tmp_path, speech_dir, capsys):
    """What training sees (the same preflight): a real 61 s recording is refused with the way out."""
    from lora.data.sources import read_manifest_rows

    assert join_utterances.main(["--data-dir", str(speech_dir), "--subset", "ljspeech", "--output",
                                 str(tmp_path / "long.flac"), "--quiet"]) == 0
    manifest = tmp_path / "long.jsonl"
    manifest.write_text(json.dumps({"audio": "long.flac", "text": (tmp_path / "long.txt").read_text().strip()}) + "\n")
    capsys.readouterr()
    assert check.main([str(manifest), "--quiet", "--require-text"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "too long" in err[0] and "`lora segment --audio FILE --transcript TEXT`" in err[0]
    with pytest.raises(Exception, match="lora segment") as info:
        read_manifest_rows(manifest)
    assert type(info.value).__name__ == "UserError"


def test_a_path_the_command_cannot_use_is_one_line(tmp_path, capsys):
    """An OSError naming a path (here: a folder wanted where a file is) is one line and exit 2, wherever it is
    raised; one without a path is a bug and keeps its traceback."""
    (tmp_path / "a_file").write_text("x")

    def makes_a_folder(argv):
        (tmp_path / "a_file" / "sub").mkdir(parents=True)

    assert run_cli(makes_a_folder, []) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {tmp_path / 'a_file'}") and "check that path" in err[0], err

    def fails_without_a_path(argv):
        raise OSError("no path here")

    with pytest.raises(OSError, match="no path here"):
        run_cli(fails_without_a_path, [])


def test_resume_without_a_checkpoint_says_it_starts_over(tmp_path, caplog):
    """`--resume` where no checkpoint was written (a restart loop passes it every time): a warning, step 0."""
    from lora.training import resume_dir
    from lora.training_config import TrainConfig

    with caplog.at_level("WARNING", logger="lora"):
        assert resume_dir(TrainConfig(resume=True), tmp_path) is None
    assert [r.getMessage() for r in caplog.records] == [f"warning: --resume: no checkpoint/state.json in {tmp_path}; "
                                                        "starting from step 0"]


def test_target_modules_the_model_lacks_is_one_line(tiny_moonshine):
    """--target-modules naming no module of the model: PEFT's ValueError becomes a UserError naming the flag."""
    from lora.core.errors import UserError
    from lora.model_utils import load_base, resolve_model_id
    from lora.pipeline import attach
    from lora.training_config import TrainConfig

    model, _, family = load_base(resolve_model_id(str(tiny_moonshine)))
    with pytest.raises(UserError, match=r"^--target-modules nosuch_proj: .*not found.*\(the moonshine defaults: "
                                        r"q_proj,k_proj,v_proj,o_proj\)"):
        attach(model, TrainConfig(target_modules="nosuch_proj"), family)
