"""run_stt: manifest parsing (arrays, paths, plain path lists), text normalisation, clear errors."""

import json
import shutil
import subprocess
import sys

import numpy as np

from lora.core.text import normalize_for_scoring
from lora.data.manifest import read_source
from lora.data.records import Utterance
from lora.scripts.run_stt import build_parser, check_args, leakage_warnings, main


def test_manifest_with_inline_audio_and_with_paths(tmp_path, speech_dir):
    flac = next((speech_dir / "test-clean").rglob("*.flac"))
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(
        json.dumps({"id": "a", "speaker": "s1", "text": "HELLO", "sampling_rate": 16000, "audio": [0.0, 0.1, -0.1]}) + "\n"
        + json.dumps({"id": "b", "speaker": "s2", "text": "WORLD", "audio": str(flac)}) + "\n")
    rows = read_source(manifest).rows
    assert [r.id for r in rows] == ["a", "b"]
    assert rows[0].samples().dtype == np.float32 and len(rows[0].samples()) == 3
    assert rows[1].samples().std() > 1e-3


def test_plain_path_list_has_no_references(tmp_path, speech_dir):
    flac = next((speech_dir / "test-clean").rglob("*.flac"))
    listing = tmp_path / "list.txt"
    listing.write_text(f"{flac}\n")
    rows = read_source(listing).rows
    assert len(rows) == 1 and rows[0].text == "" and rows[0].extra.get("has_text") is False


def test_scoring_normalisation():
    assert normalize_for_scoring("Mr. Quilter's 2 dogs.") == normalize_for_scoring("MISTER QUILTER'S TWO DOGS")


def test_leakage_warnings_name_utterances_and_speakers():
    rows = [Utterance("u1", "s1", "x", [0.0]), Utterance("u9", "s9", "y", [0.0])]
    warnings = leakage_warnings(rows, {"train_ids": ["u1"], "train_speakers": ["s1"]})
    assert warnings == ["1 of 2 utterance(s) were in the adapter's training data (u1): their WER is not held-out",
                        "speaker(s) s1 were in the adapter's training data: WER is not held-out"]
    assert not leakage_warnings(rows, {})
    many = [Utterance(f"u{i}", "s", "x", [0.0]) for i in range(10)]
    assert leakage_warnings(many, {"train_ids": [u.id for u in many]})[0].startswith(
        "10 of 10 utterance(s) were in the adapter's training data (u0, u1, u2, ...)")  # one line, not ten


def test_empty_manifest_exits_2_with_one_line(tmp_path, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    code = main(["--adapter-dir", str(adapter), "--audio-list", str(empty), "--output", str(tmp_path / "o.json")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error:") and "empty" in err[0]
    assert not (tmp_path / "o.json").exists()


def test_an_output_that_is_one_of_the_inputs_is_refused_and_the_input_kept(tmp_path, speech_dir, capsys):
    """`lora stt talk.flac --output talk.flac` (a tab completion too far) wrote the JSON artifact over the recording;
    `--audio-list m.jsonl --output m.jsonl` over the manifest, `--srt` over the audio the same."""
    clip = tmp_path / "talk.flac"
    shutil.copy(sorted((speech_dir / "jfk").rglob("*.flac"))[0], clip)
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"audio": clip.name, "text": "and so"}) + "\n")
    before = {clip: clip.read_bytes(), manifest: manifest.read_bytes()}
    no_model = str(tmp_path / "no_model")  # the refusal comes before a model loads
    for argv, flag, path in (([str(clip), "--output", str(clip)], "--output", clip),
                             (["--audio-list", str(manifest), "--output", str(manifest)], "--output", manifest),
                             ([str(clip), "--output", str(tmp_path / "a.json"), "--srt", str(clip)], "--srt", clip)):
        assert main([*argv, "--model-id", no_model, "--quiet"]) == 2
        assert capsys.readouterr().err.strip().splitlines() == [
            f"error: {flag} {path} is also an input of this command ({path}), which the results would replace; pass "
            "another file name"]
    assert {p: p.read_bytes() for p in before} == before and not (tmp_path / "a.json").exists()


