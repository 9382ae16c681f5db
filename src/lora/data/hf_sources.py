"""Hugging Face-style datasets -> `Utterance` records, lazily (audio stays a path or encoded bytes).

`read_dataset(spec, options)` accepts
  * a `save_to_disk` folder (`dataset_info.json` + `state.json`, or a `DatasetDict` with
    `dataset_dict.json`: `options.split` picks the split),
  * an `audiofolder` folder (`metadata.csv` / `metadata.jsonl` with `file_name` + a text column,
    audio beside it; at the root or in a `<split>/` subfolder),
  * Parquet or Arrow files: one file, a glob, or a folder of them, with an audio column that is
    a struct `{bytes, path}` (the `datasets.Audio` storage) or a plain path string,
  * a Common Voice release folder (`<split>.tsv` or `validated.tsv` + `clips/`; speakers from
    `client_id`, text from `sentence`),
  * a hub dataset name (streamed with `datasets.load_dataset(name, streaming=True)` after one fast
    reachability probe; any hub failure is one `UserError` line, never substitute data),
  * a `datasets.Dataset`, `IterableDataset` or `DatasetDict` object passed from Python.
Audio columns are cast to `datasets.Audio(decode=False)` wherever `datasets` reads them, and
Parquet/Arrow/CSV files are read without `datasets` at all, so nothing here needs torchcodec or
FFmpeg and no audio is decoded: `Utterance.samples()` decodes later with soundfile.

Columns are picked by name (`*_COLUMNS`, first match wins) unless `options` names them; no
audio or text column is one `UserError` naming the columns found. A row that cannot be
interpreted (null audio, no text, ...) becomes a `BadRow` whose origin names the file and the
row (`data-00000-of-00001.arrow:row 17`, `metadata.csv:5` for line-based files).
"""

from __future__ import annotations

import glob
import json
import logging
from bisect import bisect_right
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lora.core.errors import UserError
from lora.core.hub import hub_reachable
from lora.data.formats import as_text, decode_utf8, is_missing, parse_rows
from lora.data.manifest import NO_RATE, BadRow
from lora.data.records import Utterance

log = logging.getLogger("lora")

AUDIO_COLUMNS = ("audio", "path", "file_name", "file", "audio_filepath")
TEXT_COLUMNS = ("text", "sentence", "transcription", "transcript", "normalized_text")
SPEAKER_COLUMNS = ("speaker_id", "speaker", "client_id")
ID_COLUMNS = ("id", "utt_id", "key")
AUDIOFOLDER_METADATA = ("metadata.csv", "metadata.jsonl")
COMMON_VOICE_TSVS = ("validated.tsv", "train.tsv", "dev.tsv", "test.tsv")
TABLE_SUFFIXES = {".parquet": "parquet", ".arrow": "arrow"}
UNSPLIT = "train"  # the one split of a source whose files name none, as `datasets` reads it
FORMATS = ("save_to_disk", "audiofolder", "parquet", "arrow", "common_voice", "hub", "dataset")
GLOB_CHARS = "*?["


@dataclass(frozen=True)
class HFSourceOptions:
    """How to read a Hugging Face-style dataset."""

    split: str = field(default="train", metadata={"help": "split of a DatasetDict, audiofolder, Common Voice "
                                                         "release or hub dataset"})
    audio_column: str | None = field(default=None, metadata={"help": f"audio column (default: first of {', '.join(AUDIO_COLUMNS)})"})
    text_column: str | None = field(default=None, metadata={"help": f"transcript column (default: first of {', '.join(TEXT_COLUMNS)})"})
    speaker_column: str | None = field(default=None, metadata={"help": f"speaker column (default: first of {', '.join(SPEAKER_COLUMNS)}; "
                                                                       "none -> empty speaker)"})
    id_column: str | None = field(default=None, metadata={"help": f"id column (default: first of {', '.join(ID_COLUMNS)}, "
                                                                  "else the audio file's stem)"})
    config_name: str | None = field(default=None, metadata={"help": "hub dataset configuration (e.g. a language code)"})
    max_rows: int | None = field(default=None, metadata={"help": "stop after this many rows (a streamed hub dataset "
                                                                 "has no end otherwise)"})


