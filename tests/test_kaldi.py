"""Kaldi data directories (wav.scp, text, utt2spk, segments) as a source, built from the real LibriSpeech clips of
the shared speech folder: as a recipe lays them out (`<recipe>/data/<split>/` naming `db/...` relative to
`<recipe>`), with segments over recordings joined from real utterances, and with each kind of bad line."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from lora.core.audio import SAMPLE_RATE, Span
from lora.core.cli import run_cli
from lora.core.errors import UserError
from lora.data.long_recordings import join_utterances, speaker_utterances
from lora.data.manifest import read_source
from lora.data.records import read_librispeech_dir
from lora.runners import real_small
from lora.scripts import evaluate

LORA_CHECK = Path(sys.executable).with_name("lora-check")
SUBSETS = ["test-clean", "dev-clean"]


def _write(folder: Path, name: str, lines: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text("".join(f"{line}\n" for line in lines))
    return folder / name


def _recipe(speech_dir: Path, recipe: Path, split: str = "train") -> tuple[Path, list]:
    """`recipe/data/<split>/` over the LibriSpeech clips, wav.scp paths relative to `recipe` (as a recipe run there
    writes them: `db/test-clean/...`, `db` being the corpus), utt2spk from the ids' speaker prefix."""
    rows = read_librispeech_dir(speech_dir, SUBSETS)
    (recipe / "db").parent.mkdir(parents=True, exist_ok=True)
    (recipe / "db").symlink_to(speech_dir)
    data = recipe / "data" / split
    _write(data, "wav.scp", [f"{u.id} db/{u.audio.relative_to(speech_dir).as_posix()}" for u in rows])
    _write(data, "text", [f"{u.id} {u.text}" for u in rows])
    _write(data, "utt2spk", [f"{u.id} {u.speaker}" for u in rows])
    _write(data, "spk2utt", sorted({f"{u.speaker} " + " ".join(v.id for v in rows if v.speaker == u.speaker) for u in rows}))
    return data, rows