def test_subtitles_of_several_files_never_replace_a_recordings_own_subtitles(tmp_path, speech_dir, capsys):
    """`lora stt talks/ --output talks/stt.json --srt x`: one cue file per recording beside --output replaced
    talks/part1.srt, the recording's own (human) subtitles that `lora segment` times clips by."""
    clip = sorted((speech_dir / "jfk").rglob("*.flac"))[0]
    talks = tmp_path / "talks"
    talks.mkdir()
    for name in ("part1", "part2"):
        shutil.copy(clip, talks / f"{name}.flac")
    (talks / "part1.srt").write_text("1\n00:00:00,000 --> 00:00:02,000\nAnd so, my fellow Americans\n")
    before = (talks / "part1.srt").read_text()
    assert main([str(talks), "--model-id", str(tmp_path / "no_model"), "--output", str(talks / "stt.json"), "--srt", "x",
                 "--quiet"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: --srt: {talks / 'part1.srt'} is the subtitle file of {talks / 'part1.flac'}, which this command's cues "
        "(one file per recording beside --output) would replace; write --output into another folder"]
    assert (talks / "part1.srt").read_text() == before and not (talks / "stt.json").exists()


def test_unreachable_hub_model_exits_2_without_traceback(tmp_path, speech_dir):
    """Network mocked off via HF_HUB_OFFLINE: the seed's hub id must fail clearly, not fall back."""
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    flac = next((speech_dir / "test-clean").rglob("*.flac"))
    listing = tmp_path / "list.txt"
    listing.write_text(f"{flac}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "lora.scripts.run_stt", "--model-id", "UsefulSensors/moonshine-tiny",
         "--adapter-dir", str(adapter), "--audio-list", str(listing), "--output", str(tmp_path / "o.json")],
        capture_output=True, text=True, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: cannot reach the Hugging Face hub") and "moonshine-base-en" in last


def test_help_does_not_import_torch():
    code = ("import sys\nfrom lora.scripts import run_stt\ntry:\n    run_stt.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "from lora.scripts import build_manifest, evaluate, check\nfrom lora.runners import real_small, poc, digits\n"
            "assert 'torch' not in sys.modules, 'torch imported'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: lora stt")


def test_stt_on_a_folder_transcribes_every_audio_file_in_it(speech_dir, tiny_moonshine, tmp_path):
    import shutil as sh

    from lora.scripts import run_stt

    real_clip = sorted((speech_dir / "jfk").rglob("*.flac"))[0]

    folder = tmp_path / "memos"
    (folder / "monday").mkdir(parents=True)
    sh.copy(real_clip, folder / "a.flac")
    sh.copy(real_clip, folder / "monday" / "b.flac")
    (folder / "notes.txt").write_text("not audio")
    out = tmp_path / "stt.json"
    assert run_stt.main([str(folder), "--model-id", str(tiny_moonshine), "--output", str(out), "--quiet"]) == 0
    assert sorted(s["id"] for s in json.loads(out.read_text())["samples"]) == ["a", "b"]
    (tmp_path / "empty").mkdir()
    assert run_stt.main([str(tmp_path / "empty"), "--model-id", str(tiny_moonshine), "--output", str(out), "--quiet"]) == 2


def test_stt_transcribes_a_clipped_recording_with_a_warning(speech_dir, tiny_moonshine, tmp_path, capsys):
    """Training quarantines a recording whose samples are mostly flat tops; stt transcribes it and says so."""
    import numpy as np
    import soundfile as sf

    from lora.scripts import run_stt

    x, rate = sf.read(str(sorted((speech_dir / "jfk").rglob("*.flac"))[0]), dtype="float32")
    clipped = tmp_path / "clipped.wav"
    sf.write(str(clipped), np.clip(x * 60, -1, 1), rate, subtype="PCM_16")
    assert np.mean(np.abs(sf.read(str(clipped))[0]) >= 0.999) > 0.2  # past training's quarantine share
    out = tmp_path / "stt.json"
    assert run_stt.main(["--audio", str(clipped), "--model-id", str(tiny_moonshine), "--output", str(out), "--quiet"]) == 0
    result = json.loads(out.read_text())
    assert [s["id"] for s in result["samples"]] == ["clipped"] and result["errors"] == []
    err = capsys.readouterr().err
    assert f"warning: {clipped}: " in err and "transcribed all the same" in err


def test_stt_transcribes_a_clip_whose_reference_is_too_short_with_a_warning(speech_dir, tiny_moonshine, tmp_path, capsys):
    """`lora stt --audio-list` on a manifest whose reference for a clip is a word for 10 s of speech: the clip was
    dropped untranscribed (chars_per_second quarantine, as in training). The reference is only what the output is
    scored against: the clip is transcribed, and a warning says the reference looks short."""
    from lora.scripts import run_stt

    clip = sorted((speech_dir / "jfk").rglob("*.flac"))[0]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"id": "jfk", "audio": str(clip), "text": "Americans"}) + "\n")
    out = tmp_path / "stt.json"
    assert run_stt.main(["--audio-list", str(manifest), "--model-id", str(tiny_moonshine), "--output", str(out), "--quiet"]) == 0
    result = json.loads(out.read_text())
    assert [s["id"] for s in result["samples"]] == ["jfk"] and result["errors"] == []
    err = capsys.readouterr().err
    assert f"warning: {manifest}:1: " in err and "the transcript is too short for the audio" in err
    assert "transcribed all the same" in err