@dataclass(frozen=True)
class DatasetRead:
    """What a dataset yielded: interpretable rows, uninterpretable rows, and what was read."""

    rows: tuple[Utterance, ...]
    bad: tuple[BadRow, ...] = ()
    source: str = ""
    kind: str = ""  # one of FORMATS


@dataclass(frozen=True)
class Columns:
    """The columns a dataset's rows are read from (None: not present)."""

    audio: str
    text: str
    speaker: str | None
    id: str | None


class _Bad(Exception):
    """Internal: this row cannot be interpreted (reason, detail)."""


def is_glob(spec: str) -> bool:
    return any(c in spec for c in GLOB_CHARS)


def looks_like_hub_name(spec: str) -> bool:
    """`owner/name` or `name`: no path punctuation, at most one slash."""
    parts = spec.split("/")
    return 1 <= len(parts) <= 2 and all(parts) and not spec.startswith((".", "/", "~")) and not is_glob(spec)


def pick_column(found: Iterable[str], explicit: str | None, candidates: tuple[str, ...], what: str,
                option: str, source: str, required: bool = True) -> str | None:
    """The column to read `what` from: the one named in the options, else the first candidate found."""
    found = list(found)
    if explicit is not None:
        if explicit not in found:
            raise UserError(f"{source}: no column {explicit!r} for the {what} (found {', '.join(found) or 'no columns'}); "
                            f"fix {option}")
        return explicit
    lower = {name.lower(): name for name in reversed(found)}
    for name in candidates:
        if name in lower:
            return lower[name]
    if required:
        raise UserError(f"{source}: no {what} column (expected one of {', '.join(candidates)}; found "
                        f"{', '.join(found) or 'no columns'}); name it with {option}")
    return None


def choose_columns(found: Iterable[str], options: HFSourceOptions, source: str) -> Columns:
    found = list(found)
    audio = pick_column(found, options.audio_column, AUDIO_COLUMNS, "audio", "--audio-column", source)
    text = pick_column(found, options.text_column, TEXT_COLUMNS, "transcript", "--text-column", source)
    speaker = pick_column(found, options.speaker_column, SPEAKER_COLUMNS, "speaker", "--speaker-column", source, False)
    row_id = pick_column(found, options.id_column, ID_COLUMNS, "id", "--id-column", source, False)
    return Columns(audio, text, speaker, row_id)


def audio_value(value, base_dir: Path | None) -> tuple[str | Path | bytes | np.ndarray, int | None]:
    """(lazy audio, sampling rate if the value says) from an Audio struct, a path or inline samples."""
    if isinstance(value, dict):
        if value.get("bytes"):
            return bytes(value["bytes"]), None
        if value.get("array") is not None:  # a decoded `datasets.Audio` value, which always carries its rate
            if not value.get("sampling_rate"):
                raise _Bad(NO_RATE, 'the audio struct has an array but no "sampling_rate"; add it (the rate in Hz)')
            return np.asarray(value["array"], dtype=np.float32), value["sampling_rate"]
        value = value.get("path")
        if value is None:
            raise _Bad("no audio", "the audio struct has neither bytes nor a path")
    if value is None:
        raise _Bad("no audio", "the audio field is null")
    if isinstance(value, bytes | bytearray):
        if not value:
            raise _Bad("no audio", "the audio bytes are empty")
        return bytes(value), None
    if isinstance(value, str):
        if not value.strip():
            raise _Bad("no audio", "the audio path is empty")
        path = Path(value.strip()).expanduser()
        if "://" in value:
            raise _Bad("remote audio", f"{value} is a URL, not a local file or encoded bytes")
        return (path if path.is_absolute() or base_dir is None else base_dir / path), None
    raise _Bad("bad audio field", f"expected an Audio struct, a path or bytes, got {type(value).__name__}")


def text_value(value, what: str) -> str:
    text = as_text(value)
    if text is None:
        raise _Bad(f"bad {what} field", f"expected a string, got {type(value).__name__}")
    return text


