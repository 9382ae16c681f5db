"""Subtitles (SRT, WebVTT, YouTube's SBV) of a long recording -> timed cues of spoken text, grouped into clips.

Read with webvtt-py (all three formats), or from a video's own text subtitle stream (MKV, MP4: extracted as
SRT by ffmpeg, an English one first). What is not speech is taken out of the text: markup (`<i>`, `<v Bob>`,
`{\\an8}`, the word times `<00:00:01.480>` of automatic captions), sound annotations (`[MUSIC]`, `(laughs)`),
music notes and the dash or chevrons (`>>`) a speaker change starts a line with; HTML entities are read as
the characters they stand for. Who speaks a cue comes from its WebVTT voice tag (`<v Alice>`, as Teams
writes transcripts) or a "Name:" label (Zoom's transcripts, subtitles for the deaf), which is not spoken
and is taken out of the text. Rolling captions (YouTube's automatic ones,
broadcast roll-up) repeat the line the cue before ended with; those repeats are taken out, or every word
would be in the transcript two or three times. `group_cues` joins neighbouring cues of one speaker into
clips of at most `max_chunk_s`, cut only between cues, so every clip holds whole cues and the words their
times say are spoken in it.
"""

from __future__ import annotations

import html
import io
import json
import logging
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

from lora.core.errors import UserError
from lora.data.formats import VIDEO_EXTENSIONS, decode_utf8

log = logging.getLogger("lora")

SUBTITLE_SUFFIXES = (".srt", ".vtt", ".sbv")
# Subtitle codecs ffmpeg writes as SRT (text); bitmap ones (PGS, DVD, DVB) would need OCR
TEXT_SUBTITLE_CODECS = frozenset({"subrip", "srt", "ass", "ssa", "mov_text", "webvtt", "text"})
ENGLISH_TAGS = frozenset({"eng", "en", "en-US", "en-GB"})
# Cues further apart than this are not joined into one clip: the gap is music, another scene, silence.
MAX_JOIN_GAP_S = 2.0
_MARKUP = re.compile(r"<[^>]*>|\{[^}]*\}")
_ANNOTATION = re.compile(r"\[[^\]]*\]|\([^)]*\)|[♪♫]")
_SPEAKER_DASH = re.compile(r"^\s*-\s*", re.MULTILINE)
_CHEVRONS = re.compile(r">{2,}")  # ">> so what": a change of speaker (or topic) in captions, not said
_VOICE = re.compile(r"<v(?:\.[^\s>]*)?\s+([^>]+)>")
# "Alice Smith: ...", "JOHN: ...", "Speaker 2: ...": up to four words, each capitalised (or a number after
# the first), then a colon. Taken as who speaks in a file where at least LABEL_SHARE of the cues start so
# (elsewhere "Note: ..." may be words said), and in capitals before words that are not, anywhere.
_LABEL = re.compile(r"^([A-Z][\w'.-]*(?: [A-Z0-9][\w'.-]*){0,3}):\s+(?=\S)")
LABEL_SHARE = 0.5
# A file whose cues start with the line the cue before ended with, this often (of its cues after the first),
# is rolling captions. In other subtitles a cue repeating the line before is rare and is what was said twice.
ROLLING_SHARE = 0.5
# A cue's time line: a time, then "-->" (SRT, WebVTT), or two times after a comma (YouTube's SBV)
_TIME_LINE = {"srt": re.compile(r"^\s*\d[\d:.,]*\s*-->"), "vtt": re.compile(r"^\s*\d[\d:.,]*\s*-->"),
              "sbv": re.compile(r"^\s*\d+:[\d:.]+,\d+:[\d:.]+\s*$")}
_LOOSE_TIME = re.compile(r"(?:(\d+):)?(\d+):(\d+)[,.](\d+)")
TIME_FORMS = {"srt": "HH:MM:SS,mmm --> HH:MM:SS,mmm", "vtt": "HH:MM:SS.mmm --> HH:MM:SS.mmm",
              "sbv": "H:MM:SS.mmm,H:MM:SS.mmm"}


@dataclass(frozen=True)
class Cue:
    start_s: float
    end_s: float
    text: str
    speaker: str = ""  # who says it (a voice tag or label); "" when the subtitles do not say, or two do


def is_subtitle_file(path: str | Path) -> bool:
    return Path(path).suffix.lower() in SUBTITLE_SUFFIXES


def is_video(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def subtitle_streams(video: str | Path) -> list[dict]:
    """The video's subtitle streams as ffprobe lists them (index, codec_name, tags); [] without ffprobe; a file
    ffprobe cannot read is a UserError with its words."""
    if shutil.which("ffprobe") is None:
        return []
    try:
        stat = os.stat(video)
    except OSError as exc:
        raise UserError(f"{video}: cannot read the video ({exc.strerror})") from None
    return list(_subtitle_streams(os.fspath(video), stat.st_size, stat.st_mtime_ns))


@lru_cache(maxsize=64)  # a folder's video is probed when read, then again when its subtitles are extracted
def _subtitle_streams(name: str, size: int, mtime_ns: int) -> tuple[dict, ...]:
    done = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "s", "-show_entries",
                           "stream=index,codec_name:stream_tags=language", "-of", "json", name],
                          capture_output=True, check=False)
    if done.returncode != 0:
        said = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no message"]
        raise UserError(f"{name}: not a video ffprobe can read ({said[0].removeprefix(f'{name}: ')})")
    return tuple(json.loads(done.stdout or b"{}").get("streams") or [])


