"""Kaldi data directories -> `Utterance`s: the corpora of Kaldi, ESPnet, k2/icefall and WeNet recipes.

A folder holding `wav.scp` and `text` is one (`is_kaldi_dir`); `lora.data.manifest.read_source` reads it here:
  wav.scp   `<recording-id> <path>` (the rest of the line is the path); a command ending in `|` is not run (below)
  text      `<utt-id> <transcript...>`: one row per line, in the file's order, its origin `text:<line>`
  utt2spk   `<utt-id> <speaker>`; without it the rows have no speaker, as a manifest without a speaker field
            (a warning says so; `lora train` then refuses a speaker-disjoint split, as for such a manifest)
  segments  `<utt-id> <recording-id> <start-s> <end-s>` (end -1: to the end of the file): the row is that span of
            the recording (`Utterance.span`), which preflight, the loader and eval already cut
  spk2utt (utt2spk inverted) and every other file (feats.scp, utt2dur, ...) are not read.
Relative paths in wav.scp are relative to the folder the recipe ran in, usually the data directory's grandparent
(`data/train/wav.scp` naming `db/LibriSpeech/...`): each is looked for in the data directory, then its parent, then
its grandparent, and a row whose file is in none of them names all three.

Audio stays a path (decoded by whoever needs it). A line that cannot be used makes a `BadRow` on its own line for
each utterance it leaves without audio, transcript or speaker (a wav.scp line can serve several segments); a
malformed line that no utterance needs is one `BadRow` itself. Whole-directory problems raise `UserError`.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path

from lora.core.audio import Span
from lora.core.errors import UserError
from lora.data.audio_probe import MISSING_FILE
from lora.data.formats import decode_utf8
from lora.data.records import BadRow, ManifestRead, Utterance

log = logging.getLogger("lora")

WAV_SCP, TEXT, UTT2SPK, SEGMENTS = "wav.scp", "text", "utt2spk", "segments"
PARENT_LEVELS = 2  # relative paths: the data dir, then up to its grandparent (`data/train` -> the recipe's folder)
TO_THE_END = -1.0  # a segment's end time meaning "to the end of the recording" (Kaldi's extract-segments)
# Reasons (short categories, counted in reports); "no transcript" and "bad span" are the words manifest rows use too.
PIPED_AUDIO = "piped audio"
ARCHIVE_AUDIO = "audio in a Kaldi archive"
MALFORMED = "malformed line"
NO_AUDIO = "no audio"
NO_TRANSCRIPT = "no transcript"
NO_SPEAKER = "no speaker"
UNKNOWN_RECORDING = "unknown recording"
REPEATED_ID = "duplicate id"  # preflight's word for two rows of one id
BAD_SPAN = "bad span"
_ARCHIVE_OFFSET = re.compile(r"\.ark:\d+$")  # `raw.ark:1234`: a byte offset into an archive, not a file


@dataclass(frozen=True)
class _Problem:
    """Why a line cannot be used, at that line."""

    origin: str
    reason: str
    detail: str

    def row(self, row_id: str) -> BadRow:
        return BadRow(self.origin, self.reason, row_id, self.detail)


@dataclass(frozen=True)
class _Recording:
    origin: str
    audio: Path


@dataclass(frozen=True)
class _Segment:
    origin: str
    recording: str
    span: Span | None


@dataclass(frozen=True)
class _Speaker:
    origin: str
    name: str


@dataclass(frozen=True)
class _Table:
    """One file's lines by their first field (the first line of an id wins), and its lines that repeat an id."""

    entries: dict
    repeated: tuple[BadRow, ...] = ()


def is_kaldi_dir(root: Path) -> bool:
    """Does `root` hold a Kaldi data directory's two required files?"""
    return (root / WAV_SCP).is_file() and (root / TEXT).is_file()


def read_kaldi_dir(root: Path) -> ManifestRead:
    """The utterances of `text`, with their audio (wav.scp, segments) and speakers (utt2spk); see the module docstring."""
    recordings = _table(root / WAV_SCP, lambda origin, rec, entry: _recording(origin, rec, entry, root))
    _refuse_all_piped(root, recordings)
    segments = _table(root / SEGMENTS, _segment) if (root / SEGMENTS).is_file() else None
    speakers = _table(root / UTT2SPK, _speaker) if (root / UTT2SPK).is_file() else None
    rows: list[Utterance] = []
    bad: list[BadRow] = []
    said: set[int] = set()  # the problems already reported on an utterance they left unusable (by identity)
    texts = [(utt, " ".join(rest.split()), origin) for origin, utt, rest in _lines(root / TEXT)]
    for utt, text, origin in texts:
        result = _utterance(utt, text, origin, root.name, recordings, segments, speakers)
        if isinstance(result, _Problem):
            said.add(id(result))
            bad.append(result.row(utt))
        else:
            rows.append(result)
    bad += _unclaimed(recordings, segments, speakers, {utt for utt, _, _ in texts}, said)
    bad += [row for table in (recordings, segments, speakers) if table is not None for row in table.repeated]
    _warn_of_speakers(root, rows, speakers)
    return ManifestRead(tuple(rows), tuple(bad), str(root), "kaldi")