def interpret_row(fields: dict, columns: Columns, origin: str, base_dir: Path | None, subset: str = "") -> Utterance | BadRow:
    """One row's fields -> an `Utterance`, or a `BadRow` saying why not."""
    row_id = ""
    try:
        row_id = text_value(fields.get(columns.id), "id").strip() if columns.id else ""
        audio, rate = audio_value(fields.get(columns.audio), base_dir)
        if is_missing(fields.get(columns.text)):
            raise _Bad("no text", f"the {columns.text!r} field is {'null' if fields.get(columns.text) is None else 'NaN'}")
        text = text_value(fields.get(columns.text), "text")
        speaker = text_value(fields.get(columns.speaker), "speaker").strip() if columns.speaker else ""
    except _Bad as bad:
        return BadRow(origin, bad.args[0], row_id, bad.args[1])
    used = {columns.audio, columns.text, columns.speaker, columns.id}
    extra = {k: v for k, v in fields.items() if k not in used and (v is None or isinstance(v, str | int | float | bool))}
    derived = not row_id
    if derived:
        row_id = _audio_stem(fields.get(columns.audio), audio) or origin
    extra |= {"has_text": True, "derived_id": derived}
    kwargs = {"sampling_rate": int(rate)} if rate else {}
    return Utterance(id=row_id, speaker=speaker, text=text, audio=audio, origin=origin, subset=subset, extra=extra, **kwargs)


def _audio_stem(raw, audio) -> str:
    if isinstance(audio, Path):
        return audio.stem
    path = raw.get("path") if isinstance(raw, dict) else None
    return Path(path).stem if isinstance(path, str) and path else ""


def read_records(records: Iterable[tuple[str, dict]], columns: Columns, base_dir: Path | None, subset: str = "",
                 max_rows: int | None = None) -> tuple[list[Utterance], list[BadRow]]:
    rows: list[Utterance] = []
    bad: list[BadRow] = []
    for count, (origin, fields) in enumerate(records):
        if max_rows is not None and count >= max_rows:
            break
        result = interpret_row(fields, columns, origin, base_dir, subset)
        (bad if isinstance(result, BadRow) else rows).append(result)
    return rows, bad


# ----------------------------------------------------------------------------------------------
# Format detection


def detect_dataset_format(path: str | Path) -> str:
    """Which reader `path` needs: one of FORMATS (except "dataset"), or a UserError saying why none."""
    spec = str(path)
    if is_glob(spec):
        return _table_kind(_expand_glob(spec), spec)
    path = Path(spec).expanduser()
    if path.is_file():
        kind = TABLE_SUFFIXES.get(path.suffix.lower())
        if kind is None:
            raise UserError(f"{path}: not a Parquet or Arrow file; --dataset takes a dataset folder or .parquet/.arrow "
                            "files (a manifest goes to --manifest)")
        return kind
    if path.is_dir():
        if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
            return "save_to_disk"
        if (path / "clips").is_dir() and any((path / name).is_file() for name in COMMON_VOICE_TSVS):
            return "common_voice"
        if _audiofolder_metadata(path, None):
            return "audiofolder"
        tables = _table_files(path)
        if tables:
            return _table_kind(tables, str(path))
        raise UserError(f"{path}: not a dataset folder (no dataset_info.json/state.json, no metadata.csv/jsonl, "
                        "no validated.tsv + clips/, no .parquet/.arrow files); a folder of audio with transcripts or in "
                        "LibriSpeech layout goes to --manifest")
    if looks_like_hub_name(spec):
        return "hub"
    raise UserError(f"{spec}: no such file or folder, and not a hub dataset name")


def _expand_glob(spec: str) -> list[Path]:
    files = sorted(Path(p) for p in glob.glob(str(Path(spec).expanduser()), recursive=True) if Path(p).is_file())
    if not files:
        raise UserError(f"{spec}: the pattern matches no files")
    return files


def _table_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in TABLE_SUFFIXES and p.is_file())


def _table_kind(files: list[Path], spec: str) -> str:
    kinds = {TABLE_SUFFIXES.get(p.suffix.lower()) for p in files}
    if kinds == {"parquet"} or kinds == {"arrow"}:
        return kinds.pop()
    names = ", ".join(sorted({p.suffix or p.name for p in files}))
    raise UserError(f"{spec}: expected only .parquet or only .arrow files, found {names}")


