"""Workflows across commands and environments: paths with `~`, a run resumed from another folder or over
changed data, a read-only cache or output folder, long recordings only. Tiny models, real clips."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
from pathlib import Path

import pytest
import soundfile as sf

from lora.checkpoint import check_resumable, resume_config
from lora.core.audio import SAMPLE_RATE
from lora.core.cli import run_cli
from lora.core.errors import UserError
from lora.core.outputs import check_output_file, write_json_atomic
from lora.data.long_recordings import join_utterances, speaker_utterances
from lora.data.records import read_librispeech_dir
from lora.runners import real_small
from lora.scripts import evaluate, run_stt


def _clips(speech_dir: Path, folder: Path, speakers: dict[str, int]) -> Path:
    """A manifest of real clips copied into `folder/audio`, audio paths relative to the manifest."""
    rows = [json.loads(line) for line in (speech_dir / "manifest.jsonl").read_text().splitlines()]
    (folder / "audio").mkdir(parents=True)
    lines = []
    for speaker, n in speakers.items():
        for r in [r for r in rows if r["speaker"] == speaker and r["seconds"] < 12][:n]:
            name = Path(r["path"]).name
            shutil.copy(speech_dir / r["path"], folder / "audio" / name)
            lines.append(json.dumps({"audio": f"audio/{name}", "text": r["text"], "speaker": speaker}))
    manifest = folder / "m.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def test_a_value_starting_with_tilde_is_the_home_folder_wherever_the_shell_left_it():
    seen = []
    argv = ["--output=~/o.json", "~/a.flac", "--adapter-dir", "~/run/lora_adapter", "--model-id", "~", "--reference", "a~b",
            "--x=a~b"]
    assert run_cli(seen.append, argv) == 0
    home = os.path.expanduser("~")
    assert seen == [[f"--output={home}/o.json", f"{home}/a.flac", "--adapter-dir", f"{home}/run/lora_adapter",
                     "--model-id", home, "--reference", "a~b", "--x=a~b"]]


def test_stt_output_with_tilde_goes_to_the_home_folder_not_a_folder_named_tilde(speech_dir, tiny_moonshine, tmp_path,
                                                                                  monkeypatch):
    """`--output=~/...` (the shell leaves it): it was checked as the home folder's path and written into ./~/."""
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir(), work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    clip = sorted((speech_dir / "jfk").rglob("*.flac"))[0]
    assert run_stt.main([str(clip), "--model-id", str(tiny_moonshine), "--output=~/out/stt.json", "--srt=~/out/stt.srt",
                         "--quiet"]) == 0
    assert (home / "out" / "stt.json").is_file() and (home / "out" / "stt.srt").is_file()
    assert not (work / "~").exists()


def test_an_output_folder_that_cannot_be_written_is_refused_before_any_work(tmp_path, monkeypatch):
    """Found after an hour of transcription, it lost the hour. (As root a chmod does not stop writes, so there
    the read-only answer is given as a read-only mount gives it: `os.access` says no.)"""
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    if os.access(locked, os.W_OK):
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == locked else real_access(p, mode))
    try:
        with pytest.raises(UserError, match=rf"^--srt {locked}/new/a.srt: cannot write in {locked} \(read-only or no "
                                            r"permission\); pick another path$"):
            check_output_file(locked / "new" / "a.srt", "--srt")
        check_output_file(tmp_path / "new" / "a.srt", "--srt")  # a folder still to make, in one that can be written
    finally:
        locked.chmod(0o755)


def test_a_disk_that_fills_while_a_result_is_written_is_one_line_and_the_earlier_result_stays(tmp_path, monkeypatch,
                                                                                               capsys):
    """`lora stt --output` on a full disk: Python's write names no file, so the CLI's one-line answer re-raised it as a
    traceback (`OSError: [Errno 28] No space left on device` from write_bytes_atomic)."""
    out = tmp_path / "stt.json"
    write_json_atomic(out, {"earlier": True})

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as a write() to a full disk raises it

    monkeypatch.setattr(os, "fsync", full)
    assert run_cli(lambda argv: write_json_atomic(out, {"new": True}), []) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {out}: No space left on device; check that path (a folder where a folder is expected, "
                   "permissions, free space)"]
    assert json.loads(out.read_text()) == {"earlier": True} and [p.name for p in tmp_path.iterdir()] == ["stt.json"]


