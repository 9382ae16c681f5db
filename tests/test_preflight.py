"""preflight on one messy manifest: every bad row gets its exact reason and `file:line`; the good survive."""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import numpy as np
import pytest

from lora.core.audio import Span
from lora.core.errors import UserError
from lora.data.manifest import BadRow, read_source
from lora.data.preflight import check_rows, preflight, preflight_source, write_quarantine
from lora.data.records import Utterance
from messy_audio import tone, truncate, write_audio, write_jsonl

# (name, make(folder) -> manifest row, expected reason or None for good, detail regex)
# Order matters: duplicates refer back to "good" (line 1).
CASES = [
    ("good", lambda d: {"audio": str(write_audio(d / "good.wav").name), "text": "a"}, None, ""),
    ("stereo_44k", lambda d: {"path": write_audio(d / "st.wav", rate=44_100, channels=2).name, "text": "a"}, None, ""),
    ("narrowband_8k", lambda d: {"file": write_audio(d / "nb.flac", rate=8_000).name, "text": "a"}, None, ""),
    ("flac_named_wav", lambda d: {"audio": write_audio(d / "really_flac.wav", format="FLAC").name, "text": "a"}, None, ""),
    ("ogg_vorbis", lambda d: {"audio": write_audio(d / "v.ogg", format="OGG", subtype="VORBIS").name, "text": "a"}, None, ""),
    ("pcm24_subfolder", lambda d: {"audio": _rel(write_audio(d / "sub/deep/p24.wav", subtype="PCM_24"), d), "text": "a"}, None, ""),
    ("absolute_path", lambda d: {"audio": str(write_audio(d / "abs.wav").resolve()), "text": "a"}, None, ""),
    ("inline_8k", lambda d: {"audio": tone(0.5, 8000).tolist(), "sampling_rate": 8000, "text": "a"}, None, ""),
    ("hf_dict", lambda d: {"audio": {"array": tone(0.5).tolist(), "sampling_rate": 16000}, "text": "a"}, None, ""),
    # -- bad: files
    ("missing_file", lambda d: {"audio": "nope.wav", "text": "a"}, "missing file", r"nope\.wav$"),
    ("directory", lambda d: {"audio": _mkdir(d / "adir.wav").name, "text": "a"}, "not a file", r"adir\.wav is a directory"),
    ("zero_bytes", lambda d: {"audio": _touch(d / "zero.wav").name, "text": "a"}, "empty file", r"zero\.wav has 0 bytes"),
    ("zero_samples_wav", lambda d: {"audio": write_audio(d / "nos.wav", samples=np.zeros(0, np.float32)).name, "text": "a"}, "no samples", r"^0 frames in the WAV file$"),
    ("truncated_flac", lambda d: {"audio": truncate(write_audio(d / "t.flac", 2.0), 0.5).name, "text": "a"}, "cannot decode", r"lost sync"),
    ("flac_header_only", lambda d: {"audio": truncate(write_audio(d / "h.flac", 2.0), 200).name, "text": "a"}, "cannot decode", r"psf_fseek"),
    ("flac_cut_in_magic", lambda d: {"audio": truncate(write_audio(d / "m.flac"), 10).name, "text": "a"}, "cannot decode", r"Format not recognised"),
    ("flac_zeroed_body", lambda d: {"audio": _zero_body(write_audio(d / "zb.flac", 2.0)).name, "text": "a"}, "cannot decode", r"."),
    ("text_named_wav", lambda d: {"audio": _text(d / "notes.wav").name, "text": "a"}, "cannot decode", r"^Format not recognised(; nor can ffprobe: Invalid data found when processing input)?$"),
    ("random_bytes_flac", lambda d: {"audio": _noise_bytes(d / "rnd.flac").name, "text": "a"}, "cannot decode", r"."),
    ("truncated_ogg", lambda d: {"audio": truncate(write_audio(d / "tv.ogg", format="OGG"), 0.5).name, "text": "a"}, "cannot decode", r"malformed"),
    ("truncated_wav", lambda d: {"audio": truncate(write_audio(d / "tw.wav", 2.0), 0.5).name, "text": "a"}, "truncated file", r"declares 64000 bytes of audio, the file holds"),
    ("nan_float_wav", lambda d: {"audio": write_audio(d / "nan.wav", samples=_with(tone(1.0), np.nan), subtype="FLOAT").name, "text": "a"}, "non-finite samples", r"^1 of 16000 samples are NaN or inf$"),
    ("inf_double_wav", lambda d: {"audio": write_audio(d / "inf.wav", samples=_with(tone(1.0), np.inf), subtype="DOUBLE").name, "text": "a"}, "non-finite samples", r"^1 of 16000"),
    ("ten_minutes", lambda d: {"audio": write_audio(d / "long.flac", 600.0, rate=8000).name, "text": "a"}, "too long", r"^600\.0 s > 30 s; cut long recordings into clips with `lora segment"),
    ("too_short", lambda d: {"audio": write_audio(d / "short.wav", 0.05).name, "text": "a"}, "too short", r"^0\.050 s < 0\.1 s$"),
    # -- bad: text, ids
    ("empty_text", lambda d: {"audio": write_audio(d / "et.wav").name, "text": ""}, "empty text", r"empty"),
    ("null_text", lambda d: {"audio": write_audio(d / "nt.wav").name, "text": None}, "empty text", r"empty"),
    ("whitespace_text", lambda d: {"audio": write_audio(d / "wt.wav").name, "text": " \t\u3000"}, "whitespace-only text", r"only whitespace"),
    ("duplicate_id", lambda d: {"id": "good", "audio": write_audio(d / "dup.wav").name, "text": "a"}, "duplicate id", r"'good' first at .*manifest\.jsonl:1$"),
    ("duplicate_audio", lambda d: {"audio": "sub/../good.wav", "text": "b"}, "duplicate audio", r"same file as 'good' at .*manifest\.jsonl:1, with another transcript$"),
    # -- bad: inline audio
    ("inline_empty", lambda d: {"audio": [], "sampling_rate": 16000, "text": "a"}, "no samples", r"^0 frames$"),
    ("inline_nan", lambda d: {"audio": [0.0] * 4000 + [math.nan], "sr": 16000, "text": "a"}, "non-finite samples", r"^1 of 4001"),
    ("inline_too_short", lambda d: {"audio": {"array": [0.0] * 100, "sampling_rate": 16000}, "text": "a"}, "too short", r"^0\.006 s < 0\.1 s$"),
    # -- bad: rows that cannot be interpreted (found by read_source, quarantined by preflight)
    ("row_is_list", lambda d: [1, 2], "not an object", r"JSON list"),
    ("no_audio_key", lambda d: {"wav": "good.wav", "text": "a"}, "no audio field", r"audio, path, audio_filepath, file"),
    ("audio_null", lambda d: {"audio": None, "text": "a"}, "no audio", r"null"),
    ("audio_blank", lambda d: {"audio": "  ", "text": "a"}, "no audio", r"path is empty"),
    ("audio_number", lambda d: {"audio": 7, "text": "a"}, "bad audio field", r"got a JSON int"),
    ("audio_url", lambda d: {"audio": "https://example.com/a.flac", "text": "a"}, "remote audio", r"is a URL; lora reads local files"),
    ("inline_strings", lambda d: {"audio": ["a", "b"], "text": "a"}, "bad inline audio", r"list of numbers"),
    ("bad_rate", lambda d: {"audio": [0.0] * 4000, "sampling_rate": "fast", "text": "a"}, "bad sampling rate", r"'fast'"),
    ("zero_rate", lambda d: {"audio": [0.0] * 4000, "sampling_rate": 0, "text": "a"}, "bad sampling rate", r"^0 is not"),
    ("inline_no_rate", lambda d: {"audio": [0.0] * 4000, "text": "a"}, "no sampling rate",
     r'^inline audio samples do not say their rate; add "sampling_rate": N \(the rate in Hz\) to the row'),
    ("hf_dict_no_rate", lambda d: {"audio": {"array": [0.0] * 4000}, "text": "a"}, "no sampling rate", r'add "sampling_rate"'),
    ("text_dict", lambda d: {"audio": "good.wav", "text": {"en": "hi"}}, "bad text field", r"got a JSON dict"),
    ("hf_dict_without_path", lambda d: {"audio": {"bytes": "..."}, "text": "a"}, "bad audio field", r"'path' string or an 'array'"),
]
GOOD = [name for name, _, reason, _ in CASES if reason is None]
BAD = [c for c in CASES if c[2] is not None]