# ----------------------------------------------------------------------------------------------
# Readers


def read_dataset(spec, options: HFSourceOptions | None = None) -> DatasetRead:
    """Read any supported dataset (see the module docstring) into utterances + bad rows."""
    options = options or HFSourceOptions()
    if not isinstance(spec, str | Path):
        return read_dataset_object(spec, options)
    kind = detect_dataset_format(spec)
    reader = {"save_to_disk": read_save_to_disk, "audiofolder": read_audiofolder, "parquet": read_tables,
              "arrow": read_tables, "common_voice": read_common_voice, "hub": read_hub}[kind]
    return reader(str(spec), options)


def _cast_audio_lazy(dataset, column: str):
    """Audio columns read as `{bytes, path}` (no decoding, so no torchcodec/FFmpeg)."""
    # deferred: importing datasets costs ~1 s; --help must stay fast
    from datasets import Audio

    feature = (dataset.features or {}).get(column)
    if isinstance(feature, Audio) and feature.decode:
        return dataset.cast_column(column, Audio(decode=False))
    return dataset


def _pick_split(dataset_dict, split: str, source: str):
    if split not in dataset_dict:
        raise UserError(f"{source}: no split {split!r} (splits: {', '.join(dataset_dict) or 'none'}); pass --dataset-split with one of them")
    return dataset_dict[split]


def _no_splits(source: str, split: str) -> None:
    """A source whose files name no split is all one split, "train" (as `datasets` reads it): another split asked of
    it is refused, not ignored (its rows would be read as that split's)."""
    if split != UNSPLIT:
        raise UserError(f"{source}: names no splits (datasets reads it all as {UNSPLIT!r}), so --dataset-split {split!r} "
                        "cannot be chosen from it; drop --dataset-split, or point --dataset at that split's own files")


def read_save_to_disk(spec: str, options: HFSourceOptions) -> DatasetRead:
    """A `save_to_disk` folder; a DatasetDict folder is narrowed to `options.split`."""
    # deferred: see _cast_audio_lazy
    from datasets import Dataset, DatasetDict, load_from_disk

    root = Path(spec).expanduser()
    target = root
    splits = _saved_splits(root)
    if splits is not None:  # a DatasetDict's split is loaded alone: datasets cannot load one saved with no rows
        _pick_split(dict.fromkeys(splits), options.split, str(root))
        target = root / options.split
    if _saved_without_rows(target):
        raise UserError(f"{target}: saved with no rows (its state.json lists no data files); save the dataset with rows"
                        + (", or pass another --dataset-split" if target != root else ""))
    try:
        loaded = load_from_disk(str(target))
    except (FileNotFoundError, ValueError, OSError) as exc:
        raise UserError(f"{root}: not a readable save_to_disk folder ({str(exc).splitlines()[0]})") from None
    if splits is None and not isinstance(loaded, DatasetDict):
        _no_splits(str(root), options.split)
    dataset = _pick_split(loaded, options.split, str(root)) if isinstance(loaded, DatasetDict) else loaded
    columns = choose_columns(dataset.column_names, options, str(root))
    dataset = _cast_audio_lazy(dataset, columns.audio)
    files = [Path(c["filename"]) for c in dataset.cache_files]
    counts = [Dataset.from_file(str(f)).num_rows for f in files]  # memory-mapped: reads no rows
    if files and dataset._indices is None and sum(counts) == dataset.num_rows:
        origin = _file_row_origins(files, counts)
    else:
        def origin(index: int) -> str:
            return f"{root}:row {index}"
    records = ((origin(i), row) for i, row in enumerate(dataset))
    rows, bad = read_records(records, columns, root, subset=options.split if target != root or isinstance(loaded, DatasetDict) else "",
                             max_rows=options.max_rows)
    return DatasetRead(tuple(rows), tuple(bad), str(root), "save_to_disk")