def _utterance(utt: str, text: str, origin: str, subset: str, recordings: _Table, segments: _Table | None,
               speakers: _Table | None) -> Utterance | _Problem:
    """The row of one `text` line, or the problem (on its own line) that leaves it unusable."""
    span = None
    if segments is None:
        recording = recordings.entries.get(utt)
        if recording is None:
            return _Problem(origin, NO_AUDIO, f"{WAV_SCP} has no line for {utt!r}; add `{utt} <path>` there or delete "
                                              "this line")
    else:
        segment = segments.entries.get(utt)
        if segment is None:
            return _Problem(origin, NO_AUDIO, f"{SEGMENTS} has no line for {utt!r}; add `{utt} <recording-id> <start-s> "
                                              "<end-s>` there or delete this line")
        if isinstance(segment, _Problem):
            return segment
        recording, span = recordings.entries.get(segment.recording), segment.span
        if recording is None:
            return _Problem(segment.origin, UNKNOWN_RECORDING, f"recording {segment.recording!r} has no line in "
                                                               f"{WAV_SCP}; add it there or delete this segment")
    if isinstance(recording, _Problem):
        return recording
    speaker = _Speaker(origin, "") if speakers is None else speakers.entries.get(utt)
    if speaker is None:
        return _Problem(origin, NO_SPEAKER, f"{UTT2SPK} has no line for {utt!r}; add `{utt} <speaker>` there (a row "
                                            "without a speaker could land on both sides of a speaker-disjoint split)")
    if isinstance(speaker, _Problem):
        return speaker
    return Utterance(id=utt, speaker=speaker.name, text=text, audio=recording.audio, origin=origin, subset=subset,
                     extra={"has_text": True, "derived_id": False}, span=span)


def _unclaimed(recordings: _Table, segments: _Table | None, speakers: _Table | None, in_text: set[str],
               said: set[int]) -> list[BadRow]:
    """Audio that no `text` line names (a clip without a transcript), and the malformed lines no utterance needed."""
    bad = []
    clips = recordings if segments is None else segments  # with segments, a recording no segment names is unused
    for clip, entry in clips.entries.items():
        if clip in in_text:
            continue
        if isinstance(entry, _Problem):
            bad.append(entry.row(clip))
        else:
            bad.append(BadRow(entry.origin, NO_TRANSCRIPT, clip, f"{TEXT} has no line for {clip!r}; add `{clip} "
                                                                 "<transcript>` there or delete this line"))
    # with segments, wav.scp's ids are recordings' (no text line names them); utt2spk's are utterances'
    for entries in (recordings.entries if segments else {}), (speakers.entries if speakers else {}):
        bad += [p.row(key) for key, p in entries.items()
                if isinstance(p, _Problem) and p.reason == MALFORMED and id(p) not in said and key not in in_text]
    return bad


def _warn_of_speakers(root: Path, rows: list[Utterance], speakers: _Table | None) -> None:
    if speakers is None:
        log.warning("warning: %s: no %s, so the utterances have no speaker (as a manifest without a speaker field): "
                    "lora train refuses a speaker-disjoint split of them. Add %s (`<utt-id> <speaker>`; where ids start "
                    "with the speaker: awk '{split($1, p, \"-\"); print $1, p[1]}' %s > %s), or pass "
                    "--allow-shared-speakers", root, UTT2SPK, UTT2SPK, root / TEXT, root / UTT2SPK)
    elif len(rows) > 1 and all(u.speaker == u.id for u in rows):
        log.warning("warning: %s: every utterance is its own speaker (ESPnet writes it so when speakers are unknown), "
                    "so a speaker-disjoint split of them is a split by utterance; write the real speakers there",
                    root / UTT2SPK)


def _table(path: Path, parse) -> _Table:
    """`parse(origin, key, rest)` of each line, by the line's first field (`key`)."""
    entries: dict = {}
    repeated = []
    for origin, key, rest in _lines(path):
        if key in entries:  # Kaldi's validate_data_dir.sh refuses this too; which line was meant is not ours to guess
            first = entries[key].origin
            repeated.append(BadRow(origin, REPEATED_ID, key, f"{key!r} is already at {first}; delete one of the two"))
            continue
        entries[key] = parse(origin, key, rest)
    return _Table(entries, tuple(repeated))