def _rel(path: Path, folder: Path) -> str:
    return path.relative_to(folder).as_posix()


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


def _touch(path: Path) -> Path:
    path.touch()
    return path


def _text(path: Path) -> Path:
    path.write_text("this is not audio\n")
    return path


def _noise_bytes(path: Path) -> Path:
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    return path


def _zero_body(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[:100] + bytes(len(data) - 100))
    return path


def _with(samples: np.ndarray, value: float) -> np.ndarray:
    samples = samples.copy()
    samples[123] = value
    return samples


@pytest.fixture(scope="module")
def messy(tmp_path_factory):
    """One manifest holding every case (one per line, named by `id` where the row has one)."""
    folder = tmp_path_factory.mktemp("messy")
    rows = []
    for name, make, _, _ in CASES:
        row = make(folder)
        if isinstance(row, dict) and name != "duplicate_id":
            row = {"id": name} | row
        rows.append(row)
    manifest = write_jsonl(folder / "manifest.jsonl", rows)
    read = read_source(manifest)
    report = preflight(read.rows, read.bad, quarantine_path=folder / "q" / "quarantine.jsonl", source=read.source)
    return manifest, report


def test_good_rows_survive_with_their_duration(messy):
    _, report = messy
    assert sorted(u.id for u in report.good) == sorted(GOOD)
    seconds = {u.id: u.extra["seconds"] for u in report.good}
    assert seconds["stereo_44k"] == pytest.approx(1.0) and seconds["narrowband_8k"] == pytest.approx(1.0)
    assert seconds["inline_8k"] == pytest.approx(0.5)
    assert report.seconds == pytest.approx(sum(seconds.values()))