def test_a_cache_folder_that_cannot_be_written_is_skipped_with_a_warning(speech_dir, tmp_path, monkeypatch, caplog):
    """A `$LORA_HOME` shared read-only (models imported once for everyone): the probe and base-transcript caches
    are skipped, said once each; before, `lora stt` ended in sqlite3's traceback and `lora train` at its styling."""
    from lora.data.preflight import check_rows
    from lora.data.records import Utterance
    from lora.styled_targets import TranscriptCache

    (tmp_path / "a_file").write_text("a file where the cache folder should be\n")
    monkeypatch.setenv("LORA_PREFLIGHT_CACHE", str(tmp_path / "a_file" / "preflight_cache.sqlite"))
    clip = sorted((speech_dir / "jfk").rglob("*.flac"))[0]
    with caplog.at_level(logging.WARNING, logger="lora"):
        report = check_rows([Utterance("jfk", "9101", "and so my fellow americans", str(clip))], [], quiet=True)
        cache = TranscriptCache("some-model", root=tmp_path / "a_file")
        cache.put("key", "Text.")
        cache.save()
    assert len(report.good) == 1
    warnings = [r.getMessage() for r in caplog.records]
    assert any("cannot use the audio-probe cache" in w and "probing without it" in w for w in warnings), warnings
    assert any("cannot write the base-transcript cache" in w and "kept for this run only" in w for w in warnings), warnings
    assert cache.get("key") == "Text."


def test_resume_compares_paths_as_the_paths_they_name_and_refuses_other_rows(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "m.jsonl").write_text("{}\n")
    (tmp_path / "runs").mkdir()
    monkeypatch.chdir(tmp_path)
    rows = {"count": 7, "fingerprint": "aed652700a53b4e0"}
    state = {"config": resume_config({"manifest": "data/m.jsonl", "model_id": "moonshine-base-en", "seed": 42}), "rows": rows}
    monkeypatch.chdir(tmp_path / "runs")  # the same run, resumed from its runs/ folder
    check_resumable(state, {"manifest": "../data/m.jsonl", "model_id": "moonshine-base-en", "seed": 42}, rows)
    check_resumable({"config": {"manifest": "../data/m.jsonl"}}, {"manifest": "../data/m.jsonl"}, rows)  # older checkpoint
    with pytest.raises(UserError, match=r"option\(s\) manifest differ"):
        check_resumable(state, {"manifest": "other.jsonl", "model_id": "moonshine-base-en", "seed": 42}, rows)
    with pytest.raises(UserError, match=r"^cannot resume: the training rows differ from the checkpointed run's \(7 rows "
                                        r"then, 6 now: the data changed since\)"):
        check_resumable(state, {"manifest": "../data/m.jsonl", "model_id": "moonshine-base-en", "seed": 42},
                        {"count": 6, "fingerprint": "0e1c5b0d1f2a3b4c"})


def test_train_resumed_from_another_folder_goes_on_and_over_changed_data_is_refused(speech_dir, tiny_moonshine, tmp_path,
                                                                                    monkeypatch, capsys, caplog):
    """Relative --manifest/--output-dir and manifest-relative audio, as a user types them in two folders."""
    _clips(speech_dir, tmp_path / "data", {"1089": 3, "3752": 2, "9001": 2})
    common = ["--model-id", str(tiny_moonshine), "--max-steps", "2", "--checkpoint-every", "1", "--canary-samples", "1",
              "--batch-size", "2", "--num-workers", "0", "--target-policy", "raw", "--report-to", "none", "--quiet",
              "--eval-speakers", "9001"]  # training rows: the 5 clips of 1089 and 3752
    monkeypatch.chdir(tmp_path)
    assert run_cli(real_small._main, ["--manifest", "data/m.jsonl", "--output-dir", "runs/a", *common]) == 0
    monkeypatch.chdir(tmp_path / "runs")
    with caplog.at_level(logging.WARNING, logger="lora"):
        assert run_cli(real_small._main, ["--manifest", "../data/m.jsonl", "--output-dir", "a", "--resume", *common]) == 0
    assert not [r for r in caplog.records if "starting from step 0" in r.getMessage()]
    manifest = tmp_path / "data" / "m.jsonl"
    manifest.write_text("".join(manifest.read_text().splitlines(keepends=True)[1:]))  # one training row fewer
    capsys.readouterr()
    assert run_cli(real_small._main, ["--manifest", "../data/m.jsonl", "--output-dir", "a", "--resume", *common]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: cannot resume: the training rows differ from the checkpointed run's (5 rows then, "
                              "4 now"), err