def _segmented(speech_dir: Path, folder: Path) -> tuple[Path, dict]:
    """Two recordings, each three real utterances of one speaker joined (`rec/<speaker>.flac`), and a data directory
    of their segments at the utterance bounds (the last one written `-1`: to the end). Returns the directory and
    {utt id: (recording file, start, end or None, text, speaker)}."""
    want = {}
    wav, segments, text, utt2spk = [], [], [], []
    for speaker, subset in (("1089", "test-clean"), ("3752", "dev-clean")):
        joined = join_utterances(speaker, speaker_utterances(read_librispeech_dir(speech_dir, [subset]), speaker)[:3])
        (folder / "rec").mkdir(parents=True, exist_ok=True)
        flac = folder / "rec" / f"{speaker}.flac"
        sf.write(flac, joined.samples, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
        wav.append(f"rec{speaker} rec/{speaker}.flac")  # relative to the data directory itself
        for n, (u, (a, b)) in enumerate(zip(joined.utterances, joined.bounds)):
            end = None if n == len(joined.bounds) - 1 else round(b, 4)
            utt = f"{speaker}-seg{n}"
            segments.append(f"{utt} rec{speaker} {round(a, 4)} {-1 if end is None else end}")
            text.append(f"{utt} {u.text}")
            utt2spk.append(f"{utt} {speaker}")
            want[utt] = (flac, round(a, 4), end, u.text, speaker)
    data = folder
    for name, lines in (("wav.scp", wav), ("segments", segments), ("text", text), ("utt2spk", utt2spk)):
        _write(data, name, lines)
    return data, want


def test_a_recipe_data_directory_reads_as_its_utterances(speech_dir, tmp_path):
    """Rows in text order with Kaldi's ids, transcripts and utt2spk speakers; paths relative to the recipe's folder
    (the grandparent) found there, one relative to the data directory found there first; origins text:N."""
    data, rows = _recipe(speech_dir, tmp_path / "recipe")
    local = data / "wav" / "own.flac"  # one file beside the data, as `wav/own.flac`
    local.parent.mkdir()
    shutil.copy(rows[0].audio, local)
    scp = (data / "wav.scp").read_text().splitlines()
    (data / "wav.scp").write_text("\n".join([f"{rows[0].id} wav/own.flac", *scp[1:]]) + "\n")
    read = read_source(data)
    assert read.kind == "kaldi" and read.bad == () and read.source == str(data)
    assert [u.id for u in read.rows] == [u.id for u in rows]
    assert [(u.text, u.speaker, u.span) for u in read.rows] == [(u.text, u.speaker, None) for u in rows]
    assert [u.origin for u in read.rows] == [f"{data / 'text'}:{n}" for n in range(1, len(rows) + 1)]
    assert read.rows[0].audio == local
    assert all(Path(u.audio).samefile(v.audio) for u, v in zip(read.rows[1:], rows[1:]))
    assert str(read.rows[1].audio).startswith(str(tmp_path / "recipe" / "db"))
    assert np.array_equal(read.rows[2].samples(), rows[2].samples())
    assert {u.subset for u in read.rows} == {"train"} and all(u.extra["has_text"] for u in read.rows)


def test_segments_are_spans_and_decode_to_their_slice(speech_dir, tmp_path):
    data, want = _segmented(speech_dir, tmp_path / "data" / "talks")
    read = read_source(data)
    assert read.bad == () and [u.id for u in read.rows] == list(want)
    for u in read.rows:
        flac, start, end, text, speaker = want[u.id]
        assert (Path(u.audio), u.span, u.text, u.speaker) == (flac, Span(start, end), text, speaker)
        whole, rate = sf.read(flac, dtype="float32")
        assert rate == SAMPLE_RATE
        assert np.array_equal(u.samples(), Span(start, end).cut(whole, rate))
    assert read.rows[-1].span.end is None and len(read.rows[-1].samples()) > SAMPLE_RATE


def test_each_bad_line_is_one_row_naming_its_line(speech_dir, tmp_path):
    """Without segments: a command, a missing wav.scp entry, a relative path found nowhere, a wav.scp line with no
    path, audio without a transcript, an utterance missing from utt2spk and an utt2spk line of three fields."""
    data, rows = _recipe(speech_dir, tmp_path / "recipe")
    ids = [u.id for u in rows]
    scp = (data / "wav.scp").read_text().splitlines()
    scp[0] = f"{ids[0]} flac -c -d -s db/x.flac |"
    scp[1] = f"{ids[1]} gone/nowhere.flac"
    scp[2] = ids[2]
    del scp[3]
    scp.append("extra-rec db/test-clean/1089/134686/1089-134686-0000.flac")
    (data / "wav.scp").write_text("\n".join(scp) + "\n")
    spk = (data / "utt2spk").read_text().splitlines()
    spk[4] = f"{ids[4]} 1089 extra"
    del spk[5]
    (data / "utt2spk").write_text("\n".join(spk) + "\n")
    read = read_source(data)
    got = {b.id: b for b in read.bad}
    scp_file, text, utt2spk = data / "wav.scp", data / "text", data / "utt2spk"
    assert {i: (b.origin, b.reason) for i, b in got.items()} == {
        ids[0]: (f"{scp_file}:1", "piped audio"),
        ids[1]: (f"{scp_file}:2", "missing file"),
        ids[2]: (f"{scp_file}:3", "malformed line"),
        ids[3]: (f"{text}:4", "no audio"),
        ids[4]: (f"{utt2spk}:5", "malformed line"),
        ids[5]: (f"{text}:6", "no speaker"),
        "extra-rec": (f"{scp_file}:{len(scp)}", "no transcript"),
    }
    assert "flac -c -d -s db/x.flac > " in got[ids[0]].detail and "lora runs none" in got[ids[0]].detail
    assert all(str(p) in got[ids[1]].detail for p in (data, data.parent, data.parent.parent))
    assert [u.id for u in read.rows] == ids[6:]


def test_bad_segments_lines(speech_dir, tmp_path):
    """With segments: a segment of an unknown recording, one of three fields, one of negative length, an
    utterance of text with no segment, and a segment line repeating an utterance id."""
    data, want = _segmented(speech_dir, tmp_path / "talks")
    seg = (data / "segments").read_text().splitlines()
    utts = list(want)
    seg[0] = f"{utts[0]} recNOPE 0 1.5"
    seg[1] = f"{utts[1]} rec1089 2.0"
    seg[3] = f"{utts[3]} rec3752 3.0 2.5"
    del seg[4]
    seg.append(seg[-1])
    (data / "segments").write_text("\n".join(seg) + "\n")
    read = read_source(data)
    segments, text = data / "segments", data / "text"
    assert {b.id: (b.origin, b.reason) for b in read.bad[:4]} == {
        utts[0]: (f"{segments}:1", "unknown recording"), utts[1]: (f"{segments}:2", "malformed line"),
        utts[3]: (f"{segments}:4", "bad span"), utts[4]: (f"{text}:5", "no audio")}
    assert [(b.origin, b.id, b.reason) for b in read.bad[4:]] == [(f"{segments}:6", utts[5], "duplicate id")]
    assert "recNOPE" in read.bad[0].detail
    assert [u.id for u in read.rows] == [utts[2], utts[5]]


def test_all_piped_is_one_error_whose_command_converts_it(speech_dir, tmp_path):
    """A wav.scp of nothing but commands is refused with one line whose shell command, run as it says, writes the
    audio out; the directory then reads, sample for sample the same audio."""
    if shutil.which("ffmpeg") is None:
        pytest.skip("needs ffmpeg for the piped commands")
    data, rows = _recipe(speech_dir, tmp_path / "recipe")
    rows = rows[:3]
    _write(data, "wav.scp", [f"{u.id} ffmpeg -v error -i db/{u.audio.relative_to(speech_dir).as_posix()} -f wav - |"
                             for u in rows])
    _write(data, "text", [f"{u.id} {u.text}" for u in rows])
    with pytest.raises(UserError) as err:
        read_source(data)
    message = str(err.value)
    assert message.startswith(f"{data / 'wav.scp'}:1: every line of wav.scp is a command") and "\n" not in message
    command = message.split("from the folder the recipe ran in: ", 1)[1]
    subprocess.run(["bash", "-c", command], cwd=tmp_path / "recipe", check=True, timeout=60)
    read = read_source(data)
    assert read.bad == () and [u.id for u in read.rows] == [u.id for u in rows]
    assert all(np.array_equal(u.samples(), v.samples()) for u, v in zip(read.rows, rows))


def test_without_utt2spk_the_rows_have_no_speaker_and_a_warning_says_so(speech_dir, tmp_path, caplog):
    data, rows = _recipe(speech_dir, tmp_path / "recipe")
    (data / "utt2spk").unlink()
    with caplog.at_level(logging.WARNING, logger="lora"):
        read = read_source(data)
    assert {u.speaker for u in read.rows} == {""} and len(read.rows) == len(rows)
    assert "no utt2spk" in caplog.text and "--allow-shared-speakers" in caplog.text


def test_folders_that_are_almost_kaldi_directories(speech_dir, tmp_path):
    data, _ = _recipe(speech_dir, tmp_path / "recipe")
    shutil.copytree(data, data.parent / "dev")
    with pytest.raises(UserError, match=r"holds Kaldi data directories \(dev, train\), not one; pass one of them"):
        read_source(data.parent)
    (data / "text").unlink()
    with pytest.raises(UserError, match=r"a Kaldi data directory without its text file"):
        read_source(data)


def test_lora_check_on_a_data_directory(speech_dir, tmp_path):
    """`lora-check DIR` as a user runs it: the table, and quarantine.jsonl (in the current folder) naming the line."""
    data, rows = _recipe(speech_dir, tmp_path / "recipe")
    scp = (data / "wav.scp").read_text().splitlines()
    scp[1] = f"{rows[1].id} sox db/x.wav -t wav - |"
    (data / "wav.scp").write_text("\n".join(scp) + "\n")
    work = tmp_path / "work"
    work.mkdir()
    done = subprocess.run([str(LORA_CHECK), str(data)], cwd=work, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"{len(rows)} read, {len(rows) - 1} good, 1 bad" in done.stdout and "speakers    4" in done.stdout
    records = [json.loads(line) for line in (work / "quarantine.jsonl").read_text().splitlines()]
    assert [(r["origin"], r["id"], r["reason"]) for r in records] == [(f"{data / 'wav.scp'}:2", rows[1].id, "piped audio")]
    assert "sox db/x.wav -t wav - > " in records[0]["detail"]


def test_train_and_eval_on_a_segmented_data_directory(speech_dir, tiny_moonshine, tmp_path):
    """`lora train --manifest DIR` trains on the segments of a Kaldi directory (speaker-disjoint from utt2spk) and
    `lora eval --manifest DIR` scores each segment."""
    data, want = _segmented(speech_dir, tmp_path / "data" / "talks")
    out = tmp_path / "run"
    assert run_cli(real_small._main, ["--model-id", str(tiny_moonshine), "--manifest", str(data), "--output-dir", str(out),
                                      "--max-steps", "2", "--canary-samples", "1", "--batch-size", "2", "--num-workers", "1",
                                      "--target-policy", "raw", "--report-to", "none", "--quiet",
                                      "--eval-speakers", "3752"]) == 0
    metrics = json.loads((out / "real_metrics.json").read_text())
    assert sorted(metrics["train_ids"]) == sorted(u for u, w in want.items() if w[4] == "1089")
    assert metrics["train_speakers"] == ["1089"] and (out / "quarantine.jsonl").read_text() == ""
    seconds = {u: (w[2] if w[2] is not None else sf.info(w[0]).duration) - w[1] for u, w in want.items()}
    assert metrics["train_audio_seconds"] == pytest.approx(sum(s for u, s in seconds.items() if u.startswith("1089")), abs=0.01)
    assert run_cli(evaluate.main, ["--model-id", str(tiny_moonshine), "--manifest", str(data),
                                   "--output", str(tmp_path / "eval.json"), "--quiet"]) == 0
    scored = json.loads((tmp_path / "eval.json").read_text())
    assert scored["utterances"] == 6 and scored["audio_seconds"] == pytest.approx(sum(seconds.values()), abs=0.01)
