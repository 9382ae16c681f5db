"""Any manifest or speech folder -> `Utterance`s: the one reader every command uses.

`read_source(path)` (alias `read_manifest`) accepts
  * JSONL, a JSON list, CSV or TSV with a header (`lora.data.formats` does the syntax),
  * a plain list of audio paths (`.txt`/`.lst`/`.list`, one per line; no transcripts),
  * a LibriSpeech-layout folder (`<subset>/<speaker>/<chapter>/*.trans.txt`),
  * a Kaldi data directory (`wav.scp` + `text`, with `utt2spk` and `segments` where it has them: `lora.data.kaldi`),
  * a folder holding `manifest.jsonl` (or `.json`/`.csv`/`.tsv`), or a Hugging Face audiofolder's `metadata.csv`
    (or `.jsonl`),
  * a folder of audio files, each with its transcript beside it in a file of the same name ending
    `.txt` (or `.lab`, as Montreal Forced Aligner corpora have them, or `.srt`/`.vtt` subtitles, whose
    times `lora segment` cuts at); the speaker is the sub-folder the audio sits in (`alice/take1.wav`),
    none for files at the top.
A folder that has the LibriSpeech layout is read as LibriSpeech even when it also holds a
manifest: the `*.trans.txt` files sit beside the audio they describe, while a manifest is a
derived copy that can go stale. Point at the manifest file itself to read it instead.

Field names are matched case-insensitively through aliases (see the `*_KEYS` constants). Paths
are relative to the manifest's folder. Rows are returned as they are: whether the audio exists
and decodes is `lora.data.preflight`'s job. Only rows that cannot be interpreted at all (not an
object, wrong field count, no audio field, inline samples without a sampling rate, ...) come back
as `BadRow`s for preflight to quarantine. Whole-file problems raise `UserError` as
`file:line: what is wrong; what to do`.

A row may be a segment of a longer recording: `offset` (+ `duration`, NeMo's fields) or `start`/`end`, in
seconds into the file, make it that span (`Utterance.span`); its id, when the row has none, names the file and the
span (`talk@12.5-16.7`). `duration` alone is the whole file's (NeMo writes it on every row), so such a row is the
whole file as before; an `offset` of 0 without a duration too. A span of no length or before the file's start is a
`BadRow`; one past the file's end is preflight's to find (it knows the file's length).

Every row's `origin` is `file:line`; its `extra` holds the row's other fields plus `has_text`
(False for path lists and rows with no text field: nothing to check or score against),
`derived_id` (True when the id was taken from the file name) and, for a manifest row with no text
field, `no_text` (the accepted names and the fields found, for preflight's message).
"""

from __future__ import annotations

import math
import os
import re
import unicodedata
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np

from lora.core.audio import SAMPLE_RATE, SPAN_END_SLACK_S, Span
from lora.core.errors import UserError
from lora.data.formats import SUPPORTED, Parsed, RawRow, as_text, audio_files_in, decode_utf8, iter_jsonl, manifest_format, parse_rows
from lora.data.kaldi import TEXT as KALDI_TEXT
from lora.data.kaldi import WAV_SCP, is_kaldi_dir, read_kaldi_dir
from lora.data.records import BadRow, ManifestRead, Utterance, read_librispeech_dir
from lora.data.subtitles import SUBTITLE_SUFFIXES, has_text_subtitles, is_subtitle_file, is_video, read_subtitles

