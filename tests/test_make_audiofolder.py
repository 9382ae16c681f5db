"""scripts/make_audiofolder.py writes an audiofolder of the real clips that hf_sources reads back."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from lora.core.audio import load_audio
from lora.data.hf_sources import detect_dataset_format, read_dataset

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "make_audiofolder.py"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], check=False, capture_output=True, text=True, timeout=120)


def test_default_subsets_round_trip(speech_dir, tmp_path):
    out = tmp_path / "af"
    result = _run("--output", str(out), "--speech-dir", str(speech_dir))
    assert result.returncode == 0, result.stderr
    manifest = [json.loads(x) for x in (speech_dir / "manifest.jsonl").read_text().splitlines() if x.strip()]
    expected = {r["id"]: r for r in manifest if r["subset"] in {"test-clean", "dev-clean", "ljspeech", "jfk"}}
    assert f"{len(expected)} utterances" in result.stdout
    assert detect_dataset_format(out) == "audiofolder"
    read = read_dataset(str(out))
    assert read.bad == ()
    assert {u.id for u in read.rows} == set(expected)
    assert all(u.text == expected[u.id]["text"] and u.speaker == expected[u.id]["speaker"] for u in read.rows)
    first = read.rows[0]
    np.testing.assert_array_equal(first.samples(), load_audio(speech_dir / expected[first.id]["path"]))
    assert not list(tmp_path.glob(".af.tmp-*"))

    again = _run("--output", str(out), "--speech-dir", str(speech_dir), "--subsets", "jfk")
    assert again.returncode == 0, again.stderr
    assert [u.id for u in read_dataset(str(out)).rows] == [r["id"] for r in manifest if r["subset"] == "jfk"]


def test_refuses_to_replace_a_non_audiofolder_and_unknown_subsets(speech_dir, tmp_path):
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "notes.txt").write_text("keep me")
    result = _run("--output", str(tmp_path / "precious"), "--speech-dir", str(speech_dir))
    assert result.returncode == 2 and "is not an audiofolder" in result.stderr
    assert (tmp_path / "precious" / "notes.txt").read_text() == "keep me"
    result = _run("--output", str(tmp_path / "x"), "--speech-dir", str(speech_dir), "--subsets", "nope")
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "subset(s) nope" in result.stderr