def test_resume_of_a_finished_run_does_nothing_and_a_longer_one_trains_on(speech_dir, tiny_moonshine, tmp_path, capsys):
    """A restart loop's --resume after the run ended: no step trained again, no result rewritten; fewer steps than
    it ran are refused; more steps go on from its last checkpoint (the one marked finished)."""
    manifest = _clips(speech_dir, tmp_path / "data", {"1089": 3, "3752": 2, "9001": 2})
    out = tmp_path / "run"
    common = ["--model-id", str(tiny_moonshine), "--manifest", str(manifest), "--output-dir", str(out), "--checkpoint-every",
              "1", "--canary-samples", "1", "--batch-size", "2", "--num-workers", "0", "--target-policy", "raw",
              "--report-to", "none", "--quiet", "--eval-speakers", "9001"]
    assert run_cli(real_small._main, [*common, "--max-steps", "2"]) == 0
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    assert state["step"] == 2 and state["finished"] is True
    # the lock is the new run's; preflight writes the quarantine again (the same rows)
    written = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.is_file() and p.name not in (".lock", "quarantine.jsonl")}
    quarantined = (out / "quarantine.jsonl").read_text()
    capsys.readouterr()
    assert run_cli(real_small._main, [*common, "--max-steps", "2", "--resume"]) == 0
    said = capsys.readouterr().err
    assert f"--resume: {out} holds this run, finished at step 2; nothing to do" in said, said
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.is_file() and p.name in written} == written
    assert (out / "quarantine.jsonl").read_text() == quarantined and "real_metrics.json" in written
    # killed while measuring (the finished checkpoint there, no results yet): measured again, not trained again
    (out / "real_metrics.json").unlink()
    checkpoint_written = (out / "checkpoint" / "state.json").stat().st_mtime_ns
    assert run_cli(real_small._main, [*common, "--max-steps", "2", "--resume"]) == 0
    assert [r["step"] for r in json.loads((out / "real_metrics.json").read_text())["train_loss_history"]] == [1, 2]
    assert (out / "checkpoint" / "state.json").stat().st_mtime_ns == checkpoint_written
    with pytest.raises(UserError, match=r"^cannot resume: the checkpoint is of step 2, past --max-steps 1"):
        real_small._main([*common, "--max-steps", "1", "--resume"])
    assert run_cli(real_small._main, [*common, "--max-steps", "3", "--resume"]) == 0
    history = json.loads((out / "real_metrics.json").read_text())["train_loss_history"]
    assert [r["step"] for r in history] == [1, 2, 3]
    assert json.loads((out / "checkpoint" / "state.json").read_text())["step"] == 3


def test_a_new_run_over_an_earlier_runs_checkpoint_says_so(tmp_path, caplog):
    """A forgotten --resume: the earlier checkpoint is replaced at this run's first one; said at the start."""
    from lora.training import resume_dir
    from lora.training_config import TrainConfig

    (tmp_path / "checkpoint").mkdir()
    (tmp_path / "checkpoint" / "state.json").write_text(json.dumps({"step": 9000}))
    with caplog.at_level(logging.WARNING, logger="lora"):
        assert resume_dir(TrainConfig(resume=False), tmp_path) is None
    assert [r.getMessage() for r in caplog.records] == [
        f"warning: {tmp_path / 'checkpoint'} holds the checkpoint of step 9000 of an earlier run; starting from step 0 as "
        "asked (run with --resume to go on from it instead)"]