def _saved_splits(root: Path) -> list[str] | None:
    """The splits a DatasetDict's dataset_dict.json names (None: not a readable DatasetDict folder)."""
    try:
        splits = json.loads((root / "dataset_dict.json").read_text(encoding="utf-8")).get("splits")
    except (OSError, ValueError, AttributeError):
        return None  # no such file or damaged: load_from_disk says so
    return [str(s) for s in splits] if isinstance(splits, list) else None


def _saved_without_rows(folder: Path) -> bool:
    """A `save_to_disk` folder whose state.json lists no data files (a dataset of no rows)."""
    try:
        state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False  # no such file or damaged: load_from_disk says so
    return isinstance(state, dict) and state.get("_data_files") == []


def _file_row_origins(files: list[Path], counts: list[int]):
    """global row index -> `file:row <index within that file>`."""
    starts = np.cumsum([0, *counts]).tolist()

    def origin(index: int) -> str:
        shard = bisect_right(starts, index) - 1
        return f"{files[shard]}:row {index - starts[shard]}"

    return origin


def read_tables(spec: str, options: HFSourceOptions) -> DatasetRead:
    """Parquet or Arrow files (a file, a glob or a folder), read batch by batch with pyarrow."""
    path = Path(spec).expanduser()
    if is_glob(spec) or path.is_file():
        files = _expand_glob(spec) if is_glob(spec) else [path]
        _no_splits(spec, options.split)
    else:
        files = _split_files(path, options.split)
    kind = _table_kind(files, spec)
    columns = choose_columns(_table_columns(files[0]), options, str(files[0]))
    base_of = {f: f.parent for f in files}
    rows: list[Utterance] = []
    bad: list[BadRow] = []
    for path in files:
        found = _table_columns(path)
        if columns.audio not in found or columns.text not in found:
            raise UserError(f"{path}: columns differ from {files[0].name} (found {', '.join(found)}); "
                            "pass files of one dataset")
        remaining = None if options.max_rows is None else options.max_rows - len(rows) - len(bad)
        if remaining is not None and remaining <= 0:
            break
        more, more_bad = read_records(_table_records(path), columns, base_of[path], max_rows=remaining)
        rows += more
        bad += more_bad
    return DatasetRead(tuple(rows), tuple(bad), spec, kind)


def _split_files(folder: Path, split: str) -> list[Path]:
    """The Parquet/Arrow files of `split` in a folder, by the file-naming rules of `datasets` (its own
    `get_data_patterns`: `data/train-00000-of-00002.parquet`, `test.parquet`, `validation/x.arrow`, ...), as a hub
    dataset's download lays them out; a folder whose file names hold no split is all "train". Reading every file
    of such a folder mixed its test rows into training."""
    from datasets.data_files import DataFilesDict, get_data_patterns  # deferred: datasets is a heavy import

    patterns = get_data_patterns(str(folder))
    found = DataFilesDict.from_patterns(patterns, base_path=str(folder))
    by_split = {str(name): sorted(Path(f) for f in files if Path(f).suffix.lower() in TABLE_SUFFIXES)
                for name, files in found.items()}
    by_split = {name: files for name, files in by_split.items() if files}
    if split != UNSPLIT and {str(name): p for name, p in patterns.items()} == {UNSPLIT: ["**"]}:
        _no_splits(str(folder), split)
    return _pick_split(by_split, split, str(folder))