@pytest.mark.parametrize("name,reason,detail", [(c[0], c[2], c[3]) for c in BAD], ids=[c[0] for c in BAD])
def test_bad_row_reason_and_origin(messy, name, reason, detail):
    manifest, report = messy
    line = [c[0] for c in CASES].index(name) + 1
    found = [b for b in report.bad if b.origin == f"{manifest}:{line}"]
    assert len(found) == 1, f"{name}: expected one bad row at line {line}"
    assert found[0].reason == reason
    shown = re.sub(rf"^{re.escape(str(manifest.parent))}/[^:]*: ", "", found[0].detail)  # led by the audio file's path
    assert re.search(detail, shown), found[0].detail


def test_a_files_problem_names_the_file_where_the_origin_is_a_listing_line(messy):
    manifest, report = messy
    line = [c[0] for c in CASES].index("zero_samples_wav") + 1
    (found,) = [b for b in report.bad if b.origin == f"{manifest}:{line}"]
    assert found.detail == f"{manifest.parent / 'nos.wav'}: 0 frames in the WAV file"


def test_every_row_is_accounted_for_once(messy):
    _, report = messy
    assert report.total == len(CASES)
    assert sum(report.counts.values()) == len(BAD)
    assert report.counts["cannot decode"] == 7


def test_quarantine_file_lists_every_bad_row(messy):
    manifest, report = messy
    lines = report.quarantine.read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["origin"] for r in records] == [b.origin for b in report.bad]
    assert [int(r["origin"].rsplit(":", 1)[1]) for r in records] == sorted(
        [CASES.index(c) + 1 for c in BAD])  # in file order, whichever stage found them
    assert all(set(r) == {"origin", "id", "reason", "detail"} for r in records)
    assert all(re.fullmatch(rf"{re.escape(str(manifest))}:\d+", r["origin"]) for r in records)
    assert os.listdir(report.quarantine.parent) == ["quarantine.jsonl"]  # no temp file left behind


def test_render_is_an_aligned_table(messy):
    _, report = messy
    text = report.render()
    assert f"{len(CASES)} read, {len(GOOD)} good, {len(BAD)} bad" in text
    assert f"-> {report.quarantine}" in text
    table = text.split("\n\n")[1].splitlines()
    assert len(table) == 1 + len(report.counts) and table[0].split()[:2] == ["reason", "rows"]
    count_ends = {re.match(r"(.*?\S)\s{2,}(rows|\d+)\s{2}", line).end(2) for line in table}
    assert len(count_ends) == 1, table  # counts right-aligned in one column
    assert "cannot decode" in text and str(report.bad[0].origin) in text


def test_too_few_good_rows_is_one_line_user_error(tmp_path):
    manifest = write_jsonl(tmp_path / "m.jsonl", [{"audio": "gone.wav", "text": "a"}, {"audio": "x.wav", "text": "b"}])
    read = read_source(manifest)
    with pytest.raises(UserError) as err:
        preflight(read.rows, read.bad, quarantine_path=tmp_path / "q.jsonl", source=read.source, quiet=True)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{manifest}: only 0 usable row(s) of 2, need at least 1 (missing file x2)")
    assert f"first: {manifest}:1: missing file" in message and str(tmp_path / "q.jsonl") in message
    assert len((tmp_path / "q.jsonl").read_text().splitlines()) == 2  # written before the error


