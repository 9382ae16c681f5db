"""Hygiene inside preflight and `lora check`: real clips, modified the way real data goes wrong, are
quarantined or warned about per hygiene.py's decision; clean real speech is never flagged."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from lora.data.hygiene import HygieneOptions
from lora.data.manifest import read_source
from lora.data.preflight import check_rows
from lora.scripts import check


def _real(speech_dir: Path, n: int = 3) -> list[dict]:
    rows = [json.loads(line) for line in (speech_dir / "manifest.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r["subset"] == "ljspeech"][:n]
    return [{"id": r["id"], "audio": str(speech_dir / r["path"]), "text": r["text"], "speaker": r["speaker"]} for r in rows]


def _write(path: Path, samples: np.ndarray) -> str:
    sf.write(str(path), samples, 16000, subtype="FLOAT", format="WAV")
    return str(path)


def _manifest(tmp_path: Path, rows: list[dict]) -> Path:
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _check(tmp_path, rows, **kw):
    read = read_source(_manifest(tmp_path, rows))
    return check_rows(read.rows, read.bad, quiet=True, cache=False, source=read.source, **kw)


def test_clean_real_rows_pass(tmp_path, speech_dir):
    report = _check(tmp_path, _real(speech_dir))
    assert len(report.good) == 3 and not report.bad and not report.warnings


def test_copy_of_a_clip_under_another_transcript_is_quarantined(tmp_path, speech_dir):
    rows = _real(speech_dir, 2)
    samples, _ = sf.read(rows[0]["audio"], dtype="float32")
    copy = _write(tmp_path / "copy.wav", samples)  # another file, the same decoded samples
    rows.append({"id": "copy", "audio": copy, "text": rows[1]["text"], "speaker": "x"})
    report = _check(tmp_path, rows)
    assert [(b.id, b.reason) for b in report.bad] == [("copy", "hygiene: duplicate_audio")]
    assert "same audio as" in report.bad[0].detail


def test_copy_with_the_same_transcript_is_a_warning(tmp_path, speech_dir):
    rows = _real(speech_dir, 1)
    samples, _ = sf.read(rows[0]["audio"], dtype="float32")
    rows.append({"id": "copy", "audio": _write(tmp_path / "copy.wav", samples), "text": rows[0]["text"], "speaker": "x"})
    report = _check(tmp_path, rows)
    assert not report.bad and [(w.id, w.reason) for w in report.warnings] == [("copy", "hygiene: duplicate_audio")]
    assert "warnings" in report.render() and "copy" in report.render()


def test_mildly_clipped_real_clip_warns_and_heavily_clipped_is_quarantined(tmp_path, speech_dir):
    rows = _real(speech_dir, 1)
    samples, _ = sf.read(rows[0]["audio"], dtype="float32")
    peak = np.abs(samples).max()
    mild = np.clip(samples / np.quantile(np.abs(samples), 0.97), -1, 1)  # ~3% of samples at full scale
    heavy = np.clip(samples * 50 / peak, -1, 1)
    rows = [{"id": "mild", "audio": _write(tmp_path / "mild.wav", mild), "text": rows[0]["text"]},
            {"id": "heavy", "audio": _write(tmp_path / "heavy.wav", heavy), "text": rows[0]["text"]}]
    report = _check(tmp_path, rows)
    # flat tops also shift the mean, so dc_constant may be named first; clipped is always among the findings
    assert [b.id for b in report.bad] == ["heavy"] and "clipped:" in report.bad[0].detail
    assert [(w.id, w.reason) for w in report.warnings] == [("mild", "hygiene: clipped")]


def test_transcript_of_another_clip_is_quarantined_and_threshold_flag_changes_it(tmp_path, speech_dir):
    rows = _real(speech_dir, 1)
    rows[0]["text"] = "I"  # a real sentence of ~5 s labelled with one word
    report = _check(tmp_path, rows)
    assert [b.reason for b in report.bad] == ["hygiene: chars_per_second"]
    loose = _check(tmp_path, rows, hygiene=HygieneOptions(min_chars_per_second=0.1))
    assert not loose.bad and len(loose.good) == 1


def test_transcription_markup_in_a_transcript_is_a_warning(tmp_path, speech_dir):
    rows = _real(speech_dir, 3)
    rows[0]["text"] = "[noise] " + rows[0]["text"] + " <unk>"
    rows[1]["text"] = rows[1]["text"] + " {laugh} [noise]"
    rows[2]["text"] = rows[2]["text"] + " (as he said)"  # parentheses are written text, not markup
    report = _check(tmp_path, rows)
    assert len(report.good) == 3 and not report.bad
    assert [(w.id, w.reason) for w in report.warnings] == [(rows[0]["id"], "hygiene: annotation"),
                                                           (rows[1]["id"], "hygiene: annotation")]
    assert report.warnings[0].detail.startswith("transcription markup in the transcript: [noise], <unk>;")
    assert "{laugh}, [noise];" in report.warnings[1].detail


def test_hygiene_off_and_header_only_path_skip_it(tmp_path, speech_dir):
    rows = _real(speech_dir, 1)
    rows[0]["text"] = "I"
    assert not _check(tmp_path, rows, hygiene=None).bad
    assert not _check(tmp_path, rows, decode=False).bad


def test_lora_check_writes_quarantine_beside_the_manifest_and_prints_where(tmp_path, speech_dir, capsys, monkeypatch):
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    rows = _real(speech_dir, 2)
    rows[1]["text"] = "I"
    manifest = _manifest(tmp_path, rows)
    assert check.main([str(manifest), "--quiet", "--workers", "2"]) == 0
    out = capsys.readouterr().out
    target = tmp_path / "quarantine.jsonl"
    assert f"-> {target}" in out and "hygiene: chars_per_second" in out
    assert [json.loads(line)["reason"] for line in target.read_text().splitlines()] == ["hygiene: chars_per_second"]
    assert not (workdir / "quarantine.jsonl").exists()
    assert check.main([str(manifest), "--quiet", "--output", str(tmp_path / "out"), "--min-chars-per-second", "0.1"]) == 0
    assert (tmp_path / "out" / "quarantine.jsonl").read_text() == ""  # --output: always written
    assert f"-> {tmp_path / 'out' / 'quarantine.jsonl'}" in capsys.readouterr().out


class LettersOnly:
    """A letters-only tokenizer (as CTC letter vocabularies are): anything else decodes to '?'."""

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [ord(c) if c.isalpha() or c in " '" else ord("?") for c in text]

    def decode(self, ids: list[int]) -> str:
        return "".join(map(chr, ids))


def test_tokenizer_check(tmp_path, speech_dir, moonshine_dir):
    from transformers import AutoTokenizer

    rows = _real(speech_dir, 2)
    rows[1]["text"] = rows[1]["text"] + " 42"  # digits a letters-only tokenizer cannot write
    report = _check(tmp_path, rows, tokenizer=LettersOnly())
    assert [(b.id, b.reason) for b in report.bad] == [(rows[1]["id"], "hygiene: unwritable_chars")]
    assert [w.reason for w in report.warnings] == ["hygiene: unwritable_chars"]  # row 0: only punctuation lost
    real = _check(tmp_path, rows, tokenizer=AutoTokenizer.from_pretrained(moonshine_dir))  # byte fallback: writes all
    assert not real.bad and not real.warnings


@pytest.mark.parametrize("flag", ["--silent-rms", "--clipped-warn-share", "--min-chars-per-second", "--max-chars-per-second"])
def test_every_hygiene_option_has_a_flag(flag):
    assert flag in check.build_parser().format_help()


def test_loader_workers_quarantine_silent_and_dc_rows(speech_dir, tiny_moonshine):
    """The header-only path's full decode happens in the loader: the cheap audio checks run there."""
    from lora.data.records import Utterance
    from lora.data_loader import ClipDataset, ClipTable
    from lora.model_utils import ResolvedModel, load_base

    _, processor, family = load_base(ResolvedModel("tiny", "tiny", "local", str(tiny_moonshine)))
    real = _real(speech_dir, 1)[0]
    samples, _ = sf.read(real["audio"], dtype="float32")
    rows = [Utterance("ok", "s", real["text"], real["audio"]),
            Utterance("quiet", "s", real["text"], samples * 1e-3),  # a real sentence at -60 dB
            Utterance("offset", "s", real["text"], samples + 0.2)]  # the same with a DC offset
    dataset = ClipDataset(ClipTable.from_records(rows), processor, family)
    loaded = [dataset[i] for i in range(3)]
    assert loaded[0].problem is None and loaded[0].inputs is not None
    assert loaded[1].problem[0] == "hygiene: silent" and "RMS" in loaded[1].problem[1]
    assert loaded[2].problem[0] == "hygiene: dc_constant" and "DC offset" in loaded[2].problem[1]