def test_eval_of_long_recordings_only_is_refused_before_a_model_loads(speech_dir, tmp_path, capsys):
    from joined_audio import joined_flac

    flac, text = joined_flac(speech_dir, tmp_path / "long.flac", 35.0)
    (tmp_path / "long.jsonl").write_text(json.dumps({"audio": flac.name, "text": text, "speaker": "9001"}) + "\n")
    # a model that does not exist: the refusal must come first
    assert evaluate.main(["--manifest", str(tmp_path / "long.jsonl"), "--model-id", str(tmp_path / "no_model"),
                          "--output", str(tmp_path / "e" / "eval.json"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "every clip is over 30 s" in err[0] and "lora stt" in err[0], err


def test_an_eval_written_into_a_training_runs_folder_is_refused_before_it_replaces_the_runs_report(tmp_path, capsys):
    """`lora eval --adapter-dir run/lora_adapter --output run/eval.json`: the eval's report.md/html, plot and
    quarantine.jsonl replaced the run's, unsaid (the run's list of its bad training rows was lost)."""
    run = tmp_path / "run"
    run.mkdir()
    kept = {"real_metrics.json": "{}", "report.md": "the run's report", "quarantine.jsonl": '{"id": "bad row"}\n'}
    for name, text in kept.items():
        (run / name).write_text(text)
    # a model that does not exist: the refusal must come first
    assert evaluate.main(["--manifest", str(tmp_path / "m.jsonl"), "--model-id", str(tmp_path / "no_model"),
                          "--output", str(run / "eval.json"), "--quiet"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: --output {run}/eval.json: {run} holds a training run (real_metrics.json), whose report.md/html and "
        f"quarantine.jsonl this eval's would replace; write it into a folder of its own (e.g. {run}/eval/eval.json)"]
    assert {p.name: p.read_text() for p in run.iterdir()} == kept


def test_an_eval_output_that_is_its_manifest_is_refused_before_it_replaces_it(tmp_path, capsys):
    """`lora eval --manifest m.jsonl --output m.jsonl`: eval.json was written over the manifest, unsaid."""
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"audio": "a.flac", "text": "hi", "speaker": "1"}) + "\n")
    assert evaluate.main(["--manifest", str(manifest), "--model-id", str(tmp_path / "no_model"), "--output", str(manifest),
                          "--quiet"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: --output {manifest} is also an input of this command ({manifest}), which the results would replace; "
        "pass another file name"]
    assert manifest.read_text() == json.dumps({"audio": "a.flac", "text": "hi", "speaker": "1"}) + "\n"


def test_one_named_speaker_list_takes_every_other_speaker_for_the_other_side():
    """`--eval-speakers 9001` alone (as the few-eval-rows warning suggests) was "no utterances found for train speakers []"."""
    from lora.data.records import Utterance
    from lora.data.selection import split_by_named_speakers

    rows = [Utterance(f"{s}-{i}", s, "text", "a.flac") for s in ("1089", "3752", "9001") for i in range(2)]
    train, held = split_by_named_speakers(rows, (), ("9001",))
    assert {u.speaker for u in train} == {"1089", "3752"} and {u.speaker for u in held} == {"9001"}
    train, held = split_by_named_speakers(rows, ("1089",), ())
    assert {u.speaker for u in train} == {"1089"} and {u.speaker for u in held} == {"3752", "9001"}
    with pytest.raises(UserError, match="in both --train-speakers and --eval-speakers"):
        split_by_named_speakers(rows, ("9001",), ("9001",))
    with pytest.raises(UserError, match="names every speaker of the data, so none is left to train on"):
        split_by_named_speakers(rows, (), ("1089", "3752", "9001"))
    with pytest.raises(UserError, match="none is left to evaluate on"):
        split_by_named_speakers(rows, ("1089", "3752", "9001"), ())


def test_two_runs_in_one_process_may_train_in_different_precisions():
    """The Python API (or a notebook) runs `lora train` twice: accelerate keeps the first run's precision in a
    process-wide singleton and refused the second ("AcceleratorState has already been initialized")."""
    from lora import pipeline
    from lora.training_config import TrainConfig

    first = pipeline.start(TrainConfig(mixed_precision="no"), cpu=True)
    second = pipeline.start(TrainConfig(mixed_precision="bf16"), cpu=True)  # CPU autocast always has bf16
    assert (first.precision, second.precision) == ("no", "bf16")
    assert second.accelerator.mixed_precision == "bf16"
    assert pipeline.start(TrainConfig(mixed_precision="no"), cpu=True).accelerator.mixed_precision == "no"


def test_eval_max_samples_of_a_local_dataset_draws_from_every_speaker(speech_dir, tmp_path):
    """--max-samples on a local --dataset samples the whole dataset (as for --manifest), not its first rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [json.loads(line) for line in (speech_dir / "manifest.jsonl").read_text().splitlines() if line.strip()]
    chosen = [r for r in rows if r["speaker"] == "9001"][:10] + [r for r in rows if r["speaker"] == "9101"]
    pq.write_table(pa.table({"audio": [str(speech_dir / r["path"]) for r in chosen], "text": [r["text"] for r in chosen],
                             "speaker_id": [r["speaker"] for r in chosen]}), tmp_path / "sorted.parquet")
    args = evaluate.build_parser().parse_args(["--dataset", str(tmp_path / "sorted.parquet"), "--max-samples", "2",
                                               "--output", str(tmp_path / "e" / "eval.json")])
    picked, _ = evaluate.load_rows(args)
    assert sorted(u.speaker for u in picked) == ["9001", "9101"]


def _talks(speech_dir: Path, folder: Path, speakers: dict[str, str]) -> Path:
    """Each speaker's first three real utterances joined into one recording (`talks/<speaker>.flac`), and a NeMo
    manifest of its segments: `offset`/`duration` at the utterance bounds, each with its own transcript, no ids."""
    (folder / "talks").mkdir(parents=True)
    lines = []
    for speaker, subset in speakers.items():
        joined = join_utterances(speaker, speaker_utterances(read_librispeech_dir(speech_dir, [subset]), speaker)[:3])
        sf.write(folder / "talks" / f"{speaker}.flac", joined.samples, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
        lines += [json.dumps({"audio_filepath": f"talks/{speaker}.flac", "offset": round(a, 4), "duration": round(b - a, 4),
                              "text": u.text, "speaker": speaker}) for u, (a, b) in zip(joined.utterances, joined.bounds)]
    manifest = folder / "segments.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def test_train_and_eval_on_segments_of_long_recordings(speech_dir, tiny_moonshine, tmp_path):
    """A NeMo manifest of segments of three real recordings trains through the loader's worker processes on each
    segment (not on the whole recording once per row), speaker-disjoint, and `lora eval` scores each segment."""
    manifest = _talks(speech_dir, tmp_path / "data", {"1089": "test-clean", "3752": "dev-clean", "9001": "ljspeech"})
    out = tmp_path / "run"
    assert run_cli(real_small._main, ["--model-id", str(tiny_moonshine), "--manifest", str(manifest), "--output-dir", str(out),
                                      "--max-steps", "2", "--canary-samples", "1", "--batch-size", "2", "--num-workers", "1",
                                      "--target-policy", "raw", "--report-to", "none", "--quiet", "--eval-speakers", "9001"]) == 0
    metrics = json.loads((out / "real_metrics.json").read_text())
    assert sorted(metrics["train_ids"]) == sorted(f"{s}@{a:g}-{b:g}" for s, a, b in _bounds(manifest) if s != "9001")
    assert metrics["train_speakers"] == ["1089", "3752"] and (out / "quarantine.jsonl").read_text() == ""
    # the training audio is the segments' (3 + 3 of them), not 6 whole recordings
    segments = sum(b - a for s, a, b in _bounds(manifest) if s != "9001")
    assert metrics["train_audio_seconds"] == pytest.approx(segments, abs=0.01)
    assert metrics["eval_audio_seconds"] == pytest.approx(sum(b - a for s, a, b in _bounds(manifest) if s == "9001"), abs=0.01)
    assert run_cli(evaluate.main, ["--model-id", str(tiny_moonshine), "--manifest", str(manifest), "--output", str(tmp_path / "eval.json"),
                                   "--quiet"]) == 0
    scored = json.loads((tmp_path / "eval.json").read_text())
    assert scored["utterances"] == 9 and not scored["long_form"]
    assert scored["audio_seconds"] == pytest.approx(sum(b - a for _, a, b in _bounds(manifest)), abs=0.01)


def _bounds(manifest: Path) -> list[tuple[str, float, float]]:
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    return [(r["speaker"], r["offset"], r["offset"] + r["duration"]) for r in rows]