def test_min_good_counts_good_rows(tmp_path):
    write_audio(tmp_path / "a.wav")
    manifest = write_jsonl(tmp_path / "m.jsonl", [{"audio": "a.wav", "text": "x"}, {"audio": "b.wav", "text": "y"}])
    assert len(preflight_source(manifest, min_good=1, quiet=True).good) == 1
    with pytest.raises(UserError, match=r"only 1 usable row\(s\) of 2, need at least 2"):
        preflight_source(manifest, min_good=2, quiet=True)


def test_a_source_with_no_rows_says_so(tmp_path):
    from lora.data.preflight import PreflightReport

    with pytest.raises(UserError, match=r"^empty\.parquet: no rows in it; add at least 2"):  # was "only 0 usable row(s) of 0"
        PreflightReport((), (), "empty.parquet").require(2)


def test_duration_bounds_are_options(tmp_path):
    write_audio(tmp_path / "a.wav", 2.0)
    manifest = write_jsonl(tmp_path / "m.jsonl", [{"audio": "a.wav", "text": "x"}])
    report = preflight_source(manifest, max_seconds=1.5, min_good=0, quiet=True)
    assert [(b.reason, b.detail.split(";")[0]) for b in report.bad] == [("too long", f"{tmp_path / 'a.wav'}: 2.0 s > 1.5 s")]
    assert preflight_source(manifest, min_seconds=2.5, max_seconds=9, min_good=0, quiet=True).bad[0].reason == "too short"
    with pytest.raises(UserError, match="pass --min-seconds below --max-seconds"):
        preflight_source(manifest, min_seconds=5, max_seconds=1, quiet=True)


def test_path_lists_need_no_text_unless_required(tmp_path):
    write_audio(tmp_path / "a.wav")
    listing = tmp_path / "list.txt"
    listing.write_text("a.wav\n")
    assert len(preflight_source(listing, quiet=True).good) == 1
    report = preflight_source(listing, require_text=True, min_good=0, quiet=True)
    assert [(b.origin, b.reason) for b in report.bad] == [(f"{listing}:1", "no text")]
    assert report.bad[0].detail.startswith("the source has no transcripts; add a text column or field (one of text, transcript")


@pytest.mark.parametrize("name, content, detail", [
    ("m.csv", "Audio,Caption\na.wav,hi\n", "no column named text, transcript, sentence, transcription or normalized_text; "
                                            "columns found: Audio, Caption; rename the column that holds the transcripts"),
    ("m.tsv", "path\tlabel\tspeaker\na.wav\thi\ts1\n", "columns found: path, label, speaker; rename the column"),
    ("m.jsonl", '{"audio": "a.wav", "caption": "hi"}\n', "no field named text, transcript, sentence, transcription or "
                                                         "normalized_text; fields found: audio, caption; rename the key that holds"),
])
def test_a_manifest_without_a_text_column_names_the_columns_it_has(tmp_path, name, content, detail):
    """Required text (training, --require-text) missing from a manifest: the accepted names and the ones found."""
    write_audio(tmp_path / "a.wav")
    (tmp_path / name).write_text(content)
    assert len(preflight_source(tmp_path / name, quiet=True).good) == 1  # `lora check` alone needs no text
    (bad,) = preflight_source(tmp_path / name, require_text=True, min_good=0, quiet=True).bad
    assert (bad.origin, bad.reason) == (f"{tmp_path / name}:{1 + name.endswith('sv')}", "no text") and detail in bad.detail


def test_bytes_and_array_audio_from_other_sources():
    import io

    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, tone(1.0, 22_050), 22_050, format="FLAC")
    rows = [Utterance("b", "s", "t", buffer.getvalue(), origin="hub:1"), Utterance("e", "s", "t", b"", origin="hub:2"),
            Utterance("n", "s", "t", tone(1.0), origin="hub:3")]
    report = check_rows(rows, quiet=True)
    assert [u.id for u in report.good] == ["b", "n"]
    assert report.good[0].extra["seconds"] == pytest.approx(1.0)
    assert [(b.id, b.reason) for b in report.bad] == [("e", "empty file")]


def test_unreadable_file(tmp_path, monkeypatch):
    """Permission is asked with os.access (root passes any chmod, CI runs as root): here it says no."""
    import lora.data.audio_probe as probe

    path = write_audio(tmp_path / "locked.wav")
    real_access = os.access
    monkeypatch.setattr(probe.os, "access", lambda p, mode: False if Path(p) == path else real_access(p, mode))
    report = check_rows([Utterance("l", "", "t", path, origin="m:1")], quiet=True, cache=False)
    assert (report.bad[0].reason, report.bad[0].detail) == ("unreadable file", f"no read permission on {path}")