# The first of each that a row has is used; the later names are other tools' (NeMo's audio_filepath, Hugging Face
# audiofolder's file_name, Common Voice's sentence and client_id), as `--dataset` reads them (hf_sources).
AUDIO_KEYS = ("audio", "path", "audio_filepath", "file", "file_name")
TEXT_KEYS = ("text", "transcript", "sentence", "transcription", "normalized_text")
SPEAKER_KEYS = ("speaker", "speaker_id", "client_id")
ID_KEYS = ("id", "utt_id")
RATE_KEYS = ("sampling_rate", "sample_rate", "sr")
SUBSET_KEYS = ("subset",)
# A segment of a longer recording, in seconds into the file: NeMo's offset + duration, or start/end as other tools
# (Kaldi segments, diarisation output) write it. `duration` alone is not a span (see the module docstring).
OFFSET_KEY, DURATION_KEY, START_KEY, END_KEY = "offset", "duration", "start", "end"
SPAN_KEYS = (OFFSET_KEY, DURATION_KEY, START_KEY, END_KEY)
BAD_SPAN = "bad span"
# metadata.*: a Hugging Face audiofolder's (`file_name` + `transcription`/`text` columns, as `--dataset` reads it)
FOLDER_MANIFESTS = ("manifest.jsonl", "manifest.json", "manifest.csv", "manifest.tsv", "metadata.csv", "metadata.jsonl")
# `take1.wav` + `take1.txt`; `.lab`: Montreal Forced Aligner's name; subtitles of a long recording
SIDECAR_TRANSCRIPTS = (".txt", ".lab", *SUBTITLE_SUFFIXES)
_ENGLISH_TAG = re.compile(r"en(-[A-Za-z]+)?", re.IGNORECASE)  # en, en-US, en-GB, yt-dlp's en-orig
NO_TRANSCRIPT = "no transcript"
NO_TEXT_KEY = "no_text"  # extra[...] of a manifest row without a text field: which fields it has (`_no_text_field`)
# Inline samples must say their rate (Hugging Face `datasets` Audio rows always carry `sampling_rate`)
NO_RATE = "no sampling rate"
NO_RATE_DETAIL = ('inline audio samples do not say their rate; add "sampling_rate": N (the rate in Hz) to the row '
                  "or point the row at an audio file")


class _Bad(Exception):
    """Internal: this row cannot be interpreted (reason, detail)."""


def read_source(path: str | Path) -> ManifestRead:
    """Read a manifest file or a speech folder; see the module docstring for the rules."""
    path = Path(path).expanduser()
    if path.is_dir():
        return _read_folder(path)
    if not path.exists():
        raise UserError(f"{path}: no such file or folder; pass a manifest ({SUPPORTED}) or a folder (LibriSpeech layout, a Kaldi data "
                        "directory, a manifest.jsonl inside, or audio files with same-name .txt/.lab transcripts)")
    fmt = manifest_format(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"{path}: cannot read the manifest ({exc.strerror or exc}); check its permissions") from None
    text = decode_utf8(path, data)
    del data
    if fmt == "jsonl" and text.lstrip()[:1] == "{":
        # JSON lines, the format of large corpora: rows are read one at a time, never all held raw.
        raws, parsed = iter_jsonl(path, text), None
    else:
        parsed = parse_rows(path, text, fmt)
        _require_rows(path, parsed)
        _require_audio_field(path, parsed)
        raws = parsed.rows
    rows: list[Utterance] = []
    bad: list[BadRow] = []
    seen = _Seen()
    for raw in raws:
        seen.note(raw)
        result = _interpret(raw, path, has_text=fmt != "list", shared=seen.shared, table=fmt in ("csv", "tsv"))
        (bad if isinstance(result, BadRow) else rows).append(result)
    if parsed is None:
        seen.require(path)
    return ManifestRead(tuple(_unique_derived_ids(rows, path.parent)), tuple(bad), str(path), fmt)


class _Seen:
    """What a streamed read must still check once it has seen every row (the checks `parse_rows`
    callers make up front), and one shared copy of each repeated string (transcripts, speakers,
    paths: a 10^5-row corpus repeats them a lot)."""

    def __init__(self):
        self.rows, self.first_object, self.any_audio = 0, None, False
        self.shared: dict = {}

    def note(self, raw: RawRow) -> None:
        self.rows += 1
        if raw.fields is not None:
            if self.first_object is None:
                self.first_object = raw
            if not self.any_audio and set(_normalise(raw.fields)) & set(AUDIO_KEYS):
                self.any_audio = True

    def require(self, path: Path) -> None:
        _require_rows(path, Parsed((), None) if not self.rows else Parsed((RawRow(0),)))
        if self.first_object is not None and not self.any_audio:
            found = ", ".join(map(str, self.first_object.fields)) or "no fields"
            raise UserError(f"{path}:{self.first_object.line}: no row has an audio field (expected one of "
                            f"{', '.join(AUDIO_KEYS)}; found {found}); rename the key that holds the audio")


read_manifest = read_source


