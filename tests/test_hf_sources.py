"""Hugging Face-style datasets built from the real clips of ../shared/speech read back as utterances."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import soundfile as sf

from lora.core.audio import load_audio
from lora.core.errors import UserError
from lora.data import hf_sources
from lora.data.hf_sources import (
    DatasetRead,
    HFSourceOptions,
    detect_dataset_format,
    read_dataset,
)

SUBSETS = ("test-clean", "dev-clean", "ljspeech", "jfk")
PER_SUBSET = 2


@pytest.fixture(scope="module")
def clips(speech_dir) -> list[dict]:
    """A few real utterances per subset: id, absolute path, text, speaker."""
    rows = [json.loads(line) for line in (speech_dir / "manifest.jsonl").read_text().splitlines() if line.strip()]
    chosen = []
    for subset in SUBSETS:
        chosen += [r for r in rows if r["subset"] == subset][:PER_SUBSET]
    for row in chosen:
        row["abs"] = speech_dir / row["path"]
    return chosen


def _check_roundtrip(read: DatasetRead, clips: list[dict], kind: str, with_speaker: bool = True) -> None:
    assert read.kind == kind
    assert read.bad == ()
    by_id = {u.id: u for u in read.rows}
    assert sorted(by_id) == sorted(c["id"] for c in clips)
    for clip in clips:
        utt = by_id[clip["id"]]
        assert utt.text == clip["text"]
        if with_speaker:
            assert utt.speaker == clip["speaker"]
        assert isinstance(utt.audio, bytes | type(clip["abs"])), type(utt.audio)  # lazy: never decoded arrays
        np.testing.assert_array_equal(utt.samples(), load_audio(clip["abs"]))


def _hf_dataset(clips, audio_bytes: bool = True):
    import datasets

    audio = [{"bytes": c["abs"].read_bytes(), "path": c["abs"].name} if audio_bytes else str(c["abs"]) for c in clips]
    table = {"id": [c["id"] for c in clips], "audio": audio, "text": [c["text"] for c in clips],
             "speaker_id": [c["speaker"] for c in clips]}
    # Cast after building: Features.encode_example would need torchcodec; the Arrow cast does not.
    return datasets.Dataset.from_dict(table).cast_column("audio", datasets.Audio(decode=False))


def test_save_to_disk_dataset(clips, tmp_path):
    _hf_dataset(clips).save_to_disk(str(tmp_path / "ds"))
    assert detect_dataset_format(tmp_path / "ds") == "save_to_disk"
    read = read_dataset(str(tmp_path / "ds"))
    _check_roundtrip(read, clips, "save_to_disk")
    assert all(isinstance(u.audio, bytes) for u in read.rows)
    assert read.rows[3].origin.endswith("data-00000-of-00001.arrow:row 3")


def test_save_to_disk_dataset_dict_picks_split(clips, tmp_path):
    import datasets

    dd = datasets.DatasetDict({"train": _hf_dataset(clips[:5]), "test": _hf_dataset(clips[5:])})
    dd.save_to_disk(str(tmp_path / "dd"))
    assert detect_dataset_format(tmp_path / "dd") == "save_to_disk"
    _check_roundtrip(read_dataset(str(tmp_path / "dd")), clips[:5], "save_to_disk")
    test = read_dataset(str(tmp_path / "dd"), HFSourceOptions(split="test"))
    _check_roundtrip(test, clips[5:], "save_to_disk")
    assert {u.subset for u in test.rows} == {"test"}
    with pytest.raises(UserError, match="no split 'validation' .*splits: train, test"):
        read_dataset(str(tmp_path / "dd"), HFSourceOptions(split="validation"))


def test_a_split_asked_of_a_source_without_splits_is_refused(clips, tmp_path):
    """A single saved Dataset, or an audiofolder whose metadata sits at its top: "train" only (was: any
    --dataset-split silently read the whole source)."""
    _hf_dataset(clips).save_to_disk(str(tmp_path / "one"))
    _check_roundtrip(read_dataset(str(tmp_path / "one")), clips, "save_to_disk")
    with pytest.raises(UserError, match=r"one: names no splits .*--dataset-split 'test'"):
        read_dataset(str(tmp_path / "one"), HFSourceOptions(split="test"))


def test_save_to_disk_with_no_rows_is_one_line(clips, tmp_path):
    """datasets itself cannot load a split saved with no rows (IndexError); the other splits still read."""
    import datasets

    empty = _hf_dataset(clips).select([])
    empty.save_to_disk(str(tmp_path / "empty"))
    with pytest.raises(UserError, match=r"empty: saved with no rows \(its state.json lists no data files\); save the "
                                        r"dataset with rows$"):
        read_dataset(str(tmp_path / "empty"))
    datasets.DatasetDict({"train": _hf_dataset(clips), "test": empty}).save_to_disk(str(tmp_path / "dd"))
    _check_roundtrip(read_dataset(str(tmp_path / "dd")), clips, "save_to_disk")
    with pytest.raises(UserError, match=r"dd/test: saved with no rows .*, or pass another --dataset-split$"):
        read_dataset(str(tmp_path / "dd"), HFSourceOptions(split="test"))
    with pytest.raises(UserError, match=r"no split 'dev' \(splits: train, test\); pass --dataset-split with one of them"):
        read_dataset(str(tmp_path / "dd"), HFSourceOptions(split="dev"))


def test_save_to_disk_shards_name_file_and_row(clips, tmp_path):
    _hf_dataset(clips).save_to_disk(str(tmp_path / "ds"), num_shards=2)
    read = read_dataset(str(tmp_path / "ds"))
    _check_roundtrip(read, clips, "save_to_disk")
    assert read.rows[-1].origin.endswith(f"data-00001-of-00002.arrow:row {len(clips) - 1 - (len(clips) + 1) // 2}")


def test_parquet_file_glob_and_folder(clips, tmp_path):
    folder = tmp_path / "pq"
    folder.mkdir()
    _hf_dataset(clips[:4]).to_parquet(str(folder / "train-00000.parquet"))
    _hf_dataset(clips[4:]).to_parquet(str(folder / "train-00001.parquet"))
    assert detect_dataset_format(folder / "train-00000.parquet") == "parquet"
    _check_roundtrip(read_dataset(str(folder / "train-00000.parquet")), clips[:4], "parquet")
    _check_roundtrip(read_dataset(str(folder / "train-*.parquet")), clips, "parquet")
    read = read_dataset(str(folder))
    _check_roundtrip(read, clips, "parquet")
    assert read.rows[5].origin == f"{folder / 'train-00001.parquet'}:row 1"


def test_a_parquet_folder_laid_out_as_the_hub_is_read_split_by_split(clips, tmp_path):
    """`data/train-00000-of-00001.parquet` beside `data/test-...`, as a hub dataset downloads: the split asked for
    only (every file was read, the test rows trained on); a folder that names no split is all "train"."""
    data = tmp_path / "hubstyle" / "data"
    data.mkdir(parents=True)
    _hf_dataset(clips[:4]).to_parquet(str(data / "train-00000-of-00001.parquet"))
    _hf_dataset(clips[4:]).to_parquet(str(data / "test-00000-of-00001.parquet"))
    _check_roundtrip(read_dataset(str(data.parent)), clips[:4], "parquet")
    _check_roundtrip(read_dataset(str(data.parent), HFSourceOptions(split="test")), clips[4:], "parquet")
    with pytest.raises(UserError, match=r"hubstyle: no split 'validation' \(splits: train, test\); pass --dataset-split"):
        read_dataset(str(data.parent), HFSourceOptions(split="validation"))
    unsplit = tmp_path / "unsplit"
    unsplit.mkdir()
    _hf_dataset(clips).to_parquet(str(unsplit / "part-a.parquet"))
    _check_roundtrip(read_dataset(str(unsplit)), clips, "parquet")
    for spec in (unsplit, unsplit / "part-a.parquet", f"{unsplit}/*.parquet"):  # named no split: "test" is not in it
        with pytest.raises(UserError, match=r"names no splits .*--dataset-split 'test' cannot be chosen"):
            read_dataset(str(spec), HFSourceOptions(split="test"))


def test_arrow_files_from_the_datasets_cache_format(clips, tmp_path):
    _hf_dataset(clips).save_to_disk(str(tmp_path / "ds"))
    arrow = next((tmp_path / "ds").glob("*.arrow"))
    assert detect_dataset_format(arrow) == "arrow"
    _check_roundtrip(read_dataset(str(arrow)), clips, "arrow")


def test_parquet_with_path_strings_relative_to_the_file(clips, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    for clip in clips:
        shutil.copy(clip["abs"], tmp_path / clip["abs"].name)
    table = pa.table({"path": [c["abs"].name for c in clips], "sentence": [c["text"] for c in clips],
                      "speaker": [c["speaker"] for c in clips]})
    pq.write_table(table, tmp_path / "data.parquet")
    read = read_dataset(str(tmp_path / "data.parquet"))
    _check_roundtrip(read, clips, "parquet")
    assert all(u.extra["derived_id"] for u in read.rows)


def test_column_options_and_missing_column_error(clips, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"clip": [{"bytes": c["abs"].read_bytes(), "path": None} for c in clips],
                      "words": [c["text"] for c in clips], "who": [c["speaker"] for c in clips],
                      "key": [c["id"] for c in clips]})
    pq.write_table(table, tmp_path / "odd.parquet")
    with pytest.raises(UserError, match=r"no audio column \(expected one of .*found clip, words, who, key\)"):
        read_dataset(str(tmp_path / "odd.parquet"))
    options = HFSourceOptions(audio_column="clip", text_column="words", speaker_column="who")
    _check_roundtrip(read_dataset(str(tmp_path / "odd.parquet"), options), clips, "parquet")
    with pytest.raises(UserError, match="no column 'nope' for the transcript"):
        read_dataset(str(tmp_path / "odd.parquet"), HFSourceOptions(audio_column="clip", text_column="nope"))


def test_bad_rows_are_quarantined_with_file_and_row(clips, tmp_path):
    import datasets

    ds = _hf_dataset(clips[:3]).to_dict()
    ds["audio"][1] = None
    ds["text"][2] = None
    bad = datasets.Dataset.from_dict(ds).cast_column("audio", datasets.Audio(decode=False))
    bad.to_parquet(str(tmp_path / "bad.parquet"))
    read = read_dataset(str(tmp_path / "bad.parquet"))
    assert [u.id for u in read.rows] == [clips[0]["id"]]
    assert [(b.origin, b.reason, b.id) for b in read.bad] == [
        (f"{tmp_path / 'bad.parquet'}:row 1", "no audio", clips[1]["id"]),
        (f"{tmp_path / 'bad.parquet'}:row 2", "no text", clips[2]["id"]),
    ]


def test_nan_text_and_speaker_are_missing_values_not_words(clips, tmp_path):
    """pandas writes a missing value of a float column as NaN: a row without its transcript, not one saying "nan"."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"audio": [str(c["abs"]) for c in clips[:2]], "text": [float("nan"), 1.5],
                             "speaker_id": [float("nan"), float("nan")]}), tmp_path / "nan.parquet")
    read = read_dataset(str(tmp_path / "nan.parquet"))
    assert [(b.origin, b.reason, b.detail) for b in read.bad] == [
        (f"{tmp_path / 'nan.parquet'}:row 0", "no text", "the 'text' field is NaN")]
    assert [(u.text, u.speaker) for u in read.rows] == [("1.5", "")]
    pq.write_table(pa.table({"audio": [str(c["abs"]) for c in clips[:2]], "text": ["a", "b"],
                             "speaker_id": [1089.0, float("nan")]}), tmp_path / "gap.parquet")  # ints with a gap: floats
    assert [u.speaker for u in read_dataset(str(tmp_path / "gap.parquet")).rows] == ["1089", ""]  # not "1089.0"


