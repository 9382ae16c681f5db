"""read_source: every format and alias, whole-file errors as `file:line: ...`, bad rows kept for preflight."""

from __future__ import annotations

import csv
import io
import json
import re
import string
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lora.core.errors import UserError
from lora.data.manifest import AUDIO_KEYS, ID_KEYS, SPEAKER_KEYS, TEXT_KEYS, read_source
from messy_audio import write_audio, write_jsonl

# ---------------------------------------------------------------------------------------------
# whole-file problems: UserError naming file:line, what is wrong and what to do


FILE_ERRORS = [
    # (file name, content, message after "<path>")
    ("latin1.jsonl", b'{"audio": "a.wav", "text": "ok"}\n{"audio": "b.wav", "text": "caf\xe9"}\n',
     r":2: not UTF-8 \(byte 0xe9\); re-save the manifest as UTF-8"),
    ("latin1.csv", b"audio,text\na.wav,ok\nb.wav,na\xefve\n", r":3: not UTF-8 \(byte 0xef\)"),
    ("syntax.jsonl", b'{"audio": "a.wav"}\n\n{"audio": "b.wav",}\n',
     r":3: invalid JSON at column 19 \(Expecting property name enclosed in double quotes\); fix or delete that line"),
    ("truncated.jsonl", b'{"audio": "a.wav"}\n{"audio": "b.w', r":2: invalid JSON at column 11 \(Unterminated string"),
    ("syntax.json", b'[\n  {"audio": "a.wav"},\n  {"audio": "b.wav"}\n  {"audio": "c.wav"}\n]\n',
     r":4: invalid JSON at column 3 \(Expecting ',' delimiter\)"),
    ("list_as.jsonl", b'[\n  {"audio": "a.wav"},\n  {"audio" "b.wav"}\n]\n', r":3: invalid JSON at column 12"),
    ("array_line.jsonl", b'[{"audio": "a.wav", "text": "x"}]\n{"audio": "b.wav", "text": "y"}\n',
     r":1: line 1 is a JSON array, but \.jsonl needs one JSON object per line; rename the file to \.json \(a JSON list of "
     r"rows\) or write one object per line"),
    ("array_rows.jsonl", b'\n["a.wav", "x"]\n["b.wav", "y"]\n', r":2: line 2 is a JSON array, but \.jsonl needs one JSON object"),
    ("array_row.ndjson", b'["a.wav", "x"]\n', r":1: line 1 is a JSON array, but \.ndjson needs one JSON object per line"),
    ("object.json", b'{\n  "rows": [{"audio": "a.wav"}]\n}\n',
     r":1: expected a JSON list of objects, found one JSON object \(keys: rows\); put the rows in a top-level"),
    ("number.json", b"42\n", r":1: expected a JSON list of objects, found a JSON int"),
    ("noaudio.csv", b"name,text\na.wav,hello\n",
     r":1: no audio column \(expected one of audio, path, audio_filepath, file, file_name; found name, text\); rename"),
    ("nocols.csv", b"wav,caption\na.wav,hello\n",
     r":1: no audio column \(expected one of audio, path, audio_filepath, file, file_name; found wav, caption\); rename the column "
     r"that holds the audio paths, and the one that holds the transcripts \(one of text, transcript, sentence"),
    ("noaudio.tsv", b"\n\nwav\tsentence\na.wav\thi\n", r":3: no audio column .*found wav, sentence"),
    ("semicolon.csv", b"audio;text\na.wav;hi\n", r":1: no audio column .*found audio;text"),
    ("noaudio.jsonl", b'\n{"wav": "a.wav", "text": "x"}\n{"wav": "b.wav"}\n',
     r":2: no row has an audio field \(expected one of audio, path, audio_filepath, file, file_name; found wav, text\)"),
    ("header_only.csv", b"audio,text\n", r":1: only a header, no rows; add one row per utterance"),
    ("empty.jsonl", b"", r": empty manifest \(no rows\); add one row per utterance"),
    ("blank.json", b"  \n\n", r": empty manifest \(no rows\)"),
    ("empty_list.json", b"[]", r": empty manifest \(no rows\)"),
    ("comments_only.txt", b"# nothing here\n\n", r": empty manifest \(no rows\)"),
    ("data.xlsx", b"PK\x03\x04", r": unknown manifest extension '\.xlsx'; use \.jsonl, \.json, \.csv, \.tsv or \.txt"),
    ("manifest", b'{"audio": "a.wav"}\n', r": unknown manifest extension '\(none\)'"),
    ("clip.wav", b"RIFF", r": an audio file, not a manifest; list audio paths in a \.txt file"),
    ("data.parquet", b"PAR1", r": a Parquet dataset file, not a manifest; `lora train`, `eval` and `stt` read it as --dataset .*data\.parquet$"),
    ("data-00000-of-00001.arrow", b"", r": an Arrow dataset file, not a manifest; .* read it as --dataset "),
    ("1089-134686.trans.txt", b"1089-134686-0000 HELLO\n", r": a LibriSpeech transcript file; pass the LibriSpeech root"),
]