def _read_folder(root: Path) -> ManifestRead:
    """A Kaldi data directory, else the LibriSpeech layout (see module docstring), else a manifest file inside the folder."""
    if is_kaldi_dir(root):  # two files at the top, looked at first: cheaper than the LibriSpeech globs
        return read_kaldi_dir(root)
    if (root / WAV_SCP).is_file():
        raise UserError(f"{root}: a Kaldi data directory without its {KALDI_TEXT} file (`<utt-id> <transcript>` per line); "
                        f"add it (lora trains and scores against transcripts), or list the audio alone as a path list")
    if next(root.glob("*/*/*/*.trans.txt"), None) or next(root.glob("*/*/*.trans.txt"), None):
        rows = read_librispeech_dir(root)
        if not rows:
            raise UserError(f"{root}: LibriSpeech transcripts found but no audio next to them; "
                            "put each <id>.flac beside its *.trans.txt")
        return ManifestRead(tuple(rows), (), str(root), "librispeech")
    for name in FOLDER_MANIFESTS:
        if (root / name).is_file():
            return read_source(root / name)
    sidecar = _read_sidecar_folder(root)
    if sidecar is not None:
        return sidecar
    kaldi = sorted(p.parent.name for p in root.glob(f"*/{WAV_SCP}"))
    if kaldi:  # `data/` of a recipe, which holds one data directory per split
        raise UserError(f"{root}: holds Kaldi data directories ({', '.join(kaldi)}), not one; pass one of them "
                        f"(e.g. {root / kaldi[0]}), and another as --eval-manifest")
    dataset_kind = _dataset_layout(root)
    if dataset_kind:
        raise UserError(f"{root}: a Hugging Face-style dataset ({dataset_kind}), not a manifest folder; `lora train`, "
                        f"`eval` and `stt` read it as --dataset {root}")
    raise UserError(f"{root}: neither a LibriSpeech layout (<subset>/<speaker>/<chapter>/*.trans.txt), a Kaldi data "
                    f"directory (wav.scp + text), a manifest.jsonl, nor audio files with same-name .txt transcripts "
                    f"beside them; pass a manifest file or one of those folders")


def _dataset_layout(root: Path) -> str:
    """What kind of `--dataset` folder `root` looks like ("" for none), two levels deep at most (`data/*.parquet`
    as the hub lays them out): `lora.data.hf_sources` reads these; this module only points there."""
    if (root / "state.json").is_file() or (root / "dataset_dict.json").is_file():
        return "saved with save_to_disk"
    if (root / "clips").is_dir() and next(root.glob("*.tsv"), None):
        return "a Common Voice release"
    for suffix in ("parquet", "arrow"):
        if next(root.glob(f"*.{suffix}"), None) or next(root.glob(f"*/*.{suffix}"), None):
            return f"{suffix.capitalize()} files"
    return ""


def _transcripts_beside(files: list[Path]) -> dict[tuple[Path, str], Path]:
    """(folder, audio stem, case folded) -> the transcript file for it. Any case (`REC_0001.WAV` +
    `rec_0001.TXT`, as recorders and Windows tools name them); a file named for the audio first, then English
    subtitles with a language tag (`talk.en.vtt`, `talk.en-US.srt`, as yt-dlp writes them); by
    SIDECAR_TRANSCRIPTS order within each."""
    ranked: dict[tuple[Path, str], tuple[tuple[int, int], Path]] = {}

    def offer(key: tuple[Path, str], rank: tuple[int, int], path: Path) -> None:
        if key not in ranked or rank < ranked[key][0]:
            ranked[key] = (rank, path)

    for t in files:
        if t.suffix.lower() not in SIDECAR_TRANSCRIPTS:
            continue
        kind = SIDECAR_TRANSCRIPTS.index(t.suffix.lower())
        offer((t.parent, t.stem.casefold()), (0, kind), t)
        named, tag = Path(t.stem).stem, Path(t.stem).suffix[1:]
        if is_subtitle_file(t) and _ENGLISH_TAG.fullmatch(tag):
            offer((t.parent, named.casefold()), (1, kind), t)
    return {key: path for key, (_, path) in ranked.items()}