@pytest.mark.parametrize("audio, rate", [({"array": [0.0] * 8}, None), ({"array": [0.0] * 8, "sampling_rate": 8000}, 8000)])
def test_inline_array_needs_its_sampling_rate(audio, rate):
    """A decoded `datasets.Audio` value always says its rate; an array without one is a bad row, not 16 kHz."""
    row = hf_sources.interpret_row({"audio": audio, "text": "a"}, hf_sources.Columns("audio", "text", None, None), "m.jsonl:3", None)
    if rate is None:
        assert (row.origin, row.reason) == ("m.jsonl:3", "no sampling rate") and 'no "sampling_rate"; add it' in row.detail
    else:
        assert row.sampling_rate == rate and row.audio.shape == (8,)


@pytest.mark.parametrize("metadata", ["metadata.csv", "metadata.jsonl"])
def test_audiofolder(clips, tmp_path, metadata):
    root = tmp_path / "af"
    (root / "audio").mkdir(parents=True)
    records = []
    for clip in clips:
        shutil.copy(clip["abs"], root / "audio" / clip["abs"].name)
        records.append({"file_name": f"audio/{clip['abs'].name}", "text": clip["text"], "speaker_id": clip["speaker"]})
    if metadata.endswith(".csv"):
        with open(root / metadata, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(records[0]))
            writer.writeheader()
            writer.writerows(records)
    else:
        (root / metadata).write_text("".join(json.dumps(r) + "\n" for r in records))
    assert detect_dataset_format(root) == "audiofolder"
    read = read_dataset(str(root))
    _check_roundtrip(read, clips, "audiofolder")
    assert read.rows[0].origin == f"{root / metadata}:2" if metadata.endswith(".csv") else f"{root / metadata}:1"
    with pytest.raises(UserError, match=rf"{metadata}: names no splits .*--dataset-split 'test'"):
        read_dataset(str(root), HFSourceOptions(split="test"))  # metadata at the top: all "train"