def test_stt_transcribes_dc_offset_and_very_quiet_speech_and_refuses_amplified_silence(speech_dir, tiny_moonshine, tmp_path,
                                                                                        capsys):
    """A real clip with a +0.3 DC offset, or scaled by 1e-3 (speech level ~1e-4, under training's `silent` floor), was
    refused ("DC offset", "holds no audible speech") though both models read either as well as the original once the
    offset is removed / the gain applied: stt now decodes the conditioned samples and says what it did. The quiet clip
    reaches the model at a normal level; the same clip's first 0.25 s (room tone before the first word) made as quiet
    holds no speech once amplified: refused, exit 2, nothing written."""
    import soundfile as sf

    from lora.scripts import run_stt

    x, rate = sf.read(str(sorted((speech_dir / "jfk").rglob("*.flac"))[0]), dtype="float64")
    dc, quiet = tmp_path / "dc.wav", tmp_path / "quiet.wav"
    sf.write(str(dc), np.clip(x + 0.3, -1, 1), rate, subtype="PCM_16")
    sf.write(str(quiet), x * 1e-3, rate, subtype="FLOAT")
    samples, note = run_stt.conditioned(np.asarray(sf.read(str(dc), dtype="float32")[0]), run_stt.VadOptions())
    assert "DC offset +0.300 removed" in note and abs(float(samples.mean())) < 1e-6
    samples, note = run_stt.conditioned(np.asarray(sf.read(str(quiet), dtype="float32")[0]), run_stt.VadOptions())
    assert "very quiet" in note and np.corrcoef(samples, x)[0, 1] > 0.9999
    assert run_stt.speech_level(samples, rate) >= run_stt.TRAINING_HYGIENE.silent_rms
    out = tmp_path / "stt.json"
    assert run_stt.main([str(dc), str(quiet), "--model-id", str(tiny_moonshine), "--output", str(out), "--quiet"]) == 0
    result = json.loads(out.read_text())
    assert sorted(s["id"] for s in result["samples"]) == ["dc", "quiet"] and result["errors"] == []
    err = capsys.readouterr().err
    assert f"warning: {dc}: DC offset" in err and f"warning: {quiet}: very quiet" in err
    pause = tmp_path / "pause.wav"
    sf.write(str(pause), x[:4000] * 1e-2, rate, subtype="FLOAT")  # the room tone before the first word, 40 dB down
    assert run_stt.main([str(pause), "--model-id", str(tiny_moonshine), "--output", str(tmp_path / "p.json"), "--quiet"]) == 2
    assert not (tmp_path / "p.json").exists()
    assert "no speech heard" in capsys.readouterr().err


def test_a_short_max_chunk_is_warned_of(caplog):
    """`--max-chunk-s 1` is allowed but cuts inside words: said once, before anything loads."""
    import logging

    with caplog.at_level(logging.WARNING, logger="lora"):
        check_args(build_parser().parse_args(["--audio", "a.flac", "--model-id", "m", "--output", "o.json", "--max-chunk-s", "1"]))
        check_args(build_parser().parse_args(["--audio", "a.flac", "--model-id", "m", "--output", "o.json", "--max-chunk-s", "15"]))
    assert [r.getMessage()[:40] for r in caplog.records] == ["warning: --max-chunk-s 1: speech longer "]