def _lines(path: Path) -> list[tuple[str, str, str]]:
    """(`file:line`, first field, the rest of the line) of each non-blank line."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"{path}: cannot read it ({exc.strerror or exc}); check its permissions") from None
    content = decode_utf8(path, data, "Kaldi file")
    return [(f"{path}:{n}", *_first_and_rest(line)) for n, line in enumerate(content.splitlines(), 1) if line.strip()]


def _first_and_rest(line: str) -> tuple[str, str]:
    first, *rest = line.strip().split(maxsplit=1)
    return first, (rest[0] if rest else "")


def _recording(origin: str, rec: str, entry: str, root: Path) -> _Recording | _Problem:
    """A wav.scp line: its file, or why it cannot be read."""
    if not entry:
        return _Problem(origin, MALFORMED, f"{rec!r} has no path; write `{rec} <path to its audio file>`")
    if entry.endswith("|"):
        # Not run, and the row is quarantined: a command in a data file is code from wherever the corpus came from,
        # run per clip in every loader worker, unseen, on tools that may not be here (sph2pipe, flac), and a failing
        # one would look like bad audio; once written as files, the audio is checked, cached and timed like any
        # other. Quarantined rather than refused, so the rest of the directory still trains and `lora check` lists
        # every such line at once; a directory of nothing but commands is refused up front (`_refuse_all_piped`).
        command = entry[:-1].strip()
        return _Problem(origin, PIPED_AUDIO, f"`{entry}` is a command, and lora runs none from data files: run it once "
                                             f"yourself where the recipe ran, `{command} > {root / 'wav' / rec}.wav`, "
                                             f"and write that file's path on this line instead")
    if _ARCHIVE_OFFSET.search(entry):
        return _Problem(origin, ARCHIVE_AUDIO, f"{entry} is an offset into a Kaldi archive, not a file; write it out "
                                               f"with Kaldi's `wav-copy {entry} {root / 'wav' / rec}.wav` and write that "
                                               "path on this line")
    return _resolve(origin, rec, entry, root)


def _resolve(origin: str, rec: str, entry: str, root: Path) -> _Recording | _Problem:
    """An absolute path as it is; a relative one where it exists of the data directory and its two parents."""
    path = Path(entry).expanduser()
    if path.is_absolute():
        return _Recording(origin, path)
    bases = [root, *root.absolute().parents[:PARENT_LEVELS]]
    for base in bases:
        if (base / path).exists():
            return _Recording(origin, base / path)
    return _Problem(origin, MISSING_FILE, f"{entry} (relative) is in none of {', '.join(map(str, bases))}; Kaldi "
                                          "paths are relative to the folder the recipe ran in: write absolute paths, "
                                          f"or keep the data directory where the recipe left it")


def _segment(origin: str, utt: str, rest: str) -> _Segment | _Problem:
    """A segments line: `<utt-id> <recording-id> <start-s> <end-s>`."""
    fields = rest.split()
    if len(fields) != 3:
        return _Problem(origin, MALFORMED, f"{1 + len(fields)} fields; a segment is `{utt} <recording-id> <start-s> "
                                           "<end-s>` (end -1: to the end of the recording)")
    recording, start, end = fields[0], _seconds(fields[1]), _seconds(fields[2])
    if start is None or end is None:
        return _Problem(origin, BAD_SPAN, f"start {fields[1]!r} and end {fields[2]!r} must be seconds (e.g. 12.5; end "
                                          "-1: to the end of the recording)")
    if start < 0:
        return _Problem(origin, BAD_SPAN, f"starts at {start:g} s, before the recording does; fix the start (0 or more)")
    if end == TO_THE_END:
        return _Segment(origin, recording, Span(start) if start > 0 else None)  # from 0: the whole file, as manifests
    if end <= start:
        return _Problem(origin, BAD_SPAN, f"{start:g}-{end:g} s is {end - start:g} s long; a segment needs a positive "
                                          "length (end -1: to the end of the recording): fix it or delete the line")
    return _Segment(origin, recording, Span(start, end))


def _seconds(field: str) -> float | None:
    try:
        value = float(field)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _speaker(origin: str, utt: str, rest: str) -> _Speaker | _Problem:
    """An utt2spk line: `<utt-id> <speaker>`."""
    if len(rest.split()) != 1:
        return _Problem(origin, MALFORMED, f"{1 + len(rest.split())} fields; write `{utt} <speaker>` (one word)")
    return _Speaker(origin, rest)


def _refuse_all_piped(root: Path, recordings: _Table) -> None:
    """A wav.scp of nothing but commands (LibriSpeech recipes write `flac -c -d -s x.flac |` for every file) would
    quarantine every row: one line instead, with the conversion of all of them."""
    entries = list(recordings.entries.values())
    if not entries or not all(isinstance(e, _Problem) and e.reason == PIPED_AUDIO for e in entries):
        return
    scp, wav = root / WAV_SCP, root / "wav"
    raise UserError(f"{entries[0].origin}: every line of {WAV_SCP} is a command ending in `|`, and lora runs none from "
                    f"data files; write them out once as WAV files, from the folder the recipe ran in: mv {scp} "
                    f"{scp}.piped && mkdir -p {wav} && while read -r id cmd; do sh -c \"${{cmd%|}}\" > {wav}/$id.wav "
                    f"</dev/null; done < {scp}.piped && awk '{{print $1, \"wav/\" $1 \".wav\"}}' {scp}.piped > {scp}")