def has_text_subtitles(video: str | Path) -> bool:
    """Whether the video holds a text subtitle stream (an unreadable file: no; its audio says why)."""
    try:
        return any(s.get("codec_name") in TEXT_SUBTITLE_CODECS for s in subtitle_streams(video))
    except UserError:
        return False


def embedded_subtitles(video: str | Path) -> str:
    """The video's first text subtitle stream (an English one first) as SRT text, by ffmpeg."""
    if shutil.which("ffprobe") is None or shutil.which("ffmpeg") is None:
        raise UserError(f"{video}: reading a video's subtitle stream needs ffmpeg (apt-get install ffmpeg), "
                        "or pass its subtitles as an .srt/.vtt file")
    streams = subtitle_streams(video)
    text = [s for s in streams if s.get("codec_name") in TEXT_SUBTITLE_CODECS]
    if not text:
        found = ", ".join(sorted({str(s.get("codec_name")) for s in streams})) or "none"
        raise UserError(f"{video}: no text subtitle stream in the video (found: {found}); pass its subtitles as "
                        "an .srt/.vtt file (image subtitles need OCR first)")
    chosen = next((s for s in text if (s.get("tags") or {}).get("language") in ENGLISH_TAGS), text[0])
    done = subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-i", os.fspath(video),
                           "-map", f"0:{chosen['index']}", "-f", "srt", "pipe:1"], capture_output=True, check=False)
    if done.returncode != 0:
        said = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no message"]
        raise UserError(f"{video}: ffmpeg could not read its subtitle stream {chosen['index']} ({said[0]})")
    return done.stdout.decode("utf-8", "replace")


def spoken_text(raw: str) -> str:
    """A cue's words as spoken: markup, sound annotations, music notes and speaker dashes or chevrons removed,
    HTML entities (`&amp;`, `&gt;`, `&nbsp;`, as WebVTT escapes text) read as the characters they stand for."""
    text = _CHEVRONS.sub(" ", html.unescape(_MARKUP.sub("", raw)))
    return " ".join(_SPEAKER_DASH.sub("", _ANNOTATION.sub(" ", text)).split())


def read_subtitles(path: str | Path) -> list[Cue]:
    """The cues of an SRT, WebVTT or SBV file (or of a video's text subtitle stream) in time order, with their
    spoken text (cues with none dropped); rolling captions' repeated lines removed (`unroll`)."""
    path = Path(path)
    try:
        stat = path.stat()
    except OSError as exc:
        raise UserError(f"{path}: cannot read the subtitles ({exc.strerror})") from None
    return list(_read_subtitles(str(path), stat.st_size, stat.st_mtime_ns))


@lru_cache(maxsize=64)  # a folder's subtitles are read for their text, then again for their times: say things once
def _read_subtitles(name: str, size: int, mtime_ns: int) -> tuple[Cue, ...]:
    import webvtt  # deferred: only `lora segment` with subtitles needs it

    path = Path(name)
    if is_video(path):
        kind, text = "srt", embedded_subtitles(path)
    else:
        kind, text = path.suffix.lower()[1:], decode_utf8(path, path.read_bytes(), "subtitles")
    kind = kind if kind in ("srt", "sbv") else "vtt"
    if not text.strip():
        raise UserError(f"{path}: empty; pass the recording's subtitles")
    try:
        captions = webvtt.from_buffer(io.StringIO(text), format=kind)
    except (webvtt.errors.MalformedFileError, webvtt.errors.MalformedCaptionError) as exc:
        raise UserError(f"{path}: not a readable {kind.upper()} subtitle file ({exc}); "
                        f"check its cue times ({TIME_FORMS[kind]})") from None
    timed = [(c.start_time.in_milliseconds() / 1000, c.end_time.in_milliseconds() / 1000, c.raw_text) for c in captions]
    at = _cue_lines(path, text, kind, timed)
    for i, (start, end, _) in enumerate(timed, 1):
        if end <= start:
            where = f"{path}:{at[i - 1]}" if at else f"{path}"
            raise UserError(f"{where}: cue {i} ends at {end:.3f} s, not after its start {start:.3f} s; fix its times")
    timed.sort(key=lambda t: t[0])
    lines = [_spoken_lines(raw) for _, _, raw in timed]
    labels, lines = speaker_labels(lines)
    speakers = [_one(set(_VOICE.findall(raw)) | names) for (_, _, raw), names in zip(timed, labels)]
    kept = unroll(lines)
    spoken = tuple(Cue(a, b, " ".join(new), who) for (a, b, _), new, who in zip(timed, kept, speakers) if new)
    if not spoken:
        raise UserError(f"{path}: no cue holds spoken text; pass the recording's subtitles")
    if kept != lines:
        log.info("%s: rolling captions (each cue repeats the line before it): each line read once", path)
    if any(labels):
        log.info("%s: who speaks each cue is labelled (\"Name: ...\"); the labels are not taken as words", path)
    return spoken