def test_audiofolder_split_subfolder_and_no_text_column(clips, tmp_path):
    root = tmp_path / "af"
    (root / "test").mkdir(parents=True)
    shutil.copy(clips[0]["abs"], root / "test" / "a.flac")
    (root / "test" / "metadata.csv").write_text(f"file_name,transcription\na.flac,{clips[0]['text']}\n")
    read = read_dataset(str(root), HFSourceOptions(split="test"))
    assert [(u.id, u.text, u.subset) for u in read.rows] == [("a", clips[0]["text"], "test")]
    np.testing.assert_array_equal(read.rows[0].samples(), load_audio(clips[0]["abs"]))
    (root / "test" / "metadata.csv").write_text("file_name,label\na.flac,3\n")
    with pytest.raises(UserError, match=r"no transcript column .*found file_name, label"):
        read_dataset(str(root), HFSourceOptions(split="test"))


def _common_voice(root, clips, suffix: str, tsv_name: str) -> None:
    (root / "clips").mkdir(parents=True)
    header = ("client_id", "path", "sentence_id", "sentence", "sentence_domain", "up_votes", "down_votes", "age",
              "gender", "accents", "variant", "locale", "segment")
    lines = ["\t".join(header)]
    for clip in clips:
        samples, rate = sf.read(clip["abs"], dtype="float32")
        name = f"common_voice_en_{clip['id']}{suffix}"
        if suffix == ".mp3":
            sf.write(root / "clips" / name, samples, rate, format="MP3")
        else:
            sf.write(root / "clips" / name, samples, rate, subtype="FLOAT")
        lines.append(f"{clip['speaker']}\t{name}\tx\t{clip['text']}\t\t2\t0\t\t\t\t\ten\t")
    (root / tsv_name).write_text("\n".join(lines) + "\n")