@pytest.mark.parametrize("name,content,message", FILE_ERRORS, ids=[f[0] for f in FILE_ERRORS])
def test_whole_file_problems_are_one_line_user_errors(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(UserError) as err:
        read_source(path)
    text = str(err.value)
    assert "\n" not in text
    assert text.startswith(str(path)), text
    assert re.match(message, text[len(str(path)):]), text


def test_missing_source_and_unusable_folder(tmp_path):
    with pytest.raises(UserError, match=r"nowhere\.jsonl: no such file or folder; pass a manifest .* or audio files with same-name "
                                        r"\.txt/\.lab transcripts"):
        read_source(tmp_path / "nowhere.jsonl")
    with pytest.raises(UserError, match=r"neither a LibriSpeech layout .*, a manifest\.jsonl, nor audio files with same-name "
                                         r"\.txt transcripts beside them"):
        read_source(tmp_path)
    (tmp_path / "a" / "1" / "2").mkdir(parents=True)
    (tmp_path / "a" / "1" / "2" / "1-2.trans.txt").write_text("1-2-0000 HI\n")
    with pytest.raises(UserError, match=r"LibriSpeech transcripts found but no audio next to them"):
        read_source(tmp_path)


@pytest.mark.parametrize("files, kind", [
    (("state.json", "dataset_info.json"), "saved with save_to_disk"),
    (("clips/a.mp3", "train.tsv"), "a Common Voice release"),  # was "neither a LibriSpeech layout ..."
    (("data/train-00000-of-00001.parquet",), "Parquet files"),
])
def test_a_dataset_folder_given_as_a_manifest_names_dataset(tmp_path, files, kind):
    for name in files:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("{}")
    with pytest.raises(UserError, match=rf": a Hugging Face-style dataset \({kind}\), not a manifest folder; `lora train`, "
                                        r"`eval` and `stt` read it as --dataset "):
        read_source(tmp_path)


# ---------------------------------------------------------------------------------------------
# rows that cannot be interpreted: kept as BadRow for preflight


def test_csv_rows_with_the_wrong_field_count_are_bad_rows(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text('audio,text,speaker\na.wav,hello,s1\nb.wav,hello\nc.wav,hello, world,s2\n'
                    'd.wav,"never closed,s3\ne.wav,x,s4\n')
    read = read_source(path)
    assert [u.id for u in read.rows] == ["a"]
    assert [(b.origin, b.reason, b.detail) for b in read.bad] == [
        (f"{path}:3", "wrong number of fields", "2 fields but the header has 3"),
        (f"{path}:4", "wrong number of fields", "4 fields but the header has 3 (an unquoted delimiter in a field?)"),
        (f"{path}:5", "wrong number of fields", "2 fields but the header has 3 (an unclosed quote?)"),
    ]


def test_jsonl_rows_that_are_not_objects(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"audio": "a.wav"}\n"b.wav"\nnull\n')
    read = read_source(path)
    assert [(b.origin, b.reason) for b in read.bad] == [(f"{path}:2", "not an object"), (f"{path}:3", "not an object")]
    assert "row is a JSON str" in read.bad[0].detail and "row is a JSON null" in read.bad[1].detail


# ---------------------------------------------------------------------------------------------
# formats and aliases


def test_jsonl_aliases_extra_fields_and_origins(tmp_path):
    path = write_jsonl(tmp_path / "m.jsonl", [
        {"ID": "u1", "Audio_Filepath": "a.wav", "Transcript": "hello", "Speaker_ID": 7, "subset": "x", "seconds": 1.5},
        {"utt_id": "u2", "file": "sub/b.flac", "sentence": "world", "speaker": "s2"},
        {"path": "c.wav"},
    ])
    read = read_source(path)
    assert read.kind == "jsonl" and read.source == str(path) and not read.bad
    u1, u2, u3 = read.rows
    assert (u1.id, u1.text, u1.speaker, u1.subset, u1.audio) == ("u1", "hello", "7", "x", tmp_path / "a.wav")
    assert u1.extra["seconds"] == 1.5 and u1.extra["has_text"] is True
    assert (u2.id, u2.text, u2.audio, u2.origin) == ("u2", "world", tmp_path / "sub" / "b.flac", f"{path}:2")
    assert (u3.id, u3.text, u3.extra["has_text"]) == ("c", "", False)  # id from the file name; no text field


def test_nan_in_a_jsonl_field_is_a_missing_value(tmp_path):
    """Python's json (and pandas' to_json of a float column) write a missing value as NaN: no text, not "nan"."""
    path = tmp_path / "m.jsonl"
    path.write_text('{"path": "a.wav", "text": NaN, "speaker": NaN}\n')
    (u,) = read_source(path).rows
    assert (u.text, u.speaker) == ("", "")


def test_other_tools_column_names(tmp_path):
    """Hugging Face audiofolder's metadata.csv (file_name, transcription) and Common Voice's speaker (client_id)."""
    path = tmp_path / "metadata.csv"
    path.write_text("file_name,transcription,client_id\nclips/a.mp3,Hello there.,c0ffee\n")
    (u,) = read_source(path).rows
    assert (u.id, u.text, u.speaker, u.audio) == ("a", "Hello there.", "c0ffee", tmp_path / "clips" / "a.mp3")


def test_a_json_list_of_objects_named_jsonl_is_read_as_a_list(tmp_path):
    """People save JSON lists as .jsonl (formats.FORMATS); only a first line that is an array of anything else, or an
    array with more lines after it, is refused (FILE_ERRORS)."""
    for text in ('[{"audio": "a.wav", "text": "x"}, {"audio": "b.wav", "text": "y"}]\n',
                 '[\n  {"audio": "a.wav", "text": "x"},\n  {"audio": "b.wav", "text": "y"}\n]\n'):
        (tmp_path / "m.jsonl").write_text(text)
        assert [u.id for u in read_source(tmp_path / "m.jsonl").rows] == ["a", "b"]


def test_json_list_rows_know_their_lines(tmp_path):
    path = tmp_path / "m.json"
    path.write_text('[\n  {"audio": "a.wav", "text": "x"},\n\n  {\n    "audio": "b.wav",\n    "text": "[y]"\n  }\n]\n')
    read = read_source(path)
    assert read.kind == "json"
    assert [(u.id, u.origin) for u in read.rows] == [("a", f"{path}:2"), ("b", f"{path}:4")]


def test_tsv_keeps_quotes_and_csv_handles_quoted_commas_and_bom(tmp_path):
    tsv = tmp_path / "m.tsv"
    tsv.write_text('client\tpath\tsentence\nc1\ta.mp3\tHe said "hi", twice\n')
    assert read_source(tsv).rows[0].text == 'He said "hi", twice'
    comma = tmp_path / "m.csv"
    comma.write_bytes('\ufeffaudio,text\r\na.wav,"one, two ""three"""\r\n'.encode())
    row = read_source(comma).rows[0]
    assert (row.text, row.origin, row.extra["has_text"]) == ('one, two "three"', f"{comma}:2", True)


def test_path_list_relative_absolute_comments(tmp_path):
    listing = tmp_path / "lists" / "audio.txt"
    listing.parent.mkdir()
    listing.write_text(f"# my clips\n../a.wav\n\n  {tmp_path / 'b.flac'}  \nsub dir/c d.wav\r\n")
    read = read_source(listing)
    assert read.kind == "list"
    assert [(u.id, u.audio, u.origin) for u in read.rows] == [
        ("a", listing.parent / "../a.wav", f"{listing}:2"),
        ("b", tmp_path / "b.flac", f"{listing}:4"),
        ("c d", listing.parent / "sub dir/c d.wav", f"{listing}:5"),
    ]
    assert all(u.text == "" and u.extra["has_text"] is False for u in read.rows)


def test_derived_ids_that_clash_use_the_relative_path(tmp_path):
    listing = tmp_path / "l.txt"
    listing.write_text("x/1.wav\ny/1.wav\nz/2.wav\nz/2.wav\n")
    assert [u.id for u in read_source(listing).rows] == ["x/1", "y/1", "z/2", "z/2"]  # the last pair: duplicates


def test_derived_ids_of_one_name_in_two_formats_keep_the_extension(tmp_path):
    listing = tmp_path / "l.txt"
    listing.write_text("x/1.wav\nx/1.mp3\ny/1.wav\n")  # x/1.wav and x/1.mp3 are two recordings, not a duplicate
    assert [u.id for u in read_source(listing).rows] == ["x/1.wav", "x/1.mp3", "y/1"]


def test_inline_audio_and_hugging_face_dicts(tmp_path):
    path = write_jsonl(tmp_path / "m.jsonl", [
        {"audio": [0.0, 0.5, -0.5], "sampling_rate": 8000, "text": "x"},
        {"audio": [[0.1, 0.2], [0.3, 0.4]], "sr": "44100", "text": "y"},
        {"audio": {"array": [0.0] * 3, "sampling_rate": 22050}, "text": "z"},
        {"audio": {"path": "p.wav"}, "text": "w"},
    ])
    a, b, c, d = read_source(path).rows
    assert a.audio.dtype == np.float32 and a.audio.tolist() == [0.0, 0.5, -0.5] and a.sampling_rate == 8000
    assert a.id == "m-1" and b.audio.shape == (2, 2) and b.sampling_rate == 44100
    assert c.sampling_rate == 22050 and d.audio == tmp_path / "p.wav"


def test_librispeech_folder_wins_over_its_manifest(tmp_path):
    chapter = tmp_path / "dev-clean" / "12" / "34"
    write_audio(chapter / "12-34-0000.flac")
    (chapter / "12-34.trans.txt").write_text("12-34-0000 HELLO THERE\n")
    write_jsonl(tmp_path / "manifest.jsonl", [{"id": "other", "audio": "dev-clean/12/34/12-34-0000.flac"}])
    read = read_source(tmp_path)
    assert read.kind == "librispeech" and [u.id for u in read.rows] == ["12-34-0000"]
    assert read.rows[0].origin == f"{chapter / '12-34.trans.txt'}:1"
    assert read_source(tmp_path / "manifest.jsonl").rows[0].id == "other"  # the file itself when named


def test_a_librispeech_transcript_not_in_utf8_is_its_file_and_line(tmp_path):
    chapter = tmp_path / "dev-clean" / "12" / "34"
    write_audio(chapter / "12-34-0000.flac")
    write_audio(chapter / "12-34-0001.flac")
    (chapter / "12-34.trans.txt").write_bytes(b"12-34-0000 HELLO\n12-34-0001 CAF\xc9\n")
    with pytest.raises(UserError, match=r"12-34\.trans\.txt:2: not UTF-8 \(byte 0xc9\); re-save the transcript file as UTF-8"):
        read_source(tmp_path)


def test_folder_with_only_a_manifest(tmp_path):
    (tmp_path / "manifest.csv").write_text("audio,text\na.wav,hi\n")
    read = read_source(tmp_path)
    assert (read.kind, read.source, read.rows[0].audio) == ("csv", str(tmp_path / "manifest.csv"), tmp_path / "a.wav")


def test_a_relative_path_written_on_windows_is_read_with_slashes(tmp_path):
    write_audio(tmp_path / "clips" / "a.wav")
    (tmp_path / "m.jsonl").write_text('{"audio": "clips\\\\a.wav", "text": "hi"}\n{"audio": "gone\\\\b.wav", "text": "x"}\n')
    rows = read_source(tmp_path / "m.jsonl").rows
    assert rows[0].audio == tmp_path / "clips" / "a.wav"
    assert rows[1].audio == tmp_path / "gone\\b.wav"  # neither exists: kept as written, preflight says so
    from lora.data.audio_probe import probe_audio

    probe = probe_audio(rows[1].audio, 16_000, 0.1, 30.0)
    assert probe.reason == "missing file" and probe.detail.endswith(
        "it has backslashes: a Windows path? write it with / separators, relative to the manifest")


def test_folder_of_audio_with_transcripts_beside_it(tmp_path):
    write_audio(tmp_path / "alice" / "take1.wav")
    (tmp_path / "alice" / "take1.txt").write_text("Hello there,\n  general Kenobi.\n")
    write_audio(tmp_path / "alice" / "take2.flac")
    (tmp_path / "alice" / "take2.lab").write_text("second take")  # Montreal Forced Aligner's name
    write_audio(tmp_path / "bob" / "sub" / "x.wav")
    (tmp_path / "bob" / "sub" / "x.txt").write_text("nested")
    write_audio(tmp_path / "top.wav")
    (tmp_path / "top.txt").write_text("at the top")
    write_audio(tmp_path / "bob" / "lonely.wav")  # no transcript beside it
    (tmp_path / "bob" / "voice memo.m4a").write_bytes(b"not decoded here")  # nor this one (ffmpeg's format)
    write_audio(tmp_path / "bob" / "latin1.wav")
    (tmp_path / "bob" / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    write_audio(tmp_path / "carol" / "REC_0001.WAV")  # as a recorder or Windows tool names them
    (tmp_path / "carol" / "rec_0001.TXT").write_text("any case")
    read = read_source(tmp_path)
    assert read.kind == "sidecar" and read.source == str(tmp_path)
    rows = {u.id: u for u in read.rows}
    assert sorted(rows) == ["alice/take1", "alice/take2", "bob/sub/x", "carol/REC_0001", "top"]
    assert rows["carol/REC_0001"].text == "any case" and rows["carol/REC_0001"].speaker == "carol"
    assert rows["alice/take1"].text == "Hello there, general Kenobi." and rows["alice/take1"].speaker == "alice"
    assert rows["alice/take2"].text == "second take"
    assert rows["bob/sub/x"].speaker == "bob/sub" and rows["top"].speaker == ""
    assert rows["top"].audio == tmp_path / "top.wav" and rows["top"].origin == f"{tmp_path / 'top.txt'}:1"
    bad = {b.id: b for b in read.bad}
    assert (bad["bob/lonely"].reason, bad["bob/lonely"].detail) == ("no transcript", "expected lonely.txt beside it")
    assert bad["bob/voice memo"].detail == "expected voice memo.txt beside it"
    assert bad["bob/latin1"].reason == "unreadable transcript" and "not UTF-8" in bad["bob/latin1"].detail


def test_english_subtitles_named_with_their_language_are_the_transcript(tmp_path):
    cue = "1\n00:00:00,000 --> 00:00:00,500\n{}\n\n"
    write_audio(tmp_path / "Lecture 1.2 [x1].wav")  # as yt-dlp names a download and its captions
    (tmp_path / "Lecture 1.2 [x1].en-orig.vtt").write_text("WEBVTT\n\n00:00.000 --> 00:00.500\nauto captions\n")
    write_audio(tmp_path / "both.wav")
    (tmp_path / "both.txt").write_text("named for the audio")
    (tmp_path / "both.en.srt").write_text(cue.format("tagged"))
    write_audio(tmp_path / "french.wav")
    (tmp_path / "french.fr.srt").write_text(cue.format("en français"))
    read = read_source(tmp_path)
    assert {u.id: u.text for u in read.rows} == {"Lecture 1.2 [x1]": "auto captions", "both": "named for the audio"}
    assert [(b.id, b.reason) for b in read.bad] == [("french", "no transcript")]


def test_a_manifest_in_the_folder_wins_over_transcripts_beside_the_audio(tmp_path):
    write_audio(tmp_path / "a.wav")
    (tmp_path / "a.txt").write_text("beside")
    write_jsonl(tmp_path / "manifest.jsonl", [{"audio": "a.wav", "text": "in the manifest"}])
    assert [u.text for u in read_source(tmp_path).rows] == ["in the manifest"]


def test_shared_manifest_and_folder_agree(speech_dir):
    by_manifest = read_source(speech_dir / "manifest.jsonl")
    by_folder = read_source(speech_dir)
    assert len(by_manifest.rows) == len(by_folder.rows) == 326 and not by_manifest.bad
    assert {u.id for u in by_manifest.rows} == {u.id for u in by_folder.rows}
    assert {Path(u.audio).resolve() for u in by_manifest.rows} == {Path(u.audio).resolve() for u in by_folder.rows}


# ---------------------------------------------------------------------------------------------
# property: any rows, any aliases, any unicode text, written as JSONL/CSV/TSV, read back the same

NAME = st.text(alphabet=string.ascii_letters + string.digits + "_-éßø中", min_size=1, max_size=12)
ID = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp")), min_size=1, max_size=12)
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
TSV_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\t\n\r"), max_size=40)


@st.composite
def manifests(draw):
    fmt = draw(st.sampled_from(["jsonl", "csv", "tsv"]))
    n = draw(st.integers(1, 8))
    ids = draw(st.lists(ID, min_size=n, max_size=n, unique=True))
    names = draw(st.lists(NAME, min_size=n, max_size=n))
    texts = draw(st.lists(TSV_TEXT if fmt == "tsv" else TEXT, min_size=n, max_size=n))
    folders = draw(st.lists(st.sampled_from(["", "sub/", "a b/ç/"]), min_size=n, max_size=n))
    paths = [f"{folder}{name}.wav" for folder, name in zip(folders, names)]
    keys = [draw(st.sampled_from(group)) for group in (ID_KEYS, AUDIO_KEYS, TEXT_KEYS, SPEAKER_KEYS)]
    if fmt == "jsonl":  # JSON lines may use a different alias (and case) on every row
        rows = [{draw(st.sampled_from([*ID_KEYS, "ID"])): i, draw(st.sampled_from(AUDIO_KEYS)): p,
                 draw(st.sampled_from([*TEXT_KEYS, "Text"])): t, keys[3]: "spk"} for i, p, t in zip(ids, paths, texts)]
        return fmt, "".join(json.dumps(r, ensure_ascii=draw(st.booleans())) + "\n" for r in rows), ids, paths, texts
    table = [keys] + [[i, p, t, "spk"] for i, p, t in zip(ids, paths, texts)]
    if fmt == "tsv":
        return fmt, "".join("\t".join(row) + "\n" for row in table), ids, paths, texts
    buffer = io.StringIO(newline="")
    csv.writer(buffer).writerows(table)
    return fmt, buffer.getvalue(), ids, paths, texts


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=manifests())
def test_rows_round_trip_through_every_table_format(tmp_path, case):
    fmt, content, ids, paths, texts = case
    path = tmp_path / f"m.{fmt}"
    path.write_bytes(content.encode("utf-8"))
    read = read_source(path)
    assert not read.bad
    assert [u.id for u in read.rows] == ids
    assert [u.text for u in read.rows] == texts
    assert [u.audio for u in read.rows] == [tmp_path / p for p in paths]
    assert all(u.speaker == "spk" and u.extra["has_text"] for u in read.rows)
    assert [u.origin.rsplit(":", 1)[0] for u in read.rows] == [str(path)] * len(ids)


# ---------------------------------------------------------------------------------------------
# segments of a longer recording: NeMo's offset + duration, or start/end (seconds into the file)

LJ_CLIP = "ljspeech/9001/1/9001-1-0000.flac"  # 9.655 s, 16 kHz
LIBRI_CLIP = "dev-clean/3752/4944/3752-4944-0000.flac"


def _file(speech_dir: Path, rel: str) -> tuple[Path, np.ndarray, int]:
    path = speech_dir / rel
    samples, rate = sf.read(path, dtype="float32")
    return path, samples, rate


@pytest.mark.parametrize("rel", [LJ_CLIP, LIBRI_CLIP])
def test_nemo_offset_and_duration_rows_are_that_span_of_the_file_to_the_sample(speech_dir, tmp_path, rel):
    path, whole, rate = _file(speech_dir, rel)
    assert rate == 16_000
    spans = [(0.5, 2.0), (3.0, 2.0), (1.25, 0.75)]
    manifest = write_jsonl(tmp_path / "nemo.jsonl", [{"audio_filepath": str(path), "offset": o, "duration": d, "text": f"t{i}"}
                                                     for i, (o, d) in enumerate(spans)])
    rows = read_source(manifest).rows
    for u, (offset, duration) in zip(rows, spans, strict=True):
        assert (u.span.start, u.span.end) == (offset, offset + duration)
        first = round(offset * rate)
        assert np.array_equal(u.samples(), whole[first:first + round(duration * rate)])  # exact samples, only the span
        assert "offset" not in u.extra and "duration" not in u.extra  # read as the span, not left as unknown fields
    assert len({u.id for u in rows}) == 3 and rows[0].id == f"{path.stem}@0.5-2.5"  # one id per segment, naming it


def test_start_and_end_rows_are_read_like_offset_and_duration(speech_dir, tmp_path):
    path, whole, rate = _file(speech_dir, LJ_CLIP)
    csv_manifest = tmp_path / "segments.csv"  # CSV: the seconds arrive as text
    csv_manifest.write_text(f"path,start,end,text\n{path},3.0,5.0,a\n{path},5,7.5,b\n{path},8.25,,c\n")
    a, b, c = read_source(csv_manifest).rows
    assert np.array_equal(a.samples(), whole[48_000:80_000]) and np.array_equal(b.samples(), whole[80_000:120_000])
    assert np.array_equal(c.samples(), whole[132_000:])  # no end: to the end of the file
    assert [u.id for u in (a, b, c)] == ["9001-1-0000@3-5", "9001-1-0000@5-7.5", "9001-1-0000@8.25-end"]
    nemo = read_source(write_jsonl(tmp_path / "n.jsonl", [{"audio_filepath": str(path), "offset": 3.0, "duration": 2.0}])).rows[0]
    assert nemo.span == a.span and nemo.id == a.id


def test_spans_of_no_length_or_before_the_start_are_bad_rows_with_their_line(speech_dir, tmp_path):
    path = speech_dir / LJ_CLIP
    manifest = write_jsonl(tmp_path / "m.jsonl", [
        {"audio_filepath": str(path), "offset": 1.0, "duration": 2.0, "text": "good"},
        {"audio_filepath": str(path), "offset": 1.0, "duration": 0, "text": "zero"},
        {"audio_filepath": str(path), "offset": 1.0, "duration": -0.5, "text": "negative"},
        {"path": str(path), "start": 4.0, "end": 3.0, "text": "backwards"},
        {"path": str(path), "start": -1.0, "end": 3.0, "text": "before the start"},
        {"path": str(path), "start": "soon", "end": 3.0, "text": "not seconds"},
    ])
    read = read_source(manifest)
    assert [u.text for u in read.rows] == ["good"]
    messages = [b.message for b in read.bad]
    assert [(b.origin, b.reason) for b in read.bad] == [(f"{manifest}:{n}", "bad span") for n in range(2, 7)]
    assert messages[0] == (f"{manifest}:2: bad span (offset 1 s, duration 0 s: 0 s long; a segment needs a positive length: "
                           "fix the row's offset and duration (seconds into the file) or delete the row)")
    assert "-0.5 s long" in messages[1] and "start 4 s, end 3 s: -1 s long" in messages[2]
    assert "starts before the file does" in messages[3] and "start 'soon' is not a number of seconds" in messages[4]


def test_rows_of_whole_files_are_read_as_before(speech_dir, tmp_path):
    """`duration` alone (NeMo writes it on every row) and an offset of 0 without one are the whole file, as before."""
    path, whole, _ = _file(speech_dir, LJ_CLIP)
    manifest = write_jsonl(tmp_path / "m.jsonl", [{"audio_filepath": str(path), "duration": 9.655, "text": "a"},
                                                  {"audio_filepath": str(path), "duration": 4.0, "offset": 0, "id": "x", "text": "b"},
                                                  {"audio_filepath": str(path), "offset": 0, "id": "y", "text": "c"}])
    a, b, c = read_source(manifest).rows
    assert (a.id, a.span, a.extra["duration"]) == ("9001-1-0000", None, 9.655) and np.array_equal(a.samples(), whole)
    assert b.span is not None and len(b.samples()) == 64_000  # an offset says it is NeMo's segment: its duration counts
    assert (c.span, c.extra["offset"]) == (None, 0) and np.array_equal(c.samples(), whole)