def _open_table(path: Path):
    """A pyarrow reader for a .parquet file or an Arrow IPC file/stream (the datasets cache format)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        if path.suffix.lower() == ".parquet":
            return pq.ParquetFile(str(path))
        source = pa.memory_map(str(path))
        try:
            return pa.ipc.open_stream(source)
        except pa.ArrowInvalid:
            return pa.ipc.open_file(pa.memory_map(str(path)))
    except (pa.ArrowException, OSError) as exc:
        raise UserError(f"{path}: not a readable {path.suffix.lstrip('.')} file ({str(exc).splitlines()[0]})") from None


def _table_columns(path: Path) -> list[str]:
    reader = _open_table(path)
    schema = reader.schema_arrow if hasattr(reader, "schema_arrow") else reader.schema
    return list(schema.names)


def _table_records(path: Path) -> Iterator[tuple[str, dict]]:
    reader = _open_table(path)
    if hasattr(reader, "iter_batches"):
        batches = reader.iter_batches(batch_size=64)
    elif hasattr(reader, "num_record_batches"):
        batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
    else:
        batches = iter(reader)
    index = 0
    for batch in batches:
        for fields in batch.to_pylist():
            yield f"{path}:row {index}", fields
            index += 1


def _audiofolder_metadata(root: Path, split: str | None) -> Path | None:
    """metadata.csv/jsonl at the root, else in `<split>/` (any split when `split` is None)."""
    folders = [root] + ([root / split] if split else sorted(p for p in root.iterdir() if p.is_dir()))
    for folder in folders:
        for name in AUDIOFOLDER_METADATA:
            if (folder / name).is_file():
                return folder / name
    return None


def read_audiofolder(spec: str, options: HFSourceOptions) -> DatasetRead:
    """An audiofolder: `file_name` paths relative to the metadata file, other columns as fields."""
    root = Path(spec).expanduser()
    metadata = _audiofolder_metadata(root, options.split)
    if metadata is None:
        raise UserError(f"{root}: no metadata.csv or metadata.jsonl at the top or in {options.split}/; an audiofolder "
                        "needs one with file_name and text columns")
    fmt = "jsonl" if metadata.suffix == ".jsonl" else "csv"
    try:
        data = metadata.read_bytes()
    except OSError as exc:
        raise UserError(f"{metadata}: cannot read ({exc.strerror or exc})") from None
    parsed = parse_rows(metadata, decode_utf8(metadata, data), fmt)
    if not parsed.rows:
        raise UserError(f"{metadata}: no rows; add one row per audio file")
    found = list(parsed.header) if parsed.header else list(dict.fromkeys(k for r in parsed.rows if r.fields for k in r.fields))
    file_columns = [c for c in found if c == "file_name" or c.endswith("_file_name")]
    audio_opt = options.audio_column or (file_columns[0] if file_columns else None)
    if audio_opt is None:
        raise UserError(f"{metadata}: no file_name column (found {', '.join(found)}); an audiofolder names its audio "
                        "files in file_name")
    columns = choose_columns(found, HFSourceOptions(**{**options.__dict__, "audio_column": audio_opt}), str(metadata))
    bad: list[BadRow] = []
    records = []
    for raw in parsed.rows:
        if raw.fields is None:
            bad.append(BadRow(f"{metadata}:{raw.line}", raw.problem, detail=raw.detail))
        else:
            records.append((f"{metadata}:{raw.line}", raw.fields))
    if metadata.parent == root:
        _no_splits(str(metadata), options.split)
    more, more_bad = read_records(records, columns, metadata.parent, subset=metadata.parent.name
                                  if metadata.parent != root else "", max_rows=options.max_rows)
    return DatasetRead(tuple(more), tuple(bad + more_bad), str(root), "audiofolder")


def _common_voice_tsv(root: Path, split: str) -> Path:
    if (root / f"{split}.tsv").is_file():
        return root / f"{split}.tsv"
    if split == "train" and (root / "validated.tsv").is_file():
        log.info("%s: no train.tsv; reading validated.tsv (every validated clip)", root)
        return root / "validated.tsv"
    tsvs = ", ".join(sorted(p.name for p in root.glob("*.tsv"))) or "none"
    raise UserError(f"{root}: no {split}.tsv (found {tsvs}); pass --dataset-split with one of those names")


def read_common_voice(spec: str, options: HFSourceOptions) -> DatasetRead:
    """A Common Voice release folder: `<split>.tsv` rows, audio in `clips/<path>`."""
    import soundfile as sf

    root = Path(spec).expanduser()
    tsv = _common_voice_tsv(root, options.split)
    lines = decode_utf8(tsv, tsv.read_bytes()).splitlines()
    if not lines:
        raise UserError(f"{tsv}: empty; a Common Voice TSV starts with a client_id/path/sentence header")
    header = lines[0].split("\t")
    cv_defaults = {"audio_column": options.audio_column or ("path" if "path" in header else None),
                   "text_column": options.text_column or ("sentence" if "sentence" in header else None),
                   "speaker_column": options.speaker_column or ("client_id" if "client_id" in header else None)}
    columns = choose_columns(header, HFSourceOptions(**{**options.__dict__, **cv_defaults}), str(tsv))
    records = []
    bad: list[BadRow] = []
    for lineno, line in enumerate(lines[1:], 2):  # sentences hold bare quotes: split on tabs, no CSV quoting
        if not line.strip():
            continue
        values = line.split("\t")
        if len(values) != len(header):
            bad.append(BadRow(f"{tsv}:{lineno}", "wrong field count", detail=f"{len(values)} fields, header has {len(header)}"))
            continue
        records.append((f"{tsv}:{lineno}", dict(zip(header, values))))
    rows, more_bad = read_records(records, columns, root / "clips", subset=tsv.stem, max_rows=options.max_rows)
    if any(isinstance(u.audio, Path) and u.audio.suffix.lower() == ".mp3" for u in rows) and "MP3" not in sf.available_formats():
        raise UserError(f"{tsv}: the clips are MP3 but this libsndfile ({sf.__libsndfile_version__}) cannot decode MP3; "
                        "install soundfile>=0.12.1 (bundles libsndfile>=1.1) or convert the clips to FLAC")
    return DatasetRead(tuple(rows), tuple(bad + more_bad), str(root), "common_voice")


def read_hub(spec: str, options: HFSourceOptions) -> DatasetRead:
    """A hub dataset, streamed (nothing downloaded up front); audio cast to undecoded bytes."""
    import datasets  # deferred: see _cast_audio_lazy

    if not hub_reachable():  # one fast probe; the hub client would retry for half a minute first
        raise UserError(f"{spec}: no local file or folder of that name, and the Hugging Face hub is unreachable "
                        "to stream it as a dataset; pass a local dataset folder")
    try:
        stream = datasets.load_dataset(spec, options.config_name, split=options.split, streaming=True)
        columns = choose_columns(_stream_columns(stream), options, f"hub dataset {spec}")
        stream = _cast_audio_lazy(stream, columns.audio)
        records = ((f"hub:{spec}/{options.split}:row {i}", row) for i, row in enumerate(stream))
        rows, bad = read_records(records, columns, None, subset=options.split, max_rows=options.max_rows)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - the hub client raises many types (connection, 404, gated, config)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"cannot read hub dataset {spec!r} split {options.split!r}: {first}; check the name and the "
                        "network, or pass a local dataset folder") from None
    return DatasetRead(tuple(rows), tuple(bad), f"hub:{spec}", "hub")


def _stream_columns(dataset) -> list[str]:
    if getattr(dataset, "column_names", None):
        return list(dataset.column_names)
    if dataset.features:
        return list(dataset.features)
    first = next(iter(dataset), None)
    return list(first) if first else []


def read_dataset_object(dataset, options: HFSourceOptions) -> DatasetRead:
    """A `datasets.Dataset`, `IterableDataset` or `DatasetDict` handed over from Python."""
    import datasets  # deferred: see _cast_audio_lazy

    if isinstance(dataset, datasets.DatasetDict | datasets.IterableDatasetDict):
        dataset = _pick_split(dataset, options.split, "dataset")
    if not isinstance(dataset, datasets.Dataset | datasets.IterableDataset):
        raise UserError(f"cannot read a {type(dataset).__name__}; pass a path, a hub name or a datasets.Dataset")
    name = (dataset.info.dataset_name if dataset.info else None) or "dataset"
    columns = choose_columns(_stream_columns(dataset), options, name)
    dataset = _cast_audio_lazy(dataset, columns.audio)
    records = ((f"{name}:row {i}", row) for i, row in enumerate(dataset))
    rows, bad = read_records(records, columns, None, max_rows=options.max_rows)
    return DatasetRead(tuple(rows), tuple(bad), name, "dataset")


def describe(read: DatasetRead) -> str:
    """One line: what was read and how much."""
    speakers = len({u.speaker for u in read.rows if u.speaker})
    return (f"{read.source} ({read.kind}): {len(read.rows)} utterances, {speakers} speakers, "
            f"{len(read.bad)} unusable rows")