def test_common_voice_wav(clips, tmp_path):
    _common_voice(tmp_path / "cv", clips, ".wav", "validated.tsv")
    assert detect_dataset_format(tmp_path / "cv") == "common_voice"
    read = read_dataset(str(tmp_path / "cv"))
    assert read.kind == "common_voice" and read.bad == ()
    assert [u.text for u in read.rows] == [c["text"] for c in clips]
    assert [u.speaker for u in read.rows] == [c["speaker"] for c in clips]
    assert [u.id for u in read.rows] == [f"common_voice_en_{c['id']}" for c in clips]
    for utt, clip in zip(read.rows, clips):
        np.testing.assert_array_equal(utt.samples(), load_audio(clip["abs"]))
    with pytest.raises(UserError, match=r"no dev.tsv \(found validated.tsv\)"):
        read_dataset(str(tmp_path / "cv"), HFSourceOptions(split="dev"))


@pytest.mark.skipif("MP3" not in sf.available_formats(), reason="this libsndfile has no MP3 support")
def test_common_voice_mp3(clips, tmp_path):
    _common_voice(tmp_path / "cv", clips[:2], ".mp3", "train.tsv")
    read = read_dataset(str(tmp_path / "cv"))
    assert [u.text for u in read.rows] == [c["text"] for c in clips[:2]]
    for utt, clip in zip(read.rows, clips[:2]):
        decoded, original = utt.samples(), load_audio(clip["abs"])
        assert abs(len(decoded) - len(original)) < 0.1 * 16_000  # MP3 pads the start and end
        assert utt.audio.suffix == ".mp3"