def test_write_quarantine_replaces_atomically(tmp_path):
    target = tmp_path / "q.jsonl"
    target.write_text("old\n")
    write_quarantine(target, [BadRow("m.jsonl:3", "missing file", "x", "x.wav")])
    assert json.loads(target.read_text()) == {"origin": "m.jsonl:3", "id": "x", "reason": "missing file", "detail": "x.wav"}
    assert sorted(os.listdir(tmp_path)) == ["q.jsonl"]


def test_shared_corpus_is_clean(speech_dir):
    report = preflight_source(speech_dir, quiet=True)
    assert (len(report.good), len(report.bad)) == (326, 0)
    assert report.seconds == pytest.approx(282.7, abs=0.1)


# ---------------------------------------------------------------------------------------------
# segments of a longer recording (offset + duration, start/end): checked as the span, not the file

SPAN_CLIP = "ljspeech/9001/1/9001-1-0000.flac"  # 9.655 s


@pytest.mark.parametrize("decode", [True, False])
def test_segments_of_one_file_are_rows_of_their_own_length_and_a_span_past_the_end_is_bad(speech_dir, tmp_path, decode,
                                                                                          monkeypatch):
    """The repro: two segments of one file were quarantined ("duplicate id", "chars_per_second" on the whole file)."""
    monkeypatch.setenv("LORA_HOME", str(tmp_path / "home"))  # the probe cache: a run of its own
    path = speech_dir / SPAN_CLIP
    manifest = write_jsonl(tmp_path / "nemo.jsonl", [
        {"audio_filepath": str(path), "offset": 0.5, "duration": 2.0, "text": "Printing, in the only sense", "speaker": "9001"},
        {"audio_filepath": str(path), "offset": 3.0, "duration": 2.0, "text": "with which we are at present", "speaker": "9001"},
        {"audio_filepath": str(path), "offset": 8.0, "duration": 5.0, "text": "past the end", "speaker": "9001"},
        {"audio_filepath": str(path), "start": 9.7, "end": 10.5, "text": "after the end", "speaker": "9001"},
        {"audio_filepath": str(path), "start": 7.5, "end": 9.66, "text": "the last words, rounded up", "speaker": "9001"},
        {"audio_filepath": str(path), "text": "Printing, in the only sense with which we are at present concerned, differs from "
         "most if not from all the arts and crafts represented in the Exhibition", "speaker": "9001"},
    ])
    read = read_source(manifest)
    report = check_rows(read.rows, read.bad, decode=decode, quiet=True)
    assert [(b.origin, b.reason) for b in report.bad] == [(f"{manifest}:3", "span past the end"), (f"{manifest}:4", "span past the end")]
    assert report.bad[0].message.endswith("the segment 8-13 s runs past the end of the 9.655 s recording; fix the row's offset "
                                          "and duration (or start and end), in seconds into the file)")
    assert [(u.id, round(u.extra["seconds"], 3)) for u in report.good] == [
        ("9001-1-0000@0.5-2.5", 2.0), ("9001-1-0000@3-5", 2.0), ("9001-1-0000@7.5-9.66", 2.155), ("9001-1-0000", 9.655)]
    assert report.repeats == 0 and not report.warnings


def test_a_segment_is_held_to_the_duration_bounds_and_its_file_is_not(speech_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("LORA_HOME", str(tmp_path / "home"))
    path = speech_dir / SPAN_CLIP
    rows = [Utterance("long", "s", "a", path, origin="m:1", span=Span(0.0, 6.0)),
            Utterance("ok", "s", "b", path, origin="m:2", span=Span(6.0, 8.0)),
            Utterance("short", "s", "c", path, origin="m:3", span=Span(8.0, 8.05)),
            Utterance("again", "s", "b", path, origin="m:4", span=Span(6.0, 8.0))]  # the same segment, text and speaker
    for decode in (True, False):  # the file (9.655 s > 5 s) is not "too long": its rows are its segments
        report = check_rows(rows, min_seconds=0.1, max_seconds=5.0, decode=decode, quiet=True, hygiene=None)
        assert [(b.id, b.reason) for b in report.bad] == [("long", "too long"), ("short", "too short")]
        assert [u.id for u in report.good] == ["ok", "again"] and report.repeats == 1
    other = [Utterance("ok", "s", "b", path, origin="m:1", span=Span(6.0, 8.0)),
             Utterance("other", "s", "another text", path, origin="m:2", span=Span(6.0, 8.0))]
    assert [(b.id, b.reason, b.detail) for b in check_rows(other, quiet=True, hygiene=None).bad] == [
        ("other", "duplicate audio", "same segment (6-8 s) of the file as 'ok' at m:1, with another transcript")]
