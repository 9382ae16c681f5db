"""The prepared-rows cache: a second run over the same large manifest reads its checked, selected and
styled rows back instead of preparing them again, and never when a file, an option or the model changed."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

import lora.pipeline as pipeline
import lora.prepared_rows_cache as prc
from lora.core.audio import Span
from lora.data.records import read_librispeech_dir
from lora.data_loader import ClipTable
from lora.results import TargetStyle
from lora.training_config import TrainConfig


@pytest.fixture
def copied_rows(speech_dir, tmp_path):
    """Real spoken-digit clips of 3 speakers, copied (so a test may touch or delete them), with targets."""
    by_speaker: dict[str, list] = {}
    for u in read_librispeech_dir(speech_dir, ["fsdd"]):
        by_speaker.setdefault(u.speaker, []).append(u)
    rows = [u for group in [g for g in by_speaker.values() if len(g) >= 4][:3] for u in group[:4]]
    (tmp_path / "audio").mkdir()
    for n, u in enumerate(rows, 1):
        dest = tmp_path / "audio" / f"{u.id}.flac"
        shutil.copy(u.audio, dest)
        u.audio, u.origin = str(dest), f"{tmp_path}/m.jsonl:{n}"
    assert len(rows) == 12
    return rows


def _columns(table: ClipTable) -> list[tuple]:
    return [(table.ids[i], table.texts[i], table.origins[i], table.audio_paths[i], float(table.seconds[i]),
             int(table.sampling_rates[i]), table.targets[i]) for i in range(len(table))]


def test_table_arrays_round_trip(copied_rows):
    for i, u in enumerate(copied_rows):
        u.extra = {"seconds": 1.5 + i, "target": f"Styled {i}." if i % 2 else ""}
    table = ClipTable.from_records(copied_rows)
    back = ClipTable.from_arrays(table.to_arrays())
    assert _columns(back) == _columns(table)
    assert back.record(1).extra == {"target": "Styled 1."} and back.hours == pytest.approx(table.hours)


def _prepared(rows) -> prc.PreparedRows:
    table = ClipTable.from_records(rows[:8])
    return prc.PreparedRows(table, rows[8:10], rows[10:11], rows[11:], {"kind": "manifest", "corpus_rows": 12}, {"shared": []},
                            {"ids": [], "speakers": ["a"], "replay_ids": [], "joined": 0, "rows": 8, "seconds": 40.0},
                            TargetStyle(policy="styled", rows=8, styled_rows=8), "model@/x", '{"origin": "m:3"}\n')


def test_entry_reads_back_and_is_refused_once_an_audio_file_changes(copied_rows, tmp_path):
    root = tmp_path / "cache"
    assert prc.save("k1", _prepared(copied_rows), root) is not None
    back = prc.load("k1", root)
    assert _columns(back.table) == _columns(_prepared(copied_rows).table)
    assert [u.id for u in back.eval] == [u.id for u in copied_rows[8:10]] and back.canary[0].audio == copied_rows[11].audio
    assert back.style.styled_rows == 8 and back.style_model == "model@/x" and back.quarantine == '{"origin": "m:3"}\n'

    st = os.stat(copied_rows[3].audio)  # a re-recorded training clip (new mtime): the entry is stale
    os.utime(copied_rows[3].audio, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert prc.load("k1", root) is None
    prc.save("k2", _prepared(copied_rows), root)
    os.remove(copied_rows[11].audio)  # a canary clip gone
    assert prc.load("k2", root) is None
    assert prc.load("never-written", root) is None


def test_in_memory_audio_is_not_cached(copied_rows, tmp_path):
    prepared = _prepared(copied_rows)
    prepared.eval[0].audio = np.zeros(16000, np.float32)
    assert prc.save("k", prepared, tmp_path / "cache") is None and not (tmp_path / "cache").exists()


def test_key_follows_options_manifest_and_code(tmp_path, monkeypatch):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"audio": "a.flac", "text": "A"}\n')
    key = prc.cache_key({"seed": 1}, [manifest, None])
    assert key == prc.cache_key({"seed": 1}, [manifest, None])
    assert key != prc.cache_key({"seed": 2}, [manifest, None])
    manifest.write_text('{"audio": "a.flac", "text": "AB"}\n')  # edited manifest
    assert key != prc.cache_key({"seed": 1}, [manifest, None])
    edited = prc.cache_key({"seed": 1}, [manifest, None])
    monkeypatch.setattr(prc, "code_digest", lambda: "another version of lora")
    assert edited != prc.cache_key({"seed": 1}, [manifest, None])


def test_only_the_newest_entries_are_kept(copied_rows, tmp_path, monkeypatch):
    monkeypatch.setattr(prc, "KEEP", 2)
    for i in range(3):
        prc.save(f"k{i}", _prepared(copied_rows), tmp_path)
        written = 10**18 + i * 10**9  # 2001, a second apart: k0 oldest
        os.utime(tmp_path / f"k{i}.npz", ns=(written, written))
    prc.save("k3", _prepared(copied_rows), tmp_path)
    assert sorted(p.name for p in tmp_path.glob("*.npz")) == ["k2.npz", "k3.npz"]
    assert not (tmp_path / "k0.json").exists()


def test_second_run_reads_the_prepared_rows_and_a_changed_model_prepares_again(copied_rows, tiny_moonshine, tmp_path,
                                                                               monkeypatch):
    monkeypatch.setenv("LORA_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(prc, "MIN_ROWS", 1)  # the real threshold (20,000 rows) is for large corpora
    manifest = tmp_path / "m.jsonl"
    lines = [json.dumps({"id": u.id, "audio": u.audio, "text": u.text, "speaker": u.speaker}) for u in copied_rows]
    lines.append(json.dumps({"id": "gone", "audio": str(tmp_path / "missing.flac"), "text": "X", "speaker": "9201"}))
    manifest.write_text("\n".join(lines) + "\n")
    cfg = TrainConfig(manifest=str(manifest), model_id=str(tiny_moonshine), eval_samples=2, canary_samples=2,
                      output_dir=str(tmp_path / "run1"))
    lm = pipeline.load_model(cfg)
    first = pipeline.select_data(cfg)
    assert not first.from_cache and first.cache_key
    style = pipeline.style_targets(first, lm, cfg)
    _, table = pipeline.train_batches(first, lm, cfg, pipeline.loader_options(cfg, "cpu"))
    assert style.styled_rows == len(table) > 0 and len(list((tmp_path / "home" / prc.CACHE_FOLDER).glob("*.npz"))) == 1

    again = pipeline.select_data(TrainConfig(**{**cfg.__dict__, "output_dir": str(tmp_path / "run2")}))
    assert again.from_cache and again.cache_key == first.cache_key and again.train_rows == []
    assert (tmp_path / "run2" / "quarantine.jsonl").read_text() == (tmp_path / "run1" / "quarantine.jsonl").read_text()
    assert "missing.flac" in (tmp_path / "run2" / "quarantine.jsonl").read_text()
    assert [u.id for u in again.data.eval] == [u.id for u in first.data.eval]
    assert [u.id for u in again.canary] == [u.id for u in first.canary] and again.summary == first.summary
    cached_style = pipeline.style_targets(again, lm, cfg)
    assert cached_style.transcribed == 0 and cached_style.cache_hits == style.styled_rows
    _, cached_table = pipeline.train_batches(again, lm, cfg, pipeline.loader_options(cfg, "cpu"))
    assert _columns(cached_table) == _columns(table)

    other_policy = pipeline.select_data(TrainConfig(**{**cfg.__dict__, "target_policy": "raw"}))
    assert not other_policy.from_cache  # another option, another key
    off = pipeline.select_data(TrainConfig(**{**cfg.__dict__, "prepared_cache": False}))
    assert not off.from_cache and off.cache_key is None

    stale = pipeline.select_data(cfg)
    stale.style_model = "another model@/elsewhere"  # e.g. `auto` resolving to the hub model this time
    restyled = pipeline.style_targets(stale, lm, cfg)
    assert not stale.from_cache and stale.train_rows and restyled.styled_rows == style.styled_rows


def test_a_large_manifest_is_prepared_in_a_child_process(copied_rows, tiny_moonshine, tmp_path, monkeypatch):
    """The first run's rows come from a child process (its parse heap goes when it exits) and equal the rows
    this process would have prepared itself; the child's styling figures are the run's."""
    monkeypatch.setenv("LORA_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(prc, "MIN_ROWS", 1)
    monkeypatch.setattr(pipeline, "CHILD_MIN_LINES", 1)  # the real threshold is 20,000 lines
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps({"id": u.id, "audio": u.audio, "text": u.text, "speaker": u.speaker}) + "\n"
                                for u in copied_rows))
    cfg = TrainConfig(manifest=str(manifest), model_id=str(tiny_moonshine), eval_samples=2, canary_samples=2,
                      output_dir=str(tmp_path / "run1"))
    lm = pipeline.load_model(cfg)
    first = pipeline.select_data(cfg)
    assert first.prepared_by_child and first.from_cache and first.train_rows == []
    style = pipeline.style_targets(first, lm, cfg)
    assert style.transcribed == style.styled_rows > 0  # transcribed by the child, not claimed as cache hits
    _, table = pipeline.train_batches(first, lm, cfg, pipeline.loader_options(cfg, "cpu"))

    here = pipeline._read_rows(TrainConfig(**{**cfg.__dict__, "output_dir": str(tmp_path / "run2")}), True, None, None)
    pipeline.style_targets(here, lm, cfg)
    assert _columns(ClipTable.from_records(here.train_rows)) == _columns(table)
    assert [u.id for u in here.data.eval] == [u.id for u in first.data.eval] and here.summary == first.summary

    monkeypatch.setattr(pipeline, "CHILD_MIN_LINES", 10**9)
    assert not pipeline._large_manifest(manifest)


def test_segments_read_back_as_segments(copied_rows, tmp_path):
    """Rows that are spans of a file (NeMo offset + duration) keep their span in the table and in the small sets."""
    for i, u in enumerate(copied_rows):
        u.span = Span(0.05 * (i % 3), 0.05 * (i % 3) + 0.25)
    assert prc.save("spans", _prepared(copied_rows), tmp_path / "cache") is not None
    back = prc.load("spans", tmp_path / "cache")
    assert [back.table.span(i) for i in range(len(back.table))] == [u.span for u in copied_rows[:8]]
    assert [u.span for u in (*back.eval, *back.replay, *back.canary)] == [u.span for u in copied_rows[8:]]