def _read_sidecar_folder(root: Path) -> ManifestRead | None:
    """Audio files with a same-name transcript file beside them (None: no audio file has one)."""
    files = [p for p in root.rglob("*") if p.is_file()]  # one walk of the folder for audio and transcripts
    beside = _transcripts_beside(files)
    transcripts = {p: beside.get((p.parent, p.stem.casefold())) for p in audio_files_in(root, files)}
    for video in (p for p, t in transcripts.items() if t is None and is_video(p)):
        if has_text_subtitles(video):  # a video's own subtitle stream times it, as a subtitle file would
            transcripts[video] = video
    if not any(transcripts.values()):
        return None
    rows: list[Utterance] = []
    bad: list[BadRow] = []
    for path, transcript in transcripts.items():
        relative = path.relative_to(root)
        row_id = relative.with_suffix("").as_posix()
        if transcript is None:
            bad.append(BadRow(str(path), NO_TRANSCRIPT, row_id, f"expected {path.with_suffix('.txt').name} beside it"))
            continue
        extra: dict = {"has_text": True}
        try:
            if is_subtitle_file(transcript) or transcript == path:  # the cues' spoken text; `lora segment` cuts at their times
                text = " ".join(cue.text for cue in read_subtitles(transcript))
                extra["subtitles"] = str(transcript)
            else:
                text = " ".join(decode_utf8(transcript, transcript.read_bytes()).split())
        except UserError as exc:
            bad.append(BadRow(f"{transcript}:1", "unreadable transcript", row_id, str(exc)))
            continue
        speaker = relative.parent.as_posix() if relative.parent != Path(".") else ""
        rows.append(Utterance(id=row_id, speaker=speaker, text=text, audio=path, origin=f"{transcript}:1", extra=extra))
    return ManifestRead(tuple(rows), tuple(bad), str(root), "sidecar")


def _require_rows(path: Path, parsed: Parsed) -> None:
    if parsed.rows:
        return
    if parsed.header is not None:
        raise UserError(f"{path}:{parsed.header_line}: only a header, no rows; add one row per utterance")
    raise UserError(f"{path}: empty manifest (no rows); add one row per utterance")


def _require_audio_field(path: Path, parsed: Parsed) -> None:
    """No audio column anywhere is a file problem (a renamed column), not N row problems."""
    if parsed.header is not None:
        columns = [name.lower() for name in parsed.header]
        if not set(columns) & set(AUDIO_KEYS):
            text = "" if set(columns) & set(TEXT_KEYS) else f", and the one that holds the transcripts (one of {', '.join(TEXT_KEYS)})"
            raise UserError(f"{path}:{parsed.header_line}: no audio column (expected one of {', '.join(AUDIO_KEYS)}; "
                            f"found {', '.join(parsed.header)}); rename the column that holds the audio paths{text}")
        return
    objects = [raw for raw in parsed.rows if raw.fields is not None]
    if objects and not any(set(_normalise(raw.fields)) & set(AUDIO_KEYS) for raw in objects):
        found = ", ".join(map(str, objects[0].fields)) or "no fields"
        raise UserError(f"{path}:{objects[0].line}: no row has an audio field (expected one of "
                        f"{', '.join(AUDIO_KEYS)}; found {found}); rename the key that holds the audio")


def _normalise(fields: dict) -> dict:
    """Keys stripped and lower-cased; on a clash the first spelling wins."""
    out: dict = {}
    for key, value in fields.items():
        out.setdefault(str(key).strip().lower(), value)
    return out


def _pick(fields: dict, keys: tuple[str, ...]):
    for key in keys:
        if key in fields:
            return key, fields[key]
    return None, None


def _interpret(raw: RawRow, path: Path, has_text: bool, shared: dict | None = None, table: bool = False) -> Utterance | BadRow:
    origin = f"{path}:{raw.line}"
    if raw.fields is None:
        return BadRow(origin, raw.problem, detail=raw.detail)
    fields = _normalise(raw.fields)
    row_id = ""
    try:
        row_id = _scalar(fields, ID_KEYS, "id").strip()
        audio_key, value = _pick(fields, AUDIO_KEYS)
        if audio_key is None:
            raise _Bad("no audio field", f"expected one of {', '.join(AUDIO_KEYS)}")
        audio, rate = _audio(value, fields, path.parent, shared)
        span, span_keys = _span(fields)
        if span is not None and not isinstance(audio, Path):  # inline samples: cut them here, they are in memory
            audio, span = _cut_inline(audio, rate, span), None
        text_key, _ = _pick(fields, TEXT_KEYS)
        text = _scalar(fields, TEXT_KEYS, "text")
        speaker = _scalar(fields, SPEAKER_KEYS, "speaker").strip()
        subset = _scalar(fields, SUBSET_KEYS, "subset").strip()
    except _Bad as bad:
        return BadRow(origin, bad.args[0], row_id, bad.args[1])
    used = {audio_key, text_key, *ID_KEYS, *SPEAKER_KEYS, *SUBSET_KEYS, *RATE_KEYS, *span_keys}
    if shared is not None:  # one object per distinct string
        text, speaker = shared.setdefault(text, text), shared.setdefault(speaker, speaker)
    extra = {k: v for k, v in fields.items() if k not in used}
    extra["has_text"] = has_text and text_key is not None
    if has_text and text_key is None:  # what preflight says when a transcript is required (`lora train`, --require-text)
        extra[NO_TEXT_KEY] = _no_text_field(raw.fields, table, shared)
    derived = not row_id
    if derived:
        row_id = span_id(Path(audio).stem, span) if isinstance(audio, Path) else f"{path.stem}-{raw.line}"
    extra["derived_id"] = derived
    if shared is not None and isinstance(audio, Path):
        extra = _shared_extra(extra, audio, span, shared)
    return Utterance(id=row_id, speaker=speaker, text=text, audio=audio, sampling_rate=rate,
                     origin=origin, subset=subset, extra=extra, span=span)


