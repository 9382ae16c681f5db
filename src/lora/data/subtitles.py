"""Subtitles (SRT, WebVTT) of a long recording -> timed cues of spoken text, grouped into clips.

Read with webvtt-py (both formats); what is not speech is taken out of the text: markup (`<i>`, `<v Bob>`,
`{\\an8}`), sound annotations (`[MUSIC]`, `(laughs)`), music notes and the dash a speaker change
starts a line with. `group_cues` joins neighbouring cues into clips of at most `max_chunk_s`, cut only
between cues, so every clip holds whole cues and the words their times say are spoken in it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from lora.core.errors import UserError

SUBTITLE_SUFFIXES = (".srt", ".vtt")
# Cues further apart than this are not joined into one clip: the gap is music, another scene, silence.
MAX_JOIN_GAP_S = 2.0
_MARKUP = re.compile(r"<[^>]*>|\{[^}]*\}")
_ANNOTATION = re.compile(r"\[[^\]]*\]|\([^)]*\)|[♪♫]")
_SPEAKER_DASH = re.compile(r"^\s*-\s*", re.MULTILINE)


@dataclass(frozen=True)
class Cue:
    start_s: float
    end_s: float
    text: str


def is_subtitle_file(path: str | Path) -> bool:
    return Path(path).suffix.lower() in SUBTITLE_SUFFIXES


def spoken_text(raw: str) -> str:
    """A cue's words as spoken: markup, sound annotations, music notes and speaker dashes removed."""
    text = _SPEAKER_DASH.sub("", _ANNOTATION.sub(" ", _MARKUP.sub("", raw)))
    return " ".join(text.split())


def read_subtitles(path: str | Path) -> list[Cue]:
    """The cues of an SRT or WebVTT file in time order, with their spoken text (cues with none dropped)."""
    import webvtt  # deferred: only `lora segment` with subtitles needs it

    path = Path(path)
    try:
        captions = webvtt.from_srt(str(path)) if path.suffix.lower() == ".srt" else webvtt.read(str(path))
    except (webvtt.errors.MalformedFileError, webvtt.errors.MalformedCaptionError) as exc:
        raise UserError(f"{path}: not a readable {path.suffix.lower()[1:].upper()} subtitle file ({exc}); "
                        "check its cue times (HH:MM:SS,mmm --> HH:MM:SS,mmm)") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8; re-save the subtitles as UTF-8") from None
    cues = [Cue(c.start_time.in_milliseconds() / 1000, c.end_time.in_milliseconds() / 1000, spoken_text(c.raw_text))
            for c in captions]
    for i, cue in enumerate(cues, 1):
        if cue.end_s <= cue.start_s:
            raise UserError(f"{path}: cue {i} ends at {cue.end_s:.3f} s, not after its start {cue.start_s:.3f} s; fix its times")
    spoken = sorted((c for c in cues if c.text), key=lambda c: c.start_s)
    if not spoken:
        raise UserError(f"{path}: no cue holds spoken text; pass the recording's subtitles")
    return spoken


def group_cues(cues: list[Cue], max_chunk_s: float) -> list[list[Cue]]:
    """Neighbouring cues joined while the group spans at most `max_chunk_s` and no gap exceeds
    MAX_JOIN_GAP_S; a cue longer than `max_chunk_s` is a group of its own (the caller refuses it)."""
    groups: list[list[Cue]] = []
    for cue in cues:
        last = groups[-1] if groups else None
        if (last is not None and cue.end_s - last[0].start_s <= max_chunk_s
                and cue.start_s - last[-1].end_s <= MAX_JOIN_GAP_S and last[-1].end_s - last[0].start_s <= max_chunk_s):
            last.append(cue)
        else:
            groups.append([cue])
    return groups
