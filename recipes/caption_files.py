"""Subtitle files as users download them, written from known cue times of real speech (for the recipes and tests).

`rolling_vtt(cues)`: WebVTT as YouTube writes automatic captions. Each cue shows the line before above its
own (its words with inline word times), then a 10 ms cue holds its line alone before the next cue rolls it
up, so every line is in the file two or three times (`lora.data.subtitles.unroll` reads each once).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from lora.longform import subtitle_timestamp  # noqa: E402


def rolling_vtt(cues: list[tuple[float, float, str]]) -> str:
    """(start_s, end_s, text) cues in time order as rolling automatic captions."""
    parts, before = ["WEBVTT\nKind: captions\nLanguage: en\n\n"], " "
    for a, b, text in cues:
        first, *rest = text.split()
        step = (b - a) / (len(rest) + 1)
        timed = first + "".join(f"<{subtitle_timestamp(a + step * (k + 1), '.')}><c> {w}</c>" for k, w in enumerate(rest))
        parts.append(f"{subtitle_timestamp(a, '.')} --> {subtitle_timestamp(b - 0.01, '.')} align:start position:0%\n{before}\n{timed}\n\n")
        parts.append(f"{subtitle_timestamp(b - 0.01, '.')} --> {subtitle_timestamp(b, '.')} align:start position:0%\n{text}\n \n\n")
        before = text
    return "".join(parts)