def test_dataset_object_and_iterable(clips):
    ds = _hf_dataset(clips)
    _check_roundtrip(read_dataset(ds), clips, "dataset")
    _check_roundtrip(read_dataset(ds.to_iterable_dataset()), clips, "dataset")


def test_decoding_audio_feature_is_cast_to_bytes(clips):
    import datasets

    ds = _hf_dataset(clips).cast_column("audio", datasets.Audio())  # decode=True would need torchcodec
    read = read_dataset(ds)
    _check_roundtrip(read, clips, "dataset")
    assert all(isinstance(u.audio, bytes) for u in read.rows)


def test_hub_streaming_mocked(clips, monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(name, config=None, split=None, streaming=False):
        calls.append((name, config, split, streaming))
        return _hf_dataset(clips).cast_column("audio", datasets.Audio()).to_iterable_dataset()

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    monkeypatch.setattr(hf_sources, "hub_reachable", lambda: True)
    assert detect_dataset_format("someone/speech-set") == "hub"
    read = read_dataset("someone/speech-set", HFSourceOptions(split="train", config_name="en", max_rows=5))
    assert calls == [("someone/speech-set", "en", "train", True)]
    _check_roundtrip(read, clips[:5], "hub")
    assert read.rows[0].origin == "hub:someone/speech-set/train:row 0"


def test_hub_failure_is_one_user_error(monkeypatch):
    import datasets

    def unreachable(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'someone/speech-set' on the Hub (LocalEntryNotFoundError)\nmore detail")

    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    monkeypatch.setattr(hf_sources, "hub_reachable", lambda: True)
    with pytest.raises(UserError) as info:
        read_dataset("someone/speech-set")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("cannot read hub dataset 'someone/speech-set' split 'train': Couldn't reach")


def test_unreachable_hub_fails_fast_without_calling_datasets(monkeypatch):
    import datasets

    def must_not_run(*args, **kwargs):
        raise AssertionError("load_dataset called although the hub is unreachable")

    monkeypatch.setattr(datasets, "load_dataset", must_not_run)
    monkeypatch.setattr(hf_sources, "hub_reachable", lambda: False)
    with pytest.raises(UserError, match="^data/af: no local file or folder of that name, and the Hugging Face hub "
                                        "is unreachable"):
        read_dataset("data/af")


def test_unknown_paths(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(UserError, match=r"not a Parquet or Arrow file; .*\(a manifest goes to --manifest\)"):
        detect_dataset_format(tmp_path / "notes.txt")
    with pytest.raises(UserError, match="not a dataset folder .*goes to --manifest"):
        detect_dataset_format(tmp_path)
    with pytest.raises(UserError, match="no such file or folder"):
        detect_dataset_format(tmp_path / "missing")
    with pytest.raises(UserError, match="matches no files"):
        detect_dataset_format(str(tmp_path / "*.parquet"))