def span_id(name: str, span: Span | None) -> str:
    """The id of a row that has none: its file's name, and the span where it is one (`talk@12.5-16.7`), so the
    segments of one recording get one id each."""
    return name if span is None else f"{name}@{span.label}"


def _span(fields: dict) -> tuple[Span | None, tuple[str, ...]]:
    """The row's span and the fields it was read from; (None, ()) for a whole file."""
    offset, duration = _span_seconds(fields, OFFSET_KEY), _span_seconds(fields, DURATION_KEY)
    if offset is not None:
        if duration is None and offset == 0:  # from the start to the end: the whole file, the row as before
            return None, ()
        span, keys = Span(offset, None if duration is None else offset + duration), (OFFSET_KEY, DURATION_KEY)
        said = f"offset {offset:g} s" + ("" if duration is None else f", duration {duration:g} s")
        fix = "the row's offset and duration"
    else:
        start, end = _span_seconds(fields, START_KEY), _span_seconds(fields, END_KEY)
        if start is None and end is None:
            return None, ()  # a `duration` alone stays in `extra`: the whole file's length, as NeMo writes it
        span, keys = Span(start or 0.0, end), (START_KEY, END_KEY)
        said = ", ".join(f"{k} {v:g} s" for k, v in ((START_KEY, start), (END_KEY, end)) if v is not None)
        fix = "the row's start and end"
    if span.start < 0:
        raise _Bad(BAD_SPAN, f"{said}: starts before the file does; fix {fix} (seconds into the file, 0 or more)")
    if span.end is not None and span.end <= span.start:
        raise _Bad(BAD_SPAN, f"{said}: {span.end - span.start:g} s long; a segment needs a positive length: fix {fix} "
                             "(seconds into the file) or delete the row")
    return span, keys


def _span_seconds(fields: dict, key: str) -> float | None:
    """A span field as seconds: a number, or a number written as text (CSV); absent/null/empty -> None."""
    value = fields.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        seconds = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        seconds = math.nan
    if not math.isfinite(seconds):
        raise _Bad(BAD_SPAN, f"{key} {value!r} is not a number of seconds; write it as one (e.g. 12.5)")
    return seconds


def _cut_inline(samples: np.ndarray, rate: int, span: Span) -> np.ndarray:
    """The span of inline samples; one past their end is a bad row here (their length is known)."""
    seconds = len(samples) / rate
    if span.start >= seconds or (span.end is not None and span.end > seconds + SPAN_END_SLACK_S):
        raise _Bad(BAD_SPAN, f"span {span.label} s runs past the end of the row's {seconds:.3f} s of inline samples; "
                             "fix the row's offset and duration (or start and end)")
    return span.cut(samples, rate)


def _no_text_field(fields: dict, table: bool, shared: dict | None) -> str:
    """Why a row of a manifest has no transcript: the names it accepts and the ones the row has."""
    what, holder = ("column", "column that holds the transcripts") if table else ("field", "key that holds the transcript")
    detail = (f"no {what} named {', '.join(TEXT_KEYS[:-1])} or {TEXT_KEYS[-1]}; {what}s found: "
              f"{', '.join(map(str, fields)) or 'none'}; rename the {holder}")
    return detail if shared is None else shared.setdefault(detail, detail)


def _shared_extra(extra: dict, audio: Path, span: Span | None, shared: dict) -> dict:
    """One dict for rows of the same audio file and span whose other fields are equal too (repeats of a clip):
    later writers (preflight's `seconds`) write the same value for the same clip. The span is part of the key:
    two segments of one file have two lengths."""
    try:
        key = ("extra", audio, span, tuple(sorted(extra.items())))
        hash(key)
    except TypeError:  # a list or dict among the values: keep the row's own
        return extra
    return shared.setdefault(key, extra)


