"""Manifest text -> raw rows `(line, fields)`: the syntax layer of `lora.data.manifest`.

Knows JSONL, JSON lists, CSV/TSV with a header and plain path lists; knows nothing of aliases,
audio or `Utterance`. Every row keeps the 1-based line it starts on, so every later message can
say `file:line`. Problems that make the whole file unreadable raise `UserError`; a single row
that cannot be turned into fields comes back as a `RawRow` with `problem` set, for quarantine.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path

from lora.core.errors import UserError

# Extension -> format. `.json` and `.jsonl` are both sniffed by their first character, because
# people save JSON lists as `.jsonl` and JSON lines as `.json` all the time.
FORMATS = {
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json",
    ".csv": "csv", ".tsv": "tsv",
    ".txt": "list", ".lst": "list", ".list": "list",
}
# libsndfile's (`lora.core.audio`), then containers decoded through ffmpeg when it is installed; videos
# are read for their first audio stream (and `lora segment` reads a text subtitle stream in them)
VIDEO_EXTENSIONS = frozenset({".mp4", ".mkv", ".mov", ".m4v", ".avi", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp"})
AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".oga", ".mp3", ".opus", ".aiff", ".aif",
                              ".m4a", ".aac", ".webm", ".wma", ".amr"}) | VIDEO_EXTENSIONS
SUPPORTED = ".jsonl, .json, .csv, .tsv or .txt (one audio path per line)"
# Hugging Face `datasets` files: read by `--dataset` (lora.data.hf_sources), not as manifests
DATASET_FILES = {".parquet": "a Parquet", ".arrow": "an Arrow"}


@dataclass(frozen=True)
class RawRow:
    """One row before interpretation: its line, its fields (a dict) or why it has none."""

    line: int
    fields: dict | None = None
    problem: str = ""  # short reason when `fields` is None
    detail: str = ""


def audio_files_in(folder: Path, files: list[Path] | None = None) -> list[Path]:
    """The audio files (and videos) under `folder` (recursively, by extension), in name order; of `files`
    (the folder's files, already listed) when given."""
    found = files if files is not None else (p for p in folder.rglob("*") if p.is_file())
    return sorted(p for p in found if p.suffix.lower() in AUDIO_EXTENSIONS)


@dataclass(frozen=True)
class Parsed:
    """The rows of one file, plus the header of a CSV/TSV (None for other formats)."""

    rows: tuple[RawRow, ...]
    header: tuple[str, ...] | None = None
    header_line: int = 0


def manifest_format(path: Path) -> str:
    """The format a manifest file's name announces; raises on names no reader handles."""
    if path.name.endswith(".trans.txt"):
        raise UserError(f"{path}: a LibriSpeech transcript file; pass the LibriSpeech root folder instead")
    suffix = path.suffix.lower()
    if suffix in AUDIO_EXTENSIONS:
        kind = "a video" if suffix in VIDEO_EXTENSIONS else "an audio file"
        raise UserError(f"{path}: {kind}, not a manifest; list audio paths in a .txt file (one per line)")
    if suffix in DATASET_FILES:
        raise UserError(f"{path}: {DATASET_FILES[suffix]} dataset file, not a manifest; `lora train`, `eval` and `stt` read it "
                        f"as --dataset {path}")
    if suffix not in FORMATS:
        raise UserError(f"{path}: unknown manifest extension {suffix or '(none)'!r}; use {SUPPORTED}")
    return FORMATS[suffix]


def decode_utf8(path: Path, data: bytes, what: str = "manifest") -> str:
    """Text of a manifest (or transcript, subtitles); a non-UTF-8 byte is reported with its line (BOM tolerated)."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise UserError(
            f"{path}:{line}: not UTF-8 (byte 0x{data[exc.start]:02x}); re-save the {what} as UTF-8 "
            f"(from Windows-1252: iconv -f cp1252 -t utf-8 {path} > {path.stem}.utf8{path.suffix})"
        ) from None


def parse_rows(path: Path, text: str, fmt: str) -> Parsed:
    """Dispatch on format; JSON-family files are sniffed by their first non-blank character."""
    if fmt in ("json", "jsonl"):
        first = text.lstrip()[:1]
        as_list = first == "[" or (fmt == "json" and first not in ("{", ""))
        if fmt == "json" and first == "{" and "\n" in text.strip():
            _refuse_json_object(path, text)
        return Parsed(tuple(parse_json_list(path, text, fmt == "jsonl") if as_list else parse_jsonl(path, text)))
    if fmt in ("csv", "tsv"):
        return parse_table(path, text, "\t" if fmt == "tsv" else ",")
    return Parsed(tuple(parse_path_list(text)))


def _refuse_json_object(path: Path, text: str) -> None:
    """A pretty-printed `{...}` document is not JSON lines; say so instead of a column-2 error."""
    try:
        document = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return  # not one document: read it as JSON lines, which reports the bad line
    keys = ", ".join(map(str, list(document)[:5])) if isinstance(document, dict) else ""
    raise UserError(f"{path}:1: expected a JSON list of objects, found one JSON object (keys: {keys}); "
                    "put the rows in a top-level [ ... ] or write one object per line (.jsonl)")


def _refuse_array_line(path: Path, text: str) -> None:
    """A .jsonl file whose first line is a whole JSON array (a list written into a .jsonl file, or rows written as
    arrays): say so, instead of an "Extra data" error on line 2 or rows that are "not an object"."""
    start = len(text) - len(text.lstrip())
    line = text.count("\n", 0, start) + 1
    end = text.find("\n", start)
    try:
        first = json.loads(text[start:] if end < 0 else text[start:end])
    except (json.JSONDecodeError, RecursionError):
        return  # a list spread over lines (`[` alone on line 1): the JSON reader names the bad line
    if isinstance(first, list):
        raise UserError(f"{path}:{line}: line {line} is a JSON array, but {path.suffix or '.jsonl'} needs one JSON object "
                        'per line; rename the file to .json (a JSON list of rows) or write one object per line, '
                        'like {"audio": "a.wav", "text": "..."}')


def _json_error(path: Path, exc: json.JSONDecodeError, line_offset: int = 0) -> UserError:
    return UserError(
        f"{path}:{exc.lineno + line_offset}: invalid JSON at column {exc.colno} ({exc.msg}); "
        "fix or delete that line"
    )


def _too_deep(path: Path, line: int) -> UserError:
    """Python's JSON reader recurses per nesting level: thousands of `[` exhaust its stack."""
    return UserError(f"{path}:{line}: JSON nested too deeply to read; a row is one flat object like "
                     '{"audio": ..., "text": ...}: fix or delete that line')


def _as_row(line: int, value) -> RawRow:
    if isinstance(value, dict):
        return RawRow(line, value)
    kind = type(value).__name__ if value is not None else "null"
    return RawRow(line, None, "not an object", f"row is a JSON {kind}; expected an object like {{\"audio\": ...}}")


def parse_jsonl(path: Path, text: str) -> list[RawRow]:
    """One JSON object per line; blank lines skipped. A syntax error stops the read."""
    return list(iter_jsonl(path, text))


def iter_jsonl(path: Path, text: str):
    """`parse_jsonl` one row at a time (large manifests are never held as rows twice).

    Split on "\\n" only: `str.splitlines` would also split on U+2028 and friends, which JSON
    leaves unescaped inside strings.
    """
    start, lineno = 0, 0
    while start <= len(text):
        end = text.find("\n", start)
        end = len(text) if end < 0 else end
        line = text[start:end]
        lineno += 1
        start = end + 1
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise _json_error(path, exc, lineno - 1) from None
        except RecursionError:
            raise _too_deep(path, lineno) from None
        yield _as_row(lineno, value)


def parse_json_list(path: Path, text: str, jsonl: bool = False) -> list[RawRow]:
    """A JSON list of objects; each row gets the line its object starts on. `jsonl`: the file is named .jsonl, where
    a JSON list of objects is read too (see FORMATS), but a first line that is an array of anything else, or an array
    followed by more lines, is refused as such."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        if jsonl:
            _refuse_array_line(path, text)
        raise _json_error(path, exc) from None
    except RecursionError:
        raise _too_deep(path, 1) from None
    if not isinstance(document, list):
        raise UserError(f"{path}:1: expected a JSON list of objects, found a JSON {type(document).__name__}; "
                        "wrap the rows in [ ... ] or write one object per line (.jsonl)")
    if jsonl and document and not any(isinstance(value, dict) for value in document):
        _refuse_array_line(path, text)
    return [_as_row(line, value) for line, value in zip(_element_lines(text), document)]


def _element_lines(text: str):
    """Start line of each top-level list element (the text is already known to be valid JSON)."""
    decoder, index, line, counted = json.JSONDecoder(), text.index("[") + 1, 1, 0
    while True:
        while index < len(text) and text[index] in " \t\r\n,":
            index += 1
        if index >= len(text) or text[index] == "]":
            return
        line += text.count("\n", counted, index)
        counted = index
        yield line
        _, index = decoder.raw_decode(text, index)


def parse_table(path: Path, text: str, delimiter: str) -> Parsed:
    """CSV (quoted fields allowed) or TSV (no quoting: texts keep their quote marks; a row that only reads
    with quoting, a quoted field holding a tab, is read with it), with a header.

    A row with the wrong number of fields is a bad row, not a file error: it is usually one
    unquoted comma in one transcript.
    """
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=quoting)
    header: list[str] | None = None
    physical: list[str] | None = None  # the file's lines, split only when a TSV row needs reading with quotes
    rows: list[RawRow] = []
    start = header_line = 1
    try:
        for record in reader:
            line, start = start, reader.line_num + 1
            if not record or not any(field.strip() for field in record):
                continue
            if header is None:
                header, header_line = [name.strip() for name in record], line
                continue
            if len(record) != len(header) and delimiter == "\t" and '"' in "".join(record):
                physical = physical if physical is not None else io.StringIO(text, newline="").readlines()
                record = _quoted_tsv_row(physical[line - 1], len(header)) or record
            if len(record) != len(header):
                hint = (" (an unquoted delimiter in a field?)" if len(record) > len(header)
                        else " (an unclosed quote?)" if any("\n" in field for field in record) else "")
                rows.append(RawRow(line, None, "wrong number of fields",
                                   f"{len(record)} fields but the header has {len(header)}{hint}"))
                continue
            rows.append(RawRow(line, dict(zip(header, record))))
    except csv.Error as exc:
        kind = "TSV" if delimiter == "\t" else "CSV"
        raise UserError(f"{path}:{reader.line_num}: unreadable {kind} ({exc}); fix the quoting on that line") from None
    return Parsed(tuple(rows), tuple(header) if header is not None else None, header_line)


def _quoted_tsv_row(physical: str, width: int) -> list[str] | None:
    """A TSV line read with CSV quoting, when that gives the header's field count: a CSV writer (pandas'
    `to_csv(sep="\\t")`, Python's csv module) quotes a field holding a tab, which the unquoted reading splits."""
    fields = next(csv.reader([physical.rstrip("\r\n")], delimiter="\t"), [])
    return fields if len(fields) == width else None


def parse_path_list(text: str) -> list[RawRow]:
    """One audio path per line; blank lines and `#` comments skipped; no transcripts."""
    rows = []
    for lineno, line in enumerate(text.split("\n"), 1):
        entry = line.strip()
        if entry and not entry.startswith("#"):
            rows.append(RawRow(lineno, {"audio": entry}))
    return rows


def is_missing(value) -> bool:
    """Null, or NaN: how pandas and a float Arrow/Parquet column write a missing value."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def as_text(value) -> str | None:
    """A text-like field as str: absent/null/NaN -> "", numbers -> their digits (1089.0 -> "1089"); None when it is not
    text-like at all (a list, a dict, a bool): the caller reports that row as bad."""
    if is_missing(value):  # NaN is a missing value, not the transcript "nan"
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # a whole-number id pandas stored as a float (a column with a gap): 1089.0 is speaker 1089
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None