def _cue_lines(path: Path, text: str, kind: str, timed: list[tuple[float, float, str]]) -> list[int]:
    """The line number of each cue's time line (cues with text), in file order; [] where they cannot be paired
    with the cues read. A cue with text whose time line the reader skipped (a time it does not read: no hours,
    "00:61:00,000"; an SRT cue without its number) is a UserError naming that line, not words silently lost."""
    lines = re.split(r"\r\n|\r|\n", text)
    found = [(n, line) for n, (line, after) in enumerate(zip(lines, [*lines[1:], ""]), 1)
             if _TIME_LINE[kind].match(line) and after.strip()]
    if len(timed) >= len(found):
        return [n for n, _ in found] if len(timed) == len(found) else []
    read = {(round(a * 1000), round(b * 1000)) for a, b, _ in timed}
    n, line = next(((n, line) for n, line in found if _loose_times(line) not in read), found[-1])
    raise UserError(f"{path}:{n}: cue time line {line.strip()!r} cannot be read ({len(found) - len(timed)} of "
                    f"{len(found)} cues would be lost); write it as {TIME_FORMS[kind]}"
                    + (", after the cue's number" if kind == "srt" else ""))


def _loose_times(line: str) -> tuple[int, int] | None:
    """A time line's two times in milliseconds, read leniently; None when it does not hold two."""
    times = [round(((int(h or 0) * 60 + int(m)) * 60 + int(s) + int(f) / 10 ** len(f)) * 1000)
             for h, m, s, f in _LOOSE_TIME.findall(line)[:2]]
    return (times[0], times[1]) if len(times) == 2 else None


def _one(names: set[str]) -> str:
    names = {" ".join(n.split()) for n in names}
    return names.pop() if len(names) == 1 else ""


def _spoken_lines(raw: str) -> list[str]:
    return [line for line in (spoken_text(part) for part in raw.splitlines()) if line]


def speaker_labels(lines: list[list[str]]) -> tuple[list[set[str]], list[list[str]]]:
    """Each cue's "Name:" labels and its lines without them. Labels count in a file where at least
    LABEL_SHARE of the cues start with one; elsewhere only capitals before words that are not ("JOHN: Hi.",
    as subtitles for the deaf name a speaker off screen)."""
    starts = [bool(cue and _LABEL.match(cue[0])) for cue in lines]
    labelled = bool(lines) and sum(starts) >= LABEL_SHARE * len(lines)

    def label(line: str) -> re.Match | None:
        m = _LABEL.match(line)
        return m if m and (labelled or (m[1].isupper() and not line[m.end():].isupper())) else None

    labels = [{m[1] for m in map(label, cue) if m} for cue in lines]
    return labels, [[line[m.end():] if (m := label(line)) else line for line in cue] for cue in lines]


def _repeated_head(before: list[str], lines: list[str]) -> int:
    """How many of a cue's first lines repeat the last lines of the cue before (0: none)."""
    same = [line.casefold() for line in lines]
    last = [line.casefold() for line in before]
    return next((k for k in range(min(len(same), len(last)), 0, -1) if same[:k] == last[-k:]), 0)


def unroll(lines: list[list[str]]) -> list[list[str]]:
    """The spoken lines of each cue (in time order) as said: when the file is rolling captions (ROLLING_SHARE),
    each cue keeps only the lines it adds to the cue before (none: nothing new is said in it)."""
    repeats = [_repeated_head(before, cue) for before, cue in zip(lines, lines[1:])]
    if not repeats or sum(k > 0 for k in repeats) < ROLLING_SHARE * len(repeats):
        return lines
    return [lines[0], *(cue[k:] for cue, k in zip(lines[1:], repeats))]


def shift_cues(cues: list[Cue], offset_s: float, scale: float = 1.0) -> list[Cue]:
    """The cues `offset_s` later (earlier when negative), as subtitles timed against another cut of the audio,
    their times first stretched by `scale` (subtitles timed at another frame rate)."""
    return [replace(c, start_s=round(c.start_s * scale + offset_s, 3), end_s=round(c.end_s * scale + offset_s, 3))
            for c in cues]


def group_cues(cues: list[Cue], max_chunk_s: float) -> list[list[Cue]]:
    """Neighbouring cues of one speaker (as far as the subtitles say) joined while the group spans at most
    `max_chunk_s` and no gap exceeds MAX_JOIN_GAP_S; a cue longer than `max_chunk_s` is a group of its own
    (the caller refuses it)."""
    groups: list[list[Cue]] = []
    for cue in cues:
        last = groups[-1] if groups else None
        if (last is not None and cue.speaker == last[-1].speaker and cue.end_s - last[0].start_s <= max_chunk_s
                and cue.start_s - last[-1].end_s <= MAX_JOIN_GAP_S and last[-1].end_s - last[0].start_s <= max_chunk_s):
            last.append(cue)
        else:
            groups.append([cue])
    return groups