def _scalar(fields: dict, keys: tuple[str, ...], what: str) -> str:
    """A text-like field as str: absent/null -> "", numbers -> their digits, containers -> bad row."""
    _, value = _pick(fields, keys)
    text = as_text(value)
    if text is None:
        raise _Bad(f"bad {what} field", f"expected a string, got a JSON {type(value).__name__}")
    return text


def _audio(value, fields: dict, folder: Path, shared: dict | None = None) -> tuple[Path | np.ndarray, int]:
    """(path relative to the manifest folder | inline samples, sampling rate)."""
    if isinstance(value, dict):  # Hugging Face style: {"array": [...], "sampling_rate": N} or {"path": ...}
        if "array" in value:
            return _inline(value["array"], value.get("sampling_rate", _pick(fields, RATE_KEYS)[1]))
        if not isinstance(value.get("path"), str):
            raise _Bad("bad audio field", "an audio object needs a 'path' string or an 'array' of samples")
        value = value["path"]
    if value is None:
        raise _Bad("no audio", "the audio field is null")
    if isinstance(value, str):
        entry = value.strip()
        if not entry:
            raise _Bad("no audio", "the audio path is empty")
        if "://" in entry:
            raise _Bad("remote audio", f"{entry} is a URL; lora reads local files: download it and point the row at the file")
        if shared is None:
            return _local_path(folder, entry), SAMPLE_RATE
        key = ("path", entry)
        if key not in shared:
            shared[key] = _local_path(folder, entry)
        return shared[key], SAMPLE_RATE
    if isinstance(value, list):
        return _inline(value, _pick(fields, RATE_KEYS)[1])
    raise _Bad("bad audio field", f"expected a path or a list of samples, got a JSON {type(value).__name__}")


def _local_path(folder: Path, entry: str) -> Path:
    """The row's file, relative to the manifest's folder. A relative path written on Windows (`clips\\a.wav`)
    is read with / separators when only that file exists (a backslash is a legal character of a file name
    here, so the name as written wins when it exists). A name with accents written in the other Unicode
    form than the file's (macOS writes `café` decomposed, NFD; most else composed, NFC) is read in the
    form that exists, when only that one does."""
    path = folder / Path(entry).expanduser()
    if ("\\" not in entry and entry.isascii()) or path.exists():
        return path
    for form in ("\\" in entry and entry.replace("\\", "/"), *(unicodedata.normalize(f, entry) for f in ("NFC", "NFD"))):
        other = folder / Path(form).expanduser() if form and form != entry else None
        if other is not None and other.exists():
            return other
    return path


def _inline(samples, rate) -> tuple[np.ndarray, int]:
    try:
        array = np.asarray(samples, dtype=np.float32)
    except (TypeError, ValueError):
        raise _Bad("bad inline audio", "audio must be a list of numbers, or of [left, right] frames") from None
    if array.ndim not in (1, 2):
        raise _Bad("bad inline audio", f"audio has {array.ndim} dimensions; expected samples or frames")
    return array, _rate(rate)


def _rate(value) -> int:
    if value is None:  # samples alone do not say their rate, and a wrong guess trains on sped-up or slowed speech
        raise _Bad(NO_RATE, NO_RATE_DETAIL)
    try:
        rate = float(value)
    except (TypeError, ValueError):
        rate = -1.0
    if isinstance(value, bool) or not (rate > 0 and rate == int(rate)):
        raise _Bad("bad sampling rate", f"{value!r} is not a positive whole number of Hz")
    return int(rate)


def _unique_derived_ids(rows: list[Utterance], folder: Path) -> list[Utterance]:
    """Ids taken from file names clash when two folders hold `1.wav`; those use the relative path, and
    keep the extension too where one folder holds `1.wav` and `1.mp3`.

    The same path listed twice still yields the same id, which preflight reports as a duplicate.
    """
    def derived(u: Utterance) -> bool:
        return bool(u.extra.get("derived_id")) and isinstance(u.audio, Path)

    counts = Counter(u.id for u in rows if derived(u))
    relative = {u.audio: Path(os.path.relpath(u.audio, folder)) for u in rows if derived(u) and counts[u.id] > 1}
    stems = Counter(p.with_suffix("").as_posix() for p in set(relative.values()))
    out = []
    for u in rows:
        if derived(u) and counts[u.id] > 1:
            rel = relative[u.audio]
            name = rel.with_suffix("").as_posix() if stems[rel.with_suffix("").as_posix()] == 1 else rel.as_posix()
            u = replace(u, id=span_id(name, u.span))
        out.append(u)
    return out
